/* DP-SGD through ghost clipping (fl_dpsgd_step_clipped over
 * fl_mlp_clipped_gradient_sum) against the explicit path (fl_dpsgd_step
 * over fl_mlp_example_gradients, clipped by fl_dp_clip_rows): with q = 1
 * (every record sampled) and sigma = 0 both release the same clipped mean,
 * so the explicit path is the independent reference. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_dpsgd.h"
#include "nn/fl_mlp.h"

typedef struct {
    fl_mlp *m;
    const float *X;
    const int32_t *y;
    size_t d;
    float *xb;
    int32_t *yb;
} ctx_t;

static void s_gather(ctx_t *c, const size_t *idx, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(c->xb + i * c->d, c->X + idx[i] * c->d, c->d * sizeof(float));
        c->yb[i] = c->y[idx[i]];
    }
}

static int s_explicit(void *vctx, const size_t *idx, size_t n, float *G)
{
    ctx_t *c = vctx;
    s_gather(c, idx, n);
    return fl_mlp_example_gradients(c->m, c->xb, c->yb, n, G, NULL);
}

static int s_ghost(void *vctx, const size_t *idx, size_t n, double clip, float *sum,
                   size_t *clipped)
{
    ctx_t *c = vctx;
    s_gather(c, idx, n);
    return fl_mlp_clipped_gradient_sum(c->m, c->xb, c->yb, n, clip, sum, clipped, NULL);
}

static void s_compare(fl_mlp_output kind, const uint32_t *sizes, size_t ns, size_t N,
                      size_t chunk)
{
    fl_mlp *m = NULL;
    cr_assert_eq(fl_mlp_new(&m, sizes, ns, kind), FL_OK);
    unsigned char seed[32] = {42};
    fl_mlp_init(m, seed);
    size_t d = sizes[0], P = fl_mlp_num_params(m);
    uint32_t k = kind == FL_MLP_OUT_SIGMOID_BCE ? 2 : sizes[ns - 1];
    float *X = malloc(N * d * sizeof *X);
    int32_t *y = malloc(N * sizeof *y);
    unsigned x = 777u; /* deterministic test data (LCG), not DP noise */
    for (size_t i = 0; i < N * d; i++) {
        x = x * 1103515245u + 12345u;
        X[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * (float)(1 + (i / d) % 5);
    }
    for (size_t i = 0; i < N; i++)
        y[i] = (int32_t)(i % k);
    ctx_t c = {m, X, y, d, malloc(chunk * d * sizeof(float)), malloc(chunk * sizeof(int32_t))};
    float *g_exp = malloc(P * sizeof *g_exp), *g_gh = malloc(P * sizeof *g_gh);
    double *norms = malloc(N * sizeof *norms);
    cr_assert(X && y && c.xb && c.yb && g_exp && g_gh && norms);

    /* C between the smallest and largest per-example norm: some rows clipped. */
    cr_assert_eq(fl_mlp_example_norms(m, X, y, N, norms), FL_OK);
    double lo = INFINITY, hi = 0;
    for (size_t i = 0; i < N; i++) {
        lo = fmin(lo, norms[i]);
        hi = fmax(hi, norms[i]);
    }
    double C = sqrt(lo * hi);
    cr_assert(lo < C && C < hi);

    fl_dpsgd *se = NULL, *sg = NULL;
    size_t be = 0, bg = 0;
    cr_assert_eq(fl_dpsgd_new(&se, P, N, 1.0, C, 0.0, chunk), FL_OK);
    cr_assert_eq(fl_dpsgd_new_clipped(&sg, P, N, 1.0, C, 0.0, chunk), FL_OK);
    cr_assert_eq(fl_dpsgd_step(se, s_explicit, &c, g_exp, &be), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_dpsgd_step_clipped(sg, s_ghost, &c, g_gh, &bg), FL_OK, "%s",
                 fl_error_last());
    cr_expect_eq(be, N);
    cr_expect_eq(bg, N);
    double scale = 0;
    for (size_t p = 0; p < P; p++)
        scale = fmax(scale, fabs(g_exp[p]));
    for (size_t p = 0; p < P; p++)
        cr_assert(fabs(g_gh[p] - g_exp[p]) <= 1e-5 * fabs(g_exp[p]) + 1e-6 * scale,
                  "param %zu: ghost %.9g, explicit %.9g", p, (double)g_gh[p],
                  (double)g_exp[p]);
    fl_dpsgd_free(se);
    fl_dpsgd_free(sg);
    free(X);
    free(y);
    free(c.xb);
    free(c.yb);
    free(g_exp);
    free(g_gh);
    free(norms);
    fl_mlp_free(m);
}

Test(dpsgd_ghost, sigma0_q1_equals_explicit_path_sigmoid)
{
    const uint32_t sizes[] = {10, 16, 8, 1};
    s_compare(FL_MLP_OUT_SIGMOID_BCE, sizes, 4, 150, 64);
}

Test(dpsgd_ghost, sigma0_q1_equals_explicit_path_softmax)
{
    const uint32_t sizes[] = {10, 16, 12, 8, 5};
    s_compare(FL_MLP_OUT_SOFTMAX_CE, sizes, 5, 150, 64);
}
