/* Tests for fl_metrics: hand-computed confusion counts and ratios, ROC AUC
 * on small hand-worked examples (with ties), multi-class accuracy. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "nn/fl_metrics.h"

Test(metrics, confusion_counts_match_hand_count)
{
    const float p[] = {0.9f, 0.2f, 0.6f, 0.4f, 0.5f, 0.1f};
    const int32_t y[] = {1, 1, 0, 0, 1, 0};
    fl_confusion c;
    fl_metrics_confusion(p, y, 6, 0.5f, &c);
    /* >= 0.5: 0.9(y1) tp, 0.6(y0) fp, 0.5(y1) tp; below: 0.2(y1) fn, 0.4 tn, 0.1 tn */
    cr_assert_eq(c.tp, 2);
    cr_assert_eq(c.fp, 1);
    cr_assert_eq(c.tn, 2);
    cr_assert_eq(c.fn, 1);
    cr_assert_float_eq(fl_metrics_accuracy(&c), 4.0 / 6.0, 1e-12);
    cr_assert_float_eq(fl_metrics_precision(&c), 2.0 / 3.0, 1e-12);
    cr_assert_float_eq(fl_metrics_recall(&c), 2.0 / 3.0, 1e-12);
    cr_assert_float_eq(fl_metrics_f1(&c), 2.0 / 3.0, 1e-12);
}

Test(metrics, precision_recall_f1_asymmetric_case)
{
    fl_confusion c = {.tp = 3, .fp = 1, .tn = 5, .fn = 3};
    cr_assert_float_eq(fl_metrics_accuracy(&c), 8.0 / 12.0, 1e-12);
    cr_assert_float_eq(fl_metrics_precision(&c), 0.75, 1e-12);
    cr_assert_float_eq(fl_metrics_recall(&c), 0.5, 1e-12);
    cr_assert_float_eq(fl_metrics_f1(&c), 0.6, 1e-12); /* 2*.75*.5/1.25 */
}

Test(metrics, degenerate_ratios_are_zero)
{
    fl_confusion none = {0, 0, 0, 0};
    cr_assert_eq(fl_metrics_accuracy(&none), 0.0);
    fl_confusion no_pred = {.tp = 0, .fp = 0, .tn = 4, .fn = 2};
    cr_assert_eq(fl_metrics_precision(&no_pred), 0.0);
    cr_assert_eq(fl_metrics_recall(&no_pred), 0.0);
    cr_assert_eq(fl_metrics_f1(&no_pred), 0.0);
    fl_confusion no_pos = {.tp = 0, .fp = 3, .tn = 1, .fn = 0};
    cr_assert_eq(fl_metrics_recall(&no_pos), 0.0);
}

Test(metrics, auc_hand_worked_example)
{
    const float s[] = {0.1f, 0.4f, 0.35f, 0.8f};
    const int32_t y[] = {0, 0, 1, 1};
    double auc = -1;
    cr_assert_eq(fl_metrics_roc_auc(s, y, 4, &auc), FL_OK);
    /* pairs (pos,neg): (.35,.1)1 (.35,.4)0 (.8,.1)1 (.8,.4)1 -> 3/4 */
    cr_assert_float_eq(auc, 0.75, 1e-12);
}

Test(metrics, auc_counts_ties_as_half)
{
    const float s[] = {0.5f, 0.5f, 0.5f, 0.2f, 0.9f};
    const int32_t y[] = {1, 0, 0, 0, 1};
    double auc = -1;
    cr_assert_eq(fl_metrics_roc_auc(s, y, 5, &auc), FL_OK);
    /* pos .5 vs negs {.5,.5,.2}: 1/2+1/2+1 = 2; pos .9: 3 -> 5/6 */
    cr_assert_float_eq(auc, 5.0 / 6.0, 1e-12);

    const float all_same[] = {0.3f, 0.3f, 0.3f, 0.3f};
    const int32_t y2[] = {1, 0, 1, 0};
    cr_assert_eq(fl_metrics_roc_auc(all_same, y2, 4, &auc), FL_OK);
    cr_assert_float_eq(auc, 0.5, 1e-12);
}

Test(metrics, auc_perfect_and_inverse_ranking)
{
    const float s[] = {0.1f, 0.2f, 0.3f, 0.7f, 0.8f, 0.9f};
    const int32_t up[] = {0, 0, 0, 1, 1, 1};
    const int32_t down[] = {1, 1, 1, 0, 0, 0};
    double auc = -1;
    cr_assert_eq(fl_metrics_roc_auc(s, up, 6, &auc), FL_OK);
    cr_assert_float_eq(auc, 1.0, 1e-12);
    cr_assert_eq(fl_metrics_roc_auc(s, down, 6, &auc), FL_OK);
    cr_assert_float_eq(auc, 0.0, 1e-12);
}

Test(metrics, auc_rejects_one_class_and_bad_labels)
{
    const float s[] = {0.1f, 0.2f, 0.3f};
    const int32_t ones[] = {1, 1, 1};
    const int32_t zeros[] = {0, 0, 0};
    const int32_t bad[] = {0, 2, 1};
    double auc = 0;
    cr_assert_eq(fl_metrics_roc_auc(s, ones, 3, &auc), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "no negative"));
    cr_assert_eq(fl_metrics_roc_auc(s, zeros, 3, &auc), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "no positive"));
    cr_assert_eq(fl_metrics_roc_auc(s, bad, 3, &auc), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "y[1]"));
    cr_assert_eq(fl_metrics_roc_auc(s, ones, 0, &auc), FL_EINVAL);
}

Test(metrics, multiclass_accuracy_uses_argmax)
{
    const float p[] = {0.7f, 0.2f, 0.1f,  /* 0 */
                       0.1f, 0.3f, 0.6f,  /* 2 */
                       0.2f, 0.5f, 0.3f,  /* 1 */
                       0.4f, 0.4f, 0.2f}; /* tie -> 0 */
    const int32_t y[] = {0, 2, 0, 0};
    cr_assert_float_eq(fl_metrics_accuracy_multiclass(p, y, 4, 3), 0.75, 1e-12);
    cr_assert_eq(fl_metrics_accuracy_multiclass(p, y, 0, 3), 0.0);
}

/* The K x K matrix of a sigmoid model must agree with the binary counts
 * and ratios computed by fl_metrics_confusion and its ratio functions. */
Test(metrics, confusion_matrix_of_a_sigmoid_agrees_with_binary_counts)
{
    const float p[] = {0.9f, 0.2f, 0.5f, 0.49f, 0.7f, 0.1f, 0.8f};
    const int32_t y[] = {1, 0, 0, 1, 1, 0, 0};
    uint64_t m[4];
    fl_confusion c;
    double acc, prec, rec, f1;
    cr_assert_eq(fl_metrics_confusion_matrix(p, y, 7, 2, 1, m), FL_OK);
    fl_metrics_confusion(p, y, 7, 0.5f, &c);
    cr_assert_eq(m[0], c.tn);
    cr_assert_eq(m[1], c.fp);
    cr_assert_eq(m[2], c.fn);
    cr_assert_eq(m[3], c.tp);
    fl_metrics_from_confusion(m, 2, &acc, &prec, &rec, &f1);
    cr_assert_float_eq(acc, fl_metrics_accuracy(&c), 1e-15);
    cr_assert_float_eq(prec, fl_metrics_precision(&c), 1e-15);
    cr_assert_float_eq(rec, fl_metrics_recall(&c), 1e-15);
    cr_assert_float_eq(f1, fl_metrics_f1(&c), 1e-15);
}

/* scikit-learn's documented example: y_true = [0, 1, 2, 0, 1, 2],
 * y_pred = [0, 2, 1, 0, 0, 1] gives macro precision 0.22..., recall
 * 0.33... and F1 0.26... (precision_score / recall_score / f1_score with
 * average='macro'). */
Test(metrics, macro_averages_match_scikit_learn_documentation)
{
    const int32_t y[] = {0, 1, 2, 0, 1, 2};
    const int pred[] = {0, 2, 1, 0, 0, 1};
    float p[18] = {0};
    uint64_t m[9];
    double acc, prec, rec, f1;
    for (int i = 0; i < 6; i++)
        p[i * 3 + pred[i]] = 1.0f;
    cr_assert_eq(fl_metrics_confusion_matrix(p, y, 6, 3, 0, m), FL_OK);
    fl_metrics_from_confusion(m, 3, &acc, &prec, &rec, &f1);
    cr_assert_float_eq(acc, 2.0 / 6.0, 1e-12);
    cr_assert_float_eq(prec, 2.0 / 9.0, 1e-12);
    cr_assert_float_eq(rec, 1.0 / 3.0, 1e-12);
    cr_assert_float_eq(f1, 0.26666666666666666, 1e-12);
    {
        const int32_t bad[] = {0, 3};
        cr_assert_eq(fl_metrics_confusion_matrix(p, bad, 2, 3, 0, m), FL_EINVAL);
        cr_assert(strstr(fl_error_last(), "example 1"));
    }
    cr_assert_eq(fl_metrics_confusion_matrix(p, y, 6, 3, 1, m), FL_EINVAL, "sigmoid needs k=2");
}
