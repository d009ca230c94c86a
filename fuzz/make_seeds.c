/*
 * make_seeds: writes the generated part of the fuzz seed corpora (binary
 * or signed inputs that are impractical to write by hand) under
 * DIR/<target>/. Its output is committed; run it again after a format
 * changes:
 *
 *     build/fuzz/fuzz_make_seeds fuzz/corpus
 *
 * It uses the fuzz targets' deterministic randomness and fixed identities,
 * so the same code gives the same files, and signed seeds (ledgers,
 * secure-aggregation messages) verify inside the harnesses.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "coordinator/fl_model_file.h"
#include "dp/fl_ledger.h"
#include "fuzz/fuzz_secagg_round.h"
#include "fuzz/fuzz_support.h"
#include "proto/fl_wire.h"

static const char *s_root;

static void s_write(const char *target, const char *name, const void *data, size_t len)
{
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", s_root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", s_root, target, name);
    f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* A seed with a selector byte in front of a body. */
static void s_write_sel(const char *target, const char *name, uint8_t sel, const void *body,
                        size_t len)
{
    uint8_t *b = malloc(len + 1);
    if (!b)
        abort();
    b[0] = sel;
    if (len)
        memcpy(b + 1, body, len);
    s_write(target, name, b, len + 1);
    free(b);
}

static uint8_t *s_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long n;
    if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        abort();
    b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
        abort();
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* ------------------------------------------------------------ wire */

static void s_envelope(const char *name, Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    Fl__Envelope *check = NULL;
    if (fl_wire_encode(env, &buf, &len) != FL_OK)
        abort();
    if (fl_wire_decode(&check, buf, len, "hospitals") != FL_OK) {
        fprintf(stderr, "make_seeds: wire seed %s does not validate: %s\n", name,
                fl_error_last());
        exit(1);
    }
    fl_wire_free(check);
    s_write("wire", name, buf, len);
    free(buf);
}

static void s_wire(void)
{
    Fl__Envelope env;
    uint8_t digest[32], schema[32];
    float params[64];
    static char *names[] = {"hospital-a", "hospital-b", "hospital-c"};

    for (size_t i = 0; i < 64; i++)
        params[i] = (float)((int)(i % 9) - 4) * 0.25f;
    memset(schema, 7, sizeof schema);

    {
        Fl__Join j = FL__JOIN__INIT;
        fl_wire_envelope_init(&env, "hospitals");
        j.node_name = "hospital-a";
        j.schema_digest.data = schema;
        j.schema_digest.len = 32;
        j.num_features = 30;
        env.body_case = FL__ENVELOPE__BODY_JOIN;
        env.join = &j;
        s_envelope("join", &env);
    }
    for (int form = 0; form < 3; form++) {
        Fl__RoundStart rs = FL__ROUND_START__INIT;
        Fl__RoundSettings st = FL__ROUND_SETTINGS__INIT;
        Fl__SecAggSettings sa = FL__SEC_AGG_SETTINGS__INIT;
        Fl__ModelSpec sp;
        Fl__LayerSpec layers[FL_SPEC_MAX_LAYERS], *ptrs[FL_SPEC_MAX_LAYERS];
        uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
        fl_model_spec spec;
        size_t np;
        int rc;
        if (form < 2) {
            static const uint32_t mlp[] = {3, 4, 2};
            rc = fl_model_spec_from_sizes(&spec, mlp, 3, 2);
        } else {
            rc = fl_model_spec_parse(&spec, "input 4x4x1; conv 2 3; pool 2; dense 1", 1);
        }
        if (rc != FL_OK)
            abort();
        np = fl_model_spec_num_params(&spec);
        if (np > 64)
            abort();
        fl_wire_spec_encode(&spec, &sp, sizes, layers, ptrs);
        st.local_steps = 5;
        st.learning_rate = 0.1f;
        st.clip_norm = 1.0f;
        st.sampling_rate = 0.05f;
        st.total_rounds = 10;
        st.min_nodes = 2;
        fl_wire_model_digest(params, np, digest);
        rs.round = 1;
        rs.settings = &st;
        rs.spec = &sp;
        rs.n_params = np;
        rs.params = params;
        rs.model_sha256.data = digest;
        rs.model_sha256.len = 32;
        if (form == 1) {
            sa.enabled = 1;
            sa.threshold = 2;
            sa.neighbours = 2;
            sa.clip_range = 1.0f;
            sa.max_weight = 1000;
            sa.n_participants = 3;
            sa.participants = names;
            sa.num_counters = (uint32_t)FL_WIRE_EVAL_COUNTERS(2);
            sa.max_counter = 100000;
            rs.secagg = &sa;
        }
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_ROUND_START;
        env.round_start = &rs;
        s_envelope(form == 0 ? "round_start" : form == 1 ? "round_start_secagg"
                                                         : "round_start_conv", &env);
    }
    {
        Fl__Update u = FL__UPDATE__INIT;
        uint64_t eval[6] = {40, 2, 3, 55, 12345, 100};
        fl_wire_model_digest(params, 14, digest);
        u.round = 3;
        u.num_samples = 180;
        u.n_params = 14;
        u.params = params;
        u.base_sha256.data = digest;
        u.base_sha256.len = 32;
        u.steps = 5;
        u.epsilon = 0.8;
        u.delta = 1e-5;
        u.n_eval_counts = 6;
        u.eval_counts = eval;
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_UPDATE;
        env.update = &u;
        s_envelope("update", &env);
    }
    {
        Fl__Decline d = FL__DECLINE__INIT;
        d.round = 4;
        d.code = FL_EBUDGET;
        d.reason = "privacy budget spent: epsilon 2.98 of 3";
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_DECLINE;
        env.decline = &d;
        s_envelope("decline", &env);
    }
    {
        Fl__RoundResult r = FL__ROUND_RESULT__INIT;
        fl_wire_model_digest(params, 14, digest);
        r.round = 10;
        r.participants = 3;
        r.final = 1;
        r.n_params = 14;
        r.params = params;
        r.model_sha256.data = digest;
        r.model_sha256.len = 32;
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_ROUND_RESULT;
        env.round_result = &r;
        s_envelope("round_result", &env);
    }
    {
        Fl__Error e = FL__ERROR__INIT;
        e.code = FL_EPROTO;
        e.message = "update.params has 13 values but the spec needs 14";
        e.round = 2;
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_ERROR;
        env.error = &e;
        s_envelope("error", &env);
    }
    {
        Fl__SecAgg m = FL__SEC_AGG__INIT;
        uint8_t payload[165];
        memset(payload, 0xA0, sizeof payload);
        m.round = 2;
        m.step = 0;
        m.payload.data = payload;
        m.payload.len = sizeof payload;
        m.epsilon = 0.5;
        m.delta = 1e-5;
        fl_wire_envelope_init(&env, "hospitals");
        env.body_case = FL__ENVELOPE__BODY_SECAGG;
        env.secagg = &m;
        s_envelope("secagg", &env);
    }
}

/* ------------------------------------------------------------ secagg */

typedef struct {
    int step;
    uint32_t party;
    uint8_t *msg;
    size_t len;
} s_capture;

static s_capture s_cap;

static void s_record(fuzz_secagg_round *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    (void)r;
    if (step == s_cap.step && party == s_cap.party && *msg && !s_cap.msg) {
        s_cap.msg = malloc(*len ? *len : 1);
        if (!s_cap.msg)
            abort();
        memcpy(s_cap.msg, *msg, *len);
        s_cap.len = *len;
    }
}

/* The honest message the harness would replace, for the same selector: the
 * harnesses rewind the random source before each input, as done here. */
static void s_secagg(int server)
{
    for (unsigned config = 0; config < 4; config++)
        for (int step = server ? 0 : 1; step < 5; step++) {
            fuzz_secagg_round r;
            char name[64];
            uint8_t sel;
            uint32_t party = server ? 1 : 0;
            fuzz_init();
            fuzz_secagg_round_init(&r, config);
            memset(&s_cap, 0, sizeof s_cap);
            s_cap.step = step;
            s_cap.party = party;
            if (server)
                r.up = s_record;
            else
                r.down = s_record;
            if (fuzz_secagg_round_run(&r) != 5 || !s_cap.msg) {
                fprintf(stderr, "make_seeds: the honest secagg round failed\n");
                exit(1);
            }
            fuzz_secagg_round_free(&r);
            if (server)
                sel = (uint8_t)(step | config << 3 | party << 5 | 0x80);
            else
                sel = (uint8_t)((step - 1) | config << 3 | party << 5 | 0x80);
            snprintf(name, sizeof name, "config%u-step%d", config, step);
            s_write_sel(server ? "secagg_server" : "secagg_client", name, sel, s_cap.msg,
                        s_cap.len);
            free(s_cap.msg);
        }
}

/* ------------------------------------------------------------ ledger */

/* A ledger of `charges` charges (the last one under `last_kind`) by the
 * fixed identity 0, read back into a fresh buffer. Leaves the file at path. */
static uint8_t *s_make_ledger(const char *path, int charges, fl_accountant_kind last_kind,
                              size_t *len)
{
    fl_identity *id = fuzz_identity(0);
    fl_ledger *l = NULL;
    uint8_t *buf;

    fuzz_init();
    if (fl_ledger_open(&l, path, id, "fuzz-node", NULL) != FL_OK)
        abort();
    for (int i = 0; i < charges; i++) {
        fl_ledger_charge c;
        memset(&c, 0, sizeof c);
        snprintf(c.node, sizeof c.node, "fuzz-node");
        snprintf(c.consortium, sizeof c.consortium, "hospitals");
        c.round = (uint32_t)i + 1;
        c.accountant = i == charges - 1 ? last_kind : FL_ACCOUNTANT_RDP;
        c.q = 0.02;
        c.sigma = 1.2;
        c.clip = 1.0;
        c.steps = 20;
        c.dataset_size = 500;
        c.delta = 1e-5;
        c.epsilon_max = 3.0;
        if (fl_ledger_append_charge(l, &c) != FL_OK) {
            fprintf(stderr, "make_seeds: ledger: %s\n", fl_error_last());
            exit(1);
        }
    }
    fl_ledger_free(l);
    fl_identity_free(id);
    buf = s_read(path, len);
    return buf;
}

/* Ledger seeds are RDP but for one: the PLD accountant costs tens of
 * milliseconds per recomputation, which would slow every mutation of them. */
static void s_ledger(void)
{
    fuzz_dir d;
    char path[1024];
    fl_identity *id = fuzz_identity(0);
    fl_ledger *l = NULL;
    uint8_t *buf;
    size_t len;

    fuzz_dir_new(&d);
    snprintf(path, sizeof path, "%s/pld.jsonl", d.path);
    buf = s_make_ledger(path, 1, FL_ACCOUNTANT_PLD, &len);
    s_write_sel("ledger", "pld-verify-key", 2, buf, len);
    free(buf);
    snprintf(path, sizeof path, "%s/ledger.jsonl", d.path);
    buf = s_make_ledger(path, 3, FL_ACCOUNTANT_RDP, &len);
    s_write_sel("ledger", "verify-nokey", 0, buf, len);
    s_write_sel("ledger", "verify-key", 2, buf, len);
    s_write_sel("ledger", "fixup-verify-key", 3, buf, len);
    s_write_sel("ledger", "open", 5, buf, len);
    /* A torn tail: the last line cut in half, as a crash leaves it. */
    s_write_sel("ledger", "torn-open", 5, buf, len - 150);
    s_write_sel("ledger", "torn-verify", 3, buf, len - 150);
    free(buf);
    /* Open recovers it: terminated and followed by a signed recovery record. */
    {
        FILE *f = fopen(path, "r+b");
        if (!f || ftruncate(fileno(f), (off_t)(len - 150)) != 0 || fclose(f) != 0)
            abort();
        if (fl_ledger_open(&l, path, id, "fuzz-node", NULL) != FL_OK)
            abort();
        fl_ledger_free(l);
        buf = s_read(path, &len);
        s_write_sel("ledger", "recovered-verify", 2, buf, len);
        free(buf);
    }
    fuzz_dir_remove(&d);
    fl_identity_free(id);
}

/* ------------------------------------------------------------ model file */

static void s_model_file(void)
{
    fuzz_dir d;
    char path[1024];
    float params[512];
    fl_model_spec spec;
    uint8_t *buf, v1[256], digest[32];
    size_t len, off = 0;
    static const uint32_t mlp[] = {3, 4, 1};

    for (size_t i = 0; i < 512; i++)
        params[i] = (float)((int)(i % 11) - 5) * 0.125f;
    fuzz_dir_new(&d);
    snprintf(path, sizeof path, "%s/model.bin", d.path);
    if (fl_model_spec_from_sizes(&spec, mlp, 3, 1) != FL_OK ||
        fl_model_file_save(path, &spec, params, fl_model_spec_num_params(&spec)) != FL_OK)
        abort();
    buf = s_read(path, &len);
    s_write("model_file", "mlp", buf, len);
    free(buf);
    if (fl_model_spec_parse(&spec, "input 6x6x1; conv 2 3; pool 2; dense 3", 2) != FL_OK ||
        fl_model_spec_num_params(&spec) > 512 ||
        fl_model_file_save(path, &spec, params, fl_model_spec_num_params(&spec)) != FL_OK)
        abort();
    buf = s_read(path, &len);
    s_write("model_file", "cnn", buf, len);
    free(buf);
    /* The first layout, "FLMODEL1": kind, sizes, count, params, SHA-256. */
    memcpy(v1, "FLMODEL1", 8);
    off = 8;
#define PUT32(v) do { uint32_t x_ = (v); for (int b_ = 0; b_ < 4; b_++) v1[off++] = (uint8_t)(x_ >> (8 * b_)); } while (0)
    PUT32(1);
    PUT32(3);
    PUT32(3);
    PUT32(4);
    PUT32(1);
    PUT32(21);
    PUT32(0);
    for (int i = 0; i < 21; i++) {
        uint32_t u;
        memcpy(&u, &params[i], 4);
        PUT32(u);
    }
#undef PUT32
    fl_wire_model_digest(params, 21, digest);
    memcpy(v1 + off, digest, 32);
    off += 32;
    s_write("model_file", "mlp-v1", v1, off);
    fuzz_dir_remove(&d);
}

/* ------------------------------------------------------------ idx */

static void s_gzip_sel(const char *name, uint8_t sel, const uint8_t *body, size_t len)
{
    /* The harness gzips the body itself when bit 7 is set. */
    s_write_sel("idx", name, (uint8_t)(sel | 0x80), body, len);
}

static void s_idx(void)
{
    uint8_t images[16 + 2 * 3 * 4], labels[8 + 3], zimg[256];
    uLongf zlen = sizeof zimg;
    z_stream z;
    static const uint8_t h_img[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    static const uint8_t h_lab[8] = {0, 0, 8, 1, 0, 0, 0, 3};

    memcpy(images, h_img, 16);
    for (int i = 0; i < 24; i++)
        images[16 + i] = (uint8_t)(i * 11);
    memcpy(labels, h_lab, 8);
    labels[8] = 0;
    labels[9] = 2;
    labels[10] = 1;
    s_write_sel("idx", "images", 0, images, sizeof images);
    s_write_sel("idx", "labels", 1, labels, sizeof labels);
    s_write_sel("idx", "dataset-labels", 2 | 1 << 2, labels, sizeof labels);
    /* Three 2x2 images to go with the harness's fixed labels. */
    {
        uint8_t three[16 + 12] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2};
        for (int i = 0; i < 12; i++)
            three[16 + i] = (uint8_t)(255 - 20 * i);
        s_write_sel("idx", "dataset-images", 3, three, sizeof three);
    }
    s_gzip_sel("images-gz", 0, images, sizeof images);
    s_gzip_sel("labels-gz", 1, labels, sizeof labels);
    /* A gzip stream in the input itself (raw), for the corrupt-stream paths. */
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    z.next_in = images;
    z.avail_in = sizeof images;
    z.next_out = zimg;
    z.avail_out = (uInt)zlen;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    zlen = z.total_out;
    deflateEnd(&z);
    s_write_sel("idx", "images-raw-gz", 0, zimg, zlen);
}

/* ------------------------------------------------------------ keys, enrollment */

static void s_keys(void)
{
    char text[2048];
    int n = 0;
    for (unsigned i = 0; i < 3; i++) {
        fl_identity *id = fuzz_identity(i);
        const fl_identity_public *pub = fl_identity_public_of(id);
        char pubtext[512];
        int pl = snprintf(pubtext, sizeof pubtext,
                          "# public identity of hospital-%c\nidentity-key = %s\npublic-key = %s\n",
                          'a' + i, pub->sign_z85, pub->curve_z85);
        if (i == 0)
            s_write_sel("identity", "public", 0, pubtext, (size_t)pl);
        n += snprintf(text + n, sizeof text - (size_t)n, "%shospital-%c  %s%s\n",
                      i == 0 ? "# name  identity key\n" : "", 'a' + i, pub->sign_z85,
                      i == 2 ? "  # joined in round 3" : "");
        fl_identity_free(id);
    }
    s_write("enroll", "three-nodes", text, (size_t)n);
    n = (int)fuzz_identity_text(0, text, sizeof text);
    s_write_sel("identity", "secret", 1, text, (size_t)n);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS-DIR (fuzz/corpus)\n", argv[0]);
        return 2;
    }
    s_root = argv[1];
    fuzz_init();
    s_wire();
    s_secagg(1);
    s_secagg(0);
    s_ledger();
    s_model_file();
    s_idx();
    s_keys();
    printf("make_seeds: wrote the generated seeds under %s\n", s_root);
    return 0;
}
