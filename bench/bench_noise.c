/*
 * bench_noise: throughput of fl_noise_add_gaussian_f64 (discrete Gaussian
 * on a 2^-28-stddev grid by the alias-table convolution sampler, with
 * randomized rounding of the input) against baselines measured in the
 * same run: the previous exact CKS 2020 sampler on the same grid
 * (fl_noise_add_gaussian_cks_f64), the raw ChaCha20 keystream producing
 * the 16 bytes the table sampler consumes per sample -- from
 * keystream/fl_keystream (OpenSSL) in 64 KiB calls, what fl_noise uses,
 * and from libsodium's
 * crypto_stream_chacha20_ietf (what it used before) --, the float entry
 * point, and the
 * Box-Muller sampler fl_noise used before issue 3 (file-static, baseline
 * only: it is NOT safe against Mironov 2012's floating-point attack).
 * The first call for a stddev builds its table; that time is printed
 * separately and excluded (DP-SGD reuses one stddev for every step).
 * Prints samples/s and ratios; never fails on timing.
 *
 * Usage: bench_noise [n_samples] [repeats]   (defaults 4000000 and 5)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "dp/fl_noise.h"
#include "keystream/fl_keystream.h"
#include "dp/fl_noise_internal.h"

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The pre-issue-3 interim sampler: Box-Muller on 53-bit CSPRNG uniforms. */
static void s_box_muller(float *out, size_t n, double sd)
{
    uint64_t buf[128];
    size_t pos = 128;
    for (size_t i = 0; i < n; i += 2) {
        if (pos + 2 > 128) {
            randombytes_buf(buf, sizeof buf);
            pos = 0;
        }
        double u1 = (double)(buf[pos++] >> 11) * 0x1p-53;
        double u2 = (double)(buf[pos++] >> 11) * 0x1p-53;
        double rad = sqrt(-2.0 * log1p(-u1));
        double th = 6.283185307179586 * u2;
        out[i] += (float)(sd * rad * cos(th));
        if (i + 1 < n)
            out[i + 1] += (float)(sd * rad * sin(th));
    }
    sodium_memzero(buf, sizeof buf);
}

/* Raw ChaCha20 keystream, `bytes` bytes in 32 KiB calls under one key. */
static void s_chacha(unsigned char *blk, size_t bytes)
{
    unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
    unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    randombytes_buf(key, sizeof key);
    for (size_t off = 0; off < bytes; off += 32768) {
        size_t m = bytes - off < 32768 ? bytes - off : 32768;
        crypto_stream_chacha20_ietf(blk, m, nonce, key);
        nonce[0]++; /* a fresh nonce per block; same cost as a counter */
    }
    sodium_memzero(key, sizeof key);
}

/* The same through keystream/fl_keystream (OpenSSL's ChaCha20), 64 KiB
 * calls, a fresh key per call as fl_noise does.  0 on success. */
static int s_chacha_evp(unsigned char *blk, size_t bytes)
{
    static const uint8_t nonce[12];
    unsigned char key[32];
    int ok = 1;
    for (size_t off = 0; ok && off < bytes; off += 65536) {
        size_t m = bytes - off < 65536 ? bytes - off : 65536;
        randombytes_buf(key, sizeof key);
        ok = fl_chacha20_ietf(blk, m, nonce, 0, key) == FL_OK;
    }
    sodium_memzero(key, sizeof key);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 4000000;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    size_t ncks = n / 4 > 0 ? n / 4 : 1; /* CKS is slow: time a quarter */
    double *d = calloc(n, sizeof *d);
    float *v = calloc(n, sizeof *v);
    unsigned char *blk = malloc(65536);
    if (!d || !v || !blk || n == 0 || reps < 1 || sodium_init() < 0) {
        fprintf(stderr, "bench_noise: bad arguments, out of memory or no libsodium\n");
        return 1;
    }
    double t0 = s_now();
    if (fl_noise_add_gaussian_f64(d, 1, 1.0) != FL_OK) {
        fprintf(stderr, "bench_noise: %s\n", fl_error_last());
        return 1;
    }
    double t_table = s_now() - t0;
    double best_tab = 1e30, best_f32 = 1e30, best_cks = 1e30, best_cc = 1e30, best_bm = 1e30,
           best_evp = 1e30;
    for (int r = 0; r < reps; r++) {
        memset(d, 0, n * sizeof *d); /* keep values small; also warms the pages */
        memset(v, 0, n * sizeof *v);
        double a = s_now();
        int rc = fl_noise_add_gaussian_f64(d, n, 1.0);
        double b = s_now();
        rc |= fl_noise_add_gaussian(v, n, 1.0);
        double c = s_now();
        memset(d, 0, ncks * sizeof *d);
        double c2 = s_now();
        rc |= fl_noise_add_gaussian_cks_f64(d, ncks, 1.0);
        double e = s_now();
        s_chacha(blk, 16 * n);
        double f = s_now();
        s_box_muller(v, n, 1.0);
        double g = s_now();
        rc |= s_chacha_evp(blk, 16 * n);
        double h = s_now();
        if (rc != FL_OK) {
            fprintf(stderr, "bench_noise: %s\n", fl_error_last());
            return 1;
        }
        best_tab = fmin(best_tab, b - a);
        best_f32 = fmin(best_f32, c - b);
        best_cks = fmin(best_cks, (e - c2) * (double)n / (double)ncks);
        best_cc = fmin(best_cc, f - e);
        best_bm = fmin(best_bm, g - f);
        best_evp = fmin(best_evp, h - g);
    }
    double tab = (double)n / best_tab, f32 = (double)n / best_f32, cks = (double)n / best_cks;
    double cc = (double)n / best_cc, bm = (double)n / best_bm, evp = (double)n / best_evp;
    printf("samples per run               : %zu (best of %d; CKS on %zu)\n", n, reps, ncks);
    printf("table build (first call)      : %8.2f ms\n", 1e3 * t_table);
    printf("table sampler, f64            : %8.2f M samples/s\n", tab / 1e6);
    printf("table sampler, float          : %8.2f M samples/s\n", f32 / 1e6);
    printf("CKS 2020 exact (previous)     : %8.2f M samples/s\n", cks / 1e6);
    printf("ChaCha20 OpenSSL, 16 B/smp    : %8.2f M samples/s (%.2f GB/s)\n", evp / 1e6,
           evp * 16 / 1e9);
    printf("ChaCha20 libsodium, 16 B/smp  : %8.2f M samples/s (%.2f GB/s)\n", cc / 1e6,
           cc * 16 / 1e9);
    printf("Box-Muller (old, unsafe)      : %8.2f M samples/s\n", bm / 1e6);
    printf("ratio table / CKS             : %8.2f\n", tab / cks);
    printf("ratio table / ChaCha20 OpenSSL: %8.3f\n", tab / evp);
    printf("ratio table / Box-Muller      : %8.3f\n", tab / bm);
    fl_noise_cache_free();
    free(d);
    free(v);
    free(blk);
    return 0;
}
