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
 * first step and reused after that (and the noise worker's two batches
 * when it starts, on the first fl_trainer_run).  Steps do not allocate.
 *
 * Noise worker.  The Gaussian noise of a step does not depend on the data,
 * nor does its Poisson sample (which records, not their values), so both
 * can be drawn before the step, on the core that single-threaded
 * OpenBLAS leaves idle.  A worker thread keeps S_NBUF prepared batches
 * (dp/fl_noise) filled: while step t consumes one, it fills the other for
 * step t+1.  Batch ownership moves between the threads under one mutex
 * (states EMPTY -> FILLING (worker) -> READY -> INUSE (step) -> EMPTY);
 * the batch object itself refuses a second apply, so no bug here can make
 * two releases share noise.  Why drawing ahead is private: the batch holds
 * exactly the CSPRNG draws the inline path would make, none depends on the
 * data, and each protects one release (Canonne, Kamath & Steinke 2020
 * discrete Gaussian on the randomized-rounded sum; the one-time-pad
 * argument is in docs/privacy-accounting.md, "Prepared noise").
 */
#include "node/fl_trainer.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

/* Rows per clipped-sum call: at least S_CHUNK_MIN, and enough that a
 * Poisson batch of mean qN exceeds it with probability below ~1e-9
 * (qN + 6 sqrt(qN) + 16), so a step is nearly always one call whose float
 * sum goes straight to the fused noise release (dp/fl_dpsgd); capped at
 * S_CHUNK_MAX rows (larger batches take several calls).  The ghost path
 * needs only activations and deltas per row, no row of num_params floats. */
#define S_CHUNK_MIN 256
#define S_CHUNK_MAX 4096

#define S_NBUF 2      /* double buffering */
#define S_WAIT_SEC 10 /* longest wait for a prepared batch before drawing inline */
#define S_SPIN_US 200 /* how long an idle worker polls before it sleeps */

enum { S_EMPTY, S_FILLING, S_READY, S_INUSE };

typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every state change; CLOCK_MONOTONIC */
    fl_noise_batch *b[S_NBUF];
    fl_poisson_batch *sp[S_NBUF]; /* the Poisson sample of the same step */
    int st[S_NBUF]; /* S_EMPTY.. (under mu), for b[i] and sp[i] together */
    double stddev;  /* fl_dpsgd_noise_stddev of the trainer's state */
    double q;       /* its sampling rate */
    int quit;       /* under mu: the worker exits after its current fill */
    int failed;     /* under mu: a fill failed; the worker stopped filling */
} s_worker;

/* Batch split (CNNs): a second thread computes the clipped sum of the
 * second half of each call's rows on a clone of the model (its own
 * scratch; the parameters copied in before each call), while the calling
 * thread does the first half; the two sums are added.  Each example is
 * still clipped on its own (by its own per-example norm), so the sum of
 * the halves is the clipped sum of the batch: only the float summation
 * order changes. */
enum { S_SPLIT_IDLE, S_SPLIT_POSTED, S_SPLIT_DONE };

typedef struct {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* broadcast on every state change */
    fl_model *m;         /* clone of the trainer's model */
    float *sum;          /* num_params: the second half's clipped sum (private; wiped) */
    const float *X;      /* the job (under mu while posted) */
    const int32_t *y;
    size_t n;
    double clip;
    size_t clipped;
    int rc;
    char err[256];       /* fl_error_last() of the thread on failure */
    int state;           /* S_SPLIT_* (under mu) */
    int quit;            /* under mu */
} s_split;

struct fl_trainer {
    fl_mlp *mlp;     /* exactly one of mlp and model is set */
    fl_model *model;
    const fl_dataset *ds;
    fl_dpsgd *dp;
    double q;     /* Poisson sampling rate */
    size_t chunk; /* rows per clipped-sum call */
    float *xb;    /* chunk x d gathered features (private; wiped) */
    int32_t *yb;  /* chunk labels (private; wiped) */
    float *grad; /* num_params */
    int noise_thread_allowed;
    int worker_unavailable; /* starting it failed once: do not retry */
    long cpus;              /* online CPUs at creation */
    s_worker *wk;           /* NULL: no worker thread */
    s_split *sp;            /* NULL: no batch-split thread */
    int has_conv;           /* the model has a conv layer: the second core splits */
    int split_unavailable;  /* starting it failed once: do not retry */
    size_t split_steps;     /* clipped-sum calls computed in two halves */
    fl_noise_batch *own_b;  /* without a worker: this thread's own batch and */
    fl_poisson_batch *own_sp; /* sample (NULL until the first such step) */
    int own_ready;          /* both are filled and unused */
    int own_failed;         /* they could not be made or filled: draw classic inline */
    size_t prepared_steps;
};

/* Index of a batch in state st, or -1 (mu held). */
static int s_find(const s_worker *w, int st)
{
    for (int i = 0; i < S_NBUF; i++)
        if (w->st[i] == st)
            return i;
    return -1;
}

/* Starts fn(arg) on a new thread that blocks all signals, so that they
 * keep reaching the main thread (flnode's SIGINT/SIGTERM handling
 * interrupts its poll).  1 on success. */
static int s_spawn(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int ok = pthread_create(th, NULL, fn, arg) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

/* Tells a helper thread to quit (the flag under its mutex, broadcast) and
 * joins it. */
static void s_quit_join(pthread_t th, pthread_mutex_t *mu, pthread_cond_t *cv, int *quit)
{
    pthread_mutex_lock(mu);
    *quit = 1;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    pthread_join(th, NULL);
}

/* Polls (mu held on entry and exit, released between looks) for up to
 * S_SPIN_US until a batch is EMPTY or quit is set: 1 if so. */
static int s_poll(s_worker *w)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (w->quit || s_find(w, S_EMPTY) >= 0)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 > S_SPIN_US)
            return 0;
        pthread_mutex_unlock(&w->mu);
        sched_yield();
        pthread_mutex_lock(&w->mu);
    }
}

static void *s_worker_main(void *arg)
{
    s_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->quit && !w->failed) {
        int i = s_find(w, S_EMPTY);
        if (i < 0) {
            /* Both batches are full: the step in flight will hand one back
             * within a step's time.  Poll for S_SPIN_US first (yielding, so
             * a shared core goes to whoever needs it): waking a sleeping
             * worker costs the stepping thread a futex syscall per step,
             * ~15 us here, 6 % of a small MLP's step.  Then sleep:
             * unbounded on purpose, an idle worker waits for work; quit is
             * always broadcast under mu, so no wake-up is lost. */
            if (s_poll(w))
                continue;
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        w->st[i] = S_FILLING;
        pthread_mutex_unlock(&w->mu);
        /* Data-independent CSPRNG draws only (dp/fl_noise prepared
         * batches, this thread's own table cache; the Poisson sample of
         * dp/fl_sampler, which depends on N and q alone).  A step
         * consumes both or, on error, neither, so an EMPTY slot has both
         * empty. */
        int rc = fl_noise_batch_fill(w->b[i], w->stddev);
        if (rc == FL_OK)
            rc = fl_poisson_batch_fill(w->sp[i], w->q);
        pthread_mutex_lock(&w->mu);
        w->st[i] = rc == FL_OK ? S_READY : S_EMPTY;
        if (rc != FL_OK)
            w->failed = 1; /* steps fall back to inline noise */
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    fl_noise_cache_free(); /* the tables are thread-local */
    return NULL;
}

/* Stops and joins the worker, wipes and frees its batches. */
static void s_worker_stop(fl_trainer *t)
{
    s_worker *w = t->wk;
    if (!w)
        return;
    s_quit_join(w->th, &w->mu, &w->cv, &w->quit);
    for (int i = 0; i < S_NBUF; i++) {
        fl_noise_batch_free(w->b[i]);
        fl_poisson_batch_free(w->sp[i]);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    t->wk = NULL;
}

/* Whether steps should take their noise from a worker: allowed, and a core
 * to spare -- OpenBLAS single-threaded (with more BLAS threads the worker
 * would compete with them for the cores) and >= 2 CPUs online. */
static int s_second_core(const fl_trainer *t)
{
    return t->noise_thread_allowed && t->cpus >= 2 && fl_mlp_blas_threads() == 1;
}

/* Which use of the second core pays: for a CNN the noise is a tiny part
 * of a step (weights are shared over positions: 12 810 parameters against
 * ~480 MFLOP per 128-example step for the benchmark CNN), so half of the
 * batch goes there; for an MLP the noise of every parameter costs about
 * as much as the step's own sgemms, so it is drawn there
 * (docs/performance.md, "Using the second core"). */
static int s_worker_wanted(const fl_trainer *t)
{
    return s_second_core(t) && !t->has_conv && !t->worker_unavailable;
}

static int s_split_wanted(const fl_trainer *t)
{
    return s_second_core(t) && t->has_conv && !t->split_unavailable;
}

static void *s_split_main(void *arg)
{
    s_split *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        /* Unbounded on purpose: an idle thread waits for a job; quit and
         * jobs are always broadcast under mu, so no wake-up is lost. */
        while (w->state != S_SPLIT_POSTED && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->quit)
            break;
        pthread_mutex_unlock(&w->mu);
        size_t clipped = 0;
        int rc = fl_model_clipped_gradient_sum(w->m, w->X, w->y, w->n, w->clip, w->sum,
                                               &clipped, NULL);
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        w->clipped = clipped;
        if (rc != FL_OK)
            snprintf(w->err, sizeof w->err, "%s", fl_error_last());
        w->state = S_SPLIT_DONE;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Stops and joins the split thread, wipes and frees its buffers. */
static void s_split_stop(fl_trainer *t)
{
    s_split *w = t->sp;
    if (!w)
        return;
    s_quit_join(w->th, &w->mu, &w->cv, &w->quit);
    sodium_memzero(w->sum, fl_model_num_params(w->m) * sizeof *w->sum);
    free(w->sum);
    fl_model_free(w->m);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    t->sp = NULL;
}

/* Starts the split thread if it is wanted and not running; on failure
 * the calling thread simply does whole batches (always correct). */
static void s_split_start(fl_trainer *t)
{
    s_split *w = NULL;
    int mu_up = 0, cv_up = 0, ok = 0;

    if (t->sp || !s_split_wanted(t))
        return;
    w = calloc(1, sizeof *w);
    if (!w || fl_model_new(&w->m, fl_model_spec_of(t->model)) != FL_OK ||
        !(w->sum = calloc(fl_model_num_params(t->model), sizeof *w->sum)))
        goto done;
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto done;
    mu_up = 1;
    if (pthread_cond_init(&w->cv, NULL) != 0)
        goto done;
    cv_up = 1;
    ok = s_spawn(&w->th, s_split_main, w);
done:
    if (ok) {
        t->sp = w;
        return;
    }
    t->split_unavailable = 1;
    if (w) {
        free(w->sum);
        fl_model_free(w->m);
        if (cv_up)
            pthread_cond_destroy(&w->cv);
        if (mu_up)
            pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

/* The clipped sum of rows [0, n) of the gathered block in two halves: the
 * split thread takes [h, n) on the clone, this thread [0, h). */
static int s_split_sum(fl_trainer *t, size_t n, double clip, float *sum, size_t *clipped)
{
    s_split *w = t->sp;
    size_t d = t->ds->d, P = fl_model_num_params(t->model), h = n / 2;
    memcpy(fl_model_params(w->m), fl_model_params(t->model), P * sizeof(float));
    pthread_mutex_lock(&w->mu);
    w->X = t->xb + h * d;
    w->y = t->yb + h;
    w->n = n - h;
    w->clip = clip;
    w->state = S_SPLIT_POSTED;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    int rc = fl_model_clipped_gradient_sum(t->model, t->xb, t->yb, h, clip, sum, clipped,
                                           NULL);
    pthread_mutex_lock(&w->mu);
    /* The job always ends (the model call returns); no timeout needed. */
    while (w->state != S_SPLIT_DONE)
        pthread_cond_wait(&w->cv, &w->mu);
    w->state = S_SPLIT_IDLE;
    pthread_mutex_unlock(&w->mu);
    if (rc == FL_OK && w->rc != FL_OK)
        rc = fl_error_set(w->rc, "%s", w->err);
    if (rc == FL_OK) {
        for (size_t j = 0; j < P; j++)
            sum[j] += w->sum[j];
        if (clipped)
            *clipped += w->clipped;
        t->split_steps++;
    }
    sodium_memzero(w->sum, P * sizeof *w->sum);
    return rc;
}

/* Starts the worker if it is wanted and not running; on any failure the
 * trainer simply keeps drawing noise inline (always correct). */
static void s_worker_start(fl_trainer *t)
{
    s_worker *w = NULL;
    pthread_condattr_t ca;
    int mu_up = 0, cv_up = 0, ok = 0;

    if (t->wk || !s_worker_wanted(t))
        return;
    w = calloc(1, sizeof *w);
    if (!w)
        goto done;
    w->stddev = fl_dpsgd_noise_stddev(t->dp);
    w->q = t->q;
    for (int i = 0; i < S_NBUF; i++) {
        if (fl_noise_batch_new(&w->b[i], fl_dpsgd_dim(t->dp)) != FL_OK ||
            fl_poisson_batch_new(&w->sp[i], t->ds->n) != FL_OK)
            goto done;
        w->st[i] = S_EMPTY;
    }
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto done;
    mu_up = 1;
    if (pthread_condattr_init(&ca) != 0)
        goto done;
    cv_up = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
            pthread_cond_init(&w->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_up)
        goto done;
    ok = s_spawn(&w->th, s_worker_main, w);
done:
    if (ok) {
        t->wk = w;
        return;
    }
    t->worker_unavailable = 1;
    if (w) {
        for (int i = 0; i < S_NBUF; i++) {
            fl_noise_batch_free(w->b[i]);
            fl_poisson_batch_free(w->sp[i]);
        }
        if (cv_up)
            pthread_cond_destroy(&w->cv);
        if (mu_up)
            pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

/* A READY batch, now INUSE by the caller; -1 if the worker failed or none
 * became ready within S_WAIT_SEC (the step then draws inline). */
static int s_acquire(s_worker *w)
{
    struct timespec dl;
    int i;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += S_WAIT_SEC;
    pthread_mutex_lock(&w->mu);
    while ((i = s_find(w, S_READY)) < 0 && !w->failed)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) {
            i = s_find(w, S_READY);
            break;
        }
    if (i >= 0)
        w->st[i] = S_INUSE;
    pthread_mutex_unlock(&w->mu);
    return i;
}

/* Hands batch i back after a step: consumed (the step succeeded, which is
 * exactly when fl_dpsgd_step_clipped_prepared applies and wipes it) goes
 * to the worker for refilling; otherwise it is still filled and unused. */
static void s_give_back(s_worker *w, int i, int consumed)
{
    pthread_mutex_lock(&w->mu);
    w->st[i] = consumed ? S_EMPTY : S_READY;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int s_clipped_sum(void *ctx, const size_t *idx, size_t n, double clip, float *sum,
                         size_t *clipped)
{
    fl_trainer *t = ctx;
    size_t d = t->ds->d;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->xb + i * d, t->ds->X + idx[i] * d, d * sizeof(float));
        t->yb[i] = t->ds->y[idx[i]];
    }
    if (t->model && t->sp && n >= 2)
        return s_split_sum(t, n, clip, sum, clipped);
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
    if (model) {
        const fl_model_spec *spec = fl_model_spec_of(model);
        for (uint32_t l = 0; l < spec->num_layers; l++)
            t->has_conv |= spec->layers[l].kind == FL_LAYER_CONV;
    }
    t->ds = ds;
    const char *nt = getenv("FL_NOISE_THREAD");
    t->noise_thread_allowed = !(nt && strcmp(nt, "0") == 0);
    t->cpus = sysconf(_SC_NPROCESSORS_ONLN);
    t->q = q;
    double mean = q * (double)ds->n, want = ceil(mean + 6.0 * sqrt(mean) + 16.0);
    t->chunk = want > S_CHUNK_MAX ? S_CHUNK_MAX : want < S_CHUNK_MIN ? S_CHUNK_MIN : (size_t)want;
    if (t->chunk > ds->n && ds->n > 0)
        t->chunk = ds->n;
    t->xb = malloc(t->chunk * ds->d * sizeof(float));
    t->yb = malloc(t->chunk * sizeof(int32_t));
    t->grad = malloc(p * sizeof(float));
    if (!t->xb || !t->yb || !t->grad) {
        fl_trainer_free(t);
        return fl_error_set(FL_ENOMEM, "fl_trainer_new: out of memory for training buffers "
                            "(%zu features, %zu parameters)", ds->d, p);
    }
    rc = fl_dpsgd_new_clipped(&t->dp, p, ds->n, q, clip, sigma, t->chunk);
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

/* A step without the worker: the noise and the sample are drawn here,
 * just before the step, through a batch of the trainer's own -- the same
 * prepared-batch code (vectorised fill, fused release) with no thread --
 * or, if that batch cannot be made or filled, by fl_dpsgd_step_clipped.
 * Same law either way.  A failed step leaves both filled and unused
 * (fl_dpsgd_step_clipped_prepared's contract), so the next one uses them. */
static int s_step_own(fl_trainer *t, size_t *b)
{
    if (!t->own_failed && !t->own_ready) {
        int rc = FL_OK;
        if (!t->own_b && (fl_noise_batch_new(&t->own_b, fl_dpsgd_dim(t->dp)) != FL_OK ||
                          fl_poisson_batch_new(&t->own_sp, t->ds->n) != FL_OK))
            rc = FL_ENOMEM;
        if (rc == FL_OK)
            rc = fl_noise_batch_fill(t->own_b, fl_dpsgd_noise_stddev(t->dp));
        if (rc == FL_OK)
            rc = fl_poisson_batch_fill(t->own_sp, t->q);
        if (rc == FL_OK) {
            t->own_ready = 1;
        } else {
            fl_noise_batch_free(t->own_b);
            fl_poisson_batch_free(t->own_sp);
            t->own_b = NULL;
            t->own_sp = NULL;
            t->own_failed = 1;
        }
    }
    if (!t->own_ready)
        return fl_dpsgd_step_clipped(t->dp, s_clipped_sum, t, t->grad, b);
    int rc = fl_dpsgd_step_clipped_prepared(t->dp, s_clipped_sum, t, t->own_b, t->own_sp,
                                            t->grad, b);
    if (rc == FL_OK)
        t->own_ready = 0;
    return rc;
}

int fl_trainer_run(fl_trainer *t, size_t steps, double lr, double *mean_batch)
{
    float *w = s_params(t);
    size_t p = s_num_params(t), total = 0;
    int rc = FL_OK;
    s_worker_start(t);
    s_split_start(t);
    if (t->sp && !s_split_wanted(t))
        s_split_stop(t); /* the BLAS thread count was raised since */
    /* An existing worker stays idle (it holds its filled batches) when the
     * BLAS thread count has since been raised: no oversubscription. */
    int prepared = t->wk && s_worker_wanted(t);
    for (size_t s = 0; s < steps; s++) {
        size_t b = 0;
        int nb = prepared ? s_acquire(t->wk) : -1;
        if (nb >= 0) {
            rc = fl_dpsgd_step_clipped_prepared(t->dp, s_clipped_sum, t, t->wk->b[nb],
                                                t->wk->sp[nb], t->grad, &b);
            s_give_back(t->wk, nb, rc == FL_OK);
            t->prepared_steps += rc == FL_OK;
        } else {
            rc = s_step_own(t, &b);
        }
        if (rc != FL_OK)
            break;
        total += b;
        for (size_t i = 0; i < p; i++)
            w[i] -= (float)lr * t->grad[i];
    }
    /* The gathered rows are the sampled batch: private. */
    sodium_memzero(t->xb, t->chunk * t->ds->d * sizeof(float));
    sodium_memzero(t->yb, t->chunk * sizeof(int32_t));
    if (rc != FL_OK)
        return rc;
    if (mean_batch)
        *mean_batch = steps ? (double)total / (double)steps : 0.0;
    return FL_OK;
}

void fl_trainer_set_noise_thread(fl_trainer *t, int allow)
{
    t->noise_thread_allowed = allow != 0;
    if (!allow) {
        s_worker_stop(t);
        s_split_stop(t);
    }
}

int fl_trainer_split_running(const fl_trainer *t)
{
    return t->sp != NULL;
}

size_t fl_trainer_split_steps(const fl_trainer *t)
{
    return t->split_steps;
}

int fl_trainer_noise_thread_running(const fl_trainer *t)
{
    return t->wk != NULL;
}

size_t fl_trainer_prepared_noise_steps(const fl_trainer *t)
{
    return t->prepared_steps;
}

void fl_trainer_free(fl_trainer *t)
{
    if (!t)
        return;
    s_worker_stop(t);
    s_split_stop(t);
    fl_noise_batch_free(t->own_b);
    fl_poisson_batch_free(t->own_sp);
    fl_dpsgd_free(t->dp);
    free(t->xb);
    free(t->yb);
    free(t->grad);
    free(t);
}
