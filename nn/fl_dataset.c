/*
 * fl_dataset: schema loading (inih), the strict CSV loader with public
 * fixed-range scaling, and the deterministic stratified CSV splitter
 * (see fl_dataset.h).
 *
 * Error positions are "FILE:LINE:COL" with 1-based lines and 1-based byte
 * columns (the first byte of the offending field), so an editor can jump
 * straight to the problem.
 */
#include "nn/fl_dataset.h"
#include "nn/fl_idx.h"
#include "storage/fl_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FL_CSV_MAX_LINE 65536 /* bytes per line, without the line end */
#define FL_SCHEMA_MAX_CLASSES 65536u

typedef struct {
    char *name;
    double min, max;
} s_feature;

struct fl_schema {
    char *name;
    char *label;
    uint32_t classes;
    size_t nf, cap;
    s_feature *f;
};

/* ------------------------------------------------------------------ */
/* Schema                                                              */
/* ------------------------------------------------------------------ */

void fl_schema_free(fl_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nf; i++)
        free(s->f[i].name);
    free(s->f);
    free(s->name);
    free(s->label);
    free(s);
}

size_t fl_schema_num_features(const fl_schema *s) { return s->nf; }
uint32_t fl_schema_num_classes(const fl_schema *s) { return s->classes; }
const char *fl_schema_name(const fl_schema *s) { return s->name; }

const char *fl_schema_feature_name(const fl_schema *s, size_t i)
{
    return i < s->nf ? s->f[i].name : NULL;
}

typedef struct {
    fl_schema *s;
    int code;        /* FL_OK, or the first error's code */
    char msg[512];   /* the first error's message, without position */
} s_ini_ctx;

static int s_ini_fail(s_ini_ctx *c, int code, const char *fmt, ...) FL_PRINTF(3, 4);

static int s_ini_fail(s_ini_ctx *c, int code, const char *fmt, ...)
{
    if (c->code == FL_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, sizeof c->msg, fmt, ap);
        va_end(ap);
        c->code = code;
    }
    return 0; /* tells inih to record this line as the first error */
}

static int s_ini_handler(void *user, const char *section, const char *key, const char *value)
{
    s_ini_ctx *c = user;
    fl_schema *s = c->s;
    if (c->code != FL_OK)
        return 1; /* only the first error is reported */

    if (strcmp(section, "schema") == 0) {
        char **slot = NULL;
        if (strcmp(key, "name") == 0)
            slot = &s->name;
        else if (strcmp(key, "label") == 0)
            slot = &s->label;
        if (slot) {
            if (*slot)
                return s_ini_fail(c, FL_EPARSE, "duplicate key '%s' in [schema]; keep one", key);
            if (!*value || strchr(value, ',') || strchr(value, '"'))
                return s_ini_fail(c, FL_EPARSE, "key '%s' must be a non-empty name without "
                                  "commas or quotes", key);
            *slot = strdup(value);
            if (!*slot)
                return s_ini_fail(c, FL_ENOMEM, "out of memory");
            return 1;
        }
        if (strcmp(key, "classes") == 0) {
            if (s->classes)
                return s_ini_fail(c, FL_EPARSE, "duplicate key 'classes' in [schema]; keep one");
            char *end = NULL;
            errno = 0;
            unsigned long k = strtoul(value, &end, 10);
            if (value[0] < '0' || value[0] > '9' || *end || errno || k < 2 ||
                k > FL_SCHEMA_MAX_CLASSES)
                return s_ini_fail(c, FL_EPARSE, "classes = '%s' is not an integer in [2, %u]; "
                                  "set the number of label values", value,
                                  FL_SCHEMA_MAX_CLASSES);
            s->classes = (uint32_t)k;
            return 1;
        }
        return s_ini_fail(c, FL_EPARSE, "unknown key '%s' in [schema]; allowed keys are "
                          "name, label, classes", key);
    }
    if (strcmp(section, "features") == 0) {
        if (strchr(key, ',') || strchr(key, '"'))
            return s_ini_fail(c, FL_EPARSE, "feature name '%s' contains a comma or quote; "
                              "rename the column", key);
        for (size_t i = 0; i < s->nf; i++)
            if (strcmp(s->f[i].name, key) == 0)
                return s_ini_fail(c, FL_EPARSE, "duplicate feature '%s'; list each feature "
                                  "once", key);
        char *end = NULL;
        double lo = strtod(value, &end);
        char *end2 = NULL;
        double hi = end != value ? strtod(end, &end2) : 0.0;
        if (end == value || end2 == end || *end2 != '\0')
            return s_ini_fail(c, FL_EPARSE, "feature '%s' = '%s' is not 'min max'; give the "
                              "public range as two numbers", key, value);
        if (!isfinite(lo) || !isfinite(hi) || !(lo < hi))
            return s_ini_fail(c, FL_EPARSE, "feature '%s' has range [%g, %g]; need finite "
                              "min < max", key, lo, hi);
        if (s->nf == s->cap) {
            size_t nc = s->cap ? 2 * s->cap : 16;
            s_feature *nf = realloc(s->f, nc * sizeof *nf);
            if (!nf)
                return s_ini_fail(c, FL_ENOMEM, "out of memory");
            s->f = nf;
            s->cap = nc;
        }
        char *name = strdup(key);
        if (!name)
            return s_ini_fail(c, FL_ENOMEM, "out of memory");
        s->f[s->nf].name = name;
        s->f[s->nf].min = lo;
        s->f[s->nf].max = hi;
        s->nf++;
        return 1;
    }
    return s_ini_fail(c, FL_EPARSE, "unknown section [%s] (key '%s'); allowed sections are "
                      "[schema] and [features]", section, key);
}

int fl_schema_load(fl_schema **out, const char *path)
{
    int rc = FL_OK;
    s_ini_ctx ctx;
    memset(&ctx, 0, sizeof ctx);

    if (!out || !path)
        return fl_error_set(FL_EINVAL, "fl_schema_load: out and path must not be NULL");
    *out = NULL;
    ctx.s = calloc(1, sizeof *ctx.s);
    if (!ctx.s) {
        rc = fl_error_set(FL_ENOMEM, "fl_schema_load: out of memory");
        goto done;
    }
    int line = ini_parse(path, s_ini_handler, &ctx);
    if (line == -1) {
        rc = fl_error_set(FL_EIO, "%s: cannot open schema file: %s; check the path",
                          path, strerror(errno));
        goto done;
    }
    if (line == -2 || ctx.code == FL_ENOMEM) {
        rc = fl_error_set(FL_ENOMEM, "%s: out of memory while parsing schema", path);
        goto done;
    }
    if (line > 0) {
        if (ctx.code != FL_OK)
            rc = fl_error_set(FL_EPARSE, "%s:%d: %s", path, line, ctx.msg);
        else
            rc = fl_error_set(FL_EPARSE, "%s:%d: syntax error; expected '[section]' or "
                              "'key = value'", path, line);
        goto done;
    }
    fl_schema *s = ctx.s;
    const char *missing = !s->name ? "name" : !s->label ? "label" : !s->classes ? "classes"
                                                                              : NULL;
    if (missing) {
        rc = fl_error_set(FL_EPARSE, "%s: [schema] has no '%s' key; add '%s = ...'", path,
                          missing, missing);
        goto done;
    }
    if (s->nf == 0) {
        rc = fl_error_set(FL_EPARSE, "%s: no features; list them under [features] as "
                          "'name = min max'", path);
        goto done;
    }
    for (size_t i = 0; i < s->nf; i++)
        if (strcmp(s->f[i].name, s->label) == 0) {
            rc = fl_error_set(FL_EPARSE, "%s: label '%s' is also listed as a feature; remove "
                              "it from [features]", path, s->label);
            goto done;
        }
    *out = ctx.s;
    ctx.s = NULL;
done:
    fl_schema_free(ctx.s);
    return rc;
}

static void s_hash_str(crypto_hash_sha256_state *st, const char *str)
{
    crypto_hash_sha256_update(st, (const unsigned char *)str, strlen(str));
}

void fl_schema_digest(const fl_schema *s, unsigned char out[32])
{
    /* Canonical text: "fl-schema-v1\nname=N\nlabel=L\nclasses=K\n" then one
     * "feature=NAME MIN MAX\n" per feature in order, bounds as C99 hex
     * floats ("%a") so the text is exact and locale-independent. */
    crypto_hash_sha256_state st;
    char buf[128];
    crypto_hash_sha256_init(&st);
    s_hash_str(&st, "fl-schema-v1\nname=");
    s_hash_str(&st, s->name);
    s_hash_str(&st, "\nlabel=");
    s_hash_str(&st, s->label);
    snprintf(buf, sizeof buf, "\nclasses=%u\n", s->classes);
    s_hash_str(&st, buf);
    for (size_t i = 0; i < s->nf; i++) {
        s_hash_str(&st, "feature=");
        s_hash_str(&st, s->f[i].name);
        snprintf(buf, sizeof buf, " %a %a\n", s->f[i].min, s->f[i].max);
        s_hash_str(&st, buf);
    }
    crypto_hash_sha256_final(&st, out);
}

/* ------------------------------------------------------------------ */
/* Line reading and field splitting                                    */
/* ------------------------------------------------------------------ */

typedef struct {
    FILE *f;
    const char *path;
    char *buf;       /* FL_CSV_MAX_LINE + 1 bytes */
    size_t len;      /* bytes in buf, '\n' removed, '\r' kept */
    size_t lineno;   /* 1-based number of the line in buf */
} s_reader;

static int s_perr(const char *path, size_t line, size_t col, const char *fmt, ...)
    FL_PRINTF(4, 5);

static int s_perr(const char *path, size_t line, size_t col, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fl_error_set(FL_EPARSE, "%s:%zu:%zu: %s", path, line, col, msg);
}

/* Reads the next line.  Returns 1 with the line in r->buf (NUL-terminated,
 * '\n' removed, a '\r' kept), 0 at end of file, or a negative fl_err. */
static int s_read_line(s_reader *r)
{
    size_t len = 0;
    int c, any = 0;
    r->lineno++;
    while ((c = getc(r->f)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (c == '\0')
            return s_perr(r->path, r->lineno, len + 1, "NUL byte in a text line; the file "
                          "is not a CSV text file");
        if (len >= FL_CSV_MAX_LINE)
            return s_perr(r->path, r->lineno, len + 1, "line longer than 64 KiB; split "
                          "the data or check the line ends");
        r->buf[len++] = (char)c;
    }
    if (ferror(r->f))
        return fl_error_set(FL_EIO, "%s:%zu: read error: %s", r->path, r->lineno,
                            strerror(errno));
    r->buf[len] = '\0';
    r->len = len;
    return any ? 1 : 0;
}

static void s_strip_cr(char *line, size_t *len)
{
    if (*len > 0 && line[*len - 1] == '\r')
        line[--*len] = '\0';
}

/* Splits `line` in place on commas: starts[i] is the byte offset of field
 * i.  Returns the number of fields, or max_fields + 1 when there are more
 * (starts[max_fields] is then the offset of the first extra field). */
static size_t s_split(char *line, size_t *starts, size_t max_fields)
{
    size_t nf = 0;
    char *p = line;
    for (;;) {
        starts[nf++] = (size_t)(p - line);
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = '\0';
        p = comma + 1;
        if (nf > max_fields)
            break;
    }
    return nf;
}

/* Trims spaces and tabs in place; returns the trimmed start. */
static char *s_trim(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        p[--n] = '\0';
    return p;
}

/* A header name: trimmed, optionally in double quotes. NULL if malformed. */
static char *s_header_name(char *field)
{
    char *p = s_trim(field);
    size_t n = strlen(p);
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p[n - 1] = '\0';
        p++;
    }
    return strchr(p, '"') ? NULL : p;
}

/* Strict decimal number: optional sign, digits, '.', exponent; finite. */
static int s_parse_number(char *field, double *v)
{
    char *p = s_trim(field);
    if (!*p)
        return -1;
    for (const char *q = p; *q; q++)
        if (!strchr("0123456789+-.eE", *q))
            return -1;
    char *end = NULL;
    errno = 0;
    *v = strtod(p, &end);
    if (end == p || *end || !isfinite(*v))
        return -1;
    return 0;
}

static int s_parse_label(char *field, uint32_t classes, int32_t *out)
{
    char *p = s_trim(field);
    if (!*p)
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    errno = 0;
    unsigned long v = strtoul(p, NULL, 10);
    if (errno || v >= classes)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* CSV loading                                                         */
/* ------------------------------------------------------------------ */

void fl_dataset_free(fl_dataset *ds)
{
    if (!ds)
        return;
    free(ds->X);
    free(ds->y);
    free(ds);
}

int fl_dataset_load_idx(fl_dataset **out, const char *images_path, const char *labels_path,
                        size_t start, size_t count)
{
    int rc = FL_OK;
    fl_idx_images *im = NULL;
    fl_idx_labels *lb = NULL;
    fl_dataset *ds = NULL;

    if (!out || !images_path || !labels_path)
        abort();
    *out = NULL;
    if ((rc = fl_idx_load_images(&im, images_path)) != FL_OK ||
        (rc = fl_idx_load_labels(&lb, labels_path)) != FL_OK)
        goto done;
    if (im->n != lb->n) {
        rc = fl_error_set(FL_EPARSE, "%s holds %zu images but %s holds %zu labels; pass an "
                          "image file and the label file that belongs to it",
                          images_path, im->n, labels_path, lb->n);
        goto done;
    }
    if (start >= im->n || (count > 0 && count > im->n - start)) {
        rc = fl_error_set(FL_EINVAL, "%s holds %zu images; rows %zu .. %zu%s are not all in "
                          "it; pass a start below %zu and a count (0 = to the end) that "
                          "stays inside the file", images_path, im->n, start,
                          count ? start + count - 1 : im->n,
                          count ? "" : " (to the end)", im->n);
        goto done;
    }
    if (count == 0)
        count = im->n - start;
    /* The class count comes from the whole label file, not the slice, so
     * nodes holding different slices of one data set agree on it. */
    uint32_t classes = 10;
    for (size_t i = 0; i < lb->n; i++)
        if ((uint32_t)lb->labels[i] + 1 > classes)
            classes = (uint32_t)lb->labels[i] + 1;
    size_t d = im->rows * im->cols;
    ds = calloc(1, sizeof *ds);
    if (ds)
        ds->y = malloc(count * sizeof *ds->y);
    if (!ds || !ds->y) {
        rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %zu labels", labels_path, count);
        goto done;
    }
    for (size_t i = 0; i < count; i++)
        ds->y[i] = lb->labels[start + i];
    /* Reuse the loader's pixel buffer: move the slice to its front and
     * shrink it, rather than copying into fresh memory. */
    if (start > 0)
        memmove(im->pixels, im->pixels + start * d, count * d * sizeof(float));
    if (count < im->n) {
        float *p = realloc(im->pixels, count * d * sizeof(float));
        if (p)
            im->pixels = p;
    }
    ds->X = im->pixels; /* ownership moves to the dataset */
    im->pixels = NULL;
    ds->n = count;
    ds->d = d;
    ds->num_classes = classes;
    ds->clamped = 0;
    *out = ds;
    ds = NULL;
done:
    fl_dataset_free(ds);
    fl_idx_images_free(im);
    fl_idx_labels_free(lb);
    return rc;
}

int fl_dataset_load_csv(fl_dataset **out, const char *csv_path, const fl_schema *s)
{
    int rc = FL_OK;
    s_reader r = {0};
    fl_dataset *ds = NULL;
    char *header = NULL;
    char **hname = NULL;
    size_t *starts = NULL, *hstart = NULL;
    long *role = NULL; /* per column: feature index, -1 ignored, -2 label */
    size_t cap_rows = 0;

    if (!out || !csv_path || !s)
        return fl_error_set(FL_EINVAL, "fl_dataset_load_csv: out, csv_path and schema "
                            "must not be NULL");
    *out = NULL;
    r.path = csv_path;
    r.f = fopen(csv_path, "rb");
    if (!r.f) {
        rc = fl_error_set(FL_EIO, "%s: cannot open CSV file: %s; check the path", csv_path,
                          strerror(errno));
        goto done;
    }
    r.buf = malloc(FL_CSV_MAX_LINE + 1);
    starts = malloc((FL_CSV_MAX_LINE / 2 + 2) * sizeof *starts);
    ds = calloc(1, sizeof *ds);
    if (!r.buf || !starts || !ds) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_load_csv: out of memory");
        goto done;
    }
    const size_t max_fields = FL_CSV_MAX_LINE / 2 + 1; /* a 64 KiB line of commas */

    /* Header */
    rc = s_read_line(&r);
    if (rc < 0)
        goto done;
    if (rc == 0) {
        rc = s_perr(csv_path, 1, 1, "file is empty; expected a header line naming the "
                    "columns, then data rows");
        goto done;
    }
    s_strip_cr(r.buf, &r.len);
    header = strdup(r.buf);
    if (!header) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_load_csv: out of memory");
        goto done;
    }
    size_t bom = (strncmp(header, "\xEF\xBB\xBF", 3) == 0) ? 3 : 0;
    size_t h = s_split(header + bom, starts, max_fields);
    hname = calloc(h, sizeof *hname);
    hstart = calloc(h, sizeof *hstart);
    role = calloc(h, sizeof *role);
    if (!hname || !hstart || !role) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_load_csv: out of memory");
        goto done;
    }
    for (size_t j = 0; j < h; j++) {
        hstart[j] = starts[j] + bom;
        hname[j] = s_header_name(header + hstart[j]);
        role[j] = -1;
        if (!hname[j] || !*hname[j]) {
            rc = s_perr(csv_path, 1, hstart[j] + 1, "header field %zu is empty or has stray "
                        "quotes; name every column", j + 1);
            goto done;
        }
        for (size_t k = 0; k < j; k++)
            if (strcmp(hname[k], hname[j]) == 0) {
                rc = s_perr(csv_path, 1, hstart[j] + 1, "duplicate header name (column "
                            "'%s', also field %zu); rename or remove one", hname[j], k + 1);
                goto done;
            }
    }
    for (size_t fi = 0; fi <= s->nf; fi++) {
        const char *want = fi < s->nf ? s->f[fi].name : s->label;
        size_t j = 0;
        while (j < h && strcmp(hname[j], want) != 0)
            j++;
        if (j == h) {
            rc = s_perr(csv_path, 1, 1, "header has no %s column (column '%s') required by "
                        "schema '%s'; add the column or use the matching schema",
                        fi < s->nf ? "feature" : "label", want, s->name);
            goto done;
        }
        role[j] = fi < s->nf ? (long)fi : -2;
    }

    /* Rows */
    ds->d = s->nf;
    ds->num_classes = s->classes;
    size_t blank_line = 0;
    for (;;) {
        rc = s_read_line(&r);
        if (rc < 0)
            goto done;
        if (rc == 0)
            break;
        rc = FL_OK;
        s_strip_cr(r.buf, &r.len);
        if (r.len == 0) {
            if (!blank_line)
                blank_line = r.lineno;
            continue;
        }
        if (blank_line) {
            rc = s_perr(csv_path, blank_line, 1, "empty line inside the data; remove it");
            goto done;
        }
        char *q = strchr(r.buf, '"');
        if (q) {
            rc = s_perr(csv_path, r.lineno, (size_t)(q - r.buf) + 1, "quoted value; data "
                        "fields must be plain numbers without quotes");
            goto done;
        }
        size_t nf = s_split(r.buf, starts, h);
        if (nf > h) {
            rc = s_perr(csv_path, r.lineno, starts[h] + 1, "extra field %zu; the header has "
                        "%zu columns (last column '%s'), remove the extra value or add a "
                        "header name", h + 1, h, hname[h - 1]);
            goto done;
        }
        if (nf < h) {
            rc = s_perr(csv_path, r.lineno, r.len + 1, "row has %zu fields but the header "
                        "has %zu (column '%s' missing); complete the row", nf, h, hname[nf]);
            goto done;
        }
        if (ds->n == cap_rows) {
            size_t nc = cap_rows ? 2 * cap_rows : 256;
            if (nc > SIZE_MAX / sizeof(float) / (ds->d ? ds->d : 1)) {
                rc = fl_error_set(FL_ENOMEM, "%s: too many rows", csv_path);
                goto done;
            }
            float *nx = realloc(ds->X, nc * ds->d * sizeof *nx);
            if (nx)
                ds->X = nx;
            int32_t *ny = realloc(ds->y, nc * sizeof *ny);
            if (ny)
                ds->y = ny;
            if (!nx || !ny) {
                rc = fl_error_set(FL_ENOMEM, "%s: out of memory at line %zu", csv_path,
                                  r.lineno);
                goto done;
            }
            cap_rows = nc;
        }
        float *xr = ds->X + ds->n * ds->d;
        for (size_t j = 0; j < h; j++) {
            char *field = r.buf + starts[j];
            if (role[j] == -1)
                continue;
            if (role[j] == -2) {
                if (s_parse_label(field, s->classes, &ds->y[ds->n]) < 0) {
                    rc = s_perr(csv_path, r.lineno, starts[j] + 1, "label '%.40s' is not an "
                                "integer in [0, %u) (column '%s'); fix the label or the "
                                "schema's classes", field, s->classes, hname[j]);
                    goto done;
                }
                continue;
            }
            const s_feature *ft = &s->f[role[j]];
            double v;
            if (s_parse_number(field, &v) < 0) {
                rc = s_perr(csv_path, r.lineno, starts[j] + 1, "'%.40s' is not a finite "
                            "decimal number (column '%s'); fix the value or remove the row",
                            field, hname[j]);
                goto done;
            }
            if (v < ft->min) {
                v = ft->min;
                ds->clamped++;
            } else if (v > ft->max) {
                v = ft->max;
                ds->clamped++;
            }
            xr[role[j]] = (float)((v - ft->min) / (ft->max - ft->min));
        }
        ds->n++;
    }
    rc = FL_OK;
    if (ds->n == 0) {
        rc = s_perr(csv_path, r.lineno, 1, "no data rows after the header; the file needs "
                    "at least one record");
        goto done;
    }
    *out = ds;
    ds = NULL;
done:
    if (r.f)
        fclose(r.f);
    free(r.buf);
    free(starts);
    free(header);
    free(hname);
    free(hstart);
    free(role);
    fl_dataset_free(ds);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Stratified split                                                    */
/* ------------------------------------------------------------------ */

typedef struct {
    char *text;      /* verbatim line, '\n' removed ('\r' kept) */
    size_t len;
    const char *key; /* label text, points into a separate copy */
    char *key_buf;
    size_t index;    /* original row order */
    unsigned dest;   /* 0 = test, 1..K = shard */
} s_row;

static int s_cmp_row_ptr(const void *a, const void *b)
{
    const s_row *x = *(const s_row *const *)a, *y = *(const s_row *const *)b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return (x->index > y->index) - (x->index < y->index);
}

/* Writes header + the rows with dest == which to dir/name atomically, mode
 * 0600: the shards are patient records. */
static int s_write_atomic(const char *dir, const char *name, const char *header,
                          size_t header_len, const s_row *rows, size_t n, unsigned which)
{
    char path[4096];
    size_t len = header_len + 1, off = 0;
    char *buf;
    int rc;

    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return fl_error_set(FL_EINVAL, "%s: output directory path too long", dir);
    for (size_t i = 0; i < n; i++)
        if (rows[i].dest == which)
            len += rows[i].len + 1;
    buf = malloc(len);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory writing %s", path);
    memcpy(buf, header, header_len);
    off = header_len;
    buf[off++] = '\n';
    for (size_t i = 0; i < n; i++) {
        if (rows[i].dest != which)
            continue;
        memcpy(buf + off, rows[i].text, rows[i].len);
        off += rows[i].len;
        buf[off++] = '\n';
    }
    rc = fl_storage_write_atomic(path, buf, off, 0600);
    free(buf);
    return rc;
}

int fl_dataset_split_csv(const char *csv_path, const char *label_column, double test_fraction,
                         unsigned shards, const unsigned char seed[32], const char *out_dir)
{
    int rc = FL_OK;
    s_reader r = {0};
    char *header = NULL, *hcopy = NULL;
    size_t header_len = 0;
    size_t *starts = NULL;
    s_row *rows = NULL;
    s_row **order = NULL;
    size_t n = 0, cap = 0;
    unsigned char *rnd = NULL;
    size_t *cls_start = NULL, *cls_test = NULL;
    uint64_t *cls_rem = NULL;
    const size_t max_fields = FL_CSV_MAX_LINE / 2 + 1;

    if (!csv_path || !label_column || !seed || !out_dir)
        return fl_error_set(FL_EINVAL, "fl_dataset_split_csv: csv_path, label_column, seed "
                            "and out_dir must not be NULL");
    if (!(test_fraction >= 0.0 && test_fraction < 1.0))
        return fl_error_set(FL_EINVAL, "fl_dataset_split_csv: test_fraction %g is outside "
                            "[0, 1)", test_fraction);
    if (shards == 0)
        return fl_error_set(FL_EINVAL, "fl_dataset_split_csv: shards must be at least 1");
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "fl_dataset_split_csv: libsodium failed to "
                            "initialise");

    r.path = csv_path;
    r.f = fopen(csv_path, "rb");
    if (!r.f) {
        rc = fl_error_set(FL_EIO, "%s: cannot open CSV file: %s; check the path", csv_path,
                          strerror(errno));
        goto done;
    }
    r.buf = malloc(FL_CSV_MAX_LINE + 1);
    starts = malloc((max_fields + 1) * sizeof *starts);
    if (!r.buf || !starts) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_split_csv: out of memory");
        goto done;
    }
    rc = s_read_line(&r);
    if (rc <= 0) {
        if (rc == 0)
            rc = s_perr(csv_path, 1, 1, "file is empty; expected a header line");
        goto done;
    }
    header = strdup(r.buf);
    header_len = r.len;
    hcopy = strdup(r.buf);
    if (!header || !hcopy) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_split_csv: out of memory");
        goto done;
    }
    {
        size_t hl = r.len;
        s_strip_cr(hcopy, &hl);
    }
    size_t bom = (strncmp(hcopy, "\xEF\xBB\xBF", 3) == 0) ? 3 : 0;
    size_t h = s_split(hcopy + bom, starts, max_fields);
    size_t label_col = h;
    for (size_t j = 0; j < h; j++) {
        const char *nm = s_header_name(hcopy + bom + starts[j]);
        if (nm && strcmp(nm, label_column) == 0) {
            label_col = j;
            break;
        }
    }
    if (label_col == h) {
        rc = s_perr(csv_path, 1, 1, "header has no column '%s' to stratify by; check the "
                    "label column name", label_column);
        goto done;
    }

    for (;;) {
        rc = s_read_line(&r);
        if (rc < 0)
            goto done;
        if (rc == 0)
            break;
        rc = FL_OK;
        size_t len = r.len;
        /* Blank lines (also "\r") are not rows: skipped. */
        if (len == 0 || (len == 1 && r.buf[0] == '\r'))
            continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 256;
            s_row *nr = realloc(rows, nc * sizeof *nr);
            if (!nr) {
                rc = fl_error_set(FL_ENOMEM, "%s: out of memory at line %zu", csv_path,
                                  r.lineno);
                goto done;
            }
            rows = nr;
            cap = nc;
        }
        s_row *row = &rows[n];
        memset(row, 0, sizeof *row);
        row->text = malloc(len + 1);
        row->key_buf = malloc(len + 1);
        if (!row->text || !row->key_buf) {
            free(row->text);
            free(row->key_buf);
            rc = fl_error_set(FL_ENOMEM, "%s: out of memory at line %zu", csv_path, r.lineno);
            goto done;
        }
        memcpy(row->text, r.buf, len + 1);
        row->len = len;
        row->index = n;
        n++;
        memcpy(row->key_buf, r.buf, len + 1);
        size_t kl = len;
        s_strip_cr(row->key_buf, &kl);
        size_t nf = s_split(row->key_buf, starts, label_col + 1);
        if (nf <= label_col) {
            rc = s_perr(csv_path, r.lineno, kl + 1, "row has %zu fields; column '%s' is field "
                        "%zu; complete the row", nf, label_column, label_col + 1);
            goto done;
        }
        row->key = s_trim(row->key_buf + starts[label_col]);
    }
    rc = FL_OK;
    if (n == 0) {
        rc = s_perr(csv_path, r.lineno, 1, "no data rows after the header");
        goto done;
    }
    size_t T = (size_t)floor(test_fraction * (double)n + 0.5);
    if (n - T < shards) {
        rc = fl_error_set(FL_EINVAL, "%s: %zu training rows cannot fill %u shards; use "
                          "fewer shards or a smaller test fraction", csv_path, n - T, shards);
        goto done;
    }

    /* Group rows by class (label text), keeping file order within a class. */
    order = malloc(n * sizeof *order);
    cls_start = malloc((n + 1) * sizeof *cls_start);
    cls_test = malloc(n * sizeof *cls_test);
    cls_rem = malloc(n * sizeof *cls_rem);
    if (n > SIZE_MAX / 8) {
        rc = fl_error_set(FL_ENOMEM, "%s: too many rows", csv_path);
        goto done;
    }
    rnd = malloc(8 * n);
    if (!order || !cls_start || !cls_test || !cls_rem || !rnd) {
        rc = fl_error_set(FL_ENOMEM, "fl_dataset_split_csv: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &rows[i];
    qsort(order, n, sizeof *order, s_cmp_row_ptr);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(order[i]->key, order[i - 1]->key) != 0)
            cls_start[k++] = i;
    cls_start[k] = n;

    /* Fisher-Yates within each class.  Each draw is a 64-bit word from the
     * deterministic stream reduced mod (i+1); the modulo bias is below
     * n / 2^64, irrelevant for shuffling rows (no secret depends on it). */
    randombytes_buf_deterministic(rnd, 8 * n, seed);
    size_t w = 0;
    for (size_t c = 0; c < k; c++) {
        s_row **base = order + cls_start[c];
        size_t m = cls_start[c + 1] - cls_start[c];
        for (size_t i = m; i-- > 1;) {
            uint64_t v;
            memcpy(&v, rnd + 8 * w++, 8);
            size_t j = (size_t)(v % (uint64_t)(i + 1));
            s_row *t = base[i];
            base[i] = base[j];
            base[j] = t;
        }
    }

    /* Test rows per class by largest remainder of T * n_c / n, so the
     * counts sum to T and each is within one of its proportional share. */
    size_t given = 0;
    for (size_t c = 0; c < k; c++) {
        uint64_t nc = cls_start[c + 1] - cls_start[c];
        cls_test[c] = (size_t)((uint64_t)T * nc / n);
        cls_rem[c] = (uint64_t)T * nc % n;
        given += cls_test[c];
    }
    while (given < T) {
        size_t best = k;
        for (size_t c = 0; c < k; c++)
            if (cls_rem[c] != UINT64_MAX && (best == k || cls_rem[c] > cls_rem[best]))
                best = c;
        cls_test[best]++;
        cls_rem[best] = UINT64_MAX; /* each class gets at most one extra */
        given++;
    }
    size_t deal = 0;
    for (size_t c = 0; c < k; c++) {
        for (size_t i = cls_start[c]; i < cls_start[c + 1]; i++) {
            if (i - cls_start[c] < cls_test[c])
                order[i]->dest = 0;
            else
                order[i]->dest = 1 + (unsigned)(deal++ % shards);
        }
    }

    if (mkdir(out_dir, 0700) != 0 && errno != EEXIST) {
        rc = fl_error_set(FL_EIO, "%s: cannot create output directory: %s", out_dir,
                          strerror(errno));
        goto done;
    }
    rc = s_write_atomic(out_dir, "test.csv", header, header_len, rows, n, 0);
    if (rc < 0)
        goto done;
    for (unsigned s = 1; s <= shards; s++) {
        char name[64];
        snprintf(name, sizeof name, "shard-%u.csv", s);
        rc = s_write_atomic(out_dir, name, header, header_len, rows, n, s);
        if (rc < 0)
            goto done;
    }
    /* Make the renames durable. */
    int dfd = open(out_dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
done:
    if (r.f)
        fclose(r.f);
    free(r.buf);
    free(starts);
    free(header);
    free(hcopy);
    for (size_t i = 0; i < n; i++) {
        free(rows[i].text);
        free(rows[i].key_buf);
    }
    free(rows);
    free(order);
    free(cls_start);
    free(cls_test);
    free(cls_rem);
    free(rnd);
    return rc;
}
