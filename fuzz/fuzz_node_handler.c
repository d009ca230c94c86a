/*
 * fuzz_node_handler: a hospital node's message handler (s_on_message in
 * node/flnode.c and what it calls: s_on_round_start with the privacy plan,
 * the ledger charge, DP-SGD training and the held-out evaluation;
 * s_on_secagg through all five secure-aggregation steps; round results and
 * errors) — what a hostile or broken coordinator can reach.
 *
 * The handlers are file-static, so this file compiles flnode.c into itself
 * (its main renamed). fl_transport_send is replaced by a macro before the
 * include with the harness's h_send: the node has no socket here; h_send
 * encodes what the node sends (the encoder must accept all of it) and
 * keeps the node's secure-aggregation messages for the simulated
 * coordinator below.
 *
 * Once per process: a private directory with hospital-1's key
 * (fuzz_identity(1)), a peers file listing hospital-1..3
 * (fuzz_identity(1..3)), a 40-record shard of data/wdbc/wdbc.csv, a node
 * configuration ([data] holdout_fraction 0.25, [privacy] epsilon_max 100,
 * delta 1e-5, a ledger path, [secagg] peers); then the node is built as
 * s_run builds it (s_load_config, s_load_data, fl_identity_load,
 * fl_accountant_parse, fl_enroll_load of the peers, s_holdout_split), without
 * the socket.
 *
 * Per input, the node's round state is reset (privacy plan, last round,
 * budget flag, model, trainer, secure-aggregation client, evaluation) and
 * the ledger is recreated empty: a ledger kept across inputs would make the
 * privacy plan of one input depend on the ones before it (and eventually
 * exhaust the budget for good). Creating it costs one fsync, cheap on the
 * tmpfs scratch directory scripts/fuzz.sh uses; each charge costs another,
 * so an input may make at most H_MAX_CHARGES charges (later RoundStarts and
 * raw frames are skipped).
 *
 * fl_ledger_calibrate_sigma (a bisection over the accountant, some 100 ms)
 * is memoised by h_calibrate for an empty ledger, where its result depends
 * on its arguments alone (successes only); with charges in the ledger it is
 * called as is.
 * Without that the target would run a few inputs a second.
 *
 * Input: records [kind][len lo][len hi][len bytes of payload], kind % 6:
 *   0 raw frame from the coordinator: the payload is the envelope bytes
 *   1 RoundStart built by the harness: model 30-4-1 (sigmoid), parameters
 *     and settings (local steps 1..4, one of 16 sampling rates, clip norm,
 *     learning rate, total rounds) from the payload, secure aggregation on or off,
 *     SecAgg+ or not, evaluation counters or not, evaluation-only or not,
 *     and one of four participant lists (with this node, in another order,
 *     without it, with an unknown name); see h_round_start
 *   2 SecAgg for the node's current round and expected step, the payload
 *     as the secure-aggregation message
 *   3 one step of the simulated coordinator: a real fl_secagg_server and
 *     honest clients for the other participants, fed with what the node
 *     sent; the server's message to the node is delivered, with the
 *     payload XORed into it (payload[0..1]: offset) when there is one
 *   4 RoundResult (payload[0] bit 0: final)
 *   5 Error from the coordinator, the payload as its text
 *
 * Properties: no crash, leak or undefined behaviour; every envelope the
 * node sends encodes.
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

#include "dp/fl_ledger.h"

static int h_send(void *sock, const uint8_t *rid, size_t rid_len, const Fl__Envelope *env);
static int h_calibrate(const fl_ledger *l, fl_accountant_kind kind, double q, uint64_t steps,
                       double target_eps, double delta, double *sigma);

#define fl_transport_send h_send
#define fl_ledger_calibrate_sigma h_calibrate
#define main s_flnode_main_unused
#include "node/flnode.c"
#undef main
#undef fl_ledger_calibrate_sigma
#undef fl_transport_send

#define H_PEERS 3
#define H_ROWS 40
#define H_MAX_CHARGES 6
#define H_DIM 129 /* parameters of 30-4-1 */

static const char *const h_names[4] = {"hospital-1", "hospital-2", "hospital-3", "intruder"};

static s_node *h_nd;
static fuzz_dir h_dir;
static fl_identity *h_ids[H_PEERS];
static char h_ledger_path[700];

/* The simulated coordinator's secure aggregation of the current round. */
typedef struct {
    int active;
    uint32_t round, attempt, n, me;
    fl_secagg_params prm;
    uint8_t pks[H_PEERS][32];
    fl_secagg_server *sv;
    fl_secagg_client *cl[H_PEERS]; /* the other participants; NULL for the node */
    uint8_t *up[5];                 /* what the node sent at each step */
    size_t up_len[5];
    uint8_t *down[H_PEERS]; /* the server's last message to each party */
    size_t down_len[H_PEERS];
    float x[H_DIM];
} h_sim;

static h_sim h_sa;
static uint32_t h_round_no, h_attempt_no;

static void h_sim_clear(void)
{
    fl_secagg_server_free(h_sa.sv);
    for (int i = 0; i < H_PEERS; i++) {
        fl_secagg_client_free(h_sa.cl[i]);
        free(h_sa.down[i]);
    }
    for (int i = 0; i < 5; i++)
        free(h_sa.up[i]);
    memset(&h_sa, 0, sizeof h_sa);
}

static int h_send(void *sock, const uint8_t *rid, size_t rid_len, const Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    (void)sock;
    (void)rid;
    (void)rid_len;
    if (fl_wire_encode(env, &buf, &len) != FL_OK) {
        fprintf(stderr, "fuzz_node_handler: the node built an envelope that does not encode: "
                "%s\n", fl_error_last());
        abort();
    }
    free(buf);
    if (env->body_case == FL__ENVELOPE__BODY_SECAGG && h_sa.active &&
        env->secagg->round == h_sa.round && env->secagg->step < 5) {
        uint32_t s = env->secagg->step;
        free(h_sa.up[s]);
        h_sa.up[s] = malloc(env->secagg->payload.len ? env->secagg->payload.len : 1);
        if (!h_sa.up[s])
            abort();
        memcpy(h_sa.up[s], env->secagg->payload.data, env->secagg->payload.len);
        h_sa.up_len[s] = env->secagg->payload.len;
    }
    return FL_OK;
}

typedef struct {
    int used;
    fl_accountant_kind kind;
    double q, target, delta, sigma;
    uint64_t steps;
} h_memo;

static h_memo h_memos[512];

static int h_calibrate(const fl_ledger *l, fl_accountant_kind kind, double q, uint64_t steps,
                       double target_eps, double delta, double *sigma)
{
    h_memo *m;
    uint64_t h = steps * 0x9e3779b97f4a7c15ull;
    int rc;

    if (fl_ledger_num_charges(l) != 0)
        return fl_ledger_calibrate_sigma(l, kind, q, steps, target_eps, delta, sigma);
    {
        uint64_t b;
        memcpy(&b, &q, sizeof b);
        h ^= b + (uint64_t)kind;
    }
    m = &h_memos[(h ^ (h >> 29)) % (sizeof h_memos / sizeof h_memos[0])];
    if (m->used && m->kind == kind && m->q == q && m->steps == steps &&
        m->target == target_eps && m->delta == delta) {
        *sigma = m->sigma;
        return FL_OK;
    }
    rc = fl_ledger_calibrate_sigma(l, kind, q, steps, target_eps, delta, sigma);
    if (rc != FL_OK)
        return rc; /* failures are not memoised: their message is the real one */
    m->used = 1;
    m->kind = kind;
    m->q = q;
    m->steps = steps;
    m->target = target_eps;
    m->delta = delta;
    m->sigma = *sigma;
    return FL_OK;
}

static void h_free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* One frame from the coordinator through s_on_message, in a buffer of
 * exactly `len` bytes so ASan sees overreads. */
static void h_deliver(const uint8_t *frame, size_t len)
{
    fl_transport_msg m;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    if (len)
        memcpy(copy, frame, len);
    memset(&m, 0, sizeof m);
    if (zmq_msg_init_data(&m.payload, copy, len, h_free_frame, NULL) != 0)
        abort();
    (void)s_on_message(h_nd, &m);
    fl_transport_msg_close(&m);
}

static void h_deliver_env(Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fl_wire_encode(env, &buf, &len) != FL_OK)
        abort();
    h_deliver(buf, len);
    free(buf);
}

/* Sets up the simulated coordinator's side of a secure-aggregation round
 * whose participants are all known peers (else the node declines anyway). */
static void h_sim_start(const Fl__RoundStart *rs)
{
    const Fl__SecAggSettings *sa = rs->secagg;
    int idx[H_PEERS];

    h_sim_clear();
    if (sa->n_participants > H_PEERS)
        return;
    for (size_t i = 0; i < sa->n_participants; i++) {
        int j;
        for (j = 0; j < H_PEERS && strcmp(h_names[j], sa->participants[i]) != 0; j++)
            ;
        if (j == H_PEERS)
            return;
        idx[i] = j;
        memcpy(h_sa.pks[i], fl_identity_public_of(h_ids[j])->sign_pk, 32);
    }
    h_sa.n = (uint32_t)sa->n_participants;
    h_sa.me = UINT32_MAX;
    h_sa.prm.n = h_sa.n;
    h_sa.prm.t = sa->threshold;
    h_sa.prm.k = sa->neighbours;
    h_sa.prm.dim = (uint32_t)rs->n_params;
    h_sa.prm.clip_range = sa->clip_range;
    h_sa.prm.max_weight = sa->max_weight;
    h_sa.prm.num_counters = sa->num_counters;
    h_sa.prm.max_counter = sa->max_counter;
    h_sa.prm.identity_pks = (const uint8_t(*)[32])h_sa.pks;
    fl_wire_secagg_context(h_nd->cfg.consortium, rs, h_sa.prm.context);
    if (fl_secagg_server_new(&h_sa.sv, &h_sa.prm) != FL_OK) {
        h_sim_clear();
        return;
    }
    for (uint32_t i = 0; i < h_sa.n; i++) {
        if (idx[i] == 0) {
            h_sa.me = i;
            continue;
        }
        if (fl_secagg_client_new(&h_sa.cl[i], &h_sa.prm, i, h_ids[idx[i]]) != FL_OK)
            h_sa.cl[i] = NULL;
    }
    memcpy(h_sa.x, rs->params, H_DIM * sizeof(float));
    h_sa.round = rs->round;
    h_sa.attempt = rs->attempt;
    h_sa.active = 1;
}

/* payload: [flags][steps][q][clip][lr][rounds][params...] */
static void h_round_start(const uint8_t *p, size_t len)
{
    static const char *const lists[4][3] = {{"hospital-1", "hospital-2", "hospital-3"},
                                            {"hospital-2", "hospital-1", NULL},
                                            {"hospital-2", "hospital-3", NULL},
                                            {"hospital-1", "hospital-2", "intruder"}};
    Fl__Envelope env;
    Fl__RoundStart rs = FL__ROUND_START__INIT;
    Fl__RoundSettings st = FL__ROUND_SETTINGS__INIT;
    Fl__ModelSpec sp = FL__MODEL_SPEC__INIT;
    Fl__SecAggSettings sa = FL__SEC_AGG_SETTINGS__INIT;
    fl_model_spec spec;
    uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
    Fl__LayerSpec layers[FL_SPEC_MAX_LAYERS];
    Fl__LayerSpec *ptrs[FL_SPEC_MAX_LAYERS];
    float params[H_DIM];
    uint8_t digest[32];
    char *names[3];
    uint8_t b[6] = {0, 1, 25, 16, 25, 3};
    unsigned flags, list;
    size_t n = 0;

    for (size_t i = 0; i < sizeof b && i < len; i++)
        b[i] = p[i];
    flags = b[0];
    if (fl_model_spec_parse(&spec, "30 4 1", FL_MLP_OUT_SIGMOID_BCE) != FL_OK ||
        fl_model_spec_num_params(&spec) != H_DIM)
        abort();
    for (size_t i = 0; i < H_DIM; i++) {
        params[i] = (float)((int)((i * 37) % 17) - 8) / 40.0f;
        if (6 + i < len)
            params[i] += ((float)p[6 + i] - 128.0f) / 64.0f;
    }
    fl_wire_model_digest(params, H_DIM, digest);
    if (!(flags & 64))
        h_round_no++;
    fl_wire_envelope_init(&env, h_nd->cfg.consortium);
    st.local_steps = 1u + b[1] % 4u;
    /* Sixteen sampling rates: the accountant (most of the time per input)
     * caches per rate, and h_calibrate's memo stays small. */
    st.sampling_rate = ((float)(b[2] % 16u) + 1.0f) / 16.0f;
    st.clip_norm = 0.1f + (float)b[3] / 16.0f;
    st.learning_rate = ((float)b[4] + 1.0f) / 256.0f;
    st.total_rounds = h_round_no + b[5] % 8u;
    st.min_nodes = 2;
    st.evaluate_only = (flags & 2) != 0;
    fl_wire_spec_encode(&spec, &sp, sizes, layers, ptrs);
    rs.round = h_round_no;
    rs.attempt = ++h_attempt_no;
    rs.settings = &st;
    rs.spec = &sp;
    rs.n_params = H_DIM;
    rs.params = params;
    rs.model_sha256.len = 32;
    rs.model_sha256.data = digest;
    if (!(flags & 1)) {
        list = (flags >> 4) & 3;
        for (size_t i = 0; i < 3 && lists[list][i]; i++)
            names[n++] = (char *)lists[list][i];
        sa.enabled = 1;
        sa.threshold = (flags & 128) && n == 3 ? 3 : 2;
        sa.neighbours = (flags & 4) && n == 3 ? 2 : 0;
        sa.clip_range = 10.0f;
        sa.max_weight = 10000;
        sa.n_participants = n;
        sa.participants = names;
        if (flags & 8) {
            sa.num_counters = (uint32_t)FL_WIRE_EVAL_COUNTERS(2);
            sa.max_counter = 0xffffffffu / (uint32_t)n;
        }
        rs.secagg = &sa;
        h_sim_start(&rs);
    } else {
        h_sim_clear();
    }
    env.body_case = FL__ENVELOPE__BODY_ROUND_START;
    env.round_start = &rs;
    h_deliver_env(&env);
}

static void h_secagg_env(uint32_t round, uint32_t attempt, uint32_t step, const uint8_t *payload,
                         size_t len)
{
    Fl__Envelope env;
    Fl__SecAgg m = FL__SEC_AGG__INIT;
    fl_wire_envelope_init(&env, h_nd->cfg.consortium);
    m.round = round;
    m.attempt = attempt;
    m.step = step;
    m.payload.data = (uint8_t *)payload;
    m.payload.len = len;
    env.body_case = FL__ENVELOPE__BODY_SECAGG;
    env.secagg = &m;
    h_deliver_env(&env);
}

/* One step of the simulated coordinator (see the opening comment). */
static void h_sim_step(const uint8_t *p, size_t len)
{
    fl_secagg_step step;
    uint8_t *out[H_PEERS] = {NULL, NULL, NULL};
    size_t lens[H_PEERS] = {0, 0, 0};

    if (!h_sa.active)
        return;
    step = fl_secagg_server_step(h_sa.sv);
    if (step > FL_SECAGG_UNMASK) {
        h_sim_clear();
        return;
    }
    /* A refused message counts as the party dropping out, as in flcoord. */
    if (h_sa.me < h_sa.n && h_sa.up[step] &&
        fl_secagg_server_receive(h_sa.sv, h_sa.me, h_sa.up[step], h_sa.up_len[step]) != FL_OK)
        h_sa.me = UINT32_MAX;
    for (uint32_t i = 0; i < h_sa.n; i++) {
        uint8_t *msg = NULL;
        size_t mlen = 0;
        int rc;
        if (!h_sa.cl[i] || (step != FL_SECAGG_ADVERTISE && !h_sa.down[i]))
            continue;
        switch (step) {
        case FL_SECAGG_ADVERTISE: rc = fl_secagg_client_advertise(h_sa.cl[i], &msg, &mlen); break;
        case FL_SECAGG_SHARE:
            rc = fl_secagg_client_share(h_sa.cl[i], h_sa.down[i], h_sa.down_len[i], &msg, &mlen);
            break;
        case FL_SECAGG_MASKED: {
            uint32_t counters[FL_WIRE_EVAL_COUNTERS(2)] = {3, 1, 2, 4, 5000, 10};
            rc = fl_secagg_client_masked(h_sa.cl[i], h_sa.down[i], h_sa.down_len[i], h_sa.x, 10,
                                         counters, NULL, &msg, &mlen);
            break;
        }
        case FL_SECAGG_CONSIST:
            rc = fl_secagg_client_consist(h_sa.cl[i], h_sa.down[i], h_sa.down_len[i], &msg,
                                          &mlen);
            break;
        default:
            rc = fl_secagg_client_unmask(h_sa.cl[i], h_sa.down[i], h_sa.down_len[i], &msg, &mlen);
            break;
        }
        if (rc == FL_OK && fl_secagg_server_receive(h_sa.sv, i, msg, mlen) != FL_OK)
            rc = FL_EPROTO;
        free(msg);
    }
    if (fl_secagg_server_advance(h_sa.sv, out, lens) != FL_OK || step == FL_SECAGG_UNMASK) {
        for (int i = 0; i < H_PEERS; i++)
            free(out[i]);
        h_sim_clear();
        return;
    }
    for (uint32_t i = 0; i < h_sa.n; i++) {
        free(h_sa.down[i]);
        h_sa.down[i] = out[i];
        h_sa.down_len[i] = lens[i];
    }
    if (h_sa.me < h_sa.n && h_sa.down[h_sa.me]) {
        uint8_t *msg = h_sa.down[h_sa.me];
        size_t mlen = h_sa.down_len[h_sa.me];
        if (len > 2 && mlen > 0) {
            /* A corrupted copy: the server's message with the payload's
             * bytes XORed in from the offset the first two choose. */
            uint8_t *bad = malloc(mlen);
            size_t off = ((size_t)p[0] | (size_t)p[1] << 8) % mlen;
            if (!bad)
                abort();
            memcpy(bad, msg, mlen);
            for (size_t i = 2; i < len && off < mlen; i++, off++)
                bad[off] ^= p[i];
            h_secagg_env(h_sa.round, h_sa.attempt, (uint32_t)step + 1, bad, mlen);
            free(bad);
        } else {
            h_secagg_env(h_sa.round, h_sa.attempt, (uint32_t)step + 1, msg, mlen);
        }
    }
}

static void h_round_result(const uint8_t *p, size_t len)
{
    Fl__Envelope env;
    Fl__RoundResult rr = FL__ROUND_RESULT__INIT;
    float params[H_DIM];
    uint8_t digest[32];
    memset(params, 0, sizeof params);
    fl_wire_model_digest(params, H_DIM, digest);
    fl_wire_envelope_init(&env, h_nd->cfg.consortium);
    rr.round = h_round_no;
    rr.participants = len > 1 ? p[1] : 2;
    rr.final = len > 0 && (p[0] & 1);
    rr.n_params = H_DIM;
    rr.params = params;
    rr.model_sha256.len = 32;
    rr.model_sha256.data = digest;
    env.body_case = FL__ENVELOPE__BODY_ROUND_RESULT;
    env.round_result = &rr;
    h_deliver_env(&env);
}

static void h_error(const uint8_t *p, size_t len)
{
    Fl__Envelope env;
    Fl__Error err = FL__ERROR__INIT;
    char text[FL_WIRE_MAX_TEXT + 1];
    size_t n = len < FL_WIRE_MAX_TEXT ? len : FL_WIRE_MAX_TEXT;
    memcpy(text, p, n);
    text[n] = '\0';
    fl_wire_envelope_init(&env, h_nd->cfg.consortium);
    err.code = FL_EPROTO;
    err.message = text;
    err.round = h_round_no;
    env.body_case = FL__ENVELOPE__BODY_ERROR;
    env.error = &err;
    h_deliver_env(&env);
}

static void h_cleanup(void)
{
    fuzz_dir_remove(&h_dir);
}

static void h_write(const char *name, const char *text, char *path, size_t cap)
{
    fuzz_dir_write(&h_dir, name, (const uint8_t *)text, strlen(text), path, cap);
}

/* The header and the first H_ROWS records of the WDBC file. */
static void h_write_shard(void)
{
    char src[700], path[700], line[4096];
    FILE *in, *out;
    int rows = -1;

    snprintf(src, sizeof src, "%s/data/wdbc/wdbc.csv", FL_SOURCE_DIR);
    snprintf(path, sizeof path, "%s/shard.csv", h_dir.path);
    in = fopen(src, "r");
    out = fopen(path, "w");
    if (!in || !out) {
        perror("fuzz_node_handler: the WDBC shard");
        abort();
    }
    while (rows < H_ROWS && fgets(line, sizeof line, in)) {
        fputs(line, out);
        rows++;
    }
    if (fclose(out) != 0)
        abort();
    fclose(in);
}

static void h_setup(void)
{
    char path[700], text[2048], cfg[4096];
    size_t off = 0;
    s_node *nd;

    fl_log_init("hospital-1", getenv("FL_FUZZ_VERBOSE") ? FL_LOG_DEBUG : FL_LOG_ERROR);
    fuzz_dir_new(&h_dir);
    atexit(h_cleanup);
    fuzz_identity_text(1, text, sizeof text);
    h_write("hospital-1.key", text, path, sizeof path);
    fuzz_identity_text(0, text, sizeof text);
    h_write("coordinator.pub", text, path, sizeof path);
    for (int k = 0; k < H_PEERS; k++) {
        h_ids[k] = fuzz_identity((unsigned)k + 1);
        off += (size_t)snprintf(text + off, sizeof text - off, "%s %s\n", h_names[k],
                                fl_identity_public_of(h_ids[k])->sign_z85);
    }
    h_write("peers.txt", text, path, sizeof path);
    h_write_shard();
    snprintf(h_ledger_path, sizeof h_ledger_path, "%s/ledger.jsonl", h_dir.path);
    snprintf(cfg, sizeof cfg,
             "[node]\nname = hospital-1\nconsortium = hospitals\n"
             "coordinator = tcp://127.0.0.1:9\ncoordinator_key = %s/coordinator.pub\n"
             "key = %s/hospital-1.key\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntrain = %s/shard.csv\n"
             "holdout_fraction = 0.25\n"
             "[privacy]\nepsilon_max = 100\ndelta = 1e-5\nledger = %s\n"
             "[secagg]\npeers = %s/peers.txt\n",
             h_dir.path, h_dir.path, FL_SOURCE_DIR, h_dir.path, h_ledger_path, h_dir.path);
    h_write("node.ini", cfg, path, sizeof path);
    nd = calloc(1, sizeof *nd);
    if (!nd)
        abort();
    if (s_load_config(&nd->cfg, path) != FL_OK || s_load_data(nd) != FL_OK ||
        fl_identity_load(&nd->id, nd->cfg.key) != FL_OK ||
        fl_accountant_parse(nd->cfg.accountant, &nd->accountant) != FL_OK ||
        fl_enroll_load(&nd->peers, nd->cfg.peers) != FL_OK || s_holdout_split(nd) != FL_OK) {
        fprintf(stderr, "fuzz_node_handler: setting up the node: %s\n", fl_error_last());
        abort();
    }
    h_nd = nd;
}

static void h_reset(void)
{
    s_node *nd = h_nd;
    int recovered = 0;

    s_stop = 0;
    h_sim_clear();
    h_round_no = 0;
    h_attempt_no = 0;
    fl_secagg_client_free(nd->sa);
    nd->sa = NULL;
    free(nd->sa_pks);
    nd->sa_pks = NULL;
    nd->sa_round = nd->sa_next_step = nd->sa_weight = nd->sa_attempt = 0;
    fl_trainer_free(nd->trainer);
    nd->trainer = NULL;
    fl_model_free(nd->mlp);
    nd->mlp = NULL;
    memset(&nd->spec, 0, sizeof nd->spec);
    nd->planned = 0;
    nd->q = nd->sigma = nd->clip = 0;
    nd->last_round = 0;
    nd->budget_spent = 0;
    memset(nd->eval, 0, sizeof nd->eval);
    memset(nd->eval_sa, 0, sizeof nd->eval_sa);
    nd->n_eval = 0;
    free(nd->hold_probs);
    nd->hold_probs = NULL;
    nd->hold_outputs = 0;
    fl_ledger_free(nd->ledger);
    nd->ledger = NULL;
    if (unlink(h_ledger_path) != 0 && access(h_ledger_path, F_OK) == 0)
        abort();
    if (fl_ledger_open(&nd->ledger, h_ledger_path, nd->id, nd->cfg.name, &recovered) != FL_OK) {
        fprintf(stderr, "fuzz_node_handler: a fresh ledger: %s\n", fl_error_last());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 0;

    fuzz_init();
    if (!h_nd)
        h_setup();
    h_reset();
    while (at + 3 <= size && !s_stop) {
        uint8_t kind = data[at];
        size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        const uint8_t *p = data + at + 3;
        int may_charge = fl_ledger_num_charges(h_nd->ledger) < H_MAX_CHARGES;
        if (len > size - at - 3)
            len = size - at - 3;
        at += 3 + len;
        switch (kind % 6) {
        case 0:
            if (may_charge)
                h_deliver(p, len);
            break;
        case 1:
            if (may_charge)
                h_round_start(p, len);
            break;
        case 2:
            h_secagg_env(h_nd->sa_round, h_nd->sa_attempt, h_nd->sa_next_step, p, len);
            break;
        case 3: h_sim_step(p, len); break;
        case 4: h_round_result(p, len); break;
        default: h_error(p, len); break;
        }
    }
    /* Nothing of this input may outlive it. */
    h_sim_clear();
    fl_secagg_client_free(h_nd->sa);
    h_nd->sa = NULL;
    return 0;
}
