/*
 * fl_identity: Ed25519 identities with derived CURVE keys (see
 * fl_identity.h).
 */
#include "identity/fl_identity.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "storage/fl_storage.h"

struct fl_identity {
    uint8_t seed[32];
    uint8_t sign_sk[64];
    uint8_t curve_sk[32];
    char curve_sk_z85[FL_IDENTITY_Z85_LEN + 1];
    fl_identity_public pub;
};

static int s_alloc(fl_identity **out)
{
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "libsodium failed to initialise");
    *out = sodium_malloc(sizeof **out);
    if (!*out)
        return fl_error_set(FL_ENOMEM, "out of guarded memory for an identity");
    memset(*out, 0, sizeof **out);
    return FL_OK;
}

/* Derives every key from the seed: Ed25519 (RFC 8032) key pair, then the
 * X25519 key pair of the same secret (libsodium's birational map), so the
 * CURVE key is bound to the signing identity. */
static int s_derive(fl_identity *id)
{
    uint8_t curve_pk[32];
    crypto_sign_seed_keypair(id->pub.sign_pk, id->sign_sk, id->seed);
    if (crypto_sign_ed25519_sk_to_curve25519(id->curve_sk, id->sign_sk) != 0 ||
        crypto_sign_ed25519_pk_to_curve25519(curve_pk, id->pub.sign_pk) != 0)
        return fl_error_set(FL_ECRYPTO, "cannot derive the CURVE key from the identity key");
    zmq_z85_encode(id->pub.sign_z85, id->pub.sign_pk, 32);
    zmq_z85_encode(id->pub.curve_z85, curve_pk, 32);
    zmq_z85_encode(id->curve_sk_z85, id->curve_sk, 32);
    return FL_OK;
}

int fl_identity_generate(fl_identity **out)
{
    int rc = s_alloc(out);
    if (rc != FL_OK)
        return rc;
    randombytes_buf((*out)->seed, sizeof (*out)->seed);
    rc = s_derive(*out);
    if (rc != FL_OK) {
        fl_identity_free(*out);
        *out = NULL;
    }
    return rc;
}

int fl_identity_z85_ok(const char *s)
{
    uint8_t raw[32];
    if (!s || strlen(s) != FL_IDENTITY_Z85_LEN)
        return 0;
    return zmq_z85_decode(raw, s) != NULL;
}

int fl_identity_save(const fl_identity *id, const char *label, const char *secret_path,
                     const char *public_path)
{
    const size_t cap = 1024;
    char seed_z85[FL_IDENTITY_Z85_LEN + 1];
    char *text;
    int n, rc;

    if (strlen(label) > 200 || strpbrk(label, "\r\n"))
        return fl_error_set(FL_EINVAL, "key label must be one line of at most 200 bytes");
    text = sodium_malloc(cap);
    if (!text)
        return fl_error_set(FL_ENOMEM, "out of guarded memory");
    zmq_z85_encode(seed_z85, id->seed, 32);
    n = snprintf(text, cap,
                 "# Identity of %s. SECRET: keep this file private (mode 0600).\n"
                 "identity-seed = %s\nidentity-key = %s\npublic-key = %s\n",
                 label, seed_z85, id->pub.sign_z85, id->pub.curve_z85);
    sodium_memzero(seed_z85, sizeof seed_z85);
    if (n < 0 || (size_t)n >= cap) {
        sodium_free(text);
        return fl_error_set(FL_EINVAL, "key file text does not fit its buffer");
    }
    rc = fl_storage_write_atomic(secret_path, text, (size_t)n, 0600);
    if (rc == FL_OK && public_path) {
        n = snprintf(text, cap,
                     "# Public identity of %s: give this file to the coordinator's operator\n"
                     "# (identity-key is what the enrollment file lists) and to the privacy\n"
                     "# officer (identity-key verifies the ledger); public-key is the CURVE key\n"
                     "# derived from it.\n"
                     "identity-key = %s\npublic-key = %s\n",
                     label, id->pub.sign_z85, id->pub.curve_z85);
        rc = n < 0 || (size_t)n >= cap
                 ? fl_error_set(FL_EINVAL, "key file text does not fit its buffer")
                 : fl_storage_write_atomic(public_path, text, (size_t)n, 0644);
    }
    sodium_free(text); /* wipes */
    return rc;
}

int fl_identity_create_files(const char *dir, const char *name, const char *label, int force,
                             fl_identity_public *pub)
{
    char sec[4096], pubf[4096];
    fl_identity *id = NULL;
    struct stat st;
    int rc;

    if ((size_t)snprintf(sec, sizeof sec, "%s/%s.key", dir, name) >= sizeof sec ||
        (size_t)snprintf(pubf, sizeof pubf, "%s/%s.pub", dir, name) >= sizeof pubf)
        return fl_error_set(FL_EINVAL, "key directory path too long: '%s'", dir);
    if ((rc = fl_storage_mkdir(dir, 0700)) != FL_OK)
        return rc;
    if (!force && (stat(sec, &st) == 0 || stat(pubf, &st) == 0))
        return fl_error_set(FL_EINVAL, "'%s' or '%s' already exists; refusing to overwrite a key "
                            "(use --force to replace it: every party that knows the old public "
                            "key must then be given the new one)", sec, pubf);
    if ((rc = fl_identity_generate(&id)) != FL_OK)
        return rc;
    rc = fl_identity_save(id, label, sec, pubf);
    if (rc != FL_OK && !force)
        unlink(sec); /* no half-made identity: a retry starts clean */
    if (rc == FL_OK && pub)
        *pub = id->pub;
    fl_identity_free(id);
    return rc;
}

/* Parses "name = value" lines into the three known fields (any may be NULL
 * if not wanted). `file` is open; the line buffer is wiped. */
static int s_parse(FILE *f, const char *path, char *seed, char *sign, char *curve)
{
    char line[512];
    int rc = FL_OK, lineno = 0;
    int have_seed = 0, have_sign = 0, have_curve = 0;

    while (fgets(line, sizeof line, f)) {
        char *p = line, *eq, *val, *end;
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = fl_error_set(FL_EPARSE, "%s:%d: line too long", path, lineno);
            break;
        }
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
        {
            char *dst;
            int *have;
            if (strcmp(p, "identity-seed") == 0) {
                dst = seed;
                have = &have_seed;
            } else if (strcmp(p, "identity-key") == 0) {
                dst = sign;
                have = &have_sign;
            } else if (strcmp(p, "public-key") == 0) {
                dst = curve;
                have = &have_curve;
            } else {
                rc = fl_error_set(FL_EPARSE, "%s:%d: unknown field '%s' (expected identity-seed, "
                                  "identity-key or public-key)", path, lineno, p);
                break;
            }
            if (!fl_identity_z85_ok(val)) {
                rc = fl_error_set(FL_EPARSE, "%s:%d: %s is not a 40-character Z85 key", path,
                                  lineno, p);
                break;
            }
            if (*have) {
                rc = fl_error_set(FL_EPARSE, "%s:%d: %s appears twice", path, lineno, p);
                break;
            }
            *have = 1;
            if (dst)
                memcpy(dst, val, FL_IDENTITY_Z85_LEN + 1);
        }
    }
    sodium_memzero(line, sizeof line);
    if (rc != FL_OK)
        return rc;
    if (seed && !have_seed)
        return fl_error_set(FL_EPARSE, "%s: no identity-seed line (is this a public key file? "
                            "use the .key file)", path);
    if ((sign && !have_sign) || (curve && !have_curve))
        return fl_error_set(FL_EPARSE, "%s: an identity-key and a public-key line are both "
                            "required", path);
    return FL_OK;
}

int fl_identity_load(fl_identity **out, const char *secret_path)
{
    char *seed_z85 = NULL;
    char sign[FL_IDENTITY_Z85_LEN + 1], curve[FL_IDENTITY_Z85_LEN + 1];
    struct stat st;
    FILE *f;
    int rc;

    *out = NULL;
    f = fopen(secret_path, "r");
    if (!f)
        return fl_error_set(FL_EIO, "cannot open key file '%s': %s (create it with the "
                            "program's 'init' command)", secret_path, strerror(errno));
    /* Check the permissions of the file we opened, not of a path that could
     * have changed in between. */
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fl_error_set(FL_EIO, "'%s' is not a regular file", secret_path);
    }
    if (st.st_mode & 077) {
        fclose(f);
        return fl_error_set(FL_ECRYPTO, "secret key file '%s' is accessible by group or others "
                            "(mode %03o): run 'chmod 600 %s'", secret_path,
                            (unsigned)(st.st_mode & 0777), secret_path);
    }
    /* No stdio buffer: the seed must only ever sit in memory we wipe. */
    setvbuf(f, NULL, _IONBF, 0);
    rc = s_alloc(out);
    if (rc == FL_OK && !(seed_z85 = sodium_malloc(FL_IDENTITY_Z85_LEN + 1)))
        rc = fl_error_set(FL_ENOMEM, "out of guarded memory");
    if (rc == FL_OK)
        rc = s_parse(f, secret_path, seed_z85, sign, curve);
    fclose(f);
    if (rc != FL_OK)
        goto fail;
    zmq_z85_decode((*out)->seed, seed_z85);
    if ((rc = s_derive(*out)) != FL_OK)
        goto fail;
    if (strcmp(sign, (*out)->pub.sign_z85) != 0 || strcmp(curve, (*out)->pub.curve_z85) != 0) {
        rc = fl_error_set(FL_ECRYPTO, "key file '%s': the public keys do not belong to the "
                          "secret seed; the file is damaged, restore it from a backup or create "
                          "a new identity with 'init'", secret_path);
        goto fail;
    }
    sodium_free(seed_z85);
    return FL_OK;
fail:
    if (seed_z85)
        sodium_free(seed_z85);
    fl_identity_free(*out);
    *out = NULL;
    return rc;
}

int fl_identity_load_public(fl_identity_public *out, const char *path)
{
    FILE *f;
    int rc;
    memset(out, 0, sizeof *out);
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "libsodium failed to initialise");
    f = fopen(path, "r");
    if (!f)
        return fl_error_set(FL_EIO, "cannot open public key file '%s': %s", path,
                            strerror(errno));
    rc = s_parse(f, path, NULL, out->sign_z85, out->curve_z85);
    fclose(f);
    if (rc != FL_OK)
        return rc;
    zmq_z85_decode(out->sign_pk, out->sign_z85);
    {
        /* The CURVE key must be the one derived from the identity key. */
        uint8_t want[32], have[32];
        if (crypto_sign_ed25519_pk_to_curve25519(want, out->sign_pk) != 0)
            return fl_error_set(FL_ECRYPTO, "%s: identity-key is not a valid Ed25519 key", path);
        zmq_z85_decode(have, out->curve_z85);
        if (sodium_memcmp(want, have, 32) != 0)
            return fl_error_set(FL_ECRYPTO, "%s: public-key does not belong to identity-key; the "
                                "file is damaged", path);
    }
    return FL_OK;
}

const fl_identity_public *fl_identity_public_of(const fl_identity *id)
{
    return &id->pub;
}

const char *fl_identity_curve_secret_z85(const fl_identity *id)
{
    return id->curve_sk_z85;
}

void fl_identity_sign(const fl_identity *id, const void *msg, size_t len,
                      uint8_t sig[FL_IDENTITY_SIG_BYTES])
{
    crypto_sign_detached(sig, NULL, msg, len, id->sign_sk);
}

int fl_identity_verify(const uint8_t sign_pk[32], const void *msg, size_t len,
                       const uint8_t sig[FL_IDENTITY_SIG_BYTES])
{
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "libsodium failed to initialise");
    if (crypto_sign_verify_detached(sig, msg, len, sign_pk) != 0)
        return fl_error_set(FL_ECRYPTO, "signature does not verify");
    return FL_OK;
}

void fl_identity_free(fl_identity *id)
{
    if (id)
        sodium_free(id);
}
