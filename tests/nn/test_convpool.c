/* Tests for fl_convpool (conv + ReLU + 2x2 max-pool with a routed
 * backward pass) against a second implementation written here in double
 * straight from the definitions: the direct convolution, ReLU and the
 * first-strict-maximum pooling, and the dense backward pass (every
 * convolution output gets its gradient, zero unless it is its window's
 * argmax with a positive maximum).  Geometries cover the two CNN
 * layers with the cropping fl_model applies, the one-vector first-layer
 * kernel (16 and 32 channels), the generic paths (k = 2 and 4, channel
 * counts that are not multiples of 16, patch rows longer than 128 floats),
 * non-square inputs, and the NHWC layouts used between two blocks. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fl_convpool.h"
#include "nn/fl_convpool_internal.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static float s_unif(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *s_rand(size_t n, float scale)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * s_unif();
    return p;
}

typedef struct {
    size_t cin, cout, k, h, w, ph, pw, n;
    unsigned lay; /* FL_CONVPOOL_* layout flags */
} s_geom;

#define IN FL_CONVPOOL_IN_NHWC
#define OUT FL_CONVPOOL_OUT_NHWC
static const s_geom GEOMS[] = {
    {1, 16, 3, 28, 28, 12, 12, 5, OUT},     /* issue conv 1, cropped 26 -> 24 */
    {16, 32, 3, 12, 12, 5, 5, 4, IN},       /* issue conv 2, 10 of 11 rows pooled */
    {16, 32, 3, 12, 12, 5, 5, 2, 0},        /* the same, NCHW input */
    {1, 32, 3, 10, 9, 4, 3, 3, 0},          /* two 16-channel first-layer blocks */
    {2, 5, 2, 7, 9, 3, 4, 3, 0},            /* k = 2, 5 channels, non-square */
    {2, 5, 2, 7, 9, 3, 4, 2, IN | OUT},     /* the same between two blocks */
    {3, 17, 3, 9, 8, 3, 3, 2, OUT},         /* 17 channels: one past a block */
    {9, 4, 4, 11, 11, 4, 4, 2, 0},          /* k = 4: C_in k^2 = 144, generic patches */
    {20, 3, 3, 8, 8, 3, 3, 2, IN},          /* C_in k^2 = 180: 128 + 4 x 16 floats */
    {2, 48, 3, 9, 9, 3, 3, 3, 0},           /* 48 channels: 32 + 16; 108 rows: 8k + 4 */
};
#define NGEOMS (sizeof GEOMS / sizeof GEOMS[0])

/* Reference forward for row i: pooled outputs y (cout x ph x pw) and, per
 * output, the flat conv-output index (oy * (w-k+1) + ox) of its argmax. */
static void s_ref_forward(const s_geom *g, const float *W, const float *b, const float *x,
                          double *y, size_t *arg)
{
    size_t wo = g->w - g->k + 1;
    for (size_t o = 0; o < g->cout; o++)
        for (size_t py = 0; py < g->ph; py++)
            for (size_t px = 0; px < g->pw; px++) {
                double best = 0.0;
                size_t bi = 0;
                for (int q = 0; q < 4; q++) {
                    size_t oy = 2 * py + (size_t)(q / 2), ox = 2 * px + (size_t)(q % 2);
                    double s = b[o];
                    for (size_t c = 0; c < g->cin; c++)
                        for (size_t u = 0; u < g->k; u++)
                            for (size_t v = 0; v < g->k; v++)
                                s += (double)W[((o * g->cin + c) * g->k + u) * g->k + v] *
                                     x[(c * g->h + oy + u) * g->w + ox + v];
                    double r = s > 0.0 ? s : 0.0; /* ReLU, then the pool's max */
                    if (q == 0 || r > best)
                        best = r, bi = oy * wo + ox;
                }
                y[(o * g->ph + py) * g->pw + px] = best;
                arg[(o * g->ph + py) * g->pw + px] = bi;
            }
}

/* Reference backward for row i from the dense conv-output gradient:
 * dz[o][oy][ox] = dy at the argmax of a window with a positive output,
 * else 0; gW += dz (x) patches, gb += sum dz, dx = full correlation. */
static void s_ref_backward(const s_geom *g, const float *W, const float *x, const double *y,
                           const size_t *arg, const float *dy, double *gW, double *gb,
                           double *dx)
{
    size_t ho = g->h - g->k + 1, wo = g->w - g->k + 1, po = g->ph * g->pw;
    double *dz = calloc(g->cout * ho * wo, sizeof *dz);
    cr_assert_not_null(dz);
    for (size_t o = 0; o < g->cout; o++)
        for (size_t p = 0; p < po; p++)
            if (y[o * po + p] > 0.0)
                dz[o * ho * wo + arg[o * po + p]] += dy[o * po + p];
    for (size_t j = 0; j < g->cin * g->h * g->w; j++)
        dx[j] = 0.0;
    for (size_t o = 0; o < g->cout; o++)
        for (size_t oy = 0; oy < ho; oy++)
            for (size_t ox = 0; ox < wo; ox++) {
                double d = dz[(o * ho + oy) * wo + ox];
                gb[o] += d;
                for (size_t c = 0; c < g->cin; c++)
                    for (size_t u = 0; u < g->k; u++)
                        for (size_t v = 0; v < g->k; v++) {
                            size_t wi = ((o * g->cin + c) * g->k + u) * g->k + v;
                            size_t xi = (c * g->h + oy + u) * g->w + ox + v;
                            gW[wi] += d * x[xi];
                            dx[xi] += d * W[wi];
                        }
            }
    free(dz);
}

/* the forward kernel under test (FL_CONVPOOL_KERNEL_*), for messages */
static int g_kern = FL_CONVPOOL_KERNEL_AUTO;

static void s_close(double got, double want, double scale, const char *what, size_t g,
                    size_t j)
{
    cr_assert(fabs(got - want) <= 1e-5 * scale + 1e-6 * fabs(want),
              "geometry %zu, forward kernel %d, %s[%zu]: %.9g, reference %.9g", g, g_kern,
              what, j, got, want);
}

static double s_maxabs(const double *v, size_t n)
{
    double m = 1e-30;
    for (size_t j = 0; j < n; j++)
        m = fmax(m, fabs(v[j]));
    return m;
}

/* Index of NCHW element (c, y, x) of a C x H x W row in the layout given
 * (nhwc non-zero: channels innermost). */
static size_t s_at(int nhwc, size_t C, size_t H, size_t W, size_t c, size_t y, size_t x)
{
    return nhwc ? (y * W + x) * C + c : (c * H + y) * W + x;
}

/* Copies n NCHW rows src into dst in the layout given. */
static void s_layout(const float *src, float *dst, size_t n, size_t C, size_t H, size_t W,
                     int nhwc)
{
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < C; c++)
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++)
                    dst[i * C * H * W + s_at(nhwc, C, H, W, c, y, x)] =
                        src[i * C * H * W + (c * H + y) * W + x];
}

/* Geometry gi with forward kernel kern against the reference: the
 * number of dead windows (pooled output zero), or SIZE_MAX where the
 * kernel cannot run the geometry on this CPU. */
static size_t s_check_geometry(size_t gi, int kern)
{
    size_t dead_total = 0;
    g_kern = kern;
    const s_geom *g = &GEOMS[gi];
    size_t nw = g->cout * g->cin * g->k * g->k, in_sz = g->cin * g->h * g->w;
    size_t po = g->ph * g->pw, yo = g->cout * po, n = g->n;
    float *W = s_rand(nw, 1.0f / sqrtf((float)(g->cin * g->k * g->k)));
    float *b = s_rand(g->cout, 0.3f); /* some channels start dead */
    float *X = s_rand(n * in_sz, 1.0f), *dY = s_rand(n * yo, 1.0f);
    float *Y = malloc(n * yo * sizeof *Y), *gW = malloc(nw * sizeof *gW);
    float *gb = malloc(g->cout * sizeof *gb), *dX = malloc(n * in_sz * sizeof *dX);
    size_t ldg = nw + g->cout + 3; /* a row longer than the parameters */
    float *G = malloc(n * ldg * sizeof *G);
    double *ry = malloc(yo * sizeof *ry), *rgW = calloc(nw, sizeof *rgW);
    double *rgb = calloc(g->cout, sizeof *rgb), *rdx = malloc(in_sz * sizeof *rdx);
    double *egW = malloc(nw * sizeof *egW), *egb = malloc(g->cout * sizeof *egb);
    size_t *arg = malloc(yo * sizeof *arg);
    cr_assert(Y && gW && gb && dX && G && ry && rgW && rgb && rdx && egW && egb && arg);

    fl_convpool *cp = NULL;
    cr_assert_eq(fl_convpool_new(&cp, g->cin, g->cout, g->k, g->h, g->w, g->ph, g->pw, n,
                                 g->lay),
                 FL_OK, "%s", fl_error_last());
    /* the block sees X and dY in its layouts; the reference NCHW */
    int in_l = (g->lay & IN) != 0, out_l = (g->lay & OUT) != 0;
    float *Xb = malloc(n * in_sz * sizeof *Xb), *dYb = malloc(n * yo * sizeof *dYb);
    float *Yn = malloc(n * yo * sizeof *Yn), *dXn = malloc(n * in_sz * sizeof *dXn);
    float *row = malloc(nw * sizeof *row);
    cr_assert(Xb && dYb && Yn && dXn && row);
    if (fl_convpool_force_kernel(cp, kern) != FL_OK) {
        dead_total = SIZE_MAX;
        goto done;
    }
    s_layout(X, Xb, n, g->cin, g->h, g->w, in_l);
    s_layout(dY, dYb, n, g->cout, g->ph, g->pw, out_l);
    cr_assert_eq(fl_convpool_forward(cp, W, b, Xb, n, Y), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_convpool_batch_grad(cp, Y, dYb, n, gW, gb, 0), FL_OK);
    cr_assert_eq(fl_convpool_example_grads(cp, Y, dYb, n, G, ldg), FL_OK);
    cr_assert_eq(fl_convpool_input_grad(cp, W, Y, dYb, n, dX), FL_OK);
    /* back to NCHW for the comparisons */
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < g->cout; c++)
            for (size_t p = 0; p < po; p++)
                Yn[i * yo + c * po + p] =
                    Y[i * yo + s_at(out_l, g->cout, g->ph, g->pw, c, p / g->pw, p % g->pw)];
        for (size_t c = 0; c < g->cin; c++)
            for (size_t r = 0; r < g->h * g->w; r++)
                dXn[i * in_sz + c * g->h * g->w + r] =
                    dX[i * in_sz + s_at(in_l, g->cin, g->h, g->w, c, r / g->w, r % g->w)];
    }

    for (size_t i = 0; i < n; i++) {
        const float *x = X + i * in_sz;
        s_ref_forward(g, W, b, x, ry, arg);
        for (size_t j = 0; j < yo; j++) {
            s_close(Yn[i * yo + j], ry[j], s_maxabs(ry, yo), "Y", gi, i * yo + j);
            dead_total += ry[j] == 0.0;
        }
        memset(egW, 0, nw * sizeof *egW);
        memset(egb, 0, g->cout * sizeof *egb);
        s_ref_backward(g, W, x, ry, arg, dY + i * yo, egW, egb, rdx);
        /* example i's own gradient: row i of G, weights (in the
         * block's order) then bias */
        double sw = s_maxabs(egW, nw), sb = s_maxabs(egb, g->cout);
        fl_convpool_to_param_order(cp, G + i * ldg, row, 0);
        for (size_t j = 0; j < nw; j++)
            s_close(row[j], egW[j], sw, "G weights", gi, j);
        for (size_t o = 0; o < g->cout; o++)
            s_close(G[i * ldg + nw + o], egb[o], sb, "G bias", gi, o);
        double sx = s_maxabs(rdx, in_sz);
        for (size_t j = 0; j < in_sz; j++)
            s_close(dXn[i * in_sz + j], rdx[j], sx, "dX", gi, j);
        for (size_t j = 0; j < nw; j++)
            rgW[j] += egW[j];
        for (size_t o = 0; o < g->cout; o++)
            rgb[o] += egb[o];
    }
    double sw = s_maxabs(rgW, nw), sb = s_maxabs(rgb, g->cout);
    for (size_t j = 0; j < nw; j++)
        s_close(gW[j], rgW[j], sw, "gW", gi, j);
    for (size_t o = 0; o < g->cout; o++)
        s_close(gb[o], rgb[o], sb, "gb", gi, o);

    /* accumulate adds the batch gradient to what is there */
    for (size_t j = 0; j < nw; j++)
        gW[j] = 1.0f;
    for (size_t o = 0; o < g->cout; o++)
        gb[o] = -2.0f;
    cr_assert_eq(fl_convpool_batch_grad(cp, Y, dYb, n, gW, gb, 1), FL_OK);
    for (size_t j = 0; j < nw; j++)
        s_close(gW[j], 1.0 + rgW[j], sw, "gW accumulated", gi, j);
    for (size_t o = 0; o < g->cout; o++)
        s_close(gb[o], -2.0 + rgb[o], sb, "gb accumulated", gi, o);

done:
    fl_convpool_free(cp);
    free(Xb), free(dYb), free(Yn), free(dXn), free(row);
    free(W), free(b), free(X), free(dY), free(Y), free(gW), free(gb), free(dX), free(G);
    free(ry), free(rgW), free(rgb), free(rdx), free(egW), free(egb), free(arg);
    return dead_total;
}

Test(convpool, forward_and_all_gradients_match_a_dense_double_reference)
{
    /* every geometry under each forward kernel that can run it here: the
     * sgemm always, the one-vector kernel for 16k channels on one-vector
     * patch rows, the AVX-512 direct kernel for 16k channels */
    static const int kerns[] = {FL_CONVPOOL_KERNEL_AUTO, FL_CONVPOOL_KERNEL_SGEMM,
                                FL_CONVPOOL_KERNEL_ONE_VECTOR, FL_CONVPOOL_KERNEL_DIRECT};
    size_t dead_total = 0, ran[4] = {0};
    for (size_t ki = 0; ki < 4; ki++)
        for (size_t gi = 0; gi < NGEOMS; gi++) {
            size_t dead = s_check_geometry(gi, kerns[ki]);
            if (dead == SIZE_MAX)
                continue;
            dead_total += dead, ran[ki]++;
        }
    g_kern = FL_CONVPOOL_KERNEL_AUTO;
    /* the ReLU path was exercised: some windows had no positive value */
    cr_assert_gt(dead_total, 0u);
    cr_assert_eq(ran[0], NGEOMS);
    cr_assert_eq(ran[1], NGEOMS);
    cr_assert_geq(ran[2], 2u, "the one-vector kernel ran %zu geometries", ran[2]);
    if (ran[3] == 0)
        cr_log_info("no AVX-512 on this CPU: the direct forward kernel was not checked");
    else
        cr_assert_geq(ran[3], 5u, "the direct kernel ran %zu geometries", ran[3]);
}

Test(convpool, inputs_outside_the_pooled_region_get_zero_gradient_and_change_nothing)
{
    /* issue conv 1 cropped to 24 x 24 of its 26 x 26 outputs: input rows
     * and columns 26 and 27 are never read */
    const s_geom g = {1, 16, 3, 28, 28, 12, 12, 2, 0};
    size_t nw = 16 * 9, in_sz = 28 * 28, yo = 16 * 144;
    float *W = s_rand(nw, 0.3f), *b = s_rand(16, 0.1f), *X = s_rand(2 * in_sz, 1.0f);
    float *dY = s_rand(2 * yo, 1.0f), *Y = malloc(2 * yo * sizeof *Y);
    float *Y2 = malloc(2 * yo * sizeof *Y2), *dX = malloc(2 * in_sz * sizeof *dX);
    fl_convpool *cp = NULL;
    cr_assert_eq(fl_convpool_new(&cp, g.cin, g.cout, g.k, g.h, g.w, g.ph, g.pw, 2, 0), FL_OK);
    cr_assert_eq(fl_convpool_forward(cp, W, b, X, 2, Y), FL_OK);
    cr_assert_eq(fl_convpool_input_grad(cp, W, Y, dY, 2, dX), FL_OK);
    size_t nonzero = 0;
    for (size_t i = 0; i < 2; i++)
        for (size_t r = 0; r < 28; r++)
            for (size_t c = 0; c < 28; c++) {
                float d = dX[i * in_sz + r * 28 + c];
                if (r >= 26 || c >= 26)
                    cr_assert_eq(d, 0.0f, "dX[%zu][%zu][%zu] = %g", i, r, c, d);
                else
                    nonzero += d != 0.0f;
            }
    cr_assert_gt(nonzero, 100u);
    for (size_t i = 0; i < 2; i++)
        for (size_t r = 26; r < 28; r++)
            for (size_t c = 0; c < 28; c++)
                X[i * in_sz + r * 28 + c] = X[i * in_sz + c * 28 + r] = NAN;
    cr_assert_eq(fl_convpool_forward(cp, W, b, X, 2, Y2), FL_OK);
    cr_assert_eq(memcmp(Y, Y2, 2 * yo * sizeof *Y), 0);
    fl_convpool_free(cp);
    free(W), free(b), free(X), free(dY), free(Y), free(Y2), free(dX);
}

Test(convpool, bad_geometry_row_counts_and_buffers_are_refused)
{
    fl_convpool *cp = NULL;
    /* 11 x 11 conv outputs pool to at most 5 x 5 */
    cr_assert_eq(fl_convpool_new(&cp, 16, 32, 3, 13, 13, 6, 5, 8, 0), FL_EINVAL);
    cr_assert_null(cp);
    cr_assert_eq(fl_convpool_new(&cp, 16, 32, 3, 13, 13, 5, 5, 0, 0), FL_EINVAL);
    cr_assert_eq(fl_convpool_new(&cp, 0, 32, 3, 13, 13, 5, 5, 8, 0), FL_EINVAL);
    cr_assert_eq(fl_convpool_new(&cp, 1, 2, 5, 4, 4, 1, 1, 8, 0), FL_EINVAL); /* k > h */
    cr_assert_eq(fl_convpool_new(&cp, 1, 2, 3, 6, 6, 2, 2, 4, 4), FL_EINVAL); /* flags */
    cr_assert_eq(fl_convpool_new(&cp, 1, 2, 3, 6, 6, 2, 2, 4, 0), FL_OK, "%s", fl_error_last());
    float W[18] = {0}, b[2] = {0}, X[3 * 36] = {0}, Y[3 * 8], dY[3 * 8] = {0}, g[20], G[60];
    cr_assert_eq(fl_convpool_forward(cp, W, b, X, 5, Y), FL_EINVAL); /* above cap */
    cr_assert_eq(fl_convpool_forward(cp, NULL, b, X, 3, Y), FL_EINVAL);
    /* backward before any forward, or over a different row count */
    cr_assert_eq(fl_convpool_batch_grad(cp, Y, dY, 3, g, g + 18, 0), FL_EINVAL);
    cr_assert_eq(fl_convpool_forward(cp, W, b, X, 3, Y), FL_OK);
    cr_assert_eq(fl_convpool_batch_grad(cp, Y, dY, 2, g, g + 18, 0), FL_EINVAL);
    cr_assert_eq(fl_convpool_example_grads(cp, Y, dY, 3, G, 19), FL_EINVAL); /* ldg < 20 */
    cr_assert_eq(fl_convpool_input_grad(cp, NULL, Y, dY, 3, X), FL_EINVAL);
    cr_assert_eq(fl_convpool_batch_grad(cp, Y, dY, 3, g, g + 18, 0), FL_OK);
    fl_convpool_free(cp);
    fl_convpool_free(NULL);
}
