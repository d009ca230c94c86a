/*
 * fl_dpsgd: the DP-SGD step of Abadi et al. 2016 with Poisson sampling
 * and per-example clipping; privacy is accounted by dp/fl_accountant.
 */
#include "dp/fl_dpsgd.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dp/fl_noise.h"
#include "dp/fl_sampler.h"

/* Shrinks the clip scale slightly so that rounding the scaled row to float
 * (relative error <= 2^-24 per coordinate) cannot push its norm above C. */
#define S_CLIP_MARGIN (1.0 - 1e-6)

struct fl_dpsgd {
    size_t dim;
    size_t N;
    double q;
    double clip;
    double sigma;
    size_t chunk;
    size_t *idx;  /* N: the sampled batch (private; wiped after each step) */
    float *G;     /* chunk x dim per-example gradients (private; wiped);
                     NULL for objects made by fl_dpsgd_new_clipped */
    float *part;  /* dim: one chunk's clipped sum from a clipped-sum callback */
    double *acc;  /* dim: the clipped sum */
};

int fl_dp_clip_rows(float *G, size_t n, size_t dim, double C, size_t *clipped)
{
    size_t count = 0;

    if (clipped)
        *clipped = 0;
    if (!isfinite(C) || !(C > 0.0))
        return fl_error_set(FL_EINVAL, "fl_dp_clip_rows: clip norm C=%g must be "
                            "finite and > 0", C);
    if (n > 0 && dim > 0 && !G)
        return fl_error_set(FL_EINVAL, "fl_dp_clip_rows: G is NULL with n=%zu dim=%zu",
                            n, dim);

    /* Per-example clipping bounds each record's contribution to the sum by
     * C in L2 norm, which is the L2 sensitivity the Gaussian mechanism
     * needs (Abadi et al. 2016, Algorithm 1, "clip gradient":
     * g / max(1, ||g||/C)).  A row with NaN or infinity has no meaningful
     * norm; zeroing it keeps the sensitivity bound (the record simply
     * contributes nothing) instead of poisoning the whole sum. */
    for (size_t i = 0; i < n; i++) {
        float *row = G + i * dim;
        double ss = 0.0;
        int finite = 1;
        for (size_t j = 0; j < dim; j++) {
            double v = (double)row[j];
            if (!isfinite(v)) {
                finite = 0;
                break;
            }
            ss += v * v; /* float^2 <= ~1.2e77, no overflow in double */
        }
        if (!finite) {
            for (size_t j = 0; j < dim; j++)
                row[j] = 0.0f;
            count++;
            continue;
        }
        double norm = sqrt(ss);
        if (norm > C) {
            double scale = (C / norm) * S_CLIP_MARGIN;
            for (size_t j = 0; j < dim; j++)
                row[j] = (float)((double)row[j] * scale);
            count++;
        }
    }
    if (clipped)
        *clipped = count;
    return FL_OK;
}

static int s_new(fl_dpsgd **out, size_t dim, size_t N, double q, double clip, double sigma,
                 size_t chunk, int per_example)
{
    int rc = FL_OK;
    fl_dpsgd *s = NULL;

    if (!out)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: out is NULL");
    *out = NULL;
    if (dim == 0)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: dim=0; the model needs parameters");
    if (N == 0)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: N=0 local records; nothing to train on");
    if (!(q > 0.0 && q <= 1.0))
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: sampling rate q=%g must be in (0, 1]", q);
    if (!isfinite(clip) || !(clip > 0.0))
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: clip norm C=%g must be finite and > 0",
                            clip);
    if (!isfinite(sigma) || !(sigma >= 0.0))
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: noise multiplier sigma=%g must be "
                            "finite and >= 0", sigma);
    if (chunk == 0)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_new: chunk=0; need at least one row "
                            "per gradient call");
    if (chunk > N)
        chunk = N;
    if (N > SIZE_MAX / sizeof(size_t) || dim > SIZE_MAX / sizeof(double) ||
        (per_example && chunk > SIZE_MAX / sizeof(float) / dim))
        return fl_error_set(FL_ENOMEM, "fl_dpsgd_new: buffers for dim=%zu N=%zu "
                            "chunk=%zu overflow size_t", dim, N, chunk);

    s = calloc(1, sizeof *s);
    if (!s) {
        rc = fl_error_set(FL_ENOMEM, "fl_dpsgd_new: out of memory for the step state");
        goto done;
    }
    s->dim = dim;
    s->N = N;
    s->q = q;
    s->clip = clip;
    s->sigma = sigma;
    s->chunk = chunk;
    s->idx = calloc(N, sizeof *s->idx);
    if (per_example)
        s->G = calloc(chunk * dim, sizeof *s->G);
    s->part = calloc(dim, sizeof *s->part);
    s->acc = calloc(dim, sizeof *s->acc);
    if (!s->idx || (per_example && !s->G) || !s->part || !s->acc) {
        rc = fl_error_set(FL_ENOMEM, "fl_dpsgd_new: out of memory for dim=%zu N=%zu "
                          "chunk=%zu; lower chunk", dim, N, chunk);
        goto done;
    }
    *out = s;
    s = NULL;

done:
    fl_dpsgd_free(s);
    return rc;
}

int fl_dpsgd_new(fl_dpsgd **out, size_t dim, size_t N, double q, double clip, double sigma,
                 size_t chunk)
{
    return s_new(out, dim, N, q, clip, sigma, chunk, 1);
}

int fl_dpsgd_new_clipped(fl_dpsgd **out, size_t dim, size_t N, double q, double clip,
                         double sigma, size_t chunk)
{
    return s_new(out, dim, N, q, clip, sigma, chunk, 0);
}

void fl_dpsgd_free(fl_dpsgd *s)
{
    if (!s)
        return;
    if (s->idx)
        sodium_memzero(s->idx, s->N * sizeof *s->idx);
    if (s->G)
        sodium_memzero(s->G, s->chunk * s->dim * sizeof *s->G);
    if (s->part)
        sodium_memzero(s->part, s->dim * sizeof *s->part);
    if (s->acc)
        sodium_memzero(s->acc, s->dim * sizeof *s->acc);
    free(s->idx);
    free(s->G);
    free(s->part);
    free(s->acc);
    free(s);
}

double fl_dpsgd_noise_stddev(const fl_dpsgd *s)
{
    return s->sigma * s->clip;
}

size_t fl_dpsgd_dim(const fl_dpsgd *s)
{
    return s->dim;
}

/* Noise and normalisation, shared by both step kinds: s->acc holds the
 * clipped sum (double); grad_out receives (sum + noise) / (q N).  The
 * noise is drawn here, or taken from `noise` (prepared ahead) when that is
 * not NULL. */
static int s_release(fl_dpsgd *s, float *grad_out, fl_noise_batch *noise)
{
    int rc;
    /* Gaussian mechanism on the clipped sum (Abadi et al. 2016, Algorithm
     * 1): sensitivity C, so noise N(0, sigma^2 C^2) is added ONCE per
     * coordinate to the sum, never per example.  Noise is drawn even for
     * an empty batch: whether anything was sampled must not be visible.
     * The sum stays in double and fl_noise_add_gaussian_f64 rounds it to
     * the noise grid (randomized rounding) before adding the discrete
     * Gaussian (Canonne, Kamath & Steinke 2020), so what follows is
     * post-processing of an exact grid value (docs/privacy-accounting.md
     * gives the sensitivity argument).
     * Prepared noise: the batch's Z and rounding words were drawn from the
     * CSPRNG independently of the data (possibly on another thread), so
     * the release has the same law; the batch refuses a second apply, so
     * each Z protects one release only (docs/privacy-accounting.md,
     * "Prepared noise"). */
    if (noise)
        rc = fl_noise_batch_apply_f64(noise, s->acc, s->dim, fl_dpsgd_noise_stddev(s));
    else
        rc = fl_noise_add_gaussian_f64(s->acc, s->dim, fl_dpsgd_noise_stddev(s));
    if (rc != FL_OK)
        return rc;

    /* Divide by the EXPECTED batch size q*N, a public constant (as in
     * Opacus' expected_batch_size for Poisson sampling).  Dividing by the
     * realised size b would make the output depend on b, which is itself a
     * function of the private sample and is not covered by the accountant. */
    {
        /* times 1/(qN): a deterministic function of the released grid
         * value (post-processing), within an ulp of the quotient and
         * several times faster than a division per coordinate */
        const double inv = 1.0 / (s->q * (double)s->N);
        for (size_t j = 0; j < s->dim; j++)
            grad_out[j] = (float)(s->acc[j] * inv);
    }
    return FL_OK;
}

int fl_dpsgd_step(fl_dpsgd *s, fl_dpsgd_grad_fn fn, void *ctx, float *grad_out,
                  size_t *batch_size)
{
    int rc = FL_OK;
    size_t b = 0;

    if (batch_size)
        *batch_size = 0;
    if (!s || !fn || !grad_out)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_step: NULL %s",
                            !s ? "state" : !fn ? "gradient function" : "grad_out");
    if (!s->G) {
        for (size_t j = 0; j < s->dim; j++)
            grad_out[j] = 0.0f;
        return fl_error_set(FL_EINVAL, "fl_dpsgd_step: this state was made by "
                            "fl_dpsgd_new_clipped and has no per-example buffer; use "
                            "fl_dpsgd_step_clipped or create it with fl_dpsgd_new");
    }

    for (size_t j = 0; j < s->dim; j++)
        s->acc[j] = 0.0;

    if ((rc = fl_sampler_poisson(s->N, s->q, s->idx, &b)) != FL_OK)
        goto done;

    for (size_t off = 0; off < b; off += s->chunk) {
        size_t m = b - off < s->chunk ? b - off : s->chunk;
        size_t clipped = 0;
        if ((rc = fn(ctx, s->idx + off, m, s->G)) != FL_OK)
            goto done;
        if ((rc = fl_dp_clip_rows(s->G, m, s->dim, s->clip, &clipped)) != FL_OK)
            goto done;
        for (size_t i = 0; i < m; i++) {
            const float *row = s->G + i * s->dim;
            for (size_t j = 0; j < s->dim; j++)
                s->acc[j] += (double)row[j];
        }
    }

    if ((rc = s_release(s, grad_out, NULL)) != FL_OK)
        goto done;
    if (batch_size)
        *batch_size = b;

done:
    if (rc != FL_OK)
        for (size_t j = 0; j < s->dim; j++)
            grad_out[j] = 0.0f;
    sodium_memzero(s->idx, s->N * sizeof *s->idx);
    sodium_memzero(s->G, s->chunk * s->dim * sizeof *s->G);
    sodium_memzero(s->acc, s->dim * sizeof *s->acc);
    return rc;
}

/* acc += part (acc = part if first), in one pass that also returns
 * ||part||^2 (four partial sums, so the reduction is not one serial
 * dependency chain). */
static double s_accumulate(double *restrict acc, const float *restrict pt, size_t dim,
                           int first)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t j = 0;
    if (first) {
        for (; j + 4 <= dim; j += 4) {
            double p0 = pt[j], p1 = pt[j + 1], p2 = pt[j + 2], p3 = pt[j + 3];
            s0 += p0 * p0, s1 += p1 * p1, s2 += p2 * p2, s3 += p3 * p3;
            acc[j] = p0, acc[j + 1] = p1, acc[j + 2] = p2, acc[j + 3] = p3;
        }
        for (; j < dim; j++) {
            s0 += (double)pt[j] * pt[j];
            acc[j] = pt[j];
        }
    } else {
        for (; j + 4 <= dim; j += 4) {
            double p0 = pt[j], p1 = pt[j + 1], p2 = pt[j + 2], p3 = pt[j + 3];
            s0 += p0 * p0, s1 += p1 * p1, s2 += p2 * p2, s3 += p3 * p3;
            acc[j] += p0, acc[j + 1] += p1, acc[j + 2] += p2, acc[j + 3] += p3;
        }
        for (; j < dim; j++) {
            s0 += (double)pt[j] * pt[j];
            acc[j] += pt[j];
        }
    }
    return (s0 + s1) + (s2 + s3);
}

/* ||v||^2 in double, eight partial sums (not one serial chain). */
static double s_sumsq_f32(const float *v, size_t n)
{
    double a[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (size_t k = 0; k < 8; k++)
            a[k] += (double)v[j + k] * (double)v[j + k];
    for (size_t k = 0; j < n; j++, k++)
        a[k] += (double)v[j] * (double)v[j];
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* The callback's promise checked by the triangle inequality (see
 * s_step_clipped): a chunk of m examples clipped to C sums to norm <= mC. */
static int s_check_chunk(const fl_dpsgd *s, double ss, size_t m)
{
    double bound = (double)m * s->clip * (1.0 + 1e-3);
    if (isfinite(ss) && sqrt(ss) <= bound)
        return FL_OK;
    return fl_error_set(FL_EINVAL, "fl_dpsgd_step_clipped: a chunk of %zu examples returned "
                        "a sum of norm %g > n*C = %g (or not finite); the callback must clip "
                        "each example to C", m, sqrt(ss), (double)m * s->clip);
}

/* The common case of a prepared step: the whole Poisson batch fits one
 * chunk, so the clipped sum is the callback's float vector itself and the
 * release is fused into one pass (fl_noise_batch_release_f32: the same
 * grid rounding, discrete Gaussian and scaling by 1/(qN) as s_release on
 * the sum widened to double, bit for bit; it also wipes the sum and the
 * batch).  b <= chunk. */
static int s_step_one_chunk(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn, void *ctx,
                            fl_noise_batch *noise, const size_t *idx, float *grad_out,
                            size_t b)
{
    int rc = FL_OK;
    if (b == 0) {
        memset(s->part, 0, s->dim * sizeof *s->part);
    } else {
        size_t clipped = 0;
        if ((rc = fn(ctx, idx, b, s->clip, s->part, &clipped)) != FL_OK ||
            (rc = s_check_chunk(s, s_sumsq_f32(s->part, s->dim), b)) != FL_OK)
            return rc;
    }
    /* Gaussian mechanism on the clipped sum, noise drawn even for an empty
     * batch, division by the expected batch size qN: as s_release. */
    return fl_noise_batch_release_f32(noise, s->part, s->dim, fl_dpsgd_noise_stddev(s),
                                      1.0 / (s->q * (double)s->N), grad_out);
}

/* fl_dpsgd_step_clipped (noise == NULL: drawn inline) and
 * fl_dpsgd_step_clipped_prepared (noise from the batch; the sample from
 * `sample` when not NULL). */
static int s_step_clipped(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn, void *ctx,
                          fl_noise_batch *noise, fl_poisson_batch *sample, float *grad_out,
                          size_t *batch_size)
{
    int rc = FL_OK;
    size_t b = 0;
    int acc_used = 1;
    const size_t *idx = s->idx;

    /* Poisson sampling exactly as in fl_dpsgd_step (Mironov, Talwar &
     * Zhang 2019; Zhu & Wang 2019): the accountant assumes it.  A prepared
     * sample was drawn by the same fl_sampler_poisson for this N and q
     * (checked), from the CSPRNG alone, and is used by this step only. */
    if (sample)
        rc = fl_poisson_batch_indices(sample, s->N, s->q, &idx, &b);
    else
        rc = fl_sampler_poisson(s->N, s->q, s->idx, &b);
    if (rc != FL_OK)
        goto done;
    if (noise && b <= s->chunk) {
        rc = s_step_one_chunk(s, fn, ctx, noise, idx, grad_out, b);
        if (rc == FL_OK && batch_size)
            *batch_size = b;
        acc_used = 0;
        goto done;
    }
    if (b == 0) /* otherwise the first chunk assigns acc */
        for (size_t j = 0; j < s->dim; j++)
            s->acc[j] = 0.0;

    for (size_t off = 0; off < b; off += s->chunk) {
        size_t m = b - off < s->chunk ? b - off : s->chunk;
        size_t clipped = 0;
        if ((rc = fn(ctx, idx + off, m, s->clip, s->part, &clipped)) != FL_OK)
            goto done;
        /* The callback promises each example's contribution has L2 norm
         * <= C (Abadi et al. 2016, Algorithm 1; clipped by ghost norms,
         * Goodfellow 2015 / Li et al. 2021, in nn/fl_mlp).  That is what
         * makes C the sensitivity of the sum; we cannot verify it per
         * example here, but the triangle inequality gives a cheap check
         * that catches a callback that does not clip at all.
         * Floating point: unlike fl_dpsgd_step, whose rows are clipped
         * separately and summed in double, a ghost-clipped chunk is summed
         * in float inside sgemm, so its rounding error mixes examples.
         * Its worst-case bound (gamma_m * m * C per chunk, Higham 2002,
         * Sec. 3.1) is not charged by the accountant; typical error is
         * ~sqrt(m) * 2^-24 * C.  Casacuberta et al. 2022 ("Widespread
         * underestimation of sensitivity in differentially private
         * libraries") discuss this class of gap; docs/performance.md
         * ("DP-SGD cost") records it. */
        double ss = s_accumulate(s->acc, s->part, s->dim, off == 0);
        if ((rc = s_check_chunk(s, ss, m)) != FL_OK)
            goto done;
    }

    if ((rc = s_release(s, grad_out, noise)) != FL_OK)
        goto done;
    if (batch_size)
        *batch_size = b;

done:
    if (rc != FL_OK)
        for (size_t j = 0; j < s->dim; j++)
            grad_out[j] = 0.0f;
    /* The fused release has already wiped part unless it failed. */
    if (sample) {
        if (rc == FL_OK)
            fl_poisson_batch_consume(sample);
    } else {
        sodium_memzero(s->idx, s->N * sizeof *s->idx);
    }
    if (acc_used || rc != FL_OK)
        sodium_memzero(s->part, s->dim * sizeof *s->part);
    if (acc_used)
        sodium_memzero(s->acc, s->dim * sizeof *s->acc);
    return rc;
}

int fl_dpsgd_step_clipped(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn, void *ctx, float *grad_out,
                          size_t *batch_size)
{
    if (batch_size)
        *batch_size = 0;
    if (!s || !fn || !grad_out)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_step_clipped: NULL %s",
                            !s ? "state" : !fn ? "clipped-sum function" : "grad_out");
    return s_step_clipped(s, fn, ctx, NULL, NULL, grad_out, batch_size);
}

int fl_dpsgd_step_clipped_prepared(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn, void *ctx,
                                   fl_noise_batch *noise, fl_poisson_batch *sample,
                                   float *grad_out, size_t *batch_size)
{
    if (batch_size)
        *batch_size = 0;
    if (!s || !fn || !grad_out)
        return fl_error_set(FL_EINVAL, "fl_dpsgd_step_clipped_prepared: NULL %s",
                            !s ? "state" : !fn ? "clipped-sum function" : "grad_out");
    if (!noise) {
        for (size_t j = 0; j < s->dim; j++)
            grad_out[j] = 0.0f;
        return fl_error_set(FL_EINVAL, "fl_dpsgd_step_clipped_prepared: noise batch is "
                            "NULL; use fl_dpsgd_step_clipped to draw noise inline");
    }
    return s_step_clipped(s, fn, ctx, noise, sample, grad_out, batch_size);
}
