/*
 * fl_mlp: a multilayer perceptron (ReLU hidden layers, sigmoid or softmax
 * output) whose forward and backward passes run over whole batches with
 * OpenBLAS sgemm.  Besides the summed batch gradient it produces
 * per-example gradients, and - for DP-SGD - the sum of per-example
 * gradients each clipped to L2 norm C without materialising them ("ghost
 * clipping", Goodfellow 2015; Li et al. 2021), at the cost of the plain
 * batch gradient.
 *
 * The parameters are one flat float vector owned by the model: for each
 * layer in order, W (outputs x inputs, row-major) then b (outputs).
 * Not thread-safe: a model owns scratch space reused across calls.
 */
#ifndef FL_MLP_H
#define FL_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef enum {
    FL_MLP_OUT_SIGMOID_BCE = 1, /* 1 output: P(class 1), binary cross-entropy */
    FL_MLP_OUT_SOFTMAX_CE = 2   /* K >= 2 outputs: softmax, cross-entropy */
} fl_mlp_output;

typedef struct fl_mlp fl_mlp;

/** Creates a model with layer widths sizes[0] (inputs) .. sizes[num_sizes-1]
 *  (outputs: 1 for FL_MLP_OUT_SIGMOID_BCE, K >= 2 for FL_MLP_OUT_SOFTMAX_CE);
 *  the layers in between are ReLU.  Parameters start at zero: call
 *  fl_mlp_init or write fl_mlp_params.  On success *out owns the model
 *  (free with fl_mlp_free).
 *  Errors: FL_EINVAL (num_sizes < 2, a zero width, wrong output width for
 *  `kind`, unknown kind, parameter count overflow), FL_ENOMEM. */
FL_NODISCARD int fl_mlp_new(fl_mlp **out, const uint32_t *sizes, size_t num_sizes,
                            fl_mlp_output kind);

/** Frees the model and its scratch space.  fl_mlp_free(NULL) is a no-op. */
void fl_mlp_free(fl_mlp *m);

/** Total number of parameters (weights and biases of all layers). */
size_t fl_mlp_num_params(const fl_mlp *m);

/** Width of the input layer (features per example). */
size_t fl_mlp_num_inputs(const fl_mlp *m);

/** Width of the output layer (1 for sigmoid, K for softmax). */
size_t fl_mlp_num_outputs(const fl_mlp *m);

/** The flat parameter vector (fl_mlp_num_params floats), owned by `m` and
 *  valid until fl_mlp_free.  Layout: per layer W (out x in, row-major), b. */
float *fl_mlp_params(fl_mlp *m);

/** Deterministic initialisation from a 32-byte seed: uniforms come from
 *  libsodium randombytes_buf_deterministic(seed); ReLU layers get
 *  He-uniform weights U(-sqrt(6/in), sqrt(6/in)), the output layer
 *  Xavier/Glorot-uniform U(-sqrt(6/(in+out)), +..); biases are zero.
 *  The same seed gives the same parameters on every machine.  No errors. */
void fl_mlp_init(fl_mlp *m, const unsigned char seed[32]);

/** Forward pass: X is n x inputs (row-major); probs (n x outputs,
 *  row-major, caller-owned) receives P(class 1) for sigmoid or the softmax
 *  probabilities.  n == 0 is allowed and does nothing.
 *  Errors: FL_EINVAL (NULL buffers with n > 0), FL_ENOMEM (scratch growth). */
FL_NODISCARD int fl_mlp_predict(fl_mlp *m, const float *X, size_t n, float *probs);

/** Batch gradient: grad_sum (num_params floats, caller-owned, overwritten)
 *  receives the SUM over the n examples of the per-example loss gradients
 *  and *loss_sum the summed loss (BCE with logits, or softmax cross-entropy
 *  via log-sum-exp).  Labels y[i] are in {0,1} (sigmoid) or {0..K-1}
 *  (softmax).  n == 0 gives a zero gradient and zero loss (an empty Poisson
 *  batch is legal).  Both outputs are required.
 *  Errors: FL_EINVAL (NULL buffer, label out of range - the message names
 *  the example index), FL_ENOMEM. */
FL_NODISCARD int fl_mlp_gradient(fl_mlp *m, const float *X, const int32_t *y, size_t n,
                                 float *grad_sum, double *loss_sum);

/** Per-example gradients: G (n x num_params, row-major, caller-owned)
 *  receives in row i the gradient of example i's loss; losses (n floats)
 *  receives each example's loss and may be NULL.  Backward signals are
 *  computed for the whole batch with sgemm, then each row is assembled from
 *  outer products delta_i a_i^T.  n == 0 is allowed.
 *  Errors: FL_EINVAL (NULL buffer, label out of range), FL_ENOMEM. */
FL_NODISCARD int fl_mlp_example_gradients(fl_mlp *m, const float *X, const int32_t *y,
                                          size_t n, float *G, float *losses);

/** Sum of per-example gradients each clipped to L2 norm <= clip (finite,
 *  > 0), computed by ghost clipping at the cost of fl_mlp_gradient: one
 *  forward pass, the backward deltas of every layer, per-example norms
 *  ||g_i||^2 = sum over layers of ||delta_i||^2 (||a_i||^2 + 1) (exact for
 *  dense layers), clip factors c_i = min(1, C/||g_i||), then ONE sgemm per
 *  layer over the c_i-scaled deltas.  The clipping rule and its 1e-6
 *  safety margin are those of fl_dp_clip_rows (dp/fl_dpsgd.h), and an
 *  example whose gradient norm is not finite contributes zero, so the
 *  result equals clipping the rows of fl_mlp_example_gradients with
 *  fl_dp_clip_rows and summing them (up to float rounding of the sum).
 *  grad_sum (num_params floats, caller-owned) is overwritten; *clipped
 *  (may be NULL) receives how many examples were scaled down or zeroed;
 *  *loss_sum (may be NULL) the summed loss.  n == 0 gives zeros.  No
 *  allocation once the model's scratch has grown to the batch (or to its
 *  512-row chunk).  Errors: FL_EINVAL (bad clip, NULL buffer, label out
 *  of range), FL_ENOMEM; on error grad_sum is zeroed. */
FL_NODISCARD int fl_mlp_clipped_gradient_sum(fl_mlp *m, const float *X, const int32_t *y,
                                             size_t n, double clip, float *grad_sum,
                                             size_t *clipped, double *loss_sum);

/** Options of fl_mlp_clipped_gradient_sum_ex, for a caller that has
 *  another thread compute the clipped sum of some rows into grad_sum
 *  while this call computes the rest (node/fl_trainer). */
typedef struct {
    /** Add this call's clipped sum to grad_sum (which holds a sum
     *  already) instead of overwriting it. */
    int accumulate;
    /** If set: called once per call that reaches its first chunk's
     *  weight gradients (after the forward pass, the deltas and the clip
     *  factors), before grad_sum is first read or written; also on an
     *  earlier label or memory error, before grad_sum is zeroed (argument
     *  errors return before either).  A result other than FL_OK ends the
     *  call with that code (grad_sum then zeroed). */
    int (*before_write)(void *ctx);
    void *ctx;
} fl_mlp_sum_opts;

/** fl_mlp_clipped_gradient_sum with options (NULL: none, the same call). */
FL_NODISCARD int fl_mlp_clipped_gradient_sum_ex(fl_mlp *m, const float *X, const int32_t *y,
                                                size_t n, double clip, float *grad_sum,
                                                size_t *clipped, double *loss_sum,
                                                const fl_mlp_sum_opts *opts);

/** Per-example gradient L2 norms (n doubles into norms, caller-owned) by the
 *  ghost-norm identity above, without forming the gradients.  A NaN or
 *  infinity in an example's activations or deltas gives a non-finite norm.
 *  n == 0 is allowed.  Errors: FL_EINVAL (NULL buffer, label out of range),
 *  FL_ENOMEM. */
FL_NODISCARD int fl_mlp_example_norms(fl_mlp *m, const float *X, const int32_t *y, size_t n,
                                      double *norms);

/** The output layer's loss and its gradient, shared by every model: for n
 *  examples with logits z (n x k, row-major; k = 1 for a sigmoid) and
 *  labels y (already checked to be in range), d (n x k) receives
 *  dLoss/dlogits and losses (n, may be NULL) each example's loss (binary
 *  cross-entropy with logits, or softmax cross-entropy via log-sum-exp).
 *  Returns the summed loss. */
double fl_mlp_loss_delta(fl_mlp_output kind, const float *z, const int32_t *y, size_t n,
                         size_t k, float *d, float *losses);

/** Sets the number of OpenBLAS threads for the whole process (values < 1
 *  mean 1).  Nodes run single-threaded (fl_trainer_new sets 1 unless the
 *  operator set OPENBLAS_NUM_THREADS) because several node processes share
 *  a machine; benchmarks choose.  See docs/performance.md. */
void fl_mlp_set_blas_threads(int n);

/** The number of threads OpenBLAS currently uses. */
int fl_mlp_blas_threads(void);

/** Evaluation: *mean_loss receives the mean loss over the n examples and
 *  probs (n x outputs, may be NULL) the predicted probabilities.  Works in
 *  bounded chunks, so n may be large.
 *  Errors: FL_EINVAL (n == 0, NULL buffer, label out of range), FL_ENOMEM. */
FL_NODISCARD int fl_mlp_evaluate(fl_mlp *m, const float *X, const int32_t *y, size_t n,
                                 double *mean_loss, float *probs);

#endif
