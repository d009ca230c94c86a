/*
 * Tests for nn/fl_vec, the element-wise kernels under fl_mlp, fl_model and
 * fl_conv: each against a second, naive implementation (sums in long
 * double, the ReLU as a branch), over lengths that exercise the 8-lane
 * blocks and every tail length, and NaN/infinity handling.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/fl_vec.h"

static float s_val(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return ((float)(*x >> 8) * 0x1p-24f - 0.5f) * 8.0f;
}

Test(vec, sums_match_long_double_reference_for_every_tail_length)
{
    float v[100];
    uint32_t x = 7u;
    for (size_t n = 0; n <= 100; n++) {
        for (size_t i = 0; i < n; i++)
            v[i] = s_val(&x);
        long double s = 0.0L, ss = 0.0L, mag = 0.0L;
        for (size_t i = 0; i < n; i++) {
            s += v[i];
            ss += (long double)v[i] * v[i];
            mag += fabsl((long double)v[i]);
        }
        /* double partial sums of floats: relative error ~ n 2^-53 */
        cr_assert_lt(fabsl((long double)fl_vec_sum(v, n) - s), 1e-13L * (mag + 1.0L),
                     "sum n=%zu", n);
        cr_assert_lt(fabsl((long double)fl_vec_sumsq(v, n) - ss), 1e-13L * (ss + 1.0L),
                     "sumsq n=%zu", n);
    }
    float bad[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    bad[8] = NAN;
    cr_expect(isnan(fl_vec_sumsq(bad, 9)) && isnan(fl_vec_sum(bad, 9)));
    bad[8] = INFINITY;
    cr_expect(isinf(fl_vec_sumsq(bad, 9)));
}

Test(vec, relu_and_mask_match_branches_and_zero_nans)
{
    float v[37], a[37], d[37], want[37], wantd[37];
    uint32_t x = 99u;
    for (size_t i = 0; i < 37; i++) {
        v[i] = s_val(&x);
        a[i] = s_val(&x);
        d[i] = s_val(&x);
    }
    v[3] = NAN, a[5] = NAN, v[6] = -0.0f, a[7] = 0.0f;
    for (size_t i = 0; i < 37; i++) {
        want[i] = 0.0f;
        if (v[i] > 0.0f)
            want[i] = v[i];
        wantd[i] = 0.0f;
        if (a[i] > 0.0f)
            wantd[i] = d[i];
    }
    fl_vec_relu(v, 37);
    fl_vec_relu_mask(d, a, 37);
    for (size_t i = 0; i < 37; i++) {
        cr_expect(memcmp(&v[i], &want[i], sizeof(float)) == 0, "relu[%zu] = %g", i, v[i]);
        cr_expect(memcmp(&d[i], &wantd[i], sizeof(float)) == 0, "mask[%zu] = %g", i, d[i]);
    }
}

Test(vec, column_sums_add_and_scale_match_loops)
{
    enum { R = 5, C = 13 };
    float D[R * C], out[C], want[C], dst[C], src[C];
    uint32_t x = 3u;
    for (size_t i = 0; i < R * C; i++)
        D[i] = s_val(&x);
    for (size_t j = 0; j < C; j++) {
        out[j] = want[j] = s_val(&x);
        dst[j] = s_val(&x);
        src[j] = s_val(&x);
    }
    for (size_t i = 0; i < R; i++)
        for (size_t j = 0; j < C; j++)
            want[j] += D[i * C + j];
    fl_vec_add_col_sums(out, D, R, C);
    for (size_t j = 0; j < C; j++)
        cr_expect_eq(out[j], want[j], "col %zu", j);
    float d2[C];
    memcpy(d2, dst, sizeof dst);
    fl_vec_add(dst, src, C);
    fl_vec_scale(src, C, 0.25f);
    for (size_t j = 0; j < C; j++) {
        cr_expect_eq(dst[j], d2[j] + src[j] * 4.0f, "add %zu", j);
    }
}
