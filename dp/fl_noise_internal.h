/*
 * fl_noise_internal: the integer discrete Gaussian sampler behind
 * fl_noise_add_gaussian, exposed only so tests can check its distribution
 * at small sigma (where N_Z differs visibly from a rounded normal).  Not
 * part of the module's API; do not call from outside dp/ and tests/dp/.
 */
#ifndef FL_NOISE_INTERNAL_H
#define FL_NOISE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

/** Fills out[0..n) with i.i.d. draws of the discrete Gaussian N_Z(0,
 *  sigma_z^2), P(z) proportional to exp(-z^2 / (2 sigma_z^2)), by Canonne,
 *  Kamath & Steinke 2020 Algorithm 3 with Laplace scale t = floor(sigma_z)
 *  + 1 (uniforms from randombytes_uniform).  sigma_z in (0, 2^31): else
 *  FL_EINVAL; FL_ECRYPTO if libsodium cannot initialise. */
FL_NODISCARD int fl_noise_sample_discrete_gaussian(double sigma_z, int64_t *out, size_t n);

#endif
