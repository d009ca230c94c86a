/*
 * fl_registry: coordinator state in SQLite (see fl_registry.h).
 */
#include "coordinator/fl_registry.h"

#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/fl_storage.h"

struct fl_registry {
    sqlite3 *db;
    char dir[2048];
};

static const char *s_schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "CREATE TABLE IF NOT EXISTS rounds ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  round INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL,"
    "  ended_at INTEGER,"
    "  participants INTEGER NOT NULL,"
    "  contributors INTEGER,"
    "  outcome TEXT," /* NULL while running: completed, abandoned, interrupted */
    "  reason TEXT,"
    "  loss REAL, accuracy REAL, auc REAL, precision_ REAL, recall REAL, f1 REAL);"
    "CREATE TABLE IF NOT EXISTS models ("
    "  version INTEGER PRIMARY KEY,"
    "  sha256 TEXT NOT NULL,"
    "  file TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL);"
    /* The nodes' evaluation of each model version on their held-out data. */
    "CREATE TABLE IF NOT EXISTS evaluations ("
    "  version INTEGER PRIMARY KEY,"
    "  loss REAL, accuracy REAL, precision_ REAL, recall REAL, f1 REAL,"
    "  examples INTEGER NOT NULL, nodes INTEGER NOT NULL, at INTEGER NOT NULL);";

static int s_err(fl_registry *r, const char *what)
{
    return fl_error_set(FL_EIO, "coordinator state %s/state.db: %s: %s", r->dir, what,
                        sqlite3_errmsg(r->db));
}

static int s_exec(fl_registry *r, const char *sql, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(r->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = fl_error_set(FL_EIO, "coordinator state %s/state.db: %s: %s", r->dir, what,
                              msg ? msg : "unknown error");
        sqlite3_free(msg);
        return rc;
    }
    return FL_OK;
}

int fl_registry_open(fl_registry **out, const char *dir)
{
    fl_registry *r = calloc(1, sizeof *r);
    char path[2200];
    int rc;

    *out = NULL;
    if (!r)
        return fl_error_set(FL_ENOMEM, "out of memory");
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    if ((rc = fl_storage_mkdir(dir, 0700)) != FL_OK)
        goto fail;
    snprintf(path, sizeof path, "%s/models", dir);
    if ((rc = fl_storage_mkdir(path, 0700)) != FL_OK)
        goto fail;
    snprintf(path, sizeof path, "%s/state.db", dir);
    if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        rc = fl_error_set(FL_EIO, "cannot open coordinator state '%s': %s", path,
                          r->db ? sqlite3_errmsg(r->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(r->db, 5000);
    if ((rc = s_exec(r, s_schema, "cannot create the schema")) != FL_OK)
        goto fail;
    /* A round with no outcome was running when the coordinator stopped. */
    if ((rc = s_exec(r, "UPDATE rounds SET outcome='interrupted', ended_at=strftime('%s','now') "
                        "WHERE outcome IS NULL;",
                     "cannot mark interrupted rounds")) != FL_OK)
        goto fail;
    *out = r;
    return FL_OK;
fail:
    fl_registry_free(r);
    return rc;
}

void fl_registry_model_path(const fl_registry *r, uint32_t version, char *path, size_t cap)
{
    snprintf(path, cap, "%s/models/model-%06u.flm", r->dir, version);
}

int fl_registry_latest(fl_registry *r, uint32_t *version, char *path, size_t cap,
                       uint8_t sha256[32])
{
    sqlite3_stmt *st = NULL;
    int rc = FL_OK;
    *version = 0;
    if (sqlite3_prepare_v2(r->db, "SELECT version, sha256, file FROM models ORDER BY version "
                                  "DESC LIMIT 1;", -1, &st, NULL) != SQLITE_OK)
        return s_err(r, "cannot read model versions");
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 1);
        const char *file = (const char *)sqlite3_column_text(st, 2);
        size_t bin = 0;
        *version = (uint32_t)sqlite3_column_int64(st, 0);
        if (!hex || !file || sodium_hex2bin(sha256, 32, hex, strlen(hex), NULL, &bin, NULL) != 0 ||
            bin != 32)
            rc = fl_error_set(FL_EPARSE, "coordinator state %s/state.db: model version %u has a "
                              "damaged record", r->dir, *version);
        else
            snprintf(path, cap, "%s", file);
    }
    sqlite3_finalize(st);
    return rc;
}

int fl_registry_round_started(fl_registry *r, uint32_t round, uint32_t participants)
{
    sqlite3_stmt *st = NULL;
    int rc = FL_OK;
    if (sqlite3_prepare_v2(r->db, "INSERT INTO rounds(round, started_at, participants) VALUES "
                                  "(?, strftime('%s','now'), ?);", -1, &st, NULL) != SQLITE_OK)
        return s_err(r, "cannot record a round");
    sqlite3_bind_int64(st, 1, round);
    sqlite3_bind_int64(st, 2, participants);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = s_err(r, "cannot record a round");
    sqlite3_finalize(st);
    return rc;
}

int fl_registry_round_abandoned(fl_registry *r, uint32_t round, const char *why)
{
    sqlite3_stmt *st = NULL;
    int rc = FL_OK;
    if (sqlite3_prepare_v2(r->db, "UPDATE rounds SET outcome='abandoned', reason=?, "
                                  "ended_at=strftime('%s','now') WHERE round=? AND outcome IS "
                                  "NULL;", -1, &st, NULL) != SQLITE_OK)
        return s_err(r, "cannot record an abandoned round");
    sqlite3_bind_text(st, 1, why, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, round);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = s_err(r, "cannot record an abandoned round");
    sqlite3_finalize(st);
    return rc;
}

static void s_bind_metric(sqlite3_stmt *st, int i, double v)
{
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

int fl_registry_round_completed(fl_registry *r, uint32_t round, uint32_t contributors,
                                const fl_registry_metrics *m, const uint8_t sha256[32])
{
    sqlite3_stmt *st = NULL;
    char hex[65], path[2300];
    int rc;

    sodium_bin2hex(hex, sizeof hex, sha256, 32);
    fl_registry_model_path(r, round, path, sizeof path);
    if ((rc = s_exec(r, "BEGIN IMMEDIATE;", "cannot begin a transaction")) != FL_OK)
        return rc;
    if (sqlite3_prepare_v2(r->db, "UPDATE rounds SET outcome='completed', contributors=?, "
                                  "ended_at=strftime('%s','now'), loss=?, accuracy=?, auc=?, "
                                  "precision_=?, recall=?, f1=? WHERE round=? AND outcome IS "
                                  "NULL;", -1, &st, NULL) != SQLITE_OK) {
        rc = s_err(r, "cannot record a completed round");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, contributors);
    s_bind_metric(st, 2, m->loss);
    s_bind_metric(st, 3, m->accuracy);
    s_bind_metric(st, 4, m->auc);
    s_bind_metric(st, 5, m->precision);
    s_bind_metric(st, 6, m->recall);
    s_bind_metric(st, 7, m->f1);
    sqlite3_bind_int64(st, 8, round);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = s_err(r, "cannot record a completed round");
        goto fail;
    }
    sqlite3_finalize(st);
    st = NULL;
    /* INSERT, not REPLACE: a second version with the same number is a bug
     * and must fail loudly, not overwrite history. */
    if (sqlite3_prepare_v2(r->db, "INSERT INTO models(version, sha256, file, created_at) VALUES "
                                  "(?, ?, ?, strftime('%s','now'));", -1, &st, NULL) != SQLITE_OK) {
        rc = s_err(r, "cannot record a model version");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, round);
    sqlite3_bind_text(st, 2, hex, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, path, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = s_err(r, "cannot record a model version");
        goto fail;
    }
    sqlite3_finalize(st);
    return s_exec(r, "COMMIT;", "cannot commit");
fail:
    sqlite3_finalize(st);
    (void)s_exec(r, "ROLLBACK;", "cannot roll back");
    return rc;
}

int fl_registry_evaluation(fl_registry *r, uint32_t version, const fl_registry_metrics *m,
                           uint64_t examples, uint32_t nodes)
{
    sqlite3_stmt *st = NULL;
    int rc = FL_OK;
    if (sqlite3_prepare_v2(r->db, "INSERT OR REPLACE INTO evaluations(version, loss, accuracy, "
                                  "precision_, recall, f1, examples, nodes, at) VALUES (?, ?, ?, "
                                  "?, ?, ?, ?, ?, strftime('%s','now'));", -1, &st, NULL) !=
        SQLITE_OK)
        return s_err(r, "cannot record an evaluation");
    sqlite3_bind_int64(st, 1, version);
    s_bind_metric(st, 2, m->loss);
    s_bind_metric(st, 3, m->accuracy);
    s_bind_metric(st, 4, m->precision);
    s_bind_metric(st, 5, m->recall);
    s_bind_metric(st, 6, m->f1);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)examples);
    sqlite3_bind_int64(st, 8, nodes);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = s_err(r, "cannot record an evaluation");
    sqlite3_finalize(st);
    return rc;
}

static double s_col_metric(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

int fl_registry_rounds(fl_registry *r, uint32_t round, uint32_t last,
                       int (*fn)(void *ctx, const fl_registry_round *row), void *ctx)
{
    /* Newest first inside, oldest first outside: the history reads in order. */
    /* A completed attempt of round r made model version r: join the nodes'
     * evaluation of that version. */
#define S_COLS                                                                                   \
    "r.id, r.round, r.started_at, r.ended_at, r.participants, r.contributors, r.outcome, "     \
    "r.reason, r.loss, r.accuracy, r.auc, r.precision_, r.recall, r.f1, e.loss, e.accuracy, " \
    "e.precision_, e.recall, e.f1, e.examples FROM rounds r LEFT JOIN evaluations e ON "       \
    "e.version = r.round AND r.outcome = 'completed' "
    static const char *sql_last =
        "SELECT * FROM (SELECT " S_COLS "ORDER BY r.id DESC LIMIT ?) ORDER BY id;";
    static const char *sql_round =
        "SELECT " S_COLS "WHERE r.round = ? ORDER BY r.id LIMIT ?;";
#undef S_COLS
    sqlite3_stmt *st = NULL;
    int rc = FL_OK, step;

    if (sqlite3_prepare_v2(r->db, round ? sql_round : sql_last, -1, &st, NULL) != SQLITE_OK)
        return s_err(r, "cannot read the round history");
    if (round) {
        sqlite3_bind_int64(st, 1, round);
        sqlite3_bind_int64(st, 2, last);
    } else {
        sqlite3_bind_int64(st, 1, last);
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        fl_registry_round row;
        const unsigned char *t;
        memset(&row, 0, sizeof row);
        row.round = (uint32_t)sqlite3_column_int64(st, 1);
        row.started_at = sqlite3_column_int64(st, 2);
        row.ended_at = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
        row.participants = (uint32_t)sqlite3_column_int64(st, 4);
        row.contributors =
            sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
        if ((t = sqlite3_column_text(st, 6)) != NULL)
            snprintf(row.outcome, sizeof row.outcome, "%s", (const char *)t);
        if ((t = sqlite3_column_text(st, 7)) != NULL)
            snprintf(row.reason, sizeof row.reason, "%s", (const char *)t);
        row.metrics.loss = s_col_metric(st, 8);
        row.metrics.accuracy = s_col_metric(st, 9);
        row.metrics.auc = s_col_metric(st, 10);
        row.metrics.precision = s_col_metric(st, 11);
        row.metrics.recall = s_col_metric(st, 12);
        row.metrics.f1 = s_col_metric(st, 13);
        row.node_metrics.loss = s_col_metric(st, 14);
        row.node_metrics.accuracy = s_col_metric(st, 15);
        row.node_metrics.auc = NAN;
        row.node_metrics.precision = s_col_metric(st, 16);
        row.node_metrics.recall = s_col_metric(st, 17);
        row.node_metrics.f1 = s_col_metric(st, 18);
        row.node_examples = sqlite3_column_type(st, 19) == SQLITE_NULL
                                ? 0
                                : (uint64_t)sqlite3_column_int64(st, 19);
        if ((rc = fn(ctx, &row)) != FL_OK)
            break;
    }
    if (rc == FL_OK && step != SQLITE_DONE)
        rc = s_err(r, "cannot read the round history");
    sqlite3_finalize(st);
    return rc;
}

int fl_registry_versions(fl_registry *r, uint32_t *count, int *contiguous)
{
    sqlite3_stmt *st = NULL;
    int rc = FL_OK;
    if (sqlite3_prepare_v2(r->db, "SELECT COUNT(*), COALESCE(MIN(version),0), "
                                  "COALESCE(MAX(version),0) FROM models;", -1, &st, NULL) !=
        SQLITE_OK)
        return s_err(r, "cannot read model versions");
    if (sqlite3_step(st) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 0), lo = sqlite3_column_int64(st, 1),
                hi = sqlite3_column_int64(st, 2);
        *count = (uint32_t)n;
        *contiguous = n == 0 || (lo == 1 && hi == n);
    } else {
        rc = s_err(r, "cannot read model versions");
    }
    sqlite3_finalize(st);
    return rc;
}

void fl_registry_free(fl_registry *r)
{
    if (!r)
        return;
    if (r->db)
        sqlite3_close(r->db);
    free(r);
}
