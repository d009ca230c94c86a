/*
 * fuzz_identity: identity key files (identity/fl_identity.h): a public
 * file as a hospital hands it to the operator for enrollment and a node
 * reads the coordinator's (fl_identity_load_public), and a secret file
 * (fl_identity_load, mode 0600). The first input byte chooses which (bit
 * 0); the rest is the file.
 *
 * Properties checked beyond "no crash": a loaded public file's CURVE key
 * is the one derived from its identity key; a loaded secret identity signs
 * and its own public key verifies the signature.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fuzz/fuzz_support.h"
#include "identity/fl_identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    char path[1024];

    fuzz_init();
    if (size < 1)
        return 0;
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "id.key", data + 1, size - 1, path, sizeof path);
    if (data[0] & 1) {
        fl_identity *id = NULL;
        if (fl_identity_load(&id, path) == FL_OK) {
            static const char msg[] = "fuzz";
            uint8_t sig[FL_IDENTITY_SIG_BYTES];
            fl_identity_sign(id, msg, sizeof msg, sig);
            if (fl_identity_verify(fl_identity_public_of(id)->sign_pk, msg, sizeof msg, sig) !=
                FL_OK)
                abort();
            fl_identity_free(id);
        } else if (id || !fl_error_last()[0]) {
            abort();
        }
    } else {
        fl_identity_public pub;
        if (fl_identity_load_public(&pub, path) == FL_OK) {
            uint8_t want[32], have[32];
            if (crypto_sign_ed25519_pk_to_curve25519(want, pub.sign_pk) != 0 ||
                !zmq_z85_decode(have, pub.curve_z85) || memcmp(want, have, 32) != 0)
                abort();
        } else if (!fl_error_last()[0]) {
            abort();
        }
    }
    fuzz_dir_remove(&d);
    return 0;
}
