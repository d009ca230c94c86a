/*
 * fuzz_wire: every protocol message, through the path both daemons start
 * each received frame with (fl_wire_decode: size bound, protobuf-c decode,
 * per-message field validation). The coordinator's and the node's message
 * handlers are static functions of flcoord.c and flnode.c that run only on
 * an envelope this path accepted; what they do first with one that is pure
 * computation is repeated here: the model a node builds from a RoundStart's
 * spec (fl_wire_spec_decode) and the secure-aggregation context and
 * parameters it derives (fl_wire_secagg_context, fl_secagg_client_new with
 * the round's n, t, k, dim, R, max weight and counters).
 *
 * Properties checked beyond "no crash": every rejection says why; an
 * accepted envelope without unknown fields re-encodes and decodes again to
 * an accepted envelope of the same size and kind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "proto/fl_wire.h"
#include "secagg/fl_secagg.h"

#define S_CONSORTIUM "hospitals"

static fl_identity *s_id;

/* The node's s_secagg_prepare on an accepted RoundStart, with every
 * participant's key set to one fixed identity (the node's peers file). */
static void s_node_secagg_prepare(const Fl__RoundStart *rs)
{
    const Fl__SecAggSettings *sa = rs->secagg;
    fl_secagg_params p;
    fl_secagg_client *c = NULL;
    uint8_t (*pks)[32];

    if (!sa || !sa->enabled)
        return;
    pks = malloc(sa->n_participants * sizeof *pks);
    if (!pks)
        abort();
    for (size_t i = 0; i < sa->n_participants; i++)
        memcpy(pks[i], fl_identity_public_of(s_id)->sign_pk, 32);
    memset(&p, 0, sizeof p);
    p.n = (uint32_t)sa->n_participants;
    p.t = sa->threshold;
    p.k = sa->neighbours;
    p.dim = (uint32_t)rs->n_params;
    p.clip_range = sa->clip_range;
    p.max_weight = sa->max_weight;
    p.num_counters = sa->num_counters;
    p.max_counter = sa->max_counter;
    p.identity_pks = (const uint8_t(*)[32])pks;
    fl_wire_secagg_context(S_CONSORTIUM, rs, p.context);
    (void)fl_secagg_scale(&p);
    if (fl_secagg_client_new(&c, &p, 0, s_id) == FL_OK)
        fl_secagg_client_free(c);
    free(pks);
}

/* Unknown fields anywhere in a decoded message tree. protobuf-c keeps them
 * and re-emits them when packing; it accepts a field number 0 written as a
 * non-canonical two-byte tag (80 00) but re-emits it canonically (00),
 * which it then rejects. The daemons never re-encode a received envelope,
 * so the round trip is required only of envelopes without unknown fields
 * (fuzz/corpus/wire/regress-field-zero). */
static size_t s_unknown_fields(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    size_t n = m->n_unknown_fields;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)(const void *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(const void *)(base + f->offset);
            for (size_t k = 0; k < cnt; k++)
                n += s_unknown_fields(v[k]);
        } else {
            const ProtobufCMessage *sub;
            if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
                continue;
            sub = *(const ProtobufCMessage *const *)(const void *)(base + f->offset);
            if (sub)
                n += s_unknown_fields(sub);
        }
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Fl__Envelope *env = NULL, *again = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;

    fuzz_init();
    if (!s_id)
        s_id = fuzz_identity(0);
    if (fl_wire_decode(&env, data, size, S_CONSORTIUM) != FL_OK) {
        if (!fl_error_last()[0])
            abort(); /* every rejection must say why */
        return 0;
    }
    if (env->body_case == FL__ENVELOPE__BODY_ROUND_START) {
        /* The node builds its model from the spec of an accepted RoundStart. */
        fl_model_spec spec;
        if (fl_wire_spec_decode(env->round_start->spec, &spec) != FL_OK ||
            fl_model_spec_num_params(&spec) != env->round_start->n_params)
            abort();
        s_node_secagg_prepare(env->round_start);
    }
    if (fl_wire_encode(env, &buf, &len) != FL_OK)
        abort();
    if (fl_wire_decode(&again, buf, len, S_CONSORTIUM) != FL_OK) {
        if (s_unknown_fields(&env->base) == 0) {
            fprintf(stderr, "fuzz_wire: an accepted envelope, re-encoded, is rejected: %s\n",
                    fl_error_last());
            abort();
        }
    } else if (again->body_case != env->body_case ||
               fl__envelope__get_packed_size(again) != len) {
        abort();
    }
    fl_wire_free(again);
    fl_wire_free(env);
    free(buf);
    return 0;
}
