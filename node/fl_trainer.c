/*
 * fl_trainer: local DP-SGD rounds (see fl_trainer.h).  The per-example
 * gradient callback gathers the sampled rows into a contiguous block and
 * asks the MLP for their per-example gradients; dp/fl_dpsgd does sampling,
 * clipping, noise and the division by the expected batch size.
 */
#include "node/fl_trainer.h"

#include <stdlib.h>
#include <string.h>

#define S_CHUNK 64 /* rows per gradient call: bounds memory whatever the batch */

struct fl_trainer {
    fl_mlp *mlp;
    const fl_dataset *ds;
    fl_dpsgd *dp;
    float *xb;   /* S_CHUNK x d gathered features */
    int32_t *yb; /* S_CHUNK labels */
    float *grad; /* num_params */
};

static int s_grads(void *ctx, const size_t *idx, size_t n, float *G)
{
    fl_trainer *t = ctx;
    size_t d = t->ds->d;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->xb + i * d, t->ds->X + idx[i] * d, d * sizeof(float));
        t->yb[i] = t->ds->y[idx[i]];
    }
    return fl_mlp_example_gradients(t->mlp, t->xb, t->yb, n, G, NULL);
}

int fl_trainer_new(fl_trainer **out, fl_mlp *mlp, const fl_dataset *ds, double q, double clip,
                   double sigma)
{
    fl_trainer *t = calloc(1, sizeof *t);
    size_t p = fl_mlp_num_params(mlp);
    int rc;

    *out = NULL;
    if (!t)
        return fl_error_set(FL_ENOMEM, "out of memory");
    t->mlp = mlp;
    t->ds = ds;
    t->xb = malloc(S_CHUNK * ds->d * sizeof(float));
    t->yb = malloc(S_CHUNK * sizeof(int32_t));
    t->grad = malloc(p * sizeof(float));
    if (!t->xb || !t->yb || !t->grad) {
        fl_trainer_free(t);
        return fl_error_set(FL_ENOMEM, "out of memory for training buffers");
    }
    rc = fl_dpsgd_new(&t->dp, p, ds->n, q, clip, sigma, S_CHUNK);
    if (rc != FL_OK) {
        fl_trainer_free(t);
        return rc;
    }
    *out = t;
    return FL_OK;
}

int fl_trainer_run(fl_trainer *t, size_t steps, double lr, double *mean_batch)
{
    float *w = fl_mlp_params(t->mlp);
    size_t p = fl_mlp_num_params(t->mlp), total = 0;
    for (size_t s = 0; s < steps; s++) {
        size_t b = 0;
        int rc = fl_dpsgd_step(t->dp, s_grads, t, t->grad, &b);
        if (rc != FL_OK)
            return rc;
        total += b;
        for (size_t i = 0; i < p; i++)
            w[i] -= (float)lr * t->grad[i];
    }
    if (mean_batch)
        *mean_batch = steps ? (double)total / (double)steps : 0.0;
    return FL_OK;
}

void fl_trainer_free(fl_trainer *t)
{
    if (!t)
        return;
    fl_dpsgd_free(t->dp);
    free(t->xb);
    free(t->yb);
    free(t->grad);
    free(t);
}
