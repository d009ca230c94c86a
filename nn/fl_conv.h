/*
 * fl_conv: image layer primitives on OpenBLAS for batches of NCHW float
 * tensors - a 2-D convolution (stride 1, 'valid' padding, bias) with its
 * forward and backward passes by im2col + sgemm, per-example squared
 * gradient norms of its weights (explicit or by the ghost-norm identity,
 * for DP-SGD clipping), and 2x2 max-pooling with its backward pass.
 *
 * Layouts (all row-major):
 *   X   n x C_in  x H  x W         input batch
 *   Y   n x C_out x Ho x Wo        output, Ho = H-k+1, Wo = W-k+1
 *   Wt  C_out x C_in x k x k       weights (PyTorch layout), i.e.
 *                                  C_out x (C_in k^2) as a matrix
 *   b   C_out                      bias
 * With T = Ho*Wo output positions and A_i the (C_in k^2) x T im2col matrix
 * of example i, Y_i = Wt A_i + b 1^T.
 *
 * A layer object holds only the geometry and scratch space; the
 * parameters belong to the caller.  Scratch is allocated once at creation
 * (im2col buffers for one example) or on first use (the T x T ghost-norm
 * Gram matrices) and never again: every pass works example by example, so
 * the batch size does not change it.  Not thread-safe.
 */
#ifndef FL_CONV_H
#define FL_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct fl_conv2d fl_conv2d;

/** How fl_conv2d_example_sq_norms computes per-example weight-gradient
 *  norms. */
typedef enum {
    FL_CONV_NORM_EXPLICIT = 1, /* materialise G_i = D_i A_i^T, sum its squares */
    FL_CONV_NORM_GHOST = 2,    /* <A_i^T A_i, D_i^T D_i>, never forms G_i */
    FL_CONV_NORM_AUTO = 3      /* the cheaper of the two, fl_conv2d_norm_choice */
} fl_conv_norm;

/** Creates a convolution layer with c_in input channels, c_out output
 *  channels, a k x k kernel and h x w inputs (k <= h, k <= w).
 *  On success *out owns the layer (free with fl_conv2d_free).
 *  Errors: FL_EINVAL (a zero size, k larger than the input, a matrix
 *  dimension or buffer beyond 2^31 elements), FL_ENOMEM. */
FL_NODISCARD int fl_conv2d_new(fl_conv2d **out, size_t c_in, size_t c_out, size_t k,
                               size_t h, size_t w);

/** Frees the layer and its scratch.  fl_conv2d_free(NULL) is a no-op. */
void fl_conv2d_free(fl_conv2d *c);

/** Output height H-k+1 and width W-k+1. */
size_t fl_conv2d_out_h(const fl_conv2d *c);
size_t fl_conv2d_out_w(const fl_conv2d *c);

/** Number of weights C_out * C_in * k^2 (the bias adds C_out more). */
size_t fl_conv2d_num_weights(const fl_conv2d *c);

/** Forward pass: Y (n x C_out x Ho x Wo, caller-owned, overwritten) =
 *  conv(X, Wt) + b; b may be NULL (no bias).  n == 0 does nothing.
 *  Errors: FL_EINVAL (NULL X, Wt or Y with n > 0). */
FL_NODISCARD int fl_conv2d_forward(fl_conv2d *c, const float *Wt, const float *b,
                                   const float *X, size_t n, float *Y);

/** Backward pass for a loss L given dY = dL/dY (n x C_out x Ho x Wo):
 *  dX (n x C_in x H x W) receives dL/dX (col2im of Wt^T dY_i), dW
 *  (C_out x C_in x k x k) the weight gradient summed over the batch
 *  (sum_i dY_i A_i^T) and db (C_out) the bias gradient summed over the
 *  batch and positions.  Each output is overwritten and may be NULL when
 *  not wanted.  n == 0 zeroes the requested outputs.
 *  Errors: FL_EINVAL (NULL X or dY with n > 0, NULL Wt with dX wanted). */
FL_NODISCARD int fl_conv2d_backward(fl_conv2d *c, const float *Wt, const float *X,
                                    const float *dY, size_t n, float *dX, float *dW,
                                    float *db);

/** Which method FL_CONV_NORM_AUTO uses for this layer: the mixed ghost
 *  clipping rule of Bu et al. 2022 ("Scalable and efficient training of
 *  large convolutional neural networks with differential privacy",
 *  NeurIPS 2022): the ghost norm needs two T x T Gram matrices, 2 T^2 numbers,
 *  the explicit norm one C_out x (C_in k^2) gradient, so ghost is chosen
 *  when 2 T^2 < C_in k^2 * C_out and explicit otherwise.  (Time follows
 *  the same trade-off: ghost costs O(T^2 (C_in k^2 + C_out)) per example,
 *  explicit O(T C_in k^2 C_out).)  Returns FL_CONV_NORM_GHOST or
 *  FL_CONV_NORM_EXPLICIT. */
fl_conv_norm fl_conv2d_norm_choice(const fl_conv2d *c);

/** Per-example squared L2 norms of the weight gradients, sq[i] =
 *  ||D_i A_i^T||_F^2 with D_i = dY_i (C_out x T), plus, when with_bias is
 *  non-zero, the bias gradient's ||D_i 1||^2.  `method` picks how (see
 *  fl_conv_norm): the ghost identity ||D A^T||_F^2 = <A^T A, D^T D>_F
 *  (Li et al. 2021, "Large language models can be strong differentially
 *  private learners", 2021; Bu et al. 2022) gives the same numbers up to
 *  float rounding.  sq (n doubles, caller-owned) is overwritten; n == 0 is
 *  allowed.  Accumulation is in double.
 *  Errors: FL_EINVAL (NULL buffer with n > 0, unknown method, a ghost
 *  Gram matrix T x T beyond 2^31 elements), FL_ENOMEM (the ghost Gram
 *  matrices on first use). */
FL_NODISCARD int fl_conv2d_example_sq_norms(fl_conv2d *c, const float *X, const float *dY,
                                            size_t n, fl_conv_norm method, int with_bias,
                                            double *sq);

/** 2x2 max-pooling with stride 2: Y (n x C x H/2 x W/2, rounded down; an
 *  odd last row or column is dropped) receives the maximum of each 2x2
 *  window of X (n x C x H x W), and argmax (same size as Y) the flat index
 *  into X of the element chosen (the first in row-major window order among
 *  equal maxima).  Both outputs are caller-owned and overwritten.
 *  Errors: FL_EINVAL (NULL buffer with n*C > 0, H or W below 2). */
FL_NODISCARD int fl_maxpool2_forward(const float *X, size_t n, size_t ch, size_t h, size_t w,
                                     float *Y, size_t *argmax);

/** Backward pass of fl_maxpool2_forward: dX (n x C x H x W, overwritten)
 *  is zero except at each argmax position, which receives its window's
 *  dY.  Errors: FL_EINVAL (NULL buffer with n*C > 0, H or W below 2, an
 *  argmax outside X). */
FL_NODISCARD int fl_maxpool2_backward(const float *dY, const size_t *argmax, size_t n,
                                      size_t ch, size_t h, size_t w, float *dX);

#endif
