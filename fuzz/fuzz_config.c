/*
 * fuzz_config: configuration files (config/fl_config.h, INI through inih)
 * against a field table with every field type, shaped like the node's and
 * the coordinator's tables: required and optional strings, paths resolved
 * against the file's folder, integers and doubles with ranges.
 *
 * Properties checked beyond "no crash": after a successful load every
 * required field was seen, every number is inside its range (and finite),
 * every string is non-empty and NUL-terminated within its buffer.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config/fl_config.h"
#include "fuzz/fuzz_support.h"

typedef struct {
    char name[FL_CONFIG_STR_MAX], consortium[FL_CONFIG_STR_MAX], key[FL_CONFIG_STR_MAX];
    char data[FL_CONFIG_STR_MAX], ledger[FL_CONFIG_STR_MAX], accountant[FL_CONFIG_STR_MAX];
    char layers[FL_CONFIG_STR_MAX];
    int64_t idle_ms, reserve, rounds, min_nodes;
    double eps_max, delta, lr, clip;
} s_cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_cfg c;
    fuzz_dir d;
    char path[1024];
    fl_config_field f[] = {
        {"node", "name", FL_CONFIG_STRING, c.name, 1, 0, 0, 0},
        {"node", "consortium", FL_CONFIG_STRING, c.consortium, 0, 0, 0, 0},
        {"node", "key", FL_CONFIG_PATH, c.key, 1, 0, 0, 0},
        {"node", "idle_timeout_ms", FL_CONFIG_INT, &c.idle_ms, 0, 1000, 86400000, 0},
        {"data", "train", FL_CONFIG_PATH, c.data, 0, 0, 0, 0},
        {"privacy", "epsilon_max", FL_CONFIG_DOUBLE, &c.eps_max, 1, 1e-3, 100, 0},
        {"privacy", "delta", FL_CONFIG_DOUBLE, &c.delta, 0, 1e-15, 1e-2, 0},
        {"privacy", "ledger", FL_CONFIG_PATH, c.ledger, 0, 0, 0, 0},
        {"privacy", "accountant", FL_CONFIG_STRING, c.accountant, 0, 0, 0, 0},
        {"privacy", "reserve_rounds", FL_CONFIG_INT, &c.reserve, 0, 0, 1000, 0},
        {"coordinator", "rounds", FL_CONFIG_INT, &c.rounds, 0, 1, 1000000, 0},
        {"coordinator", "min_nodes", FL_CONFIG_INT, &c.min_nodes, 0, 1, 1024, 0},
        {"model", "layers", FL_CONFIG_STRING, c.layers, 0, 0, 0, 0},
        {"train", "learning_rate", FL_CONFIG_DOUBLE, &c.lr, 0, 1e-6, 10, 0},
        {"train", "clip_norm", FL_CONFIG_DOUBLE, &c.clip, 0, 1e-6, 1e6, 0},
    };
    const size_t n = sizeof f / sizeof f[0];

    fuzz_init();
    memset(&c, 0, sizeof c);
    c.idle_ms = 60000;
    c.eps_max = 1.0;
    c.delta = 1e-5;
    c.lr = 0.1;
    c.clip = 1.0;
    c.rounds = 1;
    c.min_nodes = 1;
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "node.ini", data, size, path, sizeof path);
    if (fl_config_load(path, f, n) == FL_OK) {
        for (size_t i = 0; i < n; i++) {
            if (f[i].required && !f[i].seen)
                abort();
            if (f[i].type == FL_CONFIG_INT) {
                int64_t v = *(int64_t *)f[i].target;
                if ((double)v < f[i].min || (double)v > f[i].max)
                    abort();
            } else if (f[i].type == FL_CONFIG_DOUBLE) {
                double v = *(double *)f[i].target;
                if (!isfinite(v) || v < f[i].min || v > f[i].max)
                    abort();
            } else if (f[i].seen) {
                const char *s = f[i].target;
                if (!memchr(s, '\0', FL_CONFIG_STR_MAX) || s[0] == '\0')
                    abort();
                if (f[i].type == FL_CONFIG_PATH && s[0] != '/')
                    abort(); /* relative paths are resolved against the file's folder */
            }
        }
    } else if (!fl_error_last()[0]) {
        abort();
    }
    fuzz_dir_remove(&d);
    return 0;
}
