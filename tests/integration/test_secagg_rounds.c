/*
 * Integration tests of secure aggregation with the real flcoord and flnode
 * processes on 127.0.0.1: four hospitals (threshold 3) train with a node
 * killed in the middle of training, and the consortium completes its rounds
 * with the three that remain; the coordinator never accepts an update in the
 * clear.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dp/fl_ledger.h"
#include "identity/fl_identity.h"
#include "tests/support/fl_test_consortium.h"
#include "tests/support/fl_test_dir.h"
#include "tests/support/fl_test_proc.h"

#define S_NODES 4

static char s_dir[128];
static fl_identity_public s_pub[S_NODES];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "secagg-it");
}

static void s_teardown(void)
{
    if (!getenv("FL_TEST_KEEP"))
        fl_test_dir_remove(s_dir);
}

TestSuite(secagg_rounds, .init = s_setup, .fini = s_teardown, .timeout = 240);

static size_t s_lines(const char *name)
{
    static char buf[1 << 20];
    long n = fl_test_read(s_dir, name, buf, sizeof buf);
    size_t k = 0;
    for (long i = 0; i < n; i++)
        k += buf[i] == '\n';
    return k;
}

static pid_t s_start(void)
{
    char text[4096], cfg[256], ep[256];
    pid_t pid;

    fl_test_consortium_keys(s_dir, S_NODES, S_NODES, "enrolled.txt", s_pub);
    fl_test_consortium_split(s_dir, S_NODES, FL_TEST_FLNODE, FL_TEST_SOURCE_DIR);
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = tcp://127.0.0.1:*\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "rounds = 8\nmin_nodes = 3\nround_timeout_ms = 5000\njoin_timeout_ms = 30000\n"
             "max_abandoned = 3\nsummary_json = summary.json\n"
             "[model]\nlayers = 30 8 1\n"
             "[training]\nsampling_rate = 0.25\nclip_norm = 1\nlearning_rate = 1\n"
             "local_steps = 3\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntest_data = data/test.csv\n"
             "[secagg]\nenabled = 1\nthreshold = 3\nstep_timeout_ms = 3000\nmax_weight = 1000\n",
             FL_TEST_SOURCE_DIR);
    fl_test_write(s_dir, "coordinator.ini", text);
    snprintf(cfg, sizeof cfg, "%s/coordinator.ini", s_dir);
    {
        char *argv[] = {FL_TEST_FLCOORD, "run", "--config", cfg, NULL};
        pid = fl_test_spawn(s_dir, "coordinator.log", argv);
    }
    cr_assert_eq(fl_test_wait_file(s_dir, "endpoint", ep, sizeof ep, 20.0), 0,
                 "the coordinator did not start");
    for (int i = 1; i <= S_NODES; i++)
        fl_test_consortium_node_config(s_dir, i, ep, 5.0, "reserve_rounds = 2\n",
                                       "enrolled.txt", FL_TEST_SOURCE_DIR);
    return pid;
}

static pid_t s_node(int i)
{
    return fl_test_consortium_node(s_dir, i + 1, FL_TEST_FLNODE);
}

Test(secagg_rounds, four_hospitals_finish_after_one_is_killed_mid_training)
{
    pid_t coord = s_start(), nodes[S_NODES];
    static char log[1 << 18];
    double t0;
    int rc;

    for (int i = 0; i < S_NODES; i++)
        nodes[i] = s_node(i);
    /* Kill hospital-4 once it has trained two rounds. */
    t0 = fl_test_now();
    while (s_lines("hospital-4.ledger") < 2 && fl_test_now() - t0 < 60.0)
        usleep(2000);
    cr_assert_geq(s_lines("hospital-4.ledger"), 2, "hospital-4 did not train within 60 s");
    kill(nodes[3], SIGKILL);
    fl_test_wait(nodes[3], 10.0);

    rc = fl_test_wait(coord, 150.0);
    if (rc != 0) {
        long n = fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        cr_assert_fail("the coordinator did not finish (status %d):\n%s", rc,
                       n > 3000 ? log + n - 3000 : log);
    }
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fl_test_wait(nodes[i], 30.0), 0, "hospital-%d failed", i + 1);

    cr_assert_gt(fl_test_read(s_dir, "summary.json", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "\"rounds_completed\": 8"), "%s", log);
    cr_assert_not_null(strstr(log, "\"completed\": true"), "%s", log);
    cr_assert_gt(fl_test_read(s_dir, "coordinator.log", log, sizeof log), 0);
    cr_assert_null(strstr(log, "update from"), "an update was accepted in the clear");
    cr_assert_not_null(strstr(log, "secure aggregation complete, 3 inputs"),
                       "no round completed with the three survivors:\n%s", log);
    /* The survivors' ledgers verify, and the killed node's up to its crash. */
    for (int i = 0; i < S_NODES; i++) {
        char path[256];
        fl_ledger_status st;
        snprintf(path, sizeof path, "%s/hospital-%d.ledger", s_dir, i + 1);
        cr_assert_eq(fl_ledger_verify(path, s_pub[i].sign_pk, &st, NULL, NULL), FL_OK,
                     "hospital-%d: %s", i + 1, fl_error_last());
        /* Round 1 may start before the fourth node joins (three suffice). */
        if (i < 3)
            cr_assert_geq(st.charges, 7, "hospital-%d has %zu charges", i + 1, st.charges);
    }
}

static int s_log_has(const char *needle)
{
    static char buf[1 << 20];
    long n = fl_test_read(s_dir, "coordinator.log", buf, sizeof buf);
    return n > 0 && strstr(buf, needle) != NULL;
}

/* True once the coordinator's log has a round start after an abandonment. */
static int s_rerun_started(void)
{
    static char buf[1 << 20];
    long n = fl_test_read(s_dir, "coordinator.log", buf, sizeof buf);
    const char *a = n > 0 ? strstr(buf, "abandoned") : NULL;
    return a && strstr(a, "started with") != NULL;
}

/* Two hospitals frozen while the round under way is abandoned: on waking
 * they answer the abandoned attempt first. Those late messages carry the
 * old attempt number and are dropped, so the rerun (same round, model and
 * parties) still completes with every hospital, and training finishes. */
Test(secagg_rounds, late_messages_from_an_abandoned_attempt_do_not_break_its_rerun)
{
    pid_t coord = s_start(), nodes[S_NODES];
    static char log[1 << 18];
    double t0;
    int rc;

    for (int i = 0; i < S_NODES; i++)
        nodes[i] = s_node(i);
    t0 = fl_test_now();
    while (s_lines("hospital-4.ledger") < 1 && fl_test_now() - t0 < 60.0)
        usleep(2000);
    cr_assert_geq(s_lines("hospital-4.ledger"), 1, "hospital-4 did not train within 60 s");
    kill(nodes[2], SIGSTOP);
    kill(nodes[3], SIGSTOP);
    /* Wake them once the rerun is under way, so that their answers to the
     * abandoned attempt reach it. */
    t0 = fl_test_now();
    while (!s_rerun_started() && fl_test_now() - t0 < 30.0)
        usleep(20000);
    kill(nodes[2], SIGCONT);
    kill(nodes[3], SIGCONT);
    cr_assert(s_rerun_started(), "no round was abandoned and rerun while two hospitals slept");

    rc = fl_test_wait(coord, 150.0);
    if (rc != 0) {
        long n = fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        cr_assert_fail("the coordinator did not finish (status %d):\n%s", rc,
                       n > 4000 ? log + n - 4000 : log);
    }
    for (int i = 0; i < S_NODES; i++)
        fl_test_wait(nodes[i], 30.0);
    cr_assert_gt(fl_test_read(s_dir, "summary.json", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "\"rounds_completed\": 8"), "%s", log);
    cr_assert(s_log_has("for an earlier attempt"), "no late message was seen");
    cr_assert(s_log_has("secure aggregation complete, 4 inputs"),
              "no round completed with all four hospitals after they woke");
}
