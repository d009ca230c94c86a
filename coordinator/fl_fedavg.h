/*
 * fl_fedavg: the sample-weighted average of node updates (McMahan et al.
 * 2017, FedAvg), accumulated as a running sum so that peak memory does not
 * grow with the number of nodes and no individual update is kept.
 *
 * This is the seam secure aggregation plugs into: with it, the coordinator
 * receives masked vectors whose sum, not whose parts, it can read, and this
 * accumulator receives that sum in one call.
 */
#ifndef FL_FEDAVG_H
#define FL_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct fl_fedavg fl_fedavg;

/** Creates an accumulator for vectors of `dim` floats. */
FL_NODISCARD int fl_fedavg_new(fl_fedavg **out, size_t dim);

/** Forgets everything added so far. */
void fl_fedavg_reset(fl_fedavg *a);

/** Adds `weight` x `v` (dim floats) to the running sum. FL_EINVAL if weight is 0. */
FL_NODISCARD int fl_fedavg_add(fl_fedavg *a, const float *v, uint64_t weight);

/** Number of vectors added and their total weight. */
size_t fl_fedavg_count(const fl_fedavg *a);
uint64_t fl_fedavg_total_weight(const fl_fedavg *a);

/** Writes sum / total weight into out (dim floats). FL_ESTATE if nothing was added. */
FL_NODISCARD int fl_fedavg_result(const fl_fedavg *a, float *out);

/** Frees. NULL is a no-op. */
void fl_fedavg_free(fl_fedavg *a);

#endif
