/*
 * fl_noise: CSPRNG-backed Gaussian noise and uniforms for DP-SGD.
 *
 * Random bytes come from libsodium in blocks of S_BLOCK 64-bit words: each
 * block is the ChaCha20 keystream of randombytes_buf_deterministic under a
 * fresh 32-byte seed from randombytes_buf (the construction libsodium's
 * own internal generator uses), because the system generator behind
 * randombytes_buf delivers only ~170 MB/s here, below what 5 M samples/s
 * need.  Every block and seed is wiped after use because anyone who learns
 * the raw bits can subtract the noise.
 *
 * Gaussian noise is the discrete Gaussian N_Z(0, s^2) of Canonne, Kamath &
 * Steinke 2020 ("The discrete Gaussian for differential privacy", CKS),
 * sampled by their Algorithm 3 (rejection from the discrete Laplace of
 * Algorithm 2) on the grid gamma*Z, s = stddev/gamma in [2^28, 2^29).  The
 * input is first rounded to the grid by unbiased randomized rounding, so
 * the output gamma*(R(x/gamma) + Z) is an exact grid value whose
 * distribution depends on x only through the integer R(x/gamma): the
 * floating-point attack of Mironov 2012 (reachable output sets that
 * depend on the input) does not apply.  All accept/reject decisions are
 * exact Bernoulli trials of double-precision probabilities, decided by
 * comparing CSPRNG bytes with the probability's binary expansion
 * (s_bern); the only approximation is that exp() is correct to ~1 ulp,
 * which docs/privacy-accounting.md bounds.
 */
#include "dp/fl_noise.h"
#include "dp/fl_noise_internal.h"

#include <math.h>
#include <stdint.h>

#include <sodium.h>

#define S_BLOCK 512 /* 64-bit words per refill (4 KiB) */

#define S_GRID_BITS 28 /* stddev/gamma in [2^28, 2^29) */
#define S_EXP_M1 0.36787944117144233 /* exp(-1), correctly rounded */

typedef struct {
    uint64_t buf[S_BLOCK];
    size_t pos;
    uint64_t bits; /* reservoir for single random bits */
    unsigned nbits;
    const uint8_t *bp; /* byte cursor into cur */
    size_t nbytes;
    uint64_t cur;
} s_rng;

static int s_init(void)
{
    if (sodium_init() < 0)
        return fl_error_set(FL_ECRYPTO, "fl_noise: sodium_init failed; "
                            "the CSPRNG is unavailable, no noise can be drawn");
    return FL_OK;
}

static void s_rng_start(s_rng *r)
{
    r->pos = S_BLOCK;
    r->nbits = 0;
    r->nbytes = 0;
}

static uint64_t s_rng_u64(s_rng *r)
{
    if (r->pos == S_BLOCK) {
        unsigned char seed[randombytes_SEEDBYTES];
        randombytes_buf(seed, sizeof seed);
        randombytes_buf_deterministic(r->buf, sizeof r->buf, seed);
        sodium_memzero(seed, sizeof seed);
        r->pos = 0;
    }
    return r->buf[r->pos++];
}

/* Uniform on {0, 2^-53, ..., 1 - 2^-53}: the top 53 bits of a 64-bit word,
 * exactly representable in a double. */
static double s_rng_uniform(s_rng *r)
{
    return (double)(s_rng_u64(r) >> 11) * 0x1p-53;
}

static void s_rng_wipe(s_rng *r)
{
    sodium_memzero(r, sizeof *r);
}

int fl_noise_uniform(double *out, size_t n)
{
    int rc = FL_OK;
    s_rng r;

    if (n == 0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_uniform: out is NULL with n=%zu", n);
    if ((rc = s_init()) != FL_OK)
        return rc;
    s_rng_start(&r);
    for (size_t i = 0; i < n; i++)
        out[i] = s_rng_uniform(&r);
    s_rng_wipe(&r);
    return FL_OK;
}

/* One CSPRNG byte (8 buffered bytes from a 64-bit word at a time). */
static unsigned s_rng_byte(s_rng *r)
{
    if (r->nbytes == 0) {
        r->cur = s_rng_u64(r);
        r->bp = (const uint8_t *)&r->cur;
        r->nbytes = sizeof r->cur;
    }
    r->nbytes--;
    return *r->bp++;
}

/* One CSPRNG bit. */
static unsigned s_rng_bit(s_rng *r)
{
    if (r->nbits == 0) {
        r->bits = s_rng_u64(r);
        r->nbits = 64;
    }
    r->nbits--;
    unsigned b = (unsigned)(r->bits & 1u);
    r->bits >>= 1;
    return b;
}

/* Exact Bernoulli(p) for the double p: returns 1 iff U < p for a uniform
 * U in [0,1) whose binary digits are drawn lazily (one CSPRNG bit per
 * digit, two on average) and compared with p's digits.  x*2 and x - 1 are
 * exact in double and p has finitely many digits, so the loop ends.  This
 * is the integer-comparison Bernoulli that CKS 2020 (Section 5) ask for,
 * applied to the double nearest the exact probability. */
static int s_bern(s_rng *r, double p)
{
    if (!(p > 0.0))
        return 0;
    if (p >= 1.0)
        return 1;
    double x = p;
    for (;;) {
        x *= 2.0;
        unsigned d = x >= 1.0, b = s_rng_bit(r);
        if (d)
            x -= 1.0;
        if (b != d)
            return b < d;
        if (x == 0.0)
            return 0; /* U equals p's expansion so far, then U >= p */
    }
}

/* Uniform integer in [0, t): t = 2^tbits from buffered bytes when tbits >
 * 0, else libsodium's unbiased randombytes_uniform(t). */
static uint64_t s_rng_below(s_rng *r, uint64_t t, unsigned tbits)
{
    if (tbits == 0)
        return randombytes_uniform((uint32_t)t);
    uint64_t v = 0;
    for (unsigned k = 0; k < tbits; k += 8)
        v = (v << 8) | s_rng_byte(r);
    return v & (t - 1);
}

/* Discrete Laplace P(y) ~ exp(-|y|/t): CKS 2020 Algorithm 2 with s = 1. */
static int64_t s_dlaplace(s_rng *r, uint64_t t, unsigned tbits)
{
    for (;;) {
        uint64_t u = s_rng_below(r, t, tbits);
        if (!s_bern(r, exp(-(double)u / (double)t)))
            continue;
        uint64_t v = 0;
        while (s_bern(r, S_EXP_M1))
            v++;
        uint64_t x = u + t * v;
        unsigned neg = s_rng_bit(r);
        if (neg && x == 0)
            continue;
        return neg ? -(int64_t)x : (int64_t)x;
    }
}

/* Discrete Gaussian N_Z(0, s^2): CKS 2020 Algorithm 3.  Y from the
 * discrete Laplace with scale t is accepted with probability
 * exp(-(|Y| - s^2/t)^2 / (2 s^2)); the accepted Y has P(y) ~
 * exp(-y^2/(2 s^2)) for any t > 0 (t near s makes it fast). */
static int64_t s_dgauss(s_rng *r, double s, uint64_t t, unsigned tbits)
{
    double s2 = s * s, c = s2 / (double)t;
    for (;;) {
        int64_t y = s_dlaplace(r, t, tbits);
        double a = fabs((double)y) - c;
        if (s_bern(r, exp(-a * a / (2.0 * s2))))
            return y;
    }
}

double fl_noise_grid(double stddev)
{
    if (!isfinite(stddev) || !(stddev > 0.0))
        return 0.0;
    int e = 0;
    (void)frexp(stddev, &e); /* stddev in [2^(e-1), 2^e) */
    return ldexp(1.0, e - 1 - S_GRID_BITS);
}

int fl_noise_sample_discrete_gaussian(double sigma_z, int64_t *out, size_t n)
{
    int rc = FL_OK;
    s_rng r;

    if (!isfinite(sigma_z) || !(sigma_z > 0.0) || sigma_z >= 2147483648.0)
        return fl_error_set(FL_EINVAL, "fl_noise_sample_discrete_gaussian: sigma_z=%g must "
                            "be in (0, 2^31)", sigma_z);
    if (n == 0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_sample_discrete_gaussian: out is NULL "
                            "with n=%zu", n);
    if ((rc = s_init()) != FL_OK)
        return rc;
    s_rng_start(&r);
    uint64_t t = (uint64_t)floor(sigma_z) + 1; /* CKS 2020 Alg. 3's choice */
    for (size_t i = 0; i < n; i++)
        out[i] = s_dgauss(&r, sigma_z, t, 0);
    s_rng_wipe(&r);
    return FL_OK;
}

/* The shared core: each out[i] becomes gamma * (R(out[i]/gamma) + Z). */
static int s_add_grid_gaussian(s_rng *rp, double *v, size_t n, double stddev,
                               const char *fn)
{
    double gamma = fl_noise_grid(stddev);
    double s = stddev / gamma; /* exact: gamma is a power of two */
    /* Laplace scale t: the power of two nearest s (any t > 0 is exact in
     * CKS Alg. 3; t near s maximises acceptance, and a power of two lets
     * U be drawn from raw bits). */
    unsigned tbits = s < 0x1.6a09e667f3bcdp+28 ? S_GRID_BITS : S_GRID_BITS + 1;
    uint64_t t = (uint64_t)1 << tbits;

    for (size_t i = 0; i < n; i++)
        if (!(fabs(v[i]) < ldexp(gamma, 52)))
            return fl_error_set(FL_ERANGE, "%s: value %g at index %zu is too large (or not "
                                "finite) for noise stddev %g (grid %g): it must be below "
                                "2^52 grid steps", fn, v[i], i, stddev, gamma);
    for (size_t i = 0; i < n; i++) {
        /* Unbiased randomized rounding to the grid: floor(x) + Bernoulli
         * of the fractional part, both exact in double for |x| < 2^52. */
        double x = v[i] / gamma;
        double f = floor(x);
        double k = f + (double)s_bern(rp, x - f);
        /* k + z is an integer below 2^53 in magnitude with overwhelming
         * probability (|z| < 2^53 - 2^52 means 2^23 standard deviations),
         * so the sum and the power-of-two scaling are exact. */
        v[i] = (k + (double)s_dgauss(rp, s, t, tbits)) * gamma;
    }
    return FL_OK;
}

int fl_noise_add_gaussian_f64(double *out, size_t n, double stddev)
{
    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_f64: stddev=%g must be "
                            "finite and >= 0", stddev);
    if (n == 0 || stddev == 0.0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_f64: out is NULL with n=%zu",
                            n);
    int rc = s_init();
    s_rng r;
    if (rc != FL_OK)
        return rc;
    s_rng_start(&r);
    rc = s_add_grid_gaussian(&r, out, n, stddev, "fl_noise_add_gaussian_f64");
    s_rng_wipe(&r);
    return rc;
}

int fl_noise_add_gaussian(float *out, size_t n, double stddev)
{
    int rc = FL_OK;
    double tmp[256];
    s_rng r;

    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian: stddev=%g must be "
                            "finite and >= 0", stddev);
    if (n == 0 || stddev == 0.0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian: out is NULL with n=%zu", n);
    /* Check every value first so an error leaves `out` untouched. */
    double lim = ldexp(fl_noise_grid(stddev), 52);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)out[i]) < lim))
            return fl_error_set(FL_ERANGE, "fl_noise_add_gaussian: value %g at index %zu is "
                                "too large (or not finite) for noise stddev %g: it must be "
                                "below 2^52 grid steps of %g", (double)out[i], i, stddev,
                                fl_noise_grid(stddev));
    if ((rc = s_init()) != FL_OK)
        return rc;
    s_rng_start(&r);
    /* Work in double chunks: the grid value is exact in double; rounding
     * it to float afterwards is post-processing of the released value. */
    for (size_t off = 0; off < n && rc == FL_OK; off += 256) {
        size_t m = n - off < 256 ? n - off : 256;
        for (size_t i = 0; i < m; i++)
            tmp[i] = (double)out[off + i];
        rc = s_add_grid_gaussian(&r, tmp, m, stddev, "fl_noise_add_gaussian");
        if (rc == FL_OK)
            for (size_t i = 0; i < m; i++)
                out[off + i] = (float)tmp[i];
    }
    sodium_memzero(tmp, sizeof tmp);
    s_rng_wipe(&r);
    return rc;
}
