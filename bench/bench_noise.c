/*
 * bench_noise: throughput of fl_noise_add_gaussian (CKS 2020 discrete
 * Gaussian on a 2^-28-stddev grid, with randomized rounding of the input)
 * against baselines measured in the same run: libsodium's randombytes_buf
 * filling the same number of bytes as the output, and the Box-Muller
 * sampler fl_noise used before (kept here, file-static, only as a
 * baseline: it is NOT safe against Mironov 2012's floating-point attack).
 * Prints samples/s and ratios; never fails on timing.
 *
 * Usage: bench_noise [n_samples] [repeats]   (defaults 4000000 and 3)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "dp/fl_noise.h"

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

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 4000000;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    float *v = calloc(n, sizeof *v);
    if (!v || n == 0 || reps < 1 || sodium_init() < 0) {
        fprintf(stderr, "bench_noise: bad arguments, out of memory or no libsodium\n");
        return 1;
    }
    double best_dg = 1e30, best_bm = 1e30, best_rb = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = s_now();
        if (fl_noise_add_gaussian(v, n, 1.0) != FL_OK) {
            fprintf(stderr, "bench_noise: %s\n", fl_error_last());
            return 1;
        }
        double t1 = s_now();
        s_box_muller(v, n, 1.0);
        double t2 = s_now();
        randombytes_buf(v, n * sizeof *v);
        double t3 = s_now();
        for (size_t i = 0; i < n; i++) /* keep values small for the next round */
            v[i] = 0.0f;
        best_dg = fmin(best_dg, t1 - t0);
        best_bm = fmin(best_bm, t2 - t1);
        best_rb = fmin(best_rb, t3 - t2);
    }
    double dg = (double)n / best_dg, bm = (double)n / best_bm, rb = (double)n / best_rb;
    printf("samples per run          : %zu (best of %d)\n", n, reps);
    printf("discrete Gaussian (CKS)  : %8.2f M samples/s\n", dg / 1e6);
    printf("Box-Muller (old, unsafe) : %8.2f M samples/s\n", bm / 1e6);
    printf("randombytes_buf, 4 B/smp : %8.2f M samples/s (%.0f MB/s)\n", rb / 1e6,
           rb * 4 / 1e6);
    printf("ratio CKS / Box-Muller   : %8.3f\n", dg / bm);
    printf("ratio CKS / randombytes  : %8.3f\n", dg / rb);
    free(v);
    return 0;
}
