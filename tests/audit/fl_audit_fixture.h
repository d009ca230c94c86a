/*
 * fl_audit_fixture: a real privacy ledger for the flaudit tests, written by
 * the node's own code (fl_identity_generate + fl_identity_save,
 * fl_ledger_open, fl_ledger_append_charge), in two training sessions.
 */
#ifndef FL_AUDIT_FIXTURE_H
#define FL_AUDIT_FIXTURE_H

#include <stddef.h>

#include "dp/fl_ledger.h"

#define FL_AUDIT_FIXTURE_MAX 16
#define FL_AUDIT_FIXTURE_CAP 3.0    /* epsilon_max of every charge */
#define FL_AUDIT_FIXTURE_DELTA 1e-5

typedef struct {
    char key[1024], pub[1024], ledger[1024];
    size_t n;
    /* The charges as appended: fl_ledger_append_charge filled in seq, time,
     * total_steps and the cumulative epsilon it returned. */
    fl_ledger_charge charges[FL_AUDIT_FIXTURE_MAX];
} fl_audit_fixture;

/** Writes DIR/NAME.key, DIR/NAME.pub and DIR/NAME.ledger with n charges
 *  (n <= FL_AUDIT_FIXTURE_MAX) for node NAME in consortium "demo": the
 *  first (n+1)/2 form session 1 (q 0.05, sigma 1.4, C 1, 20 steps per
 *  round, 569 records, rounds 1, 2, ...), the rest session 2 (q 0.05,
 *  sigma 1.8, C 0.5, 30 steps, 560 records, rounds 1, 2, ...); cap 3,
 *  delta 1e-5, RDP.  Sleeps spacing_s seconds between charges (for
 *  distinct charge times).  Returns FL_OK or an fl_err with
 *  fl_error_last() set. */
int fl_audit_fixture_make(fl_audit_fixture *fx, const char *dir, const char *name, size_t n,
                          unsigned spacing_s);

#endif
