/*
 * bench_dpsgd: what differential privacy costs per training step.  On
 * random data, in the same run, it measures examples/s of
 *   plain   - fl_mlp_gradient on a 256-row batch (the baseline),
 *   ghost   - fl_mlp_clipped_gradient_sum on the same batch (clipping only),
 *   dp      - fl_dpsgd_step_clipped over the ghost path: Poisson sampling,
 *             clipped sum, discrete Gaussian noise, division by qN,
 *   dp-expl - fl_dpsgd_step over fl_mlp_example_gradients (per-example
 *             gradients materialised and clipped by fl_dp_clip_rows),
 * each followed by the same SGD update, plus the sampler and the noise
 * alone, for MLP 30-128-64-1 (sigmoid) and 784-256-128-10 (softmax) with
 * batch 256 (q = 256/N).  It also times a 1024^3 sgemm to give the
 * machine's GFLOP/s and reports the fraction the plain and private steps
 * reach.  OpenBLAS thread counts are set with openblas_set_num_threads
 * (fl_mlp_set_blas_threads).  Warm-up, then several repeats; best and
 * median reported; never fails on timing.
 *
 * Usage: bench_dpsgd [repeats=7] [steps=20] [threads=1,2] [N=10000]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <sodium.h>

#include "dp/fl_dpsgd.h"
#include "dp/fl_noise.h"
#include "dp/fl_sampler.h"
#include "nn/fl_mlp.h"

#define S_BATCH 256
#define S_EXPL_CHUNK 64 /* rows per per-example call, as the trainer used */
#define S_LR 1e-3f

enum { V_PLAIN, V_GHOST, V_DP, V_DPEXPL, V_SAMPLER, V_NOISE, V_COUNT };
static const char *s_vname[V_COUNT] = {"plain SGD (fl_mlp_gradient)",
                                       "ghost clipped sum only",
                                       "DP-SGD ghost (sample+clip+noise)",
                                       "DP-SGD explicit per-example",
                                       "  Poisson sampler alone",
                                       "  noise (dim doubles) alone"};

typedef struct {
    fl_mlp *m;
    const float *X;
    const int32_t *y;
    size_t d, P;
    float *xb;
    int32_t *yb;
} bctx;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_lcg = 0x2545F4914F6CDD1Dull; /* benchmark data only, not DP randomness */
static uint32_t s_rand(void)
{
    g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_lcg >> 33);
}

static void s_gather(bctx *c, const size_t *idx, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(c->xb + i * c->d, c->X + idx[i] * c->d, c->d * sizeof(float));
        c->yb[i] = c->y[idx[i]];
    }
}

static int s_expl(void *vc, const size_t *idx, size_t n, float *G)
{
    bctx *c = vc;
    s_gather(c, idx, n);
    return fl_mlp_example_gradients(c->m, c->xb, c->yb, n, G, NULL);
}

static int s_ghost(void *vc, const size_t *idx, size_t n, double clip, float *sum,
                   size_t *clipped)
{
    bctx *c = vc;
    s_gather(c, idx, n);
    return fl_mlp_clipped_gradient_sum(c->m, c->xb, c->yb, n, clip, sum, clipped, NULL);
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double s_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double s_sgemm_gflops(void)
{
    const int n = 1024;
    float *A = malloc((size_t)n * n * sizeof *A), *B = malloc((size_t)n * n * sizeof *B);
    float *C = calloc((size_t)n * n, sizeof *C);
    double best = 1e30;
    if (!A || !B || !C) {
        free(A), free(B), free(C);
        return 0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        A[i] = (float)(s_rand() % 1000) * 1e-3f;
        B[i] = (float)(s_rand() % 1000) * 1e-3f;
    }
    for (int r = 0; r < 4; r++) { /* first run is the warm-up */
        double t0 = s_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f,
                    C, n);
        double t = s_now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    free(A), free(B), free(C);
    return 2.0 * n * (double)n * n / best / 1e9;
}

/* One variant, `steps` steps; returns seconds. */
static double s_run(int v, bctx *c, fl_dpsgd *dg, fl_dpsgd *de, float *grad, size_t *idx,
                    size_t N, double q, double clip, double *dbuf, int steps, int *err)
{
    float *w = fl_mlp_params(c->m);
    double t0 = s_now();
    for (int s = 0; s < steps && !*err; s++) {
        int rc = FL_OK;
        double loss;
        size_t b, clipped;
        switch (v) {
        case V_PLAIN:
        case V_GHOST:
            /* a random batch of 256 (plain SGD would draw one too) */
            for (size_t i = 0; i < S_BATCH; i++)
                idx[i] = s_rand() % N;
            s_gather(c, idx, S_BATCH);
            rc = v == V_PLAIN
                     ? fl_mlp_gradient(c->m, c->xb, c->yb, S_BATCH, grad, &loss)
                     : fl_mlp_clipped_gradient_sum(c->m, c->xb, c->yb, S_BATCH, clip, grad,
                                                   &clipped, &loss);
            break;
        case V_DP:
            rc = fl_dpsgd_step_clipped(dg, s_ghost, c, grad, &b);
            break;
        case V_DPEXPL:
            rc = fl_dpsgd_step(de, s_expl, c, grad, &b);
            break;
        case V_SAMPLER:
            rc = fl_sampler_poisson(N, q, idx, &b);
            break;
        case V_NOISE:
            /* non-zero inputs, as in a step: randomized rounding of a
             * non-grid value draws CSPRNG bits, of zero does not */
            for (size_t j = 0; j < c->P; j++)
                dbuf[j] = (double)grad[j] * 0.01 + 1e-3;
            rc = fl_noise_add_gaussian_f64(dbuf, c->P, clip);
            break;
        }
        if (rc != FL_OK) {
            fprintf(stderr, "bench_dpsgd: %s: %s\n", s_vname[v], fl_error_last());
            *err = 1;
        }
        if (v <= V_DPEXPL)
            for (size_t j = 0; j < c->P; j++)
                w[j] -= S_LR * grad[j];
    }
    return s_now() - t0;
}

static int s_bench_model(const uint32_t *sizes, size_t ns, fl_mlp_output kind, size_t N,
                         int reps, int steps, double peak)
{
    int rc = 1, err = 0;
    fl_mlp *m = NULL;
    fl_dpsgd *dg = NULL, *de = NULL;
    bctx c = {0};
    float *X = NULL, *grad = NULL;
    int32_t *y = NULL;
    size_t *idx = NULL;
    double *dbuf = NULL, *t[V_COUNT] = {0};
    const double q = (double)S_BATCH / (double)N, sigma = 1.0;

    if (fl_mlp_new(&m, sizes, ns, kind) != FL_OK)
        goto done;
    unsigned char seed[32] = {7};
    fl_mlp_init(m, seed);
    size_t d = sizes[0], P = fl_mlp_num_params(m), k = sizes[ns - 1];
    X = malloc(N * d * sizeof *X);
    y = malloc(N * sizeof *y);
    grad = malloc(P * sizeof *grad);
    idx = malloc(N * sizeof *idx);
    dbuf = malloc(P * sizeof *dbuf);
    c = (bctx){m, X, y, d, P, malloc(S_BATCH * d * sizeof(float)),
               malloc(S_BATCH * sizeof(int32_t))};
    for (int v = 0; v < V_COUNT; v++)
        t[v] = malloc((size_t)reps * sizeof(double));
    if (!X || !y || !grad || !idx || !dbuf || !c.xb || !c.yb || !t[V_COUNT - 1])
        goto done;
    for (size_t i = 0; i < N * d; i++)
        X[i] = (float)(s_rand() % 2001) * 1e-3f - 1.0f;
    for (size_t i = 0; i < N; i++)
        y[i] = (int32_t)(s_rand() % (k == 1 ? 2 : k));

    /* Clip norm: the median per-example norm at init, so about half the
     * examples are clipped (the regime DP-SGD runs in). */
    double *nr = malloc(S_BATCH * sizeof *nr);
    if (!nr || fl_mlp_example_norms(m, X, y, S_BATCH, nr) != FL_OK) {
        free(nr);
        goto done;
    }
    double clip = s_median(nr, S_BATCH);
    free(nr);
    if (fl_dpsgd_new_clipped(&dg, P, N, q, clip, sigma, S_BATCH) != FL_OK ||
        fl_dpsgd_new(&de, P, N, q, clip, sigma, S_EXPL_CHUNK) != FL_OK)
        goto done;

    /* Flops of one 256-row step: forward 2B*in*o per layer, backward
     * deltas 2B*in*o for every layer above the first, weight gradients
     * 2B*in*o per layer (the ghost path adds O(B * widths) for norms). */
    double wsum = 0, wabove = 0;
    for (size_t l = 0; l + 1 < ns; l++) {
        wsum += (double)sizes[l] * sizes[l + 1];
        if (l > 0)
            wabove += (double)sizes[l] * sizes[l + 1];
    }
    double flops = 2.0 * S_BATCH * (2.0 * wsum + wabove);

    int steps_v[V_COUNT];
    for (int v = 0; v < V_COUNT; v++)
        steps_v[v] = steps;
    /* the explicit path writes 256 x P floats per step: fewer steps */
    steps_v[V_DPEXPL] = P > 100000 ? (steps / 10 > 1 ? steps / 10 : 1) : steps;

    for (int r = -1; r < reps; r++) /* r = -1: warm-up (grows all scratch) */
        for (int v = 0; v < V_COUNT; v++) {
            double sec = s_run(v, &c, dg, de, grad, idx, N, q, clip, dbuf, steps_v[v], &err);
            if (err)
                goto done;
            if (r >= 0)
                t[v][r] = sec / steps_v[v]; /* seconds per step */
        }

    printf("\nMLP");
    for (size_t l = 0; l < ns; l++)
        printf("%s%u", l ? "-" : " ", sizes[l]);
    printf(" (%s), %zu params, N = %zu, q = %.4g (E[batch] = %d), C = %.3g, sigma = %.1g, "
           "OpenBLAS threads = %d\n", kind == FL_MLP_OUT_SIGMOID_BCE ? "sigmoid" : "softmax", P,
           N, q, S_BATCH, clip, sigma, fl_mlp_blas_threads());
    printf("  step flops (plain) = %.1f MFLOP\n", flops / 1e6);
    double best[V_COUNT], med[V_COUNT];
    for (int v = 0; v < V_COUNT; v++) {
        qsort(t[v], (size_t)reps, sizeof(double), s_cmp);
        best[v] = t[v][0];
        med[v] = s_median(t[v], reps);
    }
    printf("  %-36s %12s %12s %10s %9s\n", "variant", "ex/s best", "ex/s median", "ms/step",
           "% sgemm");
    for (int v = 0; v < V_COUNT; v++) {
        if (v >= V_SAMPLER) {
            printf("  %-36s %12s %12s %10.3f\n", s_vname[v], "", "", 1e3 * med[v]);
            continue;
        }
        double pct = 100.0 * flops / med[v] / 1e9 / peak;
        printf("  %-36s %12.0f %12.0f %10.3f %8.1f%%\n", s_vname[v], S_BATCH / best[v],
               S_BATCH / med[v], 1e3 * med[v], pct);
    }
    printf("  ratio ghost-sum / plain (cost)      : best %.3f  median %.3f\n",
           best[V_GHOST] / best[V_PLAIN], med[V_GHOST] / med[V_PLAIN]);
    printf("  ratio DP-ghost / plain (cost)       : best %.3f  median %.3f  (target <= 1.15)\n",
           best[V_DP] / best[V_PLAIN], med[V_DP] / med[V_PLAIN]);
    printf("  ratio DP-explicit / plain (cost)    : best %.3f  median %.3f\n",
           best[V_DPEXPL] / best[V_PLAIN], med[V_DPEXPL] / med[V_PLAIN]);
    printf("  speed-up ghost vs explicit DP-SGD   : median %.2fx\n", med[V_DPEXPL] / med[V_DP]);
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "bench_dpsgd: setup or step failed: %s\n", fl_error_last());
    fl_dpsgd_free(dg);
    fl_dpsgd_free(de);
    fl_mlp_free(m);
    free(X), free(y), free(grad), free(idx), free(dbuf), free(c.xb), free(c.yb);
    for (int v = 0; v < V_COUNT; v++)
        free(t[v]);
    return rc;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    const char *threads = argc > 3 ? argv[3] : "1,2";
    size_t N = argc > 4 ? (size_t)strtoull(argv[4], NULL, 10) : 10000;
    if (reps < 1 || steps < 1 || N < S_BATCH || sodium_init() < 0) {
        fprintf(stderr, "usage: bench_dpsgd [repeats>=1] [steps>=1] [threads=1,2] "
                        "[N>=%d]\n", S_BATCH);
        return 1;
    }
    static const uint32_t small[] = {30, 128, 64, 1}, mnist[] = {784, 256, 128, 10};
    char buf[64];
    snprintf(buf, sizeof buf, "%s", threads);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int nt = atoi(tok);
        fl_mlp_set_blas_threads(nt);
        double peak = s_sgemm_gflops();
        printf("\n=== OpenBLAS threads = %d: sgemm 1024^3 = %.1f GFLOP/s (best of 3) ===\n",
               fl_mlp_blas_threads(), peak);
        if (s_bench_model(small, 4, FL_MLP_OUT_SIGMOID_BCE, N, reps, steps, peak) ||
            s_bench_model(mnist, 4, FL_MLP_OUT_SOFTMAX_CE, N, reps, steps, peak))
            return 1;
    }
    return 0;
}
