/*
 * fl_convpool: a convolution (stride 1, 'valid', bias) followed by ReLU
 * and 2x2 max-pooling, computed as one block whose backward pass uses the
 * sparsity the pooling creates.
 *
 * Only one position in each 2x2 window - its argmax - receives a
 * gradient, and none when the window's maximum is not positive (the
 * ReLU).  So the output gradient of the convolution has at most one
 * non-zero in four, at positions the forward pass already knows.  The
 * block keeps those positions ("routes") and the im2col patches of the
 * forward pass, and forms weight gradients and the input gradient from
 * the routed entries only: a quarter or less of the multiply-adds of the
 * dense im2col + sgemm backward (fl_conv2d_backward), and no zero-filled
 * gradient tensor.  Per-example weight gradients, which DP-SGD needs for
 * clipping (Abadi et al. 2016; explicit per-example gradients as in the
 * mixed ghost clipping of Bu et al. 2022), cost the same as the batch
 * gradient: each is a sum of routed patch rows.
 *
 * The convolution is evaluated only where the pooling reads it: a pool
 * output of ph x pw needs the top-left 2ph x 2pw convolution outputs,
 * which need the top-left (2ph+k-1) x (2pw+k-1) input values.  A caller
 * may ask for fewer pool outputs than the natural floor((H-k+1)/2) when
 * the next layer reads only a top-left part (fl_model does this); the
 * results on the part computed are exactly those of the full layer.
 *
 * Layouts as fl_conv.h: X is n x C_in x H x W (NCHW), Wt is C_out x C_in
 * x k x k, b is C_out, Y (the pooled ReLU output) n x C_out x ph x pw -
 * or, with FL_CONVPOOL_IN_NHWC / FL_CONVPOOL_OUT_NHWC, channels innermost
 * (n x H x W x C_in, n x ph x pw x C_out) for the input and its gradient,
 * or the output and its gradient.  Between two blocks NHWC is the cheaper
 * layout: a patch row is then k runs of k C_in contiguous values, and the
 * pooling writes its channel vectors as they are.
 * Not thread-safe; the backward functions use what the last forward call
 * kept, for the same n rows.  All scratch is allocated at creation, for
 * at most `cap` rows per call.
 */
#ifndef FL_CONVPOOL_H
#define FL_CONVPOOL_H

#include <stddef.h>

#include "error/fl_error.h"

typedef struct fl_convpool fl_convpool;

/** Layout flags of fl_convpool_new. */
enum {
    FL_CONVPOOL_IN_NHWC = 1, /* X and dX are n x H x W x C_in */
    FL_CONVPOOL_OUT_NHWC = 2 /* Y and dY are n x ph x pw x C_out */
};

/** Creates a block: c_in x h x w inputs, c_out channels, k x k kernel,
 *  ph x pw pool outputs (1 <= ph <= (h-k+1)/2, same for pw), at most cap
 *  rows per call; flags are FL_CONVPOOL_* layout flags (0: NCHW).
 *  Errors: FL_EINVAL (zero or inconsistent sizes, unknown flags, buffers
 *  beyond 2^31 elements), FL_ENOMEM. */
FL_NODISCARD int fl_convpool_new(fl_convpool **out, size_t c_in, size_t c_out, size_t k,
                                 size_t h, size_t w, size_t ph, size_t pw, size_t cap,
                                 unsigned flags);

/** Frees the block.  fl_convpool_free(NULL) is a no-op. */
void fl_convpool_free(fl_convpool *cp);

/** Y[i][o][py][px] = max over the window (2py+dy, 2px+dx), dy,dx in {0,1},
 *  of ReLU(conv(X_i, Wt)[o] + b[o]).  The window's argmax is the first
 *  strict maximum in the order (0,0), (0,1), (1,0), (1,1), as
 *  fl_maxpool2_forward.  Keeps patches and routes for the backward calls.
 *  n == 0 does nothing.  Errors: FL_EINVAL (NULL buffer with n > 0, n
 *  above cap). */
FL_NODISCARD int fl_convpool_forward(fl_convpool *cp, const float *Wt, const float *b,
                                     const float *X, size_t n, float *Y);

/** Batch weight and bias gradients for a loss with dL/dY = dY (same layout
 *  as Y), Y the output of the last forward call: gW (C_out x C_in k^2, the
 *  parameter order)
 *  and gb (C_out) receive the sums over the n rows, overwritten or, with
 *  accumulate non-zero, added to.  Errors: FL_EINVAL (NULL buffer, n not
 *  the last forward's). */
FL_NODISCARD int fl_convpool_batch_grad(fl_convpool *cp, const float *Y, const float *dY,
                                        size_t n, float *gW, float *gb, int accumulate);

/** Per-example gradients: row i of G (at G + i * ldg, ldg >= C_out C_in
 *  k^2 + C_out) receives example i's weight gradient followed by its bias
 *  gradient.  The weights are in the block's patch order: the parameter
 *  order C_out x C_in x k x k for an NCHW input, C_out x k x k x C_in for
 *  an NHWC one (norms and sums over rows do not depend on it; convert a
 *  sum with fl_convpool_to_param_order).  Errors as
 *  fl_convpool_batch_grad. */
FL_NODISCARD int fl_convpool_example_grads(fl_convpool *cp, const float *Y, const float *dY,
                                           size_t n, float *G, size_t ldg);

/** Adds (accumulate non-zero) or writes a weight gradient in the block's
 *  patch order (src, C_out C_in k^2 floats, as fl_convpool_example_grads
 *  rows) into dst in the parameter order C_out x C_in x k x k. */
void fl_convpool_to_param_order(const fl_convpool *cp, const float *src, float *dst,
                                int accumulate);

/** Input gradient: dX (same layout as X, overwritten) = dL/dX; inputs the
 *  block does not read get zero.  Errors as fl_convpool_batch_grad. */
FL_NODISCARD int fl_convpool_input_grad(fl_convpool *cp, const float *Wt, const float *Y,
                                        const float *dY, size_t n, float *dX);

#endif
