/*
 * fl_server_opt: FedAvg, FedAvgM and FedAdam on the coordinator (see
 * fl_server_opt.h).
 */
#include "coordinator/fl_server_opt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fl_server_opt {
    fl_server_opt_config cfg;
    size_t dim;
    double *m; /* first moment (FedAdam) or velocity (FedAvgM) */
    double *v; /* second moment (FedAdam) */
};

int fl_server_opt_parse(const char *name, fl_server_kind *out)
{
    if (strcmp(name, "fedavg") == 0)
        *out = FL_SERVER_FEDAVG;
    else if (strcmp(name, "fedavgm") == 0)
        *out = FL_SERVER_FEDAVGM;
    else if (strcmp(name, "fedadam") == 0)
        *out = FL_SERVER_FEDADAM;
    else
        return fl_error_set(FL_EINVAL, "server optimizer '%s' is unknown: use fedavg, fedavgm "
                            "or fedadam", name);
    return FL_OK;
}

const char *fl_server_opt_name(fl_server_kind kind)
{
    switch (kind) {
    case FL_SERVER_FEDAVGM: return "fedavgm";
    case FL_SERVER_FEDADAM: return "fedadam";
    default: return "fedavg";
    }
}

int fl_server_opt_new(fl_server_opt **out, const fl_server_opt_config *cfg, size_t dim)
{
    fl_server_opt *o;
    *out = NULL;
    if (!(cfg->lr > 0) || !(cfg->momentum >= 0 && cfg->momentum < 1) ||
        !(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) ||
        !(cfg->tau > 0))
        return fl_error_set(FL_EINVAL, "server optimizer settings out of range: need lr > 0, "
                            "0 <= momentum, beta1, beta2 < 1 and tau > 0");
    o = calloc(1, sizeof *o);
    if (!o)
        return fl_error_set(FL_ENOMEM, "out of memory");
    o->cfg = *cfg;
    o->dim = dim;
    if (cfg->kind != FL_SERVER_FEDAVG && !(o->m = calloc(dim ? dim : 1, sizeof *o->m))) {
        fl_server_opt_free(o);
        return fl_error_set(FL_ENOMEM, "out of memory for the server optimizer");
    }
    if (cfg->kind == FL_SERVER_FEDADAM && !(o->v = calloc(dim ? dim : 1, sizeof *o->v))) {
        fl_server_opt_free(o);
        return fl_error_set(FL_ENOMEM, "out of memory for the server optimizer");
    }
    *out = o;
    return FL_OK;
}

void fl_server_opt_step(fl_server_opt *o, float *model, const float *avg)
{
    const fl_server_opt_config *c = &o->cfg;
    for (size_t i = 0; i < o->dim; i++) {
        double d = (double)avg[i] - (double)model[i]; /* pseudo-gradient */
        double step;
        switch (c->kind) {
        case FL_SERVER_FEDAVGM:
            o->m[i] = c->momentum * o->m[i] + d;
            step = c->lr * o->m[i];
            break;
        case FL_SERVER_FEDADAM:
            /* Reddi et al. 2021, Alg. 2 (no bias correction, as published). */
            o->m[i] = c->beta1 * o->m[i] + (1.0 - c->beta1) * d;
            o->v[i] = c->beta2 * o->v[i] + (1.0 - c->beta2) * d * d;
            step = c->lr * o->m[i] / (sqrt(o->v[i]) + c->tau);
            break;
        default:
            step = c->lr * d;
            break;
        }
        model[i] = (float)((double)model[i] + step);
    }
}

void fl_server_opt_free(fl_server_opt *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o);
}
