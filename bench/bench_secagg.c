/*
 * bench_secagg: cost of secure aggregation (fl_secagg) against the
 * stream-cipher bound measured in the same run. n parties, dim coordinates:
 * each client's masking step (step 2: share decryption, key agreement,
 * quantization with stochastic rounding, self mask and n-1 pairwise masks)
 * and the server's unmasking (step 4: Shamir reconstruction, key
 * agreement, removing the remaining masks), with no dropout and with 3
 * parties dropping after the share exchange; once with every pair masking
 * (k = 0, plain Bonawitz) and once with the SecAgg+ graph, k = 4 (t = 3;
 * the dropping parties are chosen from the round's graph so that every
 * neighbourhood keeps t revealing holders). Baseline: the time the
 * masks' own ChaCha20 (keystream/fl_keystream, OpenSSL) takes to produce
 * the same number of keystream bytes (generated 16 KiB at a time, the way
 * the masks are); libsodium's rate is printed beside it.
 * Prints times and ratios; never fails on timing.
 *
 * Usage: bench_secagg [n=10] [dim=1000000] [repeats=3]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "keystream/fl_keystream.h"
#include "secagg/fl_secagg.h"
#include "secagg/fl_secagg_internal.h"

#define S_MAXN 64

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds to make `bytes` bytes of ChaCha20 keystream, 16 KiB a call,
 * with the code the masks use (keystream/fl_keystream: OpenSSL) or, if
 * sodium, with libsodium's crypto_stream_chacha20_ietf (what they used
 * before). */
static double s_chacha(size_t bytes, int sodium)
{
    static uint8_t buf[16384];
    uint8_t key[32], nonce[12] = {0};
    randombytes_buf(key, sizeof key);
    double t0 = s_now();
    for (size_t done = 0; done < bytes; done += sizeof buf) {
        size_t l = bytes - done < sizeof buf ? bytes - done : sizeof buf;
        if (sodium)
            crypto_stream_chacha20_ietf(buf, l, nonce, key);
        else if (fl_chacha20_ietf(buf, l, nonce, 0, key) != FL_OK)
            return -1.0;
        nonce[0]++;
    }
    double t = s_now() - t0;
    if (buf[0] == 0x5a && buf[1] == 0xa5)
        fputc(' ', stderr); /* keep the work */
    return t;
}

typedef struct {
    double mask_mean, mask_max, unmask, recv;
} s_times;

/* Marks up to `want` parties in drop[] (after the share exchange) such
 * that the round can still unmask: with k = 0 parties 0..want-1; with k > 0
 * greedily, keeping t live neighbours for a dropped party and t - 1 for a
 * survivor. Fills *unmask_streams with the server's mask count. */
static uint32_t s_droppers(const fl_secagg_params *p, uint32_t want, int *drop,
                           size_t *unmask_streams)
{
    uint32_t n = p->n, k = p->k, nd = 0;
    static uint32_t nbr[S_MAXN * S_MAXN];
    memset(drop, 0, sizeof *drop * n);
    if (k == 0) {
        for (nd = 0; nd < want; nd++)
            drop[nd] = 1;
        *unmask_streams = (size_t)(n - nd) + (size_t)nd * (n - nd);
        return nd;
    }
    if (fl_secagg_graph(nbr, n, k, p->context) != 0)
        return 0;
    for (uint32_t v = 0; v < n && nd < want; v++) {
        drop[v] = 1;
        int ok = n - nd - 1 >= p->t;
        for (uint32_t u = 0; u < n && ok; u++) {
            uint32_t live = 0;
            for (uint32_t j = 0; j < k; j++)
                live += !drop[nbr[u * k + j]];
            ok = drop[u] ? live >= p->t : live + 1 >= p->t;
        }
        if (ok)
            nd++;
        else
            drop[v] = 0;
    }
    *unmask_streams = n - nd;
    for (uint32_t v = 0; v < n; v++)
        for (uint32_t j = 0; drop[v] && j < k; j++)
            *unmask_streams += !drop[nbr[v * k + j]];
    return nd;
}

static int s_round(uint32_t n, uint32_t t, uint32_t k, uint32_t dim, uint32_t drops,
                   fl_identity **ids, const uint8_t (*pks)[32], float *x, s_times *tm,
                   uint32_t *ndropped, size_t *unmask_streams)
{
    fl_secagg_params p = {.n = n, .t = t, .k = k, .dim = dim, .clip_range = 1.0,
                          .max_weight = 1000, .identity_pks = pks};
    randombytes_buf(p.context, sizeof p.context);
    int drop[S_MAXN];
    *ndropped = s_droppers(&p, drops, drop, unmask_streams);
    fl_secagg_server *sv = NULL;
    fl_secagg_client *cl[S_MAXN] = {0};
    uint8_t *in[S_MAXN] = {0}, *out[S_MAXN] = {0};
    size_t inl[S_MAXN] = {0}, outl[S_MAXN] = {0};
    int rc = fl_secagg_server_new(&sv, &p);
    for (uint32_t i = 0; rc == 0 && i < n; i++)
        rc = fl_secagg_client_new(&cl[i], &p, i, ids[i]);
    memset(tm, 0, sizeof *tm);
    uint32_t nmask = 0;
    for (int step = 0; rc == 0 && step < 5; step++) {
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            if (step > 0 && !in[i])
                continue;
            if (step >= 2 && drop[i]) /* drop after the share exchange */
                continue;
            uint8_t *m = NULL;
            size_t l = 0;
            double t0 = s_now();
            switch (step) {
            case 0: rc = fl_secagg_client_advertise(cl[i], &m, &l); break;
            case 1: rc = fl_secagg_client_share(cl[i], in[i], inl[i], &m, &l); break;
            case 2: {
                rc = fl_secagg_client_masked(cl[i], in[i], inl[i], x, 1 + i, NULL, NULL, &m, &l);
                double d = s_now() - t0;
                tm->mask_mean += d;
                tm->mask_max = d > tm->mask_max ? d : tm->mask_max;
                nmask++;
                break;
            }
            case 3: rc = fl_secagg_client_consist(cl[i], in[i], inl[i], &m, &l); break;
            default: rc = fl_secagg_client_unmask(cl[i], in[i], inl[i], &m, &l); break;
            }
            if (rc == 0) {
                t0 = s_now();
                rc = fl_secagg_server_receive(sv, i, m, l);
                if (step == 2)
                    tm->recv += s_now() - t0;
            }
            free(m);
        }
        for (uint32_t i = 0; i < n; i++) {
            free(in[i]);
            in[i] = NULL;
        }
        if (rc)
            break;
        double t0 = s_now();
        rc = fl_secagg_server_advance(sv, step < 4 ? out : NULL, step < 4 ? outl : NULL);
        if (step == 4)
            tm->unmask = s_now() - t0;
        for (uint32_t i = 0; step < 4 && i < n; i++) {
            in[i] = out[i];
            inl[i] = outl[i];
        }
    }
    if (rc)
        fprintf(stderr, "bench_secagg: %s\n", fl_error_last());
    if (nmask)
        tm->mask_mean /= nmask;
    for (uint32_t i = 0; i < n; i++) {
        free(in[i]);
        fl_secagg_client_free(cl[i]);
    }
    fl_secagg_server_free(sv);
    return rc;
}

int main(int argc, char **argv)
{
    uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 10;
    uint32_t dim = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1000000;
    int reps = argc > 3 ? atoi(argv[3]) : 3;
    if (n < 5 || n > S_MAXN || dim == 0 || reps < 1 || sodium_init() < 0) {
        fprintf(stderr, "bench_secagg: usage: bench_secagg [n 5..%d] [dim] [repeats]\n", S_MAXN);
        return 1;
    }
    fl_identity *ids[S_MAXN];
    uint8_t pks[S_MAXN][32];
    float *x = malloc(sizeof *x * dim);
    if (!x)
        return 1;
    for (uint32_t i = 0; i < n; i++) {
        if (fl_identity_generate(&ids[i]) != 0)
            return 1;
        memcpy(pks[i], fl_identity_public_of(ids[i])->sign_pk, 32);
    }
    for (uint32_t j = 0; j < dim; j++)
        x[j] = (float)((double)(j % 2001) / 1000.0 - 1.0);

    printf("bench_secagg: n = %u, dim = %u, best of %d\n", n, dim, reps);
    size_t vec = 4 * ((size_t)dim + 1);
    for (int sc = 0; sc < 4; sc++) {
        uint32_t k = sc < 2 ? 0 : 4, t = k ? k / 2 + 1 : n / 2 + 1;
        uint32_t drops = sc % 2 ? 3 : 0, nd = 0;
        s_times best = {1e30, 1e30, 1e30, 1e30};
        double best_mask_ks = 1e30, best_unmask_ks = 1e30, best_sodium_ks = 1e30;
        size_t streams = 0;
        /* keystream bytes: client = self + one pairwise mask per neighbour
         * in U2 (n - 1 for k = 0, k for SecAgg+), plus one stream of
         * rounding randomness; server = |U3| self masks + one pairwise
         * mask per (dropped party, surviving neighbour) */
        uint32_t cmasks = k ? k + 1 : n;
        size_t mask_bytes = (size_t)cmasks * vec, round_bytes = (size_t)dim * 4;
        for (int r = 0; r < reps; r++) {
            s_times tm;
            if (s_round(n, t, k, dim, drops, ids, (const uint8_t(*)[32])pks, x, &tm, &nd,
                        &streams) != 0)
                return 1;
            best.mask_mean = tm.mask_mean < best.mask_mean ? tm.mask_mean : best.mask_mean;
            best.mask_max = tm.mask_max < best.mask_max ? tm.mask_max : best.mask_max;
            best.unmask = tm.unmask < best.unmask ? tm.unmask : best.unmask;
            best.recv = tm.recv < best.recv ? tm.recv : best.recv;
            /* the greedy dropper choice depends on the round's graph: use
             * the last round's stream count (the same for k = 0) */
            double a = s_chacha(mask_bytes, 0), b = s_chacha(streams * vec, 0);
            double c = s_chacha(mask_bytes, 1);
            if (a < 0 || b < 0) {
                fprintf(stderr, "bench_secagg: %s\n", fl_error_last());
                return 1;
            }
            best_mask_ks = a < best_mask_ks ? a : best_mask_ks;
            best_unmask_ks = b < best_unmask_ks ? b : best_unmask_ks;
            best_sodium_ks = c < best_sodium_ks ? c : best_sodium_ks;
        }
        size_t unmask_bytes = streams * vec;
        uint32_t u3 = n - nd;
        double ks_rate = (double)mask_bytes / best_mask_ks / 1e9;
        double with_round = best_mask_ks * (double)(mask_bytes + round_bytes) / (double)mask_bytes;
        printf("\nk = %u%s, t = %u, %s (|U2| = %u, |U3| = %u)\n", k,
               k ? " (SecAgg+)" : " (all pairs)", t,
               nd ? "dropouts after share exchange" : "no dropout", n, u3);
        printf("  ChaCha20 keystream rate (same run)      %8.2f GB/s (OpenSSL, as the masks; "
               "libsodium %.2f GB/s)\n", ks_rate, (double)mask_bytes / best_sodium_ks / 1e9);
        printf("  client masking (step 2), mean / max     %8.2f / %.2f ms\n",
               1e3 * best.mask_mean, 1e3 * best.mask_max);
        printf("    ChaCha20 for its %u masks (%.1f MB)   %8.2f ms   ratio %.2f\n", cmasks,
               (double)mask_bytes / 1e6, 1e3 * best_mask_ks, best.mask_mean / best_mask_ks);
        printf("    ... plus rounding stream (%.1f MB)     %8.2f ms   ratio %.2f\n",
               (double)(mask_bytes + round_bytes) / 1e6, 1e3 * with_round,
               best.mask_mean / with_round);
        printf("  server unmasking (step 4 advance)        %8.2f ms\n", 1e3 * best.unmask);
        printf("    ChaCha20 for its %zu masks (%.1f MB)  %8.2f ms   ratio %.2f\n", streams,
               (double)unmask_bytes / 1e6, 1e3 * best_unmask_ks,
               best.unmask / best_unmask_ks);
        printf("  server receiving %u masked vectors       %8.2f ms (summed on arrival)\n", u3,
               1e3 * best.recv);
    }
    for (uint32_t i = 0; i < n; i++)
        fl_identity_free(ids[i]);
    free(x);
    return 0;
}
