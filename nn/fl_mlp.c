/*
 * fl_mlp: multilayer perceptron with batched forward/backward passes on
 * OpenBLAS sgemm, summed and per-example gradients (see fl_mlp.h).
 *
 * Layer l (0-based) maps sizes[l] -> sizes[l+1].  Scratch per layer:
 * z[l] (rows x sizes[l+1]) holds the ReLU output of a hidden layer or the
 * logits of the output layer; d[l] (same shape) holds dLoss/dpre-activation.
 * Batches are processed in chunks of at most FL_MLP_CHUNK rows, so scratch
 * is bounded and allocated once (grown only when a larger chunk arrives);
 * no call allocates once the scratch has reached FL_MLP_CHUNK rows.
 *
 * Ghost clipping (fl_mlp_clipped_gradient_sum): for a dense layer the
 * per-example weight gradient is the outer product delta_i a_i^T, so its
 * squared Frobenius norm is ||delta_i||^2 ||a_i||^2 (Goodfellow 2015,
 * "Efficient per-example gradient computations"; Li, Tramer, Liang &
 * Hashimoto 2021, "Large language models can be strong differentially
 * private learners", Sec. 4).  The clipped sum sum_i c_i delta_i a_i^T is
 * then (diag(c) delta)^T A: the same single sgemm per layer as the plain
 * batch gradient, on delta rows scaled by c_i.
 */
#include "nn/fl_mlp.h"
#include "nn/fl_vec.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* 512: a Poisson batch of mean 256 (up to ~350 rows) is one chunk, so its
 * per-layer sgemms run once instead of again on a ragged remainder. */
#define FL_MLP_CHUNK 512

/* Same safety margin as fl_dp_clip_rows (dp/fl_dpsgd.c): the clip factor
 * is shrunk by 1e-6 so float rounding of the scaled delta cannot push an
 * example's contribution above C. */
#define S_CLIP_MARGIN (1.0 - 1e-6)

struct fl_mlp {
    fl_mlp_output kind;
    size_t L;          /* number of layers (num_sizes - 1) */
    size_t *sizes;     /* L + 1 widths */
    size_t *w_off;     /* offset of W of layer l in params */
    size_t *b_off;     /* offset of b of layer l in params */
    size_t num_params;
    float *params;
    size_t cap;        /* rows the scratch can hold */
    float **z;         /* L buffers, cap x sizes[l+1] */
    float **d;         /* L buffers, cap x sizes[l+1] */
    double *nrm;       /* cap: per-example squared gradient norms (ghost) */
    float *xs;         /* cap x sizes[0]: input copy with non-finite rows zeroed */
    unsigned char *bad; /* cap: 1 if an example's norm is not finite */
};

void fl_mlp_free(fl_mlp *m)
{
    if (!m)
        return;
    if (m->z)
        for (size_t l = 0; l < m->L; l++)
            free(m->z[l]);
    if (m->d)
        for (size_t l = 0; l < m->L; l++)
            free(m->d[l]);
    free(m->z);
    free(m->d);
    free(m->nrm);
    free(m->xs);
    free(m->bad);
    free(m->params);
    free(m->sizes);
    free(m->w_off);
    free(m->b_off);
    free(m);
}

int fl_mlp_new(fl_mlp **out, const uint32_t *sizes, size_t num_sizes, fl_mlp_output kind)
{
    int rc = FL_OK;
    fl_mlp *m = NULL;

    if (!out || !sizes)
        return fl_error_set(FL_EINVAL, "fl_mlp_new: out and sizes must not be NULL");
    *out = NULL;
    if (num_sizes < 2)
        return fl_error_set(FL_EINVAL,
                            "fl_mlp_new: %zu layer sizes given; need at least 2 "
                            "(inputs and outputs)", num_sizes);
    if (kind != FL_MLP_OUT_SIGMOID_BCE && kind != FL_MLP_OUT_SOFTMAX_CE)
        return fl_error_set(FL_EINVAL, "fl_mlp_new: unknown output kind %d; use "
                            "FL_MLP_OUT_SIGMOID_BCE or FL_MLP_OUT_SOFTMAX_CE", (int)kind);
    for (size_t i = 0; i < num_sizes; i++)
        if (sizes[i] == 0 || sizes[i] > INT_MAX)
            return fl_error_set(FL_EINVAL, "fl_mlp_new: layer %zu has width %u; widths "
                                "must be in [1, %d]", i, sizes[i], INT_MAX);
    uint32_t k = sizes[num_sizes - 1];
    if (kind == FL_MLP_OUT_SIGMOID_BCE && k != 1)
        return fl_error_set(FL_EINVAL, "fl_mlp_new: sigmoid output needs 1 output unit, "
                            "got %u; use FL_MLP_OUT_SOFTMAX_CE for several classes", k);
    if (kind == FL_MLP_OUT_SOFTMAX_CE && k < 2)
        return fl_error_set(FL_EINVAL, "fl_mlp_new: softmax output needs >= 2 output "
                            "units, got %u; use FL_MLP_OUT_SIGMOID_BCE for one", k);

    m = calloc(1, sizeof *m);
    if (!m) {
        rc = fl_error_set(FL_ENOMEM, "fl_mlp_new: out of memory");
        goto done;
    }
    m->kind = kind;
    m->L = num_sizes - 1;
    m->sizes = calloc(num_sizes, sizeof *m->sizes);
    m->w_off = calloc(m->L, sizeof *m->w_off);
    m->b_off = calloc(m->L, sizeof *m->b_off);
    m->z = calloc(m->L, sizeof *m->z);
    m->d = calloc(m->L, sizeof *m->d);
    if (!m->sizes || !m->w_off || !m->b_off || !m->z || !m->d) {
        rc = fl_error_set(FL_ENOMEM, "fl_mlp_new: out of memory");
        goto done;
    }
    for (size_t i = 0; i < num_sizes; i++)
        m->sizes[i] = sizes[i];
    size_t total = 0;
    for (size_t l = 0; l < m->L; l++) {
        size_t in = m->sizes[l], o = m->sizes[l + 1];
        if (o > (SIZE_MAX / sizeof(float) - total) / (in + 1)) {
            rc = fl_error_set(FL_EINVAL, "fl_mlp_new: parameter count overflows at "
                              "layer %zu; use smaller layers", l);
            goto done;
        }
        m->w_off[l] = total;
        m->b_off[l] = total + o * in;
        total += o * (in + 1);
    }
    m->num_params = total;
    m->params = calloc(total, sizeof *m->params);
    if (!m->params) {
        rc = fl_error_set(FL_ENOMEM, "fl_mlp_new: out of memory for %zu parameters", total);
        goto done;
    }
    *out = m;
    m = NULL;
done:
    fl_mlp_free(m);
    return rc;
}

size_t fl_mlp_num_params(const fl_mlp *m) { return m->num_params; }
size_t fl_mlp_num_inputs(const fl_mlp *m) { return m->sizes[0]; }
size_t fl_mlp_num_outputs(const fl_mlp *m) { return m->sizes[m->L]; }
float *fl_mlp_params(fl_mlp *m) { return m->params; }

void fl_mlp_init(fl_mlp *m, const unsigned char seed[32])
{
    /* The random bytes are generated straight into the parameter buffer
     * (one 32-bit word per parameter, same size as a float) and converted
     * in place, so initialisation needs no allocation and cannot fail. */
    randombytes_buf_deterministic(m->params, m->num_params * sizeof(float), seed);
    for (size_t l = 0; l < m->L; l++) {
        size_t in = m->sizes[l], o = m->sizes[l + 1];
        double limit = (l + 1 < m->L) ? sqrt(6.0 / (double)in)               /* He */
                                      : sqrt(6.0 / (double)(in + o));         /* Glorot */
        float *w = m->params + m->w_off[l];
        for (size_t i = 0; i < o * in; i++) {
            uint32_t r;
            memcpy(&r, &w[i], sizeof r);
            double u = (double)(r >> 8) * (1.0 / 16777216.0); /* [0,1), 24 bits */
            w[i] = (float)((2.0 * u - 1.0) * limit);
        }
        memset(m->params + m->b_off[l], 0, o * sizeof(float));
    }
}

/* Makes the scratch hold at least `rows` rows (rows <= FL_MLP_CHUNK). */
static int s_reserve(fl_mlp *m, size_t rows)
{
    if (rows <= m->cap)
        return FL_OK;
    if (m->sizes[0] > SIZE_MAX / sizeof(float) / rows)
        return fl_error_set(FL_ENOMEM, "fl_mlp: scratch size overflows");
    double *nrm = malloc(rows * sizeof *nrm);
    float *xs = malloc(rows * m->sizes[0] * sizeof *xs);
    unsigned char *bad = malloc(rows);
    if (!nrm || !xs || !bad) {
        free(nrm);
        free(xs);
        free(bad);
        return fl_error_set(FL_ENOMEM, "fl_mlp: out of memory for %zu-row scratch", rows);
    }
    free(m->nrm);
    free(m->xs);
    free(m->bad);
    m->nrm = nrm;
    m->xs = xs;
    m->bad = bad;
    for (size_t l = 0; l < m->L; l++) {
        size_t w = m->sizes[l + 1];
        if (w > SIZE_MAX / sizeof(float) / rows)
            return fl_error_set(FL_ENOMEM, "fl_mlp: scratch size overflows");
        float *z = malloc(rows * w * sizeof(float));
        float *d = malloc(rows * w * sizeof(float));
        if (!z || !d) {
            free(z);
            free(d);
            return fl_error_set(FL_ENOMEM, "fl_mlp: out of memory for %zu-row scratch", rows);
        }
        free(m->z[l]);
        free(m->d[l]);
        m->z[l] = z;
        m->d[l] = d;
    }
    m->cap = rows;
    return FL_OK;
}

static int s_check_labels(const fl_mlp *m, const int32_t *y, size_t n)
{
    int32_t k = (m->kind == FL_MLP_OUT_SIGMOID_BCE) ? 2 : (int32_t)m->sizes[m->L];
    for (size_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k)
            return fl_error_set(FL_EINVAL, "fl_mlp: label y[%zu] = %d is outside [0, %d); "
                                "check the label column and the model's output width",
                                i, (int)y[i], (int)k);
    return FL_OK;
}

/* Forward pass over n <= cap rows of X. */
static void s_forward(fl_mlp *m, const float *X, size_t n)
{
    const float *a = X;
    for (size_t l = 0; l < m->L; l++) {
        size_t in = m->sizes[l], o = m->sizes[l + 1];
        const float *W = m->params + m->w_off[l];
        const float *b = m->params + m->b_off[l];
        float *z = m->z[l];
        for (size_t i = 0; i < n; i++)
            memcpy(z + i * o, b, o * sizeof(float));
        /* z (n x o) += a (n x in) * W^T (in x o) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)o, (int)in,
                    1.0f, a, (int)in, W, (int)in, 1.0f, z, (int)o);
        if (l + 1 < m->L)
            fl_vec_relu(z, n * o);
        a = z;
    }
}

double fl_mlp_loss_delta(fl_mlp_output kind, const float *z, const int32_t *y, size_t n,
                         size_t k, float *d, float *losses)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double loss;
        if (kind == FL_MLP_OUT_SIGMOID_BCE) {
            /* BCE with logits: max(z,0) - z*y + log1p(exp(-|z|)), stable for any z. */
            double zi = z[i], yi = (double)y[i];
            loss = fmax(zi, 0.0) - zi * yi + log1p(exp(-fabs(zi)));
            double p = zi >= 0.0 ? 1.0 / (1.0 + exp(-zi)) : exp(zi) / (1.0 + exp(zi));
            d[i] = (float)(p - yi);
        } else {
            /* Softmax cross-entropy via log-sum-exp: loss = lse(z) - z_y. */
            const float *zr = z + i * k;
            float *dr = d + i * k;
            double mx = zr[0];
            for (size_t j = 1; j < k; j++)
                mx = fmax(mx, (double)zr[j]);
            double s = 0.0;
            for (size_t j = 0; j < k; j++)
                s += exp((double)zr[j] - mx);
            double lse = mx + log(s);
            loss = lse - (double)zr[y[i]];
            for (size_t j = 0; j < k; j++)
                dr[j] = (float)(exp((double)zr[j] - lse) - (j == (size_t)y[i] ? 1.0 : 0.0));
        }
        if (losses)
            losses[i] = (float)loss;
        sum += loss;
    }
    return sum;
}

/* From the logits, per-example losses (optional) and the output delta
 * dLoss/dlogits into d[L-1]; returns the summed loss. */
static double s_output_delta(fl_mlp *m, const int32_t *y, size_t n, float *losses)
{
    return fl_mlp_loss_delta(m->kind, m->z[m->L - 1], y, n, m->sizes[m->L], m->d[m->L - 1],
                             losses);
}

/* Back-propagates d[L-1] to every d[l] (batched sgemm). */
static void s_backward(fl_mlp *m, size_t n)
{
    for (size_t l = m->L - 1; l > 0; l--) {
        size_t in = m->sizes[l], o = m->sizes[l + 1];
        const float *W = m->params + m->w_off[l];
        float *dp = m->d[l - 1];
        const float *zp = m->z[l - 1];
        /* d[l-1] (n x in) = d[l] (n x o) * W (o x in), then ReLU mask */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)o,
                    1.0f, m->d[l], (int)o, W, (int)in, 0.0f, dp, (int)in);
        fl_vec_relu_mask(dp, zp, n * in);
    }
}

/* Writes probabilities for n rows from the logits. */
static void s_probs(const fl_mlp *m, size_t n, float *probs)
{
    size_t k = m->sizes[m->L];
    const float *z = m->z[m->L - 1];
    for (size_t i = 0; i < n; i++) {
        if (m->kind == FL_MLP_OUT_SIGMOID_BCE) {
            double zi = z[i];
            probs[i] = (float)(zi >= 0.0 ? 1.0 / (1.0 + exp(-zi)) : exp(zi) / (1.0 + exp(zi)));
        } else {
            const float *zr = z + i * k;
            double mx = zr[0], s = 0.0;
            for (size_t j = 1; j < k; j++)
                mx = fmax(mx, (double)zr[j]);
            for (size_t j = 0; j < k; j++)
                s += exp((double)zr[j] - mx);
            for (size_t j = 0; j < k; j++)
                probs[i * k + j] = (float)(exp((double)zr[j] - mx) / s);
        }
    }
}

static size_t s_chunk(size_t remaining)
{
    return remaining < FL_MLP_CHUNK ? remaining : FL_MLP_CHUNK;
}

int fl_mlp_predict(fl_mlp *m, const float *X, size_t n, float *probs)
{
    int rc = FL_OK;
    if (n == 0)
        return FL_OK;
    if (!X || !probs)
        return fl_error_set(FL_EINVAL, "fl_mlp_predict: X and probs must not be NULL");
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in = m->sizes[0], k = m->sizes[m->L];
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        s_forward(m, X + off * in, c);
        s_probs(m, c, probs + off * k);
    }
done:
    return rc;
}

int fl_mlp_gradient(fl_mlp *m, const float *X, const int32_t *y, size_t n, float *grad_sum,
                    double *loss_sum)
{
    int rc = FL_OK;
    if (!grad_sum || !loss_sum || (n > 0 && (!X || !y)))
        return fl_error_set(FL_EINVAL, "fl_mlp_gradient: X, y, grad_sum and loss_sum "
                            "must not be NULL");
    memset(grad_sum, 0, m->num_params * sizeof(float));
    *loss_sum = 0.0;
    if (n == 0)
        return FL_OK;
    rc = s_check_labels(m, y, n);
    if (rc < 0)
        goto done;
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in0 = m->sizes[0];
    double total = 0.0;
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * in0;
        s_forward(m, Xc, c);
        total += s_output_delta(m, y + off, c, NULL);
        s_backward(m, c);
        for (size_t l = 0; l < m->L; l++) {
            size_t in = m->sizes[l], o = m->sizes[l + 1];
            const float *a = l == 0 ? Xc : m->z[l - 1];
            const float *d = m->d[l];
            float *gW = grad_sum + m->w_off[l];
            float *gb = grad_sum + m->b_off[l];
            /* gW (o x in) += d^T (o x c) * a (c x in) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)o, (int)in, (int)c,
                        1.0f, d, (int)o, a, (int)in, 1.0f, gW, (int)in);
            fl_vec_add_col_sums(gb, d, c, o);
        }
    }
    *loss_sum = total;
done:
    return rc;
}

int fl_mlp_example_gradients(fl_mlp *m, const float *X, const int32_t *y, size_t n, float *G,
                             float *losses)
{
    int rc = FL_OK;
    if (n == 0)
        return FL_OK;
    if (!X || !y || !G)
        return fl_error_set(FL_EINVAL, "fl_mlp_example_gradients: X, y and G must not be NULL");
    rc = s_check_labels(m, y, n);
    if (rc < 0)
        goto done;
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in0 = m->sizes[0], P = m->num_params;
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * in0;
        s_forward(m, Xc, c);
        s_output_delta(m, y + off, c, losses ? losses + off : NULL);
        s_backward(m, c);
        for (size_t i = 0; i < c; i++) {
            float *g = G + (off + i) * P;
            for (size_t l = 0; l < m->L; l++) {
                size_t in = m->sizes[l], o = m->sizes[l + 1];
                const float *a = (l == 0 ? Xc : m->z[l - 1]) + i * in;
                const float *d = m->d[l] + i * o;
                float *gW = g + m->w_off[l];
                /* row i of G: outer product delta_i a_i^T, then delta_i for b */
                for (size_t j = 0; j < o; j++) {
                    float dj = d[j];
                    float *row = gW + j * in;
                    for (size_t t = 0; t < in; t++)
                        row[t] = dj * a[t];
                }
                memcpy(g + m->b_off[l], d, o * sizeof(float));
            }
        }
    }
done:
    return rc;
}

/* Squared per-example gradient norms of the c rows in the scratch (after
 * s_forward and s_backward on input Xc) into m->nrm:
 *   ||g_i||^2 = sum_l ||delta_i^l||^2 (||a_i^l||^2 + 1)
 * where a^l is layer l's input (Xc for l = 0) and the "+ 1" is the bias,
 * whose gradient is delta_i^l itself.  Exact (up to rounding) for dense
 * layers because the weight gradient delta_i a_i^T has Frobenius norm
 * ||delta_i|| ||a_i|| (Goodfellow 2015; Li et al. 2021, Sec. 4).
 * Accumulated in double; a non-finite entry anywhere gives a non-finite
 * norm (inf * 0 is NaN), which the caller treats as "zero the example". */
static void s_ghost_norms(fl_mlp *m, const float *Xc, size_t c)
{
    for (size_t i = 0; i < c; i++)
        m->nrm[i] = 0.0;
    for (size_t l = 0; l < m->L; l++) {
        size_t in = m->sizes[l], o = m->sizes[l + 1];
        const float *A = l == 0 ? Xc : m->z[l - 1];
        const float *D = m->d[l];
        for (size_t i = 0; i < c; i++) {
            double sa = fl_vec_sumsq(A + i * in, in), sd = fl_vec_sumsq(D + i * o, o);
            m->nrm[i] += sd * (sa + 1.0);
        }
    }
}

int fl_mlp_example_norms(fl_mlp *m, const float *X, const int32_t *y, size_t n, double *norms)
{
    int rc = FL_OK;
    if (n == 0)
        return FL_OK;
    if (!X || !y || !norms)
        return fl_error_set(FL_EINVAL, "fl_mlp_example_norms: X, y and norms must not be NULL");
    rc = s_check_labels(m, y, n);
    if (rc < 0)
        goto done;
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in0 = m->sizes[0];
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * in0;
        s_forward(m, Xc, c);
        s_output_delta(m, y + off, c, NULL);
        s_backward(m, c);
        s_ghost_norms(m, Xc, c);
        for (size_t i = 0; i < c; i++)
            norms[off + i] = sqrt(m->nrm[i]);
    }
done:
    return rc;
}

int fl_mlp_clipped_gradient_sum(fl_mlp *m, const float *X, const int32_t *y, size_t n,
                                double clip, float *grad_sum, size_t *clipped,
                                double *loss_sum)
{
    return fl_mlp_clipped_gradient_sum_ex(m, X, y, n, clip, grad_sum, clipped, loss_sum, NULL);
}

int fl_mlp_clipped_gradient_sum_ex(fl_mlp *m, const float *X, const int32_t *y, size_t n,
                                   double clip, float *grad_sum, size_t *clipped,
                                   double *loss_sum, const fl_mlp_sum_opts *opts)
{
    int rc = FL_OK;
    size_t count = 0;
    double total = 0.0;
    const int acc = opts && opts->accumulate;
    int (*hook)(void *) = opts ? opts->before_write : NULL;

    if (clipped)
        *clipped = 0;
    if (loss_sum)
        *loss_sum = 0.0;
    if (!isfinite(clip) || !(clip > 0.0))
        return fl_error_set(FL_EINVAL, "fl_mlp_clipped_gradient_sum: clip norm C=%g must be "
                            "finite and > 0", clip);
    if (!grad_sum || (n > 0 && (!X || !y)))
        return fl_error_set(FL_EINVAL, "fl_mlp_clipped_gradient_sum: X, y and grad_sum "
                            "must not be NULL");
    if (n == 0) {
        if (hook && (rc = hook(opts->ctx)) != FL_OK)
            memset(grad_sum, 0, m->num_params * sizeof(float));
        else if (!acc)
            memset(grad_sum, 0, m->num_params * sizeof(float));
        return rc;
    }
    rc = s_check_labels(m, y, n);
    if (rc < 0)
        goto done;
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in0 = m->sizes[0];
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * in0;
        /* (a) forward, (b) every layer's delta (each needs only W of the
         * layer above, never a gradient), (c) per-example norms. */
        s_forward(m, Xc, c);
        total += s_output_delta(m, y + off, c, NULL);
        s_backward(m, c);
        s_ghost_norms(m, Xc, c);

        /* (c) clip factors c_i = min(1, C/||g_i||) (Abadi et al. 2016,
         * Algorithm 1, "clip gradient"), the same rule and margin as
         * fl_dp_clip_rows, so each example's contribution to the sum has
         * L2 norm <= C: the sensitivity of the Gaussian mechanism applied
         * by dp/fl_dpsgd.  An example whose norm is not finite (NaN or
         * infinity in its activations or deltas) contributes nothing: its
         * delta rows AND its activation rows are zeroed, since 0 * inf in
         * the sgemm below would be NaN. */
        int any_bad = 0;
        for (size_t i = 0; i < c; i++) {
            double ss = m->nrm[i];
            double norm = sqrt(ss);
            float f = 1.0f;
            m->bad[i] = 0;
            if (!isfinite(ss)) {
                m->bad[i] = 1;
                any_bad = 1;
                f = 0.0f;
                count++;
            } else if (norm > clip) {
                f = (float)((clip / norm) * S_CLIP_MARGIN);
                count++;
            }
            if (f != 1.0f)
                for (size_t l = 0; l < m->L; l++) {
                    size_t o = m->sizes[l + 1];
                    float *d = m->d[l] + i * o;
                    if (m->bad[i])
                        memset(d, 0, o * sizeof(float));
                    else
                        fl_vec_scale(d, o, f);
                }
        }
        const float *A0 = Xc;
        if (any_bad) {
            memcpy(m->xs, Xc, c * in0 * sizeof(float));
            for (size_t i = 0; i < c; i++) {
                if (!m->bad[i])
                    continue;
                memset(m->xs + i * in0, 0, in0 * sizeof(float));
                for (size_t l = 0; l + 1 < m->L; l++)
                    memset(m->z[l] + i * m->sizes[l + 1], 0, m->sizes[l + 1] * sizeof(float));
            }
            A0 = m->xs;
        }

        if (off == 0) {
            if (hook) {
                int (*h)(void *) = hook;
                hook = NULL; /* once */
                if ((rc = h(opts->ctx)) != FL_OK)
                    goto done;
            }
            if (!acc)
                memset(grad_sum, 0, m->num_params * sizeof(float));
        }
        /* (d) one sgemm per layer over the clip-scaled deltas:
         * G_W (o x in) += (diag(c) delta)^T (o x c) * A (c x in). */
        for (size_t l = 0; l < m->L; l++) {
            size_t in = m->sizes[l], o = m->sizes[l + 1];
            const float *a = l == 0 ? A0 : m->z[l - 1];
            const float *d = m->d[l];
            float *gW = grad_sum + m->w_off[l];
            float *gb = grad_sum + m->b_off[l];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)o, (int)in, (int)c,
                        1.0f, d, (int)o, a, (int)in, 1.0f, gW, (int)in);
            fl_vec_add_col_sums(gb, d, c, o);
        }
    }
    if (clipped)
        *clipped = count;
    if (loss_sum)
        *loss_sum = total;
done:
    if (rc != FL_OK) {
        if (hook) /* an error before the hook ran: let the other writer finish first */
            (void)hook(opts->ctx);
        memset(grad_sum, 0, m->num_params * sizeof(float));
    }
    return rc;
}

void fl_mlp_set_blas_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}

int fl_mlp_blas_threads(void)
{
    return openblas_get_num_threads();
}

int fl_mlp_evaluate(fl_mlp *m, const float *X, const int32_t *y, size_t n, double *mean_loss,
                    float *probs)
{
    int rc = FL_OK;
    if (n == 0)
        return fl_error_set(FL_EINVAL, "fl_mlp_evaluate: empty dataset; the mean loss of "
                            "zero examples is undefined");
    if (!X || !y || !mean_loss)
        return fl_error_set(FL_EINVAL, "fl_mlp_evaluate: X, y and mean_loss must not be NULL");
    rc = s_check_labels(m, y, n);
    if (rc < 0)
        goto done;
    rc = s_reserve(m, s_chunk(n));
    if (rc < 0)
        goto done;
    size_t in = m->sizes[0], k = m->sizes[m->L];
    double total = 0.0;
    for (size_t off = 0; off < n; off += FL_MLP_CHUNK) {
        size_t c = s_chunk(n - off);
        s_forward(m, X + off * in, c);
        total += s_output_delta(m, y + off, c, NULL);
        if (probs)
            s_probs(m, c, probs + off * k);
    }
    *mean_loss = total / (double)n;
done:
    return rc;
}
