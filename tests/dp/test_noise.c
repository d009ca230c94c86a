/*
 * Tests for fl_noise: N(0, s^2) moments and distribution (Kolmogorov-
 * Smirnov against the exact normal CDF), the discrete Gaussian sampler
 * against its exact pmf (chi-square), grid membership, uniform
 * range/resolution, and argument checks.  Thresholds: 5 standard errors,
 * KS and chi-square at alpha = 0.001.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_noise.h"
#include "dp/fl_noise_internal.h"

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

/* Exact discrete Gaussian pmf P(z) = exp(-z^2/(2 s^2)) / sum_k exp(-k^2/(2 s^2)),
 * normalised numerically by direct summation over |k| <= 60 s (the terms
 * beyond are below e^-1800).  Independent of the sampler under test. */
static double s_dg_norm(double s)
{
    double sum = 0.0;
    long K = (long)ceil(60 * s);
    for (long k = -K; k <= K; k++)
        sum += exp(-(double)k * k / (2 * s * s));
    return sum;
}

Test(noise, discrete_gaussian_passes_chi_square_against_exact_pmf_at_0001)
{
    /* sigma_z = 3.7: small enough that N_Z differs visibly from a rounded
     * normal.  Cells z = -9..9 plus the two tails: 21 cells, df = 20;
     * chi^2_{0.999}(20) = 45.315 (standard table, e.g. NIST/SEMATECH
     * e-Handbook 1.3.6.7.4).  Smallest expected count: tail mass
     * P(z >= 10) ~ 3e-3, so ~3000 of 10^6 -- far above 5. */
    const double s = 3.7;
    int64_t *z = malloc(NS * sizeof *z);
    cr_assert(z);
    cr_assert_eq(fl_noise_sample_discrete_gaussian(s, z, NS), FL_OK);
    double cnt[21] = {0}, expct[21] = {0}, norm = s_dg_norm(s);
    for (size_t i = 0; i < NS; i++) {
        int64_t v = z[i];
        cnt[v < -9 ? 0 : v > 9 ? 20 : v + 10] += 1;
    }
    for (long k = -(long)ceil(60 * s); k <= (long)ceil(60 * s); k++) {
        double pk = exp(-(double)k * k / (2 * s * s)) / norm;
        expct[k < -9 ? 0 : k > 9 ? 20 : k + 10] += pk * NS;
    }
    double chi = 0.0;
    for (int c = 0; c < 21; c++)
        chi += (cnt[c] - expct[c]) * (cnt[c] - expct[c]) / expct[c];
    cr_expect_lt(chi, 45.315, "chi^2 = %g on 20 df", chi);
    free(z);
}

Test(noise, discrete_gaussian_mean_and_variance_within_5se)
{
    /* Exact moments of N_Z(0, s^2) by direct summation of the pmf: mean 0,
     * variance V = sum k^2 P(k) (slightly below s^2 for small s), fourth
     * moment M4 for the SE of the sample variance sqrt((M4 - V^2)/n). */
    const double s = 2.3;
    double norm = s_dg_norm(s), V = 0, M4 = 0;
    for (long k = -(long)ceil(60 * s); k <= (long)ceil(60 * s); k++) {
        double pk = exp(-(double)k * k / (2 * s * s)) / norm;
        V += (double)k * k * pk;
        M4 += (double)k * k * k * k * pk;
    }
    int64_t *z = malloc(NS * sizeof *z);
    cr_assert(z);
    cr_assert_eq(fl_noise_sample_discrete_gaussian(s, z, NS), FL_OK);
    double m = 0, v = 0;
    for (size_t i = 0; i < NS; i++)
        m += (double)z[i];
    m /= NS;
    for (size_t i = 0; i < NS; i++)
        v += ((double)z[i] - m) * ((double)z[i] - m);
    v /= NS - 1;
    cr_expect_lt(fabs(m), 5 * sqrt(V / NS), "mean %g", m);
    cr_expect_lt(fabs(v - V), 5 * sqrt((M4 - V * V) / NS), "variance %g vs exact %g", v, V);
    free(z);
}

Test(noise, gaussian_f64_outputs_lie_on_the_power_of_two_grid)
{
    /* The released value must be an exact multiple of gamma, whatever the
     * input: that is what removes Mironov's floating-point leak. */
    const double sd = 0.37;
    double g = fl_noise_grid(sd);
    int e = 0;
    cr_assert_eq(frexp(g, &e), 0.5, "gamma %a is not a power of two", g);
    cr_expect(sd / g >= 0x1p28 && sd / g < 0x1p29, "stddev/gamma = %g", sd / g);
    double v[1000];
    for (size_t i = 0; i < 1000; i++)
        v[i] = 0.3 + 1e-9 * (double)i; /* off-grid inputs */
    cr_assert_eq(fl_noise_add_gaussian_f64(v, 1000, sd), FL_OK);
    for (size_t i = 0; i < 1000; i++) {
        double k = v[i] / g;
        cr_assert_eq(k, floor(k), "v[%zu] = %a is not on the grid %a", i, v[i], g);
    }
}

Test(noise, gaussian_f64_mean_and_variance_within_5se)
{
    /* Randomized rounding is unbiased, so E = x0; its variance is at most
     * gamma^2/4, ~1e-17 of sd^2 here, and N_Z(0, s^2) at s >= 2^28 has
     * variance s^2 to within e^-(2 pi^2 s^2) (CKS 2020 Cor. 9 bound), so
     * the continuous-normal SEs apply. */
    const double sd = 2.5, x0 = -4.125;
    double *v = malloc(NS * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < NS; i++)
        v[i] = x0;
    cr_assert_eq(fl_noise_add_gaussian_f64(v, NS, sd), FL_OK);
    double m = 0, s2 = 0;
    for (size_t i = 0; i < NS; i++)
        m += v[i];
    m /= NS;
    for (size_t i = 0; i < NS; i++)
        s2 += (v[i] - m) * (v[i] - m);
    s2 /= NS - 1;
    cr_expect_lt(fabs(m - x0), 5 * sd / sqrt(NS), "mean %g", m);
    cr_expect_lt(fabs(s2 - sd * sd), 5 * sd * sd * sqrt(2.0 / (NS - 1)), "variance %g", s2);
    free(v);
}

Test(noise, rejects_values_too_large_for_the_grid_and_leaves_them_unchanged)
{
    /* stddev 1e-30: gamma ~ 2^-128, so 1.0 is 2^128 grid steps > 2^52. */
    float v[3] = {0.0f, 1.0f, 2.0f};
    cr_expect_eq(fl_noise_add_gaussian(v, 3, 1e-30), FL_ERANGE);
    cr_expect(strstr(fl_error_last(), "index 1") != NULL, "message: %s", fl_error_last());
    cr_expect_eq(v[0], 0.0f);
    cr_expect_eq(v[1], 1.0f);
    double d[2] = {0.0, NAN};
    cr_expect_eq(fl_noise_add_gaussian_f64(d, 2, 1.0), FL_ERANGE);
    cr_expect_eq(fl_noise_sample_discrete_gaussian(0.0, NULL, 1), FL_EINVAL);
}
