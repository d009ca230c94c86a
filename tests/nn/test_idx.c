/* Tests for fl_idx: IDX image and label files written here byte by byte
 * (plain and gzip) load back exactly; every kind of malformed file is
 * rejected with FL_EPARSE and a message naming the file and the byte
 * offset; the real Fashion-MNIST test set loads when it is installed. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "nn/fl_idx.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static char g_dir[64];

static void s_setup(void) { fl_test_dir_new(g_dir, sizeof g_dir, "idx"); }
static void s_teardown(void) { fl_test_dir_remove(g_dir); }

TestSuite(idx, .init = s_setup, .fini = s_teardown);

/* A growable byte string for building files. */
typedef struct {
    unsigned char b[4096];
    size_t n;
} s_bytes;

static void s_put(s_bytes *s, const void *p, size_t n)
{
    cr_assert_leq(s->n + n, sizeof s->b);
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void s_be32(s_bytes *s, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    s_put(s, b, 4);
}

static const char *s_path(const char *name)
{
    static char paths[8][256];
    static int slot;
    char *p = paths[slot++ % 8];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static const char *s_write(const char *name, const s_bytes *s)
{
    const char *p = s_path(name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(s->b, 1, s->n, f), s->n);
    fclose(f);
    return p;
}

static const char *s_write_gz(const char *name, const s_bytes *s)
{
    const char *p = s_path(name);
    gzFile g = gzopen(p, "wb9");
    cr_assert_not_null(g);
    cr_assert_eq(gzwrite(g, s->b, (unsigned)s->n), (int)s->n);
    cr_assert_eq(gzclose(g), Z_OK);
    return p;
}

/* Header for n images of rows x cols, then pixel bytes (7 j + 3) mod 256
 * for j = 0.., so the data holds 0-ish, mid and 255-ish values. */
static s_bytes s_images(uint32_t n, uint32_t rows, uint32_t cols)
{
    s_bytes s = {.n = 0};
    s_be32(&s, 0x00000803);
    s_be32(&s, n);
    s_be32(&s, rows);
    s_be32(&s, cols);
    for (uint32_t j = 0; j < n * rows * cols; j++) {
        unsigned char v = (unsigned char)((7 * j + 3) % 256);
        if (j == 0)
            v = 0;
        if (j == 1)
            v = 255;
        s_put(&s, &v, 1);
    }
    return s;
}

static s_bytes s_labels(uint32_t n, const unsigned char *lab)
{
    s_bytes s = {.n = 0};
    s_be32(&s, 0x00000801);
    s_be32(&s, n);
    s_put(&s, lab, n);
    return s;
}

/* Expected pixel: the byte / 255, computed in double here. */
static void s_check_images(const fl_idx_images *im, const s_bytes *src, size_t n, size_t r,
                           size_t c)
{
    cr_assert_eq(im->n, n);
    cr_assert_eq(im->rows, r);
    cr_assert_eq(im->cols, c);
    cr_assert_float_eq(im->pixels[0], 0.0f, 0.0);
    cr_assert_float_eq(im->pixels[1], 1.0f, 0.0);
    for (size_t j = 0; j < n * r * c; j++) {
        double want = src->b[16 + j] / 255.0;
        cr_assert(fabs(im->pixels[j] - want) <= 1e-7, "pixel %zu: %g vs %g", j,
                  (double)im->pixels[j], want);
    }
}

Test(idx, plain_images_load_back_exactly_scaled_by_1_over_255)
{
    s_bytes s = s_images(3, 2, 5);
    fl_idx_images *im = NULL;
    cr_assert_eq(fl_idx_load_images(&im, s_write("img.idx", &s)), FL_OK, "%s",
                 fl_error_last());
    s_check_images(im, &s, 3, 2, 5);
    fl_idx_images_free(im);
    fl_idx_images_free(NULL);
}

Test(idx, gzip_images_load_back_exactly)
{
    s_bytes s = s_images(4, 3, 3);
    fl_idx_images *im = NULL;
    cr_assert_eq(fl_idx_load_images(&im, s_write_gz("img.idx.gz", &s)), FL_OK, "%s",
                 fl_error_last());
    s_check_images(im, &s, 4, 3, 3);
    fl_idx_images_free(im);
}

Test(idx, images_larger_than_the_first_read_chunk_load_back)
{
    /* 3 x 200 x 200 = 120000 bytes, more than the 64 KiB first buffer. */
    s_bytes *s = calloc(1, sizeof *s); /* header only, data streamed below */
    s_be32(s, 0x00000803);
    s_be32(s, 3);
    s_be32(s, 200);
    s_be32(s, 200);
    const char *p = s_path("big.idx.gz");
    gzFile g = gzopen(p, "wb");
    cr_assert_not_null(g);
    gzwrite(g, s->b, (unsigned)s->n);
    for (unsigned j = 0; j < 120000; j++) {
        unsigned char v = (unsigned char)(j % 251);
        gzwrite(g, &v, 1);
    }
    cr_assert_eq(gzclose(g), Z_OK);
    fl_idx_images *im = NULL;
    cr_assert_eq(fl_idx_load_images(&im, p), FL_OK, "%s", fl_error_last());
    cr_assert_eq(im->n * im->rows * im->cols, 120000);
    for (unsigned j = 0; j < 120000; j++)
        cr_assert(fabs(im->pixels[j] - (j % 251) / 255.0) <= 1e-7, "pixel %u", j);
    fl_idx_images_free(im);
    free(s);
}

Test(idx, plain_and_gzip_labels_load_back_exactly)
{
    const unsigned char lab[6] = {0, 9, 3, 255, 1, 7};
    s_bytes s = s_labels(6, lab);
    const char *paths[2] = {s_write("lab.idx", &s), s_write_gz("lab.idx.gz", &s)};
    for (int k = 0; k < 2; k++) {
        fl_idx_labels *lb = NULL;
        cr_assert_eq(fl_idx_load_labels(&lb, paths[k]), FL_OK, "%s", fl_error_last());
        cr_assert_eq(lb->n, 6);
        cr_assert_arr_eq(lb->labels, lab, 6);
        fl_idx_labels_free(lb);
    }
    fl_idx_labels_free(NULL);
}

Test(idx, dataset_has_flattened_pixels_labels_and_classes)
{
    s_bytes si = s_images(4, 2, 3);
    const unsigned char lab[4] = {2, 0, 1, 2};
    s_bytes sl = s_labels(4, lab);
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_idx_load_dataset(&ds, s_write("i.idx", &si), s_write_gz("l.idx.gz", &sl), 3),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 4);
    cr_assert_eq(ds->d, 6);
    cr_assert_eq(ds->num_classes, 3);
    cr_assert_eq(ds->clamped, 0);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ds->y[i], lab[i]);
    for (size_t j = 0; j < 24; j++)
        cr_assert(fabs(ds->X[j] - si.b[16 + j] / 255.0) <= 1e-7);
    fl_dataset_free(ds);
}

/* Expects loading `path` as images (or labels) to fail with `code` and a
 * message containing the file's base name and `want`. */
static void s_reject(int labels, const char *path, int code, const char *want)
{
    const char *base = strrchr(path, '/') + 1;
    int rc;
    if (labels) {
        fl_idx_labels *lb = (fl_idx_labels *)1;
        rc = fl_idx_load_labels(&lb, path);
        cr_assert_null(lb);
    } else {
        fl_idx_images *im = (fl_idx_images *)1;
        rc = fl_idx_load_images(&im, path);
        cr_assert_null(im);
    }
    cr_assert_eq(rc, code, "%s: got %s: %s", base, fl_error_name(rc), fl_error_last());
    cr_assert(strstr(fl_error_last(), base), "no '%s' in: %s", base, fl_error_last());
    cr_assert(strstr(fl_error_last(), want), "no '%s' in: %s", want, fl_error_last());
}

Test(idx, missing_file_is_an_io_error_naming_it)
{
    s_reject(0, s_path("absent.idx"), FL_EIO, "cannot open");
}

Test(idx, empty_file_is_rejected)
{
    s_bytes s = {.n = 0};
    s_reject(0, s_write("empty.idx", &s), FL_EPARSE, "byte 0:");
}

Test(idx, non_idx_magic_is_rejected)
{
    s_bytes s = {.n = 0};
    s_put(&s, "P5\n28 28\n255\n", 13);
    s_reject(0, s_write("pgm.idx", &s), FL_EPARSE, "byte 0: not an IDX file");
}

Test(idx, non_byte_data_type_is_rejected)
{
    s_bytes s = s_images(1, 1, 1);
    s.b[2] = 0x0D; /* float */
    s_reject(0, s_write("float.idx", &s), FL_EPARSE, "byte 2:");
}

Test(idx, label_file_given_as_images_and_images_as_labels_are_rejected)
{
    const unsigned char lab[2] = {1, 2};
    s_bytes sl = s_labels(2, lab);
    s_reject(0, s_write("labels-as-images.idx", &sl), FL_EPARSE, "byte 3:");
    s_bytes si = s_images(1, 1, 2);
    s_reject(1, s_write("images-as-labels.idx", &si), FL_EPARSE, "byte 3:");
}

Test(idx, zero_sizes_are_rejected)
{
    s_bytes s = s_images(1, 1, 1);
    s.b[15] = 0; /* cols = 0 */
    s_reject(0, s_write("zero-cols.idx", &s), FL_EPARSE, "byte 12:");
    s_bytes z = {.n = 0};
    s_be32(&z, 0x00000801);
    s_be32(&z, 0);
    s_reject(1, s_write("zero-labels.idx", &z), FL_EPARSE, "byte 4:");
}

Test(idx, sizes_beyond_the_limits_are_rejected_before_allocating)
{
    s_bytes s = {.n = 0};
    s_be32(&s, 0x00000803);
    s_be32(&s, 10000001);
    s_be32(&s, 1);
    s_be32(&s, 1);
    s_reject(0, s_write("too-many.idx", &s), FL_EPARSE, "byte 4:");
    s.n = 4;
    s_be32(&s, 1);
    s_be32(&s, 4097);
    s_be32(&s, 1);
    s_reject(0, s_write("too-tall.idx", &s), FL_EPARSE, "byte 8:");
    s.n = 4;
    s_be32(&s, 1);
    s_be32(&s, 1);
    s_be32(&s, 4097);
    s_reject(0, s_write("too-wide.idx", &s), FL_EPARSE, "byte 12:");
    /* 1e7 x 28 x 28 pixels: each size within its bound, product over 2^28. */
    s.n = 4;
    s_be32(&s, 10000000);
    s_be32(&s, 28);
    s_be32(&s, 28);
    s_reject(0, s_write("too-big.idx", &s), FL_EPARSE, "pixels");
    s_bytes l = {.n = 0};
    s_be32(&l, 0x00000801);
    s_be32(&l, 0xffffffffu);
    s_reject(1, s_write("too-many-labels.idx", &l), FL_EPARSE, "byte 4:");
}

Test(idx, truncated_header_is_rejected)
{
    s_bytes s = s_images(2, 2, 2);
    s.n = 10;
    s_reject(0, s_write("short-header.idx", &s), FL_EPARSE, "byte 10:");
    s.n = 2;
    s_reject(0, s_write("short-magic.idx", &s), FL_EPARSE, "byte 2:");
}

Test(idx, truncated_data_is_rejected_plain_and_gzip)
{
    s_bytes s = s_images(2, 3, 3); /* 16 + 18 bytes */
    s.n -= 1;
    s_reject(0, s_write("short.idx", &s), FL_EPARSE, "byte 33: file is truncated");
    s_reject(0, s_write_gz("short.idx.gz", &s), FL_EPARSE, "decompressed byte 33");
    const unsigned char lab[5] = {1, 2, 3, 4, 5};
    s_bytes l = s_labels(5, lab);
    l.n -= 2;
    s_reject(1, s_write("short-labels.idx", &l), FL_EPARSE, "byte 11: file is truncated");
}

Test(idx, cut_gzip_stream_is_rejected)
{
    s_bytes s = s_images(4, 8, 8);
    const char *p = s_write_gz("cut.idx.gz", &s);
    /* Keep only the first half of the compressed file. */
    FILE *f = fopen(p, "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(p, "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    s_reject(0, p, FL_EPARSE, "decompressed byte");
}

Test(idx, corrupt_gzip_stream_is_rejected)
{
    s_bytes s = s_images(4, 8, 8);
    const char *p = s_write_gz("corrupt.idx.gz", &s);
    FILE *f = fopen(p, "r+b");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    for (size_t j = 12; j < n - 8; j++) /* the deflate data, not the CRC/size trailer */
        buf[j] ^= 0x5a;
    rewind(f);
    fwrite(buf, 1, n, f);
    fclose(f);
    s_reject(0, p, FL_EPARSE, "gzip");
}

Test(idx, trailing_bytes_are_rejected_plain_and_gzip)
{
    s_bytes s = s_images(1, 2, 2); /* 16 + 4 bytes */
    unsigned char x = 42;
    s_put(&s, &x, 1);
    s_reject(0, s_write("trailing.idx", &s), FL_EPARSE, "byte 20: trailing bytes");
    s_reject(0, s_write_gz("trailing.idx.gz", &s), FL_EPARSE, "decompressed byte 20");
    const unsigned char lab[2] = {1, 2};
    s_bytes l = s_labels(2, lab);
    s_put(&l, &x, 1);
    s_reject(1, s_write("trailing-labels.idx", &l), FL_EPARSE, "byte 10: trailing bytes");
}

Test(idx, dataset_rejects_count_mismatch_and_out_of_range_labels)
{
    s_bytes si = s_images(3, 2, 2);
    const unsigned char lab[4] = {0, 1, 2, 1};
    s_bytes sl4 = s_labels(4, lab);
    s_bytes sl3 = s_labels(3, lab);
    const char *img = s_write("imgs.idx", &si);
    fl_dataset *ds = (fl_dataset *)1;
    cr_assert_eq(fl_idx_load_dataset(&ds, img, s_write("labs4.idx", &sl4), 3), FL_EPARSE);
    cr_assert_null(ds);
    cr_assert(strstr(fl_error_last(), "imgs.idx") && strstr(fl_error_last(), "labs4.idx"),
              "%s", fl_error_last());
    /* Label 2 at item 2 (byte 10) with only 2 classes. */
    cr_assert_eq(fl_idx_load_dataset(&ds, img, s_write("labs3.idx", &sl3), 2), FL_EPARSE);
    cr_assert_null(ds);
    cr_assert(strstr(fl_error_last(), "labs3.idx: byte 10:"), "%s", fl_error_last());
    cr_assert_eq(fl_idx_load_dataset(&ds, img, s_path("labs3.idx"), 1), FL_EINVAL);
    cr_assert_eq(fl_idx_load_dataset(&ds, img, s_path("labs3.idx"), 257), FL_EINVAL);
}

Test(idx, fashion_mnist_test_set_has_10000_28x28_images_labelled_0_to_9)
{
    static const char *cands[][2] = {
        {FASHION_DIR "/t10k-images-idx3-ubyte", FASHION_DIR "/t10k-labels-idx1-ubyte"},
        {FASHION_DIR "/t10k-images-idx3-ubyte.gz", FASHION_DIR "/t10k-labels-idx1-ubyte.gz"},
    };
    const char *img = NULL, *lab = NULL;
    for (int k = 0; k < 2 && !img; k++)
        if (access(cands[k][0], R_OK) == 0 && access(cands[k][1], R_OK) == 0) {
            img = cands[k][0];
            lab = cands[k][1];
        }
    if (!img)
        cr_skip_test("Fashion-MNIST not installed: no readable " FASHION_DIR
                     "/t10k-{images-idx3,labels-idx1}-ubyte[.gz]; place the files "
                     "there to run this test");
    fl_dataset *ds = NULL;
    cr_assert_eq(fl_idx_load_dataset(&ds, img, lab, 10), FL_OK, "%s", fl_error_last());
    cr_assert_eq(ds->n, 10000);
    cr_assert_eq(ds->d, 28 * 28);
    size_t seen[10] = {0};
    for (size_t i = 0; i < ds->n; i++) {
        cr_assert(ds->y[i] >= 0 && ds->y[i] <= 9);
        seen[ds->y[i]]++;
    }
    for (int k = 0; k < 10; k++) /* the published test set is balanced: 1000 per class */
        cr_assert_eq(seen[k], 1000, "class %d has %zu", k, seen[k]);
    for (size_t j = 0; j < ds->n * ds->d; j++)
        cr_assert(ds->X[j] >= 0.0f && ds->X[j] <= 1.0f);
    fl_dataset_free(ds);
}
