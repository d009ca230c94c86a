/*
 * Integration test of coordinator crash recovery with the real binaries on
 * 127.0.0.1: the coordinator is killed with SIGKILL in the middle of
 * training, restarted on the same address with the same state directory,
 * and the three hospitals (secure aggregation on) reconnect by themselves
 * and finish the configured rounds; the model versions have neither gaps
 * nor duplicates, and the server optimizer (FedAvgM) resumes with the
 * velocity checkpointed beside the last model version.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/fl_registry.h"
#include "identity/fl_identity.h"
#include "tests/support/fl_test_consortium.h"
#include "tests/support/fl_test_dir.h"
#include "tests/support/fl_test_proc.h"

#define S_NODES 3
#define S_ROUNDS 10

static char s_dir[128];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "restart-it");
}

static void s_teardown(void)
{
    if (!getenv("FL_TEST_KEEP"))
        fl_test_dir_remove(s_dir);
}

TestSuite(coordinator_restart, .init = s_setup, .fini = s_teardown, .timeout = 300);

static void s_write_coordinator(const char *listen)
{
    char text[4096];
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = %s\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "rounds = %d\nmin_nodes = 3\nround_timeout_ms = 5000\njoin_timeout_ms = 60000\n"
             "max_abandoned = 5\nsummary_json = summary.json\nstate_dir = state\n"
             "[model]\nlayers = 30 8 1\n"
             "[training]\nsampling_rate = 0.25\nclip_norm = 1\nlearning_rate = 1\n"
             "local_steps = 3\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntest_data = data/test.csv\n"
             "[secagg]\nstep_timeout_ms = 3000\nmax_weight = 1000\n"
             "[server]\noptimizer = fedavgm\n",
             listen, S_ROUNDS, FL_TEST_SOURCE_DIR);
    fl_test_write(s_dir, "coordinator.ini", text);
}

static pid_t s_coordinator(void)
{
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/coordinator.ini", s_dir);
    char *argv[] = {FL_TEST_FLCOORD, "run", "--config", cfg, NULL};
    return fl_test_spawn(s_dir, "coordinator.log", argv);
}

static uint32_t s_versions(int *contiguous)
{
    char path[256];
    fl_registry *r = NULL;
    uint32_t n = 0;
    snprintf(path, sizeof path, "%s/state", s_dir);
    *contiguous = 0;
    if (fl_registry_open(&r, path) != FL_OK)
        return 0;
    if (fl_registry_versions(r, &n, contiguous) != FL_OK)
        n = 0;
    fl_registry_free(r);
    return n;
}

/* Counts models/model-*.flm files: progress without opening the database
 * while the coordinator writes it. */
static int s_model_files(void)
{
    int k = 0;
    for (int v = 1; v <= S_ROUNDS; v++) {
        char name[64], buf[8];
        snprintf(name, sizeof name, "state/models/model-%06d.flm", v);
        if (fl_test_read(s_dir, name, buf, sizeof buf) > 0)
            k++;
    }
    return k;
}

Test(coordinator_restart, sigkill_mid_training_then_restart_completes_all_rounds)
{
    char ep[256];
    pid_t coord, nodes[S_NODES];
    static char log[1 << 18];
    double t0;
    int contiguous = 0, rc;

    fl_test_consortium_keys(s_dir, S_NODES, S_NODES, "enrolled.txt", NULL);
    fl_test_consortium_split(s_dir, S_NODES, FL_TEST_FLNODE, FL_TEST_SOURCE_DIR);
    s_write_coordinator("tcp://127.0.0.1:*");
    coord = s_coordinator();
    cr_assert_eq(fl_test_wait_file(s_dir, "endpoint", ep, sizeof ep, 20.0), 0);
    /* The restarted coordinator must be where the nodes look for it. */
    s_write_coordinator(ep);
    for (int i = 0; i < S_NODES; i++) {
        fl_test_consortium_node_config(s_dir, i + 1, ep, 6.0, "reserve_rounds = 3\n",
                                       "enrolled.txt", FL_TEST_SOURCE_DIR);
        nodes[i] = fl_test_consortium_node(s_dir, i + 1, FL_TEST_FLNODE);
    }
    /* Kill it once 3 versions are on disk: the 4th round is under way. */
    t0 = fl_test_now();
    while (s_model_files() < 3 && fl_test_now() - t0 < 60.0)
        usleep(1000);
    cr_assert_geq(s_model_files(), 3, "no progress within 60 s");
    cr_assert_lt(s_model_files(), S_ROUNDS, "training finished before the crash");
    /* Freeze one hospital so that the round under way (or the next) waits
     * for it: the coordinator is then certainly killed in the middle of a
     * round. */
    kill(nodes[2], SIGSTOP);
    usleep(500000);
    kill(coord, SIGKILL);
    fl_test_wait(coord, 10.0);
    kill(nodes[2], SIGCONT);

    coord = s_coordinator();
    rc = fl_test_wait(coord, 180.0);
    if (rc != 0) {
        long n = fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        cr_assert_fail("the restarted coordinator did not finish (status %d):\n%s", rc,
                       n > 3000 ? log + n - 3000 : log);
    }
    for (int i = 0; i < S_NODES; i++)
        cr_assert_eq(fl_test_wait(nodes[i], 60.0), 0, "hospital-%d did not finish", i + 1);
    cr_assert_eq(s_versions(&contiguous), S_ROUNDS);
    cr_assert(contiguous, "model versions have a gap or a duplicate");
    cr_assert_gt(fl_test_read(s_dir, "coordinator.log", log, sizeof log), 0);
    cr_assert_not_null(strstr(log, "resuming from"), "%s", log);
    /* FedAvgM's velocity continues from the checkpoint beside the model. */
    cr_assert_not_null(strstr(log, "server optimizer state restored"), "%s", log);
    cr_assert_null(strstr(log, "starts from zero state"), "%s", log);
    for (int v = 1; v <= S_ROUNDS; v++) {
        char name[64], buf[8];
        snprintf(name, sizeof name, "state/models/model-%06d.flm.opt", v);
        cr_assert_gt(fl_test_read(s_dir, name, buf, sizeof buf), 0, "%s is missing", name);
    }
    {
        /* The interrupted round is on record as such. */
        char db[256];
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        snprintf(db, sizeof db, "%s/state/state.db", s_dir);
        cr_assert_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        cr_assert_eq(sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM rounds WHERE outcome = "
                                           "'interrupted';", -1, &st, NULL), SQLITE_OK);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        cr_assert_geq(sqlite3_column_int(st, 0), 1);
        sqlite3_finalize(st);
        sqlite3_close(h);
    }
}
