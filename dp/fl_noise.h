/*
 * fl_noise: Gaussian noise and raw random words drawn from libsodium's
 * CSPRNG (randombytes_buf).  Never rand(): the noise is what makes DP-SGD
 * private, so an attacker must not be able to predict or reconstruct it.
 * Gaussian noise is the discrete Gaussian of Canonne, Kamath & Steinke
 * 2020 on the grid gamma*Z (gamma = fl_noise_grid(stddev)), up to a total-
 * variation error below 2^-93 per sample (docs/privacy-accounting.md),
 * with the input randomly rounded to the same grid first, so that no
 * floating-point artefact of the sampler depends on the private value
 * (Mironov 2012).
 */
#ifndef FL_NOISE_H
#define FL_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

/** Adds i.i.d. Gaussian noise of standard deviation stddev to each of
 *  out[0..n) using libsodium's CSPRNG: each value x becomes
 *  gamma * (R(x/gamma) + Z), R an unbiased randomized rounding to an
 *  integer, Z ~ N_Z(0, (stddev/gamma)^2) the discrete Gaussian (CKS 2020)
 *  within total variation 2^-93, gamma = fl_noise_grid(stddev); then
 *  rounded to float (post-processing).  The first call for a new stddev
 *  mantissa builds a 512 KiB table (~10 ms), cached per thread (4 entries;
 *  fl_noise_cache_free releases them).  The caller owns `out`.  stddev
 *  must be finite and >= 0 (0 leaves `out` unchanged), else FL_EINVAL;
 *  FL_ERANGE if some |out[i]| >= 2^52 gamma (the grid value would not be
 *  exact), leaving `out` unchanged; FL_ENOMEM if the table cannot be
 *  allocated; FL_ECRYPTO if libsodium cannot initialise.  `out` may be
 *  NULL only when n == 0. */
FL_NODISCARD int fl_noise_add_gaussian(float *out, size_t n, double stddev);

/** As fl_noise_add_gaussian on doubles: the results are exact multiples
 *  of fl_noise_grid(stddev).  Use this on a clipped sum kept in double so
 *  the released value is a function of the grid value only. */
FL_NODISCARD int fl_noise_add_gaussian_f64(double *out, size_t n, double stddev);

/** Noise drawn ahead of the value it will protect (a "prepared batch"):
 *  the discrete Gaussian Z_i and the randomized-rounding word of every
 *  coordinate, drawn by fl_noise_batch_fill (on any thread: the noise does
 *  not depend on the data), then consumed by fl_noise_batch_apply_f64,
 *  which releases v[i] -> gamma * (R(v[i]/gamma) + Z_i) with exactly the
 *  law of fl_noise_add_gaussian_f64.  ONE-TIME PAD: a filled batch is
 *  applied at most once (two releases with the same Z would let their
 *  difference cancel the noise); the object enforces it with FL_ESTATE.
 *  Not internally locked: one thread at a time (hand it over under a
 *  mutex, as node/fl_trainer does).  Secret: wiped after apply and on
 *  free. */
typedef struct fl_noise_batch fl_noise_batch;

/** Creates an unfilled batch for vectors of n coordinates (12 bytes each,
 *  allocated here; n may be 0).  *out owns it (fl_noise_batch_free).
 *  FL_EINVAL if out is NULL, FL_ENOMEM on allocation failure. */
FL_NODISCARD int fl_noise_batch_new(fl_noise_batch **out, size_t n);

/** Draws the noise for standard deviation stddev (finite, >= 0; 0 draws
 *  nothing and makes apply the identity, as fl_noise_add_gaussian_f64
 *  with stddev 0) into an unfilled or consumed batch, from libsodium's
 *  CSPRNG and the CALLING thread's table cache (call fl_noise_cache_free
 *  before that thread exits).  Errors: FL_ESTATE if b holds a filled,
 *  unapplied batch (apply or free it first); FL_EINVAL on a bad stddev or
 *  NULL b; FL_ENOMEM, FL_ECRYPTO.  On error b stays unfilled. */
FL_NODISCARD int fl_noise_batch_fill(fl_noise_batch *b, double stddev);

/** Releases v[0..n) with the prepared noise: v[i] becomes gamma * (R(v[i]
 *  / gamma) + Z_i), gamma = fl_noise_grid(stddev), R the unbiased
 *  randomized rounding (its rare exact tie draws fresh CSPRNG bits on the
 *  calling thread); the same law as fl_noise_add_gaussian_f64(v, n,
 *  stddev).  Then wipes the batch and marks it consumed.  The caller owns
 *  v.  Errors, all of which leave v unchanged and the batch as it was
 *  (filled batches stay filled: nothing that depends on Z was released,
 *  so a later single apply is still the only use): FL_ESTATE if b is not
 *  filled (never filled, or already applied); FL_EINVAL if n differs from
 *  the batch's size, stddev differs from the one it was filled with, or
 *  v (with n > 0) or b is NULL; FL_ERANGE if some |v[i]| >= 2^52 gamma or
 *  is not finite, as fl_noise_add_gaussian_f64; FL_ECRYPTO. */
FL_NODISCARD int fl_noise_batch_apply_f64(fl_noise_batch *b, double *v, size_t n,
                                          double stddev);

/** The fused release used by DP-SGD when the clipped sum of a step came
 *  from one float chunk: out[i] = (float)(scale * gamma * (R(sum[i] /
 *  gamma) + Z_i)), exactly what fl_noise_batch_apply_f64 on the sum
 *  widened to double followed by a multiplication by `scale` (a public
 *  constant: post-processing) would give, in one pass.  sum is WIPED (set
 *  to 0) as it is read and the batch is wiped and marked consumed.  Errors
 *  as fl_noise_batch_apply_f64 (sum and the batch then unchanged, out
 *  zeroed); also FL_EINVAL if out is NULL or scale is not finite. */
FL_NODISCARD int fl_noise_batch_release_f32(fl_noise_batch *b, float *sum, size_t n,
                                            double stddev, double scale, float *out);

/** n words from libsodium's CSPRNG (a fresh 256-bit seed from
 *  randombytes_buf per block of up to 32 KiB of ChaCha20 keystream, as the
 *  noise samplers use).  FL_EINVAL if out is NULL with n > 0,
 *  FL_ECRYPTO if libsodium cannot initialise. */
FL_NODISCARD int fl_noise_random_u64(uint64_t *out, size_t n);

/** Wipes and frees a batch; NULL is a no-op. */
void fl_noise_batch_free(fl_noise_batch *b);

/** The grid step gamma used for noise of standard deviation stddev > 0 (a
 *  power of two with stddev/gamma in [2^28, 2^29)); 0 for stddev <= 0 or
 *  non-finite. */
double fl_noise_grid(double stddev);

/** Frees the calling thread's cached noise tables (they hold no secrets:
 *  they depend on stddev only).  Later calls rebuild what they need.
 *  Call before a thread exits to leave no allocation behind. */
void fl_noise_cache_free(void);


#endif
