/*
 * fuzz_idx: IDX image and label files, plain or gzip (nn/fl_idx.h), as a
 * node loads its image shard.
 *
 * The first input byte chooses what the rest is:
 *   bits 0-1  0 an image file, 1 a label file, 2 the label file of a
 *             dataset whose image file is three fixed 2x2 images, 3 the
 *             image file of a dataset whose label file is three fixed
 *             labels
 *   bit 7     gzip the rest first (the fuzzer seldom writes a valid gzip
 *             stream; raw input starting 1f 8b still tests corrupt ones)
 *   bits 2-6  number of classes for a dataset: 2 + value
 *
 * Properties checked beyond "no crash": loaded images have n, rows and cols
 * within the reader's bounds and every pixel in [0, 1]; a dataset's labels
 * are below its class count.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz/fuzz_support.h"
#include "nn/fl_idx.h"

static const uint8_t s_images[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2,
                                   0, 255, 17, 128, 1, 2, 3, 4, 250, 251, 252, 253};
static const uint8_t s_labels[] = {0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 1};

/* gzip (RFC 1952) of in[0..n) into a fresh buffer. */
static uint8_t *s_gzip(const uint8_t *in, size_t n, size_t *out_len)
{
    z_stream z;
    uint8_t *out;
    size_t cap;

    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    cap = deflateBound(&z, (uLong)n) + 32;
    out = malloc(cap);
    if (!out)
        abort();
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

static void s_check_images(const fl_idx_images *im)
{
    if (im->n == 0 || im->n > FL_IDX_MAX_ITEMS || im->rows == 0 || im->rows > FL_IDX_MAX_SIDE ||
        im->cols == 0 || im->cols > FL_IDX_MAX_SIDE)
        abort();
    for (size_t i = 0; i < im->n * im->rows * im->cols; i++)
        if (!(im->pixels[i] >= 0.0f && im->pixels[i] <= 1.0f))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_dir d;
    char path[1024], other[1024];
    uint8_t *gz = NULL;
    const uint8_t *body;
    size_t len;
    unsigned mode;
    uint32_t classes;

    fuzz_init();
    if (size < 1 || size > 1u << 20)
        return 0;
    mode = data[0] & 3u;
    classes = 2 + ((data[0] >> 2) & 31u);
    body = data + 1;
    len = size - 1;
    if (data[0] & 0x80) {
        gz = s_gzip(body, len, &len);
        body = gz;
    }
    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "input.idx", body, len, path, sizeof path);
    if (mode == 0) {
        fl_idx_images *im = NULL;
        if (fl_idx_load_images(&im, path) == FL_OK)
            s_check_images(im);
        else if (im)
            abort();
        fl_idx_images_free(im);
    } else if (mode == 1) {
        fl_idx_labels *lb = NULL;
        if (fl_idx_load_labels(&lb, path) == FL_OK) {
            if (lb->n == 0 || lb->n > FL_IDX_MAX_ITEMS)
                abort();
        } else if (lb) {
            abort();
        }
        fl_idx_labels_free(lb);
    } else {
        fl_dataset *ds = NULL;
        int rc;
        if (mode == 2) {
            fuzz_dir_write(&d, "images.idx", s_images, sizeof s_images, other, sizeof other);
            rc = fl_idx_load_dataset(&ds, other, path, classes);
        } else {
            fuzz_dir_write(&d, "labels.idx", s_labels, sizeof s_labels, other, sizeof other);
            rc = fl_idx_load_dataset(&ds, path, other, classes);
        }
        if (rc == FL_OK) {
            if (ds->n == 0 || ds->num_classes != classes)
                abort();
            for (size_t i = 0; i < ds->n; i++)
                if (ds->y[i] < 0 || (uint32_t)ds->y[i] >= classes)
                    abort();
        } else if (ds) {
            abort();
        }
        fl_dataset_free(ds);
    }
    free(gz);
    fuzz_dir_remove(&d);
    return 0;
}
