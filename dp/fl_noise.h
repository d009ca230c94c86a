/*
 * fl_noise: Gaussian noise and uniform variates drawn from libsodium's
 * CSPRNG (randombytes_buf).  Never rand(): the noise is what makes DP-SGD
 * private, so an attacker must not be able to predict or reconstruct it.
 */
#ifndef FL_NOISE_H
#define FL_NOISE_H

#include <stddef.h>

#include "error/fl_error.h"

/** Adds i.i.d. N(0, stddev^2) to each of out[0..n) using libsodium's CSPRNG.
 *  The caller owns `out`.  stddev must be finite and >= 0 (0 leaves `out`
 *  unchanged), else FL_EINVAL; FL_ECRYPTO if libsodium cannot initialise.
 *  `out` may be NULL only when n == 0. */
FL_NODISCARD int fl_noise_add_gaussian(float *out, size_t n, double stddev);

/** Fills out[0..n) with CSPRNG uniforms in [0,1), each with 53 random bits
 *  (k * 2^-53 for a uniform integer k < 2^53).  The caller owns `out`.
 *  Returns FL_OK, FL_EINVAL (out NULL with n > 0) or FL_ECRYPTO. */
FL_NODISCARD int fl_noise_uniform(double *out, size_t n);

#endif
