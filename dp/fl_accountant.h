/*
 * fl_accountant: privacy accountants for DP-SGD with Poisson sampling (the
 * Poisson-subsampled Gaussian mechanism).  Two accountants behind one
 * selector: Renyi DP (Mironov, Talwar & Zhang 2019, with the RDP ->
 * (epsilon, delta) conversion of Balle et al. 2020) and privacy loss
 * distributions (Koskela, Jalko & Honkela 2020; Doroshenko et al. 2022),
 * plus the exact analytic Gaussian for the full-batch case (Balle & Wang
 * 2018).  docs/privacy-accounting.md explains which to use and why.
 */
#ifndef FL_ACCOUNTANT_H
#define FL_ACCOUNTANT_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

/** RDP at order alpha > 1 of ONE step of the Poisson-subsampled Gaussian
 *  with sampling rate q in (0,1] and noise multiplier sigma >= 0 (Mironov,
 *  Talwar & Zhang 2019).  Integer alpha: the exact binomial sum
 *  A_alpha = sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2-k)/(2 sigma^2))
 *  in log space, RDP = log(A_alpha)/(alpha-1).  Fractional alpha: their
 *  Section 3.3 two-sided series (as Opacus' _compute_log_a_frac).
 *  q == 1 gives alpha/(2 sigma^2) exactly; sigma == 0 gives +inf.
 *  Returns NaN for invalid arguments (q outside (0,1], sigma < 0 or NaN,
 *  alpha <= 1 or not finite). */
double fl_accountant_rdp(double q, double sigma, double alpha);

/** Epsilon after `steps` compositions at `delta`:
 *  eps = min over the order grid of
 *        steps*RDP(a) + log1p(-1/a) - (log(delta) + log(a))/(a-1)
 *  (Balle et al. 2020 Thm 21; Canonne, Kamath & Steinke 2020), clamped at
 *  0.  Grid: 1.1..10.9 step 0.1, 11..256 every integer, then 288, 320,
 *  384, 448, 512, 640, 768, 896, 1024.  *best_order (may be NULL) receives
 *  the minimising order (0 when steps == 0 or sigma == 0).  Validates
 *  0<q<=1, sigma>=0 finite, 0<delta<1 (FL_EINVAL naming the bad value).
 *  steps == 0 gives eps 0; sigma == 0 (steps > 0) gives eps +inf. */
FL_NODISCARD int fl_accountant_epsilon(double q, double sigma, uint64_t steps, double delta,
                                       double *eps, double *best_order);

/** Smallest sigma with fl_accountant_epsilon(q, sigma, steps, delta) <=
 *  target_eps, by bisection over sigma in [0.1, 1000] to relative
 *  precision 1e-4, returning the upper end of the final bracket (rounded
 *  UP, so the target is never exceeded).  If sigma = 0.1 already meets the
 *  target (e.g. steps == 0), returns 0.1.  FL_EINVAL on bad q, delta or
 *  target_eps (must be finite and > 0); FL_ERANGE if even sigma = 1000
 *  cannot reach the target. */
FL_NODISCARD int fl_accountant_calibrate_sigma(double q, uint64_t steps, double target_eps,
                                               double delta, double *sigma);

/** Which accountant turns (q, sigma, steps, delta) into epsilon. */
typedef enum {
    FL_ACCOUNTANT_RDP = 1, /* Renyi DP, fl_accountant_epsilon */
    FL_ACCOUNTANT_PLD = 2  /* privacy loss distribution, fl_accountant_epsilon_pld */
} fl_accountant_kind;

/** Exact epsilon of `steps` compositions of the Gaussian mechanism with L2
 *  sensitivity 1 and noise multiplier sigma, i.e. DP-SGD with q = 1 (full
 *  batch).  Balle & Wang 2018 ("Improving the Gaussian mechanism", Thm 8):
 *  with s = sigma / sqrt(steps) (T Gaussians compose to one with that
 *  multiplier), eps is the smallest value with
 *  Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s)) <= delta,
 *  found by bisection to ~1e-12 relative.  Validates sigma > 0 finite and
 *  0 < delta < 1 (FL_EINVAL naming the value); steps == 0 gives 0. */
FL_NODISCARD int fl_accountant_epsilon_exact_gaussian(double sigma, uint64_t steps,
                                                      double delta, double *eps);

/** Epsilon after `steps` compositions of the Poisson-subsampled Gaussian
 *  (rate q in (0,1], noise multiplier sigma >= 0) at `delta`, from its
 *  privacy loss distribution: each step's PLD is discretised on a grid of
 *  width <= 1e-4 with the pessimistic "connect the dots" construction
 *  (Doroshenko et al. 2022), composed by FFT, and delta(eps) evaluated
 *  exactly on the result; the maximum over the add and remove neighbouring
 *  relations is returned.  Never below the true epsilon up to
 *  floating-point error (see docs/privacy-accounting.md).  Same argument
 *  checks and special cases as fl_accountant_epsilon; FL_ENOMEM if the
 *  grid cannot be allocated, FL_ERANGE if no grid of at most 2^21 points
 *  covers the composed distribution. */
FL_NODISCARD int fl_accountant_epsilon_pld(double q, double sigma, uint64_t steps,
                                           double delta, double *eps);

/** Epsilon by the accountant `k` (FL_ACCOUNTANT_RDP or FL_ACCOUNTANT_PLD);
 *  FL_EINVAL for any other k, else as the chosen function. */
FL_NODISCARD int fl_accountant_epsilon_with(fl_accountant_kind k, double q, double sigma,
                                            uint64_t steps, double delta, double *eps);

/** Like fl_accountant_calibrate_sigma but with the accountant `k`: the
 *  smallest sigma (bisection on [0.1, 1000], rel. precision 1e-4, upper end
 *  returned) whose epsilon under `k` is <= target_eps.  Errors as
 *  fl_accountant_calibrate_sigma, plus FL_EINVAL for an unknown k. */
FL_NODISCARD int fl_accountant_calibrate_sigma_with(fl_accountant_kind k, double q,
                                                    uint64_t steps, double target_eps,
                                                    double delta, double *sigma);

/** Stable lower-case name of an accountant ("rdp", "pld"), or "unknown".
 *  The string is static; the caller must not free it. */
const char *fl_accountant_name(fl_accountant_kind k);

/** Parses "rdp" or "pld" (exact, lower case) into *out.  FL_EINVAL naming
 *  the input and the accepted values otherwise (also for NULL s). */
FL_NODISCARD int fl_accountant_parse(const char *s, fl_accountant_kind *out);

/** One DP-SGD charge for composition: `steps` steps of the Poisson-subsampled
 *  Gaussian with rate q and noise multiplier sigma. */
typedef struct {
    double q;
    double sigma;
    uint64_t steps;
} fl_accountant_event;

/** Epsilon at delta of the composition of n charges that may differ in q and
 *  sigma (a ledger's history). RDP: per-order RDP adds up over all charges
 *  (Mironov 2017, Prop. 1), then the same order grid and conversion as
 *  fl_accountant_epsilon; a single kind of charge gives exactly
 *  fl_accountant_epsilon's result. PLD: only for charges that all share q and
 *  sigma (FL_EINVAL otherwise: use RDP). n == 0 gives 0. */
FL_NODISCARD int fl_accountant_epsilon_events(fl_accountant_kind kind,
                                              const fl_accountant_event *ev, size_t n,
                                              double delta, double *eps);

/** Smallest sigma such that `n` prior charges plus `steps` more at rate q
 *  stay within target_eps at delta (bisection; rounded up so the target is
 *  never exceeded). FL_EBUDGET if the prior charges leave no room, FL_ERANGE
 *  if no sigma up to the largest allowed reaches the target. */
FL_NODISCARD int fl_accountant_calibrate_sigma_events(fl_accountant_kind kind,
                                                      const fl_accountant_event *prior, size_t n,
                                                      double q, uint64_t steps,
                                                      double target_eps, double delta,
                                                      double *sigma);

#endif
