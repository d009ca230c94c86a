/*
 * fl_convpool: convolution + ReLU + 2x2 max-pool as one block with a
 * routed (sparse) backward pass.  See fl_convpool.h.
 *
 * Forward, per group of S_GROUP rows: the patches of each row go into P
 * (row (i, t) holds the C_in k^2 inputs under output position t in the
 * block's patch order - C_in x k x k for an NCHW input, k x k x C_in for
 * NHWC - padded with zeros to a multiple of 16 floats), one matrix
 * product (a direct AVX-512 kernel where the CPU has it and C_out is a
 * multiple of 16, else sgemm) gives the group's convolution outputs Z
 * (t x C_out per row, channels innermost, so a pooling window is four
 * contiguous channel vectors), and the pooling writes Y and, per (row,
 * window, channel), the position t of the window's argmax.  Z is reused
 * group after group and stays in cache.  Routes and routed gradients are
 * kept window-major (channels innermost), the order the pooling produces
 * them in.
 *
 * Backward: the gradient reaching the convolution output is, per (row,
 * channel), one value per window at the routed position - dY where the
 * pooled output is positive, zero elsewhere (the ReLU) - and zero at the
 * other three positions of every window.  Hence
 *   weight gradient of row i, channel o = sum over windows of v * P[i, t]
 *   input gradient of row i = col2im of (sum over o and windows of
 *                             v * Wt[o] placed at patch row t)
 * which is exactly the dense backward with the zeros skipped.
 */
#include "nn/fl_convpool.h"
#include "nn/fl_convpool_internal.h"
#include "nn/fl_vec.h"

#include <cblas.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Largest matrix handed to BLAS, in elements (32-bit BLAS int). */
#define S_MAX_ELEMS ((size_t)INT_MAX)

/* Rows per forward sgemm: their convolution outputs (S_GROUP x t x C_out
 * floats, 100-300 KiB for the CNN) stay in L2 for the pooling. */
#define S_GROUP 8

/* Sixteen floats: GCC/Clang vector extensions lower this to one AVX-512,
 * two AVX or four SSE registers, whichever the function is compiled for.
 * The routed kernels are built for AVX-512, AVX2 and the x86-64 baseline
 * and the loader picks one at run time (GCC target_clones). */
typedef float s_v16 __attribute__((vector_size(64)));
#define S_LOAD(v, p) memcpy(&(v), (p), sizeof(s_v16))
#define S_STORE(p, v) memcpy((p), &(v), sizeof(s_v16))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                    \
    !defined(__SANITIZE_THREAD__)
/* (Not under ThreadSanitizer: the loader calls the clones' resolver
 * before the TSan runtime is up, and TSan instruments it.)
 * fp-contract: a += v * x as one fused multiply-add (ISO C mode turns
 * contraction off by default) */
#define S_FMA __attribute__((optimize("fp-contract=fast")))
#define S_CLONES                                                                            \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) S_FMA
#define S_DIRECT 1
#else
#define S_FMA
#define S_CLONES
#define S_DIRECT 0
#endif

struct fl_convpool {
    size_t cin, cout, k, h, w;  /* geometry: c_in x h x w inputs */
    size_t ph, pw, po;          /* pool outputs, po = ph pw */
    size_t cw, t;               /* conv outputs computed: 2ph x cw, t = 2ph cw */
    size_t ckk, ckp;            /* C_in k^2 and it rounded up to 16 */
    size_t in_sz, cap, last_n;
    int in_nhwc, out_nhwc;      /* FL_CONVPOOL_* layouts */
    int kernel;                 /* forward kernel: FL_CONVPOOL_KERNEL_* */
    float *P;                   /* cap x t x ckp patches (padding stays zero) */
    float *Z;                   /* S_GROUP x t x cout conv outputs of one group */
    uint32_t *route;            /* cap x po x cout: argmax position t per window */
    float *pm;                  /* po x cout: one row's window maxima (NCHW output) */
    float *val;                 /* po x cout: routed gradients of one row */
    double *bsum;               /* cout: their sums (bias gradient) */
    float *gacc;                /* cout x ckp: weight gradient being summed */
    float *dP;                  /* t x ckp: one row's patch gradients */
    float *Wp;                  /* cout x ckp: weights in patch order, zero-padded */
    float *WT;                  /* ckk x cout: the same transposed (direct kernels) */
    unsigned char *touched;     /* t: patch rows of dP that received gradient */
};

/* Whether the forward can use `kernel` for this block on this CPU: the
 * direct kernels compute sixteen channels per vector, s_small_k reads one
 * vector per patch row, and s_direct needs AVX-512. */
static int s_kernel_usable(const fl_convpool *cp, int kernel)
{
    switch (kernel) {
    case FL_CONVPOOL_KERNEL_SGEMM:
        return 1;
    case FL_CONVPOOL_KERNEL_ONE_VECTOR:
        return cp->cout % 16 == 0 && cp->ckp == 16;
    case FL_CONVPOOL_KERNEL_DIRECT:
#if S_DIRECT
        return cp->cout % 16 == 0 && __builtin_cpu_supports("x86-64-v4");
#else
        return 0;
#endif
    default:
        return 0;
    }
}

/* The fastest usable kernel (bench_dpsgd; docs/performance.md). */
static int s_best_kernel(const fl_convpool *cp)
{
    if (s_kernel_usable(cp, FL_CONVPOOL_KERNEL_DIRECT))
        return FL_CONVPOOL_KERNEL_DIRECT;
    return s_kernel_usable(cp, FL_CONVPOOL_KERNEL_ONE_VECTOR) ? FL_CONVPOOL_KERNEL_ONE_VECTOR
                                                              : FL_CONVPOOL_KERNEL_SGEMM;
}

int fl_convpool_force_kernel(fl_convpool *cp, int kernel)
{
    if (!cp)
        abort();
    if (kernel == FL_CONVPOOL_KERNEL_AUTO) {
        cp->kernel = s_best_kernel(cp);
        return FL_OK;
    }
    if (!s_kernel_usable(cp, kernel))
        return fl_error_set(FL_EINVAL, "convpool: forward kernel %d cannot run a %zu-channel "
                            "block with %zu-float patch rows on this CPU", kernel, cp->cout,
                            cp->ckp);
    cp->kernel = kernel;
    return FL_OK;
}

void fl_convpool_free(fl_convpool *cp)
{
    if (!cp)
        return;
    free(cp->P);
    free(cp->Z);
    free(cp->route);
    free(cp->pm);
    free(cp->val);
    free(cp->bsum);
    free(cp->gacc);
    free(cp->dP);
    free(cp->Wp);
    free(cp->WT);
    free(cp->touched);
    free(cp);
}

int fl_convpool_new(fl_convpool **out, size_t c_in, size_t c_out, size_t k, size_t h,
                    size_t w, size_t ph, size_t pw, size_t cap, unsigned flags)
{
    if (!out)
        abort();
    *out = NULL;
    if (flags & ~(unsigned)(FL_CONVPOOL_IN_NHWC | FL_CONVPOOL_OUT_NHWC))
        return fl_error_set(FL_EINVAL, "convpool: unknown layout flags 0x%x", flags);
    if (c_in == 0 || c_out == 0 || k == 0 || h == 0 || w == 0 || ph == 0 || pw == 0 ||
        cap == 0)
        return fl_error_set(FL_EINVAL, "convpool: sizes must be positive (c_in %zu, c_out "
                            "%zu, k %zu, input %zu x %zu, pool %zu x %zu, rows %zu)",
                            c_in, c_out, k, h, w, ph, pw, cap);
    if (k > h || k > w || ph > (h - k + 1) / 2 || pw > (w - k + 1) / 2)
        return fl_error_set(FL_EINVAL, "convpool: a %zu x %zu pool output needs a conv "
                            "output of %zu x %zu, more than kernel %zu gives on a %zu x %zu "
                            "input", ph, pw, 2 * ph, 2 * pw, k, h, w);
    /* Each factor is bounded before the next product, so nothing below
     * overflows size_t; every BLAS dimension stays below 2^31. */
    if (k > 65536 || c_in > S_MAX_ELEMS / (k * k) || c_out > S_MAX_ELEMS ||
        h > S_MAX_ELEMS / w || c_in > S_MAX_ELEMS / (h * w) || cap > S_MAX_ELEMS)
        return fl_error_set(FL_EINVAL, "convpool: layer too large for 32-bit BLAS sizes");
    size_t ckk = c_in * k * k, ckp = (ckk + 15) / 16 * 16, cw = 2 * pw, t = 2 * ph * cw;
    size_t po = ph * pw;
    if (t > S_MAX_ELEMS / S_GROUP / ckp || S_GROUP * t > S_MAX_ELEMS / c_out ||
        cap > S_MAX_ELEMS / (t * ckp) || c_out > S_MAX_ELEMS / ckp ||
        cap > S_MAX_ELEMS / (c_out * po) || t > UINT32_MAX)
        return fl_error_set(FL_EINVAL, "convpool: %zu rows of %zu x %zu patches exceed 2^31 "
                            "elements; use a smaller layer or fewer rows", cap, t, ckp);
    fl_convpool *cp = calloc(1, sizeof *cp);
    if (!cp)
        return fl_error_set(FL_ENOMEM, "convpool: out of memory");
    cp->cin = c_in, cp->cout = c_out, cp->k = k, cp->h = h, cp->w = w;
    cp->ph = ph, cp->pw = pw, cp->po = po, cp->cw = cw, cp->t = t;
    cp->ckk = ckk, cp->ckp = ckp, cp->in_sz = c_in * h * w, cp->cap = cap;
    cp->in_nhwc = (flags & FL_CONVPOOL_IN_NHWC) != 0;
    cp->out_nhwc = (flags & FL_CONVPOOL_OUT_NHWC) != 0;
    /* calloc: the patch padding and the weight padding must be zero, and
     * nothing ever writes them. */
    cp->P = calloc(cap * t * ckp, sizeof *cp->P);
    cp->Z = malloc(S_GROUP * t * c_out * sizeof *cp->Z);
    cp->route = malloc(cap * c_out * po * sizeof *cp->route);
    cp->pm = malloc(po * c_out * sizeof *cp->pm);
    cp->val = malloc(c_out * po * sizeof *cp->val);
    cp->bsum = malloc(c_out * sizeof *cp->bsum);
    cp->gacc = calloc(c_out * ckp, sizeof *cp->gacc);
    cp->dP = malloc(t * ckp * sizeof *cp->dP);
    cp->Wp = calloc(c_out * ckp, sizeof *cp->Wp);
    cp->WT = malloc(ckk * c_out * sizeof *cp->WT);
    cp->touched = malloc(t);
    if (!cp->P || !cp->Z || !cp->route || !cp->pm || !cp->val || !cp->bsum || !cp->gacc ||
        !cp->dP || !cp->Wp || !cp->WT || !cp->touched) {
        fl_convpool_free(cp);
        return fl_error_set(FL_ENOMEM, "convpool: out of memory for %zu rows of %zu x %zu "
                            "patches", cap, t, ckp);
    }
    cp->kernel = s_best_kernel(cp);
    *out = cp;
    return FL_OK;
}

/* Index in the block's patch order of parameter-order weight (ci, ky, kx):
 * the same for an NCHW input, (ky k + kx) C_in + ci for NHWC. */
static size_t s_patch_index(const fl_convpool *cp, size_t ci, size_t ky, size_t kx)
{
    return cp->in_nhwc ? (ky * cp->k + kx) * cp->cin + ci : (ci * cp->k + ky) * cp->k + kx;
}

void fl_convpool_to_param_order(const fl_convpool *cp, const float *src, float *dst,
                                int accumulate)
{
    const size_t k = cp->k;
    for (size_t o = 0; o < cp->cout; o++) {
        const float *s = src + o * cp->ckk;
        float *d = dst + o * cp->ckk;
        if (!cp->in_nhwc) {
            for (size_t j = 0; j < cp->ckk; j++)
                d[j] = accumulate ? d[j] + s[j] : s[j];
            continue;
        }
        for (size_t ci = 0; ci < cp->cin; ci++)
            for (size_t ky = 0; ky < k; ky++)
                for (size_t kx = 0; kx < k; kx++) {
                    float v = s[s_patch_index(cp, ci, ky, kx)], *x = d + (ci * k + ky) * k + kx;
                    *x = accumulate ? *x + v : v;
                }
    }
}

/* Wp (cout x ckp, padding zero) = the weights Wt in patch order. */
static void s_weights(fl_convpool *cp, const float *Wt)
{
    const size_t k = cp->k;
    for (size_t o = 0; o < cp->cout; o++) {
        const float *s = Wt + o * cp->ckk;
        float *d = cp->Wp + o * cp->ckp;
        if (!cp->in_nhwc) {
            memcpy(d, s, cp->ckk * sizeof *d);
            continue;
        }
        for (size_t ci = 0; ci < cp->cin; ci++)
            for (size_t ky = 0; ky < k; ky++)
                for (size_t kx = 0; kx < k; kx++)
                    d[s_patch_index(cp, ci, ky, kx)] = s[(ci * k + ky) * k + kx];
    }
}

/* Patches of one NHWC row x: patch row (oy cw + ox) is k runs of k C_in
 * contiguous values, copied sixteen floats at a time (a library memcpy
 * call per run of 48 floats cost more than the copy). */
S_CLONES static void s_patches_nhwc(const fl_convpool *cp, const float *restrict x,
                                    float *restrict P)
{
    const size_t k = cp->k, run = k * cp->cin, ch = 2 * cp->ph;
    for (size_t oy = 0; oy < ch; oy++)
        for (size_t ox = 0; ox < cp->cw; ox++) {
            float *row = P + (oy * cp->cw + ox) * cp->ckp;
            for (size_t ky = 0; ky < k; ky++) {
                const float *src = x + ((oy + ky) * cp->w + ox) * cp->cin;
                float *dst = row + ky * run;
                size_t j = 0;
                for (; j + 16 <= run; j += 16) {
                    s_v16 v;
                    S_LOAD(v, src + j);
                    S_STORE(dst + j, v);
                }
                for (; j < run; j++)
                    dst[j] = src[j];
            }
        }
}

/* Patches of one row x into P, row (oy cw + ox), for the 2ph x cw
 * positions computed, in the block's patch order.  NCHW:
 * P[..][(ci k + ky) k + kx] = x[ci][oy + ky][ox + kx]. */
static void s_patches(const fl_convpool *cp, const float *x, float *P)
{
    const size_t k = cp->k, w = cp->w, hw = cp->h * cp->w, ch = 2 * cp->ph;
    if (cp->in_nhwc) {
        s_patches_nhwc(cp, x, P);
        return;
    }
    for (size_t oy = 0; oy < ch; oy++)
        for (size_t ox = 0; ox < cp->cw; ox++) {
            float *row = P + (oy * cp->cw + ox) * cp->ckp;
            const float *src = x + oy * w + ox;
            if (k == 3) {
#if defined(__SSE2__)
                /* Three input values per kernel row, copied four at a time:
                 * the fourth lands on the next kernel row's first slot and
                 * is overwritten by it.  The row's last kernel row is copied
                 * singly, so nothing is written past this patch row's C_in
                 * k^2 values, and a load reads x[..+3] only when ox + 3 < w
                 * (inside the input row). */
                if (ox + 3 < w) {
                    for (size_t ci = 0; ci < cp->cin; ci++, src += hw, row += 9) {
                        _mm_storeu_ps(row, _mm_loadu_ps(src));
                        _mm_storeu_ps(row + 3, _mm_loadu_ps(src + w));
                        if (ci + 1 < cp->cin) {
                            _mm_storeu_ps(row + 6, _mm_loadu_ps(src + 2 * w));
                        } else {
                            row[6] = src[2 * w], row[7] = src[2 * w + 1];
                            row[8] = src[2 * w + 2];
                        }
                    }
                    continue;
                }
#endif
                for (size_t ci = 0; ci < cp->cin; ci++, src += hw, row += 9) {
                    const float *a = src, *b = src + w, *c = src + 2 * w;
                    row[0] = a[0], row[1] = a[1], row[2] = a[2];
                    row[3] = b[0], row[4] = b[1], row[5] = b[2];
                    row[6] = c[0], row[7] = c[1], row[8] = c[2];
                }
                continue;
            }
            for (size_t ci = 0; ci < cp->cin; ci++)
                for (size_t ky = 0; ky < k; ky++)
                    for (size_t kx = 0; kx < k; kx++)
                        *row++ = src[ci * hw + ky * w + kx];
        }
}

/* Pools one row's conv outputs z (t x cout): y and the routes (po x cout).
 * The first strict maximum in the order (0,0), (0,1), (1,0), (1,1), as
 * selects (fl_maxpool2_forward's rule); then max(ReLU(z + b)) =
 * ReLU(max(z) + b), one bias add and ReLU per window. */
S_CLONES static void s_pool(fl_convpool *cp, const float *z, const float *b, float *y,
                            uint32_t *route)
{
    const size_t co_n = cp->cout, cw = cp->cw;
    for (size_t py = 0; py < cp->ph; py++)
        for (size_t px = 0; px < cp->pw; px++) {
            size_t p = py * cp->pw + px, t0 = 2 * py * cw + 2 * px;
            const float *z0 = z + t0 * co_n, *z1 = z0 + co_n, *z2 = z0 + cw * co_n,
                        *z3 = z2 + co_n;
            /* NHWC: the window's outputs go straight to y */
            float *pm = cp->out_nhwc ? y + p * co_n : cp->pm + p * co_n;
            uint32_t *pr = route + p * co_n;
            for (size_t o = 0; o < co_n; o++) {
                float m = z0[o];
                uint32_t r = (uint32_t)t0;
                int up = z1[o] > m;
                m = up ? z1[o] : m;
                r = up ? (uint32_t)(t0 + 1) : r;
                up = z2[o] > m;
                m = up ? z2[o] : m;
                r = up ? (uint32_t)(t0 + cw) : r;
                up = z3[o] > m;
                m = up ? z3[o] : m;
                r = up ? (uint32_t)(t0 + cw + 1) : r;
                m += b ? b[o] : 0.0f;
                pm[o] = m > 0.0f ? m : 0.0f;
                pr[o] = r;
            }
        }
    if (!cp->out_nhwc)
        for (size_t o = 0; o < co_n; o++)
            for (size_t p = 0; p < cp->po; p++)
                y[o * cp->po + p] = cp->pm[p * co_n + o];
}

/* Z rows r..r+R, channels ob..ob+16 NV  =  P rows r..r+R (first ckk
 * columns) times WT (ckk x cout, the weights transposed): an R x NV block
 * of Z (R <= 8 rows, NV <= 2 vectors of sixteen channels) held in
 * registers while P, one broadcast per row and column, and the rows of WT
 * stream through it.  Inlined with constant R and NV into the kernels
 * below, which compile it for their instruction sets. */
static inline __attribute__((always_inline)) S_FMA void
s_tile(const float *restrict P, size_t ckp, size_t ckk, const float *restrict WT, size_t cout,
       float *restrict Z, size_t r, size_t ob, int R, int NV)
{
    s_v16 a[8][2], w[2];
    for (int q = 0; q < R; q++)
        for (int v = 0; v < NV; v++)
            a[q][v] = (s_v16){0};
    const float *p0 = P + r * ckp;
    for (size_t j = 0; j < ckk; j++) {
        for (int v = 0; v < NV; v++)
            S_LOAD(w[v], WT + j * cout + ob + 16 * (size_t)v);
        for (int q = 0; q < R; q++) {
            float x = p0[(size_t)q * ckp + j];
            for (int v = 0; v < NV; v++)
                a[q][v] += x * w[v];
        }
    }
    for (int q = 0; q < R; q++)
        for (int v = 0; v < NV; v++)
            S_STORE(Z + (r + (size_t)q) * cout + ob + 16 * (size_t)v, a[q][v]);
}

/* Z (rows x cout) = P (rows x ckp, the first ckk <= 16 columns used)
 * Wp^T for cout a multiple of 16: a direct kernel for layers whose patch
 * rows are one vector (a first layer on few image channels), where an
 * sgemm with K = C_in k^2 = 9 spends more on packing its operands than on
 * multiplying (64 against 100 GFLOP/s here).  Tiles of four rows (rows
 * is a multiple of four: a row per conv output, 2ph x 2pw of them) by
 * sixteen channels, for every instruction set.  Where AVX-512 is there,
 * s_direct is faster (the CNN step 2.4-2.5 against 2.6-2.7 ms) and this
 * one serves AVX2 machines. */
S_CLONES static void s_small_k(const float *restrict P, size_t rows, size_t ckp, size_t ckk,
                               const float *restrict WT, size_t cout, float *restrict Z)
{
    for (size_t ob = 0; ob < cout; ob += 16)
        for (size_t r = 0; r + 4 <= rows; r += 4)
            s_tile(P, ckp, ckk, WT, cout, Z, r, ob, 4, 1);
}

#if S_DIRECT
/* Z (rows x cout) = P (rows x ckp, first ckk columns) Wp^T for cout a
 * multiple of 16, in AVX-512 tiles of eight rows by 32 channels (both
 * layers of the CNN: K = 9 and 144, N = 16 and 32).  Its 16
 * accumulators need AVX-512's 32 registers.  With K and N this small,
 * OpenBLAS's sgemm spends its time packing; measured here (Zen 5, M 800,
 * K 144, N 32, operands in L2) this kernel reaches 220 GFLOP/s against
 * 96 for the sgemm with the Haswell kernels this machine's
 * OPENBLAS_CORETYPE selects, and about the 208 of OpenBLAS's own AVX-512
 * kernels. */
__attribute__((target("arch=x86-64-v4"))) S_FMA static void
s_direct(const float *restrict P, size_t rows, size_t ckp, size_t ckk, const float *restrict WT,
         size_t cout, float *restrict Z)
{
    size_t ob = 0;
    for (; ob + 32 <= cout; ob += 32) {
        size_t r = 0;
        for (; r + 8 <= rows; r += 8)
            s_tile(P, ckp, ckk, WT, cout, Z, r, ob, 8, 2);
        for (; r < rows; r++)
            s_tile(P, ckp, ckk, WT, cout, Z, r, ob, 1, 2);
    }
    for (; ob < cout; ob += 16) {
        size_t r = 0;
        for (; r + 8 <= rows; r += 8)
            s_tile(P, ckp, ckk, WT, cout, Z, r, ob, 8, 1);
        for (; r < rows; r++)
            s_tile(P, ckp, ckk, WT, cout, Z, r, ob, 1, 1);
    }
}
#endif

int fl_convpool_forward(fl_convpool *cp, const float *Wt, const float *b, const float *X,
                        size_t n, float *Y)
{
    if (!cp)
        abort();
    cp->last_n = 0;
    if (n == 0)
        return FL_OK;
    if (!Wt || !X || !Y)
        return fl_error_set(FL_EINVAL, "convpool forward: NULL weights, input or output");
    if (n > cp->cap)
        return fl_error_set(FL_EINVAL, "convpool forward: %zu rows, more than the %zu the "
                            "block was created for", n, cp->cap);
    const size_t tp = cp->t * cp->ckp, yo = cp->cout * cp->po;
    const int kernel = cp->kernel;
    s_weights(cp, Wt);
    if (kernel != FL_CONVPOOL_KERNEL_SGEMM) /* WT (ckk x cout): Wp transposed */
        for (size_t o = 0; o < cp->cout; o++)
            for (size_t j = 0; j < cp->ckk; j++)
                cp->WT[j * cp->cout + o] = cp->Wp[o * cp->ckp + j];
    for (size_t g0 = 0; g0 < n; g0 += S_GROUP) {
        size_t gn = n - g0 < S_GROUP ? n - g0 : S_GROUP;
        for (size_t i = g0; i < g0 + gn; i++)
            s_patches(cp, X + i * cp->in_sz, cp->P + i * tp);
        /* Z (gn t x C_out) = P_group (gn t x C_in k^2, padded rows) Wp^T */
        if (kernel == FL_CONVPOOL_KERNEL_ONE_VECTOR)
            s_small_k(cp->P + g0 * tp, gn * cp->t, cp->ckp, cp->ckk, cp->WT, cp->cout, cp->Z);
#if S_DIRECT
        else if (kernel == FL_CONVPOOL_KERNEL_DIRECT)
            s_direct(cp->P + g0 * tp, gn * cp->t, cp->ckp, cp->ckk, cp->WT, cp->cout, cp->Z);
#endif
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(gn * cp->t),
                        (int)cp->cout, (int)cp->ckk, 1.0f, cp->P + g0 * tp, (int)cp->ckp,
                        cp->Wp, (int)cp->ckp, 0.0f, cp->Z, (int)cp->cout);
        for (size_t i = 0; i < gn; i++)
            s_pool(cp, cp->Z + i * cp->t * cp->cout, b, Y + (g0 + i) * yo,
                   cp->route + (g0 + i) * yo);
    }
    cp->last_n = n;
    return FL_OK;
}

/* acc[0..ckp) += sum over e < ne of val[e s] * rows[idx[e s]][0..ckp)
 * (rows of ckp floats, ckp a multiple of 16; s the stride of idx and val).
 * Zeros are skipped where a row is several vectors.  The accumulator is
 * held in registers, eight vectors at a time. */
S_CLONES static void s_combine(float *restrict acc, size_t ckp, const float *restrict rows,
                               const uint32_t *restrict idx, const float *restrict val,
                               size_t ne, size_t s)
{
    size_t j = 0;
    for (; j + 128 <= ckp; j += 128) {
        s_v16 a[8], x;
        for (int q = 0; q < 8; q++)
            S_LOAD(a[q], acc + j + 16 * q);
        for (size_t e = 0; e < ne; e++) {
            float v = val[e * s];
            if (v == 0.0f)
                continue;
            const float *r = rows + (size_t)idx[e * s] * ckp + j;
            for (int q = 0; q < 8; q++) {
                S_LOAD(x, r + 16 * q);
                a[q] += v * x;
            }
        }
        for (int q = 0; q < 8; q++)
            S_STORE(acc + j + 16 * q, a[q]);
    }
    for (; j < ckp; j += 16) {
        /* one vector per row (e.g. a first layer's 9 weights): four
         * accumulators, so the adds do not wait on each other */
        s_v16 a[4] = {{0}}, x;
        S_LOAD(a[0], acc + j);
        size_t e = 0;
        for (; e + 4 <= ne; e += 4)
            for (int q = 0; q < 4; q++) {
                S_LOAD(x, rows + (size_t)idx[(e + q) * s] * ckp + j);
                a[q] += val[(e + q) * s] * x;
            }
        for (; e < ne; e++) {
            S_LOAD(x, rows + (size_t)idx[e * s] * ckp + j);
            a[0] += val[e * s] * x;
        }
        a[0] += a[1] + (a[2] + a[3]);
        S_STORE(acc + j, a[0]);
    }
}

/* rows[idx[e s]][0..ckp) += val[e s] * src[0..ckp) for e < ne, skipping
 * zeros; src is held in registers, eight vectors at a time. */
S_CLONES static void s_scatter(float *restrict rows, size_t ckp, const uint32_t *restrict idx,
                               const float *restrict val, size_t ne, size_t s,
                               const float *restrict src)
{
    size_t j = 0;
    for (; j + 128 <= ckp; j += 128) {
        s_v16 w[8], x;
        for (int q = 0; q < 8; q++)
            S_LOAD(w[q], src + j + 16 * q);
        for (size_t e = 0; e < ne; e++) {
            float v = val[e * s];
            if (v == 0.0f)
                continue;
            float *r = rows + (size_t)idx[e * s] * ckp + j;
            for (int q = 0; q < 8; q++) {
                S_LOAD(x, r + 16 * q);
                x += v * w[q];
                S_STORE(r + 16 * q, x);
            }
        }
    }
    for (; j < ckp; j += 16) {
        s_v16 w, x;
        S_LOAD(w, src + j);
        for (size_t e = 0; e < ne; e++) {
            float v = val[e * s];
            if (v == 0.0f)
                continue;
            float *r = rows + (size_t)idx[e * s] * ckp + j;
            S_LOAD(x, r);
            x += v * w;
            S_STORE(r, x);
        }
    }
}

/* acc (16 channels x 16 floats) += the routed sums of 16 channels whose
 * patch rows are one vector each (C_in k^2 <= 16, e.g. a first layer on
 * one image channel).  Window by window, so the four candidate patch rows
 * are in L1 and the sixteen accumulators stay in registers; route and val
 * are window-major with stride s. */
S_CLONES static void s_combine16(float *restrict acc, const float *restrict P,
                                 const uint32_t *restrict route, const float *restrict val,
                                 size_t po, size_t s)
{
    s_v16 a[16], x;
    for (int q = 0; q < 16; q++)
        S_LOAD(a[q], acc + 16 * q);
    for (size_t p = 0; p < po; p++)
        for (int q = 0; q < 16; q++) {
            S_LOAD(x, P + (size_t)route[p * s + q] * 16);
            a[q] += val[p * s + q] * x;
        }
    for (int q = 0; q < 16; q++)
        S_STORE(acc + 16 * q, a[q]);
}

/* The routed gradients of row i, window-major: val[p][o] = dy[p][o] where
 * the pooled output y[p][o] is positive (the ReLU passes it on to the
 * argmax), 0 elsewhere (y and dy in the output layout); with `bias`,
 * bsum[o] their sum over p (the bias gradient), summed in float sixteen
 * channels at a time with two partial sums (as accurate as the weight
 * gradients, which are float sums too), stored as double. */
S_CLONES static void s_vals(fl_convpool *cp, const float *restrict y,
                            const float *restrict dy, int bias)
{
    const size_t co_n = cp->cout, po = cp->po;
    float *restrict val = cp->val;
    double *restrict bs = cp->bsum;
    if (cp->out_nhwc) {
        for (size_t j = 0; j < co_n * po; j++)
            val[j] = y[j] > 0.0f ? dy[j] : 0.0f;
    } else {
        for (size_t o = 0; o < co_n; o++)
            for (size_t p = 0; p < po; p++)
                val[p * co_n + o] = y[o * po + p] > 0.0f ? dy[o * po + p] : 0.0f;
    }
    if (!bias)
        return;
    size_t o = 0;
    for (; o + 16 <= co_n; o += 16) {
        s_v16 a = {0}, c = {0}, x;
        size_t p = 0;
        for (; p + 2 <= po; p += 2) {
            S_LOAD(x, val + p * co_n + o);
            a += x;
            S_LOAD(x, val + (p + 1) * co_n + o);
            c += x;
        }
        if (p < po) {
            S_LOAD(x, val + p * co_n + o);
            a += x;
        }
        a += c;
        for (int q = 0; q < 16; q++)
            bs[o + (size_t)q] = a[q];
    }
    for (; o < co_n; o++) {
        float a = 0.0f;
        for (size_t p = 0; p < po; p++)
            a += val[p * co_n + o];
        bs[o] = a;
    }
}

/* gacc (cout x ckp) += row i's weight gradient, from cp->val. */
static void s_row_grads(fl_convpool *cp, size_t i)
{
    const float *P = cp->P + i * cp->t * cp->ckp;
    const uint32_t *route = cp->route + i * cp->cout * cp->po;
    size_t o = 0;
    if (cp->ckp == 16)
        for (; o + 16 <= cp->cout; o += 16)
            s_combine16(cp->gacc + o * 16, P, route + o, cp->val + o, cp->po, cp->cout);
    for (; o < cp->cout; o++)
        s_combine(cp->gacc + o * cp->ckp, cp->ckp, P, route + o, cp->val + o, cp->po,
                  cp->cout);
}

static int s_check_backward(const fl_convpool *cp, const float *Y, const float *dY, size_t n,
                            const char *what)
{
    if (n != cp->last_n)
        return fl_error_set(FL_EINVAL, "convpool %s: %zu rows, but the last forward pass "
                            "was over %zu; run the forward pass on these rows first",
                            what, n, cp->last_n);
    if (n > 0 && (!Y || !dY))
        return fl_error_set(FL_EINVAL, "convpool %s: NULL output or output gradient", what);
    return FL_OK;
}

int fl_convpool_batch_grad(fl_convpool *cp, const float *Y, const float *dY, size_t n,
                           float *gW, float *gb, int accumulate)
{
    if (!cp)
        abort();
    int rc = s_check_backward(cp, Y, dY, n, "batch gradient");
    if (rc != FL_OK)
        return rc;
    if (!gW || !gb)
        return fl_error_set(FL_EINVAL, "convpool batch gradient: NULL gradient buffer");
    const size_t yo = cp->cout * cp->po;
    memset(cp->gacc, 0, cp->cout * cp->ckp * sizeof *cp->gacc);
    for (size_t o = 0; o < cp->cout; o++)
        if (!accumulate)
            gb[o] = 0.0f;
    for (size_t i = 0; i < n; i++) {
        s_vals(cp, Y + i * yo, dY + i * yo, 1);
        for (size_t o = 0; o < cp->cout; o++)
            gb[o] += (float)cp->bsum[o];
        s_row_grads(cp, i);
    }
    /* gacc's rows are ckp apart: pack them, then reorder */
    for (size_t o = 1; o < cp->cout; o++)
        memmove(cp->gacc + o * cp->ckk, cp->gacc + o * cp->ckp, cp->ckk * sizeof *cp->gacc);
    fl_convpool_to_param_order(cp, cp->gacc, gW, accumulate);
    return FL_OK;
}

int fl_convpool_example_grads(fl_convpool *cp, const float *Y, const float *dY, size_t n,
                              float *G, size_t ldg)
{
    if (!cp)
        abort();
    int rc = s_check_backward(cp, Y, dY, n, "example gradients");
    if (rc != FL_OK)
        return rc;
    const size_t nw = cp->cout * cp->ckk;
    if (n > 0 && (!G || ldg < nw + cp->cout))
        return fl_error_set(FL_EINVAL, "convpool example gradients: NULL output or row "
                            "length %zu below the %zu parameters", ldg, nw + cp->cout);
    const size_t yo = cp->cout * cp->po;
    for (size_t i = 0; i < n; i++) {
        float *g = G + i * ldg;
        s_vals(cp, Y + i * yo, dY + i * yo, 1);
        memset(cp->gacc, 0, cp->cout * cp->ckp * sizeof *cp->gacc);
        s_row_grads(cp, i);
        for (size_t o = 0; o < cp->cout; o++) {
            memcpy(g + o * cp->ckk, cp->gacc + o * cp->ckp, cp->ckk * sizeof *g);
            g[nw + o] = (float)cp->bsum[o];
        }
    }
    return FL_OK;
}

int fl_convpool_input_grad(fl_convpool *cp, const float *Wt, const float *Y, const float *dY,
                           size_t n, float *dX)
{
    if (!cp)
        abort();
    int rc = s_check_backward(cp, Y, dY, n, "input gradient");
    if (rc != FL_OK)
        return rc;
    if (n > 0 && (!Wt || !dX))
        return fl_error_set(FL_EINVAL, "convpool input gradient: NULL weights or output");
    s_weights(cp, Wt);
    const size_t yo = cp->cout * cp->po, k = cp->k, w = cp->w, hw = cp->h * cp->w;
    for (size_t i = 0; i < n; i++) {
        const uint32_t *r = cp->route + i * yo;
        memset(cp->dP, 0, cp->t * cp->ckp * sizeof *cp->dP);
        memset(cp->touched, 0, cp->t);
        s_vals(cp, Y + i * yo, dY + i * yo, 0);
        for (size_t j = 0; j < yo; j++)
            cp->touched[r[j]] |= cp->val[j] != 0.0f;
        for (size_t o = 0; o < cp->cout; o++)
            s_scatter(cp->dP, cp->ckp, r + o, cp->val + o, cp->po, cp->cout,
                      cp->Wp + o * cp->ckp);
        /* col2im of the touched patch rows (the adjoint of s_patches) */
        float *dx = dX + i * cp->in_sz;
        memset(dx, 0, cp->in_sz * sizeof *dx);
        for (size_t t = 0; t < cp->t; t++) {
            if (!cp->touched[t])
                continue;
            const float *row = cp->dP + t * cp->ckp;
            size_t oy = t / cp->cw, ox = t % cp->cw;
            if (cp->in_nhwc) {
                const size_t run = k * cp->cin;
                for (size_t ky = 0; ky < k; ky++)
                    fl_vec_add(dx + ((oy + ky) * w + ox) * cp->cin, row + ky * run, run);
                continue;
            }
            float *dst = dx + oy * w + ox;
            if (k == 3) {
                for (size_t ci = 0; ci < cp->cin; ci++, row += 9, dst += hw) {
                    float *a = dst, *b = dst + w, *c = dst + 2 * w;
                    a[0] += row[0], a[1] += row[1], a[2] += row[2];
                    b[0] += row[3], b[1] += row[4], b[2] += row[5];
                    c[0] += row[6], c[1] += row[7], c[2] += row[8];
                }
                continue;
            }
            for (size_t ci = 0; ci < cp->cin; ci++)
                for (size_t ky = 0; ky < k; ky++)
                    for (size_t kx = 0; kx < k; kx++)
                        dst[ci * hw + ky * w + kx] += *row++;
        }
    }
    return FL_OK;
}
