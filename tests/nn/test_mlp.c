/* Tests for fl_mlp: gradients against central finite differences and a
 * closed form, per-example gradients against the batch gradient,
 * deterministic initialisation, label validation, and an SGD sanity run
 * on the WDBC data. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fl_dataset.h"
#include "nn/fl_metrics.h"
#include "nn/fl_mlp.h"

/* Test data generator (a fixed LCG; only needs to be reproducible). */
static uint64_t g_state = 0x9E3779B97F4A7C15ull;
static double s_uniform(void)
{
    g_state = g_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_state >> 11) * (1.0 / 9007199254740992.0);
}

static fl_mlp *s_model(const uint32_t *sizes, size_t ns, fl_mlp_output kind, unsigned char tag)
{
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, ns, kind), FL_OK, "%s", fl_error_last());
    unsigned char seed[32];
    memset(seed, tag, sizeof seed);
    fl_mlp_init(m, seed);
    /* Non-zero biases so their gradients are exercised away from zero. */
    float *p = fl_mlp_params(m);
    size_t off = 0;
    for (size_t l = 0; l + 1 < ns; l++) {
        off += (size_t)sizes[l] * sizes[l + 1];
        for (size_t j = 0; j < sizes[l + 1]; j++)
            p[off + j] = (float)(0.2 * s_uniform() - 0.05);
        off += sizes[l + 1];
    }
    return m;
}

static float *s_inputs(size_t n, size_t d)
{
    float *X = malloc(n * d * sizeof *X);
    for (size_t i = 0; i < n * d; i++)
        X[i] = (float)(2.0 * s_uniform() - 1.0);
    return X;
}

static double s_loss(fl_mlp *m, const float *X, const int32_t *y, size_t n, float *scratch)
{
    double loss = 0;
    cr_assert_eq(fl_mlp_gradient(m, X, y, n, scratch, &loss), FL_OK, "%s", fl_error_last());
    return loss;
}

/* Every parameter: analytic summed gradient vs central differences. */
static void s_check_fd(fl_mlp *m, const float *X, const int32_t *y, size_t n)
{
    size_t P = fl_mlp_num_params(m);
    float *g = malloc(P * sizeof *g), *scratch = malloc(P * sizeof *scratch);
    double loss;
    cr_assert_eq(fl_mlp_gradient(m, X, y, n, g, &loss), FL_OK);
    float *p = fl_mlp_params(m);
    const float eps = 1e-3f;
    for (size_t k = 0; k < P; k++) {
        float orig = p[k];
        p[k] = orig + eps;
        double lp = s_loss(m, X, y, n, scratch);
        p[k] = orig - eps;
        double lm = s_loss(m, X, y, n, scratch);
        p[k] = orig;
        /* divide by the step actually taken in float */
        double h = (double)(orig + eps) - (double)(orig - eps);
        double fd = (lp - lm) / h;
        double tol = 1e-2 * fmax(fabs(fd), fabs((double)g[k])) + 2e-3;
        cr_assert(fabs(fd - (double)g[k]) <= tol,
                  "param %zu: analytic %.6g vs finite difference %.6g", k, (double)g[k], fd);
    }
    free(g);
    free(scratch);
}

Test(mlp, gradient_matches_finite_differences_sigmoid)
{
    const uint32_t sizes[] = {5, 7, 4, 1};
    fl_mlp *m = s_model(sizes, 4, FL_MLP_OUT_SIGMOID_BCE, 1);
    float *X = s_inputs(4, 5);
    const int32_t y[] = {1, 0, 1, 0};
    s_check_fd(m, X, y, 4);
    free(X);
    fl_mlp_free(m);
}

Test(mlp, gradient_matches_finite_differences_softmax)
{
    const uint32_t sizes[] = {5, 7, 4, 3};
    fl_mlp *m = s_model(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 2);
    float *X = s_inputs(4, 5);
    const int32_t y[] = {2, 0, 1, 2};
    s_check_fd(m, X, y, 4);
    free(X);
    fl_mlp_free(m);
}

static void s_check_examples(fl_mlp_output kind, const uint32_t *sizes, size_t ns, size_t n)
{
    fl_mlp *m = s_model(sizes, ns, kind, 3);
    size_t P = fl_mlp_num_params(m), d = sizes[0];
    uint32_t k = kind == FL_MLP_OUT_SIGMOID_BCE ? 2 : sizes[ns - 1];
    float *X = s_inputs(n, d);
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(i % k);
    float *G = malloc(n * P * sizeof *G), *losses = malloc(n * sizeof *losses);
    float *g = malloc(P * sizeof *g), *g1 = malloc(P * sizeof *g1);
    double loss_sum, l1;
    cr_assert_eq(fl_mlp_example_gradients(m, X, y, n, G, losses), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_mlp_gradient(m, X, y, n, g, &loss_sum), FL_OK);
    double lsum = 0;
    for (size_t i = 0; i < n; i++)
        lsum += losses[i];
    cr_assert(fabs(lsum - loss_sum) <= 1e-5 * fabs(loss_sum) + 1e-5);
    for (size_t p = 0; p < P; p++) {
        double s = 0, sa = 0;
        for (size_t i = 0; i < n; i++) {
            s += G[i * P + p];
            sa += fabs(G[i * P + p]);
        }
        cr_assert(fabs(s - g[p]) <= 1e-4 * sa + 1e-5, "param %zu: rows sum %.7g, batch %.7g",
                  p, s, (double)g[p]);
    }
    for (size_t i = 0; i < n; i += (n > 16 ? 37 : 1)) {
        cr_assert_eq(fl_mlp_gradient(m, X + i * d, y + i, 1, g1, &l1), FL_OK);
        cr_assert(fabs(l1 - losses[i]) <= 1e-5 * fabs(l1) + 1e-6);
        for (size_t p = 0; p < P; p++)
            cr_assert(fabs(G[i * P + p] - g1[p]) <= 1e-5 * fabs(g1[p]) + 1e-6,
                      "example %zu param %zu: row %.7g, single %.7g", i, p,
                      (double)G[i * P + p], (double)g1[p]);
    }
    free(X);
    free(y);
    free(G);
    free(losses);
    free(g);
    free(g1);
    fl_mlp_free(m);
}

Test(mlp, example_gradient_rows_sum_to_batch_gradient_and_match_single_examples_sigmoid)
{
    const uint32_t sizes[] = {6, 8, 5, 1};
    s_check_examples(FL_MLP_OUT_SIGMOID_BCE, sizes, 4, 9);
}

Test(mlp, example_gradient_rows_sum_to_batch_gradient_and_match_single_examples_softmax)
{
    const uint32_t sizes[] = {6, 8, 5, 4};
    s_check_examples(FL_MLP_OUT_SOFTMAX_CE, sizes, 4, 9);
}

Test(mlp, batches_larger_than_one_chunk_give_the_same_gradients)
{
    /* 600 rows span several internal chunks and grow the scratch. */
    const uint32_t sizes[] = {4, 6, 3};
    s_check_examples(FL_MLP_OUT_SOFTMAX_CE, sizes, 3, 600);
}

Test(mlp, logistic_regression_matches_closed_form)
{
    const uint32_t sizes[] = {3, 1};
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, 2, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    cr_assert_eq(fl_mlp_num_params(m), 4);
    float *p = fl_mlp_params(m);
    const double w[3] = {0.5, -1.0, 2.0}, b = 0.25;
    p[0] = 0.5f; p[1] = -1.0f; p[2] = 2.0f; p[3] = 0.25f;
    const float X[] = {1, 2, 3,  /* z = 4.75 */
                       2, 1, -1}; /* z = -1.75 */
    const int32_t y[] = {0, 1};
    float g[4];
    double loss;
    cr_assert_eq(fl_mlp_gradient(m, X, y, 2, g, &loss), FL_OK);
    double eg[4] = {0, 0, 0, 0}, el = 0;
    for (int i = 0; i < 2; i++) {
        double z = b;
        for (int j = 0; j < 3; j++)
            z += w[j] * X[i * 3 + j];
        double s = 1.0 / (1.0 + exp(-z));
        el += -(y[i] * log(s) + (1 - y[i]) * log(1 - s));
        for (int j = 0; j < 3; j++)
            eg[j] += (s - y[i]) * X[i * 3 + j];
        eg[3] += s - y[i];
    }
    cr_assert_float_eq(loss, el, 1e-5);
    for (int j = 0; j < 4; j++)
        cr_assert_float_eq(g[j], eg[j], 1e-5, "coordinate %d", j);
    float probs[2];
    cr_assert_eq(fl_mlp_predict(m, X, 2, probs), FL_OK);
    cr_assert_float_eq(probs[0], 1.0 / (1.0 + exp(-4.75)), 1e-6);
    cr_assert_float_eq(probs[1], 1.0 / (1.0 + exp(1.75)), 1e-6);
    fl_mlp_free(m);
}

Test(mlp, losses_are_finite_for_huge_logits)
{
    const uint32_t sizes[] = {1, 2};
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, 2, FL_MLP_OUT_SOFTMAX_CE), FL_OK);
    float *p = fl_mlp_params(m);
    p[0] = 1000.0f; p[1] = -1000.0f; /* W */
    const float X[] = {1.0f};
    const int32_t y[] = {1};
    float g[4];
    double loss;
    cr_assert_eq(fl_mlp_gradient(m, X, y, 1, g, &loss), FL_OK);
    cr_assert_float_eq(loss, 2000.0, 1e-3); /* lse(1000,-1000) - (-1000) */
    fl_mlp_free(m);

    const uint32_t s1[] = {1, 1};
    cr_assert_eq(fl_mlp_new(&m, s1, 2, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    fl_mlp_params(m)[0] = -500.0f;
    cr_assert_eq(fl_mlp_gradient(m, X, y, 1, g, &loss), FL_OK);
    cr_assert_float_eq(loss, 500.0, 1e-3);
    cr_assert_float_eq(g[0], -1.0, 1e-6);
    fl_mlp_free(m);
}

Test(mlp, init_is_deterministic_and_within_he_and_glorot_limits)
{
    const uint32_t sizes[] = {10, 20, 3};
    fl_mlp *a = NULL, *b = NULL;
    cr_assert_eq(fl_mlp_new(&a, sizes, 3, FL_MLP_OUT_SOFTMAX_CE), FL_OK);
    cr_assert_eq(fl_mlp_new(&b, sizes, 3, FL_MLP_OUT_SOFTMAX_CE), FL_OK);
    unsigned char s1[32] = {1}, s2[32] = {2};
    fl_mlp_init(a, s1);
    fl_mlp_init(b, s1);
    size_t P = fl_mlp_num_params(a);
    cr_assert_eq(P, 10 * 20 + 20 + 20 * 3 + 3);
    cr_assert_eq(memcmp(fl_mlp_params(a), fl_mlp_params(b), P * sizeof(float)), 0);
    fl_mlp_init(b, s2);
    cr_assert_neq(memcmp(fl_mlp_params(a), fl_mlp_params(b), P * sizeof(float)), 0);
    const float *p = fl_mlp_params(a);
    double he = sqrt(6.0 / 10), gl = sqrt(6.0 / 23), maxabs = 0;
    for (size_t i = 0; i < 200; i++) {
        cr_assert(fabs(p[i]) <= he);
        maxabs = fmax(maxabs, fabs(p[i]));
    }
    cr_assert(maxabs > 0.8 * he, "weights should fill the He range");
    for (size_t i = 200; i < 220; i++)
        cr_assert_eq(p[i], 0.0f);
    for (size_t i = 220; i < 280; i++)
        cr_assert(fabs(p[i]) <= gl);
    for (size_t i = 280; i < 283; i++)
        cr_assert_eq(p[i], 0.0f);
    fl_mlp_free(a);
    fl_mlp_free(b);
}

Test(mlp, rejects_out_of_range_labels_with_index)
{
    const uint32_t sizes[] = {2, 1};
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, 2, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    const float X[] = {0, 0, 1, 1, 2, 2};
    const int32_t y[] = {0, 1, 2};
    float g[3], G[9];
    double loss;
    cr_assert_eq(fl_mlp_gradient(m, X, y, 3, g, &loss), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "y[2] = 2"), "%s", fl_error_last());
    cr_assert_eq(fl_mlp_example_gradients(m, X, y, 3, G, NULL), FL_EINVAL);
    cr_assert_eq(fl_mlp_evaluate(m, X, y, 3, &loss, NULL), FL_EINVAL);
    const int32_t yneg[] = {0, -1, 0};
    cr_assert_eq(fl_mlp_gradient(m, X, yneg, 3, g, &loss), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "y[1]"), "%s", fl_error_last());
    fl_mlp_free(m);
}

Test(mlp, rejects_bad_shapes)
{
    fl_mlp *m = NULL;
    const uint32_t one[] = {4};
    const uint32_t sig3[] = {4, 3};
    const uint32_t soft1[] = {4, 1};
    const uint32_t zero[] = {4, 0, 1};
    cr_assert_eq(fl_mlp_new(&m, one, 1, FL_MLP_OUT_SIGMOID_BCE), FL_EINVAL);
    cr_assert_eq(fl_mlp_new(&m, sig3, 2, FL_MLP_OUT_SIGMOID_BCE), FL_EINVAL);
    cr_assert_eq(fl_mlp_new(&m, soft1, 2, FL_MLP_OUT_SOFTMAX_CE), FL_EINVAL);
    cr_assert_eq(fl_mlp_new(&m, zero, 3, FL_MLP_OUT_SIGMOID_BCE), FL_EINVAL);
    cr_assert_null(m);
    fl_mlp_free(NULL);
}

Test(mlp, empty_batch_gives_zero_gradient)
{
    const uint32_t sizes[] = {3, 4, 1};
    fl_mlp *m = s_model(sizes, 3, FL_MLP_OUT_SIGMOID_BCE, 4);
    size_t P = fl_mlp_num_params(m);
    float *g = malloc(P * sizeof *g);
    for (size_t i = 0; i < P; i++)
        g[i] = 7.0f;
    double loss = 3;
    cr_assert_eq(fl_mlp_gradient(m, NULL, NULL, 0, g, &loss), FL_OK);
    cr_assert_eq(loss, 0.0);
    for (size_t i = 0; i < P; i++)
        cr_assert_eq(g[i], 0.0f);
    cr_assert_eq(fl_mlp_example_gradients(m, NULL, NULL, 0, NULL, NULL), FL_OK);
    double ml;
    cr_assert_eq(fl_mlp_evaluate(m, NULL, NULL, 0, &ml, NULL), FL_EINVAL);
    free(g);
    fl_mlp_free(m);
}

Test(mlp, evaluate_agrees_with_gradient_loss_and_softmax_rows_sum_to_one)
{
    const uint32_t sizes[] = {5, 6, 3};
    fl_mlp *m = s_model(sizes, 3, FL_MLP_OUT_SOFTMAX_CE, 5);
    size_t n = 700;
    float *X = s_inputs(n, 5);
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(i % 3);
    float *probs = malloc(n * 3 * sizeof *probs), *probs2 = malloc(n * 3 * sizeof *probs2);
    float *g = malloc(fl_mlp_num_params(m) * sizeof *g);
    double mean, sum;
    cr_assert_eq(fl_mlp_evaluate(m, X, y, n, &mean, probs), FL_OK);
    cr_assert_eq(fl_mlp_gradient(m, X, y, n, g, &sum), FL_OK);
    cr_assert_float_eq(mean, sum / n, 1e-9);
    cr_assert_eq(fl_mlp_predict(m, X, n, probs2), FL_OK);
    cr_assert_eq(memcmp(probs, probs2, n * 3 * sizeof(float)), 0);
    double manual = 0;
    for (size_t i = 0; i < n; i++) {
        float s = probs[i * 3] + probs[i * 3 + 1] + probs[i * 3 + 2];
        cr_assert_float_eq(s, 1.0f, 1e-5);
        manual -= log(probs[i * 3 + y[i]]);
    }
    cr_assert_float_eq(mean, manual / n, 1e-4);
    free(X);
    free(y);
    free(probs);
    free(probs2);
    free(g);
    fl_mlp_free(m);
}

Test(mlp, sgd_on_wdbc_reaches_93_percent_training_accuracy, .timeout = 120)
{
    fl_schema *s = NULL;
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_schema_load(&s, FL_SOURCE_DIR "/data/wdbc/schema.ini"), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(fl_dataset_load_csv(&ds, FL_SOURCE_DIR "/data/wdbc/wdbc.csv", s), FL_OK, "%s",
                 fl_error_last());
    const uint32_t sizes[] = {30, 16, 8, 1};
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, 4, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    unsigned char seed[32] = {42};
    fl_mlp_init(m, seed);
    size_t P = fl_mlp_num_params(m), B = 32;
    float *g = malloc(P * sizeof *g);
    float *p = fl_mlp_params(m);
    const float lr = 0.5f;
    double loss;
    for (size_t step = 0; step < 1500; step++) {
        size_t start = (step * B) % (ds->n - B);
        cr_assert_eq(fl_mlp_gradient(m, ds->X + start * ds->d, ds->y + start, B, g, &loss),
                     FL_OK);
        for (size_t k = 0; k < P; k++)
            p[k] -= lr * g[k] / (float)B;
    }
    float *probs = malloc(ds->n * sizeof *probs);
    double mean;
    cr_assert_eq(fl_mlp_evaluate(m, ds->X, ds->y, ds->n, &mean, probs), FL_OK);
    fl_confusion c;
    fl_metrics_confusion(probs, ds->y, ds->n, 0.5f, &c);
    double acc = fl_metrics_accuracy(&c);
    cr_assert(acc >= 0.93, "training accuracy %.4f (mean loss %.4f)", acc, mean);
    free(g);
    free(probs);
    fl_mlp_free(m);
    fl_dataset_free(ds);
    fl_schema_free(s);
}

/* ---- Ghost clipping (fl_mlp_clipped_gradient_sum, fl_mlp_example_norms).
 * The reference is a second implementation: materialise per-example
 * gradients (fl_mlp_example_gradients, itself checked against finite
 * differences above), take their norms in double, clip them with
 * fl_dp_clip_rows-equivalent arithmetic written out here (scale
 * C/||g|| * (1 - 1e-6), non-finite rows zeroed), and sum in double. */

static const double s_margin = 1.0 - 1e-6; /* documented in fl_dp_clip_rows */

static void s_check_ghost(fl_mlp_output kind, const uint32_t *sizes, size_t ns, size_t n,
                          size_t nan_row)
{
    fl_mlp *m = s_model(sizes, ns, kind, 5);
    size_t P = fl_mlp_num_params(m), d = sizes[0];
    uint32_t k = kind == FL_MLP_OUT_SIGMOID_BCE ? 2 : sizes[ns - 1];
    float *X = s_inputs(n, d);
    /* Spread the input scales so per-example norms differ a lot. */
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < d; t++)
            X[i * d + t] *= (float)(0.2 + 3.0 * (double)(i % 7) / 6.0);
    if (nan_row < n)
        X[nan_row * d + 1] = NAN;
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)((i * 7 + 3) % k);
    float *G = malloc(n * P * sizeof *G), *gs = malloc(P * sizeof *gs);
    double *ref = calloc(P, sizeof *ref), *refabs = calloc(P, sizeof *refabs);
    double *enorm = malloc(n * sizeof *enorm), *gnorm = malloc(n * sizeof *gnorm);
    double *sorted = malloc(n * sizeof *sorted);
    cr_assert(X && y && G && gs && ref && refabs && enorm && gnorm && sorted);
    cr_assert_eq(fl_mlp_example_gradients(m, X, y, n, G, NULL), FL_OK, "%s", fl_error_last());

    size_t finite = 0;
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (size_t p = 0; p < P; p++)
            ss += (double)G[i * P + p] * G[i * P + p];
        enorm[i] = sqrt(ss);
        if (isfinite(enorm[i]))
            sorted[finite++] = enorm[i];
    }
    /* C = median finite norm: about half the rows clipped, half not. */
    for (size_t i = 1; i < finite; i++)
        for (size_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            double tmp = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = tmp;
        }
    double C = 0.5 * (sorted[finite / 2] + sorted[(finite - 1) / 2]);
    size_t ref_clipped = 0;
    for (size_t i = 0; i < n; i++) {
        double f = 1.0;
        if (!isfinite(enorm[i])) {
            f = 0.0;
            ref_clipped++;
        } else if (enorm[i] > C) {
            f = C / enorm[i] * s_margin;
            ref_clipped++;
        }
        for (size_t p = 0; p < P; p++) {
            double v = f == 0.0 ? 0.0 : f * (double)G[i * P + p];
            ref[p] += v;
            refabs[p] += fabs(v);
        }
    }
    cr_assert_gt(ref_clipped, 1 + (nan_row < n));
    cr_assert_lt(ref_clipped, n - 1, "some rows must stay unclipped");

    /* Norms: ghost identity vs explicit rows. */
    cr_assert_eq(fl_mlp_example_norms(m, X, y, n, gnorm), FL_OK, "%s", fl_error_last());
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(enorm[i])) {
            cr_expect(!isfinite(gnorm[i]), "example %zu: NaN input must give a non-finite norm",
                      i);
            continue;
        }
        cr_expect(fabs(gnorm[i] - enorm[i]) <= 1e-5 * enorm[i] + 1e-12,
                  "example %zu: ghost norm %.9g, explicit %.9g", i, gnorm[i], enorm[i]);
    }

    /* Clipped sum. */
    size_t clipped = 0;
    double loss = 0, loss_ref = 0;
    cr_assert_eq(fl_mlp_clipped_gradient_sum(m, X, y, n, C, gs, &clipped, &loss), FL_OK, "%s",
                 fl_error_last());
    cr_expect_eq(clipped, ref_clipped);
    for (size_t p = 0; p < P; p++)
        cr_assert(isfinite(gs[p]) &&
                  fabs((double)gs[p] - ref[p]) <= 1e-5 * refabs[p] + 1e-7,
                  "param %zu: ghost %.9g, explicit clipped sum %.9g (scale %.3g)", p,
                  (double)gs[p], ref[p], refabs[p]);
    if (nan_row >= n) {
        float *g = malloc(P * sizeof *g);
        cr_assert_eq(fl_mlp_gradient(m, X, y, n, g, &loss_ref), FL_OK);
        cr_expect(fabs(loss - loss_ref) <= 1e-9 * fabs(loss_ref), "loss %g vs %g", loss,
                  loss_ref);
        free(g);
    }

    free(X);
    free(y);
    free(G);
    free(gs);
    free(ref);
    free(refabs);
    free(enorm);
    free(gnorm);
    free(sorted);
    fl_mlp_free(m);
}

Test(ghost, clipped_sum_equals_explicit_clipping_sigmoid_three_hidden_layers)
{
    const uint32_t sizes[] = {7, 9, 6, 5, 1};
    s_check_ghost(FL_MLP_OUT_SIGMOID_BCE, sizes, 5, 40, SIZE_MAX);
}

Test(ghost, clipped_sum_equals_explicit_clipping_softmax_three_hidden_layers)
{
    const uint32_t sizes[] = {7, 9, 6, 5, 4};
    s_check_ghost(FL_MLP_OUT_SOFTMAX_CE, sizes, 5, 40, SIZE_MAX);
}

Test(ghost, clipped_sum_equals_explicit_clipping_across_chunks)
{
    /* 700 rows: two internal 512-row chunks. */
    const uint32_t sizes[] = {5, 12, 8, 3};
    s_check_ghost(FL_MLP_OUT_SOFTMAX_CE, sizes, 4, 700, SIZE_MAX);
}

Test(ghost, example_with_nan_input_contributes_zero_and_is_counted)
{
    const uint32_t sizes[] = {7, 9, 6, 5, 4};
    s_check_ghost(FL_MLP_OUT_SOFTMAX_CE, sizes, 5, 40, 13);
}

Test(ghost, huge_clip_gives_the_plain_batch_gradient)
{
    /* With C above every norm nothing is clipped and the sum is the batch
     * gradient of fl_mlp_gradient (checked against finite differences). */
    const uint32_t sizes[] = {6, 8, 5, 3};
    fl_mlp *m = s_model(sizes, 4, FL_MLP_OUT_SOFTMAX_CE, 9);
    size_t P = fl_mlp_num_params(m), n = 33;
    float *X = s_inputs(n, 6), *g = malloc(P * sizeof *g), *gs = malloc(P * sizeof *gs);
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(i % 3);
    double l1, l2;
    size_t clipped = 99;
    cr_assert_eq(fl_mlp_gradient(m, X, y, n, g, &l1), FL_OK);
    cr_assert_eq(fl_mlp_clipped_gradient_sum(m, X, y, n, 1e30, gs, &clipped, &l2), FL_OK);
    cr_expect_eq(clipped, 0);
    for (size_t p = 0; p < P; p++)
        cr_assert(fabs(gs[p] - g[p]) <= 1e-6 * fabs(g[p]) + 1e-7, "param %zu", p);
    free(X);
    free(g);
    free(gs);
    free(y);
    fl_mlp_free(m);
}

Test(ghost, rejects_bad_clip_and_empty_batch_gives_zero)
{
    const uint32_t sizes[] = {3, 4, 1};
    fl_mlp *m = s_model(sizes, 3, FL_MLP_OUT_SIGMOID_BCE, 1);
    size_t P = fl_mlp_num_params(m);
    float *gs = malloc(P * sizeof *gs);
    float x[3] = {1, 2, 3};
    int32_t y = 1;
    size_t clipped = 7;
    double loss = 5;
    cr_expect_eq(fl_mlp_clipped_gradient_sum(m, x, &y, 1, 0.0, gs, NULL, NULL), FL_EINVAL);
    cr_expect_eq(fl_mlp_clipped_gradient_sum(m, x, &y, 1, NAN, gs, NULL, NULL), FL_EINVAL);
    cr_expect_eq(fl_mlp_clipped_gradient_sum(m, x, &y, 1, INFINITY, gs, NULL, NULL),
                 FL_EINVAL);
    y = 2;
    cr_expect_eq(fl_mlp_clipped_gradient_sum(m, x, &y, 1, 1.0, gs, NULL, NULL), FL_EINVAL);
    for (size_t p = 0; p < P; p++)
        gs[p] = 1.0f;
    cr_assert_eq(fl_mlp_clipped_gradient_sum(m, NULL, NULL, 0, 1.0, gs, &clipped, &loss),
                 FL_OK);
    cr_expect_eq(clipped, 0);
    cr_expect_eq(loss, 0.0);
    for (size_t p = 0; p < P; p++)
        cr_expect_eq(gs[p], 0.0f);
    free(gs);
    fl_mlp_free(m);
}

typedef struct {
    int calls, rc;
    const float *gs; /* the buffer, to check it is untouched when the hook runs */
    size_t P;
    int untouched;
} hook_ctx;

static int s_hook(void *v)
{
    hook_ctx *h = v;
    h->calls++;
    h->untouched = 1;
    for (size_t p = 0; p < h->P; p++)
        h->untouched &= h->gs[p] == 7.0f;
    return h->rc;
}

Test(ghost, accumulate_adds_two_parts_to_the_whole_and_the_hook_runs_once_before_writing)
{
    /* The clipped sum of rows [0, 40) equals that of [0, 25) added (with
     * accumulate) onto that of [25, 40): each example is clipped on its
     * own (1e-6 relative, float summation order).  before_write runs once
     * and sees grad_sum untouched; an error from it ends the call with its
     * code and zeroes grad_sum; a label error calls it before zeroing. */
    const uint32_t sizes[] = {7, 9, 4};
    fl_mlp *m = s_model(sizes, 3, FL_MLP_OUT_SOFTMAX_CE, 4);
    size_t P = fl_mlp_num_params(m), n = 40, k = 25, c1 = 0, c2 = 0, cw = 0;
    float *X = s_inputs(n, 7), *whole = malloc(P * sizeof *whole), *gs = malloc(P * sizeof *gs);
    int32_t *y = malloc(n * sizeof *y);
    cr_assert(whole && gs && y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(i % 4);
    const double C = 0.05; /* small: most examples are clipped */
    cr_assert_eq(fl_mlp_clipped_gradient_sum(m, X, y, n, C, whole, &cw, NULL), FL_OK);
    cr_assert_gt(cw, n / 2);
    cr_assert_eq(fl_mlp_clipped_gradient_sum(m, X + k * 7, y + k, n - k, C, gs, &c2, NULL),
                 FL_OK);
    hook_ctx h = {.rc = FL_OK, .gs = gs, .P = P};
    fl_mlp_sum_opts o = {.accumulate = 1, .before_write = s_hook, .ctx = &h};
    float first = gs[0];
    cr_assert_eq(fl_mlp_clipped_gradient_sum_ex(m, X, y, k, C, gs, &c1, NULL, &o), FL_OK);
    cr_expect_eq(h.calls, 1);
    cr_expect_eq(c1 + c2, cw);
    for (size_t p = 0; p < P; p++)
        cr_assert(fabsf(gs[p] - whole[p]) <= 1e-6f * fabsf(whole[p]) + 1e-7f,
                  "param %zu: %.9g vs %.9g", p, (double)gs[p], (double)whole[p]);
    cr_expect_neq(gs[0], first, "accumulate added nothing");
    /* the hook sees the buffer before any write, and its error ends the call */
    for (size_t p = 0; p < P; p++)
        gs[p] = 7.0f;
    h = (hook_ctx){.rc = FL_EIO, .gs = gs, .P = P};
    o.accumulate = 0;
    cr_expect_eq(fl_mlp_clipped_gradient_sum_ex(m, X, y, n, C, gs, NULL, NULL, &o), FL_EIO);
    cr_expect_eq(h.calls, 1);
    cr_expect(h.untouched, "grad_sum was written before before_write");
    for (size_t p = 0; p < P; p++)
        cr_assert_eq(gs[p], 0.0f);
    /* a label error: the hook still runs (first), then grad_sum is zeroed */
    for (size_t p = 0; p < P; p++)
        gs[p] = 7.0f;
    h = (hook_ctx){.rc = FL_OK, .gs = gs, .P = P};
    y[3] = 9;
    cr_expect_eq(fl_mlp_clipped_gradient_sum_ex(m, X, y, n, C, gs, NULL, NULL, &o), FL_EINVAL);
    cr_expect_eq(h.calls, 1);
    cr_expect(h.untouched);
    for (size_t p = 0; p < P; p++)
        cr_assert_eq(gs[p], 0.0f);
    free(X);
    free(whole);
    free(gs);
    free(y);
    fl_mlp_free(m);
}
