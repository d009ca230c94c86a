/*
 * Integration tests of a node's privacy budget with the real flcoord and
 * flnode on 127.0.0.1: a node whose cap is below one round's cost declines
 * before training and records nothing; a node killed in the middle of
 * training and restarted continues from its ledger.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dp/fl_ledger.h"
#include "identity/fl_identity.h"
#include "tests/support/fl_test_dir.h"
#include "tests/support/fl_test_proc.h"

static char s_dir[128];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "privacy-it");
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(node_privacy, .init = s_setup, .fini = s_teardown, .timeout = 240);

/* Keys, enrollment and configurations for a coordinator and one node. */
static void s_prepare(const char *coord_extra, uint32_t local_steps, double epsilon_max,
                      fl_identity_public *node_pub)
{
    fl_identity_public coord;
    char text[4096];
    cr_assert_eq(fl_identity_create_files(s_dir, "coordinator", "the coordinator", 0, &coord),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_identity_create_files(s_dir, "hospital-a", "node 'hospital-a'", 0, node_pub),
                 FL_OK, "%s", fl_error_last());
    snprintf(text, sizeof text, "hospital-a %s\n", node_pub->sign_z85);
    fl_test_write(s_dir, "enrolled.txt", text);
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = tcp://127.0.0.1:*\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "min_nodes = 1\njoin_timeout_ms = 30000\n%s"
             "[model]\nlayers = 30 4 1\n"
             "[training]\nsampling_rate = 0.25\nclip_norm = 1\nlearning_rate = 0.5\nlocal_steps = %u\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\n"
             /* One node: nothing to aggregate securely (it needs two). */
             "[secagg]\nenabled = 0\n",
             coord_extra, local_steps, FL_TEST_SOURCE_DIR);
    fl_test_write(s_dir, "coordinator.ini", text);
    snprintf(text, sizeof text,
             "[node]\nname = hospital-a\nconsortium = it\ncoordinator = ENDPOINT\n"
             "coordinator_key = coordinator.pub\nkey = hospital-a.key\nidle_timeout_ms = 30000\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntrain = %s/data/wdbc/wdbc.csv\n"
             "[privacy]\nepsilon_max = %g\ndelta = 1e-5\nledger = hospital-a.ledger\n"
             "[secagg]\npeers = enrolled.txt\n",
             FL_TEST_SOURCE_DIR, FL_TEST_SOURCE_DIR, epsilon_max);
    fl_test_write(s_dir, "node.ini.in", text);
}

static pid_t s_start_coordinator(void)
{
    char cfg[256], ep[256], tmpl[4096], text[4400], *at;
    pid_t pid;
    snprintf(cfg, sizeof cfg, "%s/coordinator.ini", s_dir);
    char *argv[] = {FL_TEST_FLCOORD, "run", "--config", cfg, NULL};
    pid = fl_test_spawn(s_dir, "coordinator.log", argv);
    if (fl_test_wait_file(s_dir, "endpoint", ep, sizeof ep, 20.0) != 0) {
        char log[4096] = "";
        fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        cr_assert_fail("the coordinator did not start within 20 s:\n%s", log);
    }
    /* Point the node at the endpoint the coordinator actually bound. */
    cr_assert_gt(fl_test_read(s_dir, "node.ini.in", tmpl, sizeof tmpl), 0);
    at = strstr(tmpl, "ENDPOINT");
    cr_assert_not_null(at);
    *at = '\0';
    snprintf(text, sizeof text, "%s%s%s", tmpl, ep, at + strlen("ENDPOINT"));
    fl_test_write(s_dir, "node.ini", text);
    return pid;
}

static pid_t s_start_node(const char *log)
{
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/node.ini", s_dir);
    char *argv[] = {FL_TEST_FLNODE, "run", "--config", cfg, NULL};
    return fl_test_spawn(s_dir, log, argv);
}

static size_t s_ledger_lines(void)
{
    static char buf[1 << 20];
    long n = fl_test_read(s_dir, "hospital-a.ledger", buf, sizeof buf);
    size_t lines = 0;
    for (long i = 0; i < n; i++)
        lines += buf[i] == '\n';
    return n < 0 ? 0 : lines;
}

Test(node_privacy, a_cap_below_one_rounds_cost_is_declined_before_training)
{
    fl_identity_public pub;
    char log[65536];
    pid_t coord, node;
    int rc;

    /* Epsilon 0.001: even the largest noise multiplier the node may choose
     * (1000) cannot make 3 rounds x 5 steps at q = 0.25 that cheap — the
     * RDP-to-DP conversion term alone, (ln(1/delta) - ln a)/(a - 1) at the
     * largest order a = 1024, is 0.0045 for delta = 1e-5. */
    s_prepare("rounds = 3\nround_timeout_ms = 10000\nmax_abandoned = 0\n", 5, 0.001, &pub);
    coord = s_start_coordinator();
    node = s_start_node("node.log");
    rc = fl_test_wait(node, 60.0);
    cr_assert_eq(rc, 4, "flnode must exit with 4 (budget exhausted), got %d", rc);
    fl_test_wait(coord, 30.0);
    cr_assert_eq(s_ledger_lines(), 0, "no charge may be recorded past the cap");
    cr_assert_gt(fl_test_read(s_dir, "coordinator.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "declined"), "the coordinator was not told why:\n%s", log);
    cr_assert_null(strstr(log, "update from hospital-a"), "an update left the node:\n%s", log);
    cr_assert_gt(fl_test_read(s_dir, "node.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "epsilon"), "%s", log);
}

Test(node_privacy, a_node_restarted_after_a_crash_continues_from_its_ledger)
{
    fl_identity_public pub;
    fl_ledger_status st;
    fl_ledger_charge *ch = NULL;
    size_t n = 0, before;
    char path[256], log[1 << 16];
    pid_t coord, node;
    double t0;
    int rc;

    /* 150 rounds of 1 step: long enough to kill the node in the middle. */
    s_prepare("rounds = 150\nround_timeout_ms = 2000\nmax_abandoned = 10\n", 1, 8.0, &pub);
    coord = s_start_coordinator();
    node = s_start_node("node-1.log");
    t0 = fl_test_now();
    while (s_ledger_lines() < 10 && fl_test_now() - t0 < 60.0)
        usleep(1000);
    before = s_ledger_lines();
    cr_assert_geq(before, 10, "the node did not start charging within 60 s");
    cr_assert_lt(before, 150, "training finished before the crash could be simulated");
    kill(node, SIGKILL);
    fl_test_wait(node, 10.0);
    cr_assert(fl_test_alive(coord), "the coordinator must survive a node crash");

    node = s_start_node("node-2.log");
    rc = fl_test_wait(coord, 180.0);
    if (rc != 0) {
        static char nlog[1 << 16];
        long len = fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        long nlen = fl_test_read(s_dir, "node-2.log", nlog, sizeof nlog);
        cr_assert_fail("the coordinator did not complete its 150 rounds (status %d):\n%s\n"
                       "restarted node:\n%s", rc, len > 1500 ? log + len - 1500 : log,
                       nlen > 1500 ? nlog + nlen - 1500 : nlog);
    }
    cr_assert_eq(fl_test_wait(node, 30.0), 0);

    snprintf(path, sizeof path, "%s/hospital-a.ledger", s_dir);
    cr_assert_eq(fl_ledger_verify(path, pub.sign_pk, &st, &ch, &n), FL_OK, "%s",
                 fl_error_last());
    cr_assert_geq(n, 150, "every completed round was charged");
    for (size_t i = 1; i < n; i++) {
        cr_assert_gt(ch[i].epsilon, ch[i - 1].epsilon, "epsilon fell at charge %zu", i + 1);
        cr_assert_eq(ch[i].total_steps, i + 1);
        cr_assert_float_eq(ch[i].sigma, ch[0].sigma, 0.0, "the restarted node changed its plan");
    }
    cr_assert_leq(ch[n - 1].epsilon, 8.0);
    cr_assert_gt(fl_test_read(s_dir, "node-2.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "continuing the session"), "%s", log);
    free(ch);
}
