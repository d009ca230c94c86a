/*
 * fl_accountant_pld: privacy-loss-distribution (PLD) accountant for the
 * Poisson-subsampled Gaussian mechanism (Koskela, Jalko & Honkela 2020,
 * "Computing tight differential privacy guarantees using FFT"; Doroshenko,
 * Ghazi, Kamath, Kumar & Manurangsi 2022, "Connect the dots: tighter
 * discrete approximations of privacy loss distributions").  Same model and
 * conventions as Google's dp_accounting PLD accountant, so the numbers can
 * be cross-checked against it.
 *
 * Pipeline, per neighbouring relation (remove and add; the result is the
 * larger epsilon):
 *   1. the exact hockey-stick curve delta_1(eps) of ONE step, evaluated on
 *      a grid eps_i = i * h (closed form in Phi, log space);
 *   2. the "connect the dots" discrete PLD whose delta curve equals delta_1
 *      at the grid points and is linear in e^eps between them -- a
 *      dominating pair, so pessimistic (Doroshenko et al. 2022, Thm 4.4 /
 *      Alg. 1); truncated tails are handled pessimistically (mass above
 *      the grid goes to +infinity, mass below it is rounded up);
 *   3. T-fold self-convolution by FFT (pointwise T-th power of the DFT),
 *      on a window chosen by Chernoff bounds so that wrapped-around mass
 *      is below tau = 1e-6 delta; the upper-tail bound is added to delta;
 *   4. delta_T(eps) = sum_l p(l) max(0, 1 - e^(eps - l)) + p(+inf), and
 *      epsilon by bisection on it.
 */
#include "dp/fl_accountant.h"
#include "dp/fl_accountant_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define S_SQRT2 1.41421356237309504880168872420969808
#define S_PI 3.14159265358979323846264338327950288
#define S_H0 1e-4            /* preferred discretisation interval */
#define S_H_MAX 1e-2         /* coarsest interval tried before giving up */
#define S_NMAX ((size_t)1 << 21)

/* One neighbouring relation of the Poisson-subsampled Gaussian with
 * sensitivity 1 (dp_accounting's GaussianPrivacyLoss with sampling_prob):
 *   remove: P = (1-q) N(0,s^2) + q N(1,s^2),  Q = N(0,s^2)
 *   add:    P = N(0,s^2),  Q = (1-q) N(0,s^2) + q N(1,s^2)
 * The privacy loss is L = log(dP/dQ) under P. */
typedef struct {
    int remove;
    double q, sigma;
} s_rel;

/* log(e^a - e^b) = a + log(-expm1(b - a)), or -inf when b >= a. */
static double s_log_diff(double a, double b)
{
    return b >= a ? -INFINITY : a + log(-expm1(b - a));
}

/* log(1 - q + q e^a), the remove-relation loss at a = (2x - 1)/(2 s^2). */
static double s_log_mix(double q, double a)
{
    if (q == 1.0)
        return a;
    if (a <= 0.0)
        return log1p(q * expm1(a));
    return a + log(q) + log1p((1.0 - q) / q * exp(-a));
}

/* Privacy loss at x for relation r (monotone in x: increasing for remove,
 * decreasing for add). */
static double s_loss(const s_rel *r, double x)
{
    double l = s_log_mix(r->q, (2.0 * x - 1.0) / (2.0 * r->sigma * r->sigma));
    return r->remove ? l : -l;
}

/* Exact hockey-stick divergence delta_1(eps) = E_P[max(0, 1 - e^(eps-L))]
 * of one step.  {L > eps} is a half-line {x > x_e} (remove) or {x < x_e}
 * (add), x_e = s^2 log((e^(+-eps) - 1 + q)/q) + 1/2, so delta is a
 * difference of two normal tail probabilities, taken in log space
 * (dp_accounting's GaussianPrivacyLoss.get_delta_for_epsilon). */
static double s_delta1(const s_rel *r, double eps)
{
    double q = r->q, s = r->sigma, s2 = s * s;
    if (r->remove) {
        /* losses lie in (log(1-q), inf): below that every x counts */
        if (q < 1.0 && eps <= log1p(-q))
            return -expm1(eps);
        double lc = q == 1.0 ? eps : log(expm1(eps) + q); /* log(e^eps - 1 + q) */
        double x = s2 * (lc - log(q)) + 0.5;
        /* q P1(x > x_e) - (e^eps - 1 + q) P0(x > x_e) */
        double la = log(q) + fl_accountant_log_phi(-(x - 1.0) / s);
        double lb = lc + fl_accountant_log_phi(-x / s);
        double ld = s_log_diff(la, lb);
        return ld == -INFINITY ? 0.0 : exp(ld);
    }
    /* add: losses lie in (-inf, -log(1-q)) */
    double em = expm1(-eps) + q; /* e^-eps - 1 + q */
    if (!(em > 0.0))
        return 0.0;
    double lc = q == 1.0 ? -eps : log(em);
    double x = s2 * (lc - log(q)) + 0.5;
    /* (1 - e^eps (1-q)) P0(x < x_e) - q e^eps P1(x < x_e) */
    double lcoef = q == 1.0 ? 0.0 : log(-expm1(eps + log1p(-q)));
    double la = lcoef + fl_accountant_log_phi(x / s);
    double lb = log(q) + eps + fl_accountant_log_phi((x - 1.0) / s);
    double ld = s_log_diff(la, lb);
    return ld == -INFINITY ? 0.0 : exp(ld);
}

/* z with Phi(-z) <= tau (tau in (0, 0.5)), by bisection on log Phi. */
static double s_normal_quantile_upper(double tau)
{
    double lo = 0.0, hi = 40.0, lt = log(tau);
    for (int i = 0; i < 100; i++) {
        double mid = 0.5 * (lo + hi);
        if (fl_accountant_log_phi(-mid) > lt)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* In-place iterative radix-2 complex FFT of length n (a power of two);
 * sign -1 forward, +1 inverse (unnormalised).  Twiddles come from a table
 * computed once with cos/sin (no recurrence, so no error build-up). */
static void s_fft(double *re, double *im, size_t n, const double *tc, const double *ts,
                  int sign)
{
    for (size_t i = 1, j = 0; i < n; i++) {
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i];
            re[i] = re[j];
            re[j] = t;
            t = im[i];
            im[i] = im[j];
            im[j] = t;
        }
    }
    for (size_t len = 2; len <= n; len <<= 1) {
        size_t half = len >> 1, stride = n / len;
        for (size_t i = 0; i < n; i += len)
            for (size_t k = 0; k < half; k++) {
                double wr = tc[k * stride], wi = sign * ts[k * stride];
                size_t a = i + k, b = a + half;
                double xr = re[b] * wr - im[b] * wi;
                double xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
    }
}

/* The composed PLD on the window [klo, klo + len) of grid h, plus the
 * mass at +infinity and the pessimistic additions to delta. */
typedef struct {
    double h;
    int64_t klo;
    size_t len;
    double *p;
    double p_inf; /* composed mass at +infinity */
    double extra; /* Chernoff tail bound + FFT noise allowance, added to delta */
} s_pld;

static double s_pld_delta(const s_pld *d, double eps)
{
    /* delta(eps) = sum_{l > eps} p(l) (1 - e^(eps - l)) + p(inf) */
    double sum = 0.0;
    int64_t k0 = (int64_t)floor(eps / d->h) + 1;
    if (k0 < d->klo)
        k0 = d->klo;
    for (int64_t k = k0; k < d->klo + (int64_t)d->len; k++) {
        double l = (double)k * d->h;
        if (l > eps)
            sum += d->p[k - d->klo] * -expm1(eps - l);
    }
    return sum + d->p_inf + d->extra;
}

/* Builds the composed PLD of relation r over T steps with grid h.  Returns
 * FL_OK, FL_ENOMEM, or 1 when the window would exceed S_NMAX points (the
 * caller then retries with a coarser grid). */
static int s_pld_build(const s_rel *r, uint64_t steps, double delta, double h, s_pld *out)
{
    int rc = FL_OK;
    double T = (double)steps;
    double *dl = NULL, *w = NULL, *re = NULL, *im = NULL, *tc = NULL, *ts = NULL;

    /* Per-step truncation: tail mass tau1 beyond x = +-z sigma, so that T
     * tau1 is negligible next to delta. */
    double tau1 = fmin(1e-16, 1e-7 * delta / T);
    double z = s_normal_quantile_upper(tau1);
    double s = r->sigma, lmin, lmax, tail_inf = 0.0;
    if (r->remove) {
        lmin = s_loss(r, -s * z);
        lmax = s_loss(r, 1.0 + s * z);
        tail_inf = tau1; /* P(x > 1 + s z) <= Phi(-z) for the mixture */
    } else {
        lmin = s_loss(r, s * z);
        if (r->q < 1.0) {
            lmax = -log1p(-r->q); /* the add loss is bounded: no truncation */
        } else {
            lmax = s_loss(r, -s * z);
            tail_inf = tau1;
        }
    }
    int64_t k0 = (int64_t)floor(lmin / h), kn = (int64_t)ceil(lmax / h);
    size_t n = (size_t)(kn - k0); /* grid points 0..n */
    if (n + 1 > S_NMAX)
        return 1;

    dl = malloc((n + 1) * sizeof *dl);
    w = malloc((n + 1) * sizeof *w);
    if (!dl || !w) {
        rc = fl_error_set(FL_ENOMEM, "fl_accountant_epsilon_pld: cannot allocate a grid "
                          "of %zu points", n + 1);
        goto done;
    }
    /* Step 1: exact delta at the grid points.  Moving the truncated upper
     * tail to +infinity raises each delta by at most its mass, so tail_inf
     * is added to all of them (pessimistic). */
    for (size_t i = 0; i <= n; i++)
        dl[i] = s_delta1(r, (double)(k0 + (int64_t)i) * h) + tail_inf;

    /* Step 2: connect the dots (Doroshenko et al. 2022, Alg. 1).  The
     * discrete PLD with atoms w_i at eps_i has a delta curve linear in
     * y = e^eps between grid points; matching dl at every grid point gives
     *   w_i = [e^h (dl_{i-1} - dl_i) - (dl_i - dl_{i+1})] / (e^h - 1),
     *   w_n = e^h (dl_{n-1} - dl_n) / (e^h - 1),  w_inf = dl_n,
     *   w_0 = 1 - w_inf - sum_{i>=1} w_i.
     * The true delta is convex in e^eps, so the chords lie above it: the
     * result is a dominating pair.  Mass below eps_0 is rounded up to
     * eps_0, which leaves delta unchanged at every eps >= eps_0. */
    double eh = exp(h), em1 = expm1(h), wsum = 0.0;
    for (size_t i = 1; i <= n; i++) {
        double down = i < n ? dl[i] - dl[i + 1] : 0.0;
        w[i] = (eh * (dl[i - 1] - dl[i]) - down) / em1;
        if (w[i] < 0.0)
            w[i] = 0.0; /* rounding noise only; the exact value is >= 0 */
        wsum += w[i];
    }
    double w_inf = dl[n];
    w[0] = 1.0 - w_inf - wsum;
    if (w[0] < 0.0)
        w[0] = 0.0;

    /* Step 3: window for the T-fold composition from Chernoff bounds on the
     * finite part S: P(S > a) <= exp(T log M(t) - t a), P(S < a) <=
     * exp(T log M(-t) + t a), M(t) = sum_i w_i e^(t eps_i). */
    double ltau = log(1e-6 * delta), hi = INFINITY, lo = -INFINITY, mean = 0.0, mass = 0.0;
    for (size_t i = 0; i <= n; i++) {
        mean += w[i] * (double)(k0 + (int64_t)i);
        mass += w[i];
    }
    mean /= mass;
    double *lw = dl; /* reuse: log w_i (delta values are no longer needed) */
    for (size_t i = 0; i <= n; i++)
        lw[i] = w[i] > 0.0 ? log(w[i]) : -INFINITY;
    for (int j = -16; j <= 40; j += 2) {
        double t = pow(2.0, j / 4.0), ap = -INFINITY, am = -INFINITY, sp = 0.0, sm = 0.0;
        for (size_t i = 0; i <= n; i++) {
            double e = (double)(k0 + (int64_t)i) * h;
            if (lw[i] + t * e > ap)
                ap = lw[i] + t * e;
            if (lw[i] - t * e > am)
                am = lw[i] - t * e;
        }
        for (size_t i = 0; i <= n; i++) {
            double e = (double)(k0 + (int64_t)i) * h;
            sp += exp(lw[i] + t * e - ap);
            sm += exp(lw[i] - t * e - am);
        }
        double mp = ap + log(sp), mm = am + log(sm); /* log M(t), log M(-t) */
        double hi_t = (T * mp - ltau) / t, lo_t = (ltau - T * mm) / t;
        if (hi_t < hi)
            hi = hi_t;
        if (lo_t > lo)
            lo = lo_t;
    }
    if (hi > T * (double)kn * h)
        hi = T * (double)kn * h;
    if (lo < T * (double)k0 * h)
        lo = T * (double)k0 * h;
    int64_t klo = (int64_t)floor(lo / h), khi = (int64_t)ceil(hi / h);
    size_t len = (size_t)(khi - klo + 1);
    if (len < n + 1)
        len = n + 1;
    size_t N = 1;
    while (N < len)
        N <<= 1;
    if (N > S_NMAX) {
        rc = 1;
        goto done;
    }

    re = calloc(N, sizeof *re);
    im = calloc(N, sizeof *im);
    tc = malloc((N / 2 + 1) * sizeof *tc);
    ts = malloc((N / 2 + 1) * sizeof *ts);
    out->p = calloc(len, sizeof *out->p);
    if (!re || !im || !tc || !ts || !out->p) {
        rc = fl_error_set(FL_ENOMEM, "fl_accountant_epsilon_pld: cannot allocate an FFT "
                          "of %zu points", N);
        goto done;
    }
    for (size_t k = 0; k <= N / 2; k++) {
        tc[k] = cos(2.0 * S_PI * (double)k / (double)N);
        ts[k] = sin(2.0 * S_PI * (double)k / (double)N);
    }
    /* Centre each step at c (its mean, in grid units) so the phases of the
     * DFT stay small; the composed sum is then centred at T c. */
    int64_t c = (int64_t)llround(mean);
    for (size_t i = 0; i <= n; i++) {
        int64_t pos = (k0 + (int64_t)i - c) % (int64_t)N;
        if (pos < 0)
            pos += (int64_t)N;
        re[pos] += w[i];
    }
    s_fft(re, im, N, tc, ts, -1);
    for (size_t k = 0; k < N; k++) {
        double m = hypot(re[k], im[k]);
        if (m == 0.0) {
            re[k] = im[k] = 0.0;
            continue;
        }
        double mag = exp(T * log(m)), ang = T * atan2(im[k], re[k]);
        re[k] = mag * cos(ang);
        im[k] = mag * sin(ang);
    }
    s_fft(re, im, N, tc, ts, +1);

    /* Composed loss K (grid units) sits at position (K - T c) mod N; map
     * positions back into the window [klo, klo + N). */
    int64_t shift = (int64_t)((uint64_t)steps * (uint64_t)c);
    double neg = 0.0;
    for (size_t pos = 0; pos < N; pos++) {
        double v = re[pos] / (double)N;
        int64_t off = ((int64_t)pos + shift - klo) % (int64_t)N;
        if (off < 0)
            off += (int64_t)N;
        if (v < 0.0) {
            if (-v > neg)
                neg = -v;
            v = 0.0;
        }
        if ((size_t)off < len)
            out->p[off] += v;
        else
            out->extra += v; /* beyond khi: treat as +infinity */
    }
    out->h = h;
    out->klo = klo;
    out->len = len;
    out->p_inf = w_inf > 0.0 ? -expm1(T * log1p(-w_inf)) : 0.0;
    /* Pessimistic additions: the Chernoff bound on mass above the window
     * (it wraps around to low losses where it would not count), and an
     * allowance for FFT rounding estimated from the most negative output
     * (exact values are >= 0, so that is pure noise) times the length. */
    out->extra += 1e-6 * delta + (double)N * neg;

done:
    free(dl);
    free(w);
    free(re);
    free(im);
    free(tc);
    free(ts);
    if (rc != FL_OK) {
        free(out->p);
        out->p = NULL;
    }
    return rc;
}

/* Epsilon for one relation: smallest eps >= 0 with delta_T(eps) <= delta. */
static int s_eps_rel(const s_rel *r, uint64_t steps, double delta, double *eps)
{
    int rc = 1;
    s_pld d = {0};
    for (double h = S_H0; h <= S_H_MAX && rc == 1; h *= 2.0) {
        d = (s_pld){0};
        rc = s_pld_build(r, steps, delta, h, &d);
    }
    if (rc == 1)
        return fl_error_set(FL_ERANGE, "fl_accountant_epsilon_pld: the composed privacy "
                            "loss of q=%g sigma=%g steps=%llu is too wide for a grid of "
                            "%zu points even at interval %g; use the RDP accountant",
                            r->q, r->sigma, (unsigned long long)steps, S_NMAX, S_H_MAX);
    if (rc != FL_OK)
        return rc;

    double top = (double)(d.klo + (int64_t)d.len) * d.h;
    if (s_pld_delta(&d, 0.0) <= delta) {
        *eps = 0.0;
    } else if (s_pld_delta(&d, top) > delta) {
        rc = fl_error_set(FL_ERANGE, "fl_accountant_epsilon_pld: delta=%g is below the "
                          "mass at infinity %g for q=%g sigma=%g steps=%llu", delta,
                          d.p_inf + d.extra, r->q, r->sigma, (unsigned long long)steps);
    } else {
        double lo = 0.0, hi = top;
        while (hi - lo > 1e-7 * (1.0 + hi)) {
            double mid = 0.5 * (lo + hi);
            if (s_pld_delta(&d, mid) > delta)
                lo = mid;
            else
                hi = mid;
        }
        *eps = hi; /* delta_T(hi) <= delta */
    }
    free(d.p);
    return rc;
}

int fl_accountant_epsilon_pld(double q, double sigma, uint64_t steps, double delta,
                              double *eps)
{
    int rc;
    double e_rm = 0.0, e_add = 0.0;

    if (!eps)
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_pld: eps is NULL");
    *eps = NAN;
    if (!(q > 0.0 && q <= 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_pld: sampling rate q=%g must "
                            "be in (0, 1]", q);
    if (!isfinite(sigma) || !(sigma >= 0.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_pld: noise multiplier "
                            "sigma=%g must be finite and >= 0", sigma);
    if (!(delta > 0.0 && delta < 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_pld: delta=%g must be in "
                            "(0, 1)", delta);
    if (steps == 0) {
        *eps = 0.0;
        return FL_OK;
    }
    if (sigma == 0.0) {
        *eps = INFINITY;
        return FL_OK;
    }
    /* dp_accounting's PLD accountant for a Poisson-subsampled Gaussian
     * composes both relations and reports the worse one; for q = 1 the two
     * loss distributions coincide (both N(1/(2 s^2), 1/s^2)). */
    s_rel rm = {1, q, sigma}, ad = {0, q, sigma};
    if ((rc = s_eps_rel(&rm, steps, delta, &e_rm)) != FL_OK)
        return rc;
    if (q < 1.0 && (rc = s_eps_rel(&ad, steps, delta, &e_add)) != FL_OK)
        return rc;
    *eps = e_rm > e_add ? e_rm : e_add;
    return FL_OK;
}
