/*
 * fl_secagg_internal: what the client and server halves of fl_secagg share
 * (wire tags and sizes, key derivation, the mask PRG, the prime field and
 * Shamir sharing), exposed to tests/secagg and bench/ but not to node/ or
 * coordinator/, which use fl_secagg.h only.
 *
 * Wire formats (all integers little-endian, fixed widths; every message
 * starts with a one-byte tag naming its step and direction). H(v) is the
 * set of parties holding shares of v's secrets: with k = 0 every party,
 * with k > 0 (SecAgg+) v itself and its k neighbours in the round's graph
 * (fl_secagg_graph). N(v) = H(v) \ {v}. With k = 0 every message below is
 * exactly what plain Bonawitz sends.
 *
 *   ADVERT   client->server  (165 bytes)
 *     u8 0xA0 | u32 party | context[32] | c_pk[32] | s_pk[32] | sig[64]
 *     sig = Ed25519(identity, "FLSA-adv" || first 101 bytes)
 *   ADVERTS  server->client v (5 + 165*count)
 *     u8 0xA1 | u32 count | count x ADVERT of U1 ∩ H(v), parties strictly ascending
 *   SHARES   client->server  (9 + 172*count), count = |U1 ∩ N(sender)|
 *     u8 0xB0 | u32 sender | u32 count |
 *       count x { u32 recipient | nonce[24] | ct[144] }, recipients = U1 ∩ N(sender) ascending
 *     ct = XChaCha20-Poly1305(key = KDF_enc(X25519(s_sk_u, s_pk_v), context, u, v),
 *                             ad  = "FLSA-shr" || context || u32 u || u32 v,
 *                             pt  = 8 x u64 share of c_sk_u || 8 x u64 share of b_u)
 *   SHAREBOX server->client v (5 + 4*m + 176*(m-1)), m = |U2 ∩ H(v)|
 *     u8 0xB1 | u32 m | m x u32 party (U2 ∩ H(v) ascending) |
 *       (m-1) x { u32 sender | u32 recipient | nonce[24] | ct[144] }, senders = U2 ∩ N(v) ascending
 *   MASKED   client->server  (9 + 4*(dim+1+num_counters))
 *     u8 0xC0 | u32 sender | u32 words (= dim + 1 + num_counters) | words x u32
 *     (quantized weighted coordinates, then the weight, then the counters)
 *   U3LIST   server->client  (5 + 4*m), the global U3 for every k
 *     u8 0xC1 | u32 m | m x u32 party (U3 ascending)
 *   CONSIST  client->server  (69 bytes)
 *     u8 0xD0 | u32 sender | sig[64]
 *     sig = Ed25519(identity, "FLSA-con" || context || u32 m || m x u32 party of U3)
 *   SIGS     server->client v (5 + 68*m)
 *     u8 0xD1 | u32 m | m x { u32 party | sig[64] }, parties of U4 ∩ H(v) strictly ascending
 *   UNMASK   client->server  (9 + 69*m), m = |U2 ∩ H(sender)|
 *     u8 0xE0 | u32 sender | u32 m | m x { u32 party | u8 kind | 8 x u64 share },
 *     parties = U2 ∩ H(sender) ascending, kind 1 = share of b_party (party in U3),
 *     kind 2 = share of c_sk_party (party in U2 \ U3)
 *
 * Shamir points are x = party + 1 for every k; with k > 0 a secret of u is
 * evaluated only at the points of H(u) ∩ U1 (cost O(k t), not O(n t)).
 *
 * Field elements (u64) are always < FL_SECAGG_P; parsers check it.
 */
#ifndef FL_SECAGG_INTERNAL_H
#define FL_SECAGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "secagg/fl_secagg.h"

#define FL_SECAGG_TAG_ADVERT 0xA0u
#define FL_SECAGG_TAG_ADVERTS 0xA1u
#define FL_SECAGG_TAG_SHARES 0xB0u
#define FL_SECAGG_TAG_SHAREBOX 0xB1u
#define FL_SECAGG_TAG_MASKED 0xC0u
#define FL_SECAGG_TAG_U3LIST 0xC1u
#define FL_SECAGG_TAG_CONSIST 0xD0u
#define FL_SECAGG_TAG_SIGS 0xD1u
#define FL_SECAGG_TAG_UNMASK 0xE0u

#define FL_SECAGG_ADVERT_LEN 165u
#define FL_SECAGG_ADVERT_SIGNED 101u /* bytes of the advert covered by sig */
#define FL_SECAGG_SHARE_PT 128u      /* 2 secrets x 8 limbs x u64 */
#define FL_SECAGG_SHARE_CT (FL_SECAGG_SHARE_PT + 16u)
#define FL_SECAGG_SHARE_ENTRY (4u + 24u + FL_SECAGG_SHARE_CT)     /* 172 */
#define FL_SECAGG_BOX_ENTRY (4u + 4u + 24u + FL_SECAGG_SHARE_CT)  /* 176 */
#define FL_SECAGG_CONSIST_LEN 69u
#define FL_SECAGG_SIG_ENTRY 68u
#define FL_SECAGG_UNMASK_ENTRY 69u

#define FL_SECAGG_KIND_B 1u
#define FL_SECAGG_KIND_CSK 2u

/* The mask PRG works on blocks of this many 32-bit words (16 KiB): one
 * ChaCha20 call per block and mask, added in place while in L1. */
#define FL_SECAGG_BLOCK_WORDS 4096u

/* ------------------------------------------------------------ bytes */

static inline void fl_secagg_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t fl_secagg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void fl_secagg_put64(uint8_t *p, uint64_t v)
{
    fl_secagg_put32(p, (uint32_t)v);
    fl_secagg_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t fl_secagg_get64(const uint8_t *p)
{
    return (uint64_t)fl_secagg_get32(p) | (uint64_t)fl_secagg_get32(p + 4) << 32;
}

/* ------------------------------------------------------------ params, keys */

/** Validates public parameters (FL_EINVAL with the reason). */
FL_NODISCARD int fl_secagg_params_check(const fl_secagg_params *p);

/** Words of one masked vector, every one masked alike: dim coordinates,
 *  the weight, num_counters counters. */
static inline size_t fl_secagg_words(const fl_secagg_params *p)
{
    return (size_t)p->dim + 1 + p->num_counters;
}

/** Pairwise mask seed s_uv = BLAKE2b-256(key = X25519(c_sk_a, c_pk_b),
 *  "FLSA-msk" || context || u32 min(a,b) || u32 max(a,b)). FL_ECRYPTO if
 *  c_pk_b is a low-order point. */
FL_NODISCARD int fl_secagg_mask_seed(uint8_t seed[32], const uint8_t c_sk_a[32],
                                     const uint8_t c_pk_b[32], const uint8_t context[32],
                                     uint32_t a, uint32_t b);

/** Share-encryption key for sender -> recipient: BLAKE2b-256(key =
 *  X25519(s_sk, s_pk_other), "FLSA-enc" || context || u32 sender || u32
 *  recipient); one key per direction. FL_ECRYPTO on a low-order point. */
FL_NODISCARD int fl_secagg_share_key(uint8_t key[32], const uint8_t s_sk[32],
                                     const uint8_t s_pk_other[32], const uint8_t context[32],
                                     uint32_t sender, uint32_t recipient);

/** Checks one 165-byte ADVERT: tag, party < n, context equal to ours,
 *  Ed25519 signature by identity_pks[party]. FL_EPROTO with the reason. */
FL_NODISCARD int fl_secagg_advert_check(const fl_secagg_params *p, const uint8_t *a,
                                        uint32_t *party);

/** AEAD additional data for a share ciphertext (48 bytes). */
void fl_secagg_share_ad(uint8_t ad[48], const uint8_t context[32], uint32_t sender,
                        uint32_t recipient);

/** Bytes signed in a CONSIST message, written to a fresh buffer. */
FL_NODISCARD int fl_secagg_consist_bytes(uint8_t **out, size_t *len, const uint8_t context[32],
                                         const uint8_t *members, uint32_t n);

/* ------------------------------------------------------------ mask PRG */

/** One mask stream: ChaCha20-IETF keystream under `key` with nonce
 *  (kind,0,...,0) read as u32 LE words, added (sign +1) or subtracted. */
typedef struct {
    const uint8_t *key;
    int sign;
    uint8_t kind; /* 0 pairwise, 1 self mask */
} fl_secagg_stream;

#define FL_SECAGG_NONCE_PAIR 0u
#define FL_SECAGG_NONCE_SELF 1u
#define FL_SECAGG_NONCE_ROUND 2u /* stochastic-rounding randomness */
#define FL_SECAGG_NONCE_GRAPH 3u /* SecAgg+ graph permutation (public key) */

/** Fills ks with `words` keystream words starting at word offset w0 (a
 *  multiple of 16) of the stream (key, kind). */
void fl_secagg_keystream(uint32_t *ks, size_t words, uint64_t w0, const uint8_t key[32],
                         uint8_t kind);

/** blk[0..words) += sum of +-streams at word offset w0 (multiple of 16);
 *  ks is scratch of FL_SECAGG_BLOCK_WORDS words; words <= that. */
void fl_secagg_apply_block(uint32_t *blk, size_t words, uint64_t w0,
                           const fl_secagg_stream *st, size_t nst, uint32_t *ks);

/* ------------------------------------------------------------ SecAgg+ graph */

/** The round's SecAgg+ neighbour graph, the same at every party: writes
 *  n * k party indices, row u (nbr[u*k .. u*k+k)) = u's k neighbours in
 *  ascending order. Harary graph H_{k,n} over a permutation of the parties
 *  drawn from ChaCha20 keyed by SHA-256("flc secagg+ graph" || context).
 *  FL_EINVAL unless 1 <= k <= n - 1 and n * k is even. */
FL_NODISCARD int fl_secagg_graph(uint32_t *nbr, uint32_t n, uint32_t k,
                                 const uint8_t context[32]);

/** 1 if v is in the ascending row of k entries (its index to *slot, which
 *  may be NULL), else 0. */
int fl_secagg_graph_has(const uint32_t *row, uint32_t k, uint32_t v, uint32_t *slot);

/* ------------------------------------------------------------ field, Shamir */

#define FL_SECAGG_P ((uint64_t)0x1FFFFFFFFFFFFFFFull) /* 2^61 - 1 */
#define FL_SECAGG_LIMBS 8u                               /* 32-byte secret = 8 x u32 */

uint64_t fl_secagg_fp_add(uint64_t a, uint64_t b);
uint64_t fl_secagg_fp_sub(uint64_t a, uint64_t b);
uint64_t fl_secagg_fp_mul(uint64_t a, uint64_t b);
/** a^(p-2) (Fermat); 0 for a = 0. */
uint64_t fl_secagg_fp_inv(uint64_t a);

/** Splits `secret` (8 LE u32 limbs) into n shares for points x = 1..n,
 *  degree t-1: shares[i*8 + j] is limb j's share for x = i + 1. */
FL_NODISCARD int fl_secagg_shamir_split(const uint8_t secret[32], uint32_t n, uint32_t t,
                                        uint64_t *shares);

/** As fl_secagg_shamir_split, at the m distinct non-zero points xs:
 *  shares[i*8 + j] is limb j's share for x = xs[i]. */
FL_NODISCARD int fl_secagg_shamir_split_at(const uint8_t secret[32], const uint64_t *xs,
                                           uint32_t m, uint32_t t, uint64_t *shares);

/** Lagrange coefficients at 0 for m distinct non-zero points xs (in F_p).
 *  FL_EINVAL for a repeated or zero point. */
FL_NODISCARD int fl_secagg_lagrange0(uint64_t *lambda, const uint64_t *xs, uint32_t m);

/** Sum lambda[i] * ys[i*stride] over m: the value at 0. */
uint64_t fl_secagg_interpolate0(const uint64_t *lambda, const uint64_t *ys, size_t stride,
                                uint32_t m);

/** Reconstructs a secret from m shares (shares[i*8 + j] at point xs[i]).
 *  FL_EPROTO if a limb does not fit 32 bits (inconsistent shares). */
FL_NODISCARD int fl_secagg_shamir_combine(uint8_t secret[32], const uint64_t *xs,
                                          const uint64_t *shares, uint32_t m);

/* ------------------------------------------------------------ test hooks */

/** Test hook, never for production code: after a successful step 4, the
 *  share this client holds from party v, of kind FL_SECAGG_KIND_B or
 *  FL_SECAGG_KIND_CSK. Goes through the same guard as step 4: refuses
 *  (FL_ESTATE) the other kind for a v already revealed — the never-both
 *  rule — and refuses anything before step 4 completed. */
FL_NODISCARD int fl_secagg_client_reveal(fl_secagg_client *c, uint32_t v, unsigned kind,
                                         uint64_t share[8]);

/** Test hook: the share holders H(me) this client works with (n bytes,
 *  1 = holder; itself included). */
void fl_secagg_client_holders(const fl_secagg_client *c, uint8_t *map);

/** Test hook: the share holders H(u) the server uses for party u (n bytes). */
void fl_secagg_server_holders(const fl_secagg_server *s, uint32_t u, uint8_t *map);

#endif
