/*
 * flctl: the coordinator operator's command-line tool.
 *
 *   flctl status                          phase, round, nodes online, last metrics
 *   flctl nodes                           enrolled nodes: key, online, last epsilon
 *   flctl rounds [--last N]               round history (needs the coordinator's state_dir)
 *   flctl round N                         every attempt of round N
 *   flctl enroll NAME NODE_PUB_FILE       admit a node's identity key
 *   flctl revoke NAME                     remove a node at once
 *   flctl pause | resume                  hold / continue new rounds
 *   flctl start [--rounds N]              start training (autostart = 0), or N more rounds
 *   flctl set KEY VALUE                   change a round setting from the next round on
 *   flctl model export --format F --out FILE [--version N]
 *                                         the global model as safetensors or ONNX
 *
 * It talks to a running flcoord over its admin socket (coordinator/fl_admin.h:
 * one JSON request, one JSON reply, on ipc://PATH, protected by the socket
 * file's mode 0600). Every wait is bounded: a coordinator that is not there
 * is reported within --timeout seconds, never waited for.
 *
 * Output: aligned tables for a person, or with --json the coordinator's
 * reply, one JSON object on one line, for scripts ('model export' prints its
 * own: format, out, version, sha256).
 *
 * 'model export' asks the coordinator which file holds the model, reads it
 * itself (flctl runs on the coordinator's machine: the admin socket is a
 * local file), checks its SHA-256 against the one the coordinator gave and
 * writes the export atomically (export/fl_export.h).
 *
 * Exit status: 0 success, 1 local failure (an unreadable key or model file,
 * an unwritable --out, a reply that is not JSON), 2 usage error,
 * 3 coordinator unreachable, 4 command refused by the coordinator.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "coordinator/fl_admin.h"
#include "coordinator/fl_model_file.h"
#include "export/fl_export.h"
#include "identity/fl_identity.h"
#include "proto/fl_wire.h"

#define S_EXIT_FAIL 1
#define S_EXIT_USAGE 2
#define S_EXIT_UNREACHABLE 3
#define S_EXIT_REFUSED 4

/* ------------------------------------------------------------ usage */

static const char *const S_USAGE_MAIN =
    "usage: flctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n"
    "       flctl COMMAND --help | flctl --help | --version\n\n"
    "The coordinator operator's tool: watch and steer a running flcoord.\n\n"
    "  status                       phase, round, nodes online, last round's metrics\n"
    "  nodes                        enrolled nodes: identity key, online, last epsilon\n"
    "  rounds [--last N]            round history (start, end, outcome, metrics)\n"
    "  round N                      every attempt of round N\n"
    "  enroll NAME NODE_PUB_FILE    admit a node by its public identity file\n"
    "  revoke NAME                  remove a node now: out of the next round, its\n"
    "                               messages and new connections refused\n"
    "  pause                        finish the round in progress, start no new one\n"
    "  resume                       start rounds again\n"
    "  start [--rounds N]           start training (a coordinator with autostart = 0),\n"
    "                               or N more rounds after the last one\n"
    "  set KEY VALUE                change a round setting from the next round on\n"
    "                               ('flctl set --help' lists the keys)\n"
    "  model export --format safetensors|onnx --out FILE [--version N]\n"
    "                               write the global model (or version N) for other tools\n\n"
    "Options (before or after the command):\n"
    "  --socket PATH      the coordinator's admin socket (default $FLCTL_SOCKET, else\n"
    "                     ./admin.sock); flcoord logs it at start-up, by default\n"
    "                     <state_dir>/admin.sock, else next to its configuration file\n"
    "  --json             print the coordinator's reply as one JSON object\n"
    "  --timeout SECONDS  how long to wait for an answer (default 5)\n\n"
    "Exit status: 0 success, 1 local failure, 2 usage error, 3 coordinator\n"
    "unreachable, 4 command refused by the coordinator.  See docs/operations.md.\n";

static const char *const S_USAGE_STATUS =
    "usage: flctl status [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Shows the consortium, the phase (waiting for nodes, round in progress, paused,\n"
    "done), the current round and secure-aggregation step, the nodes online against\n"
    "those enrolled, and the metrics of the coordinator's last evaluation on the\n"
    "public test set.\n\n"
    "  --json  {\"ok\":true,\"consortium\":...,\"phase\":...,\"paused\":...,\"round\":...,\n"
    "          \"rounds_planned\":...,\"rounds_completed\":...,\"secagg\":...,\n"
    "          \"secagg_step\":...,\"nodes_online\":...,\"nodes_enrolled\":...,\n"
    "          \"min_nodes\":...,\"last_metrics\":{...}|null,\"history\":...}\n";

static const char *const S_USAGE_NODES =
    "usage: flctl nodes [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Lists the enrolled nodes: name, identity key (Z85), whether it is online\n"
    "(joined), whether it takes part in the round in progress, and the last epsilon\n"
    "(at its delta) it reported.\n\n"
    "  --json  {\"ok\":true,\"nodes\":[{\"name\":...,\"identity_key\":...,\"online\":...,\n"
    "          \"participant\":...,\"epsilon\":...|null,\"delta\":...|null}]}\n";

static const char *const S_USAGE_ROUNDS =
    "usage: flctl rounds [--last N] [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Lists the round history kept in the coordinator's state_dir, oldest first:\n"
    "round, start and end (UTC), participants, contributors (inputs in the\n"
    "aggregate), outcome (completed, abandoned, interrupted, running) and the test\n"
    "metrics. A round abandoned or interrupted and run again has one line per\n"
    "attempt. A coordinator without [coordinator] state_dir keeps no history.\n\n"
    "  --last N  only the N most recent records (1..100; at most 100 are sent)\n"
    "  --json    {\"ok\":true,\"rounds\":[{\"round\":...,\"started_at\":...,\n"
    "            \"ended_at\":...,\"participants\":...,\"contributors\":...,\n"
    "            \"outcome\":...,\"reason\":...,\"metrics\":{...}}]}\n";

static const char *const S_USAGE_ROUND =
    "usage: flctl round N [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Shows every attempt of round N (as 'flctl rounds'), with the reason of an\n"
    "abandoned attempt and all metrics (loss, accuracy, AUC, precision, recall, F1).\n"
    "Refused (exit 4) if round N has no record yet.\n";

static const char *const S_USAGE_ENROLL =
    "usage: flctl enroll NAME NODE_PUB_FILE [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Admits node NAME: reads the identity key from the node's public identity file\n"
    "(the NAME.pub that 'flnode init' wrote, handed over by the hospital) and asks\n"
    "the coordinator to add it to its enrollment list and file (rewritten\n"
    "atomically, so it survives a restart). The node can connect at once.\n"
    "NAME is 1..64 characters from [A-Za-z0-9._-] and must match [node] name in the\n"
    "node's configuration. Refused (exit 4) for a name or key already enrolled.\n";

static const char *const S_USAGE_REVOKE =
    "usage: flctl revoke NAME [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Removes node NAME from the enrollment list and file, at once: it is taken out\n"
    "of the round in progress (secure aggregation counts it as a dropout) and of\n"
    "every later round, the coordinator answers any further message from it with an\n"
    "error, and new handshakes with its key are refused (the node exits with status\n"
    "3). Refused (exit 4) if NAME is not enrolled.\n";

static const char *const S_USAGE_PAUSE =
    "usage: flctl pause [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "The coordinator finishes the round in progress, if any, then starts no new\n"
    "round until 'flctl resume'. Nodes stay connected; while paused the coordinator\n"
    "does not give up waiting for nodes. Pausing twice is harmless.\n";

static const char *const S_USAGE_RESUME =
    "usage: flctl resume [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Lets a paused coordinator start rounds again (the next one starts as soon as\n"
    "enough nodes are online). Resuming a running coordinator is harmless.\n";

static const char *const S_USAGE_START =
    "usage: flctl start [--rounds N] [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Starts training. A coordinator configured with '[coordinator] autostart = 0'\n"
    "waits in phase idle, with nodes joining, until this command; it then runs its\n"
    "planned rounds (or N rounds with --rounds). After the last round (phase done)\n"
    "'start --rounds N' runs N more rounds from the current model (a coordinator\n"
    "with '[coordinator] exit_when_done = 0' stays up in phase done for this).\n"
    "Refused (exit 4) while training is under way: use pause and resume to hold it.\n\n"
    "  --rounds N  how many rounds to run (1..1000000); required after phase done\n"
    "  --json      {\"ok\":true,\"phase\":...,\"rounds_planned\":...}\n";

static const char *const S_USAGE_SET =
    "usage: flctl set KEY VALUE [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Changes one setting of the running coordinator. It applies from the next round\n"
    "that starts (the round in progress keeps its settings) and is validated with\n"
    "the bounds of the configuration file; a refused value changes nothing (exit 4).\n"
    "The change lasts until the coordinator stops: edit its configuration file to\n"
    "keep it. Nodes still enforce their own privacy budget: a round whose settings\n"
    "would take a hospital past its epsilon cap is declined by that hospital.\n\n"
    "KEY is one of (the names of the configuration file, section.key):\n"
    "  coordinator.min_nodes         nodes needed to start a round and accept its result\n"
    "  coordinator.round_timeout_ms  wait for updates without secure aggregation (ms)\n"
    "  secagg.step_timeout_ms        wait per secure-aggregation step (ms)\n"
    "  secagg.threshold              Shamir threshold t (0 = more than two thirds of\n"
    "                                the round's parties)\n"
    "  training.local_steps          DP-SGD steps per node per round\n"
    "  training.learning_rate        the nodes' learning rate\n"
    "  server.optimizer              fedavg, fedavgm or fedadam\n"
    "  server.learning_rate          server optimizer learning rate\n"
    "  server.momentum               fedavgm momentum\n"
    "  server.beta1, server.beta2    fedadam moment decay rates\n"
    "  server.tau                    fedadam adaptivity (epsilon in the denominator)\n\n"
    "  --json  {\"ok\":true,\"key\":...,\"value\":...,\"applies_from_round\":...}\n";

static const char *const S_USAGE_MODEL =
    "usage: flctl model export --format safetensors|onnx --out FILE [--version N]\n"
    "                          [--socket PATH] [--json] [--timeout SECONDS]\n\n"
    "Writes the coordinator's global model - the latest, or version N (the model\n"
    "after round N) - to FILE for use outside the consortium. flctl asks the\n"
    "coordinator which model file holds it (the coordinator keeps every version in\n"
    "its [coordinator] state_dir; without one, or before the first round completes,\n"
    "the request is refused with exit 4), reads that file, checks its SHA-256\n"
    "against the coordinator's, and writes FILE atomically. Run it on the\n"
    "coordinator's machine, as its user.\n\n"
    "  --format safetensors  tensors layers.<i>.weight / layers.<i>.bias (F32, PyTorch\n"
    "                        shapes) with metadata format, spec, output, sha256, version\n"
    "  --format onnx         an ONNX model (IR 8, opset 13): input 'input' [N, d] or\n"
    "                        [N, C, H, W], output 'probabilities' [N, outputs]\n"
    "  --out FILE            where to write (replaced if it exists)\n"
    "  --version N           which model version (default: the latest)\n"
    "  --json                {\"ok\":true,\"format\":...,\"out\":...,\"version\":...,\n"
    "                        \"sha256\":...}\n";

typedef struct {
    const char *name;
    const char *usage;
    int nargs;           /* positional arguments */
    const char *missing; /* what to say when they are missing */
} s_command;

static const s_command s_commands[] = {
    {"status", S_USAGE_STATUS, 0, NULL},
    {"nodes", S_USAGE_NODES, 0, NULL},
    {"rounds", S_USAGE_ROUNDS, 0, NULL},
    {"round", S_USAGE_ROUND, 1, "the round number N is required"},
    {"enroll", S_USAGE_ENROLL, 2, "NAME and NODE_PUB_FILE are required"},
    {"revoke", S_USAGE_REVOKE, 1, "NAME is required"},
    {"pause", S_USAGE_PAUSE, 0, NULL},
    {"resume", S_USAGE_RESUME, 0, NULL},
    {"start", S_USAGE_START, 0, NULL},
    {"set", S_USAGE_SET, 2, "KEY and VALUE are required"},
    {"model", S_USAGE_MODEL, 1, "the subcommand 'export' is required"},
};

/* The keys 'flctl set' accepts: those the coordinator changes at run time. */
static const char *const s_set_keys[] = {
    "coordinator.min_nodes", "coordinator.round_timeout_ms", "secagg.step_timeout_ms",
    "secagg.threshold",      "training.local_steps",         "training.learning_rate",
    "server.optimizer",      "server.learning_rate",         "server.momentum",
    "server.beta1",          "server.beta2",                 "server.tau",
};

#define S_MAX_VERSION 1000000L

typedef struct {
    const char *socket;
    int json;
    double timeout;
    long last;
    long rounds;        /* start --rounds, 0 = not given */
    long version;       /* model export --version, -1 = the latest */
    const char *format; /* model export --format */
    const char *out;    /* model export --out */
} s_opts;

static int s_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    FL_PRINTF(3, 4);

static int s_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "flctl%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage);
    return S_EXIT_USAGE;
}

static int s_parse_timeout(const char *cmd, const char *usage, const char *s, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.1 && v <= 600))
        return s_usage_error(cmd, usage, "--timeout '%s' must be a number of seconds in "
                             "0.1..600", s);
    *out = v;
    return 0;
}

static int s_parse_uint(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    if (!*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------- transport */

/* Sends `req` and receives the reply into *reply (malloc'd, NUL-terminated).
 * Returns 0, or the exit code after saying what went wrong. */
static int s_call(const s_opts *o, const char *cmd, const char *req, char **reply)
{
    void *ctx = NULL, *sock = NULL;
    char ep[1100];
    struct stat st;
    int ms = (int)(o->timeout * 1000.0), zero = 0, code = S_EXIT_UNREACHABLE;
    int64_t maxmsg = 1 << 20;
    zmq_msg_t msg;
    int n;

    *reply = NULL;
    if (stat(o->socket, &st) != 0) {
        fprintf(stderr, "flctl %s: no coordinator admin socket at '%s' (%s): is flcoord "
                "running? Its log names the socket ('admin socket ipc://...'); pass it with "
                "--socket or FLCTL_SOCKET\n", cmd, o->socket, strerror(errno));
        return S_EXIT_UNREACHABLE;
    }
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "flctl %s: '%s' is not a socket: pass the coordinator's admin socket "
                "with --socket\n", cmd, o->socket);
        return S_EXIT_UNREACHABLE;
    }
    if (access(o->socket, R_OK | W_OK) != 0) {
        fprintf(stderr, "flctl %s: cannot use the admin socket '%s': %s (it is mode 0600: run "
                "flctl as the coordinator's user)\n", cmd, o->socket, strerror(errno));
        return S_EXIT_UNREACHABLE;
    }
    snprintf(ep, sizeof ep, "ipc://%s", o->socket);
    ctx = zmq_ctx_new();
    sock = ctx ? zmq_socket(ctx, ZMQ_REQ) : NULL;
    if (!sock) {
        fprintf(stderr, "flctl %s: cannot create a ZeroMQ socket: %s\n", cmd,
                zmq_strerror(errno));
        code = S_EXIT_FAIL;
        goto done;
    }
    /* A REQ to nobody must not hang: no linger, bounded send and receive. */
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_connect(sock, ep) != 0) {
        fprintf(stderr, "flctl %s: cannot connect to %s: %s\n", cmd, ep, zmq_strerror(errno));
        goto done;
    }
    if (zmq_send(sock, req, strlen(req), 0) < 0) {
        fprintf(stderr, "flctl %s: the coordinator at %s does not accept requests (%s): is it "
                "running?\n", cmd, ep, zmq_strerror(errno));
        goto done;
    }
    zmq_msg_init(&msg);
    n = zmq_msg_recv(&msg, sock, 0);
    if (n < 0) {
        int e = errno;
        zmq_msg_close(&msg);
        fprintf(stderr, "flctl %s: no answer from the coordinator at %s within %g s (%s): is "
                "it running? (a stale socket file stays behind a killed coordinator)\n", cmd,
                ep, o->timeout, zmq_strerror(e));
        goto done;
    }
    *reply = malloc((size_t)n + 1);
    if (!*reply) {
        zmq_msg_close(&msg);
        fprintf(stderr, "flctl %s: out of memory\n", cmd);
        code = S_EXIT_FAIL;
        goto done;
    }
    memcpy(*reply, zmq_msg_data(&msg), (size_t)n);
    (*reply)[n] = '\0';
    zmq_msg_close(&msg);
    code = 0;
done:
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    return code;
}

/* ------------------------------------------------------- rendering */

static double s_num(const fl_json *o, const char *key)
{
    const fl_json *v = fl_admin_json_get(o, key);
    return v && v->type == FL_JSON_NUMBER ? v->number : NAN;
}

static const char *s_str(const fl_json *o, const char *key, const char *dflt)
{
    const fl_json *v = fl_admin_json_get(o, key);
    return v && v->type == FL_JSON_STRING ? v->string : dflt;
}

static int s_bool(const fl_json *o, const char *key)
{
    const fl_json *v = fl_admin_json_get(o, key);
    return v && v->type == FL_JSON_BOOL && v->boolean;
}

/* A metric in a fixed width, "-" when absent. */
static void s_metric(char *buf, size_t cap, double v)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.4f", v);
}

static const char *s_phase_text(const char *phase)
{
    if (strcmp(phase, "round_in_progress") == 0)
        return "round in progress";
    if (strcmp(phase, "waiting") == 0)
        return "waiting for nodes";
    if (strcmp(phase, "idle") == 0)
        return "idle (waiting for 'flctl start')";
    return phase;
}

static void s_print_status(const fl_json *r)
{
    const fl_json *m = fl_admin_json_get(r, "last_metrics");
    const char *phase = s_str(r, "phase", "?"), *step = s_str(r, "secagg_step", NULL);
    int paused = s_bool(r, "paused");
    printf("%-14s %s\n", "consortium", s_str(r, "consortium", "?"));
    printf("%-14s %s%s\n", "phase", s_phase_text(phase),
           paused && strcmp(phase, "round_in_progress") == 0
               ? " (pause requested: no new round after this one)" : "");
    if (strcmp(phase, "done") == 0)
        printf("%-14s all %.0f planned rounds completed\n", "round",
               s_num(r, "rounds_completed"));
    else
        printf("%-14s %.0f of %.0f (%.0f completed)\n", "round", s_num(r, "round"),
               s_num(r, "rounds_planned"), s_num(r, "rounds_completed"));
    if (!s_bool(r, "secagg"))
        printf("%-14s off (the coordinator sees each update)\n", "secure agg.");
    else
        printf("%-14s on%s%s\n", "secure agg.", step ? ", step " : "", step ? step : "");
    printf("%-14s %.0f online of %.0f enrolled (at least %.0f per round)\n", "nodes",
           s_num(r, "nodes_online"), s_num(r, "nodes_enrolled"), s_num(r, "min_nodes"));
    if (m && m->type == FL_JSON_OBJECT) {
        char loss[32], acc[32], auc[32];
        s_metric(loss, sizeof loss, s_num(m, "loss"));
        s_metric(acc, sizeof acc, s_num(m, "accuracy"));
        s_metric(auc, sizeof auc, s_num(m, "auc"));
        printf("%-14s round %.0f: loss %s, accuracy %s, AUC %s\n", "last metrics",
               s_num(m, "round"), loss, acc, auc);
    } else {
        printf("%-14s none yet (no round completed, or no [data] test_data)\n", "last metrics");
    }
    m = fl_admin_json_get(r, "node_metrics");
    if (m && m->type == FL_JSON_OBJECT) {
        char loss[32], acc[32], f1[32];
        s_metric(loss, sizeof loss, s_num(m, "loss"));
        s_metric(acc, sizeof acc, s_num(m, "accuracy"));
        s_metric(f1, sizeof f1, s_num(m, "f1"));
        printf("%-14s model %.0f on %.0f held-out records: loss %s, accuracy %s, F1 %s\n",
               "nodes' eval", s_num(m, "version"), s_num(m, "examples"), loss, acc, f1);
    }
    if (!s_bool(r, "history"))
        printf("%-14s not kept (no [coordinator] state_dir)\n", "history");
}

static void s_print_nodes(const fl_json *r)
{
    const fl_json *a = fl_admin_json_get(r, "nodes");
    size_t w = 4, k = 0;
    if (!a || a->type != FL_JSON_ARRAY || !a->child) {
        printf("no node is enrolled: add one with 'flctl enroll NAME NODE_PUB_FILE'\n");
        return;
    }
    for (const fl_json *n = a->child; n; n = n->next)
        if (strlen(s_str(n, "name", "")) > w)
            w = strlen(s_str(n, "name", ""));
    printf("%-*s  %-6s  %-11s  %-9s  %s\n", (int)w, "NAME", "ONLINE", "PARTICIPANT", "EPSILON",
           "IDENTITY KEY");
    for (const fl_json *n = a->child; n; n = n->next, k++) {
        char eps[32];
        s_metric(eps, sizeof eps, s_num(n, "epsilon"));
        printf("%-*s  %-6s  %-11s  %-9s  %s\n", (int)w, s_str(n, "name", "?"),
               s_bool(n, "online") ? "yes" : "no", s_bool(n, "participant") ? "yes" : "no", eps,
               s_str(n, "identity_key", "?"));
    }
}

static void s_print_rounds(const fl_json *r, int detail)
{
    const fl_json *a = fl_admin_json_get(r, "rounds");
    if (!a || a->type != FL_JSON_ARRAY || !a->child) {
        printf("no round on record yet\n");
        return;
    }
    printf("%5s  %-20s  %-20s  %5s  %7s  %-11s  %7s  %8s  %6s%s\n", "ROUND", "STARTED", "ENDED",
           "NODES", "INPUTS", "OUTCOME", "LOSS", "ACCURACY", "AUC",
           detail ? "  PRECISION  RECALL  F1      REASON" : "");
    for (const fl_json *e = a->child; e; e = e->next) {
        const fl_json *m = fl_admin_json_get(e, "metrics");
        char loss[32], acc[32], auc[32], inputs[32];
        s_metric(loss, sizeof loss, s_num(m, "loss"));
        s_metric(acc, sizeof acc, s_num(m, "accuracy"));
        s_metric(auc, sizeof auc, s_num(m, "auc"));
        if (isnan(s_num(e, "contributors")))
            snprintf(inputs, sizeof inputs, "-");
        else
            snprintf(inputs, sizeof inputs, "%.0f", s_num(e, "contributors"));
        printf("%5.0f  %-20s  %-20s  %5.0f  %7s  %-11s  %7s  %8s  %6s", s_num(e, "round"),
               s_str(e, "started_at", "-"), s_str(e, "ended_at", "-"),
               s_num(e, "participants"), inputs, s_str(e, "outcome", "?"), loss, acc, auc);
        if (detail) {
            char p[32], rc[32], f1[32];
            s_metric(p, sizeof p, s_num(m, "precision"));
            s_metric(rc, sizeof rc, s_num(m, "recall"));
            s_metric(f1, sizeof f1, s_num(m, "f1"));
            printf("  %-9s  %-6s  %-6s  %s", p, rc, f1, s_str(e, "reason", "-"));
        }
        printf("\n");
    }
}

/* Sends `req`, parses the reply into *r (the text stays in *reply) and
 * checks "ok".  Returns 0, or the exit code after saying what went wrong;
 * a refusal's reply is printed with --json.  The caller frees *r and *reply
 * either way. */
static int s_request(const s_opts *o, const char *cmd, const char *req, fl_json **r,
                     char **reply)
{
    int code = s_call(o, cmd, req, reply);
    *r = NULL;
    if (code != 0)
        return code;
    if (fl_admin_json_parse(r, *reply, strlen(*reply)) != FL_OK ||
        (*r)->type != FL_JSON_OBJECT || !fl_admin_json_get(*r, "ok") ||
        fl_admin_json_get(*r, "ok")->type != FL_JSON_BOOL) {
        fprintf(stderr, "flctl %s: the coordinator's reply is not a JSON object with \"ok\" "
                "(%s): is '%s' a coordinator's admin socket of the same version?\n", cmd,
                *r ? "no \"ok\"" : fl_error_last(), o->socket);
        return S_EXIT_FAIL;
    }
    if (!s_bool(*r, "ok")) {
        if (o->json)
            printf("%s\n", *reply);
        fprintf(stderr, "flctl %s: refused by the coordinator: %s\n", cmd,
                s_str(*r, "error", "(no reason given)"));
        return S_EXIT_REFUSED;
    }
    return 0;
}

/* ----------------------------------------------------- model export */

/* Asks for the model, reads the file the coordinator names, checks its
 * SHA-256 and writes the export.  The latest model's file is rewritten
 * after every round, so a digest that does not match (the file changed
 * between the answer and the read) is asked for again, a few times. */
static int s_model_export(const s_opts *o, fl_json **r, char **reply)
{
    fl_model_file mf;
    uint8_t digest[FL_WIRE_DIGEST_BYTES];
    char hex[2 * FL_WIRE_DIGEST_BYTES + 1], req[96];
    const char *path, *want;
    double version;
    int rc, code = S_EXIT_FAIL;

    memset(&mf, 0, sizeof mf);
    if (o->version >= 0)
        snprintf(req, sizeof req, "{\"cmd\":\"model\",\"version\":%ld}", o->version);
    else
        snprintf(req, sizeof req, "{\"cmd\":\"model\"}");
    for (int attempt = 1;; attempt++) {
        fl_admin_json_free(*r);
        free(*reply);
        *r = NULL;
        *reply = NULL;
        fl_model_file_clear(&mf);
        code = s_request(o, "model", req, r, reply);
        if (code != 0)
            return code;
        path = s_str(*r, "path", NULL);
        want = s_str(*r, "sha256", NULL);
        version = s_num(*r, "version");
        if (!path || !want || isnan(version) || version < 0 || version > 4294967295.0) {
            fprintf(stderr, "flctl model: the coordinator's reply has no model path, sha256 or "
                    "version: is '%s' a coordinator of the same version?\n", o->socket);
            return S_EXIT_FAIL;
        }
        if (fl_model_file_load(&mf, path) != FL_OK) {
            fprintf(stderr, "flctl model: cannot read the model file the coordinator named: %s "
                    "(flctl must run on the coordinator's machine, as its user)\n",
                    fl_error_last());
            return S_EXIT_FAIL;
        }
        fl_wire_model_digest(mf.params, mf.num_params, digest);
        for (size_t i = 0; i < sizeof digest; i++)
            snprintf(hex + 2 * i, 3, "%02x", digest[i]);
        if (strcmp(hex, want) == 0)
            break;
        if (o->version >= 0 || attempt == 3) {
            fprintf(stderr, "flctl model: the model file '%s' has SHA-256 %s, but the "
                    "coordinator says %s: the file changed or is damaged; nothing written\n",
                    path, hex, want);
            fl_model_file_clear(&mf);
            return S_EXIT_FAIL;
        }
        usleep(200000);
    }
    if (strcmp(o->format, "onnx") == 0)
        rc = fl_export_onnx(o->out, &mf.spec, mf.params, mf.num_params, hex,
                            (uint32_t)version);
    else
        rc = fl_export_safetensors(o->out, &mf.spec, mf.params, mf.num_params, hex,
                                   (uint32_t)version);
    if (rc != FL_OK) {
        fprintf(stderr, "flctl model: %s\n", fl_error_last());
        fl_model_file_clear(&mf);
        return S_EXIT_FAIL;
    }
    if (o->json) {
        fl_admin_buf b;
        fl_admin_buf_init(&b, FL_ADMIN_MAX_MSG);
        fl_admin_buf_printf(&b, "{\"ok\":true,\"format\":");
        fl_admin_buf_str(&b, o->format);
        fl_admin_buf_printf(&b, ",\"out\":");
        fl_admin_buf_str(&b, o->out);
        fl_admin_buf_printf(&b, ",\"version\":%.0f,\"sha256\":", version);
        fl_admin_buf_str(&b, hex);
        fl_admin_buf_printf(&b, "}");
        printf("%s\n", b.data);
        fl_admin_buf_free(&b);
    } else {
        char spec[FL_SPEC_TEXT_MAX];
        if (fl_model_spec_format(&mf.spec, spec, sizeof spec) != FL_OK)
            snprintf(spec, sizeof spec, "?");
        printf("wrote %s (%s): model version %.0f, %zu parameters, %s output\n"
               "  spec    %s\n  sha256  %s\n", o->out, o->format, version, mf.num_params,
               mf.spec.output_kind == 1 ? "sigmoid" : "softmax", spec, hex);
    }
    fl_model_file_clear(&mf);
    return 0;
}

/* ------------------------------------------------------------ main */

static int s_run(const s_command *c, const s_opts *o, char **pos)
{
    fl_admin_buf req;
    char *reply = NULL;
    fl_json *r = NULL;
    int code;

    if (strcmp(c->name, "model") == 0) {
        code = s_model_export(o, &r, &reply);
        goto done;
    }
    fl_admin_buf_init(&req, FL_ADMIN_MAX_MSG);
    fl_admin_buf_printf(&req, "{\"cmd\":");
    fl_admin_buf_str(&req, c->name);
    if (strcmp(c->name, "rounds") == 0 && o->last > 0) {
        fl_admin_buf_printf(&req, ",\"last\":%ld", o->last);
    } else if (strcmp(c->name, "round") == 0) {
        long n;
        if (s_parse_uint(pos[0], 1, 1000000, &n) != 0) {
            fl_admin_buf_free(&req);
            return s_usage_error(c->name, c->usage, "round '%s' is not a round number "
                                 "(1..1000000)", pos[0]);
        }
        fl_admin_buf_printf(&req, ",\"round\":%ld", n);
    } else if (strcmp(c->name, "enroll") == 0) {
        fl_identity_public pub;
        if (fl_identity_load_public(&pub, pos[1]) != FL_OK) {
            fprintf(stderr, "flctl enroll: %s\n", fl_error_last());
            fl_admin_buf_free(&req);
            return S_EXIT_FAIL;
        }
        fl_admin_buf_printf(&req, ",\"name\":");
        fl_admin_buf_str(&req, pos[0]);
        fl_admin_buf_printf(&req, ",\"key\":");
        fl_admin_buf_str(&req, pub.sign_z85);
    } else if (strcmp(c->name, "revoke") == 0) {
        fl_admin_buf_printf(&req, ",\"name\":");
        fl_admin_buf_str(&req, pos[0]);
    } else if (strcmp(c->name, "set") == 0) {
        fl_admin_buf_printf(&req, ",\"key\":");
        fl_admin_buf_str(&req, pos[0]);
        fl_admin_buf_printf(&req, ",\"value\":");
        fl_admin_buf_str(&req, pos[1]);
    } else if (strcmp(c->name, "start") == 0 && o->rounds > 0) {
        fl_admin_buf_printf(&req, ",\"rounds\":%ld", o->rounds);
    }
    fl_admin_buf_printf(&req, "}");
    if (req.overflow) {
        fl_admin_buf_free(&req);
        return s_usage_error(c->name, c->usage, "%s", "arguments too long");
    }
    code = s_request(o, c->name, req.data, &r, &reply);
    fl_admin_buf_free(&req);
    if (code != 0)
        goto done;
    if (o->json) {
        printf("%s\n", reply);
    } else if (strcmp(c->name, "status") == 0) {
        s_print_status(r);
    } else if (strcmp(c->name, "nodes") == 0) {
        s_print_nodes(r);
    } else if (strcmp(c->name, "rounds") == 0 || strcmp(c->name, "round") == 0) {
        s_print_rounds(r, strcmp(c->name, "round") == 0);
    } else if (strcmp(c->name, "enroll") == 0) {
        printf("enrolled %s (identity key %s); %.0f nodes enrolled\n", s_str(r, "name", "?"),
               s_str(r, "identity_key", "?"), s_num(r, "nodes_enrolled"));
    } else if (strcmp(c->name, "revoke") == 0) {
        printf("revoked %s%s; %.0f nodes enrolled\n", s_str(r, "name", "?"),
               s_bool(r, "was_online") ? " (it was online: out of the next round, its messages "
                                         "refused)" : "",
               s_num(r, "nodes_enrolled"));
    } else if (strcmp(c->name, "set") == 0) {
        printf("set %s = %s, from round %.0f on\n", s_str(r, "key", "?"),
               s_str(r, "value", "?"), s_num(r, "applies_from_round"));
    } else if (strcmp(c->name, "start") == 0) {
        printf("started: phase %s, %.0f rounds planned\n",
               s_phase_text(s_str(r, "phase", "?")), s_num(r, "rounds_planned"));
    } else {
        printf("%s: phase %s, round %.0f\n", s_bool(r, "paused") ? "paused" : "resumed",
               s_phase_text(s_str(r, "phase", "?")), s_num(r, "round"));
    }
    code = 0;
done:
    fl_admin_json_free(r);
    free(reply);
    return code;
}

/* Options that every command takes, before or after the command name, and
 * those of one command (rejected with the others). */
enum {
    S_OPT_SOCKET = 1000,
    S_OPT_JSON,
    S_OPT_TIMEOUT,
    S_OPT_LAST,
    S_OPT_HELP,
    S_OPT_VERSION,
    S_OPT_ROUNDS,
    S_OPT_FORMAT,
    S_OPT_OUT,
    S_OPT_MODEL_VERSION
};

/* The command word, found before option parsing: 'model' reads --version N
 * as the model's version, every other command as flctl's own --version. */
static const char *s_find_command(int argc, char **argv)
{
    static const char *const with_arg[] = {"--socket", "--timeout", "--last", "--rounds",
                                           "--format", "--out"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int skip = 0;
        if (strcmp(a, "--") == 0)
            return i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-')
            return a;
        for (size_t k = 0; k < sizeof with_arg / sizeof with_arg[0]; k++)
            if (strcmp(a, with_arg[k]) == 0)
                skip = 1;
        i += skip;
    }
    return NULL;
}

int main(int argc, char **argv)
{
#define S_COMMON_OPTS                                                                          \
    {"socket", required_argument, 0, S_OPT_SOCKET}, {"json", no_argument, 0, S_OPT_JSON},     \
        {"timeout", required_argument, 0, S_OPT_TIMEOUT},                                      \
        {"last", required_argument, 0, S_OPT_LAST}, {"help", no_argument, 0, S_OPT_HELP},      \
        {"rounds", required_argument, 0, S_OPT_ROUNDS},                                        \
        {"format", required_argument, 0, S_OPT_FORMAT},                                        \
        {"out", required_argument, 0, S_OPT_OUT}
    static const struct option opts[] = {S_COMMON_OPTS,
                                         {"version", no_argument, 0, S_OPT_VERSION},
                                         {0, 0, 0, 0}};
    static const struct option model_opts[] = {
        S_COMMON_OPTS, {"version", required_argument, 0, S_OPT_MODEL_VERSION}, {0, 0, 0, 0}};
#undef S_COMMON_OPTS
    s_opts o = {NULL, 0, 5.0, 0, 0, -1, NULL, NULL};
    const s_command *cmd = NULL;
    const char *first = s_find_command(argc, argv), *only = NULL;
    int is_model = first && strcmp(first, "model") == 0;
    char *pos[8];
    int npos = 0, c, help = 0;
    const char *env = getenv("FLCTL_SOCKET");

    o.socket = env && *env ? env : "./admin.sock";
    /* Permute mode: options may come before or after the command. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", is_model ? model_opts : opts, NULL)) != -1) {
        switch (c) {
        case S_OPT_SOCKET:
            if (!*optarg)
                return s_usage_error(NULL, S_USAGE_MAIN, "%s", "--socket needs a path");
            o.socket = optarg;
            break;
        case S_OPT_JSON: o.json = 1; break;
        case S_OPT_TIMEOUT:
            if (s_parse_timeout(NULL, S_USAGE_MAIN, optarg, &o.timeout) != 0)
                return S_EXIT_USAGE;
            break;
        case S_OPT_LAST:
            if (s_parse_uint(optarg, 1, FL_ADMIN_MAX_ROWS, &o.last) != 0)
                return s_usage_error("rounds", S_USAGE_ROUNDS, "--last '%s' must be an integer "
                                     "in 1..%d", optarg, FL_ADMIN_MAX_ROWS);
            only = only ? only : "rounds";
            break;
        case S_OPT_ROUNDS:
            if (s_parse_uint(optarg, 1, 1000000, &o.rounds) != 0)
                return s_usage_error("start", S_USAGE_START, "--rounds '%s' must be an integer "
                                     "in 1..1000000", optarg);
            only = only ? only : "start";
            break;
        case S_OPT_FORMAT:
            if (strcmp(optarg, "safetensors") != 0 && strcmp(optarg, "onnx") != 0)
                return s_usage_error("model", S_USAGE_MODEL, "--format '%s' is not "
                                     "safetensors or onnx", optarg);
            o.format = optarg;
            only = only ? only : "model";
            break;
        case S_OPT_OUT:
            if (!*optarg)
                return s_usage_error("model", S_USAGE_MODEL, "%s", "--out needs a file name");
            o.out = optarg;
            only = only ? only : "model";
            break;
        case S_OPT_MODEL_VERSION:
            if (s_parse_uint(optarg, 1, S_MAX_VERSION, &o.version) != 0)
                return s_usage_error("model", S_USAGE_MODEL, "--version '%s' must be a model "
                                     "version (a round) in 1..%ld", optarg, S_MAX_VERSION);
            break;
        case 'h':
        case S_OPT_HELP: help = 1; break;
        case S_OPT_VERSION: printf("flctl 0.1.0\n"); return 0;
        default:
            return s_usage_error(is_model ? "model" : NULL, is_model ? S_USAGE_MODEL
                                                                    : S_USAGE_MAIN,
                                 "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!cmd) {
            for (size_t k = 0; k < sizeof s_commands / sizeof s_commands[0]; k++)
                if (strcmp(argv[i], s_commands[k].name) == 0)
                    cmd = &s_commands[k];
            if (!cmd && !help)
                return s_usage_error(NULL, S_USAGE_MAIN, "unknown command '%s'", argv[i]);
            if (!cmd) {
                fputs(S_USAGE_MAIN, stdout);
                return 0;
            }
            continue;
        }
        if (npos == (int)(sizeof pos / sizeof pos[0]))
            break;
        pos[npos++] = argv[i];
    }
    if (help) {
        fputs(cmd ? cmd->usage : S_USAGE_MAIN, stdout);
        return 0;
    }
    if (!cmd)
        return s_usage_error(NULL, S_USAGE_MAIN, "%s", "a command is required");
    if (only && strcmp(cmd->name, only) != 0)
        return s_usage_error(cmd->name, cmd->usage, "%s is an option of '%s%s'",
                             strcmp(only, "rounds") == 0  ? "--last"
                             : strcmp(only, "start") == 0 ? "--rounds"
                             : o.format                   ? "--format"
                                                          : "--out",
                             only, strcmp(only, "model") == 0 ? " export" : "");
    if (npos < cmd->nargs)
        return s_usage_error(cmd->name, cmd->usage, "%s", cmd->missing);
    if (npos > cmd->nargs)
        return s_usage_error(cmd->name, cmd->usage, "unexpected argument '%s'",
                             pos[cmd->nargs]);
    if (strcmp(cmd->name, "set") == 0) {
        int known = 0;
        for (size_t k = 0; k < sizeof s_set_keys / sizeof s_set_keys[0]; k++)
            known |= strcmp(pos[0], s_set_keys[k]) == 0;
        if (!known)
            return s_usage_error(cmd->name, cmd->usage, "'%s' is not a setting that can be "
                                 "changed at run time (see the list below)", pos[0]);
        if (!*pos[1])
            return s_usage_error(cmd->name, cmd->usage, "the value of %s is empty", pos[0]);
    }
    if (strcmp(cmd->name, "model") == 0) {
        if (strcmp(pos[0], "export") != 0)
            return s_usage_error(cmd->name, cmd->usage, "unknown subcommand '%s': the "
                                 "subcommand is 'export'", pos[0]);
        if (!o.format)
            return s_usage_error(cmd->name, cmd->usage, "%s",
                                 "--format safetensors|onnx is required");
        if (!o.out)
            return s_usage_error(cmd->name, cmd->usage, "%s", "--out FILE is required");
    }
    return s_run(cmd, &o, pos);
}
