/*
 * fl_enroll: the coordinator's enrollment list — which node names and
 * identities may connect.  File format, one node per line:
 *
 *     # name            identity key (Z85, the node's .pub file 'identity-key')
 *     hospital-a        rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
 *
 * The identity key is the node's Ed25519 public key; the CURVE key its
 * connections must present is derived from it (see identity/fl_identity.h),
 * so one enrolled key both admits the node's connections and verifies its
 * signatures.  Names and keys must both be unique.  Revocation removes the
 * entry: the ZAP handler consults the list on every handshake.
 */
#ifndef FL_ENROLL_H
#define FL_ENROLL_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct fl_enroll fl_enroll;

/** Loads an enrollment file. FL_EPARSE with file:line on a malformed line,
 *  a bad name or key, or a duplicate. */
FL_NODISCARD int fl_enroll_load(fl_enroll **out, const char *path);

/** Creates an empty list (nodes are added with fl_enroll_add). */
FL_NODISCARD int fl_enroll_new(fl_enroll **out);

/** Adds a node by its identity key (Z85). FL_EINVAL on a bad name or key or
 *  a duplicate. */
FL_NODISCARD int fl_enroll_add(fl_enroll *e, const char *name, const char *identity_z85);

/** Removes a node by name. FL_EINVAL if not enrolled. */
FL_NODISCARD int fl_enroll_remove(fl_enroll *e, const char *name);

/** The enrolled name of a raw 32-byte CURVE public key, or NULL. */
const char *fl_enroll_lookup(const fl_enroll *e, const uint8_t curve_key[32]);

/** The Ed25519 identity key of an enrolled node, or NULL. */
const uint8_t *fl_enroll_identity(const fl_enroll *e, const char *name);

/** Number of enrolled nodes. */
size_t fl_enroll_count(const fl_enroll *e);

/** Frees the list. NULL is a no-op. */
void fl_enroll_free(fl_enroll *e);

#endif
