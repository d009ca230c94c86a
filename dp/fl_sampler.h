/*
 * fl_sampler: Poisson sampling of training batches, the sampling scheme the
 * RDP accountant (dp/fl_accountant.h) assumes.
 */
#ifndef FL_SAMPLER_H
#define FL_SAMPLER_H

#include <stddef.h>

#include "error/fl_error.h"

/** Poisson sampling: each of the N records is selected independently with
 *  probability q, as the accountant assumes (Mironov, Talwar & Zhang 2019;
 *  Zhu & Wang 2019).  Writes the selected indices in increasing order to
 *  idx (caller-owned, capacity N) and their count to *n_out.  Requires
 *  0 < q <= 1 (q == 1 selects every record); FL_EINVAL on a bad q or a NULL
 *  buffer, FL_ECRYPTO if the CSPRNG is unavailable.  The realised batch is
 *  private: do not log or send idx. */
FL_NODISCARD int fl_sampler_poisson(size_t N, double q, size_t *idx, size_t *n_out);

/** A Poisson sample drawn ahead of the step that uses it (a "prepared
 *  sample"), so the draw can run on another thread: it depends only on
 *  (N, q) and the CSPRNG, never on the data, so drawing it early does not
 *  change its law.  Each sample is used by one step at most (the
 *  subsampling amplification of the accountant needs a fresh, secret
 *  sample per step): fill, read the indices, consume (wipes).  Not
 *  internally locked; hand it over under a mutex. */
typedef struct fl_poisson_batch fl_poisson_batch;

/** An empty sample for N records (N indices allocated here).  FL_EINVAL
 *  if out is NULL, FL_ENOMEM. */
FL_NODISCARD int fl_poisson_batch_new(fl_poisson_batch **out, size_t N);

/** Draws the sample with rate q exactly as fl_sampler_poisson.  FL_ESTATE
 *  if b holds an unconsumed sample; otherwise the errors of
 *  fl_sampler_poisson (b stays empty on error). */
FL_NODISCARD int fl_poisson_batch_fill(fl_poisson_batch *b, double q);

/** The filled sample's indices (increasing, valid until consume) and
 *  count, after checking it was drawn for N records at rate q: FL_EINVAL
 *  on a mismatch or NULL argument, FL_ESTATE if b is not filled.  Does
 *  not consume. */
FL_NODISCARD int fl_poisson_batch_indices(const fl_poisson_batch *b, size_t N, double q,
                                          const size_t **idx, size_t *n);

/** Wipes the sample and marks it empty (the step that used it is done);
 *  NULL is a no-op. */
void fl_poisson_batch_consume(fl_poisson_batch *b);

/** Wipes and frees; NULL is a no-op. */
void fl_poisson_batch_free(fl_poisson_batch *b);

#endif
