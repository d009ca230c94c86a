/*
 * fl_server_opt: the coordinator's server optimizer, applied to the
 * aggregated update each round (Reddi et al. 2021, "Adaptive Federated
 * Optimization", Algorithm 2; Hsu et al. 2019 for FedAvgM).
 *
 * With x the global model and avg the weighted average of the nodes'
 * models, the pseudo-gradient is Δ = avg − x, and:
 *   FedAvg:  x ← x + η Δ                     (η = 1 is plain FedAvg)
 *   FedAvgM: v ← β v + Δ;  x ← x + η v
 *   FedAdam: m ← β1 m + (1 − β1) Δ;  v ← β2 v + (1 − β2) Δ²;
 *            x ← x + η m / (√v + τ)
 * It only post-processes the DP-protected aggregate, so it costs no privacy.
 */
#ifndef FL_SERVER_OPT_H
#define FL_SERVER_OPT_H

#include <stddef.h>

#include "error/fl_error.h"

typedef enum { FL_SERVER_FEDAVG = 0, FL_SERVER_FEDAVGM = 1, FL_SERVER_FEDADAM = 2 } fl_server_kind;

typedef struct {
    fl_server_kind kind;
    double lr;       /* η */
    double momentum; /* β, FedAvgM */
    double beta1, beta2, tau; /* FedAdam */
} fl_server_opt_config;

typedef struct fl_server_opt fl_server_opt;

/** Parses "fedavg", "fedavgm" or "fedadam". FL_EINVAL otherwise. */
FL_NODISCARD int fl_server_opt_parse(const char *name, fl_server_kind *out);

/** The name of a kind ("fedavg", ...). */
const char *fl_server_opt_name(fl_server_kind kind);

/** An optimizer for models of `dim` parameters (state starts at zero). */
FL_NODISCARD int fl_server_opt_new(fl_server_opt **out, const fl_server_opt_config *cfg,
                                   size_t dim);

/** Applies one round: model (dim) is the current global model, avg the
 *  aggregate; model is updated in place. */
void fl_server_opt_step(fl_server_opt *o, float *model, const float *avg);

/** Changes the settings of a running optimizer (flctl set): its state is
 *  kept when the kind stays the same and starts again from zero when the
 *  kind changes.  FL_EINVAL (as fl_server_opt_new; o unchanged), FL_ENOMEM. */
FL_NODISCARD int fl_server_opt_configure(fl_server_opt *o, const fl_server_opt_config *cfg);

/** The current settings. */
const fl_server_opt_config *fl_server_opt_settings(const fl_server_opt *o);

/** Writes the optimizer's state (its kind, dimension and moment vectors as
 *  float64, then a SHA-256 of all that; layout "FLOPTST1", u32 kind, u32
 *  vectors, u64 dim, vectors, digest; little-endian) atomically to `path`,
 *  so a restarted coordinator continues with the same momentum.
 *  FL_EIO, FL_ENOMEM. */
FL_NODISCARD int fl_server_opt_save(const fl_server_opt *o, const char *path);

/** Restores the state saved by fl_server_opt_save into `o`.  FL_EIO if the
 *  file cannot be read, FL_EPARSE if it is damaged (checksum, size),
 *  FL_EINVAL if it holds another kind or dimension than `o` (o unchanged). */
FL_NODISCARD int fl_server_opt_load(fl_server_opt *o, const char *path);

/** Frees. NULL is a no-op. */
void fl_server_opt_free(fl_server_opt *o);

#endif
