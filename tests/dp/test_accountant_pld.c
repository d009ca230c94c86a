/*
 * Tests for the privacy-loss-distribution accountant (Koskela et al. 2020;
 * Doroshenko et al. 2022 connect-the-dots) and the accountant selector.
 * References: Google dp_accounting's PLD accountant as quoted in the
 * project's issue 3, Balle & Wang's analytic Gaussian (exact at q = 1),
 * and the RDP accountant as an upper bound.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "dp/fl_accountant.h"

static double s_rel(double a, double b)
{
    return fabs(a - b) / fabs(b);
}

Test(pld, matches_dp_accounting_mnist_case_within_2_percent_and_beats_rdp)
{
    /* Reference: dp_accounting PLD accountant, q = 256/60000, sigma = 1.1,
     * 14063 steps, delta = 1e-5 -> 2.3818 (issue 3).  RDP on the same case
     * is 2.5967 (issue 3); PLD is tighter, so it must come out below. */
    const double q = 256.0 / 60000.0;
    double pld = 0, rdp = 0;
    cr_assert_eq(fl_accountant_epsilon_pld(q, 1.1, 14063, 1e-5, &pld), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(fl_accountant_epsilon(q, 1.1, 14063, 1e-5, &rdp, NULL), FL_OK);
    cr_expect_lt(s_rel(pld, 2.3818), 0.02, "pld %.5f", pld);
    cr_expect_leq(pld, rdp, "pld %.5f rdp %.5f", pld, rdp);
}

Test(pld, is_below_rdp_on_q001_sigma4_case)
{
    /* Reference: issue 3 lists 1.0355 for RDP on q = 0.01, sigma = 4,
     * 10000 steps, delta = 1e-5; the PLD bound must not exceed it. */
    double pld = 0;
    cr_assert_eq(fl_accountant_epsilon_pld(0.01, 4.0, 10000, 1e-5, &pld), FL_OK, "%s",
                 fl_error_last());
    cr_expect_leq(pld, 1.0355, "pld %.5f", pld);
    cr_expect_gt(pld, 0.5, "pld %.5f implausibly small", pld);
}

Test(pld, full_batch_is_never_below_and_within_1e3_of_analytic_gaussian)
{
    /* At q = 1 the exact epsilon is known (Balle & Wang 2018 Thm 8; the
     * 4.3772 reference is checked in test_accountant).  The pessimistic
     * PLD must be >= it, and with a 1e-4 grid within 0.1% of it. */
    const struct {
        double sigma;
        uint64_t steps;
        double delta;
    } c[] = {{1, 1, 1e-5}, {2, 10, 1e-5}, {0.5, 1, 1e-8}, {5, 100, 1e-5}, {10, 100, 1e-8}};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        double pld = 0, ex = 0;
        cr_assert_eq(fl_accountant_epsilon_pld(1.0, c[i].sigma, c[i].steps, c[i].delta, &pld),
                     FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_accountant_epsilon_exact_gaussian(c[i].sigma, c[i].steps, c[i].delta,
                                                          &ex), FL_OK);
        cr_expect_geq(pld, ex, "case %zu: pld %.9f exact %.9f", i, pld, ex);
        cr_expect_lt(s_rel(pld, ex), 1e-3, "case %zu: pld %.9f exact %.9f", i, pld, ex);
    }
}

Test(pld, is_never_above_rdp_over_a_grid)
{
    /* Both are upper bounds; PLD is the tight one, so on every case it
     * must not exceed the RDP value (Zhu, Dong & Wang 2022 show RDP
     * conversion is lossy; equality would indicate a broken PLD). */
    const double qs[] = {1e-3, 0.02, 0.3};
    const double sig[] = {0.8, 2.0};
    const uint64_t st[] = {10, 1000};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 2; j++)
            for (size_t k = 0; k < 2; k++) {
                double pld = 0, rdp = 0;
                cr_assert_eq(fl_accountant_epsilon_pld(qs[i], sig[j], st[k], 1e-5, &pld),
                             FL_OK, "%s", fl_error_last());
                cr_assert_eq(fl_accountant_epsilon(qs[i], sig[j], st[k], 1e-5, &rdp, NULL),
                             FL_OK);
                cr_expect_leq(pld, rdp, "q=%g s=%g T=%llu: pld %.5f rdp %.5f", qs[i], sig[j],
                              (unsigned long long)st[k], pld, rdp);
            }
}

Test(pld, grows_with_steps_and_shrinks_with_sigma)
{
    double a = 0, b = 0, c = 0;
    cr_assert_eq(fl_accountant_epsilon_pld(0.01, 1.0, 100, 1e-5, &a), FL_OK);
    cr_assert_eq(fl_accountant_epsilon_pld(0.01, 1.0, 1000, 1e-5, &b), FL_OK);
    cr_assert_eq(fl_accountant_epsilon_pld(0.01, 2.0, 1000, 1e-5, &c), FL_OK);
    cr_expect_lt(a, b, "T=100 %.5f vs T=1000 %.5f", a, b);
    cr_expect_lt(c, b, "sigma=2 %.5f vs sigma=1 %.5f", c, b);
}

Test(pld, special_values_and_invalid_arguments)
{
    double eps = -1;
    cr_assert_eq(fl_accountant_epsilon_pld(0.1, 1.0, 0, 1e-5, &eps), FL_OK);
    cr_expect_eq(eps, 0.0);
    cr_assert_eq(fl_accountant_epsilon_pld(0.1, 0.0, 5, 1e-5, &eps), FL_OK);
    cr_expect(isinf(eps) && eps > 0);
    cr_expect_eq(fl_accountant_epsilon_pld(0.0, 1, 10, 1e-5, &eps), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon_pld(1.5, 1, 10, 1e-5, &eps), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "1.5") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_accountant_epsilon_pld(0.1, -1, 10, 1e-5, &eps), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon_pld(0.1, 1, 10, 1.0, &eps), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon_pld(0.1, 1, 10, 1e-5, NULL), FL_EINVAL);
}

Test(selector, dispatches_to_the_named_accountant)
{
    double a = 0, b = 0, c = 0, d = 0;
    cr_assert_eq(fl_accountant_epsilon_with(FL_ACCOUNTANT_RDP, 0.02, 1.2, 500, 1e-5, &a), FL_OK);
    cr_assert_eq(fl_accountant_epsilon(0.02, 1.2, 500, 1e-5, &b, NULL), FL_OK);
    cr_expect_eq(a, b);
    cr_assert_eq(fl_accountant_epsilon_with(FL_ACCOUNTANT_PLD, 0.02, 1.2, 500, 1e-5, &c), FL_OK);
    cr_assert_eq(fl_accountant_epsilon_pld(0.02, 1.2, 500, 1e-5, &d), FL_OK);
    cr_expect_eq(c, d);
    cr_expect_eq(fl_accountant_epsilon_with((fl_accountant_kind)7, 0.02, 1.2, 500, 1e-5, &a),
                 FL_EINVAL);
}

Test(selector, names_and_parsing_round_trip_and_reject_unknown)
{
    fl_accountant_kind k = FL_ACCOUNTANT_PLD;
    cr_expect_str_eq(fl_accountant_name(FL_ACCOUNTANT_RDP), "rdp");
    cr_expect_str_eq(fl_accountant_name(FL_ACCOUNTANT_PLD), "pld");
    cr_expect_str_eq(fl_accountant_name((fl_accountant_kind)0), "unknown");
    cr_assert_eq(fl_accountant_parse("rdp", &k), FL_OK);
    cr_expect_eq(k, FL_ACCOUNTANT_RDP);
    cr_assert_eq(fl_accountant_parse("pld", &k), FL_OK);
    cr_expect_eq(k, FL_ACCOUNTANT_PLD);
    cr_expect_eq(fl_accountant_parse("RDP", &k), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "RDP") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_accountant_parse("", &k), FL_EINVAL);
    cr_expect_eq(fl_accountant_parse(NULL, &k), FL_EINVAL);
    cr_expect_eq(fl_accountant_parse("pld", NULL), FL_EINVAL);
}

Test(selector, pld_calibration_meets_target_and_needs_less_noise_than_rdp)
{
    /* Calibrated sigma must meet the target, 1% less noise must miss it,
     * and since PLD epsilon <= RDP epsilon, PLD needs no more noise. */
    const double q = 256.0 / 60000.0, target = 2.5, delta = 1e-5;
    const uint64_t steps = 14063;
    double sp = 0, sr = 0, e_hi = 0, e_lo = 0;
    cr_assert_eq(fl_accountant_calibrate_sigma_with(FL_ACCOUNTANT_PLD, q, steps, target, delta,
                                                    &sp), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_accountant_calibrate_sigma_with(FL_ACCOUNTANT_RDP, q, steps, target, delta,
                                                    &sr), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_accountant_epsilon_pld(q, sp, steps, delta, &e_hi), FL_OK);
    cr_assert_eq(fl_accountant_epsilon_pld(q, sp * 0.99, steps, delta, &e_lo), FL_OK);
    cr_expect_leq(e_hi, target, "sigma %g gives %g", sp, e_hi);
    cr_expect_gt(e_lo, target, "0.99 sigma %g gives %g", sp, e_lo);
    cr_expect_leq(sp, sr, "pld sigma %g rdp sigma %g", sp, sr);
    cr_expect_eq(fl_accountant_calibrate_sigma_with((fl_accountant_kind)3, q, steps, target,
                                                    delta, &sp), FL_EINVAL);
}
