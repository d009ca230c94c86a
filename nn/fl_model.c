/*
 * fl_model: sequential conv / pool / dense models (see fl_model.h).  An
 * MLP spec is handed to nn/fl_mlp whole; everything below is the path for
 * specs with convolution or pooling.
 *
 * Layer l (0-based) reads the activation of layer l-1 (the input X for
 * l = 0) and writes a[l] (rows x out_sz): the ReLU output of a conv or
 * hidden dense layer, the pooled values of a pool layer, the logits of
 * the last layer.  d[l] (same shape) holds dLoss/d(pre-activation) of a
 * conv or dense layer, dLoss/d(output) of a pool layer.  Activations are
 * NCHW per row, so a dense layer after conv/pool reads its input already
 * flattened in C, H, W order.  A conv layer followed by a pool layer runs
 * as one fl_convpool block writing the pool layer's a (the conv layer has
 * no a or d of its own); between two such blocks a and d are NHWC.
 *
 * All scratch is sized for FL_MODEL_CHUNK rows and allocated on the first
 * call that needs it (the conv layers' own scratch at creation); later
 * calls allocate nothing, which matters on machines where touching fresh
 * memory is far slower than reusing it (docs/performance.md).
 */
#include "nn/fl_model.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fl_conv.h"
#include "nn/fl_convpool.h"
#include "nn/fl_mlp.h"
#include "nn/fl_vec.h"

/* Same safety margin as fl_dp_clip_rows (dp/fl_dpsgd.c) and fl_mlp: the
 * clip factor is shrunk by 1e-6 so float rounding of the scaled deltas
 * cannot push an example's contribution above C. */
#define S_CLIP_MARGIN (1.0 - 1e-6)

/* Largest conv layer (weights + bias, in floats) whose per-example
 * gradients are kept, FL_MODEL_CHUNK rows of them: 256 KiB a row. */
#define S_KEEP_G_ROW_MAX ((size_t)64 << 10)

typedef struct {
    uint32_t kind;               /* fl_layer_kind */
    size_t ic, ih, iw, in_sz;    /* input shape C x H x W and C*H*W */
    size_t oc, oh, ow, out_sz;   /* output shape */
    size_t k;                    /* conv kernel */
    size_t w_off, b_off, nw;     /* parameter offsets, number of weights */
    int relu;                    /* conv, or dense that is not last */
    fl_conv2d *conv;             /* conv layers not fused with a pool */
    fl_convpool *cp;             /* conv layer fused with the pool layer after it */
    int fused_pool;              /* pool layer computed by the conv before it */
    int keep_g;                  /* conv whose norms are explicit: keep G_i */
    float *G;                    /* keep_g: cap x (nw + oc) per-example gradients */
    float *a;                    /* cap x out_sz activations */
    float *d;                    /* cap x out_sz deltas */
    size_t *argmax;              /* pool: cap x out_sz */
} s_layer;

struct fl_model {
    fl_model_spec spec;
    fl_mlp *mlp;                 /* MLP specs: everything is delegated */
    size_t L;
    s_layer layers[FL_SPEC_MAX_LAYERS];
    size_t first_param;          /* first layer with parameters */
    size_t num_params, n_in, n_out;
    float *params;
    size_t cap;                  /* rows the scratch holds (0 or FL_MODEL_CHUNK) */
    double *nrm;                 /* cap: per-example squared gradient norms */
    double *sq;                  /* cap: one conv layer's squared norms */
    float *xs;                   /* cap x n_in: input copy with zeroed rows */
    unsigned char *bad;          /* cap: 1 if an example's norm is not finite */
    float *cf;                   /* cap: clip factors */
    float *gtmp;                 /* largest conv layer's weights + bias */
};

void fl_model_free(fl_model *m)
{
    if (!m)
        return;
    fl_mlp_free(m->mlp);
    for (size_t l = 0; l < m->L; l++) {
        fl_conv2d_free(m->layers[l].conv);
        fl_convpool_free(m->layers[l].cp);
        free(m->layers[l].a);
        free(m->layers[l].d);
        free(m->layers[l].argmax);
        free(m->layers[l].G);
    }
    free(m->params);
    free(m->nrm);
    free(m->sq);
    free(m->xs);
    free(m->bad);
    free(m->cf);
    free(m->gtmp);
    free(m);
}

/* Which conv layers run fused with the pool after them (fl_convpool), and
 * the output extent need_h/need_w each layer must compute.  A fused block
 * is computed only where the layers above read it: a dense layer reads
 * its whole input, a fused block with a ph x pw pool output reads the
 * top-left (2ph + k - 1) x (2pw + k - 1) of its input, and any other
 * layer its whole input.  Since every layer's output position depends
 * only on the input positions at or below-right of it (top-left
 * aligned), dropping what is never read changes no output and no
 * gradient: e.g. the CNN computes conv 1 on 24 x 24 (not 26 x 26)
 * and conv 2 on 10 x 10 (not 11 x 11: the pool drops the odd edge). */
static int s_plan(const fl_model_spec *spec, int fuse[], size_t need_h[], size_t need_w[])
{
    int rc;
    size_t L = spec->num_layers;
    size_t nat_h[FL_SPEC_MAX_LAYERS], nat_w[FL_SPEC_MAX_LAYERS];
    uint32_t c = spec->in_c, h, w; /* c: layer l's input channels */
    for (size_t l = 0; l < L; l++) {
        const fl_layer_spec *ls = &spec->layers[l];
        /* fused blocks keep per-example gradients: the store must fit */
        fuse[l] = ls->kind == FL_LAYER_CONV && l + 1 < L &&
                  spec->layers[l + 1].kind == FL_LAYER_POOL &&
                  (size_t)ls->units * c * ls->kernel * ls->kernel + ls->units <=
                      S_KEEP_G_ROW_MAX;
        if ((rc = fl_model_spec_shape(spec, (int)l, &c, &h, &w)) != FL_OK) /* layer l's output */
            return rc;
        nat_h[l] = h, nat_w[l] = w;
    }
    need_h[L - 1] = nat_h[L - 1], need_w[L - 1] = nat_w[L - 1];
    for (size_t l = L - 1; l > 0; l--) {
        if (spec->layers[l].kind == FL_LAYER_POOL && fuse[l - 1]) {
            size_t k = spec->layers[l - 1].kernel;
            need_h[l - 1] = 2 * need_h[l], need_w[l - 1] = 2 * need_w[l];
            if (l >= 2)
                need_h[l - 2] = need_h[l - 1] + k - 1, need_w[l - 2] = need_w[l - 1] + k - 1;
            if (--l == 0) /* the block's conv was handled with its pool */
                break;
        } else {
            need_h[l - 1] = nat_h[l - 1], need_w[l - 1] = nat_w[l - 1];
        }
    }
    return FL_OK;
}

int fl_model_new(fl_model **out, const fl_model_spec *spec)
{
    int rc = FL_OK;
    fl_model *m = NULL;

    if (!out || !spec)
        return fl_error_set(FL_EINVAL, "fl_model_new: out and spec must not be NULL");
    *out = NULL;
    if ((rc = fl_model_spec_validate(spec)) != FL_OK)
        return fl_error_wrap(rc, "fl_model_new");
    m = calloc(1, sizeof *m);
    if (!m)
        return fl_error_set(FL_ENOMEM, "fl_model_new: out of memory");
    m->spec = *spec;
    m->n_in = fl_model_spec_num_inputs(spec);
    m->n_out = fl_model_spec_num_outputs(spec);
    m->num_params = fl_model_spec_num_params(spec);

    if (fl_model_spec_is_mlp(spec)) {
        uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
        size_t ns = 0;
        if ((rc = fl_model_spec_to_sizes(spec, sizes, &ns)) != FL_OK ||
            (rc = fl_mlp_new(&m->mlp, sizes, ns, (fl_mlp_output)spec->output_kind)) != FL_OK)
            goto done;
        *out = m;
        return FL_OK;
    }

    m->L = spec->num_layers;
    size_t c = spec->in_c, h = spec->in_h, w = spec->in_w, off = 0, gmax = 0;
    int fuse[FL_SPEC_MAX_LAYERS];
    size_t need_h[FL_SPEC_MAX_LAYERS], need_w[FL_SPEC_MAX_LAYERS];
    if ((rc = s_plan(spec, fuse, need_h, need_w)) != FL_OK) {
        rc = fl_error_wrap(rc, "fl_model_new");
        goto done;
    }
    m->first_param = m->L;
    for (size_t l = 0; l < m->L; l++) {
        const fl_layer_spec *ls = &spec->layers[l];
        s_layer *y = &m->layers[l];
        y->kind = ls->kind;
        y->ic = c, y->ih = h, y->iw = w, y->in_sz = c * h * w;
        switch (ls->kind) {
        case FL_LAYER_CONV:
            y->k = ls->kernel;
            y->oc = ls->units, y->oh = h - y->k + 1, y->ow = w - y->k + 1;
            y->nw = y->oc * c * y->k * y->k;
            y->relu = 1;
            if (fuse[l]) {
                /* conv + ReLU + pool as one block, computed on the extent
                 * read above it (s_plan); its per-example gradients are
                 * formed from the routed deltas and kept */
                size_t ph = need_h[l + 1], pw = need_w[l + 1];
                y->oh = 2 * ph, y->ow = 2 * pw;
                y->keep_g = 1;
                if (y->nw + y->oc > gmax)
                    gmax = y->nw + y->oc;
                /* channels innermost between two blocks: the cheaper layout
                 * for both (fl_convpool.h); NCHW wherever another kind of
                 * layer, or the model's input, is on the other side */
                unsigned lay = (l > 0 && m->layers[l - 1].fused_pool ? FL_CONVPOOL_IN_NHWC : 0) |
                               (l + 2 < m->L && fuse[l + 2] ? FL_CONVPOOL_OUT_NHWC : 0);
                if ((rc = fl_convpool_new(&y->cp, c, y->oc, y->k, h, w, ph, pw,
                                          FL_MODEL_CHUNK, lay)) != FL_OK) {
                    rc = fl_error_wrap(rc, "fl_model_new: layer %zu (conv %zu %zu)", l + 1,
                                       y->oc, y->k);
                    goto done;
                }
                break;
            }
            if ((rc = fl_conv2d_new(&y->conv, c, y->oc, y->k, h, w)) != FL_OK) {
                rc = fl_error_wrap(rc, "fl_model_new: layer %zu (conv %zu %zu)", l + 1, y->oc,
                                   y->k);
                goto done;
            }
            if (y->nw + y->oc > gmax)
                gmax = y->nw + y->oc;
            /* Where the explicit norm is the cheaper one (Bu et al. 2022's
             * rule, fl_conv2d_norm_choice), the per-example gradients it
             * forms are kept, so the clipped sum is one sgemv over them
             * instead of a second im2col + sgemm pass over scaled deltas
             * (the "book-keeping" idea of Bu et al. 2023, "Differentially
             * private optimization on large model at small cost"). */
            y->keep_g = fl_conv2d_norm_choice(y->conv) == FL_CONV_NORM_EXPLICIT &&
                        y->nw + y->oc <= S_KEEP_G_ROW_MAX;
            break;
        case FL_LAYER_POOL:
            y->oc = c, y->oh = h / 2, y->ow = w / 2;
            y->fused_pool = l > 0 && m->layers[l - 1].cp != NULL;
            break;
        default: /* FL_LAYER_DENSE (the spec is valid) */
            y->oc = ls->units, y->oh = 1, y->ow = 1;
            y->nw = y->oc * y->in_sz;
            y->relu = l + 1 < m->L;
            break;
        }
        y->out_sz = y->oc * y->oh * y->ow;
        if (y->in_sz > INT_MAX / FL_MODEL_CHUNK || y->out_sz > INT_MAX / FL_MODEL_CHUNK) {
            rc = fl_error_set(FL_EINVAL, "fl_model_new: layer %zu has %zu inputs and %zu "
                              "outputs per example, too many for 32-bit BLAS sizes over %d "
                              "rows; use a smaller layer", l + 1, y->in_sz, y->out_sz,
                              FL_MODEL_CHUNK);
            goto done;
        }
        if (ls->kind != FL_LAYER_POOL) {
            y->w_off = off;
            y->b_off = off + y->nw;
            off += y->nw + y->oc;
            if (m->first_param == m->L)
                m->first_param = l;
        }
        c = y->oc, h = y->oh, w = y->ow;
    }
    if (off != m->num_params) { /* the spec module and this layout must agree */
        rc = fl_error_set(FL_EINVAL, "fl_model_new: layout gives %zu parameters but the "
                          "spec %zu", off, m->num_params);
        goto done;
    }
    m->params = calloc(m->num_params, sizeof *m->params);
    m->gtmp = malloc((gmax ? gmax : 1) * sizeof *m->gtmp);
    if (!m->params || !m->gtmp) {
        rc = fl_error_set(FL_ENOMEM, "fl_model_new: out of memory for %zu parameters",
                          m->num_params);
        goto done;
    }
    *out = m;
    m = NULL;
done:
    fl_model_free(m);
    return rc;
}

const fl_model_spec *fl_model_spec_of(const fl_model *m) { return &m->spec; }
size_t fl_model_num_params(const fl_model *m) { return m->num_params; }
size_t fl_model_num_inputs(const fl_model *m) { return m->n_in; }
size_t fl_model_num_outputs(const fl_model *m) { return m->n_out; }

float *fl_model_params(fl_model *m)
{
    return m->mlp ? fl_mlp_params(m->mlp) : m->params;
}

void fl_model_init(fl_model *m, const unsigned char seed[32])
{
    if (m->mlp) {
        fl_mlp_init(m->mlp, seed);
        return;
    }
    /* As fl_mlp_init: one 32-bit word of randombytes_buf_deterministic
     * output per parameter, generated in place and mapped to a 24-bit
     * uniform u in [0,1), weight (2u - 1) * limit. */
    randombytes_buf_deterministic(m->params, m->num_params * sizeof(float), seed);
    for (size_t l = 0; l < m->L; l++) {
        const s_layer *y = &m->layers[l];
        if (y->kind == FL_LAYER_POOL)
            continue;
        size_t fan_in = y->nw / y->oc; /* C_in k^2 (conv) or inputs (dense) */
        double limit = l + 1 < m->L ? sqrt(6.0 / (double)fan_in)                 /* He */
                                    : sqrt(6.0 / (double)(fan_in + y->oc));      /* Glorot */
        float *wt = m->params + y->w_off;
        for (size_t i = 0; i < y->nw; i++) {
            uint32_t r;
            memcpy(&r, &wt[i], sizeof r);
            double u = (double)(r >> 8) * (1.0 / 16777216.0);
            wt[i] = (float)((2.0 * u - 1.0) * limit);
        }
        memset(m->params + y->b_off, 0, y->oc * sizeof(float));
    }
}

/* Allocates the FL_MODEL_CHUNK-row scratch on first use. */
static int s_reserve(fl_model *m)
{
    const size_t rows = FL_MODEL_CHUNK;
    if (m->cap)
        return FL_OK;
    m->nrm = malloc(rows * sizeof *m->nrm);
    m->sq = malloc(rows * sizeof *m->sq);
    m->xs = malloc(rows * m->n_in * sizeof *m->xs);
    m->bad = malloc(rows);
    m->cf = malloc(rows * sizeof *m->cf);
    if (!m->nrm || !m->sq || !m->xs || !m->bad || !m->cf)
        goto nomem;
    for (size_t l = 0; l < m->L; l++) {
        s_layer *y = &m->layers[l];
        if (!y->cp) { /* a fused conv writes its pool layer's output */
            y->a = malloc(rows * y->out_sz * sizeof *y->a);
            y->d = malloc(rows * y->out_sz * sizeof *y->d);
            if (!y->a || !y->d)
                goto nomem;
        }
        if (y->kind == FL_LAYER_POOL && !y->fused_pool &&
            !(y->argmax = malloc(rows * y->out_sz * sizeof *y->argmax)))
            goto nomem;
        if (y->keep_g && !(y->G = malloc(rows * (y->nw + y->oc) * sizeof *y->G)))
            goto nomem;
    }
    m->cap = rows;
    return FL_OK;
nomem:
    /* Leave the model as before: everything allocated here goes again. */
    free(m->nrm), free(m->sq), free(m->xs), free(m->bad), free(m->cf);
    m->nrm = m->sq = NULL, m->xs = NULL, m->bad = NULL, m->cf = NULL;
    for (size_t l = 0; l < m->L; l++) {
        s_layer *y = &m->layers[l];
        free(y->a), free(y->d), free(y->argmax), free(y->G);
        y->a = y->d = y->G = NULL, y->argmax = NULL;
    }
    return fl_error_set(FL_ENOMEM, "fl_model: out of memory for the %zu-row scratch", rows);
}

static int s_check_labels(const fl_model *m, const int32_t *y, size_t n)
{
    int32_t k = m->spec.output_kind == FL_MLP_OUT_SIGMOID_BCE ? 2 : (int32_t)m->n_out;
    for (size_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k)
            return fl_error_set(FL_EINVAL, "fl_model: label y[%zu] = %d is outside [0, %d); "
                                "check the labels and the model's output width",
                                i, (int)y[i], (int)k);
    return FL_OK;
}

static size_t s_chunk(size_t remaining)
{
    return remaining < FL_MODEL_CHUNK ? remaining : FL_MODEL_CHUNK;
}

static const float *s_input(const fl_model *m, size_t l, const float *X)
{
    return l == 0 ? X : m->layers[l - 1].a;
}

/* Forward pass over n <= cap rows of X. */
static int s_forward(fl_model *m, const float *X, size_t n)
{
    int rc = FL_OK;
    for (size_t l = 0; l < m->L && rc == FL_OK; l++) {
        s_layer *y = &m->layers[l];
        const float *in = s_input(m, l, X);
        const float *W = m->params + y->w_off, *b = m->params + y->b_off;
        if (y->cp) { /* conv + ReLU + pool: writes the pool layer's output */
            rc = fl_convpool_forward(y->cp, W, b, in, n, m->layers[l + 1].a);
            l++;
            continue;
        }
        switch (y->kind) {
        case FL_LAYER_CONV:
            rc = fl_conv2d_forward(y->conv, W, b, in, n, y->a);
            break;
        case FL_LAYER_POOL:
            rc = fl_maxpool2_forward(in, n, y->ic, y->ih, y->iw, y->a, y->argmax);
            break;
        default:
            for (size_t i = 0; i < n; i++)
                memcpy(y->a + i * y->oc, b, y->oc * sizeof(float));
            /* a (n x o) += in (n x in_sz) * W^T (in_sz x o) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)y->oc,
                        (int)y->in_sz, 1.0f, in, (int)y->in_sz, W, (int)y->in_sz, 1.0f, y->a,
                        (int)y->oc);
            break;
        }
        if (y->relu)
            fl_vec_relu(y->a, n * y->out_sz);
    }
    return rc;
}

/* The output delta dLoss/dlogits into d[L-1], as fl_mlp computes it;
 * returns the summed loss. */
static double s_output_delta(fl_model *m, const int32_t *y, size_t n)
{
    return fl_mlp_loss_delta((fl_mlp_output)m->spec.output_kind, m->layers[m->L - 1].a, y, n,
                             m->n_out, m->layers[m->L - 1].d, NULL);
}

static void s_probs(const fl_model *m, size_t n, float *probs)
{
    size_t k = m->n_out;
    const float *z = m->layers[m->L - 1].a;
    for (size_t i = 0; i < n; i++) {
        if (m->spec.output_kind == FL_MLP_OUT_SIGMOID_BCE) {
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

/* Back-propagates d[L-1] down to d[first_param]: every layer with
 * parameters gets its delta (layers below the first one need none). */
static int s_backward(fl_model *m, const float *X, size_t n)
{
    int rc = FL_OK;
    for (size_t l = m->L - 1; l > m->first_param && rc == FL_OK; l--) {
        s_layer *y = &m->layers[l], *p = &m->layers[l - 1];
        const float *in = s_input(m, l, X);
        const float *W = m->params + y->w_off;
        if (y->fused_pool) /* the block's deltas are the pool's d, routed */
            continue;
        if (y->cp) {
            const s_layer *q = &m->layers[l + 1];
            rc = fl_convpool_input_grad(y->cp, W, q->a, q->d, n, p->d);
            if (p->relu)
                fl_vec_relu_mask(p->d, p->a, n * p->out_sz);
            continue;
        }
        switch (y->kind) {
        case FL_LAYER_CONV:
            rc = fl_conv2d_backward(y->conv, W, in, y->d, n, p->d, NULL, NULL);
            break;
        case FL_LAYER_POOL:
            rc = fl_maxpool2_backward(y->d, y->argmax, n, y->ic, y->ih, y->iw, p->d);
            break;
        default:
            /* d[l-1] (n x in_sz) = d[l] (n x o) * W (o x in_sz) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)y->in_sz,
                        (int)y->oc, 1.0f, y->d, (int)y->oc, W, (int)y->in_sz, 0.0f, p->d,
                        (int)y->in_sz);
            break;
        }
        if (p->relu) /* through the ReLU: a > 0 exactly where the pre-activation is */
            fl_vec_relu_mask(p->d, p->a, n * p->out_sz);
    }
    return rc;
}

/* Adds each layer's weight and bias gradient over the n rows of the
 * scratch (deltas as they are, possibly clip-scaled) into grad_sum.  X0 is
 * the input of layer 0.  `first` says grad_sum is still all zero, so conv
 * layers may write their (overwriting) gradients into it directly.  With
 * clip factors cf (clipped sum), a conv layer that kept its per-example
 * gradients G_i (s_norms) adds sum_i cf_i G_i instead. */
static int s_weight_grads(fl_model *m, const float *X0, size_t n, float *grad_sum, int first,
                          const float *cf)
{
    int rc = FL_OK;
    for (size_t l = m->first_param; l < m->L && rc == FL_OK; l++) {
        s_layer *y = &m->layers[l];
        const float *in = s_input(m, l, X0);
        float *gW = grad_sum + y->w_off, *gb = grad_sum + y->b_off;
        if (y->kind == FL_LAYER_POOL)
            continue;
        if (y->cp && !cf) { /* plain batch gradient of a fused block */
            const s_layer *q = &m->layers[l + 1];
            rc = fl_convpool_batch_grad(y->cp, q->a, q->d, n, gW, gb, !first);
            continue;
        }
        if (y->cp && cf) {
            /* [gW gb] += G^T cf as below, G_i's weights in the block's
             * patch order: summed in gtmp, then reordered */
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, (int)(y->nw + y->oc), 1.0f, y->G,
                        (int)(y->nw + y->oc), cf, 1, 0.0f, m->gtmp, 1);
            fl_convpool_to_param_order(y->cp, m->gtmp, gW, 1);
            for (size_t j = 0; j < y->oc; j++)
                gb[j] += m->gtmp[y->nw + j];
            continue;
        }
        if (y->kind == FL_LAYER_CONV && cf && y->keep_g) {
            /* [gW gb] (nw + oc) += G^T (nw+oc x n) cf: bias follows weights */
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)n, (int)(y->nw + y->oc), 1.0f, y->G,
                        (int)(y->nw + y->oc), cf, 1, 1.0f, gW, 1);
            continue;
        }
        if (y->kind == FL_LAYER_CONV) {
            if (first) {
                rc = fl_conv2d_backward(y->conv, NULL, in, y->d, n, NULL, gW, gb);
            } else {
                rc = fl_conv2d_backward(y->conv, NULL, in, y->d, n, NULL, m->gtmp,
                                        m->gtmp + y->nw);
                for (size_t j = 0; rc == FL_OK && j < y->nw + y->oc; j++)
                    gW[j] += m->gtmp[j]; /* bias follows the weights */
            }
            continue;
        }
        /* gW (o x in_sz) += d^T (o x n) * in (n x in_sz) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)y->oc, (int)y->in_sz, (int)n,
                    1.0f, y->d, (int)y->oc, in, (int)y->in_sz, 1.0f, gW, (int)y->in_sz);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < y->oc; j++)
                gb[j] += y->d[i * y->oc + j];
    }
    return rc;
}

/* Squared per-example gradient norms of the n rows in the scratch (after
 * s_forward and s_backward on input X) into m->nrm, summed over layers:
 *   dense: ||delta_i||^2 (||a_i||^2 + 1), exact because the weight gradient
 *          is the outer product delta_i a_i^T (Goodfellow 2015; Li et al.
 *          2021, Sec. 4) and the bias gradient is delta_i;
 *   conv:  ||D_i A_i^T||_F^2 + ||D_i 1||^2, per layer by the ghost
 *          identity or from the explicit gradient, whichever is cheaper
 *          (mixed ghost clipping, Bu et al. 2022, "Scalable and efficient
 *          training of large convolutional neural networks with
 *          differential privacy"; fl_conv2d_norm_choice): ghost layers
 *          through fl_conv2d_example_sq_norms, explicit ones by forming
 *          and keeping G_i (keep_g; fl_conv2d_example_sq_norms with
 *          FL_CONV_NORM_AUTO when the store would be too large).
 * In double; a non-finite value anywhere gives a non-finite norm. */
static int s_norms(fl_model *m, const float *X, size_t n)
{
    int rc = FL_OK;
    for (size_t i = 0; i < n; i++)
        m->nrm[i] = 0.0;
    for (size_t l = m->first_param; l < m->L && rc == FL_OK; l++) {
        const s_layer *y = &m->layers[l];
        const float *in = s_input(m, l, X);
        if (y->cp) { /* fused: G_i from the routed deltas, kept */
            size_t gs = y->nw + y->oc;
            const s_layer *q = &m->layers[l + 1];
            rc = fl_convpool_example_grads(y->cp, q->a, q->d, n, y->G, gs);
            for (size_t i = 0; rc == FL_OK && i < n; i++)
                m->nrm[i] += fl_vec_sumsq(y->G + i * gs, gs);
        } else if (y->kind == FL_LAYER_CONV && y->keep_g) {
            /* explicit: G_i = [D_i A_i^T, D_i 1] of example i alone, kept */
            size_t gs = y->nw + y->oc;
            for (size_t i = 0; rc == FL_OK && i < n; i++) {
                float *g = y->G + i * gs;
                rc = fl_conv2d_backward(y->conv, NULL, in + i * y->in_sz, y->d + i * y->out_sz,
                                        1, NULL, g, g + y->nw);
                m->nrm[i] += fl_vec_sumsq(g, gs);
            }
        } else if (y->kind == FL_LAYER_CONV) {
            rc = fl_conv2d_example_sq_norms(y->conv, in, y->d, n, FL_CONV_NORM_AUTO, 1, m->sq);
            for (size_t i = 0; rc == FL_OK && i < n; i++)
                m->nrm[i] += m->sq[i];
        } else if (y->kind == FL_LAYER_DENSE) {
            for (size_t i = 0; i < n; i++) {
                double sa = fl_vec_sumsq(in + i * y->in_sz, y->in_sz);
                double sd = fl_vec_sumsq(y->d + i * y->oc, y->oc);
                m->nrm[i] += sd * (sa + 1.0);
            }
        }
    }
    return rc;
}

/* Forward, loss and output delta, then all deltas, for one chunk. */
static int s_pass(fl_model *m, const float *Xc, const int32_t *yc, size_t c, double *loss)
{
    int rc = s_forward(m, Xc, c);
    if (rc == FL_OK) {
        *loss += s_output_delta(m, yc, c);
        rc = s_backward(m, Xc, c);
    }
    return rc;
}

int fl_model_predict(fl_model *m, const float *X, size_t n, float *probs)
{
    int rc;
    if (m->mlp)
        return fl_mlp_predict(m->mlp, X, n, probs);
    if (n == 0)
        return FL_OK;
    if (!X || !probs)
        return fl_error_set(FL_EINVAL, "fl_model_predict: X and probs must not be NULL");
    if ((rc = s_reserve(m)) != FL_OK)
        return rc;
    for (size_t off = 0; off < n && rc == FL_OK; off += FL_MODEL_CHUNK) {
        size_t c = s_chunk(n - off);
        rc = s_forward(m, X + off * m->n_in, c);
        if (rc == FL_OK)
            s_probs(m, c, probs + off * m->n_out);
    }
    return rc;
}

int fl_model_gradient(fl_model *m, const float *X, const int32_t *y, size_t n,
                      float *grad_sum, double *loss_sum)
{
    int rc;
    if (m->mlp)
        return fl_mlp_gradient(m->mlp, X, y, n, grad_sum, loss_sum);
    if (!grad_sum || !loss_sum || (n > 0 && (!X || !y)))
        return fl_error_set(FL_EINVAL, "fl_model_gradient: X, y, grad_sum and loss_sum "
                            "must not be NULL");
    memset(grad_sum, 0, m->num_params * sizeof(float));
    *loss_sum = 0.0;
    if (n == 0)
        return FL_OK;
    if ((rc = s_check_labels(m, y, n)) != FL_OK || (rc = s_reserve(m)) != FL_OK)
        return rc;
    double total = 0.0;
    for (size_t off = 0; off < n && rc == FL_OK; off += FL_MODEL_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * m->n_in;
        rc = s_pass(m, Xc, y + off, c, &total);
        if (rc == FL_OK)
            rc = s_weight_grads(m, Xc, c, grad_sum, off == 0, NULL);
    }
    if (rc != FL_OK) {
        memset(grad_sum, 0, m->num_params * sizeof(float));
        return rc;
    }
    *loss_sum = total;
    return FL_OK;
}

int fl_model_example_norms(fl_model *m, const float *X, const int32_t *y, size_t n,
                           double *norms)
{
    int rc;
    if (m->mlp)
        return fl_mlp_example_norms(m->mlp, X, y, n, norms);
    if (n == 0)
        return FL_OK;
    if (!X || !y || !norms)
        return fl_error_set(FL_EINVAL, "fl_model_example_norms: X, y and norms must not be "
                            "NULL");
    if ((rc = s_check_labels(m, y, n)) != FL_OK || (rc = s_reserve(m)) != FL_OK)
        return rc;
    double loss = 0.0;
    for (size_t off = 0; off < n && rc == FL_OK; off += FL_MODEL_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * m->n_in;
        rc = s_pass(m, Xc, y + off, c, &loss);
        if (rc == FL_OK)
            rc = s_norms(m, Xc, c);
        for (size_t i = 0; rc == FL_OK && i < c; i++)
            norms[off + i] = sqrt(m->nrm[i]);
    }
    return rc;
}

static int s_clipped_sum(fl_model *m, const float *X, const int32_t *y, size_t n,
                         double clip, float *grad_sum, size_t *clipped, double *loss_sum,
                         int accumulate);

int fl_model_clipped_gradient_sum_ex(fl_model *m, const float *X, const int32_t *y, size_t n,
                                     double clip, float *grad_sum, size_t *clipped,
                                     double *loss_sum, const fl_mlp_sum_opts *opts)
{
    if (m->mlp)
        return fl_mlp_clipped_gradient_sum_ex(m->mlp, X, y, n, clip, grad_sum, clipped,
                                              loss_sum, opts);
    if (opts && opts->before_write)
        return fl_error_set(FL_EINVAL, "fl_model_clipped_gradient_sum_ex: before_write is "
                            "supported for models without conv layers only");
    return s_clipped_sum(m, X, y, n, clip, grad_sum, clipped, loss_sum,
                         opts && opts->accumulate);
}

int fl_model_clipped_gradient_sum(fl_model *m, const float *X, const int32_t *y, size_t n,
                                  double clip, float *grad_sum, size_t *clipped,
                                  double *loss_sum)
{
    if (m->mlp)
        return fl_mlp_clipped_gradient_sum(m->mlp, X, y, n, clip, grad_sum, clipped, loss_sum);
    return s_clipped_sum(m, X, y, n, clip, grad_sum, clipped, loss_sum, 0);
}

/* The clipped sum of a model with conv or pool layers; with accumulate,
 * added to grad_sum instead of overwriting it (zeroed on error either
 * way). */
static int s_clipped_sum(fl_model *m, const float *X, const int32_t *y, size_t n,
                         double clip, float *grad_sum, size_t *clipped, double *loss_sum,
                         int accumulate)
{
    int rc;
    size_t count = 0;
    double total = 0.0;

    if (clipped)
        *clipped = 0;
    if (loss_sum)
        *loss_sum = 0.0;
    if (!isfinite(clip) || !(clip > 0.0))
        return fl_error_set(FL_EINVAL, "fl_model_clipped_gradient_sum: clip norm C=%g must "
                            "be finite and > 0", clip);
    if (!grad_sum || (n > 0 && (!X || !y)))
        return fl_error_set(FL_EINVAL, "fl_model_clipped_gradient_sum: X, y and grad_sum "
                            "must not be NULL");
    if (!accumulate)
        memset(grad_sum, 0, m->num_params * sizeof(float));
    if (n == 0)
        return FL_OK;
    if ((rc = s_check_labels(m, y, n)) != FL_OK || (rc = s_reserve(m)) != FL_OK) {
        memset(grad_sum, 0, m->num_params * sizeof(float));
        return rc;
    }
    for (size_t off = 0; off < n && rc == FL_OK; off += FL_MODEL_CHUNK) {
        size_t c = s_chunk(n - off);
        const float *Xc = X + off * m->n_in;
        /* (a) forward, (b) every layer's delta, (c) per-example norms. */
        rc = s_pass(m, Xc, y + off, c, &total);
        if (rc == FL_OK)
            rc = s_norms(m, Xc, c);
        if (rc != FL_OK)
            break;

        /* (c) clip factors c_i = min(1, C/||g_i||) (Abadi et al. 2016,
         * Algorithm 1, "clip gradient") with the rule and margin of
         * fl_dp_clip_rows, so that each example's contribution to the sum
         * has L2 norm <= C: the sensitivity of the Gaussian mechanism that
         * dp/fl_dpsgd applies.  Scaling the deltas of example i by c_i
         * scales every layer's gradient of that example by c_i, because
         * each is linear in the example's own deltas (mixed ghost
         * clipping, Bu et al. 2022, Algorithm 1).  An example whose norm
         * is not finite contributes nothing: its deltas AND its inputs to
         * every layer are zeroed, since 0 * inf inside sgemm is NaN. */
        int any_bad = 0;
        for (size_t i = 0; i < c; i++) {
            double ss = m->nrm[i], norm = sqrt(ss);
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
            m->cf[i] = f;
            if (f == 1.0f)
                continue;
            for (size_t l = m->first_param; l < m->L; l++) {
                s_layer *ly = &m->layers[l];
                if (ly->kind == FL_LAYER_POOL)
                    continue;
                if (ly->keep_g) { /* scaled by cf in the sgemv; a NaN row is zeroed */
                    if (m->bad[i])
                        memset(ly->G + i * (ly->nw + ly->oc), 0,
                               (ly->nw + ly->oc) * sizeof(float));
                    continue;
                }
                float *d = ly->d + i * ly->out_sz;
                for (size_t j = 0; j < ly->out_sz; j++)
                    d[j] = m->bad[i] ? 0.0f : d[j] * f;
            }
        }
        const float *X0 = Xc;
        if (any_bad) {
            memcpy(m->xs, Xc, c * m->n_in * sizeof(float));
            for (size_t i = 0; i < c; i++) {
                if (!m->bad[i])
                    continue;
                memset(m->xs + i * m->n_in, 0, m->n_in * sizeof(float));
                for (size_t l = 0; l + 1 < m->L; l++)
                    if (m->layers[l].a) /* a fused conv has none */
                        memset(m->layers[l].a + i * m->layers[l].out_sz, 0,
                               m->layers[l].out_sz * sizeof(float));
            }
            X0 = m->xs;
        }
        /* (d) each layer's weight gradient once, over the scaled deltas
         * (conv layers with kept G_i: sum_i c_i G_i). */
        rc = s_weight_grads(m, X0, c, grad_sum, off == 0 && !accumulate, m->cf);
    }
    if (rc != FL_OK) {
        memset(grad_sum, 0, m->num_params * sizeof(float));
        return rc;
    }
    if (clipped)
        *clipped = count;
    if (loss_sum)
        *loss_sum = total;
    return FL_OK;
}

int fl_model_evaluate(fl_model *m, const float *X, const int32_t *y, size_t n,
                      double *mean_loss, float *probs)
{
    int rc;
    if (m->mlp)
        return fl_mlp_evaluate(m->mlp, X, y, n, mean_loss, probs);
    if (n == 0)
        return fl_error_set(FL_EINVAL, "fl_model_evaluate: empty dataset; the mean loss of "
                            "zero examples is undefined");
    if (!X || !y || !mean_loss)
        return fl_error_set(FL_EINVAL, "fl_model_evaluate: X, y and mean_loss must not be "
                            "NULL");
    if ((rc = s_check_labels(m, y, n)) != FL_OK || (rc = s_reserve(m)) != FL_OK)
        return rc;
    double total = 0.0;
    for (size_t off = 0; off < n && rc == FL_OK; off += FL_MODEL_CHUNK) {
        size_t c = s_chunk(n - off);
        rc = s_forward(m, X + off * m->n_in, c);
        if (rc != FL_OK)
            break;
        total += s_output_delta(m, y + off, c);
        if (probs)
            s_probs(m, c, probs + off * m->n_out);
    }
    if (rc == FL_OK)
        *mean_loss = total / (double)n;
    return rc;
}
