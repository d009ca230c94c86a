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
 *
 * It talks to a running flcoord over its admin socket (coordinator/fl_admin.h:
 * one JSON request, one JSON reply, on ipc://PATH, protected by the socket
 * file's mode 0600). Every wait is bounded: a coordinator that is not there
 * is reported within --timeout seconds, never waited for.
 *
 * Output: aligned tables for a person, or with --json the coordinator's
 * reply, one JSON object on one line, for scripts.
 *
 * Exit status: 0 success, 1 local failure (an unreadable key file, a reply
 * that is not JSON), 2 usage error, 3 coordinator unreachable, 4 command
 * refused by the coordinator.
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
#include "identity/fl_identity.h"

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
    "  resume                       start rounds again\n\n"
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
    "  --last N  only the N most recent records (1..150; at most 150 are sent)\n"
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

typedef struct {
    const char *name;
    const char *usage;
    int nargs; /* positional arguments */
} s_command;

static const s_command s_commands[] = {
    {"status", S_USAGE_STATUS, 0}, {"nodes", S_USAGE_NODES, 0},   {"rounds", S_USAGE_ROUNDS, 0},
    {"round", S_USAGE_ROUND, 1},   {"enroll", S_USAGE_ENROLL, 2}, {"revoke", S_USAGE_REVOKE, 1},
    {"pause", S_USAGE_PAUSE, 0},   {"resume", S_USAGE_RESUME, 0},
};

typedef struct {
    const char *socket;
    int json;
    double timeout;
    long last;
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

/* ------------------------------------------------------------ main */

static int s_run(const s_command *c, const s_opts *o, char **pos)
{
    fl_admin_buf req;
    char *reply = NULL;
    fl_json *r = NULL;
    int code;

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
    }
    fl_admin_buf_printf(&req, "}");
    if (req.overflow) {
        fl_admin_buf_free(&req);
        return s_usage_error(c->name, c->usage, "%s", "arguments too long");
    }
    code = s_call(o, c->name, req.data, &reply);
    fl_admin_buf_free(&req);
    if (code != 0)
        return code;
    if (fl_admin_json_parse(&r, reply, strlen(reply)) != FL_OK || r->type != FL_JSON_OBJECT ||
        !fl_admin_json_get(r, "ok") || fl_admin_json_get(r, "ok")->type != FL_JSON_BOOL) {
        fprintf(stderr, "flctl %s: the coordinator's reply is not a JSON object with \"ok\" "
                "(%s): is '%s' a coordinator's admin socket of the same version?\n", c->name,
                r ? "no \"ok\"" : fl_error_last(), o->socket);
        code = S_EXIT_FAIL;
        goto done;
    }
    if (!s_bool(r, "ok")) {
        if (o->json)
            printf("%s\n", reply);
        fprintf(stderr, "flctl %s: refused by the coordinator: %s\n", c->name,
                s_str(r, "error", "(no reason given)"));
        code = S_EXIT_REFUSED;
        goto done;
    }
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

/* Options that every command takes, before or after the command name. */
enum { S_OPT_SOCKET = 1000, S_OPT_JSON, S_OPT_TIMEOUT, S_OPT_LAST, S_OPT_HELP, S_OPT_VERSION };

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, 0, S_OPT_SOCKET},
                                         {"json", no_argument, 0, S_OPT_JSON},
                                         {"timeout", required_argument, 0, S_OPT_TIMEOUT},
                                         {"last", required_argument, 0, S_OPT_LAST},
                                         {"help", no_argument, 0, S_OPT_HELP},
                                         {"version", no_argument, 0, S_OPT_VERSION},
                                         {0, 0, 0, 0}};
    s_opts o = {NULL, 0, 5.0, 0};
    const s_command *cmd = NULL;
    char *pos[8];
    int npos = 0, c, help = 0;
    const char *env = getenv("FLCTL_SOCKET");

    o.socket = env && *env ? env : "./admin.sock";
    /* Permute mode: options may come before or after the command. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *name = cmd ? cmd->name : NULL;
        const char *usage = cmd ? cmd->usage : S_USAGE_MAIN;
        switch (c) {
        case S_OPT_SOCKET:
            if (!*optarg)
                return s_usage_error(name, usage, "%s", "--socket needs a path");
            o.socket = optarg;
            break;
        case S_OPT_JSON: o.json = 1; break;
        case S_OPT_TIMEOUT:
            if (s_parse_timeout(name, usage, optarg, &o.timeout) != 0)
                return S_EXIT_USAGE;
            break;
        case S_OPT_LAST:
            if (s_parse_uint(optarg, 1, FL_ADMIN_MAX_ROWS, &o.last) != 0)
                return s_usage_error("rounds", S_USAGE_ROUNDS, "--last '%s' must be an integer "
                                     "in 1..%d", optarg, FL_ADMIN_MAX_ROWS);
            break;
        case 'h':
        case S_OPT_HELP: help = 1; break;
        case S_OPT_VERSION: printf("flctl 0.1.0\n"); return 0;
        default:
            return s_usage_error(NULL, S_USAGE_MAIN, "unknown or incomplete option '%s'",
                                 argv[optind - 1]);
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
    if (o.last && strcmp(cmd->name, "rounds") != 0)
        return s_usage_error(cmd->name, cmd->usage, "%s", "--last is an option of 'rounds'");
    if (npos < cmd->nargs)
        return s_usage_error(cmd->name, cmd->usage, "%s",
                             cmd->nargs == 2 ? "NAME and NODE_PUB_FILE are required"
                             : strcmp(cmd->name, "round") == 0 ? "the round number N is required"
                                                                : "NAME is required");
    if (npos > cmd->nargs)
        return s_usage_error(cmd->name, cmd->usage, "unexpected argument '%s'",
                             pos[cmd->nargs]);
    return s_run(cmd, &o, pos);
}
