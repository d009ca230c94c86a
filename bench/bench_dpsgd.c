/*
 * bench_dpsgd: what differential privacy costs per training step.  On
 * random data, in the same run, for three workloads built with nn/fl_model
 *   mlp30   MLP 30-128-64-1 (sigmoid), batch 256,
 *   mlp784  MLP 784-256-128-10 (softmax), batch 256,
 *   cnn     28x28x1 -> conv 16 3 -> pool -> conv 32 3 -> pool -> dense 10
 *           (softmax), batch 128,
 * it measures examples/s of
 *   plain  - fl_model_gradient on a random batch (the baseline),
 *   ghost  - fl_model_clipped_gradient_sum on the same batch (clipping only),
 *   dp     - fl_trainer_run, the node's DP-SGD step: Poisson sampling,
 *            ghost-clipped sum, discrete Gaussian noise (dp/fl_noise),
 *            division by qN (dp/fl_dpsgd), with the noise drawn inline
 *            (noise thread off, fl_trainer_set_noise_thread(t, 0)),
 *   dp+wk  - the same node path using the second core: for MLPs its noise
 *            worker thread (noise and Poisson sample drawn ahead into
 *            prepared batches), for CNNs its batch-split thread (half of
 *            each batch computed there); the trainer does either only when
 *            OpenBLAS has one thread and a second CPU is online -- so only
 *            at --threads 1 here,
 * each followed by the same SGD update; plus the sampler and the noise
 * alone.  Each timed DP run is preceded by two untimed steps, so the
 * worker's double buffer is in its steady state (not both batches
 * prefilled) when the clock starts.  It times a square sgemm (512^3) in
 * the same run for the machine's GFLOP/s and reports the fraction a plain
 * step reaches, counting the flops of the dense im2col + sgemm step
 * (s_step_flops).  For a CNN whose conv layers feed max-pools this is a
 * dense-equivalent rate and may exceed 100 %: nn/fl_convpool computes
 * only the convolution outputs the pools read and skips the three
 * quarters (or more) of the backward pass that pooling zeroes.  Warm-up, then several repeats; medians (and best)
 * reported; never fails on timing.
 *
 * Usage: bench_dpsgd [--threads N[,M..]] [--json] [--repeats R] [--steps S]
 *                    [--records N] [--workloads mlp30,mlp784,cnn]
 *   (the old positional form "bench_dpsgd repeats steps threads N" works too)
 * --json prints, per workload and thread count, one line for the inline
 * noise path and, if the worker ran, a second line for it:
 *   {"workload":"cnn","batch":128,"threads":1,"plain_examples_per_s":..,
 *    "dp_examples_per_s":..,"dp_over_plain_cost":..,"sgemm_gflops":..,
 *    "step_gflops_fraction":..,"noise_thread":false}
 * (bench/compare.sh keeps the last line per workload: the node's default
 * path.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <sodium.h>

#include "dp/fl_noise.h"
#include "dp/fl_sampler.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model.h"
#include "node/fl_trainer.h"

#define S_LR 1e-3f
#define S_SGEMM_N 512

enum { V_PLAIN, V_GHOST, V_DP, V_DPW, V_SAMPLER, V_NOISE, V_COUNT };
static const char *s_vname[V_COUNT] = {"plain SGD (fl_model_gradient)",
                                       "ghost clipped sum only",
                                       "DP-SGD node path, noise inline",
                                       "DP-SGD node path, second core",
                                       "  Poisson sampler alone",
                                       "  noise (dim doubles) alone"};

typedef struct {
    const char *name;
    const char *spec; /* fl_model_spec_parse text */
    uint32_t output_kind;
    size_t batch;
} s_workload;

static const s_workload s_workloads[] = {
    {"mlp30", "30,128,64,1", 1, 256},
    {"mlp784", "784,256,128,10", 2, 256},
    {"cnn", "input 28x28x1; conv 16 3; pool 2; conv 32 3; pool 2; dense 10", 2, 128},
};

typedef struct {
    fl_model *m;
    fl_dataset ds;
    size_t B, P, N;
    double q, clip, sigma;
    float *xb, *grad;
    int32_t *yb;
    size_t *idx;
    double *dbuf;
    fl_trainer *tr;  /* noise thread off */
    fl_trainer *trw; /* noise thread allowed */
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
    size_t d = c->ds.d;
    for (size_t i = 0; i < n; i++) {
        memcpy(c->xb + i * d, c->ds.X + idx[i] * d, d * sizeof(float));
        c->yb[i] = c->ds.y[idx[i]];
    }
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
    const int n = S_SGEMM_N;
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
    for (int r = 0; r < 6; r++) { /* first run is the warm-up */
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

/* One variant, `steps` steps; returns seconds (negative on error). */
static double s_run(int v, bctx *c, int steps)
{
    float *w = fl_model_params(c->m);
    if (v == V_DP || v == V_DPW) { /* all steps in one call, as a node runs a round */
        fl_trainer *tr = v == V_DP ? c->tr : c->trw;
        /* two untimed steps: the worker's buffers reach their steady state */
        if (fl_trainer_run(tr, 2, S_LR, NULL) != FL_OK) {
            fprintf(stderr, "bench_dpsgd: %s: %s\n", s_vname[v], fl_error_last());
            return -1.0;
        }
        double t0 = s_now();
        if (fl_trainer_run(tr, (size_t)steps, S_LR, NULL) != FL_OK) {
            fprintf(stderr, "bench_dpsgd: %s: %s\n", s_vname[v], fl_error_last());
            return -1.0;
        }
        return s_now() - t0;
    }
    double t0 = s_now();
    for (int s = 0; s < steps; s++) {
        int rc = FL_OK;
        double loss;
        size_t b, clipped;
        switch (v) {
        case V_PLAIN:
        case V_GHOST:
            /* a random batch of B (plain SGD would draw one too) */
            for (size_t i = 0; i < c->B; i++)
                c->idx[i] = s_rand() % c->N;
            s_gather(c, c->idx, c->B);
            rc = v == V_PLAIN
                     ? fl_model_gradient(c->m, c->xb, c->yb, c->B, c->grad, &loss)
                     : fl_model_clipped_gradient_sum(c->m, c->xb, c->yb, c->B, c->clip,
                                                     c->grad, &clipped, &loss);
            for (size_t j = 0; rc == FL_OK && j < c->P; j++)
                w[j] -= S_LR * c->grad[j];
            break;
        case V_SAMPLER:
            rc = fl_sampler_poisson(c->N, c->q, c->idx, &b);
            break;
        case V_NOISE:
            /* non-zero inputs, as in a step: randomized rounding of a
             * non-grid value draws CSPRNG bits, of zero does not */
            for (size_t j = 0; j < c->P; j++)
                c->dbuf[j] = (double)c->grad[j] * 0.01 + 1e-3;
            rc = fl_noise_add_gaussian_f64(c->dbuf, c->P, c->sigma * c->clip);
            break;
        }
        if (rc != FL_OK) {
            fprintf(stderr, "bench_dpsgd: %s: %s\n", s_vname[v], fl_error_last());
            return -1.0;
        }
    }
    return s_now() - t0;
}

/* Flops of one plain step of batch B as a dense im2col + sgemm
 * implementation does it (for CNNs more than fl_model performs; see the
 * top of this file): per layer with parameters, forward
 * 2B f_l, weight gradient 2B f_l, and the input gradient 2B f_l for every
 * such layer above the first (f_l = C_out C_in k^2 Ho Wo for conv, in*out
 * for dense; pooling, activations and the loss are not counted). */
static double s_step_flops(const fl_model_spec *s, size_t B)
{
    double all = 0.0, above = 0.0;
    int seen = 0;
    for (uint32_t l = 0; l < s->num_layers; l++) {
        uint32_t c, h, w, oc, oh, ow;
        if (fl_model_spec_shape(s, (int)l - 1, &c, &h, &w) != FL_OK ||
            fl_model_spec_shape(s, (int)l, &oc, &oh, &ow) != FL_OK)
            return 0.0;
        double f;
        if (s->layers[l].kind == FL_LAYER_CONV)
            f = (double)oc * c * s->layers[l].kernel * s->layers[l].kernel * oh * ow;
        else if (s->layers[l].kind == FL_LAYER_DENSE)
            f = (double)c * h * w * oc;
        else
            continue;
        all += f;
        if (seen)
            above += f;
        seen = 1;
    }
    return 2.0 * (double)B * (2.0 * all + above);
}

static int s_bench(const s_workload *wl, size_t N, int reps, int steps, double peak,
                   int json)
{
    int rc = 1;
    bctx c = {0};
    fl_model_spec spec;
    double *t[V_COUNT] = {0}, *nr = NULL;
    const int threads = fl_mlp_blas_threads();

    if (fl_model_spec_parse(&spec, wl->spec, wl->output_kind) != FL_OK ||
        fl_model_new(&c.m, &spec) != FL_OK)
        goto done;
    unsigned char seed[32] = {7};
    fl_model_init(c.m, seed);
    c.B = wl->batch;
    c.N = N;
    c.P = fl_model_num_params(c.m);
    c.q = (double)c.B / (double)N;
    c.sigma = 1.0;
    size_t d = fl_model_num_inputs(c.m), k = fl_model_num_outputs(c.m);
    c.ds = (fl_dataset){.n = N, .d = d, .num_classes = k == 1 ? 2 : (uint32_t)k};
    c.ds.X = malloc(N * d * sizeof(float));
    c.ds.y = malloc(N * sizeof(int32_t));
    c.grad = calloc(c.P, sizeof *c.grad);
    c.idx = malloc(N * sizeof *c.idx);
    c.dbuf = malloc(c.P * sizeof *c.dbuf);
    c.xb = malloc(c.B * d * sizeof(float));
    c.yb = malloc(c.B * sizeof(int32_t));
    nr = malloc(c.B * sizeof *nr);
    for (int v = 0; v < V_COUNT; v++)
        t[v] = calloc((size_t)reps, sizeof(double));
    if (!c.ds.X || !c.ds.y || !c.grad || !c.idx || !c.dbuf || !c.xb || !c.yb || !nr ||
        !t[V_COUNT - 1])
        goto done;
    /* MLP features in [-1, 1), image pixels in [0, 1) */
    int image = spec.in_h > 1;
    for (size_t i = 0; i < N * d; i++)
        c.ds.X[i] = image ? (float)(s_rand() % 1000) * 1e-3f
                          : (float)(s_rand() % 2001) * 1e-3f - 1.0f;
    for (size_t i = 0; i < N; i++)
        c.ds.y[i] = (int32_t)(s_rand() % (k == 1 ? 2 : k));

    /* Clip norm: the median per-example norm at init, so about half the
     * examples are clipped (the regime DP-SGD runs in). */
    if (fl_model_example_norms(c.m, c.ds.X, c.ds.y, c.B, nr) != FL_OK)
        goto done;
    c.clip = s_median(nr, (int)c.B);
    if (fl_trainer_new_model(&c.tr, c.m, &c.ds, c.q, c.clip, c.sigma) != FL_OK ||
        fl_trainer_new_model(&c.trw, c.m, &c.ds, c.q, c.clip, c.sigma) != FL_OK)
        goto done;
    fl_trainer_set_noise_thread(c.tr, 0);
    fl_trainer_set_noise_thread(c.trw, 1);
    fl_mlp_set_blas_threads(threads); /* the trainer sets 1 unless the env says */

    double flops = s_step_flops(&spec, c.B);
    for (int r = -1; r < reps; r++) /* r = -1: warm-up (first touch of all scratch) */
        for (int v = 0; v < V_COUNT; v++) {
            double sec = s_run(v, &c, steps);
            if (sec < 0)
                goto done;
            if (r >= 0)
                t[v][r] = sec / steps;
        }

    double best[V_COUNT], med[V_COUNT];
    for (int v = 0; v < V_COUNT; v++) {
        qsort(t[v], (size_t)reps, sizeof(double), s_cmp);
        best[v] = t[v][0];
        med[v] = s_median(t[v], reps);
    }
    double B = (double)c.B;
    /* Did the worker variant really take its noise from the worker? (Not
     * at --threads > 1, nor with FL_NOISE_THREAD=0.) */
    const int noise_wk = fl_trainer_noise_thread_running(c.trw) &&
                         fl_trainer_prepared_noise_steps(c.trw) > 0;
    const int split = fl_trainer_split_running(c.trw) && fl_trainer_split_steps(c.trw) > 0;
    const int worker = noise_wk || split;
    const int assist = noise_wk && fl_trainer_assist_steps(c.trw) > 0;
    if (json) {
        for (int line = 0; line < 1 + worker; line++) {
            int v = line ? V_DPW : V_DP;
            printf("{\"workload\":\"%s\",\"batch\":%zu,\"threads\":%d,"
                   "\"plain_examples_per_s\":%.1f,\"dp_examples_per_s\":%.1f,"
                   "\"dp_over_plain_cost\":%.4f,\"sgemm_gflops\":%.2f,"
                   "\"step_gflops_fraction\":%.4f,\"noise_thread\":%s,"
                   "\"second_core\":\"%s\",\"assist_share\":%.3f}\n",
                   wl->name, c.B, threads, B / med[V_PLAIN], B / med[v],
                   med[v] / med[V_PLAIN], peak, flops / med[V_PLAIN] / 1e9 / peak,
                   line && noise_wk ? "true" : "false",
                   !line ? "none" : split ? "split" : assist ? "noise+rows" : "noise",
                   line && assist ? fl_trainer_assist_share(c.trw) : 0.0);
        }
        fflush(stdout);
    } else {
        printf("\n%s: %s, %zu params, N = %zu, q = %.4g (E[batch] = %zu), C = %.3g, "
               "sigma = %.1g, OpenBLAS threads = %d\n", wl->name, wl->spec, c.P, N, c.q, c.B,
               c.clip, c.sigma, threads);
        printf("  step flops (plain, dense im2col + sgemm count) = %.1f MFLOP\n", flops / 1e6);
        printf("  %-40s %11s %11s %9s %8s\n", "variant", "ex/s best", "ex/s median",
               "ms/step", "% sgemm");
        for (int v = 0; v < V_COUNT; v++) {
            if (v == V_DPW && !worker)
                continue;
            if (v >= V_SAMPLER) {
                printf("  %-40s %11s %11s %9.3f\n", s_vname[v], "", "", 1e3 * med[v]);
                continue;
            }
            printf("  %-40s %11.0f %11.0f %9.3f %7.1f%%\n", s_vname[v], B / best[v],
                   B / med[v], 1e3 * med[v], 100.0 * flops / med[v] / 1e9 / peak);
        }
        printf("  cost ghost-sum / plain           : best %.3f  median %.3f\n",
               best[V_GHOST] / best[V_PLAIN], med[V_GHOST] / med[V_PLAIN]);
        printf("  cost DP, noise inline / plain    : best %.3f  median %.3f  (target <= %s)\n",
               best[V_DP] / best[V_PLAIN], med[V_DP] / med[V_PLAIN],
               image ? "1.6" : "1.15");
        if (worker)
            printf("  cost DP, second core / plain     : best %.3f  median %.3f  (target <= %s)\n",
                   best[V_DPW] / best[V_PLAIN], med[V_DPW] / med[V_PLAIN],
                   image ? "1.6" : "1.15");
        else
            printf("  (second core unused: OpenBLAS at %d threads, or FL_NOISE_THREAD=0)\n",
                   threads);
        if (assist)
            printf("  (the worker also computed %.0f %% of the rows at the end, in %zu steps)\n",
                   100.0 * fl_trainer_assist_share(c.trw), fl_trainer_assist_steps(c.trw));
    }
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "bench_dpsgd: %s: setup or step failed: %s\n", wl->name,
                fl_error_last());
    fl_trainer_free(c.trw);
    fl_trainer_free(c.tr);
    fl_model_free(c.m);
    free(c.ds.X), free(c.ds.y), free(c.grad), free(c.idx), free(c.dbuf);
    free(c.xb), free(c.yb), free(nr);
    for (int v = 0; v < V_COUNT; v++)
        free(t[v]);
    return rc;
}

static int s_usage(void)
{
    fprintf(stderr, "usage: bench_dpsgd [--threads N[,M..]] [--json] [--repeats R>=1] "
                    "[--steps S>=1] [--records N>=256] [--workloads mlp30,mlp784,cnn]\n"
                    "       bench_dpsgd [repeats] [steps] [threads=1,2] [N=10000]\n");
    return 2;
}

int main(int argc, char **argv)
{
    int reps = 7, steps = 20, json = 0, pos = 0;
    const char *threads = "1,2", *which = "mlp30,mlp784,cnn";
    size_t N = 10000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--threads") && more)
            threads = argv[++i];
        else if (!strcmp(a, "--repeats") && more)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && more)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--records") && more)
            N = (size_t)strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--workloads") && more)
            which = argv[++i];
        else if (a[0] != '-' && pos == 0)
            reps = atoi(a), pos++;
        else if (a[0] != '-' && pos == 1)
            steps = atoi(a), pos++;
        else if (a[0] != '-' && pos == 2)
            threads = a, pos++;
        else if (a[0] != '-' && pos == 3)
            N = (size_t)strtoull(a, NULL, 10), pos++;
        else
            return s_usage();
    }
    if (reps < 1 || steps < 1 || N < 256)
        return s_usage();
    if (sodium_init() < 0) {
        fprintf(stderr, "bench_dpsgd: sodium_init failed\n");
        return 1;
    }
    char buf[64];
    snprintf(buf, sizeof buf, "%s", threads);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int nt = atoi(tok);
        if (nt < 1)
            return s_usage();
        fl_mlp_set_blas_threads(nt);
        double peak = s_sgemm_gflops();
        if (!json)
            printf("\n=== OpenBLAS threads = %d: sgemm %d^3 = %.1f GFLOP/s (best of 5) ===\n",
                   fl_mlp_blas_threads(), S_SGEMM_N, peak);
        for (size_t w = 0; w < sizeof s_workloads / sizeof s_workloads[0]; w++) {
            const char *nm = s_workloads[w].name, *p = strstr(which, nm);
            size_t len = strlen(nm);
            /* a whole item of the comma-separated list */
            while (p && !((p == which || p[-1] == ',') && (p[len] == ',' || p[len] == '\0')))
                p = strstr(p + 1, nm);
            if (p && s_bench(&s_workloads[w], N, reps, steps, peak, json))
                return 1;
        }
    }
    return 0;
}
