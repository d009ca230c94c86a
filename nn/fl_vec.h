/*
 * fl_vec: small element-wise kernels shared by fl_mlp, fl_model and
 * fl_conv, written so that GCC vectorises them at -O2 without
 * -ffast-math (selects instead of conditional stores, independent partial
 * sums instead of one serial chain).
 */
#ifndef FL_VEC_H
#define FL_VEC_H

#include <stddef.h>

/* v[i] = max(v[i], 0); a NaN becomes 0. */
void fl_vec_relu(float *restrict v, size_t n);

/* d[i] = 0 where a[i] is not > 0 (the ReLU's derivative through its
 * output a); NaN in a zeroes d. */
void fl_vec_relu_mask(float *restrict d, const float *restrict a, size_t n);

/* sum_i v[i]^2 in double.  Eight partial sums combined in a fixed order,
 * so the result is deterministic (it differs from the serial sum only by
 * rounding).  A non-finite v[i] gives a non-finite result. */
double fl_vec_sumsq(const float *v, size_t n);

/* sum_i v[i] in double, eight partial sums as fl_vec_sumsq. */
double fl_vec_sum(const float *v, size_t n);

/* dst[i] += src[i] (the arrays must not overlap). */
void fl_vec_add(float *restrict dst, const float *restrict src, size_t n);

/* out[j] += sum_i D[i * cols + j] for i < rows (column sums, e.g. a bias
 * gradient over a batch of deltas). */
void fl_vec_add_col_sums(float *restrict out, const float *restrict D, size_t rows, size_t cols);

/* v[i] *= f. */
void fl_vec_scale(float *restrict v, size_t n, float f);

#endif
