/*
 * fuzz_csv: a hospital's CSV records (nn/fl_dataset.h, fl_dataset_load_csv)
 * against a fixed schema of three features (one with a negative range) and
 * a three-class label, the way a node loads its shard.
 *
 * Properties checked beyond "no crash": a loaded dataset has rows, the
 * schema's feature count, every value scaled into [0, 1] and every label
 * in 0..classes-1.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "nn/fl_dataset.h"

static const char s_schema[] =
    "[schema]\nname = fuzz\nlabel = y\nclasses = 3\n"
    "[features]\nage = 0 120\ntemp = -40.5 45\nmarker = 0.001 1e6\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    fl_schema *s = NULL;
    fl_dataset *ds = NULL;
    char schema_path[1024], csv_path[1024];

    fuzz_init();
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "schema.ini", (const uint8_t *)s_schema, sizeof s_schema - 1, schema_path,
                   sizeof schema_path);
    if (fl_schema_load(&s, schema_path) != FL_OK)
        abort();
    fuzz_dir_write(&d, "shard.csv", data, size, csv_path, sizeof csv_path);
    if (fl_dataset_load_csv(&ds, csv_path, s) == FL_OK) {
        if (ds->n == 0 || ds->d != 3 || ds->num_classes != 3)
            abort();
        for (size_t i = 0; i < ds->n * ds->d; i++)
            if (!(ds->X[i] >= 0.0f && ds->X[i] <= 1.0f))
                abort();
        for (size_t i = 0; i < ds->n; i++)
            if (ds->y[i] < 0 || ds->y[i] >= 3)
                abort();
        fl_dataset_free(ds);
    } else if (ds || !fl_error_last()[0]) {
        abort();
    }
    fl_schema_free(s);
    fuzz_dir_remove(&d);
    return 0;
}
