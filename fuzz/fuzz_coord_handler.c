/*
 * fuzz_coord_handler: the coordinator's message handler (s_on_message in
 * coordinator/flcoord.c and everything it calls: s_on_join, s_on_update,
 * s_on_decline, s_on_secagg) together with the round machinery the main
 * loop drives between messages (s_start_round, s_secagg_advance,
 * s_finish_round, s_complete_round, the evaluation round, abandonment).
 *
 * The handlers are file-static, so this file compiles flcoord.c into
 * itself (its main renamed). Two of the daemon's calls are replaced by
 * macros before the include:
 * - fl_transport_send: the harness's h_send, which encodes the envelope
 *   (the wire encoder must accept everything the coordinator sends),
 *   remembers each node's RoundStart and secure-aggregation relay (for the
 *   honest clients below), and fails for nodes the input marked
 *   unreachable. There are no real connections: a real ROUTER socket
 *   would refuse every send to a routing id it never saw.
 * - printf: the per-round progress line on stdout is dropped.
 *
 * Once per process: a private directory with the coordinator's key, an
 * enrollment file for hospital-1..3 (fuzz_identity(1..3)), a
 * coordinator.ini (schema data/wdbc/schema.ini, layers 30 4 1, secure
 * aggregation with threshold 2, min_nodes 2, node_evaluation 1, no
 * state_dir), then s_setup as the daemon runs it.
 *
 * Per input, every piece of mutable state is reset (nodes, phase, round,
 * secure-aggregation server, evaluation totals, server optimizer, the model
 * and its digest back to the initial ones), then:
 *
 *   byte 0: configuration (bit 0 secure aggregation off, bit 1 node
 *           evaluation off, bits 2-3 rounds 1..4, bit 4 SecAgg+ with
 *           2 neighbours, bit 5 min_nodes 3, bit 6 exit_when_done off)
 *   then records [kind][len lo][len hi][len bytes of payload]:
 *     kind % 8 selects what happens, ((kind >> 3) & 15) % 5 the sender:
 *     0..2 are hospital-1..3, 3 an unenrolled name (the revocation path),
 *     4 hospital-1 with a malformed (multi-frame) message; kind & 0x80
 *     means the next record arrives in the same burst (the main loop reads
 *     up to 256 messages before it looks at the round).
 *     0 raw frame: the payload is the envelope bytes
 *     1 Join (payload[0] % 8: 7 wrong schema digest, 6 wrong feature count)
 *     2 Update for the current round, attempt and base model; flags, sample
 *       count, epsilon, evaluation totals and parameters from the payload
 *     3 SecAgg for the current round, attempt and server step, the payload
 *       as the secure-aggregation message
 *     4 SecAgg from the sender's honest client (fl_secagg_client on the
 *       RoundStart and relays the coordinator sent it), its next step;
 *       the payload chooses weight, counters and parameters at step 2
 *     5 deadline: what the main loop does when the deadline passes
 *     6 Decline for the current round
 *     7 toggles whether sends to the sender fail (node unreachable)
 *   After each record (unless in a burst) the harness does what the main loop does without a
 *   deadline: start a round when enough nodes joined, advance secure
 *   aggregation when every expected message arrived, finish a round when
 *   every participant answered. A give-up (s_stop) ends the input.
 *
 * Properties: no crash, leak or undefined behaviour; every envelope the
 * coordinator sends encodes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz/fuzz_support.h"
#include "log/fl_log.h"
#include "proto/fl_wire.h"
#include "secagg/fl_secagg.h"
#include "transport/fl_transport.h"

static int h_send(void *sock, const uint8_t *rid, size_t rid_len, const Fl__Envelope *env);
static int h_printf(const char *fmt, ...);

#define fl_transport_send h_send
#undef printf
#define printf(...) h_printf(__VA_ARGS__)
#define main s_flcoord_main_unused
#include "coordinator/flcoord.c"
#undef main
#undef printf
#undef fl_transport_send

#define H_NODES 3
#define H_WHO 5 /* hospital-1..3, an unenrolled name, malformed from hospital-1 */

static const char *const h_names[4] = {"hospital-1", "hospital-2", "hospital-3", "intruder"};

static s_coord *h_co;
static fuzz_dir h_dir;
static fl_identity *h_ids[H_NODES];
static float *h_model0;
static uint8_t h_digest0[32];

/* Per node: the honest secure-aggregation client made from the last
 * RoundStart sent to it, and the last relay it was sent. */
typedef struct {
    fl_secagg_client *cl;
    uint8_t pks[FL_WIRE_MAX_PARTIES][32];
    uint32_t round, attempt, next;
    uint8_t *down;
    size_t down_len;
    uint32_t down_step;
    int unreachable;
} h_peer;

static h_peer h_peers[H_NODES];

static int h_printf(const char *fmt, ...)
{
    (void)fmt;
    return 0;
}

static int h_node_of(const uint8_t *rid, size_t rid_len)
{
    return rid && rid_len == 4 && rid[0] < H_NODES && memcmp(rid + 1, "rid", 3) == 0 ? rid[0]
                                                                                      : -1;
}

static void h_peer_clear(h_peer *p)
{
    fl_secagg_client_free(p->cl);
    p->cl = NULL;
    free(p->down);
    p->down = NULL;
    p->down_len = 0;
    p->next = 0;
}

/* The node's side of a RoundStart: its secure-aggregation client, set up as
 * flnode's s_secagg_prepare does (keys from the fixed identities). */
static void h_peer_round_start(int k, const Fl__RoundStart *rs)
{
    h_peer *p = &h_peers[k];
    const Fl__SecAggSettings *sa = rs->secagg;
    fl_secagg_params prm;
    uint32_t me = UINT32_MAX;

    h_peer_clear(p);
    if (!sa || !sa->enabled || sa->n_participants > FL_WIRE_MAX_PARTIES)
        return;
    for (size_t i = 0; i < sa->n_participants; i++) {
        int j;
        for (j = 0; j < H_NODES && strcmp(h_names[j], sa->participants[i]) != 0; j++)
            ;
        if (j == H_NODES)
            return; /* the coordinator only lists enrolled nodes */
        memcpy(p->pks[i], fl_identity_public_of(h_ids[j])->sign_pk, 32);
        if (j == k)
            me = (uint32_t)i;
    }
    if (me == UINT32_MAX)
        return;
    memset(&prm, 0, sizeof prm);
    prm.n = (uint32_t)sa->n_participants;
    prm.t = sa->threshold;
    prm.k = sa->neighbours;
    prm.dim = (uint32_t)rs->n_params;
    prm.clip_range = sa->clip_range;
    prm.max_weight = sa->max_weight;
    prm.num_counters = sa->num_counters;
    prm.max_counter = sa->max_counter;
    prm.identity_pks = (const uint8_t(*)[32])p->pks;
    fl_wire_secagg_context(h_co->cfg.consortium, rs, prm.context);
    if (fl_secagg_client_new(&p->cl, &prm, me, h_ids[k]) != FL_OK) {
        p->cl = NULL;
        return;
    }
    p->round = rs->round;
    p->attempt = rs->attempt;
}

static int h_send(void *sock, const uint8_t *rid, size_t rid_len, const Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int k = h_node_of(rid, rid_len);

    (void)sock;
    if (fl_wire_encode(env, &buf, &len) != FL_OK) {
        fprintf(stderr, "fuzz_coord_handler: the coordinator built an envelope that does not "
                "encode: %s\n", fl_error_last());
        abort();
    }
    free(buf);
    if (k < 0)
        return fl_error_set(FL_EIO, "no such peer");
    if (h_peers[k].unreachable)
        return fl_error_set(FL_EIO, "unreachable (harness)");
    if (env->body_case == FL__ENVELOPE__BODY_ROUND_START) {
        h_peer_round_start(k, env->round_start);
    } else if (env->body_case == FL__ENVELOPE__BODY_SECAGG) {
        h_peer *p = &h_peers[k];
        free(p->down);
        p->down = malloc(env->secagg->payload.len ? env->secagg->payload.len : 1);
        if (!p->down)
            abort();
        memcpy(p->down, env->secagg->payload.data, env->secagg->payload.len);
        p->down_len = env->secagg->payload.len;
        p->down_step = env->secagg->step;
    }
    return FL_OK;
}

static void h_free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* One message from sender `who` (see the opening comment) through
 * s_on_message, in a buffer of exactly `len` bytes so ASan sees overreads. */
static void h_deliver(int who, const uint8_t *frame, size_t len)
{
    fl_transport_msg m;
    uint8_t *copy = malloc(len ? len : 1);
    int k = who == 4 ? 0 : who;

    if (!copy)
        abort();
    if (len)
        memcpy(copy, frame, len);
    memset(&m, 0, sizeof m);
    m.rid[0] = (uint8_t)k;
    memcpy(m.rid + 1, "rid", 3);
    m.rid_len = 4;
    snprintf(m.user_id, sizeof m.user_id, "%s", h_names[k]);
    m.malformed = who == 4;
    if (zmq_msg_init_data(&m.payload, copy, len, h_free_frame, NULL) != 0)
        abort();
    s_on_message(h_co, &m);
    fl_transport_msg_close(&m);
}

static void h_deliver_env(int who, Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fl_wire_encode(env, &buf, &len) != FL_OK)
        abort();
    h_deliver(who, buf, len);
    free(buf);
}

static uint32_t h_u32(const uint8_t *p, size_t len, size_t at)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4 && at + i < len; i++)
        v |= (uint32_t)p[at + i] << (8 * i);
    return v;
}

static void h_join(int who, const uint8_t *p, size_t len)
{
    Fl__Envelope env;
    Fl__Join j = FL__JOIN__INIT;
    uint8_t digest[32];
    unsigned mode = len ? p[0] % 8 : 0;

    memcpy(digest, h_co->schema_digest, 32);
    if (mode == 7)
        digest[len > 1 ? p[1] % 32 : 0] ^= 1;
    fl_wire_envelope_init(&env, h_co->cfg.consortium);
    j.node_name = (char *)h_names[who == 4 ? 0 : who];
    j.schema_digest.len = 32;
    j.schema_digest.data = digest;
    j.num_features = (uint32_t)fl_model_spec_num_inputs(&h_co->spec) + (mode == 6);
    env.body_case = FL__ENVELOPE__BODY_JOIN;
    env.join = &j;
    h_deliver_env(who, &env);
}

/* payload: [flags][num_samples u32][epsilon byte][eval...][params...] */
static void h_update(int who, const uint8_t *p, size_t len)
{
    Fl__Envelope env;
    Fl__Update u = FL__UPDATE__INIT;
    uint8_t digest[32];
    uint64_t eval[FL_WIRE_EVAL_COUNTERS(2) + 2];
    unsigned flags = len ? p[0] : 0;
    size_t n = h_co->num_params + ((flags & 16) != 0), at = 6;
    float *params = malloc(n * sizeof *params);

    if (!params)
        abort();
    memcpy(digest, h_co->model_digest, 32);
    if (flags & 8)
        digest[0] ^= 0x80;
    for (size_t i = 0; i < n; i++) {
        float v = i < h_co->num_params ? h_co->model[i] : 0.0f;
        if (flags & 1) {
            /* raw floats from the payload (NaN, infinities, huge values) */
            if (at + 4 <= len) {
                uint32_t b = h_u32(p, len, at);
                memcpy(&v, &b, sizeof v);
                at += 4;
            }
        } else if (at < len) {
            v += ((float)p[at++] - 128.0f) / 64.0f;
        }
        params[i] = v;
    }
    fl_wire_envelope_init(&env, h_co->cfg.consortium);
    u.round = h_co->round + ((flags & 2) != 0);
    u.attempt = h_co->attempt ^ ((flags & 4) ? 2u : 0u);
    u.num_samples = h_u32(p, len, 1) % 5000u;
    u.n_params = n;
    u.params = params;
    u.base_sha256.len = 32;
    u.base_sha256.data = digest;
    u.steps = 1;
    u.epsilon = len > 5 ? p[5] / 16.0 : 0.5;
    u.delta = 1e-5;
    if (flags & 0x60) {
        size_t ne = (flags & 0x40) ? FL_WIRE_EVAL_COUNTERS(2) : 1 + (flags >> 7);
        for (size_t i = 0; i < ne; i++)
            eval[i] = h_u32(p, len, len > 8 ? len - 4 - (i % (len - 4)) : 0) % 100000u;
        if (flags & 0x40) {
            /* consistent totals: confusion counts add up to the count */
            eval[5] = eval[0] + eval[1] + eval[2] + eval[3];
        }
        u.n_eval_counts = ne;
        u.eval_counts = eval;
    }
    env.body_case = FL__ENVELOPE__BODY_UPDATE;
    env.update = &u;
    h_deliver_env(who, &env);
    free(params);
}

static void h_secagg_env(int who, uint32_t round, uint32_t attempt, uint32_t step,
                         const uint8_t *payload, size_t len, double eps)
{
    Fl__Envelope env;
    Fl__SecAgg m = FL__SEC_AGG__INIT;
    fl_wire_envelope_init(&env, h_co->cfg.consortium);
    m.round = round;
    m.attempt = attempt;
    m.step = step;
    m.payload.data = (uint8_t *)payload;
    m.payload.len = len;
    m.epsilon = eps;
    m.delta = step == 0 ? 1e-5 : 0.0;
    env.body_case = FL__ENVELOPE__BODY_SECAGG;
    env.secagg = &m;
    h_deliver_env(who, &env);
}

static void h_secagg_fuzz(int who, const uint8_t *p, size_t len)
{
    uint32_t step = h_co->sa ? (uint32_t)fl_secagg_server_step(h_co->sa) : 0;
    h_secagg_env(who, h_co->round, h_co->attempt, step, p, len, 0.25);
}

/* The honest client of node `who` sends its next step. */
static void h_secagg_honest(int who, const uint8_t *p, size_t len)
{
    int k = who == 4 ? 0 : who;
    h_peer *pe;
    uint8_t *msg = NULL;
    size_t mlen = 0;
    int rc;

    if (k >= H_NODES)
        return;
    pe = &h_peers[k];
    if (!pe->cl)
        return;
    if (pe->next == 0) {
        rc = fl_secagg_client_advertise(pe->cl, &msg, &mlen);
    } else {
        if (!pe->down || pe->down_step != pe->next)
            return;
        switch (pe->next) {
        case 1: rc = fl_secagg_client_share(pe->cl, pe->down, pe->down_len, &msg, &mlen); break;
        case 2: {
            uint32_t counters[64];
            float *x = malloc(h_co->num_params * sizeof *x);
            uint32_t weight = len ? 1u + h_u32(p, len, 0) % 20000u : 100u;
            uint32_t max = h_co->sa_settings.max_counter;
            if (!x)
                abort();
            for (size_t i = 0; i < h_co->num_params; i++)
                x[i] = h_co->model[i] + (4 + i < len ? ((float)p[4 + i] - 128.0f) / 32.0f : 0.0f);
            memset(counters, 0, sizeof counters);
            for (size_t i = 0; i < 64 && i < h_co->sa_settings.num_counters; i++)
                counters[i] = max ? (len > 8 ? h_u32(p, len, len - 4 - i % (len - 4)) : 7u) %
                                        (max + (len && (p[0] & 1) ? 2u : 1u))
                                  : 0;
            if (h_co->sa_settings.num_counters >= 3 && !(len && (p[0] & 2))) {
                /* consistent totals: the count is the sum of the confusion counts */
                uint32_t nc = h_co->sa_settings.num_counters, sum = 0;
                for (uint32_t i = 0; i + 2 < nc && i < 62; i++) {
                    counters[i] %= 1000u;
                    sum += counters[i];
                }
                counters[nc - 1 < 64 ? nc - 1 : 63] = sum;
            }
            rc = fl_secagg_client_masked(pe->cl, pe->down, pe->down_len, x, weight, counters,
                                         NULL, &msg, &mlen);
            free(x);
            break;
        }
        case 3: rc = fl_secagg_client_consist(pe->cl, pe->down, pe->down_len, &msg, &mlen); break;
        case 4: rc = fl_secagg_client_unmask(pe->cl, pe->down, pe->down_len, &msg, &mlen); break;
        default: return;
        }
    }
    if (rc != FL_OK)
        return; /* the client stays where it is */
    h_secagg_env(who, pe->round, pe->attempt, pe->next, msg, mlen, 0.5);
    free(msg);
    pe->next++;
}

static void h_decline(int who, const uint8_t *p, size_t len)
{
    Fl__Envelope env;
    Fl__Decline d = FL__DECLINE__INIT;
    fl_wire_envelope_init(&env, h_co->cfg.consortium);
    d.round = h_co->round + (len && (p[0] & 1));
    d.code = FL_EBUDGET;
    d.reason = "budget";
    env.body_case = FL__ENVELOPE__BODY_DECLINE;
    env.decline = &d;
    h_deliver_env(who, &env);
}

/* What the main loop does once its deadline passed. */
static void h_deadline(void)
{
    s_coord *co = h_co;
    if (co->phase == S_WAIT_NODES && co->eval_round)
        s_abandon_round(co, "too few nodes joined for the evaluation round");
    else if (co->phase == S_IN_ROUND && co->sa)
        s_secagg_advance(co);
    else if (co->phase == S_IN_ROUND)
        s_finish_round(co);
}

/* What the main loop does between messages before any deadline. */
static void h_loop(void)
{
    s_coord *co = h_co;
    for (int i = 0; i < 4 && !s_stop; i++) {
        if (co->phase == S_WAIT_NODES && s_count_joined(co) >= (size_t)co->cfg.min_nodes)
            s_start_round(co);
        else if (co->phase == S_IN_ROUND && co->sa &&
                 fl_secagg_server_received(co->sa) >= s_secagg_expected(co))
            s_secagg_advance(co);
        else if (co->phase == S_IN_ROUND && !co->sa && s_all_answered(co))
            s_finish_round(co);
        else
            break;
    }
}

static void h_cleanup(void)
{
    fuzz_dir_remove(&h_dir);
}

static void h_write(const char *name, const char *text, char *path, size_t cap)
{
    fuzz_dir_write(&h_dir, name, (const uint8_t *)text, strlen(text), path, cap);
}

static void h_setup(void)
{
    char path[700], text[2048], cfg[4096];
    size_t off = 0;

    fl_log_init("flcoord", getenv("FL_FUZZ_VERBOSE") ? FL_LOG_DEBUG : FL_LOG_ERROR);
    fuzz_dir_new(&h_dir);
    atexit(h_cleanup);
    fuzz_identity_text(0, text, sizeof text);
    h_write("coordinator.key", text, path, sizeof path);
    for (int k = 0; k < H_NODES; k++) {
        h_ids[k] = fuzz_identity((unsigned)k + 1);
        off += (size_t)snprintf(text + off, sizeof text - off, "%s %s\n", h_names[k],
                                fl_identity_public_of(h_ids[k])->sign_z85);
    }
    h_write("enrollment.txt", text, path, sizeof path);
    snprintf(cfg, sizeof cfg,
             "[coordinator]\nconsortium = hospitals\nlisten = tcp://127.0.0.1:*\n"
             "key = %s/coordinator.key\nenrollment = %s/enrollment.txt\nrounds = 2\n"
             "min_nodes = 2\nnode_evaluation = 1\nmax_abandoned = 3\n"
             "[model]\nlayers = 30 4 1\n"
             "[training]\nlocal_steps = 2\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\n"
             "[secagg]\nenabled = 1\nthreshold = 2\n",
             h_dir.path, h_dir.path, FL_SOURCE_DIR);
    h_write("coordinator.ini", cfg, path, sizeof path);
    h_co = calloc(1, sizeof *h_co);
    if (!h_co)
        abort();
    if (s_setup(h_co, path) != FL_OK) {
        fprintf(stderr, "fuzz_coord_handler: s_setup: %s\n", fl_error_last());
        abort();
    }
    h_model0 = malloc(h_co->num_params * sizeof *h_model0);
    if (!h_model0)
        abort();
    memcpy(h_model0, h_co->model, h_co->num_params * sizeof *h_model0);
    memcpy(h_digest0, h_co->model_digest, 32);
}

static void h_reset(uint8_t conf)
{
    s_coord *co = h_co;
    fl_server_kind kind;
    fl_server_opt_config oc;

    s_stop = 0;
    for (int k = 0; k < H_NODES; k++) {
        h_peer_clear(&h_peers[k]);
        h_peers[k].unreachable = 0;
    }
    fl_secagg_server_free(co->sa);
    co->sa = NULL;
    memset(co->nodes, 0, sizeof co->nodes);
    co->num_nodes = 0;
    co->phase = S_WAIT_NODES;
    co->round = 1;
    co->attempt = 0;
    co->abandoned_in_row = 0;
    co->deadline = 0;
    co->last_loss = co->last_acc = co->last_auc = 0;
    co->last_precision = co->last_recall = co->last_f1 = 0;
    co->evaluated = 0;
    co->rounds_done = 0;
    co->bad_frames = 0;
    co->n_parties = 0;
    memset(co->party, 0, sizeof co->party);
    memset(co->party_names, 0, sizeof co->party_names);
    memset(&co->sa_settings, 0, sizeof co->sa_settings);
    co->sa_u3 = 0;
    co->eval_round = 0;
    memset(co->eval_sum, 0, sizeof co->eval_sum);
    co->eval_nodes = 0;
    co->node_eval_version = 0;
    co->node_eval_examples = 0;
    co->node_loss = co->node_acc = co->node_precision = co->node_recall = co->node_f1 = 0;
    co->paused = 0;
    co->last_eval_round = 0;
    co->num_revoked_rid = 0;
    fl_fedavg_reset(co->avg);
    memcpy(co->model, h_model0, co->num_params * sizeof *co->model);
    memcpy(co->model_digest, h_digest0, 32);
    /* The configuration the input asked for. */
    co->cfg.secagg_enabled = !(conf & 1);
    co->cfg.node_evaluation = !(conf & 2);
    co->cfg.rounds = 1 + ((conf >> 2) & 3);
    co->cfg.secagg_neighbours = (conf & 16) ? 2 : 0;
    co->cfg.min_nodes = (conf & 32) ? 3 : 2;
    co->cfg.exit_when_done = !(conf & 64);
    /* A fresh server optimizer (momentum and moments start from zero). */
    fl_server_opt_free(co->opt);
    co->opt = NULL;
    if (fl_server_opt_parse(co->cfg.server_optimizer, &kind) != FL_OK)
        abort();
    oc = s_opt_config(&co->cfg, kind);
    if (fl_server_opt_new(&co->opt, &oc, co->num_params) != FL_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 1;

    fuzz_init();
    if (!h_co)
        h_setup();
    if (size == 0)
        return 0;
    h_reset(data[0]);
    while (at + 3 <= size && !s_stop) {
        uint8_t kind = data[at];
        size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        const uint8_t *p = data + at + 3;
        int who = ((kind >> 3) & 15) % H_WHO;
        int burst = (kind & 0x80) != 0;
        if (len > size - at - 3)
            len = size - at - 3;
        at += 3 + len;
        switch (kind % 8) {
        case 0: h_deliver(who, p, len); break;
        case 1: h_join(who, p, len); break;
        case 2: h_update(who, p, len); break;
        case 3: h_secagg_fuzz(who, p, len); break;
        case 4: h_secagg_honest(who, p, len); break;
        case 5: h_deadline(); break;
        case 6: h_decline(who, p, len); break;
        default:
            if (who < H_NODES)
                h_peers[who].unreachable = !h_peers[who].unreachable;
            break;
        }
        if (!s_stop && !burst)
            h_loop();
    }
    /* Nothing of this input may outlive it. */
    for (int k = 0; k < H_NODES; k++)
        h_peer_clear(&h_peers[k]);
    fl_secagg_server_free(h_co->sa);
    h_co->sa = NULL;
    return 0;
}
