/* Tests for node/fl_trainer with models built from a spec (nn/fl_model):
 * with q = 1 (every record sampled), sigma = 0 and a clip norm above every
 * example's norm, one DP-SGD step is exactly plain gradient descent on the
 * mean gradient, so it is checked against fl_model_gradient; the MLP path
 * gives the same parameters through fl_trainer_new and
 * fl_trainer_new_model; a CNN trained with noise moves and reports its
 * batch size.  (Lives under tests/nn until tests/node exists.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fl_model.h"
#include "node/fl_trainer.h"

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

Test(trainer, cnn_step_without_noise_or_clipping_is_gradient_descent)
{
    fl_model_spec s = s_cnn();
    fl_model *m = NULL;
    fl_trainer *t = NULL;
    cr_assert_eq(fl_model_new(&m, &s), FL_OK, "%s", fl_error_last());
    unsigned char seed[32] = {5};
    fl_model_init(m, seed);
    fl_dataset ds = s_data(300, 64, 3); /* more than one 256-row trainer chunk */
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
