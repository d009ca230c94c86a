/*
 * fuzz_schema: the consortium's feature schema (nn/fl_dataset.h,
 * fl_schema_load), which every node and the coordinator read and whose
 * digest nodes compare in Join.
 *
 * Properties checked beyond "no crash": a loaded schema has at least one
 * feature, at least 2 classes, a name for every feature index and none
 * past the end, and a digest that is the same when computed twice.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "nn/fl_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    fl_schema *s = NULL;
    char path[1024];

    fuzz_init();
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "schema.ini", data, size, path, sizeof path);
    if (fl_schema_load(&s, path) == FL_OK) {
        unsigned char a[32], b[32];
        size_t nf = fl_schema_num_features(s);
        if (nf == 0 || fl_schema_num_classes(s) < 2 || !fl_schema_name(s))
            abort();
        for (size_t i = 0; i < nf; i++)
            if (!fl_schema_feature_name(s, i))
                abort();
        if (fl_schema_feature_name(s, nf))
            abort();
        fl_schema_digest(s, a);
        fl_schema_digest(s, b);
        if (memcmp(a, b, 32) != 0)
            abort();
        fl_schema_free(s);
    } else if (s || !fl_error_last()[0]) {
        abort();
    }
    fuzz_dir_remove(&d);
    return 0;
}
