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

/** Modes of fl_noise_set_simd and results of fl_noise_simd_active. */
#define FL_NOISE_SIMD_OFF 0    /* scalar code only (the reference) */
#define FL_NOISE_SIMD_BEST 1   /* the best SIMD path the CPU supports (default) */
#define FL_NOISE_SIMD_AVX2 2   /* at most AVX2 (to test it on AVX-512 CPUs) */
#define FL_NOISE_SIMD_AVX512 3 /* result only: AVX-512F/DQ/VL/BW */

/** Test hook: selects the SIMD paths of fl_noise_batch_fill (AVX-512 or
 *  AVX2) and fl_noise_batch_release_f32 (AVX-512 only), process-wide (set
 *  it while no other thread uses fl_noise): one of FL_NOISE_SIMD_OFF,
 *  _BEST (default; also for any other value) or _AVX2.  They run only on
 *  x86-64 CPUs that support them and give bit-identical results to the
 *  scalar code for the same CSPRNG words; this lets tests compare them. */
void fl_noise_set_simd(int mode);

/** Test hook: the path fl_noise_batch_fill would use now:
 *  FL_NOISE_SIMD_OFF, _AVX2 or _AVX512 (release_f32 uses SIMD only for
 *  _AVX512). */
int fl_noise_simd_active(void);

/** Test hook: makes the calling thread's CSPRNG deterministic: from now
 *  on every keystream block is ChaCha20 under a seed derived from seed
 *  (32 bytes) and a block counter restarted by this call, instead of a
 *  fresh seed from randombytes_buf; NULL restores randombytes_buf.  The
 *  noise is then predictable: for tests only, never in a release. */
void fl_noise_test_seed(const unsigned char seed[32]);

/** Test hook: how many SIMD blocks the calling thread has discarded and
 *  redone with the scalar code (an alias-table tie or rejection in fill,
 *  a rounding tie in release_f32), so tests can check that they ran. */
size_t fl_noise_test_simd_redos(void);

#endif
