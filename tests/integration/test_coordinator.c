/*
 * Integration tests of the coordinator daemon as a real process on
 * 127.0.0.1: it refuses unenrolled keys at the CURVE handshake, answers
 * malformed frames with an Error and carries on, binds messages to the
 * enrolled name, and an unenrolled flnode exits with its documented code.
 */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "nn/fl_dataset.h"
#include "proto/fl_wire.h"
#include "identity/fl_identity.h"
#include "transport/fl_transport.h"

static char s_dir[128];
static char s_endpoint[256];
static fl_identity_public s_coord_pub;
static pid_t s_coord;

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void s_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", s_dir, name);
}

static void s_write(const char *name, const char *text)
{
    char p[256];
    FILE *f;
    s_path(p, sizeof p, name);
    f = fopen(p, "w");
    cr_assert_not_null(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

/* Writes DIR/NAME.key and DIR/NAME.pub for a fresh identity; *pub gets
 * its public half (identity-key for enrollment, public-key for CURVE). */
static void s_make_key(const char *name, fl_identity_public *pub)
{
    fl_identity *id = NULL;
    char sec[256], pubf[256], file[64];
    snprintf(file, sizeof file, "%s.key", name);
    s_path(sec, sizeof sec, file);
    snprintf(file, sizeof file, "%s.pub", name);
    s_path(pubf, sizeof pubf, file);
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, name, sec, pubf), FL_OK, "%s", fl_error_last());
    *pub = *fl_identity_public_of(id);
    fl_identity_free(id);
}

static pid_t s_spawn(const char *prog, const char *cmd, const char *config, const char *log)
{
    char logp[256];
    pid_t pid;
    s_path(logp, sizeof logp, log);
    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(prog, prog, cmd, "--config", config, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void s_start_coordinator(void)
{
    fl_identity_public hospital_pub;
    char text[2048], cfg[256], epf[256];
    double t0;

    fl_test_dir_new(s_dir, sizeof s_dir, "it");
    s_make_key("coordinator", &s_coord_pub);
    s_make_key("hospital-a", &hospital_pub);
    snprintf(text, sizeof text, "# test consortium\nhospital-a %s\n",
             hospital_pub.sign_z85);
    s_write("enrolled.txt", text);
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = tcp://127.0.0.1:*\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "rounds = 1\nmin_nodes = 1\nround_timeout_ms = 20000\njoin_timeout_ms = 30000\n"
             "[model]\nlayers = 30 4 1\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\n"
             "[secagg]\nenabled = 0\n",
             FL_TEST_SOURCE_DIR);
    s_write("coordinator.ini", text);
    s_path(cfg, sizeof cfg, "coordinator.ini");
    s_coord = s_spawn(FL_TEST_FLCOORD, "run", cfg, "coordinator.log");
    s_path(epf, sizeof epf, "endpoint");
    t0 = s_now();
    while (s_now() - t0 < 20.0) { /* bounded: 20 s */
        FILE *f = fopen(epf, "r");
        if (f) {
            int ok = fgets(s_endpoint, sizeof s_endpoint, f) != NULL;
            fclose(f);
            if (ok) {
                s_endpoint[strcspn(s_endpoint, "\n")] = '\0';
                return;
            }
        }
        usleep(50000);
    }
    cr_assert_fail("the coordinator did not publish its endpoint within 20 s");
}

static void s_stop_coordinator(void)
{
    if (s_coord > 0) {
        kill(s_coord, SIGTERM);
        waitpid(s_coord, NULL, 0);
        s_coord = 0;
    }
    fl_test_dir_remove(s_dir);
}

static int s_alive(pid_t pid)
{
    return waitpid(pid, NULL, WNOHANG) == 0;
}

/* Connects a client with key `name` (made fresh in the test dir). */
static void *s_client(void *ctx, const char *name, const char *monitor_ep)
{
    fl_identity_public pub;
    char sec[256], file[64];
    fl_identity *id = NULL;
    void *sock = NULL;
    snprintf(file, sizeof file, "%s.key", name);
    s_path(sec, sizeof sec, file);
    if (access(sec, F_OK) != 0)
        s_make_key(name, &pub);
    cr_assert_eq(fl_identity_load(&id, sec), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_transport_client(&sock, ctx, id, s_coord_pub.curve_z85, s_endpoint,
                                     monitor_ep),
                 FL_OK, "%s", fl_error_last());
    fl_identity_free(id);
    return sock;
}

/* Waits (bounded) for one envelope from the coordinator. */
static Fl__Envelope *s_expect(void *sock, double seconds)
{
    double t0 = s_now();
    while (s_now() - t0 < seconds) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        fl_transport_msg m;
        Fl__Envelope *env = NULL;
        zmq_poll(&it, 1, 100);
        if (fl_transport_recv(sock, 0, &m) != FL_OK)
            continue;
        cr_assert_eq(fl_wire_decode(&env, zmq_msg_data(&m.payload), zmq_msg_size(&m.payload), "it"),
                     FL_OK, "coordinator sent an invalid envelope: %s", fl_error_last());
        fl_transport_msg_close(&m);
        return env;
    }
    return NULL;
}

TestSuite(coordinator_process, .init = s_start_coordinator, .fini = s_stop_coordinator,
          .timeout = 120);

Test(coordinator_process, refuses_a_node_key_that_is_not_enrolled)
{
    void *ctx = zmq_ctx_new();
    void *sock = s_client(ctx, "intruder", "inproc://mon");
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    fl_transport_event ev = FL_TRANSPORT_EV_NONE;
    double t0 = s_now();
    cr_assert_eq(zmq_connect(mon, "inproc://mon"), 0);
    while (s_now() - t0 < 10.0 && ev != FL_TRANSPORT_EV_REFUSED) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 100);
        fl_transport_event e = fl_transport_event_read(mon);
        cr_assert_neq(e, FL_TRANSPORT_EV_CONNECTED, "an unenrolled key completed the handshake");
        if (e != FL_TRANSPORT_EV_NONE)
            ev = e;
    }
    cr_assert_eq(ev, FL_TRANSPORT_EV_REFUSED, "the handshake was not refused within 10 s");
    cr_assert(s_alive(s_coord), "the coordinator died");
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(mon);
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

Test(coordinator_process, answers_malformed_frames_with_an_error_and_carries_on)
{
    void *ctx = zmq_ctx_new();
    void *sock = s_client(ctx, "hospital-a", NULL);
    static const unsigned char garbage[] = {0xff, 0x01, 0x02, 'n', 'o', 't', ' ', 'p', 'b'};
    Fl__Envelope *env;

    /* 1. Bytes that are not a protobuf envelope at all. */
    cr_assert_geq(zmq_send(sock, garbage, sizeof garbage, 0), 0);
    env = s_expect(sock, 10.0);
    cr_assert_not_null(env, "no answer to a malformed frame within 10 s");
    cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ERROR);
    cr_assert_eq(env->error->code, FL_EPROTO);
    cr_assert_not_null(strstr(env->error->message, "not a valid protocol envelope"), "%s",
                       env->error->message);
    fl_wire_free(env);

    /* 2. Two frames where one is expected. */
    cr_assert_geq(zmq_send(sock, "a", 1, ZMQ_SNDMORE), 0);
    cr_assert_geq(zmq_send(sock, "b", 1, 0), 0);
    env = s_expect(sock, 10.0);
    cr_assert_not_null(env);
    cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ERROR);
    cr_assert_not_null(strstr(env->error->message, "exactly one frame"), "%s", env->error->message);
    fl_wire_free(env);

    /* 3. A well-formed envelope with an invalid field (wrong version). */
    {
        Fl__Envelope e;
        Fl__Join j = FL__JOIN__INIT;
        uint8_t digest[32] = {0};
        fl_wire_envelope_init(&e, "it");
        e.version = 99;
        j.node_name = "hospital-a";
        j.schema_digest.len = 32;
        j.schema_digest.data = digest;
        j.num_features = 30;
        e.body_case = FL__ENVELOPE__BODY_JOIN;
        e.join = &j;
        cr_assert_eq(fl_transport_send(sock, NULL, 0, &e), FL_OK);
        env = s_expect(sock, 10.0);
        cr_assert_not_null(env);
        cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ERROR);
        cr_assert_not_null(strstr(env->error->message, "version 99"), "%s", env->error->message);
        fl_wire_free(env);
    }
    cr_assert(s_alive(s_coord), "the coordinator died on malformed input");

    /* 4. It carries on, and still checks what it must: a join with another
     *    schema, or naming another node than the key's, is refused. */
    {
        Fl__Envelope e;
        Fl__Join j = FL__JOIN__INIT;
        uint8_t wrong[32] = {1};
        fl_wire_envelope_init(&e, "it");
        j.node_name = "hospital-a";
        j.schema_digest.len = 32;
        j.schema_digest.data = wrong;
        j.num_features = 30;
        e.body_case = FL__ENVELOPE__BODY_JOIN;
        e.join = &j;
        cr_assert_eq(fl_transport_send(sock, NULL, 0, &e), FL_OK);
        env = s_expect(sock, 10.0);
        cr_assert_not_null(env);
        cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ERROR,
                     "a join with another schema must be refused");
        cr_assert_not_null(strstr(env->error->message, "schema"), "%s", env->error->message);
        fl_wire_free(env);

        /* Impersonation: a join naming another node is refused. */
        j.node_name = "hospital-b";
        cr_assert_eq(fl_transport_send(sock, NULL, 0, &e), FL_OK);
        env = s_expect(sock, 10.0);
        cr_assert_not_null(env);
        cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ERROR);
        cr_assert_eq(env->error->code, FL_EAUTH);
        fl_wire_free(env);
    }
    /* 5. And a valid join, with the consortium's schema digest, starts round
     *    1 (min_nodes = 1): the RoundStart carries the 30-4-1 model, whose
     *    parameter count is 30*4 + 4 + 4*1 + 1 = 129. */
    {
        Fl__Envelope e;
        Fl__Join j = FL__JOIN__INIT;
        fl_schema *schema = NULL;
        uint8_t digest[32];
        char path[512];
        snprintf(path, sizeof path, "%s/data/wdbc/schema.ini", FL_TEST_SOURCE_DIR);
        cr_assert_eq(fl_schema_load(&schema, path), FL_OK, "%s", fl_error_last());
        fl_schema_digest(schema, digest);
        fl_schema_free(schema);
        fl_wire_envelope_init(&e, "it");
        j.node_name = "hospital-a";
        j.schema_digest.len = 32;
        j.schema_digest.data = digest;
        j.num_features = 30;
        e.body_case = FL__ENVELOPE__BODY_JOIN;
        e.join = &j;
        cr_assert_eq(fl_transport_send(sock, NULL, 0, &e), FL_OK);
        env = s_expect(sock, 10.0);
        cr_assert_not_null(env, "no round start within 10 s of a valid join");
        cr_assert_eq(env->body_case, FL__ENVELOPE__BODY_ROUND_START, "got body %d",
                     env->body_case);
        cr_assert_eq(env->round_start->round, 1);
        cr_assert_eq(env->round_start->n_params, 129);
        fl_wire_free(env);
    }
    cr_assert(s_alive(s_coord), "the coordinator died");
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

Test(coordinator_process, unenrolled_flnode_exits_with_code_3)
{
    fl_identity_public pub;
    char text[2048], cfg[256];
    int status = 0;
    pid_t pid;
    double t0;

    s_make_key("stranger", &pub);
    snprintf(text, sizeof text,
             "[node]\nname = stranger\nconsortium = it\ncoordinator = %s\n"
             "coordinator_key = coordinator.pub\nkey = stranger.key\nidle_timeout_ms = 20000\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntrain = %s/data/wdbc/wdbc.csv\n"
             "[privacy]\nepsilon_max = 3\ndelta = 1e-5\nledger = stranger.ledger\n",
             s_endpoint, FL_TEST_SOURCE_DIR, FL_TEST_SOURCE_DIR);
    s_write("stranger.ini", text);
    s_path(cfg, sizeof cfg, "stranger.ini");
    pid = s_spawn(FL_TEST_FLNODE, "run", cfg, "stranger.log");
    t0 = s_now();
    while (s_now() - t0 < 30.0 && waitpid(pid, &status, WNOHANG) == 0)
        usleep(50000);
    if (s_now() - t0 >= 30.0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("flnode with an unenrolled key did not exit within 30 s");
    }
    cr_assert(WIFEXITED(status));
    cr_assert_eq(WEXITSTATUS(status), 3, "exit status %d", WEXITSTATUS(status));
    cr_assert(s_alive(s_coord));
}
