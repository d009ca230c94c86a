/*
 * fl_accountant_internal: the two independent log(A_alpha) computations
 * behind fl_accountant_rdp, exposed only so tests can check that they
 * agree at integer orders.  Not part of the module's API; do not call
 * from outside dp/ and tests/dp/.
 */
#ifndef FL_ACCOUNTANT_INTERNAL_H
#define FL_ACCOUNTANT_INTERNAL_H

/** log A_alpha by the exact binomial sum; alpha must be an integer >= 2,
 *  0 < q < 1, sigma > 0.  NaN on invalid arguments. */
double fl_accountant_log_a_int(double q, double sigma, double alpha);

/** log A_alpha by the two-sided series of Mironov, Talwar & Zhang 2019
 *  Section 3.3; any real alpha > 1, 0 < q < 1, sigma > 0.  NaN on invalid
 *  arguments. */
double fl_accountant_log_a_frac(double q, double sigma, double alpha);

/* log(erfc(x)) with full relative precision in the far tail, and log of
 * the standard normal CDF: shared by the RDP, analytic-Gaussian and PLD
 * accountants. */
double fl_accountant_log_erfc(double x);
double fl_accountant_log_phi(double x);

#endif
