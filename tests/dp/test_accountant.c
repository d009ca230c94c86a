/*
 * Tests for the RDP accountant of the Poisson-subsampled Gaussian
 * (Mironov, Talwar & Zhang 2019) and its (epsilon, delta) conversion
 * (Balle et al. 2020 Thm 21).  Reference numbers come from closed forms
 * and from Google's dp_accounting / analytic Gaussian as cited per test.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "dp/fl_accountant.h"
#include "dp/fl_accountant_internal.h"

static double s_rel(double a, double b)
{
    return fabs(a - b) / fabs(b);
}

Test(accountant, q1_matches_gaussian_closed_form_at_integer_and_fractional_orders)
{
    /* Closed form: the Gaussian mechanism with sensitivity 1 and noise
     * sigma has RDP alpha/(2 sigma^2) (Mironov 2017, Proposition 7). */
    const double sig[] = {0.3, 0.7, 1.0, 3.0, 100.0};
    const double al[] = {1.1, 1.5, 2.0, 2.5, 5.0, 7.3, 32.0, 256.0, 1024.0};
    for (size_t i = 0; i < sizeof sig / sizeof *sig; i++)
        for (size_t k = 0; k < sizeof al / sizeof *al; k++) {
            double want = al[k] / (2 * sig[i] * sig[i]);
            cr_expect_lt(s_rel(fl_accountant_rdp(1.0, sig[i], al[k]), want), 1e-12,
                         "sigma=%g alpha=%g", sig[i], al[k]);
        }
}

Test(accountant, order_two_matches_hand_expanded_binomial)
{
    /* alpha = 2 by hand: A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/sigma^2}
     *                       = 1 + q^2 (e^{1/sigma^2} - 1),
     * so RDP(2) = log(1 + q^2 expm1(1/sigma^2)) (Mironov et al. 2019 eq. for
     * integer alpha, expanded). */
    const double qs[] = {1e-5, 1e-3, 0.01, 0.1, 0.5, 0.9};
    const double sig[] = {0.5, 1.0, 2.0, 10.0};
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++)
        for (size_t k = 0; k < sizeof sig / sizeof *sig; k++) {
            double want = log1p(qs[i] * qs[i] * expm1(1.0 / (sig[k] * sig[k])));
            cr_expect_lt(s_rel(fl_accountant_rdp(qs[i], sig[k], 2.0), want), 1e-9,
                         "q=%g sigma=%g", qs[i], sig[k]);
        }
}

Test(accountant, binomial_sum_and_fractional_series_agree_at_integer_orders)
{
    /* Two independent computations of log A_alpha: the finite binomial sum
     * (Section 3.2) and the erfc two-sided series (Section 3.3). */
    const double qs[] = {1e-5, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.9};
    const double sig[] = {0.3, 0.7, 1.1, 4.0, 30.0, 100.0};
    const double al[] = {2, 3, 5, 8, 17, 32, 100, 256};
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++)
        for (size_t j = 0; j < sizeof sig / sizeof *sig; j++)
            for (size_t k = 0; k < sizeof al / sizeof *al; k++) {
                double a = fl_accountant_log_a_int(qs[i], sig[j], al[k]);
                double b = fl_accountant_log_a_frac(qs[i], sig[j], al[k]);
                cr_expect(isfinite(a) && isfinite(b));
                /* The series is summed in log space around log A ~ 0, so
                 * its absolute rounding error is ~1e-16 per term; allow
                 * 1e-13 absolute on top of 1e-6 relative. */
                cr_expect_leq(fabs(a - b), 1e-6 * fabs(a) + 1e-13,
                              "q=%g sigma=%g alpha=%g: sum %.12g series %.12g", qs[i], sig[j],
                              al[k], a, b);
            }
}

Test(accountant, rdp_is_continuous_across_integer_orders)
{
    /* Public path: fractional series just below an integer vs the binomial
     * sum at it. */
    const double qs[] = {1e-4, 0.01, 0.2};
    const double sig[] = {0.5, 1.1, 5.0};
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 3; j++)
            for (double a = 2; a <= 11; a += 3) {
                double lo = fl_accountant_rdp(qs[i], sig[j], a - 1e-7);
                double at = fl_accountant_rdp(qs[i], sig[j], a);
                cr_expect_lt(s_rel(lo, at), 1e-5, "q=%g sigma=%g alpha=%g: %g vs %g", qs[i],
                             sig[j], a, lo, at);
            }
}

Test(accountant, rdp_increases_in_alpha_and_q_and_decreases_in_sigma)
{
    const double qs[] = {1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0};
    const double sig[] = {0.5, 0.8, 1.1, 2.0, 4.0, 10.0};
    const double al[] = {1.2, 1.5, 2.0, 2.7, 4.0, 6.5, 11, 32, 100};
    const size_t nq = 8, ns = 6, na = 9;
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < ns; j++)
            for (size_t k = 0; k < na; k++) {
                double r = fl_accountant_rdp(qs[i], sig[j], al[k]);
                cr_expect(r > 0 && isfinite(r), "q=%g s=%g a=%g r=%g", qs[i], sig[j], al[k], r);
                if (k + 1 < na)
                    cr_expect_lt(r, fl_accountant_rdp(qs[i], sig[j], al[k + 1]),
                                 "alpha: q=%g s=%g a=%g", qs[i], sig[j], al[k]);
                if (i + 1 < nq)
                    cr_expect_lt(r, fl_accountant_rdp(qs[i + 1], sig[j], al[k]),
                                 "q: q=%g s=%g a=%g", qs[i], sig[j], al[k]);
                if (j + 1 < ns)
                    cr_expect_gt(r, fl_accountant_rdp(qs[i], sig[j + 1], al[k]),
                                 "sigma: q=%g s=%g a=%g", qs[i], sig[j], al[k]);
            }
}

Test(accountant, rdp_special_values)
{
    cr_expect(isinf(fl_accountant_rdp(0.1, 0.0, 2.0)));
    cr_expect(isnan(fl_accountant_rdp(0.0, 1.0, 2.0)));
    cr_expect(isnan(fl_accountant_rdp(1.5, 1.0, 2.0)));
    cr_expect(isnan(fl_accountant_rdp(0.1, -1.0, 2.0)));
    cr_expect(isnan(fl_accountant_rdp(0.1, 1.0, 1.0)));
    cr_expect(isnan(fl_accountant_rdp(0.1, 1.0, NAN)));
}

Test(accountant, matches_dp_accounting_mnist_case)
{
    /* Reference: Google dp_accounting RDP accountant on a dense order grid,
     * quoted in the project's issue 3: q = 256/60000, sigma = 1.1,
     * 14063 steps (60 epochs), delta = 1e-5 -> epsilon 2.5967. */
    double eps = 0, order = 0;
    cr_assert_eq(fl_accountant_epsilon(256.0 / 60000.0, 1.1, 14063, 1e-5, &eps, &order), FL_OK);
    cr_expect_lt(s_rel(eps, 2.5967), 0.01, "eps %.5f (order %g)", eps, order);
    cr_expect_gt(order, 1.0);
}

Test(accountant, matches_dp_accounting_q001_sigma4_case)
{
    /* Reference: issue 3, dp_accounting RDP: q = 0.01, sigma = 4,
     * 10000 steps, delta = 1e-5 -> epsilon 1.0355. */
    double eps = 0;
    cr_assert_eq(fl_accountant_epsilon(0.01, 4.0, 10000, 1e-5, &eps, NULL), FL_OK);
    cr_expect_lt(s_rel(eps, 1.0355), 0.01, "eps %.5f", eps);
}

Test(accountant, full_batch_single_step_bounds_analytic_gaussian)
{
    /* Reference: the exact epsilon of one Gaussian mechanism with sigma = 1
     * at delta = 1e-5 is 4.3772 (Balle & Wang 2018, analytic Gaussian
     * mechanism).  RDP conversion is an upper bound, so it must not be
     * below that, and should be within 15% of it. */
    double eps = 0;
    cr_assert_eq(fl_accountant_epsilon(1.0, 1.0, 1, 1e-5, &eps, NULL), FL_OK);
    cr_expect_geq(eps, 4.3772, "eps %.5f", eps);
    cr_expect_lt(eps, 4.3772 * 1.15, "eps %.5f", eps);
}

Test(accountant, zero_steps_is_free_and_no_noise_is_infinite)
{
    double eps = -1, order = -1;
    cr_assert_eq(fl_accountant_epsilon(0.1, 1.0, 0, 1e-5, &eps, &order), FL_OK);
    cr_expect_eq(eps, 0.0);
    cr_assert_eq(fl_accountant_epsilon(0.1, 0.0, 10, 1e-5, &eps, NULL), FL_OK);
    cr_expect(isinf(eps) && eps > 0);
}

Test(accountant, epsilon_grows_with_steps_and_stays_finite_over_supported_range)
{
    const double qs[] = {1e-5, 1e-3, 0.05, 0.5, 1.0};
    const double sig[] = {0.3, 1.0, 10.0, 100.0};
    const uint64_t st[] = {1, 100, 10000, 10000000};
    const double dl[] = {1e-12, 1e-5, 1e-2};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 4; j++)
            for (size_t d = 0; d < 3; d++) {
                double prev = 0;
                for (size_t k = 0; k < 4; k++) {
                    double eps = NAN;
                    cr_assert_eq(fl_accountant_epsilon(qs[i], sig[j], st[k], dl[d], &eps, NULL),
                                 FL_OK);
                    cr_expect(isfinite(eps) && eps >= 0, "q=%g s=%g steps=%llu d=%g eps=%g",
                              qs[i], sig[j], (unsigned long long)st[k], dl[d], eps);
                    cr_expect_geq(eps, prev);
                    prev = eps;
                }
            }
}

Test(accountant, calibrated_sigma_meets_target_tightly)
{
    struct {
        double q;
        uint64_t steps;
        double eps, delta;
    } c[] = {
        {256.0 / 60000.0, 14063, 2.5, 1e-5},
        {0.01, 10000, 1.0, 1e-5},
        {0.1, 500, 8.0, 1e-6},
        {1e-4, 1000000, 0.5, 1e-9},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        double sigma = 0, e_hi = 0, e_lo = 0;
        cr_assert_eq(fl_accountant_calibrate_sigma(c[i].q, c[i].steps, c[i].eps, c[i].delta,
                                                   &sigma), FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_accountant_epsilon(c[i].q, sigma, c[i].steps, c[i].delta, &e_hi, NULL),
                     FL_OK);
        cr_assert_eq(fl_accountant_epsilon(c[i].q, sigma * 0.99, c[i].steps, c[i].delta, &e_lo,
                                           NULL), FL_OK);
        cr_expect_leq(e_hi, c[i].eps, "case %zu: sigma %g gives eps %g", i, sigma, e_hi);
        cr_expect_gt(e_lo, c[i].eps, "case %zu: 0.99 sigma %g gives eps %g", i, sigma, e_lo);
    }
}

Test(accountant, calibration_reports_unreachable_target)
{
    double sigma = 0;
    /* q = 1, 10^7 steps: even sigma = 1000 costs 5 alpha of RDP per order. */
    cr_expect_eq(fl_accountant_calibrate_sigma(1.0, 10000000, 0.01, 1e-5, &sigma), FL_ERANGE);
    cr_expect(strstr(fl_error_last(), "1000") != NULL, "message: %s", fl_error_last());
}

Test(accountant, rejects_invalid_arguments)
{
    double eps = 0, sigma = 0;
    cr_expect_eq(fl_accountant_epsilon(0.0, 1, 10, 1e-5, &eps, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon(1.5, 1, 10, 1e-5, &eps, NULL), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "1.5") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_accountant_epsilon(NAN, 1, 10, 1e-5, &eps, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon(0.1, -1, 10, 1e-5, &eps, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon(0.1, INFINITY, 10, 1e-5, &eps, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon(0.1, 1, 10, 0.0, &eps, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon(0.1, 1, 10, 1.0, &eps, NULL), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "delta") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_accountant_epsilon(0.1, 1, 10, 1e-5, NULL, NULL), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(0.1, 10, 0.0, 1e-5, &sigma), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(0.1, 10, -1.0, 1e-5, &sigma), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(0.1, 10, NAN, 1e-5, &sigma), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(0.1, 10, 1.0, 2.0, &sigma), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(2.0, 10, 1.0, 1e-5, &sigma), FL_EINVAL);
    cr_expect_eq(fl_accountant_calibrate_sigma(0.1, 10, 1.0, 1e-5, NULL), FL_EINVAL);
}

/* Phi(x) = erfc(-x/sqrt 2)/2, written out here so the defining equation of
 * the analytic Gaussian is checked by code independent of fl_accountant. */
static double s_phi(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

Test(accountant, analytic_gaussian_matches_balle_wang_reference)
{
    /* Reference: issue 3 of the project (Balle & Wang 2018 analytic
     * Gaussian, sigma = 1, one step, delta = 1e-5 -> 4.3772, 4 decimals). */
    double eps = 0;
    cr_assert_eq(fl_accountant_epsilon_exact_gaussian(1.0, 1, 1e-5, &eps), FL_OK);
    cr_expect_lt(fabs(eps - 4.3772), 5e-5, "eps %.6f", eps);
}

Test(accountant, analytic_gaussian_solves_its_defining_equation)
{
    /* Balle & Wang 2018 Thm 8: delta = Phi(-eps s + 1/(2s)) - e^eps
     * Phi(-eps s - 1/(2s)) with s = sigma/sqrt(T); plugging the returned
     * eps back in must give delta to 1e-9 relative. */
    const double sig[] = {0.5, 1, 2, 5, 10};
    const uint64_t st[] = {1, 10, 100};
    const double dl[] = {1e-5, 1e-8};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 3; j++)
            for (size_t k = 0; k < 2; k++) {
                double eps = -1;
                cr_assert_eq(fl_accountant_epsilon_exact_gaussian(sig[i], st[j], dl[k], &eps),
                             FL_OK);
                double s = sig[i] / sqrt((double)st[j]);
                double d = s_phi(-eps * s + 0.5 / s) - exp(eps) * s_phi(-eps * s - 0.5 / s);
                cr_expect_lt(s_rel(d, dl[k]), 1e-9, "sigma=%g T=%llu delta=%g: eps %.12g "
                             "gives delta %.12g", sig[i], (unsigned long long)st[j], dl[k],
                             eps, d);
            }
}

Test(accountant, rdp_with_q1_is_never_below_analytic_gaussian)
{
    /* The RDP conversion is an upper bound on the exact epsilon (Balle et
     * al. 2020 Thm 21 is sound), so over this grid it can never be below
     * Balle & Wang's exact value. */
    const double sig[] = {0.5, 1, 2, 5, 10};
    const uint64_t st[] = {1, 10, 100};
    const double dl[] = {1e-5, 1e-8};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 3; j++)
            for (size_t k = 0; k < 2; k++) {
                double ex = 0, rdp = 0;
                cr_assert_eq(fl_accountant_epsilon_exact_gaussian(sig[i], st[j], dl[k], &ex),
                             FL_OK);
                cr_assert_eq(fl_accountant_epsilon(1.0, sig[i], st[j], dl[k], &rdp, NULL),
                             FL_OK);
                cr_expect_geq(rdp, ex, "sigma=%g T=%llu delta=%g: rdp %.6f exact %.6f",
                              sig[i], (unsigned long long)st[j], dl[k], rdp, ex);
            }
}

Test(accountant, analytic_gaussian_special_cases_and_errors)
{
    double eps = -1;
    cr_assert_eq(fl_accountant_epsilon_exact_gaussian(1.0, 0, 1e-5, &eps), FL_OK);
    cr_expect_eq(eps, 0.0);
    /* sigma = 1000, one step: delta(0) = 1 - 2 Phi(-1/2000) ~ 4e-4 > 1e-5,
     * so eps is positive but tiny; at delta = 0.5 it is exactly 0. */
    cr_assert_eq(fl_accountant_epsilon_exact_gaussian(1000.0, 1, 0.5, &eps), FL_OK);
    cr_expect_eq(eps, 0.0);
    cr_expect_eq(fl_accountant_epsilon_exact_gaussian(0.0, 1, 1e-5, &eps), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon_exact_gaussian(NAN, 1, 1e-5, &eps), FL_EINVAL);
    cr_expect_eq(fl_accountant_epsilon_exact_gaussian(1.0, 1, 0.0, &eps), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "delta") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_accountant_epsilon_exact_gaussian(1.0, 1, 1e-5, NULL), FL_EINVAL);
}
