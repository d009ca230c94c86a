/*
 * fl_trainer: local DP-SGD rounds (see fl_trainer.h).  The clipped-sum
 * callback gathers the sampled rows into a contiguous block and asks the
 * model for the sum of their clipped per-example gradients by ghost
 * clipping (nn/fl_mlp, nn/fl_model: per-example norms from the backward
 * deltas, then each layer's weight gradient once, about the cost of plain
 * SGD); dp/fl_dpsgd does Poisson sampling, the noise and the division by
 * the expected batch size.
 *
 * Every buffer is allocated once, in fl_trainer_new: the gather block, the
 * gradient, the DP-SGD state; the model's own scratch is allocated on the
 * first step and reused after that.  Steps do not allocate.
 */
#include "node/fl_trainer.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Rows per clipped-sum call.  The ghost path needs only activations and
 * deltas per row (no row of num_params floats), so this matches the MLP's
 * internal 256-row chunk: the weight-gradient sgemm then runs over as many
 * rows as plain SGD with a 256 batch. */
#define S_CHUNK 256

struct fl_trainer {
    fl_mlp *mlp;     /* exactly one of mlp and model is set */
    fl_model *model;
    const fl_dataset *ds;
    fl_dpsgd *dp;
    float *xb;   /* S_CHUNK x d gathered features (private; wiped) */
    int32_t *yb; /* S_CHUNK labels (private; wiped) */
    float *grad; /* num_params */
};

static int s_clipped_sum(void *ctx, const size_t *idx, size_t n, double clip, float *sum,
                         size_t *clipped)
{
    fl_trainer *t = ctx;
    size_t d = t->ds->d;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->xb + i * d, t->ds->X + idx[i] * d, d * sizeof(float));
        t->yb[i] = t->ds->y[idx[i]];
    }
    if (t->model)
        return fl_model_clipped_gradient_sum(t->model, t->xb, t->yb, n, clip, sum, clipped,
                                             NULL);
    return fl_mlp_clipped_gradient_sum(t->mlp, t->xb, t->yb, n, clip, sum, clipped, NULL);
}

static size_t s_num_params(const fl_trainer *t)
{
    return t->model ? fl_model_num_params(t->model) : fl_mlp_num_params(t->mlp);
}

static float *s_params(fl_trainer *t)
{
    return t->model ? fl_model_params(t->model) : fl_mlp_params(t->mlp);
}

static int s_new(fl_trainer **out, fl_mlp *mlp, fl_model *model, const fl_dataset *ds,
                 double q, double clip, double sigma)
{
    fl_trainer *t = NULL;
    size_t p = model ? fl_model_num_params(model) : fl_mlp_num_params(mlp);
    size_t d_in = model ? fl_model_num_inputs(model) : fl_mlp_num_inputs(mlp);
    int rc;

    *out = NULL;
    if (ds->d != d_in)
        return fl_error_set(FL_EINVAL, "fl_trainer_new: dataset has %zu features but the "
                            "model takes %zu inputs", ds->d, d_in);
    /* Several node processes share a machine, and at these sizes (batches
     * of a few hundred rows, layers of a few hundred units) threading one
     * sgemm gains little (docs/performance.md, "DP-SGD cost"): run OpenBLAS
     * single-threaded unless the operator chose OPENBLAS_NUM_THREADS. */
    if (!getenv("OPENBLAS_NUM_THREADS"))
        fl_mlp_set_blas_threads(1);
    t = calloc(1, sizeof *t);
    if (!t)
        return fl_error_set(FL_ENOMEM, "fl_trainer_new: out of memory");
    t->mlp = mlp;
    t->model = model;
    t->ds = ds;
    t->xb = malloc(S_CHUNK * ds->d * sizeof(float));
    t->yb = malloc(S_CHUNK * sizeof(int32_t));
    t->grad = malloc(p * sizeof(float));
    if (!t->xb || !t->yb || !t->grad) {
        fl_trainer_free(t);
        return fl_error_set(FL_ENOMEM, "fl_trainer_new: out of memory for training buffers "
                            "(%zu features, %zu parameters)", ds->d, p);
    }
    rc = fl_dpsgd_new_clipped(&t->dp, p, ds->n, q, clip, sigma, S_CHUNK);
    if (rc != FL_OK) {
        fl_trainer_free(t);
        return rc;
    }
    *out = t;
    return FL_OK;
}

int fl_trainer_new(fl_trainer **out, fl_mlp *mlp, const fl_dataset *ds, double q, double clip,
                   double sigma)
{
    return s_new(out, mlp, NULL, ds, q, clip, sigma);
}

int fl_trainer_new_model(fl_trainer **out, fl_model *model, const fl_dataset *ds, double q,
                         double clip, double sigma)
{
    return s_new(out, NULL, model, ds, q, clip, sigma);
}

int fl_trainer_run(fl_trainer *t, size_t steps, double lr, double *mean_batch)
{
    float *w = s_params(t);
    size_t p = s_num_params(t), total = 0;
    int rc = FL_OK;
    for (size_t s = 0; s < steps; s++) {
        size_t b = 0;
        rc = fl_dpsgd_step_clipped(t->dp, s_clipped_sum, t, t->grad, &b);
        if (rc != FL_OK)
            break;
        total += b;
        for (size_t i = 0; i < p; i++)
            w[i] -= (float)lr * t->grad[i];
    }
    /* The gathered rows are the sampled batch: private. */
    sodium_memzero(t->xb, S_CHUNK * t->ds->d * sizeof(float));
    sodium_memzero(t->yb, S_CHUNK * sizeof(int32_t));
    if (rc != FL_OK)
        return rc;
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
