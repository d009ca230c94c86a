/*
 * fl_idx: a strict reader for IDX files, the format of MNIST and
 * Fashion-MNIST (big-endian header: two zero bytes, a type byte, a
 * dimension count, one 32-bit size per dimension, then the data).  Files
 * may be plain or gzip-compressed (recognised by the gzip magic 1f 8b and
 * read through zlib).  Only unsigned-byte data is accepted: images with
 * magic 0x00000803 (N x rows x cols) and labels with magic 0x00000801 (N).
 *
 * Pixels are scaled by the fixed public factor 1/255 into [0,1]; nothing
 * about the data is looked at to scale it, so preprocessing leaks nothing.
 *
 * Every size in the header is checked against fixed bounds before anything
 * is allocated, and the data buffer grows with the bytes actually read, so
 * a short or hostile file cannot make the reader allocate much more than
 * its real content.  Truncated files and trailing bytes are errors; every
 * message names the file and the byte offset (in the decompressed stream
 * for gzip files).
 */
#ifndef FL_IDX_H
#define FL_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "nn/fl_dataset.h"

#define FL_IDX_MAGIC_IMAGES 0x00000803u /* unsigned byte, 3 dimensions */
#define FL_IDX_MAGIC_LABELS 0x00000801u /* unsigned byte, 1 dimension */
#define FL_IDX_MAX_ITEMS 10000000u      /* at most 1e7 images or labels */
#define FL_IDX_MAX_SIDE 4096u           /* rows and cols each at most 4096 */
#define FL_IDX_MAX_PIXELS (1u << 28)    /* N*rows*cols at most 2^28 (1 GiB of floats) */

typedef struct {
    size_t n;      /* images */
    size_t rows;   /* pixels per column */
    size_t cols;   /* pixels per row */
    float *pixels; /* n x rows x cols, row-major, each byte / 255 in [0,1] */
} fl_idx_images;

typedef struct {
    size_t n;        /* labels */
    uint8_t *labels; /* n raw label bytes */
} fl_idx_labels;

/** Loads an IDX image file (magic 0x00000803), plain or gzip.
 *  On success *out owns the images (free with fl_idx_images_free); on
 *  failure *out is NULL.
 *  Errors: FL_EIO (cannot open or read the file), FL_EPARSE with
 *  "FILE: byte OFFSET: what, what to do" for a wrong magic (not IDX, not
 *  unsigned bytes, wrong dimension count), a zero size, more than
 *  FL_IDX_MAX_ITEMS images, a side over FL_IDX_MAX_SIDE, more than
 *  FL_IDX_MAX_PIXELS pixels, a truncated file, trailing bytes or a corrupt
 *  gzip stream; FL_ENOMEM. */
FL_NODISCARD int fl_idx_load_images(fl_idx_images **out, const char *path);

/** Frees images.  fl_idx_images_free(NULL) is a no-op. */
void fl_idx_images_free(fl_idx_images *im);

/** Loads an IDX label file (magic 0x00000801), plain or gzip.
 *  On success *out owns the labels (free with fl_idx_labels_free); on
 *  failure *out is NULL.  Errors as fl_idx_load_images (no side checks). */
FL_NODISCARD int fl_idx_load_labels(fl_idx_labels **out, const char *path);

/** Frees labels.  fl_idx_labels_free(NULL) is a no-op. */
void fl_idx_labels_free(fl_idx_labels *lb);

/** Builds a dataset from an image file and a label file: X is
 *  n x (rows*cols) with pixels / 255, y the labels, num_classes as given
 *  (2..256), clamped 0.  On success *out owns the dataset (free with
 *  fl_dataset_free); on failure *out is NULL.
 *  Errors: FL_EINVAL (num_classes outside 2..256), everything
 *  fl_idx_load_images / fl_idx_load_labels report, FL_EPARSE when the two
 *  files hold different numbers of items (both files named) or a label is
 *  >= num_classes (the label file, item index and byte offset named). */
FL_NODISCARD int fl_idx_load_dataset(fl_dataset **out, const char *images_path,
                                     const char *labels_path, uint32_t num_classes);

#endif
