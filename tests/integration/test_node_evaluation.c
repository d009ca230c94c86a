/*
 * Integration test of the nodes' own evaluation with the real binaries on
 * 127.0.0.1: three hospitals hold out records of their own, evaluate every
 * global model on them and send only totals (through secure aggregation,
 * or in their updates when it is off). The consortium-wide metrics the
 * coordinator records for the final model must equal a second, direct
 * computation in this test: the final model file run over the union of
 * the three held-out files with the binary metrics of nn/fl_metrics.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/fl_model_file.h"
#include "coordinator/fl_registry.h"
#include "nn/fl_dataset.h"
#include "nn/fl_metrics.h"
#include "nn/fl_mlp.h"
#include "tests/support/fl_test_consortium.h"
#include "tests/support/fl_test_dir.h"
#include "tests/support/fl_test_proc.h"

#define S_NODES 3
#define S_ROUNDS 4

static char s_dir[128];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "node-eval-it");
}

static void s_teardown(void)
{
    if (!getenv("FL_TEST_KEEP"))
        fl_test_dir_remove(s_dir);
}

TestSuite(node_evaluation, .init = s_setup, .fini = s_teardown, .timeout = 240);

/* The round record of `round`, with the nodes' evaluation joined. */
static int s_row(void *ctx, const fl_registry_round *row)
{
    fl_registry_round *out = ctx;
    if (strcmp(row->outcome, "completed") == 0)
        *out = *row;
    return FL_OK;
}

static void s_run(int secagg)
{
    char ep[256], text[4096], path[512];
    pid_t coord, nodes[S_NODES];
    fl_model_file mf;
    fl_mlp *mlp = NULL;
    fl_schema *schema = NULL;
    fl_confusion total = {0, 0, 0, 0};
    double loss_sum = 0.0;
    uint64_t examples = 0;
    uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
    size_t nsizes = 0;
    fl_registry *reg = NULL;
    fl_registry_round row;
    int rc;

    fl_test_consortium_keys(s_dir, S_NODES, S_NODES, "enrolled.txt", NULL);
    fl_test_consortium_split(s_dir, S_NODES, FL_TEST_FLNODE, FL_TEST_SOURCE_DIR);
    for (int i = 1; i <= S_NODES; i++) {
        /* Each hospital's shard again into its training part and its own
         * held-out part (20%). */
        char in[256], out[256], label[] = "malignant";
        snprintf(in, sizeof in, "%s/data/shard-%d.csv", s_dir, i);
        snprintf(out, sizeof out, "%s/data/h-%d", s_dir, i);
        char *argv[] = {FL_TEST_FLNODE, "split", "--in", in, "--label", label, "--shards", "1",
                        "--out", out, NULL};
        cr_assert_eq(fl_test_wait(fl_test_spawn(s_dir, "split2.log", argv), 30.0), 0);
    }
    snprintf(text, sizeof text,
             "[coordinator]\nconsortium = it\nlisten = tcp://127.0.0.1:*\n"
             "endpoint_file = endpoint\nkey = coordinator.key\nenrollment = enrolled.txt\n"
             "rounds = %d\nmin_nodes = 3\nround_timeout_ms = 20000\njoin_timeout_ms = 60000\n"
             "model_out = final.flm\nstate_dir = state\n"
             "[model]\nlayers = 30 8 1\n"
             "[training]\nsampling_rate = 0.25\nclip_norm = 1\nlearning_rate = 1\n"
             "local_steps = 10\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\n"
             "[secagg]\nenabled = %d\nstep_timeout_ms = 10000\nmax_weight = 1000\n",
             S_ROUNDS, FL_TEST_SOURCE_DIR, secagg);
    fl_test_write(s_dir, "coordinator.ini", text);
    snprintf(path, sizeof path, "%s/coordinator.ini", s_dir);
    {
        char *argv[] = {FL_TEST_FLCOORD, "run", "--config", path, NULL};
        coord = fl_test_spawn(s_dir, "coordinator.log", argv);
    }
    cr_assert_eq(fl_test_wait_file(s_dir, "endpoint", ep, sizeof ep, 20.0), 0);
    for (int i = 1; i <= S_NODES; i++) {
        char name[64];
        snprintf(name, sizeof name, "hospital-%d.ini", i);
        snprintf(text, sizeof text,
                 "[node]\nname = hospital-%d\nconsortium = it\ncoordinator = %s\n"
                 "coordinator_key = coordinator.pub\nkey = hospital-%d.key\n"
                 "idle_timeout_ms = 60000\n"
                 "[data]\nschema = %s/data/wdbc/schema.ini\ntrain = data/h-%d/shard-1.csv\n"
                 "holdout = data/h-%d/test.csv\n"
                 /* A generous cap: this test is about the evaluation totals, and a
                  * model that learns reliably in 4 short rounds. */
                 "[privacy]\nepsilon_max = 30\ndelta = 1e-5\nledger = hospital-%d.ledger\n"
                 "[secagg]\npeers = enrolled.txt\n",
                 i, ep, i, FL_TEST_SOURCE_DIR, i, i, i);
        fl_test_write(s_dir, name, text);
        nodes[i - 1] = fl_test_consortium_node(s_dir, i, FL_TEST_FLNODE);
    }
    rc = fl_test_wait(coord, 120.0);
    if (rc != 0) {
        static char log[1 << 16];
        long n = fl_test_read(s_dir, "coordinator.log", log, sizeof log);
        cr_assert_fail("coordinator exited with %d:\n%s", rc, n > 3000 ? log + n - 3000 : log);
    }
    for (int i = 0; i < S_NODES; i++)
        cr_assert_eq(fl_test_wait(nodes[i], 30.0), 0, "hospital-%d did not finish", i + 1);

    /* The second computation: the final model over every held-out record. */
    snprintf(path, sizeof path, "%s/final.flm", s_dir);
    cr_assert_eq(fl_model_file_load(&mf, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_model_spec_to_sizes(&mf.spec, sizes, &nsizes), FL_OK);
    cr_assert_eq(fl_mlp_new(&mlp, sizes, nsizes, FL_MLP_OUT_SIGMOID_BCE), FL_OK);
    memcpy(fl_mlp_params(mlp), mf.params, mf.num_params * sizeof(float));
    snprintf(path, sizeof path, "%s/data/wdbc/schema.ini", FL_TEST_SOURCE_DIR);
    cr_assert_eq(fl_schema_load(&schema, path), FL_OK);
    for (int i = 1; i <= S_NODES; i++) {
        fl_dataset *h = NULL;
        fl_confusion c;
        float *probs;
        double mean = 0;
        snprintf(path, sizeof path, "%s/data/h-%d/test.csv", s_dir, i);
        cr_assert_eq(fl_dataset_load_csv(&h, path, schema), FL_OK, "%s", fl_error_last());
        probs = malloc(h->n * sizeof *probs);
        cr_assert_eq(fl_mlp_evaluate(mlp, h->X, h->y, h->n, &mean, probs), FL_OK);
        fl_metrics_confusion(probs, h->y, h->n, 0.5f, &c);
        total.tp += c.tp;
        total.fp += c.fp;
        total.tn += c.tn;
        total.fn += c.fn;
        loss_sum += mean * (double)h->n;
        examples += h->n;
        free(probs);
        fl_dataset_free(h);
    }
    cr_assert_gt(examples, 50u);

    snprintf(path, sizeof path, "%s/state", s_dir);
    cr_assert_eq(fl_registry_open(&reg, path), FL_OK);
    memset(&row, 0, sizeof row);
    cr_assert_eq(fl_registry_rounds(reg, S_ROUNDS, 10, s_row, &row), FL_OK);
    fl_registry_free(reg);
    cr_assert_eq(row.node_examples, examples, "examples: recorded %llu, direct %llu",
                 (unsigned long long)row.node_examples, (unsigned long long)examples);
    cr_assert_float_eq(row.node_metrics.accuracy, fl_metrics_accuracy(&total), 1e-12);
    cr_assert_float_eq(row.node_metrics.precision, fl_metrics_precision(&total), 1e-12);
    cr_assert_float_eq(row.node_metrics.recall, fl_metrics_recall(&total), 1e-12);
    cr_assert_float_eq(row.node_metrics.f1, fl_metrics_f1(&total), 1e-12);
    /* Loss sums travel in 1/1000 nats, rounded once per node. */
    cr_assert_float_eq(row.node_metrics.loss, loss_sum / (double)examples,
                       S_NODES * 0.0005 / (double)examples + 1e-9);
    cr_assert_gt(row.node_metrics.accuracy, 0.8, "the model learned nothing? accuracy %.4f",
                 row.node_metrics.accuracy);
    fl_mlp_free(mlp);
    fl_schema_free(schema);
    fl_model_file_clear(&mf);
}

Test(node_evaluation, secure_aggregated_totals_equal_a_direct_evaluation)
{
    s_run(1);
}

Test(node_evaluation, totals_in_updates_equal_a_direct_evaluation_without_secagg)
{
    s_run(0);
}
