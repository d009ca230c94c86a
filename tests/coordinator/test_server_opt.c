/*
 * Tests for the server optimizers against hand-computed values of the
 * update rules of Reddi et al. 2021 (Alg. 2) and Hsu et al. 2019.
 */
#include <criterion/criterion.h>
#include <math.h>

#include "coordinator/fl_server_opt.h"

static fl_server_opt *s_new(fl_server_kind kind, double lr)
{
    fl_server_opt_config c = {kind, lr, 0.9, 0.9, 0.99, 1e-3};
    fl_server_opt *o = NULL;
    cr_assert_eq(fl_server_opt_new(&o, &c, 2), FL_OK, "%s", fl_error_last());
    return o;
}

Test(server_opt, fedavg_with_lr_1_returns_the_average)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDAVG, 1.0);
    float x[2] = {1.0f, -2.0f};
    const float avg[2] = {1.5f, -1.0f};
    fl_server_opt_step(o, x, avg);
    cr_assert_float_eq(x[0], 1.5f, 1e-7);
    cr_assert_float_eq(x[1], -1.0f, 1e-7);
    fl_server_opt_free(o);
}

Test(server_opt, fedavgm_accumulates_momentum)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDAVGM, 1.0);
    float x[2] = {0.0f, 0.0f};
    const float avg1[2] = {1.0f, 0.0f};
    fl_server_opt_step(o, x, avg1); /* v = 1, x = 1 */
    cr_assert_float_eq(x[0], 1.0f, 1e-6);
    {
        const float avg2[2] = {2.0f, 0.0f}; /* d = 1: v = 0.9*1 + 1 = 1.9, x = 2.9 */
        fl_server_opt_step(o, x, avg2);
    }
    cr_assert_float_eq(x[0], 2.9f, 1e-6);
    cr_assert_float_eq(x[1], 0.0f, 1e-7);
    fl_server_opt_free(o);
}

Test(server_opt, fedadam_matches_hand_computation)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDADAM, 0.1);
    float x[2] = {0.0f, 1.0f};
    const float avg[2] = {0.5f, 1.0f};
    fl_server_opt_step(o, x, avg);
    /* d = 0.5: m = 0.05, v = 0.01*0.25 = 0.0025, step = 0.1*0.05/(0.05+0.001) */
    cr_assert_float_eq(x[0], (float)(0.1 * 0.05 / (0.05 + 1e-3)), 1e-6);
    cr_assert_float_eq(x[1], 1.0f, 1e-7, "no change where the pseudo-gradient is zero");
    fl_server_opt_free(o);
}

Test(server_opt, parsing_and_validation)
{
    fl_server_kind k;
    fl_server_opt *o = NULL;
    fl_server_opt_config bad = {FL_SERVER_FEDADAM, 0.1, 0.9, 1.0, 0.99, 1e-3};
    cr_assert_eq(fl_server_opt_parse("fedadam", &k), FL_OK);
    cr_assert_eq(k, FL_SERVER_FEDADAM);
    cr_assert_str_eq(fl_server_opt_name(k), "fedadam");
    cr_assert_eq(fl_server_opt_parse("sgd", &k), FL_EINVAL);
    cr_assert_eq(fl_server_opt_new(&o, &bad, 3), FL_EINVAL);
    cr_assert_null(o);
    fl_server_opt_free(NULL);
}
