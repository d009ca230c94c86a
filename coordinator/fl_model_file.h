/*
 * fl_model_file: the global model on disk.
 *
 * Layout (little-endian): magic "FLMODEL2" (8 bytes), u32 output kind
 * (1 sigmoid, 2 softmax), u32 input channels, height, width, u32 number
 * of layers L, L x (u32 kind, u32 units, u32 kernel) as in
 * nn/fl_model_spec.h, u64 parameter count P, P x float32 parameters (per
 * layer weights then bias), 32-byte SHA-256 of the parameters
 * (fl_wire_model_digest).  Files of the first layout ("FLMODEL1": output
 * kind, the MLP's layer sizes, P, parameters, SHA-256) are still read.
 * Written atomically; read back with every field validated and the spec
 * checked by fl_model_spec_validate.
 */
#ifndef FL_MODEL_FILE_H
#define FL_MODEL_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "nn/fl_model_spec.h"

typedef struct {
    fl_model_spec spec;
    size_t num_params;
    float *params; /* owned: free with fl_model_file_clear */
} fl_model_file;

/** Writes a model file atomically (mode 0644).  FL_EINVAL if the spec is
 *  invalid or num_params is not its parameter count; FL_EIO, FL_ENOMEM. */
FL_NODISCARD int fl_model_file_save(const char *path, const fl_model_spec *spec,
                                    const float *params, size_t num_params);

/** Reads and validates a model file (either layout).  FL_EIO if it cannot
 *  be read, FL_EPARSE naming what is wrong (magic, spec, size, checksum).
 *  On success free with fl_model_file_clear. */
FL_NODISCARD int fl_model_file_load(fl_model_file *m, const char *path);

/** Frees the parameters and zeroes *m.  Safe on a zeroed struct. */
void fl_model_file_clear(fl_model_file *m);

#endif
