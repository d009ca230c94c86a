/*
 * fl_identity: a program's long-term identity — one Ed25519 key pair.
 *
 * The Ed25519 key signs what the program must answer for (a node's privacy
 * ledger, its secure-aggregation keys); its CURVE (X25519) key for ZeroMQ is
 * derived from it (libsodium's ed25519 -> curve25519 conversion), so a node
 * has one secret to protect and one public file to hand over.
 *
 *   secret file (mode 0600):  identity-seed = <Z85: 32-byte Ed25519 seed>
 *                             identity-key  = <Z85: Ed25519 public key>
 *                             public-key    = <Z85: CURVE public key>
 *   public file (mode 0644):  identity-key  = ...
 *                             public-key    = ...
 *
 * Lines starting with '#' are comments. Files are written atomically; secret
 * material lives in sodium_malloc memory and is wiped when freed.
 */
#ifndef FL_IDENTITY_H
#define FL_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

#define FL_IDENTITY_Z85_LEN 40 /* Z85 text of a 32-byte key, without the NUL */
#define FL_IDENTITY_SIG_BYTES 64

typedef struct fl_identity fl_identity;

/** The public half of an identity: what other parties hold. */
typedef struct {
    uint8_t sign_pk[32];                    /* Ed25519 public key */
    char sign_z85[FL_IDENTITY_Z85_LEN + 1]; /* the same, as Z85 text */
    char curve_z85[FL_IDENTITY_Z85_LEN + 1]; /* CURVE public key (enrollment) */
} fl_identity_public;

/** Creates a fresh identity from libsodium's CSPRNG. */
FL_NODISCARD int fl_identity_generate(fl_identity **out);

/** Writes the secret file (0600) and, if public_path is not NULL, the public
 *  file (0644), each atomically. `label` (one line, at most 200 bytes) goes in
 *  a comment. FL_EINVAL for a bad label, FL_EIO on write failure. */
FL_NODISCARD int fl_identity_save(const fl_identity *id, const char *label,
                                  const char *secret_path, const char *public_path);

/** Creates DIR/NAME.key and DIR/NAME.pub for a new identity (DIR is created
 *  0700 if missing). Refuses (FL_EINVAL) to replace an existing key or public
 *  file unless `force`. On success *pub receives the public half. */
FL_NODISCARD int fl_identity_create_files(const char *dir, const char *name, const char *label,
                                          int force, fl_identity_public *pub);

/** Loads a secret identity file. Refuses a file that group or others can
 *  access (FL_ECRYPTO: chmod 600), and a file whose public lines do not
 *  belong to its seed (FL_ECRYPTO). FL_EPARSE with file:line if malformed. */
FL_NODISCARD int fl_identity_load(fl_identity **out, const char *secret_path);

/** Reads the public half from a public (or secret) identity file. */
FL_NODISCARD int fl_identity_load_public(fl_identity_public *out, const char *path);

/** The public half of a loaded identity (owned by id). */
const fl_identity_public *fl_identity_public_of(const fl_identity *id);

/** The CURVE secret key as Z85 text (guarded memory owned by id), for
 *  ZMQ_CURVE_SECRETKEY. */
const char *fl_identity_curve_secret_z85(const fl_identity *id);

/** Signs `len` bytes with the Ed25519 key (detached signature). */
void fl_identity_sign(const fl_identity *id, const void *msg, size_t len,
                      uint8_t sig[FL_IDENTITY_SIG_BYTES]);

/** Verifies a detached Ed25519 signature: FL_OK or FL_ECRYPTO. */
FL_NODISCARD int fl_identity_verify(const uint8_t sign_pk[32], const void *msg, size_t len,
                                    const uint8_t sig[FL_IDENTITY_SIG_BYTES]);

/** True if `s` is 40 characters of Z85 text (a 32-byte key). */
int fl_identity_z85_ok(const char *s);

/** Wipes and frees. NULL is a no-op. */
void fl_identity_free(fl_identity *id);

#endif
