/*
 * fl_metrics: confusion counts, precision/recall/F1, ROC AUC by ranks, and
 * multi-class accuracy (see fl_metrics.h).
 */
#include "nn/fl_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void fl_metrics_confusion(const float *probs, const int32_t *y, size_t n, float threshold,
                          fl_confusion *out)
{
    fl_confusion c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int pred = probs[i] >= threshold;
        int pos = y[i] != 0;
        if (pred && pos)
            c.tp++;
        else if (pred)
            c.fp++;
        else if (pos)
            c.fn++;
        else
            c.tn++;
    }
    *out = c;
}

double fl_metrics_accuracy(const fl_confusion *c)
{
    uint64_t total = c->tp + c->fp + c->tn + c->fn;
    return total ? (double)(c->tp + c->tn) / (double)total : 0.0;
}

double fl_metrics_precision(const fl_confusion *c)
{
    uint64_t d = c->tp + c->fp;
    return d ? (double)c->tp / (double)d : 0.0;
}

double fl_metrics_recall(const fl_confusion *c)
{
    uint64_t d = c->tp + c->fn;
    return d ? (double)c->tp / (double)d : 0.0;
}

double fl_metrics_f1(const fl_confusion *c)
{
    double p = fl_metrics_precision(c), r = fl_metrics_recall(c);
    return (p + r) > 0.0 ? 2.0 * p * r / (p + r) : 0.0;
}

typedef struct {
    float s;
    int32_t y;
} s_scored;

static int s_cmp_scored(const void *a, const void *b)
{
    float x = ((const s_scored *)a)->s, z = ((const s_scored *)b)->s;
    return (x > z) - (x < z);
}

int fl_metrics_roc_auc(const float *scores, const int32_t *y, size_t n, double *auc)
{
    int rc = FL_OK;
    s_scored *v = NULL;
    if (!auc || (n > 0 && (!scores || !y)))
        return fl_error_set(FL_EINVAL, "fl_metrics_roc_auc: scores, y and auc must not be NULL");
    uint64_t P = 0, N = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] != 0 && y[i] != 1)
            return fl_error_set(FL_EINVAL, "fl_metrics_roc_auc: label y[%zu] = %d is not 0 "
                                "or 1; ROC AUC is for binary labels", i, (int)y[i]);
        if (isnan(scores[i]))
            return fl_error_set(FL_EINVAL, "fl_metrics_roc_auc: score %zu is NaN; check the "
                                "model's output", i);
        if (y[i])
            P++;
        else
            N++;
    }
    if (P == 0 || N == 0)
        return fl_error_set(FL_EINVAL, "fl_metrics_roc_auc: %s examples among %zu; AUC "
                            "needs both classes (evaluate on a larger or stratified set)",
                            P == 0 ? "no positive" : "no negative", n);
    v = malloc(n * sizeof *v);
    if (!v) {
        rc = fl_error_set(FL_ENOMEM, "fl_metrics_roc_auc: out of memory for %zu scores", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        v[i].s = scores[i];
        v[i].y = y[i];
    }
    qsort(v, n, sizeof *v, s_cmp_scored);
    /* Sum of the (1-based, tie-averaged) ranks of the positives; then
     * U = R_pos - P(P+1)/2 (Mann-Whitney). */
    double rank_sum = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        uint64_t pos = 0;
        while (j < n && v[j].s == v[i].s) {
            pos += v[j].y != 0;
            j++;
        }
        double avg_rank = ((double)(i + 1) + (double)j) / 2.0;
        rank_sum += avg_rank * (double)pos;
        i = j;
    }
    double u = rank_sum - (double)P * ((double)P + 1.0) / 2.0;
    *auc = u / ((double)P * (double)N);
done:
    free(v);
    return rc;
}

double fl_metrics_accuracy_multiclass(const float *probs, const int32_t *y, size_t n, size_t k)
{
    if (n == 0 || k == 0)
        return 0.0;
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        const float *r = probs + i * k;
        size_t best = 0;
        for (size_t j = 1; j < k; j++)
            if (r[j] > r[best])
                best = j;
        correct += (int64_t)best == (int64_t)y[i];
    }
    return (double)correct / (double)n;
}

int fl_metrics_confusion_matrix(const float *probs, const int32_t *y, size_t n, uint32_t k,
                                int sigmoid, uint64_t *conf)
{
    if (k < 2 || (sigmoid && k != 2))
        return fl_error_set(FL_EINVAL, "a confusion matrix needs k >= 2 classes (2 for a "
                            "sigmoid output), not %u", k);
    memset(conf, 0, (size_t)k * k * sizeof *conf);
    for (size_t i = 0; i < n; i++) {
        uint32_t pred = 0;
        if (y[i] < 0 || (uint32_t)y[i] >= k)
            return fl_error_set(FL_EINVAL, "example %zu has label %d, outside 0..%u", i, y[i],
                                k - 1);
        if (sigmoid) {
            pred = probs[i] >= 0.5f ? 1u : 0u;
        } else {
            const float *p = probs + i * k;
            for (uint32_t c = 1; c < k; c++)
                if (p[c] > p[pred])
                    pred = c;
        }
        conf[(size_t)y[i] * k + pred]++;
    }
    return FL_OK;
}

static double s_ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

void fl_metrics_from_confusion(const uint64_t *conf, uint32_t k, double *accuracy,
                               double *precision, double *recall, double *f1)
{
    uint64_t total = 0, correct = 0;
    double p_sum = 0, r_sum = 0, f_sum = 0;
    for (uint32_t t = 0; t < k; t++)
        for (uint32_t c = 0; c < k; c++) {
            total += conf[(size_t)t * k + c];
            if (t == c)
                correct += conf[(size_t)t * k + c];
        }
    *accuracy = s_ratio(correct, total);
    for (uint32_t c = (k == 2 ? 1u : 0u); c < k; c++) {
        uint64_t tp = conf[(size_t)c * k + c], pred = 0, actual = 0;
        double p, r;
        for (uint32_t j = 0; j < k; j++) {
            pred += conf[(size_t)j * k + c];
            actual += conf[(size_t)c * k + j];
        }
        p = s_ratio(tp, pred);
        r = s_ratio(tp, actual);
        p_sum += p;
        r_sum += r;
        f_sum += p + r > 0 ? 2.0 * p * r / (p + r) : 0.0;
    }
    if (k != 2) {
        p_sum /= k;
        r_sum /= k;
        f_sum /= k;
    }
    *precision = p_sum;
    *recall = r_sum;
    *f1 = f_sum;
}
