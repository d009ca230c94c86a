/*
 * fuzz_enroll: the enrollment file (transport/fl_enroll.h), read by the
 * coordinator (which keys may connect) and as a node's peers file (whose
 * identity keys secure aggregation trusts), and the admin channel's own
 * reading and rewriting of the same file (fl_admin_enroll_names,
 * fl_admin_enroll_file_add / _remove, behind flctl enroll and revoke).
 *
 * Properties checked beyond "no crash", on a file fl_enroll_load accepts:
 * the admin channel lists exactly the enrolled names; enrolling a new node
 * gives a file that loads with that node added; revoking it gives a file
 * that loads without it.
 */
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "coordinator/fl_admin.h"
#include "fuzz/fuzz_support.h"
#include "transport/fl_enroll.h"

#define S_NEW_NAME "fuzz-new-node"
#define S_MAX_NAMES 4096

static fl_identity *s_id;

static void s_check_names(const char *path, const fl_enroll *e)
{
    static char names[S_MAX_NAMES][FL_ADMIN_NAME_CAP];
    size_t n = 0;
    if (fl_admin_enroll_names(path, names, S_MAX_NAMES, &n) != FL_OK)
        abort();
    if (n != fl_enroll_count(e))
        abort(); /* the two readers disagree on which lines enroll a node */
    for (size_t i = 0; i < n; i++)
        if (!fl_enroll_identity(e, names[i]))
            abort();
}

static void s_check_add_remove(const char *path, const fl_enroll *e)
{
    const fl_identity_public *pub = fl_identity_public_of(s_id);
    uint8_t curve[32];
    fl_enroll *after = NULL;

    if (!zmq_z85_decode(curve, pub->curve_z85))
        abort();
    if (fl_enroll_identity(e, S_NEW_NAME) || fl_enroll_lookup(e, curve))
        return; /* already enrolled: flctl refuses before rewriting */
    if (fl_admin_enroll_file_add(path, S_NEW_NAME, pub->sign_z85) != FL_OK)
        return; /* the file grew past the admin channel's bound */
    if (fl_enroll_load(&after, path) != FL_OK || fl_enroll_count(after) != fl_enroll_count(e) + 1 ||
        !fl_enroll_identity(after, S_NEW_NAME) ||
        strcmp(fl_enroll_lookup(after, curve), S_NEW_NAME) != 0)
        abort();
    fl_enroll_free(after);
    if (fl_admin_enroll_file_remove(path, S_NEW_NAME) != FL_OK)
        abort();
    if (fl_enroll_load(&after, path) != FL_OK || fl_enroll_count(after) != fl_enroll_count(e) ||
        fl_enroll_identity(after, S_NEW_NAME) || fl_enroll_lookup(after, curve))
        abort();
    fl_enroll_free(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    fl_enroll *e = NULL;
    char path[1024];

    fuzz_init();
    if (!s_id)
        s_id = fuzz_identity(0);
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "enrollment", data, size, path, sizeof path);
    if (fl_enroll_load(&e, path) == FL_OK) {
        /* A NUL byte hides the rest of its line from fl_enroll_load (C
         * strings) but not from the admin channel's byte-wise reader; such
         * a file is not text, and the properties are checked on text only. */
        if (!memchr(data, '\0', size)) {
            s_check_names(path, e);
            s_check_add_remove(path, e);
        }
        fl_enroll_free(e);
    } else if (e || !fl_error_last()[0]) {
        abort();
    }
    fuzz_dir_remove(&d);
    return 0;
}
