/*
 * fl_trainer internals exposed for tests: the assist share's controller
 * and a fixed share.
 */
#ifndef FL_TRAINER_INTERNAL_H
#define FL_TRAINER_INTERNAL_H

#include <stddef.h>

#include "node/fl_trainer.h"

/** What one assisted clipped-sum call measured (seconds). */
typedef struct {
    size_t n, m;      /* rows of the call; of them, the worker's */
    double period;    /* from this call's start to the next call's start */
    double mine_sec;  /* this thread's work on its n - m rows, waiting excluded */
    double pre_sec;   /* from posting the job to reaching before_write */
    double job_sec;   /* the worker's job */
    double fill_sec;  /* the worker's last noise and sample fill */
} fl_assist_sample;

/** The worker's next share of the rows, in [0, 0.5], from the current
 *  share f and one call's measurements (the model and its two
 *  constraints are in node/fl_trainer.c).  A share outside [0, 0.5] (or
 *  NaN) restarts from 0.1; measurements that are missing, negative or
 *  not finite leave f unchanged. */
double fl_trainer_assist_update(double f, const fl_assist_sample *x);

/** Test hook: the worker takes exactly this share f in [0, 0.5] of each
 *  call's rows (rounded; at least one row each side) instead of the
 *  measured one; any other value restores the measured share. */
void fl_trainer_set_assist_share(fl_trainer *t, double f);

/** Rows of shared (CNN split) clipped-sum calls that the helper thread
 *  computed, since the trainer was made. */
size_t fl_trainer_split_helper_rows(const fl_trainer *t);

/** Noise batch + Poisson sample pairs the calling thread filled for the
 *  next step during a CNN split step. */
size_t fl_trainer_own_prefills(const fl_trainer *t);

#endif
