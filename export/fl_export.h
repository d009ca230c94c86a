/*
 * fl_export: the global model in formats other tools read.
 *
 *   safetensors  (https://github.com/huggingface/safetensors) an 8-byte
 *                little-endian header length, a JSON header naming each
 *                tensor ("layers.<i>.weight" / "layers.<i>.bias", i the
 *                layer's 0-based index in the spec; dtype "F32", shape,
 *                data_offsets) and "__metadata__" (format "flc", spec, output,
 *                sha256, version), padded with spaces to a multiple of 8,
 *                then the tensors' little-endian bytes.  Shapes follow
 *                PyTorch: conv weight K x C_in x k x k, dense weight N x in.
 *   ONNX         an ONNX model (IR version 8, opset 13) encoded with the
 *                subset of onnx.proto in export/onnx.proto: input "input"
 *                float [N, C, H, W] (N symbolic) for a CNN or [N, d] for an
 *                MLP; Conv + Relu, MaxPool, Flatten, Gemm (transB = 1) +
 *                Relu, then Sigmoid or Softmax(axis 1) into output
 *                "probabilities" [N, outputs].  Initializers carry the same
 *                names as the safetensors tensors, as raw little-endian data;
 *                metadata_props the same metadata.
 *
 * Both write the whole file atomically (fl_storage_write_atomic, mode 0644)
 * and never leave a partial file behind.
 */
#ifndef FL_EXPORT_H
#define FL_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "nn/fl_model_spec.h"

/** Largest header the safetensors writer produces (the format's readers
 *  refuse headers over 100 MB; ours are a few KiB). */
#define FL_EXPORT_MAX_HEADER 65536

/** Writes `spec` with parameters `params` (n floats, the layout of
 *  fl_model_spec.h) as a safetensors file at `path`.  `sha256_hex` is the
 *  model's SHA-256 (64 lowercase hex digits, fl_wire_model_digest of the
 *  parameters) and `version` the model's version (its round), both recorded
 *  in the metadata.  The caller keeps ownership of everything.
 *  Errors: FL_EINVAL (invalid spec, n not the spec's parameter count, a
 *  sha256 that is not 64 hex digits), FL_ENOMEM, FL_EIO (the file cannot be
 *  written; the message names it). */
FL_NODISCARD int fl_export_safetensors(const char *path, const fl_model_spec *spec,
                                       const float *params, size_t n, const char *sha256_hex,
                                       uint32_t version);

/** Writes the same model as an ONNX file at `path` (see above); arguments
 *  and errors as fl_export_safetensors. */
FL_NODISCARD int fl_export_onnx(const char *path, const fl_model_spec *spec, const float *params,
                                size_t n, const char *sha256_hex, uint32_t version);

#endif
