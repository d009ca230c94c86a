/*
 * fl_secagg_shamir: the prime field F_p, p = 2^61 - 1 (a Mersenne prime, so
 * reduction is two shifts and an add), and Shamir t-of-n secret sharing
 * (Shamir 1979) of 32-byte secrets split into eight 32-bit limbs, each
 * shared with its own random polynomial of degree t - 1. Points x = 1..n
 * (party i holds x = i + 1); reconstruction is Lagrange interpolation at 0.
 */
#include <string.h>

#include <sodium.h>

#include "secagg/fl_secagg_internal.h"

static uint64_t s_reduce128(unsigned __int128 x)
{
    /* x = hi * 2^61 + lo == hi + lo (mod 2^61 - 1) */
    uint64_t lo = (uint64_t)x & FL_SECAGG_P;
    uint64_t hi = (uint64_t)(x >> 61);
    uint64_t r = lo + (hi & FL_SECAGG_P) + (hi >> 61);
    r = (r & FL_SECAGG_P) + (r >> 61);
    return r >= FL_SECAGG_P ? r - FL_SECAGG_P : r;
}

uint64_t fl_secagg_fp_add(uint64_t a, uint64_t b)
{
    uint64_t r = a + b; /* < 2^62: no overflow */
    return r >= FL_SECAGG_P ? r - FL_SECAGG_P : r;
}

uint64_t fl_secagg_fp_sub(uint64_t a, uint64_t b)
{
    return a >= b ? a - b : a + FL_SECAGG_P - b;
}

uint64_t fl_secagg_fp_mul(uint64_t a, uint64_t b)
{
    return s_reduce128((unsigned __int128)a * b);
}

uint64_t fl_secagg_fp_inv(uint64_t a)
{
    uint64_t r = 1, e = FL_SECAGG_P - 2;
    a %= FL_SECAGG_P;
    while (e) {
        if (e & 1)
            r = fl_secagg_fp_mul(r, a);
        a = fl_secagg_fp_mul(a, a);
        e >>= 1;
    }
    return r;
}

/* Uniform in F_p by rejection: 61 random bits, reject the one value p. */
static uint64_t s_random_fp(void)
{
    for (;;) {
        uint64_t r;
        randombytes_buf(&r, sizeof r);
        r &= FL_SECAGG_P;
        if (r != FL_SECAGG_P)
            return r;
    }
}

int fl_secagg_shamir_split_at(const uint8_t secret[32], const uint64_t *xs, uint32_t m,
                              uint32_t t, uint64_t *shares)
{
    if (!secret || !xs || !shares || t == 0 || t > m || m > FL_SECAGG_MAX_PARTIES)
        return fl_error_set(FL_EINVAL, "shamir split: need 1 <= t <= m <= %u (t=%u, m=%u)",
                            FL_SECAGG_MAX_PARTIES, t, m);
    uint64_t *coef = sodium_allocarray(t, sizeof *coef);
    if (!coef)
        return fl_error_set(FL_ENOMEM, "shamir split: out of guarded memory for %u coefficients", t);
    for (uint32_t j = 0; j < FL_SECAGG_LIMBS; j++) {
        coef[0] = fl_secagg_get32(secret + 4 * j);
        for (uint32_t k = 1; k < t; k++)
            coef[k] = s_random_fp();
        for (uint32_t i = 0; i < m; i++) {
            uint64_t x = xs[i], y = 0;
            for (uint32_t k = t; k-- > 0;) /* Horner */
                y = fl_secagg_fp_add(fl_secagg_fp_mul(y, x), coef[k]);
            shares[(size_t)i * FL_SECAGG_LIMBS + j] = y;
        }
    }
    sodium_free(coef); /* wipes */
    return FL_OK;
}

int fl_secagg_shamir_split(const uint8_t secret[32], uint32_t n, uint32_t t, uint64_t *shares)
{
    if (!secret || !shares || t == 0 || t > n || n > FL_SECAGG_MAX_PARTIES)
        return fl_error_set(FL_EINVAL, "shamir split: need 1 <= t <= n <= %u (t=%u, n=%u)",
                            FL_SECAGG_MAX_PARTIES, t, n);
    uint64_t xs[FL_SECAGG_MAX_PARTIES];
    for (uint32_t i = 0; i < n; i++)
        xs[i] = (uint64_t)i + 1;
    return fl_secagg_shamir_split_at(secret, xs, n, t, shares);
}

int fl_secagg_lagrange0(uint64_t *lambda, const uint64_t *xs, uint32_t m)
{
    for (uint32_t i = 0; i < m; i++) {
        if (xs[i] % FL_SECAGG_P == 0)
            return fl_error_set(FL_EINVAL, "lagrange: point %u is 0 (points are 1..n)", i);
        for (uint32_t k = i + 1; k < m; k++)
            if (xs[i] % FL_SECAGG_P == xs[k] % FL_SECAGG_P)
                return fl_error_set(FL_EINVAL, "lagrange: point %llu given twice",
                                    (unsigned long long)xs[i]);
    }
    /* lambda_i = prod_{k != i} x_k / (x_k - x_i)  (value at 0) */
    for (uint32_t i = 0; i < m; i++) {
        uint64_t num = 1, den = 1, xi = xs[i] % FL_SECAGG_P;
        for (uint32_t k = 0; k < m; k++) {
            if (k == i)
                continue;
            uint64_t xk = xs[k] % FL_SECAGG_P;
            num = fl_secagg_fp_mul(num, xk);
            den = fl_secagg_fp_mul(den, fl_secagg_fp_sub(xk, xi));
        }
        lambda[i] = fl_secagg_fp_mul(num, fl_secagg_fp_inv(den));
    }
    return FL_OK;
}

uint64_t fl_secagg_interpolate0(const uint64_t *lambda, const uint64_t *ys, size_t stride,
                                uint32_t m)
{
    uint64_t acc = 0;
    for (uint32_t i = 0; i < m; i++)
        acc = fl_secagg_fp_add(acc, fl_secagg_fp_mul(lambda[i], ys[(size_t)i * stride]));
    return acc;
}

int fl_secagg_shamir_combine(uint8_t secret[32], const uint64_t *xs, const uint64_t *shares,
                             uint32_t m)
{
    if (m == 0 || m > FL_SECAGG_MAX_PARTIES)
        return fl_error_set(FL_EINVAL, "shamir combine: %u shares (need 1..%u)", m,
                            FL_SECAGG_MAX_PARTIES);
    uint64_t *lambda = sodium_allocarray(m, sizeof *lambda);
    if (!lambda)
        return fl_error_set(FL_ENOMEM, "shamir combine: out of guarded memory");
    int rc = fl_secagg_lagrange0(lambda, xs, m);
    for (uint32_t j = 0; rc == FL_OK && j < FL_SECAGG_LIMBS; j++) {
        uint64_t v = fl_secagg_interpolate0(lambda, shares + j, FL_SECAGG_LIMBS, m);
        if (v > UINT32_MAX) {
            sodium_memzero(secret, 32);
            rc = fl_error_set(FL_EPROTO, "shamir combine: limb %u does not fit 32 bits: the "
                                         "shares are inconsistent or too few", j);
            break;
        }
        fl_secagg_put32(secret + 4 * j, (uint32_t)v);
    }
    sodium_free(lambda);
    return rc;
}
