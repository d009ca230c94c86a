/*
 * fuzz_model_spec: the text form of a model (nn/fl_model_spec.h,
 * fl_model_spec_parse), as the coordinator's configuration ([model]
 * layers) and flctl give it: "input 28x28x1; conv 16 3; pool 2; dense 10"
 * or the MLP short form "30,128,64,1". The first input byte picks the
 * output kind (sigmoid or softmax); the rest is the text.
 *
 * Properties checked beyond "no crash": a parsed spec validates; its
 * canonical text parses back to a spec with the same text and parameter
 * count.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "nn/fl_model_spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_model_spec s, again;
    char *text, canon[FL_SPEC_TEXT_MAX], canon2[FL_SPEC_TEXT_MAX];
    uint32_t kind;

    fuzz_init();
    if (size < 1)
        return 0;
    kind = 1 + (data[0] & 1);
    text = malloc(size);
    if (!text)
        abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (fl_model_spec_parse(&s, text, kind) == FL_OK) {
        if (fl_model_spec_validate(&s) != FL_OK)
            abort();
        if (fl_model_spec_format(&s, canon, sizeof canon) != FL_OK)
            abort();
        if (fl_model_spec_parse(&again, canon, s.output_kind) != FL_OK ||
            fl_model_spec_format(&again, canon2, sizeof canon2) != FL_OK ||
            strcmp(canon, canon2) != 0 ||
            fl_model_spec_num_params(&again) != fl_model_spec_num_params(&s))
            abort();
    } else if (!fl_error_last()[0]) {
        abort();
    }
    free(text);
    return 0;
}
