/*
 * fl_secagg_common: what client and server compute alike — parameter
 * checks, the fixed-point scale, key derivation (pairwise mask seeds and
 * share-encryption keys, each bound to the round context and the party
 * indices so no key or mask repeats across rounds or pairs), and the mask
 * PRG: ChaCha20-IETF keystream read as u32 words, generated 16 KiB at a
 * time and added into the target block while it sits in L1 cache.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keystream/fl_keystream.h"
#include "secagg/fl_secagg_internal.h"

int fl_secagg_params_check(const fl_secagg_params *p)
{
    if (!p)
        return fl_error_set(FL_EINVAL, "secagg: params is NULL");
    if (p->n < 2 || p->n > FL_SECAGG_MAX_PARTIES)
        return fl_error_set(FL_EINVAL, "secagg: n = %u parties; need 2..%u", p->n,
                            FL_SECAGG_MAX_PARTIES);
    if (p->t < 2 || p->t > p->n)
        return fl_error_set(FL_EINVAL,
                            "secagg: threshold t = %u; need 2 <= t <= n = %u (t = 1 would let "
                            "one share reveal a secret)", p->t, p->n);
    if (p->k != 0) {
        /* SecAgg+ (Bell et al. 2020): t becomes the per-neighbourhood
         * threshold. A dropped party's mask key can only come from its k
         * neighbours (its own share is gone with it), hence t <= k. */
        if (p->k >= p->n)
            return fl_error_set(FL_EINVAL,
                                "secagg: SecAgg+ k = %u neighbours with n = %u parties; need "
                                "k <= n - 1 (or k = 0 for the complete graph)", p->k, p->n);
        if ((p->k & 1u) && (p->n & 1u))
            return fl_error_set(FL_EINVAL,
                                "secagg: SecAgg+ k = %u is odd and n = %u is odd: no k-regular "
                                "graph exists (n * k must be even); use an even k", p->k, p->n);
        if (p->t > p->k)
            return fl_error_set(FL_EINVAL,
                                "secagg: SecAgg+ threshold t = %u exceeds k = %u neighbours; with "
                                "k > 0, t is the per-neighbourhood threshold and needs "
                                "2 <= t <= k", p->t, p->k);
    }
    if (p->dim == 0 || p->dim > FL_SECAGG_MAX_DIM)
        return fl_error_set(FL_EINVAL, "secagg: dim = %u; need 1..%u", p->dim, FL_SECAGG_MAX_DIM);
    if (!(p->clip_range > 0.0) || !isfinite(p->clip_range))
        return fl_error_set(FL_EINVAL, "secagg: clip range R = %g; need a finite R > 0",
                            p->clip_range);
    if (p->max_weight == 0)
        return fl_error_set(FL_EINVAL, "secagg: max_weight is 0; need >= 1");
    if (p->num_counters > FL_SECAGG_MAX_COUNTERS)
        return fl_error_set(FL_EINVAL, "secagg: num_counters = %u; need 0..%u", p->num_counters,
                            FL_SECAGG_MAX_COUNTERS);
    if (p->num_counters > 0) {
        if (p->max_counter == 0)
            return fl_error_set(FL_EINVAL, "secagg: num_counters = %u with max_counter = 0; "
                                           "need max_counter >= 1", p->num_counters);
        /* Each of the n parties adds at most max_counter to a counter, so
         * the true sum is at most n * max_counter; below 2^32 it cannot wrap
         * in Z_2^32 and the unmasked word is the exact sum. */
        uint64_t bound = (uint64_t)p->n * p->max_counter;
        if (bound >= (1ull << 32))
            return fl_error_set(FL_EINVAL,
                                "secagg: n = %u parties times max_counter = %u is %llu, not "
                                "below 2^32: a counter sum could wrap; lower max_counter to at "
                                "most %llu", p->n, p->max_counter, (unsigned long long)bound,
                                (unsigned long long)(0xFFFFFFFFull / p->n));
    }
    /* One masked vector is the largest message a client sends. */
    if (9 + 4 * (uint64_t)fl_secagg_words(p) > FL_SECAGG_MAX_MSG)
        return fl_error_set(FL_EINVAL,
                            "secagg: dim = %u plus the weight and num_counters = %u make a "
                            "masked vector of %llu bytes, above the %u-byte message limit",
                            p->dim, p->num_counters,
                            (unsigned long long)(9 + 4 * (uint64_t)fl_secagg_words(p)),
                            FL_SECAGG_MAX_MSG);
    if (!p->identity_pks)
        return fl_error_set(FL_EINVAL, "secagg: identity_pks is NULL; pass the n enrolled "
                                       "Ed25519 keys");
    if (fl_secagg_scale(p) < 1.0)
        return fl_error_set(FL_EINVAL,
                            "secagg: no fixed-point scale >= 1 with n = %u, max_weight = %u, "
                            "R = %g: n * max_weight * R must stay below 2^31; lower R or "
                            "max_weight", p->n, p->max_weight, p->clip_range);
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "secagg: libsodium failed to initialise");
    return FL_OK;
}

double fl_secagg_scale(const fl_secagg_params *p)
{
    if (!p || p->n == 0 || p->max_weight == 0 || !(p->clip_range > 0.0) ||
        !isfinite(p->clip_range))
        return 0.0;
    /* Largest integer magnitude one party may contribute per coordinate
     * before weighting: n * max_weight * qmax <= 2^31 - 1, so the sum of all
     * weighted, quantized coordinates stays in the signed half-range of
     * Z_2^32 and cannot wrap. Stochastic rounding gives at most
     * ceil(R * scale) <= qmax whenever R * scale <= qmax (qmax integer). */
    uint64_t nw = (uint64_t)p->n * p->max_weight;
    uint64_t qmax = 2147483647ull / nw;
    double R = p->clip_range;
    if (qmax < 1 || R > (double)qmax)
        return 0.0;
    /* A power of two: x * scale is exact in double for float x, so inputs
     * on the 1/scale grid quantize deterministically. */
    double scale = 1.0;
    while (R * (scale * 2.0) <= (double)qmax)
        scale *= 2.0;
    return scale;
}

static int s_x25519(uint8_t q[32], const uint8_t sk[32], const uint8_t pk[32])
{
    if (crypto_scalarmult(q, sk, pk) != 0)
        return fl_error_set(FL_ECRYPTO, "secagg: X25519 with a low-order public key");
    return FL_OK;
}

int fl_secagg_mask_seed(uint8_t seed[32], const uint8_t c_sk_a[32], const uint8_t c_pk_b[32],
                        const uint8_t context[32], uint32_t a, uint32_t b)
{
    uint8_t q[32], msg[48];
    int rc = s_x25519(q, c_sk_a, c_pk_b);
    if (rc == FL_OK) {
        memcpy(msg, "FLSA-msk", 8);
        memcpy(msg + 8, context, 32);
        fl_secagg_put32(msg + 40, a < b ? a : b);
        fl_secagg_put32(msg + 44, a < b ? b : a);
        crypto_generichash(seed, 32, msg, sizeof msg, q, sizeof q);
    }
    sodium_memzero(q, sizeof q);
    return rc;
}

int fl_secagg_share_key(uint8_t key[32], const uint8_t s_sk[32], const uint8_t s_pk_other[32],
                        const uint8_t context[32], uint32_t sender, uint32_t recipient)
{
    uint8_t q[32], msg[48];
    int rc = s_x25519(q, s_sk, s_pk_other);
    if (rc == FL_OK) {
        memcpy(msg, "FLSA-enc", 8);
        memcpy(msg + 8, context, 32);
        fl_secagg_put32(msg + 40, sender);
        fl_secagg_put32(msg + 44, recipient);
        crypto_generichash(key, 32, msg, sizeof msg, q, sizeof q);
    }
    sodium_memzero(q, sizeof q);
    return rc;
}

void fl_secagg_share_ad(uint8_t ad[48], const uint8_t context[32], uint32_t sender,
                        uint32_t recipient)
{
    memcpy(ad, "FLSA-shr", 8);
    memcpy(ad + 8, context, 32);
    fl_secagg_put32(ad + 40, sender);
    fl_secagg_put32(ad + 44, recipient);
}

int fl_secagg_consist_bytes(uint8_t **out, size_t *len, const uint8_t context[32],
                            const uint8_t *members, uint32_t n)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        m += members[i] != 0;
    size_t l = 8 + 32 + 4 + 4 * (size_t)m;
    uint8_t *b = malloc(l);
    if (!b)
        return fl_error_set(FL_ENOMEM, "secagg: out of memory for the consistency message");
    memcpy(b, "FLSA-con", 8);
    memcpy(b + 8, context, 32);
    fl_secagg_put32(b + 40, m);
    size_t o = 44;
    for (uint32_t i = 0; i < n; i++)
        if (members[i]) {
            fl_secagg_put32(b + o, i);
            o += 4;
        }
    *out = b;
    *len = l;
    return FL_OK;
}

void fl_secagg_keystream(uint32_t *ks, size_t words, uint64_t w0, const uint8_t key[32],
                         uint8_t kind)
{
    uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {kind};
    /* 16 words = one 64-byte ChaCha20 block; the IETF counter is 32 bits,
     * enough for 2^36 words, far above FL_SECAGG_MAX_DIM. */
    while (words > 0) {
        size_t w = words < FL_SECAGG_BLOCK_WORDS ? words : FL_SECAGG_BLOCK_WORDS;
        /* keystream/: OpenSSL's ChaCha20, the same bytes as libsodium's
         * (its own fallback).  It refuses only NULL buffers and counter
         * wrap-around, impossible here (see above), so a refusal is a bug:
         * never continue with a wrong mask. */
        if (fl_chacha20_ietf((uint8_t *)ks, w * 4, nonce, (uint32_t)(w0 / 16), key) != FL_OK)
            abort();
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
        for (size_t i = 0; i < w; i++)
            ks[i] = fl_secagg_get32((const uint8_t *)&ks[i]);
#endif
        ks += w;
        w0 += w;
        words -= w;
    }
}

/* Fixed trip count and restrict: GCC -O2 vectorises these (SSE2 paddd). */
static void s_add_block(uint32_t *restrict a, const uint32_t *restrict b)
{
    for (size_t i = 0; i < FL_SECAGG_BLOCK_WORDS; i++)
        a[i] += b[i];
}

static void s_sub_block(uint32_t *restrict a, const uint32_t *restrict b)
{
    for (size_t i = 0; i < FL_SECAGG_BLOCK_WORDS; i++)
        a[i] -= b[i];
}

void fl_secagg_apply_block(uint32_t *blk, size_t words, uint64_t w0,
                           const fl_secagg_stream *st, size_t nst, uint32_t *ks)
{
    for (size_t s = 0; s < nst; s++) {
        fl_secagg_keystream(ks, words, w0, st[s].key, st[s].kind);
        if (words == FL_SECAGG_BLOCK_WORDS) {
            if (st[s].sign > 0)
                s_add_block(blk, ks);
            else
                s_sub_block(blk, ks);
        } else if (st[s].sign > 0) {
            for (size_t i = 0; i < words; i++)
                blk[i] += ks[i];
        } else {
            for (size_t i = 0; i < words; i++)
                blk[i] -= ks[i];
        }
    }
}
