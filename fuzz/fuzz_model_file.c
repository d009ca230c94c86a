/*
 * fuzz_model_file: the global model file (coordinator/fl_model_file.h),
 * both layouts ("FLMODEL1" MLP sizes, "FLMODEL2" spec with layers), as the
 * coordinator reads it on resume and an operator's tools read an export.
 *
 * Properties checked beyond "no crash": a loaded model's spec validates and
 * its parameter count is the spec's; saving it and loading the result gives
 * the same spec and bit-identical parameters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/fl_model_file.h"
#include "fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    fl_model_file m, again;
    char path[1024], copy[1024];

    fuzz_init();
    memset(&m, 0, sizeof m);
    memset(&again, 0, sizeof again);
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "model.bin", data, size, path, sizeof path);
    if (fl_model_file_load(&m, path) == FL_OK) {
        if (fl_model_spec_validate(&m.spec) != FL_OK ||
            m.num_params != fl_model_spec_num_params(&m.spec) || !m.params)
            abort();
        if ((size_t)snprintf(copy, sizeof copy, "%s/copy.bin", d.path) >= sizeof copy)
            abort();
        if (fl_model_file_save(copy, &m.spec, m.params, m.num_params) != FL_OK ||
            fl_model_file_load(&again, copy) != FL_OK)
            abort();
        if (again.num_params != m.num_params ||
            memcmp(again.params, m.params, 4 * m.num_params) != 0 ||
            fl_model_spec_num_params(&again.spec) != m.num_params ||
            again.spec.output_kind != m.spec.output_kind ||
            again.spec.num_layers != m.spec.num_layers)
            abort();
        fl_model_file_clear(&again);
        fl_model_file_clear(&m);
    } else if (m.params || !fl_error_last()[0]) {
        abort();
    }
    fuzz_dir_remove(&d);
    return 0;
}
