/* Tests for node/fl_trainer with models built from a spec (nn/fl_model):
 * with q = 1 (every record sampled), sigma = 0 and a clip norm above every
 * example's norm, one DP-SGD step is exactly plain gradient descent on the
 * mean gradient, so it is checked against fl_model_gradient; the MLP path
 * gives the same parameters through fl_trainer_new and
 * fl_trainer_new_model; a CNN trained with noise moves and reports its
 * batch size.  The noise worker thread (prepared noise drawn on a second
 * core): with sigma = 0 and q = 1 the worker and inline paths give
 * bit-identical parameters; with noise, the worker's updates have the
 * closed-form scale sigma C lr / (qN); FL_NOISE_THREAD=0, forbidding it or
 * more than one BLAS thread start no thread; it shuts down cleanly (the
 * thread count returns; ASan/LSan builds check for leaks).  The worker's
 * share of an MLP's rows (assist): its controller settles at the closed-form
 * balance of a linear model; an assisted trainer matches one without a
 * worker up to float rounding; an error in the worker's rows fails the
 * step cleanly.  (Lives under tests/nn until tests/node exists.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/fl_mlp.h"
#include "nn/fl_model.h"
#include "node/fl_trainer.h"
#include "node/fl_trainer_internal.h"

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static float s_unif(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0);
}

/* n random rows of d features in [0,1) and labels below k. */
static fl_dataset s_data(size_t n, size_t d, uint32_t k)
{
    fl_dataset ds = {.n = n, .d = d, .num_classes = k};
    ds.X = malloc(n * d * sizeof(float));
    ds.y = malloc(n * sizeof(int32_t));
    cr_assert(ds.X && ds.y);
    for (size_t i = 0; i < n * d; i++)
        ds.X[i] = s_unif();
    for (size_t i = 0; i < n; i++)
        ds.y[i] = (int32_t)(s_unif() * (float)k) % (int32_t)k;
    return ds;
}

static fl_model_spec s_cnn(void)
{
    fl_model_spec s = {.in_c = 1, .in_h = 8, .in_w = 8, .output_kind = 2, .num_layers = 4};
    s.layers[0] = (fl_layer_spec){FL_LAYER_CONV, 4, 3};
    s.layers[1] = (fl_layer_spec){FL_LAYER_POOL, 0, 2};
    s.layers[2] = (fl_layer_spec){FL_LAYER_DENSE, 6, 0};
    s.layers[3] = (fl_layer_spec){FL_LAYER_DENSE, 3, 0};
    return s;
}

/* A CNN whose rows take long enough (about 10 us each here) that the
 * helper thread, once woken, takes chunks of a shared step. */
static fl_model_spec s_cnn_wide(void)
{
    fl_model_spec s = {.in_c = 1, .in_h = 20, .in_w = 20, .output_kind = 2, .num_layers = 3};
    s.layers[0] = (fl_layer_spec){FL_LAYER_CONV, 16, 3};
    s.layers[1] = (fl_layer_spec){FL_LAYER_POOL, 0, 2};
    s.layers[2] = (fl_layer_spec){FL_LAYER_DENSE, 3, 0};
    return s;
}

Test(trainer, cnn_step_without_noise_or_clipping_is_gradient_descent)
{
    fl_model_spec s = s_cnn();
    fl_model *m = NULL;
    fl_trainer *t = NULL;
    cr_assert_eq(fl_model_new(&m, &s), FL_OK, "%s", fl_error_last());
    unsigned char seed[32] = {5};
    fl_model_init(m, seed);
    fl_dataset ds = s_data(300, 64, 3); /* with 2 CPUs: shared by two threads */
    size_t P = fl_model_num_params(m);
    float *w0 = malloc(P * sizeof *w0), *g = malloc(P * sizeof *g);
    memcpy(w0, fl_model_params(m), P * sizeof *w0);
    double loss, mb = 0.0;
    cr_assert_eq(fl_model_gradient(m, ds.X, ds.y, ds.n, g, &loss), FL_OK);
    cr_assert_eq(fl_trainer_new_model(&t, m, &ds, 1.0, 1e30, 0.0), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(fl_trainer_run(t, 1, 0.5, &mb), FL_OK, "%s", fl_error_last());
    cr_assert_float_eq(mb, 300.0, 1e-9);
    const float *w = fl_model_params(m);
    for (size_t j = 0; j < P; j++) {
        double want = (double)w0[j] - 0.5 * (double)g[j] / 300.0;
        cr_assert(fabs(w[j] - want) <= 1e-6 * (1.0 + fabs(want)), "param %zu: %g vs %g", j,
                  (double)w[j], want);
    }
    fl_trainer_free(t);
    free(w0), free(g), free(ds.X), free(ds.y);
    fl_model_free(m);
}

Test(trainer, mlp_through_model_and_through_fl_mlp_train_identically)
{
    static const uint32_t sizes[] = {10, 8, 1};
    fl_model_spec s;
    fl_model *m = NULL;
    fl_mlp *r = NULL;
    fl_trainer *t1 = NULL, *t2 = NULL;
    cr_assert_eq(fl_model_spec_from_sizes(&s, sizes, 3, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    cr_assert_eq(fl_model_new(&m, &s), FL_OK);
    cr_assert_eq(fl_mlp_new(&r, sizes, 3, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    unsigned char seed[32] = {6};
    fl_model_init(m, seed);
    fl_mlp_init(r, seed);
    fl_dataset ds = s_data(50, 10, 2);
    /* q = 1 and sigma = 0: deterministic, so the two must agree exactly */
    cr_assert_eq(fl_trainer_new_model(&t1, m, &ds, 1.0, 0.1, 0.0), FL_OK);
    cr_assert_eq(fl_trainer_new(&t2, r, &ds, 1.0, 0.1, 0.0), FL_OK);
    /* no second core: the model path's worker would compute some rows,
     * which changes the float summation order (tested below) */
    fl_trainer_set_noise_thread(t1, 0);
    fl_trainer_set_noise_thread(t2, 0);
    cr_assert_eq(fl_trainer_run(t1, 5, 0.3, NULL), FL_OK);
    cr_assert_eq(fl_trainer_run(t2, 5, 0.3, NULL), FL_OK);
    cr_assert_eq(memcmp(fl_model_params(m), fl_mlp_params(r),
                        fl_mlp_num_params(r) * sizeof(float)), 0);
    fl_trainer_free(t1);
    fl_trainer_free(t2);
    fl_model_free(m);
    fl_mlp_free(r);
    free(ds.X), free(ds.y);
}

Test(trainer, noisy_cnn_steps_move_the_parameters_and_sample_about_qN)
{
    fl_model_spec s = s_cnn();
    fl_model *m = NULL;
    fl_trainer *t = NULL;
    cr_assert_eq(fl_model_new(&m, &s), FL_OK);
    unsigned char seed[32] = {7};
    fl_model_init(m, seed);
    fl_dataset ds = s_data(1000, 64, 3);
    size_t P = fl_model_num_params(m);
    float *w0 = malloc(P * sizeof *w0);
    memcpy(w0, fl_model_params(m), P * sizeof *w0);
    double mb = 0.0;
    cr_assert_eq(fl_trainer_new_model(&t, m, &ds, 0.1, 1.0, 1.0), FL_OK);
    cr_assert_eq(fl_trainer_run(t, 20, 0.1, &mb), FL_OK, "%s", fl_error_last());
    /* 20 Poisson batches of mean 100, sd 9.5 each: the mean is within 10 */
    cr_assert(fabs(mb - 100.0) < 10.0, "mean batch %g", mb);
    size_t moved = 0;
    for (size_t j = 0; j < P; j++) {
        cr_assert(isfinite(fl_model_params(m)[j]));
        moved += fl_model_params(m)[j] != w0[j];
    }
    cr_assert_eq(moved, P); /* noise reaches every coordinate */
    fl_trainer_free(t);
    free(w0), free(ds.X), free(ds.y);
    fl_model_free(m);
}

Test(trainer, refuses_a_dataset_of_the_wrong_width)
{
    fl_model_spec s = s_cnn();
    fl_model *m = NULL;
    fl_trainer *t = NULL;
    cr_assert_eq(fl_model_new(&m, &s), FL_OK);
    fl_dataset ds = s_data(10, 63, 3);
    cr_assert_eq(fl_trainer_new_model(&t, m, &ds, 0.5, 1.0, 1.0), FL_EINVAL);
    cr_assert_null(t);
    cr_assert(strstr(fl_error_last(), "63 features") != NULL, "%s", fl_error_last());
    free(ds.X), free(ds.y);
    fl_model_free(m);
}

/* ---- the noise worker thread ---------------------------------------- */

/* Threads of this process, from /proc/self/status. */
static int s_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    cr_assert(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Whether the trainer may use a worker here: one BLAS thread, 2+ CPUs. */
static int s_worker_possible(void)
{
    return fl_mlp_blas_threads() == 1 && sysconf(_SC_NPROCESSORS_ONLN) >= 2;
}

/* One BLAS thread; 1 if the second core can then be used, else prints why
 * the calling test is skipped and returns 0. */
static int s_second_core_or_skip(const char *what)
{
    fl_mlp_set_blas_threads(1);
    if (s_worker_possible())
        return 1;
    fprintf(stderr, "SKIPPED: %s needs one BLAS thread and 2 CPUs\n", what);
    return 0;
}

static fl_mlp *s_mlp(const uint32_t *sizes, size_t nl, uint32_t out, unsigned char s0)
{
    fl_mlp *r = NULL;
    unsigned char seed[32] = {s0};
    cr_assert_eq(fl_mlp_new(&r, sizes, nl, out), FL_OK);
    fl_mlp_init(r, seed);
    return r;
}

Test(trainer, worker_and_inline_noise_paths_train_bit_identically_without_noise)
{
    /* sigma = 0 and q = 1: no randomness at all, so the path that takes
     * (zero) noise from the worker's prepared batches and the inline path
     * must give exactly the same parameters after several steps. */
    static const uint32_t sizes[] = {12, 16, 3};
    fl_mlp *a = s_mlp(sizes, 3, FL_MLP_OUT_SOFTMAX_CE, 9), *b = s_mlp(sizes, 3,
                                                                       FL_MLP_OUT_SOFTMAX_CE, 9);
    fl_trainer *ta = NULL, *tb = NULL;
    fl_dataset ds = s_data(300, 12, 3);
    cr_assert_eq(fl_trainer_new(&ta, a, &ds, 1.0, 0.5, 0.0), FL_OK);
    cr_assert_eq(fl_trainer_new(&tb, b, &ds, 1.0, 0.5, 0.0), FL_OK);
    fl_trainer_set_noise_thread(ta, 0);
    fl_trainer_set_noise_thread(tb, 1);
    if (!s_worker_possible()) {
        fprintf(stderr, "SKIPPED: the worker path needs one BLAS thread and 2 CPUs\n");
    } else {
        for (int r = 0; r < 3; r++) {
            cr_assert_eq(fl_trainer_run(ta, 4, 0.3, NULL), FL_OK, "%s", fl_error_last());
            cr_assert_eq(fl_trainer_run(tb, 4, 0.3, NULL), FL_OK, "%s", fl_error_last());
        }
        cr_expect(fl_trainer_noise_thread_running(tb));
        cr_expect_eq(fl_trainer_prepared_noise_steps(tb), 12);
        cr_expect_eq(fl_trainer_prepared_noise_steps(ta), 0);
        cr_expect_not(fl_trainer_noise_thread_running(ta));
        cr_expect_eq(memcmp(fl_mlp_params(a), fl_mlp_params(b),
                            fl_mlp_num_params(a) * sizeof(float)), 0);
    }
    fl_trainer_free(ta);
    fl_trainer_free(tb);
    fl_mlp_free(a);
    fl_mlp_free(b);
    free(ds.X), free(ds.y);
}

Test(trainer, worker_noise_has_scale_sigma_c_lr_over_qn)
{
    /* q = 1, N = 40, C = 1e-6, sigma = 1e6: noise sd sigma C = 1 per
     * coordinate of the sum, while the clipped gradients add at most N C
     * = 4e-5 in L2 norm in total.  With lr = N each step moves every
     * parameter by -(sum + noise) lr / (qN) = -(sum + noise): variance 1
     * up to the 4e-5 gradient part, mean 0.  5-SE bounds (normal sample
     * variance SE sqrt(2/n)).  Every step must take its noise from the
     * worker. */
    if (!s_worker_possible()) {
        fprintf(stderr, "SKIPPED: the worker path needs one BLAS thread and 2 CPUs\n");
        return;
    }
    static const uint32_t sizes[] = {20, 64, 10};
    fl_mlp *m = s_mlp(sizes, 3, FL_MLP_OUT_SOFTMAX_CE, 11);
    fl_trainer *t = NULL;
    fl_dataset ds = s_data(40, 20, 10);
    const size_t P = fl_mlp_num_params(m), steps = 12;
    float *w0 = malloc(P * sizeof *w0);
    cr_assert(w0);
    cr_assert_eq(fl_trainer_new(&t, m, &ds, 1.0, 1e-6, 1e6), FL_OK);
    fl_trainer_set_noise_thread(t, 1); /* whatever FL_NOISE_THREAD says */
    double sum = 0, ss = 0;
    for (size_t s = 0; s < steps; s++) {
        memcpy(w0, fl_mlp_params(m), P * sizeof *w0);
        cr_assert_eq(fl_trainer_run(t, 1, 40.0, NULL), FL_OK, "%s", fl_error_last());
        for (size_t j = 0; j < P; j++) {
            double d = (double)fl_mlp_params(m)[j] - (double)w0[j];
            sum += d;
            ss += d * d;
        }
    }
    double n = (double)(P * steps), mean = sum / n, var = ss / n - mean * mean;
    cr_expect_eq(fl_trainer_prepared_noise_steps(t), steps);
    cr_expect_lt(fabs(mean), 5 / sqrt(n), "mean step %g", mean);
    cr_expect_lt(fabs(var - 1.0), 5 * sqrt(2.0 / n), "step variance %g, want 1", var);
    fl_trainer_free(t);
    fl_mlp_free(m);
    free(w0), free(ds.X), free(ds.y);
}

Test(trainer, noise_thread_env_0_starts_no_thread)
{
    static const uint32_t sizes[] = {10, 8, 1};
    fl_mlp *m = s_mlp(sizes, 3, FL_MLP_OUT_SIGMOID_BCE, 12);
    fl_trainer *t = NULL;
    fl_dataset ds = s_data(100, 10, 2);
    float *g = malloc(fl_mlp_num_params(m) * sizeof *g);
    double loss;
    cr_assert(g);
    fl_mlp_set_blas_threads(1);
    /* BLAS first, so that any thread pool of its own already exists */
    cr_assert_eq(fl_mlp_gradient(m, ds.X, ds.y, ds.n, g, &loss), FL_OK);
    int before = s_threads();
    cr_assert_eq(setenv("FL_NOISE_THREAD", "0", 1), 0);
    cr_assert_eq(fl_trainer_new(&t, m, &ds, 0.5, 1.0, 1.0), FL_OK);
    cr_assert_eq(fl_trainer_run(t, 5, 0.1, NULL), FL_OK, "%s", fl_error_last());
    cr_expect_eq(s_threads(), before);
    cr_expect_not(fl_trainer_noise_thread_running(t));
    cr_expect_eq(fl_trainer_prepared_noise_steps(t), 0);
    fl_trainer_free(t);
    /* The control: without the variable a worker does start (one more
     * thread), and fl_trainer_free joins it. */
    cr_assert_eq(unsetenv("FL_NOISE_THREAD"), 0);
    if (s_worker_possible()) {
        cr_assert_eq(fl_trainer_new(&t, m, &ds, 0.5, 1.0, 1.0), FL_OK);
        cr_assert_eq(fl_trainer_run(t, 5, 0.1, NULL), FL_OK, "%s", fl_error_last());
        cr_expect_eq(s_threads(), before + 1);
        cr_expect(fl_trainer_noise_thread_running(t));
        cr_expect_eq(fl_trainer_prepared_noise_steps(t), 5);
        fl_trainer_free(t);
        cr_expect_eq(s_threads(), before);
    }
    fl_mlp_free(m);
    free(g), free(ds.X), free(ds.y);
}

Test(trainer, more_blas_threads_or_forbidding_it_means_no_worker)
{
    static const uint32_t sizes[] = {10, 8, 1};
    fl_mlp *m = s_mlp(sizes, 3, FL_MLP_OUT_SIGMOID_BCE, 13);
    fl_trainer *t = NULL;
    fl_dataset ds = s_data(100, 10, 2);
    cr_assert_eq(fl_trainer_new(&t, m, &ds, 0.5, 1.0, 1.0), FL_OK);
    fl_trainer_set_noise_thread(t, 1); /* whatever FL_NOISE_THREAD says */
    /* two BLAS threads: the second core is BLAS's, no worker */
    fl_mlp_set_blas_threads(2);
    cr_assert_eq(fl_trainer_run(t, 3, 0.1, NULL), FL_OK, "%s", fl_error_last());
    cr_expect_not(fl_trainer_noise_thread_running(t));
    cr_expect_eq(fl_trainer_prepared_noise_steps(t), 0);
    fl_mlp_set_blas_threads(1);
    if (s_worker_possible()) {
        int before = s_threads();
        cr_assert_eq(fl_trainer_run(t, 3, 0.1, NULL), FL_OK, "%s", fl_error_last());
        cr_expect(fl_trainer_noise_thread_running(t));
        cr_expect_eq(s_threads(), before + 1);
        /* forbidding stops and joins it; training goes on inline */
        fl_trainer_set_noise_thread(t, 0);
        cr_expect_not(fl_trainer_noise_thread_running(t));
        cr_expect_eq(s_threads(), before);
        cr_assert_eq(fl_trainer_run(t, 3, 0.1, NULL), FL_OK, "%s", fl_error_last());
        cr_expect_eq(fl_trainer_prepared_noise_steps(t), 3);
        cr_expect_eq(s_threads(), before);
    }
    fl_trainer_free(t);
    fl_mlp_free(m);
    free(ds.X), free(ds.y);
}

Test(trainer, worker_shuts_down_cleanly_mid_fill_and_when_never_used)
{
    /* Freed right after a step (the worker is refilling a large batch),
     * and freed without any step (no worker was ever started); ASan/LSan
     * builds also check that the worker's noise tables were released. */
    static const uint32_t sizes[] = {64, 512, 256, 10};
    fl_mlp *m = s_mlp(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 14);
    fl_trainer *t = NULL;
    fl_dataset ds = s_data(64, 64, 10);
    int before = s_threads();
    for (int r = 0; r < 5; r++) {
        cr_assert_eq(fl_trainer_new(&t, m, &ds, 0.5, 1.0, 1.0), FL_OK);
        cr_assert_eq(fl_trainer_run(t, 1, 0.01, NULL), FL_OK, "%s", fl_error_last());
        fl_trainer_free(t);
        cr_expect_eq(s_threads(), before, "round %d", r);
    }
    cr_assert_eq(fl_trainer_new(&t, m, &ds, 0.5, 1.0, 1.0), FL_OK);
    cr_expect_not(fl_trainer_noise_thread_running(t));
    fl_trainer_free(t);
    fl_trainer_free(NULL);
    cr_expect_eq(s_threads(), before);
    fl_mlp_free(m);
    free(ds.X), free(ds.y);
}

/* Half the smallest per-example gradient norm of m on ds: a clip norm
 * that clips every example at the start. */
static double s_clip_all(fl_model *m, const fl_dataset *ds)
{
    double *norms = malloc(ds->n * sizeof *norms);
    cr_assert(norms);
    cr_assert_eq(fl_model_example_norms(m, ds->X, ds->y, ds->n, norms), FL_OK);
    double lo = norms[0];
    for (size_t i = 1; i < ds->n; i++)
        lo = norms[i] < lo ? norms[i] : lo;
    free(norms);
    return 0.5 * lo;
}

/* a and b trained alike: every parameter within 1e-5 relative (float
 * summation order), and more than half of them moved from init's.
 * Returns how many differ at all. */
static size_t s_expect_trained_alike(fl_model *a, fl_model *b, fl_model *init)
{
    const float *wa = fl_model_params(a), *wb = fl_model_params(b);
    size_t P = fl_model_num_params(a), moved = 0, differ = 0;
    for (size_t j = 0; j < P; j++) {
        cr_assert(fabsf(wa[j] - wb[j]) <= 1e-5f * (1.0f + fabsf(wa[j])), "param %zu: %.9g vs %.9g",
                  j, (double)wa[j], (double)wb[j]);
        moved += wa[j] != fl_model_params(init)[j];
        differ += wa[j] != wb[j];
    }
    cr_expect_gt(moved, P / 2, "training did not move the parameters");
    return differ;
}

/* ---- the batch-split thread (models with conv layers) ----------------- */

Test(trainer, cnn_batch_split_matches_the_whole_batch_with_clipping)
{
    /* sigma = 0, q = 1, C small enough that most examples are clipped:
     * a trainer whose second core shares the rows of each batch and one
     * that does whole batches must reach the same parameters after 6
     * steps, up to the float summation order (1e-5 relative).  The split
     * one must have run a second thread and split every step, each thread
     * computing some of the rows; the other none. */
    if (!s_second_core_or_skip("the split path"))
        return;
    fl_model_spec s = s_cnn_wide();
    fl_model *a = NULL, *b = NULL;
    fl_trainer *ta = NULL, *tb = NULL;
    unsigned char seed[32] = {6};
    cr_assert_eq(fl_model_new(&a, &s), FL_OK);
    cr_assert_eq(fl_model_new(&b, &s), FL_OK);
    fl_model_init(a, seed);
    fl_model_init(b, seed);
    fl_dataset ds = s_data(200, 400, 3);
    const double C = s_clip_all(a, &ds);
    cr_assert_eq(fl_trainer_new_model(&ta, a, &ds, 1.0, C, 0.0), FL_OK);
    cr_assert_eq(fl_trainer_new_model(&tb, b, &ds, 1.0, C, 0.0), FL_OK);
    fl_trainer_set_noise_thread(ta, 0);
    fl_trainer_set_noise_thread(tb, 1);
    int before = s_threads();
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(fl_trainer_run(ta, 2, 0.5, NULL), FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_trainer_run(tb, 2, 0.5, NULL), FL_OK, "%s", fl_error_last());
    }
    cr_expect(fl_trainer_split_running(tb));
    cr_expect_not(fl_trainer_noise_thread_running(tb), "a CNN's second core splits batches");
    cr_expect_eq(fl_trainer_split_steps(tb), 6);
    size_t helper = fl_trainer_split_helper_rows(tb);
    cr_expect(helper > 0 && helper < 6 * 200, "the helper computed %zu of 1200 rows", helper);
    cr_expect_eq(fl_trainer_split_steps(ta), 0);
    cr_expect_not(fl_trainer_split_running(ta));
    cr_expect_eq(s_threads(), before + 1);
    unsigned char seed2[32] = {6};
    fl_model *c = NULL;
    cr_assert_eq(fl_model_new(&c, &s), FL_OK);
    fl_model_init(c, seed2);
    (void)s_expect_trained_alike(a, b, c);
    /* forbidding the second core stops and joins the thread */
    fl_trainer_set_noise_thread(tb, 0);
    cr_expect_not(fl_trainer_split_running(tb));
    cr_expect_eq(s_threads(), before);
    fl_trainer_free(ta);
    fl_trainer_free(tb);
    fl_model_free(a);
    fl_model_free(b);
    fl_model_free(c);
    free(ds.X), free(ds.y);
}

Test(trainer, split_cnn_noise_drawn_a_step_ahead_has_scale_sigma_c_and_is_fresh_each_step)
{
    /* As worker_noise_has_scale_sigma_c_lr_over_qn for a CNN whose second
     * core shares the rows: its noise is drawn by the stepping thread, for
     * the next step during the current one.  q = 1, N = 60, C = 1e-6,
     * sigma = 1e6, lr = N: each step moves every parameter by minus (sum
     * + noise), the sum below 6e-5 in norm.  Variance 1 and mean 0 within
     * 5 SE, and consecutive steps' noise uncorrelated (|r| < 5/sqrt(P)):
     * a pair used twice would give r = 1.  Runs of 1 and of 3 steps, so
     * prefilled pairs also cross runs. */
    if (!s_second_core_or_skip("the split path"))
        return;
    fl_model_spec s = s_cnn_wide();
    fl_model *a = NULL;
    fl_trainer *t = NULL;
    unsigned char seed[32] = {12};
    cr_assert_eq(fl_model_new(&a, &s), FL_OK);
    fl_model_init(a, seed);
    fl_dataset ds = s_data(60, 400, 3);
    const size_t P = fl_model_num_params(a), steps = 12;
    cr_assert_eq(fl_trainer_new_model(&t, a, &ds, 1.0, 1e-6, 1e6), FL_OK);
    fl_trainer_set_noise_thread(t, 1);
    float *w0 = malloc(P * sizeof *w0), *prev = malloc(P * sizeof *prev);
    float *cur = malloc(P * sizeof *cur);
    cr_assert(w0 && prev && cur);
    double sum = 0, ss = 0, r_max = 0;
    size_t taken = 0;
    for (size_t k = 0; k < steps; k++) {
        memcpy(w0, fl_model_params(a), P * sizeof *w0);
        size_t run = k % 4 == 3 ? 3 : 1; /* every fourth run takes 3 steps */
        cr_assert_eq(fl_trainer_run(t, run, 60.0, NULL), FL_OK, "%s", fl_error_last());
        for (size_t j = 0; j < P; j++) {
            cur[j] = fl_model_params(a)[j] - w0[j];
            if (run == 1) {
                sum += cur[j];
                ss += (double)cur[j] * cur[j];
            }
        }
        if (run == 1)
            taken += P;
        if (k > 0 && run == 1 && (k - 1) % 4 != 3) { /* previous run was one step too */
            double xy = 0, xx = 0, yy = 0;
            for (size_t j = 0; j < P; j++) {
                xy += (double)cur[j] * prev[j];
                xx += (double)prev[j] * prev[j];
                yy += (double)cur[j] * cur[j];
            }
            r_max = fmax(r_max, fabs(xy / sqrt(xx * yy)));
        }
        memcpy(prev, cur, P * sizeof *prev);
    }
    double n = (double)taken, mean = sum / n, var = ss / n - mean * mean;
    cr_expect_gt(fl_trainer_own_prefills(t), 0u);
    cr_expect_eq(fl_trainer_split_steps(t), 9 + 3 * 3);
    cr_expect_lt(fabs(mean), 5 / sqrt(n), "mean step %g", mean);
    cr_expect_lt(fabs(var - 1.0), 5 * sqrt(2.0 / n), "step variance %g, want 1", var);
    cr_expect_lt(r_max, 5 / sqrt((double)P), "consecutive steps' noise correlate: r = %g",
                 r_max);
    free(w0), free(prev), free(cur);
    fl_trainer_free(t);
    fl_model_free(a);
    free(ds.X), free(ds.y);
}

Test(trainer, an_error_in_a_split_cnn_step_fails_it_and_keeps_the_parameters)
{
    /* A label out of range in the last chunk of a shared CNN step (either
     * thread may take it) must fail the step with the model's message,
     * leave the parameters as they were and the trainer usable. */
    if (!s_second_core_or_skip("the split path"))
        return;
    fl_model_spec s = s_cnn_wide();
    fl_model *a = NULL;
    fl_trainer *t = NULL;
    unsigned char seed[32] = {9};
    cr_assert_eq(fl_model_new(&a, &s), FL_OK);
    fl_model_init(a, seed);
    fl_dataset ds = s_data(100, 400, 3);
    cr_assert_eq(fl_trainer_new_model(&t, a, &ds, 1.0, 1.0, 0.0), FL_OK);
    fl_trainer_set_noise_thread(t, 1);
    size_t P = fl_model_num_params(a);
    float *before = malloc(P * sizeof *before);
    cr_assert(before);
    memcpy(before, fl_model_params(a), P * sizeof *before);
    ds.y[99] = 7;
    cr_expect_neq(fl_trainer_run(t, 1, 0.5, NULL), FL_OK);
    cr_expect(strstr(fl_error_last(), "7") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(memcmp(before, fl_model_params(a), P * sizeof *before), 0);
    ds.y[99] = 1;
    cr_expect_eq(fl_trainer_run(t, 2, 0.5, NULL), FL_OK, "%s", fl_error_last());
    cr_expect_eq(fl_trainer_split_steps(t), 2);
    cr_expect_neq(memcmp(before, fl_model_params(a), P * sizeof *before), 0);
    free(before);
    fl_trainer_free(t);
    fl_model_free(a);
    free(ds.X), free(ds.y);
}

/* ---- the worker's share of an MLP's rows (assist) --------------------- */

/* One call of the linear model the controller assumes (see
 * fl_trainer_assist_update): r seconds per row on either thread, a
 * fraction a of this thread's rows before its weight gradients, E
 * seconds of other work per step, F seconds per fill. */
static size_t s_sim_calls(double *f, size_t n, double r, double a, double E, double F,
                          int calls)
{
    size_t m = 0;
    for (int k = 0; k < calls; k++) {
        m = (size_t)(*f * (double)n + 0.5);
        m = m == 0 ? 1 : m;
        double mine = (double)(n - m) * r, pre = a * mine, job = (double)m * r;
        double main_total = mine + (job > pre ? job - pre : 0.0) + E;
        double busy = job + F;
        fl_assist_sample x = {.n = n, .m = m, .period = busy > main_total ? busy : main_total,
                              .mine_sec = mine, .pre_sec = pre, .job_sec = job,
                              .fill_sec = F};
        *f = fl_trainer_assist_update(*f, &x);
    }
    return m;
}

Test(trainer, assist_share_settles_where_the_closed_form_balances_the_threads)
{
    /* With n = 256, r = 10 us, a = 0.55, E = 0.3 ms the fixed point is the
     * smaller of m_A (the job done when this thread needs it, 10 % spare:
     * 0.9 a (n - m) = m) and m_B (the job and the fill within 95 % of the
     * step: m r + F = 0.95 ((n - m) r + E)).  F = 0.5 ms: m_A = 84.8 binds;
     * F = 1.5 ms: m_B = 62.4 binds; F = 3 ms (the fill alone longer than a
     * step): the share goes to 0 (one row).  Within 1.5 rows after 60
     * calls from the default share. */
    const size_t n = 256;
    const double r = 10e-6, a = 0.55, E = 0.3e-3;
    const double mA = 0.9 * a * n / (1.0 + 0.9 * a);
    const double Fs[2] = {0.5e-3, 1.5e-3};
    for (int i = 0; i < 2; i++) {
        double mB = (0.95 * (n * r + E) - Fs[i]) / (1.95 * r);
        double want = mA < mB ? mA : mB, f = -1.0; /* invalid: starts from the default */
        size_t m = s_sim_calls(&f, n, r, a, E, Fs[i], 60);
        cr_expect(fabs((double)m - want) <= 1.5, "F = %g: m = %zu, closed form %.2f", Fs[i], m,
                  want);
    }
    double f = 0.3;
    size_t m = s_sim_calls(&f, n, r, a, E, 3e-3, 60);
    cr_expect_eq(f, 0.0, "share %g with a fill longer than a step", f);
    cr_expect_eq(m, 1);
    /* bounds and bad input */
    fl_assist_sample x = {.n = 256, .m = 100, .period = 1.0, .mine_sec = 1e-3,
                          .pre_sec = 1.0, .job_sec = 1e-4, .fill_sec = 0.0};
    cr_expect_eq(fl_trainer_assist_update(0.45, &x), 0.5, "an idle worker gets at most half");
    x.period = NAN;
    cr_expect_eq(fl_trainer_assist_update(0.2, &x), 0.2, "a NaN measurement changes nothing");
    cr_expect_eq(fl_trainer_assist_update(0.2, NULL), 0.2);
    cr_expect_eq(fl_trainer_assist_update(0.7, NULL), 0.1, "an invalid share restarts");
}

static fl_model *s_mlp_model(const uint32_t *sizes, size_t nl, uint32_t kind, unsigned char s0)
{
    fl_model_spec s;
    fl_model *m = NULL;
    unsigned char seed[32] = {s0};
    cr_assert_eq(fl_model_spec_from_sizes(&s, sizes, nl, kind), FL_OK);
    cr_assert_eq(fl_model_new(&m, &s), FL_OK);
    fl_model_init(m, seed);
    return m;
}

Test(trainer, mlp_assist_matches_the_whole_batch_with_clipping)
{
    /* sigma = 0, q = 1, C below every example's norm at the start: a
     * trainer whose worker computes 30 % of each batch's rows (fixed
     * share) and one without a worker must reach the same parameters
     * after 8 steps, up to the float summation order (1e-5 relative);
     * every step of the first must have been assisted. */
    if (!s_second_core_or_skip("the assist"))
        return;
    static const uint32_t sizes[] = {20, 32, 16, 4};
    fl_model *a = s_mlp_model(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 5);
    fl_model *b = s_mlp_model(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 5);
    fl_model *c = s_mlp_model(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 5);
    fl_trainer *ta = NULL, *tb = NULL;
    fl_dataset ds = s_data(300, 20, 4);
    const double C = s_clip_all(a, &ds);
    cr_assert_eq(fl_trainer_new_model(&ta, a, &ds, 1.0, C, 0.0), FL_OK);
    cr_assert_eq(fl_trainer_new_model(&tb, b, &ds, 1.0, C, 0.0), FL_OK);
    fl_trainer_set_noise_thread(ta, 0);
    fl_trainer_set_noise_thread(tb, 1);
    fl_trainer_set_assist_share(tb, 0.3);
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(fl_trainer_run(ta, 4, 0.5, NULL), FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_trainer_run(tb, 4, 0.5, NULL), FL_OK, "%s", fl_error_last());
    }
    cr_expect(fl_trainer_noise_thread_running(tb));
    cr_expect_eq(fl_trainer_assist_steps(tb), 8);
    cr_expect_eq(fl_trainer_assist_steps(ta), 0);
    cr_expect_eq(fl_trainer_assist_share(tb), 0.3);
    size_t differ = s_expect_trained_alike(a, b, c);
    fprintf(stderr, "assist: %zu of %zu parameters differ in the last bits\n", differ,
            fl_model_num_params(a));
    fl_trainer_free(ta);
    fl_trainer_free(tb);
    fl_model_free(a);
    fl_model_free(b);
    fl_model_free(c);
    free(ds.X), free(ds.y);
}

Test(trainer, an_error_in_the_workers_rows_fails_the_step_and_keeps_the_parameters)
{
    /* A label out of range in the last row (the worker's share at 0.5)
     * must fail the step with the model's message, leave the parameters
     * as they were, and leave the trainer usable: after the label is
     * mended the next run trains. */
    if (!s_second_core_or_skip("the assist"))
        return;
    static const uint32_t sizes[] = {6, 8, 3};
    fl_model *a = s_mlp_model(sizes, 3, FL_MLP_OUT_SOFTMAX_CE, 8);
    fl_trainer *t = NULL;
    fl_dataset ds = s_data(40, 6, 3);
    cr_assert_eq(fl_trainer_new_model(&t, a, &ds, 1.0, 1.0, 0.0), FL_OK);
    fl_trainer_set_noise_thread(t, 1);
    fl_trainer_set_assist_share(t, 0.5);
    size_t P = fl_model_num_params(a);
    float *before = malloc(P * sizeof *before);
    cr_assert(before);
    memcpy(before, fl_model_params(a), P * sizeof *before);
    ds.y[39] = 7;
    cr_expect_neq(fl_trainer_run(t, 1, 0.5, NULL), FL_OK);
    cr_expect(strstr(fl_error_last(), "7") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(memcmp(before, fl_model_params(a), P * sizeof *before), 0);
    ds.y[39] = 1;
    cr_expect_eq(fl_trainer_run(t, 2, 0.5, NULL), FL_OK, "%s", fl_error_last());
    cr_expect_eq(fl_trainer_assist_steps(t), 2);
    cr_expect_neq(memcmp(before, fl_model_params(a), P * sizeof *before), 0);
    free(before);
    fl_trainer_free(t);
    fl_model_free(a);
    free(ds.X), free(ds.y);
}
