/*
 * fl_accountant: Renyi-DP accountant for DP-SGD with Poisson sampling
 * (the Poisson-subsampled Gaussian mechanism, Mironov, Talwar & Zhang
 * 2019), with the RDP -> (epsilon, delta) conversion of Balle et al. 2020.
 */
#ifndef FL_ACCOUNTANT_H
#define FL_ACCOUNTANT_H

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

#endif
