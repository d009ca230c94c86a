/* Tests for fl_config: typed keys, ranges, unknown keys, paths. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/fl_config.h"

static char s_dir[64];

static const char *s_write(const char *name, const char *text)
{
    static char path[128];
    FILE *f;
    if (!s_dir[0]) {
        fl_test_dir_new(s_dir, sizeof s_dir, "config");
    }
    snprintf(path, sizeof path, "%s/%s", s_dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

typedef struct {
    char name[FL_CONFIG_STR_MAX];
    char data[FL_CONFIG_STR_MAX];
    int64_t rounds;
    double lr;
} s_cfg;

static size_t s_fields(s_cfg *c, fl_config_field *f)
{
    fl_config_field t[] = {
        {"node", "name", FL_CONFIG_STRING, c->name, 1, 0, 0, 0},
        {"node", "data", FL_CONFIG_PATH, c->data, 0, 0, 0, 0},
        {"train", "rounds", FL_CONFIG_INT, &c->rounds, 0, 1, 100, 0},
        {"train", "lr", FL_CONFIG_DOUBLE, &c->lr, 0, 1e-6, 10, 0},
    };
    memcpy(f, t, sizeof t);
    return sizeof t / sizeof t[0];
}

Test(config, loads_typed_values_and_resolves_relative_paths)
{
    s_cfg c = {.rounds = 7, .lr = 0.1};
    fl_config_field f[8];
    size_t n = s_fields(&c, f);
    const char *p = s_write("ok.ini", "[node]\nname = a\ndata = shard.csv\n[train]\nlr = 0.5\n");
    cr_assert_eq(fl_config_load(p, f, n), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(c.name, "a");
    char want[256];
    snprintf(want, sizeof want, "%s/shard.csv", s_dir);
    cr_assert_str_eq(c.data, want);
    cr_assert_eq(c.rounds, 7, "absent optional key keeps its default");
    cr_assert_float_eq(c.lr, 0.5, 1e-12);
}

Test(config, rejects_out_of_range_with_file_and_line)
{
    s_cfg c = {0};
    fl_config_field f[8];
    size_t n = s_fields(&c, f);
    const char *p = s_write("range.ini", "[node]\nname = a\n[train]\nrounds = 1000\n");
    cr_assert_eq(fl_config_load(p, f, n), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "range.ini:4"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "rounds"), "%s", fl_error_last());
}

Test(config, rejects_unknown_key_bad_number_and_missing_required)
{
    s_cfg c = {0};
    fl_config_field f[8];
    size_t n = s_fields(&c, f);
    cr_assert_eq(fl_config_load(s_write("u.ini", "[node]\nname = a\ncolour = red\n"), f, n),
                 FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "unknown key 'colour'"), "%s", fl_error_last());
    cr_assert_eq(fl_config_load(s_write("b.ini", "[node]\nname = a\n[train]\nlr = fast\n"), f, n),
                 FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "b.ini:4"), "%s", fl_error_last());
    cr_assert_eq(fl_config_load(s_write("m.ini", "[train]\nlr = 1\n"), f, n), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "name is required"), "%s", fl_error_last());
    cr_assert_eq(fl_config_load("/nonexistent/x.ini", f, n), FL_EIO);
}
