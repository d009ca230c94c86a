/*
 * fl_metrics: classification metrics computed from predicted probabilities
 * and true labels - confusion counts and the ratios built on them, ROC AUC
 * (Mann-Whitney U with ties counted 1/2), and multi-class accuracy.
 * Labels for the binary metrics are 0 (negative) and 1 (positive).
 */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct {
    uint64_t tp, fp, tn, fn;
} fl_confusion;

/** Binary confusion counts: example i is predicted positive when
 *  probs[i] >= threshold and is actually positive when y[i] != 0.
 *  Writes *out (caller-owned); n == 0 gives all zeros.  No errors. */
void fl_metrics_confusion(const float *probs, const int32_t *y, size_t n, float threshold,
                          fl_confusion *out);

/** (tp + tn) / total; 0 when the confusion is empty. */
double fl_metrics_accuracy(const fl_confusion *c);

/** tp / (tp + fp); defined as 0 when tp + fp == 0 (nothing predicted
 *  positive), the convention of scikit-learn's zero_division=0. */
double fl_metrics_precision(const fl_confusion *c);

/** tp / (tp + fn); defined as 0 when tp + fn == 0 (no positives). */
double fl_metrics_recall(const fl_confusion *c);

/** Harmonic mean 2PR / (P + R); defined as 0 when P + R == 0. */
double fl_metrics_f1(const fl_confusion *c);

/** ROC AUC = Mann-Whitney U / (P * N), where P and N count the positive
 *  (y == 1) and negative (y == 0) examples and tied scores count 1/2
 *  (average ranks).  O(n log n); allocates O(n) scratch internally.
 *  Writes *auc on success.
 *  Errors: FL_EINVAL (NULL buffer, a label other than 0/1, a NaN score,
 *  or one class absent - AUC is then undefined), FL_ENOMEM. */
FL_NODISCARD int fl_metrics_roc_auc(const float *scores, const int32_t *y, size_t n,
                                    double *auc);

/** Fraction of rows whose argmax over the k probabilities of row i
 *  (probs is n x k, row-major; ties go to the lowest class) equals y[i].
 *  0 when n == 0. */
double fl_metrics_accuracy_multiclass(const float *probs, const int32_t *y, size_t n,
                                      size_t k);

/** K x K confusion counts, row = true class, column = predicted class,
 *  into conf (k*k, caller-owned, overwritten).  For a sigmoid output
 *  (sigmoid != 0, probs n x 1) k must be 2 and the prediction is
 *  probs[i] >= 0.5; otherwise probs is n x k and the prediction its argmax
 *  (ties to the lowest class).  Labels outside 0..k-1 are FL_EINVAL naming
 *  the example.  These are the totals nodes report for the consortium's
 *  evaluation (proto/fl_wire.h FL_WIRE_EVAL_COUNTERS). */
FL_NODISCARD int fl_metrics_confusion_matrix(const float *probs, const int32_t *y, size_t n,
                                             uint32_t k, int sigmoid, uint64_t *conf);

/** Metrics of a K x K confusion matrix (row = true class): accuracy, and
 *  precision, recall and F1 of class 1 when k == 2, else their macro
 *  averages over the k classes (each class's ratio 0 where its
 *  denominator is 0, as scikit-learn's zero_division=0).  All 0 for an
 *  empty matrix. */
void fl_metrics_from_confusion(const uint64_t *conf, uint32_t k, double *accuracy,
                               double *precision, double *recall, double *f1);

#endif
