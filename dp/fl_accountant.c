/*
 * fl_accountant: Renyi differential privacy (Mironov 2017) of the
 * Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang 2019,
 * "Renyi Differential Privacy of the Sampled Gaussian Mechanism"), composed
 * additively over steps and converted to (epsilon, delta) with the bound of
 * Balle et al. 2020 ("Hypothesis testing interpretations and Renyi
 * differential privacy", Theorem 21).  The computation follows the
 * structure of Google's dp_accounting rdp_privacy_accountant and Opacus'
 * analysis/rdp.py so the numbers can be cross-checked against them.
 */
#include "dp/fl_accountant.h"
#include "dp/fl_accountant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

/* Extra orders above 256 (the integer run 11..256 is generated). */
static const double s_big_orders[] = {288, 320, 384, 448, 512, 640, 768, 896, 1024};

#define S_SIGMA_MIN 0.1
#define S_SIGMA_MAX 1000.0
#define S_CALIB_RTOL 1e-4
#define S_FRAC_MAX_TERMS 1000000 /* hard stop for the fractional series */
#define S_SQRT2 1.41421356237309504880168872420969808
#define S_HALF_LOG_PI 0.57236494292470008707171367567652935 /* log(pi)/2 */

/* log(exp(a) + exp(b)) without overflow. */
static double s_log_add(double a, double b)
{
    double hi = a > b ? a : b;
    double lo = a > b ? b : a;
    if (hi == -INFINITY)
        return -INFINITY;
    return hi + log1p(exp(lo - hi));
}

/* log(exp(a) - exp(b)) for a >= b; NaN if b > a (cannot happen in exact
 * arithmetic for the series below; NaN orders are skipped by the caller). */
static double s_log_sub(double a, double b)
{
    if (b == -INFINITY)
        return a;
    if (b > a)
        return NAN;
    if (b == a)
        return -INFINITY;
    return a + log1p(-exp(b - a));
}

/* log(erfc(x)); for large x erfc underflows, so use the asymptotic series
 * erfc(x) = exp(-x^2)/(x sqrt(pi)) * sum_n (-1)^n (2n-1)!!/(2x^2)^n
 * (Abramowitz & Stegun 7.1.23), whose error at x > 25 is far below 1e-16. */
double fl_accountant_log_erfc(double x)
{
    if (x <= 25.0)
        return log(erfc(x));
    double t = 1.0 / (2.0 * x * x);
    double term = 1.0, sum = 1.0;
    for (int n = 1; n <= 6; n++) {
        term *= -(2.0 * n - 1.0) * t;
        sum += term;
    }
    return -x * x - log(x) - S_HALF_LOG_PI + log(sum);
}

/* log(e^x - 1) for x > 0, without overflow or cancellation. */
static double s_log_expm1(double x)
{
    return x > 30.0 ? x + log1p(-exp(-x)) : log(expm1(x));
}

static int s_is_integer(double a)
{
    return a == floor(a);
}

/* log |C(alpha, k)| for real alpha > 1 and integer k >= 0 (alpha - k + 1 not
 * a non-positive integer): lgamma gives log|Gamma| also for negative
 * arguments. */
static double s_log_abs_binom(double alpha, double k)
{
    return lgamma(alpha + 1.0) - lgamma(k + 1.0) - lgamma(alpha - k + 1.0);
}

static int s_args_ok(double q, double sigma, double alpha)
{
    return q > 0.0 && q < 1.0 && isfinite(sigma) && sigma > 0.0 &&
           isfinite(alpha) && alpha > 1.0;
}

double fl_accountant_log_a_int(double q, double sigma, double alpha)
{
    if (!s_args_ok(q, sigma, alpha) || !s_is_integer(alpha))
        return NAN;
    /* Mironov, Talwar & Zhang 2019, Section 3.2 (integer alpha):
     * A_alpha = sum_{k=0}^{alpha} C(alpha,k) (1-q)^(alpha-k) q^k
     *           exp((k^2 - k) / (2 sigma^2)),
     * every term positive, summed in log space (as dp_accounting's
     * _compute_log_a_int).  Because the binomial weights sum to 1 we sum
     * A_alpha - 1 = sum_{k>=2} C(alpha,k) (1-q)^(alpha-k) q^k
     *               expm1((k^2 - k) / (2 sigma^2))
     * instead (the k = 0, 1 terms vanish) and return log1p of it: the same
     * value, but with full relative precision when A_alpha is within 1e-16
     * of 1 (small q, large sigma), where log(sum) would round to 0. */
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    double lm1 = -INFINITY; /* log(A_alpha - 1) */
    for (double k = 2.0; k <= alpha; k += 1.0) {
        double lt = s_log_abs_binom(alpha, k) + k * lq + (alpha - k) * l1q +
                    s_log_expm1((k * k - k) / s2);
        lm1 = s_log_add(lm1, lt);
    }
    /* log A = log(1 + e^lm1), computed without overflow for large lm1. */
    return lm1 > 30.0 ? lm1 + log1p(exp(-lm1)) : log1p(exp(lm1));
}

double fl_accountant_log_a_frac(double q, double sigma, double alpha)
{
    if (!s_args_ok(q, sigma, alpha))
        return NAN;
    /* Mironov, Talwar & Zhang 2019, Section 3.3 (any real alpha): A_alpha is
     * split at z0 = sigma^2 log(1/q - 1) + 1/2 into two convergent series
     * of binomial-weighted Gaussian tail terms (erfc), summed in log space
     * until both terms fall below e^-30 -- the same scheme as Opacus'
     * _compute_log_a_frac and dp_accounting's _compute_log_a_frac.
     * C(alpha, i) for real alpha changes sign once i > alpha + 1. */
    double lq = log(q), l1q = log1p(-q), s2 = 2.0 * sigma * sigma;
    double z0 = sigma * sigma * log(1.0 / q - 1.0) + 0.5;
    double a0 = -INFINITY, a1 = -INFINITY;
    double fl = floor(alpha);
    int integral = s_is_integer(alpha);

    for (long n = 0; n < S_FRAC_MAX_TERMS; n++) {
        double i = (double)n;
        if (integral && i > alpha)
            break; /* C(alpha, i) = 0 from here on */
        double lc = s_log_abs_binom(alpha, i);
        /* sign of C(alpha, i) = (-1)^(number of m < i with m > alpha) */
        double negs = i - 1.0 - fl;
        int positive = negs <= 0.0 || fmod(negs, 2.0) == 0.0;
        double j = alpha - i;
        double lt0 = lc + i * lq + j * l1q;
        double lt1 = lc + j * lq + i * l1q;
        double le0 = log(0.5) + fl_accountant_log_erfc((i - z0) / (S_SQRT2 * sigma));
        double le1 = log(0.5) + fl_accountant_log_erfc((z0 - j) / (S_SQRT2 * sigma));
        double ls0 = lt0 + (i * i - i) / s2 + le0;
        double ls1 = lt1 + (j * j - j) / s2 + le1;
        if (positive) {
            a0 = s_log_add(a0, ls0);
            a1 = s_log_add(a1, ls1);
        } else {
            a0 = s_log_sub(a0, ls0);
            a1 = s_log_sub(a1, ls1);
        }
        /* Stop once past i = alpha (beyond it both series are monotone
         * tails) and both terms are below e^-30; A_alpha >= 1, so that is a
         * relative error ~1e-13.  Opacus stops on the e^-30 test alone,
         * which ends too early when the leading terms are tiny (large
         * alpha with q near 1/2); the i > alpha guard fixes that. */
        if (i > alpha && (ls0 > ls1 ? ls0 : ls1) < -30.0)
            break;
    }
    return s_log_add(a0, a1);
}

double fl_accountant_rdp(double q, double sigma, double alpha)
{
    if (!(q > 0.0 && q <= 1.0) || !(sigma >= 0.0) || !isfinite(sigma) ||
        !isfinite(alpha) || !(alpha > 1.0))
        return NAN;
    if (sigma == 0.0)
        return INFINITY;
    /* Without subsampling the Gaussian mechanism with L2 sensitivity 1 and
     * noise sigma has RDP alpha / (2 sigma^2) (Mironov 2017, Prop. 7). */
    if (q == 1.0)
        return alpha / (2.0 * sigma * sigma);
    double la = s_is_integer(alpha) ? fl_accountant_log_a_int(q, sigma, alpha)
                                    : fl_accountant_log_a_frac(q, sigma, alpha);
    if (isnan(la))
        return NAN;
    double r = la / (alpha - 1.0);
    /* A_alpha >= 1 exactly; a tiny negative value is rounding. */
    return r < 0.0 ? 0.0 : r;
}

/* Balle et al. 2020, Theorem 21 (also Canonne, Kamath & Steinke 2020,
 * Prop. 12): an (alpha, rdp)-RDP mechanism is (eps, delta)-DP with
 * eps = rdp + log((alpha-1)/alpha) - (log(delta) + log(alpha))/(alpha-1).
 * Tighter than Mironov 2017's rdp + log(1/delta)/(alpha-1); identical to
 * dp_accounting's compute_epsilon. */
static double s_eps_at(double total_rdp, double a, double delta)
{
    return total_rdp + log1p(-1.0 / a) - (log(delta) + log(a)) / (a - 1.0);
}

static void s_consider(double q, double sigma, double steps, double delta, double a,
                       double *best, double *best_a)
{
    double r = fl_accountant_rdp(q, sigma, a);
    if (isnan(r))
        return;
    double e = s_eps_at(steps * r, a, delta);
    if (!isnan(e) && e < *best) {
        *best = e;
        *best_a = a;
    }
}

int fl_accountant_epsilon(double q, double sigma, uint64_t steps, double delta, double *eps,
                          double *best_order)
{
    double best = INFINITY, best_a = 0.0;

    if (best_order)
        *best_order = 0.0;
    if (!eps)
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon: eps is NULL");
    *eps = NAN;
    if (!(q > 0.0 && q <= 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon: sampling rate q=%g must be "
                            "in (0, 1]", q);
    if (!isfinite(sigma) || !(sigma >= 0.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon: noise multiplier sigma=%g "
                            "must be finite and >= 0", sigma);
    if (!(delta > 0.0 && delta < 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon: delta=%g must be in (0, 1)",
                            delta);
    if (steps == 0) {
        *eps = 0.0;
        return FL_OK;
    }
    if (sigma == 0.0) {
        *eps = INFINITY; /* no noise: no privacy */
        return FL_OK;
    }

    /* RDP composes additively over steps (Mironov 2017, Prop. 1). */
    double n = (double)steps;
    for (int x = 1; x <= 99; x++)
        s_consider(q, sigma, n, delta, 1.0 + x / 10.0, &best, &best_a);
    for (int a = 11; a <= 256; a++)
        s_consider(q, sigma, n, delta, (double)a, &best, &best_a);
    for (size_t k = 0; k < sizeof s_big_orders / sizeof s_big_orders[0]; k++)
        s_consider(q, sigma, n, delta, s_big_orders[k], &best, &best_a);

    if (isnan(best) || best_a == 0.0)
        return fl_error_set(FL_ERANGE, "fl_accountant_epsilon: no finite epsilon for "
                            "q=%g sigma=%g steps=%llu delta=%g", q, sigma,
                            (unsigned long long)steps, delta);
    *eps = best < 0.0 ? 0.0 : best;
    if (best_order)
        *best_order = best_a;
    return FL_OK;
}

/* log Phi(x) for the standard normal CDF: Phi(x) = erfc(-x/sqrt 2)/2, with
 * fl_accountant_log_erfc keeping full relative precision deep in the lower
 * tail. */
double fl_accountant_log_phi(double x)
{
    return log(0.5) + fl_accountant_log_erfc(-x / S_SQRT2);
}

/* Balle & Wang 2018, Theorem 8: the Gaussian mechanism with sensitivity 1
 * and noise s is (eps, delta)-DP iff
 *   delta >= Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s)).
 * Both terms are evaluated in log space (the second as eps + log Phi) and
 * subtracted as a * (-expm1(log b - log a)), so the result keeps its
 * relative precision when both terms are tiny (large eps). */
static double s_gauss_delta(double s, double eps)
{
    double la = fl_accountant_log_phi(-eps * s + 0.5 / s);
    double lb = eps + fl_accountant_log_phi(-eps * s - 0.5 / s);
    if (lb >= la)
        return 0.0;
    return exp(la) * -expm1(lb - la);
}

int fl_accountant_epsilon_exact_gaussian(double sigma, uint64_t steps, double delta,
                                         double *eps)
{
    if (!eps)
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_exact_gaussian: eps is NULL");
    *eps = NAN;
    if (!isfinite(sigma) || !(sigma > 0.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_exact_gaussian: noise "
                            "multiplier sigma=%g must be finite and > 0", sigma);
    if (!(delta > 0.0 && delta < 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_exact_gaussian: delta=%g "
                            "must be in (0, 1)", delta);
    if (steps == 0) {
        *eps = 0.0;
        return FL_OK;
    }
    /* T Gaussian mechanisms with multiplier sigma compose to one Gaussian
     * mechanism with multiplier sigma/sqrt(T) (the privacy loss of each is
     * N(1/(2 sigma^2), 1/sigma^2) and these add; Dong, Roth & Su 2019,
     * Cor. 3.3 for the mu-GDP statement). */
    double s = sigma / sqrt((double)steps);
    if (s_gauss_delta(s, 0.0) <= delta) {
        *eps = 0.0;
        return FL_OK;
    }
    /* delta(eps) is decreasing in eps: bracket, then bisect. */
    double lo = 0.0, hi = 1.0;
    while (s_gauss_delta(s, hi) > delta) {
        lo = hi;
        hi *= 2.0;
        if (hi > 1e12)
            return fl_error_set(FL_ERANGE, "fl_accountant_epsilon_exact_gaussian: no "
                                "finite epsilon for sigma=%g steps=%llu delta=%g", sigma,
                                (unsigned long long)steps, delta);
    }
    for (int it = 0; it < 200 && hi - lo > 1e-13 * hi; it++) {
        double mid = 0.5 * (lo + hi);
        if (s_gauss_delta(s, mid) > delta)
            lo = mid;
        else
            hi = mid;
    }
    *eps = hi; /* upper end: delta(hi) <= delta always holds */
    return FL_OK;
}

int fl_accountant_epsilon_with(fl_accountant_kind k, double q, double sigma, uint64_t steps,
                               double delta, double *eps)
{
    switch (k) {
    case FL_ACCOUNTANT_RDP:
        return fl_accountant_epsilon(q, sigma, steps, delta, eps, NULL);
    case FL_ACCOUNTANT_PLD:
        return fl_accountant_epsilon_pld(q, sigma, steps, delta, eps);
    }
    if (eps)
        *eps = NAN;
    return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_with: unknown accountant kind %d; "
                        "use FL_ACCOUNTANT_RDP or FL_ACCOUNTANT_PLD", (int)k);
}

const char *fl_accountant_name(fl_accountant_kind k)
{
    switch (k) {
    case FL_ACCOUNTANT_RDP:
        return "rdp";
    case FL_ACCOUNTANT_PLD:
        return "pld";
    }
    return "unknown";
}

int fl_accountant_parse(const char *s, fl_accountant_kind *out)
{
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_accountant_parse: out is NULL");
    if (s && strcmp(s, "rdp") == 0) {
        *out = FL_ACCOUNTANT_RDP;
        return FL_OK;
    }
    if (s && strcmp(s, "pld") == 0) {
        *out = FL_ACCOUNTANT_PLD;
        return FL_OK;
    }
    return fl_error_set(FL_EINVAL, "fl_accountant_parse: unknown accountant \"%s\"; "
                        "accepted values are \"rdp\" and \"pld\"", s ? s : "(null)");
}

/* Epsilon for calibration: a PLD grid too wide to build (FL_ERANGE, which
 * happens only at very small sigma) means "far above any target", so it
 * counts as +infinity and the bisection moves to larger sigma. */
/* Epsilon of the prior charges plus `steps` more at (q, sigma); a PLD grid
 * too wide to build (FL_ERANGE) counts as +inf so the search moves on to
 * more noise. */
static int s_calib_eps(fl_accountant_kind k, const fl_accountant_event *prior, size_t n,
                       double q, double sigma, uint64_t steps, double delta, double *e)
{
    fl_accountant_event *ev = malloc((n + 1) * sizeof *ev);
    int rc;
    if (!ev)
        return fl_error_set(FL_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        ev[i] = prior[i];
    ev[n].q = q;
    ev[n].sigma = sigma;
    ev[n].steps = steps;
    rc = fl_accountant_epsilon_events(k, ev, n + 1, delta, e);
    free(ev);
    if (rc == FL_ERANGE && k == FL_ACCOUNTANT_PLD) {
        fl_error_clear();
        *e = INFINITY;
        rc = FL_OK;
    }
    return rc;
}

int fl_accountant_calibrate_sigma_events(fl_accountant_kind k, const fl_accountant_event *prior,
                                         size_t n, double q, uint64_t steps, double target_eps,
                                         double delta, double *sigma)
{
    int rc = FL_OK;
    double e = 0.0, lo = S_SIGMA_MIN, hi = S_SIGMA_MAX;

    if (!sigma)
        return fl_error_set(FL_EINVAL, "fl_accountant_calibrate_sigma: sigma is NULL");
    *sigma = NAN;
    if (k != FL_ACCOUNTANT_RDP && k != FL_ACCOUNTANT_PLD)
        return fl_error_set(FL_EINVAL, "fl_accountant_calibrate_sigma: unknown accountant "
                            "kind %d; use FL_ACCOUNTANT_RDP or FL_ACCOUNTANT_PLD", (int)k);
    if (!isfinite(target_eps) || !(target_eps > 0.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_calibrate_sigma: target epsilon=%g "
                            "must be finite and > 0", target_eps);
    if (n > 0) {
        /* RDP composes additively (Mironov 2017, Prop. 1): what is already
         * spent is a floor for any further plan. */
        if ((rc = fl_accountant_epsilon_events(k, prior, n, delta, &e)) != FL_OK)
            goto done;
        if (e >= target_eps) {
            rc = fl_error_set(FL_EBUDGET, "the earlier charges already spend epsilon %.4f, "
                              "which leaves nothing of the target %g", e, target_eps);
            goto done;
        }
    }
    if ((rc = s_calib_eps(k, prior, n, q, hi, steps, delta, &e)) != FL_OK)
        goto done;
    if (e > target_eps) {
        rc = fl_error_set(n ? FL_EBUDGET : FL_ERANGE,
                          "fl_accountant_calibrate_sigma: epsilon=%g at the "
                          "largest noise multiplier sigma=%g still exceeds the target %g "
                          "(q=%g, steps=%llu, delta=%g, accountant %s); lower q or the "
                          "number of steps, or raise the target", e, hi, target_eps, q,
                          (unsigned long long)steps, delta, fl_accountant_name(k));
        goto done;
    }
    if ((rc = s_calib_eps(k, prior, n, q, lo, steps, delta, &e)) != FL_OK)
        goto done;
    if (e <= target_eps) {
        *sigma = lo;
        goto done;
    }
    /* Invariant: eps(lo) > target >= eps(hi); epsilon is non-increasing in
     * sigma for both accountants.  Returning hi never exceeds the target. */
    while (hi - lo > S_CALIB_RTOL * hi) {
        double mid = 0.5 * (lo + hi);
        if ((rc = s_calib_eps(k, prior, n, q, mid, steps, delta, &e)) != FL_OK)
            goto done;
        if (e <= target_eps)
            hi = mid;
        else
            lo = mid;
    }
    *sigma = hi;

done:
    return rc;
}

int fl_accountant_calibrate_sigma_with(fl_accountant_kind k, double q, uint64_t steps,
                                       double target_eps, double delta, double *sigma)
{
    return fl_accountant_calibrate_sigma_events(k, NULL, 0, q, steps, target_eps, delta, sigma);
}

int fl_accountant_calibrate_sigma(double q, uint64_t steps, double target_eps, double delta,
                                  double *sigma)
{
    return fl_accountant_calibrate_sigma_with(FL_ACCOUNTANT_RDP, q, steps, target_eps, delta,
                                              sigma);
}

/* ---------------------------------------------- heterogeneous charges */

/* Merges charges with the same (q, sigma) so each distinct mechanism's RDP
 * is evaluated once per order. Returns the number of distinct mechanisms. */
static size_t s_merge(const fl_accountant_event *ev, size_t n, fl_accountant_event *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < m && !(out[j].q == ev[i].q && out[j].sigma == ev[i].sigma))
            j++;
        if (j == m)
            out[m++] = ev[i];
        else
            out[j].steps += ev[i].steps;
    }
    return m;
}

static void s_consider_events(const fl_accountant_event *ev, size_t m, double delta, double a,
                              double *best)
{
    double total = 0.0;
    for (size_t i = 0; i < m; i++) {
        double r = fl_accountant_rdp(ev[i].q, ev[i].sigma, a);
        if (isnan(r))
            return;
        total += (double)ev[i].steps * r;
    }
    double e = s_eps_at(total, a, delta);
    if (!isnan(e) && e < *best)
        *best = e;
}

int fl_accountant_epsilon_events(fl_accountant_kind kind, const fl_accountant_event *ev,
                                 size_t n, double delta, double *eps)
{
    fl_accountant_event *m_ev;
    double best = INFINITY;
    size_t m;
    int rc = FL_OK;

    if (!eps)
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_events: eps is NULL");
    *eps = NAN;
    if (!(delta > 0.0 && delta < 1.0))
        return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_events: delta=%g must be in "
                            "(0, 1)", delta);
    for (size_t i = 0; i < n; i++)
        if (!(ev[i].q > 0.0 && ev[i].q <= 1.0) || !isfinite(ev[i].sigma) ||
            !(ev[i].sigma > 0.0))
            return fl_error_set(FL_EINVAL, "fl_accountant_epsilon_events: charge %zu has "
                                "q=%g sigma=%g (need 0<q<=1, sigma>0)", i + 1, ev[i].q,
                                ev[i].sigma);
    m_ev = malloc((n ? n : 1) * sizeof *m_ev);
    if (!m_ev)
        return fl_error_set(FL_ENOMEM, "out of memory");
    m = s_merge(ev, n, m_ev);
    if (m == 0 || (m == 1 && m_ev[0].steps == 0)) {
        *eps = 0.0;
        goto done;
    }
    if (m == 1) {
        /* One mechanism: exactly the homogeneous accountant. */
        rc = fl_accountant_epsilon_with(kind, m_ev[0].q, m_ev[0].sigma, m_ev[0].steps, delta,
                                        eps);
        goto done;
    }
    if (kind != FL_ACCOUNTANT_RDP) {
        rc = fl_error_set(FL_EINVAL, "the %s accountant composes only charges with one (q, "
                          "sigma); this history has %zu different ones: use the rdp "
                          "accountant", fl_accountant_name(kind), m);
        goto done;
    }
    for (int x = 1; x <= 99; x++)
        s_consider_events(m_ev, m, delta, 1.0 + x / 10.0, &best);
    for (int a = 11; a <= 256; a++)
        s_consider_events(m_ev, m, delta, (double)a, &best);
    for (size_t k = 0; k < sizeof s_big_orders / sizeof s_big_orders[0]; k++)
        s_consider_events(m_ev, m, delta, s_big_orders[k], &best);
    if (isnan(best) || isinf(best)) {
        rc = fl_error_set(FL_ERANGE, "no finite epsilon for this history of %zu charges", n);
        goto done;
    }
    *eps = best < 0.0 ? 0.0 : best;
done:
    free(m_ev);
    return rc;
}
