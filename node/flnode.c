/*
 * flnode: a hospital's node daemon.
 *
 *   flnode init --dir DIR --name NAME   create DIR/NAME.key (0600) and NAME.pub
 *   flnode run --config FILE            join the consortium and train
 *   flnode split --in CSV ...           split a CSV into a test set and shards
 *
 * The node keeps its records and its privacy budget to itself.  It loads
 * its CSV through the consortium's public schema, connects to the
 * coordinator over CURVE, and for each round: checks the round against its
 * own epsilon cap (from its own configuration, never from the network),
 * charges the privacy cost, runs E steps of DP-SGD, and sends the resulting
 * parameters.  What leaves the node: the DP-trained parameters, the sample
 * count used as FedAvg weight, and its epsilon so far.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "config/fl_config.h"
#include "dp/fl_accountant.h"
#include "dp/fl_ledger.h"
#include "log/fl_log.h"
#include "nn/fl_dataset.h"
#include "nn/fl_metrics.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model.h"
#include "node/fl_trainer.h"
#include "proto/fl_wire.h"
#include "secagg/fl_secagg.h"
#include "transport/fl_enroll.h"
#include "storage/fl_storage.h"
#include "transport/fl_transport.h"

#define S_EXIT_USAGE 2
#define S_EXIT_REFUSED 3
#define S_EXIT_BUDGET 4

typedef struct {
    char name[FL_CONFIG_STR_MAX];
    char consortium[FL_CONFIG_STR_MAX];
    char coordinator[FL_CONFIG_STR_MAX];
    char coordinator_key[FL_CONFIG_STR_MAX];
    char key[FL_CONFIG_STR_MAX];
    char schema[FL_CONFIG_STR_MAX];
    char format[FL_CONFIG_STR_MAX]; /* csv or idx */
    char data[FL_CONFIG_STR_MAX];
    char images[FL_CONFIG_STR_MAX], labels[FL_CONFIG_STR_MAX];
    int64_t first, count;
    char holdout[FL_CONFIG_STR_MAX];
    double holdout_fraction;
    char ledger[FL_CONFIG_STR_MAX];
    char accountant[FL_CONFIG_STR_MAX];
    char peers[FL_CONFIG_STR_MAX];
    char log_json[FL_CONFIG_STR_MAX];
    int64_t idle_timeout_ms;
    int64_t reserve_rounds;
    double epsilon_max, delta;
} s_config;

typedef struct {
    s_config cfg;
    fl_schema *schema;
    unsigned char schema_digest[32];
    fl_dataset *ds;
    fl_dataset *hold; /* held-out records, or NULL */
    float *hold_probs;     /* hold->n x hold_outputs, reused every round */
    size_t hold_outputs;
    fl_identity *id;
    fl_identity_public server;
    void *ctx, *sock, *monitor;
    fl_model *mlp;
    fl_model_spec spec; /* of mlp */
    fl_trainer *trainer;
    /* Privacy: the ledger holds every charge; the plan is fixed at the
     * first round of a session (see s_plan). */
    fl_ledger *ledger;
    fl_accountant_kind accountant;
    int planned;
    double q, sigma, clip;
    uint32_t last_round;
    int budget_spent;
    /* Secure aggregation of the current round. */
    fl_enroll *peers;
    fl_secagg_client *sa;
    uint32_t sa_round, sa_next_step, sa_weight, sa_attempt;
    uint8_t (*sa_pks)[32];
    /* This round's evaluation of its starting model (FL_WIRE_EVAL_COUNTERS). */
    uint64_t eval[FL_WIRE_EVAL_COUNTERS(FL_WIRE_MAX_CLASSES)];
    uint32_t eval_sa[FL_WIRE_EVAL_COUNTERS(FL_WIRE_MAX_CLASSES)];
    size_t n_eval;
} s_node;

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

static int s_load_config(s_config *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->idle_timeout_ms = 600000;
    c->epsilon_max = -1;
    c->reserve_rounds = 1;
    snprintf(c->accountant, sizeof c->accountant, "rdp");
    fl_config_field f[] = {
        {"node", "name", FL_CONFIG_STRING, c->name, 1, 0, 0, 0},
        {"node", "consortium", FL_CONFIG_STRING, c->consortium, 1, 0, 0, 0},
        {"node", "coordinator", FL_CONFIG_STRING, c->coordinator, 1, 0, 0, 0},
        {"node", "coordinator_key", FL_CONFIG_PATH, c->coordinator_key, 1, 0, 0, 0},
        {"node", "key", FL_CONFIG_PATH, c->key, 1, 0, 0, 0},
        {"node", "idle_timeout_ms", FL_CONFIG_INT, &c->idle_timeout_ms, 0, 1000, 86400000, 0},
        {"node", "log_json", FL_CONFIG_PATH, c->log_json, 0, 0, 0, 0},
        /* csv: records through the consortium's schema; idx: images and
         * labels in MNIST's IDX format, rows first .. first+count-1. */
        {"data", "format", FL_CONFIG_STRING, c->format, 0, 0, 0, 0},
        {"data", "schema", FL_CONFIG_PATH, c->schema, 0, 0, 0, 0},
        {"data", "train", FL_CONFIG_PATH, c->data, 0, 0, 0, 0},
        {"data", "images", FL_CONFIG_PATH, c->images, 0, 0, 0, 0},
        {"data", "labels", FL_CONFIG_PATH, c->labels, 0, 0, 0, 0},
        {"data", "first", FL_CONFIG_INT, &c->first, 0, 0, 1e9, 0},
        {"data", "count", FL_CONFIG_INT, &c->count, 0, 0, 1e9, 0},
        /* Held-out records for evaluating each global model: a CSV of their
         * own, or a fraction of the training file set aside (never trained
         * on). Only totals leave the node, summed by secure aggregation. */
        {"data", "holdout", FL_CONFIG_PATH, c->holdout, 0, 0, 0, 0},
        {"data", "holdout_fraction", FL_CONFIG_DOUBLE, &c->holdout_fraction, 0, 0, 0.9, 0},
        /* The hospital's own budget: set here by its privacy officer, and
         * nothing the coordinator sends can change it. */
        {"privacy", "epsilon_max", FL_CONFIG_DOUBLE, &c->epsilon_max, 1, 1e-3, 100, 0},
        {"privacy", "delta", FL_CONFIG_DOUBLE, &c->delta, 1, 1e-15, 1e-2, 0},
        {"privacy", "ledger", FL_CONFIG_PATH, c->ledger, 1, 0, 0, 0},
        {"privacy", "accountant", FL_CONFIG_STRING, c->accountant, 0, 0, 0, 0},
        {"privacy", "reserve_rounds", FL_CONFIG_INT, &c->reserve_rounds, 0, 0, 1000, 0},
        /* The consortium's identity keys (enrollment-file format), from the
         * consortium, not from the coordinator: secure aggregation checks
         * every peer's signature against them. */
        {"secagg", "peers", FL_CONFIG_PATH, c->peers, 0, 0, 0, 0},
    };
    int rc;
    snprintf(c->format, sizeof c->format, "csv");
    rc = fl_config_load(path, f, sizeof f / sizeof f[0]);
    if (rc != FL_OK)
        return rc;
    if (strcmp(c->format, "csv") == 0) {
        if (!c->schema[0] || !c->data[0])
            return fl_error_set(FL_EPARSE, "%s: [data] needs schema and train for format = csv",
                                path);
    } else if (strcmp(c->format, "idx") == 0) {
        if (!c->images[0] || !c->labels[0])
            return fl_error_set(FL_EPARSE, "%s: [data] needs images and labels (IDX files) for "
                                "format = idx", path);
        if (c->holdout[0])
            return fl_error_set(FL_EPARSE, "%s: [data] holdout is a CSV file: with format = idx "
                                "use holdout_fraction", path);
    } else {
        return fl_error_set(FL_EPARSE, "%s: [data] format = '%s': use csv or idx", path,
                            c->format);
    }
    if (!fl_wire_name_ok(c->name) || !fl_wire_name_ok(c->consortium))
        return fl_error_set(FL_EPARSE, "%s: [node] name and consortium must be 1..%u "
                            "characters from [A-Za-z0-9._-]", path, FL_WIRE_MAX_NAME);
    return FL_OK;
}

static int s_send(s_node *nd, Fl__Envelope *env)
{
    int rc = fl_transport_send(nd->sock, NULL, 0, env);
    if (rc != FL_OK)
        fl_log_warn("send failed: %s", fl_error_last());
    return rc;
}

static void s_send_join(s_node *nd)
{
    Fl__Envelope env;
    Fl__Join j = FL__JOIN__INIT;
    fl_wire_envelope_init(&env, nd->cfg.consortium);
    j.node_name = nd->cfg.name;
    j.schema_digest.len = 32;
    j.schema_digest.data = nd->schema_digest;
    j.num_features = (uint32_t)nd->ds->d;
    env.body_case = FL__ENVELOPE__BODY_JOIN;
    env.join = &j;
    if (s_send(nd, &env) == FL_OK)
        fl_log_info("connected to the coordinator; joined consortium %s", nd->cfg.consortium);
}

static void s_send_decline(s_node *nd, uint32_t round, int code, const char *reason)
{
    Fl__Envelope env;
    Fl__Decline d = FL__DECLINE__INIT;
    fl_wire_envelope_init(&env, nd->cfg.consortium);
    d.round = round;
    d.code = code;
    d.reason = (char *)reason;
    env.body_case = FL__ENVELOPE__BODY_DECLINE;
    env.decline = &d;
    (void)s_send(nd, &env);
}

/* Make sure the model matches the round's spec and our data. */
static int s_prepare_model(s_node *nd, const Fl__ModelSpec *sp)
{
    fl_model_spec spec;
    size_t outputs;
    int rc;

    if ((rc = fl_wire_spec_decode(sp, &spec)) != FL_OK)
        return rc;
    if (nd->mlp && memcmp(&spec, &nd->spec, sizeof spec) == 0)
        return FL_OK;
    outputs = fl_model_spec_num_outputs(&spec);
    if (fl_model_spec_num_inputs(&spec) != nd->ds->d)
        return fl_error_set(FL_EINVAL, "the model takes %zu inputs but our data has %zu features",
                            fl_model_spec_num_inputs(&spec), nd->ds->d);
    if ((spec.output_kind == FL_MLP_OUT_SIGMOID_BCE && nd->ds->num_classes != 2) ||
        (spec.output_kind == FL_MLP_OUT_SOFTMAX_CE && outputs != nd->ds->num_classes))
        return fl_error_set(FL_EINVAL, "the model's output (%zu units) does not fit our %u classes",
                            outputs, nd->ds->num_classes);
    fl_trainer_free(nd->trainer);
    nd->trainer = NULL;
    fl_model_free(nd->mlp);
    nd->mlp = NULL;
    nd->spec = spec;
    return fl_model_new(&nd->mlp, &spec);
}

/*
 * The privacy plan.  At the first round of a training session the node fixes
 * its DP-SGD noise so that its ledger's charges plus the whole announced
 * session (total_rounds x local_steps steps at sampling rate q) cost at most
 * epsilon_max at delta under the configured accountant (RDP of the
 * Poisson-subsampled Gaussian, Mironov, Talwar & Zhang 2019, composed
 * additively over charges, Mironov 2017): sigma is the smallest such value.
 * The plan keeps `reserve_rounds` (default 1) rounds in reserve: a round
 * charged and then lost to a crash is run again, and must still fit.
 * A node restarted in the middle of a session (its last charge is for this
 * consortium with the same q and C) continues with the sigma it recorded.
 * The cap itself is never taken from the network.
 */
static int s_plan(s_node *nd, const Fl__RoundSettings *st)
{
    uint64_t total =
        ((uint64_t)st->total_rounds + (uint64_t)nd->cfg.reserve_rounds) * st->local_steps;
    size_t n = fl_ledger_num_charges(nd->ledger);
    const fl_ledger_charge *last = n ? fl_ledger_charge_at(nd->ledger, n - 1) : NULL;
    int rc;

    if (nd->planned) {
        if (fabs(st->sampling_rate - nd->q) > 1e-7 || fabs(st->clip_norm - nd->clip) > 1e-7)
            return fl_error_set(FL_EINVAL, "round settings changed the sampling rate or clip "
                                "norm (q %g -> %g, C %g -> %g); this node's privacy plan was "
                                "made for the first values", nd->q, (double)st->sampling_rate,
                                nd->clip, (double)st->clip_norm);
        return FL_OK;
    }
    nd->q = st->sampling_rate;
    nd->clip = st->clip_norm;
    if (last && strcmp(last->consortium, nd->cfg.consortium) == 0 && last->q == nd->q &&
        last->clip == nd->clip) {
        nd->sigma = last->sigma;
        nd->planned = 1;
        fl_log_info("privacy plan: continuing the session in the ledger (epsilon %.4f spent "
                    "over %llu steps) with sigma = %.4f, q = %.4g, C = %g; cap %g at delta %g",
                    last->epsilon, (unsigned long long)last->total_steps, nd->sigma, nd->q,
                    nd->clip, nd->cfg.epsilon_max, nd->cfg.delta);
        return FL_OK;
    }
    rc = fl_ledger_calibrate_sigma(nd->ledger, nd->accountant, nd->q, total, nd->cfg.epsilon_max,
                                   nd->cfg.delta, &nd->sigma);
    if (rc != FL_OK)
        /* No noise level fits the session in the cap: the budget is the
         * limit, whether earlier charges or the cap itself make it so. */
        return fl_error_wrap(rc == FL_ERANGE ? FL_EBUDGET : rc,
                             "cannot plan %llu DP-SGD steps within epsilon %g",
                             (unsigned long long)total, nd->cfg.epsilon_max);
    nd->planned = 1;
    fl_log_info("privacy plan: %llu steps ((%u rounds + %lld in reserve) x %u) at q = %.4g, "
                "clip C = %g -> noise multiplier sigma = %.4f for epsilon <= %g at delta = %g "
                "(%s accountant%s)",
                (unsigned long long)total, st->total_rounds, (long long)nd->cfg.reserve_rounds,
                st->local_steps, nd->q, nd->clip,
                nd->sigma, nd->cfg.epsilon_max, nd->cfg.delta, fl_accountant_name(nd->accountant),
                n ? ", including the ledger's earlier charges" : "");
    return FL_OK;
}

/*
 * Secure aggregation (secagg/fl_secagg.h, Bonawitz et al. 2017): the node
 * finds itself in the round's participant list, takes every participant's
 * identity key from its own peers file (never from the coordinator), and
 * binds everything to the round context computed from the RoundStart.
 */
static int s_secagg_prepare(s_node *nd, const Fl__RoundStart *rs)
{
    const Fl__SecAggSettings *sa = rs->secagg;
    fl_secagg_params p;
    uint32_t me = UINT32_MAX;
    int rc;

    fl_secagg_client_free(nd->sa);
    nd->sa = NULL;
    if (!nd->peers)
        return fl_error_set(FL_EINVAL, "the round uses secure aggregation but this node has no "
                            "[secagg] peers file (the consortium's identity keys)");
    free(nd->sa_pks);
    nd->sa_pks = malloc(sa->n_participants * sizeof *nd->sa_pks);
    if (!nd->sa_pks)
        return fl_error_set(FL_ENOMEM, "out of memory");
    for (size_t i = 0; i < sa->n_participants; i++) {
        const uint8_t *pk = fl_enroll_identity(nd->peers, sa->participants[i]);
        if (!pk)
            return fl_error_set(FL_EAUTH, "participant '%s' is not in this node's peers file "
                                "%s: refusing to aggregate with an unknown party",
                                sa->participants[i], nd->cfg.peers);
        memcpy(nd->sa_pks[i], pk, 32);
        if (strcmp(sa->participants[i], nd->cfg.name) == 0)
            me = (uint32_t)i;
    }
    if (me == UINT32_MAX)
        return fl_error_set(FL_EPROTO, "this node is not in the round's participant list");
    if (sodium_memcmp(nd->sa_pks[me], fl_identity_public_of(nd->id)->sign_pk, 32) != 0)
        return fl_error_set(FL_EAUTH, "the peers file lists another identity key for this node "
                            "('%s'): it is out of date", nd->cfg.name);
    memset(&p, 0, sizeof p);
    p.n = (uint32_t)sa->n_participants;
    p.t = sa->threshold;
    p.k = sa->neighbours;
    p.dim = (uint32_t)rs->n_params;
    p.clip_range = sa->clip_range;
    p.max_weight = sa->max_weight;
    p.num_counters = sa->num_counters;
    p.max_counter = sa->max_counter;
    p.identity_pks = (const uint8_t(*)[32])nd->sa_pks;
    fl_wire_secagg_context(nd->cfg.consortium, rs, p.context);
    if ((rc = fl_secagg_client_new(&nd->sa, &p, me, nd->id)) != FL_OK)
        return rc;
    /* The FedAvg weight travels inside the masked vector, bounded publicly. */
    nd->sa_weight = nd->ds->n < sa->max_weight ? (uint32_t)nd->ds->n : sa->max_weight;
    nd->sa_round = rs->round;
    nd->sa_attempt = rs->attempt;
    nd->sa_next_step = 1;
    return FL_OK;
}

static void s_secagg_send(s_node *nd, uint32_t step, uint8_t *payload, size_t len, double eps)
{
    Fl__Envelope env;
    Fl__SecAgg m = FL__SEC_AGG__INIT;
    fl_wire_envelope_init(&env, nd->cfg.consortium);
    m.round = nd->sa_round;
    m.attempt = nd->sa_attempt;
    m.step = step;
    m.payload.data = payload;
    m.payload.len = len;
    m.epsilon = eps;
    m.delta = step == 0 ? nd->cfg.delta : 0.0;
    env.body_case = FL__ENVELOPE__BODY_SECAGG;
    env.secagg = &m;
    (void)s_send(nd, &env);
    free(payload);
}

static void s_secagg_abort(s_node *nd, const char *what)
{
    fl_log_warn("round %u: secure aggregation stopped at step %u: %s: %s", nd->sa_round,
                nd->sa_next_step, what, fl_error_last());
    fl_secagg_client_free(nd->sa);
    nd->sa = NULL;
}

static void s_secagg_advertise(s_node *nd, uint32_t round, double eps)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    (void)round;
    if (fl_secagg_client_advertise(nd->sa, &msg, &len) != FL_OK) {
        s_secagg_abort(nd, "cannot advertise keys");
        return;
    }
    s_secagg_send(nd, 0, msg, len, eps);
}

static void s_on_secagg(s_node *nd, const Fl__SecAgg *m)
{
    uint8_t *msg = NULL;
    size_t len = 0;
    uint32_t clipped = 0;
    int rc;

    if (!nd->sa || m->round != nd->sa_round || m->step != nd->sa_next_step) {
        fl_log_warn("ignoring a secure-aggregation message for round %u step %u (expected round "
                    "%u step %u)", m->round, m->step, nd->sa_round, nd->sa_next_step);
        return;
    }
    switch (m->step) {
    case 1: rc = fl_secagg_client_share(nd->sa, m->payload.data, m->payload.len, &msg, &len); break;
    case 2:
        rc = fl_secagg_client_masked(nd->sa, m->payload.data, m->payload.len,
                                     fl_model_params(nd->mlp), nd->sa_weight,
                                     nd->eval_sa, &clipped, &msg, &len);
        if (rc == FL_OK && clipped)
            fl_log_warn("round %u: %u of %zu parameters were outside the secure-aggregation "
                        "range [-R, R] and were clipped: consider a larger clip_range", m->round,
                        clipped, fl_model_num_params(nd->mlp));
        break;
    case 3:
        rc = fl_secagg_client_consist(nd->sa, m->payload.data, m->payload.len, &msg, &len);
        break;
    case 4:
        rc = fl_secagg_client_unmask(nd->sa, m->payload.data, m->payload.len, &msg, &len);
        break;
    default: rc = fl_error_set(FL_EPROTO, "unknown step %u", m->step); break;
    }
    if (rc != FL_OK) {
        s_secagg_abort(nd, "the coordinator's message was refused");
        return;
    }
    s_secagg_send(nd, m->step, msg, len, 0.0);
    nd->sa_next_step++;
    if (m->step == 4) {
        fl_secagg_client_free(nd->sa);
        nd->sa = NULL;
    }
}

/* Sets aside holdout_fraction of the training records for evaluation. The
 * rows come from a permutation seeded by the node's name and record count:
 * the same rows on every restart, so a held-out record is never trained on
 * in any session. */
static int s_holdout_split(s_node *nd)
{
    fl_dataset *ds = nd->ds, *h;
    size_t n = ds->n, d = ds->d, k = (size_t)floor((double)n * nd->cfg.holdout_fraction), kept = 0;
    unsigned char seed[32], *chosen;
    uint32_t *perm;
    crypto_hash_sha256_state st;

    if (k == 0 || k >= n)
        return fl_error_set(FL_EINVAL, "[data] holdout_fraction = %g of %zu records leaves %zu "
                            "held out: need at least 1 held out and 1 to train on",
                            nd->cfg.holdout_fraction, n, k);
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)"flc holdout v1", 14);
    crypto_hash_sha256_update(&st, (const unsigned char *)nd->cfg.name, strlen(nd->cfg.name));
    {
        uint64_t n64 = n;
        crypto_hash_sha256_update(&st, (const unsigned char *)&n64, sizeof n64);
    }
    crypto_hash_sha256_final(&st, seed);
    perm = malloc(n * sizeof *perm);
    chosen = calloc(n, 1);
    h = calloc(1, sizeof *h);
    if (!perm || !chosen || !h || !(h->X = malloc(k * d * sizeof(float))) ||
        !(h->y = malloc(k * sizeof(int32_t)))) {
        free(perm);
        free(chosen);
        fl_dataset_free(h);
        return fl_error_set(FL_ENOMEM, "out of memory splitting the held-out records");
    }
    randombytes_buf_deterministic(perm, n * sizeof *perm, seed);
    {
        /* The first k steps of a Fisher-Yates shuffle of the row indices,
         * driven by the deterministic words (modulo bias is irrelevant:
         * the choice only has to be fixed, not uniform). */
        uint32_t *idx = malloc(n * sizeof *idx);
        if (!idx) {
            free(perm);
            free(chosen);
            fl_dataset_free(h);
            return fl_error_set(FL_ENOMEM, "out of memory splitting the held-out records");
        }
        for (size_t i = 0; i < n; i++)
            idx[i] = (uint32_t)i;
        for (size_t i = 0; i < k; i++) {
            size_t j = i + perm[i] % (n - i);
            uint32_t t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
            chosen[idx[i]] = 1;
        }
        free(idx);
    }
    for (size_t i = 0, o = 0; i < n; i++) {
        if (chosen[i]) {
            memcpy(h->X + o * d, ds->X + i * d, d * sizeof(float));
            h->y[o++] = ds->y[i];
        } else {
            memmove(ds->X + kept * d, ds->X + i * d, d * sizeof(float));
            ds->y[kept++] = ds->y[i];
        }
    }
    h->n = k;
    h->d = d;
    h->num_classes = ds->num_classes;
    ds->n = kept;
    free(perm);
    free(chosen);
    nd->hold = h;
    return FL_OK;
}

/* Evaluates the round's starting model on the held-out records: K x K
 * confusion counts, the loss sum in 1/FL_WIRE_EVAL_LOSS_SCALE nats and the
 * count (proto/fl_wire.h). Only these totals leave the node. */
static void s_evaluate(s_node *nd, const Fl__RoundStart *rs)
{
    fl_model_spec spec;
    uint32_t k;
    double mean = 0.0, loss;
    size_t outputs;

    nd->n_eval = 0;
    if (!nd->hold || fl_wire_spec_decode(rs->spec, &spec) != FL_OK)
        return;
    k = fl_wire_eval_classes(&spec);
    outputs = fl_model_spec_num_outputs(&spec);
    if (k > FL_WIRE_MAX_CLASSES)
        return;
    if (outputs > nd->hold_outputs) { /* once, or when a wider model arrives */
        free(nd->hold_probs);
        nd->hold_outputs = 0;
        nd->hold_probs = malloc(nd->hold->n * outputs * sizeof(float));
        if (!nd->hold_probs) {
            fl_log_warn("round %u: out of memory evaluating the model", rs->round);
            return;
        }
        nd->hold_outputs = outputs;
    }
    memcpy(fl_model_params(nd->mlp), rs->params, rs->n_params * sizeof(float));
    if (fl_model_evaluate(nd->mlp, nd->hold->X, nd->hold->y, nd->hold->n, &mean,
                        nd->hold_probs) != FL_OK ||
        fl_metrics_confusion_matrix(nd->hold_probs, nd->hold->y, nd->hold->n, k,
                                    spec.output_kind == 1, nd->eval) != FL_OK) {
        fl_log_warn("round %u: evaluation on the held-out records failed: %s", rs->round,
                    fl_error_last());
        return;
    }
    loss = mean * (double)nd->hold->n * FL_WIRE_EVAL_LOSS_SCALE;
    nd->eval[(size_t)k * k] = isfinite(loss) && loss < 9.0e15 ? (uint64_t)llround(loss)
                                                               : (uint64_t)9.0e15;
    nd->eval[(size_t)k * k + 1] = nd->hold->n;
    nd->n_eval = FL_WIRE_EVAL_COUNTERS(k);
}

/* The evaluation as secure-aggregation counters, each within the round's
 * public bound: a count above it cannot be represented, so the node then
 * reports nothing (zeros); the loss sum alone is capped. */
static void s_eval_counters(s_node *nd, uint32_t num, uint32_t max)
{
    memset(nd->eval_sa, 0, sizeof nd->eval_sa);
    if (num == 0 || nd->n_eval != num)
        return;
    for (uint32_t i = 0; i < num; i++) {
        if (i == num - 2) {
            if (nd->eval[i] > max)
                fl_log_warn("held-out loss sum %.1f nats is above the round's counter bound: "
                            "reported as %.1f", (double)nd->eval[i] / FL_WIRE_EVAL_LOSS_SCALE,
                            (double)max / FL_WIRE_EVAL_LOSS_SCALE);
            nd->eval_sa[i] = nd->eval[i] > max ? max : (uint32_t)nd->eval[i];
        } else if (nd->eval[i] > max) {
            fl_log_warn("held-out evaluation not reported: %llu records exceed the round's "
                        "counter bound %u", (unsigned long long)nd->eval[num - 1], max);
            memset(nd->eval_sa, 0, sizeof nd->eval_sa);
            return;
        } else {
            nd->eval_sa[i] = (uint32_t)nd->eval[i];
        }
    }
}

static double s_epsilon_spent(const s_node *nd)
{
    size_t n = fl_ledger_num_charges(nd->ledger);
    return n ? fl_ledger_charge_at(nd->ledger, n - 1)->epsilon : 0.0;
}

/* An evaluation-only round: no training, no privacy charge; the node sends
 * the round's model back unchanged with its evaluation totals. */
static void s_evaluate_only(s_node *nd, const Fl__RoundStart *rs)
{
    int rc;
    memcpy(fl_model_params(nd->mlp), rs->params, rs->n_params * sizeof(float));
    if (rs->secagg && rs->secagg->enabled) {
        if ((rc = s_secagg_prepare(nd, rs)) != FL_OK) {
            fl_log_error("declining evaluation round %u: %s", rs->round, fl_error_last());
            s_send_decline(nd, rs->round, rc, fl_error_last());
            return;
        }
        s_eval_counters(nd, rs->secagg->num_counters, rs->secagg->max_counter);
        s_secagg_advertise(nd, rs->round, s_epsilon_spent(nd));
    } else {
        Fl__Envelope env;
        Fl__Update u = FL__UPDATE__INIT;
        fl_wire_envelope_init(&env, nd->cfg.consortium);
        u.round = rs->round;
        u.attempt = rs->attempt;
        u.num_samples = nd->ds->n;
        u.n_params = rs->n_params;
        u.params = rs->params;
        u.base_sha256 = rs->model_sha256;
        u.epsilon = s_epsilon_spent(nd);
        u.delta = nd->cfg.delta;
        u.n_eval_counts = nd->n_eval;
        u.eval_counts = nd->eval;
        env.body_case = FL__ENVELOPE__BODY_UPDATE;
        env.update = &u;
        (void)s_send(nd, &env);
    }
    fl_log_info("round %u: evaluation only (no training, no privacy charge)%s", rs->round,
                nd->n_eval ? "; held-out totals sent" : "; no held-out records to evaluate");
}

static void s_on_round_start(s_node *nd, const Fl__RoundStart *rs)
{
    const Fl__RoundSettings *st = rs->settings;
    double eps_after = 0.0, mean_batch = 0.0;
    char reason[512];
    int rc;

    if (!(rs->secagg && rs->secagg->enabled)) {
        /* A round without secure aggregation: a client left from an
         * earlier (abandoned) secure round must not answer for this one. */
        fl_secagg_client_free(nd->sa);
        nd->sa = NULL;
    }
    if (nd->budget_spent) {
        s_send_decline(nd, rs->round, FL_EBUDGET, "this hospital's privacy budget is spent");
        return;
    }
    if (rs->round < nd->last_round) {
        fl_log_warn("ignoring a start for round %u: round %u was already trained", rs->round,
                    nd->last_round);
        return;
    }
    if (rs->round == nd->last_round)
        /* The coordinator abandoned the round and runs it again: it is new
         * training with fresh noise, and is charged again. */
        fl_log_info("round %u runs again (the previous attempt was abandoned)", rs->round);
    if (st->evaluate_only) {
        if ((rc = s_prepare_model(nd, rs->spec)) != FL_OK) {
            fl_log_error("declining evaluation round %u: %s", rs->round, fl_error_last());
            s_send_decline(nd, rs->round, rc, fl_error_last());
            return;
        }
        s_evaluate(nd, rs);
        s_evaluate_only(nd, rs);
        return;
    }
    if ((rc = s_prepare_model(nd, rs->spec)) != FL_OK || (rc = s_plan(nd, st)) != FL_OK) {
        fl_log_error("declining round %u: %s", rs->round, fl_error_last());
        s_send_decline(nd, rs->round, rc, fl_error_last());
        if (rc == FL_EBUDGET)
            nd->budget_spent = 1;
        return;
    }
    if (rs->secagg && rs->secagg->enabled && (rc = s_secagg_prepare(nd, rs)) != FL_OK) {
        fl_log_error("declining round %u: %s", rs->round, fl_error_last());
        s_send_decline(nd, rs->round, rc, fl_error_last());
        return;
    }
    /* Evaluate the round's starting model (the last global one) before
     * training changes the parameters. */
    s_evaluate(nd, rs);
    if (nd->sa)
        s_eval_counters(nd, rs->secagg->num_counters, rs->secagg->max_counter);
    /* Budget check BEFORE training: the epsilon the ledger would reach after
     * this round's steps must stay within our own cap. */
    rc = fl_ledger_epsilon_after(nd->ledger, nd->accountant, nd->q, nd->sigma, st->local_steps,
                                 nd->cfg.delta, &eps_after);
    if (rc != FL_OK || eps_after > nd->cfg.epsilon_max * (1.0 + 1e-12)) {
        double spent = 0.0;
        if (fl_ledger_epsilon_after(nd->ledger, nd->accountant, nd->q, nd->sigma, 0,
                                    nd->cfg.delta, &spent) != FL_OK)
            spent = NAN;
        snprintf(reason, sizeof reason, "round %u would raise this hospital's epsilon from %.4f "
                 "to %.4f, above its cap of %g (delta %g); declining and training no more",
                 rs->round, spent, eps_after, nd->cfg.epsilon_max, nd->cfg.delta);
        fl_log_warn("%s", reason);
        nd->budget_spent = 1;
        s_send_decline(nd, rs->round, FL_EBUDGET, reason);
        return;
    }
    /* Charge first, durably: the signed ledger line is fsynced before any
     * training, so the cost counts even if training, sending or the whole
     * node fails afterwards. No charge, no training. */
    {
        fl_ledger_charge c;
        memset(&c, 0, sizeof c);
        /* Both names were validated to at most 64 characters. */
        snprintf(c.node, sizeof c.node, "%.64s", nd->cfg.name);
        snprintf(c.consortium, sizeof c.consortium, "%.64s", nd->cfg.consortium);
        c.round = rs->round;
        c.accountant = nd->accountant;
        c.q = nd->q;
        c.sigma = nd->sigma;
        c.clip = nd->clip;
        c.steps = st->local_steps;
        c.dataset_size = nd->ds->n;
        c.delta = nd->cfg.delta;
        c.epsilon_max = nd->cfg.epsilon_max;
        if ((rc = fl_ledger_append_charge(nd->ledger, &c)) != FL_OK) {
            fl_log_error("round %u: cannot record the privacy charge, not training: %s",
                         rs->round, fl_error_last());
            s_send_decline(nd, rs->round, rc, "the node could not record its privacy charge");
            nd->budget_spent = rc == FL_EBUDGET;
            return;
        }
        eps_after = c.epsilon;
    }
    nd->last_round = rs->round;

    memcpy(fl_model_params(nd->mlp), rs->params, rs->n_params * sizeof(float));
    if (!nd->trainer &&
        (rc = fl_trainer_new_model(&nd->trainer, nd->mlp, nd->ds, nd->q, nd->clip, nd->sigma)) != FL_OK) {
        fl_log_error("round %u: %s", rs->round, fl_error_last());
        s_send_decline(nd, rs->round, rc, fl_error_last());
        return;
    }
    rc = fl_trainer_run(nd->trainer, st->local_steps, st->learning_rate, &mean_batch);
    if (rc != FL_OK) {
        fl_log_error("round %u: training failed: %s", rs->round, fl_error_last());
        s_send_decline(nd, rs->round, rc, "local training failed");
        return;
    }
    if (nd->sa) {
        s_secagg_advertise(nd, rs->round, eps_after);
        fl_log_info("round %u: trained %u DP-SGD steps (mean batch %.1f), epsilon spent %.4f of "
                    "%g (delta %g); update goes out only masked", rs->round, st->local_steps,
                    mean_batch, eps_after, nd->cfg.epsilon_max, nd->cfg.delta);
        return;
    }
    {
        Fl__Envelope env;
        Fl__Update u = FL__UPDATE__INIT;
        fl_wire_envelope_init(&env, nd->cfg.consortium);
        u.round = rs->round;
        u.attempt = rs->attempt;
        u.num_samples = nd->ds->n;
        u.n_params = fl_model_num_params(nd->mlp);
        u.params = fl_model_params(nd->mlp);
        u.base_sha256 = rs->model_sha256;
        u.steps = st->local_steps;
        u.epsilon = eps_after;
        u.delta = nd->cfg.delta;
        u.n_eval_counts = nd->n_eval;
        u.eval_counts = nd->eval;
        env.body_case = FL__ENVELOPE__BODY_UPDATE;
        env.update = &u;
        if (s_send(nd, &env) == FL_OK)
            fl_log_info("round %u: trained %u DP-SGD steps (mean batch %.1f), epsilon spent "
                        "%.4f of %g (delta %g)", rs->round, st->local_steps, mean_batch,
                        eps_after, nd->cfg.epsilon_max, nd->cfg.delta);
    }
}

/* Returns 1 when the node should exit successfully (final round done). */
static int s_on_message(s_node *nd, fl_transport_msg *m)
{
    Fl__Envelope *env = NULL;
    int done = 0;
    if (m->malformed ||
        fl_wire_decode(&env, zmq_msg_data(&m->payload), zmq_msg_size(&m->payload),
                       nd->cfg.consortium) != FL_OK) {
        fl_log_warn("ignoring a bad message from the coordinator: %s",
                    m->malformed ? "wrong number of frames" : fl_error_last());
        return 0;
    }
    switch (env->body_case) {
    case FL__ENVELOPE__BODY_ROUND_START: s_on_round_start(nd, env->round_start); break;
    case FL__ENVELOPE__BODY_SECAGG: s_on_secagg(nd, env->secagg); break;
    case FL__ENVELOPE__BODY_ROUND_RESULT: {
        const Fl__RoundResult *r = env->round_result;
        fl_log_info("round %u complete: %u nodes contributed%s", r->round, r->participants,
                    r->final ? "; training finished" : "");
        done = r->final;
        break;
    }
    case FL__ENVELOPE__BODY_ERROR:
        fl_log_warn("the coordinator reports: %s (%s)", env->error->message,
                    fl_error_name(env->error->code));
        break;
    default: fl_log_warn("ignoring a message type nodes do not handle"); break;
    }
    fl_wire_free(env);
    return done;
}

/* The local records: a CSV through the consortium's schema, or a range of
 * IDX images; and the digest that tells the coordinator which format. */
static int s_load_data(s_node *nd)
{
    int rc;
    if (strcmp(nd->cfg.format, "idx") == 0) {
        if ((rc = fl_dataset_load_idx(&nd->ds, nd->cfg.images, nd->cfg.labels,
                                      (size_t)nd->cfg.first, (size_t)nd->cfg.count)) != FL_OK)
            return rc;
        fl_wire_image_digest(nd->ds->d, nd->schema_digest);
        return FL_OK;
    }
    if ((rc = fl_schema_load(&nd->schema, nd->cfg.schema)) != FL_OK ||
        (rc = fl_dataset_load_csv(&nd->ds, nd->cfg.data, nd->schema)) != FL_OK)
        return rc;
    fl_schema_digest(nd->schema, nd->schema_digest);
    return FL_OK;
}

static int s_run(const char *config_path)
{
    s_node *nd = calloc(1, sizeof *nd);
    char mon_ep[128];
    double last_heard;
    int rc, exit_code = 1;

    if (!nd)
        return 1;
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    if ((rc = s_load_config(&nd->cfg, config_path)) != FL_OK ||
        (rc = s_load_data(nd)) != FL_OK ||
        (rc = fl_identity_load(&nd->id, nd->cfg.key)) != FL_OK ||
        (rc = fl_identity_load_public(&nd->server, nd->cfg.coordinator_key)) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    fl_log_init(nd->cfg.name, FL_LOG_INFO);
    if (nd->cfg.log_json[0] && fl_log_json_open(nd->cfg.log_json) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    if (fl_accountant_parse(nd->cfg.accountant, &nd->accountant) != FL_OK) {
        fl_log_error("%s: [privacy] accountant = '%s': use 'rdp' or 'pld'", config_path,
                     nd->cfg.accountant);
        goto done;
    }
    {
        int recovered = 0;
        double spent = 0.0;
        if (fl_ledger_open(&nd->ledger, nd->cfg.ledger, nd->id, nd->cfg.name, &recovered) !=
            FL_OK) {
            fl_log_error("%s", fl_error_last());
            goto done;
        }
        if (recovered)
            fl_log_warn("ledger %s: line %d was torn by a crash during an append; it is kept "
                        "and followed by a signed recovery record (no update left the node "
                        "for it)", nd->cfg.ledger, recovered);
        if (fl_ledger_epsilon_after(nd->ledger, nd->accountant, 1.0, 1.0, 0, nd->cfg.delta,
                                    &spent) == FL_OK && fl_ledger_num_charges(nd->ledger))
            fl_log_info("ledger %s: %zu charges, epsilon %.4f of %g spent at delta %g",
                        nd->cfg.ledger, fl_ledger_num_charges(nd->ledger), spent,
                        nd->cfg.epsilon_max, nd->cfg.delta);
    }
    if (nd->cfg.peers[0] && fl_enroll_load(&nd->peers, nd->cfg.peers) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    if (nd->cfg.holdout[0] && nd->cfg.holdout_fraction > 0) {
        fl_log_error("%s: [data] holdout and holdout_fraction both given: use one",
                     config_path);
        goto done;
    }
    if (nd->cfg.holdout[0] &&
        fl_dataset_load_csv(&nd->hold, nd->cfg.holdout, nd->schema) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    if (nd->cfg.holdout_fraction > 0 && s_holdout_split(nd) != FL_OK) {
        fl_log_error("%s: %s", config_path, fl_error_last());
        goto done;
    }
    fl_log_info("loaded %zu local records with %zu features%s", nd->ds->n, nd->ds->d,
                nd->ds->clamped ? " (some values clamped to the schema's public ranges)" : "");
    if (nd->hold)
        fl_log_info("%zu held-out records evaluate each global model (only totals are sent)",
                    nd->hold->n);
    nd->ctx = zmq_ctx_new();
    snprintf(mon_ep, sizeof mon_ep, "inproc://flnode-monitor-%ld", (long)getpid());
    if (!nd->ctx ||
        (rc = fl_transport_client(&nd->sock, nd->ctx, nd->id, nd->server.curve_z85,
                                  nd->cfg.coordinator, mon_ep)) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    nd->monitor = zmq_socket(nd->ctx, ZMQ_PAIR);
    if (!nd->monitor || zmq_connect(nd->monitor, mon_ep) != 0) {
        fl_log_error("cannot monitor the connection: %s", zmq_strerror(errno));
        goto done;
    }
    fl_log_info("connecting to %s", nd->cfg.coordinator);
    last_heard = s_now();
    while (!s_stop) {
        zmq_pollitem_t items[2] = {{nd->sock, 0, ZMQ_POLLIN, 0}, {nd->monitor, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 500) < 0 && errno != EINTR)
            break;
        if (items[1].revents & ZMQ_POLLIN) {
            fl_transport_event ev = fl_transport_event_read(nd->monitor);
            if (ev == FL_TRANSPORT_EV_CONNECTED) {
                /* (Re)connected: (re)join, so a restarted coordinator knows us. */
                s_send_join(nd);
                last_heard = s_now();
            } else if (ev == FL_TRANSPORT_EV_REFUSED) {
                fl_log_error("the coordinator refused this node's key (%s, identity key %s): "
                             "ask the coordinator's operator to enroll it", nd->cfg.key,
                             fl_identity_public_of(nd->id)->sign_z85);
                exit_code = S_EXIT_REFUSED;
                goto done;
            } else if (ev == FL_TRANSPORT_EV_DISCONNECTED) {
                fl_log_warn("lost the connection to the coordinator; reconnecting");
            }
        }
        for (int i = 0; i < 16; i++) {
            fl_transport_msg m;
            int fin;
            if (fl_transport_recv(nd->sock, 0, &m) != FL_OK)
                break;
            last_heard = s_now();
            fin = s_on_message(nd, &m);
            fl_transport_msg_close(&m);
            if (fin) {
                exit_code = 0;
                goto done;
            }
            if (nd->budget_spent) {
                /* Declined for budget: train no more. */
                exit_code = S_EXIT_BUDGET;
                goto done;
            }
        }
        if (s_now() - last_heard > (double)nd->cfg.idle_timeout_ms / 1000.0) {
            fl_log_error("no word from the coordinator at %s for %.0f s; giving up",
                         nd->cfg.coordinator, (double)nd->cfg.idle_timeout_ms / 1000.0);
            break;
        }
    }
    if (s_stop)
        fl_log_warn("stopped by signal %d", (int)s_stop);
done:
    if (nd->ledger && fl_ledger_num_charges(nd->ledger)) {
        const fl_ledger_charge *c =
            fl_ledger_charge_at(nd->ledger, fl_ledger_num_charges(nd->ledger) - 1);
        fl_log_info("privacy spent: epsilon %.4f of %g at delta %g over %llu DP-SGD steps "
                    "(ledger %s)", c->epsilon, nd->cfg.epsilon_max, nd->cfg.delta,
                    (unsigned long long)c->total_steps, nd->cfg.ledger);
    }
    if (nd->budget_spent && exit_code == 1)
        exit_code = S_EXIT_BUDGET;
    /* Order matters: stop the monitor while our end of it is still open,
     * or libzmq's I/O thread blocks for ever sending the next event to a
     * PAIR socket that has no peer, and zmq_ctx_term never returns. */
    if (nd->sock)
        zmq_socket_monitor(nd->sock, NULL, 0);
    if (nd->monitor) {
        int zero = 0;
        zmq_setsockopt(nd->monitor, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(nd->monitor);
    }
    if (nd->sock) {
        int linger = 1000;
        zmq_setsockopt(nd->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(nd->sock);
    }
    if (nd->ctx)
        zmq_ctx_term(nd->ctx);
    fl_log_json_close();
    fl_trainer_free(nd->trainer);
    fl_secagg_client_free(nd->sa);
    fl_enroll_free(nd->peers);
    free(nd->sa_pks);
    fl_ledger_free(nd->ledger);
    fl_model_free(nd->mlp);
    fl_identity_free(nd->id);
    fl_dataset_free(nd->ds);
    fl_dataset_free(nd->hold);
    free(nd->hold_probs);
    fl_schema_free(nd->schema);
    free(nd);
    return exit_code;
}

static int s_init(const char *dir, const char *name, int force)
{
    fl_identity_public pub;
    char label[128];

    if (!fl_wire_name_ok(name)) {
        fprintf(stderr, "flnode init: name '%s' must be 1..%u characters from [A-Za-z0-9._-]\n",
                name, FL_WIRE_MAX_NAME);
        return S_EXIT_USAGE;
    }
    snprintf(label, sizeof label, "node '%s'", name);
    if (fl_identity_create_files(dir, name, label, force, &pub) != FL_OK) {
        fprintf(stderr, "flnode init: %s\n", fl_error_last());
        return 1;
    }
    /* The last line is the node's enrollment line for the coordinator. */
    printf("created %s/%s.key (secret, mode 0600)\n"
           "created %s/%s.pub (public: send it to the coordinator's operator)\n%s %s\n",
           dir, name, dir, name, name, pub.sign_z85);
    return 0;
}

static int s_split(const char *in, const char *label, double test_fraction, long shards,
                   long seed, const char *out)
{
    unsigned char s[32];
    long long v = seed;
    if (!in || !label || !out || shards < 1 || shards > 1000 || !(test_fraction >= 0.0) ||
        test_fraction >= 1.0) {
        fprintf(stderr, "flnode split: need --in CSV --label COLUMN --out DIR, --shards in "
                "1..1000 and --test-fraction in [0, 1)\n");
        return S_EXIT_USAGE;
    }
    if (fl_storage_mkdir(out, 0755) != FL_OK) {
        fprintf(stderr, "flnode: %s\n", fl_error_last());
        return 1;
    }
    crypto_generichash(s, sizeof s, (const unsigned char *)&v, sizeof v, NULL, 0);
    if (fl_dataset_split_csv(in, label, test_fraction, (unsigned)shards, s, out) != FL_OK) {
        fprintf(stderr, "flnode split: %s\n", fl_error_last());
        return 1;
    }
    printf("wrote %s/test.csv and %ld shards %s/shard-1.csv..shard-%ld.csv\n", out, shards, out,
           shards);
    return 0;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: flnode init --dir DIR --name NAME [--force]\n"
            "       flnode run --config FILE\n"
            "       flnode split --in CSV --label COLUMN --out DIR [--shards K]\n"
            "                    [--test-fraction F] [--seed S]\n"
            "       flnode --help | --version\n\n"
            "A hospital's node in a federated-learning consortium.\n\n"
            "  init   create the node's identity: DIR/NAME.key (secret, mode 0600) and\n"
            "         DIR/NAME.pub; the last line printed is the enrollment line\n"
            "         ('NAME IDENTITY_KEY') for the coordinator's operator\n"
            "  run    join the consortium in the configuration file and train each round\n"
            "         with DP-SGD within the configured [privacy] epsilon_max and delta\n"
            "  split  split a CSV into DIR/test.csv (default 20%%) and K stratified shards\n"
            "         (default 3), deterministically for a seed (default 1)\n\n"
            "Exit status: 0 success, 1 failure, 2 usage error, 3 key not enrolled,\n"
            "4 privacy budget exhausted.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"name", required_argument, 0, 'n'},
                                         {"config", required_argument, 0, 'c'},
                                         {"in", required_argument, 0, 'i'},
                                         {"label", required_argument, 0, 'l'},
                                         {"out", required_argument, 0, 'o'},
                                         {"shards", required_argument, 0, 'k'},
                                         {"test-fraction", required_argument, 0, 't'},
                                         {"seed", required_argument, 0, 's'},
                                         {"force", no_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *cmd, *dir = NULL, *name = NULL, *config = NULL, *in = NULL, *label = NULL,
                     *out = NULL;
    long shards = 3, seed = 1;
    double test_fraction = 0.2;
    int force = 0, c;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        s_usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("flnode 0.1.0 (protocol %u)\n", FL_PROTO_VERSION);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        s_usage(stderr);
        return S_EXIT_USAGE;
    }
    cmd = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'd': dir = optarg; break;
        case 'n': name = optarg; break;
        case 'c': config = optarg; break;
        case 'i': in = optarg; break;
        case 'l': label = optarg; break;
        case 'o': out = optarg; break;
        case 'f': force = 1; break;
        case 'k': shards = strtol(optarg, &end, 10); break;
        case 's': seed = strtol(optarg, &end, 10); break;
        case 't': test_fraction = strtod(optarg, &end); break;
        case 'h': s_usage(stdout); return 0;
        default: s_usage(stderr); return S_EXIT_USAGE;
        }
        if (end && *end != '\0') {
            fprintf(stderr, "flnode: '%s' is not a number\n", optarg);
            return S_EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "flnode: unexpected argument '%s'\n", argv[optind]);
        return S_EXIT_USAGE;
    }
    fl_log_init("flnode", FL_LOG_INFO);
    if (strcmp(cmd, "init") == 0) {
        if (!dir || !name) {
            fprintf(stderr, "flnode init: --dir DIR and --name NAME are required\n");
            return S_EXIT_USAGE;
        }
        return s_init(dir, name, force);
    }
    if (strcmp(cmd, "run") == 0) {
        if (!config) {
            fprintf(stderr, "flnode run: --config FILE is required\n");
            return S_EXIT_USAGE;
        }
        return s_run(config);
    }
    if (strcmp(cmd, "split") == 0)
        return s_split(in, label, test_fraction, shards, seed, out);
    fprintf(stderr, "flnode: unknown command '%s' (try --help)\n", cmd);
    return S_EXIT_USAGE;
}
