/*
 * fl_keys: CURVE key generation and key files (see fl_keys.h).
 */
#include "transport/fl_keys.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "storage/fl_storage.h"

struct fl_keypair {
    char public_z85[FL_KEYS_Z85_LEN + 1];
    char secret_z85[FL_KEYS_Z85_LEN + 1];
};

static int s_alloc(fl_keypair **out)
{
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "libsodium failed to initialise");
    *out = sodium_malloc(sizeof **out);
    if (!*out)
        return fl_error_set(FL_ENOMEM, "out of guarded memory for a key pair");
    memset(*out, 0, sizeof **out);
    return FL_OK;
}

int fl_keys_generate(fl_keypair **out)
{
    int rc = s_alloc(out);
    if (rc != FL_OK)
        return rc;
    if (zmq_curve_keypair((*out)->public_z85, (*out)->secret_z85) != 0) {
        fl_keys_free(*out);
        *out = NULL;
        return fl_error_set(FL_ECRYPTO, "cannot create a CURVE key pair: %s (is libzmq built "
                            "with CURVE support?)", zmq_strerror(errno));
    }
    return FL_OK;
}

int fl_keys_z85_ok(const char *s)
{
    uint8_t raw[32];
    if (!s || strlen(s) != FL_KEYS_Z85_LEN)
        return 0;
    return zmq_z85_decode(raw, s) != NULL;
}

int fl_keys_save(const fl_keypair *kp, const char *label, const char *secret_path,
                 const char *public_path)
{
    char *text = NULL;
    const size_t cap = 512;
    int n, rc;

    /* The label is one comment line: a line break would start a new line in
     * the key file. */
    if (strpbrk(label, "\r\n"))
        return fl_error_set(FL_EINVAL, "key label must be one line (no line breaks)");
    text = sodium_malloc(cap);
    if (!text)
        return fl_error_set(FL_ENOMEM, "out of guarded memory");
    n = snprintf(text, cap,
                 "# CURVE key pair of %s. SECRET: keep this file private (mode 0600).\n"
                 "public-key = %s\nsecret-key = %s\n",
                 label, kp->public_z85, kp->secret_z85);
    /* snprintf returns the length it wanted: never write past the buffer. */
    if (n < 0 || (size_t)n >= cap) {
        sodium_free(text);
        return fl_error_set(FL_EINVAL, "key label is too long (%zu bytes)", strlen(label));
    }
    rc = fl_storage_write_atomic(secret_path, text, (size_t)n, 0600);
    if (rc == FL_OK && public_path) {
        n = snprintf(text, cap,
                     "# CURVE public key of %s: give this file to the coordinator operator.\n"
                     "public-key = %s\n",
                     label, kp->public_z85);
        rc = (n < 0 || (size_t)n >= cap)
                 ? fl_error_set(FL_EINVAL, "key label is too long (%zu bytes)", strlen(label))
                 : fl_storage_write_atomic(public_path, text, (size_t)n, 0644);
    }
    sodium_free(text); /* sodium_free wipes before freeing */
    return rc;
}

/* Reads "name = value" lines; copies the values of public-key and
 * secret-key (either may be NULL if not wanted). The line buffer is wiped. */
static int s_parse(const char *path, char *pub, char *sec)
{
    char line[256];
    int rc = FL_OK, lineno = 0, have_pub = 0, have_sec = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        return fl_error_set(FL_EIO, "cannot open key file '%s': %s (create it with the "
                            "program's 'init' command)", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        char *p = line, *eq, *val, *end;
        lineno++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
            continue;
        eq = strchr(p, '=');
        if (!eq) {
            rc = fl_error_set(FL_EPARSE, "%s:%d: expected 'name = value'", path, lineno);
            break;
        }
        end = eq;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        val = eq + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        end = val + strlen(val);
        while (end > val &&
               (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (strcmp(p, "public-key") == 0 || strcmp(p, "secret-key") == 0) {
            int is_pub = p[0] == 'p';
            if (!fl_keys_z85_ok(val)) {
                rc = fl_error_set(FL_EPARSE, "%s:%d: %s is not a 40-character Z85 key", path,
                                  lineno, p);
                break;
            }
            if (is_pub) {
                if (pub)
                    memcpy(pub, val, FL_KEYS_Z85_LEN + 1);
                have_pub = 1;
            } else {
                if (sec)
                    memcpy(sec, val, FL_KEYS_Z85_LEN + 1);
                have_sec = 1;
            }
        } else {
            rc = fl_error_set(FL_EPARSE, "%s:%d: unknown field '%s' (expected public-key or "
                              "secret-key)", path, lineno, p);
            break;
        }
    }
    sodium_memzero(line, sizeof line);
    fclose(f);
    if (rc != FL_OK)
        return rc;
    if (!have_pub)
        return fl_error_set(FL_EPARSE, "%s: no public-key line", path);
    if (sec && !have_sec)
        return fl_error_set(FL_EPARSE, "%s: no secret-key line (is this a public key file?)",
                            path);
    return FL_OK;
}

int fl_keys_load(fl_keypair **out, const char *secret_path)
{
    struct stat st;
    uint8_t a[32], b[32];
    int rc;

    *out = NULL;
    if (stat(secret_path, &st) != 0)
        return fl_error_set(FL_EIO, "cannot open key file '%s': %s (create it with the "
                            "program's 'init' command)", secret_path, strerror(errno));
    if (st.st_mode & 077)
        return fl_error_set(FL_ECRYPTO, "secret key file '%s' is accessible by group or others "
                            "(mode %03o): run 'chmod 600 %s'", secret_path,
                            (unsigned)(st.st_mode & 0777), secret_path);
    rc = s_alloc(out);
    if (rc != FL_OK)
        return rc;
    rc = s_parse(secret_path, (*out)->public_z85, (*out)->secret_z85);
    if (rc != FL_OK)
        goto fail;
    /* The public half must belong to the secret half. */
    zmq_z85_decode(b, (*out)->secret_z85);
    crypto_scalarmult_base(a, b);
    sodium_memzero(b, sizeof b);
    zmq_z85_decode(b, (*out)->public_z85);
    if (sodium_memcmp(a, b, 32) != 0) {
        rc = fl_error_set(FL_ECRYPTO, "key file '%s': the public key does not match the secret "
                          "key; the file is damaged, create a new one with 'init'", secret_path);
        goto fail;
    }
    return FL_OK;
fail:
    fl_keys_free(*out);
    *out = NULL;
    return rc;
}

int fl_keys_load_public(char z85[FL_KEYS_Z85_LEN + 1], const char *path)
{
    return s_parse(path, z85, NULL);
}

const char *fl_keys_public_z85(const fl_keypair *kp)
{
    return kp->public_z85;
}

const char *fl_keys_secret_z85(const fl_keypair *kp)
{
    return kp->secret_z85;
}

void fl_keys_free(fl_keypair *kp)
{
    if (kp)
        sodium_free(kp);
}
