/*
 * fl_keys: CURVE (Curve25519) key pairs and their files.
 *
 * A secret key file holds both halves in Z85 text and is created with mode
 * 0600, atomically; a public key file holds the public half and is what an
 * operator copies into the coordinator's enrollment file.  Secret keys live
 * in sodium_malloc memory and are wiped when freed.
 *
 *   secret file:  # comment lines
 *                 public-key = <40 Z85 characters>
 *                 secret-key = <40 Z85 characters>
 *   public file:  public-key = <40 Z85 characters>
 */
#ifndef FL_KEYS_H
#define FL_KEYS_H

#include "error/fl_error.h"

#define FL_KEYS_Z85_LEN 40 /* Z85 text of a 32-byte key, without the NUL */

typedef struct fl_keypair fl_keypair;

/** Creates a fresh key pair from libsodium's CSPRNG. FL_ECRYPTO on failure. */
FL_NODISCARD int fl_keys_generate(fl_keypair **out);

/** Writes the secret file (mode 0600) and, if public_path is not NULL, the
 *  public file (mode 0644), each atomically. `label` goes in a comment. */
FL_NODISCARD int fl_keys_save(const fl_keypair *kp, const char *label, const char *secret_path,
                              const char *public_path);

/** Loads a secret key file. Refuses a file that group or others can read
 *  (FL_ECRYPTO, telling the user to chmod 600). */
FL_NODISCARD int fl_keys_load(fl_keypair **out, const char *secret_path);

/** Reads the public key from a public (or secret) key file into `z85`
 *  (41 bytes with the NUL). FL_EPARSE with file and line if malformed. */
FL_NODISCARD int fl_keys_load_public(char z85[FL_KEYS_Z85_LEN + 1], const char *path);

/** The public key as Z85 text (40 characters), owned by kp. */
const char *fl_keys_public_z85(const fl_keypair *kp);

/** The secret key as Z85 text, owned by kp, in guarded memory. */
const char *fl_keys_secret_z85(const fl_keypair *kp);

/** True if `s` is 40 characters of valid Z85 that decode to 32 bytes. */
int fl_keys_z85_ok(const char *s);

/** Wipes and frees a key pair. NULL is a no-op. */
void fl_keys_free(fl_keypair *kp);

#endif
