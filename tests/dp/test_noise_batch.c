/*
 * Tests for prepared noise batches (dp/fl_noise: fl_noise_batch_*): the
 * released values have the discrete Gaussian's law (grid membership,
 * mean and variance against closed forms, chi-square against the normal
 * cell masses), the randomized rounding has the Bernoulli(frac) law
 * (binomial bounds, including the exact tie case drawn at apply time),
 * the one-time-pad rules (a batch is applied at most once, cannot be
 * refilled before it is applied, and only for the stddev and size it was
 * filled for), wiping after apply, errors that leave the vector and the
 * batch unchanged, and filling on another thread.  Thresholds: 5 standard
 * errors; chi-square at alpha = 0.001.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_noise.h"
#include "dp/fl_noise_internal.h"

#define NS 1000000

static double s_normal_cdf(double x, double s)
{
    return 0.5 * erfc(-x / (s * sqrt(2.0)));
}

static int s_all_zero(const void *p, size_t bytes)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++)
        if (c[i])
            return 0;
    return 1;
}

Test(noise_batch, applied_to_zeros_gives_grid_multiples_with_variance_stddev_squared)
{
    /* Rounding 0 is exact, so the output is gamma Z.  Var(N_Z(0, s^2)) =
     * s^2 to within e^-(2 pi^2 s^2) at s >= 2^28 (CKS 2020), so the
     * normal-sample SEs apply: mean sd/sqrt(n), variance sd^2 sqrt(2/(n-1)). */
    const double sd = 1.3;
    const double g = fl_noise_grid(sd);
    fl_noise_batch *b = NULL;
    double *v = calloc(NS, sizeof *v);
    cr_assert(v);
    cr_assert_eq(fl_noise_batch_new(&b, NS), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, NS, sd), FL_OK, "%s", fl_error_last());
    double m = 0, s2 = 0;
    for (size_t i = 0; i < NS; i++) {
        double k = v[i] / g;
        cr_assert_eq(k, nearbyint(k), "v[%zu] = %a is not on the grid %a", i, v[i], g);
        m += v[i];
    }
    m /= NS;
    for (size_t i = 0; i < NS; i++)
        s2 += (v[i] - m) * (v[i] - m);
    s2 /= NS - 1;
    cr_expect_lt(fabs(m), 5 * sd / sqrt(NS), "mean %g", m);
    cr_expect_lt(fabs(s2 - sd * sd), 5 * sd * sd * sqrt(2.0 / (NS - 1)), "variance %g vs %g",
                 s2, sd * sd);
    fl_noise_batch_free(b);
    free(v);
}

Test(noise_batch, passes_chi_square_against_normal_cell_masses_at_0001)
{
    /* 40 cells of equal N(0, sd^2) probability; the discrete Gaussian's
     * cell masses equal the normal ones to < 1e-15 at s ~ 2^28 (Euler-
     * Maclaurin, as in test_noise.c).  df = 39, chi^2_{0.999}(39) = 72.055
     * (NIST/SEMATECH e-Handbook 1.3.6.7.4). */
    const double sd = 0.7;
    fl_noise_batch *b = NULL;
    double *v = calloc(NS, sizeof *v);
    cr_assert(v);
    cr_assert_eq(fl_noise_batch_new(&b, NS), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK);
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, NS, sd), FL_OK);
    double q[41], cnt[40] = {0};
    q[0] = -INFINITY;
    q[40] = INFINITY;
    for (int c = 1; c < 40; c++) { /* normal quantile of c/40 by bisection on erfc */
        double lo = -6, hi = 6;
        for (int it = 0; it < 100; it++) {
            double mid = 0.5 * (lo + hi);
            if (s_normal_cdf(mid, 1.0) < c / 40.0)
                lo = mid;
            else
                hi = mid;
        }
        q[c] = sd * lo;
    }
    for (size_t i = 0; i < NS; i++) {
        int c = 0;
        while (c < 39 && v[i] > q[c + 1])
            c++;
        cnt[c] += 1;
    }
    double chi = 0, e = NS / 40.0;
    for (int c = 0; c < 40; c++)
        chi += (cnt[c] - e) * (cnt[c] - e) / e;
    cr_expect_lt(chi, 72.055, "chi^2 = %g on 39 df", chi);
    fl_noise_batch_free(b);
    free(v);
}

/* Rounds x0 (repeated n times) with a fresh batch and returns the fraction
 * of coordinates rounded up (R = floor + 1), reading Z from the batch
 * before apply so the rounding can be isolated: R = out/gamma - Z. */
static double s_round_up_fraction(double x0, double sd, size_t n, int force_tie, uint32_t u)
{
    const double g = fl_noise_grid(sd);
    fl_noise_batch *b = NULL;
    const int64_t *z = NULL;
    const uint32_t *w = NULL;
    size_t nb = 0;
    double *v = malloc(n * sizeof *v);
    int64_t *zc = malloc(n * sizeof *zc);
    cr_assert(v && zc);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK);
    if (force_tie)
        cr_assert_eq(fl_noise_batch_set_round_words(b, u), FL_OK);
    fl_noise_batch_buffers(b, &z, &w, &nb);
    cr_assert_eq(nb, n);
    memcpy(zc, z, n * sizeof *zc);
    for (size_t i = 0; i < n; i++)
        v[i] = x0;
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, n, sd), FL_OK);
    double fl = floor(x0 / g);
    size_t up = 0;
    for (size_t i = 0; i < n; i++) {
        double r = v[i] / g - (double)zc[i];
        cr_assert(r == fl || r == fl + 1, "R = %.17g, not floor %.17g or floor + 1", r, fl);
        up += r == fl + 1;
    }
    fl_noise_batch_free(b);
    free(v);
    free(zc);
    return (double)up / (double)n;
}

Test(noise_batch, randomized_rounding_rounds_up_with_probability_frac)
{
    /* x = (k + 0.3) gamma: R = k + 1 with probability 0.3 (unbiased
     * randomized rounding), binomial SE sqrt(0.3 * 0.7 / n); and mirrored
     * for -x: R = -(k + 1) = floor(-x) with probability 0.3, i.e. R =
     * floor(-x) + 1 = -k with probability 0.7. */
    const double sd = 2.0, g = fl_noise_grid(sd);
    const size_t n = 400000;
    const double se = sqrt(0.3 * 0.7 / n);
    double p = s_round_up_fraction((12345.0 + 0.3) * g, sd, n, 0, 0);
    cr_expect_lt(fabs(p - 0.3), 5 * se, "P(up) = %g for frac 0.3", p);
    p = s_round_up_fraction(-(12345.0 + 0.3) * g, sd, n, 0, 0);
    cr_expect_lt(fabs(p - 0.7), 5 * se, "P(up) = %g for -x, frac 0.7", p);
    /* A value on the grid is never moved by the rounding. */
    p = s_round_up_fraction(77.0 * g, sd, 1000, 0, 0);
    cr_expect_eq(p, 0.0);
}

Test(noise_batch, rounding_tie_is_resolved_with_fresh_bits_at_apply)
{
    /* frac = 1/4 + 2^-34: its top 32 bits are 2^30 and the rest is 1/4 of
     * one 2^-32 unit.  With every rounding word forced to 2^30 (a tie),
     * the exact Bernoulli must round up with probability 1/4 (drawn at
     * apply time, on this thread).  Binomial SE sqrt(3/16 / n). */
    const double sd = 1.0, g = fl_noise_grid(sd);
    const size_t n = 200000;
    double p = s_round_up_fraction((5.0 + 0.25 + 0x1p-34) * g, sd, n, 1, 1u << 30);
    cr_expect_lt(fabs(p - 0.25), 5 * sqrt(0.1875 / n), "P(up) = %g on a tie, want 1/4", p);
    /* Word just below / above the fraction's top bits: always up / never. */
    p = s_round_up_fraction((5.0 + 0.25 + 0x1p-34) * g, sd, 1000, 1, (1u << 30) - 1);
    cr_expect_eq(p, 1.0);
    p = s_round_up_fraction((5.0 + 0.25 + 0x1p-34) * g, sd, 1000, 1, (1u << 30) + 1);
    cr_expect_eq(p, 0.0);
}

Test(noise_batch, second_apply_is_refused_and_leaves_the_vector_unchanged)
{
    fl_noise_batch *b = NULL;
    double v[16] = {0}, w[16];
    cr_assert_eq(fl_noise_batch_new(&b, 16), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 1.0), FL_OK);
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, 16, 1.0), FL_OK);
    memcpy(w, v, sizeof v);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 16, 1.0), FL_ESTATE);
    cr_expect(strstr(fl_error_last(), "already applied") != NULL, "%s", fl_error_last());
    cr_expect_eq(memcmp(v, w, sizeof v), 0);
    /* Refilling makes it usable again, once. */
    cr_assert_eq(fl_noise_batch_fill(b, 1.0), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 16, 1.0), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 16, 1.0), FL_ESTATE);
    fl_noise_batch_free(b);
}

Test(noise_batch, apply_before_fill_and_refill_before_apply_are_refused)
{
    fl_noise_batch *b = NULL;
    double v[4] = {1, 2, 3, 4};
    cr_assert_eq(fl_noise_batch_new(&b, 4), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 4, 1.0), FL_ESTATE);
    cr_expect(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 4);
    cr_assert_eq(fl_noise_batch_fill(b, 1.0), FL_OK);
    const int64_t *z = NULL;
    const uint32_t *u = NULL;
    size_t n = 0;
    fl_noise_batch_buffers(b, &z, &u, &n);
    int64_t z0[4];
    memcpy(z0, z, sizeof z0);
    cr_expect_eq(fl_noise_batch_fill(b, 1.0), FL_ESTATE);
    cr_expect(strstr(fl_error_last(), "never applied") != NULL, "%s", fl_error_last());
    cr_expect_eq(memcmp(z, z0, sizeof z0), 0, "a refused refill must not redraw");
    cr_expect_eq(fl_noise_batch_fill(b, 2.0), FL_ESTATE);
    fl_noise_batch_free(b);
}

Test(noise_batch, stddev_or_size_mismatch_is_refused_and_batch_stays_filled)
{
    fl_noise_batch *b = NULL;
    double v[8] = {0};
    cr_assert_eq(fl_noise_batch_new(&b, 8), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 1.5), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 8, 1.5 * (1 + 1e-15)), FL_EINVAL);
    cr_expect(strstr(fl_error_last(), "filled for stddev") != NULL, "%s", fl_error_last());
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 8, NAN), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 7, 1.5), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_apply_f64(b, NULL, 8, 1.5), FL_EINVAL);
    for (size_t i = 0; i < 8; i++)
        cr_expect_eq(v[i], 0.0);
    /* nothing was released, so the one use is still available */
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 8, 1.5), FL_OK);
    int moved = 0;
    for (size_t i = 0; i < 8; i++)
        moved += v[i] != 0.0;
    cr_expect_gt(moved, 0);
    fl_noise_batch_free(b);
}

Test(noise_batch, out_of_range_input_leaves_vector_unchanged_and_batch_filled)
{
    /* stddev 1e-30: gamma ~ 2^-128, so 1.0 is 2^128 grid steps > 2^52
     * (the FL_ERANGE rule of fl_noise_add_gaussian_f64). */
    fl_noise_batch *b = NULL;
    double v[3] = {0.0, 1.0, 0.0};
    cr_assert_eq(fl_noise_batch_new(&b, 3), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 1e-30), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 3, 1e-30), FL_ERANGE);
    cr_expect(strstr(fl_error_last(), "index 1") != NULL, "%s", fl_error_last());
    cr_expect(v[0] == 0.0 && v[1] == 1.0 && v[2] == 0.0);
    double nanv[3] = {0.0, 0.0, NAN};
    cr_expect_eq(fl_noise_batch_apply_f64(b, nanv, 3, 1e-30), FL_ERANGE);
    v[1] = 0.0;
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 3, 1e-30), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 3, 1e-30), FL_ESTATE);
    fl_noise_batch_free(b);
}

Test(noise_batch, buffers_are_wiped_after_apply)
{
    const size_t n = 5000;
    fl_noise_batch *b = NULL;
    const int64_t *z = NULL;
    const uint32_t *u = NULL;
    size_t nb = 0;
    double *v = calloc(n, sizeof *v);
    cr_assert(v);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 3.0), FL_OK);
    fl_noise_batch_buffers(b, &z, &u, &nb);
    cr_expect_not(s_all_zero(z, n * sizeof *z), "fill drew nothing");
    cr_expect_not(s_all_zero(u, n * sizeof *u), "fill drew no rounding words");
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, n, 3.0), FL_OK);
    fl_noise_batch_buffers(b, &z, &u, &nb);
    cr_expect(s_all_zero(z, n * sizeof *z), "Z not wiped after apply");
    cr_expect(s_all_zero(u, n * sizeof *u), "rounding words not wiped after apply");
    fl_noise_batch_free(b);
    free(v);
}

Test(noise_batch, zero_stddev_is_the_identity_and_still_consumes)
{
    fl_noise_batch *b = NULL;
    double v[4] = {0.1, -2.5, 1e300, 3.0}, w[4];
    memcpy(w, v, sizeof v);
    cr_assert_eq(fl_noise_batch_new(&b, 4), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 0.0), FL_OK);
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, 4, 0.0), FL_OK);
    cr_expect_eq(memcmp(v, w, sizeof v), 0);
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 4, 0.0), FL_ESTATE);
    fl_noise_batch_free(b);
}

Test(noise_batch, argument_checks)
{
    fl_noise_batch *b = (fl_noise_batch *)0x1;
    cr_expect_eq(fl_noise_batch_new(NULL, 3), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_new(&b, SIZE_MAX), FL_ENOMEM);
    cr_expect_null(b);
    cr_assert_eq(fl_noise_batch_new(&b, 3), FL_OK);
    cr_expect_eq(fl_noise_batch_fill(b, -1.0), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_fill(b, INFINITY), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_fill(b, NAN), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_fill(NULL, 1.0), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_apply_f64(NULL, NULL, 0, 1.0), FL_EINVAL);
    /* a failed fill leaves it unfilled */
    double v[3] = {0};
    cr_expect_eq(fl_noise_batch_apply_f64(b, v, 3, 1.0), FL_ESTATE);
    fl_noise_batch_free(b);
    fl_noise_batch_free(NULL);
    /* n = 0: fill and apply are trivial but the one-use rule holds */
    cr_assert_eq(fl_noise_batch_new(&b, 0), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 1.0), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, NULL, 0, 1.0), FL_OK);
    cr_expect_eq(fl_noise_batch_apply_f64(b, NULL, 0, 1.0), FL_ESTATE);
    fl_noise_batch_free(b);
}

typedef struct {
    fl_noise_batch *b;
    double sd;
    int rc;
} s_fill_arg;

static void *s_fill_thread(void *p)
{
    s_fill_arg *a = p;
    a->rc = fl_noise_batch_fill(a->b, a->sd);
    fl_noise_cache_free(); /* this thread's tables */
    return NULL;
}

Test(noise_batch, filled_on_another_thread_applies_with_the_same_law)
{
    /* Non-zero input x0 off the grid: E = x0 (unbiased rounding), Var =
     * sd^2 + Var(R) gamma^2 (<= gamma^2 / 4, negligible). */
    const double sd = 0.9, x0 = 3.3;
    const size_t n = 500000;
    fl_noise_batch *b = NULL;
    double *v = malloc(n * sizeof *v);
    pthread_t th;
    cr_assert(v);
    for (size_t i = 0; i < n; i++)
        v[i] = x0;
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    s_fill_arg a = {b, sd, -99};
    cr_assert_eq(pthread_create(&th, NULL, s_fill_thread, &a), 0);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(a.rc, FL_OK);
    cr_assert_eq(fl_noise_batch_apply_f64(b, v, n, sd), FL_OK);
    double m = 0, s2 = 0;
    for (size_t i = 0; i < n; i++)
        m += v[i];
    m /= n;
    for (size_t i = 0; i < n; i++)
        s2 += (v[i] - m) * (v[i] - m);
    s2 /= n - 1;
    cr_expect_lt(fabs(m - x0), 5 * sd / sqrt(n), "mean %g", m);
    cr_expect_lt(fabs(s2 - sd * sd), 5 * sd * sd * sqrt(2.0 / (n - 1)), "variance %g", s2);
    fl_noise_batch_free(b);
    free(v);
}

/* Copies the filled noise of src into dst (both filled for the same stddev
 * and size), through the test hook, so two release paths can be compared
 * on the same Z and rounding words. */
static void s_copy_noise(fl_noise_batch *dst, const fl_noise_batch *src)
{
    const int64_t *zs, *zd;
    const uint32_t *us, *ud;
    size_t ns, nd;
    fl_noise_batch_buffers(src, &zs, &us, &ns);
    fl_noise_batch_buffers(dst, &zd, &ud, &nd);
    cr_assert_eq(ns, nd);
    memcpy((int64_t *)zd, zs, ns * sizeof *zs);
    memcpy((uint32_t *)ud, us, ns * sizeof *us);
}

Test(noise_batch, fused_float_release_equals_double_apply_then_scale_bit_for_bit)
{
    /* The second implementation is the unfused path DP-SGD used before:
     * widen the float sum to double, fl_noise_batch_apply_f64, multiply by
     * the public scale 1/(qN), round to float.  Inputs span signs, grid
     * fractions and magnitudes up to 1e6 (2^48 grid steps at sd 0.5). */
    const size_t n = 100003;
    const double sd = 0.5, scale = 1.0 / 256.0;
    fl_noise_batch *a = NULL, *b = NULL;
    float *sum = malloc(n * sizeof *sum), *out = malloc(n * sizeof *out);
    double *v = malloc(n * sizeof *v);
    cr_assert(sum && out && v);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double mag = ldexp((double)(x >> 11) * 0x1p-53, (int)(x % 41) - 20);
        sum[i] = (float)((x & 1) ? -mag : mag);
        v[i] = (double)sum[i];
    }
    cr_assert_eq(fl_noise_batch_new(&a, n), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(a, sd), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK);
    s_copy_noise(b, a);
    cr_assert_eq(fl_noise_batch_apply_f64(a, v, n, sd), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_noise_batch_release_f32(b, sum, n, sd, scale, out), FL_OK, "%s",
                 fl_error_last());
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        float want = (float)(v[i] * scale);
        differ += memcmp(&want, &out[i], sizeof want) != 0;
    }
    cr_expect_eq(differ, 0, "%zu of %zu outputs differ from apply_f64 + scale", differ, n);
    cr_expect(s_all_zero(sum, n * sizeof *sum), "the sum was not wiped");
    const int64_t *z;
    const uint32_t *u;
    size_t nb;
    fl_noise_batch_buffers(b, &z, &u, &nb);
    cr_expect(s_all_zero(z, n * sizeof *z) && s_all_zero(u, n * sizeof *u),
              "the batch was not wiped");
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, n, sd, scale, out), FL_ESTATE,
                 "a consumed batch must be refused");
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], 0.0f, "refused release must zero out (index %zu)", i);
    fl_noise_batch_free(a);
    fl_noise_batch_free(b);
    free(sum);
    free(out);
    free(v);
}

Test(noise_batch, fused_release_errors_leave_sum_and_batch_unchanged)
{
    fl_noise_batch *b = NULL;
    float sum[3] = {0.25f, 1.0f, -0.5f}, out[3] = {7.0f, 7.0f, 7.0f};
    cr_assert_eq(fl_noise_batch_new(&b, 3), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, 1e-30), FL_OK);
    /* 1.0 is 2^128 grid steps at sd 1e-30: FL_ERANGE naming the index */
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, 3, 1e-30, 1.0, out), FL_ERANGE);
    cr_expect(strstr(fl_error_last(), "index 0") != NULL, "%s", fl_error_last());
    cr_expect(sum[0] == 0.25f && sum[1] == 1.0f && sum[2] == -0.5f, "sum changed on error");
    cr_expect(out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.0f, "out not zeroed on error");
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, 2, 1e-30, 1.0, out), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, 3, 2e-30, 1.0, out), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, 3, 1e-30, INFINITY, out), FL_EINVAL);
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, 3, 1e-30, 1.0, NULL), FL_EINVAL);
    float zero[3] = {0.0f, 0.0f, 0.0f};
    /* still filled: one valid release succeeds, then it is consumed */
    cr_expect_eq(fl_noise_batch_release_f32(b, zero, 3, 1e-30, 1.0, out), FL_OK, "%s",
                 fl_error_last());
    cr_expect_eq(fl_noise_batch_release_f32(b, zero, 3, 1e-30, 1.0, out), FL_ESTATE);
    fl_noise_batch_free(b);
}
