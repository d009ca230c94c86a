/*
 * fuzz_secagg_round: an in-process secure-aggregation round for the fuzz
 * targets (see fuzz_secagg_round.h).
 */
#include "fuzz/fuzz_secagg_round.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_support.h"
#include "secagg/fl_secagg_internal.h"

static fl_identity *s_ids[FUZZ_SA_MAXN];

/* n, t, k (SecAgg+ neighbours, 0 = all pairs), counters. */
static const uint32_t s_configs[4][4] = {
    {4, 3, 0, 0}, /* plain Bonawitz, one dropout tolerated */
    {6, 2, 2, 0}, /* SecAgg+ ring: each party masks with 2 neighbours */
    {3, 2, 0, 3}, /* three evaluation counters after the weight */
    {5, 3, 4, 1}, /* SecAgg+ with k = n - 1 (every pair) and a counter */
};

void fuzz_secagg_round_init(fuzz_secagg_round *r, unsigned config)
{
    const uint32_t *c = s_configs[config % 4];
    memset(r, 0, sizeof *r);
    r->p.n = c[0];
    r->p.t = c[1];
    r->p.k = c[2];
    r->p.num_counters = c[3];
    r->p.max_counter = c[3] ? 1000 : 0;
    r->p.dim = FUZZ_SA_DIM;
    r->p.clip_range = 1.0;
    r->p.max_weight = 100;
    memset(r->p.context, 0, sizeof r->p.context);
    snprintf((char *)r->p.context, sizeof r->p.context, "fuzz round context %u", config % 4);
    for (uint32_t i = 0; i < r->p.n; i++) {
        if (!s_ids[i])
            s_ids[i] = fuzz_identity(i);
        r->ids[i] = s_ids[i];
        memcpy(r->pks[i], fl_identity_public_of(s_ids[i])->sign_pk, 32);
    }
    r->p.identity_pks = (const uint8_t(*)[32])r->pks;
    if (fl_secagg_server_new(&r->sv, &r->p) != FL_OK) {
        fprintf(stderr, "fuzz: secagg server: %s\n", fl_error_last());
        abort();
    }
    for (uint32_t i = 0; i < r->p.n; i++)
        if (fl_secagg_client_new(&r->cl[i], &r->p, i, r->ids[i]) != FL_OK) {
            fprintf(stderr, "fuzz: secagg client: %s\n", fl_error_last());
            abort();
        }
}

void fuzz_secagg_round_free(fuzz_secagg_round *r)
{
    for (uint32_t i = 0; i < r->p.n; i++)
        fl_secagg_client_free(r->cl[i]);
    fl_secagg_server_free(r->sv);
    memset(r, 0, sizeof *r);
}

static int s_client_step(fuzz_secagg_round *r, int step, uint32_t i, const uint8_t *in,
                         size_t inl, uint8_t **m, size_t *l)
{
    float x[FUZZ_SA_DIM];
    uint32_t counters[FUZZ_SA_MAXC] = {0}, clipped = 0;
    switch (step) {
    case 0: return fl_secagg_client_advertise(r->cl[i], m, l);
    case 1: return fl_secagg_client_share(r->cl[i], in, inl, m, l);
    case 2:
        /* Fixed inputs on a coarse grid, one clipped coordinate per party. */
        for (uint32_t j = 0; j < FUZZ_SA_DIM; j++)
            x[j] = (float)((int)((i + 1) * (j + 2) % 7) - 3) * 0.125f;
        x[FUZZ_SA_DIM - 1] = i % 2 ? -3.0f : 3.0f;
        for (uint32_t j = 0; j < r->p.num_counters && j < FUZZ_SA_MAXC; j++)
            counters[j] = 10 * i + j;
        return fl_secagg_client_masked(r->cl[i], in, inl, x, 10 + i, counters, &clipped, m, l);
    case 3: return fl_secagg_client_consist(r->cl[i], in, inl, m, l);
    default: return fl_secagg_client_unmask(r->cl[i], in, inl, m, l);
    }
}

int fuzz_secagg_round_run(fuzz_secagg_round *r)
{
    uint8_t *in[FUZZ_SA_MAXN] = {0}, *out[FUZZ_SA_MAXN] = {0};
    size_t inl[FUZZ_SA_MAXN] = {0}, outl[FUZZ_SA_MAXN] = {0};
    const uint32_t n = r->p.n;
    int step;

    for (step = 0; step < 5; step++) {
        for (uint32_t i = 0; i < n; i++) {
            uint8_t *m = NULL;
            size_t l = 0;
            if (r->dead[i] || (step > 0 && !in[i])) {
                r->dead[i] = 1;
                continue;
            }
            if (step > 0 && r->down)
                r->down(r, step, i, &in[i], &inl[i]);
            if (step > 0 && !in[i]) {
                r->dead[i] = 1;
                continue;
            }
            if (s_client_step(r, step, i, in[i], inl[i], &m, &l) != FL_OK) {
                if (!fl_error_last()[0])
                    abort(); /* every failure must say why */
                r->dead[i] = 1;
                continue;
            }
            if (r->up)
                r->up(r, step, i, &m, &l);
            if (m && fl_secagg_server_receive(r->sv, i, m, l) != FL_OK && !fl_error_last()[0])
                abort();
            free(m);
        }
        for (uint32_t i = 0; i < n; i++) {
            free(in[i]);
            in[i] = NULL;
        }
        if (fl_secagg_server_advance(r->sv, step < 4 ? out : NULL, step < 4 ? outl : NULL) !=
            FL_OK)
            break;
        if (step == 2) {
            memcpy(r->u3, fl_secagg_server_alive(r->sv), n);
            r->u3_known = 1;
        }
        if (step < 4)
            for (uint32_t i = 0; i < n; i++) {
                in[i] = out[i];
                inl[i] = outl[i];
                out[i] = NULL;
            }
    }
    for (uint32_t i = 0; i < n; i++)
        free(in[i]);
    if (step == 5) {
        double sum[FUZZ_SA_DIM];
        uint64_t weight = 0, counts[FUZZ_SA_MAXC];
        if (fl_secagg_server_result(r->sv, sum, &weight) != FL_OK ||
            fl_secagg_server_counters(r->sv, counts) != FL_OK)
            abort(); /* a completed round must give its sum */
    }
    return step;
}

void fuzz_secagg_resign_advert(const fuzz_secagg_round *r, uint8_t *a)
{
    uint8_t signed_bytes[8 + FL_SECAGG_ADVERT_SIGNED];
    uint32_t party = fl_secagg_get32(a + 1);
    if (party >= r->p.n)
        return;
    memcpy(signed_bytes, "FLSA-adv", 8);
    memcpy(signed_bytes + 8, a, FL_SECAGG_ADVERT_SIGNED);
    fl_identity_sign(r->ids[party], signed_bytes, sizeof signed_bytes,
                     a + FL_SECAGG_ADVERT_SIGNED);
}

void fuzz_secagg_resign_consist(const fuzz_secagg_round *r, uint8_t *entry)
{
    uint32_t party = fl_secagg_get32(entry);
    uint8_t *b = NULL;
    size_t bl = 0;
    if (party >= r->p.n || !r->u3_known)
        return;
    if (fl_secagg_consist_bytes(&b, &bl, r->p.context, r->u3, r->p.n) != FL_OK)
        abort();
    fl_identity_sign(r->ids[party], b, bl, entry + 4);
    free(b);
}
