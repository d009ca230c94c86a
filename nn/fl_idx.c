/*
 * fl_idx: strict IDX (MNIST) reader, plain or gzip.  See fl_idx.h.
 *
 * One source abstraction (stdio or zlib) counts the bytes consumed so every
 * error can name its offset; the header is validated completely before the
 * data buffer is touched, and that buffer grows geometrically with the
 * bytes actually read (never past the size the header declares).
 */
#include "nn/fl_idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct {
    const char *path;
    FILE *f;
    gzFile gz;
    size_t off; /* bytes consumed so far (decompressed for gzip) */
} s_src;

static int s_open(s_src *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fl_error_set(FL_EIO, "%s: cannot open: %s; check the path and permissions",
                            path, strerror(errno));
    unsigned char m[2];
    size_t got = fread(m, 1, 2, f);
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return fl_error_set(FL_EIO, "%s: cannot read: %s", path, strerror(e));
    }
    if (got == 2 && m[0] == 0x1f && m[1] == 0x8b) {
        fclose(f);
        s->gz = gzopen(path, "rb");
        if (!s->gz)
            return fl_error_set(FL_EIO, "%s: cannot open as gzip: %s", path,
                                errno ? strerror(errno) : "out of memory");
        return FL_OK;
    }
    rewind(f);
    s->f = f;
    return FL_OK;
}

static void s_close(s_src *s)
{
    if (s->f)
        fclose(s->f);
    if (s->gz)
        gzclose(s->gz);
    s->f = NULL;
    s->gz = NULL;
}

static const char *s_where(const s_src *s)
{
    return s->gz ? "decompressed byte" : "byte";
}

/* Reads up to len bytes; *got receives how many were read (fewer only at
 * the end of the data).  A read error or a corrupt gzip stream is an
 * error; a gzip stream that simply stops early counts as end of data and
 * is reported by the caller as truncation. */
static int s_read(s_src *s, void *buf, size_t len, size_t *got)
{
    *got = 0;
    unsigned char *p = buf;
    while (*got < len) {
        size_t want = len - *got;
        size_t r;
        if (s->f) {
            r = fread(p + *got, 1, want, s->f);
            if (r < want && ferror(s->f))
                return fl_error_set(FL_EIO, "%s: %s %zu: read failed: %s", s->path,
                                    s_where(s), s->off + *got + r, strerror(errno));
        } else {
            unsigned chunk = want > (1u << 30) ? (1u << 30) : (unsigned)want;
            int n = gzread(s->gz, p + *got, chunk);
            int zerr = Z_OK;
            const char *zmsg = gzerror(s->gz, &zerr);
            if (n < 0 || (zerr != Z_OK && zerr != Z_BUF_ERROR)) {
                int code = zerr == Z_ERRNO ? FL_EIO : FL_EPARSE;
                return fl_error_set(code,
                                    "%s: %s %zu: corrupt gzip stream (%s); re-download or "
                                    "re-compress the file",
                                    s->path, s_where(s), s->off + *got, zmsg);
            }
            r = (size_t)n;
        }
        *got += r;
        if (r < want) /* both fread and gzread return short only at the end */
            break;
    }
    s->off += *got;
    return FL_OK;
}

static uint32_t s_be32(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* Reads and validates the header: magic `magic`, then the ndims sizes into
 * dims.  Checks each size is >= 1 and the item count <= FL_IDX_MAX_ITEMS. */
static int s_header(s_src *s, uint32_t magic, const char *kind, uint32_t *dims)
{
    unsigned char b[4];
    size_t got;
    int rc = s_read(s, b, 4, &got);
    if (rc != FL_OK)
        return rc;
    if (got < 4)
        return fl_error_set(FL_EPARSE,
                            "%s: byte %zu: file ends inside the 4-byte IDX magic; the file is "
                            "empty or truncated, re-download it",
                            s->path, got);
    unsigned ndims = magic & 0xffu;
    if (b[0] != 0 || b[1] != 0)
        return fl_error_set(FL_EPARSE,
                            "%s: byte 0: not an IDX file (magic %02x%02x%02x%02x, expected "
                            "%08x); pass an uncompressed or gzip IDX %s file",
                            s->path, b[0], b[1], b[2], b[3], (unsigned)magic, kind);
    if (b[2] != 0x08)
        return fl_error_set(FL_EPARSE,
                            "%s: byte 2: IDX data type 0x%02x is not unsigned byte (0x08); "
                            "only u8 IDX %s files are supported",
                            s->path, b[2], kind);
    if (b[3] != ndims)
        return fl_error_set(FL_EPARSE,
                            "%s: byte 3: IDX file has %u dimension(s), an IDX %s file has %u "
                            "(magic %08x); check you passed the %s file",
                            s->path, b[3], kind, ndims, (unsigned)magic, kind);
    unsigned char d[12];
    rc = s_read(s, d, 4 * ndims, &got);
    if (rc != FL_OK)
        return rc;
    if (got < 4 * ndims)
        return fl_error_set(FL_EPARSE,
                            "%s: byte %zu: file ends inside the IDX header (%u bytes); the "
                            "file is truncated, re-download it",
                            s->path, 4 + got, 4 + 4 * ndims);
    for (unsigned i = 0; i < ndims; i++) {
        dims[i] = s_be32(d + 4 * i);
        if (dims[i] == 0)
            return fl_error_set(FL_EPARSE,
                                "%s: byte %u: IDX dimension %u is 0; an IDX %s file must hold "
                                "at least one item of at least one byte",
                                s->path, 4 + 4 * i, i, kind);
    }
    if (dims[0] > FL_IDX_MAX_ITEMS)
        return fl_error_set(FL_EPARSE,
                            "%s: byte 4: IDX header declares %u items, more than the limit "
                            "%u; split the file or check it is not corrupt",
                            s->path, (unsigned)dims[0], FL_IDX_MAX_ITEMS);
    return FL_OK;
}

/* Reads exactly `total` data bytes into a buffer grown with what is read,
 * then checks nothing follows.  On success *out (malloc'd) owns them. */
static int s_data(s_src *s, size_t total, const char *kind, unsigned char **out)
{
    *out = NULL;
    size_t start = s->off;
    size_t cap = total < (1u << 16) ? total : (1u << 16);
    unsigned char *buf = malloc(cap);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "%s: out of memory for %zu bytes", s->path, cap);
    size_t have = 0;
    int rc = FL_OK;
    for (;;) {
        size_t got;
        rc = s_read(s, buf + have, cap - have, &got);
        if (rc != FL_OK)
            goto done;
        have += got;
        if (have < cap) {
            rc = fl_error_set(FL_EPARSE,
                              "%s: %s %zu: file is truncated: the header declares %zu bytes "
                              "of %s data from byte %zu but only %zu are present; "
                              "re-download the file",
                              s->path, s_where(s), s->off, total, kind, start, have);
            goto done;
        }
        if (have == total)
            break;
        size_t ncap = cap > total / 2 ? total : cap * 2;
        unsigned char *nb = realloc(buf, ncap);
        if (!nb) {
            rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %zu bytes", s->path, ncap);
            goto done;
        }
        buf = nb;
        cap = ncap;
    }
    unsigned char extra;
    size_t got;
    rc = s_read(s, &extra, 1, &got);
    if (rc != FL_OK)
        goto done;
    if (got != 0) {
        rc = fl_error_set(FL_EPARSE,
                          "%s: %s %zu: trailing bytes after the %zu bytes of %s data the "
                          "header declares; the header and the content disagree, "
                          "re-download the file",
                          s->path, s_where(s), s->off - 1, total, kind);
        goto done;
    }
    *out = buf;
    buf = NULL;
done:
    free(buf);
    return rc;
}

int fl_idx_load_images(fl_idx_images **out, const char *path)
{
    if (!out || !path)
        abort();
    *out = NULL;
    s_src s;
    int rc = s_open(&s, path);
    if (rc != FL_OK)
        return rc;
    unsigned char *raw = NULL;
    fl_idx_images *im = NULL;
    uint32_t dims[3];
    rc = s_header(&s, FL_IDX_MAGIC_IMAGES, "image", dims);
    if (rc != FL_OK)
        goto done;
    for (int i = 1; i < 3; i++) {
        if (dims[i] > FL_IDX_MAX_SIDE) {
            rc = fl_error_set(FL_EPARSE,
                              "%s: byte %d: image %s %u is over the limit %u; check the file "
                              "is an image file and not corrupt",
                              path, 4 + 4 * i, i == 1 ? "height" : "width",
                              (unsigned)dims[i], FL_IDX_MAX_SIDE);
            goto done;
        }
    }
    /* Each factor is bounded (1e7, 4096, 4096), so the product fits in 64 bits. */
    uint64_t total = (uint64_t)dims[0] * dims[1] * dims[2];
    if (total > FL_IDX_MAX_PIXELS) {
        rc = fl_error_set(FL_EPARSE,
                          "%s: byte 4: header declares %u x %u x %u = %llu pixels, over the "
                          "limit %u; split the file into smaller ones",
                          path, (unsigned)dims[0], (unsigned)dims[1], (unsigned)dims[2],
                          (unsigned long long)total, FL_IDX_MAX_PIXELS);
        goto done;
    }
    rc = s_data(&s, (size_t)total, "pixel", &raw);
    if (rc != FL_OK)
        goto done;
    im = calloc(1, sizeof *im);
    if (im)
        im->pixels = malloc((size_t)total * sizeof(float));
    if (!im || !im->pixels) {
        rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %llu pixels", path,
                          (unsigned long long)total);
        goto done;
    }
    im->n = dims[0];
    im->rows = dims[1];
    im->cols = dims[2];
    /* Fixed public scale: never derived from the data. */
    for (size_t i = 0; i < (size_t)total; i++)
        im->pixels[i] = (float)raw[i] / 255.0f;
    *out = im;
    im = NULL;
done:
    s_close(&s);
    free(raw);
    fl_idx_images_free(im);
    return rc;
}

void fl_idx_images_free(fl_idx_images *im)
{
    if (!im)
        return;
    free(im->pixels);
    free(im);
}

int fl_idx_load_labels(fl_idx_labels **out, const char *path)
{
    if (!out || !path)
        abort();
    *out = NULL;
    s_src s;
    int rc = s_open(&s, path);
    if (rc != FL_OK)
        return rc;
    unsigned char *raw = NULL;
    uint32_t n;
    rc = s_header(&s, FL_IDX_MAGIC_LABELS, "label", &n);
    if (rc != FL_OK)
        goto done;
    rc = s_data(&s, n, "label", &raw);
    if (rc != FL_OK)
        goto done;
    fl_idx_labels *lb = calloc(1, sizeof *lb);
    if (!lb) {
        rc = fl_error_set(FL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    lb->n = n;
    lb->labels = raw;
    raw = NULL;
    *out = lb;
done:
    s_close(&s);
    free(raw);
    return rc;
}

void fl_idx_labels_free(fl_idx_labels *lb)
{
    if (!lb)
        return;
    free(lb->labels);
    free(lb);
}

int fl_idx_load_dataset(fl_dataset **out, const char *images_path, const char *labels_path,
                        uint32_t num_classes)
{
    if (!out || !images_path || !labels_path)
        abort();
    *out = NULL;
    if (num_classes < 2 || num_classes > 256)
        return fl_error_set(FL_EINVAL,
                            "IDX dataset: num_classes %u is outside 2..256 (u8 labels); "
                            "pass the number of classes of the data set",
                            (unsigned)num_classes);
    fl_idx_images *im = NULL;
    fl_idx_labels *lb = NULL;
    fl_dataset *ds = NULL;
    int rc = fl_idx_load_images(&im, images_path);
    if (rc != FL_OK)
        goto done;
    rc = fl_idx_load_labels(&lb, labels_path);
    if (rc != FL_OK)
        goto done;
    if (im->n != lb->n) {
        rc = fl_error_set(FL_EPARSE,
                          "%s holds %zu images but %s holds %zu labels; pass an image file "
                          "and the label file that belongs to it",
                          images_path, im->n, labels_path, lb->n);
        goto done;
    }
    for (size_t i = 0; i < lb->n; i++) {
        if (lb->labels[i] >= num_classes) {
            rc = fl_error_set(FL_EPARSE,
                              "%s: byte %zu: label %u of item %zu is not below the number of "
                              "classes %u; check the label file and the class count",
                              labels_path, 8 + i, (unsigned)lb->labels[i], i,
                              (unsigned)num_classes);
            goto done;
        }
    }
    ds = calloc(1, sizeof *ds);
    if (ds)
        ds->y = malloc(lb->n * sizeof *ds->y);
    if (!ds || !ds->y) {
        rc = fl_error_set(FL_ENOMEM, "%s: out of memory for %zu labels", labels_path, lb->n);
        goto done;
    }
    for (size_t i = 0; i < lb->n; i++)
        ds->y[i] = lb->labels[i];
    ds->n = im->n;
    ds->d = im->rows * im->cols;
    ds->num_classes = num_classes;
    ds->clamped = 0;
    ds->X = im->pixels; /* ownership moves to the dataset */
    im->pixels = NULL;
    *out = ds;
    ds = NULL;
done:
    fl_dataset_free(ds);
    fl_idx_images_free(im);
    fl_idx_labels_free(lb);
    return rc;
}
