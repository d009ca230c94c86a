/*
 * fl_noise: CSPRNG-backed Gaussian noise and random words for DP-SGD.
 *
 * Random bytes come in blocks of up to S_BLOCK 64-bit words: each block
 * is the ChaCha20 keystream (RFC 8439; counter 0, nonce "LibsodiumDRG")
 * under a fresh 32-byte seed from libsodium's randombytes_buf -- exactly
 * what libsodium's randombytes_buf_deterministic(seed) returns, the
 * construction of libsodium's own internal generator -- because the
 * system generator behind randombytes_buf delivers only ~170 MB/s here.
 * The keystream is computed by keystream/fl_keystream (OpenSSL's
 * ChaCha20, ~5.6 GB/s here with a fresh seed per 64 KiB, against ~2.0
 * GB/s for libsodium 1.0.18, its bit-identical fallback).  Every block
 * and seed is wiped after use, and the cipher context is re-keyed with
 * zeros, because anyone who learns the raw bits can subtract the noise.
 *
 * Gaussian noise lives on the grid gamma*Z, gamma = fl_noise_grid(stddev),
 * s = stddev/gamma in [2^28, 2^29).  The input is first rounded to the
 * grid by unbiased randomized rounding, so the output gamma*(R(x/gamma) +
 * Z) is an exact grid value whose distribution depends on x only through
 * the integer R(x/gamma): the floating-point attack of Mironov 2012 does
 * not apply.
 *
 * Z is the discrete Gaussian N_Z(0, s^2) up to a total-variation error
 * below 2^-93 per sample (docs/privacy-accounting.md, "Sampler"), drawn as
 *     Z = X0 + K (X1 + K X2),   X_j i.i.d. ~ N_Z(0, s_b^2),
 *     K = 511, s_b = s / sqrt(1 + K^2 + K^4) in [1028, 2057),
 * the convolution construction of Micciancio & Walter 2017 ("Gaussian
 * sampling over the integers", Sec. 5; Peikert 2010 Thm 3.1): by Poisson
 * summation its pmf is within a factor 1 +- 2^-112 of N_Z(0, s^2)
 * pointwise, because the "smoothing" width tau = s_b / sqrt(1 + K^2) is
 * >= 2.01 (error 2 exp(-2 pi^2 tau^2)).  Each X_j comes from an exact
 * Walker/Vose alias table over |X| <= ceil(13 s_b) (plus a sign bit) whose
 * weights are exp() values computed in double-double arithmetic and held
 * as 127-bit integers: one 32-bit CSPRNG draw and one 4-byte table load
 * per X_j in the common case.  Tables depend only on s_b (a public
 * function of stddev) and are cached per thread (S_CACHE_N entries keyed
 * by s_b).
 *
 * The exact CKS 2020 sampler (Canonne, Kamath & Steinke, "The discrete
 * Gaussian for differential privacy", Algorithm 3) is kept for
 * fl_noise_sample_discrete_gaussian (small sigma, tests) and as the
 * benchmark baseline fl_noise_add_gaussian_cks_f64.
 */
#include "dp/fl_noise.h"
#include "dp/fl_noise_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keystream/fl_keystream.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define S_X86 1
#else
#define S_X86 0
#endif

#define S_BLOCK 8192 /* max 64-bit words per refill (64 KiB: keying costs ~1 us) */
#define S_BLOCK_MIN 64

#define S_GRID_BITS 28 /* stddev/gamma in [2^28, 2^29) */
#define S_EXP_M1 0.36787944117144233 /* exp(-1), correctly rounded */

/* Convolution Z = X0 + K (X1 + K X2): s^2 = s_b^2 (1 + K^2 + K^4). */
#define S_K 511
#define S_Q 68184437763.0 /* 1 + K^2 + K^4, exact in double */
#define S_TAB_BITS 15 /* alias columns: 2^15 >= ceil(13 * 2057) + 2 */
#define S_TAB_N (1u << S_TAB_BITS)
#define S_DUMMY (S_TAB_N - 1u) /* rejection outcome holding the rounding slack */
#define S_TAIL 13.0 /* support |X| <= ceil(13 s_b): tail mass < 2^-125 */
#define S_CACHE_N 4

__extension__ typedef unsigned __int128 s_u128;
__extension__ typedef __int128 s_i128;

typedef struct {
    uint64_t buf[S_BLOCK];
    size_t pos, len;
    size_t want; /* words the caller still expects: sizes the next refill */
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

/* want: how many words the caller expects to use (a hint; small calls
 * then do not pay for a whole 64 KiB keystream block). */
static void s_rng_start(s_rng *r, size_t want)
{
    r->pos = 0;
    r->len = 0;
    r->want = want;
    r->nbits = 0;
    r->nbytes = 0;
}

/* Test hooks (fl_noise_internal.h): a per-thread deterministic source
 * for the block seeds, a per-thread count of SIMD blocks redone by the
 * scalar code, and a process-wide SIMD switch. */
static _Thread_local int s_test_seeded;
static _Thread_local unsigned char s_test_key[crypto_generichash_KEYBYTES];
static _Thread_local uint64_t s_test_ctr;
static _Thread_local size_t s_simd_redos;
static atomic_int s_simd_on = FL_NOISE_SIMD_BEST;

static void s_rng_refill(s_rng *r)
{
    unsigned char seed[randombytes_SEEDBYTES];
    size_t len = r->want < S_BLOCK_MIN ? S_BLOCK_MIN : r->want > S_BLOCK ? S_BLOCK : r->want;
    r->want = r->want > len ? r->want - len : 0;
    if (r->len > len)
        sodium_memzero(r->buf + len, (r->len - len) * sizeof r->buf[0]);
    if (__builtin_expect(s_test_seeded, 0)) {
        /* test only: seed = BLAKE2b keyed by the test seed, of a block
         * counter, so a test can replay the same keystream */
        unsigned char ctr[8];
        for (int k = 0; k < 8; k++)
            ctr[k] = (unsigned char)(s_test_ctr >> (8 * k));
        s_test_ctr++;
        (void)crypto_generichash(seed, sizeof seed, ctr, sizeof ctr, s_test_key,
                                 sizeof s_test_key);
    } else {
        randombytes_buf(seed, sizeof seed);
    }
    /* randombytes_buf_deterministic's stream: nonce "LibsodiumDRG", block 0.
     * fl_chacha20_ietf falls back to libsodium itself; it refuses only
     * NULL buffers and counter wrap-around, impossible for <= 64 KiB from
     * block 0, so a refusal is a bug: never continue without noise. */
    static const uint8_t drg_nonce[12] = {'L', 'i', 'b', 's', 'o', 'd',
                                          'i', 'u', 'm', 'D', 'R', 'G'};
    if (fl_chacha20_ietf((uint8_t *)r->buf, len * sizeof r->buf[0], drg_nonce, 0, seed) != FL_OK)
        abort();
    sodium_memzero(seed, sizeof seed);
    r->len = len;
    r->pos = 0;
}

static inline uint64_t s_rng_u64(s_rng *r)
{
    if (r->pos >= r->len)
        s_rng_refill(r);
    return r->buf[r->pos++];
}

static void s_rng_wipe(s_rng *r)
{
    sodium_memzero(r->buf, r->len * sizeof r->buf[0]);
    sodium_memzero(&r->bits, sizeof *r - offsetof(s_rng, bits));
    r->len = r->pos = 0;
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
    s_rng_start(&r, SIZE_MAX);
    uint64_t t = (uint64_t)floor(sigma_z) + 1; /* CKS 2020 Alg. 3's choice */
    for (size_t i = 0; i < n; i++)
        out[i] = s_dgauss(&r, sigma_z, t, 0);
    s_rng_wipe(&r);
    return FL_OK;
}

/* ---- double-double arithmetic (table construction only) -------------
 * A value is hi + lo with |lo| <= ulp(hi)/2: ~106 significant bits.
 * Error-free transformations of Knuth (two_sum) and via fma (two_prod);
 * the add is the "IEEE" variant of the QD library (Hida, Li & Bailey
 * 2001), relative error <= 2^-104 per operation. */
typedef struct {
    double hi, lo;
} s_dd;

static s_dd s_two_sum(double a, double b)
{
    double s = a + b, bb = s - a;
    return (s_dd){s, (a - (s - bb)) + (b - bb)};
}

static s_dd s_quick_two_sum(double a, double b) /* |a| >= |b| */
{
    double s = a + b;
    return (s_dd){s, b - (s - a)};
}

static s_dd s_dd_add(s_dd a, s_dd b)
{
    s_dd s = s_two_sum(a.hi, b.hi), t = s_two_sum(a.lo, b.lo);
    s.lo += t.hi;
    s = s_quick_two_sum(s.hi, s.lo);
    s.lo += t.lo;
    return s_quick_two_sum(s.hi, s.lo);
}

static s_dd s_dd_neg(s_dd a)
{
    return (s_dd){-a.hi, -a.lo};
}

static s_dd s_dd_mul(s_dd a, s_dd b)
{
    double p = a.hi * b.hi, e = fma(a.hi, b.hi, -p);
    e += a.hi * b.lo + a.lo * b.hi;
    return s_quick_two_sum(p, e);
}

static s_dd s_dd_div(s_dd a, s_dd b)
{
    /* Three-term long division (QD's accurate dd division). */
    double q1 = a.hi / b.hi;
    s_dd r = s_dd_add(a, s_dd_neg(s_dd_mul(b, (s_dd){q1, 0.0})));
    double q2 = r.hi / b.hi;
    r = s_dd_add(r, s_dd_neg(s_dd_mul(b, (s_dd){q2, 0.0})));
    double q3 = r.hi / b.hi;
    return s_dd_add(s_quick_two_sum(q1, q2), (s_dd){q3, 0.0});
}

static s_dd s_dd_scale(s_dd a, int e) /* a * 2^e, exact barring underflow */
{
    return (s_dd){ldexp(a.hi, e), ldexp(a.lo, e)};
}

/* exp(-x) for 0 <= x <= ~100 in double-double: x = m ln2 + r, |r| <=
 * ln2/2; exp(-r) = (sum_{j<=16} t^j/j!)^16 with t = -r/16, |t| < 0.022
 * (truncation < 0.022^17/17! < 2^-140); then * 2^-m.  ln2 as a double-
 * double is accurate to 2^-107, times m <= 150.  Measured against 50-digit
 * decimal exp (docs/privacy-accounting.md): relative error < 2^-100. */
static s_dd s_dd_exp_neg(s_dd x)
{
    static const s_dd ln2 = {0x1.62e42fefa39efp-1, 0x1.abc9e3b39803fp-56};
    double m = nearbyint(x.hi / ln2.hi);
    s_dd r = s_dd_add(x, s_dd_neg(s_dd_mul(ln2, (s_dd){m, 0.0})));
    s_dd t = s_dd_scale(s_dd_neg(r), -4), p = {1.0, 0.0};
    for (int j = 16; j >= 1; j--)
        p = s_dd_add((s_dd){1.0, 0.0}, s_dd_div(s_dd_mul(p, t), (s_dd){(double)j, 0.0}));
    for (int j = 0; j < 4; j++)
        p = s_dd_mul(p, p);
    return s_dd_scale(p, -(int)m);
}

/* Truncation of a double-double >= 0 (below 2^127) to an integer; the
 * error is below 2 units (one per part). */
static s_u128 s_dd_to_u128(s_dd v)
{
    s_i128 acc = 0;
    for (int part = 0; part < 2; part++) {
        double x = part ? v.lo : v.hi, a = fabs(x);
        s_u128 q;
        if (a < 0x1p63) {
            q = (s_u128)(uint64_t)a;
        } else {
            int e = 0;
            double m = frexp(a, &e); /* a = m 2^e, e in [64, 127] */
            q = (s_u128)(uint64_t)ldexp(m, 53) << (e - 53);
        }
        acc += x < 0 ? -(s_i128)q : (s_i128)q;
    }
    return acc < 0 ? 0 : (s_u128)acc;
}

/* ---- alias tables ------------------------------------------------------ */

/* An alias table for |X|, X ~ N_Z(0, s_b^2): column c (chosen by 15
 * uniform bits) returns c if a uniform 112-bit U is below T_c, else its
 * alias.  T_c is split as top 16 bits (in tab, next to the 15-bit alias),
 * middle 64 and low 32 bits (read only on a tie, probability 2^-16). */
typedef struct {
    double sb; /* base sigma; 0 marks an empty slot */
    uint32_t *tab; /* (T_c >> 96) << 16 | alias_c */
    uint64_t *mid; /* bits 95..32 of T_c */
    uint32_t *lo; /* bits 31..0 of T_c */
    unsigned long stamp;
} s_table;

/* Per-thread, so concurrent callers never share or race; an entry is
 * used only for exactly its s_b.  Tables are public (they depend only on
 * stddev), so they are freed without wiping. */
static _Thread_local s_table s_cache[S_CACHE_N];
static _Thread_local unsigned long s_clock;

static void s_table_free(s_table *t)
{
    free(t->tab);
    free(t->mid);
    free(t->lo);
    memset(t, 0, sizeof *t);
}

void fl_noise_cache_free(void)
{
    for (size_t i = 0; i < S_CACHE_N; i++)
        s_table_free(&s_cache[i]);
}

static void s_table_set(s_table *t, uint32_t c, s_u128 thr, uint32_t alias)
{
    t->tab[c] = (uint32_t)(thr >> 96) << 16 | alias;
    t->mid[c] = (uint64_t)(thr >> 32);
    t->lo[c] = (uint32_t)thr;
}

/* Builds the table of |X| for X ~ N_Z(0, sb^2), sb in [1028, 2057).
 * Weights w_0 = 1, w_k = 2 exp(-k^2 / (2 sb^2)) for 1 <= k <= kmax
 * (double-double), scaled by ~2^127 (1 - 2^-70) / sum(w) and truncated to
 * integers a_k; the slack 2^127 - sum(a) (about 2^57) goes to the dummy
 * outcome S_DUMMY, which the sampler rejects, so the sampled law is
 * exactly a_k / sum(a).  Vose's alias construction then runs in exact
 * 128-bit integer arithmetic with column capacity 2^112 (2^15 columns):
 * no rounding at all after the a_k. */
static int s_table_build(s_table *t, double sb)
{
    int rc = FL_OK;
    const s_u128 cap = (s_u128)1 << 112, total = (s_u128)1 << 127;
    uint32_t kmax = (uint32_t)ceil(S_TAIL * sb);
    s_dd *w = NULL;
    s_u128 *a = NULL;
    uint32_t *small = NULL, *large = NULL;

    memset(t, 0, sizeof *t);
    if (!(sb >= 1000.0 && kmax + 1 < S_DUMMY))
        return fl_error_set(FL_EINVAL, "fl_noise: base sigma %g outside the table range", sb);
    w = malloc((kmax + 1) * sizeof *w);
    a = calloc(S_TAB_N, sizeof *a);
    small = malloc(S_TAB_N * sizeof *small);
    large = malloc(S_TAB_N * sizeof *large);
    t->tab = malloc(S_TAB_N * sizeof *t->tab);
    t->mid = malloc(S_TAB_N * sizeof *t->mid);
    t->lo = malloc(S_TAB_N * sizeof *t->lo);
    if (!w || !a || !small || !large || !t->tab || !t->mid || !t->lo) {
        rc = fl_error_set(FL_ENOMEM, "fl_noise: out of memory building a %u-entry noise "
                          "table for base sigma %g", S_TAB_N, sb);
        goto done;
    }
    double p = sb * sb;
    s_dd two_s2 = {2.0 * p, 2.0 * fma(sb, sb, -p)}; /* 2 sb^2 exactly */
    s_dd sum = {0.0, 0.0};
    for (uint32_t k = 0; k <= kmax; k++) {
        s_dd x = s_dd_div((s_dd){(double)k * (double)k, 0.0}, two_s2);
        w[k] = s_dd_exp_neg(x);
        if (k > 0)
            w[k] = s_dd_scale(w[k], 1);
    }
    for (uint32_t k = kmax + 1; k-- > 0;) /* smallest first */
        sum = s_dd_add(sum, w[k]);
    s_dd scale = s_dd_div((s_dd){0x1p127, -0x1p57}, sum);
    s_u128 acc = 0;
    for (uint32_t k = 0; k <= kmax; k++) {
        a[k] = s_dd_to_u128(s_dd_mul(w[k], scale));
        acc += a[k];
    }
    if (acc > total || total - acc > total >> 40) {
        rc = fl_error_set(FL_ERANGE, "fl_noise: noise table for base sigma %g does not "
                          "normalise (internal error)", sb);
        goto done;
    }
    a[S_DUMMY] = total - acc;
    /* Vose 1991: pair a column under capacity with one over it. */
    size_t ns = 0, nl = 0;
    for (uint32_t c = 0; c < S_TAB_N; c++) {
        if (a[c] < cap)
            small[ns++] = c;
        else
            large[nl++] = c;
    }
    while (ns > 0 && nl > 0) {
        uint32_t s = small[--ns], l = large[nl - 1];
        s_table_set(t, s, a[s], l);
        a[l] -= cap - a[s];
        if (a[l] < cap) {
            nl--;
            small[ns++] = l;
        }
    }
    /* Exact arithmetic leaves only full columns (a = cap): own value
     * always (threshold cap - 1 with alias = itself). */
    while (nl > 0) {
        uint32_t l = large[--nl];
        s_table_set(t, l, cap - 1, l);
    }
    while (ns > 0) {
        uint32_t s = small[--ns];
        s_table_set(t, s, cap - 1, s);
    }
    t->sb = sb;
done:
    free(w);
    free(a);
    free(small);
    free(large);
    if (rc != FL_OK)
        s_table_free(t);
    return rc;
}

/* The base sigma for noise of standard deviation stddev > 0: s_b =
 * s / sqrt(Q), rounded up by two ulps so the realised s_b sqrt(Q) is >= s
 * (at most 2^-50 relative above it: slightly more noise, never less). */
static double s_base_sigma(double stddev)
{
    double s = stddev / fl_noise_grid(stddev);
    double sb = s / sqrt(S_Q);
    return nextafter(nextafter(sb, INFINITY), INFINITY);
}

static int s_table_get(double stddev, const s_table **out)
{
    double sb = s_base_sigma(stddev);
    s_table *victim = &s_cache[0];
    for (size_t i = 0; i < S_CACHE_N; i++) {
        if (s_cache[i].sb == sb) {
            s_cache[i].stamp = ++s_clock;
            *out = &s_cache[i];
            return FL_OK;
        }
        if (s_cache[i].stamp < victim->stamp)
            victim = &s_cache[i];
    }
    s_table_free(victim);
    int rc = s_table_build(victim, sb);
    if (rc != FL_OK)
        return rc;
    victim->stamp = ++s_clock;
    *out = victim;
    return FL_OK;
}

/* |X| from the 32-bit draw r (bits 31..17 column, 15..0 compared with the
 * threshold's top 16 bits) on a tie or the dummy outcome: finishes the
 * comparison with fresh words, and replaces a dummy outcome by a fresh
 * draw (rejection: the law of the result is exactly a_k / sum(a)). */
static uint32_t s_base_slow(const s_table *t, uint32_t r, s_rng *rng)
{
    for (;;) {
        uint32_t c = r >> 17, u = r & 0xffffu, e = t->tab[c], thr = e >> 16, v;
        if (u != thr) {
            v = u < thr ? c : (e & 0xffffu);
        } else {
            uint64_t m = s_rng_u64(rng);
            if (m != t->mid[c])
                v = m < t->mid[c] ? c : (e & 0xffffu);
            else
                v = (uint32_t)s_rng_u64(rng) < t->lo[c] ? c : (e & 0xffffu);
        }
        if (v != S_DUMMY)
            return v;
        r = (uint32_t)s_rng_u64(rng);
    }
}

/* X ~ N_Z(0, s_b^2) (up to the table's TV error) from the 32-bit draw r:
 * bit 16 is the sign (unused by the column choice and the comparison, so
 * still uniform on a tie or a rejection). */
static inline int64_t s_base(const s_table *t, uint32_t r, s_rng *rng)
{
    uint32_t c = r >> 17, u = r & 0xffffu, e = t->tab[c], thr = e >> 16;
    uint32_t v = u < thr ? c : (e & 0xffffu);
    if (__builtin_expect(u == thr || v == S_DUMMY, 0))
        v = s_base_slow(t, r, rng);
    int64_t neg = -(int64_t)((r >> 16) & 1u);
    return ((int64_t)v ^ neg) - neg;
}

/* Z ~ N_Z(0, s^2) from two CSPRNG words: three base draws from w1 and the
 * top half of w2 (the low half of w2 is left for the caller's rounding). */
static inline int64_t s_grid_z(const s_table *t, uint64_t w1, uint64_t w2, s_rng *rng)
{
    int64_t x0 = s_base(t, (uint32_t)(w1 >> 32), rng);
    int64_t x1 = s_base(t, (uint32_t)w1, rng);
    int64_t x2 = s_base(t, (uint32_t)(w2 >> 32), rng);
    return x0 + S_K * (x1 + S_K * x2);
}

static inline void s_rng_pair(s_rng *r, uint64_t *w1, uint64_t *w2)
{
    if (r->pos + 2 > r->len)
        s_rng_refill(r); /* a leftover word, if any, is simply skipped */
    *w1 = r->buf[r->pos];
    *w2 = r->buf[r->pos + 1];
    r->pos += 2;
}

static int s_check_range(const double *v, size_t n, double stddev, double gamma,
                         const char *fn)
{
    double lim = ldexp(gamma, 52);
    int bad = 0;
    for (size_t i = 0; i < n; i++) /* no early exit: a branch-free pass */
        bad |= !(fabs(v[i]) < lim);
    if (!bad)
        return FL_OK;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(v[i]) < lim))
            return fl_error_set(FL_ERANGE, "%s: value %g at index %zu is too large (or not "
                                "finite) for noise stddev %g (grid %g): it must be below "
                                "2^52 grid steps", fn, v[i], i, stddev, gamma);
    return FL_OK;
}

/* Unbiased randomized rounding of x = v/gamma (exact: gamma is a power of
 * two) given the 32-bit CSPRNG word u, done on |x| and mirrored: the same
 * law as floor(x) + Bernoulli(frac x).  a - f is exact (Sterbenz for a >=
 * 1), the Bernoulli is exact: U = (u + U')/2^32 < f iff u < the top 32
 * bits of f, or on equality U' < the rest (s_bern, which draws U' lazily
 * from rp).  Shared by the inline path and prepared batches so both have
 * the same law by construction. */
static inline int64_t s_round(double x, uint32_t u, s_rng *rp)
{
    double a = fabs(x);
    int64_t f = (int64_t)a;
    double fr = a - (double)f, F = fr * 0x1p32;
    uint32_t fi = (uint32_t)F;
    int64_t k = f + (u < fi);
    if (__builtin_expect(u == fi, 0))
        k = f + s_bern(rp, F - (double)fi);
    return x < 0 ? -k : k;
}

/* The shared core: each v[i] (already range-checked) becomes
 * gamma * (R(v[i]/gamma) + Z). */
static void s_add_grid_gaussian(s_rng *rp, const s_table *t, double *v, size_t n,
                                double gamma)
{
    /* A power of two, so x * inv is exact -- unless gamma < 2^-1023
     * (stddev below ~1e-300), where 1/gamma overflows: divide then. */
    const double inv = 1.0 / gamma;
    const int divide = !(inv < INFINITY);
    for (size_t i = 0; i < n; i++) {
        uint64_t w1, w2;
        s_rng_pair(rp, &w1, &w2);
        double x = divide ? v[i] / gamma : v[i] * inv;
        int64_t k = s_round(x, (uint32_t)w2, rp);
        /* |k| <= 2^52 and |Z| <= 26729 (1 + K + K^2) < 2^33: the sum and
         * its power-of-two scaling are exact in double. */
        v[i] = (double)(k + s_grid_z(t, w1, w2, rp)) * gamma;
    }
}

/* The pre-table path: CKS Algorithm 3 per sample (benchmark baseline). */
static int s_cks_add_grid_gaussian(s_rng *rp, double *v, size_t n, double stddev)
{
    double gamma = fl_noise_grid(stddev);
    double s = stddev / gamma;
    unsigned tbits = s < 0x1.6a09e667f3bcdp+28 ? S_GRID_BITS : S_GRID_BITS + 1;
    uint64_t t = (uint64_t)1 << tbits;
    int rc = s_check_range(v, n, stddev, gamma, "fl_noise_add_gaussian_cks_f64");
    if (rc != FL_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        double x = v[i] / gamma;
        double f = floor(x);
        double k = f + (double)s_bern(rp, x - f);
        v[i] = (k + (double)s_dgauss(rp, s, t, tbits)) * gamma;
    }
    return FL_OK;
}

int fl_noise_add_gaussian_cks_f64(double *out, size_t n, double stddev)
{
    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_cks_f64: stddev=%g must be "
                            "finite and >= 0", stddev);
    if (n == 0 || stddev == 0.0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_cks_f64: out is NULL");
    int rc = s_init();
    s_rng r;
    if (rc != FL_OK)
        return rc;
    s_rng_start(&r, SIZE_MAX);
    rc = s_cks_add_grid_gaussian(&r, out, n, stddev);
    s_rng_wipe(&r);
    return rc;
}

int fl_noise_add_gaussian_f64(double *out, size_t n, double stddev)
{
    const s_table *t = NULL;
    s_rng r;

    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_f64: stddev=%g must be "
                            "finite and >= 0", stddev);
    if (n == 0 || stddev == 0.0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian_f64: out is NULL with n=%zu",
                            n);
    double gamma = fl_noise_grid(stddev);
    int rc = s_check_range(out, n, stddev, gamma, "fl_noise_add_gaussian_f64");
    if (rc == FL_OK)
        rc = s_init();
    if (rc == FL_OK)
        rc = s_table_get(stddev, &t);
    if (rc != FL_OK)
        return rc;
    s_rng_start(&r, 2 * n + 2);
    s_add_grid_gaussian(&r, t, out, n, gamma);
    s_rng_wipe(&r);
    return FL_OK;
}

int fl_noise_add_gaussian(float *out, size_t n, double stddev)
{
    int rc = FL_OK;
    double tmp[256];
    const s_table *t = NULL;
    s_rng r;

    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian: stddev=%g must be "
                            "finite and >= 0", stddev);
    if (n == 0 || stddev == 0.0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_add_gaussian: out is NULL with n=%zu", n);
    /* Check every value first so an error leaves `out` untouched. */
    double gamma = fl_noise_grid(stddev), lim = ldexp(gamma, 52);
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)out[i]) < lim))
            return fl_error_set(FL_ERANGE, "fl_noise_add_gaussian: value %g at index %zu is "
                                "too large (or not finite) for noise stddev %g: it must be "
                                "below 2^52 grid steps of %g", (double)out[i], i, stddev,
                                gamma);
    if ((rc = s_init()) != FL_OK || (rc = s_table_get(stddev, &t)) != FL_OK)
        return rc;
    s_rng_start(&r, 2 * n + 2);
    /* Work in double chunks: the grid value is exact in double; rounding
     * it to float afterwards is post-processing of the released value. */
    for (size_t off = 0; off < n; off += 256) {
        size_t m = n - off < 256 ? n - off : 256;
        for (size_t i = 0; i < m; i++)
            tmp[i] = (double)out[off + i];
        s_add_grid_gaussian(&r, t, tmp, m, gamma);
        for (size_t i = 0; i < m; i++)
            out[off + i] = (float)tmp[i];
    }
    sodium_memzero(tmp, sizeof tmp);
    s_rng_wipe(&r);
    return FL_OK;
}

/* ---- prepared batches -------------------------------------------------
 * fl_noise_add_gaussian_f64 draws, per coordinate, two CSPRNG words w1, w2:
 * Z from w1 and the top half of w2 (plus, rarely, further words for an
 * alias-table tie or rejection), and the rounding word u from the low
 * half of w2 (plus, with probability 2^-32, further bits for a rounding
 * tie).  None of this depends on the value being noised, so a batch draws
 * Z_i and u_i ahead (fill) and apply does only the rounding and the
 * addition.  Every draw is an independent uniform, so drawing Z_i and u_i
 * on one thread and the tie bits U' on another changes nothing in the
 * joint law of (R(x), Z): apply releases exactly what the inline path
 * releases (Canonne, Kamath & Steinke 2020 discrete Gaussian on the
 * randomized-rounded value; docs/privacy-accounting.md, "Prepared
 * noise").  The privacy argument requires each Z to protect ONE release:
 * reusing Z for two vectors x, y would release x - y without noise, so a
 * filled batch is consumed (and wiped) by its first apply. */

/* The scalar reference for filling: coordinate i takes the words w1, w2
 * of s_rng_pair (plus, rarely, further words in s_base_slow). */
static void s_fill_scalar(s_rng *r, const s_table *t, int64_t *z, uint32_t *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t w1, w2;
        s_rng_pair(r, &w1, &w2);
        /* exactly the words s_add_grid_gaussian uses for coordinate i */
        z[i] = s_grid_z(t, w1, w2, r);
        u[i] = (uint32_t)w2;
    }
}

/* The scalar reference for the fused release of coordinate i (the
 * operations of s_add_grid_gaussian, then the public scaling). */
static inline void s_release_one(s_rng *r, float *sum, int64_t *z, uint32_t *u, size_t i,
                                 double inv, double gamma, double scale, float *out)
{
    double x = inv < INFINITY ? (double)sum[i] * inv : (double)sum[i] / gamma;
    double v = (double)(s_round(x, u[i], r) + z[i]) * gamma;
    out[i] = (float)(v * scale);
    sum[i] = 0.0f;
    z[i] = 0;
    u[i] = 0;
}

/* ---- SIMD kernels (x86-64, chosen at run time) -------------------------
 * Each is a re-implementation of the scalar code above over a block of
 * coordinates that is used ONLY when it provably computes the same
 * values from the same CSPRNG words: a block whose every lane takes the
 * common case (alias table: u != thr and outcome != S_DUMMY; rounding:
 * u != fi) consumes exactly the words the scalar code would and applies
 * the same integer and IEEE-754 operations in round-to-nearest (no
 * product feeds a sum, so no contraction into a fused multiply-add can
 * occur in either code), hence the same outputs.  A block with any other
 * lane is discarded and redone by the scalar code from the block's first
 * word, so it consumes and uses the words exactly as before.  The
 * released law is therefore unchanged: the Walker/Vose (Vose 1991) alias
 * draws of the discrete Gaussian base (Canonne, Kamath & Steinke 2020
 * law, convolution of Micciancio & Walter 2017) and the exact randomized
 * rounding.  The SIMD blocks only read r->buf in place; the secret
 * words are wiped with it as before.  Where the block functions are not
 * usable (other CPUs, other architectures, fl_noise_set_simd) the scalar
 * code runs alone. */

/* The SIMD path to use now: FL_NOISE_SIMD_OFF, _AVX2 or _AVX512 (the
 * best the CPU and OS support, capped by fl_noise_set_simd). */
static int s_simd_level(void)
{
#if S_X86
    int mode = atomic_load_explicit(&s_simd_on, memory_order_relaxed);
    if (mode == FL_NOISE_SIMD_OFF)
        return FL_NOISE_SIMD_OFF;
    if (mode != FL_NOISE_SIMD_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw"))
        return FL_NOISE_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return FL_NOISE_SIMD_AVX2;
#endif
    return FL_NOISE_SIMD_OFF;
}

static int s_simd_avx512(void)
{
    return s_simd_level() == FL_NOISE_SIMD_AVX512;
}

#if S_X86
#define S_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw")))

/* s_base on 16 draws r (one per lane) in the common case; sets bits of
 * *slow for lanes that need s_base_slow (then the result is discarded).
 * The column index r >> 17 < 2^15 = S_TAB_N is in bounds and the table
 * is an aligned uint32_t array. */
S_AVX512 static inline __m512i s_base16(const uint32_t *tab, __m512i r, __mmask16 *slow)
{
    const __m512i lo16 = _mm512_set1_epi32(0xffff);
    __m512i c = _mm512_srli_epi32(r, 17);
    __m512i e = _mm512_i32gather_epi32(c, (const void *)tab, 4);
    __m512i thr = _mm512_srli_epi32(e, 16), u = _mm512_and_si512(r, lo16);
    __mmask16 lt = _mm512_cmplt_epu32_mask(u, thr);
    /* v = u < thr ? c : alias */
    __m512i v = _mm512_mask_blend_epi32(lt, _mm512_and_si512(e, lo16), c);
    *slow |= _mm512_cmpeq_epi32_mask(u, thr) |
             _mm512_cmpeq_epi32_mask(v, _mm512_set1_epi32((int)S_DUMMY));
    __mmask16 neg = _mm512_test_epi32_mask(r, _mm512_set1_epi32(1 << 16));
    return _mm512_mask_sub_epi32(v, neg, _mm512_setzero_si512(), v); /* sign bit 16 */
}

/* 16 coordinates from the 32 words w[0..32) (pairs w1 = w[2i], w2 =
 * w[2i+1], as s_rng_pair hands them out): z[i] = s_grid_z, u[i] =
 * (uint32_t)w2.  Returns 0, writing nothing, if any lane is not in the
 * common case. */
S_AVX512 static int s_fill16_avx512(const uint32_t *tab, const uint64_t *w, int64_t *z,
                                    uint32_t *u)
{
    /* As 32-bit lanes (little-endian) coordinate j holds, at 4j..4j+3:
     * low(w1) = draw of x1, high(w1) = x0, low(w2) = u, high(w2) = x2. */
    const __m512i ix = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28,
                                         1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i iy = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30,
                                         3, 7, 11, 15, 19, 23, 27, 31);
    __m512i a = _mm512_loadu_si512((const void *)w);
    __m512i b = _mm512_loadu_si512((const void *)(w + 8));
    __m512i c = _mm512_loadu_si512((const void *)(w + 16));
    __m512i d = _mm512_loadu_si512((const void *)(w + 24));
    /* x.. = (x1 draws | x0 draws), y.. = (u | x2 draws) of 8 coordinates;
     * the shuffles join coordinates 0..7 (ab) and 8..15 (cd). */
    __m512i xab = _mm512_permutex2var_epi32(a, ix, b);
    __m512i yab = _mm512_permutex2var_epi32(a, iy, b);
    __m512i xcd = _mm512_permutex2var_epi32(c, ix, d);
    __m512i ycd = _mm512_permutex2var_epi32(c, iy, d);
    __m512i r1 = _mm512_shuffle_i64x2(xab, xcd, 0x44);
    __m512i r0 = _mm512_shuffle_i64x2(xab, xcd, 0xee);
    __m512i uw = _mm512_shuffle_i64x2(yab, ycd, 0x44);
    __m512i r2 = _mm512_shuffle_i64x2(yab, ycd, 0xee);
    __mmask16 slow = 0;
    __m512i x0 = s_base16(tab, r0, &slow);
    __m512i x1 = s_base16(tab, r1, &slow);
    __m512i x2 = s_base16(tab, r2, &slow);
    if (slow)
        return 0;
    /* Z = x0 + K (x1 + K x2) with K = 511 = 2^9 - 1, exact: |x1 + K x2|
     * < 2^25 in int32, the rest in int64 (as s_grid_z's int64 sums). */
    __m512i t = _mm512_sub_epi32(_mm512_add_epi32(x1, _mm512_slli_epi32(x2, 9)), x2);
    __m512i tl = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(t));
    __m512i th = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(t, 1));
    __m512i x0l = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(x0));
    __m512i x0h = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(x0, 1));
    __m512i zl = _mm512_add_epi64(x0l, _mm512_sub_epi64(_mm512_slli_epi64(tl, 9), tl));
    __m512i zh = _mm512_add_epi64(x0h, _mm512_sub_epi64(_mm512_slli_epi64(th, 9), th));
    _mm512_storeu_si512((void *)z, zl);
    _mm512_storeu_si512((void *)(z + 8), zh);
    _mm512_storeu_si512((void *)u, uw);
    return 1;
}

/* fl_noise_batch_fill's loop: a block of 16 takes the SIMD path when its
 * 32 words lie in the current keystream block (r->pos + 32 <= r->len: no
 * s_rng_pair in it would refill) and every lane is in the common case;
 * otherwise the scalar code does it, refilling and consuming exactly as
 * it always did. */
S_AVX512 static void s_fill_avx512(s_rng *r, const s_table *t, int64_t *z, uint32_t *u,
                                   size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 16 && r->pos + 32 <= r->len) {
            if (!s_fill16_avx512(t->tab, r->buf + r->pos, z + i, u + i)) {
                s_simd_redos++;
                s_fill_scalar(r, t, z + i, u + i, 16); /* from the same r->pos */
            } else {
                r->pos += 32;
            }
            i += 16;
        } else {
            s_fill_scalar(r, t, z + i, u + i, 1);
            i++;
        }
    }
}

#define S_AVX2 __attribute__((target("avx2")))

/* s_base16 with AVX2 on 8 draws; *slow collects the lanes needing
 * s_base_slow as all-ones.  u and thr are below 2^16, so the signed
 * compare is the unsigned one. */
S_AVX2 static inline __m256i s_base8(const uint32_t *tab, __m256i r, __m256i *slow)
{
    const __m256i lo16 = _mm256_set1_epi32(0xffff);
    __m256i c = _mm256_srli_epi32(r, 17);
    __m256i e = _mm256_i32gather_epi32((const int *)tab, c, 4);
    __m256i thr = _mm256_srli_epi32(e, 16), u = _mm256_and_si256(r, lo16);
    __m256i lt = _mm256_cmpgt_epi32(thr, u);
    __m256i v = _mm256_blendv_epi8(_mm256_and_si256(e, lo16), c, lt); /* u<thr ? c : alias */
    *slow = _mm256_or_si256(*slow, _mm256_or_si256(_mm256_cmpeq_epi32(u, thr),
                            _mm256_cmpeq_epi32(v, _mm256_set1_epi32((int)S_DUMMY))));
    __m256i neg = _mm256_srai_epi32(_mm256_slli_epi32(r, 15), 31); /* -(bit 16) */
    return _mm256_sub_epi32(_mm256_xor_si256(v, neg), neg);      /* as s_base */
}

/* s_fill16_avx512 for 8 coordinates (16 words) with AVX2. */
S_AVX2 static int s_fill8_avx2(const uint32_t *tab, const uint64_t *w, int64_t *z, uint32_t *u)
{
    /* 32-bit lanes of a = w[0..4): low(w1), high(w1), low(w2), high(w2) of
     * coordinates 0 and 1; the permute groups them as 64-bit pairs
     * (x1 draws, x0 draws, u, x2 draws) of the two coordinates. */
    const __m256i ip = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i a = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const void *)w), ip);
    __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const void *)(w + 4)), ip);
    __m256i c = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const void *)(w + 8)), ip);
    __m256i d = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const void *)(w + 12)), ip);
    __m256i lab = _mm256_unpacklo_epi64(a, b), hab = _mm256_unpackhi_epi64(a, b);
    __m256i lcd = _mm256_unpacklo_epi64(c, d), hcd = _mm256_unpackhi_epi64(c, d);
    __m256i r1 = _mm256_permute2x128_si256(lab, lcd, 0x20);
    __m256i uw = _mm256_permute2x128_si256(lab, lcd, 0x31);
    __m256i r0 = _mm256_permute2x128_si256(hab, hcd, 0x20);
    __m256i r2 = _mm256_permute2x128_si256(hab, hcd, 0x31);
    __m256i slow = _mm256_setzero_si256();
    __m256i x0 = s_base8(tab, r0, &slow);
    __m256i x1 = s_base8(tab, r1, &slow);
    __m256i x2 = s_base8(tab, r2, &slow);
    if (!_mm256_testz_si256(slow, slow))
        return 0;
    /* Z = x0 + K (x1 + K x2), K = 2^9 - 1, exact as in s_fill16_avx512 */
    __m256i t = _mm256_sub_epi32(_mm256_add_epi32(x1, _mm256_slli_epi32(x2, 9)), x2);
    __m256i tl = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(t));
    __m256i th = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(t, 1));
    __m256i x0l = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(x0));
    __m256i x0h = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(x0, 1));
    __m256i zl = _mm256_add_epi64(x0l, _mm256_sub_epi64(_mm256_slli_epi64(tl, 9), tl));
    __m256i zh = _mm256_add_epi64(x0h, _mm256_sub_epi64(_mm256_slli_epi64(th, 9), th));
    _mm256_storeu_si256((void *)z, zl);
    _mm256_storeu_si256((void *)(z + 4), zh);
    _mm256_storeu_si256((void *)u, uw);
    return 1;
}

/* s_fill_avx512 with blocks of 8 (16 words). */
S_AVX2 static void s_fill_avx2(s_rng *r, const s_table *t, int64_t *z, uint32_t *u,
                               size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8 && r->pos + 16 <= r->len) {
            if (!s_fill8_avx2(t->tab, r->buf + r->pos, z + i, u + i)) {
                s_simd_redos++;
                s_fill_scalar(r, t, z + i, u + i, 8); /* from the same r->pos */
            } else {
                r->pos += 16;
            }
            i += 8;
        } else {
            s_fill_scalar(r, t, z + i, u + i, 1);
            i++;
        }
    }
}

/* s_release_one on 8 coordinates from i, when inv is finite and no lane
 * has a rounding tie (u == fi, which would draw from r): the same IEEE
 * operations lane by lane (float->double, * inv, fabs, truncation to
 * int64 (|x| < 2^52: exact), a - f, * 2^32, truncation to uint32, the
 * compare, the sign, the int64 sum with Z, int64->double, * gamma,
 * * scale, double->float, all rounding to nearest as the scalar code).
 * Returns 0, writing nothing, on a tie. */
S_AVX512 static int s_release8_avx512(float *sum, int64_t *z, uint32_t *u, double inv,
                                      double gamma, double scale, float *out)
{
    __m512d x = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(sum)), _mm512_set1_pd(inv));
    __m512d a = _mm512_abs_pd(x);
    __m512i f = _mm512_cvttpd_epi64(a);
    __m512d fr = _mm512_sub_pd(a, _mm512_cvtepi64_pd(f));
    __m512d F = _mm512_mul_pd(fr, _mm512_set1_pd(0x1p32));
    __m256i fi = _mm512_cvttpd_epu32(F);
    __m256i uw = _mm256_loadu_si256((const void *)u);
    if (_mm256_cmpeq_epu32_mask(uw, fi))
        return 0;
    __m512i k = _mm512_mask_add_epi64(f, _mm256_cmplt_epu32_mask(uw, fi), f,
                                      _mm512_set1_epi64(1));
    __mmask8 neg = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ);
    k = _mm512_mask_sub_epi64(k, neg, _mm512_setzero_si512(), k);
    k = _mm512_add_epi64(k, _mm512_loadu_si512((const void *)z));
    __m512d v = _mm512_mul_pd(_mm512_cvtepi64_pd(k), _mm512_set1_pd(gamma));
    _mm256_storeu_ps(out, _mm512_cvtpd_ps(_mm512_mul_pd(v, _mm512_set1_pd(scale))));
    _mm256_storeu_ps(sum, _mm256_setzero_ps());
    _mm512_storeu_si512((void *)z, _mm512_setzero_si512());
    _mm256_storeu_si256((void *)u, _mm256_setzero_si256());
    return 1;
}

/* s_check_range_f32's branch-free pass, 16 floats at a time: the same
 * test !(|(double)v| < lim) (NaN counts as out of range), only faster. */
S_AVX512 static int s_any_out_of_range_avx512(const float *v, size_t n, double lim)
{
    const __m512d vl = _mm512_set1_pd(lim);
    __mmask8 bad = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 f = _mm512_loadu_ps(v + i);
        __m512d lo = _mm512_abs_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        __m512d hi = _mm512_abs_pd(_mm512_cvtps_pd(
            _mm256_castsi256_ps(_mm512_extracti64x4_epi64(_mm512_castps_si512(f), 1))));
        bad |= _mm512_cmp_pd_mask(lo, vl, _CMP_NLT_UQ);
        bad |= _mm512_cmp_pd_mask(hi, vl, _CMP_NLT_UQ);
    }
    int any = bad != 0;
    for (; i < n; i++)
        any |= !(fabs((double)v[i]) < lim);
    return any;
}

S_AVX512 static void s_release_avx512(s_rng *r, float *sum, int64_t *z, uint32_t *u,
                                      size_t n, double inv, double gamma, double scale,
                                      float *out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (!s_release8_avx512(sum + i, z + i, u + i, inv, gamma, scale, out + i)) {
            s_simd_redos++;
            for (size_t j = i; j < i + 8; j++) /* in order: same tie draws */
                s_release_one(r, sum, z, u, j, inv, gamma, scale, out);
        }
    }
    for (; i < n; i++)
        s_release_one(r, sum, z, u, i, inv, gamma, scale, out);
}
#endif /* S_X86 */

struct fl_noise_batch {
    size_t n;
    int64_t *z;  /* n: Z_i in grid units (secret; wiped) */
    uint32_t *u; /* n: rounding words (secret; wiped) */
    double stddev; /* what it was filled for */
    int filled;  /* 1 from fill until apply */
};

static void s_batch_wipe(fl_noise_batch *b)
{
    if (b->z)
        sodium_memzero(b->z, b->n * sizeof *b->z);
    if (b->u)
        sodium_memzero(b->u, b->n * sizeof *b->u);
    b->stddev = 0.0;
    b->filled = 0;
}

int fl_noise_batch_new(fl_noise_batch **out, size_t n)
{
    fl_noise_batch *b = NULL;

    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_new: out is NULL");
    *out = NULL;
    if (n > SIZE_MAX / sizeof(int64_t))
        return fl_error_set(FL_ENOMEM, "fl_noise_batch_new: n=%zu coordinates overflow "
                            "size_t", n);
    b = calloc(1, sizeof *b);
    if (!b)
        return fl_error_set(FL_ENOMEM, "fl_noise_batch_new: out of memory");
    b->n = n;
    /* calloc(0) may return NULL; keep one element so a NULL means failure */
    b->z = calloc(n ? n : 1, sizeof *b->z);
    b->u = calloc(n ? n : 1, sizeof *b->u);
    if (!b->z || !b->u) {
        fl_noise_batch_free(b);
        return fl_error_set(FL_ENOMEM, "fl_noise_batch_new: out of memory for %zu noise "
                            "coordinates (12 bytes each)", n);
    }
    *out = b;
    return FL_OK;
}

void fl_noise_batch_free(fl_noise_batch *b)
{
    if (!b)
        return;
    s_batch_wipe(b);
    free(b->z);
    free(b->u);
    free(b);
}

int fl_noise_batch_fill(fl_noise_batch *b, double stddev)
{
    const s_table *t = NULL;
    s_rng r;

    if (!b)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_fill: batch is NULL");
    if (b->filled)
        return fl_error_set(FL_ESTATE, "fl_noise_batch_fill: the batch already holds noise "
                            "that was never applied; apply it (each noise batch protects "
                            "exactly one release) or free it before filling again");
    if (!isfinite(stddev) || stddev < 0.0)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_fill: stddev=%g must be finite and "
                            ">= 0", stddev);
    if (stddev > 0.0 && b->n > 0) {
        int rc = s_init();
        if (rc == FL_OK)
            rc = s_table_get(stddev, &t);
        if (rc != FL_OK)
            return rc;
        s_rng_start(&r, 2 * b->n + 2);
#if S_X86
        int level = s_simd_level();
        if (level == FL_NOISE_SIMD_AVX512)
            s_fill_avx512(&r, t, b->z, b->u, b->n); /* same output, see above */
        else if (level == FL_NOISE_SIMD_AVX2)
            s_fill_avx2(&r, t, b->z, b->u, b->n);
        else
#endif
            s_fill_scalar(&r, t, b->z, b->u, b->n);
        s_rng_wipe(&r);
    }
    b->stddev = stddev;
    b->filled = 1;
    return FL_OK;
}

int fl_noise_batch_apply_f64(fl_noise_batch *b, double *v, size_t n, double stddev)
{
    s_rng r;

    if (!b)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_apply_f64: batch is NULL");
    /* One-time pad: a consumed batch was wiped, so applying it would add
     * no noise at all; a never-filled batch likewise. */
    if (!b->filled)
        return fl_error_set(FL_ESTATE, "fl_noise_batch_apply_f64: the batch holds no noise "
                            "(never filled, or already applied once; noise may protect "
                            "only one release): fill it first");
    if (n != b->n)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_apply_f64: vector has %zu "
                            "coordinates but the batch was made for %zu", n, b->n);
    if (!v && n > 0)
        return fl_error_set(FL_EINVAL, "fl_noise_batch_apply_f64: v is NULL with n=%zu", n);
    if (!(stddev == b->stddev))
        return fl_error_set(FL_EINVAL, "fl_noise_batch_apply_f64: stddev=%.17g but the batch "
                            "was filled for stddev=%.17g; refill it for this stddev",
                            stddev, b->stddev);
    if (stddev > 0.0 && n > 0) {
        double gamma = fl_noise_grid(stddev);
        int rc = s_check_range(v, n, stddev, gamma, "fl_noise_batch_apply_f64");
        if (rc == FL_OK)
            rc = s_init();
        if (rc != FL_OK)
            return rc;
        const double inv = 1.0 / gamma;
        const int64_t *z = b->z;
        const uint32_t *u = b->u;
        s_rng_start(&r, 2); /* drawn from only on a rounding tie (2^-32) */
        /* v/gamma exactly, as in s_add_grid_gaussian; exact in double as
         * there: |k| <= 2^52, |Z| < 2^33 */
        if (inv < INFINITY)
            for (size_t i = 0; i < n; i++)
                v[i] = (double)(s_round(v[i] * inv, u[i], &r) + z[i]) * gamma;
        else
            for (size_t i = 0; i < n; i++)
                v[i] = (double)(s_round(v[i] / gamma, u[i], &r) + z[i]) * gamma;
        s_rng_wipe(&r);
    }
    s_batch_wipe(b);
    return FL_OK;
}

/* Same checks as fl_noise_batch_apply_f64, on a float vector. */
static int s_check_range_f32(const float *v, size_t n, double stddev, double gamma)
{
    double lim = ldexp(gamma, 52);
    int bad = 0;
#if S_X86
    if (s_simd_avx512())
        bad = s_any_out_of_range_avx512(v, n, lim);
    else
#endif
        for (size_t i = 0; i < n; i++) /* branch-free pass */
            bad |= !(fabs((double)v[i]) < lim);
    if (!bad)
        return FL_OK;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)v[i]) < lim))
            return fl_error_set(FL_ERANGE, "fl_noise_batch_release_f32: value %g at index %zu "
                                "is too large (or not finite) for noise stddev %g (grid %g): "
                                "it must be below 2^52 grid steps", (double)v[i], i, stddev,
                                gamma);
    return FL_OK;
}

int fl_noise_batch_release_f32(fl_noise_batch *b, float *sum, size_t n, double stddev,
                               double scale, float *out)
{
    s_rng r;
    int rc = FL_OK;

    if (!b || (n > 0 && (!sum || !out)))
        return fl_error_set(FL_EINVAL, "fl_noise_batch_release_f32: NULL %s",
                            !b ? "batch" : !sum ? "sum" : "out");
    if (!isfinite(scale)) {
        rc = fl_error_set(FL_EINVAL, "fl_noise_batch_release_f32: scale=%g is not finite",
                          scale);
        goto fail;
    }
    if (!b->filled) {
        rc = fl_error_set(FL_ESTATE, "fl_noise_batch_release_f32: the batch holds no noise "
                          "(never filled, or already applied once; noise may protect only "
                          "one release): fill it first");
        goto fail;
    }
    if (n != b->n) {
        rc = fl_error_set(FL_EINVAL, "fl_noise_batch_release_f32: vector has %zu coordinates "
                          "but the batch was made for %zu", n, b->n);
        goto fail;
    }
    if (!(stddev == b->stddev)) {
        rc = fl_error_set(FL_EINVAL, "fl_noise_batch_release_f32: stddev=%.17g but the batch "
                          "was filled for stddev=%.17g; refill it for this stddev", stddev,
                          b->stddev);
        goto fail;
    }
    if (stddev > 0.0 && n > 0) {
        /* Canonne, Kamath & Steinke 2020 discrete Gaussian on the
         * randomized-rounded value, exactly as s_add_grid_gaussian and
         * fl_noise_batch_apply_f64: (double)sum[i] is the double the
         * unfused path would hold, and every operation below is the one
         * it performs, so the output is bit-identical. */
        double gamma = fl_noise_grid(stddev);
        if ((rc = s_check_range_f32(sum, n, stddev, gamma)) != FL_OK ||
            (rc = s_init()) != FL_OK)
            goto fail;
        const double inv = 1.0 / gamma;
        int64_t *z = b->z;
        uint32_t *u = b->u;
        s_rng_start(&r, 2); /* drawn from only on a rounding tie (2^-32) */
#if S_X86
        if (inv < INFINITY && s_simd_avx512())
            s_release_avx512(&r, sum, z, u, n, inv, gamma, scale, out); /* same output */
        else
#endif
            for (size_t i = 0; i < n; i++)
                s_release_one(&r, sum, z, u, i, inv, gamma, scale, out);
        s_rng_wipe(&r);
    } else {
        for (size_t i = 0; i < n; i++) {
            out[i] = (float)((double)sum[i] * scale);
            sum[i] = 0.0f;
        }
    }
    b->stddev = 0.0;
    b->filled = 0;
    return FL_OK;
fail:
    for (size_t i = 0; i < n && out; i++)
        out[i] = 0.0f;
    return rc;
}

int fl_noise_random_u64(uint64_t *out, size_t n)
{
    s_rng r;
    int rc;
    if (n == 0)
        return FL_OK;
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_noise_random_u64: out is NULL with n=%zu", n);
    if ((rc = s_init()) != FL_OK)
        return rc;
    s_rng_start(&r, n);
    for (size_t i = 0; i < n; i++)
        out[i] = s_rng_u64(&r);
    s_rng_wipe(&r);
    return FL_OK;
}

/* ---- test hooks (fl_noise_internal.h) --------------------------------- */

void fl_noise_batch_buffers(const fl_noise_batch *b, const int64_t **z, const uint32_t **u,
                            size_t *n)
{
    *z = b->z;
    *u = b->u;
    *n = b->n;
}

int fl_noise_batch_set_round_words(fl_noise_batch *b, uint32_t u)
{
    if (!b->filled)
        return fl_error_set(FL_ESTATE, "fl_noise_batch_set_round_words: batch not filled");
    for (size_t i = 0; i < b->n; i++)
        b->u[i] = u;
    return FL_OK;
}

static int s_hook_start(const char *fn, double stddev, const void *out, size_t n,
                        const s_table **t)
{
    if (!isfinite(stddev) || !(stddev > 0.0))
        return fl_error_set(FL_EINVAL, "%s: stddev=%g must be finite and > 0", fn, stddev);
    if (!out && n > 0)
        return fl_error_set(FL_EINVAL, "%s: out is NULL with n=%zu", fn, n);
    int rc = s_init();
    return rc != FL_OK ? rc : s_table_get(stddev, t);
}

int fl_noise_sample_grid_z(double stddev, int64_t *out, size_t n)
{
    const s_table *t = NULL;
    s_rng r;
    int rc = s_hook_start("fl_noise_sample_grid_z", stddev, out, n, &t);
    if (rc != FL_OK)
        return rc;
    s_rng_start(&r, 2 * n + 2);
    for (size_t i = 0; i < n; i++) {
        uint64_t w1, w2;
        s_rng_pair(&r, &w1, &w2);
        out[i] = s_grid_z(t, w1, w2, &r);
    }
    s_rng_wipe(&r);
    return FL_OK;
}

int fl_noise_sample_base(double stddev, int64_t *out, size_t n)
{
    const s_table *t = NULL;
    s_rng r;
    int rc = s_hook_start("fl_noise_sample_base", stddev, out, n, &t);
    if (rc != FL_OK)
        return rc;
    s_rng_start(&r, n + 2);
    for (size_t i = 0; i < n; i++)
        out[i] = s_base(t, (uint32_t)s_rng_u64(&r), &r);
    s_rng_wipe(&r);
    return FL_OK;
}

int fl_noise_table_info(double stddev, double *base_sigma, const void **table)
{
    const s_table *t = NULL;
    int rc = s_hook_start("fl_noise_table_info", stddev, base_sigma, 1, &t);
    if (rc != FL_OK)
        return rc;
    *base_sigma = t->sb;
    if (table)
        *table = t->tab;
    return FL_OK;
}

int fl_noise_exp_neg_dd(double x_hi, double x_lo, double *hi, double *lo)
{
    if (!(x_hi >= 0.0 && x_hi <= 100.0) || !hi || !lo)
        return fl_error_set(FL_EINVAL, "fl_noise_exp_neg_dd: x=%g must be in [0, 100]", x_hi);
    s_dd e = s_dd_exp_neg((s_dd){x_hi, x_lo});
    *hi = e.hi;
    *lo = e.lo;
    return FL_OK;
}

void fl_noise_set_simd(int mode)
{
    if (mode != FL_NOISE_SIMD_OFF && mode != FL_NOISE_SIMD_AVX2)
        mode = FL_NOISE_SIMD_BEST;
    atomic_store_explicit(&s_simd_on, mode, memory_order_relaxed);
}

int fl_noise_simd_active(void)
{
    return s_simd_level();
}

void fl_noise_test_seed(const unsigned char seed[32])
{
    s_test_ctr = 0;
    if (seed) {
        memcpy(s_test_key, seed, sizeof s_test_key);
        s_test_seeded = 1;
    } else {
        sodium_memzero(s_test_key, sizeof s_test_key);
        s_test_seeded = 0;
    }
}

size_t fl_noise_test_simd_redos(void)
{
    return s_simd_redos;
}
