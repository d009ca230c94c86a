/* Tests for fl_model: parameter counts by closed form; gradients of small
 * CNNs against central finite differences of a double-precision forward
 * pass written here from the layer definitions (nn/fl_model_spec.h);
 * per-example norms and the ghost-clipped sum against gradients computed
 * one example at a time (so explicitly) and clipped here; the MLP path
 * bit for bit against nn/fl_mlp; and a CNN learning real Fashion-MNIST. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/fl_conv.h"
#include "nn/fl_dataset.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* Deterministic uniforms in [-1, 1) from a 64-bit LCG (Knuth MMIX). */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t s_next(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}
static float s_unif(void)
{
    return (float)((double)s_next() / 4294967296.0 * 2.0 - 1.0);
}

static fl_layer_spec s_conv(uint32_t k_out, uint32_t k)
{
    return (fl_layer_spec){FL_LAYER_CONV, k_out, k};
}
static fl_layer_spec s_pool(void) { return (fl_layer_spec){FL_LAYER_POOL, 0, 2}; }
static fl_layer_spec s_dense(uint32_t n) { return (fl_layer_spec){FL_LAYER_DENSE, n, 0}; }

/* The issue's CNN: 28x28x1 -> conv 16 3 -> pool -> conv 32 3 -> pool -> dense 10. */
static fl_model_spec s_issue_cnn(void)
{
    fl_model_spec s = {.in_c = 1, .in_h = 28, .in_w = 28, .output_kind = 2, .num_layers = 5};
    s.layers[0] = s_conv(16, 3);
    s.layers[1] = s_pool();
    s.layers[2] = s_conv(32, 3);
    s.layers[3] = s_pool();
    s.layers[4] = s_dense(10);
    return s;
}

/* Tiny CNN A (softmax, 3 classes): 8x8x1 -> conv 4 3 (6x6: T = 36, so
 * 2 T^2 = 2592 > C_in k^2 C_out = 36, explicit norms) -> pool (3x3) ->
 * conv 4 2 (2x2: T = 4, 2 T^2 = 32 < 16 * 4 = 64, ghost norms) -> dense 5
 * (ReLU) -> dense 3. */
static fl_model_spec s_tiny_a(void)
{
    fl_model_spec s = {.in_c = 1, .in_h = 8, .in_w = 8, .output_kind = 2, .num_layers = 5};
    s.layers[0] = s_conv(4, 3);
    s.layers[1] = s_pool();
    s.layers[2] = s_conv(4, 2);
    s.layers[3] = s_dense(5);
    s.layers[4] = s_dense(3);
    return s;
}

/* Tiny CNN B (sigmoid): 5x5x2 -> pool (2x2, the odd row/column dropped;
 * no parameters below) -> conv 3 2 (1x1) -> dense 1. */
static fl_model_spec s_tiny_b(void)
{
    fl_model_spec s = {.in_c = 2, .in_h = 5, .in_w = 5, .output_kind = 1, .num_layers = 3};
    s.layers[0] = s_pool();
    s.layers[1] = s_conv(3, 2);
    s.layers[2] = s_dense(1);
    return s;
}

/* Tiny CNN C (softmax, 3 classes): two conv + pool blocks that fl_model
 * fuses and crops.  11x11x2 -> conv 3 3 (9x9) -> pool (4x4) -> conv 4 2
 * (3x3) -> pool (1x1) -> dense 3: the second pool reads 2x2 of the 3x3
 * conv outputs, so only 3x3 of the first pool's 4x4 outputs, 6x6 of the
 * first conv's 9x9 and 8x8 of the 11x11 input are ever read. */
static fl_model_spec s_tiny_c(void)
{
    fl_model_spec s = {.in_c = 2, .in_h = 11, .in_w = 11, .output_kind = 2, .num_layers = 5};
    s.layers[0] = s_conv(3, 3);
    s.layers[1] = s_pool();
    s.layers[2] = s_conv(4, 2);
    s.layers[3] = s_pool();
    s.layers[4] = s_dense(3);
    return s;
}

static fl_model *s_new(const fl_model_spec *s, unsigned char seedbyte)
{
    fl_model *m = NULL;
    cr_assert_eq(fl_model_new(&m, s), FL_OK, "%s", fl_error_last());
    unsigned char seed[32] = {seedbyte};
    fl_model_init(m, seed);
    return m;
}

static float *s_randv(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * s_unif();
    return p;
}

/* ---- double-precision reference, straight from the layer definitions ---- */

#define S_REF_MAX 4096

/* Logits of one example x (C x H x W) under parameters p (double). */
static void s_ref_logits(const fl_model_spec *s, const double *p, const float *x, double *logits)
{
    static double A[S_REF_MAX], B[S_REF_MAX];
    double *cur = A, *nxt = B;
    size_t c = s->in_c, h = s->in_h, w = s->in_w, off = 0;
    for (size_t i = 0; i < c * h * w; i++)
        cur[i] = x[i];
    for (uint32_t l = 0; l < s->num_layers; l++) {
        const fl_layer_spec *ls = &s->layers[l];
        size_t oc, oh, ow;
        if (ls->kind == FL_LAYER_CONV) {
            size_t k = ls->kernel;
            oc = ls->units, oh = h - k + 1, ow = w - k + 1;
            const double *W = p + off, *b = p + off + oc * c * k * k;
            for (size_t o = 0; o < oc; o++)
                for (size_t yy = 0; yy < oh; yy++)
                    for (size_t xx = 0; xx < ow; xx++) {
                        double v = b[o];
                        for (size_t ci = 0; ci < c; ci++)
                            for (size_t u = 0; u < k; u++)
                                for (size_t t = 0; t < k; t++)
                                    v += W[((o * c + ci) * k + u) * k + t] *
                                         cur[(ci * h + yy + u) * w + xx + t];
                        nxt[(o * oh + yy) * ow + xx] = v > 0.0 ? v : 0.0;
                    }
            off += oc * c * k * k + oc;
        } else if (ls->kind == FL_LAYER_POOL) {
            oc = c, oh = h / 2, ow = w / 2;
            for (size_t ci = 0; ci < c; ci++)
                for (size_t yy = 0; yy < oh; yy++)
                    for (size_t xx = 0; xx < ow; xx++) {
                        const double *q = cur + (ci * h + 2 * yy) * w + 2 * xx;
                        nxt[(ci * oh + yy) * ow + xx] = fmax(fmax(q[0], q[1]),
                                                             fmax(q[w], q[w + 1]));
                    }
        } else {
            size_t in = c * h * w;
            oc = ls->units, oh = ow = 1;
            const double *W = p + off, *b = p + off + oc * in;
            for (size_t j = 0; j < oc; j++) {
                double v = b[j];
                for (size_t t = 0; t < in; t++)
                    v += W[j * in + t] * cur[t];
                nxt[j] = (l + 1 < s->num_layers && v <= 0.0) ? 0.0 : v;
            }
            off += oc * in + oc;
        }
        cr_assert_leq(oc * oh * ow, S_REF_MAX);
        double *t = cur;
        cur = nxt, nxt = t;
        c = oc, h = oh, w = ow;
    }
    for (size_t j = 0; j < c; j++)
        logits[j] = cur[j];
}

static double s_ref_loss(const fl_model_spec *s, const double *p, const float *x, int32_t y)
{
    double z[64];
    s_ref_logits(s, p, x, z);
    size_t k = s->layers[s->num_layers - 1].units;
    if (k == 1) /* -log sigmoid(z) or -log(1 - sigmoid(z)) */
        return y ? log1p(exp(-z[0])) : log1p(exp(z[0]));
    double mx = z[0], t = 0.0;
    for (size_t j = 1; j < k; j++)
        mx = fmax(mx, z[j]);
    for (size_t j = 0; j < k; j++)
        t += exp(z[j] - mx);
    return mx + log(t) - z[y];
}

/* ---- counts ---- */

Test(model, issue_cnn_has_12810_parameters_by_closed_form)
{
    fl_model_spec s = s_issue_cnn();
    fl_model *m = NULL;
    cr_assert_eq(fl_model_new(&m, &s), FL_OK, "%s", fl_error_last());
    /* conv 16 3 on 1 channel: 16 (1*9 + 1) = 160; 26x26 -> pool 13x13;
     * conv 32 3 on 16: 32 (16*9 + 1) = 4640; 11x11 -> pool 5x5;
     * dense 10 on 32*5*5 = 800: 10 (800 + 1) = 8010. */
    cr_assert_eq(fl_model_num_params(m), 160u + 4640u + 8010u);
    cr_assert_eq(fl_model_num_params(m), 12810u);
    cr_assert_eq(fl_model_num_inputs(m), 784u);
    cr_assert_eq(fl_model_num_outputs(m), 10u);
    cr_assert_eq(fl_model_spec_of(m)->num_layers, 5u);
    fl_model_free(m);
    fl_model_free(NULL);
}

Test(model, tiny_cnn_counts_and_invalid_specs_are_refused)
{
    fl_model_spec a = s_tiny_a(), b = s_tiny_b();
    fl_model *m = NULL;
    cr_assert_eq(fl_model_new(&m, &a), FL_OK, "%s", fl_error_last());
    /* 4 (9 + 1) + 4 (4*4 + 1) + 5 (4*2*2 + 1) + 3 (5 + 1) = 40 + 68 + 85 + 18 */
    cr_assert_eq(fl_model_num_params(m), 211u);
    fl_model_free(m);
    cr_assert_eq(fl_model_new(&m, &b), FL_OK, "%s", fl_error_last());
    /* conv 3 2 on 2 channels: 3 (2*4 + 1) = 27; dense 1 on 3: 4 */
    cr_assert_eq(fl_model_num_params(m), 31u);
    cr_assert_eq(fl_model_num_inputs(m), 50u);
    fl_model_free(m);

    fl_model_spec bad = s_tiny_a();
    bad.layers[4] = s_conv(2, 1); /* last layer must be dense */
    cr_assert_eq(fl_model_new(&m, &bad), FL_EINVAL);
    cr_assert_null(m);
    bad = s_tiny_a();
    bad.layers[0] = s_conv(4, 9); /* kernel larger than the 8x8 input */
    cr_assert_eq(fl_model_new(&m, &bad), FL_EINVAL);
}

Test(model, cnn_init_is_deterministic_he_and_glorot_bounded_with_zero_biases)
{
    fl_model_spec s = s_issue_cnn();
    fl_model *m1 = s_new(&s, 3), *m2 = s_new(&s, 3), *m3 = s_new(&s, 4);
    size_t P = fl_model_num_params(m1);
    cr_assert_eq(memcmp(fl_model_params(m1), fl_model_params(m2), P * sizeof(float)), 0);
    cr_assert_neq(memcmp(fl_model_params(m1), fl_model_params(m3), P * sizeof(float)), 0);
    const float *p = fl_model_params(m1);
    /* (offset, weights, outputs, limit): He sqrt(6/fan_in), Glorot for the last */
    struct {
        size_t off, nw, nb;
        double lim;
    } L[3] = {{0, 144, 16, sqrt(6.0 / 9)},
              {160, 4608, 32, sqrt(6.0 / 144)},
              {4800, 8000, 10, sqrt(6.0 / 810)}};
    for (int l = 0; l < 3; l++) {
        double mx = 0.0;
        for (size_t i = 0; i < L[l].nw; i++)
            mx = fmax(mx, fabs((double)p[L[l].off + i]));
        cr_assert_leq(mx, L[l].lim, "layer %d max %g > %g", l, mx, L[l].lim);
        cr_assert_geq(mx, 0.9 * L[l].lim, "layer %d max %g far below %g", l, mx, L[l].lim);
        for (size_t i = 0; i < L[l].nb; i++)
            cr_assert_eq(p[L[l].off + L[l].nw + i], 0.0f);
    }
    fl_model_free(m1);
    fl_model_free(m2);
    fl_model_free(m3);
}

/* ---- gradients against finite differences ---- */

static void s_check_fd(const fl_model_spec *s, size_t n)
{
    fl_model *m = s_new(s, 11);
    size_t P = fl_model_num_params(m), d = fl_model_num_inputs(m);
    size_t K = s->output_kind == 1 ? 2 : s->layers[s->num_layers - 1].units;
    float *w = fl_model_params(m);
    for (size_t j = 0; j < P; j++) /* non-zero biases too */
        if (w[j] == 0.0f)
            w[j] = 0.1f * s_unif();
    float *X = s_randv(n * d, 1.0f);
    int32_t *y = malloc(n * sizeof *y);
    float *g = malloc(P * sizeof *g);
    double *pd = malloc(P * sizeof *pd);
    cr_assert(y && g && pd);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(s_next() % K);
    double loss = 0.0;
    cr_assert_eq(fl_model_gradient(m, X, y, n, g, &loss), FL_OK, "%s", fl_error_last());
    for (size_t j = 0; j < P; j++)
        pd[j] = w[j];
    double ref_loss = 0.0;
    for (size_t i = 0; i < n; i++)
        ref_loss += s_ref_loss(s, pd, X + i * d, y[i]);
    cr_assert_float_eq(loss, ref_loss, 1e-4 * (1.0 + fabs(ref_loss)));
    const double hstep = 1e-6;
    for (size_t j = 0; j < P; j++) {
        double keep = pd[j], lp = 0.0, lm = 0.0;
        pd[j] = keep + hstep;
        for (size_t i = 0; i < n; i++)
            lp += s_ref_loss(s, pd, X + i * d, y[i]);
        pd[j] = keep - hstep;
        for (size_t i = 0; i < n; i++)
            lm += s_ref_loss(s, pd, X + i * d, y[i]);
        pd[j] = keep;
        double fd = (lp - lm) / (2 * hstep);
        cr_assert(fabs((double)g[j] - fd) <= 1e-4 + 1e-3 * fabs(fd),
                  "param %zu: model %.8g, finite difference %.8g", j, (double)g[j], fd);
    }
    free(X), free(y), free(g), free(pd);
    fl_model_free(m);
}

Test(model, cnn_softmax_gradient_matches_central_finite_differences)
{
    fl_model_spec s = s_tiny_a();
    s_check_fd(&s, 5);
}

Test(model, two_fused_cropped_blocks_gradient_matches_central_finite_differences)
{
    fl_model_spec s = s_tiny_c();
    s_check_fd(&s, 6);
}

Test(model, conv_feeding_a_fused_block_gradient_matches_central_finite_differences)
{
    /* 8x8x1 -> conv 2 3 (6x6; not fused: a conv follows) -> conv 3 2 +
     * pool (fused: 4x4 of its 5x5 outputs pooled to 2x2, reading 5x5 of
     * the first conv's 6x6 outputs, whose ReLU the block's input gradient
     * must pass through) -> dense 2 (sigmoid) */
    fl_model_spec s = {.in_c = 1, .in_h = 8, .in_w = 8, .output_kind = 1, .num_layers = 4};
    s.layers[0] = s_conv(2, 3);
    s.layers[1] = s_conv(3, 2);
    s.layers[2] = s_pool();
    s.layers[3] = s_dense(1);
    s_check_fd(&s, 6);
}

Test(model, pool_first_sigmoid_cnn_gradient_matches_central_finite_differences)
{
    fl_model_spec s = s_tiny_b();
    s_check_fd(&s, 6);
}

Test(model, predict_and_evaluate_match_the_reference_forward_pass)
{
    fl_model_spec s = s_tiny_a();
    fl_model *m = s_new(&s, 5);
    size_t P = fl_model_num_params(m), d = 64, n = 7;
    float *X = s_randv(n * d, 1.0f), probs[7 * 3], probs2[7 * 3];
    int32_t y[7] = {0, 1, 2, 0, 1, 2, 0};
    double *pd = malloc(P * sizeof *pd), ref = 0.0, mean = 0.0;
    for (size_t j = 0; j < P; j++)
        pd[j] = fl_model_params(m)[j];
    cr_assert_eq(fl_model_predict(m, X, n, probs), FL_OK);
    cr_assert_eq(fl_model_evaluate(m, X, y, n, &mean, probs2), FL_OK);
    for (size_t i = 0; i < n; i++) {
        double z[3], mx, t = 0.0;
        s_ref_logits(&s, pd, X + i * d, z);
        mx = fmax(fmax(z[0], z[1]), z[2]);
        for (int j = 0; j < 3; j++)
            t += exp(z[j] - mx);
        for (int j = 0; j < 3; j++) {
            cr_assert_float_eq(probs[i * 3 + j], exp(z[j] - mx) / t, 1e-5);
            cr_assert_eq(probs[i * 3 + j], probs2[i * 3 + j]);
        }
        ref += s_ref_loss(&s, pd, X + i * d, y[i]);
    }
    cr_assert_float_eq(mean, ref / (double)n, 1e-5);
    cr_assert_eq(fl_model_evaluate(m, X, y, 0, &mean, NULL), FL_EINVAL);
    cr_assert_eq(fl_model_predict(m, X, 0, NULL), FL_OK);
    free(X), free(pd);
    fl_model_free(m);
}

/* ---- per-example norms and clipping against explicit gradients ---- */

/* Gradients of each example on its own (n x P) via fl_model_gradient. */
static float *s_explicit(fl_model *m, const float *X, const int32_t *y, size_t n)
{
    size_t P = fl_model_num_params(m), d = fl_model_num_inputs(m);
    float *G = malloc(n * P * sizeof *G);
    cr_assert_not_null(G);
    for (size_t i = 0; i < n; i++) {
        double l;
        cr_assert_eq(fl_model_gradient(m, X + i * d, y + i, 1, G + i * P, &l), FL_OK);
    }
    return G;
}

Test(model, example_norms_match_explicit_gradients_with_ghost_and_explicit_conv_norms)
{
    /* The two conv layers of tiny CNN A take the two methods of
     * FL_CONV_NORM_AUTO; check that with layers of the same geometry. */
    fl_conv2d *c1 = NULL, *c2 = NULL;
    cr_assert_eq(fl_conv2d_new(&c1, 1, 4, 3, 8, 8), FL_OK);
    cr_assert_eq(fl_conv2d_new(&c2, 4, 4, 2, 3, 3), FL_OK);
    cr_assert_eq(fl_conv2d_norm_choice(c1), FL_CONV_NORM_EXPLICIT);
    cr_assert_eq(fl_conv2d_norm_choice(c2), FL_CONV_NORM_GHOST);
    fl_conv2d_free(c1);
    fl_conv2d_free(c2);

    fl_model_spec specs[3] = {s_tiny_a(), s_tiny_b(), s_tiny_c()};
    for (int t = 0; t < 3; t++) {
        fl_model *m = s_new(&specs[t], 21);
        size_t n = 150, P = fl_model_num_params(m), d = fl_model_num_inputs(m);
        size_t K = t == 1 ? 2 : 3;
        float *X = s_randv(n * d, 1.0f);
        int32_t *y = malloc(n * sizeof *y);
        double *nr = malloc(n * sizeof *nr);
        for (size_t i = 0; i < n; i++)
            y[i] = (int32_t)(s_next() % K);
        float *G = s_explicit(m, X, y, n);
        cr_assert_eq(fl_model_example_norms(m, X, y, n, nr), FL_OK, "%s", fl_error_last());
        for (size_t i = 0; i < n; i++) {
            double ss = 0.0;
            for (size_t j = 0; j < P; j++)
                ss += (double)G[i * P + j] * G[i * P + j];
            cr_assert(fabs(nr[i] - sqrt(ss)) <= 1e-5 + 1e-4 * sqrt(ss),
                      "spec %d example %zu: norm %.8g, explicit %.8g", t, i, nr[i], sqrt(ss));
        }
        free(X), free(y), free(nr), free(G);
        fl_model_free(m);
    }
}

/* Reference: clip each explicit row (rule of fl_dp_clip_rows) and sum in
 * double; returns the number clipped. */
static size_t s_ref_clipped_sum(const float *G, size_t n, size_t P, double C, double *sum)
{
    size_t cnt = 0;
    for (size_t j = 0; j < P; j++)
        sum[j] = 0.0;
    for (size_t i = 0; i < n; i++) {
        double ss = 0.0;
        int fin = 1;
        for (size_t j = 0; j < P; j++) {
            fin &= isfinite(G[i * P + j]);
            ss += (double)G[i * P + j] * G[i * P + j];
        }
        if (!fin) {
            cnt++;
            continue;
        }
        double f = 1.0, norm = sqrt(ss);
        if (norm > C) {
            f = C / norm * (1.0 - 1e-6);
            cnt++;
        }
        for (size_t j = 0; j < P; j++)
            sum[j] += f * G[i * P + j];
    }
    return cnt;
}

static int s_cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void s_check_clipped(const fl_model_spec *s, size_t n, int with_nan)
{
    fl_model *m = s_new(s, 31);
    size_t P = fl_model_num_params(m), d = fl_model_num_inputs(m);
    size_t K = s->output_kind == 1 ? 2 : s->layers[s->num_layers - 1].units;
    float *X = s_randv(n * d, 1.0f);
    int32_t *y = malloc(n * sizeof *y);
    double *nr = malloc(n * sizeof *nr), *ref = malloc(P * sizeof *ref);
    float *g = malloc(P * sizeof *g);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(s_next() % K);
    cr_assert_eq(fl_model_example_norms(m, X, y, n, nr), FL_OK);
    qsort(nr, n, sizeof *nr, s_cmpd);
    /* about half the examples are clipped; C lies between two norms so
     * rounding cannot decide on which side an example falls */
    double C = 0.5 * (nr[n / 2 - 1] + nr[n / 2]);
    if (with_nan) { /* examples 3 and n-2 (a later chunk when n > FL_MODEL_CHUNK) */
        X[3 * d + 1] = NAN;
        X[(n - 2) * d] = INFINITY;
    }
    float *G = s_explicit(m, X, y, n);
    size_t want = s_ref_clipped_sum(G, n, P, C, ref), got = 0;
    double loss = 0.0;
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, n, C, g, &got, &loss), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(got, want);
    cr_assert_geq(want, n / 3);
    double err = 0.0;
    for (size_t j = 0; j < P; j++) {
        cr_assert(isfinite(g[j]));
        err += (g[j] - ref[j]) * (g[j] - ref[j]);
    }
    cr_assert_leq(sqrt(err), 1e-5 * (double)n * C, "||clipped - reference|| = %g (C = %g)",
                  sqrt(err), C);
    if (!with_nan) {
        double l2 = 0.0;
        float *g2 = malloc(P * sizeof *g2);
        cr_assert_eq(fl_model_gradient(m, X, y, n, g2, &l2), FL_OK);
        cr_assert_float_eq(loss, l2, 1e-9 * (1.0 + fabs(l2)));
        /* with a clip norm above every example's norm nothing is clipped
         * and the result is the plain batch gradient */
        cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, n, 1e30, g, &got, NULL), FL_OK);
        cr_assert_eq(got, 0u);
        for (size_t j = 0; j < P; j++)
            cr_assert(fabs(g[j] - g2[j]) <= 1e-5 * (1.0 + fabs(g2[j])));
        free(g2);
    }
    free(X), free(y), free(nr), free(ref), free(g), free(G);
    fl_model_free(m);
}

Test(model, clipped_sum_equals_clipping_explicit_gradients_then_summing)
{
    fl_model_spec a = s_tiny_a(), b = s_tiny_b(), c = s_tiny_c();
    s_check_clipped(&a, 40, 0);
    s_check_clipped(&b, 40, 0);
    s_check_clipped(&c, 40, 0);
}

Test(model, clipped_sum_over_several_chunks_zeroes_non_finite_examples)
{
    fl_model_spec a = s_tiny_a(), b = s_tiny_b(), c = s_tiny_c();
    s_check_clipped(&a, 2 * FL_MODEL_CHUNK + 37, 1);
    s_check_clipped(&b, FL_MODEL_CHUNK + 5, 1);
    s_check_clipped(&c, 3 * FL_MODEL_CHUNK + 3, 1);
}

static int s_no_hook(void *ctx)
{
    (void)ctx;
    return FL_OK;
}

/* The CNN split of node/fl_trainer adds chunks' clipped sums with
 * accumulate: the parts must add up to the call over all rows (3 classes). */
static void s_check_accumulate(const fl_model_spec *sp)
{
    fl_model_spec s = *sp;
    fl_model *m = s_new(&s, 51);
    size_t P = fl_model_num_params(m), d = fl_model_num_inputs(m), n = 50;
    float *X = s_randv(n * d, 1.0f), *whole = malloc(P * sizeof *whole);
    float *parts = malloc(P * sizeof *parts);
    int32_t *y = malloc(n * sizeof *y);
    cr_assert(whole && parts && y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(s_next() % 3);
    size_t cw = 0, c1 = 0, c2 = 0;
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, n, 0.5, whole, &cw, NULL), FL_OK);
    cr_assert_gt(cw, 0u);
    const fl_mlp_sum_opts add = {.accumulate = 1};
    for (size_t j = 0; j < P; j++)
        parts[j] = 0.0f;
    cr_assert_eq(fl_model_clipped_gradient_sum_ex(m, X, y, 17, 0.5, parts, &c1, NULL, &add),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_model_clipped_gradient_sum_ex(m, X + 17 * d, y + 17, n - 17, 0.5, parts,
                                                  &c2, NULL, &add),
                 FL_OK);
    cr_assert_eq(c1 + c2, cw);
    for (size_t j = 0; j < P; j++)
        cr_assert(fabs(parts[j] - whole[j]) <= 1e-5 * (1.0 + fabs(whole[j])),
                  "param %zu: parts %g, whole %g", j, parts[j], whole[j]);
    /* without accumulate the second part overwrites */
    cr_assert_eq(fl_model_clipped_gradient_sum_ex(m, X + 17 * d, y + 17, n - 17, 0.5, parts,
                                                  NULL, NULL, NULL),
                 FL_OK);
    double diff = 0.0;
    for (size_t j = 0; j < P; j++)
        diff += fabs(parts[j] - whole[j]);
    cr_assert_gt(diff, 1e-3);
    const fl_mlp_sum_opts hook = {.before_write = s_no_hook};
    cr_assert_eq(fl_model_clipped_gradient_sum_ex(m, X, y, n, 0.5, parts, NULL, NULL, &hook),
                 FL_EINVAL);
    free(X), free(whole), free(parts), free(y);
    fl_model_free(m);
}

Test(model, accumulated_clipped_sums_of_parts_equal_the_whole_and_before_write_is_refused)
{
    fl_model_spec a = s_tiny_a(), c = s_tiny_c(); /* an unfused conv; fused blocks only */
    s_check_accumulate(&a);
    s_check_accumulate(&c);
}

Test(model, conv_layer_too_large_to_keep_example_gradients_still_clips_exactly)
{
    /* conv 128 3 on 16x16x64: T = 196, so 2 T^2 = 76832 >= C_in k^2 C_out =
     * 73728 (explicit norms), but its 73856 parameters exceed the 65536
     * floats a row of the per-example gradient store may hold, so
     * fl_model falls back to
     * fl_conv2d_example_sq_norms and a second pass over scaled deltas. */
    fl_conv2d *c = NULL;
    cr_assert_eq(fl_conv2d_new(&c, 64, 128, 3, 16, 16), FL_OK);
    cr_assert_eq(fl_conv2d_norm_choice(c), FL_CONV_NORM_EXPLICIT);
    fl_conv2d_free(c);
    fl_model_spec s = {.in_c = 64, .in_h = 16, .in_w = 16, .output_kind = 2, .num_layers = 2};
    s.layers[0] = s_conv(128, 3);
    s.layers[1] = s_dense(2);
    s_check_clipped(&s, 6, 0);
}

Test(model, batch_gradient_over_several_chunks_is_the_sum_of_example_gradients)
{
    fl_model_spec a = s_tiny_a();
    fl_model *m = s_new(&a, 41);
    size_t n = 2 * FL_MODEL_CHUNK + 9, P = fl_model_num_params(m), d = 64;
    float *X = s_randv(n * d, 1.0f), *g = malloc(P * sizeof *g);
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(s_next() % 3);
    float *G = s_explicit(m, X, y, n);
    double loss;
    cr_assert_eq(fl_model_gradient(m, X, y, n, g, &loss), FL_OK);
    for (size_t j = 0; j < P; j++) {
        double s = 0.0, sa = 0.0;
        for (size_t i = 0; i < n; i++)
            s += G[i * P + j], sa += fabs(G[i * P + j]);
        cr_assert(fabs(g[j] - s) <= 1e-5 * (1.0 + sa), "param %zu: %g vs %g", j, g[j], s);
    }
    free(X), free(g), free(y), free(G);
    fl_model_free(m);
}

Test(model, bad_arguments_are_errors_and_zero_the_gradient)
{
    fl_model_spec a = s_tiny_a();
    fl_model *m = s_new(&a, 2);
    size_t P = fl_model_num_params(m);
    float X[2 * 64] = {0}, *g = malloc(P * sizeof *g);
    int32_t y[2] = {0, 3};
    double loss = 1.0, nr[2];
    size_t cl = 9;
    for (size_t j = 0; j < P; j++)
        g[j] = 1.0f;
    cr_assert_eq(fl_model_gradient(m, X, y, 2, g, &loss), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "y[1] = 3") != NULL, "%s", fl_error_last());
    for (size_t j = 0; j < P; j++)
        cr_assert_eq(g[j], 0.0f);
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, 2, 1.0, g, &cl, NULL), FL_EINVAL);
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, 1, NAN, g, &cl, NULL), FL_EINVAL);
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, 1, 0.0, g, &cl, NULL), FL_EINVAL);
    cr_assert_eq(fl_model_example_norms(m, X, y, 2, nr), FL_EINVAL);
    cr_assert_eq(fl_model_gradient(m, NULL, y, 1, g, &loss), FL_EINVAL);
    cr_assert_eq(fl_model_gradient(m, X, y, 0, g, &loss), FL_OK);
    cr_assert_eq(loss, 0.0);
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, 0, 1.0, g, &cl, &loss), FL_OK);
    cr_assert_eq(cl, 0u);
    free(g);
    fl_model_free(m);
}

/* ---- the MLP path is fl_mlp ---- */

static void s_check_mlp_identical(const uint32_t *sizes, size_t ns, uint32_t kind)
{
    fl_model_spec s;
    fl_model *m = NULL;
    fl_mlp *r = NULL;
    cr_assert_eq(fl_model_spec_from_sizes(&s, sizes, ns, kind), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_model_new(&m, &s), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_mlp_new(&r, sizes, ns, (fl_mlp_output)kind), FL_OK);
    unsigned char seed[32] = {9, 8, 7};
    fl_model_init(m, seed);
    fl_mlp_init(r, seed);
    size_t P = fl_mlp_num_params(r), d = sizes[0], K = sizes[ns - 1], n = 300;
    cr_assert_eq(fl_model_num_params(m), P);
    cr_assert_eq(fl_model_num_inputs(m), d);
    cr_assert_eq(fl_model_num_outputs(m), K);
    cr_assert_eq(memcmp(fl_model_params(m), fl_mlp_params(r), P * sizeof(float)), 0);
    float *X = s_randv(n * d, 1.0f);
    int32_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(s_next() % (K == 1 ? 2 : K));
    float *g1 = malloc(P * sizeof *g1), *g2 = malloc(P * sizeof *g2);
    float *p1 = malloc(n * K * sizeof *p1), *p2 = malloc(n * K * sizeof *p2);
    double l1, l2, *n1 = malloc(n * sizeof *n1), *n2 = malloc(n * sizeof *n2);
    size_t c1, c2;
    cr_assert_eq(fl_model_gradient(m, X, y, n, g1, &l1), FL_OK);
    cr_assert_eq(fl_mlp_gradient(r, X, y, n, g2, &l2), FL_OK);
    cr_assert_eq(memcmp(g1, g2, P * sizeof *g1), 0);
    cr_assert_eq(memcmp(&l1, &l2, sizeof l1), 0);
    cr_assert_eq(fl_model_clipped_gradient_sum(m, X, y, n, 0.05, g1, &c1, &l1), FL_OK);
    cr_assert_eq(fl_mlp_clipped_gradient_sum(r, X, y, n, 0.05, g2, &c2, &l2), FL_OK);
    cr_assert_eq(memcmp(g1, g2, P * sizeof *g1), 0);
    cr_assert_eq(c1, c2);
    cr_assert_eq(fl_model_example_norms(m, X, y, n, n1), FL_OK);
    cr_assert_eq(fl_mlp_example_norms(r, X, y, n, n2), FL_OK);
    cr_assert_eq(memcmp(n1, n2, n * sizeof *n1), 0);
    cr_assert_eq(fl_model_predict(m, X, n, p1), FL_OK);
    cr_assert_eq(fl_mlp_predict(r, X, n, p2), FL_OK);
    cr_assert_eq(memcmp(p1, p2, n * K * sizeof *p1), 0);
    cr_assert_eq(fl_model_evaluate(m, X, y, n, &l1, p1), FL_OK);
    cr_assert_eq(fl_mlp_evaluate(r, X, y, n, &l2, p2), FL_OK);
    cr_assert_eq(memcmp(&l1, &l2, sizeof l1), 0);
    free(X), free(y), free(g1), free(g2), free(p1), free(p2), free(n1), free(n2);
    fl_model_free(m);
    fl_mlp_free(r);
}

Test(model, mlp_spec_runs_fl_mlp_bit_for_bit)
{
    static const uint32_t a[] = {30, 16, 8, 1}, b[] = {20, 12, 4};
    s_check_mlp_identical(a, 4, FL_MLP_OUT_SIGMOID_BCE);
    s_check_mlp_identical(b, 3, FL_MLP_OUT_SOFTMAX_CE);
}

/* ---- real data ---- */

Test(model, cnn_learns_fashion_mnist_well_above_chance, .timeout = 240)
{
    fl_dataset *tr = NULL, *te = NULL;
    cr_assert_eq(fl_dataset_load_idx(&tr, FASHION_DIR "/train-images-idx3-ubyte.gz",
                                     FASHION_DIR "/train-labels-idx1-ubyte.gz", 0, 6000),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_dataset_load_idx(&te, FASHION_DIR "/t10k-images-idx3-ubyte.gz",
                                     FASHION_DIR "/t10k-labels-idx1-ubyte.gz", 0, 1000),
                 FL_OK, "%s", fl_error_last());
    fl_model_spec s = s_issue_cnn();
    fl_model *m = s_new(&s, 1);
    size_t P = fl_model_num_params(m), d = 784, B = 32, steps = 300;
    float *g = malloc(P * sizeof *g), *xb = malloc(B * d * sizeof *xb);
    float *probs = malloc(te->n * 10 * sizeof *probs), *w = fl_model_params(m);
    int32_t yb[32];
    double loss0 = 0.0, loss = 0.0, t0 = (double)clock() / CLOCKS_PER_SEC;
    cr_assert_eq(fl_model_evaluate(m, te->X, te->y, te->n, &loss0, NULL), FL_OK);
    for (size_t st = 0; st < steps; st++) {
        for (size_t i = 0; i < B; i++) {
            size_t r = s_next() % tr->n;
            memcpy(xb + i * d, tr->X + r * d, d * sizeof(float));
            yb[i] = tr->y[r];
        }
        cr_assert_eq(fl_model_gradient(m, xb, yb, B, g, &loss), FL_OK, "%s", fl_error_last());
        for (size_t j = 0; j < P; j++)
            w[j] -= 0.05f / (float)B * g[j];
    }
    cr_assert_eq(fl_model_evaluate(m, te->X, te->y, te->n, &loss, probs), FL_OK);
    size_t right = 0;
    for (size_t i = 0; i < te->n; i++) {
        size_t best = 0;
        for (size_t j = 1; j < 10; j++)
            if (probs[i * 10 + j] > probs[i * 10 + best])
                best = j;
        right += best == (size_t)te->y[i];
    }
    double acc = (double)right / (double)te->n;
    cr_log_info("Fashion-MNIST: %zu steps of %zu, held-out loss %.3f -> %.3f, accuracy %.3f, "
                "%.1f s CPU", steps, B, loss0, loss, acc,
                (double)clock() / CLOCKS_PER_SEC - t0);
    /* chance is 0.1; a linear model reaches ~0.8 after many epochs */
    cr_assert_geq(acc, 0.6, "held-out accuracy %.3f", acc);
    cr_assert_lt(loss, loss0);
    free(g), free(xb), free(probs);
    fl_model_free(m);
    fl_dataset_free(tr);
    fl_dataset_free(te);
}
