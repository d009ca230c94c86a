/*
 * fl_model_spec: the architecture of a model, as the configuration, the
 * wire protocol, the model file and the exporters describe it.
 *
 * A model is an input shape C x H x W (an MLP on d features is d x 1 x 1)
 * followed by up to FL_SPEC_MAX_LAYERS layers applied in order:
 *   conv K k   2-D convolution, K output channels, k x k kernel, stride 1,
 *              'valid' padding, bias, then ReLU (nn/fl_conv.h)
 *   pool 2     2 x 2 max-pooling, stride 2 (an odd last row/column dropped)
 *   dense N    fully connected, N outputs, bias; ReLU unless it is the
 *              last layer.  Before the first dense layer the C x H x W
 *              activation is flattened in C, H, W order (NCHW, as PyTorch
 *              and ONNX Flatten do).
 * The last layer is dense and gives the outputs: 1 with a sigmoid
 * (FL_MLP_OUT_SIGMOID_BCE) or K >= 2 with a softmax (FL_MLP_OUT_SOFTMAX_CE).
 * No conv or pool may follow a dense layer.
 *
 * Parameters are one flat float vector: for each layer in order, conv
 * weights (K x C_in x k x k, PyTorch layout) then bias (K), or dense
 * weights (N x inputs, row-major) then bias (N); pool has none.  For a
 * model of dense layers only this is exactly fl_mlp's layout.
 *
 * Text form (configuration files, logs, flctl):
 *   "input 28x28x1; conv 16 3; pool 2; conv 32 3; pool 2; dense 10"
 * (input is H x W x C), and for an MLP the short form "30,128,64,1" or
 * "30 128 64 1" (inputs, then each dense layer's width) is accepted too.
 */
#ifndef FL_MODEL_SPEC_H
#define FL_MODEL_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

#define FL_SPEC_MAX_LAYERS 16
#define FL_SPEC_MAX_DIM 65536u          /* bound on any one size in a spec */
#define FL_SPEC_MAX_PARAMS (16u << 20)  /* = FL_SECAGG_MAX_DIM */
#define FL_SPEC_TEXT_MAX 512            /* bytes of the text form, NUL included */

typedef enum {
    FL_LAYER_DENSE = 1, /* units = outputs */
    FL_LAYER_CONV = 2,  /* units = output channels, kernel = k */
    FL_LAYER_POOL = 3   /* kernel = 2 (the only size supported) */
} fl_layer_kind;

typedef struct {
    uint32_t kind;   /* fl_layer_kind */
    uint32_t units;  /* dense outputs or conv output channels; 0 for pool */
    uint32_t kernel; /* conv k, pool 2; 0 for dense */
} fl_layer_spec;

typedef struct {
    uint32_t in_c, in_h, in_w; /* input channels, height, width; MLP: d, 1, 1 */
    uint32_t output_kind;      /* fl_mlp_output: 1 sigmoid + BCE, 2 softmax + CE */
    uint32_t num_layers;
    fl_layer_spec layers[FL_SPEC_MAX_LAYERS];
} fl_model_spec;

/** Checks a spec: sizes in 1..FL_SPEC_MAX_DIM, kernels no larger than the
 *  activation they slide over, pool on at least 2 x 2, the last layer dense
 *  with 1 output (sigmoid) or >= 2 (softmax), no conv/pool after a dense
 *  layer, at most FL_SPEC_MAX_PARAMS parameters.  FL_EINVAL naming the
 *  layer (1-based) and what is wrong. */
FL_NODISCARD int fl_model_spec_validate(const fl_model_spec *s);

/** Number of parameters of a valid spec (0 if it is not valid). */
size_t fl_model_spec_num_params(const fl_model_spec *s);

/** Number of input values per example: in_c * in_h * in_w. */
size_t fl_model_spec_num_inputs(const fl_model_spec *s);

/** Number of outputs: the last layer's units. */
size_t fl_model_spec_num_outputs(const fl_model_spec *s);

/** Shape of the activation after layer i (0-based; i == -1 for the input)
 *  as C x H x W; after a dense layer C = units and H = W = 1.  No checks
 *  beyond i's range: call on a valid spec.  FL_EINVAL for i out of range. */
FL_NODISCARD int fl_model_spec_shape(const fl_model_spec *s, int i, uint32_t *c, uint32_t *h,
                                     uint32_t *w);

/** 1 if the spec has only dense layers on a d x 1 x 1 input (an MLP that
 *  nn/fl_mlp runs), else 0. */
int fl_model_spec_is_mlp(const fl_model_spec *s);

/** An MLP spec from layer widths sizes[0] (inputs) .. sizes[n-1] (outputs),
 *  validated.  FL_EINVAL as fl_model_spec_validate, or n < 2. */
FL_NODISCARD int fl_model_spec_from_sizes(fl_model_spec *s, const uint32_t *sizes, size_t n,
                                          uint32_t output_kind);

/** For an MLP spec, its widths (inputs, then each layer's units) into
 *  sizes (room for FL_SPEC_MAX_LAYERS + 1) and their count into *n.
 *  FL_EINVAL if the spec is not an MLP. */
FL_NODISCARD int fl_model_spec_to_sizes(const fl_model_spec *s, uint32_t *sizes, size_t *n);

/** Parses the text form (see above; whitespace around tokens is free) and
 *  validates the result.  FL_EPARSE naming the offending item, or the
 *  errors of fl_model_spec_validate. */
FL_NODISCARD int fl_model_spec_parse(fl_model_spec *s, const char *text, uint32_t output_kind);

/** Writes the canonical text form ("input HxWxC; conv K k; ...; dense N")
 *  into buf (cap bytes, FL_SPEC_TEXT_MAX is always enough).  FL_ERANGE if
 *  it does not fit. */
FL_NODISCARD int fl_model_spec_format(const fl_model_spec *s, char *buf, size_t cap);

#endif
