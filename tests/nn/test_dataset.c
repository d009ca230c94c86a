/* Tests for fl_dataset: the schema parser, the CSV loader (WDBC and every
 * kind of malformed input, with exact FILE:LINE:COL positions), the schema
 * digest, and the stratified splitter. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/fl_dataset.h"

#define WDBC_CSV FL_SOURCE_DIR "/data/wdbc/wdbc.csv"
#define WDBC_SCHEMA FL_SOURCE_DIR "/data/wdbc/schema.ini"

static char g_dir[64];

static void s_setup(void)
{
    fl_test_dir_new(g_dir, sizeof g_dir, "nn");
}

static void s_teardown(void) { fl_test_dir_remove(g_dir); }

TestSuite(dataset, .init = s_setup, .fini = s_teardown);

/* Writes `text` to g_dir/name; returns the path (static per call site use). */
static const char *s_write(const char *name, const char *text)
{
    static char paths[8][256];
    static int slot;
    char *p = paths[slot++ % 8];
    snprintf(p, 256, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return p;
}

static const char *TINY_SCHEMA = "# tiny test schema\n"
                                 "[schema]\n"
                                 "name = tiny\n"
                                 "label = y\n"
                                 "classes = 2\n"
                                 "[features]\n"
                                 "a = 0 10 ; public range\n"
                                 "b = -1 1\n";

static fl_schema *s_tiny(void)
{
    fl_schema *s = NULL;
    cr_assert_eq(fl_schema_load(&s, s_write("tiny.ini", TINY_SCHEMA)), FL_OK, "%s",
                 fl_error_last());
    return s;
}

/* Loads csv text against the tiny schema and expects FL_EPARSE with a
 * message containing "bad.csv:<where>" and `what`. */
static void s_expect_reject(const char *csv, const char *where, const char *what)
{
    fl_schema *s = s_tiny();
    fl_dataset *ds = NULL;
    const char *path = s_write("bad.csv", csv);
    cr_assert_eq(fl_dataset_load_csv(&ds, path, s), FL_EPARSE, "accepted: %s", csv);
    cr_assert_null(ds);
    char want[64];
    snprintf(want, sizeof want, "bad.csv:%s:", where);
    cr_assert(strstr(fl_error_last(), want), "expected '%s' in: %s", want, fl_error_last());
    if (what)
        cr_assert(strstr(fl_error_last(), what), "expected '%s' in: %s", what,
                  fl_error_last());
    fl_schema_free(s);
}

Test(dataset, loads_wdbc_with_569_rows_212_positives_and_nothing_clamped)
{
    fl_schema *s = NULL;
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_schema_load(&s, WDBC_SCHEMA), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_schema_name(s), "wdbc");
    cr_assert_eq(fl_schema_num_features(s), 30);
    cr_assert_eq(fl_schema_num_classes(s), 2);
    cr_assert_str_eq(fl_schema_feature_name(s, 0), "radius_mean");
    cr_assert_str_eq(fl_schema_feature_name(s, 29), "fractal_dimension_worst");
    cr_assert_null(fl_schema_feature_name(s, 30));
    cr_assert_eq(fl_dataset_load_csv(&ds, WDBC_CSV, s), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 569);
    cr_assert_eq(ds->d, 30);
    cr_assert_eq(ds->num_classes, 2);
    cr_assert_eq(ds->clamped, 0);
    size_t pos = 0;
    for (size_t i = 0; i < ds->n; i++) {
        cr_assert(ds->y[i] == 0 || ds->y[i] == 1);
        pos += ds->y[i];
        for (size_t j = 0; j < ds->d; j++)
            cr_assert(ds->X[i * ds->d + j] >= 0.0f && ds->X[i * ds->d + j] <= 1.0f);
    }
    cr_assert_eq(pos, 212);
    /* Row 1 of wdbc.csv: radius_mean 17.99 in [6.2, 31], area_mean 1001 in
     * [120, 2800], fractal_dimension_worst 0.1189 in [0.049, 0.23]; label 1. */
    cr_assert_float_eq(ds->X[0], (17.99 - 6.2) / (31 - 6.2), 1e-6);
    cr_assert_float_eq(ds->X[3], (1001.0 - 120) / (2800 - 120), 1e-6);
    cr_assert_float_eq(ds->X[29], (0.1189 - 0.049) / (0.23 - 0.049), 1e-6);
    cr_assert_eq(ds->y[0], 1);
    fl_dataset_free(ds);
    fl_schema_free(s);
}

Test(dataset, accepts_crlf_reordered_and_extra_columns_blank_last_line_and_counts_clamps)
{
    fl_schema *s = s_tiny();
    fl_dataset *ds = NULL;
    const char *path = s_write("ok.csv", "id,y,b,a\r\n"
                                         "x7,1,0.5,5\r\n"
                                         "x8,0,-3,12.5\r\n"
                                         "\r\n");
    cr_assert_eq(fl_dataset_load_csv(&ds, path, s), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 2);
    cr_assert_eq(ds->d, 2);
    cr_assert_float_eq(ds->X[0], 0.5, 1e-7);  /* a = 5 in [0,10] */
    cr_assert_float_eq(ds->X[1], 0.75, 1e-7); /* b = 0.5 in [-1,1] */
    cr_assert_float_eq(ds->X[2], 1.0, 1e-7);  /* a = 12.5 clamped to 10 */
    cr_assert_float_eq(ds->X[3], 0.0, 1e-7);  /* b = -3 clamped to -1 */
    cr_assert_eq(ds->y[0], 1);
    cr_assert_eq(ds->y[1], 0);
    cr_assert_eq(ds->clamped, 2);
    fl_dataset_free(ds);
    fl_schema_free(s);
    fl_dataset_free(NULL);
    fl_schema_free(NULL);
}

Test(dataset, rejects_non_numeric_value_with_position)
{
    s_expect_reject("a,b,y\n1,0.5,0\n3,x4,1\n", "3:3", "column 'b'");
}

Test(dataset, rejects_nan_and_inf)
{
    s_expect_reject("a,b,y\n1,0.5,0\nnan,0.2,1\n", "3:1", "column 'a'");
    s_expect_reject("a,b,y\n1,inf,0\n", "2:3", "column 'b'");
    s_expect_reject("a,b,y\n1,1e999,0\n", "2:3", "column 'b'");
    s_expect_reject("a,b,y\n1,,0\n", "2:3", "column 'b'");
}

Test(dataset, rejects_short_row)
{
    s_expect_reject("a,b,y\n1,0.5,0\n1,0.5\n", "3:6", "column 'y'");
}

Test(dataset, rejects_long_row)
{
    s_expect_reject("a,b,y\n1,0.5,0,9\n", "2:9", "extra field");
}

Test(dataset, rejects_bad_labels)
{
    s_expect_reject("a,b,y\n1,0.5,2\n", "2:7", "column 'y'");
    s_expect_reject("a,b,y\n1,0.5,0\n1,0.5,0.5\n", "3:7", "column 'y'");
    s_expect_reject("a,b,y\n1,0.5,-1\n", "2:7", "column 'y'");
}

Test(dataset, rejects_missing_and_duplicate_columns)
{
    s_expect_reject("a,y\n1,0\n", "1:1", "column 'b'");
    s_expect_reject("a,b,y\n1,0.5\n", "2:6", "column 'y'");
    s_expect_reject("a,b,a,y\n1,0.5,1,0\n", "1:5", "column 'a'");
}

Test(dataset, rejects_empty_file_header_only_blank_inner_line_and_quotes)
{
    s_expect_reject("", "1:1", "empty");
    s_expect_reject("a,b,y\n", "2:1", "no data rows");
    s_expect_reject("a,b,y\n1,0,0\n\n1,0,1\n", "3:1", "empty line");
    s_expect_reject("a,b,y\n1,\"0\",0\n", "2:3", "quote");
}

Test(dataset, rejects_lines_over_64_kib)
{
    size_t big = 70000;
    char *csv = malloc(big + 64);
    strcpy(csv, "a,b,y\n1,0.5,0\n1,0.5,");
    size_t l = strlen(csv);
    memset(csv + l, '0', big);
    strcpy(csv + l + big, "\n");
    /* the 65537th byte of line 3 is the first one over the limit */
    s_expect_reject(csv, "3:65537", "64 KiB");
    free(csv);
}

static void s_expect_schema_reject(const char *text, const char *where, const char *what)
{
    fl_schema *s = NULL;
    const char *path = s_write("bad.ini", text);
    cr_assert_eq(fl_schema_load(&s, path), FL_EPARSE, "accepted: %s", text);
    cr_assert_null(s);
    cr_assert(strstr(fl_error_last(), where), "expected '%s' in: %s", where, fl_error_last());
    cr_assert(strstr(fl_error_last(), what), "expected '%s' in: %s", what, fl_error_last());
}

Test(dataset, rejects_bad_schemas_naming_file_and_line)
{
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n[features]\n"
                           "a = 0 1\nb = 5 5\n", "bad.ini:7:", "'b'");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n[features]\n"
                           "a = 0 1\nb = 5 1\n", "bad.ini:7:", "min < max");
    s_expect_schema_reject("[schema]\nname = t\ncolour = red\n", "bad.ini:3:", "colour");
    s_expect_schema_reject("[schema]\nname = t\n[extras]\nx = 1\n", "bad.ini:4:", "extras");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 1\n", "bad.ini:4:",
                           "classes");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n[features]\n"
                           "a = 0\n", "bad.ini:6:", "min max");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n[features]\n"
                           "a = 0 1\na = 0 2\n", "bad.ini:7:", "duplicate");
    s_expect_schema_reject("[schema]\nname = t\nclasses = 2\n[features]\na = 0 1\n",
                           "bad.ini:", "'label'");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n", "bad.ini:",
                           "no features");
    s_expect_schema_reject("[schema]\nname = t\nlabel = y\nclasses = 2\n[features]\n"
                           "a = 0 nan\n", "bad.ini:6:", "'a'");
    fl_schema *s = NULL;
    cr_assert_eq(fl_schema_load(&s, "/nonexistent/schema.ini"), FL_EIO);
}

Test(dataset, digest_ignores_layout_and_tracks_content)
{
    fl_schema *a = s_tiny(), *b = NULL, *c = NULL;
    cr_assert_eq(fl_schema_load(&b, s_write("b.ini", "[schema]\nclasses=2\nlabel=y\n"
                                                     "name=tiny\n; other comments\n"
                                                     "[features]\na=0.0 1e1\nb=-1.00 1\n")),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_schema_load(&c, s_write("c.ini", "[schema]\nname=tiny\nlabel=y\n"
                                                     "classes=2\n[features]\na=0 10\n"
                                                     "b=-1 2\n")),
                 FL_OK, "%s", fl_error_last());
    unsigned char da[32], db[32], dc[32];
    fl_schema_digest(a, da);
    fl_schema_digest(b, db);
    fl_schema_digest(c, dc);
    cr_assert_eq(memcmp(da, db, 32), 0);
    cr_assert_neq(memcmp(da, dc, 32), 0);
    fl_schema_free(a);
    fl_schema_free(b);
    fl_schema_free(c);
}

/* ---- split ---- */

typedef struct {
    char **lines;
    size_t n;
} s_lines;

static s_lines s_read_lines(const char *path)
{
    s_lines L = {NULL, 0};
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t r;
    while ((r = getline(&line, &cap, f)) > 0) {
        L.lines = realloc(L.lines, (L.n + 1) * sizeof *L.lines);
        L.lines[L.n++] = strdup(line);
    }
    free(line);
    fclose(f);
    return L;
}

static void s_free_lines(s_lines *L)
{
    for (size_t i = 0; i < L->n; i++)
        free(L->lines[i]);
    free(L->lines);
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t s_positives(const s_lines *L)
{
    size_t p = 0;
    for (size_t i = 1; i < L->n; i++) {
        const char *c = strrchr(L->lines[i], ',');
        p += c && c[1] == '1';
    }
    return p;
}

static char *s_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    return b;
}

Test(dataset, split_is_a_stratified_partition_of_the_lines)
{
    unsigned char seed[32] = {7};
    char out[256];
    snprintf(out, sizeof out, "%s/split", g_dir);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.2, 3, seed, out), FL_OK, "%s",
                 fl_error_last());
    s_lines all = s_read_lines(WDBC_CSV);
    cr_assert_eq(all.n, 570);
    const double N = 569, P = 212;
    const char *names[] = {"test.csv", "shard-1.csv", "shard-2.csv", "shard-3.csv"};
    char **seen = malloc(569 * sizeof *seen);
    size_t nseen = 0;
    for (int f = 0; f < 4; f++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s", out, names[f]);
        s_lines L = s_read_lines(p);
        cr_assert_str_eq(L.lines[0], all.lines[0], "header copied to %s", names[f]);
        size_t rows = L.n - 1;
        if (f == 0)
            cr_assert_eq(rows, 114, "test rows = round(0.2 * 569) = 114, got %zu", rows);
        else
            cr_assert(rows == 151 || rows == 152, "%s has %zu rows", names[f], rows);
        double expect_pos = rows * P / N;
        double pos = (double)s_positives(&L);
        cr_assert(fabs(pos - expect_pos) <= 1.0, "%s: %g positives, expected %.2f", names[f],
                  pos, expect_pos);
        for (size_t i = 1; i < L.n; i++)
            seen[nseen++] = strdup(L.lines[i]);
        s_free_lines(&L);
    }
    cr_assert_eq(nseen, 569);
    /* Sorted multiset of output lines == sorted multiset of input rows:
     * disjoint (no line twice) and complete (every line once). */
    qsort(seen, nseen, sizeof *seen, s_cmp_str);
    qsort(all.lines + 1, 569, sizeof *all.lines, s_cmp_str);
    for (size_t i = 0; i < 569; i++)
        cr_assert_str_eq(seen[i], all.lines[i + 1]);
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
    free(seen);
    s_free_lines(&all);
}

Test(dataset, split_is_deterministic_per_seed)
{
    unsigned char s1[32] = {1}, s2[32] = {2};
    char o1[256], o2[256], o3[256], p[300];
    snprintf(o1, sizeof o1, "%s/a", g_dir);
    snprintf(o2, sizeof o2, "%s/b", g_dir);
    snprintf(o3, sizeof o3, "%s/c", g_dir);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.2, 3, s1, o1), FL_OK);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.2, 3, s1, o2), FL_OK);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.2, 3, s2, o3), FL_OK);
    const char *names[] = {"test.csv", "shard-1.csv", "shard-2.csv", "shard-3.csv"};
    int any_diff = 0;
    for (int f = 0; f < 4; f++) {
        snprintf(p, sizeof p, "%s/%s", o1, names[f]);
        char *a = s_slurp(p);
        snprintf(p, sizeof p, "%s/%s", o2, names[f]);
        char *b = s_slurp(p);
        snprintf(p, sizeof p, "%s/%s", o3, names[f]);
        char *c = s_slurp(p);
        cr_assert_str_eq(a, b, "%s differs for the same seed", names[f]);
        any_diff |= strcmp(a, c) != 0;
        free(a);
        free(b);
        free(c);
    }
    cr_assert(any_diff, "a different seed gave the same split");
}

Test(dataset, split_output_loads_against_the_schema)
{
    unsigned char seed[32] = {9};
    char out[256], p[300];
    snprintf(out, sizeof out, "%s/s", g_dir);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.25, 2, seed, out), FL_OK);
    fl_schema *s = NULL;
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_schema_load(&s, WDBC_SCHEMA), FL_OK);
    snprintf(p, sizeof p, "%s/shard-2.csv", out);
    cr_assert_eq(fl_dataset_load_csv(&ds, p, s), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, (569 - 142) / 2); /* 427 training rows, 213 + 214 */
    fl_dataset_free(ds);
    fl_schema_free(s);
}

Test(dataset, split_rejects_bad_arguments)
{
    unsigned char seed[32] = {0};
    char out[256];
    snprintf(out, sizeof out, "%s/x", g_dir);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 1.0, 3, seed, out), FL_EINVAL);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "malignant", 0.2, 0, seed, out), FL_EINVAL);
    cr_assert_eq(fl_dataset_split_csv(WDBC_CSV, "nope", 0.2, 3, seed, out), FL_EPARSE);
    cr_assert(strstr(fl_error_last(), "'nope'"));
    const char *tiny = s_write("t.csv", "a,y\n1,0\n2,1\n");
    cr_assert_eq(fl_dataset_split_csv(tiny, "y", 0.0, 3, seed, out), FL_EINVAL);
}

/* ---- fl_dataset_load_idx ---- */

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* Writes an IDX image file of n images rows x cols with pixel bytes
 * (i * 7 + j) mod 256 (i the image, j the pixel), and a label file with
 * the given labels; returns the paths in img/lab. */
static void s_write_idx(const char *tag, uint32_t n, uint32_t rows, uint32_t cols,
                        const unsigned char *labels, uint32_t nlab, const char **img,
                        const char **lab)
{
    static char paths[4][256];
    static int slot;
    char *pi = paths[slot++ % 4], *pl = paths[slot++ % 4];
    snprintf(pi, 256, "%s/%s-images.idx", g_dir, tag);
    snprintf(pl, 256, "%s/%s-labels.idx", g_dir, tag);
    FILE *f = fopen(pi, "wb");
    cr_assert_not_null(f);
    unsigned char h[16] = {0, 0, 8, 3};
    uint32_t v[3] = {n, rows, cols};
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 4; b++)
            h[4 + 4 * k + b] = (unsigned char)(v[k] >> (24 - 8 * b));
    fwrite(h, 1, 16, f);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < rows * cols; j++)
            fputc((int)((i * 7 + j) % 256), f);
    fclose(f);
    f = fopen(pl, "wb");
    cr_assert_not_null(f);
    unsigned char hl[8] = {0, 0, 8, 1, (unsigned char)(nlab >> 24), (unsigned char)(nlab >> 16),
                           (unsigned char)(nlab >> 8), (unsigned char)nlab};
    fwrite(hl, 1, 8, f);
    fwrite(labels, 1, nlab, f);
    fclose(f);
    *img = pi;
    *lab = pl;
}

Test(dataset, idx_slice_has_scaled_pixels_labels_and_ten_classes)
{
    const unsigned char lab[6] = {3, 1, 4, 1, 5, 9};
    const char *img, *lb;
    s_write_idx("six", 6, 3, 2, lab, 6, &img, &lb);
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 2, 3), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 3u);
    cr_assert_eq(ds->d, 6u);
    cr_assert_eq(ds->num_classes, 10u); /* labels <= 9 */
    cr_assert_eq(ds->clamped, 0u);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(ds->y[i], lab[2 + i]);
        for (size_t j = 0; j < 6; j++) /* byte ((2+i) 7 + j) / 255, by hand */
            cr_assert_float_eq(ds->X[i * 6 + j], (float)(((2 + i) * 7 + j) % 256) / 255.0f,
                               1e-7);
    }
    fl_dataset_free(ds);
    /* count 0: to the end */
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 4, 0), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 2u);
    cr_assert_eq(ds->y[1], 9);
    cr_assert_float_eq(ds->X[6 + 5], (float)(5 * 7 + 5) / 255.0f, 1e-7);
    fl_dataset_free(ds);
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 0, 0), FL_OK);
    cr_assert_eq(ds->n, 6u);
    fl_dataset_free(ds);
}

Test(dataset, idx_class_count_is_largest_label_plus_one_over_the_whole_file)
{
    const unsigned char lab[4] = {0, 1, 14, 2};
    const char *img, *lb;
    s_write_idx("big", 4, 2, 2, lab, 4, &img, &lb);
    fl_dataset *ds = NULL;
    /* the slice 0..1 holds labels 0 and 1 only; the file's largest is 14 */
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 0, 2), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->num_classes, 15u);
    fl_dataset_free(ds);
}

Test(dataset, idx_rejects_slices_outside_the_file_and_mismatched_files)
{
    const unsigned char lab[5] = {0, 1, 2, 3, 4};
    const char *img, *lb, *img4, *lb4;
    s_write_idx("five", 5, 2, 2, lab, 5, &img, &lb);
    static fl_dataset dummy;
    fl_dataset *ds = &dummy; /* must come back NULL */
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 5, 0), FL_EINVAL);
    cr_assert_null(ds);
    cr_assert(strstr(fl_error_last(), img) && strstr(fl_error_last(), "5 images"), "%s",
              fl_error_last());
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 3, 3), FL_EINVAL);
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 0, SIZE_MAX), FL_EINVAL);
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb, 3, 2), FL_OK);
    fl_dataset_free(ds);
    s_write_idx("four", 4, 2, 2, lab, 4, &img4, &lb4);
    cr_assert_eq(fl_dataset_load_idx(&ds, img, lb4, 0, 0), FL_EPARSE);
    cr_assert(strstr(fl_error_last(), img) && strstr(fl_error_last(), lb4), "%s",
              fl_error_last());
    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.idx", g_dir);
    cr_assert_eq(fl_dataset_load_idx(&ds, missing, lb, 0, 0), FL_EIO);
    cr_assert_null(ds);
    cr_assert_eq(fl_dataset_load_idx(&ds, lb, lb, 0, 0), FL_EPARSE); /* labels as images */
}

Test(dataset, idx_loads_a_slice_of_real_fashion_mnist)
{
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_dataset_load_idx(&ds, FASHION_DIR "/t10k-images-idx3-ubyte.gz",
                                     FASHION_DIR "/t10k-labels-idx1-ubyte.gz", 0, 10),
                 FL_OK, "%s", fl_error_last());
    /* 28 x 28 images; the first ten test labels of Fashion-MNIST (read from
     * the published t10k-labels file with Python's gzip module) */
    static const int32_t first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
    cr_assert_eq(ds->n, 10u);
    cr_assert_eq(ds->d, 784u);
    cr_assert_eq(ds->num_classes, 10u);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(ds->y[i], first[i]);
    for (size_t j = 0; j < 10 * 784; j++)
        cr_assert(ds->X[j] >= 0.0f && ds->X[j] <= 1.0f);
    fl_dataset_free(ds);
    cr_assert_eq(fl_dataset_load_idx(&ds, FASHION_DIR "/t10k-images-idx3-ubyte.gz",
                                     FASHION_DIR "/t10k-labels-idx1-ubyte.gz", 9995, 0),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 5u);
    fl_dataset_free(ds);
}
