/* Tests for fl_fedavg: the sample-weighted average against hand-computed
 * values, order independence, and its error states. */
#include <criterion/criterion.h>
#include <string.h>

#include "coordinator/fl_fedavg.h"

/* Three nodes, weights 1, 2, 5 (total 8):
 *   x0: (1*1 + 2*3 + 5*(-1)) / 8 = 2/8   = 0.25
 *   x1: (1*2 + 2*0 + 5*4)    / 8 = 22/8  = 2.75
 *   x2: (1*(-8) + 2*4 + 5*0.5)/ 8 = 2.5/8 = 0.3125
 * All exactly representable, so the result is compared exactly. */
static const float s_v[3][3] = {{1.0f, 2.0f, -8.0f}, {3.0f, 0.0f, 4.0f}, {-1.0f, 4.0f, 0.5f}};
static const uint64_t s_w[3] = {1, 2, 5};
static const float s_want[3] = {0.25f, 2.75f, 0.3125f};

Test(fedavg, weighted_average_equals_the_hand_computed_value)
{
    fl_fedavg *a = NULL;
    float out[3];
    cr_assert_eq(fl_fedavg_new(&a, 3), FL_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fl_fedavg_add(a, s_v[i], s_w[i]), FL_OK);
    cr_assert_eq(fl_fedavg_count(a), 3u);
    cr_assert_eq(fl_fedavg_total_weight(a), 8u);
    cr_assert_eq(fl_fedavg_result(a, out), FL_OK);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(out[k], s_want[k], "x%d = %.9g, want %.9g", k, (double)out[k],
                     (double)s_want[k]);
    fl_fedavg_free(a);
}

Test(fedavg, order_of_adds_does_not_matter)
{
    static const int perm[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                   {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int p = 0; p < 6; p++) {
        fl_fedavg *a = NULL;
        float out[3];
        cr_assert_eq(fl_fedavg_new(&a, 3), FL_OK);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(fl_fedavg_add(a, s_v[perm[p][i]], s_w[perm[p][i]]), FL_OK);
        cr_assert_eq(fl_fedavg_result(a, out), FL_OK);
        cr_assert_arr_eq(out, s_want, sizeof out, "permutation %d", p);
        fl_fedavg_free(a);
    }
}

/* Values whose float sum would lose the small term: 1e8 + 1 + (-1e8) in
 * float is 0, in double 1; averaged over weight 3 that is 1/3. */
Test(fedavg, accumulates_without_float_cancellation)
{
    fl_fedavg *a = NULL;
    const float big = 1e8f, one = 1.0f, nbig = -1e8f;
    float out;
    cr_assert_eq(fl_fedavg_new(&a, 1), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, &big, 1), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, &one, 1), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, &nbig, 1), FL_OK);
    cr_assert_eq(fl_fedavg_result(a, &out), FL_OK);
    cr_assert_float_eq(out, 1.0f / 3.0f, 1e-7f);
    fl_fedavg_free(a);
}

Test(fedavg, a_single_update_is_returned_unchanged)
{
    fl_fedavg *a = NULL;
    const float v[4] = {0.1f, -3.7f, 1e-20f, 12345.678f};
    float out[4];
    cr_assert_eq(fl_fedavg_new(&a, 4), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, v, 569), FL_OK);
    cr_assert_eq(fl_fedavg_result(a, out), FL_OK);
    cr_assert_arr_eq(out, v, sizeof v);
    fl_fedavg_free(a);
}

Test(fedavg, rejects_a_zero_weight_and_leaves_the_sum_unchanged)
{
    fl_fedavg *a = NULL;
    const float v[2] = {4.0f, 8.0f}, junk[2] = {1000.0f, 1000.0f};
    float out[2];
    cr_assert_eq(fl_fedavg_new(&a, 2), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, v, 2), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, junk, 0), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), "weight"), "%s", fl_error_last());
    cr_assert_eq(fl_fedavg_count(a), 1u);
    cr_assert_eq(fl_fedavg_total_weight(a), 2u);
    cr_assert_eq(fl_fedavg_result(a, out), FL_OK);
    cr_assert_eq(out[0], 4.0f);
    cr_assert_eq(out[1], 8.0f);
    fl_fedavg_free(a);
}

Test(fedavg, result_with_nothing_added_is_a_state_error)
{
    fl_fedavg *a = NULL;
    float out[2] = {7.0f, 7.0f};
    cr_assert_eq(fl_fedavg_new(&a, 2), FL_OK);
    cr_assert_eq(fl_fedavg_result(a, out), FL_ESTATE);
    cr_assert_eq(out[0], 7.0f, "the output is untouched");
    fl_fedavg_free(a);
}

Test(fedavg, reset_forgets_everything_added)
{
    fl_fedavg *a = NULL;
    const float v[2] = {100.0f, -100.0f}, w[2] = {1.5f, 2.5f};
    float out[2];
    cr_assert_eq(fl_fedavg_new(&a, 2), FL_OK);
    cr_assert_eq(fl_fedavg_add(a, v, 10), FL_OK);
    fl_fedavg_reset(a);
    cr_assert_eq(fl_fedavg_count(a), 0u);
    cr_assert_eq(fl_fedavg_total_weight(a), 0u);
    cr_assert_eq(fl_fedavg_result(a, out), FL_ESTATE);
    cr_assert_eq(fl_fedavg_add(a, w, 3), FL_OK);
    cr_assert_eq(fl_fedavg_result(a, out), FL_OK);
    cr_assert_eq(out[0], 1.5f);
    cr_assert_eq(out[1], 2.5f);
    fl_fedavg_free(a);
}

Test(fedavg, free_of_null_is_a_no_op)
{
    fl_fedavg_free(NULL);
}
