/*
 * fl_test_consortium: shared setup of integration-test consortia (see
 * fl_test_consortium.h).
 */
#include "tests/support/fl_test_consortium.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/support/fl_test_proc.h"

void fl_test_consortium_keys(const char *dir, int n, int listed, const char *file,
                             fl_identity_public *pubs)
{
    char list[8192] = "# test consortium\n";
    fl_identity_public pub;
    cr_assert_eq(fl_identity_create_files(dir, "coordinator", "the coordinator", 0, &pub),
                 FL_OK, "%s", fl_error_last());
    for (int i = 0; i < n; i++) {
        char name[32], line[128];
        snprintf(name, sizeof name, "hospital-%d", i + 1);
        cr_assert_eq(fl_identity_create_files(dir, name, name, 0, &pub), FL_OK, "%s",
                     fl_error_last());
        if (pubs)
            pubs[i] = pub;
        snprintf(line, sizeof line, "%s %s\n", name, pub.sign_z85);
        if (i < listed)
            strcat(list, line);
    }
    fl_test_write(dir, file, list);
}

void fl_test_consortium_split(const char *dir, int n, const char *flnode,
                              const char *source_dir)
{
    char data[512], in[512], shards[16];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(in, sizeof in, "%s/data/wdbc/wdbc.csv", source_dir);
    snprintf(shards, sizeof shards, "%d", n);
    char *argv[] = {(char *)flnode, "split", "--in", in, "--label", "malignant",
                    "--shards", shards, "--out", data, NULL};
    cr_assert_eq(fl_test_wait(fl_test_spawn(dir, "split.log", argv), 30.0), 0,
                 "flnode split failed");
}

void fl_test_consortium_node_config(const char *dir, int i, const char *endpoint,
                                    double epsilon_max, const char *privacy_extra,
                                    const char *peers, const char *source_dir)
{
    char name[64], text[4096];
    snprintf(name, sizeof name, "hospital-%d.ini", i);
    snprintf(text, sizeof text,
             "[node]\nname = hospital-%d\nconsortium = it\ncoordinator = %s\n"
             "coordinator_key = coordinator.pub\nkey = hospital-%d.key\n"
             "idle_timeout_ms = 60000\n"
             "[data]\nschema = %s/data/wdbc/schema.ini\ntrain = data/shard-%d.csv\n"
             "[privacy]\nepsilon_max = %g\ndelta = 1e-5\nledger = hospital-%d.ledger\n%s"
             "[secagg]\npeers = %s\n",
             i, endpoint, i, source_dir, i, epsilon_max, i, privacy_extra, peers);
    fl_test_write(dir, name, text);
}

pid_t fl_test_consortium_node(const char *dir, int i, const char *flnode)
{
    char cfg[512], log[64];
    snprintf(cfg, sizeof cfg, "%s/hospital-%d.ini", dir, i);
    snprintf(log, sizeof log, "hospital-%d.log", i);
    char *argv[] = {(char *)flnode, "run", "--config", cfg, NULL};
    return fl_test_spawn(dir, log, argv);
}
