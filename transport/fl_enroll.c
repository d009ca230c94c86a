/*
 * fl_enroll: enrollment list of node names and public keys (see fl_enroll.h).
 * Lookups are linear: consortia have tens of hospitals, not thousands.
 */
#include "transport/fl_enroll.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "proto/fl_wire.h"
#include "identity/fl_identity.h"

typedef struct {
    char name[FL_WIRE_MAX_NAME + 1];
    uint8_t identity[32]; /* Ed25519 */
    uint8_t key[32];      /* CURVE, derived from identity */
} s_entry;

struct fl_enroll {
    s_entry *v;
    size_t n, cap;
};

int fl_enroll_new(fl_enroll **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? FL_OK : fl_error_set(FL_ENOMEM, "out of memory");
}

int fl_enroll_add(fl_enroll *e, const char *name, const char *identity_z85)
{
    uint8_t key[32], identity[32];
    if (!fl_wire_name_ok(name))
        return fl_error_set(FL_EINVAL, "node name '%s' is invalid: use 1..%u characters from "
                            "[A-Za-z0-9._-]", name, FL_WIRE_MAX_NAME);
    if (!fl_identity_z85_ok(identity_z85))
        return fl_error_set(FL_EINVAL, "identity key for '%s' is not a 40-character Z85 key "
                            "(copy the identity-key line of the node's .pub file)", name);
    zmq_z85_decode(identity, identity_z85);
    if (crypto_sign_ed25519_pk_to_curve25519(key, identity) != 0)
        return fl_error_set(FL_EINVAL, "identity key for '%s' is not a valid Ed25519 key", name);
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->v[i].name, name) == 0)
            return fl_error_set(FL_EINVAL, "node '%s' is enrolled twice", name);
        if (sodium_memcmp(e->v[i].key, key, 32) == 0)
            return fl_error_set(FL_EINVAL, "nodes '%s' and '%s' share one public key: every "
                                "node needs its own key pair", e->v[i].name, name);
    }
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        s_entry *v = realloc(e->v, cap * sizeof *v);
        if (!v)
            return fl_error_set(FL_ENOMEM, "out of memory");
        e->v = v;
        e->cap = cap;
    }
    snprintf(e->v[e->n].name, sizeof e->v[e->n].name, "%s", name);
    memcpy(e->v[e->n].key, key, 32);
    memcpy(e->v[e->n].identity, identity, 32);
    e->n++;
    return FL_OK;
}

int fl_enroll_remove(fl_enroll *e, const char *name)
{
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->v[i].name, name) == 0) {
            e->v[i] = e->v[e->n - 1];
            e->n--;
            return FL_OK;
        }
    }
    return fl_error_set(FL_EINVAL, "node '%s' is not enrolled", name);
}

/* Longest line of an enrollment file, its newline included. */
#define S_LINE_MAX 511

/* Reads the next line of f, newline included, into line (S_LINE_MAX + 2
 * bytes), NUL-terminated: its length (0 at the end of the file), or
 * S_LINE_MAX + 1 for a longer line.  Bounded, unlike getline, and unlike
 * fgets it gives the length, so a NUL byte in the line can be found. */
static size_t s_read_line(FILE *f, char *line)
{
    size_t n = 0;
    int ch;
    while (n <= S_LINE_MAX && (ch = getc(f)) != EOF) {
        line[n++] = (char)ch;
        if (ch == '\n')
            break;
    }
    line[n] = '\0';
    return n;
}

int fl_enroll_load(fl_enroll **out, const char *path)
{
    char line[S_LINE_MAX + 2];
    size_t len;
    int rc, lineno = 0;
    FILE *f;

    *out = NULL;
    f = fopen(path, "r");
    if (!f)
        return fl_error_set(FL_EIO, "cannot open enrollment file '%s': %s", path,
                            strerror(errno));
    rc = fl_enroll_new(out);
    while (rc == FL_OK && (len = s_read_line(f, line)) > 0) {
        char name[128], key[128], extra[8];
        int k;
        lineno++;
        if (len > S_LINE_MAX) {
            rc = fl_error_set(FL_EPARSE, "%s:%d: line too long (at most %d bytes)", path, lineno,
                              S_LINE_MAX);
            break;
        }
        /* sscanf would stop at a NUL and ignore the rest of the line */
        if (memchr(line, '\0', len)) {
            rc = fl_error_set(FL_EPARSE, "%s:%d: NUL byte in the line; an enrollment file is "
                              "text, 'NAME IDENTITY_KEY' per line", path, lineno);
            break;
        }
        k = sscanf(line, " %127s %127s %7s", name, key, extra);
        if (k <= 0 || name[0] == '#')
            continue;
        if (k != 2 && !(k == 3 && extra[0] == '#')) {
            rc = fl_error_set(FL_EPARSE, "%s:%d: expected 'NAME IDENTITY_KEY'", path, lineno);
            break;
        }
        if (fl_enroll_add(*out, name, key) != FL_OK)
            rc = fl_error_wrap(FL_EPARSE, "%s:%d", path, lineno);
    }
    if (rc == FL_OK && ferror(f))
        rc = fl_error_set(FL_EIO, "cannot read enrollment file '%s': %s", path, strerror(errno));
    fclose(f);
    if (rc != FL_OK) {
        fl_enroll_free(*out);
        *out = NULL;
    }
    return rc;
}

const char *fl_enroll_lookup(const fl_enroll *e, const uint8_t key[32])
{
    for (size_t i = 0; i < e->n; i++)
        if (sodium_memcmp(e->v[i].key, key, 32) == 0)
            return e->v[i].name;
    return NULL;
}

const uint8_t *fl_enroll_identity(const fl_enroll *e, const char *name)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->v[i].name, name) == 0)
            return e->v[i].identity;
    return NULL;
}

size_t fl_enroll_count(const fl_enroll *e)
{
    return e->n;
}

void fl_enroll_free(fl_enroll *e)
{
    if (!e)
        return;
    free(e->v);
    free(e);
}
