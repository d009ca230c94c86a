/*
 * fl_dpsgd: one differentially private SGD step (Abadi et al. 2016,
 * "Deep Learning with Differential Privacy"): Poisson-sample a batch,
 * clip each per-example gradient to L2 norm C, sum, add N(0, sigma^2 C^2)
 * per coordinate once, and divide by the expected batch size q*N.
 * Two kinds of model callback: per-example gradients (fl_dpsgd_step clips
 * them here), or a sum of already-clipped per-example gradients
 * (fl_dpsgd_step_clipped; e.g. ghost clipping in nn/fl_mlp), which needs
 * no chunk x dim buffer and costs about as much as plain SGD.
 */
#ifndef FL_DPSGD_H
#define FL_DPSGD_H

#include <stddef.h>

#include "dp/fl_noise.h"
#include "dp/fl_sampler.h"
#include "error/fl_error.h"

/** Computes per-example gradients of examples idx[0..n) into rows of G
 *  (n x dim, row-major, n <= chunk).  Returns FL_OK or an fl_err; an error
 *  aborts the step and is returned by fl_dpsgd_step unchanged. */
typedef int (*fl_dpsgd_grad_fn)(void *ctx, const size_t *idx, size_t n, float *G);

/** Writes into sum (dim floats, caller of the callback owns it) the SUM over
 *  examples idx[0..n) (n <= chunk) of their per-example gradients, each
 *  clipped to L2 norm <= clip before summing (a gradient with a non-finite
 *  entry contributes zero); *clipped receives how many were scaled down or
 *  zeroed.  Each example's contribution must depend on that example only
 *  and have norm <= clip: that is the sensitivity bound the noise is
 *  calibrated to.  Returns FL_OK or an fl_err (aborts the step). */
typedef int (*fl_dpsgd_clipped_sum_fn)(void *ctx, const size_t *idx, size_t n, double clip,
                                       float *sum, size_t *clipped);

/** Opaque DP-SGD step state (parameters and preallocated buffers). */
typedef struct fl_dpsgd fl_dpsgd;

/** Creates a step object for `dim` parameters, N >= 1 local records,
 *  sampling rate q in (0,1], clip norm C > 0, noise multiplier sigma >= 0
 *  (all finite) and `chunk` >= 1 rows per grad_fn call (bounds memory;
 *  values above N are lowered to N).  All buffers (N indices, chunk x dim
 *  floats, dim doubles) are allocated here.  On success *out owns the
 *  object (release with fl_dpsgd_free).  FL_EINVAL on bad arguments,
 *  FL_ENOMEM on allocation failure (or size overflow). */
FL_NODISCARD int fl_dpsgd_new(fl_dpsgd **out, size_t dim, size_t N, double q,
                              double clip, double sigma, size_t chunk);

/** As fl_dpsgd_new, for use with fl_dpsgd_step_clipped only: allocates N
 *  indices, dim floats and dim doubles, and no chunk x dim buffer (so
 *  `chunk` may be large; it is still lowered to N).  fl_dpsgd_step on the
 *  result fails with FL_EINVAL.  Same errors as fl_dpsgd_new. */
FL_NODISCARD int fl_dpsgd_new_clipped(fl_dpsgd **out, size_t dim, size_t N, double q,
                                      double clip, double sigma, size_t chunk);

/** Wipes and frees a step object; fl_dpsgd_free(NULL) is a no-op. */
void fl_dpsgd_free(fl_dpsgd *s);

/** One step: Poisson-sample a batch, get per-example gradients chunk by
 *  chunk from fn, clip each row to L2 norm <= C (scale by min(1, C/||g||);
 *  rows with non-finite entries are zeroed), sum, add N(0, sigma^2 C^2)
 *  once per coordinate to the sum, and divide by the EXPECTED batch size
 *  q*N (not the realised size, so the batch size itself leaks nothing).
 *  The result goes to grad_out (dim floats, caller-owned).  *batch_size
 *  (may be NULL) receives the realised size, for local logging only.  An
 *  empty batch still produces noise/(qN).  Returns FL_OK, FL_EINVAL, the
 *  grad_fn's error, or FL_ECRYPTO; on error grad_out is zeroed.  Batch
 *  membership and per-example gradients are wiped before returning. */
FL_NODISCARD int fl_dpsgd_step(fl_dpsgd *s, fl_dpsgd_grad_fn fn, void *ctx,
                               float *grad_out, size_t *batch_size);

/** As fl_dpsgd_step, but the model clips: fn returns, chunk by chunk (at
 *  most `chunk` rows per call), the sum of clipped per-example gradients,
 *  which is accumulated in double; then the same noise (N(0, sigma^2 C^2)
 *  once per coordinate) and division by q*N.  As a guard against a
 *  callback that does not clip, a chunk sum whose norm exceeds n*C (the
 *  triangle-inequality bound, plus 1e-3 for rounding) or is not finite
 *  fails the step with FL_EINVAL.  Works on objects from fl_dpsgd_new or
 *  fl_dpsgd_new_clipped; nothing is allocated.  Returns FL_OK, FL_EINVAL,
 *  the callback's error or FL_ECRYPTO; on error grad_out is zeroed.  Batch
 *  membership and the sum are wiped before returning. */
FL_NODISCARD int fl_dpsgd_step_clipped(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn, void *ctx,
                                       float *grad_out, size_t *batch_size);

/** As fl_dpsgd_step_clipped (same sampling, clipping check, accumulation
 *  and division by q*N; an empty batch is still noised), but the noise
 *  comes from `noise`, a batch of fl_dpsgd_dim(s) coordinates filled
 *  with stddev fl_dpsgd_noise_stddev(s) (dp/fl_noise.h; typically on
 *  another thread, ahead of the step), applied to the clipped sum with
 *  fl_noise_batch_apply_f64 (or, when the batch fits one chunk, the fused
 *  fl_noise_batch_release_f32): the released gradient has the same law as
 *  fl_dpsgd_step_clipped's.  If `sample` is not NULL the Poisson sample
 *  is taken from it (dp/fl_sampler.h; drawn ahead for this state's N and
 *  q, checked) instead of being drawn here.  The batch and the sample are
 *  consumed (wiped; refill before the next step) exactly when the step
 *  returns FL_OK; on any error nothing was released and both stay filled.
 *  Errors: those of fl_dpsgd_step_clipped; FL_EINVAL if noise is NULL or
 *  was made or filled for another size or stddev, or the sample was drawn
 *  for another N or q; FL_ESTATE if either is not filled.  On error
 *  grad_out is zeroed. */
FL_NODISCARD int fl_dpsgd_step_clipped_prepared(fl_dpsgd *s, fl_dpsgd_clipped_sum_fn fn,
                                                void *ctx, fl_noise_batch *noise,
                                                fl_poisson_batch *sample, float *grad_out,
                                                size_t *batch_size);

/** The standard deviation sigma * C of the noise added to the clipped sum
 *  (what a prepared batch for this state must be filled with). */
double fl_dpsgd_noise_stddev(const fl_dpsgd *s);

/** The number of parameters `dim` the state was made for. */
size_t fl_dpsgd_dim(const fl_dpsgd *s);

/** Clips each of the n rows of G (n x dim, row-major) in place to L2 norm
 *  <= C (finite, > 0): a row with norm > C is scaled by C/||g|| (times a
 *  1e-6 safety margin so float rounding cannot exceed C); shorter rows are
 *  unchanged; rows containing NaN or infinity are set to zero.  *clipped
 *  (may be NULL) receives how many rows were scaled down or zeroed.
 *  FL_EINVAL on bad C or NULL G with n*dim > 0. */
FL_NODISCARD int fl_dp_clip_rows(float *G, size_t n, size_t dim, double C, size_t *clipped);

#endif
