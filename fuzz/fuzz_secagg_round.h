/*
 * fuzz_secagg_round: one whole secure-aggregation round in process (a
 * server and n honest clients with fixed identities and inputs), with hooks
 * through which a fuzz target replaces one party's message to the server
 * or the server's message to one party. Shared by fuzz_secagg_server and
 * fuzz_secagg_client.
 *
 * The round runs steps 0..4 as the coordinator drives them: every live
 * client computes its message from the server's last output to it, the
 * server receives each, then advances. A party whose client step fails,
 * or that the hooks mark dead, sends nothing more.
 */
#ifndef FUZZ_SECAGG_ROUND_H
#define FUZZ_SECAGG_ROUND_H

#include <stddef.h>
#include <stdint.h>

#include "secagg/fl_secagg.h"

#define FUZZ_SA_MAXN 6
#define FUZZ_SA_DIM 5
#define FUZZ_SA_MAXC 3

typedef struct fuzz_secagg_round fuzz_secagg_round;

/** May replace *msg (freeing the old one; the new one must be malloc'd),
 *  or set it to NULL to send nothing. */
typedef void (*fuzz_secagg_hook)(fuzz_secagg_round *r, int step, uint32_t party, uint8_t **msg,
                                 size_t *len);

struct fuzz_secagg_round {
    fl_secagg_params p;
    uint8_t pks[FUZZ_SA_MAXN][32];
    fl_identity *ids[FUZZ_SA_MAXN]; /* borrowed from a process-wide cache */
    fl_secagg_client *cl[FUZZ_SA_MAXN];
    fl_secagg_server *sv;
    int dead[FUZZ_SA_MAXN];
    uint8_t u3[FUZZ_SA_MAXN]; /* survivors of step 2 (U3), once known */
    int u3_known;
    fuzz_secagg_hook up, down; /* client -> server, server -> client */
    const uint8_t *fuzz;       /* the target's input, for the hooks */
    size_t fuzz_len;
    int fuzz_step;
    uint32_t fuzz_party;
    int resign;
};

/** Sets up the round for configuration `config` (0..3: n, t, SecAgg+ k and
 *  counters vary; see the .c file). Aborts if the harness itself fails. */
void fuzz_secagg_round_init(fuzz_secagg_round *r, unsigned config);

/** Runs the round; returns the step at which it stopped (5 when the sum
 *  was computed). */
int fuzz_secagg_round_run(fuzz_secagg_round *r);

/** Frees clients and server (not the cached identities). */
void fuzz_secagg_round_free(fuzz_secagg_round *r);

/** Re-signs an ADVERT (165 bytes) with the identity of the party it names,
 *  if that is a party of the round: what an enrolled party can always do. */
void fuzz_secagg_resign_advert(const fuzz_secagg_round *r, uint8_t *advert);

/** Re-signs a { u32 party | sig[64] } consistency signature over the
 *  round's U3 with the named party's identity, if it is one. */
void fuzz_secagg_resign_consist(const fuzz_secagg_round *r, uint8_t *entry);

#endif
