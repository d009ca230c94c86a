/*
 * audit_make_ledger: writes the test fixture's ledger (fl_audit_fixture.h)
 * for scripts: audit_make_ledger DIR N SPACING_SECONDS.  Prints the paths
 * of the ledger and the public key file, one per line.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/audit/fl_audit_fixture.h"

int main(int argc, char **argv)
{
    fl_audit_fixture fx;
    if (argc != 4) {
        fprintf(stderr, "usage: audit_make_ledger DIR N SPACING_SECONDS\n");
        return 2;
    }
    if (fl_audit_fixture_make(&fx, argv[1], "hospital-1", (size_t)atoi(argv[2]),
                              (unsigned)atoi(argv[3])) != FL_OK) {
        fprintf(stderr, "audit_make_ledger: %s\n", fl_error_last());
        return 1;
    }
    printf("%s\n%s\n", fx.ledger, fx.pub);
    return 0;
}
