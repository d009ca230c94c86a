/* Tests for fl_conv: the forward pass against a direct (seven-loop, double)
 * convolution written here; every gradient against central finite
 * differences of the forward pass; max-pooling against hand-worked
 * windows; ghost per-example norms against explicit ones, and explicit
 * ones against single-example batch gradients. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fl_conv.h"

/* Deterministic uniforms in [-1, 1) from a 64-bit LCG (Knuth MMIX). */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float s_unif(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *s_rand(size_t n)
{
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = s_unif();
    return p;
}

typedef struct {
    size_t cin, cout, k, h, w, n;
} s_geom;

/* Direct convolution in double, straight from the definition
 * y[i][o][y][x] = b[o] + sum_{c,u,v} W[o][c][u][v] x[i][c][y+u][x+v]. */
static void s_direct(const s_geom *g, const float *W, const float *b, const float *X,
                     double *Y)
{
    size_t ho = g->h - g->k + 1, wo = g->w - g->k + 1;
    for (size_t i = 0; i < g->n; i++)
        for (size_t o = 0; o < g->cout; o++)
            for (size_t y = 0; y < ho; y++)
                for (size_t x = 0; x < wo; x++) {
                    double s = b ? b[o] : 0.0;
                    for (size_t c = 0; c < g->cin; c++)
                        for (size_t u = 0; u < g->k; u++)
                            for (size_t v = 0; v < g->k; v++)
                                s += (double)W[((o * g->cin + c) * g->k + u) * g->k + v] *
                                     X[((i * g->cin + c) * g->h + y + u) * g->w + x + v];
                    Y[((i * g->cout + o) * ho + y) * wo + x] = s;
                }
}

static fl_conv2d *s_layer(const s_geom *g)
{
    fl_conv2d *c = NULL;
    cr_assert_eq(fl_conv2d_new(&c, g->cin, g->cout, g->k, g->h, g->w), FL_OK, "%s",
                 fl_error_last());
    return c;
}

static const s_geom GEOMS[] = {
    {1, 4, 3, 8, 8, 3}, {4, 8, 3, 6, 6, 2}, {2, 3, 1, 5, 4, 2},
    {3, 2, 4, 4, 4, 2}, /* kernel as large as the input: one output */
    {2, 5, 2, 7, 5, 1}, /* non-square input */
};
#define NGEOMS (sizeof GEOMS / sizeof GEOMS[0])

Test(conv, forward_matches_direct_convolution)
{
    for (size_t gi = 0; gi < NGEOMS; gi++) {
        const s_geom *g = &GEOMS[gi];
        fl_conv2d *c = s_layer(g);
        size_t ho = fl_conv2d_out_h(c), wo = fl_conv2d_out_w(c);
        cr_assert_eq(ho, g->h - g->k + 1);
        cr_assert_eq(wo, g->w - g->k + 1);
        cr_assert_eq(fl_conv2d_num_weights(c), g->cout * g->cin * g->k * g->k);
        size_t ny = g->n * g->cout * ho * wo;
        float *W = s_rand(fl_conv2d_num_weights(c)), *b = s_rand(g->cout);
        float *X = s_rand(g->n * g->cin * g->h * g->w), *Y = malloc(ny * sizeof *Y);
        double *ref = malloc(ny * sizeof *ref);
        for (int with_b = 0; with_b < 2; with_b++) {
            cr_assert_eq(fl_conv2d_forward(c, W, with_b ? b : NULL, X, g->n, Y), FL_OK);
            s_direct(g, W, with_b ? b : NULL, X, ref);
            for (size_t j = 0; j < ny; j++)
                cr_assert(fabs(Y[j] - ref[j]) <= 1e-5 + 1e-5 * fabs(ref[j]),
                          "geom %zu out %zu: %g vs %g", gi, j, (double)Y[j], ref[j]);
        }
        free(W), free(b), free(X), free(Y), free(ref);
        fl_conv2d_free(c);
    }
    fl_conv2d_free(NULL);
}

/* L = sum_j R[j] Y[j] computed in double from the layer's forward pass, so
 * dL/dY = R. */
static double s_loss(fl_conv2d *c, const s_geom *g, const float *W, const float *b,
                     const float *X, const float *R, float *Y)
{
    cr_assert_eq(fl_conv2d_forward(c, W, b, X, g->n, Y), FL_OK);
    size_t ny = g->n * g->cout * fl_conv2d_out_h(c) * fl_conv2d_out_w(c);
    double s = 0.0;
    for (size_t j = 0; j < ny; j++)
        s += (double)R[j] * Y[j];
    return s;
}

/* Central difference of s_loss in p[j] with step 1e-2.  The loss is linear
 * in every parameter and input, so the difference has no truncation error;
 * what remains is float rounding of Y, about 1e-7 * sum |R Y| / 2e-2, well
 * under the 2e-3 absolute floor used below. */
static double s_fd(fl_conv2d *c, const s_geom *g, float *W, float *b, float *X,
                   const float *R, float *Y, float *p, size_t j)
{
    const float eps = 1e-2f;
    float keep = p[j];
    p[j] = keep + eps;
    double lp = s_loss(c, g, W, b, X, R, Y);
    p[j] = keep - eps;
    double lm = s_loss(c, g, W, b, X, R, Y);
    p[j] = keep;
    return (lp - lm) / (2.0 * (double)eps);
}

static void s_close(double got, double want, const char *what, size_t gi, size_t j)
{
    cr_assert(fabs(got - want) <= 2e-3 + 1e-3 * fabs(want), "geom %zu %s[%zu]: %g vs fd %g",
              gi, what, j, got, want);
}

Test(conv, backward_gradients_match_central_differences)
{
    for (size_t gi = 0; gi < NGEOMS; gi++) {
        const s_geom *g = &GEOMS[gi];
        fl_conv2d *c = s_layer(g);
        size_t nw = fl_conv2d_num_weights(c), nx = g->n * g->cin * g->h * g->w;
        size_t ny = g->n * g->cout * fl_conv2d_out_h(c) * fl_conv2d_out_w(c);
        float *W = s_rand(nw), *b = s_rand(g->cout), *X = s_rand(nx), *R = s_rand(ny);
        float *Y = malloc(ny * sizeof *Y), *dX = malloc(nx * sizeof *dX);
        float *dW = malloc(nw * sizeof *dW), *db = malloc(g->cout * sizeof *db);
        cr_assert_eq(fl_conv2d_backward(c, W, X, R, g->n, dX, dW, db), FL_OK, "%s",
                     fl_error_last());
        for (size_t j = 0; j < nx; j++)
            s_close(dX[j], s_fd(c, g, W, b, X, R, Y, X, j), "dX", gi, j);
        for (size_t j = 0; j < nw; j++)
            s_close(dW[j], s_fd(c, g, W, b, X, R, Y, W, j), "dW", gi, j);
        for (size_t j = 0; j < g->cout; j++)
            s_close(db[j], s_fd(c, g, W, b, X, R, Y, b, j), "db", gi, j);
        /* Outputs may be skipped, and the others do not change. */
        float *dW2 = malloc(nw * sizeof *dW2);
        cr_assert_eq(fl_conv2d_backward(c, NULL, X, R, g->n, NULL, dW2, NULL), FL_OK);
        cr_assert_arr_eq(dW2, dW, nw * sizeof *dW);
        free(W), free(b), free(X), free(R), free(Y), free(dX), free(dW), free(db), free(dW2);
        fl_conv2d_free(c);
    }
}

Test(conv, rejects_bad_geometry_and_null_buffers)
{
    fl_conv2d *c = (fl_conv2d *)1;
    cr_assert_eq(fl_conv2d_new(&c, 0, 1, 1, 4, 4), FL_EINVAL);
    cr_assert_null(c);
    cr_assert_eq(fl_conv2d_new(&c, 1, 1, 5, 4, 8), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "larger than"), "%s", fl_error_last());
    cr_assert_eq(fl_conv2d_new(&c, 1, 1, 3, 4, 4), FL_OK);
    float w[9] = {0}, x[16] = {0}, y[4];
    cr_assert_eq(fl_conv2d_forward(c, w, NULL, NULL, 1, y), FL_EINVAL);
    cr_assert_eq(fl_conv2d_forward(c, NULL, NULL, NULL, 0, NULL), FL_OK);
    cr_assert_eq(fl_conv2d_backward(c, NULL, x, y, 1, x, NULL, NULL), FL_EINVAL);
    double sq[1];
    cr_assert_eq(fl_conv2d_example_sq_norms(c, x, y, 1, (fl_conv_norm)7, 0, sq), FL_EINVAL);
    cr_assert_eq(fl_conv2d_example_sq_norms(c, NULL, NULL, 0, FL_CONV_NORM_GHOST, 0, NULL),
                 FL_OK);
    fl_conv2d_free(c);
}

/* ------------------------------------------------------------------ */
/* Per-example norms                                                   */

/* ||dW_i||^2 (+ ||db_i||^2) from a batch gradient over example i alone. */
static double s_single_example_sq(fl_conv2d *c, const s_geom *g, const float *X,
                                  const float *D, size_t i, int with_bias)
{
    size_t nw = fl_conv2d_num_weights(c), nx = g->cin * g->h * g->w;
    size_t ny = g->cout * fl_conv2d_out_h(c) * fl_conv2d_out_w(c);
    float *dW = malloc(nw * sizeof *dW), db[64];
    cr_assert_leq(g->cout, 64);
    cr_assert_eq(fl_conv2d_backward(c, NULL, X + i * nx, D + i * ny, 1, NULL, dW, db), FL_OK);
    double s = 0.0;
    for (size_t j = 0; j < nw; j++)
        s += (double)dW[j] * dW[j];
    if (with_bias)
        for (size_t o = 0; o < g->cout; o++)
            s += (double)db[o] * db[o];
    free(dW);
    return s;
}

static void s_check_norms(const s_geom *g)
{
    fl_conv2d *c = s_layer(g);
    size_t nx = g->n * g->cin * g->h * g->w;
    size_t ny = g->n * g->cout * fl_conv2d_out_h(c) * fl_conv2d_out_w(c);
    float *X = s_rand(nx), *D = s_rand(ny);
    double ex[8], gh[8], au[8];
    cr_assert_leq(g->n, 8);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        cr_assert_eq(fl_conv2d_example_sq_norms(c, X, D, g->n, FL_CONV_NORM_EXPLICIT,
                                                with_bias, ex),
                     FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_conv2d_example_sq_norms(c, X, D, g->n, FL_CONV_NORM_GHOST, with_bias,
                                                gh),
                     FL_OK, "%s", fl_error_last());
        cr_assert_eq(
            fl_conv2d_example_sq_norms(c, X, D, g->n, FL_CONV_NORM_AUTO, with_bias, au), FL_OK);
        for (size_t i = 0; i < g->n; i++) {
            double ref = s_single_example_sq(c, g, X, D, i, with_bias);
            cr_assert(ref > 0.0);
            cr_assert(fabs(ex[i] - ref) <= 1e-5 * ref, "explicit %zu: %.9g vs %.9g", i, ex[i],
                      ref);
            cr_assert(fabs(gh[i] - ex[i]) <= 1e-4 * ex[i], "ghost %zu: %.9g vs explicit %.9g",
                      i, gh[i], ex[i]);
            double want = fl_conv2d_norm_choice(c) == FL_CONV_NORM_GHOST ? gh[i] : ex[i];
            cr_assert_eq(au[i], want, "auto %zu", i);
        }
    }
    free(X), free(D);
    fl_conv2d_free(c);
}

Test(conv, ghost_norms_equal_explicit_norms_1_to_4_channels_3x3_on_8x8)
{
    s_check_norms(&(s_geom){1, 4, 3, 8, 8, 5});
}

Test(conv, ghost_norms_equal_explicit_norms_4_to_8_channels_3x3_on_6x6)
{
    s_check_norms(&(s_geom){4, 8, 3, 6, 6, 5});
}

Test(conv, ghost_norms_equal_explicit_norms_wide_layer_on_small_input)
{
    s_check_norms(&(s_geom){16, 32, 3, 5, 5, 5});
}

Test(conv, auto_choice_follows_the_mixed_ghost_clipping_rule)
{
    /* 1->4, 3x3 on 8x8: T = 36, 2 T^2 = 2592 >= 9 * 4 = 36: explicit. */
    fl_conv2d *c = s_layer(&(s_geom){1, 4, 3, 8, 8, 1});
    cr_assert_eq(fl_conv2d_norm_choice(c), FL_CONV_NORM_EXPLICIT);
    fl_conv2d_free(c);
    /* 16->32, 3x3 on 5x5: T = 9, 2 T^2 = 162 < 144 * 32 = 4608: ghost. */
    c = s_layer(&(s_geom){16, 32, 3, 5, 5, 1});
    cr_assert_eq(fl_conv2d_norm_choice(c), FL_CONV_NORM_GHOST);
    fl_conv2d_free(c);
    /* Boundary, k = 1 on 2x2 (T = 4, 2 T^2 = 32): 1->32 gives
     * C_in k^2 C_out = 32, not strictly more, so explicit; 1->33 ghost. */
    c = s_layer(&(s_geom){1, 32, 1, 2, 2, 1});
    cr_assert_eq(fl_conv2d_norm_choice(c), FL_CONV_NORM_EXPLICIT);
    fl_conv2d_free(c);
    c = s_layer(&(s_geom){1, 33, 1, 2, 2, 1});
    cr_assert_eq(fl_conv2d_norm_choice(c), FL_CONV_NORM_GHOST);
    fl_conv2d_free(c);
}

/* ------------------------------------------------------------------ */
/* Max-pooling                                                         */

Test(maxpool, forward_takes_each_window_max_and_drops_an_odd_edge)
{
    /* One 5x5 plane (the last row and column are dropped), worked by hand:
     * windows {1,7,3,2} {5,0,4,9} / {6,8,2,2} {3,3,1,1}. */
    const float X[25] = {1, 7, 5, 0, 99, /**/ 3, 2, 4, 9, 99, /**/ 6, 8, 3, 3, 99,
                         2, 2, 1, 1, 99, /**/ 99, 99, 99, 99, 99};
    float Y[4];
    size_t am[4];
    cr_assert_eq(fl_maxpool2_forward(X, 1, 1, 5, 5, Y, am), FL_OK);
    const float wantY[4] = {7, 9, 8, 3};
    const size_t wantA[4] = {1, 8, 11, 12}; /* ties (3,3 | 1,1): the first */
    for (int j = 0; j < 4; j++) {
        cr_assert_eq(Y[j], wantY[j], "Y[%d]", j);
        cr_assert_eq(am[j], wantA[j], "argmax[%d]", j);
    }
}

Test(maxpool, vector_rows_match_a_naive_window_scan_with_ties_and_nans)
{
    /* Widths 8..19 (odd ones drop an edge; 4-window SIMD blocks plus a
     * scalar tail), 2 planes, values drawn from only 5 levels so ties are
     * common, and some NaNs.  Reference: scan each window in the order
     * (0,0), (0,1), (1,0), (1,1) keeping the first strict maximum. */
    const float level[6] = {-1.0f, 0.0f, 0.5f, 2.0f, 0.5f, NAN};
    uint32_t x = 12345u;
    for (size_t w = 8; w <= 19; w++) {
        const size_t h = 7, P = 2, ho = h / 2, wo = w / 2;
        float X[2 * 7 * 19], Y[2 * 3 * 9];
        size_t am[2 * 3 * 9];
        for (size_t i = 0; i < P * h * w; i++) {
            x = x * 1664525u + 1013904223u;
            X[i] = level[(x >> 24) % 6];
        }
        cr_assert_eq(fl_maxpool2_forward(X, 1, P, h, w, Y, am), FL_OK);
        for (size_t p = 0; p < P; p++)
            for (size_t oy = 0; oy < ho; oy++)
                for (size_t ox = 0; ox < wo; ox++) {
                    size_t a = p * h * w + 2 * oy * w + 2 * ox;
                    const size_t cand[4] = {a, a + 1, a + w, a + w + 1};
                    size_t best = cand[0];
                    for (int q = 1; q < 4; q++)
                        if (X[cand[q]] > X[best])
                            best = cand[q];
                    size_t j = (p * ho + oy) * wo + ox;
                    cr_assert_eq(am[j], best, "w %zu plane %zu window (%zu,%zu)", w, p, oy, ox);
                    cr_assert(memcmp(&Y[j], &X[best], sizeof(float)) == 0,
                              "w %zu: Y[%zu] is not X[argmax]", w, j);
                }
    }
}

Test(maxpool, backward_routes_gradient_only_to_the_max)
{
    /* Batch 2, 3 channels, 4x6: distinct values (a permutation scaled by
     * 0.1), so every window has a unique max. */
    enum { N = 2, C = 3, H = 4, W = 6, NX = N * C * H * W, NY = N * C * (H / 2) * (W / 2) };
    float X[NX], Y[NY], dY[NY], dX[NX];
    size_t am[NY];
    for (int j = 0; j < NX; j++)
        X[j] = 0.1f * (float)((j * 37) % NX); /* 37 is coprime to 144 */
    for (int j = 0; j < NY; j++)
        dY[j] = s_unif();
    cr_assert_eq(fl_maxpool2_forward(X, N, C, H, W, Y, am), FL_OK);
    cr_assert_eq(fl_maxpool2_backward(dY, am, N, C, H, W, dX), FL_OK);
    int nonzero = 0;
    for (int p = 0; p < N * C; p++)
        for (int oy = 0; oy < H / 2; oy++)
            for (int ox = 0; ox < W / 2; ox++) {
                int j = (p * (H / 2) + oy) * (W / 2) + ox;
                for (int u = 0; u < 2; u++)
                    for (int v = 0; v < 2; v++) {
                        int xi = (p * H + 2 * oy + u) * W + 2 * ox + v;
                        int is_max = X[xi] == Y[j];
                        cr_assert_eq(dX[xi], is_max ? dY[j] : 0.0f, "x %d", xi);
                        nonzero += is_max;
                    }
            }
    cr_assert_eq(nonzero, NY);
    /* Central differences of L = sum dY . maxpool(X): with values 0.1 apart
     * a step of 1e-3 never changes a window's winner. */
    for (int xi = 0; xi < NX; xi++) {
        float keep = X[xi];
        double l[2];
        for (int s = 0; s < 2; s++) {
            X[xi] = keep + (s ? -1e-3f : 1e-3f);
            cr_assert_eq(fl_maxpool2_forward(X, N, C, H, W, Y, am), FL_OK);
            l[s] = 0.0;
            for (int j = 0; j < NY; j++)
                l[s] += (double)dY[j] * Y[j];
        }
        X[xi] = keep;
        double fd = (l[0] - l[1]) / (2.0 * (double)1e-3f);
        cr_assert(fabs(dX[xi] - fd) <= 1e-3 + 1e-3 * fabs(fd), "x %d: %g vs fd %g", xi,
                  (double)dX[xi], fd);
    }
}

Test(maxpool, rejects_tiny_input_and_foreign_argmax)
{
    float x[4] = {0}, y[1];
    size_t am[1] = {4};
    cr_assert_eq(fl_maxpool2_forward(x, 1, 1, 1, 4, y, am), FL_EINVAL);
    cr_assert_eq(fl_maxpool2_backward(y, am, 1, 1, 2, 2, x), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "argmax"), "%s", fl_error_last());
}
