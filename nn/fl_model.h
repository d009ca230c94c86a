/*
 * fl_model: a sequential model built from an architecture description
 * (nn/fl_model_spec.h): convolutions (valid, stride 1, bias, ReLU),
 * 2 x 2 max-pooling and dense layers (ReLU except the last), with a
 * sigmoid or softmax output.  Same operations and contracts as nn/fl_mlp:
 * prediction, the summed batch gradient, per-example gradient norms and,
 * for DP-SGD, the sum of per-example gradients each clipped to L2 norm C
 * at about the cost of the plain batch gradient.
 *
 * A spec of dense layers only (fl_model_spec_is_mlp) runs on nn/fl_mlp
 * unchanged, so MLP speed and numbers are exactly fl_mlp's.  Other specs
 * run their conv layers through nn/fl_conv (im2col + sgemm) and their
 * dense layers through sgemm over whole chunks; the clipped sum uses
 * mixed ghost clipping (Bu et al. 2022): per-example norms from the
 * backward deltas (ghost or explicit per conv layer, whichever is
 * cheaper), then each layer's weight gradient once over clip-scaled
 * deltas - or, for a conv layer whose norms were explicit, as the
 * clip-weighted sum of the per-example gradients already formed.
 *
 * Parameters are one flat float vector owned by the model, in the spec's
 * layer order (fl_model_spec.h).  Batches are processed in chunks of at
 * most FL_MODEL_CHUNK rows; every buffer is allocated at creation or once
 * on first use, so calls after the first allocate nothing.  Not
 * thread-safe: a model owns scratch space reused across calls.
 */
#ifndef FL_MODEL_H
#define FL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model_spec.h"

/* Rows per internal chunk of a non-MLP model (fl_mlp uses 256).  Small,
 * so that a chunk's im2col patches, kept from the forward to the backward
 * pass, stay in a core's L2 cache: the CNN ran its step 1.2x (one
 * thread) to 1.3x (two) faster with 16 rows than with 128 (bench_dpsgd,
 * docs/performance.md). */
#define FL_MODEL_CHUNK 16

typedef struct fl_model fl_model;

/** Creates a model for `spec` (copied; it is validated first).  Parameters
 *  start at zero: call fl_model_init or write fl_model_params.  On success
 *  *out owns the model (free with fl_model_free).
 *  Errors: FL_EINVAL (invalid spec, as fl_model_spec_validate, or a layer
 *  too large for 32-bit BLAS dimensions), FL_ENOMEM. */
FL_NODISCARD int fl_model_new(fl_model **out, const fl_model_spec *spec);

/** Frees the model and its scratch.  fl_model_free(NULL) is a no-op. */
void fl_model_free(fl_model *m);

/** The model's architecture (owned by `m`, valid until fl_model_free). */
const fl_model_spec *fl_model_spec_of(const fl_model *m);

/** Total number of parameters (fl_model_spec_num_params of the spec). */
size_t fl_model_num_params(const fl_model *m);

/** Input values per example, C * H * W (NCHW order within a row). */
size_t fl_model_num_inputs(const fl_model *m);

/** Outputs per example: 1 for sigmoid, K for softmax. */
size_t fl_model_num_outputs(const fl_model *m);

/** The flat parameter vector (fl_model_num_params floats), owned by `m`
 *  and valid until fl_model_free.  Layout: per layer in order, conv
 *  weights (K x C_in x k x k) then bias, or dense W (out x in) then b. */
float *fl_model_params(fl_model *m);

/** Deterministic initialisation from a 32-byte seed: uniforms from
 *  libsodium randombytes_buf_deterministic(seed), one 32-bit word per
 *  parameter in layout order; conv and hidden dense weights He-uniform
 *  U(+-sqrt(6/fan_in)) with fan_in = C_in k^2 (conv) or inputs (dense),
 *  the output layer Xavier/Glorot-uniform U(+-sqrt(6/(in+out))), biases
 *  zero.  For an MLP spec this is exactly fl_mlp_init.  No errors. */
void fl_model_init(fl_model *m, const unsigned char seed[32]);

/** Forward pass: X is n x inputs (row-major); probs (n x outputs,
 *  caller-owned) receives P(class 1) (sigmoid) or the softmax
 *  probabilities.  n == 0 does nothing.
 *  Errors: FL_EINVAL (NULL buffers with n > 0), FL_ENOMEM. */
FL_NODISCARD int fl_model_predict(fl_model *m, const float *X, size_t n, float *probs);

/** Batch gradient: grad_sum (num_params floats, caller-owned, overwritten)
 *  receives the SUM over the n examples of the per-example loss gradients,
 *  *loss_sum the summed loss (BCE with logits or softmax cross-entropy).
 *  Labels are in {0,1} (sigmoid) or {0..K-1} (softmax).  n == 0 gives
 *  zeros.  Both outputs are required.
 *  Errors: FL_EINVAL (NULL buffer, label out of range - the message names
 *  the example), FL_ENOMEM. */
FL_NODISCARD int fl_model_gradient(fl_model *m, const float *X, const int32_t *y, size_t n,
                                   float *grad_sum, double *loss_sum);

/** Sum of per-example gradients each clipped to L2 norm <= clip (finite,
 *  > 0), by (mixed) ghost clipping: one forward pass, every layer's
 *  backward deltas, per-example squared norms summed over layers (dense:
 *  ||a_i||^2 ||delta_i||^2 + ||delta_i||^2; conv, bias included: the ghost
 *  norm or the explicit per-example gradient, as fl_conv2d_norm_choice
 *  picks), clip factors c_i = min(1, C/||g_i||) with fl_dp_clip_rows'
 *  rule and 1e-6 margin (a non-finite norm contributes zero), then each
 *  layer's weight gradient once over the c_i-scaled deltas (conv layers
 *  with explicit norms: sum_i c_i G_i of the gradients already formed).  The result equals clipping each example's own
 *  gradient and summing, up to float rounding.  grad_sum (num_params,
 *  caller-owned) is overwritten; *clipped (may be NULL) receives how many
 *  examples were scaled down or zeroed, *loss_sum (may be NULL) the summed
 *  loss.  n == 0 gives zeros.  Errors: FL_EINVAL (bad clip, NULL buffer,
 *  label out of range), FL_ENOMEM; on error grad_sum is zeroed. */
FL_NODISCARD int fl_model_clipped_gradient_sum(fl_model *m, const float *X, const int32_t *y,
                                               size_t n, double clip, float *grad_sum,
                                               size_t *clipped, double *loss_sum);

/** fl_model_clipped_gradient_sum with the options of fl_mlp_sum_opts
 *  (nn/fl_mlp.h; NULL: none).  Models without conv or pool layers take
 *  both (delegated to fl_mlp); the others take accumulate (add this call's
 *  clipped sum to grad_sum; a label, memory or computation error zeroes
 *  it, as without the option), and before_write gives FL_EINVAL. */
FL_NODISCARD int fl_model_clipped_gradient_sum_ex(fl_model *m, const float *X,
                                                  const int32_t *y, size_t n, double clip,
                                                  float *grad_sum, size_t *clipped,
                                                  double *loss_sum,
                                                  const fl_mlp_sum_opts *opts);

/** Per-example gradient L2 norms (n doubles into norms, caller-owned),
 *  computed as in fl_model_clipped_gradient_sum without forming the
 *  gradients.  A non-finite activation or delta gives a non-finite norm.
 *  n == 0 is allowed.  Errors: FL_EINVAL (NULL buffer, label out of
 *  range), FL_ENOMEM. */
FL_NODISCARD int fl_model_example_norms(fl_model *m, const float *X, const int32_t *y,
                                        size_t n, double *norms);

/** Evaluation: *mean_loss receives the mean loss over the n examples and
 *  probs (n x outputs, may be NULL) the predicted probabilities.  Works in
 *  bounded chunks.  Errors: FL_EINVAL (n == 0, NULL buffer, label out of
 *  range), FL_ENOMEM. */
FL_NODISCARD int fl_model_evaluate(fl_model *m, const float *X, const int32_t *y, size_t n,
                                   double *mean_loss, float *probs);

#endif
