/*
 * fl_fedavg: streaming weighted average (see fl_fedavg.h).  The sum is kept
 * in double so that adding many float vectors loses no precision that the
 * float result could show.
 */
#include "coordinator/fl_fedavg.h"

#include <stdlib.h>

struct fl_fedavg {
    size_t dim;
    double *sum;
    size_t count;
    uint64_t total;
};

int fl_fedavg_new(fl_fedavg **out, size_t dim)
{
    fl_fedavg *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a || !(a->sum = calloc(dim ? dim : 1, sizeof *a->sum))) {
        free(a);
        return fl_error_set(FL_ENOMEM, "out of memory for a %zu-parameter average", dim);
    }
    a->dim = dim;
    *out = a;
    return FL_OK;
}

void fl_fedavg_reset(fl_fedavg *a)
{
    for (size_t i = 0; i < a->dim; i++)
        a->sum[i] = 0.0;
    a->count = 0;
    a->total = 0;
}

int fl_fedavg_add(fl_fedavg *a, const float *v, uint64_t weight)
{
    double w = (double)weight;
    if (weight == 0)
        return fl_error_set(FL_EINVAL, "an update must carry a positive sample weight");
    for (size_t i = 0; i < a->dim; i++)
        a->sum[i] += w * (double)v[i];
    a->count++;
    a->total += weight;
    return FL_OK;
}

size_t fl_fedavg_count(const fl_fedavg *a)
{
    return a->count;
}

uint64_t fl_fedavg_total_weight(const fl_fedavg *a)
{
    return a->total;
}

int fl_fedavg_result(const fl_fedavg *a, float *out)
{
    if (a->total == 0)
        return fl_error_set(FL_ESTATE, "no update was received, there is nothing to average");
    for (size_t i = 0; i < a->dim; i++)
        out[i] = (float)(a->sum[i] / (double)a->total);
    return FL_OK;
}

void fl_fedavg_free(fl_fedavg *a)
{
    if (!a)
        return;
    free(a->sum);
    free(a);
}
