/*
 * flctl against a real flcoord (and, where training is needed, real flnode
 * processes with secure aggregation) on 127.0.0.1: every command's success
 * case, its usage errors (exit 2), an absent coordinator (exit 3, bounded
 * time), refusals (exit 4), malformed admin requests answered with an error
 * while the coordinator keeps running, revocation during training,
 * pause/resume, start (autostart = 0, more rounds after done), set (seen in
 * the nodes' next round) and model export (read back by the independent
 * readers of tests/export: numpy, onnx, ONNX Runtime).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "coordinator/fl_admin.h"
#include "coordinator/fl_model_file.h"
#include "identity/fl_identity.h"
#include "nn/fl_mlp.h"
#include "tests/support/fl_test_consortium.h"
#include "tests/support/fl_test_dir.h"
#include "tests/support/fl_test_proc.h"

#define S_NODES 3

static char s_dir[128];
static char s_sock[256];
static fl_identity_public s_pub[S_NODES];
static pid_t s_coord = -1, s_node[S_NODES] = {-1, -1, -1};
static char s_out[1 << 16];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "ctl");
    snprintf(s_sock, sizeof s_sock, "%s/state/admin.sock", s_dir);
}

static void s_stop(pid_t *p)
{
    if (*p > 0) {
        kill(*p, SIGTERM);
        fl_test_wait(*p, 10.0);
        *p = -1;
    }
}

static void s_teardown(void)
{
    for (int i = 0; i < S_NODES; i++)
        s_stop(&s_node[i]);
    s_stop(&s_coord);
    if (!getenv("FL_TEST_KEEP"))
        fl_test_dir_remove(s_dir);
}

TestSuite(flctl, .init = s_setup, .fini = s_teardown, .timeout = 240);

/* Runs flctl with the given arguments (NULL-terminated, after the program
 * name); its stdout and stderr land in s_out. Returns the exit status. */
static int s_flctl_v(char *const *args)
{
    char *argv[32];
    int n = 0, rc;
    char path[256];
    argv[n++] = FL_TEST_FLCTL;
    while (*args && n < 31)
        argv[n++] = *args++;
    argv[n] = NULL;
    snprintf(path, sizeof path, "%s/flctl.out", s_dir);
    unlink(path);
    rc = fl_test_wait(fl_test_spawn(s_dir, "flctl.out", argv), 20.0);
    if (fl_test_read(s_dir, "flctl.out", s_out, sizeof s_out) < 0)
        s_out[0] = '\0';
    return rc;
}

#define s_flctl(...) s_flctl_v((char *[]){__VA_ARGS__, NULL})

/* `flctl --json CMD...` against the test's coordinator, parsed. */
static fl_json *s_json(const char *cmd, const char *arg)
{
    fl_json *j = NULL;
    int rc = arg ? s_flctl("--socket", s_sock, "--json", (char *)cmd, (char *)arg)
                 : s_flctl("--socket", s_sock, "--json", (char *)cmd);
    cr_assert_eq(rc, 0, "flctl %s exited %d: %s", cmd, rc, s_out);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s: %s", s_out,
                 fl_error_last());
    return j;
}

static double s_num(const fl_json *o, const char *key)
{
    const fl_json *v = fl_admin_json_get(o, key);
    cr_assert(v && v->type == FL_JSON_NUMBER, "no number '%s'", key);
    return v->number;
}

static const char *s_str(const fl_json *o, const char *key)
{
    const fl_json *v = fl_admin_json_get(o, key);
    cr_assert(v && v->type == FL_JSON_STRING, "no string '%s'", key);
    return v->string;
}

/* Status fields, polled until `phase` (or any phase if NULL) and at least
 * `min_done` completed rounds, for at most `seconds`. */
static int s_wait_status(const char *phase, double min_done, double seconds, double *done)
{
    double t0 = fl_test_now();
    while (fl_test_now() - t0 < seconds) {
        fl_json *j = s_json("status", NULL);
        int hit = (!phase || strcmp(s_str(j, "phase"), phase) == 0) &&
                  s_num(j, "rounds_completed") >= min_done;
        if (done)
            *done = s_num(j, "rounds_completed");
        fl_admin_json_free(j);
        if (hit)
            return 0;
        usleep(100000);
    }
    return -1;
}

/* Keys for the coordinator and three hospitals; the first `enrolled` of them
 * in the enrollment file; data shards; the coordinator started, with `extra`
 * lines added to its [coordinator] section. */
static void s_consortium_x(int enrolled, int rounds, int state_dir, const char *extra)
{
    char text[4096], list[2048] = "# test consortium\n", ep[256];

    /* The consortium's identity keys for secure aggregation: all three. */
    fl_test_consortium_keys(s_dir, S_NODES, S_NODES, "peers.txt", s_pub);
    for (int i = 0; i < enrolled; i++) {
        char line[128];
        snprintf(line, sizeof line, "hospital-%d %s\n", i + 1, s_pub[i].sign_z85);
        strcat(list, line);
    }
    fl_test_write(s_dir, "enrolled.txt", list);
    fl_test_consortium_split(s_dir, S_NODES, FL_TEST_FLNODE, FL_TEST_SOURCE_DIR);
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = tcp://127.0.0.1:*\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "rounds = %d\nmin_nodes = 2\nround_timeout_ms = 5000\njoin_timeout_ms = 120000\n"
             "max_abandoned = 20\n%s%s%s"
             "[model]\nlayers = 30 8 1\n"
             "[training]\nsampling_rate = 0.25\nclip_norm = 1\nlearning_rate = 1\n"
             "local_steps = 3\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntest_data = data/test.csv\n"
             "[secagg]\nstep_timeout_ms = 1500\nmax_weight = 1000\n",
             rounds, state_dir ? "state_dir = state\n" : "",
             state_dir ? "" : "admin = state/admin.sock\n", extra, FL_TEST_SOURCE_DIR);
    fl_test_write(s_dir, "coordinator.ini", text);
    if (!state_dir) {
        snprintf(text, sizeof text, "%s/state", s_dir);
        mkdir(text, 0700);
    }
    snprintf(text, sizeof text, "%s/coordinator.ini", s_dir);
    {
        char *argv[] = {FL_TEST_FLCOORD, "run", "--config", text, NULL};
        s_coord = fl_test_spawn(s_dir, "coordinator.log", argv);
    }
    cr_assert_eq(fl_test_wait_file(s_dir, "endpoint", ep, sizeof ep, 20.0), 0);
    /* The admin socket is bound before the endpoint file is written. */
    for (int i = 1; i <= S_NODES; i++)
        fl_test_consortium_node_config(s_dir, i, ep, 50.0, "", "peers.txt", FL_TEST_SOURCE_DIR);
}

static void s_consortium(int enrolled, int rounds, int state_dir)
{
    s_consortium_x(enrolled, rounds, state_dir, "");
}

static pid_t s_start_node(int i)
{
    return fl_test_consortium_node(s_dir, i + 1, FL_TEST_FLNODE);
}

static long s_log(const char *name, char *buf, size_t cap)
{
    return fl_test_read(s_dir, name, buf, cap);
}

/* ------------------------------------------------------ no training */

Test(flctl, status_reports_phase_round_and_nodes_of_a_waiting_coordinator)
{
    fl_json *j;
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "status"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "consortium     it"), "%s", s_out);
    cr_assert_not_null(strstr(s_out, "waiting for nodes"), "%s", s_out);
    cr_assert_not_null(strstr(s_out, "0 online of 2 enrolled"), "%s", s_out);
    j = s_json("status", NULL);
    cr_assert_str_eq(s_str(j, "consortium"), "it");
    cr_assert_str_eq(s_str(j, "phase"), "waiting");
    cr_assert_eq(s_num(j, "round"), 1);
    cr_assert_eq(s_num(j, "rounds_planned"), 10);
    cr_assert_eq(s_num(j, "nodes_enrolled"), 2);
    cr_assert_eq(s_num(j, "nodes_online"), 0);
    cr_assert_eq(fl_admin_json_get(j, "last_metrics")->type, FL_JSON_NULL);
    fl_admin_json_free(j);
}

Test(flctl, admin_socket_file_is_private_to_the_coordinators_user)
{
    struct stat st;
    s_consortium(2, 10, 1);
    cr_assert_eq(stat(s_sock, &st), 0);
    cr_assert(S_ISSOCK(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
}

Test(flctl, socket_from_environment_is_used_when_no_option_is_given)
{
    s_consortium(2, 10, 1);
    setenv("FLCTL_SOCKET", s_sock, 1);
    cr_assert_eq(s_flctl("status"), 0, "%s", s_out);
    unsetenv("FLCTL_SOCKET");
}

Test(flctl, nodes_lists_enrolled_names_keys_and_offline_state)
{
    fl_json *j;
    const fl_json *a;
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "nodes"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "NAME"), "%s", s_out);
    cr_assert_not_null(strstr(s_out, s_pub[1].sign_z85), "%s", s_out);
    j = s_json("nodes", NULL);
    a = fl_admin_json_get(j, "nodes");
    cr_assert_not_null(a);
    cr_assert_str_eq(s_str(a->child, "name"), "hospital-1");
    cr_assert_str_eq(s_str(a->child, "identity_key"), s_pub[0].sign_z85);
    cr_assert_eq(fl_admin_json_get(a->child, "online")->boolean, 0);
    cr_assert_eq(fl_admin_json_get(a->child, "epsilon")->type, FL_JSON_NULL);
    cr_assert_str_eq(s_str(a->child->next, "name"), "hospital-2");
    cr_assert_null(a->child->next->next);
    fl_admin_json_free(j);
}

Test(flctl, enroll_adds_the_node_in_memory_and_in_the_file_that_a_restart_reads)
{
    char pub[256], text[4096];
    fl_json *j;
    s_consortium(2, 10, 1);
    snprintf(pub, sizeof pub, "%s/hospital-3.pub", s_dir);
    cr_assert_eq(s_flctl("--socket", s_sock, "enroll", "hospital-3", pub), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "enrolled hospital-3"), "%s", s_out);
    cr_assert_gt(fl_test_read(s_dir, "enrolled.txt", text, sizeof text), 0);
    cr_assert_not_null(strstr(text, "# test consortium"), "comments are kept: %s", text);
    cr_assert_not_null(strstr(text, s_pub[2].sign_z85), "%s", text);
    j = s_json("status", NULL);
    cr_assert_eq(s_num(j, "nodes_enrolled"), 3);
    fl_admin_json_free(j);
    /* Restarted, the coordinator knows all three from its file. */
    s_stop(&s_coord);
    snprintf(text, sizeof text, "%s/coordinator.ini", s_dir);
    {
        char *argv[] = {FL_TEST_FLCOORD, "run", "--config", text, NULL};
        s_coord = fl_test_spawn(s_dir, "coordinator.log", argv);
    }
    {
        double t0 = fl_test_now();
        while (access(s_sock, F_OK) != 0 && fl_test_now() - t0 < 20.0)
            usleep(50000);
    }
    j = s_json("nodes", NULL);
    cr_assert_str_eq(s_str(fl_admin_json_get(j, "nodes")->child->next->next, "name"),
                     "hospital-3");
    fl_admin_json_free(j);
}

Test(flctl, enroll_of_an_enrolled_name_is_refused_with_exit_4)
{
    char pub[256];
    s_consortium(2, 10, 1);
    snprintf(pub, sizeof pub, "%s/hospital-3.pub", s_dir);
    cr_assert_eq(s_flctl("--socket", s_sock, "enroll", "hospital-1", pub), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "enrolled twice"), "%s", s_out);
    /* The same key under a second name is refused too. */
    snprintf(pub, sizeof pub, "%s/hospital-1.pub", s_dir);
    cr_assert_eq(s_flctl("--socket", s_sock, "enroll", "other", pub), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "share one public key"), "%s", s_out);
}

Test(flctl, enroll_with_a_missing_key_file_fails_locally_with_exit_1)
{
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "enroll", "hospital-3", "/nonexistent.pub"), 1,
                 "%s", s_out);
    cr_assert_not_null(strstr(s_out, "/nonexistent.pub"), "%s", s_out);
}

Test(flctl, revoke_removes_the_node_from_the_list_and_the_file)
{
    char text[4096];
    fl_json *j;
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "revoke", "hospital-2"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "revoked hospital-2"), "%s", s_out);
    cr_assert_gt(fl_test_read(s_dir, "enrolled.txt", text, sizeof text), 0);
    cr_assert_null(strstr(text, "hospital-2"), "%s", text);
    cr_assert_not_null(strstr(text, "hospital-1"), "%s", text);
    j = s_json("nodes", NULL);
    cr_assert_null(fl_admin_json_get(j, "nodes")->child->next);
    fl_admin_json_free(j);
}

Test(flctl, revoke_of_an_unknown_name_is_refused_with_exit_4)
{
    fl_json *j = NULL;
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "revoke", "nobody"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "'nobody' is not enrolled"), "%s", s_out);
    /* --json still prints the reply, with ok false. */
    cr_assert_eq(s_flctl("--socket", s_sock, "--json", "revoke", "nobody"), 4, "%s", s_out);
    {
        /* stdout holds the reply; the message went to stderr (same file here). */
        char *line = strstr(s_out, "{\"ok\"");
        cr_assert_not_null(line, "%s", s_out);
        *strchr(line, '\n') = '\0';
        cr_assert_eq(fl_admin_json_parse(&j, line, strlen(line)), FL_OK, "%s", line);
    }
    cr_assert_eq(fl_admin_json_get(j, "ok")->boolean, 0);
    fl_admin_json_free(j);
}

Test(flctl, rounds_of_a_coordinator_without_state_dir_is_refused_clearly)
{
    s_consortium(2, 10, 0);
    cr_assert_eq(s_flctl("--socket", s_sock, "rounds"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "state_dir"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "round", "1"), 4, "%s", s_out);
}

Test(flctl, round_without_a_record_is_refused_and_empty_history_is_said)
{
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "rounds"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "no round on record yet"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "round", "3"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "round 3 has no record"), "%s", s_out);
}

Test(flctl, pause_and_resume_without_a_round_in_progress)
{
    fl_json *j;
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "pause"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "paused"), "%s", s_out);
    j = s_json("status", NULL);
    cr_assert_str_eq(s_str(j, "phase"), "paused");
    fl_admin_json_free(j);
    cr_assert_eq(s_flctl("--socket", s_sock, "resume"), 0, "%s", s_out);
    j = s_json("status", NULL);
    cr_assert_str_eq(s_str(j, "phase"), "waiting");
    fl_admin_json_free(j);
}

/* ---------------------------------------------------- bad requests */

/* One raw request over the admin socket; the reply in s_out. */
static int s_raw(const void *data, size_t len, int two_frames)
{
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_REQ);
    int ms = 5000, zero = 0, n;
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s", s_sock);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &ms, sizeof ms);
    cr_assert_eq(zmq_connect(s, ep), 0);
    if (two_frames)
        zmq_send(s, data, len, ZMQ_SNDMORE);
    zmq_send(s, data, len, 0);
    n = zmq_recv(s, s_out, sizeof s_out - 1, 0);
    s_out[n < 0 ? 0 : n] = '\0';
    zmq_close(s);
    zmq_ctx_term(ctx);
    return n;
}

static void s_expect_error(const char *req, const char *needle)
{
    cr_assert_gt(s_raw(req, strlen(req), 0), 0, "no reply to %s", req);
    cr_assert_not_null(strstr(s_out, "\"ok\":false"), "%s -> %s", req, s_out);
    cr_assert_not_null(strstr(s_out, needle), "%s -> %s", req, s_out);
}

Test(flctl, malformed_admin_requests_get_an_error_and_the_coordinator_carries_on)
{
    static char big[FL_ADMIN_MAX_MSG + 100];
    s_consortium(2, 10, 1);
    s_expect_error("not json", "not valid JSON");
    s_expect_error("", "not valid JSON");
    s_expect_error("{\"cmd\":\"status\"} x", "text after the value");
    s_expect_error("{\"cmd\":\"status\",\"cmd\":\"nodes\"}", "duplicate");
    s_expect_error("[\"status\"]", "string member");
    s_expect_error("{\"cmd\":5}", "string member");
    s_expect_error("{\"cmd\":\"status\",\"extra\":1}", "unknown field 'extra'");
    s_expect_error("{\"cmd\":\"reboot\"}", "unknown command");
    s_expect_error("{\"cmd\":\"round\",\"round\":-1}", "integer in");
    s_expect_error("{\"cmd\":\"round\",\"round\":1.5}", "integer in");
    s_expect_error("{\"cmd\":\"revoke\"}", "needs the string field 'name'");
    s_expect_error("{\"cmd\":\"enroll\",\"name\":\"x\",\"key\":\"short\"}", "Z85");
    s_expect_error("{\"cmd\":\"revoke\",\"name\":\"\\ud800\"}", "surrogate");
    s_expect_error("{\"cmd\":\"status\",\"a\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}",
                   "nested too deeply");
    s_expect_error("{\"cmd\":\"st\xff\"}", "UTF-8");
    memset(big, ' ', sizeof big);
    memcpy(big, "{\"cmd\":\"status\"}", 16);
    cr_assert_gt(s_raw(big, sizeof big, 0), 0);
    cr_assert_not_null(strstr(s_out, "larger than"), "%s", s_out);
    cr_assert_gt(s_raw("{\"cmd\":\"status\"}", 16, 1), 0);
    cr_assert_not_null(strstr(s_out, "exactly one frame"), "%s", s_out);
    /* Still serving, and its training loop still alive. */
    cr_assert_eq(s_flctl("--socket", s_sock, "status"), 0, "%s", s_out);
    cr_assert(fl_test_alive(s_coord));
}

/* ------------------------------------------------ client-side errors */

Test(flctl, bad_arguments_exit_2_with_a_message)
{
    struct {
        char *args[10];
        const char *needle;
    } cases[] = {
        {{NULL}, "a command is required"},
        {{"frobnicate", NULL}, "unknown command 'frobnicate'"},
        {{"status", "--frob", NULL}, "unknown or incomplete option"},
        {{"status", "extra", NULL}, "unexpected argument 'extra'"},
        {{"round", NULL}, "round number N is required"},
        {{"round", "abc", NULL}, "not a round number"},
        {{"round", "0", NULL}, "not a round number"},
        {{"rounds", "--last", "0", NULL}, "--last '0'"},
        {{"rounds", "--last", NULL}, "unknown or incomplete option"},
        {{"status", "--last", "3", NULL}, "--last is an option of 'rounds'"},
        {{"enroll", "hospital-9", NULL}, "NAME and NODE_PUB_FILE are required"},
        {{"revoke", NULL}, "NAME is required"},
        {{"status", "--timeout", "x", NULL}, "--timeout 'x'"},
        {{"status", "--socket", "", NULL}, "--socket needs a path"},
        {{"nodes", "extra", NULL}, "unexpected argument 'extra'"},
        {{"rounds", "7", NULL}, "unexpected argument '7'"},
        {{"round", "1", "2", NULL}, "unexpected argument '2'"},
        {{"enroll", "a", "b", "c", NULL}, "unexpected argument 'c'"},
        {{"revoke", "a", "b", NULL}, "unexpected argument 'b'"},
        {{"pause", "now", NULL}, "unexpected argument 'now'"},
        {{"resume", "now", NULL}, "unexpected argument 'now'"},
        {{"start", "now", NULL}, "unexpected argument 'now'"},
        {{"start", "--rounds", "0", NULL}, "--rounds '0' must be an integer"},
        {{"start", "--rounds", "x", NULL}, "--rounds 'x'"},
        {{"status", "--rounds", "3", NULL}, "--rounds is an option of 'start'"},
        {{"set", NULL}, "KEY and VALUE are required"},
        {{"set", "training.local_steps", NULL}, "KEY and VALUE are required"},
        {{"set", "training.clip_norm", "2", NULL}, "'training.clip_norm' is not a setting"},
        {{"set", "training.local_steps", "", NULL}, "the value of training.local_steps is empty"},
        {{"set", "a", "b", "c", NULL}, "unexpected argument 'c'"},
        {{"model", NULL}, "the subcommand 'export' is required"},
        {{"model", "list", NULL}, "unknown subcommand 'list'"},
        {{"model", "export", "--out", "m.onnx", NULL}, "--format safetensors|onnx is required"},
        {{"model", "export", "--format", "onnx", NULL}, "--out FILE is required"},
        {{"model", "export", "--format", "pickle", "--out", "m", NULL},
         "--format 'pickle' is not safetensors or onnx"},
        {{"model", "export", "--format", "onnx", "--out", "", NULL}, "--out needs a file name"},
        {{"model", "export", "--format", "onnx", "--out", "m", "--version", "0", NULL},
         "--version '0' must be a model version"},
        {{"model", "export", "--format", "onnx", "--out", "m", "--version", NULL},
         "unknown or incomplete option"},
        {{"status", "--format", "onnx", NULL}, "--format is an option of 'model export'"},
        {{"status", "--out", "m", NULL}, "--out is an option of 'model export'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(s_flctl_v(cases[i].args), 2, "case %zu: %s", i, s_out);
        cr_assert_not_null(strstr(s_out, cases[i].needle), "case %zu: %s", i, s_out);
        cr_assert_not_null(strstr(s_out, "usage: flctl"), "case %zu: %s", i, s_out);
    }
}

Test(flctl, help_on_the_program_and_every_command_exits_0)
{
    const char *cmds[] = {"status", "nodes", "rounds", "round", "enroll", "revoke", "pause",
                          "resume", "start", "set", "model"};
    cr_assert_eq(s_flctl("--help"), 0);
    cr_assert_not_null(strstr(s_out, "Exit status"), "%s", s_out);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char expect[64];
        cr_assert_eq(s_flctl((char *)cmds[i], "--help"), 0, "%s", cmds[i]);
        snprintf(expect, sizeof expect, "usage: flctl %s", cmds[i]);
        cr_assert_not_null(strstr(s_out, expect), "%s: %s", cmds[i], s_out);
    }
    /* set's help lists every key it accepts, each with its meaning. */
    cr_assert_eq(s_flctl("set", "--help"), 0);
    {
        const char *keys[] = {"coordinator.min_nodes", "coordinator.round_timeout_ms",
                              "secagg.step_timeout_ms", "secagg.threshold",
                              "training.local_steps", "training.learning_rate",
                              "server.optimizer", "server.learning_rate", "server.momentum",
                              "server.beta1", "server.beta2", "server.tau"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            cr_assert_not_null(strstr(s_out, keys[i]), "%s: %s", keys[i], s_out);
    }
    cr_assert_eq(s_flctl("model", "export", "--help"), 0);
    cr_assert_not_null(strstr(s_out, "--format safetensors"), "%s", s_out);
    /* --version is flctl's own everywhere except after 'model'. */
    cr_assert_eq(s_flctl("--version"), 0);
    cr_assert_not_null(strstr(s_out, "flctl 0."), "%s", s_out);
}

Test(flctl, coordinator_not_running_exits_3_within_the_timeout)
{
    char stale[256];
    struct sockaddr_un sa;
    int fd;
    double t0 = fl_test_now();
    cr_assert_eq(s_flctl("--socket", "/nonexistent/admin.sock", "status"), 3, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "is flcoord running"), "%s", s_out);
    /* A socket file left behind by a killed coordinator: nobody listens. */
    snprintf(stale, sizeof stale, "%s/stale.sock", s_dir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    cr_assert_lt(strlen(stale), sizeof sa.sun_path);
    memcpy(sa.sun_path, stale, strlen(stale) + 1);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    t0 = fl_test_now();
    cr_assert_eq(s_flctl("--socket", stale, "--timeout", "1", "status"), 3, "%s", s_out);
    cr_assert_lt(fl_test_now() - t0, 5.0, "flctl waited too long");
    cr_assert_not_null(strstr(s_out, "no answer"), "%s", s_out);
}

Test(flctl, every_command_reports_an_absent_coordinator_with_exit_3)
{
    char pub[256], out[256];
    fl_test_consortium_keys(s_dir, 1, 1, "enrolled.txt", NULL);
    snprintf(pub, sizeof pub, "%s/hospital-1.pub", s_dir);
    snprintf(out, sizeof out, "%s/m.onnx", s_dir);
    {
        struct {
            char *args[10];
        } cases[] = {
            {{"status", NULL}},
            {{"nodes", NULL}},
            {{"rounds", "--last", "3", NULL}},
            {{"round", "1", NULL}},
            {{"enroll", "hospital-1", pub, NULL}},
            {{"revoke", "hospital-1", NULL}},
            {{"pause", NULL}},
            {{"resume", NULL}},
            {{"start", "--rounds", "2", NULL}},
            {{"set", "training.local_steps", "4", NULL}},
            {{"model", "export", "--format", "onnx", "--out", out, NULL}},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char *argv[14] = {"--socket", "/nonexistent/admin.sock", "--timeout", "1"};
            int n = 4;
            for (int k = 0; cases[i].args[k]; k++)
                argv[n++] = cases[i].args[k];
            argv[n] = NULL;
            cr_assert_eq(s_flctl_v(argv), 3, "%s: %s", cases[i].args[0], s_out);
            cr_assert_not_null(strstr(s_out, "is flcoord running"), "%s: %s", cases[i].args[0],
                               s_out);
        }
    }
    cr_assert_neq(access(out, F_OK), 0, "no export without a coordinator");
}

/* ------------------------------------------------------- training */

Test(flctl, pause_stops_new_rounds_and_resume_continues_them, .timeout = 240)
{
    double done = 0, held = 0;
    fl_json *j;
    s_consortium(2, 200, 1);
    s_node[0] = s_start_node(0);
    s_node[1] = s_start_node(1);
    cr_assert_eq(s_wait_status(NULL, 2, 60.0, &done), 0, "no 2 rounds within 60 s");
    cr_assert_eq(s_flctl("--socket", s_sock, "pause"), 0, "%s", s_out);
    cr_assert_eq(s_wait_status("paused", 0, 30.0, &held), 0, "not paused within 30 s");
    j = s_json("status", NULL);
    {
        double round = s_num(j, "round");
        fl_admin_json_free(j);
        usleep(2500000);
        j = s_json("status", NULL);
        cr_assert_str_eq(s_str(j, "phase"), "paused");
        cr_assert_eq(s_num(j, "rounds_completed"), held, "a round completed while paused");
        cr_assert_eq(s_num(j, "round"), round);
        cr_assert_eq(s_num(j, "nodes_online"), 2, "nodes stay connected while paused");
        cr_assert_neq(fl_admin_json_get(j, "last_metrics")->type, FL_JSON_NULL);
        fl_admin_json_free(j);
    }
    /* The history shows the completed rounds with their metrics. */
    cr_assert_eq(s_flctl("--socket", s_sock, "rounds", "--last", "2"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "completed"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "round", "1"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "completed"), "%s", s_out);
    j = s_json("rounds", NULL);
    {
        const fl_json *r1 = fl_admin_json_get(j, "rounds")->child;
        cr_assert_eq(s_num(r1, "round"), 1);
        cr_assert_str_eq(s_str(r1, "outcome"), "completed");
        cr_assert_eq(s_num(r1, "participants"), 2);
        cr_assert_eq(s_num(r1, "contributors"), 2);
        cr_assert_gt(s_num(fl_admin_json_get(r1, "metrics"), "accuracy"), 0.0);
    }
    fl_admin_json_free(j);
    j = s_json("nodes", NULL);
    cr_assert_gt(s_num(fl_admin_json_get(j, "nodes")->child, "epsilon"), 0.0);
    fl_admin_json_free(j);
    cr_assert_eq(s_flctl("--socket", s_sock, "resume"), 0, "%s", s_out);
    cr_assert_eq(s_wait_status(NULL, held + 1, 30.0, &done), 0,
                 "no round completed within 30 s of resume");
}

Test(flctl, revoking_a_node_in_training_drops_it_from_the_next_round_and_refuses_its_key,
     .timeout = 240)
{
    static char log[1 << 20];
    char *after;
    double done = 0;
    fl_json *j;
    int rc;

    s_consortium(3, 200, 1);
    for (int i = 0; i < S_NODES; i++)
        s_node[i] = s_start_node(i);
    cr_assert_eq(s_wait_status(NULL, 2, 60.0, &done), 0, "no 2 rounds within 60 s");
    cr_assert_eq(s_flctl("--socket", s_sock, "revoke", "hospital-3"), 0, "%s", s_out);
    /* Rounds go on without it: three more than had completed at the revoke
     * (rounds are quick; the count from before the revoke may be stale). */
    j = s_json("status", NULL);
    done = s_num(j, "rounds_completed");
    fl_admin_json_free(j);
    cr_assert_eq(s_wait_status(NULL, done + 3, 60.0, NULL), 0, "training stopped after revoke");
    j = s_json("status", NULL);
    cr_assert_eq(s_num(j, "nodes_enrolled"), 2);
    cr_assert_eq(s_num(j, "nodes_online"), 2);
    fl_admin_json_free(j);
    /* The log file may lag the admin socket a little (a loaded machine, a
     * sanitizer build): read it until the lines are there, bounded. */
    {
        double t0 = fl_test_now();
        for (;;) {
            cr_assert_gt(s_log("coordinator.log", log, sizeof log), 0);
            after = strstr(log, "operator revoked node hospital-3");
            if ((after && strstr(after, "started with 2 nodes")) || fl_test_now() - t0 > 10.0)
                break;
            usleep(200000);
        }
    }
    cr_assert_not_null(after, "%s", log);
    cr_assert_not_null(strstr(after, "started with 2 nodes"), "%s", after);
    cr_assert_null(strstr(after, "hospital-3 trained and joined"), "%s", after);
    /* The revoked node, restarted with its key, is refused at the handshake. */
    s_stop(&s_node[2]);
    s_node[2] = s_start_node(2);
    rc = fl_test_wait(s_node[2], 30.0);
    s_node[2] = -1;
    cr_assert_eq(rc, 3, "the revoked node exited %d", rc);
    cr_assert_gt(s_log("hospital-3.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "refused this node's key"), "%s", log);
}

/* ------------------------------------------------- start, set, model */

Test(flctl, start_moves_an_idle_coordinator_to_training_and_runs_more_rounds_after_done,
     .timeout = 240)
{
    fl_json *j;
    double t0;
    s_consortium_x(2, 1, 1, "autostart = 0\nexit_when_done = 0\n");
    s_node[0] = s_start_node(0);
    s_node[1] = s_start_node(1);
    /* Idle: nodes join, no round starts. */
    t0 = fl_test_now();
    for (;;) {
        j = s_json("status", NULL);
        cr_assert_str_eq(s_str(j, "phase"), "idle");
        cr_assert_eq(s_num(j, "rounds_completed"), 0);
        if (s_num(j, "nodes_online") == 2 && fl_test_now() - t0 > 2.0) {
            fl_admin_json_free(j);
            break;
        }
        fl_admin_json_free(j);
        cr_assert_lt(fl_test_now() - t0, 60.0, "the nodes did not join within 60 s");
        usleep(200000);
    }
    cr_assert_eq(s_flctl("--socket", s_sock, "status"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "idle (waiting for 'flctl start')"), "%s", s_out);
    /* Paused first, so that training is started but holds still: a second
     * start is then refused whatever the timing. */
    cr_assert_eq(s_flctl("--socket", s_sock, "pause"), 0, "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "start"), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "started: phase"), "%s", s_out);
    cr_assert_not_null(strstr(s_out, "1 rounds planned"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "start"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "already running"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "resume"), 0, "%s", s_out);
    cr_assert_eq(s_wait_status("done", 1, 60.0, NULL), 0, "round 1 did not complete in 60 s");
    /* Done: start needs a number of rounds, then runs that many more. */
    cr_assert_eq(s_flctl("--socket", s_sock, "start"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "--rounds N"), "%s", s_out);
    /* One more: the nodes planned their privacy budget for the configured
     * rounds plus one in reserve, and decline rounds beyond it. */
    cr_assert_eq(s_flctl("--socket", s_sock, "--json", "start", "--rounds", "1"), 0, "%s",
                 s_out);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s", s_out);
    cr_assert_eq(s_num(j, "rounds_planned"), 2);
    fl_admin_json_free(j);
    cr_assert_eq(s_wait_status("done", 2, 60.0, NULL), 0, "round 2 did not complete");
}

Test(flctl, set_local_steps_is_what_the_nodes_train_from_the_round_it_names, .timeout = 240)
{
    static char log[1 << 20];
    char want[96];
    double from;
    fl_json *j;
    s_consortium(2, 200, 1);
    s_node[0] = s_start_node(0);
    s_node[1] = s_start_node(1);
    cr_assert_eq(s_wait_status(NULL, 1, 60.0, NULL), 0, "no round within 60 s");
    cr_assert_eq(s_flctl("--socket", s_sock, "--json", "set", "training.local_steps", "5"), 0,
                 "%s", s_out);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s", s_out);
    cr_assert_str_eq(s_str(j, "key"), "training.local_steps");
    cr_assert_str_eq(s_str(j, "value"), "5");
    from = s_num(j, "applies_from_round");
    cr_assert_geq(from, 2);
    fl_admin_json_free(j);
    /* The human form, and a value normalised by the coordinator. */
    cr_assert_eq(s_flctl("--socket", s_sock, "set", "training.learning_rate", "0.50"), 0, "%s",
                 s_out);
    cr_assert_not_null(strstr(s_out, "set training.learning_rate = 0.5, from round"), "%s",
                       s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "set", "server.optimizer", "fedavgm"), 0, "%s",
                 s_out);
    /* Refusals change nothing. */
    cr_assert_eq(s_flctl("--socket", s_sock, "set", "training.local_steps", "0"), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "refused by the coordinator"), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "set", "training.learning_rate", "fast"), 4, "%s",
                 s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "set", "server.optimizer", "sgd"), 4, "%s", s_out);
    /* The nodes trained 3 steps before and 5 from that round on. */
    cr_assert_eq(s_wait_status(NULL, from, 60.0, NULL), 0, "round %.0f did not complete", from);
    cr_assert_gt(s_log("hospital-1.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "round 1: trained 3 DP-SGD steps"), "%s", log);
    snprintf(want, sizeof want, "round %.0f: trained 5 DP-SGD steps", from);
    cr_assert_not_null(strstr(log, want), "%s", log);
    snprintf(want, sizeof want, "round %.0f: trained 3 DP-SGD steps", from);
    cr_assert_null(strstr(log, want), "%s", log);
}

Test(flctl, model_export_before_the_first_round_is_refused)
{
    char out[256];
    snprintf(out, sizeof out, "%s/m.onnx", s_dir);
    s_consortium(2, 10, 1);
    cr_assert_eq(s_flctl("--socket", s_sock, "model", "export", "--format", "onnx", "--out",
                         out), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "no round has completed"), "%s", s_out);
    cr_assert_neq(access(out, F_OK), 0);
}

Test(flctl, model_export_of_a_coordinator_without_state_dir_is_refused)
{
    char out[256];
    snprintf(out, sizeof out, "%s/m.safetensors", s_dir);
    s_consortium(2, 10, 0);
    cr_assert_eq(s_flctl("--socket", s_sock, "model", "export", "--format", "safetensors",
                         "--out", out), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "state_dir"), "%s", s_out);
    cr_assert_neq(access(out, F_OK), 0);
}

/* Runs an independent reader (argv[0] absolute); its output goes to s_out.
 * Returns its exit status; 77 means the tool is not installed. */
static int s_reader(char *const *argv)
{
    int rc = fl_test_wait(fl_test_spawn(s_dir, "reader.out", argv), 60.0);
    if (fl_test_read(s_dir, "reader.out", s_out, sizeof s_out) < 0)
        s_out[0] = '\0';
    if (rc == 77)
        fprintf(stderr, "SKIPPED (tool absent): %s: %s\n", argv[1], s_out);
    return rc;
}

Test(flctl, model_export_writes_files_that_independent_readers_accept, .timeout = 240)
{
    char st[256], ox[256], bad[256], in[256], pred[256], sha[65], path[4096];
    fl_json *j = NULL;
    fl_model_file mf;
    fl_mlp *mlp = NULL;
    const uint32_t sizes[] = {30, 8, 1};
    float x[8 * 30], probs[8];

    snprintf(st, sizeof st, "%s/global.safetensors", s_dir);
    snprintf(ox, sizeof ox, "%s/global.onnx", s_dir);
    s_consortium_x(2, 2, 1, "exit_when_done = 0\n");
    s_node[0] = s_start_node(0);
    s_node[1] = s_start_node(1);
    cr_assert_eq(s_wait_status("done", 2, 90.0, NULL), 0, "2 rounds did not complete");

    /* What the coordinator says about its latest model. */
    cr_assert_gt(s_raw("{\"cmd\":\"model\"}", 15, 0), 0);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s", s_out);
    cr_assert_eq(s_num(j, "version"), 2, "%s", s_out);
    snprintf(sha, sizeof sha, "%s", s_str(j, "sha256"));
    snprintf(path, sizeof path, "%s", s_str(j, "path"));
    fl_admin_json_free(j);

    cr_assert_eq(s_flctl("--socket", s_sock, "model", "export", "--format", "safetensors",
                         "--out", st), 0, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "wrote "), "%s", s_out);
    cr_assert_not_null(strstr(s_out, "model version 2, 257 parameters, sigmoid"), "%s", s_out);
    cr_assert_not_null(strstr(s_out, sha), "%s", s_out);
    cr_assert_eq(s_flctl("--socket", s_sock, "--json", "model", "export", "--format", "onnx",
                         "--out", ox), 0, "%s", s_out);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s", s_out);
    cr_assert_str_eq(s_str(j, "format"), "onnx");
    cr_assert_str_eq(s_str(j, "out"), ox);
    cr_assert_eq(s_num(j, "version"), 2);
    cr_assert_str_eq(s_str(j, "sha256"), sha);
    fl_admin_json_free(j);

    /* An older version is another model. */
    snprintf(bad, sizeof bad, "%s/v1.onnx", s_dir);
    cr_assert_eq(s_flctl("--socket", s_sock, "--json", "model", "export", "--version", "1",
                         "--format", "onnx", "--out", bad), 0, "%s", s_out);
    cr_assert_eq(fl_admin_json_parse(&j, s_out, strlen(s_out)), FL_OK, "%s", s_out);
    cr_assert_eq(s_num(j, "version"), 1);
    cr_assert_str_neq(s_str(j, "sha256"), sha);
    fl_admin_json_free(j);
    /* A version that does not exist is refused; an unwritable --out fails locally. */
    cr_assert_eq(s_flctl("--socket", s_sock, "model", "export", "--version", "9", "--format",
                         "onnx", "--out", bad), 4, "%s", s_out);
    cr_assert_not_null(strstr(s_out, "does not exist"), "%s", s_out);
    snprintf(bad, sizeof bad, "%s/no-such-folder/m.onnx", s_dir);
    cr_assert_eq(s_flctl("--socket", s_sock, "model", "export", "--format", "onnx", "--out",
                         bad), 1, "%s", s_out);
    cr_assert_not_null(strstr(s_out, bad), "%s", s_out);

    /* Predictions of the model file itself (fl_mlp) on a deterministic batch,
     * for the readers to compare with. */
    cr_assert_eq(fl_model_file_load(&mf, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_mlp_new(&mlp, sizes, 3, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    cr_assert_eq(mf.num_params, fl_mlp_num_params(mlp));
    memcpy(fl_mlp_params(mlp), mf.params, mf.num_params * sizeof(float));
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = (float)((int)(i * 37 % 23) - 11) / 7.0f;
    cr_assert_eq(fl_mlp_predict(mlp, x, 8, probs), FL_OK);
    fl_mlp_free(mlp);
    fl_model_file_clear(&mf);
    snprintf(in, sizeof in, "%s/batch.f32", s_dir);
    snprintf(pred, sizeof pred, "%s/pred.f32", s_dir);
    {
        FILE *f = fopen(in, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(x, sizeof x, 1, f), 1);
        fclose(f);
        f = fopen(pred, "wb");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(probs, sizeof probs, 1, f), 1);
        fclose(f);
    }
    {
        char *argv[] = {"/usr/bin/python3", FL_TEST_SOURCE_DIR "/tests/export/check_safetensors.py",
                        st, "--input", in, "--shape", "30", "--pred", pred,
                        "--expect-sha256", sha, "--expect-version", "2", NULL};
        int rc = s_reader(argv);
        cr_assert(rc == 0 || rc == 77, "check_safetensors.py exited %d: %s", rc, s_out);
    }
    {
        char *argv[] = {"/usr/bin/python3", FL_TEST_SOURCE_DIR "/tests/export/check_onnx.py", ox,
                        "--outputs", "1", "--expect-sha256", sha, "--expect-version", "2",
                        NULL};
        int rc = s_reader(argv);
        cr_assert(rc == 0 || rc == 77, "check_onnx.py exited %d: %s", rc, s_out);
    }
    if (FL_TEST_NODE[0]) {
        char *argv[] = {FL_TEST_NODE, FL_TEST_SOURCE_DIR "/tests/export/check_onnx_ort.mjs", ox,
                        "--input", in, "--shape", "30", "--pred", pred, NULL};
        int rc = s_reader(argv);
        cr_assert(rc == 0 || rc == 77, "check_onnx_ort.mjs exited %d: %s", rc, s_out);
    } else {
        fprintf(stderr, "SKIPPED: check_onnx_ort.mjs: node is not installed (run scripts/setup.sh)\n");
    }
}
