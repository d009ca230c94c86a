/*
 * fl_conv: convolution (im2col + OpenBLAS sgemm), its per-example weight
 * gradient norms (explicit and ghost), and 2x2 max-pooling.  See fl_conv.h.
 */
#include "nn/fl_conv.h"
#include "nn/fl_vec.h"

#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Largest matrix handed to BLAS, in elements: keeps every dimension and
 * leading dimension inside a 32-bit BLAS int. */
#define S_MAX_ELEMS ((size_t)INT_MAX)

struct fl_conv2d {
    size_t cin, cout, k, h, w; /* geometry */
    size_t ho, wo, t, ckk;     /* output size, T = ho*wo, C_in k^2 */
    float *col;                /* ckk x t: im2col of one example (and its gradient) */
    float *g;                  /* cout x ckk: one example's weight gradient */
    float *gram_a;             /* t x t: A^T A, allocated on first ghost use */
    float *gram_d;             /* t x t: D^T D, likewise */
};

int fl_conv2d_new(fl_conv2d **out, size_t c_in, size_t c_out, size_t k, size_t h, size_t w)
{
    if (!out)
        abort();
    *out = NULL;
    if (c_in == 0 || c_out == 0 || k == 0 || h == 0 || w == 0)
        return fl_error_set(FL_EINVAL,
                            "conv2d: sizes must be positive (c_in %zu, c_out %zu, k %zu, "
                            "input %zu x %zu)",
                            c_in, c_out, k, h, w);
    if (k > h || k > w)
        return fl_error_set(FL_EINVAL,
                            "conv2d: kernel %zu x %zu is larger than the %zu x %zu input "
                            "('valid' padding needs k <= H and k <= W); use a smaller kernel",
                            k, k, h, w);
    size_t ho = h - k + 1, wo = w - k + 1;
    /* Each factor is checked before the next multiplication, so no product
     * below can overflow size_t. */
    if (k > 65536 || c_in > S_MAX_ELEMS / (k * k) || c_out > S_MAX_ELEMS ||
        ho > S_MAX_ELEMS / wo || h > S_MAX_ELEMS / w || c_in > S_MAX_ELEMS / (h * w))
        return fl_error_set(FL_EINVAL, "conv2d: layer too large for 32-bit BLAS dimensions");
    size_t ckk = c_in * k * k, t = ho * wo;
    if (t > S_MAX_ELEMS / ckk || c_out > S_MAX_ELEMS / ckk)
        return fl_error_set(FL_EINVAL,
                            "conv2d: im2col buffer %zu x %zu or gradient %zu x %zu exceeds "
                            "2^31 elements; use a smaller layer",
                            ckk, t, c_out, ckk);
    fl_conv2d *c = calloc(1, sizeof *c);
    if (!c)
        return fl_error_set(FL_ENOMEM, "conv2d: out of memory");
    c->cin = c_in;
    c->cout = c_out;
    c->k = k;
    c->h = h;
    c->w = w;
    c->ho = ho;
    c->wo = wo;
    c->t = t;
    c->ckk = ckk;
    c->col = malloc(ckk * t * sizeof(float));
    c->g = malloc(c_out * ckk * sizeof(float));
    if (!c->col || !c->g) {
        fl_conv2d_free(c);
        return fl_error_set(FL_ENOMEM, "conv2d: out of memory for %zu x %zu im2col scratch",
                            ckk, t);
    }
    *out = c;
    return FL_OK;
}

void fl_conv2d_free(fl_conv2d *c)
{
    if (!c)
        return;
    free(c->col);
    free(c->g);
    free(c->gram_a);
    free(c->gram_d);
    free(c);
}

size_t fl_conv2d_out_h(const fl_conv2d *c) { return c->ho; }
size_t fl_conv2d_out_w(const fl_conv2d *c) { return c->wo; }
size_t fl_conv2d_num_weights(const fl_conv2d *c) { return c->cout * c->ckk; }

/* col[(ci k^2 + ky k + kx) T + oy Wo + ox] = x[ci][oy+ky][ox+kx]. */
static void s_im2col(const fl_conv2d *c, const float *x, float *col)
{
    for (size_t ci = 0; ci < c->cin; ci++)
        for (size_t ky = 0; ky < c->k; ky++)
            for (size_t kx = 0; kx < c->k; kx++) {
                float *row = col + ((ci * c->k + ky) * c->k + kx) * c->t;
                const float *plane = x + ci * c->h * c->w;
                for (size_t oy = 0; oy < c->ho; oy++)
                    memcpy(row + oy * c->wo, plane + (oy + ky) * c->w + kx,
                           c->wo * sizeof(float));
            }
}

/* Adjoint of s_im2col: dx (zeroed by the caller) += scatter of dcol. */
static void s_col2im(const fl_conv2d *c, const float *dcol, float *dx)
{
    for (size_t ci = 0; ci < c->cin; ci++)
        for (size_t ky = 0; ky < c->k; ky++)
            for (size_t kx = 0; kx < c->k; kx++) {
                const float *row = dcol + ((ci * c->k + ky) * c->k + kx) * c->t;
                float *plane = dx + ci * c->h * c->w;
                for (size_t oy = 0; oy < c->ho; oy++)
                    fl_vec_add(plane + (oy + ky) * c->w + kx, row + oy * c->wo, c->wo);
            }
}

int fl_conv2d_forward(fl_conv2d *c, const float *Wt, const float *b, const float *X,
                      size_t n, float *Y)
{
    if (!c)
        abort();
    if (n == 0)
        return FL_OK;
    if (!Wt || !X || !Y)
        return fl_error_set(FL_EINVAL, "conv2d forward: NULL weights, input or output");
    const int M = (int)c->cout, N = (int)c->t, K = (int)c->ckk;
    for (size_t i = 0; i < n; i++) {
        const float *x = X + i * c->cin * c->h * c->w;
        float *y = Y + i * c->cout * c->t;
        s_im2col(c, x, c->col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, Wt, K, c->col,
                    N, 0.0f, y, N);
        if (b)
            for (size_t o = 0; o < c->cout; o++)
                for (size_t t = 0; t < c->t; t++)
                    y[o * c->t + t] += b[o];
    }
    return FL_OK;
}

int fl_conv2d_backward(fl_conv2d *c, const float *Wt, const float *X, const float *dY,
                       size_t n, float *dX, float *dW, float *db)
{
    if (!c)
        abort();
    if (dW)
        memset(dW, 0, c->cout * c->ckk * sizeof(float));
    if (db)
        memset(db, 0, c->cout * sizeof(float));
    if (n == 0)
        return FL_OK;
    if (!X || !dY || (dX && !Wt))
        return fl_error_set(FL_EINVAL, "conv2d backward: NULL input, output gradient or "
                                       "weights (weights are needed for the input gradient)");
    const int Co = (int)c->cout, T = (int)c->t, CKK = (int)c->ckk;
    const size_t in_sz = c->cin * c->h * c->w, out_sz = c->cout * c->t;
    for (size_t i = 0; i < n; i++) {
        const float *d = dY + i * out_sz;
        if (dW) {
            /* dW += D_i A_i^T: (C_out x T) (T x C_in k^2). */
            s_im2col(c, X + i * in_sz, c->col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, CKK, T, 1.0f, d, T,
                        c->col, T, 1.0f, dW, CKK);
        }
        if (db)
            for (size_t o = 0; o < c->cout; o++)
                db[o] += (float)fl_vec_sum(d + o * c->t, c->t);
        if (dX) {
            /* dA_i = Wt^T D_i, scattered back by the adjoint of im2col. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CKK, T, Co, 1.0f, Wt, CKK,
                        d, T, 0.0f, c->col, T);
            float *dx = dX + i * in_sz;
            memset(dx, 0, in_sz * sizeof(float));
            s_col2im(c, c->col, dx);
        }
    }
    return FL_OK;
}

fl_conv_norm fl_conv2d_norm_choice(const fl_conv2d *c)
{
    /* Bu et al. 2022, mixed ghost clipping: ghost iff 2 T^2 < p d with
     * p d = C_out * C_in k^2 (all factors < 2^31, so doubles are exact
     * enough and nothing overflows). */
    double t = (double)c->t;
    return 2.0 * t * t < (double)c->ckk * (double)c->cout ? FL_CONV_NORM_GHOST
                                                           : FL_CONV_NORM_EXPLICIT;
}

/* <S1, S2>_F for two symmetric T x T matrices of which only the upper
 * triangles were written (ssyrk with CblasUpper). */
static double s_sym_dot_upper(const float *a, const float *b, size_t t)
{
    double diag = 0.0, off = 0.0;
    for (size_t r = 0; r < t; r++) {
        diag += (double)a[r * t + r] * b[r * t + r];
        for (size_t s = r + 1; s < t; s++)
            off += (double)a[r * t + s] * b[r * t + s];
    }
    return diag + 2.0 * off;
}

int fl_conv2d_example_sq_norms(fl_conv2d *c, const float *X, const float *dY, size_t n,
                               fl_conv_norm method, int with_bias, double *sq)
{
    if (!c)
        abort();
    if (method == FL_CONV_NORM_AUTO)
        method = fl_conv2d_norm_choice(c);
    if (method != FL_CONV_NORM_EXPLICIT && method != FL_CONV_NORM_GHOST)
        return fl_error_set(FL_EINVAL, "conv2d norms: unknown method %d; use "
                                       "FL_CONV_NORM_EXPLICIT, _GHOST or _AUTO",
                            (int)method);
    if (n == 0)
        return FL_OK;
    if (!X || !dY || !sq)
        return fl_error_set(FL_EINVAL, "conv2d norms: NULL input, output gradient or result");
    if (method == FL_CONV_NORM_GHOST && !c->gram_a) {
        if (c->t > S_MAX_ELEMS / c->t)
            return fl_error_set(FL_EINVAL,
                                "conv2d norms: ghost Gram matrix %zu x %zu exceeds 2^31 "
                                "elements; use FL_CONV_NORM_EXPLICIT or _AUTO",
                                c->t, c->t);
        c->gram_a = malloc(c->t * c->t * sizeof(float));
        c->gram_d = malloc(c->t * c->t * sizeof(float));
        if (!c->gram_a || !c->gram_d) {
            free(c->gram_a);
            free(c->gram_d);
            c->gram_a = c->gram_d = NULL;
            return fl_error_set(FL_ENOMEM, "conv2d norms: out of memory for two %zu x %zu "
                                           "Gram matrices",
                                c->t, c->t);
        }
    }
    const int Co = (int)c->cout, T = (int)c->t, CKK = (int)c->ckk;
    const size_t in_sz = c->cin * c->h * c->w, out_sz = c->cout * c->t;
    for (size_t i = 0; i < n; i++) {
        const float *d = dY + i * out_sz;
        s_im2col(c, X + i * in_sz, c->col);
        double s = 0.0;
        if (method == FL_CONV_NORM_EXPLICIT) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Co, CKK, T, 1.0f, d, T,
                        c->col, T, 0.0f, c->g, CKK);
            s = fl_vec_sumsq(c->g, c->cout * c->ckk);
        } else {
            /* Ghost norm (Li et al. 2021; Bu et al. 2022):
             * ||D A^T||_F^2 = tr(A D^T D A^T) = <A^T A, D^T D>_F, with A^T A
             * and D^T D the T x T Gram matrices of the im2col columns and of
             * the output-gradient columns: O(T^2 (C_in k^2 + C_out)). */
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, T, CKK, 1.0f, c->col, T, 0.0f,
                        c->gram_a, T);
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, T, Co, 1.0f, d, T, 0.0f,
                        c->gram_d, T);
            s = s_sym_dot_upper(c->gram_a, c->gram_d, c->t);
        }
        if (with_bias)
            for (size_t o = 0; o < c->cout; o++) {
                double r = 0.0;
                for (size_t t = 0; t < c->t; t++)
                    r += d[o * c->t + t];
                s += r * r;
            }
        sq[i] = s;
    }
    return FL_OK;
}

#if defined(__SSE2__)
/* One step of the running first-strict-maximum: where v > m, take v and
 * the candidate's offset qv. */
static inline void s_pool_take(__m128 v, __m128i qv, __m128 *m, __m128i *q)
{
    __m128 up = _mm_cmpgt_ps(v, *m);
    __m128i upi = _mm_castps_si128(up);
    *m = _mm_or_ps(_mm_and_ps(up, v), _mm_andnot_ps(up, *m));
    *q = _mm_or_si128(_mm_and_si128(upi, qv), _mm_andnot_si128(upi, *q));
}
#endif

/* Four windows at a time with SSE2 (x86-64 baseline): the same first
 * strict maximum as the scalar loop, as compare masks and blends.
 * Returns how many outputs of the row it wrote (a multiple of 4); every
 * load stays inside the two input rows (2 ox + 7 <= 2 wo - 1 <= w - 1). */
static size_t s_maxpool_row4(const float *r0, const float *r1, size_t w, size_t wo, float *yr,
                             size_t *ar, size_t base)
{
#if defined(__SSE2__)
    if (w >= INT_MAX)
        return 0;
    const __m128i q01 = _mm_set1_epi32(1), q10 = _mm_set1_epi32((int)w),
                  q11 = _mm_set1_epi32((int)w + 1);
    size_t ox = 0;
    for (; ox + 4 <= wo; ox += 4) {
        __m128 t0 = _mm_loadu_ps(r0 + 2 * ox), t1 = _mm_loadu_ps(r0 + 2 * ox + 4);
        __m128 b0 = _mm_loadu_ps(r1 + 2 * ox), b1 = _mm_loadu_ps(r1 + 2 * ox + 4);
        __m128 m = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128i q = _mm_setzero_si128(); /* offset of the max inside its window */
        s_pool_take(_mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)), q01, &m, &q);
        s_pool_take(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)), q10, &m, &q);
        s_pool_take(_mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)), q11, &m, &q);
        _mm_storeu_ps(yr + ox, m);
        int32_t qs[4];
        _mm_storeu_si128((__m128i *)qs, q);
        for (size_t k = 0; k < 4; k++)
            ar[ox + k] = base + 2 * (ox + k) + (size_t)qs[k];
    }
    return ox;
#else
    (void)r0, (void)r1, (void)w, (void)wo, (void)yr, (void)ar, (void)base;
    return 0;
#endif
}

int fl_maxpool2_forward(const float *X, size_t n, size_t ch, size_t h, size_t w, float *Y,
                        size_t *argmax)
{
    if (h < 2 || w < 2)
        return fl_error_set(FL_EINVAL,
                            "maxpool2: input %zu x %zu is smaller than the 2 x 2 window", h, w);
    if (n == 0 || ch == 0)
        return FL_OK;
    if (!X || !Y || !argmax)
        return fl_error_set(FL_EINVAL, "maxpool2 forward: NULL input, output or argmax");
    size_t ho = h / 2, wo = w / 2;
    for (size_t p = 0; p < n * ch; p++) {
        const float *x = X + p * h * w;
        for (size_t oy = 0; oy < ho; oy++) {
            const float *r0 = x + 2 * oy * w, *r1 = r0 + w;
            float *yr = Y + (p * ho + oy) * wo;
            size_t *ar = argmax + (p * ho + oy) * wo, base = p * h * w + 2 * oy * w;
            /* The first strict maximum in the order (0,0), (0,1), (1,0),
             * (1,1) (a NaN is never chosen unless it comes first), as
             * selects: the signs of ReLU outputs are data, so branches
             * here mispredicted about half the time. */
            size_t ox = s_maxpool_row4(r0, r1, w, wo, yr, ar, base);
            for (; ox < wo; ox++) {
                float m = r0[2 * ox], v = r0[2 * ox + 1];
                size_t bi = base + 2 * ox;
                int up = v > m;
                m = up ? v : m;
                bi = up ? base + 2 * ox + 1 : bi;
                v = r1[2 * ox];
                up = v > m;
                m = up ? v : m;
                bi = up ? base + w + 2 * ox : bi;
                v = r1[2 * ox + 1];
                up = v > m;
                m = up ? v : m;
                bi = up ? base + w + 2 * ox + 1 : bi;
                yr[ox] = m;
                ar[ox] = bi;
            }
        }
    }
    return FL_OK;
}

int fl_maxpool2_backward(const float *dY, const size_t *argmax, size_t n, size_t ch, size_t h,
                         size_t w, float *dX)
{
    if (h < 2 || w < 2)
        return fl_error_set(FL_EINVAL,
                            "maxpool2: input %zu x %zu is smaller than the 2 x 2 window", h, w);
    if (n == 0 || ch == 0)
        return FL_OK;
    if (!dY || !argmax || !dX)
        return fl_error_set(FL_EINVAL, "maxpool2 backward: NULL gradient, argmax or output");
    size_t total = n * ch * h * w, out = n * ch * (h / 2) * (w / 2);
    memset(dX, 0, total * sizeof(float));
    for (size_t j = 0; j < out; j++) {
        if (argmax[j] >= total)
            return fl_error_set(FL_EINVAL,
                                "maxpool2 backward: argmax[%zu] = %zu is outside the input "
                                "of %zu elements; pass the argmax from fl_maxpool2_forward",
                                j, argmax[j], total);
        /* Windows do not overlap, so each input gets at most one dY; += keeps
         * this correct even for hand-made argmax arrays. */
        dX[argmax[j]] += dY[j];
    }
    return FL_OK;
}
