/*
 * fl_noise_internal: the samplers behind fl_noise_add_gaussian, exposed
 * only so tests can check their distributions (tests/dp/) and the
 * benchmark can time the previous sampler (bench/bench_noise.c), and
 * test hooks into prepared batches.  Not part
 * of the module's API; do not call from anywhere else.
 */
#ifndef FL_NOISE_INTERNAL_H
#define FL_NOISE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dp/fl_noise.h"
#include "error/fl_error.h"

/** Fills out[0..n) with i.i.d. draws of the discrete Gaussian N_Z(0,
 *  sigma_z^2), P(z) proportional to exp(-z^2 / (2 sigma_z^2)), by Canonne,
 *  Kamath & Steinke 2020 Algorithm 3 with Laplace scale t = floor(sigma_z)
 *  + 1 (uniforms from randombytes_uniform).  sigma_z in (0, 2^31): else
 *  FL_EINVAL; FL_ECRYPTO if libsodium cannot initialise. */
FL_NODISCARD int fl_noise_sample_discrete_gaussian(double sigma_z, int64_t *out, size_t n);

/** The sampler fl_noise_add_gaussian_f64 used before the table sampler:
 *  the same grid and randomized rounding, Z by CKS 2020 Algorithm 3 per
 *  sample.  Kept as the benchmark baseline; same contract and errors as
 *  fl_noise_add_gaussian_f64. */
FL_NODISCARD int fl_noise_add_gaussian_cks_f64(double *out, size_t n, double stddev);

/** Fills out[0..n) with the integer noise Z that fl_noise_add_gaussian_f64
 *  adds (in grid units) for noise of standard deviation stddev: Z ~
 *  N_Z(0, (stddev / fl_noise_grid(stddev))^2) up to the documented TV
 *  error.  stddev finite and > 0, else FL_EINVAL; FL_ENOMEM, FL_ECRYPTO. */
FL_NODISCARD int fl_noise_sample_grid_z(double stddev, int64_t *out, size_t n);

/** Fills out[0..n) with draws of the base sampler behind
 *  fl_noise_sample_grid_z (one alias-table draw each): X ~ N_Z(0, s_b^2),
 *  s_b as reported by fl_noise_table_info(stddev).  Errors as above. */
FL_NODISCARD int fl_noise_sample_base(double stddev, int64_t *out, size_t n);

/** The base sigma s_b of the alias table used for noise of standard
 *  deviation stddev (building it if needed) and, if table is not NULL, an
 *  identifier of that table (its address; valid until the calling
 *  thread's cache evicts or frees it).  Errors as above. */
FL_NODISCARD int fl_noise_table_info(double stddev, double *base_sigma, const void **table);

/** exp(-x) for x = x_hi + x_lo in [0, 100] in the double-double
 *  arithmetic used to build the tables: *hi + *lo.  FL_EINVAL outside. */
FL_NODISCARD int fl_noise_exp_neg_dd(double x_hi, double x_lo, double *hi, double *lo);

/** Test hook: the secret buffers of a batch (Z_i as int64, the rounding
 *  words as uint32; n entries each), so tests can check that apply wipes
 *  them and can read Z to isolate the rounding. */
void fl_noise_batch_buffers(const fl_noise_batch *b, const int64_t **z, const uint32_t **u,
                            size_t *n);

/** Test hook: sets every rounding word of a FILLED batch to u, so a test
 *  can force the exact tie of the randomized rounding.  FL_ESTATE if b is
 *  not filled. */
FL_NODISCARD int fl_noise_batch_set_round_words(fl_noise_batch *b, uint32_t u);

#endif
