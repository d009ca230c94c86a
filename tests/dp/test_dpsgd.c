/*
 * Tests for per-example clipping and the DP-SGD step (Abadi et al. 2016,
 * Algorithm 1): clipped mean by hand, noise scale sigma*C/(qN), division by
 * the expected batch size, chunking, and error handling; the same for the
 * step that takes its noise from a prepared batch (bit-identical without
 * noise, same noise scale, one use per batch).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dp/fl_dpsgd.h"
#include "dp/fl_noise_internal.h"

static double s_norm(const float *r, size_t dim)
{
    double s = 0.0;
    for (size_t j = 0; j < dim; j++)
        s += (double)r[j] * r[j];
    return sqrt(s);
}

Test(clip, rows_above_c_get_norm_c_same_direction_others_unchanged)
{
    enum { N = 4, D = 3 };
    float G[N * D] = {
        3, 4, 0,        /* norm 5 -> scaled to 2 */
        0.3f, 0.4f, 0,  /* norm 0.5 -> unchanged */
        0, 0, -10,      /* norm 10 -> scaled to 2 */
        0, 0, 0,        /* zero row -> unchanged */
    };
    float orig[N * D];
    memcpy(orig, G, sizeof G);
    size_t clipped = 99;
    cr_assert_eq(fl_dp_clip_rows(G, N, D, 2.0, &clipped), FL_OK);
    cr_expect_eq(clipped, 2);
    cr_expect_float_eq(s_norm(G, D), 2.0, 1e-5);
    cr_expect_float_eq(s_norm(G + 2 * D, D), 2.0, 1e-5);
    cr_expect_leq(s_norm(G, D), 2.0, "clipped norm must never exceed C");
    cr_expect_leq(s_norm(G + 2 * D, D), 2.0);
    /* same direction: (3,4,0)*2/5 and (0,0,-2) */
    cr_expect_float_eq(G[0], 1.2f, 1e-5);
    cr_expect_float_eq(G[1], 1.6f, 1e-5);
    cr_expect_eq(G[2], 0.0f);
    cr_expect_float_eq(G[8], -2.0f, 1e-5);
    cr_expect_eq(memcmp(G + D, orig + D, D * sizeof(float)), 0);
    cr_expect_eq(memcmp(G + 3 * D, orig + 3 * D, D * sizeof(float)), 0);
}

Test(clip, many_random_rows_never_exceed_c)
{
    enum { N = 2000, D = 17 };
    float *G = malloc(N * D * sizeof *G);
    cr_assert(G);
    unsigned x = 12345u; /* deterministic test data (LCG), not DP noise */
    for (size_t i = 0; i < N * D; i++) {
        x = x * 1103515245u + 12345u;
        G[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * (float)(1 + i % 7) * 3.0f;
    }
    size_t clipped = 0;
    cr_assert_eq(fl_dp_clip_rows(G, N, D, 0.75, &clipped), FL_OK);
    cr_expect_gt(clipped, 0);
    for (size_t i = 0; i < N; i++)
        cr_expect_leq(s_norm(G + i * D, D), 0.75, "row %zu", i);
    free(G);
}

Test(clip, non_finite_rows_are_zeroed_and_counted)
{
    float G[6] = {NAN, 1, 1, INFINITY, 0.1f, 0.1f};
    size_t clipped = 0;
    cr_assert_eq(fl_dp_clip_rows(G, 3, 2, 1.0, &clipped), FL_OK);
    cr_expect_eq(clipped, 2);
    cr_expect(G[0] == 0 && G[1] == 0 && G[2] == 0 && G[3] == 0);
    cr_expect_eq(G[4], 0.1f);
}

Test(clip, rejects_bad_clip_norm)
{
    float G[2] = {1, 1};
    cr_expect_eq(fl_dp_clip_rows(G, 1, 2, 0.0, NULL), FL_EINVAL);
    cr_expect_eq(fl_dp_clip_rows(G, 1, 2, -1.0, NULL), FL_EINVAL);
    cr_expect_eq(fl_dp_clip_rows(G, 1, 2, NAN, NULL), FL_EINVAL);
    cr_expect_eq(fl_dp_clip_rows(NULL, 1, 2, 1.0, NULL), FL_EINVAL);
}

/* ---- toy gradient functions ---- */

typedef struct {
    const float *table; /* N x dim fixed per-example gradients */
    size_t dim;
    size_t chunk;
    size_t calls;
    size_t rows;
    size_t last_idx_plus1;
    int bad_chunk;
} table_ctx;

static int s_table_grad(void *vctx, const size_t *idx, size_t n, float *G)
{
    table_ctx *c = vctx;
    c->calls++;
    if (n == 0 || n > c->chunk)
        c->bad_chunk = 1;
    for (size_t i = 0; i < n; i++) {
        if (idx[i] + 1 <= c->last_idx_plus1)
            c->bad_chunk = 1; /* indices must keep increasing across calls */
        c->last_idx_plus1 = idx[i] + 1;
        memcpy(G + i * c->dim, c->table + idx[i] * c->dim, c->dim * sizeof *G);
    }
    c->rows += n;
    return FL_OK;
}

static int s_zero_grad(void *ctx, const size_t *idx, size_t n, float *G)
{
    size_t dim = *(const size_t *)ctx;
    (void)idx;
    memset(G, 0, n * dim * sizeof *G);
    return FL_OK;
}

static int s_failing_grad(void *ctx, const size_t *idx, size_t n, float *G)
{
    (void)ctx, (void)idx, (void)n, (void)G;
    return fl_error_set(FL_EIO, "toy gradient failure");
}

Test(dpsgd, q1_sigma0_equals_mean_of_hand_clipped_gradients)
{
    /* C = 1.  Rows and their clipped versions, by hand:
     *   (3, 4)     norm 5   -> (0.6, 0.8)
     *   (0.3, 0.4) norm 0.5 -> unchanged
     *   (0, -2)    norm 2   -> (0, -1)
     *   (1, 0)     norm 1   -> unchanged
     *   (-6, 8)    norm 10  -> (-0.6, 0.8)
     * sum = (1.3, 1.0); q = 1, N = 5 -> mean (0.26, 0.2). */
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    table_ctx c = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    float out[2];
    size_t b = 0;
    cr_assert_eq(fl_dpsgd_new(&s, 2, 5, 1.0, 1.0, 0.0, 2), FL_OK);
    cr_assert_eq(fl_dpsgd_step(s, s_table_grad, &c, out, &b), FL_OK);
    cr_expect_eq(b, 5);
    cr_expect_float_eq(out[0], 0.26f, 1e-5);
    cr_expect_float_eq(out[1], 0.2f, 1e-5);
    cr_expect_eq(c.calls, 3, "5 rows in chunks of 2 -> 3 calls");
    cr_expect_eq(c.rows, 5);
    cr_expect_not(c.bad_chunk);
    fl_dpsgd_free(s);
}

Test(dpsgd, chunking_never_exceeds_chunk_rows)
{
    enum { N = 300, D = 4 };
    float *table = calloc(N * D, sizeof *table);
    cr_assert(table);
    fl_dpsgd *s = NULL;
    float out[D];
    cr_assert_eq(fl_dpsgd_new(&s, D, N, 0.5, 1.0, 1.0, 7), FL_OK);
    for (int r = 0; r < 20; r++) {
        table_ctx c = {table, D, 7, 0, 0, 0, 0};
        size_t b = 0;
        cr_assert_eq(fl_dpsgd_step(s, s_table_grad, &c, out, &b), FL_OK);
        cr_expect_eq(c.rows, b);
        cr_expect_eq(c.calls, (b + 6) / 7);
        cr_expect_not(c.bad_chunk);
    }
    fl_dpsgd_free(s);
    free(table);
}

Test(dpsgd, zero_gradients_give_noise_with_std_sigma_c_over_qn)
{
    size_t dim = 50;
    const size_t N = 100, steps = 4000;
    const double q = 0.2, C = 2.0, sigma = 1.5;
    const double sd = sigma * C / (q * N); /* = 0.15 */
    fl_dpsgd *s = NULL;
    float *out = malloc(dim * sizeof *out);
    cr_assert(out);
    cr_assert_eq(fl_dpsgd_new(&s, dim, N, q, C, sigma, 16), FL_OK);
    double m = 0.0, ss = 0.0;
    for (size_t t = 0; t < steps; t++) {
        cr_assert_eq(fl_dpsgd_step(s, s_zero_grad, &dim, out, NULL), FL_OK);
        for (size_t j = 0; j < dim; j++) {
            m += out[j];
            ss += (double)out[j] * out[j];
        }
    }
    double n = (double)(steps * dim);
    m /= n;
    double var = ss / n - m * m;
    /* Mean: SE sd/sqrt(n).  Variance of n normal samples: SE ~ sd^2 sqrt(2/n). */
    cr_expect_lt(fabs(m), 5 * sd / sqrt(n), "mean %g", m);
    cr_expect_lt(fabs(var - sd * sd), 5 * sd * sd * sqrt(2.0 / n), "std %g vs %g", sqrt(var),
                 sd);
    fl_dpsgd_free(s);
    free(out);
}

Test(dpsgd, divides_by_expected_not_realised_batch_size)
{
    /* Every row is (0.5, 0) (below C = 1), sigma = 0: the output must be
     * b * 0.5 / (q N) for the realised size b, never 0.5 (the realised mean). */
    enum { N = 200, D = 2 };
    float *table = calloc(N * D, sizeof *table);
    cr_assert(table);
    for (size_t i = 0; i < N; i++)
        table[i * D] = 0.5f;
    const double q = 0.3;
    fl_dpsgd *s = NULL;
    float out[D];
    int differs = 0;
    cr_assert_eq(fl_dpsgd_new(&s, D, N, q, 1.0, 0.0, 64), FL_OK);
    for (int r = 0; r < 50; r++) {
        table_ctx c = {table, D, 64, 0, 0, 0, 0};
        size_t b = 0;
        cr_assert_eq(fl_dpsgd_step(s, s_table_grad, &c, out, &b), FL_OK);
        double want = b * 0.5 / (q * N);
        cr_expect_float_eq(out[0], want, 1e-5 * (1 + want), "b=%zu out=%g want=%g", b, out[0],
                           want);
        cr_expect_eq(out[1], 0.0f);
        differs += b != 60;
    }
    cr_expect_gt(differs, 0, "realised batch sizes should vary around qN = 60");
    fl_dpsgd_free(s);
    free(table);
}

Test(dpsgd, empty_batch_still_returns_noise_over_qn)
{
    /* N = 1, q = 1e-6: the batch is empty except with probability 1e-6. */
    size_t dim = 8, b = 99;
    float out[8];
    fl_dpsgd *s = NULL;
    cr_assert_eq(fl_dpsgd_new(&s, dim, 1, 1e-6, 1.0, 0.0, 1), FL_OK);
    cr_assert_eq(fl_dpsgd_step(s, s_failing_grad, NULL, out, &b), FL_OK,
                 "grad_fn must not be called for an empty batch");
    cr_expect_eq(b, 0);
    for (size_t j = 0; j < dim; j++)
        cr_expect_eq(out[j], 0.0f);
    fl_dpsgd_free(s);

    cr_assert_eq(fl_dpsgd_new(&s, dim, 1, 1e-6, 1.0, 1.0, 1), FL_OK);
    cr_assert_eq(fl_dpsgd_step(s, s_failing_grad, NULL, out, &b), FL_OK);
    cr_expect_eq(b, 0);
    int nonzero = 0;
    for (size_t j = 0; j < dim; j++) {
        cr_expect(isfinite(out[j]));
        nonzero += out[j] != 0.0f;
        /* noise sd = sigma C / (qN) = 1e6; |z| <= 8.6 for Box-Muller. */
        cr_expect_lt(fabs(out[j]), 1e7);
    }
    cr_expect_gt(nonzero, 0);
    fl_dpsgd_free(s);
}

Test(dpsgd, grad_fn_error_is_returned_and_output_zeroed)
{
    float out[3] = {1, 2, 3};
    size_t b = 7;
    fl_dpsgd *s = NULL;
    cr_assert_eq(fl_dpsgd_new(&s, 3, 10, 1.0, 1.0, 1.0, 4), FL_OK);
    cr_expect_eq(fl_dpsgd_step(s, s_failing_grad, NULL, out, &b), FL_EIO);
    cr_expect_eq(b, 0);
    cr_expect(out[0] == 0 && out[1] == 0 && out[2] == 0);
    fl_dpsgd_free(s);
}

Test(dpsgd, new_rejects_invalid_parameters)
{
    fl_dpsgd *s = (fl_dpsgd *)0x1;
    cr_expect_eq(fl_dpsgd_new(&s, 0, 10, 0.1, 1, 1, 1), FL_EINVAL);
    cr_expect_null(s);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 0, 0.1, 1, 1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.0, 1, 1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 1.1, 1, 1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.1, 0, 1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.1, INFINITY, 1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.1, 1, -1, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.1, 1, NAN, 1), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(&s, 3, 10, 0.1, 1, 1, 0), FL_EINVAL);
    cr_expect_eq(fl_dpsgd_new(NULL, 3, 10, 0.1, 1, 1, 1), FL_EINVAL);
    cr_expect_null(s);
}

Test(dpsgd, free_null_is_noop)
{
    fl_dpsgd_free(NULL);
}

/* ---- fl_dpsgd_step_clipped: the model returns sums of clipped rows. */

/* Clipped-sum callback over the same table: clips each row by hand
 * (min(1, C/||g||), as Abadi et al. 2016 Algorithm 1) and sums. */
static int s_table_clipped_sum(void *vctx, const size_t *idx, size_t n, double clip,
                               float *sum, size_t *clipped)
{
    table_ctx *c = vctx;
    c->calls++;
    if (n == 0 || n > c->chunk)
        c->bad_chunk = 1;
    memset(sum, 0, c->dim * sizeof *sum);
    *clipped = 0;
    for (size_t i = 0; i < n; i++) {
        const float *r = c->table + idx[i] * c->dim;
        double nr = s_norm(r, c->dim), f = nr > clip ? clip / nr : 1.0;
        *clipped += nr > clip;
        for (size_t j = 0; j < c->dim; j++)
            sum[j] += (float)(f * r[j]);
    }
    c->rows += n;
    return FL_OK;
}

/* A callback that forgets to clip: returns the raw sum. */
static int s_table_raw_sum(void *vctx, const size_t *idx, size_t n, double clip, float *sum,
                           size_t *clipped)
{
    table_ctx *c = vctx;
    (void)clip;
    memset(sum, 0, c->dim * sizeof *sum);
    *clipped = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c->dim; j++)
            sum[j] += c->table[idx[i] * c->dim + j];
    return FL_OK;
}

Test(dpsgd_clipped, q1_sigma0_equals_mean_of_hand_clipped_gradients)
{
    /* The table and hand-clipped mean (0.26, 0.2) of
     * q1_sigma0_equals_mean_of_hand_clipped_gradients above. */
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    table_ctx c = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    float out[2];
    size_t b = 0;
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 5, 1.0, 1.0, 0.0, 2), FL_OK);
    cr_assert_eq(fl_dpsgd_step_clipped(s, s_table_clipped_sum, &c, out, &b), FL_OK, "%s",
                 fl_error_last());
    cr_expect_eq(b, 5);
    cr_expect_float_eq(out[0], 0.26f, 1e-5);
    cr_expect_float_eq(out[1], 0.2f, 1e-5);
    cr_expect_eq(c.calls, 3, "5 rows in chunks of 2 -> 3 calls");
    cr_expect_not(c.bad_chunk);
    fl_dpsgd_free(s);
}

Test(dpsgd_clipped, same_noise_scale_sigma_c_over_qn)
{
    enum { N = 100, D = 50 };
    const size_t steps = 4000;
    const double q = 0.2, C = 2.0, sigma = 1.5, sd = sigma * C / (q * N);
    float *table = calloc(N * D, sizeof *table);
    float out[D];
    fl_dpsgd *s = NULL;
    cr_assert(table);
    cr_assert_eq(fl_dpsgd_new_clipped(&s, D, N, q, C, sigma, 16), FL_OK);
    double m = 0.0, ss = 0.0;
    for (size_t t = 0; t < steps; t++) {
        table_ctx c = {table, D, 16, 0, 0, 0, 0};
        cr_assert_eq(fl_dpsgd_step_clipped(s, s_table_clipped_sum, &c, out, NULL), FL_OK);
        for (size_t j = 0; j < D; j++) {
            m += out[j];
            ss += (double)out[j] * out[j];
        }
    }
    double n = (double)(steps * D);
    m /= n;
    double var = ss / n - m * m;
    cr_expect_lt(fabs(m), 5 * sd / sqrt(n), "mean %g", m);
    cr_expect_lt(fabs(var - sd * sd), 5 * sd * sd * sqrt(2.0 / n), "std %g vs %g", sqrt(var),
                 sd);
    fl_dpsgd_free(s);
    free(table);
}

Test(dpsgd_clipped, sum_above_n_times_c_is_rejected_and_output_zeroed)
{
    /* Two rows of norm 10 with C = 1: an unclipped sum has norm 20 > 2C. */
    const float table[] = {6, 8, -6, 8};
    table_ctx c = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    float out[2] = {5, 5};
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 2, 1.0, 1.0, 1.0, 2), FL_OK);
    cr_expect_eq(fl_dpsgd_step_clipped(s, s_table_raw_sum, &c, out, NULL), FL_EINVAL);
    cr_expect(out[0] == 0.0f && out[1] == 0.0f);
    fl_dpsgd_free(s);
}

Test(dpsgd_clipped, per_example_step_on_clipped_only_state_fails)
{
    const float table[] = {1, 0};
    table_ctx c = {table, 2, 1, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    float out[2] = {5, 5};
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 1, 1.0, 1.0, 0.0, 1), FL_OK);
    cr_expect_eq(fl_dpsgd_step(s, s_table_grad, &c, out, NULL), FL_EINVAL);
    cr_expect(out[0] == 0.0f && out[1] == 0.0f);
    cr_expect_eq(c.calls, 0);
    fl_dpsgd_free(s);
}

Test(dpsgd_clipped, works_on_a_per_example_state_too)
{
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    table_ctx c1 = {table, 2, 2, 0, 0, 0, 0}, c2 = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    float a[2], b[2];
    cr_assert_eq(fl_dpsgd_new(&s, 2, 5, 1.0, 1.0, 0.0, 2), FL_OK);
    cr_assert_eq(fl_dpsgd_step(s, s_table_grad, &c1, a, NULL), FL_OK);
    cr_assert_eq(fl_dpsgd_step_clipped(s, s_table_clipped_sum, &c2, b, NULL), FL_OK);
    cr_expect_float_eq(a[0], b[0], 1e-6);
    cr_expect_float_eq(a[1], b[1], 1e-6);
    fl_dpsgd_free(s);
}

/* ---- fl_dpsgd_step_clipped_prepared: noise from a prepared batch. */

static int s_failing_clipped_sum(void *ctx, const size_t *idx, size_t n, double clip,
                                 float *sum, size_t *clipped)
{
    (void)ctx, (void)idx, (void)n, (void)clip, (void)sum, (void)clipped;
    return fl_error_set(FL_EIO, "toy clipped-sum failure");
}

Test(dpsgd_prepared, sigma0_q1_is_bit_identical_to_the_inline_step)
{
    /* sigma = 0: no noise on either path, q = 1: the same batch; the
     * hand-clipped mean is (0.26, 0.2) (see the tests above). */
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    table_ctx c1 = {table, 2, 2, 0, 0, 0, 0}, c2 = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    fl_noise_batch *nb = NULL;
    float a[2], b[2];
    size_t bs = 0;
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 5, 1.0, 1.0, 0.0, 2), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&nb, fl_dpsgd_dim(s)), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(nb, fl_dpsgd_noise_stddev(s)), FL_OK);
    cr_assert_eq(fl_dpsgd_step_clipped(s, s_table_clipped_sum, &c1, a, NULL), FL_OK);
    cr_assert_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c2, nb,
                                                NULL, b, &bs), FL_OK,
                 "%s", fl_error_last());
    cr_expect_eq(bs, 5);
    cr_expect_eq(memcmp(a, b, sizeof a), 0);
    cr_expect_float_eq(b[0], 0.26f, 1e-5);
    cr_expect_float_eq(b[1], 0.2f, 1e-5);
    fl_noise_batch_free(nb);
    fl_dpsgd_free(s);
}

Test(dpsgd_prepared, one_chunk_fused_release_matches_the_chunked_release)
{
    /* The whole batch in one chunk takes the fused float release; chunks
     * of 2 take the double accumulator and fl_noise_batch_apply_f64.  With
     * the same prepared noise (copied through the test hook) the two
     * differ only by the float-vs-double summation of the 5 clipped rows;
     * sigma = 0 gives the hand-clipped mean (0.26, 0.2) of the tests
     * above. */
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    for (int noisy = 0; noisy < 2; noisy++) {
        table_ctx c1 = {table, 2, 2, 0, 0, 0, 0}, c2 = {table, 2, 5, 0, 0, 0, 0};
        fl_dpsgd *chunked = NULL, *whole = NULL;
        fl_noise_batch *n1 = NULL, *n2 = NULL;
        float a[2], b[2];
        const double sigma = noisy ? 1.0 : 0.0;
        cr_assert_eq(fl_dpsgd_new_clipped(&chunked, 2, 5, 1.0, 1.0, sigma, 2), FL_OK);
        cr_assert_eq(fl_dpsgd_new_clipped(&whole, 2, 5, 1.0, 1.0, sigma, 5), FL_OK);
        cr_assert_eq(fl_noise_batch_new(&n1, 2), FL_OK);
        cr_assert_eq(fl_noise_batch_new(&n2, 2), FL_OK);
        cr_assert_eq(fl_noise_batch_fill(n1, fl_dpsgd_noise_stddev(chunked)), FL_OK);
        cr_assert_eq(fl_noise_batch_fill(n2, fl_dpsgd_noise_stddev(whole)), FL_OK);
        const int64_t *z1, *z2;
        const uint32_t *u1, *u2;
        size_t k1, k2;
        fl_noise_batch_buffers(n1, &z1, &u1, &k1);
        fl_noise_batch_buffers(n2, &z2, &u2, &k2);
        memcpy((int64_t *)z2, z1, 2 * sizeof *z1);
        memcpy((uint32_t *)u2, u1, 2 * sizeof *u1);
        cr_assert_eq(fl_dpsgd_step_clipped_prepared(chunked, s_table_clipped_sum, &c1, n1, NULL, a,
                                                    NULL), FL_OK, "%s", fl_error_last());
        cr_assert_eq(fl_dpsgd_step_clipped_prepared(whole, s_table_clipped_sum, &c2, n2, NULL, b,
                                                    NULL), FL_OK, "%s", fl_error_last());
        cr_expect_eq(c2.calls, 1, "the whole batch must be one call");
        cr_expect_float_eq(a[0], b[0], 1e-6, "%.9g vs %.9g", a[0], b[0]);
        cr_expect_float_eq(a[1], b[1], 1e-6, "%.9g vs %.9g", a[1], b[1]);
        if (!noisy) {
            cr_expect_float_eq(b[0], 0.26f, 1e-6);
            cr_expect_float_eq(b[1], 0.2f, 1e-6);
        } else {
            cr_expect(fabsf(b[0] - 0.26f) > 1e-4f || fabsf(b[1] - 0.2f) > 1e-4f,
                      "sigma = 1 added no noise");
        }
        fl_noise_batch_free(n1);
        fl_noise_batch_free(n2);
        fl_dpsgd_free(chunked);
        fl_dpsgd_free(whole);
    }
}

/* Records every index the callback sees. */
typedef struct {
    table_ctx t;
    size_t seen[16];
    size_t nseen;
    int fail;
} seen_ctx;

static int s_seen_clipped_sum(void *vctx, const size_t *idx, size_t n, double clip, float *sum,
                              size_t *clipped)
{
    seen_ctx *c = vctx;
    for (size_t i = 0; i < n && c->nseen < 16; i++)
        c->seen[c->nseen++] = idx[i];
    if (c->fail)
        return fl_error_set(FL_EIO, "toy clipped-sum failure");
    return s_table_clipped_sum(&c->t, idx, n, clip, sum, clipped);
}

Test(dpsgd_prepared, prepared_sample_is_the_batch_used_and_consumed_only_on_success)
{
    /* q = 0.5 over 5 records: the step must use exactly the prepared
     * sample's indices (not a fresh draw), leave it filled when the step
     * fails, consume it when the step succeeds, and refuse a sample drawn
     * for another q. */
    const float table[] = {3, 4, 0.3f, 0.4f, 0, -2, 1, 0, -6, 8};
    fl_dpsgd *s = NULL;
    fl_noise_batch *nb = NULL;
    fl_poisson_batch *sp = NULL, *other = NULL;
    float out[2];
    size_t bs = 0, n = 0;
    const size_t *idx = NULL;
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 5, 0.5, 1.0, 1.0, 5), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&nb, 2), FL_OK);
    cr_assert_eq(fl_poisson_batch_new(&sp, 5), FL_OK);
    cr_assert_eq(fl_poisson_batch_new(&other, 5), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(nb, fl_dpsgd_noise_stddev(s)), FL_OK);
    for (int tries = 0; tries < 64 && n == 0; tries++) { /* want a non-empty sample */
        fl_poisson_batch_consume(sp);
        cr_assert_eq(fl_poisson_batch_fill(sp, 0.5), FL_OK);
        cr_assert_eq(fl_poisson_batch_indices(sp, 5, 0.5, &idx, &n), FL_OK);
    }
    cr_assert_gt(n, 0);
    size_t want[5];
    memcpy(want, idx, n * sizeof *idx);

    seen_ctx c = {{table, 2, 5, 0, 0, 0, 0}, {0}, 0, 1};
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_seen_clipped_sum, &c, nb, sp, out, &bs),
                 FL_EIO);
    cr_expect_eq(fl_poisson_batch_indices(sp, 5, 0.5, &idx, &n), FL_OK,
                 "a failed step must leave the sample filled");
    cr_assert_eq(fl_poisson_batch_fill(other, 0.25), FL_OK);
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_seen_clipped_sum, &c, nb, other, out, &bs),
                 FL_EINVAL, "a sample for another q must be refused");

    seen_ctx ok = {{table, 2, 5, 0, 0, 0, 0}, {0}, 0, 0};
    cr_assert_eq(fl_dpsgd_step_clipped_prepared(s, s_seen_clipped_sum, &ok, nb, sp, out, &bs),
                 FL_OK, "%s", fl_error_last());
    cr_expect_eq(bs, n);
    cr_expect_eq(ok.nseen, n);
    for (size_t i = 0; i < n && i < ok.nseen; i++)
        cr_expect_eq(ok.seen[i], want[i], "index %zu: step used %zu, sample had %zu", i,
                     ok.seen[i], want[i]);
    cr_expect_eq(fl_poisson_batch_indices(sp, 5, 0.5, &idx, &n), FL_ESTATE,
                 "a successful step must consume the sample");
    fl_poisson_batch_free(sp);
    fl_poisson_batch_free(other);
    fl_noise_batch_free(nb);
    fl_dpsgd_free(s);
}

Test(dpsgd_prepared, noise_scale_is_sigma_c_over_qn)
{
    /* Zero gradients: the output is the noise / (qN), sd = sigma C / (q N)
     * = 0.15; 5-SE bounds on mean and variance as for the inline step. */
    enum { N = 100, D = 50 };
    const size_t steps = 4000;
    const double q = 0.2, C = 2.0, sigma = 1.5, sd = sigma * C / (q * N);
    float *table = calloc(N * D, sizeof *table);
    float out[D];
    fl_dpsgd *s = NULL;
    fl_noise_batch *nb = NULL;
    cr_assert(table);
    cr_assert_eq(fl_dpsgd_new_clipped(&s, D, N, q, C, sigma, 16), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&nb, D), FL_OK);
    double m = 0.0, ss = 0.0;
    for (size_t t = 0; t < steps; t++) {
        table_ctx c = {table, D, 16, 0, 0, 0, 0};
        cr_assert_eq(fl_noise_batch_fill(nb, fl_dpsgd_noise_stddev(s)), FL_OK);
        cr_assert_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, nb,
                                                    NULL, out, NULL),
                     FL_OK);
        for (size_t j = 0; j < D; j++) {
            m += out[j];
            ss += (double)out[j] * out[j];
        }
    }
    double n = (double)(steps * D);
    m /= n;
    double var = ss / n - m * m;
    cr_expect_lt(fabs(m), 5 * sd / sqrt(n), "mean %g", m);
    cr_expect_lt(fabs(var - sd * sd), 5 * sd * sd * sqrt(2.0 / n), "std %g vs %g", sqrt(var),
                 sd);
    fl_noise_batch_free(nb);
    fl_dpsgd_free(s);
    free(table);
}

Test(dpsgd_prepared, empty_batch_is_still_noised)
{
    /* N = 1, q = 1e-6: empty except with probability 1e-6; the callback
     * must not be called, and the output is noise / (qN), sd 1e6. */
    size_t b = 99;
    float out[8];
    fl_dpsgd *s = NULL;
    fl_noise_batch *nb = NULL;
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 8, 1, 1e-6, 1.0, 1.0, 1), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&nb, 8), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(nb, 1.0), FL_OK);
    cr_assert_eq(fl_dpsgd_step_clipped_prepared(s, s_failing_clipped_sum, NULL, nb, NULL, out, &b),
                 FL_OK);
    cr_expect_eq(b, 0);
    int nonzero = 0;
    for (size_t j = 0; j < 8; j++) {
        cr_expect(isfinite(out[j]));
        nonzero += out[j] != 0.0f;
        cr_expect_lt(fabs(out[j]), 4e7); /* 40 sd: probability < 1e-300 */
    }
    cr_expect_gt(nonzero, 0);
    fl_noise_batch_free(nb);
    fl_dpsgd_free(s);
}

Test(dpsgd_prepared, batch_is_consumed_exactly_when_the_step_succeeds)
{
    const float table[] = {3, 4, 0.3f, 0.4f};
    table_ctx c = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    fl_noise_batch *nb = NULL;
    float out[2] = {5, 5};
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 2, 1.0, 1.0, 1.0, 2), FL_OK);
    cr_assert_eq(fl_noise_batch_new(&nb, 2), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(nb, 1.0), FL_OK);
    /* a failing callback: error returned, output zeroed, batch kept */
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_failing_clipped_sum, NULL, nb,
                                                NULL, out, NULL),
                 FL_EIO);
    cr_expect(out[0] == 0.0f && out[1] == 0.0f);
    cr_expect_eq(fl_noise_batch_fill(nb, 1.0), FL_ESTATE, "still filled after a failed step");
    /* success consumes it ... */
    cr_assert_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, nb, NULL, out, NULL),
                 FL_OK, "%s", fl_error_last());
    /* ... so a second step with the same batch is refused (one-time pad) */
    out[0] = out[1] = 5;
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, nb, NULL, out, NULL),
                 FL_ESTATE);
    cr_expect(out[0] == 0.0f && out[1] == 0.0f);
    cr_expect_eq(fl_noise_batch_fill(nb, 1.0), FL_OK);
    fl_noise_batch_free(nb);
    fl_dpsgd_free(s);
}

Test(dpsgd_prepared, refuses_a_batch_for_another_stddev_or_size_or_none)
{
    const float table[] = {3, 4, 0.3f, 0.4f};
    table_ctx c = {table, 2, 2, 0, 0, 0, 0};
    fl_dpsgd *s = NULL;
    fl_noise_batch *wrong_sd = NULL, *wrong_n = NULL;
    float out[2] = {5, 5};
    cr_assert_eq(fl_dpsgd_new_clipped(&s, 2, 2, 1.0, 2.0, 1.0, 2), FL_OK);
    cr_expect_eq(fl_dpsgd_noise_stddev(s), 2.0);
    cr_assert_eq(fl_noise_batch_new(&wrong_sd, 2), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(wrong_sd, 1.0), FL_OK);
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, wrong_sd, NULL, out,
                                                NULL), FL_EINVAL);
    cr_expect(out[0] == 0.0f && out[1] == 0.0f);
    cr_assert_eq(fl_noise_batch_new(&wrong_n, 3), FL_OK);
    cr_assert_eq(fl_noise_batch_fill(wrong_n, 2.0), FL_OK);
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, wrong_n,
                                                NULL, out, NULL),
                 FL_EINVAL);
    cr_expect_eq(fl_dpsgd_step_clipped_prepared(s, s_table_clipped_sum, &c, NULL, NULL, out, NULL),
                 FL_EINVAL);
    fl_noise_batch_free(wrong_sd);
    fl_noise_batch_free(wrong_n);
    fl_dpsgd_free(s);
}
