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
 * errors; chi-square at alpha = 0.001.  The SIMD fill and release paths
 * are checked bit for bit against the scalar reference on the same
 * (test-seeded) CSPRNG keystream.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
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

/* Whether a batch's secret buffers are all zero (through the test hook). */
static int s_batch_wiped(const fl_noise_batch *b)
{
    const int64_t *z;
    const uint32_t *u;
    size_t n;
    fl_noise_batch_buffers(b, &z, &u, &n);
    return s_all_zero(z, n * sizeof *z) && s_all_zero(u, n * sizeof *u);
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
    double q[41], cnt[40] = {0}, chi = 0.0, e = NS / 40.0;
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
    /* Rejected once: drawn again with a fresh batch before failing (a
     * correct sampler then fails with probability 1e-6, not 1e-3; a wrong
     * law fails both). */
    for (int attempt = 0; attempt < 2; attempt++) {
        memset(v, 0, NS * sizeof *v);
        cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK);
        cr_assert_eq(fl_noise_batch_apply_f64(b, v, NS, sd), FL_OK);
        memset(cnt, 0, sizeof cnt);
        for (size_t i = 0; i < NS; i++) {
            int c = 0;
            while (c < 39 && v[i] > q[c + 1])
                c++;
            cnt[c] += 1;
        }
        chi = 0;
        for (int c = 0; c < 40; c++)
            chi += (cnt[c] - e) * (cnt[c] - e) / e;
        if (chi < 72.055)
            break;
        if (attempt == 0)
            fprintf(stderr, "chi^2 = %g >= 72.055; drawing again once\n", chi);
    }
    cr_expect_lt(chi, 72.055, "chi^2 = %g on 39 df, twice", chi);
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
    cr_expect(s_batch_wiped(b), "the batch was not wiped");
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

/* ---- SIMD paths against the scalar reference --------------------------
 * fl_noise_test_seed makes this thread's keystream a fixed function of a
 * seed, so the same words reach both paths; fl_noise_set_simd(0) selects
 * the scalar reference.  On a CPU without the SIMD paths both runs are
 * scalar and the comparisons hold trivially (the redo counts then stay
 * 0, which is not asserted). */

static const unsigned char s_test_key[32] = {
    0x3c, 0x91, 0x5e, 0x07, 0xa2, 0x6b, 0xd4, 0x18, 0x7f, 0xe0, 0x25, 0x9a, 0x41, 0xcc,
    0x13, 0x86, 0x5d, 0xf2, 0x0b, 0x74, 0xb9, 0x2e, 0x67, 0xd1, 0x38, 0x8f, 0xa6, 0x4c,
    0x90, 0x1b, 0xe7, 0x55};

static void s_fill_seeded(fl_noise_batch *b, double sd, int simd_mode)
{
    fl_noise_set_simd(simd_mode);
    fl_noise_test_seed(s_test_key);
    int rc = fl_noise_batch_fill(b, sd);
    fl_noise_test_seed(NULL);
    fl_noise_set_simd(FL_NOISE_SIMD_BEST);
    cr_assert_eq(rc, FL_OK, "%s", fl_error_last());
}

static int s_same_noise(const fl_noise_batch *a, const fl_noise_batch *b)
{
    const int64_t *za, *zb;
    const uint32_t *ua, *ub;
    size_t na, nb;
    fl_noise_batch_buffers(a, &za, &ua, &na);
    fl_noise_batch_buffers(b, &zb, &ub, &nb);
    return na == nb && memcmp(za, zb, na * sizeof *za) == 0 &&
           memcmp(ua, ub, na * sizeof *ua) == 0;
}

Test(noise_batch, test_seed_replays_the_keystream_and_null_restores_fresh_noise)
{
    const size_t n = 5000;
    fl_noise_batch *a = NULL, *b = NULL;
    cr_assert_eq(fl_noise_batch_new(&a, n), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    s_fill_seeded(a, 1.0, FL_NOISE_SIMD_OFF);
    s_fill_seeded(b, 1.0, FL_NOISE_SIMD_OFF);
    cr_expect(s_same_noise(a, b), "the same test seed gave different noise");
    float *sum = calloc(n, sizeof *sum), *out = malloc(n * sizeof *out);
    cr_assert(sum && out);
    cr_assert_eq(fl_noise_batch_release_f32(a, sum, n, 1.0, 1.0, out), FL_OK);
    cr_assert_eq(fl_noise_batch_release_f32(b, sum, n, 1.0, 1.0, out), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(a, 1.0), FL_OK); /* unseeded again */
    cr_assert_eq(fl_noise_batch_fill(b, 1.0), FL_OK);
    cr_expect(!s_same_noise(a, b), "unseeded fills repeated (seed not cleared?)");
    fl_noise_batch_free(a);
    fl_noise_batch_free(b);
    free(sum);
    free(out);
}

/* For each SIMD mode (the best path, then at most AVX2). */
static void s_check_fill_mode(int mode)
{
    /* A SIMD block (16 coordinates with AVX-512, 8 with AVX2) is redone
     * by the scalar code when a lane hits an alias-table tie (the draw's
     * low 16 bits equal the column's threshold: probability 2^-16 per
     * base draw; the dummy outcome is never reached without one), i.e.
     * ~4.6e-5 per coordinate (3 draws): ~4.6 per 100003 coordinates and
     * ~46 per 10^6, so the 10^6 case (and, over all stddevs, the 100003
     * ones) exercise the redo, and its shifted word positions exercise
     * the blocks that straddle a keystream refill (every 4096 words).
     * Sizes around 8 and 16 check the tails. */
    static const size_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 33, 4099, 100003};
    static const double sds[] = {0.5, 1.0, 3.7, 1e-3};
    fl_noise_set_simd(mode);
    int active = fl_noise_simd_active();
    fl_noise_set_simd(FL_NOISE_SIMD_BEST);
    size_t redos0 = fl_noise_test_simd_redos();
    for (size_t k = 0; k < sizeof sds / sizeof sds[0]; k++) {
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            fl_noise_batch *a = NULL, *b = NULL;
            cr_assert_eq(fl_noise_batch_new(&a, sizes[j]), FL_OK);
            cr_assert_eq(fl_noise_batch_new(&b, sizes[j]), FL_OK);
            s_fill_seeded(a, sds[k], mode);
            s_fill_seeded(b, sds[k], FL_NOISE_SIMD_OFF);
            cr_expect(s_same_noise(a, b), "SIMD (%d) and scalar fills differ: n=%zu sd=%g",
                      active, sizes[j], sds[k]);
            fl_noise_batch_free(a);
            fl_noise_batch_free(b);
        }
    }
    const size_t n = 1000000;
    fl_noise_batch *a = NULL, *b = NULL;
    cr_assert_eq(fl_noise_batch_new(&a, n), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    size_t redos1 = fl_noise_test_simd_redos();
    s_fill_seeded(a, 1.3, mode);
    size_t redos2 = fl_noise_test_simd_redos();
    s_fill_seeded(b, 1.3, FL_NOISE_SIMD_OFF);
    cr_expect(s_same_noise(a, b), "SIMD (%d) and scalar fills differ: n=%zu sd=1.3", active,
              n);
    cr_expect_eq(fl_noise_test_simd_redos(), redos2, "the scalar fill used SIMD");
    if (active != FL_NOISE_SIMD_OFF) {
        /* expected ~46 (Poisson): P(0) ~ e^-46 */
        cr_expect_gt(redos2 - redos1, 0, "no SIMD block hit the slow path in 10^6 draws");
        cr_log_info("SIMD fill (%d) redone blocks: %zu in 10^6 coordinates, %zu in the "
                    "small cases", active, redos2 - redos1, redos1 - redos0);
    }
    fl_noise_batch_free(a);
    fl_noise_batch_free(b);
}

Test(noise_batch, simd_fill_is_bit_identical_to_the_scalar_fill)
{
    s_check_fill_mode(FL_NOISE_SIMD_BEST);
}

Test(noise_batch, avx2_fill_is_bit_identical_to_the_scalar_fill)
{
    s_check_fill_mode(FL_NOISE_SIMD_AVX2);
}

/* Releases copies of one seeded noise batch with SIMD on and off (the
 * rounding-tie draws replayed by the test seed) and checks the outputs
 * bit for bit, and that sums and batches are wiped.  tie_u: if nonzero,
 * every rounding word is forced to it.  Returns the SIMD run's redos. */
static size_t s_release_both(size_t n, double sd, const float *sum0, uint32_t tie_u)
{
    fl_noise_batch *a = NULL, *b = NULL;
    float *sa = malloc(n * sizeof *sa), *sb = malloc(n * sizeof *sb);
    float *oa = malloc(n * sizeof *oa), *ob = malloc(n * sizeof *ob);
    cr_assert(sa && sb && oa && ob);
    memcpy(sa, sum0, n * sizeof *sa);
    memcpy(sb, sum0, n * sizeof *sb);
    cr_assert_eq(fl_noise_batch_new(&a, n), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    s_fill_seeded(a, sd, FL_NOISE_SIMD_BEST);
    s_fill_seeded(b, sd, FL_NOISE_SIMD_BEST);
    if (tie_u) {
        cr_assert_eq(fl_noise_batch_set_round_words(a, tie_u), FL_OK);
        cr_assert_eq(fl_noise_batch_set_round_words(b, tie_u), FL_OK);
    }
    cr_assert(s_same_noise(a, b));
    const double scale = 1.0 / 96.0;
    size_t r0 = fl_noise_test_simd_redos();
    fl_noise_test_seed(s_test_key);
    int rca = fl_noise_batch_release_f32(a, sa, n, sd, scale, oa);
    size_t r1 = fl_noise_test_simd_redos();
    fl_noise_set_simd(FL_NOISE_SIMD_OFF);
    fl_noise_test_seed(s_test_key);
    int rcb = fl_noise_batch_release_f32(b, sb, n, sd, scale, ob);
    fl_noise_test_seed(NULL);
    fl_noise_set_simd(FL_NOISE_SIMD_BEST);
    cr_assert_eq(rca, FL_OK, "%s", fl_error_last());
    cr_assert_eq(rcb, FL_OK, "%s", fl_error_last());
    size_t differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += memcmp(&oa[i], &ob[i], sizeof oa[i]) != 0;
    cr_expect_eq(differ, 0, "%zu of %zu outputs differ (n=%zu sd=%g tie_u=%u)", differ, n, n,
                 sd, (unsigned)tie_u);
    cr_expect(s_all_zero(sa, n * sizeof *sa) && s_all_zero(sb, n * sizeof *sb),
              "a sum was not wiped");
    cr_expect(s_batch_wiped(a), "the SIMD-released batch was not wiped");
    fl_noise_batch_free(a);
    fl_noise_batch_free(b);
    free(sa);
    free(sb);
    free(oa);
    free(ob);
    return r1 - r0;
}

Test(noise_batch, simd_release_f32_is_bit_identical_to_the_scalar_release)
{
    /* Inputs span signs, grid fractions and magnitudes up to 2^10 (below
     * 2^52 grid steps for every sd here).  With every rounding word forced
     * to 2^22, the inputs +-(2^-10 + 2^-33) gamma (every 5th) are exact
     * rounding ties (top 32 fraction bits 2^22, remainder 1/2), so the
     * SIMD blocks holding them are redone by the scalar code, which
     * draws the tie bits in order; a run with the filled words has ties
     * with probability ~2^-32 only. */
    static const size_t sizes[] = {1, 7, 8, 9, 100003};
    static const double sds[] = {0.5, 1.0, 3.7, 1e-3};
    const size_t nmax = 100003;
    float *sum = malloc(nmax * sizeof *sum);
    cr_assert(sum);
    for (size_t k = 0; k < sizeof sds / sizeof sds[0]; k++) {
        const double g = fl_noise_grid(sds[k]);
        uint64_t x = 0x9e3779b97f4a7c15u;
        for (size_t i = 0; i < nmax; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            double mag = ldexp((double)(x >> 11) * 0x1p-53, (int)(x % 31) - 20);
            if (i % 5 == 2)
                mag = (0x1p-10 + 0x1p-33) * g;
            sum[i] = (float)((x & 1) ? -mag : mag);
        }
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++) {
            (void)s_release_both(sizes[j], sds[k], sum, 0);
            size_t redos = s_release_both(sizes[j], sds[k], sum, 1u << 22);
            if (fl_noise_simd_active() == FL_NOISE_SIMD_AVX512 && sizes[j] >= 8)
                cr_expect_gt(redos, 0, "no SIMD release block met the forced ties "
                             "(n=%zu sd=%g)", sizes[j], sds[k]);
        }
    }
    free(sum);
}


Test(noise_batch, release_f32_range_check_finds_bad_values_with_simd_on_and_off)
{
    /* The range check has a SIMD pass (16 floats at a time, then a tail):
     * an out-of-range, infinite or NaN value anywhere must be refused with
     * its index, the sum untouched and the batch still filled. */
    static const size_t where[] = {0, 15, 16, 37, 95, 96, 99};
    const float bad[] = {1.0f, INFINITY, -INFINITY, NAN};
    const size_t n = 100;
    const double sd = 1e-30; /* 1.0 is 2^128 grid steps: out of range */
    float sum[100], out[100];
    fl_noise_batch *b = NULL;
    cr_assert_eq(fl_noise_batch_new(&b, n), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(b, sd), FL_OK);
    for (int simd = FL_NOISE_SIMD_OFF; simd <= FL_NOISE_SIMD_BEST; simd++) {
        fl_noise_set_simd(simd);
        for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
            for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
                char want[32];
                for (size_t i = 0; i < n; i++)
                    sum[i] = (float)i * 0x1p-120f;
                sum[where[w]] = bad[k];
                int rc = fl_noise_batch_release_f32(b, sum, n, sd, 1.0, out);
                cr_expect_eq(rc, FL_ERANGE, "simd=%d index %zu value %g", simd, where[w],
                             (double)bad[k]);
                snprintf(want, sizeof want, "index %zu ", where[w]);
                cr_expect(strstr(fl_error_last(), want) != NULL, "%s", fl_error_last());
                cr_expect(sum[1] == 0x1p-120f, "sum changed on error");
            }
        }
    }
    fl_noise_set_simd(FL_NOISE_SIMD_BEST);
    for (size_t i = 0; i < n; i++)
        sum[i] = (float)i * 0x1p-120f; /* in range: |x| < 2^52 grid steps */
    cr_expect_eq(fl_noise_batch_release_f32(b, sum, n, sd, 1.0, out), FL_OK, "%s",
                 fl_error_last());
    fl_noise_batch_free(b);
}
