/*
 * fl_model_file: the global model on disk.
 *
 * Layout (little-endian): magic "FLMODEL1" (8 bytes), u32 output kind
 * (1 sigmoid, 2 softmax), u32 number of layer sizes L, L x u32 sizes,
 * u64 parameter count P, P x float32 parameters (per layer W row-major then
 * b), 32-byte SHA-256 of the parameters (fl_wire_model_digest).  Written
 * atomically; read back with every field validated.
 */
#ifndef FL_MODEL_FILE_H
#define FL_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

#define FL_MODEL_FILE_MAX_LAYERS 17

typedef struct {
    uint32_t output_kind;
    uint32_t num_sizes;
    uint32_t sizes[FL_MODEL_FILE_MAX_LAYERS];
    size_t num_params;
    float *params; /* owned */
} fl_model_file;

/** Writes a model file atomically (mode 0644). */
FL_NODISCARD int fl_model_file_save(const char *path, uint32_t output_kind, const uint32_t *sizes,
                                    uint32_t num_sizes, const float *params, size_t num_params);

/** Reads and validates a model file; the caller frees m->params with free(). */
FL_NODISCARD int fl_model_file_load(fl_model_file *m, const char *path);

#endif
