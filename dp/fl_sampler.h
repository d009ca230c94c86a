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

#endif
