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
 *
 * Assist (models without conv layers).  With the keystream at ~5.6 GB/s
 * the worker's fill takes well under a step, so the worker also computes
 * the clipped sum of the last m rows of each step's batch, on a clone of
 * the model (parameters copied in by the worker), straight into the
 * step's sum buffer; the calling thread computes the other rows and adds
 * its weight gradients onto that buffer (fl_model_clipped_gradient_sum_ex
 * with accumulate, after waiting for the worker in before_write).  Each
 * example is clipped by its own norm, so the sum is the clipped sum of the
 * batch up to the float summation order, as for the CNN batch split.  The
 * share m/n follows the measured times (fl_trainer_assist_update): the
 * worker gets rows while it would otherwise idle.  The job runs first,
 * the fill after it, so a step never waits for a fill in progress.
 */
#include "node/fl_trainer.h"
#include "node/fl_trainer_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
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
#define S_EXPECT_US 2000 /* how long a worker keeps a batch EMPTY awaiting a job */
#define S_ASSIST_F0 0.1  /* the worker's first share of the rows */

enum { S_EMPTY, S_FILLING, S_READY, S_INUSE };
enum { S_JOB_NONE, S_JOB_POSTED, S_JOB_RUNNING, S_JOB_DONE };

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
    int noise;      /* 1: it fills prepared batches (MLPs); 0: jobs only (the CNN split) */
    /* Jobs (under mu unless said): the clipped sum of some rows on the
     * clone, with the parameters copied in from the trainer's (unchanged
     * during a step), written to jdst -- the step's sum buffer (MLP
     * assist) or own (CNN split). */
    fl_model *clone;       /* NULL: no jobs (fl_mlp trainer, or no memory for an MLP's) */
    float *own;            /* num_params, for the CNN split (private; wiped); else NULL */
    const float *src;      /* the trainer's parameters */
    const float *jX;
    const int32_t *jy;
    size_t jn;
    size_t jd;             /* values per row of jX */
    atomic_size_t *jnext;  /* shared job (CNN split): next row to take, or NULL */
    double jclip;
    float *jdst;
    int job;               /* S_JOB_* */
    int jrc;
    size_t jclipped;
    size_t jrows;          /* rows the job computed */
    char jerr[256];        /* fl_error_last() of the worker on failure */
    int expect;            /* a job is due soon: keep an EMPTY batch for after it */
    struct timespec expect_t; /* since when */
    double job_sec, fill_sec; /* the last job's and the last fill's durations */
} s_worker;

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
    s_worker *wk;           /* NULL: no helper thread */
    int has_conv;           /* the model has a conv layer: the second core splits */
    size_t split_steps;     /* clipped-sum calls shared between two threads */
    atomic_size_t split_next; /* the shared call's next untaken row */
    size_t split_helper_rows; /* rows of shared calls the helper computed */
    /* Without a noise worker: this thread's own batches and samples (NULL
     * until first needed), double-buffered: the CNN split fills the next
     * step's pair while the helper starts on the rows (s_split_sum). */
    fl_noise_batch *own_b[S_NBUF];
    fl_poisson_batch *own_sp[S_NBUF];
    int own_ready[S_NBUF];  /* pair k is filled and unused */
    int own_cur;            /* the pair the next step uses */
    int own_prefill;        /* this step may fill the other pair */
    size_t own_prefills;    /* pairs filled during a split (test hook) */
    int own_failed;         /* they could not be made or filled: draw classic inline */
    size_t prepared_steps;
    double assist_f;        /* the worker's share of each call's rows */
    double assist_fixed;    /* >= 0: that share, always (test hook); < 0: measured */
    size_t assist_steps;    /* clipped-sum calls the worker helped with */
    struct timespec assist_prev; /* start of the previous assisted call (0: none) */
    double assist_waited;   /* seconds this call waited in s_assist_wait */
    int assist_pending;     /* a job was posted and not yet waited for */
    struct timespec assist_hook; /* when this thread reached before_write */
    size_t assist_clipped;  /* the worker's count of clipped rows, once waited for */
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

static double s_sec(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + 1e-9 * (double)(b->tv_nsec - a->tv_nsec);
}

static double s_since(const struct timespec *a)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return s_sec(a, &t);
}

/* What the worker should do now (mu held): 1 job, 2 fill batch *i,
 * 0 nothing (wait).  A posted job comes first; an EMPTY batch waits while
 * a job is expected (for at most S_EXPECT_US: the step may end the run,
 * or fail, without posting one). */
static int s_work(s_worker *w, int *i)
{
    if (w->job == S_JOB_POSTED)
        return 1;
    if (w->quit || w->failed)
        return 3;
    if (!w->noise || (*i = s_find(w, S_EMPTY)) < 0)
        return 0;
    if (w->expect && s_since(&w->expect_t) * 1e6 < S_EXPECT_US)
        return 0;
    w->expect = 0;
    return 2;
}

/* Polls (mu held on entry and exit, released between looks) for up to
 * us microseconds until s_work has something: 1 if so. */
static int s_poll(s_worker *w, long us)
{
    struct timespec t0;
    int i;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (s_work(w, &i) != 0)
            return 1;
        if (s_since(&t0) * 1e6 > (double)us)
            return 0;
        pthread_mutex_unlock(&w->mu);
        sched_yield();
        pthread_mutex_lock(&w->mu);
    }
}

/* A shared clipped sum (the CNN split): takes chunks of FL_MODEL_CHUNK
 * rows of X (n rows of d values) from the counter *next until none is
 * left, adding each chunk's clipped sum into dst (zeroed first: a thread
 * may get none).  Both threads run this, so the faster one takes more
 * chunks; each example is clipped by its own norm wherever it is
 * computed, so the two sums add up to the batch's clipped sum.  On an
 * error the counter is exhausted, so the other thread stops too. */
static int s_take_chunks(fl_model *m, const float *X, const int32_t *y, size_t d, size_t n,
                         double clip, float *dst, atomic_size_t *next, size_t *clipped,
                         size_t *rows)
{
    const fl_mlp_sum_opts add = {.accumulate = 1};
    int rc = FL_OK;
    *clipped = 0;
    *rows = 0;
    memset(dst, 0, fl_model_num_params(m) * sizeof *dst);
    for (;;) {
        size_t i = atomic_fetch_add_explicit(next, FL_MODEL_CHUNK, memory_order_relaxed);
        if (i >= n)
            break;
        size_t c = n - i < FL_MODEL_CHUNK ? n - i : FL_MODEL_CHUNK, k = 0;
        rc = fl_model_clipped_gradient_sum_ex(m, X + i * d, y + i, c, clip, dst, &k, NULL,
                                              &add);
        if (rc != FL_OK) {
            atomic_store_explicit(next, n, memory_order_relaxed);
            break;
        }
        *clipped += k;
        *rows += c;
    }
    return rc;
}

/* The worker's share of a step (mu held on entry and exit): the clipped
 * sum of the job's rows on the clone, written into the step's buffer. */
static void s_run_job(s_worker *w)
{
    struct timespec t0, t1;
    size_t clipped = 0;
    w->job = S_JOB_RUNNING;
    pthread_mutex_unlock(&w->mu);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memcpy(fl_model_params(w->clone), w->src, fl_model_num_params(w->clone) * sizeof(float));
    size_t rows = w->jn;
    int rc = w->jnext ? s_take_chunks(w->clone, w->jX, w->jy, w->jd, w->jn, w->jclip,
                                      w->jdst, w->jnext, &clipped, &rows)
                      : fl_model_clipped_gradient_sum(w->clone, w->jX, w->jy, w->jn, w->jclip,
                                                      w->jdst, &clipped, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_mutex_lock(&w->mu);
    w->jrc = rc;
    w->jclipped = clipped;
    w->jrows = rows;
    if (rc != FL_OK)
        snprintf(w->jerr, sizeof w->jerr, "%s", fl_error_last());
    w->job_sec = s_sec(&t0, &t1);
    w->job = S_JOB_DONE;
    pthread_cond_broadcast(&w->cv);
}

static void *s_worker_main(void *arg)
{
    s_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        int i = -1, what = s_work(w, &i);
        if (what == 3)
            break; /* never with a job posted: s_work puts jobs first */
        if (what == 1) {
            s_run_job(w);
            continue;
        }
        if (what == 0) {
            /* Nothing to do: both batches are full (the step in flight
             * will hand one back within a step's time) or a job is due.
             * Poll for S_SPIN_US first (yielding, so a shared core goes to
             * whoever needs it): waking a sleeping worker costs the
             * stepping thread a futex syscall per step, ~15 us here, 6 %
             * of a small MLP's step.  Then sleep: until the expected job's
             * deadline, or unbounded on purpose (an idle worker waits for
             * work; quit, jobs and batches handed back are always
             * broadcast under mu, so no wake-up is lost). */
            if (s_poll(w, S_SPIN_US))
                continue;
            if (w->expect && s_find(w, S_EMPTY) >= 0) {
                struct timespec dl = w->expect_t;
                dl.tv_nsec += S_EXPECT_US * 1000L;
                dl.tv_sec += dl.tv_nsec / 1000000000L;
                dl.tv_nsec %= 1000000000L;
                pthread_cond_timedwait(&w->cv, &w->mu, &dl);
            } else {
                pthread_cond_wait(&w->cv, &w->mu);
            }
            continue;
        }
        w->st[i] = S_FILLING;
        pthread_mutex_unlock(&w->mu);
        /* Data-independent CSPRNG draws only (dp/fl_noise prepared
         * batches, this thread's own table cache; the Poisson sample of
         * dp/fl_sampler, which depends on N and q alone).  A step
         * consumes both or, on error, neither, so an EMPTY slot has both
         * empty. */
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = fl_noise_batch_fill(w->b[i], w->stddev);
        if (rc == FL_OK)
            rc = fl_poisson_batch_fill(w->sp[i], w->q);
        double sec = s_since(&t0);
        pthread_mutex_lock(&w->mu);
        w->fill_sec = sec;
        w->st[i] = rc == FL_OK ? S_READY : S_EMPTY;
        if (rc != FL_OK)
            w->failed = 1; /* steps fall back to inline noise, and to no assist */
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
    fl_model_free(w->clone);
    if (w->own)
        sodium_memzero(w->own, fl_model_num_params(t->model) * sizeof *w->own);
    free(w->own);
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

/* Which use of the second core pays (docs/performance.md, "Using the
 * second core"): for a CNN the noise is a tiny part of a step (weights
 * are shared over positions: 12 810 parameters against ~480 MFLOP per
 * 128-example step for the benchmark CNN), so the helper shares the rows
 * of each batch with the calling thread (w->noise = 0, s_split_sum) and
 * the noise is drawn on the calling thread;
 * for an MLP the noise of every parameter is a large part of a step, so
 * the helper draws it ahead, and computes a measured share of the rows
 * in its remaining time. */
static int s_helper_wanted(const fl_trainer *t)
{
    return s_second_core(t) && !t->worker_unavailable;
}

/* Posts a job (rows [from, from + m) of the gathered block into dst; with
 * next, a shared job whose rows both threads take from *next) and marks
 * it pending; 0 if the worker has failed and runs no more jobs. */
static int s_post(fl_trainer *t, size_t from, size_t m, double clip, float *dst,
                  atomic_size_t *next)
{
    s_worker *w = t->wk;
    pthread_mutex_lock(&w->mu);
    if (w->failed) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    w->jX = t->xb + from * t->ds->d;
    w->jy = t->yb + from;
    w->jn = m;
    w->jd = t->ds->d;
    w->jnext = next;
    w->jclip = clip;
    w->jdst = dst;
    w->job = S_JOB_POSTED;
    w->expect = 0;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    t->assist_pending = 1;
    t->assist_waited = 0.0;
    return 1;
}

static int s_assist_wait(void *ctx);
static int s_own_fill(fl_trainer *t, int k);

/* Batch split (CNNs): this thread and the helper take chunks of the
 * call's rows from a shared counter (s_take_chunks), each summing into
 * its own buffer, so a thread that runs slower - a busy core, the noise
 * drawn on this one - simply takes fewer chunks; the two sums are added.
 * Each example is still clipped on its own (by its own per-example norm),
 * so the sum is the clipped sum of the batch: only the float summation
 * order changes. */
static int s_split_sum(fl_trainer *t, size_t n, double clip, float *sum, size_t *clipped)
{
    s_worker *w = t->wk;
    size_t P = fl_model_num_params(t->model), cl = 0;
    atomic_store_explicit(&t->split_next, 0, memory_order_relaxed);
    if (!s_post(t, 0, n, clip, w->own, &t->split_next))
        return fl_model_clipped_gradient_sum(t->model, t->xb, t->yb, n, clip, sum, clipped,
                                             NULL);
    /* The next step's noise and sample, while the helper starts on the
     * rows: this thread then simply takes fewer of them. */
    if (t->own_prefill && !t->own_failed && !t->own_ready[t->own_cur ^ 1])
        t->own_prefills += s_own_fill(t, t->own_cur ^ 1) == FL_OK; /* else: before its step */
    t->own_prefill = 0;
    size_t mine = 0;
    int rc = s_take_chunks(t->model, t->xb, t->yb, t->ds->d, n, clip, sum, &t->split_next,
                           &cl, &mine);
    int rc2 = s_assist_wait(t); /* always: the helper's job must end first */
    if (rc == FL_OK)
        rc = rc2;
    if (rc == FL_OK) {
        for (size_t j = 0; j < P; j++)
            sum[j] += w->own[j];
        if (clipped)
            *clipped = cl + t->assist_clipped;
        t->split_steps++;
        t->split_helper_rows += n - mine;
    } else {
        memset(sum, 0, P * sizeof *sum);
    }
    sodium_memzero(w->own, P * sizeof *w->own);
    return rc;
}

/* Starts the worker if it is wanted and not running; on any failure the
 * trainer simply keeps drawing noise inline (always correct). */
static void s_worker_start(fl_trainer *t)
{
    s_worker *w = NULL;
    pthread_condattr_t ca;
    int mu_up = 0, cv_up = 0, ok = 0;

    if (t->wk || !s_helper_wanted(t))
        return;
    w = calloc(1, sizeof *w);
    if (!w)
        goto done;
    w->stddev = fl_dpsgd_noise_stddev(t->dp);
    w->q = t->q;
    w->noise = !t->has_conv;
    /* Jobs need a clone: an MLP's worker without one (fl_mlp trainer, or
     * no memory) only draws noise; a CNN's helper is nothing without it. */
    if (t->model && fl_model_new(&w->clone, fl_model_spec_of(t->model)) != FL_OK)
        w->clone = NULL;
    w->src = t->model ? fl_model_params(t->model) : NULL;
    if (!w->noise && (!w->clone ||
                      !(w->own = calloc(fl_model_num_params(t->model), sizeof *w->own))))
        goto done;
    for (int i = 0; w->noise && i < S_NBUF; i++) {
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
        fl_model_free(w->clone);
        free(w->own);
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
 * to the worker for refilling; otherwise it is still filled and unused.
 * more: another step follows at once, whose assist job the worker should
 * do before refilling. */
static void s_give_back(s_worker *w, int i, int consumed, int more)
{
    pthread_mutex_lock(&w->mu);
    w->st[i] = consumed ? S_EMPTY : S_READY;
    w->expect = more && w->clone != NULL;
    if (w->expect)
        clock_gettime(CLOCK_MONOTONIC, &w->expect_t);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

double fl_trainer_assist_update(double f, const fl_assist_sample *x)
{
    /* A linear model of an assisted call of n rows, m on the worker, each
     * row costing about r seconds on either thread:
     *   (1) the worker's job (m r) and its next fill (F) must fit in the
     *       step's period P, with 5 % to spare, so the noise is never late:
     *       moving d rows to the worker narrows P - busy by about 2 d r
     *       (the calling thread loses the rows the worker gains);
     *   (2) the job must be done when this thread reaches its weight
     *       gradients (before_write, after a fraction a of its own rows'
     *       time), with 10 % to spare, or this thread waits: moving d rows
     *       narrows 0.9 pre - job by d (r_job + 0.9 pre / (n - m)).
     * The next share moves half-way to the larger share that keeps both;
     * this smooths measurement noise.  Bounds: [0, 0.5]. */
    if (!(f >= 0.0) || !(f <= 0.5))
        f = S_ASSIST_F0;
    if (!x || x->n < 2 || x->m == 0 || x->m >= x->n)
        return f;
    double mine_rows = (double)(x->n - x->m);
    double r = x->mine_sec / mine_rows, rj = x->job_sec / (double)x->m;
    double v[5] = {x->period, x->mine_sec, x->pre_sec, x->job_sec, x->fill_sec};
    for (int i = 0; i < 5; i++)
        if (!isfinite(v[i]) || v[i] < 0.0)
            return f;
    if (!(r > 0.0) || !(rj > 0.0) || !(x->period > 0.0))
        return f;
    double d1 = (0.95 * x->period - (x->job_sec + x->fill_sec)) / (2.0 * r);
    double d2 = (0.9 * x->pre_sec - x->job_sec) / (rj + 0.9 * x->pre_sec / mine_rows);
    double d = d1 < d2 ? d1 : d2;
    f += 0.5 * d / (double)x->n;
    return f < 0.0 ? 0.0 : f > 0.5 ? 0.5 : f;
}

/* The worker's rows of a call of n rows: 0 if there is no assist (no
 * worker or clone, more BLAS threads since, fewer than 2 rows), else the
 * current share, at least 1 row and leaving this thread at least 1. */
static size_t s_assist_rows(const fl_trainer *t, size_t n)
{
    if (!t->wk || !t->wk->noise || !t->wk->clone || n < 2 || !s_helper_wanted(t))
        return 0;
    double f = t->assist_fixed >= 0.0 ? t->assist_fixed : t->assist_f;
    size_t m = (size_t)(f * (double)n + 0.5);
    /* At least one row even at share 0, so the share keeps being measured
     * and can grow again after a slow spell (one row costs microseconds). */
    return m == 0 ? 1 : m >= n ? n - 1 : m;
}

/* before_write of this thread's share: waits for the worker's job (it is
 * normally long done: it started first and is the smaller share). */
static int s_assist_wait(void *ctx)
{
    fl_trainer *t = ctx;
    s_worker *w = t->wk;
    struct timespec t0;
    if (!t->assist_pending)
        return FL_OK;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    t->assist_hook = t0;
    pthread_mutex_lock(&w->mu);
    /* Spin briefly, then sleep; the job always ends (the model call
     * returns), so no timeout is needed. */
    for (int k = 0; w->job != S_JOB_DONE && k < 2000; k++) {
        pthread_mutex_unlock(&w->mu);
        sched_yield();
        pthread_mutex_lock(&w->mu);
    }
    while (w->job != S_JOB_DONE)
        pthread_cond_wait(&w->cv, &w->mu);
    w->job = S_JOB_NONE;
    int rc = w->jrc;
    if (rc != FL_OK)
        rc = fl_error_set(rc, "%s", w->jerr);
    t->assist_clipped = w->jclipped;
    pthread_mutex_unlock(&w->mu);
    t->assist_pending = 0;
    t->assist_waited += s_since(&t0);
    return rc;
}

/* The clipped sum of rows [0, n) with the worker doing [n - m, n) into
 * sum while this thread does [0, n - m) and adds onto it. */
static int s_assist_sum(fl_trainer *t, size_t n, size_t m, double clip, float *sum,
                        size_t *clipped)
{
    s_worker *w = t->wk;
    size_t mine = n - m, cl = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!s_post(t, mine, m, clip, sum, NULL)) /* it no longer runs jobs */
        return fl_model_clipped_gradient_sum(t->model, t->xb, t->yb, n, clip, sum, clipped,
                                             NULL);
    fl_mlp_sum_opts o = {.accumulate = 1, .before_write = s_assist_wait, .ctx = t};
    int rc = fl_model_clipped_gradient_sum_ex(t->model, t->xb, t->yb, mine, clip, sum, &cl,
                                              NULL, &o);
    if (t->assist_pending) { /* an argument error returned before the hook */
        int rc2 = s_assist_wait(t);
        if (rc == FL_OK)
            rc = rc2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != FL_OK) {
        memset(sum, 0, fl_model_num_params(t->model) * sizeof *sum);
        return rc;
    }
    if (clipped)
        *clipped = cl + t->assist_clipped;
    t->assist_steps++;
    /* Measure and adapt the share (the period runs from this call's start
     * to the next one's; the first call of a run has none). */
    if (t->assist_prev.tv_sec != 0 || t->assist_prev.tv_nsec != 0) {
        fl_assist_sample x = {.n = n, .m = m, .period = s_sec(&t->assist_prev, &t0),
                              .mine_sec = s_sec(&t0, &t1) - t->assist_waited,
                              .pre_sec = s_sec(&t0, &t->assist_hook)};
        pthread_mutex_lock(&w->mu);
        x.job_sec = w->job_sec;
        x.fill_sec = w->fill_sec;
        pthread_mutex_unlock(&w->mu);
        if (x.period < 1.0)
            t->assist_f = fl_trainer_assist_update(t->assist_f, &x);
    }
    t->assist_prev = t0;
    return FL_OK;
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
    if (t->wk && !t->wk->noise && n >= 2 && s_helper_wanted(t))
        return s_split_sum(t, n, clip, sum, clipped);
    size_t m = s_assist_rows(t, n);
    if (m > 0)
        return s_assist_sum(t, n, m, clip, sum, clipped);
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
    t->assist_f = S_ASSIST_F0;
    t->assist_fixed = -1.0;
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

/* Fills this thread's pair k (noise batch and Poisson sample), making it
 * on first use: data-independent CSPRNG draws only, as the worker's
 * (dp/fl_noise prepared batches, dp/fl_sampler).  On failure the pair is
 * freed and FL_OK is not returned. */
static int s_own_fill(fl_trainer *t, int k)
{
    int rc = FL_OK;
    if (!t->own_b[k] && (fl_noise_batch_new(&t->own_b[k], fl_dpsgd_dim(t->dp)) != FL_OK ||
                         fl_poisson_batch_new(&t->own_sp[k], t->ds->n) != FL_OK))
        rc = FL_ENOMEM;
    if (rc == FL_OK)
        rc = fl_noise_batch_fill(t->own_b[k], fl_dpsgd_noise_stddev(t->dp));
    if (rc == FL_OK)
        rc = fl_poisson_batch_fill(t->own_sp[k], t->q);
    if (rc == FL_OK) {
        t->own_ready[k] = 1;
    } else {
        fl_noise_batch_free(t->own_b[k]);
        fl_poisson_batch_free(t->own_sp[k]);
        t->own_b[k] = NULL;
        t->own_sp[k] = NULL;
    }
    return rc;
}

/* A step without the worker: the noise and the sample come from a pair
 * of the trainer's own -- the same prepared-batch code (vectorised fill,
 * fused release) with no thread -- filled just before the step or, in a
 * CNN split, during the previous one; if a pair cannot be made or filled,
 * by fl_dpsgd_step_clipped.  Same law either way: each pair is drawn
 * independently of the data and used for exactly one released step (the
 * argument of docs/privacy-accounting.md, "Prepared noise").  A failed
 * step leaves its pair filled and unused (fl_dpsgd_step_clipped_prepared's
 * contract), so the next one uses it. */
static int s_step_own(fl_trainer *t, size_t *b)
{
    int k = t->own_cur;
    if (!t->own_failed && !t->own_ready[k] && s_own_fill(t, k) != FL_OK)
        t->own_failed = 1;
    if (!t->own_ready[k])
        return fl_dpsgd_step_clipped(t->dp, s_clipped_sum, t, t->grad, b);
    t->own_prefill = 1;
    int rc = fl_dpsgd_step_clipped_prepared(t->dp, s_clipped_sum, t, t->own_b[k],
                                            t->own_sp[k], t->grad, b);
    t->own_prefill = 0;
    if (rc == FL_OK) {
        t->own_ready[k] = 0;
        t->own_cur = k ^ 1;
    }
    return rc;
}

int fl_trainer_run(fl_trainer *t, size_t steps, double lr, double *mean_batch)
{
    float *w = s_params(t);
    size_t p = s_num_params(t), total = 0;
    int rc = FL_OK;
    s_worker_start(t);
    if (t->wk && !t->wk->noise && !s_helper_wanted(t))
        s_worker_stop(t); /* a CNN's helper: the BLAS thread count was raised since */
    /* An MLP's existing worker stays idle (it holds its filled batches)
     * when the BLAS thread count has since been raised: no
     * oversubscription. */
    int prepared = t->wk && t->wk->noise && s_helper_wanted(t);
    t->assist_prev = (struct timespec){0, 0}; /* no period across runs */
    for (size_t s = 0; s < steps; s++) {
        size_t b = 0;
        int nb = prepared ? s_acquire(t->wk) : -1;
        if (nb >= 0) {
            rc = fl_dpsgd_step_clipped_prepared(t->dp, s_clipped_sum, t, t->wk->b[nb],
                                                t->wk->sp[nb], t->grad, &b);
            /* the next step's job comes first if it will have one */
            int more = rc == FL_OK && s + 1 < steps &&
                       s_assist_rows(t, (size_t)ceil(t->q * (double)t->ds->n)) > 0;
            s_give_back(t->wk, nb, rc == FL_OK, more);
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
    if (!allow)
        s_worker_stop(t);
}

size_t fl_trainer_own_prefills(const fl_trainer *t)
{
    return t->own_prefills;
}

size_t fl_trainer_split_helper_rows(const fl_trainer *t)
{
    return t->split_helper_rows;
}

int fl_trainer_split_running(const fl_trainer *t)
{
    return t->wk && !t->wk->noise;
}

size_t fl_trainer_split_steps(const fl_trainer *t)
{
    return t->split_steps;
}

size_t fl_trainer_assist_steps(const fl_trainer *t)
{
    return t->assist_steps;
}

double fl_trainer_assist_share(const fl_trainer *t)
{
    return t->assist_fixed >= 0.0 ? t->assist_fixed : t->assist_f;
}

void fl_trainer_set_assist_share(fl_trainer *t, double f)
{
    t->assist_fixed = f >= 0.0 && f <= 0.5 ? f : -1.0;
}

int fl_trainer_noise_thread_running(const fl_trainer *t)
{
    return t->wk && t->wk->noise;
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
    for (int k = 0; k < S_NBUF; k++) {
        fl_noise_batch_free(t->own_b[k]);
        fl_poisson_batch_free(t->own_sp[k]);
    }
    fl_dpsgd_free(t->dp);
    free(t->xb);
    free(t->yb);
    free(t->grad);
    free(t);
}
