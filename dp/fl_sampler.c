/*
 * fl_sampler: Poisson (Bernoulli-per-record) batch sampling from the
 * libsodium CSPRNG.
 */
#include "dp/fl_sampler.h"

#include <math.h>
#include <stdlib.h>

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

struct fl_poisson_batch {
    size_t N;
    size_t *idx; /* N slots; the first n hold the sample (secret; wiped) */
    size_t n;
    double q;
    int filled;
};

int fl_poisson_batch_new(fl_poisson_batch **out, size_t N)
{
    if (!out)
        return fl_error_set(FL_EINVAL, "fl_poisson_batch_new: out is NULL");
    *out = NULL;
    fl_poisson_batch *b = calloc(1, sizeof *b);
    if (!b || (N > 0 && !(b->idx = calloc(N, sizeof *b->idx)))) {
        free(b);
        return fl_error_set(FL_ENOMEM, "fl_poisson_batch_new: out of memory for %zu records",
                            N);
    }
    b->N = N;
    *out = b;
    return FL_OK;
}

int fl_poisson_batch_fill(fl_poisson_batch *b, double q)
{
    if (!b)
        return fl_error_set(FL_EINVAL, "fl_poisson_batch_fill: batch is NULL");
    if (b->filled)
        return fl_error_set(FL_ESTATE, "fl_poisson_batch_fill: the batch holds a sample that "
                            "was never used; consume it first (one sample per step)");
    size_t n = 0;
    int rc = fl_sampler_poisson(b->N, q, b->idx, &n);
    if (rc != FL_OK) {
        if (b->N > 0)
            sodium_memzero(b->idx, b->N * sizeof *b->idx);
        return rc;
    }
    b->n = n;
    b->q = q;
    b->filled = 1;
    return FL_OK;
}

int fl_poisson_batch_indices(const fl_poisson_batch *b, size_t N, double q, const size_t **idx,
                             size_t *n)
{
    if (!b || !idx || !n)
        return fl_error_set(FL_EINVAL, "fl_poisson_batch_indices: NULL argument");
    if (!b->filled)
        return fl_error_set(FL_ESTATE, "fl_poisson_batch_indices: the batch holds no sample "
                            "(never filled, or already used by a step): fill it first");
    if (N != b->N || !(q == b->q))
        return fl_error_set(FL_EINVAL, "fl_poisson_batch_indices: the sample was drawn for "
                            "N=%zu, q=%.17g but the step needs N=%zu, q=%.17g", b->N, b->q, N,
                            q);
    *idx = b->idx;
    *n = b->n;
    return FL_OK;
}

void fl_poisson_batch_consume(fl_poisson_batch *b)
{
    if (!b)
        return;
    /* fl_sampler_poisson writes no slot past index n (its branch-free
     * append stores each candidate at idx[count]), and a failed fill
     * wiped everything, so the first n + 1 slots are all that can hold
     * anything. */
    if (b->filled)
        sodium_memzero(b->idx, (b->n < b->N ? b->n + 1 : b->N) * sizeof *b->idx);
    b->n = 0;
    b->q = 0.0;
    b->filled = 0;
}

void fl_poisson_batch_free(fl_poisson_batch *b)
{
    if (!b)
        return;
    fl_poisson_batch_consume(b);
    free(b->idx);
    free(b);
}
