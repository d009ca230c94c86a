/*
 * fl_dataset: the consortium's shared feature schema (an INI file naming
 * the features in order, their public fixed ranges, the label column and
 * the number of classes), a strict CSV loader that scales features into
 * [0,1] using only those public ranges, a loader for a slice of an IDX
 * (MNIST-format) image set, and a deterministic stratified splitter that
 * deals a CSV into a test file and per-hospital shards.
 *
 * Scaling never looks at statistics of the data, so nothing about a
 * hospital's records leaks through preprocessing.
 */
#ifndef FL_DATASET_H
#define FL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct fl_schema fl_schema;

/** Loads a schema file:
 *      [schema]  name = ..., label = <label column>, classes = <K >= 2>
 *      [features] <column> = <min> <max>     (one line per feature, in order)
 *  On success *out owns the schema (free with fl_schema_free).
 *  Errors: FL_EIO (cannot open), FL_EPARSE (syntax, unknown section or key,
 *  duplicate key or feature, min >= max or non-finite bound, classes < 2,
 *  no features, missing name/label/classes; the message names the file and
 *  line), FL_ENOMEM. */
FL_NODISCARD int fl_schema_load(fl_schema **out, const char *path);

/** Frees a schema.  fl_schema_free(NULL) is a no-op. */
void fl_schema_free(fl_schema *s);

/** Number of features. */
size_t fl_schema_num_features(const fl_schema *s);

/** Number of classes (labels are 0 .. classes-1). */
uint32_t fl_schema_num_classes(const fl_schema *s);

/** The schema's name; owned by `s`. */
const char *fl_schema_name(const fl_schema *s);

/** Name of feature i (0-based, i < num_features); owned by `s`, NULL when
 *  i is out of range. */
const char *fl_schema_feature_name(const fl_schema *s, size_t i);

/** SHA-256 (libsodium crypto_hash_sha256) of a canonical text of the
 *  schema (name, label, classes, features in order with their ranges as
 *  exact hex floats), independent of comments, spacing and number spelling
 *  in the file.  Nodes compare digests to check they share one schema. */
void fl_schema_digest(const fl_schema *s, unsigned char out[32]);

typedef struct {
    size_t n;              /* rows */
    size_t d;              /* features */
    uint32_t num_classes;
    float *X;              /* n x d row-major, scaled to [0,1] */
    int32_t *y;            /* n labels */
    size_t clamped;        /* values outside the public range that were clamped */
} fl_dataset;

/** Loads a CSV file against a schema.  The header line must name every
 *  schema feature and the label column (extra columns are ignored; order
 *  is free).  Each value is clamped to its public range and scaled to
 *  x' = (clamp(x, min, max) - min) / (max - min).  Values are plain
 *  decimal numbers; CRLF line ends and a blank last line are accepted.
 *  On success *out owns the dataset (free with fl_dataset_free).
 *  Errors: FL_EIO (cannot open/read), FL_EPARSE with
 *  "FILE:LINE:COL: what (column 'name'), what to do" for a non-numeric,
 *  NaN or infinite value, a row with missing or extra fields, a label that
 *  is not an integer in [0, classes), a missing or duplicate header column,
 *  quotes in data, a line over 64 KiB, an empty file or no data rows;
 *  FL_ENOMEM. */
FL_NODISCARD int fl_dataset_load_csv(fl_dataset **out, const char *csv_path,
                                     const fl_schema *s);

/** Loads rows start .. start+count-1 of an IDX image file and its label
 *  file (MNIST / Fashion-MNIST format, plain or gzip; nn/fl_idx.h) as a
 *  dataset: X is count x (H*W) (one channel, row-major pixels, each byte
 *  scaled by the fixed public factor 1/255 into [0,1]), y the labels,
 *  num_classes = max(10, largest label in the WHOLE label file + 1), so
 *  every slice of one file gets the same class count; clamped 0.
 *  count == 0 means "to the end of the file".  On success *out owns the
 *  dataset (free with fl_dataset_free); on failure *out is NULL.
 *  Errors: everything fl_idx_load_images / fl_idx_load_labels report
 *  (FL_EIO, FL_EPARSE naming file and byte offset, FL_ENOMEM); FL_EPARSE
 *  when the files hold different numbers of items (both named); FL_EINVAL
 *  when start is not below the number of items or start+count exceeds it
 *  (the message names the image file and its size). */
FL_NODISCARD int fl_dataset_load_idx(fl_dataset **out, const char *images_path,
                                     const char *labels_path, size_t start, size_t count);

/** Frees a dataset and its arrays.  fl_dataset_free(NULL) is a no-op. */
void fl_dataset_free(fl_dataset *ds);

/** Splits a CSV file line by line (lines kept verbatim, the header copied
 *  to each output) into out_dir/test.csv with round(test_fraction * rows)
 *  rows and out_dir/shard-1.csv .. shard-K.csv with the rest, stratified
 *  by the text of column label_column: per class, rows are shuffled
 *  (Fisher-Yates, randomness from randombytes_buf_deterministic(seed)),
 *  the class's share of the test set is taken by largest remainders, and
 *  the remaining rows are dealt round-robin over the shards, so every
 *  output has the class mix of the whole to within one row.  The same seed
 *  gives byte-identical files.  Each file is written atomically (temp file,
 *  fflush, fsync, rename); out_dir is created if missing.
 *  Errors: FL_EINVAL (test_fraction outside [0,1), shards == 0, fewer
 *  training rows than shards), FL_EIO, FL_EPARSE (no header or rows, no
 *  column label_column, a row too short to have it, a line over 64 KiB),
 *  FL_ENOMEM. */
FL_NODISCARD int fl_dataset_split_csv(const char *csv_path, const char *label_column,
                                      double test_fraction, unsigned shards,
                                      const unsigned char seed[32], const char *out_dir);

#endif
