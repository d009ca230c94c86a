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
#include "log/fl_log.h"
#include "nn/fl_dataset.h"
#include "nn/fl_mlp.h"
#include "node/fl_trainer.h"
#include "proto/fl_wire.h"
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
    char data[FL_CONFIG_STR_MAX];
    int64_t idle_timeout_ms;
    double epsilon_max, delta;
} s_config;

typedef struct {
    s_config cfg;
    fl_schema *schema;
    unsigned char schema_digest[32];
    fl_dataset *ds;
    fl_keypair *kp;
    char server_key[FL_KEYS_Z85_LEN + 1];
    void *ctx, *sock, *monitor;
    fl_mlp *mlp;
    uint32_t sizes[FL_WIRE_MAX_LAYERS + 1];
    size_t num_sizes;
    uint32_t output_kind;
    fl_trainer *trainer;
    /* Privacy plan: fixed at the first round (see s_plan). */
    int planned;
    double q, sigma, clip;
    uint64_t steps_charged;
    double epsilon;
    uint32_t last_round;
    int budget_spent;
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
    fl_config_field f[] = {
        {"node", "name", FL_CONFIG_STRING, c->name, 1, 0, 0, 0},
        {"node", "consortium", FL_CONFIG_STRING, c->consortium, 1, 0, 0, 0},
        {"node", "coordinator", FL_CONFIG_STRING, c->coordinator, 1, 0, 0, 0},
        {"node", "coordinator_key", FL_CONFIG_PATH, c->coordinator_key, 1, 0, 0, 0},
        {"node", "key", FL_CONFIG_PATH, c->key, 1, 0, 0, 0},
        {"node", "idle_timeout_ms", FL_CONFIG_INT, &c->idle_timeout_ms, 0, 1000, 86400000, 0},
        {"data", "schema", FL_CONFIG_PATH, c->schema, 1, 0, 0, 0},
        {"data", "train", FL_CONFIG_PATH, c->data, 1, 0, 0, 0},
        /* The hospital's own budget: set here by its privacy officer, and
         * nothing the coordinator sends can change it. */
        {"privacy", "epsilon_max", FL_CONFIG_DOUBLE, &c->epsilon_max, 1, 1e-3, 100, 0},
        {"privacy", "delta", FL_CONFIG_DOUBLE, &c->delta, 1, 1e-15, 1e-2, 0},
    };
    int rc = fl_config_load(path, f, sizeof f / sizeof f[0]);
    if (rc != FL_OK)
        return rc;
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

/* Make sure the MLP matches the round's spec and our schema. */
static int s_prepare_model(s_node *nd, const Fl__ModelSpec *sp)
{
    int same = nd->mlp && sp->n_layer_sizes == nd->num_sizes && sp->output_kind == nd->output_kind &&
               memcmp(sp->layer_sizes, nd->sizes, nd->num_sizes * sizeof(uint32_t)) == 0;
    uint32_t outputs = sp->layer_sizes[sp->n_layer_sizes - 1];
    if (same)
        return FL_OK;
    if (sp->layer_sizes[0] != nd->ds->d)
        return fl_error_set(FL_EINVAL, "the model takes %u inputs but our schema has %zu features",
                            sp->layer_sizes[0], nd->ds->d);
    if ((sp->output_kind == FL_MLP_OUT_SIGMOID_BCE && nd->ds->num_classes != 2) ||
        (sp->output_kind == FL_MLP_OUT_SOFTMAX_CE && outputs != nd->ds->num_classes))
        return fl_error_set(FL_EINVAL, "the model's output (%u units) does not fit our %u classes",
                            outputs, nd->ds->num_classes);
    fl_trainer_free(nd->trainer);
    nd->trainer = NULL;
    fl_mlp_free(nd->mlp);
    nd->mlp = NULL;
    nd->num_sizes = sp->n_layer_sizes;
    memcpy(nd->sizes, sp->layer_sizes, nd->num_sizes * sizeof(uint32_t));
    nd->output_kind = sp->output_kind;
    return fl_mlp_new(&nd->mlp, nd->sizes, nd->num_sizes, (fl_mlp_output)nd->output_kind);
}

/*
 * The privacy plan.  At the first round the node fixes its DP-SGD noise so
 * that the whole announced training (total_rounds x local_steps steps at
 * sampling rate q) costs at most epsilon_max at delta under the RDP
 * accountant of the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang
 * 2019): sigma = the smallest value whose epsilon after all planned steps is
 * within the cap.  The cap itself is never taken from the network.
 */
static int s_plan(s_node *nd, const Fl__RoundSettings *st)
{
    uint64_t total = (uint64_t)st->total_rounds * st->local_steps;
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
    rc = fl_accountant_calibrate_sigma(nd->q, total, nd->cfg.epsilon_max, nd->cfg.delta,
                                       &nd->sigma);
    if (rc != FL_OK)
        return fl_error_wrap(rc, "cannot plan %llu DP-SGD steps within epsilon %g",
                             (unsigned long long)total, nd->cfg.epsilon_max);
    nd->planned = 1;
    fl_log_info("privacy plan: %llu steps (%u rounds x %u) at q = %.4g, clip C = %g -> noise "
                "multiplier sigma = %.4f for epsilon <= %g at delta = %g",
                (unsigned long long)total, st->total_rounds, st->local_steps, nd->q, nd->clip,
                nd->sigma, nd->cfg.epsilon_max, nd->cfg.delta);
    return FL_OK;
}

static void s_on_round_start(s_node *nd, const Fl__RoundStart *rs)
{
    const Fl__RoundSettings *st = rs->settings;
    double eps_after = 0.0, mean_batch = 0.0;
    char reason[512];
    int rc;

    if (nd->budget_spent) {
        s_send_decline(nd, rs->round, FL_EBUDGET, "this hospital's privacy budget is spent");
        return;
    }
    if (rs->round <= nd->last_round) {
        fl_log_warn("ignoring a start for round %u: round %u was already trained", rs->round,
                    nd->last_round);
        return;
    }
    if ((rc = s_prepare_model(nd, rs->spec)) != FL_OK || (rc = s_plan(nd, st)) != FL_OK) {
        fl_log_error("declining round %u: %s", rs->round, fl_error_last());
        s_send_decline(nd, rs->round, rc, fl_error_last());
        return;
    }
    /* Budget check BEFORE training: the epsilon we would reach after this
     * round's steps must stay within our own cap. */
    rc = fl_accountant_epsilon(nd->q, nd->sigma, nd->steps_charged + st->local_steps,
                               nd->cfg.delta, &eps_after, NULL);
    if (rc != FL_OK || eps_after > nd->cfg.epsilon_max * (1.0 + 1e-9)) {
        snprintf(reason, sizeof reason, "round %u would raise this hospital's epsilon from %.4f "
                 "to %.4f, above its cap of %g (delta %g); declining and training no more",
                 rs->round, nd->epsilon, eps_after, nd->cfg.epsilon_max, nd->cfg.delta);
        fl_log_warn("%s", reason);
        nd->budget_spent = 1;
        s_send_decline(nd, rs->round, FL_EBUDGET, reason);
        return;
    }
    /* Charge first: the cost counts even if training or sending fails.
     * (The durable, signed ledger replaces this in-memory charge.) */
    nd->steps_charged += st->local_steps;
    nd->epsilon = eps_after;
    nd->last_round = rs->round;

    memcpy(fl_mlp_params(nd->mlp), rs->params, rs->n_params * sizeof(float));
    if (!nd->trainer &&
        (rc = fl_trainer_new(&nd->trainer, nd->mlp, nd->ds, nd->q, nd->clip, nd->sigma)) != FL_OK) {
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
    {
        Fl__Envelope env;
        Fl__Update u = FL__UPDATE__INIT;
        fl_wire_envelope_init(&env, nd->cfg.consortium);
        u.round = rs->round;
        u.num_samples = nd->ds->n;
        u.n_params = fl_mlp_num_params(nd->mlp);
        u.params = fl_mlp_params(nd->mlp);
        u.base_sha256 = rs->model_sha256;
        u.steps = st->local_steps;
        u.epsilon = nd->epsilon;
        u.delta = nd->cfg.delta;
        env.body_case = FL__ENVELOPE__BODY_UPDATE;
        env.update = &u;
        if (s_send(nd, &env) == FL_OK)
            fl_log_info("round %u: trained %u DP-SGD steps (mean batch %.1f), epsilon spent "
                        "%.4f of %g (delta %g)", rs->round, st->local_steps, mean_batch,
                        nd->epsilon, nd->cfg.epsilon_max, nd->cfg.delta);
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
        (rc = fl_schema_load(&nd->schema, nd->cfg.schema)) != FL_OK ||
        (rc = fl_dataset_load_csv(&nd->ds, nd->cfg.data, nd->schema)) != FL_OK ||
        (rc = fl_keys_load(&nd->kp, nd->cfg.key)) != FL_OK ||
        (rc = fl_keys_load_public(nd->server_key, nd->cfg.coordinator_key)) != FL_OK) {
        fl_log_error("%s", fl_error_last());
        goto done;
    }
    fl_log_init(nd->cfg.name, FL_LOG_INFO);
    fl_schema_digest(nd->schema, nd->schema_digest);
    fl_log_info("loaded %zu local records with %zu features%s", nd->ds->n, nd->ds->d,
                nd->ds->clamped ? " (some values clamped to the schema's public ranges)" : "");
    nd->ctx = zmq_ctx_new();
    snprintf(mon_ep, sizeof mon_ep, "inproc://flnode-monitor-%ld", (long)getpid());
    if (!nd->ctx ||
        (rc = fl_transport_client(&nd->sock, nd->ctx, nd->kp, nd->server_key,
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
                fl_log_error("the coordinator refused this node's key (%s, public key %s): ask "
                             "the coordinator's operator to enroll it", nd->cfg.key,
                             fl_keys_public_z85(nd->kp));
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
    if (nd->planned)
        fl_log_info("privacy spent: epsilon %.4f of %g at delta %g over %llu DP-SGD steps",
                    nd->epsilon, nd->cfg.epsilon_max, nd->cfg.delta,
                    (unsigned long long)nd->steps_charged);
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
    fl_trainer_free(nd->trainer);
    fl_mlp_free(nd->mlp);
    fl_keys_free(nd->kp);
    fl_dataset_free(nd->ds);
    fl_schema_free(nd->schema);
    free(nd);
    return exit_code;
}

static int s_init(const char *dir, const char *name, int force)
{
    char sec[4096], pub[4096], label[128];
    fl_keypair *kp = NULL;
    FILE *f;
    int rc;

    if (!fl_wire_name_ok(name)) {
        fprintf(stderr, "flnode init: name '%s' must be 1..%u characters from [A-Za-z0-9._-]\n",
                name, FL_WIRE_MAX_NAME);
        return S_EXIT_USAGE;
    }
    if (fl_storage_mkdir(dir, 0700) != FL_OK) {
        fprintf(stderr, "flnode: %s\n", fl_error_last());
        return 1;
    }
    snprintf(sec, sizeof sec, "%s/%s.key", dir, name);
    snprintf(pub, sizeof pub, "%s/%s.pub", dir, name);
    snprintf(label, sizeof label, "node '%s'", name);
    if (!force && (f = fopen(sec, "r")) != NULL) {
        fclose(f);
        fprintf(stderr, "flnode: '%s' already exists; refusing to overwrite a key (use --force "
                "to replace it; the coordinator must then enroll the new public key)\n", sec);
        return 1;
    }
    rc = fl_keys_generate(&kp);
    if (rc == FL_OK)
        rc = fl_keys_save(kp, label, sec, pub);
    if (rc != FL_OK) {
        fprintf(stderr, "flnode: %s\n", fl_error_last());
        fl_keys_free(kp);
        return 1;
    }
    printf("created %s (secret, mode 0600)\ncreated %s (public: send it to the coordinator's "
           "operator for enrollment)\n%s %s\n", sec, pub, name, fl_keys_public_z85(kp));
    fl_keys_free(kp);
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
            "  init   create the node's CURVE key pair: DIR/NAME.key (mode 0600) and\n"
            "         DIR/NAME.pub, which the coordinator's operator enrolls\n"
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
