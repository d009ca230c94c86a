/* fl_vec: see fl_vec.h. */
#include "nn/fl_vec.h"

void fl_vec_relu(float *restrict v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = v[i] > 0.0f ? v[i] : 0.0f;
}

void fl_vec_relu_mask(float *restrict d, const float *restrict a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] = a[i] > 0.0f ? d[i] : 0.0f;
}

double fl_vec_sumsq(const float *v, size_t n)
{
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++)
            s[k] += (double)v[i + k] * (double)v[i + k];
    for (size_t k = 0; i < n; i++, k++)
        s[k] += (double)v[i] * (double)v[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

double fl_vec_sum(const float *v, size_t n)
{
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t k = 0; k < 8; k++)
            s[k] += (double)v[i + k];
    for (size_t k = 0; i < n; i++, k++)
        s[k] += (double)v[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

void fl_vec_add(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

void fl_vec_add_col_sums(float *restrict out, const float *restrict D, size_t rows, size_t cols)
{
    for (size_t i = 0; i < rows; i++) {
        const float *restrict r = D + i * cols;
        for (size_t j = 0; j < cols; j++)
            out[j] += r[j];
    }
}

void fl_vec_scale(float *restrict v, size_t n, float f)
{
    for (size_t i = 0; i < n; i++)
        v[i] *= f;
}
