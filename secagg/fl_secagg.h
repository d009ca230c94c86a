/*
 * fl_secagg: secure aggregation (Bonawitz et al. 2017, "Practical Secure
 * Aggregation for Privacy-Preserving Machine Learning", CCS; optional
 * SecAgg+ neighbour graph, Bell et al. 2020).  The coordinator learns the
 * weighted sum of the nodes' vectors, the total weight and the sums of
 * optional integer counters, never one node's vector, weight or counters.
 *
 * This module is transport-free: each step takes and returns opaque byte
 * messages (bounded and validated here, never trusted), which node/ and
 * coordinator/ carry in protocol envelopes.  Parties are numbered 0..n-1 in
 * the order of the round's participant list; every party knows every
 * participant's Ed25519 identity key from the enrollment (the root of trust).
 *
 * A round, as the server drives it:
 *   step 0 ADVERTISE  each client -> server: its fresh X25519 keys (mask
 *                     agreement c, share encryption s) signed with its
 *                     identity, bound to the round context (consortium,
 *                     round, SHA-256 of the global model).
 *                     server -> each survivor of U1: all adverts.
 *   step 1 SHARE      client checks every advert's signature and that all
 *                     signed the same context (one model for everyone);
 *                     Shamir-shares its mask secret key and self-mask seed
 *                     (t of n, over a prime field) and sends each share
 *                     encrypted for its recipient (AEAD, bound to sender,
 *                     recipient and context).
 *                     server -> each survivor of U2: the ciphertexts
 *                     addressed to it, and the list U2.
 *   step 2 MASKED     client sends y = w*quant(x) || w || c_1..c_m  + PRG(b_u)
 *                     + sum over v in U2 of +-PRG(s_uv)   (mod 2^32),
 *                     with m = num_counters exact integer counters, each
 *                     <= max_counter, masked word for word like x.
 *                     server -> each survivor of U3: the list U3.
 *   step 3 CONSIST    client signs (context, U3); server -> survivors of
 *                     U4: all those signatures.
 *   step 4 UNMASK     client checks |U4| >= t and every signature, then
 *                     reveals for each v in U2: the share of v's self-mask
 *                     seed if v in U3, else the share of v's mask key —
 *                     never both for one v.
 *                     server reconstructs and outputs the sum.
 * At any step, fewer than t survivors abort the round (FL_ESTATE), cleanly.
 *
 * k > 0 (SecAgg+): every party derives the same k-regular neighbour graph
 * from the context; a party masks, shares (t of itself and its
 * neighbours) and reveals only within its neighbourhood, so messages are
 * O(k); t is then the per-neighbourhood threshold (2 <= t <= k; n * k
 * even). Unmasking aborts (FL_ESTATE) when a party whose mask must be
 * removed has fewer than t revealing holders. See docs/secure-aggregation.md.
 */
#ifndef FL_SECAGG_H
#define FL_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "identity/fl_identity.h"

#define FL_SECAGG_MAX_PARTIES 1024u
#define FL_SECAGG_MAX_DIM (16u * 1024u * 1024u)
#define FL_SECAGG_MAX_MSG (80u * 1024u * 1024u) /* bytes of any one message */
#define FL_SECAGG_MAX_COUNTERS 4096u             /* integer counters per party */

typedef enum {
    FL_SECAGG_ADVERTISE = 0,
    FL_SECAGG_SHARE = 1,
    FL_SECAGG_MASKED = 2,
    FL_SECAGG_CONSIST = 3,
    FL_SECAGG_UNMASK = 4,
    FL_SECAGG_DONE = 5
} fl_secagg_step;

/** Public parameters of one round, identical at every party. */
typedef struct {
    uint32_t n;               /* participants */
    uint32_t t;               /* threshold: survivors needed at every step */
    uint32_t k;               /* SecAgg+ neighbours per party, 0 = all (plain Bonawitz);
                                 k > 0 makes t per neighbourhood */
    uint32_t dim;             /* length of each party's vector (the weight is appended) */
    double clip_range;        /* R: each coordinate is clipped to [-R, R] */
    uint32_t max_weight;      /* public bound on any party's weight */
    uint8_t context[32];      /* SHA-256 binding consortium, round and model hash */
    const uint8_t (*identity_pks)[32]; /* n Ed25519 keys, by party index (borrowed) */
    uint32_t num_counters;    /* exact integer counters appended after the weight,
                                 0..FL_SECAGG_MAX_COUNTERS */
    uint32_t max_counter;     /* public bound on any one party's counter value; with
                                 num_counters > 0: >= 1 and n * max_counter < 2^32 */
} fl_secagg_params;

/** Fixed-point scale such that n * max_weight * R * scale < 2^31: the sum of
 *  all weighted, quantized inputs cannot wrap in Z_2^32 (headroom), with the
 *  sign recovered from the top half. 0 if no scale >= 1 exists. */
double fl_secagg_scale(const fl_secagg_params *p);

/* ------------------------------------------------------------ client */

typedef struct fl_secagg_client fl_secagg_client;

/** A client for party `me` with identity `id` (borrowed). */
FL_NODISCARD int fl_secagg_client_new(fl_secagg_client **out, const fl_secagg_params *p,
                                      uint32_t me, const fl_identity *id);

/** Step 0: writes the signed advert to a fresh buffer (*msg, *len; caller frees). */
FL_NODISCARD int fl_secagg_client_advertise(fl_secagg_client *c, uint8_t **msg, size_t *len);

/** Step 1: takes the server's broadcast of adverts; returns the encrypted shares. */
FL_NODISCARD int fl_secagg_client_share(fl_secagg_client *c, const uint8_t *in, size_t in_len,
                                        uint8_t **msg, size_t *len);

/** Step 2: takes the ciphertexts addressed to this party and U2; quantizes x
 *  (dim floats, clipped to [-R, R] with unbiased stochastic rounding) times
 *  weight (<= max_weight), appends the weight and the num_counters values of
 *  counters (borrowed; each <= max_counter; may be NULL only when
 *  num_counters is 0) and returns the masked vector. *clipped (may be NULL)
 *  receives how many coordinates were clipped. FL_EINVAL, naming the index,
 *  for a counter above max_counter (never clamped); the client then stays in
 *  step 2 and may be called again with valid counters. */
FL_NODISCARD int fl_secagg_client_masked(fl_secagg_client *c, const uint8_t *in, size_t in_len,
                                         const float *x, uint32_t weight,
                                         const uint32_t *counters, uint32_t *clipped,
                                         uint8_t **msg, size_t *len);

/** Step 3: takes U3; returns this party's signature over (context, U3). */
FL_NODISCARD int fl_secagg_client_consist(fl_secagg_client *c, const uint8_t *in, size_t in_len,
                                          uint8_t **msg, size_t *len);

/** Step 4: takes the U4 signatures; returns the shares to reveal. */
FL_NODISCARD int fl_secagg_client_unmask(fl_secagg_client *c, const uint8_t *in, size_t in_len,
                                         uint8_t **msg, size_t *len);

/** Wipes and frees. NULL is a no-op. */
void fl_secagg_client_free(fl_secagg_client *c);

/* ------------------------------------------------------------ server */

typedef struct fl_secagg_server fl_secagg_server;

FL_NODISCARD int fl_secagg_server_new(fl_secagg_server **out, const fl_secagg_params *p);

/** The step whose messages the server is collecting. */
fl_secagg_step fl_secagg_server_step(const fl_secagg_server *s);

/** Records party `from`'s message for the current step. Validates it fully
 *  (size, structure, signatures where the step has them, addressing);
 *  FL_EPROTO with a clear message for anything wrong — the message is then
 *  ignored and the party counts as dropped for this step. A second message
 *  from one party in one step is FL_ESTATE. */
FL_NODISCARD int fl_secagg_server_receive(fl_secagg_server *s, uint32_t from, const uint8_t *msg,
                                          size_t len);

/** Number of parties whose message for the current step has been accepted. */
uint32_t fl_secagg_server_received(const fl_secagg_server *s);

/** Ends the current step (all expected messages arrived, or its timeout
 *  passed). For steps 0..3: out[i] receives the message for party i
 *  (malloc'd, caller frees) or NULL if i is not a survivor; lens[i] its
 *  length. For step 4 nothing is sent (out may be NULL) and the sum becomes
 *  available. FL_ESTATE if fewer than t parties survived: the round is
 *  aborted and may not continue. */
FL_NODISCARD int fl_secagg_server_advance(fl_secagg_server *s, uint8_t **out, size_t *lens);

/** After step 4: the weighted sum (dim doubles: sum of weight * x, dequantized)
 *  and the total weight of the parties in U3. */
FL_NODISCARD int fl_secagg_server_result(const fl_secagg_server *s, double *sum,
                                         uint64_t *total_weight);

/** After step 4: writes num_counters exact sums to sums (caller's buffer),
 *  each the sum of that counter over the parties in U3 (the same parties as
 *  the weighted sum). sums may be NULL when num_counters is 0. FL_ESTATE
 *  before the result is available or after an abort. */
FL_NODISCARD int fl_secagg_server_counters(const fl_secagg_server *s, uint64_t *sums);

/** Survivors of the last completed step, as a bitmap of n bytes (1 = alive). */
const uint8_t *fl_secagg_server_alive(const fl_secagg_server *s);

void fl_secagg_server_free(fl_secagg_server *s);

#endif
