/*
 * fl_secagg_graph: the SecAgg+ neighbour graph (Bell, Bonawitz, Gascón,
 * Lepoint, Raykova 2020, "Secure Single-Server Aggregation with
 * (Poly)Logarithmic Overhead", CCS). A k-regular undirected graph over the
 * n parties, derived only from public data — the round context — so the
 * server and every client compute the same graph without a message.
 *
 * Construction: the Harary graph H_{k,n} on ring positions 0..n-1
 * (position i is adjacent to i +- d for d = 1..floor(k/2), and for odd k
 * also to i + n/2, which needs n even), with parties placed on the ring by
 * a uniform permutation drawn with Fisher-Yates from ChaCha20 keyed by
 * SHA-256("flc secagg+ graph" || context). An odd n*k admits no k-regular
 * graph at all (handshake lemma); fl_secagg_params_check refuses it.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secagg/fl_secagg_internal.h"

typedef struct {
    uint8_t key[32];
    uint64_t w0; /* next keystream word offset (multiple of 16) */
    uint32_t buf[16];
    unsigned pos;
} s_rng;

static uint32_t s_next(s_rng *g)
{
    if (g->pos == 16) {
        fl_secagg_keystream(g->buf, 16, g->w0, g->key, FL_SECAGG_NONCE_GRAPH);
        g->w0 += 16;
        g->pos = 0;
    }
    return g->buf[g->pos++];
}

/* Uniform in [0, bound) by rejection (no modulo bias). */
static uint32_t s_uniform(s_rng *g, uint32_t bound)
{
    uint32_t min = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
    uint32_t r;
    do
        r = s_next(g);
    while (r < min);
    return r % bound;
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int fl_secagg_graph(uint32_t *nbr, uint32_t n, uint32_t k, const uint8_t context[32])
{
    static const char label[] = "flc secagg+ graph";
    if (!nbr || !context || n < 2 || n > FL_SECAGG_MAX_PARTIES || k == 0 || k >= n ||
        ((k & 1u) && (n & 1u)))
        return fl_error_set(FL_EINVAL, "secagg+ graph: no %u-regular graph on %u parties "
                                       "(need 1 <= k <= n - 1 and n * k even)", k, n);
    uint32_t *perm = malloc((size_t)n * sizeof *perm), *pos = malloc((size_t)n * sizeof *pos);
    if (!perm || !pos) {
        free(perm);
        free(pos);
        return fl_error_set(FL_ENOMEM, "secagg+ graph: out of memory for n = %u", n);
    }
    s_rng g = {.pos = 16};
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    crypto_hash_sha256_update(&h, (const uint8_t *)label, sizeof label - 1);
    crypto_hash_sha256_update(&h, context, 32);
    crypto_hash_sha256_final(&h, g.key);
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) { /* Fisher-Yates: perm[position] = party */
        uint32_t j = s_uniform(&g, i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (uint32_t i = 0; i < n; i++)
        pos[perm[i]] = i;
    for (uint32_t u = 0; u < n; u++) {
        uint32_t *row = nbr + (size_t)u * k, o = 0, p = pos[u];
        for (uint32_t d = 1; d <= k / 2; d++) {
            row[o++] = perm[(p + d) % n];
            row[o++] = perm[(p + n - d) % n];
        }
        if (k & 1u)
            row[o++] = perm[(p + n / 2) % n];
        /* k <= n - 1 keeps the offsets +-1..+-floor(k/2) (and n/2) distinct
         * mod n, so the row has k distinct parties, none of them u. */
        qsort(row, k, sizeof *row, s_cmp_u32);
    }
    sodium_memzero(&g, sizeof g);
    free(perm);
    free(pos);
    return FL_OK;
}

int fl_secagg_graph_has(const uint32_t *row, uint32_t k, uint32_t v, uint32_t *slot)
{
    uint32_t lo = 0, hi = k;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (row[mid] == v) {
            if (slot)
                *slot = mid;
            return 1;
        }
        if (row[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}
