/* Tests for fl_wire: round trips of every message type, rejection of every
 * invalid field (FL_EPROTO and a message naming the field), a bounded
 * mini-fuzz of random and mutated frames, the model digest against SHA-256
 * computed independently, and the parameter count of a model spec. */
#include <criterion/criterion.h>
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fl_wire.h"

#define S_CONS "wdbc-consortium"

/* ------------------------------------------------------------ helpers */

/* SHA-256 of the little-endian bytes of each float, written out byte by byte
 * here and hashed in one call: a second implementation of the model digest. */
static void s_digest(const float *p, size_t n, uint8_t out[32])
{
    unsigned char *bytes = malloc(4 * n + 1);
    cr_assert_not_null(bytes);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &p[i], 4);
        bytes[4 * i + 0] = (unsigned char)(u & 0xff);
        bytes[4 * i + 1] = (unsigned char)((u >> 8) & 0xff);
        bytes[4 * i + 2] = (unsigned char)((u >> 16) & 0xff);
        bytes[4 * i + 3] = (unsigned char)((u >> 24) & 0xff);
    }
    crypto_hash_sha256(out, bytes, 4 * n);
    free(bytes);
}

static void s_hex(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        cr_assert_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

/* Encodes env and decodes it for consortium `cons`; returns decode's code. */
static int s_roundtrip(const Fl__Envelope *env, const char *cons, Fl__Envelope **out)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    cr_assert_eq(fl_wire_encode(env, &buf, &len), FL_OK, "%s", fl_error_last());
    rc = fl_wire_decode(out, buf, len, cons);
    free(buf);
    return rc;
}

/* Asserts that env is rejected with FL_EPROTO and a message containing `what`. */
static void s_rejects(const Fl__Envelope *env, const char *what)
{
    Fl__Envelope *out = (Fl__Envelope *)0x1;
    int rc = s_roundtrip(env, S_CONS, &out);
    cr_assert_eq(rc, FL_EPROTO, "expected FL_EPROTO mentioning '%s', got %d (%s)", what, rc,
                 fl_error_last());
    cr_assert_null(out, "a rejected frame leaves *out NULL");
    cr_assert_not_null(strstr(fl_error_last(), what), "message '%s' should mention '%s'",
                       fl_error_last(), what);
}

static void s_accepts(const Fl__Envelope *env)
{
    Fl__Envelope *out = NULL;
    int rc = s_roundtrip(env, S_CONS, &out);
    cr_assert_eq(rc, FL_OK, "%s", fl_error_last());
    fl_wire_free(out);
}

/* A valid Join. */
typedef struct {
    Fl__Envelope env;
    Fl__Join join;
    uint8_t digest[32];
} s_join;

static void s_join_init(s_join *j)
{
    fl_wire_envelope_init(&j->env, S_CONS);
    fl__join__init(&j->join);
    for (int i = 0; i < 32; i++)
        j->digest[i] = (uint8_t)(0xa0 + i);
    j->join.node_name = "hospital-a";
    j->join.schema_digest.data = j->digest;
    j->join.schema_digest.len = 32;
    j->join.num_features = 30;
    j->env.body_case = FL__ENVELOPE__BODY_JOIN;
    j->env.join = &j->join;
}

/* A valid RoundStart for an MLP 30-16-1 (sigmoid): 30*16+16 + 16*1+1 = 513
 * parameters, counted by hand. */
#define S_RS_PARAMS 513
typedef struct {
    Fl__Envelope env;
    Fl__RoundStart rs;
    Fl__RoundSettings set;
    Fl__ModelSpec spec;
    uint32_t sizes[18];
    float params[600]; /* room for the larger specs some tests build */
    uint8_t digest[32];
} s_start;

static void s_start_seal(s_start *s)
{
    s_digest(s->params, s->rs.n_params, s->digest);
}

static void s_start_init(s_start *s)
{
    fl_wire_envelope_init(&s->env, S_CONS);
    fl__round_start__init(&s->rs);
    fl__round_settings__init(&s->set);
    fl__model_spec__init(&s->spec);
    s->set.local_steps = 10;
    s->set.learning_rate = 0.05f;
    s->set.clip_norm = 1.0f;
    s->set.sampling_rate = 0.01f;
    s->set.total_rounds = 20;
    s->set.min_nodes = 3;
    s->sizes[0] = 30;
    s->sizes[1] = 16;
    s->sizes[2] = 1;
    s->spec.layer_sizes = s->sizes;
    s->spec.n_layer_sizes = 3;
    s->spec.output_kind = 1;
    for (int i = 0; i < 600; i++)
        s->params[i] = (float)(i % 17) * 0.125f - 1.0f;
    s->rs.round = 1;
    s->rs.settings = &s->set;
    s->rs.spec = &s->spec;
    s->rs.params = s->params;
    s->rs.n_params = S_RS_PARAMS;
    s->rs.model_sha256.data = s->digest;
    s->rs.model_sha256.len = 32;
    s->env.body_case = FL__ENVELOPE__BODY_ROUND_START;
    s->env.round_start = &s->rs;
    s_start_seal(s);
}

typedef struct {
    Fl__Envelope env;
    Fl__Update up;
    float params[8];
    uint8_t base[64]; /* room for a wrong-length digest */
} s_update;

static void s_update_init(s_update *u)
{
    fl_wire_envelope_init(&u->env, S_CONS);
    fl__update__init(&u->up);
    for (int i = 0; i < 8; i++)
        u->params[i] = (float)i - 3.5f;
    memset(u->base, 0x5c, sizeof u->base);
    u->up.round = 4;
    u->up.num_samples = 142;
    u->up.params = u->params;
    u->up.n_params = 8;
    u->up.base_sha256.data = u->base;
    u->up.base_sha256.len = 32;
    u->up.steps = 10;
    u->up.epsilon = 1.25;
    u->up.delta = 1e-5;
    u->env.body_case = FL__ENVELOPE__BODY_UPDATE;
    u->env.update = &u->up;
}

typedef struct {
    Fl__Envelope env;
    Fl__Decline d;
} s_decline;

static void s_decline_init(s_decline *d)
{
    fl_wire_envelope_init(&d->env, S_CONS);
    fl__decline__init(&d->d);
    d->d.round = 7;
    d->d.code = FL_EBUDGET;
    d->d.reason = "privacy budget spent: epsilon 2.95 of 3.00";
    d->env.body_case = FL__ENVELOPE__BODY_DECLINE;
    d->env.decline = &d->d;
}

typedef struct {
    Fl__Envelope env;
    Fl__RoundResult r;
    float params[5];
    uint8_t digest[32];
} s_result;

static void s_result_init(s_result *r)
{
    fl_wire_envelope_init(&r->env, S_CONS);
    fl__round_result__init(&r->r);
    r->params[0] = 1.0f;
    r->params[1] = -2.0f;
    r->params[2] = 0.5f;
    r->params[3] = 1e-30f;
    r->params[4] = -0.0f;
    r->r.round = 20;
    r->r.participants = 3;
    r->r.final = 1;
    r->r.params = r->params;
    r->r.n_params = 5;
    s_digest(r->params, 5, r->digest);
    r->r.model_sha256.data = r->digest;
    r->r.model_sha256.len = 32;
    r->env.body_case = FL__ENVELOPE__BODY_ROUND_RESULT;
    r->env.round_result = &r->r;
}

typedef struct {
    Fl__Envelope env;
    Fl__Error e;
} s_error;

static void s_error_init(s_error *e)
{
    fl_wire_envelope_init(&e->env, S_CONS);
    fl__error__init(&e->e);
    e->e.code = FL_EAUTH;
    e->e.message = "node name does not match the enrolled key";
    e->e.round = 2;
    e->env.body_case = FL__ENVELOPE__BODY_ERROR;
    e->env.error = &e->e;
}

/* --------------------------------------------------------- round trips */

Test(wire, round_trips_join)
{
    s_join j;
    Fl__Envelope *out = NULL;
    s_join_init(&j);
    cr_assert_eq(s_roundtrip(&j.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->version, 1u);
    cr_assert_str_eq(out->consortium, S_CONS);
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_JOIN);
    cr_assert_str_eq(out->join->node_name, "hospital-a");
    cr_assert_eq(out->join->schema_digest.len, 32u);
    cr_assert_arr_eq(out->join->schema_digest.data, j.digest, 32);
    cr_assert_eq(out->join->num_features, 30u);
    fl_wire_free(out);
}

Test(wire, round_trips_round_start_bit_exactly)
{
    s_start s;
    Fl__Envelope *out = NULL;
    s_start_init(&s);
    cr_assert_eq(s_roundtrip(&s.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_ROUND_START);
    Fl__RoundStart *r = out->round_start;
    cr_assert_eq(r->round, 1u);
    cr_assert_eq(r->settings->local_steps, 10u);
    cr_assert_eq(r->settings->learning_rate, 0.05f);
    cr_assert_eq(r->settings->clip_norm, 1.0f);
    cr_assert_eq(r->settings->sampling_rate, 0.01f);
    cr_assert_eq(r->settings->total_rounds, 20u);
    cr_assert_eq(r->settings->min_nodes, 3u);
    cr_assert_eq(r->spec->n_layer_sizes, 3u);
    cr_assert_eq(r->spec->layer_sizes[0], 30u);
    cr_assert_eq(r->spec->layer_sizes[1], 16u);
    cr_assert_eq(r->spec->layer_sizes[2], 1u);
    cr_assert_eq(r->spec->output_kind, 1u);
    cr_assert_eq(r->n_params, 513u);
    cr_assert_arr_eq(r->params, s.params, 513 * sizeof(float));
    cr_assert_arr_eq(r->model_sha256.data, s.digest, 32);
    fl_wire_free(out);
}

Test(wire, round_trips_update)
{
    s_update u;
    Fl__Envelope *out = NULL;
    s_update_init(&u);
    cr_assert_eq(s_roundtrip(&u.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_UPDATE);
    cr_assert_eq(out->update->round, 4u);
    cr_assert_eq(out->update->num_samples, 142u);
    cr_assert_eq(out->update->n_params, 8u);
    cr_assert_arr_eq(out->update->params, u.params, sizeof u.params);
    cr_assert_arr_eq(out->update->base_sha256.data, u.base, 32);
    cr_assert_eq(out->update->steps, 10u);
    cr_assert_eq(out->update->epsilon, 1.25);
    cr_assert_eq(out->update->delta, 1e-5);
    fl_wire_free(out);
}

Test(wire, round_trips_decline)
{
    s_decline d;
    Fl__Envelope *out = NULL;
    s_decline_init(&d);
    cr_assert_eq(s_roundtrip(&d.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_DECLINE);
    cr_assert_eq(out->decline->round, 7u);
    cr_assert_eq(out->decline->code, -7);
    cr_assert_str_eq(out->decline->reason, "privacy budget spent: epsilon 2.95 of 3.00");
    fl_wire_free(out);
}

Test(wire, round_trips_round_result_including_negative_zero)
{
    s_result r;
    Fl__Envelope *out = NULL;
    s_result_init(&r);
    cr_assert_eq(s_roundtrip(&r.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_ROUND_RESULT);
    cr_assert_eq(out->round_result->round, 20u);
    cr_assert_eq(out->round_result->participants, 3u);
    cr_assert_eq(out->round_result->final, 1);
    cr_assert_eq(out->round_result->n_params, 5u);
    cr_assert_arr_eq(out->round_result->params, r.params, sizeof r.params);
    cr_assert(signbit(out->round_result->params[4]), "-0.0f keeps its sign bit");
    fl_wire_free(out);
}

Test(wire, round_trips_error)
{
    s_error e;
    Fl__Envelope *out = NULL;
    s_error_init(&e);
    cr_assert_eq(s_roundtrip(&e.env, S_CONS, &out), FL_OK, "%s", fl_error_last());
    cr_assert_eq(out->body_case, FL__ENVELOPE__BODY_ERROR);
    cr_assert_eq(out->error->code, -9);
    cr_assert_str_eq(out->error->message, "node name does not match the enrolled key");
    cr_assert_eq(out->error->round, 2u);
    fl_wire_free(out);
}

Test(wire, accepts_any_consortium_when_the_receiver_passes_null)
{
    s_join j;
    Fl__Envelope *out = NULL;
    s_join_init(&j);
    j.env.consortium = "another-consortium";
    cr_assert_eq(s_roundtrip(&j.env, NULL, &out), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(out->consortium, "another-consortium");
    fl_wire_free(out);
}

/* ------------------------------------------------------- frame checks */

Test(wire, rejects_an_empty_frame)
{
    Fl__Envelope *out = (Fl__Envelope *)0x1;
    uint8_t b = 0;
    cr_assert_eq(fl_wire_decode(&out, &b, 0, S_CONS), FL_EPROTO);
    cr_assert_null(out);
    cr_assert_not_null(strstr(fl_error_last(), "empty frame"), "%s", fl_error_last());
}

/* The size check comes before protobuf-c reads the buffer (see
 * fl_wire_decode), so a short buffer with an oversized length is safe to
 * pass: only the length is examined. */
Test(wire, rejects_a_frame_over_the_size_limit_before_reading_it)
{
    Fl__Envelope *out = (Fl__Envelope *)0x1;
    uint8_t b[16] = {0};
    cr_assert_eq(fl_wire_decode(&out, b, (size_t)64 * 1024 * 1024 + 1, S_CONS), FL_EPROTO);
    cr_assert_null(out);
    cr_assert_not_null(strstr(fl_error_last(), "67108865"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "limit"), "%s", fl_error_last());
}

Test(wire, rejects_bytes_that_are_not_protobuf)
{
    Fl__Envelope *out = (Fl__Envelope *)0x1;
    /* Field 1 varint with a truncated value: 0x08 then a continuation byte. */
    const uint8_t b[] = {0x08, 0xff};
    cr_assert_eq(fl_wire_decode(&out, b, sizeof b, S_CONS), FL_EPROTO);
    cr_assert_null(out);
    cr_assert_not_null(strstr(fl_error_last(), "protobuf"), "%s", fl_error_last());
}

Test(wire, rejects_a_wrong_protocol_version)
{
    s_join j;
    s_join_init(&j);
    j.env.version = 2;
    s_rejects(&j.env, "version 2");
    j.env.version = 0;
    s_rejects(&j.env, "version 0");
}

Test(wire, rejects_an_envelope_for_another_consortium)
{
    s_join j;
    s_join_init(&j);
    j.env.consortium = "other-consortium";
    s_rejects(&j.env, "other-consortium");
}

Test(wire, rejects_bad_consortium_names)
{
    s_join j;
    char longname[66];
    s_join_init(&j);
    j.env.consortium = "";
    s_rejects(&j.env, "envelope.consortium");
    j.env.consortium = "two words";
    s_rejects(&j.env, "envelope.consortium");
    j.env.consortium = "evil\nline";
    s_rejects(&j.env, "envelope.consortium");
    memset(longname, 'c', 65);
    longname[65] = '\0';
    j.env.consortium = longname;
    s_rejects(&j.env, "envelope.consortium");
}

Test(wire, rejects_a_missing_body)
{
    Fl__Envelope env;
    fl_wire_envelope_init(&env, S_CONS);
    s_rejects(&env, "no message body");
}

/* -------------------------------------------------------------- Join */

Test(wire, rejects_bad_node_names_in_join)
{
    s_join j;
    char name[66];
    s_join_init(&j);
    j.join.node_name = "";
    s_rejects(&j.env, "join.node_name");
    j.join.node_name = "hospital/a";
    s_rejects(&j.env, "join.node_name");
    j.join.node_name = "h\xc3\xb4pital";
    s_rejects(&j.env, "join.node_name");
    memset(name, 'n', 65);
    name[65] = '\0';
    j.join.node_name = name;
    s_rejects(&j.env, "join.node_name");
    name[64] = '\0'; /* exactly 64 characters is allowed */
    s_accepts(&j.env);
}

Test(wire, rejects_a_schema_digest_that_is_not_32_bytes)
{
    s_join j;
    s_join_init(&j);
    j.join.schema_digest.len = 31;
    s_rejects(&j.env, "join.schema_digest");
    j.join.schema_digest.len = 0;
    s_rejects(&j.env, "join.schema_digest");
}

Test(wire, rejects_num_features_out_of_range)
{
    s_join j;
    s_join_init(&j);
    j.join.num_features = 0;
    s_rejects(&j.env, "join.num_features");
    j.join.num_features = 65537;
    s_rejects(&j.env, "join.num_features");
    j.join.num_features = 65536;
    s_accepts(&j.env);
}

/* -------------------------------------------------------- RoundStart */

Test(wire, rejects_round_start_round_out_of_range)
{
    s_start s;
    s_start_init(&s);
    s.rs.round = 0;
    s_rejects(&s.env, "round_start.round");
    s.rs.round = 1000001;
    s.set.total_rounds = 1000000;
    s_rejects(&s.env, "round_start.round");
}

Test(wire, rejects_missing_settings_and_missing_spec)
{
    s_start s;
    s_start_init(&s);
    s.rs.settings = NULL;
    s_rejects(&s.env, "round_start.settings is missing");
    s_start_init(&s);
    s.rs.spec = NULL;
    s_rejects(&s.env, "round_start.spec is missing");
}

Test(wire, rejects_each_out_of_range_setting)
{
    s_start s;
    const float bad_lr[] = {0.0f, -0.1f, 100.5f, NAN, INFINITY};
    const float bad_clip[] = {0.0f, -1.0f, 2e6f, NAN, INFINITY};
    const float bad_q[] = {0.0f, -0.5f, 1.0001f, NAN, INFINITY};

    s_start_init(&s);
    s.set.local_steps = 0;
    s_rejects(&s.env, "settings.local_steps");
    s.set.local_steps = 1000001;
    s_rejects(&s.env, "settings.local_steps");

    for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
        s_start_init(&s);
        s.set.learning_rate = bad_lr[i];
        s_rejects(&s.env, "settings.learning_rate");
    }
    for (size_t i = 0; i < sizeof bad_clip / sizeof bad_clip[0]; i++) {
        s_start_init(&s);
        s.set.clip_norm = bad_clip[i];
        s_rejects(&s.env, "settings.clip_norm");
    }
    for (size_t i = 0; i < sizeof bad_q / sizeof bad_q[0]; i++) {
        s_start_init(&s);
        s.set.sampling_rate = bad_q[i];
        s_rejects(&s.env, "settings.sampling_rate");
    }

    s_start_init(&s);
    s.rs.round = 5;
    s.set.total_rounds = 4; /* fewer rounds than the current one */
    s_rejects(&s.env, "settings.total_rounds");
    s.set.total_rounds = 1000001;
    s_rejects(&s.env, "settings.total_rounds");

    s_start_init(&s);
    s.set.min_nodes = 0;
    s_rejects(&s.env, "settings.min_nodes");
    s.set.min_nodes = 100001;
    s_rejects(&s.env, "settings.min_nodes");
}

Test(wire, accepts_settings_on_their_inclusive_bounds)
{
    s_start s;
    s_start_init(&s);
    s.set.local_steps = 1000000;
    s.set.learning_rate = 100.0f;
    s.set.clip_norm = 1e6f;
    s.set.sampling_rate = 1.0f;
    s.rs.round = 20;
    s.set.total_rounds = 20; /* the last round */
    s.set.min_nodes = 100000;
    s_accepts(&s.env);
    s.set.local_steps = 1;
    s.set.min_nodes = 1;
    s.set.total_rounds = 1000000;
    s_accepts(&s.env);
}

Test(wire, rejects_bad_model_specs)
{
    s_start s;

    s_start_init(&s);
    s.spec.n_layer_sizes = 1;
    s_rejects(&s.env, "spec.layer_sizes");

    s_start_init(&s);
    for (int i = 0; i < 18; i++)
        s.sizes[i] = 1;
    s.spec.n_layer_sizes = 18; /* 17 layers of weights: one more than allowed */
    s_rejects(&s.env, "spec.layer_sizes");

    s_start_init(&s);
    s.spec.output_kind = 0;
    s_rejects(&s.env, "spec.output_kind");
    s.spec.output_kind = 3;
    s_rejects(&s.env, "spec.output_kind");

    s_start_init(&s);
    s.sizes[2] = 2; /* sigmoid with 2 outputs: 30*16+16+16*2+2 = 530 params */
    s.rs.n_params = 530;
    s_start_seal(&s);
    s_rejects(&s.env, "sigmoid");

    s_start_init(&s);
    s.spec.output_kind = 2; /* softmax with 1 output */
    s_rejects(&s.env, "softmax");

    s_start_init(&s);
    s.sizes[1] = 0;
    s_rejects(&s.env, "spec.layer_sizes");

    s_start_init(&s);
    s.sizes[1] = 65537;
    s_rejects(&s.env, "spec.layer_sizes");
}

Test(wire, accepts_a_softmax_spec_with_a_matching_count)
{
    s_start s;
    s_start_init(&s);
    s.spec.output_kind = 2;
    s.sizes[0] = 4;
    s.sizes[1] = 3;
    s.sizes[2] = 2;
    s.rs.n_params = 23; /* 4*3+3 + 3*2+2 */
    s_start_seal(&s);
    s_accepts(&s.env);
}

Test(wire, rejects_a_param_count_that_does_not_match_the_spec)
{
    s_start s;
    s_start_init(&s);
    s.rs.n_params = 512;
    s_start_seal(&s);
    s_rejects(&s.env, "spec needs 513");
    s.rs.n_params = 514;
    s_start_seal(&s);
    s_rejects(&s.env, "round_start.params has 514");
    s.rs.n_params = 0;
    s_start_seal(&s);
    s_rejects(&s.env, "round_start.params has 0");
}

Test(wire, rejects_non_finite_params_in_round_start)
{
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < 3; k++) {
        s_start s;
        s_start_init(&s);
        s.params[100] = bad[k];
        s_start_seal(&s); /* the digest matches: only finiteness is wrong */
        s_rejects(&s.env, "round_start.params[100] is not a finite number");
    }
}

Test(wire, rejects_params_whose_digest_does_not_match)
{
    s_start s;
    s_start_init(&s);
    s.digest[31] ^= 0x01;
    s_rejects(&s.env, "round_start.model_sha256 does not match");

    s_start_init(&s);
    s.params[0] = 2.0f; /* changed after sealing */
    s_rejects(&s.env, "round_start.model_sha256 does not match");

    s_start_init(&s);
    s.rs.model_sha256.len = 16;
    s_rejects(&s.env, "round_start.model_sha256 must be 32 bytes");
}

/* ------------------------------------------------------------ Update */

Test(wire, rejects_each_invalid_update_field)
{
    s_update u;

    s_update_init(&u);
    u.up.round = 0;
    s_rejects(&u.env, "update.round");
    u.up.round = 1000001;
    s_rejects(&u.env, "update.round");

    s_update_init(&u);
    u.up.num_samples = 0;
    s_rejects(&u.env, "update.num_samples");
    u.up.num_samples = 1000000001ull;
    s_rejects(&u.env, "update.num_samples");
    u.up.num_samples = 1000000000ull;
    s_accepts(&u.env);

    s_update_init(&u);
    u.up.n_params = 0;
    s_rejects(&u.env, "update.params is empty");

    s_update_init(&u);
    u.params[3] = NAN;
    s_rejects(&u.env, "update.params[3]");
    u.params[3] = -INFINITY;
    s_rejects(&u.env, "update.params[3]");

    s_update_init(&u);
    u.up.base_sha256.len = 33;
    s_rejects(&u.env, "update.base_sha256");

    s_update_init(&u);
    u.up.steps = 1000001;
    s_rejects(&u.env, "update.steps");

    s_update_init(&u);
    u.up.epsilon = -0.1;
    s_rejects(&u.env, "update.epsilon");
    u.up.epsilon = NAN;
    s_rejects(&u.env, "update.epsilon");
    u.up.epsilon = INFINITY;
    s_rejects(&u.env, "update.epsilon");
    u.up.epsilon = 0.0;
    s_accepts(&u.env);

    s_update_init(&u);
    const double bad_delta[] = {0.0, 1.0, -1e-5, 1.5, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_delta / sizeof bad_delta[0]; i++) {
        u.up.delta = bad_delta[i];
        s_rejects(&u.env, "update.delta");
    }
}

/* ------------------------------------------------- Decline and Error */

Test(wire, rejects_decline_codes_that_are_not_negative)
{
    s_decline d;
    s_decline_init(&d);
    d.d.code = 0;
    s_rejects(&d.env, "decline.code");
    d.d.code = 5;
    s_rejects(&d.env, "decline.code");
    d.d.code = -1;
    s_accepts(&d.env);
    d.d.round = 0;
    s_rejects(&d.env, "decline.round");
}

Test(wire, rejects_error_codes_that_are_not_negative)
{
    s_error e;
    s_error_init(&e);
    e.e.code = 0;
    s_rejects(&e.env, "error.code");
    e.e.code = 3;
    s_rejects(&e.env, "error.code");
    e.e.code = INT32_MIN;
    s_accepts(&e.env);
}

Test(wire, rejects_control_characters_in_texts)
{
    s_decline d;
    s_error e;
    s_decline_init(&d);
    d.d.reason = "budget spent\n2026-01-01T00:00:00Z INFO forged line";
    s_rejects(&d.env, "decline.reason contains control character 0x0a at byte 12");
    d.d.reason = "tab\there";
    s_rejects(&d.env, "0x09");
    d.d.reason = "del\x7f";
    s_rejects(&d.env, "0x7f");
    d.d.reason = "\x1b[31mred";
    s_rejects(&d.env, "0x1b at byte 0");

    s_error_init(&e);
    e.e.message = "carriage\rreturn";
    s_rejects(&e.env, "error.message contains control character 0x0d");
}

Test(wire, bounds_text_length_at_1024_bytes)
{
    s_error e;
    char text[1026];
    s_error_init(&e);
    memset(text, 'x', 1025);
    text[1025] = '\0';
    e.e.message = text;
    s_rejects(&e.env, "error.message is 1025 bytes");
    text[1024] = '\0';
    s_accepts(&e.env);
}

/* ------------------------------------------------------- RoundResult */

Test(wire, rejects_each_invalid_round_result_field)
{
    s_result r;
    s_result_init(&r);
    r.r.round = 0;
    s_rejects(&r.env, "round_result.round");

    s_result_init(&r);
    r.r.n_params = 0;
    s_rejects(&r.env, "round_result.params is empty");

    s_result_init(&r);
    r.digest[0] ^= 0x80;
    s_rejects(&r.env, "round_result.model_sha256 does not match");

    s_result_init(&r);
    r.params[2] = INFINITY;
    s_digest(r.params, 5, r.digest);
    s_rejects(&r.env, "round_result.params[2]");
}

/* ------------------------------------------------------------ digest */

Test(wire, digest_of_no_params_is_sha256_of_the_empty_string)
{
    uint8_t got[32], want[32];
    float none = 0.0f;
    /* FIPS 180-4 example / widely published: SHA-256("") */
    s_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, 32);
    fl_wire_model_digest(&none, 0, got);
    cr_assert_arr_eq(got, want, 32);
}

Test(wire, digest_hashes_the_little_endian_bytes_of_each_float)
{
    uint8_t got[32], want[32];
    const float one = 1.0f;
    /* IEEE 754 single 1.0 = 0x3f800000, little-endian 00 00 80 3f. */
    const unsigned char bytes[4] = {0x00, 0x00, 0x80, 0x3f};
    crypto_hash_sha256(want, bytes, sizeof bytes);
    fl_wire_model_digest(&one, 1, got);
    cr_assert_arr_eq(got, want, 32);
    /* The same value from Python: hashlib.sha256(struct.pack('<f', 1.0)). */
    s_hex("e00e5eb9444182f352323374ef4e08ebcb784725fdd4fd612d7730540b3e0c8c", want, 32);
    cr_assert_arr_eq(got, want, 32);
}

Test(wire, digest_of_three_params_matches_an_external_vector)
{
    uint8_t got[32], want[32];
    const float p[3] = {1.0f, -2.0f, 0.5f};
    /* 00 00 80 3f | 00 00 00 c0 | 00 00 00 3f, hashed by Python's hashlib. */
    s_hex("2ce4bdb6b34a50ac7092eb9fee94337a27498e9eb9bae44192f15b88831b2422", want, 32);
    fl_wire_model_digest(p, 3, got);
    cr_assert_arr_eq(got, want, 32);
}

/* The implementation hashes in 4096-byte blocks (1024 floats); lengths on
 * and around the block boundary must give the one-shot SHA-256. */
Test(wire, digest_is_independent_of_the_internal_block_size)
{
    const size_t ns[] = {1023, 1024, 1025, 2048, 3000};
    float *p = malloc(3000 * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < 3000; i++)
        p[i] = (float)i * 0.001f - 1.5f;
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        uint8_t got[32], want[32];
        s_digest(p, ns[k], want);
        fl_wire_model_digest(p, ns[k], got);
        cr_assert_arr_eq(got, want, 32, "n = %zu", ns[k]);
    }
    free(p);
}

/* ------------------------------------------------------- spec counts */

Test(wire, spec_num_params_matches_the_closed_form)
{
    const uint32_t a[] = {30, 16, 1};
    const uint32_t b[] = {4, 3, 2};
    const uint32_t c[] = {10, 1};
    const uint32_t d[] = {5, 7, 7, 3};
    cr_assert_eq(fl_wire_spec_num_params(a, 3), 513u);         /* 480+16+16+1 */
    cr_assert_eq(fl_wire_spec_num_params(b, 3), 23u);          /* 12+3+6+2 */
    cr_assert_eq(fl_wire_spec_num_params(c, 2), 11u);          /* 10+1 */
    cr_assert_eq(fl_wire_spec_num_params(d, 4), 42u + 56 + 24); /* 35+7, 49+7, 21+3 */
}

Test(wire, spec_num_params_rejects_invalid_shapes)
{
    uint32_t s[18];
    for (int i = 0; i < 18; i++)
        s[i] = 1;
    cr_assert_eq(fl_wire_spec_num_params(s, 0), 0u);
    cr_assert_eq(fl_wire_spec_num_params(s, 1), 0u, "one size is not a model");
    cr_assert_eq(fl_wire_spec_num_params(s, 17), 32u, "16 layers of 1x1 + bias");
    cr_assert_eq(fl_wire_spec_num_params(s, 18), 0u, "17 layers is one too many");
    s[1] = 0;
    cr_assert_eq(fl_wire_spec_num_params(s, 3), 0u, "a zero width");
    s[1] = 65537;
    cr_assert_eq(fl_wire_spec_num_params(s, 2), 0u, "a width over 65536");
    s[0] = 65536;
    s[1] = 1;
    cr_assert_eq(fl_wire_spec_num_params(s, 2), 65537u, "65536 is an allowed width");
}

/* FL_WIRE_MAX_PARAMS = 2^23 = 8388608.  {a, b} has b(a+1) parameters:
 * b = 8192, a = 1023 gives exactly 2^23; a = 1024 gives 8192*1025. */
Test(wire, spec_num_params_stops_at_the_parameter_limit_without_overflow)
{
    const uint32_t at[] = {1023, 8192};
    const uint32_t over[] = {1024, 8192};
    const uint32_t huge[] = {65536, 65536, 65536, 65536, 65536, 65536, 65536, 65536, 65536,
                             65536, 65536, 65536, 65536, 65536, 65536, 65536, 65536};
    cr_assert_eq(fl_wire_spec_num_params(at, 2), (size_t)8388608);
    cr_assert_eq(fl_wire_spec_num_params(over, 2), 0u);
    cr_assert_eq(fl_wire_spec_num_params(huge, 17), 0u, "16 x (2^32 + 2^16) must not wrap");
}

Test(wire, name_ok_accepts_only_the_documented_alphabet)
{
    cr_assert(fl_wire_name_ok("Hospital_A-1.eu"));
    cr_assert(!fl_wire_name_ok(NULL));
    cr_assert(!fl_wire_name_ok(""));
    cr_assert(!fl_wire_name_ok("a b"));
    cr_assert(!fl_wire_name_ok("a:b"));
    cr_assert(!fl_wire_name_ok("a\x01"));
}

/* ---------------------------------------------------------- mini fuzz */

static uint64_t s_rng = 0x9e3779b97f4a7c15ull;
static uint64_t s_next(void)
{
    /* xorshift64* (Vigna 2016), fixed seed: the run is reproducible. */
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 0x2545f4914f6cdd1dull;
}

/* A decoded envelope must satisfy the invariants the validator promises,
 * and re-encoding it must decode again. */
static void s_check_valid(Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    Fl__Envelope *again = NULL;
    cr_assert_eq(env->version, 1u);
    cr_assert(fl_wire_name_ok(env->consortium));
    cr_assert(env->body_case >= FL__ENVELOPE__BODY_JOIN &&
              env->body_case <= FL__ENVELOPE__BODY_ERROR);
    cr_assert_eq(fl_wire_encode(env, &buf, &len), FL_OK);
    cr_assert_eq(fl_wire_decode(&again, buf, len, NULL), FL_OK, "%s", fl_error_last());
    fl_wire_free(again);
    free(buf);
}

static void s_fuzz_one(const uint8_t *buf, size_t len)
{
    Fl__Envelope *out = (Fl__Envelope *)0x1;
    int rc = fl_wire_decode(&out, buf, len, NULL);
    if (rc == FL_OK) {
        cr_assert_not_null(out);
        s_check_valid(out);
        fl_wire_free(out);
    } else {
        cr_assert_eq(rc, FL_EPROTO, "%s", fl_error_last());
        cr_assert_null(out);
        cr_assert_neq(fl_error_last()[0], '\0');
    }
}

Test(wire, survives_random_garbage_frames)
{
    uint8_t buf[512];
    for (int it = 0; it < 2000; it++) {
        size_t len = 1 + (size_t)(s_next() % sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)s_next();
        /* Half the time start like a real envelope (version 1, consortium)
         * so that the decoder gets past the first bytes more often. */
        if ((it & 1) && len > 4) {
            buf[0] = 0x08;
            buf[1] = 0x01;
            buf[2] = 0x12;
            buf[3] = (uint8_t)(s_next() % 20);
        }
        s_fuzz_one(buf, len);
    }
}

Test(wire, survives_mutations_of_valid_frames)
{
    s_join j;
    s_start s;
    s_update u;
    s_decline d;
    s_result r;
    s_error e;
    const Fl__Envelope *envs[6];
    s_join_init(&j);
    s_start_init(&s);
    s_update_init(&u);
    s_decline_init(&d);
    s_result_init(&r);
    s_error_init(&e);
    envs[0] = &j.env;
    envs[1] = &s.env;
    envs[2] = &u.env;
    envs[3] = &d.env;
    envs[4] = &r.env;
    envs[5] = &e.env;
    for (int k = 0; k < 6; k++) {
        uint8_t *orig = NULL, *buf;
        size_t len = 0;
        cr_assert_eq(fl_wire_encode(envs[k], &orig, &len), FL_OK);
        buf = malloc(len);
        cr_assert_not_null(buf);
        for (int it = 0; it < 400; it++) {
            size_t cut = len;
            memcpy(buf, orig, len);
            int flips = 1 + (int)(s_next() % 4);
            for (int f = 0; f < flips; f++)
                buf[s_next() % len] ^= (uint8_t)(1u << (s_next() % 8));
            if (it % 5 == 0)
                cut = 1 + (size_t)(s_next() % len); /* truncation */
            s_fuzz_one(buf, cut);
        }
        free(buf);
        free(orig);
    }
}
