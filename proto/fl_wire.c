/*
 * fl_wire: bounded decoding and field validation of protocol envelopes
 * (see fl_wire.h).  Each validator names the message and the field.
 */
#include "proto/fl_wire.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_REJECT(...) fl_error_set(FL_EPROTO, __VA_ARGS__)

int fl_wire_name_ok(const char *s)
{
    size_t n;
    if (!s)
        return 0;
    n = strlen(s);
    if (n == 0 || n > FL_WIRE_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Free text (errors, declines): bounded, no control characters, so it can be
 * logged without letting a peer forge log lines. */
static int s_text_ok(const char *s, const char *what)
{
    size_t n = strlen(s);
    if (n > FL_WIRE_MAX_TEXT)
        return S_REJECT("%s is %zu bytes long, more than the %u allowed", what, n,
                        FL_WIRE_MAX_TEXT);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return S_REJECT("%s contains control character 0x%02x at byte %zu", what, c, i);
    }
    return FL_OK;
}

static int s_digest_ok(const ProtobufCBinaryData *d, const char *what)
{
    if (d->len != FL_WIRE_DIGEST_BYTES)
        return S_REJECT("%s must be %u bytes (SHA-256), got %zu", what, FL_WIRE_DIGEST_BYTES,
                        d->len);
    return FL_OK;
}

static int s_params_ok(const float *p, size_t n, const char *what)
{
    if (n > FL_WIRE_MAX_PARAMS)
        return S_REJECT("%s has %zu values, more than the %u allowed", what, n,
                        FL_WIRE_MAX_PARAMS);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return S_REJECT("%s[%zu] is not a finite number", what, i);
    return FL_OK;
}

int fl_wire_spec_decode(const Fl__ModelSpec *sp, fl_model_spec *out)
{
    memset(out, 0, sizeof *out);
    if (sp->output_kind != 1 && sp->output_kind != 2)
        return S_REJECT("spec.output_kind must be 1 (sigmoid) or 2 (softmax), got %u",
                        sp->output_kind);
    if (sp->n_layers == 0) {
        if (sp->n_layer_sizes < 2 || sp->n_layer_sizes > FL_WIRE_MAX_LAYERS + 1)
            return S_REJECT("spec.layer_sizes must list 2..%u sizes, got %zu",
                            FL_WIRE_MAX_LAYERS + 1, sp->n_layer_sizes);
        if (fl_model_spec_from_sizes(out, sp->layer_sizes, sp->n_layer_sizes,
                                     sp->output_kind) != FL_OK)
            return fl_error_wrap(FL_EPROTO, "spec.layer_sizes");
        return FL_OK;
    }
    if (sp->n_layer_sizes != 0)
        return S_REJECT("spec has both layer_sizes and layers: send one form");
    if (sp->n_layers > FL_SPEC_MAX_LAYERS)
        return S_REJECT("spec.layers must list 1..%d layers, got %zu", FL_SPEC_MAX_LAYERS,
                        sp->n_layers);
    out->in_c = sp->in_channels;
    out->in_h = sp->in_height;
    out->in_w = sp->in_width;
    out->output_kind = sp->output_kind;
    out->num_layers = (uint32_t)sp->n_layers;
    for (size_t i = 0; i < sp->n_layers; i++) {
        out->layers[i].kind = sp->layers[i]->kind;
        out->layers[i].units = sp->layers[i]->units;
        out->layers[i].kernel = sp->layers[i]->kernel;
    }
    if (fl_model_spec_validate(out) != FL_OK)
        return fl_error_wrap(FL_EPROTO, "spec.layers");
    return FL_OK;
}

void fl_wire_spec_encode(const fl_model_spec *spec, Fl__ModelSpec *sp, uint32_t *sizes,
                         Fl__LayerSpec *layers, Fl__LayerSpec **ptrs)
{
    size_t n = 0;
    fl__model_spec__init(sp);
    sp->output_kind = spec->output_kind;
    if (fl_model_spec_to_sizes(spec, sizes, &n) == FL_OK) {
        sp->n_layer_sizes = n;
        sp->layer_sizes = sizes;
        return;
    }
    sp->in_channels = spec->in_c;
    sp->in_height = spec->in_h;
    sp->in_width = spec->in_w;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        fl__layer_spec__init(&layers[i]);
        layers[i].kind = spec->layers[i].kind;
        layers[i].units = spec->layers[i].units;
        layers[i].kernel = spec->layers[i].kernel;
        ptrs[i] = &layers[i];
    }
    sp->n_layers = spec->num_layers;
    sp->layers = ptrs;
}

void fl_wire_image_digest(size_t d, uint8_t out[FL_WIRE_DIGEST_BYTES])
{
    crypto_hash_sha256_state st;
    uint8_t le[8];
    uint64_t d64 = d;
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(d64 >> (8 * i));
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)"flc image data v1", 17);
    crypto_hash_sha256_update(&st, le, sizeof le);
    crypto_hash_sha256_final(&st, out);
}

uint32_t fl_wire_eval_classes(const fl_model_spec *spec)
{
    size_t k = fl_model_spec_num_outputs(spec);
    return spec->output_kind == 1 ? 2u : (uint32_t)k;
}

size_t fl_wire_spec_num_params(const uint32_t *sizes, size_t n)
{
    uint64_t total = 0;
    if (n < 2 || n > FL_WIRE_MAX_LAYERS + 1)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (sizes[i] == 0 || sizes[i] > FL_WIRE_MAX_WIDTH)
            return 0;
    for (size_t i = 0; i + 1 < n; i++) {
        total += (uint64_t)sizes[i] * sizes[i + 1] + sizes[i + 1];
        if (total > FL_WIRE_MAX_PARAMS)
            return 0;
    }
    return (size_t)total;
}

static int s_check_join(const Fl__Join *j)
{
    if (!fl_wire_name_ok(j->node_name))
        return S_REJECT("join.node_name must be 1..%u characters from [A-Za-z0-9._-]",
                        FL_WIRE_MAX_NAME);
    if (s_digest_ok(&j->schema_digest, "join.schema_digest") != FL_OK)
        return FL_EPROTO;
    if (j->num_features == 0 || j->num_features > FL_WIRE_MAX_WIDTH)
        return S_REJECT("join.num_features must be in 1..%u, got %u", FL_WIRE_MAX_WIDTH,
                        j->num_features);
    return FL_OK;
}

static int s_check_settings(const Fl__RoundSettings *s, uint32_t round)
{
    if (!s)
        return S_REJECT("round_start.settings is missing");
    if (s->local_steps == 0 || s->local_steps > FL_WIRE_MAX_STEPS)
        return S_REJECT("settings.local_steps must be in 1..%u, got %u", FL_WIRE_MAX_STEPS,
                        s->local_steps);
    if (!isfinite(s->learning_rate) || s->learning_rate <= 0.0f || s->learning_rate > 100.0f)
        return S_REJECT("settings.learning_rate must be in (0, 100], got %g",
                        (double)s->learning_rate);
    if (!isfinite(s->clip_norm) || s->clip_norm <= 0.0f || s->clip_norm > 1e6f)
        return S_REJECT("settings.clip_norm must be in (0, 1e6], got %g", (double)s->clip_norm);
    if (!isfinite(s->sampling_rate) || s->sampling_rate <= 0.0f || s->sampling_rate > 1.0f)
        return S_REJECT("settings.sampling_rate must be in (0, 1], got %g",
                        (double)s->sampling_rate);
    if (s->total_rounds < round || s->total_rounds > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("settings.total_rounds must be in %u..%u, got %u", round,
                        FL_WIRE_MAX_ROUNDS, s->total_rounds);
    if (s->min_nodes == 0 || s->min_nodes > 100000)
        return S_REJECT("settings.min_nodes must be in 1..100000, got %u", s->min_nodes);
    return FL_OK;
}

static int s_check_model(const float *params, size_t n, const ProtobufCBinaryData *digest,
                         const char *what)
{
    uint8_t want[FL_WIRE_DIGEST_BYTES];
    char field[64];

    snprintf(field, sizeof field, "%s.params", what);
    if (s_params_ok(params, n, field) != FL_OK)
        return FL_EPROTO;
    snprintf(field, sizeof field, "%s.model_sha256", what);
    if (s_digest_ok(digest, field) != FL_OK)
        return FL_EPROTO;
    fl_wire_model_digest(params, n, want);
    if (sodium_memcmp(want, digest->data, FL_WIRE_DIGEST_BYTES) != 0)
        return S_REJECT("%s does not match the SHA-256 of the parameters", field);
    return FL_OK;
}

static int s_check_round_start(const Fl__RoundStart *r)
{
    const Fl__ModelSpec *sp = r->spec;
    fl_model_spec spec;
    size_t expect;

    if (r->round == 0 || r->round > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("round_start.round must be in 1..%u, got %u", FL_WIRE_MAX_ROUNDS,
                        r->round);
    if (s_check_settings(r->settings, r->round) != FL_OK)
        return FL_EPROTO;
    if (!sp)
        return S_REJECT("round_start.spec is missing");
    if (fl_wire_spec_decode(sp, &spec) != FL_OK)
        return FL_EPROTO;
    if (r->secagg && r->secagg->enabled) {
        const Fl__SecAggSettings *sa = r->secagg;
        if (sa->n_participants < 1 || sa->n_participants > FL_WIRE_MAX_PARTIES)
            return S_REJECT("secagg.participants must list 1..%u nodes, got %zu",
                            FL_WIRE_MAX_PARTIES, sa->n_participants);
        for (size_t i = 0; i < sa->n_participants; i++) {
            if (!fl_wire_name_ok(sa->participants[i]))
                return S_REJECT("secagg.participants[%zu] is not a valid node name", i);
            for (size_t j = 0; j < i; j++)
                if (strcmp(sa->participants[i], sa->participants[j]) == 0)
                    return S_REJECT("secagg.participants lists '%s' twice",
                                    sa->participants[i]);
        }
        if (sa->threshold < 1 || sa->threshold > sa->n_participants)
            return S_REJECT("secagg.threshold must be in 1..%zu, got %u", sa->n_participants,
                            sa->threshold);
        if (sa->neighbours > sa->n_participants)
            return S_REJECT("secagg.neighbours must be at most %zu, got %u",
                            sa->n_participants, sa->neighbours);
        if (!isfinite(sa->clip_range) || sa->clip_range <= 0.0f || sa->clip_range > 1e6f)
            return S_REJECT("secagg.clip_range must be in (0, 1e6], got %g",
                            (double)sa->clip_range);
        if (sa->max_weight == 0 || sa->max_weight > FL_WIRE_MAX_SAMPLES)
            return S_REJECT("secagg.max_weight must be in 1..%llu, got %u",
                            (unsigned long long)FL_WIRE_MAX_SAMPLES, sa->max_weight);
        if (sa->num_counters != 0 &&
            sa->num_counters != FL_WIRE_EVAL_COUNTERS(fl_wire_eval_classes(&spec)))
            return S_REJECT("secagg.num_counters must be 0 or %zu for this model, got %u",
                            FL_WIRE_EVAL_COUNTERS(fl_wire_eval_classes(&spec)),
                            sa->num_counters);
        if (sa->num_counters != 0 &&
            (sa->max_counter == 0 ||
             (uint64_t)sa->max_counter * sa->n_participants >= (1ull << 32)))
            return S_REJECT("secagg.max_counter must be in 1..2^32/participants, got %u",
                            sa->max_counter);
    }
    expect = fl_model_spec_num_params(&spec);
    if (expect > FL_WIRE_MAX_PARAMS)
        return S_REJECT("spec: the model has %zu parameters, more than the %u allowed", expect,
                        FL_WIRE_MAX_PARAMS);
    if (r->n_params != expect)
        return S_REJECT("round_start.params has %zu values but the spec needs %zu",
                        r->n_params, expect);
    return s_check_model(r->params, r->n_params, &r->model_sha256, "round_start");
}

static int s_check_update(const Fl__Update *u)
{
    if (u->round == 0 || u->round > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("update.round must be in 1..%u, got %u", FL_WIRE_MAX_ROUNDS, u->round);
    if (u->num_samples == 0 || u->num_samples > FL_WIRE_MAX_SAMPLES)
        return S_REJECT("update.num_samples must be in 1..%llu, got %llu",
                        (unsigned long long)FL_WIRE_MAX_SAMPLES,
                        (unsigned long long)u->num_samples);
    if (u->n_params == 0)
        return S_REJECT("update.params is empty");
    if (s_params_ok(u->params, u->n_params, "update.params") != FL_OK)
        return FL_EPROTO;
    if (s_digest_ok(&u->base_sha256, "update.base_sha256") != FL_OK)
        return FL_EPROTO;
    if (u->steps > FL_WIRE_MAX_STEPS)
        return S_REJECT("update.steps must be at most %u, got %u", FL_WIRE_MAX_STEPS, u->steps);
    if (!isfinite(u->epsilon) || u->epsilon < 0.0)
        return S_REJECT("update.epsilon must be a finite number >= 0");
    if (!isfinite(u->delta) || u->delta <= 0.0 || u->delta >= 1.0)
        return S_REJECT("update.delta must be in (0, 1)");
    if (u->n_eval_counts != 0) {
        uint64_t sum = 0;
        size_t k = 2;
        while (k <= FL_WIRE_MAX_CLASSES && FL_WIRE_EVAL_COUNTERS(k) < u->n_eval_counts)
            k++;
        if (k > FL_WIRE_MAX_CLASSES || FL_WIRE_EVAL_COUNTERS(k) != u->n_eval_counts)
            return S_REJECT("update.eval_counts has %zu values: expected K*K+2 for K classes "
                            "(2..%u)", u->n_eval_counts, FL_WIRE_MAX_CLASSES);
        for (size_t i = 0; i < k * k; i++) {
            if (u->eval_counts[i] > FL_WIRE_MAX_SAMPLES)
                return S_REJECT("update.eval_counts[%zu] is larger than %llu", i,
                                (unsigned long long)FL_WIRE_MAX_SAMPLES);
            sum += u->eval_counts[i];
        }
        if (sum != u->eval_counts[k * k + 1])
            return S_REJECT("update.eval_counts: the confusion counts add up to %llu, not the "
                            "example count %llu", (unsigned long long)sum,
                            (unsigned long long)u->eval_counts[k * k + 1]);
        if (u->eval_counts[k * k] > (1ull << 53))
            return S_REJECT("update.eval_counts: the loss sum is out of range");
    }
    return FL_OK;
}

static int s_check_decline(const Fl__Decline *d)
{
    if (d->round == 0 || d->round > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("decline.round must be in 1..%u, got %u", FL_WIRE_MAX_ROUNDS, d->round);
    if (d->code >= 0)
        return S_REJECT("decline.code must be a negative error code, got %d", d->code);
    return s_text_ok(d->reason, "decline.reason");
}

static int s_check_result(const Fl__RoundResult *r)
{
    if (r->round == 0 || r->round > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("round_result.round must be in 1..%u, got %u", FL_WIRE_MAX_ROUNDS,
                        r->round);
    if (r->n_params == 0)
        return S_REJECT("round_result.params is empty");
    return s_check_model(r->params, r->n_params, &r->model_sha256, "round_result");
}

static int s_check_secagg(const Fl__SecAgg *m)
{
    if (m->round == 0 || m->round > FL_WIRE_MAX_ROUNDS)
        return S_REJECT("secagg.round must be in 1..%u, got %u", FL_WIRE_MAX_ROUNDS, m->round);
    if (m->step > 4)
        return S_REJECT("secagg.step must be in 0..4, got %u", m->step);
    if (m->payload.len == 0 || m->payload.len > FL_WIRE_MAX_FRAME - 1024)
        return S_REJECT("secagg.payload must be 1..%u bytes, got %zu", FL_WIRE_MAX_FRAME - 1024,
                        m->payload.len);
    if (!isfinite(m->epsilon) || m->epsilon < 0.0)
        return S_REJECT("secagg.epsilon must be a finite number >= 0");
    if (!isfinite(m->delta) || m->delta < 0.0 || m->delta >= 1.0)
        return S_REJECT("secagg.delta must be in [0, 1)");
    return FL_OK;
}

static int s_check_error(const Fl__Error *e)
{
    if (e->code >= 0)
        return S_REJECT("error.code must be negative, got %d", e->code);
    return s_text_ok(e->message, "error.message");
}

int fl_wire_decode(Fl__Envelope **out, const uint8_t *buf, size_t len, const char *consortium)
{
    Fl__Envelope *env = NULL;
    int rc;

    *out = NULL;
    if (len == 0)
        return S_REJECT("empty frame: expected a protocol envelope");
    if (len > FL_WIRE_MAX_FRAME)
        return S_REJECT("frame of %zu bytes exceeds the %u-byte limit", len, FL_WIRE_MAX_FRAME);
    env = fl__envelope__unpack(NULL, len, buf);
    if (!env)
        return S_REJECT("frame of %zu bytes is not a valid protocol envelope (protobuf decoding "
                        "failed)", len);
    if (env->version != FL_PROTO_VERSION) {
        rc = S_REJECT("protocol version %u is not supported (this program speaks version %u): "
                      "run the same release on coordinator and nodes", env->version,
                      FL_PROTO_VERSION);
        goto fail;
    }
    if (!fl_wire_name_ok(env->consortium)) {
        rc = S_REJECT("envelope.consortium must be 1..%u characters from [A-Za-z0-9._-]",
                      FL_WIRE_MAX_NAME);
        goto fail;
    }
    if (consortium && strcmp(env->consortium, consortium) != 0) {
        rc = S_REJECT("envelope is for consortium '%s', this is consortium '%s'",
                      env->consortium, consortium);
        goto fail;
    }
    switch (env->body_case) {
    case FL__ENVELOPE__BODY_JOIN: rc = s_check_join(env->join); break;
    case FL__ENVELOPE__BODY_ROUND_START: rc = s_check_round_start(env->round_start); break;
    case FL__ENVELOPE__BODY_UPDATE: rc = s_check_update(env->update); break;
    case FL__ENVELOPE__BODY_DECLINE: rc = s_check_decline(env->decline); break;
    case FL__ENVELOPE__BODY_ROUND_RESULT: rc = s_check_result(env->round_result); break;
    case FL__ENVELOPE__BODY_ERROR: rc = s_check_error(env->error); break;
    case FL__ENVELOPE__BODY_SECAGG: rc = s_check_secagg(env->secagg); break;
    default: rc = S_REJECT("envelope has no message body"); break;
    }
    if (rc != FL_OK)
        goto fail;
    *out = env;
    return FL_OK;
fail:
    fl__envelope__free_unpacked(env, NULL);
    return rc;
}

void fl_wire_free(Fl__Envelope *env)
{
    if (env)
        fl__envelope__free_unpacked(env, NULL);
}

int fl_wire_encode(const Fl__Envelope *env, uint8_t **buf, size_t *len)
{
    size_t n = fl__envelope__get_packed_size(env);
    *buf = NULL;
    *len = 0;
    if (n > FL_WIRE_MAX_FRAME)
        return fl_error_set(FL_ERANGE, "message of %zu bytes exceeds the %u-byte frame limit",
                            n, FL_WIRE_MAX_FRAME);
    /* malloc(0) may return NULL; an empty envelope still gets a buffer. */
    *buf = malloc(n ? n : 1);
    if (!*buf)
        return fl_error_set(FL_ENOMEM, "out of memory encoding a %zu-byte message", n);
    *len = fl__envelope__pack(env, *buf);
    return FL_OK;
}

void fl_wire_envelope_init(Fl__Envelope *env, const char *consortium)
{
    fl__envelope__init(env);
    env->version = FL_PROTO_VERSION;
    env->consortium = (char *)consortium;
}

void fl_wire_model_digest(const float *params, size_t n, uint8_t out[FL_WIRE_DIGEST_BYTES])
{
    crypto_hash_sha256_state st;
    unsigned char block[4096];
    size_t fill = 0;

    crypto_hash_sha256_init(&st);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &params[i], sizeof u);
        block[fill++] = (unsigned char)(u & 0xff);
        block[fill++] = (unsigned char)((u >> 8) & 0xff);
        block[fill++] = (unsigned char)((u >> 16) & 0xff);
        block[fill++] = (unsigned char)(u >> 24);
        if (fill == sizeof block) {
            crypto_hash_sha256_update(&st, block, fill);
            fill = 0;
        }
    }
    crypto_hash_sha256_update(&st, block, fill);
    crypto_hash_sha256_final(&st, out);
}

static void s_hash_u32(crypto_hash_sha256_state *st, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    crypto_hash_sha256_update(st, b, 4);
}

static void s_hash_str(crypto_hash_sha256_state *st, const char *s)
{
    size_t n = strlen(s);
    s_hash_u32(st, (uint32_t)n); /* length-prefixed: no two lists hash alike */
    crypto_hash_sha256_update(st, (const unsigned char *)s, n);
}

void fl_wire_secagg_context(const char *consortium, const Fl__RoundStart *rs,
                            uint8_t out[FL_WIRE_DIGEST_BYTES])
{
    crypto_hash_sha256_state st;
    const Fl__SecAggSettings *sa = rs->secagg;
    uint32_t bits;

    crypto_hash_sha256_init(&st);
    s_hash_str(&st, "flc secagg context v3");
    s_hash_str(&st, consortium);
    s_hash_u32(&st, rs->round);
    s_hash_u32(&st, rs->attempt);
    crypto_hash_sha256_update(&st, rs->model_sha256.data, rs->model_sha256.len);
    s_hash_u32(&st, sa->threshold);
    s_hash_u32(&st, sa->neighbours);
    memcpy(&bits, &sa->clip_range, 4);
    s_hash_u32(&st, bits);
    s_hash_u32(&st, sa->max_weight);
    s_hash_u32(&st, sa->num_counters);
    s_hash_u32(&st, sa->max_counter);
    s_hash_u32(&st, (uint32_t)sa->n_participants);
    for (size_t i = 0; i < sa->n_participants; i++)
        s_hash_str(&st, sa->participants[i]);
    crypto_hash_sha256_final(&st, out);
}
