/*
 * fl_registry: the coordinator's durable state in SQLite — rounds and their
 * outcomes and metrics, and the model versions (number, SHA-256, file) —
 * so that a coordinator killed at any moment resumes from its last completed
 * round.
 *
 * Crash safety: a model version is written as a file first (atomically:
 * temporary file, fsync, rename), then recorded in one SQLite transaction
 * (journal in WAL mode, synchronous FULL). A crash between the two leaves a
 * file no row points to; the round is run again and rewrites that file.
 * Version numbers equal round numbers, so versions can have neither gaps nor
 * duplicates.
 */
#ifndef FL_REGISTRY_H
#define FL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

typedef struct fl_registry fl_registry;

/** Metrics of a completed round on the public test set (NaN when absent). */
typedef struct {
    double loss, accuracy, auc, precision, recall, f1;
} fl_registry_metrics;

/** Opens (creating) DIR/state.db and DIR/models/. Rounds left in progress by
 *  a previous run are marked "interrupted". FL_EIO with the path on failure. */
FL_NODISCARD int fl_registry_open(fl_registry **out, const char *dir);

/** The latest model version (0 if none) and its file path (cap bytes). */
FL_NODISCARD int fl_registry_latest(fl_registry *r, uint32_t *version, char *path, size_t cap,
                                    uint8_t sha256[32]);

/** Records that round `round` started with `participants` nodes. */
FL_NODISCARD int fl_registry_round_started(fl_registry *r, uint32_t round, uint32_t participants);

/** Records that the current attempt of `round` was abandoned and why. */
FL_NODISCARD int fl_registry_round_abandoned(fl_registry *r, uint32_t round, const char *why);

/** The path where model version `version` is stored (cap bytes). */
void fl_registry_model_path(const fl_registry *r, uint32_t version, char *path, size_t cap);

/** Records round `round` as completed with `contributors` inputs, its
 *  metrics, and model version `round` (file already written at
 *  fl_registry_model_path, with digest sha256), in one transaction. */
FL_NODISCARD int fl_registry_round_completed(fl_registry *r, uint32_t round, uint32_t contributors,
                                             const fl_registry_metrics *m,
                                             const uint8_t sha256[32]);

/** Records the nodes' evaluation of model version `version` on their
 *  local held-out data (consortium-wide totals from secure aggregation):
 *  `m` (auc NaN), over `examples` examples from `nodes` nodes.  A second
 *  record for the same version replaces the first (an evaluation-only
 *  round run again).  FL_EIO. */
FL_NODISCARD int fl_registry_evaluation(fl_registry *r, uint32_t version,
                                        const fl_registry_metrics *m, uint64_t examples,
                                        uint32_t nodes);

/** One attempt of a round, as recorded. */
typedef struct {
    uint32_t round;
    int64_t started_at;    /* Unix seconds */
    int64_t ended_at;      /* -1 while running */
    uint32_t participants;
    int64_t contributors;  /* -1 unless completed */
    char outcome[16];      /* completed, abandoned, interrupted; "" while running */
    char reason[512];      /* why it was abandoned, or "" */
    fl_registry_metrics metrics; /* NaN where absent */
    /* The nodes' evaluation of this round's model (completed rounds only;
     * NaN and 0 examples where none was reported). */
    fl_registry_metrics node_metrics;
    uint64_t node_examples;
} fl_registry_round;

/** Calls fn for the recorded attempts, oldest first: those of round `round`
 *  if round > 0, else the `last` most recent; at most `last` rows either
 *  way. A non-zero return from fn stops the walk and is returned. */
FL_NODISCARD int fl_registry_rounds(fl_registry *r, uint32_t round, uint32_t last,
                                    int (*fn)(void *ctx, const fl_registry_round *row),
                                    void *ctx);

/** Number of model versions and whether they are exactly 1..n (no gap, no
 *  duplicate): for tests and `flctl`. */
FL_NODISCARD int fl_registry_versions(fl_registry *r, uint32_t *count, int *contiguous);

/** Closes. NULL is a no-op. */
void fl_registry_free(fl_registry *r);

#endif
