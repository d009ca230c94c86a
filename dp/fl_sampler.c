/*
 * fl_sampler: Poisson (Bernoulli-per-record) batch sampling from the
 * libsodium CSPRNG.
 */
#include "dp/fl_sampler.h"

#include <math.h>

#include <sodium.h>

#include "dp/fl_noise.h"

#define S_BLOCK 2048 /* CSPRNG words drawn per fl_noise_random_u64 call */

int fl_sampler_poisson(size_t N, double q, size_t *idx, size_t *n_out)
{
    int rc = FL_OK;
    uint64_t u[S_BLOCK];
    size_t count = 0;

    if (!n_out)
        return fl_error_set(FL_EINVAL, "fl_sampler_poisson: n_out is NULL");
    *n_out = 0;
    if (!(q > 0.0 && q <= 1.0))
        return fl_error_set(FL_EINVAL, "fl_sampler_poisson: sampling rate q=%g "
                            "must be in (0, 1]", q);
    if (N > 0 && !idx)
        return fl_error_set(FL_EINVAL, "fl_sampler_poisson: idx is NULL with N=%zu", N);

    if (q == 1.0) {
        for (size_t i = 0; i < N; i++)
            idx[i] = i;
        *n_out = N;
        return FL_OK;
    }

    /* Privacy argument: the subsampled-Gaussian RDP bound of Mironov,
     * Talwar & Zhang 2019 (and the Poisson analysis of Zhu & Wang 2019 used
     * by Opacus) holds only if every record enters the batch independently
     * with probability exactly q, so the batch size is itself random.
     * Shuffling or fixed-size batches would need a different accountant.
     * Each record gets its own 53-bit uniform U = k 2^-53 (k the top 53
     * bits of a CSPRNG word); P(U < q) = ceil(q 2^53)/2^53, i.e. q up to
     * 2^-53.  U < q is tested as k < T = ceil(q 2^53) (q 2^53 is exact in
     * double and k is an integer), which is the same event. */
    const uint64_t T = (uint64_t)ceil(q * 0x1p53);
    for (size_t base = 0; base < N; base += S_BLOCK) {
        size_t m = N - base < S_BLOCK ? N - base : S_BLOCK;
        if ((rc = fl_noise_random_u64(u, m)) != FL_OK)
            goto done;
        for (size_t j = 0; j < m; j++) {
            /* branch-free append: the slot is overwritten unless taken */
            idx[count] = base + j;
            count += (u[j] >> 11) < T;
        }
    }
    *n_out = count;

done:
    sodium_memzero(u, sizeof u);
    return rc;
}
