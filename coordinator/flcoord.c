/*
 * flcoord: the coordinator daemon.
 *
 *   flcoord init --dir DIR        create DIR/coordinator.key (0600) and .pub
 *   flcoord run --config FILE     run the consortium's training rounds
 *
 * One thread, one zmq_poll loop over the CURVE ROUTER socket and the ZAP
 * handler.  A round: wait until at least min_nodes enrolled nodes have
 * joined; send each a RoundStart (model + settings); fold each valid Update
 * into a running weighted sum as it arrives (no update is kept); when all
 * participants have answered or the round timeout passes, average (FedAvg),
 * evaluate on the shared public test set if one is configured, and send the
 * RoundResult.  Rounds with fewer than min_nodes updates are abandoned.
 * Every frame from the network is decoded by fl_wire (bounded, validated);
 * a bad frame is answered with an Error and the loop carries on.
 *
 * The operator's admin channel (coordinator/fl_admin.h, used by flctl) is a
 * REP socket on ipc://<state_dir or config dir>/admin.sock in the same poll
 * set: status, nodes, history, enroll, revoke, pause and resume are handled
 * between two network messages, so they need no locks.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "config/fl_config.h"
#include "coordinator/fl_admin.h"
#include "coordinator/fl_fedavg.h"
#include "coordinator/fl_model_file.h"
#include "coordinator/fl_registry.h"
#include "coordinator/fl_server_opt.h"
#include "log/fl_log.h"
#include "nn/fl_dataset.h"
#include "nn/fl_metrics.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model.h"
#include "proto/fl_wire.h"
#include "secagg/fl_secagg.h"
#include "storage/fl_storage.h"
#include "transport/fl_transport.h"

#define S_EXIT_USAGE 2
#define S_MAX_NODES 1024

typedef struct {
    char consortium[FL_CONFIG_STR_MAX];
    char listen[FL_CONFIG_STR_MAX];
    char key[FL_CONFIG_STR_MAX];
    char enrollment[FL_CONFIG_STR_MAX];
    char endpoint_file[FL_CONFIG_STR_MAX];
    char model_out[FL_CONFIG_STR_MAX];
    char summary_json[FL_CONFIG_STR_MAX];
    char state_dir[FL_CONFIG_STR_MAX];
    char log_json[FL_CONFIG_STR_MAX];
    char admin[FL_CONFIG_STR_MAX]; /* admin socket path (ipc) */
    int64_t rounds, min_nodes, round_timeout_ms, join_timeout_ms, max_abandoned;
    int64_t autostart, exit_when_done, node_evaluation;
    char layers[FL_CONFIG_STR_MAX];
    char output[FL_CONFIG_STR_MAX];
    int64_t seed;
    int64_t local_steps;
    double learning_rate, clip_norm, sampling_rate;
    char schema[FL_CONFIG_STR_MAX];
    char test_data[FL_CONFIG_STR_MAX];
    char data_format[FL_CONFIG_STR_MAX]; /* csv or idx */
    char test_images[FL_CONFIG_STR_MAX], test_labels[FL_CONFIG_STR_MAX];
    int64_t test_count;
    int64_t secagg_enabled, secagg_threshold, secagg_neighbours, secagg_max_weight, step_timeout_ms;
    double secagg_clip_range;
    char server_optimizer[FL_CONFIG_STR_MAX];
    double server_lr, server_momentum, server_beta1, server_beta2, server_tau;
} s_config;

typedef struct {
    char name[FL_WIRE_MAX_NAME + 1];
    uint8_t rid[256];
    size_t rid_len;
    int joined;
    int participant; /* in the current round */
    int answered;    /* sent an update or a decline this round */
    double epsilon;  /* last epsilon the node reported */
    double delta;
    uint32_t party;  /* index in the round's secure-aggregation party list */
} s_node;

/* S_IDLE: waiting for 'flctl start' ([coordinator] autostart = 0).
 * S_DONE: all planned rounds completed; the coordinator exits, or with
 * [coordinator] exit_when_done = 0 stays up (nodes stay connected) until
 * 'flctl start --rounds N' plans more. */
typedef enum { S_IDLE, S_WAIT_NODES, S_IN_ROUND, S_DONE } s_phase;

typedef struct {
    s_config cfg;
    void *ctx, *router;
    fl_zap *zap;
    fl_enroll *enroll;
    fl_identity *id;
    fl_schema *schema;
    unsigned char schema_digest[32];
    fl_dataset *test;
    fl_model *mlp; /* the model, for evaluating on the public test set */
    fl_model_spec spec;
    uint32_t wire_sizes[FL_SPEC_MAX_LAYERS + 1];
    Fl__LayerSpec wire_layers[FL_SPEC_MAX_LAYERS];
    Fl__LayerSpec *wire_layer_ptrs[FL_SPEC_MAX_LAYERS];
    size_t num_params;
    float *model; /* current global model (owned by mlp's param vector copy) */
    uint8_t model_digest[32];
    fl_fedavg *avg;
    float *probs;
    s_node nodes[S_MAX_NODES];
    size_t num_nodes;
    s_phase phase;
    uint32_t round;        /* current round number, 1-based */
    uint32_t attempt;      /* random, non-zero, new for every attempt of a round */
    int abandoned_in_row;
    double deadline;       /* seconds, CLOCK_MONOTONIC */
    double started;
    /* last evaluation */
    double last_loss, last_acc, last_auc, last_precision, last_recall, last_f1;
    int evaluated;
    uint32_t rounds_done;
    uint64_t bad_frames;
    /* Secure aggregation of the current round (NULL when off). */
    fl_secagg_server *sa;
    uint32_t n_parties;
    s_node *party[S_MAX_NODES];
    char *party_names[S_MAX_NODES];
    uint8_t (*party_pks)[32];
    Fl__SecAggSettings sa_settings;
    uint32_t sa_u3; /* parties whose masked input is in the sum */
    fl_registry *reg; /* durable state, when [coordinator] state_dir is set */
    /* The nodes' evaluation of the round's starting model (their held-out
     * records): totals summed over this round's inputs. An evaluation-only
     * round after the last one evaluates the final model. */
    int eval_round;
    uint64_t eval_sum[FL_WIRE_EVAL_COUNTERS(FL_WIRE_MAX_CLASSES)];
    uint32_t eval_nodes;
    uint32_t node_eval_version; /* model version of the last node evaluation, 0 = none */
    uint64_t node_eval_examples;
    double node_loss, node_acc, node_precision, node_recall, node_f1;
    fl_server_opt *opt;
    float *agg; /* this round's aggregate, before the server optimizer */
    /* Operator's admin channel (flctl). */
    void *admin;
    char admin_path[FL_CONFIG_STR_MAX];
    int paused;                 /* finish the round in progress, start no new one */
    uint32_t last_eval_round;   /* round of the last evaluation */
    char (*enrolled)[FL_ADMIN_NAME_CAP]; /* enrolled names, in enrollment-file order */
    size_t num_enrolled;
    /* Routing ids of connections whose node was revoked: ZeroMQ keeps an
     * established connection open, so their messages are refused here even
     * if the name is enrolled again with another key. */
    uint8_t revoked_rid[64][256];
    size_t revoked_rid_len[64];
    size_t num_revoked_rid;
} s_coord;

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    s_stop = sig;
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void s_hex(const uint8_t *d, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, d, n);
}

/* ------------------------------------------------------------ config */

static int s_load_config(s_config *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->rounds = 10;
    c->min_nodes = 2;
    c->round_timeout_ms = 60000;
    c->join_timeout_ms = 300000;
    c->max_abandoned = 3;
    c->autostart = 1;
    c->exit_when_done = 1;
    c->node_evaluation = 1;
    c->seed = 1;
    c->local_steps = 10;
    c->learning_rate = 0.1;
    c->clip_norm = 1.0;
    c->sampling_rate = 0.1;
    snprintf(c->output, sizeof c->output, "sigmoid");
    c->secagg_enabled = 1;
    c->secagg_clip_range = 10.0;
    c->secagg_max_weight = 10000;
    c->step_timeout_ms = 30000;
    snprintf(c->server_optimizer, sizeof c->server_optimizer, "fedavg");
    snprintf(c->data_format, sizeof c->data_format, "csv");
    c->server_lr = 1.0;
    c->server_momentum = 0.9;
    c->server_beta1 = 0.9;
    c->server_beta2 = 0.99;
    c->server_tau = 1e-3;
    fl_config_field f[] = {
        {"coordinator", "consortium", FL_CONFIG_STRING, c->consortium, 1, 0, 0, 0},
        {"coordinator", "listen", FL_CONFIG_STRING, c->listen, 1, 0, 0, 0},
        {"coordinator", "key", FL_CONFIG_PATH, c->key, 1, 0, 0, 0},
        {"coordinator", "enrollment", FL_CONFIG_PATH, c->enrollment, 1, 0, 0, 0},
        {"coordinator", "endpoint_file", FL_CONFIG_PATH, c->endpoint_file, 0, 0, 0, 0},
        {"coordinator", "model_out", FL_CONFIG_PATH, c->model_out, 0, 0, 0, 0},
        {"coordinator", "summary_json", FL_CONFIG_PATH, c->summary_json, 0, 0, 0, 0},
        {"coordinator", "state_dir", FL_CONFIG_PATH, c->state_dir, 0, 0, 0, 0},
        {"coordinator", "log_json", FL_CONFIG_PATH, c->log_json, 0, 0, 0, 0},
        {"coordinator", "admin", FL_CONFIG_PATH, c->admin, 0, 0, 0, 0},
        {"coordinator", "rounds", FL_CONFIG_INT, &c->rounds, 0, 1, FL_WIRE_MAX_ROUNDS, 0},
        {"coordinator", "min_nodes", FL_CONFIG_INT, &c->min_nodes, 0, 1, S_MAX_NODES, 0},
        {"coordinator", "round_timeout_ms", FL_CONFIG_INT, &c->round_timeout_ms, 0, 100, 86400000, 0},
        {"coordinator", "join_timeout_ms", FL_CONFIG_INT, &c->join_timeout_ms, 0, 100, 86400000, 0},
        {"coordinator", "max_abandoned", FL_CONFIG_INT, &c->max_abandoned, 0, 0, 1000, 0},
        {"coordinator", "autostart", FL_CONFIG_INT, &c->autostart, 0, 0, 1, 0},
        {"coordinator", "exit_when_done", FL_CONFIG_INT, &c->exit_when_done, 0, 0, 1, 0},
        {"coordinator", "node_evaluation", FL_CONFIG_INT, &c->node_evaluation, 0, 0, 1, 0},
        {"model", "layers", FL_CONFIG_STRING, c->layers, 1, 0, 0, 0},
        {"model", "output", FL_CONFIG_STRING, c->output, 0, 0, 0, 0},
        {"model", "seed", FL_CONFIG_INT, &c->seed, 0, 0, 9.0e15, 0},
        {"training", "local_steps", FL_CONFIG_INT, &c->local_steps, 0, 1, FL_WIRE_MAX_STEPS, 0},
        {"training", "learning_rate", FL_CONFIG_DOUBLE, &c->learning_rate, 0, 1e-6, 100, 0},
        {"training", "clip_norm", FL_CONFIG_DOUBLE, &c->clip_norm, 0, 1e-6, 1e6, 0},
        {"training", "sampling_rate", FL_CONFIG_DOUBLE, &c->sampling_rate, 0, 1e-6, 1, 0},
        {"data", "format", FL_CONFIG_STRING, c->data_format, 0, 0, 0, 0},
        {"data", "schema", FL_CONFIG_PATH, c->schema, 0, 0, 0, 0},
        {"data", "test_data", FL_CONFIG_PATH, c->test_data, 0, 0, 0, 0},
        {"data", "test_images", FL_CONFIG_PATH, c->test_images, 0, 0, 0, 0},
        {"data", "test_labels", FL_CONFIG_PATH, c->test_labels, 0, 0, 0, 0},
        {"data", "test_count", FL_CONFIG_INT, &c->test_count, 0, 0, 1e9, 0},
        {"secagg", "enabled", FL_CONFIG_INT, &c->secagg_enabled, 0, 0, 1, 0},
        {"secagg", "threshold", FL_CONFIG_INT, &c->secagg_threshold, 0, 0, S_MAX_NODES, 0},
        {"secagg", "neighbours", FL_CONFIG_INT, &c->secagg_neighbours, 0, 0, S_MAX_NODES, 0},
        {"secagg", "clip_range", FL_CONFIG_DOUBLE, &c->secagg_clip_range, 0, 1e-6, 1e6, 0},
        {"secagg", "max_weight", FL_CONFIG_INT, &c->secagg_max_weight, 0, 1, 1e9, 0},
        {"secagg", "step_timeout_ms", FL_CONFIG_INT, &c->step_timeout_ms, 0, 100, 86400000, 0},
        {"server", "optimizer", FL_CONFIG_STRING, c->server_optimizer, 0, 0, 0, 0},
        {"server", "learning_rate", FL_CONFIG_DOUBLE, &c->server_lr, 0, 1e-6, 100, 0},
        {"server", "momentum", FL_CONFIG_DOUBLE, &c->server_momentum, 0, 0, 0.999999, 0},
        {"server", "beta1", FL_CONFIG_DOUBLE, &c->server_beta1, 0, 0, 0.999999, 0},
        {"server", "beta2", FL_CONFIG_DOUBLE, &c->server_beta2, 0, 0, 0.999999, 0},
        {"server", "tau", FL_CONFIG_DOUBLE, &c->server_tau, 0, 1e-12, 10, 0},
    };
    int rc = fl_config_load(path, f, sizeof f / sizeof f[0]);
    if (rc != FL_OK)
        return rc;
    if (strcmp(c->data_format, "csv") == 0 ? !c->schema[0] : strcmp(c->data_format, "idx") != 0)
        return fl_error_set(FL_EPARSE, "%s: [data] format = '%s': use csv (with schema = the "
                            "consortium's schema file) or idx (images)", path, c->data_format);
    if (!fl_wire_name_ok(c->consortium))
        return fl_error_set(FL_EPARSE, "%s: [coordinator] consortium '%s' must be 1..%u "
                            "characters from [A-Za-z0-9._-]", path, c->consortium,
                            FL_WIRE_MAX_NAME);
    return FL_OK;
}

static int s_parse_layers(s_coord *co)
{
    uint32_t kind;
    if (strcmp(co->cfg.output, "sigmoid") == 0)
        kind = FL_MLP_OUT_SIGMOID_BCE;
    else if (strcmp(co->cfg.output, "softmax") == 0)
        kind = FL_MLP_OUT_SOFTMAX_CE;
    else
        return fl_error_set(FL_EPARSE, "[model] output = '%s': use 'sigmoid' or 'softmax'",
                            co->cfg.output);
    if (fl_model_spec_parse(&co->spec, co->cfg.layers, kind) != FL_OK)
        return fl_error_wrap(FL_EPARSE, "[model] layers");
    return FL_OK;
}

/* ------------------------------------------------------------- nodes */

static s_node *s_node_by_name(s_coord *co, const char *name)
{
    for (size_t i = 0; i < co->num_nodes; i++)
        if (strcmp(co->nodes[i].name, name) == 0)
            return &co->nodes[i];
    return NULL;
}

static size_t s_count_joined(const s_coord *co)
{
    size_t k = 0;
    for (size_t i = 0; i < co->num_nodes; i++)
        k += co->nodes[i].joined != 0;
    return k;
}

static void s_send_error(s_coord *co, const uint8_t *rid, size_t rid_len, int code,
                         const char *msg)
{
    Fl__Envelope env;
    Fl__Error err = FL__ERROR__INIT;
    char text[FL_WIRE_MAX_TEXT + 1];
    /* Keep the reply within the protocol's own text rules. */
    snprintf(text, sizeof text, "%s", msg);
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    fl_wire_envelope_init(&env, co->cfg.consortium);
    err.code = code < 0 ? code : FL_EPROTO;
    err.message = text;
    err.round = co->round;
    env.body_case = FL__ENVELOPE__BODY_ERROR;
    env.error = &err;
    if (fl_transport_send(co->router, rid, rid_len, &env) != FL_OK)
        fl_log_debug("could not send an error reply: %s", fl_error_last());
}

/* ------------------------------------------------------------ rounds */

static void s_fill_round_start(s_coord *co, Fl__Envelope *env, Fl__RoundStart *rs,
                               Fl__RoundSettings *st, Fl__ModelSpec *sp)
{
    fl_wire_envelope_init(env, co->cfg.consortium);
    st->local_steps = (uint32_t)co->cfg.local_steps;
    st->learning_rate = (float)co->cfg.learning_rate;
    st->clip_norm = (float)co->cfg.clip_norm;
    st->sampling_rate = (float)co->cfg.sampling_rate;
    /* The evaluation round after the last one is numbered past it. */
    st->total_rounds = co->eval_round ? co->round : (uint32_t)co->cfg.rounds;
    st->min_nodes = (uint32_t)co->cfg.min_nodes;
    st->evaluate_only = co->eval_round != 0;
    fl_wire_spec_encode(&co->spec, sp, co->wire_sizes, co->wire_layers, co->wire_layer_ptrs);
    rs->round = co->round;
    rs->attempt = co->attempt;
    rs->settings = st;
    rs->spec = sp;
    rs->n_params = co->num_params;
    rs->params = co->model;
    rs->model_sha256.len = 32;
    rs->model_sha256.data = co->model_digest;
    if (co->sa)
        rs->secagg = &co->sa_settings;
    env->body_case = FL__ENVELOPE__BODY_ROUND_START;
    env->round_start = rs;
}

/* Sets up secure aggregation for the round about to start: the party list is
 * every joined node, the threshold more than two thirds of it (and at least
 * min_nodes), each party's identity key taken from the enrollment file. */
static int s_secagg_begin(s_coord *co)
{
    fl_secagg_params p;
    Fl__Envelope env;
    Fl__RoundStart rs = FL__ROUND_START__INIT;
    Fl__RoundSettings st = FL__ROUND_SETTINGS__INIT;
    Fl__ModelSpec sp = FL__MODEL_SPEC__INIT;
    uint32_t n = 0, t, k;

    fl_secagg_server_free(co->sa);
    co->sa = NULL;
    for (size_t i = 0; i < co->num_nodes; i++) {
        s_node *nd = &co->nodes[i];
        const uint8_t *pk;
        if (!nd->joined)
            continue;
        pk = fl_enroll_identity(co->enroll, nd->name);
        if (!pk)
            continue; /* revoked since it joined */
        nd->party = n;
        co->party[n] = nd;
        co->party_names[n] = nd->name;
        memcpy(co->party_pks[n], pk, 32);
        n++;
    }
    k = co->cfg.secagg_neighbours > 0 && (uint32_t)co->cfg.secagg_neighbours < n
            ? (uint32_t)co->cfg.secagg_neighbours
            : 0;
    if (k == 0) {
        /* Plain Bonawitz: more than two thirds of the round's parties. */
        t = co->cfg.secagg_threshold > 0 ? (uint32_t)co->cfg.secagg_threshold : 2 * n / 3 + 1;
        if (t < (uint32_t)co->cfg.min_nodes)
            t = (uint32_t)co->cfg.min_nodes;
    } else {
        /* SecAgg+: the threshold is per neighbourhood; 2t > k + 1 keeps a
         * majority of each neighbourhood honest-required (Bell et al. 2020). */
        t = co->cfg.secagg_threshold > 0 ? (uint32_t)co->cfg.secagg_threshold : (k + 1) / 2 + 1;
        if (t > k)
            t = k;
    }
    if (t < 2)
        t = 2; /* a "sum" of one input is that input: aggregation needs two */
    if (n < t || n < (uint32_t)co->cfg.min_nodes)
        return fl_error_set(FL_ESTATE, "%u nodes joined, secure aggregation needs at least %u",
                            n, t > (uint32_t)co->cfg.min_nodes ? t : (uint32_t)co->cfg.min_nodes);
    co->n_parties = n;
    fl__sec_agg_settings__init(&co->sa_settings);
    co->sa_settings.enabled = 1;
    co->sa_settings.threshold = t;
    co->sa_settings.neighbours = k;
    co->sa_settings.clip_range = (float)co->cfg.secagg_clip_range;
    co->sa_settings.max_weight = (uint32_t)co->cfg.secagg_max_weight;
    co->sa_settings.n_participants = n;
    co->sa_settings.participants = co->party_names;
    if (co->cfg.node_evaluation) {
        /* Counters sum exactly in Z_2^32 as long as n * max_counter < 2^32. */
        co->sa_settings.num_counters =
            (uint32_t)FL_WIRE_EVAL_COUNTERS(fl_wire_eval_classes(&co->spec));
        co->sa_settings.max_counter = 0xffffffffu / n;
    }
    s_fill_round_start(co, &env, &rs, &st, &sp);
    rs.secagg = &co->sa_settings;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.t = t;
    p.k = k;
    p.dim = (uint32_t)co->num_params;
    p.clip_range = co->sa_settings.clip_range;
    p.max_weight = co->sa_settings.max_weight;
    p.num_counters = co->sa_settings.num_counters;
    p.max_counter = co->sa_settings.max_counter;
    p.identity_pks = (const uint8_t(*)[32])co->party_pks;
    fl_wire_secagg_context(co->cfg.consortium, &rs, p.context);
    co->sa_u3 = 0;
    return fl_secagg_server_new(&co->sa, &p);
}

static void s_start_round(s_coord *co)
{
    Fl__Envelope env;
    Fl__RoundStart rs = FL__ROUND_START__INIT;
    Fl__RoundSettings st = FL__ROUND_SETTINGS__INIT;
    Fl__ModelSpec sp = FL__MODEL_SPEC__INIT;
    size_t sent = 0;

    co->attempt = randombytes_random() | 1u;

    if (co->cfg.secagg_enabled && s_secagg_begin(co) != FL_OK) {
        fl_log_warn("round %u: %s; waiting for more nodes", co->round, fl_error_last());
        co->phase = S_WAIT_NODES;
        co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
        return;
    }
    s_fill_round_start(co, &env, &rs, &st, &sp);
    fl_fedavg_reset(co->avg);
    memset(co->eval_sum, 0, sizeof co->eval_sum);
    co->eval_nodes = 0;
    for (size_t i = 0; i < co->num_nodes; i++) {
        s_node *n = &co->nodes[i];
        n->participant = 0;
        n->answered = 0;
        if (!n->joined)
            continue;
        if (fl_transport_send(co->router, n->rid, n->rid_len, &env) != FL_OK) {
            fl_log_warn("node %s is unreachable (%s); it must join again", n->name,
                        fl_error_last());
            n->joined = 0;
            continue;
        }
        n->participant = 1;
        sent++;
    }
    if (sent < (size_t)co->cfg.min_nodes) {
        fl_log_warn("round %u: only %zu of the %lld nodes needed are reachable; waiting",
                    co->round, sent, (long long)co->cfg.min_nodes);
        co->phase = S_WAIT_NODES;
        co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
        return;
    }
    if (co->eval_round) {
        fl_log_info("round %u: evaluation of model version %u by %zu nodes on their held-out "
                    "records (no training)", co->round, co->rounds_done, sent);
        co->phase = S_IN_ROUND;
        co->deadline = s_now() + (double)co->cfg.round_timeout_ms / 1000.0;
        return;
    }
    if (co->reg && fl_registry_round_started(co->reg, co->round, (uint32_t)sent) != FL_OK)
        fl_log_warn("%s", fl_error_last());
    if (co->sa)
        fl_log_info("round %u/%lld: started with %zu nodes, secure aggregation threshold %u",
                    co->round, (long long)co->cfg.rounds, sent, co->sa_settings.threshold);
    else
        fl_log_info("round %u/%lld: started with %zu nodes (secure aggregation OFF: updates "
                    "are seen in the clear)", co->round, (long long)co->cfg.rounds, sent);
    co->phase = S_IN_ROUND;
    co->deadline = s_now() + (double)co->cfg.round_timeout_ms / 1000.0;
}

static void s_evaluate(s_coord *co)
{
    const fl_dataset *t = co->test;
    double loss = 0.0;
    if (!t)
        return;
    memcpy(fl_model_params(co->mlp), co->model, co->num_params * sizeof(float));
    if (fl_model_evaluate(co->mlp, t->X, t->y, t->n, &loss, co->probs) != FL_OK) {
        fl_log_warn("evaluation failed: %s", fl_error_last());
        return;
    }
    co->last_loss = loss;
    if (co->spec.output_kind == FL_MLP_OUT_SIGMOID_BCE) {
        fl_confusion c;
        fl_metrics_confusion(co->probs, t->y, t->n, 0.5f, &c);
        co->last_acc = fl_metrics_accuracy(&c);
        co->last_precision = fl_metrics_precision(&c);
        co->last_recall = fl_metrics_recall(&c);
        co->last_f1 = fl_metrics_f1(&c);
        if (fl_metrics_roc_auc(co->probs, t->y, t->n, &co->last_auc) != FL_OK)
            co->last_auc = NAN;
    } else {
        co->last_acc = fl_metrics_accuracy_multiclass(co->probs, t->y, t->n,
                                                      fl_model_spec_num_outputs(&co->spec));
        co->last_auc = co->last_precision = co->last_recall = co->last_f1 = NAN;
    }
    co->evaluated = 1;
    co->last_eval_round = co->round;
}

static double s_max_epsilon(const s_coord *co)
{
    double m = 0.0;
    for (size_t i = 0; i < co->num_nodes; i++)
        if (co->nodes[i].epsilon > m)
            m = co->nodes[i].epsilon;
    return m;
}

static void s_print_progress(s_coord *co, size_t contributors)
{
    if (co->rounds_done == 1)
        printf("%6s %6s %10s %9s %7s %9s %8s\n", "round", "nodes", "test_loss", "accuracy",
               "auc", "epsilon", "time_s");
    if (co->evaluated)
        printf("%6u %6zu %10.4f %9.4f %7.4f %9.4f %8.1f\n", co->round, contributors,
               co->last_loss, co->last_acc, co->last_auc, s_max_epsilon(co),
               s_now() - co->started);
    else
        printf("%6u %6zu %10s %9s %7s %9.4f %8.1f\n", co->round, contributors, "-", "-", "-",
               s_max_epsilon(co), s_now() - co->started);
    fflush(stdout);
}

static void s_finish_eval_round(s_coord *co, size_t contributors);

/* A round that cannot complete: the same round number runs again when
 * enough nodes are back, up to max_abandoned times in a row. Nodes that went
 * silent stay joined: a dead connection is noticed when a send fails. */
static void s_abandon_round(s_coord *co, const char *why)
{
    if (co->eval_round) {
        fl_log_warn("evaluation round %u abandoned: %s; the final model stays unevaluated by "
                    "the nodes", co->round, why);
        s_finish_eval_round(co, 0);
        return;
    }
    co->abandoned_in_row++;
    fl_log_warn("round %u abandoned: %s (attempt %d of %lld)", co->round, why,
                co->abandoned_in_row, (long long)co->cfg.max_abandoned + 1);
    if (co->reg && fl_registry_round_abandoned(co->reg, co->round, why) != FL_OK)
        fl_log_warn("%s", fl_error_last());
    fl_secagg_server_free(co->sa);
    co->sa = NULL;
    if (co->abandoned_in_row > co->cfg.max_abandoned) {
        fl_log_error("giving up after %d abandoned rounds in a row: check that the nodes "
                     "are running and can reach this coordinator", co->abandoned_in_row);
        s_stop = -1;
    }
    co->phase = S_WAIT_NODES;
    co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
}

static void s_complete_round(s_coord *co, size_t contributors);

/* The nodes' evaluation totals (co->eval_sum) of model version `version`:
 * consortium-wide metrics, logged and recorded. Totals whose confusion
 * counts do not add up to their example count are refused (a node can
 * send anything; under secure aggregation it cannot be singled out). */
static void s_record_node_eval(s_coord *co, uint32_t version, uint32_t nodes)
{
    uint32_t k = fl_wire_eval_classes(&co->spec);
    uint64_t examples = co->eval_sum[(size_t)k * k + 1], total = 0;
    fl_registry_metrics m;

    if (!co->cfg.node_evaluation || version == 0 || examples == 0)
        return;
    for (size_t i = 0; i < (size_t)k * k; i++)
        total += co->eval_sum[i];
    if (total != examples) {
        fl_log_warn("model version %u: the nodes' evaluation totals are inconsistent (%llu "
                    "confusion counts for %llu examples); not recorded", version,
                    (unsigned long long)total, (unsigned long long)examples);
        return;
    }
    fl_metrics_from_confusion(co->eval_sum, k, &m.accuracy, &m.precision, &m.recall, &m.f1);
    m.loss = (double)co->eval_sum[(size_t)k * k] / FL_WIRE_EVAL_LOSS_SCALE / (double)examples;
    m.auc = NAN;
    co->node_eval_version = version;
    co->node_eval_examples = examples;
    co->node_loss = m.loss;
    co->node_acc = m.accuracy;
    co->node_precision = m.precision;
    co->node_recall = m.recall;
    co->node_f1 = m.f1;
    fl_log_info("model version %u on the nodes' held-out records (%llu examples, %u inputs): "
                "accuracy %.4f, precision %.4f, recall %.4f, F1 %.4f, loss %.4f", version,
                (unsigned long long)examples, nodes, m.accuracy, m.precision, m.recall, m.f1,
                m.loss);
    if (co->reg && fl_registry_evaluation(co->reg, version, &m, examples, nodes) != FL_OK)
        fl_log_warn("%s", fl_error_last());
}

/* Sends every joined node the round's result: the (new) global model,
 * how many inputs it averages and whether training is over. A node that
 * cannot be reached must join again. */
static void s_broadcast_result(s_coord *co, size_t contributors, int final)
{
    Fl__Envelope env;
    Fl__RoundResult rr = FL__ROUND_RESULT__INIT;
    fl_wire_envelope_init(&env, co->cfg.consortium);
    rr.round = co->round;
    rr.participants = (uint32_t)contributors;
    rr.final = final;
    rr.n_params = co->num_params;
    rr.params = co->model;
    rr.model_sha256.len = 32;
    rr.model_sha256.data = co->model_digest;
    env.body_case = FL__ENVELOPE__BODY_ROUND_RESULT;
    env.round_result = &rr;
    for (size_t i = 0; i < co->num_nodes; i++) {
        s_node *n = &co->nodes[i];
        if (n->joined && fl_transport_send(co->router, n->rid, n->rid_len, &env) != FL_OK) {
            fl_log_warn("node %s is unreachable; it must join again", n->name);
            n->joined = 0;
        }
    }
}

/* The evaluation-only round is over (with or without totals): announce the
 * unchanged final model and finish. */
static void s_finish_eval_round(s_coord *co, size_t contributors)
{
    fl_secagg_server_free(co->sa);
    co->sa = NULL;
    co->eval_round = 0;
    co->abandoned_in_row = 0;
    s_broadcast_result(co, contributors, co->cfg.exit_when_done != 0);
    co->phase = S_DONE;
    if (!co->cfg.exit_when_done)
        fl_log_info("all %lld planned rounds completed; waiting for 'flctl start --rounds N'",
                    (long long)co->cfg.rounds);
}

/* Without secure aggregation: the FedAvg of the updates received. */
static void s_finish_round(s_coord *co)
{
    size_t contributors = fl_fedavg_count(co->avg);
    char why[128];

    if (co->eval_round && contributors > 0) {
        s_record_node_eval(co, co->rounds_done, co->eval_nodes);
        s_finish_eval_round(co, contributors);
        return;
    }
    if (contributors < (size_t)co->cfg.min_nodes) {
        snprintf(why, sizeof why, "%zu updates arrived, %lld needed", contributors,
                 (long long)co->cfg.min_nodes);
        s_abandon_round(co, why);
        return;
    }
    if (fl_fedavg_result(co->avg, co->agg) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        s_stop = -1;
        return;
    }
    s_record_node_eval(co, co->round - 1, co->eval_nodes);
    fl_server_opt_step(co->opt, co->model, co->agg);
    s_complete_round(co, contributors);
}

/* The new global model is in co->model: evaluate, save, announce. */
static void s_complete_round(s_coord *co, size_t contributors)
{
    int final, done, eval_next;

    co->abandoned_in_row = 0;
    fl_secagg_server_free(co->sa);
    co->sa = NULL;
    fl_wire_model_digest(co->model, co->num_params, co->model_digest);
    co->rounds_done++;
    s_evaluate(co);
    s_print_progress(co, contributors);
    if (co->reg) {
        /* Durable before announced: the version file, then its record. */
        char path[4096];
        fl_registry_metrics m = {NAN, NAN, NAN, NAN, NAN, NAN};
        if (co->evaluated) {
            m.loss = co->last_loss;
            m.accuracy = co->last_acc;
            m.auc = co->last_auc;
            m.precision = co->last_precision;
            m.recall = co->last_recall;
            m.f1 = co->last_f1;
        }
        char opt_path[4096 + 8];
        fl_registry_model_path(co->reg, co->round, path, sizeof path);
        snprintf(opt_path, sizeof opt_path, "%s.opt", path);
        if (fl_model_file_save(path, &co->spec, co->model, co->num_params) != FL_OK ||
            fl_server_opt_save(co->opt, opt_path) != FL_OK ||
            fl_registry_round_completed(co->reg, co->round, (uint32_t)contributors, &m,
                                        co->model_digest) != FL_OK) {
            fl_log_error("cannot checkpoint round %u, stopping: %s", co->round, fl_error_last());
            s_stop = -1;
            return;
        }
    }
    if (co->cfg.model_out[0] &&
        fl_model_file_save(co->cfg.model_out, &co->spec, co->model, co->num_params) != FL_OK)
        fl_log_warn("could not save the model: %s", fl_error_last());

    /* Nodes are told to exit only if this coordinator exits too; one that
     * stays up for more rounds keeps them connected. */
    done = co->round >= (uint32_t)co->cfg.rounds;
    eval_next = done && co->cfg.node_evaluation;
    final = done && co->cfg.exit_when_done && !eval_next;
    s_broadcast_result(co, contributors, final);
    if (eval_next) {
        /* One more exchange, without training, for the nodes to evaluate
         * the final model on their held-out records. */
        co->eval_round = 1;
        co->round++;
        if (s_count_joined(co) >= (size_t)co->cfg.min_nodes) {
            s_start_round(co);
        } else {
            co->phase = S_WAIT_NODES;
            co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
        }
        return;
    }
    if (done) {
        co->phase = S_DONE;
        co->round++;
        if (!final)
            fl_log_info("all %lld planned rounds completed; waiting for 'flctl start --rounds N'",
                        (long long)co->cfg.rounds);
        return;
    }
    co->round++;
    if (co->paused) {
        fl_log_info("paused by the operator after round %u: no new round until 'flctl resume'",
                    co->round - 1);
        co->phase = S_WAIT_NODES;
        co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
    } else if (s_count_joined(co) >= (size_t)co->cfg.min_nodes) {
        s_start_round(co);
    } else {
        co->phase = S_WAIT_NODES;
        co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
    }
}

/* Secure aggregation: how many messages the current step can still get. */
static uint32_t s_secagg_expected(const s_coord *co)
{
    uint32_t k = 0;
    if (fl_secagg_server_step(co->sa) == FL_SECAGG_ADVERTISE) {
        for (uint32_t i = 0; i < co->n_parties; i++)
            /* A decline ends a party's round; an unreachable one never started it. */
            k += co->party[i]->participant && !co->party[i]->answered;
    } else {
        const uint8_t *alive = fl_secagg_server_alive(co->sa);
        for (uint32_t i = 0; i < co->n_parties; i++)
            k += alive[i] != 0;
    }
    return k;
}

/* Ends the current secure-aggregation step: relays each survivor its input
 * for the next step, or, after the unmasking step, takes the sum. */
static void s_secagg_advance(s_coord *co)
{
    fl_secagg_step step = fl_secagg_server_step(co->sa);
    const uint32_t n = co->n_parties; /* completing the round may start the next */
    uint8_t **out = calloc(n, sizeof *out);
    size_t *lens = calloc(n, sizeof *lens);
    char why[600];
    int rc;

    if (!out || !lens) {
        free(out);
        free(lens);
        s_abandon_round(co, "out of memory");
        return;
    }
    rc = fl_secagg_server_advance(co->sa, out, lens);
    if (rc != FL_OK) {
        snprintf(why, sizeof why, "secure aggregation stopped at step %d: %s", (int)step,
                 fl_error_last());
        s_abandon_round(co, why);
        goto done;
    }
    if (step == FL_SECAGG_MASKED) {
        const uint8_t *alive = fl_secagg_server_alive(co->sa);
        co->sa_u3 = 0;
        for (uint32_t i = 0; i < co->n_parties; i++)
            co->sa_u3 += alive[i] != 0;
    }
    if (step == FL_SECAGG_UNMASK) {
        double *sum = malloc(co->num_params * sizeof *sum);
        uint64_t total = 0;
        if (!sum || fl_secagg_server_result(co->sa, sum, &total) != FL_OK || total == 0) {
            snprintf(why, sizeof why, "secure aggregation produced no sum: %s",
                     sum ? fl_error_last() : "out of memory");
            free(sum);
            s_abandon_round(co, why);
            goto done;
        }
        /* Honest parties keep their weight and counters within the public
         * bounds; a sum beyond u3 times the bound can only come from a
         * party that did not (the masks hide which one). */
        if (total > (uint64_t)co->sa_u3 * co->sa_settings.max_weight) {
            snprintf(why, sizeof why, "the summed weight %llu exceeds %u inputs x max_weight %u: "
                     "a node sent an out-of-range weight", (unsigned long long)total,
                     co->sa_u3, co->sa_settings.max_weight);
            free(sum);
            s_abandon_round(co, why);
            goto done;
        }
        if (co->cfg.node_evaluation &&
            fl_secagg_server_counters(co->sa, co->eval_sum) != FL_OK) {
            fl_log_warn("round %u: no evaluation totals: %s", co->round, fl_error_last());
            memset(co->eval_sum, 0, sizeof co->eval_sum);
        }
        for (uint32_t i = 0; co->cfg.node_evaluation && i < co->sa_settings.num_counters; i++)
            if (co->eval_sum[i] > (uint64_t)co->sa_u3 * co->sa_settings.max_counter) {
                fl_log_warn("round %u: evaluation totals beyond their public bound (a node sent "
                            "out-of-range counters); not recorded", co->round);
                memset(co->eval_sum, 0, sizeof co->eval_sum);
                break;
            }
        if (co->eval_round) {
            free(sum);
            s_record_node_eval(co, co->rounds_done, co->sa_u3);
            s_finish_eval_round(co, co->sa_u3);
            goto done;
        }
        s_record_node_eval(co, co->round - 1, co->sa_u3);
        /* FedAvg from the sums alone: sum of w_u x_u over the total weight. */
        for (size_t i = 0; i < co->num_params; i++)
            co->agg[i] = (float)(sum[i] / (double)total);
        free(sum);
        fl_server_opt_step(co->opt, co->model, co->agg);
        fl_log_info("round %u: secure aggregation complete, %u inputs in the sum", co->round,
                    co->sa_u3);
        s_complete_round(co, co->sa_u3);
        goto done;
    }
    for (uint32_t i = 0; i < co->n_parties; i++) {
        Fl__Envelope env;
        Fl__SecAgg m = FL__SEC_AGG__INIT;
        s_node *nd = co->party[i];
        if (!out[i])
            continue;
        fl_wire_envelope_init(&env, co->cfg.consortium);
        m.round = co->round;
        m.step = (uint32_t)step + 1;
        m.payload.data = out[i];
        m.payload.len = lens[i];
        env.body_case = FL__ENVELOPE__BODY_SECAGG;
        env.secagg = &m;
        if (fl_transport_send(co->router, nd->rid, nd->rid_len, &env) != FL_OK)
            fl_log_warn("round %u: cannot relay step %d to %s: %s", co->round, (int)step + 1,
                        nd->name, fl_error_last());
    }
    co->deadline = s_now() + (double)co->cfg.step_timeout_ms / 1000.0;
done:
    for (uint32_t i = 0; i < n; i++)
        free(out[i]);
    free(out);
    free(lens);
}

static int s_all_answered(const s_coord *co)
{
    for (size_t i = 0; i < co->num_nodes; i++)
        if (co->nodes[i].participant && !co->nodes[i].answered)
            return 0;
    return 1;
}

/* ---------------------------------------------------------- messages */

static void s_on_join(s_coord *co, fl_transport_msg *m, const Fl__Join *j)
{
    s_node *n;
    if (strcmp(j->node_name, m->user_id) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "join names node '%s' but this connection's key is enrolled "
                 "as '%s'", j->node_name, m->user_id);
        s_send_error(co, m->rid, m->rid_len, FL_EAUTH, msg);
        return;
    }
    if (sodium_memcmp(j->schema_digest.data, co->schema_digest, 32) != 0) {
        s_send_error(co, m->rid, m->rid_len, FL_EINVAL,
                     "the node's feature schema differs from the consortium's: use the schema "
                     "file the consortium agreed on");
        fl_log_warn("node %s refused: its feature schema differs from ours", m->user_id);
        return;
    }
    if (j->num_features != fl_model_spec_num_inputs(&co->spec)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the node has %u features but the model takes %zu inputs",
                 j->num_features, fl_model_spec_num_inputs(&co->spec));
        s_send_error(co, m->rid, m->rid_len, FL_EINVAL, msg);
        return;
    }
    n = s_node_by_name(co, m->user_id);
    if (!n) {
        if (co->num_nodes == S_MAX_NODES) {
            s_send_error(co, m->rid, m->rid_len, FL_ESTATE, "the consortium is full");
            return;
        }
        n = &co->nodes[co->num_nodes++];
        memset(n, 0, sizeof *n);
        snprintf(n->name, sizeof n->name, "%s", m->user_id);
    }
    memcpy(n->rid, m->rid, m->rid_len);
    n->rid_len = m->rid_len;
    if (!n->joined)
        fl_log_info("node %s joined (%zu of %lld needed)", n->name, s_count_joined(co) + 1,
                    (long long)co->cfg.min_nodes);
    n->joined = 1;
    if (co->phase == S_IN_ROUND && n->participant && !n->answered) {
        /* A participant that reconnected (a restarted node) has lost the
         * round's start: send it again on the new connection. */
        Fl__Envelope env;
        Fl__RoundStart rs = FL__ROUND_START__INIT;
        Fl__RoundSettings st = FL__ROUND_SETTINGS__INIT;
        Fl__ModelSpec sp = FL__MODEL_SPEC__INIT;
        s_fill_round_start(co, &env, &rs, &st, &sp);
        if (fl_transport_send(co->router, n->rid, n->rid_len, &env) == FL_OK)
            fl_log_info("round %u: node %s reconnected; round start sent again", co->round,
                        n->name);
    }
}

static s_node *s_round_sender(s_coord *co, fl_transport_msg *m, uint32_t round,
                              uint32_t attempt)
{
    s_node *n = s_node_by_name(co, m->user_id);
    char msg[200];
    if (!n || !n->joined) {
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, "send a join message first");
        return NULL;
    }
    if (co->phase == S_IN_ROUND && round == co->round && attempt != co->attempt) {
        /* Late from an abandoned attempt of this round: it must not stand
         * in for the node's answer to the attempt under way. */
        fl_log_info("round %u: dropped a late message from %s for an earlier attempt",
                    round, n->name);
        snprintf(msg, sizeof msg, "message for an earlier attempt of round %u: ignored", round);
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, msg);
        return NULL;
    }
    if (co->phase != S_IN_ROUND || round != co->round || !n->participant) {
        snprintf(msg, sizeof msg, "message for round %u is not expected: the current round is "
                 "%u%s", round, co->round, co->phase == S_IN_ROUND ? "" : " (not running)");
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, msg);
        return NULL;
    }
    if (n->answered) {
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE,
                     "this node has already answered this round; a replay is ignored");
        return NULL;
    }
    return n;
}

static void s_on_update(s_coord *co, fl_transport_msg *m, const Fl__Update *u)
{
    s_node *n;
    if (co->sa) {
        /* With secure aggregation on, an update in the clear is refused: the
         * coordinator must never hold one. */
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO,
                     "this round uses secure aggregation: send masked input, not an update");
        return;
    }
    n = s_round_sender(co, m, u->round, u->attempt);
    if (!n)
        return;
    if (u->n_params != co->num_params) {
        char msg[160];
        snprintf(msg, sizeof msg, "update has %zu parameters, the model has %zu", u->n_params,
                 co->num_params);
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO, msg);
        return;
    }
    if (sodium_memcmp(u->base_sha256.data, co->model_digest, 32) != 0) {
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO,
                     "update was trained from a different model than this round's");
        return;
    }
    if (fl_fedavg_add(co->avg, u->params, u->num_samples) != FL_OK) {
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO, fl_error_last());
        return;
    }
    if (co->cfg.node_evaluation && u->n_eval_counts > 0) {
        size_t want = FL_WIRE_EVAL_COUNTERS(fl_wire_eval_classes(&co->spec));
        if (u->n_eval_counts == want) {
            for (size_t i = 0; i < want; i++)
                co->eval_sum[i] += u->eval_counts[i];
            co->eval_nodes++;
        } else {
            fl_log_warn("round %u: %s sent %zu evaluation totals, this model has %zu; ignored",
                        co->round, n->name, u->n_eval_counts, want);
        }
    }
    n->answered = 1;
    n->epsilon = u->epsilon;
    n->delta = u->delta;
    fl_log_info("round %u: update from %s (epsilon %.3f at delta %.0e)", co->round, n->name,
                u->epsilon, u->delta);
}

static void s_on_decline(s_coord *co, fl_transport_msg *m, const Fl__Decline *d)
{
    s_node *n = s_round_sender(co, m, d->round, co->attempt);
    if (!n)
        return;
    n->answered = 1;
    fl_log_warn("round %u: node %s declined: %s", co->round, n->name, d->reason);
}

static void s_on_secagg(s_coord *co, fl_transport_msg *m, const Fl__SecAgg *sm)
{
    s_node *n = s_node_by_name(co, m->user_id);
    fl_secagg_step step;
    char msg[700];

    if (!n || !n->joined || co->phase != S_IN_ROUND || !co->sa || sm->round != co->round ||
        !n->participant || n->party >= co->n_parties || co->party[n->party] != n) {
        snprintf(msg, sizeof msg, "secure-aggregation message for round %u is not expected: "
                 "the current round is %u%s", sm->round, co->round,
                 co->sa ? "" : " (without secure aggregation)");
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, msg);
        return;
    }
    if (sm->attempt != co->attempt) {
        /* Late from an abandoned attempt of this round (same round, model
         * and parties, so the same step numbers): feeding it to the server
         * would displace the party's message for this attempt. */
        fl_log_info("round %u: dropped a late secure-aggregation message from %s for an "
                    "earlier attempt", co->round, n->name);
        snprintf(msg, sizeof msg, "secure-aggregation message for an earlier attempt of round "
                 "%u: ignored", sm->round);
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, msg);
        return;
    }
    step = fl_secagg_server_step(co->sa);
    if (sm->step != (uint32_t)step) {
        snprintf(msg, sizeof msg, "secure-aggregation message for step %u, the round is at "
                 "step %d", sm->step, (int)step);
        s_send_error(co, m->rid, m->rid_len, FL_ESTATE, msg);
        return;
    }
    if (fl_secagg_server_receive(co->sa, n->party, sm->payload.data, sm->payload.len) != FL_OK) {
        fl_log_warn("round %u: secure-aggregation step %d from %s rejected: %s", co->round,
                    (int)step, n->name, fl_error_last());
        s_send_error(co, m->rid, m->rid_len, fl_error_code() ? fl_error_code() : FL_EPROTO,
                     fl_error_last());
        return;
    }
    if (step == FL_SECAGG_ADVERTISE) {
        n->epsilon = sm->epsilon;
        n->delta = sm->delta;
        fl_log_info("round %u: %s %s secure aggregation (epsilon %.3f at delta %.0e)",
                    co->round, n->name, co->eval_round ? "evaluated and joined" : "trained and joined",
                    sm->epsilon, sm->delta);
    }
}

/* True if the sender's name is no longer enrolled, or its connection was
 * open when its node was revoked. */
static int s_revoked(const s_coord *co, const fl_transport_msg *m)
{
    if (!fl_enroll_identity(co->enroll, m->user_id))
        return 1;
    for (size_t i = 0; i < co->num_revoked_rid; i++)
        if (co->revoked_rid_len[i] == m->rid_len &&
            memcmp(co->revoked_rid[i], m->rid, m->rid_len) == 0)
            return 1;
    return 0;
}

static void s_on_message(s_coord *co, fl_transport_msg *m)
{
    Fl__Envelope *env = NULL;
    const uint8_t *data = zmq_msg_data(&m->payload);
    size_t len = zmq_msg_size(&m->payload);

    if (m->user_id[0] == '\0') {
        /* Only possible if ZAP were bypassed; never trust such a peer. */
        co->bad_frames++;
        return;
    }
    if (s_revoked(co, m)) {
        char msg[200];
        co->bad_frames++;
        snprintf(msg, sizeof msg, "node '%s' has been revoked by the consortium's operator: its "
                 "messages are refused", m->user_id);
        fl_log_warn("refused a message from revoked node %s", m->user_id);
        s_send_error(co, m->rid, m->rid_len, FL_EAUTH, msg);
        return;
    }
    if (m->malformed) {
        co->bad_frames++;
        fl_log_warn("bad message from %s: expected exactly one frame", m->user_id);
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO,
                     "a message must be exactly one frame holding one envelope");
        return;
    }
    if (fl_wire_decode(&env, data, len, co->cfg.consortium) != FL_OK) {
        co->bad_frames++;
        fl_log_warn("bad message from %s: %s", m->user_id, fl_error_last());
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO, fl_error_last());
        return;
    }
    switch (env->body_case) {
    case FL__ENVELOPE__BODY_JOIN: s_on_join(co, m, env->join); break;
    case FL__ENVELOPE__BODY_UPDATE: s_on_update(co, m, env->update); break;
    case FL__ENVELOPE__BODY_DECLINE: s_on_decline(co, m, env->decline); break;
    case FL__ENVELOPE__BODY_SECAGG: s_on_secagg(co, m, env->secagg); break;
    case FL__ENVELOPE__BODY_ERROR:
        fl_log_warn("node %s reports an error: %s", m->user_id, env->error->message);
        break;
    default:
        s_send_error(co, m->rid, m->rid_len, FL_EPROTO,
                     "nodes may send join, update, decline or error; this message type is for "
                     "the coordinator to send");
        break;
    }
    fl_wire_free(env);
}

/* ------------------------------------------------------------- admin */

static const char *s_phase_name(const s_coord *co)
{
    if (co->phase == S_DONE)
        return "done";
    if (co->phase == S_IDLE)
        return "idle";
    if (co->phase == S_IN_ROUND)
        return "round_in_progress";
    return co->paused ? "paused" : "waiting";
}

static const char *s_step_name(fl_secagg_step step)
{
    switch (step) {
    case FL_SECAGG_ADVERTISE: return "advertise_keys";
    case FL_SECAGG_SHARE: return "share_keys";
    case FL_SECAGG_MASKED: return "masked_input";
    case FL_SECAGG_CONSIST: return "consistency";
    case FL_SECAGG_UNMASK: return "unmasking";
    default: return "unknown";
    }
}

static int s_req_uint(const fl_json *req, const char *key, uint32_t lo, uint32_t hi, int required,
                      uint32_t *out)
{
    const fl_json *v = fl_admin_json_get(req, key);
    if (!v)
        return required ? fl_error_set(FL_EINVAL, "the request needs the integer field '%s'", key)
                        : FL_OK;
    if (v->type != FL_JSON_NUMBER || v->number != floor(v->number) || v->number < lo ||
        v->number > hi)
        return fl_error_set(FL_EINVAL, "field '%s' must be an integer in %u..%u", key, lo, hi);
    *out = (uint32_t)v->number;
    return FL_OK;
}

static const char *s_req_str(const fl_json *req, const char *key)
{
    const fl_json *v = fl_admin_json_get(req, key);
    if (!v || v->type != FL_JSON_STRING) {
        fl_error_set(FL_EINVAL, "the request needs the string field '%s'", key);
        return NULL;
    }
    return v->string;
}

static void s_admin_status(s_coord *co, fl_admin_buf *r)
{
    fl_admin_buf_printf(r, ",\"consortium\":");
    fl_admin_buf_str(r, co->cfg.consortium);
    fl_admin_buf_printf(r, ",\"phase\":\"%s\",\"paused\":%s,\"round\":%u,\"rounds_planned\":%lld,"
                        "\"rounds_completed\":%u", s_phase_name(co),
                        co->paused ? "true" : "false", co->round, (long long)co->cfg.rounds,
                        co->rounds_done);
    fl_admin_buf_printf(r, ",\"secagg\":%s,\"secagg_step\":",
                        co->cfg.secagg_enabled ? "true" : "false");
    if (co->phase == S_IN_ROUND && co->sa)
        fl_admin_buf_str(r, s_step_name(fl_secagg_server_step(co->sa)));
    else
        fl_admin_buf_printf(r, "null");
    fl_admin_buf_printf(r, ",\"nodes_online\":%zu,\"nodes_enrolled\":%zu,\"min_nodes\":%lld",
                        s_count_joined(co), fl_enroll_count(co->enroll),
                        (long long)co->cfg.min_nodes);
    fl_admin_buf_printf(r, ",\"last_metrics\":");
    if (co->evaluated) {
        fl_admin_buf_printf(r, "{\"round\":%u,\"loss\":", co->last_eval_round);
        fl_admin_buf_num(r, co->last_loss);
        fl_admin_buf_printf(r, ",\"accuracy\":");
        fl_admin_buf_num(r, co->last_acc);
        fl_admin_buf_printf(r, ",\"auc\":");
        fl_admin_buf_num(r, co->last_auc);
        fl_admin_buf_printf(r, ",\"precision\":");
        fl_admin_buf_num(r, co->last_precision);
        fl_admin_buf_printf(r, ",\"recall\":");
        fl_admin_buf_num(r, co->last_recall);
        fl_admin_buf_printf(r, ",\"f1\":");
        fl_admin_buf_num(r, co->last_f1);
        fl_admin_buf_printf(r, "}");
    } else {
        fl_admin_buf_printf(r, "null");
    }
    /* The nodes' own evaluation (held-out records, summed totals). */
    fl_admin_buf_printf(r, ",\"node_metrics\":");
    if (co->node_eval_version) {
        fl_admin_buf_printf(r, "{\"version\":%u,\"examples\":%llu,\"loss\":",
                            co->node_eval_version, (unsigned long long)co->node_eval_examples);
        fl_admin_buf_num(r, co->node_loss);
        fl_admin_buf_printf(r, ",\"accuracy\":");
        fl_admin_buf_num(r, co->node_acc);
        fl_admin_buf_printf(r, ",\"precision\":");
        fl_admin_buf_num(r, co->node_precision);
        fl_admin_buf_printf(r, ",\"recall\":");
        fl_admin_buf_num(r, co->node_recall);
        fl_admin_buf_printf(r, ",\"f1\":");
        fl_admin_buf_num(r, co->node_f1);
        fl_admin_buf_printf(r, "}");
    } else {
        fl_admin_buf_printf(r, "null");
    }
    fl_admin_buf_printf(r, ",\"history\":%s", co->reg ? "true" : "false");
}

static void s_admin_nodes(s_coord *co, fl_admin_buf *r)
{
    fl_admin_buf_printf(r, ",\"nodes\":[");
    for (size_t i = 0; i < co->num_enrolled; i++) {
        const char *name = co->enrolled[i];
        const uint8_t *pk = fl_enroll_identity(co->enroll, name);
        const s_node *n = s_node_by_name(co, name);
        char z85[FL_IDENTITY_Z85_LEN + 1] = "";
        if (pk)
            zmq_z85_encode(z85, pk, 32);
        fl_admin_buf_printf(r, "%s{\"name\":", i ? "," : "");
        fl_admin_buf_str(r, name);
        fl_admin_buf_printf(r, ",\"identity_key\":");
        fl_admin_buf_str(r, z85);
        fl_admin_buf_printf(r, ",\"online\":%s,\"participant\":%s,\"epsilon\":",
                            n && n->joined ? "true" : "false",
                            n && n->joined && n->participant && co->phase == S_IN_ROUND
                                ? "true" : "false");
        /* A node reports epsilon with a positive delta; none yet is null. */
        fl_admin_buf_num(r, n && n->delta > 0 ? n->epsilon : NAN);
        fl_admin_buf_printf(r, ",\"delta\":");
        fl_admin_buf_num(r, n && n->delta > 0 ? n->delta : NAN);
        fl_admin_buf_printf(r, "}");
    }
    fl_admin_buf_printf(r, "]");
}

static int s_admin_history(s_coord *co, const fl_json *req, int one, fl_admin_buf *r)
{
    uint32_t round = 0, last = FL_ADMIN_MAX_ROWS, count = 0;
    int rc;
    if (one)
        rc = s_req_uint(req, "round", 1, FL_WIRE_MAX_ROUNDS, 1, &round);
    else
        rc = s_req_uint(req, "last", 1, FL_ADMIN_MAX_ROWS, 0, &last);
    if (rc != FL_OK)
        return rc;
    if (!co->reg)
        return fl_error_set(FL_ESTATE, "this coordinator keeps no history: set [coordinator] "
                            "state_dir in its configuration and restart it");
    if ((rc = fl_admin_history(co->reg, round, last, r, &count)) != FL_OK)
        return rc;
    if (one && count == 0)
        return fl_error_set(FL_EINVAL, "round %u has no record yet: the coordinator is at "
                            "round %u (see 'flctl rounds')", round, co->round);
    return FL_OK;
}

static int s_admin_enroll(s_coord *co, const fl_json *req, fl_admin_buf *r)
{
    const char *name = s_req_str(req, "name"), *key;
    int rc;
    if (!name || !(key = s_req_str(req, "key")))
        return fl_error_code();
    if (co->num_enrolled == S_MAX_NODES)
        return fl_error_set(FL_ERANGE, "the consortium already has %d enrolled nodes",
                            S_MAX_NODES);
    if ((rc = fl_enroll_add(co->enroll, name, key)) != FL_OK)
        return rc;
    if ((rc = fl_admin_enroll_file_add(co->cfg.enrollment, name, key)) != FL_OK) {
        /* Not durable, so not done: a restart would forget it. */
        if (fl_enroll_remove(co->enroll, name) != FL_OK)
            fl_log_warn("%s", fl_error_last());
        return fl_error_wrap(rc, "node '%s' is not enrolled: the enrollment file could not be "
                             "updated", name);
    }
    snprintf(co->enrolled[co->num_enrolled++], FL_ADMIN_NAME_CAP, "%s", name);
    fl_zap_set_enroll(co->zap, co->enroll);
    fl_log_info("operator enrolled node %s (identity key %s); %zu nodes enrolled", name, key,
                fl_enroll_count(co->enroll));
    fl_admin_buf_printf(r, ",\"name\":");
    fl_admin_buf_str(r, name);
    fl_admin_buf_printf(r, ",\"identity_key\":");
    fl_admin_buf_str(r, key);
    fl_admin_buf_printf(r, ",\"nodes_enrolled\":%zu", fl_enroll_count(co->enroll));
    return FL_OK;
}

static int s_admin_revoke(s_coord *co, const fl_json *req, fl_admin_buf *r)
{
    const char *name = s_req_str(req, "name");
    s_node *n;
    int was_online = 0, rc;
    if (!name)
        return fl_error_code();
    if (!fl_enroll_identity(co->enroll, name))
        return fl_error_set(FL_EINVAL, "node '%s' is not enrolled: see 'flctl nodes' for the "
                            "enrolled names", name);
    /* Security first: the key loses access in memory before anything can
     * fail on disk. */
    if ((rc = fl_enroll_remove(co->enroll, name)) != FL_OK)
        return rc;
    fl_zap_set_enroll(co->zap, co->enroll);
    for (size_t i = 0; i < co->num_enrolled; i++) {
        if (strcmp(co->enrolled[i], name) == 0) {
            memmove(co->enrolled[i], co->enrolled[i + 1],
                    (co->num_enrolled - i - 1) * sizeof co->enrolled[0]);
            co->num_enrolled--;
            break;
        }
    }
    n = s_node_by_name(co, name);
    if (n) {
        size_t slot = co->num_revoked_rid % 64;
        was_online = n->joined;
        if (n->rid_len) {
            memcpy(co->revoked_rid[slot], n->rid, n->rid_len);
            co->revoked_rid_len[slot] = n->rid_len;
            if (co->num_revoked_rid < 64)
                co->num_revoked_rid++;
        }
        /* Out of the round in progress (its inputs are refused from now on;
         * secure aggregation treats it as a dropout) and of every later one. */
        n->joined = 0;
        n->participant = 0;
        n->answered = 1;
    }
    fl_log_warn("operator revoked node %s: removed from the next round, its messages and new "
                "handshakes are refused", name);
    if ((rc = fl_admin_enroll_file_remove(co->cfg.enrollment, name)) != FL_OK)
        return fl_error_wrap(rc, "node '%s' is revoked in this run, but the enrollment file "
                             "could not be updated: remove its line by hand before the next "
                             "start", name);
    fl_admin_buf_printf(r, ",\"name\":");
    fl_admin_buf_str(r, name);
    fl_admin_buf_printf(r, ",\"was_online\":%s,\"nodes_enrolled\":%zu",
                        was_online ? "true" : "false", fl_enroll_count(co->enroll));
    return FL_OK;
}

/* Settings the operator may change with 'flctl set', by their names in the
 * configuration file and with the same bounds.  The privacy budget is not
 * among them: it lives in each node's configuration. */
typedef enum { S_SET_INT, S_SET_DOUBLE, S_SET_OPTIMIZER } s_set_type;

typedef struct {
    const char *key;
    s_set_type type;
    size_t offset; /* into s_config */
    double lo, hi;
} s_setting;

static const s_setting s_settings[] = {
    {"coordinator.min_nodes", S_SET_INT, offsetof(s_config, min_nodes), 1, S_MAX_NODES},
    {"coordinator.round_timeout_ms", S_SET_INT, offsetof(s_config, round_timeout_ms), 100,
     86400000},
    {"secagg.step_timeout_ms", S_SET_INT, offsetof(s_config, step_timeout_ms), 100, 86400000},
    {"secagg.threshold", S_SET_INT, offsetof(s_config, secagg_threshold), 0, S_MAX_NODES},
    {"training.local_steps", S_SET_INT, offsetof(s_config, local_steps), 1, FL_WIRE_MAX_STEPS},
    {"training.learning_rate", S_SET_DOUBLE, offsetof(s_config, learning_rate), 1e-6, 100},
    {"server.optimizer", S_SET_OPTIMIZER, offsetof(s_config, server_optimizer), 0, 0},
    {"server.learning_rate", S_SET_DOUBLE, offsetof(s_config, server_lr), 1e-6, 100},
    {"server.momentum", S_SET_DOUBLE, offsetof(s_config, server_momentum), 0, 0.999999},
    {"server.beta1", S_SET_DOUBLE, offsetof(s_config, server_beta1), 0, 0.999999},
    {"server.beta2", S_SET_DOUBLE, offsetof(s_config, server_beta2), 0, 0.999999},
    {"server.tau", S_SET_DOUBLE, offsetof(s_config, server_tau), 1e-12, 10},
};

static fl_server_opt_config s_opt_config(const s_config *c, fl_server_kind kind)
{
    fl_server_opt_config oc = {kind, c->server_lr, c->server_momentum, c->server_beta1,
                               c->server_beta2, c->server_tau};
    return oc;
}

static int s_admin_set(s_coord *co, const fl_json *req, fl_admin_buf *r)
{
    const char *key = s_req_str(req, "key"), *value;
    const s_setting *st = NULL;
    s_config next;
    char shown[64];
    fl_server_kind kind = fl_server_opt_settings(co->opt)->kind;
    fl_server_opt_config oc;
    int rc;

    if (!key || !(value = s_req_str(req, "value")))
        return FL_EINVAL;
    for (size_t i = 0; i < sizeof s_settings / sizeof s_settings[0]; i++)
        if (strcmp(s_settings[i].key, key) == 0)
            st = &s_settings[i];
    if (!st)
        return fl_error_set(FL_EINVAL, "'%.80s' is not a setting that can be changed: use one of "
                            "coordinator.min_nodes, coordinator.round_timeout_ms, "
                            "secagg.step_timeout_ms, secagg.threshold, training.local_steps, "
                            "training.learning_rate, server.optimizer, server.learning_rate, "
                            "server.momentum, server.beta1, server.beta2, server.tau", key);
    next = co->cfg;
    if (st->type == S_SET_OPTIMIZER) {
        if ((rc = fl_server_opt_parse(value, &kind)) != FL_OK)
            return rc;
        snprintf(next.server_optimizer, sizeof next.server_optimizer, "%s",
                 fl_server_opt_name(kind));
        snprintf(shown, sizeof shown, "%s", fl_server_opt_name(kind));
    } else {
        char *end;
        double v;
        errno = 0;
        v = strtod(value, &end);
        if (end == value || *end != '\0' || errno || !isfinite(v) || v < st->lo || v > st->hi ||
            (st->type == S_SET_INT && v != floor(v)))
            return fl_error_set(FL_EINVAL, "%s = '%.40s' is not %s in %g..%g", key, value,
                                st->type == S_SET_INT ? "an integer" : "a number", st->lo, st->hi);
        if (st->type == S_SET_INT) {
            *(int64_t *)((char *)&next + st->offset) = (int64_t)v;
            snprintf(shown, sizeof shown, "%lld", (long long)v);
        } else {
            *(double *)((char *)&next + st->offset) = v;
            snprintf(shown, sizeof shown, "%.17g", v);
        }
    }
    oc = s_opt_config(&next, kind);
    /* The optimizer checks its own ranges; on refusal nothing changes. */
    if ((rc = fl_server_opt_configure(co->opt, &oc)) != FL_OK)
        return rc;
    co->cfg = next;
    fl_log_info("operator set %s = %s (from round %u)", key, shown,
                co->phase == S_IN_ROUND ? co->round + 1 : co->round);
    fl_admin_buf_printf(r, ",\"key\":");
    fl_admin_buf_str(r, key);
    fl_admin_buf_printf(r, ",\"value\":");
    fl_admin_buf_str(r, shown);
    fl_admin_buf_printf(r, ",\"applies_from_round\":%u",
                        co->phase == S_IN_ROUND ? co->round + 1 : co->round);
    return FL_OK;
}

static int s_admin_start(s_coord *co, const fl_json *req, fl_admin_buf *r)
{
    uint32_t more = 0;
    int rc;
    if ((rc = s_req_uint(req, "rounds", 1, FL_WIRE_MAX_ROUNDS, 0, &more)) != FL_OK)
        return rc;
    if (co->phase == S_IN_ROUND || co->phase == S_WAIT_NODES)
        return fl_error_set(FL_ESTATE, "training is already running (phase %s, round %u): "
                            "nothing to start; use 'flctl pause' and 'flctl resume' to hold it",
                            s_phase_name(co), co->round);
    if (co->phase == S_DONE && more == 0)
        return fl_error_set(FL_EINVAL, "all %lld planned rounds are completed: say how many more "
                            "to run with --rounds N", (long long)co->cfg.rounds);
    if (more > 0) {
        if ((uint64_t)co->rounds_done + more > FL_WIRE_MAX_ROUNDS)
            return fl_error_set(FL_EINVAL, "%u more rounds after %u would exceed %u rounds", more,
                                co->rounds_done, FL_WIRE_MAX_ROUNDS);
        co->cfg.rounds = (int64_t)co->rounds_done + more;
    }
    co->phase = S_WAIT_NODES;
    co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
    fl_log_info("started by the operator: rounds %u..%lld", co->round, (long long)co->cfg.rounds);
    fl_admin_buf_printf(r, ",\"phase\":\"%s\",\"round\":%u,\"rounds_planned\":%lld",
                        s_phase_name(co), co->round, (long long)co->cfg.rounds);
    return FL_OK;
}

static int s_admin_model(s_coord *co, const fl_json *req, fl_admin_buf *r)
{
    uint32_t version = 0, latest = 0;
    char path[4096], abs[PATH_MAX], hex[65], text[FL_SPEC_TEXT_MAX];
    uint8_t sha[32];
    fl_model_file mf;
    int rc;

    if ((rc = s_req_uint(req, "version", 1, FL_WIRE_MAX_ROUNDS, 0, &version)) != FL_OK)
        return rc;
    if (!co->reg)
        return fl_error_set(FL_ESTATE, "this coordinator keeps no model versions: set "
                            "[coordinator] state_dir in its configuration");
    if ((rc = fl_registry_latest(co->reg, &latest, path, sizeof path, sha)) != FL_OK)
        return rc;
    if (latest == 0)
        return fl_error_set(FL_ESTATE, "no round has completed yet: there is no model to export");
    if (version == 0)
        version = latest;
    if (version > latest)
        return fl_error_set(FL_EINVAL, "model version %u does not exist: the latest is %u",
                            version, latest);
    fl_registry_model_path(co->reg, version, path, sizeof path);
    /* Read back and check, so the reply's digest is that of the file. */
    if ((rc = fl_model_file_load(&mf, path)) != FL_OK)
        return fl_error_wrap(rc, "model version %u", version);
    fl_wire_model_digest(mf.params, mf.num_params, sha);
    rc = fl_model_spec_format(&mf.spec, text, sizeof text);
    fl_model_file_clear(&mf);
    if (rc != FL_OK)
        return rc;
    if (!realpath(path, abs))
        return fl_error_set(FL_EIO, "cannot resolve '%s': %s", path, strerror(errno));
    s_hex(sha, 32, hex);
    fl_admin_buf_printf(r, ",\"version\":%u,\"latest\":%u,\"path\":", version, latest);
    fl_admin_buf_str(r, abs);
    fl_admin_buf_printf(r, ",\"sha256\":\"%s\",\"spec\":", hex);
    fl_admin_buf_str(r, text);
    return FL_OK;
}

static int s_admin_pause_resume(s_coord *co, int pause, fl_admin_buf *r)
{
    if (pause && !co->paused)
        fl_log_info("paused by the operator: %s", co->phase == S_IN_ROUND
                        ? "round in progress finishes, no new round starts"
                        : "no new round starts");
    else if (!pause && co->paused)
        fl_log_info("resumed by the operator at round %u", co->round);
    co->paused = pause;
    if (!pause && co->phase == S_WAIT_NODES)
        co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
    fl_admin_buf_printf(r, ",\"paused\":%s,\"phase\":\"%s\",\"round\":%u",
                        pause ? "true" : "false", s_phase_name(co), co->round);
    return FL_OK;
}

/* The admin commands: name, the request fields each accepts, and what it
 * does (coordinator/fl_admin.h has the wire format). */
typedef enum {
    S_CMD_STATUS, S_CMD_NODES, S_CMD_PAUSE, S_CMD_RESUME, S_CMD_ROUNDS, S_CMD_ROUND,
    S_CMD_ENROLL, S_CMD_REVOKE, S_CMD_SET, S_CMD_START, S_CMD_MODEL
} s_cmd_id;

static const struct {
    const char *name;
    s_cmd_id id;
    const char *fields[2];
    size_t n_fields;
} s_commands[] = {
    {"status", S_CMD_STATUS, {NULL, NULL}, 0},     {"nodes", S_CMD_NODES, {NULL, NULL}, 0},
    {"pause", S_CMD_PAUSE, {NULL, NULL}, 0},       {"resume", S_CMD_RESUME, {NULL, NULL}, 0},
    {"rounds", S_CMD_ROUNDS, {"last", NULL}, 1},   {"round", S_CMD_ROUND, {"round", NULL}, 1},
    {"enroll", S_CMD_ENROLL, {"name", "key"}, 2},  {"revoke", S_CMD_REVOKE, {"name", NULL}, 1},
    {"set", S_CMD_SET, {"key", "value"}, 2},       {"start", S_CMD_START, {"rounds", NULL}, 1},
    {"model", S_CMD_MODEL, {"version", NULL}, 1},
};

static int s_admin_handle(void *arg, const char *cmd, const fl_json *req, fl_admin_buf *r)
{
    s_coord *co = arg;
    int rc;

    for (size_t i = 0; i < sizeof s_commands / sizeof s_commands[0]; i++) {
        if (strcmp(cmd, s_commands[i].name) != 0)
            continue;
        if ((rc = fl_admin_check_fields(req, s_commands[i].fields, s_commands[i].n_fields)) !=
            FL_OK)
            return rc;
        switch (s_commands[i].id) {
        case S_CMD_STATUS: s_admin_status(co, r); return FL_OK;
        case S_CMD_NODES: s_admin_nodes(co, r); return FL_OK;
        case S_CMD_PAUSE: return s_admin_pause_resume(co, 1, r);
        case S_CMD_RESUME: return s_admin_pause_resume(co, 0, r);
        case S_CMD_ROUNDS: return s_admin_history(co, req, 0, r);
        case S_CMD_ROUND: return s_admin_history(co, req, 1, r);
        case S_CMD_ENROLL: return s_admin_enroll(co, req, r);
        case S_CMD_REVOKE: return s_admin_revoke(co, req, r);
        case S_CMD_SET: return s_admin_set(co, req, r);
        case S_CMD_START: return s_admin_start(co, req, r);
        case S_CMD_MODEL: return s_admin_model(co, req, r);
        }
    }
    return fl_error_set(FL_EINVAL, "unknown command '%.64s': use status, nodes, rounds, round, "
                        "enroll, revoke, pause, resume, set, start or model", cmd);
}

/* -------------------------------------------------------------- main */

static int s_write_summary(s_coord *co)
{
    char *buf;
    size_t cap = 8192 + co->num_nodes * 160, off = 0;
    char hex[65];
    int rc;

    if (!co->cfg.summary_json[0])
        return FL_OK;
    buf = malloc(cap);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory");
    s_hex(co->model_digest, 32, hex);
#define S_PUT(...) off += (size_t)snprintf(buf + off, cap - off, __VA_ARGS__)
    S_PUT("{\n  \"consortium\": \"%s\",\n  \"rounds_planned\": %lld,\n  \"rounds_completed\": %u,\n",
          co->cfg.consortium, (long long)co->cfg.rounds, co->rounds_done);
    S_PUT("  \"completed\": %s,\n  \"model_sha256\": \"%s\",\n  \"num_params\": %zu,\n",
          co->phase == S_DONE ? "true" : "false", hex, co->num_params);
    S_PUT("  \"seconds\": %.3f,\n  \"bad_frames\": %llu,\n  \"refused_handshakes\": %llu,\n",
          s_now() - co->started, (unsigned long long)co->bad_frames,
          (unsigned long long)fl_zap_refused(co->zap));
    if (co->evaluated) {
        S_PUT("  \"test\": {\"n\": %zu, \"loss\": %.6f, \"accuracy\": %.6f, ", co->test->n,
              co->last_loss, co->last_acc);
        if (isnan(co->last_auc))
            S_PUT("\"auc\": null, \"precision\": null, \"recall\": null, \"f1\": null},\n");
        else
            S_PUT("\"auc\": %.6f, \"precision\": %.6f, \"recall\": %.6f, \"f1\": %.6f},\n",
                  co->last_auc, co->last_precision, co->last_recall, co->last_f1);
    } else {
        S_PUT("  \"test\": null,\n");
    }
    S_PUT("  \"epsilon_max\": %.6f,\n  \"nodes\": [", s_max_epsilon(co));
    for (size_t i = 0; i < co->num_nodes; i++)
        S_PUT("%s\n    {\"name\": \"%s\", \"epsilon\": %.6f, \"delta\": %.3g}", i ? "," : "",
              co->nodes[i].name, co->nodes[i].epsilon, co->nodes[i].delta);
    S_PUT("\n  ]\n}\n");
#undef S_PUT
    rc = fl_storage_write_atomic(co->cfg.summary_json, buf, off, 0644);
    free(buf);
    return rc;
}

static int s_setup(s_coord *co, const char *config_path)
{
    char bound[256];
    unsigned char seed[32];
    int rc;

    if ((rc = s_load_config(&co->cfg, config_path)) != FL_OK)
        return rc;
    if (co->cfg.log_json[0] && (rc = fl_log_json_open(co->cfg.log_json)) != FL_OK)
        return rc;
    if ((rc = s_parse_layers(co)) != FL_OK)
        return fl_error_wrap(rc, "%s", config_path);
    if (strcmp(co->cfg.data_format, "idx") == 0) {
        /* Images: the nodes' data is described by its pixel count alone. */
        fl_wire_image_digest(fl_model_spec_num_inputs(&co->spec), co->schema_digest);
        if (co->cfg.test_images[0] &&
            (rc = fl_dataset_load_idx(&co->test, co->cfg.test_images, co->cfg.test_labels, 0,
                                      (size_t)co->cfg.test_count)) != FL_OK)
            return rc;
        if (co->test && co->test->d != fl_model_spec_num_inputs(&co->spec))
            return fl_error_set(FL_EINVAL, "%s: test images have %zu pixels, the model takes %zu "
                                "inputs", config_path, co->test->d,
                                fl_model_spec_num_inputs(&co->spec));
    } else if ((rc = fl_schema_load(&co->schema, co->cfg.schema)) != FL_OK) {
        return rc;
    } else {
        fl_schema_digest(co->schema, co->schema_digest);
    }
    if (co->schema && fl_schema_num_features(co->schema) != fl_model_spec_num_inputs(&co->spec))
        return fl_error_set(FL_EINVAL, "%s: the model takes %zu inputs but schema '%s' has %zu "
                            "features: make [model] layers start with %zu", config_path,
                            fl_model_spec_num_inputs(&co->spec), co->cfg.schema,
                            fl_schema_num_features(co->schema),
                            fl_schema_num_features(co->schema));
    if (co->schema && co->cfg.test_data[0] &&
        (rc = fl_dataset_load_csv(&co->test, co->cfg.test_data, co->schema)) != FL_OK)
        return rc;
    if ((rc = fl_model_new(&co->mlp, &co->spec)) != FL_OK)
        return fl_error_wrap(rc, "%s: [model] layers", config_path);
    co->num_params = fl_model_num_params(co->mlp);
    /* The initial model is public: a seeded, reproducible initialisation. */
    crypto_generichash(seed, sizeof seed, (const unsigned char *)&co->cfg.seed,
                       sizeof co->cfg.seed, NULL, 0);
    fl_model_init(co->mlp, seed);
    co->model = malloc(co->num_params * sizeof(float));
    co->probs = malloc(((co->test ? co->test->n : 0) + 1) * fl_model_spec_num_outputs(&co->spec) *
                       sizeof(float));
    if (!co->model || !co->probs)
        return fl_error_set(FL_ENOMEM, "out of memory");
    memcpy(co->model, fl_model_params(co->mlp), co->num_params * sizeof(float));
    fl_wire_model_digest(co->model, co->num_params, co->model_digest);
    co->round = 1;
    if (co->cfg.state_dir[0]) {
        uint32_t version = 0;
        char path[4096];
        uint8_t sha[32];
        if ((rc = fl_registry_open(&co->reg, co->cfg.state_dir)) != FL_OK ||
            (rc = fl_registry_latest(co->reg, &version, path, sizeof path, sha)) != FL_OK)
            return rc;
        if (version > 0) {
            /* Resume from the last completed round's model. */
            fl_model_file mf;
            if ((rc = fl_model_file_load(&mf, path)) != FL_OK)
                return fl_error_wrap(rc, "cannot resume from model version %u", version);
            if (mf.num_params != co->num_params ||
                memcmp(&mf.spec, &co->spec, sizeof mf.spec) != 0) {
                fl_model_file_clear(&mf);
                return fl_error_set(FL_EINVAL, "model version %u in %s has another shape than "
                                    "[model] layers: use a new state_dir for a new model",
                                    version, co->cfg.state_dir);
            }
            memcpy(co->model, mf.params, co->num_params * sizeof(float));
            fl_model_file_clear(&mf);
            fl_wire_model_digest(co->model, co->num_params, co->model_digest);
            if (sodium_memcmp(co->model_digest, sha, 32) != 0)
                return fl_error_set(FL_EPARSE, "model version %u (%s) does not match the SHA-256 "
                                    "recorded for it: the file was changed", version, path);
            co->round = version + 1;
            co->rounds_done = version;
            fl_log_info("resuming from %s: %u rounds completed, model version %u", 
                        co->cfg.state_dir, version, version);
        }
    }
    if ((rc = fl_fedavg_new(&co->avg, co->num_params)) != FL_OK)
        return rc;
    co->party_pks = malloc(S_MAX_NODES * sizeof *co->party_pks);
    co->agg = malloc(co->num_params * sizeof *co->agg);
    if (!co->party_pks || !co->agg)
        return fl_error_set(FL_ENOMEM, "out of memory");
    {
        fl_server_kind kind;
        fl_server_opt_config oc;
        if ((rc = fl_server_opt_parse(co->cfg.server_optimizer, &kind)) != FL_OK)
            return fl_error_wrap(rc, "%s: [server]", config_path);
        oc = s_opt_config(&co->cfg, kind);
        if ((rc = fl_server_opt_new(&co->opt, &oc, co->num_params)) != FL_OK)
            return fl_error_wrap(rc, "%s: [server]", config_path);
    }
    if (co->reg && co->rounds_done > 0) {
        /* The optimizer's momentum continues from the checkpoint it was saved
         * with; another optimizer in the configuration starts from zero. */
        char path[4096 + 8];
        fl_registry_model_path(co->reg, co->rounds_done, path, sizeof path);
        strncat(path, ".opt", sizeof path - strlen(path) - 1);
        rc = fl_server_opt_load(co->opt, path);
        if (rc == FL_OK)
            fl_log_info("server optimizer state restored from %s", path);
        else if (rc == FL_EINVAL || rc == FL_EIO)
            fl_log_warn("server optimizer starts from zero state: %s", fl_error_last());
        else if (rc != FL_OK)
            return rc;
    }
    if ((rc = fl_identity_load(&co->id, co->cfg.key)) != FL_OK)
        return rc;
    if ((rc = fl_enroll_load(&co->enroll, co->cfg.enrollment)) != FL_OK)
        return rc;
    co->enrolled = malloc(S_MAX_NODES * sizeof *co->enrolled);
    if (!co->enrolled)
        return fl_error_set(FL_ENOMEM, "out of memory");
    if ((rc = fl_admin_enroll_names(co->cfg.enrollment, co->enrolled, S_MAX_NODES,
                                    &co->num_enrolled)) != FL_OK)
        return rc;
    co->ctx = zmq_ctx_new();
    if (!co->ctx)
        return fl_error_set(FL_EIO, "cannot create a ZeroMQ context");
    if ((rc = fl_zap_new(&co->zap, co->ctx, co->enroll)) != FL_OK)
        return rc;
    if ((rc = fl_transport_server(&co->router, co->ctx, co->id, co->cfg.listen, bound,
                                  sizeof bound)) != FL_OK)
        return rc;
    /* The operator's channel: next to the state, else next to the config. */
    if (co->cfg.admin[0])
        snprintf(co->admin_path, sizeof co->admin_path, "%s", co->cfg.admin);
    else if (co->cfg.state_dir[0])
        snprintf(co->admin_path, sizeof co->admin_path, "%.1000s/%s", co->cfg.state_dir,
                 FL_ADMIN_SOCKET_NAME);
    else {
        char tmp[FL_CONFIG_STR_MAX];
        snprintf(tmp, sizeof tmp, "%s", config_path);
        snprintf(co->admin_path, sizeof co->admin_path, "%.1000s/%s", dirname(tmp),
                 FL_ADMIN_SOCKET_NAME);
    }
    if ((rc = fl_admin_bind(&co->admin, co->ctx, co->admin_path)) != FL_OK)
        return rc;
    if (co->cfg.endpoint_file[0]) {
        char line[300];
        int n = snprintf(line, sizeof line, "%s\n", bound);
        if ((rc = fl_storage_write_atomic(co->cfg.endpoint_file, line, (size_t)n, 0644)) != FL_OK)
            return rc;
    }
    fl_log_info("consortium %s: listening on %s (CURVE), %zu nodes enrolled, model %zu "
                "parameters, %lld rounds, at least %lld nodes per round, server optimizer %s",
                co->cfg.consortium, bound, fl_enroll_count(co->enroll), co->num_params,
                (long long)co->cfg.rounds, (long long)co->cfg.min_nodes,
                co->cfg.server_optimizer);
    fl_log_info("admin socket ipc://%s (mode 0600; flctl --socket %s)", co->admin_path,
                co->admin_path);
    return FL_OK;
}

static void s_teardown(s_coord *co)
{
    if (co->router) {
        int linger = 2000; /* let the final results reach the nodes */
        zmq_setsockopt(co->router, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(co->router);
    }
    if (co->admin) {
        zmq_close(co->admin); /* LINGER 0: an unanswered operator just times out */
        unlink(co->admin_path);
    }
    fl_zap_free(co->zap);
    fl_log_json_close();
    if (co->ctx)
        zmq_ctx_term(co->ctx);
    fl_enroll_free(co->enroll);
    fl_identity_free(co->id);
    fl_fedavg_free(co->avg);
    fl_registry_free(co->reg);
    fl_server_opt_free(co->opt);
    free(co->agg);
    fl_secagg_server_free(co->sa);
    free(co->party_pks);
    fl_model_free(co->mlp);
    fl_dataset_free(co->test);
    fl_schema_free(co->schema);
    free(co->model);
    free(co->probs);
    free(co->enrolled);
}

static int s_run(const char *config_path)
{
    s_coord *co = calloc(1, sizeof *co);
    int rc, exit_code = 1;

    if (!co) {
        fprintf(stderr, "flcoord: out of memory\n");
        return 1;
    }
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    co->started = s_now();
    rc = s_setup(co, config_path);
    if (rc != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    co->phase = co->cfg.autostart ? S_WAIT_NODES : S_IDLE;
    if (co->round > (uint32_t)co->cfg.rounds) {
        fl_log_info("all %lld rounds are already completed in %s", (long long)co->cfg.rounds,
                    co->cfg.state_dir);
        co->phase = S_DONE;
    }
    co->deadline = s_now() + (double)co->cfg.join_timeout_ms / 1000.0;
    if (co->phase == S_IDLE)
        fl_log_info("idle until the operator runs 'flctl start' (autostart = 0); admin socket %s",
                    co->admin_path);
    else if (co->phase == S_WAIT_NODES)
        fl_log_info("waiting for %lld nodes to join (timeout %.0f s)",
                    (long long)co->cfg.min_nodes, (double)co->cfg.join_timeout_ms / 1000.0);
    while (!s_stop && !(co->phase == S_DONE && co->cfg.exit_when_done)) {
        zmq_pollitem_t items[3] = {{co->router, 0, ZMQ_POLLIN, 0},
                                   {fl_zap_socket(co->zap), 0, ZMQ_POLLIN, 0},
                                   {co->admin, 0, ZMQ_POLLIN, 0}};
        double left = co->deadline - s_now();
        long wait_ms = left <= 0 ? 0 : (long)(left * 1000.0) + 1;
        if (wait_ms > 200)
            wait_ms = 200;
        if (zmq_poll(items, 3, wait_ms) < 0 && errno != EINTR) {
            fl_log_error("poll failed: %s", zmq_strerror(errno));
            break;
        }
        fl_zap_handle(co->zap);
        for (int i = 0; i < 256; i++) { /* bounded burst, then service ZAP again */
            fl_transport_msg m;
            if (fl_transport_recv(co->router, 1, &m) != FL_OK)
                break;
            s_on_message(co, &m);
            fl_transport_msg_close(&m);
        }
        for (int i = 0; i < 16; i++) /* the operator's requests, bounded too */
            if (!fl_admin_serve(co->admin, s_admin_handle, co))
                break;
        if (co->phase == S_WAIT_NODES && co->paused) {
            /* Paused between rounds: neither start a round nor give up. */
        } else if (co->phase == S_WAIT_NODES) {
            if (s_count_joined(co) >= (size_t)co->cfg.min_nodes)
                s_start_round(co);
            else if (s_now() > co->deadline && co->eval_round)
                s_abandon_round(co, "too few nodes joined for the evaluation round");
            else if (s_now() > co->deadline) {
                fl_log_error("only %zu of the %lld nodes needed joined within %.0f s: check the "
                             "nodes' logs, their keys' enrollment and the address they connect "
                             "to", s_count_joined(co), (long long)co->cfg.min_nodes,
                             (double)co->cfg.join_timeout_ms / 1000.0);
                break;
            }
        } else if (co->phase == S_IN_ROUND && co->sa) {
            if (fl_secagg_server_received(co->sa) >= s_secagg_expected(co) ||
                s_now() > co->deadline) {
                if (s_now() > co->deadline)
                    fl_log_warn("round %u: secure-aggregation step %d timed out with %u "
                                "messages; continuing without the silent nodes", co->round,
                                (int)fl_secagg_server_step(co->sa),
                                fl_secagg_server_received(co->sa));
                s_secagg_advance(co);
            }
        } else if (co->phase == S_IN_ROUND) {
            if (s_all_answered(co) || s_now() > co->deadline) {
                if (!s_all_answered(co))
                    fl_log_warn("round %u: timeout after %.0f s, continuing with the updates "
                                "received", co->round, (double)co->cfg.round_timeout_ms / 1000.0);
                s_finish_round(co);
            }
        }
    }
    if (s_stop > 0)
        fl_log_warn("stopped by signal %d after %u completed rounds", (int)s_stop,
                    co->rounds_done);
    if (s_write_summary(co) != FL_OK)
        fl_log_error("%s", fl_error_last());
    if (co->phase == S_DONE) {
        fl_log_info("training complete: %u rounds%s%s", co->rounds_done,
                    co->cfg.model_out[0] ? ", model saved to " : "", co->cfg.model_out);
        exit_code = 0;
    }
done:
    s_teardown(co);
    free(co);
    return exit_code;
}

static int s_init(const char *dir, int force)
{
    fl_identity_public pub;
    if (fl_identity_create_files(dir, "coordinator", "the coordinator", force, &pub) != FL_OK) {
        fprintf(stderr, "flcoord init: %s\n", fl_error_last());
        return 1;
    }
    printf("created %s/coordinator.key (secret, mode 0600)\n"
           "created %s/coordinator.pub (public: give it to every node)\n", dir, dir);
    return 0;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: flcoord init --dir DIR [--force]\n"
            "       flcoord run --config FILE [--verbose]\n"
            "       flcoord --help | --version\n\n"
            "The coordinator of a federated-learning consortium.\n\n"
            "  init   create the coordinator's identity in DIR (coordinator.key,\n"
            "         mode 0600, and coordinator.pub for the nodes)\n"
            "  run    run the training rounds described in the configuration file;\n"
            "         prints one progress line per round on stdout, logs on stderr;\n"
            "         'flctl' watches and steers it through its admin socket\n"
            "         (<state_dir>/admin.sock, mode 0600; see docs/operations.md)\n\n"
            "Exit status: 0 training completed, 1 failure, 2 usage error.\n"
            "See docs/architecture.md and the example in scripts/consortium.sh.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"config", required_argument, 0, 'c'},
                                         {"force", no_argument, 0, 'f'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, 'V'},
                                         {0, 0, 0, 0}};
    const char *cmd, *dir = NULL, *config = NULL;
    int force = 0, verbose = 0, c;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        s_usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("flcoord 0.1.0 (protocol %u)\n", FL_PROTO_VERSION);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        s_usage(stderr);
        return S_EXIT_USAGE;
    }
    cmd = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "hv", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'c': config = optarg; break;
        case 'f': force = 1; break;
        case 'v': verbose = 1; break;
        case 'h': s_usage(stdout); return 0;
        case 'V': printf("flcoord 0.1.0\n"); return 0;
        default: s_usage(stderr); return S_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "flcoord: unexpected argument '%s'\n", argv[optind]);
        return S_EXIT_USAGE;
    }
    fl_log_init("flcoord", verbose ? FL_LOG_DEBUG : FL_LOG_INFO);
    if (strcmp(cmd, "init") == 0) {
        if (!dir) {
            fprintf(stderr, "flcoord init: --dir DIR is required\n");
            return S_EXIT_USAGE;
        }
        return s_init(dir, force);
    }
    if (strcmp(cmd, "run") == 0) {
        if (!config) {
            fprintf(stderr, "flcoord run: --config FILE is required\n");
            return S_EXIT_USAGE;
        }
        return s_run(config);
    }
    fprintf(stderr, "flcoord: unknown command '%s' (try --help)\n", cmd);
    return S_EXIT_USAGE;
}
