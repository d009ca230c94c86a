/*
 * Tests for fl_noise: N(0, s^2) moments and distribution (Kolmogorov-
 * Smirnov against the exact normal CDF), uniform range/resolution, and
 * argument checks.  Thresholds: 5 standard errors, KS at alpha = 0.001.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_noise.h"

#define NS 1000000

/* Asymptotic Kolmogorov distribution critical value at alpha = 0.001:
 * K_{0.999} = 1.94947 (Smirnov 1948 table; D_crit = K / sqrt(n)). */
#define KS_K_0001 1.94947

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* KS statistic sup |F_n - F| for sorted x[0..n) against cdf. */
static double s_ks(double *x, size_t n, double (*cdf)(double, double), double par)
{
    double d = 0.0;
    qsort(x, n, sizeof *x, s_cmp);
    for (size_t i = 0; i < n; i++) {
        double f = cdf(x[i], par);
        double a = (double)(i + 1) / n - f, b = f - (double)i / n;
        if (a > d)
            d = a;
        if (b > d)
            d = b;
    }
    return d;
}

/* Normal CDF with standard deviation s: Phi(x/s) = erfc(-x/(s sqrt 2))/2. */
static double s_normal_cdf(double x, double s)
{
    return 0.5 * erfc(-x / (s * sqrt(2.0)));
}

static double s_uniform_cdf(double x, double unused)
{
    (void)unused;
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

Test(noise, gaussian_mean_and_variance_within_5se)
{
    const double sd = 1.7;
    float *v = calloc(NS, sizeof *v);
    cr_assert(v);
    cr_assert_eq(fl_noise_add_gaussian(v, NS, sd), FL_OK);
    double m = 0.0, s2 = 0.0;
    for (size_t i = 0; i < NS; i++)
        m += v[i];
    m /= NS;
    for (size_t i = 0; i < NS; i++)
        s2 += (v[i] - m) * (v[i] - m);
    s2 /= NS - 1;
    /* SE of the mean sd/sqrt(n); SE of the normal sample variance
     * sd^2 sqrt(2/(n-1)). */
    cr_expect_lt(fabs(m), 5 * sd / sqrt(NS), "mean %g", m);
    cr_expect_lt(fabs(s2 - sd * sd), 5 * sd * sd * sqrt(2.0 / (NS - 1)), "variance %g vs %g",
                 s2, sd * sd);
    free(v);
}

Test(noise, gaussian_passes_kolmogorov_smirnov_at_0001)
{
    const double sd = 0.8;
    float *v = calloc(NS, sizeof *v);
    double *x = malloc(NS * sizeof *x);
    cr_assert(v && x);
    cr_assert_eq(fl_noise_add_gaussian(v, NS, sd), FL_OK);
    for (size_t i = 0; i < NS; i++)
        x[i] = v[i];
    double d = s_ks(x, NS, s_normal_cdf, sd);
    cr_expect_lt(d, KS_K_0001 / sqrt(NS), "KS D = %g", d);
    free(v);
    free(x);
}

Test(noise, gaussian_adds_to_existing_values)
{
    const size_t n = 200000;
    float *v = malloc(n * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < n; i++)
        v[i] = 10.0f;
    cr_assert_eq(fl_noise_add_gaussian(v, n, 1.0), FL_OK);
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m += v[i];
    m /= n;
    cr_expect_lt(fabs(m - 10.0), 5.0 / sqrt(n), "mean %g", m);
    free(v);
}

Test(noise, odd_length_fills_last_element)
{
    /* The last element of an odd-length buffer must get noise too. */
    int changed = 0;
    for (int r = 0; r < 20; r++) {
        float v[3] = {0, 0, 0};
        cr_assert_eq(fl_noise_add_gaussian(v, 3, 1.0), FL_OK);
        changed += v[2] != 0.0f;
    }
    cr_expect_eq(changed, 20);
}

Test(noise, zero_stddev_leaves_buffer_unchanged)
{
    float v[5] = {1.0f, -2.5f, 0.0f, 3.25f, 1e30f};
    float w[5];
    memcpy(w, v, sizeof v);
    cr_assert_eq(fl_noise_add_gaussian(v, 5, 0.0), FL_OK);
    cr_expect_eq(memcmp(v, w, sizeof v), 0);
}

Test(noise, rejects_negative_or_non_finite_stddev)
{
    float v[4] = {0};
    cr_expect_eq(fl_noise_add_gaussian(v, 4, -1.0), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "-1") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(fl_noise_add_gaussian(v, 4, NAN), FL_EINVAL);
    cr_expect_eq(fl_noise_add_gaussian(v, 4, INFINITY), FL_EINVAL);
    cr_expect_eq(fl_noise_add_gaussian(NULL, 4, 1.0), FL_EINVAL);
    cr_expect_eq(fl_noise_add_gaussian(NULL, 0, 1.0), FL_OK);
}

Test(noise, uniform_in_unit_interval_with_53_bit_resolution)
{
    const size_t n = 100000;
    double *u = malloc(n * sizeof *u);
    cr_assert(u);
    cr_assert_eq(fl_noise_uniform(u, n), FL_OK);
    int low_bit_seen = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(u[i] >= 0.0 && u[i] < 1.0, "u=%g", u[i]);
        double k = ldexp(u[i], 53);
        cr_assert_eq(k, floor(k), "u is not a multiple of 2^-53");
        /* With 53 random bits the lowest bit is set half the time; a
         * 32-bit generator would never set it. */
        low_bit_seen |= fmod(k, 2.0) == 1.0;
    }
    cr_expect(low_bit_seen);
    free(u);
}

Test(noise, uniform_mean_and_kolmogorov_smirnov)
{
    double *u = malloc(NS * sizeof *u);
    cr_assert(u);
    cr_assert_eq(fl_noise_uniform(u, NS), FL_OK);
    double m = 0.0;
    for (size_t i = 0; i < NS; i++)
        m += u[i];
    m /= NS;
    /* U(0,1): mean 1/2, variance 1/12. */
    cr_expect_lt(fabs(m - 0.5), 5 * sqrt(1.0 / 12 / NS), "mean %g", m);
    double d = s_ks(u, NS, s_uniform_cdf, 0.0);
    cr_expect_lt(d, KS_K_0001 / sqrt(NS), "KS D = %g", d);
    free(u);
}

Test(noise, uniform_rejects_null_buffer)
{
    cr_expect_eq(fl_noise_uniform(NULL, 3), FL_EINVAL);
    cr_expect_eq(fl_noise_uniform(NULL, 0), FL_OK);
}
