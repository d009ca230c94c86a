/*
 * fl_trainer: a node's local training for one round — E steps of DP-SGD
 * (dp/fl_dpsgd) on the node's model (nn/fl_model: MLP or CNN; or an
 * nn/fl_mlp directly) over its local dataset.
 */
#ifndef FL_TRAINER_H
#define FL_TRAINER_H

#include <stddef.h>

#include "dp/fl_dpsgd.h"
#include "error/fl_error.h"
#include "nn/fl_dataset.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model.h"

typedef struct fl_trainer fl_trainer;

/** Creates a trainer for `mlp` over `ds` (both borrowed; they must outlive
 *  the trainer) with DP-SGD settings q (Poisson rate), clip norm C and noise
 *  multiplier sigma.  Steps use ghost clipping (fl_mlp_clipped_gradient_sum
 *  with fl_dpsgd_step_clipped); all buffers are allocated here.  Sets
 *  OpenBLAS to one thread unless OPENBLAS_NUM_THREADS is set (several
 *  nodes share a machine; see docs/performance.md).  Errors: FL_EINVAL
 *  (dataset width differs from the model's inputs, bad DP settings),
 *  FL_ENOMEM. */
FL_NODISCARD int fl_trainer_new(fl_trainer **out, fl_mlp *mlp, const fl_dataset *ds, double q,
                                double clip, double sigma);

/** As fl_trainer_new for any model built from a spec (nn/fl_model: MLP
 *  or CNN); steps use fl_model_clipped_gradient_sum (mixed ghost
 *  clipping for conv layers) with fl_dpsgd_step_clipped.  `model` and
 *  `ds` are borrowed and must outlive the trainer.  Same threads rule and
 *  errors as fl_trainer_new. */
FL_NODISCARD int fl_trainer_new_model(fl_trainer **out, fl_model *model, const fl_dataset *ds,
                                      double q, double clip, double sigma);

/** Runs `steps` DP-SGD steps with learning rate lr, updating the model's
 *  parameters in place. *mean_batch receives the mean realised batch size
 *  (a local diagnostic; it is never sent).  No allocation per step.
 *  Noise: when the machine has a core to spare -- OpenBLAS at one thread
 *  (fl_mlp_blas_threads() == 1) and at least two online CPUs -- and the
 *  noise thread is allowed (see fl_trainer_set_noise_thread), the first
 *  call starts a worker thread that draws each step's noise and Poisson
 *  sample ahead (dp/fl_noise prepared batches and dp/fl_sampler prepared
 *  samples, double-buffered) while the gradient
 *  computes; steps then use fl_dpsgd_step_clipped_prepared.  Otherwise
 *  (or if the worker cannot be started, fails, or has no batch ready
 *  within 10 s) a step draws its noise and sample on the calling thread,
 *  just before the step (through a prepared batch of its own, or
 *  fl_dpsgd_step_clipped).
 *  Both give the same law of the update. */
FL_NODISCARD int fl_trainer_run(fl_trainer *t, size_t steps, double lr, double *mean_batch);

/** Allows (allow != 0, the default unless the environment variable
 *  FL_NOISE_THREAD is "0" when the trainer is created) or forbids the
 *  noise worker thread.  Forbidding stops and joins a running worker,
 *  wiping its prepared noise and samples. */
void fl_trainer_set_noise_thread(fl_trainer *t, int allow);

/** 1 if the helper thread is running in batch-split mode, else 0.  For a
 *  model with a conv layer the helper (same conditions as the noise
 *  worker: allowed, one BLAS thread, two CPUs; fl_trainer_set_noise_thread
 *  and FL_NOISE_THREAD=0 govern it) computes half of every batch instead
 *  of drawing noise, and the noise is drawn on the calling thread. */
int fl_trainer_split_running(const fl_trainer *t);

/** How many clipped-sum calls were computed in two halves so far. */
size_t fl_trainer_split_steps(const fl_trainer *t);

/** How many clipped-sum calls the noise worker helped with so far: for a
 *  model without conv layers (fl_trainer_new_model) the worker also
 *  computes a share of each step's rows -- as much as it can while its
 *  noise for the next step still comes in time, measured as the steps run
 *  -- and the calling thread the rest (same clipped sum up to the float
 *  summation order). */
size_t fl_trainer_assist_steps(const fl_trainer *t);

/** The worker's current share of each step's rows (0 to 0.5). */
double fl_trainer_assist_share(const fl_trainer *t);

/** 1 if the noise worker thread is running, else 0. */
int fl_trainer_noise_thread_running(const fl_trainer *t);

/** How many steps so far took their noise from the worker thread (a local
 *  diagnostic, e.g. for benchmarks). */
size_t fl_trainer_prepared_noise_steps(const fl_trainer *t);

/** Stops the noise worker (if any: it finishes its current batch, frees
 *  its noise tables and exits; prepared noise is wiped) and frees. NULL is
 *  a no-op. */
void fl_trainer_free(fl_trainer *t);

#endif
