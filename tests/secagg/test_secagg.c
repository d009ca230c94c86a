/* Tests for fl_secagg: whole rounds with 3, 5 and 10 in-process parties,
 * with and without dropouts at every step; hostile messages (forged or
 * replayed adverts, misaddressed and tampered share ciphertexts, duplicate,
 * oversized and truncated messages, inconsistent U3 signatures); the
 * never-both reveal rule; uniformity of masked vectors (chi-square); and
 * the prime field and Shamir sharing against hand-computed cases; the
 * SecAgg+ neighbour graph (k > 0): its shape, that every party derives the
 * same one, exact sums with and without dropouts, the per-neighbourhood
 * abort, and message sizes that grow with k rather than n; exact integer
 * counters appended to the masked vector (sums over U3 with and without
 * dropouts and with k > 0, the public bound and the no-wrap rule, and
 * that masked counters look uniform).
 *
 * Expected sums are computed here in exact integer arithmetic from the
 * plaintext inputs: every input is an integer k divided by the public
 * scale (a power of two, so the float is exact and stochastic rounding is
 * deterministic), so the sum is sum_i w_i * k_i / scale exactly. */
#include <criterion/criterion.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "secagg/fl_secagg.h"
#include "secagg/fl_secagg_internal.h"

#define MAXN 16
#define NSTEP 5

typedef struct rnd rnd;
/* May replace *msg (free the old one), or set it to NULL to drop it. */
typedef void (*hook_fn)(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len);

struct rnd {
    uint32_t n, t, dim, maxw;
    double R, scale;
    fl_identity *ids[MAXN];
    uint8_t pks[MAXN][32];
    fl_secagg_params p;
    fl_secagg_client *cl[MAXN];
    fl_secagg_server *sv;
    float *x[MAXN];
    int64_t *k[MAXN]; /* quantized value after clipping */
    uint32_t w[MAXN], nclip[MAXN], got_clip[MAXN];
    int silent[MAXN]; /* first step at which the party stays silent (NSTEP: never) */
    hook_fn up, down;
    int up_rc[NSTEP][MAXN], cl_rc[NSTEP][MAXN], adv_rc[NSTEP];
    size_t up_len[NSTEP][MAXN], down_len[NSTEP][MAXN]; /* sizes as produced */
    char up_err[NSTEP][MAXN][256], cl_err[NSTEP][MAXN][256];
    uint8_t *masked[MAXN];
    size_t masked_len[MAXN];
    int keep_masked;
    int fill; /* 0 random grid values, 1 all zeros, 2 all R */
    uint32_t *ctr[MAXN]; /* num_counters values per party, NULL without counters */
    void *user;
};

static void s_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
}

TestSuite(secagg, .init = s_setup, .timeout = 120);

static void s_init(rnd *r, uint32_t n, uint32_t t, uint32_t dim)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    r->t = t;
    r->dim = dim;
    r->R = 1.0;
    r->maxw = 100;
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(fl_identity_generate(&r->ids[i]), FL_OK);
        memcpy(r->pks[i], fl_identity_public_of(r->ids[i])->sign_pk, 32);
        r->silent[i] = NSTEP;
    }
    r->p.n = n;
    r->p.t = t;
    r->p.k = 0;
    r->p.dim = dim;
    r->p.clip_range = r->R;
    r->p.max_weight = r->maxw;
    randombytes_buf(r->p.context, 32);
    r->p.identity_pks = (const uint8_t(*)[32])r->pks;
}

/* Inputs on the 1/scale grid; every 97th coordinate is 3R (clipped to R). */
static void s_inputs(rnd *r)
{
    r->scale = fl_secagg_scale(&r->p);
    cr_assert_geq(r->scale, 1.0);
    int64_t K = (int64_t)(r->R * r->scale);
    for (uint32_t i = 0; i < r->n; i++) {
        r->x[i] = malloc(sizeof(float) * r->dim);
        r->k[i] = malloc(sizeof(int64_t) * r->dim);
        r->w[i] = 1 + randombytes_uniform(r->maxw);
        r->nclip[i] = 0;
        for (uint32_t j = 0; j < r->dim; j++) {
            int64_t k;
            if (r->fill == 1)
                k = 0;
            else if (r->fill == 2)
                k = K;
            else
                k = (int64_t)randombytes_uniform((uint32_t)(2 * K + 1)) - K;
            r->x[i][j] = (float)((double)k / r->scale);
            cr_assert_eq((double)r->x[i][j] * r->scale, (double)k, "grid value not exact");
            if (r->fill == 0 && j % 97 == 5) {
                r->x[i][j] = (float)(3.0 * r->R * (i % 2 ? -1 : 1));
                k = i % 2 ? -K : K;
                r->nclip[i]++;
            }
            r->k[i][j] = k;
        }
    }
}

static void s_free(rnd *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        fl_secagg_client_free(r->cl[i]);
        fl_identity_free(r->ids[i]);
        free(r->x[i]);
        free(r->k[i]);
        free(r->masked[i]);
        free(r->ctr[i]);
    }
    fl_secagg_server_free(r->sv);
}

static void s_new_parties(rnd *r)
{
    cr_assert_eq(fl_secagg_server_new(&r->sv, &r->p), FL_OK, "%s", fl_error_last());
    for (uint32_t i = 0; i < r->n; i++)
        cr_assert_eq(fl_secagg_client_new(&r->cl[i], &r->p, i, r->ids[i]), FL_OK, "%s",
                     fl_error_last());
}

/* Drives a whole round; returns the first failing advance code or FL_OK. */
static int s_run(rnd *r)
{
    uint8_t *in[MAXN] = {0}, *out[MAXN] = {0};
    size_t inl[MAXN] = {0}, outl[MAXN] = {0};
    int live[MAXN];
    for (uint32_t i = 0; i < r->n; i++)
        live[i] = 1;
    int rc = FL_OK;
    for (int step = 0; step < NSTEP; step++) {
        for (uint32_t i = 0; i < r->n; i++) {
            r->cl_rc[step][i] = r->up_rc[step][i] = 1; /* 1 = did not happen */
            if (!live[i] || (step > 0 && !in[i]) || r->silent[i] <= step) {
                live[i] = 0;
                continue;
            }
            if (step > 0)
                r->down_len[step][i] = inl[i];
            if (step > 0 && r->down)
                r->down(r, step, i, &in[i], &inl[i]);
            uint8_t *m = NULL;
            size_t l = 0;
            switch (step) {
            case 0: rc = fl_secagg_client_advertise(r->cl[i], &m, &l); break;
            case 1: rc = fl_secagg_client_share(r->cl[i], in[i], inl[i], &m, &l); break;
            case 2:
                rc = fl_secagg_client_masked(r->cl[i], in[i], inl[i], r->x[i], r->w[i],
                                             r->ctr[i], &r->got_clip[i], &m, &l);
                break;
            case 3: rc = fl_secagg_client_consist(r->cl[i], in[i], inl[i], &m, &l); break;
            default: rc = fl_secagg_client_unmask(r->cl[i], in[i], inl[i], &m, &l); break;
            }
            r->cl_rc[step][i] = rc;
            r->up_len[step][i] = l;
            if (rc) {
                cr_assert_neq(fl_error_last()[0], '\0', "client error without a message");
                snprintf(r->cl_err[step][i], sizeof r->cl_err[step][i], "%s", fl_error_last());
                live[i] = 0;
                continue;
            }
            if (r->up)
                r->up(r, step, i, &m, &l);
            if (m) {
                r->up_rc[step][i] = fl_secagg_server_receive(r->sv, i, m, l);
                snprintf(r->up_err[step][i], sizeof r->up_err[step][i], "%s", fl_error_last());
            }
            if (step == 2 && r->keep_masked) {
                r->masked[i] = m;
                r->masked_len[i] = l;
            } else {
                free(m);
            }
        }
        for (uint32_t i = 0; i < r->n; i++) {
            free(in[i]);
            in[i] = NULL;
        }
        rc = fl_secagg_server_advance(r->sv, step < 4 ? out : NULL, step < 4 ? outl : NULL);
        r->adv_rc[step] = rc;
        if (rc)
            return rc;
        if (step < 4)
            for (uint32_t i = 0; i < r->n; i++) {
                in[i] = out[i];
                inl[i] = outl[i];
                out[i] = NULL;
            }
    }
    return FL_OK;
}

/* Exact check of the server's output against sum over `set` of w_i * k_i. */
static void s_check_sum(rnd *r, const int *set)
{
    double *sum = malloc(sizeof(double) * r->dim);
    uint64_t tw = 0, want_w = 0;
    cr_assert_eq(fl_secagg_server_result(r->sv, sum, &tw), FL_OK, "%s", fl_error_last());
    for (uint32_t i = 0; i < r->n; i++)
        if (set[i])
            want_w += r->w[i];
    cr_assert_eq(tw, want_w, "total weight %llu, want %llu", (unsigned long long)tw,
                 (unsigned long long)want_w);
    for (uint32_t j = 0; j < r->dim; j++) {
        int64_t acc = 0;
        for (uint32_t i = 0; i < r->n; i++)
            if (set[i])
                acc += (int64_t)r->w[i] * r->k[i][j];
        double want = (double)acc / r->scale;
        if (sum[j] != want)
            cr_assert_fail("coordinate %u: got %.17g, want %.17g", j, sum[j], want);
    }
    for (uint32_t i = 0; i < r->n; i++)
        if (set[i])
            cr_assert_eq(r->got_clip[i], r->nclip[i], "party %u clipped %u, want %u", i,
                         r->got_clip[i], r->nclip[i]);
    free(sum);
}

/* One complete round with the given silences; checks the sum over the
 * parties whose masked input was sent. */
static void s_round(uint32_t n, uint32_t t, const int *silent_at)
{
    rnd r;
    s_init(&r, n, t, 9000); /* 3 PRG blocks, the last one partial */
    for (uint32_t i = 0; i < n; i++)
        r.silent[i] = silent_at ? silent_at[i] : NSTEP;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "n=%u t=%u: %s", n, t, fl_error_last());
    int set[MAXN];
    for (uint32_t i = 0; i < n; i++)
        set[i] = r.silent[i] > FL_SECAGG_MASKED;
    s_check_sum(&r, set);
    s_free(&r);
}

static const uint32_t s_ns[3] = {3, 5, 10}, s_ts[3] = {2, 3, 6};

/* ------------------------------------------------------------ correctness */

Test(secagg, sum_is_exact_for_3_5_10_parties_without_dropout)
{
    for (int c = 0; c < 3; c++)
        s_round(s_ns[c], s_ts[c], NULL);
}

static void s_drop_round(int step)
{
    for (int c = 0; c < 3; c++) {
        int sil[MAXN];
        for (int i = 0; i < MAXN; i++)
            sil[i] = NSTEP;
        uint32_t drops = s_ns[c] - s_ts[c] < 3 ? s_ns[c] - s_ts[c] : 3;
        for (uint32_t d = 0; d < drops; d++)
            sil[(2 * d + 1) % s_ns[c]] = step;
        s_round(s_ns[c], s_ts[c], sil);
    }
}

Test(secagg, survives_dropout_before_share_exchange)
{
    s_drop_round(FL_SECAGG_SHARE);
}

Test(secagg, survives_dropout_after_share_exchange)
{
    s_drop_round(FL_SECAGG_MASKED);
}

Test(secagg, survives_dropout_after_masked_input_before_consistency)
{
    s_drop_round(FL_SECAGG_CONSIST);
}

Test(secagg, survives_dropout_after_consistency_before_unmask)
{
    s_drop_round(FL_SECAGG_UNMASK);
}

Test(secagg, survives_dropouts_spread_over_all_steps)
{
    int sil[MAXN];
    for (int i = 0; i < MAXN; i++)
        sil[i] = NSTEP;
    sil[0] = FL_SECAGG_SHARE;
    sil[3] = FL_SECAGG_MASKED;
    sil[5] = FL_SECAGG_CONSIST;
    sil[9] = FL_SECAGG_UNMASK; /* 10 parties, t = 6: 6 reveal */
    s_round(10, 6, sil);
}

Test(secagg, completes_with_exactly_t_survivors)
{
    for (int c = 0; c < 3; c++) {
        int sil[MAXN];
        for (int i = 0; i < MAXN; i++)
            sil[i] = NSTEP;
        for (uint32_t i = s_ts[c]; i < s_ns[c]; i++)
            sil[i] = FL_SECAGG_MASKED; /* drop after share exchange */
        s_round(s_ns[c], s_ts[c], sil);
    }
}

Test(secagg, aborts_cleanly_with_t_minus_1_survivors)
{
    for (int step = 0; step < NSTEP; step++) {
        rnd r;
        s_init(&r, 5, 3, 100);
        for (uint32_t i = 2; i < 5; i++)
            r.silent[i] = step; /* only 2 = t - 1 parties send at `step` */
        s_inputs(&r);
        s_new_parties(&r);
        cr_assert_eq(s_run(&r), FL_ESTATE, "step %d", step);
        cr_assert_eq(r.adv_rc[step], FL_ESTATE);
        cr_assert(strstr(fl_error_last(), "threshold") != NULL, "%s", fl_error_last());
        uint8_t m[FL_SECAGG_ADVERT_LEN] = {0};
        uint8_t *out[5];
        size_t lens[5];
        double sum[100];
        cr_assert_eq(fl_secagg_server_receive(r.sv, 0, m, sizeof m), FL_ESTATE);
        cr_assert_eq(fl_secagg_server_advance(r.sv, out, lens), FL_ESTATE);
        cr_assert_eq(fl_secagg_server_result(r.sv, sum, NULL), FL_ESTATE);
        s_free(&r);
    }
}

Test(secagg, scale_leaves_headroom_so_the_sum_cannot_wrap)
{
    fl_secagg_params p = {.n = 10, .t = 6, .dim = 1, .clip_range = 1.0, .max_weight = 100};
    double s = fl_secagg_scale(&p);
    /* 2^31-1 / 1000 = 2147483 -> largest power of two with 1 * s <= that. */
    cr_assert_eq(s, 2097152.0);
    cr_assert_lt(10.0 * 100 * 1.0 * s, 2147483648.0);
    p.clip_range = 3.5;
    s = fl_secagg_scale(&p);
    cr_assert_lt(10.0 * 100 * ceil(3.5 * s), 2147483648.0);
    cr_assert_geq(10.0 * 100 * 3.5 * 2 * s, 2147483647.0);
    p.max_weight = 1u << 30;
    cr_assert_eq(fl_secagg_scale(&p), 0.0);
}

Test(secagg, rejects_invalid_secagg_plus_k_t_combinations_and_bad_thresholds)
{
    rnd r;
    s_init(&r, 5, 2, 10);
    fl_secagg_server *s = NULL;
    fl_secagg_client *c = NULL;
    /* k >= n: no graph with that many neighbours */
    r.p.k = 5;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "SecAgg+") != NULL, "%s", fl_error_last());
    /* odd k with odd n: n * k odd, no k-regular graph (handshake lemma) */
    r.p.k = 3;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "odd") != NULL, "%s", fl_error_last());
    cr_assert_eq(fl_secagg_client_new(&c, &r.p, 0, r.ids[0]), FL_EINVAL);
    cr_assert_null(c);
    /* t is the per-neighbourhood threshold with k > 0: t <= k */
    r.p.k = 2;
    r.p.t = 3;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "per-neighbourhood") != NULL, "%s", fl_error_last());
    r.p.k = 4;
    r.p.t = 4; /* valid: K5 with t = k */
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_OK, "%s", fl_error_last());
    fl_secagg_server_free(s);
    s = NULL;
    r.p.k = 0;
    r.p.t = 6;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    r.p.t = 2;
    cr_assert_eq(fl_secagg_client_new(&c, &r.p, 1, r.ids[0]), FL_EINVAL); /* wrong identity */
    cr_assert_null(c);
    s_free(&r);
}

/* ------------------------------------------------------------ SecAgg+ */

/* k -> per-neighbourhood threshold used by these tests: a majority of the
 * k + 1 holders, and <= k. */
static uint32_t s_t_for(uint32_t k)
{
    return k / 2 + 1;
}

Test(secagg, secagg_plus_graph_is_k_regular_symmetric_and_identical_at_every_party)
{
    static const uint32_t ns[] = {5, 10, 5, 10, 10, 10}, ks[] = {2, 2, 4, 4, 3, 9};
    for (int c = 0; c < 6; c++) {
        uint32_t n = ns[c], k = ks[c];
        rnd r;
        s_init(&r, n, 2, 10);
        r.p.k = k;
        s_new_parties(&r);
        uint32_t nbr[MAXN * MAXN];
        cr_assert_eq(fl_secagg_graph(nbr, n, k, r.p.context), FL_OK, "%s", fl_error_last());
        uint8_t adj[MAXN][MAXN] = {{0}};
        for (uint32_t u = 0; u < n; u++)
            for (uint32_t j = 0; j < k; j++) {
                uint32_t v = nbr[u * k + j];
                cr_assert_lt(v, n);
                cr_assert_neq(v, u, "n=%u k=%u: party %u is its own neighbour", n, k, u);
                if (j > 0)
                    cr_assert_gt(v, nbr[u * k + j - 1], "row %u not strictly ascending", u);
                adj[u][v] = 1;
            }
        for (uint32_t u = 0; u < n; u++) {
            uint32_t deg = 0;
            for (uint32_t v = 0; v < n; v++) {
                deg += adj[u][v];
                cr_assert_eq(adj[u][v], adj[v][u], "n=%u k=%u: edge %u-%u one-way", n, k, u, v);
            }
            cr_assert_eq(deg, k, "n=%u k=%u: party %u has degree %u", n, k, u, deg);
            /* every client and the server use exactly this neighbourhood + self */
            uint8_t cm[MAXN], sm[MAXN];
            fl_secagg_client_holders(r.cl[u], cm);
            fl_secagg_server_holders(r.sv, u, sm);
            for (uint32_t v = 0; v < n; v++) {
                uint8_t want = v == u || adj[u][v];
                cr_assert_eq(cm[v], want, "n=%u k=%u: client %u disagrees on %u", n, k, u, v);
                cr_assert_eq(sm[v], want, "n=%u k=%u: server disagrees on %u-%u", n, k, u, v);
            }
        }
        s_free(&r);
    }
}

Test(secagg, secagg_plus_graph_is_a_function_of_the_context_and_differs_between_contexts)
{
    uint8_t ctx_a[32], ctx_b[32];
    memset(ctx_a, 0x00, 32);
    memset(ctx_b, 0x01, 32);
    uint32_t a[10 * 4], a2[10 * 4], b[10 * 4];
    cr_assert_eq(fl_secagg_graph(a, 10, 4, ctx_a), FL_OK);
    cr_assert_eq(fl_secagg_graph(a2, 10, 4, ctx_a), FL_OK);
    cr_assert_eq(fl_secagg_graph(b, 10, 4, ctx_b), FL_OK);
    cr_assert_eq(memcmp(a, a2, sizeof a), 0, "same context, different graph");
    cr_assert_neq(memcmp(a, b, sizeof a), 0, "two contexts gave the same graph");
    cr_assert_eq(fl_secagg_graph(a, 5, 3, ctx_a), FL_EINVAL); /* n * k odd */
    cr_assert_eq(fl_secagg_graph(a, 5, 5, ctx_a), FL_EINVAL); /* k >= n */
}

/* Droppers chosen from the round's graph so that every neighbourhood keeps
 * t revealing holders: a dropped party keeps t live neighbours, a survivor
 * t - 1 (its own share counts). Up to `want` of them; returns how many. */
static uint32_t s_pick_droppers(rnd *r, uint32_t want, int step)
{
    uint32_t n = r->n, k = r->p.k, t = r->t, nd = 0;
    uint32_t nbr[MAXN * MAXN];
    int drop[MAXN] = {0};
    cr_assert_eq(fl_secagg_graph(nbr, n, k, r->p.context), FL_OK);
    for (uint32_t c = 0; c < n && nd < want; c++) {
        uint32_t v = (2 * c + 1) % n; /* odd parties first, like the k = 0 tests */
        if (c >= (n + 1) / 2)
            v = 2 * (c - (n + 1) / 2) % n;
        if (drop[v])
            continue;
        drop[v] = 1;
        int ok = n - nd - 1 >= t;
        for (uint32_t u = 0; u < n && ok; u++) {
            uint32_t live = 0;
            for (uint32_t j = 0; j < k; j++)
                live += !drop[nbr[u * k + j]];
            ok = drop[u] ? live >= t : live + 1 >= t;
        }
        if (ok) {
            nd++;
            r->silent[v] = step;
        } else {
            drop[v] = 0;
        }
    }
    return nd;
}

static void s_round_plus(uint32_t n, uint32_t k, int drop_step, uint32_t want_drops)
{
    rnd r;
    s_init(&r, n, s_t_for(k), 9000);
    r.p.k = k;
    uint32_t nd = want_drops ? s_pick_droppers(&r, want_drops, drop_step) : 0;
    if (want_drops)
        cr_assert_geq(nd, 1, "n=%u k=%u: no party could drop", n, k);
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "n=%u k=%u drops=%u: %s", n, k, nd, fl_error_last());
    int set[MAXN];
    for (uint32_t i = 0; i < n; i++)
        set[i] = r.silent[i] > FL_SECAGG_MASKED;
    s_check_sum(&r, set);
    s_free(&r);
}

static const uint32_t s_plus_ns[2] = {5, 10}, s_plus_ks[2] = {2, 4};

Test(secagg, secagg_plus_sum_is_exact_without_dropout_for_k_2_4_and_5_10_parties)
{
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            s_round_plus(s_plus_ns[a], s_plus_ks[b], NSTEP, 0);
}

Test(secagg, secagg_plus_sum_is_exact_with_dropouts_after_share_exchange)
{
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            s_round_plus(s_plus_ns[a], s_plus_ks[b], FL_SECAGG_MASKED, 3);
}

Test(secagg, secagg_plus_sum_is_exact_with_dropouts_after_masked_input)
{
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            s_round_plus(s_plus_ns[a], s_plus_ks[b], FL_SECAGG_CONSIST, 3);
}

Test(secagg, secagg_plus_aborts_cleanly_when_a_dropped_partys_neighbourhood_falls_below_t)
{
    for (int b = 0; b < 2; b++) {
        uint32_t n = 10, k = s_plus_ks[b], t = s_t_for(k);
        rnd r;
        s_init(&r, n, t, 100);
        r.p.k = k;
        uint32_t nbr[MAXN * MAXN];
        cr_assert_eq(fl_secagg_graph(nbr, n, k, r.p.context), FL_OK);
        /* party 0 drops after the share exchange, then k - t + 1 of its
         * neighbours stay silent at unmasking: t - 1 of its holders reveal. */
        r.silent[0] = FL_SECAGG_MASKED;
        for (uint32_t j = 0; j < k - t + 1; j++)
            r.silent[nbr[j]] = FL_SECAGG_UNMASK;
        s_inputs(&r);
        s_new_parties(&r);
        cr_assert_eq(s_run(&r), FL_ESTATE, "k=%u: %s", k, fl_error_last());
        cr_assert_eq(r.adv_rc[FL_SECAGG_UNMASK], FL_ESTATE);
        cr_assert(strstr(fl_error_last(), "pairwise masks of party 0") != NULL, "%s",
                  fl_error_last());
        cr_assert(strstr(fl_error_last(), "share holders") != NULL, "%s", fl_error_last());
        double sum[100];
        uint8_t *out[MAXN];
        size_t lens[MAXN];
        cr_assert_eq(fl_secagg_server_result(r.sv, sum, NULL), FL_ESTATE);
        cr_assert_eq(fl_secagg_server_advance(r.sv, out, lens), FL_ESTATE);
        s_free(&r);
    }
}

Test(secagg, secagg_plus_message_sizes_grow_with_k_not_n)
{
    size_t up[3][NSTEP], down[3][NSTEP];
    const uint32_t ns[3] = {10, 10, 5}, ks[3] = {0, 4, 4}, ts[3] = {6, 3, 3};
    for (int c = 0; c < 3; c++) {
        rnd r;
        s_init(&r, ns[c], ts[c], 20);
        r.p.k = ks[c];
        s_inputs(&r);
        s_new_parties(&r);
        cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
        for (int st = 0; st < NSTEP; st++) {
            up[c][st] = r.up_len[st][0];
            down[c][st] = r.down_len[st][0];
        }
        s_free(&r);
    }
    /* step 1 share bundle: 9 + 172 * (neighbours) — 9 for k = 0, 4 for k = 4 */
    cr_assert_eq(up[0][1], 9 + 172 * 9);
    cr_assert_eq(up[1][1], 9 + 172 * 4);
    cr_assert_lt(up[1][1], up[0][1]);
    /* with k = 4, n = 10 and n = 5 (where the graph is complete) cost the same */
    for (int st = 1; st < NSTEP; st++) {
        if (st == FL_SECAGG_CONSIST)
            continue; /* the global U3 list is O(n) by design (4 bytes a party) */
        cr_assert_eq(up[1][st], up[2][st], "step %d up", st);
        cr_assert_eq(down[1][st], down[2][st], "step %d down", st);
        cr_assert_lt(down[1][st], down[0][st], "step %d down", st);
    }
    cr_assert_eq(down[1][1], 5 + 165 * 5);                   /* adverts of H(0) */
    cr_assert_eq(down[1][2], 5 + 4 * 5 + 176 * 4);           /* share box */
    cr_assert_eq(up[1][FL_SECAGG_UNMASK], 9 + 69 * 5);       /* reveals for H(0) */
    cr_assert_eq(up[0][FL_SECAGG_UNMASK], 9 + 69 * 10);
}

Test(secagg, secagg_plus_client_reveals_one_kind_per_neighbour_and_nothing_for_others)
{
    rnd r;
    s_init(&r, 10, 3, 50);
    r.p.k = 4;
    uint32_t nd = s_pick_droppers(&r, 2, FL_SECAGG_MASKED);
    cr_assert_geq(nd, 1);
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    for (uint32_t u = 0; u < r.n; u++) {
        if (r.silent[u] != NSTEP)
            continue;
        uint8_t h[MAXN];
        fl_secagg_client_holders(r.cl[u], h);
        for (uint32_t v = 0; v < r.n; v++) {
            uint64_t sh[8];
            if (!h[v]) { /* holds nothing of a non-neighbour */
                cr_assert_eq(fl_secagg_client_reveal(r.cl[u], v, FL_SECAGG_KIND_B, sh), FL_ESTATE);
                cr_assert_eq(fl_secagg_client_reveal(r.cl[u], v, FL_SECAGG_KIND_CSK, sh),
                             FL_ESTATE);
                continue;
            }
            unsigned kind = r.silent[v] > FL_SECAGG_MASKED ? FL_SECAGG_KIND_B : FL_SECAGG_KIND_CSK;
            cr_assert_eq(fl_secagg_client_reveal(r.cl[u], v, 3 - kind, sh), FL_ESTATE,
                         "party %u revealed both shares of %u", u, v);
            cr_assert_eq(fl_secagg_client_reveal(r.cl[u], v, kind, sh), FL_OK);
        }
    }
    int set[MAXN];
    for (uint32_t i = 0; i < r.n; i++)
        set[i] = r.silent[i] > FL_SECAGG_MASKED;
    s_check_sum(&r, set);
    s_free(&r);
}

/* ------------------------------------------------------------ uniformity */

/* Chi-square over the 256 byte values of the payload, df = 255; the
 * critical value at alpha = 0.001 is 330.52 (Wilson-Hilferty: 330.55). */
static double s_chi2(const uint8_t *b, size_t len)
{
    double cnt[256] = {0};
    for (size_t i = 0; i < len; i++)
        cnt[b[i]] += 1;
    double e = (double)len / 256, c = 0;
    for (int i = 0; i < 256; i++)
        c += (cnt[i] - e) * (cnt[i] - e) / e;
    return c;
}

Test(secagg, masked_vectors_of_zeros_and_of_R_are_uniform_bytes)
{
    /* Six checks at alpha = 0.001 per run: a round whose vectors are
     * rejected is repeated once with fresh keys (fresh masks) before the
     * test fails, so uniform masks fail it with probability ~6e-6, not
     * ~6e-3; masks that are not uniform fail both rounds. */
    for (int fill = 1; fill <= 2; fill++) {
        rnd r;
        for (int attempt = 0; attempt < 2; attempt++) {
            s_init(&r, 3, 2, 65536);
            r.fill = fill;
            r.keep_masked = 1;
            s_inputs(&r);
            s_new_parties(&r);
            cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
            uint32_t bad = r.n;
            double worst = 0.0;
            for (uint32_t i = 0; i < r.n; i++) {
                cr_assert_eq(r.masked_len[i], 9 + 4 * (size_t)(r.dim + 1));
                double c = s_chi2(r.masked[i] + 9, r.masked_len[i] - 9);
                if (c >= 330.52 && bad == r.n) {
                    bad = i;
                    worst = c;
                }
            }
            if (bad == r.n)
                break;
            cr_assert_eq(attempt, 0, "party %u, input %s: chi2 = %g, in two rounds", bad,
                         fill == 1 ? "zeros" : "R", worst);
            fprintf(stderr, "party %u, input %s: chi2 = %g; repeating the round once\n", bad,
                    fill == 1 ? "zeros" : "R", worst);
            s_free(&r);
        }
        int set[MAXN] = {1, 1, 1};
        s_check_sum(&r, set);
        /* sanity of the test itself: the plaintext payload is far from uniform */
        uint8_t *plain = calloc(4 * (size_t)r.dim, 1);
        cr_assert_gt(s_chi2(plain, 4 * (size_t)r.dim), 1e5);
        free(plain);
        s_free(&r);
    }
}

/* ------------------------------------------------------------ hostile input */

typedef struct {
    int step;
    uint32_t party;
    int what;
} s_tamper;

static void s_flip(uint8_t *m, size_t off)
{
    m[off] ^= 0x01;
}

/* Client -> server tampering. */
static void s_up_hook(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    s_tamper *t = r->user;
    if (step != t->step || party != t->party)
        return;
    switch (t->what) {
    case 0: s_flip(*msg, FL_SECAGG_ADVERT_LEN - 1); break;      /* forged advert signature */
    case 1: s_flip(*msg + 9, 0); break;                          /* share entry misaddressed */
    case 2: *len -= 1; break;                                    /* truncated */
    case 3: { /* duplicate: send it first, the harness sends it again */
        cr_assert_eq(fl_secagg_server_receive(r->sv, party, *msg, *len), FL_OK);
        break;
    }
    case 4: s_flip(*msg, 1); break;                              /* wrong sender index */
    case 5: s_flip(*msg, FL_SECAGG_CONSIST_LEN - 1); break;      /* forged consist signature */
    case 6: { /* unmask: claims the mask-key share of a U3 party */
        (*msg)[9 + 4] = FL_SECAGG_KIND_CSK;
        break;
    }
    default: break;
    }
}

static void s_expect_rejected(uint32_t n, uint32_t t, int step, uint32_t party, int what,
                              int want_rc, const char *want_text)
{
    rnd r;
    s_tamper tp = {step, party, what};
    s_init(&r, n, t, 500);
    r.up = s_up_hook;
    r.user = &tp;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.up_rc[step][party], want_rc, "step %d party %u: rc %d (%s)", step, party,
                 r.up_rc[step][party], r.up_err[step][party]);
    cr_assert(strstr(r.up_err[step][party], want_text) != NULL, "message: %s",
              r.up_err[step][party]);
    int set[MAXN];
    for (uint32_t i = 0; i < n; i++) /* dropped from step on if the message was rejected */
        set[i] = want_rc == FL_ESTATE || !(i == party && step <= FL_SECAGG_MASKED);
    if (want_rc != FL_ESTATE)
        cr_assert_eq(fl_secagg_server_alive(r.sv)[party], 0);
    s_check_sum(&r, set);
    s_free(&r);
}

Test(secagg, server_rejects_forged_advert_signature_and_continues_without_the_party)
{
    s_expect_rejected(5, 3, 0, 2, 0, FL_EPROTO, "invalid signature");
}

Test(secagg, server_rejects_share_bundle_addressed_to_wrong_parties)
{
    s_expect_rejected(5, 3, 1, 1, 1, FL_EPROTO, "addressed to party");
}

Test(secagg, server_rejects_truncated_masked_vector)
{
    s_expect_rejected(5, 3, 2, 4, 2, FL_EPROTO, "bytes");
}

Test(secagg, server_rejects_duplicate_message_with_estate_and_keeps_the_first)
{
    s_expect_rejected(5, 3, 2, 1, 3, FL_ESTATE, "already sent");
    s_expect_rejected(5, 3, 0, 1, 3, FL_ESTATE, "already sent");
}

Test(secagg, server_rejects_message_naming_another_sender)
{
    s_expect_rejected(5, 3, 0, 3, 4, FL_EPROTO, "came from party");
}

Test(secagg, server_rejects_forged_consistency_signature)
{
    s_expect_rejected(5, 3, 3, 0, 5, FL_EPROTO, "consistency signature");
}

Test(secagg, server_rejects_unmask_revealing_the_wrong_kind_of_share)
{
    s_expect_rejected(5, 3, 4, 2, 6, FL_EPROTO, "kind");
}

Test(secagg, server_rejects_oversized_and_truncated_messages_before_parsing)
{
    rnd r;
    s_init(&r, 3, 2, 10);
    s_new_parties(&r);
    uint8_t small[8] = {FL_SECAGG_TAG_ADVERT};
    /* Length above the cap: refused before any byte is read. */
    cr_assert_eq(fl_secagg_server_receive(r.sv, 0, small, (size_t)FL_SECAGG_MAX_MSG + 1),
                 FL_EPROTO);
    cr_assert(strstr(fl_error_last(), "bytes") != NULL);
    cr_assert_eq(fl_secagg_server_receive(r.sv, 1, small, sizeof small), FL_EPROTO);
    cr_assert_eq(fl_secagg_server_receive(r.sv, 1, small, sizeof small), FL_ESTATE);
    cr_assert_eq(fl_secagg_server_receive(r.sv, 7, small, sizeof small), FL_EINVAL);
    cr_assert_eq(fl_secagg_server_received(r.sv), 0);
    s_free(&r);
}

Test(secagg, server_rejects_advert_from_another_context_replayed_from_a_past_round)
{
    rnd r;
    s_init(&r, 5, 3, 200);
    s_inputs(&r);
    /* Round A: party 2 advertises. Round B (new context): the replay fails. */
    fl_secagg_client *old = NULL;
    uint8_t *m;
    size_t l;
    cr_assert_eq(fl_secagg_client_new(&old, &r.p, 2, r.ids[2]), FL_OK);
    cr_assert_eq(fl_secagg_client_advertise(old, &m, &l), FL_OK);
    randombytes_buf(r.p.context, 32); /* next round, or another model hash */
    s_new_parties(&r);
    cr_assert_eq(fl_secagg_server_receive(r.sv, 2, m, l), FL_EPROTO);
    cr_assert(strstr(fl_error_last(), "another round context") != NULL, "%s", fl_error_last());
    free(m);
    fl_secagg_client_free(old);
    /* Party 2 is dropped for the step: even its genuine advert is refused now. */
    uint8_t *g;
    size_t gl;
    cr_assert_eq(fl_secagg_client_advertise(r.cl[2], &g, &gl), FL_OK);
    cr_assert_eq(fl_secagg_server_receive(r.sv, 2, g, gl), FL_ESTATE);
    free(g);
    r.silent[2] = 0;
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last()); /* the others carry on */
    int set[MAXN] = {1, 1, 0, 1, 1};
    s_check_sum(&r, set);
    s_free(&r);
}

Test(secagg, round_continues_without_party_whose_advert_has_another_context)
{
    rnd r;
    s_init(&r, 5, 3, 300);
    s_inputs(&r);
    cr_assert_eq(fl_secagg_server_new(&r.sv, &r.p), FL_OK);
    fl_secagg_params other = r.p;
    randombytes_buf(other.context, 32); /* party 3 was given a different model */
    for (uint32_t i = 0; i < r.n; i++)
        cr_assert_eq(fl_secagg_client_new(&r.cl[i], i == 3 ? &other : &r.p, i, r.ids[i]),
                     FL_OK);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.up_rc[0][3], FL_EPROTO);
    cr_assert(strstr(r.up_err[0][3], "another round context") != NULL, "%s", r.up_err[0][3]);
    int set[MAXN] = {1, 1, 1, 0, 1};
    s_check_sum(&r, set);
    s_free(&r);
}

/* Server -> client tampering (a malicious or broken server). */
static void s_down_hook(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    s_tamper *t = r->user;
    if (step != t->step || party != t->party)
        return;
    uint8_t *m = *msg;
    switch (t->what) {
    case 0: { /* forge the signature of the second advert */
        s_flip(m, 5 + 2 * FL_SECAGG_ADVERT_LEN - 1);
        break;
    }
    case 1: { /* advert from another context: change context byte (sig then fails too) */
        s_flip(m, 5 + FL_SECAGG_ADVERT_LEN + 5);
        break;
    }
    case 2: { /* first box entry: recipient field names another party */
        uint32_t mm = fl_secagg_get32(m + 1);
        size_t e = 5 + 4 * (size_t)mm;
        fl_secagg_put32(m + e + 4, party == 0 ? 1 : 0);
        break;
    }
    case 3: { /* first box entry: flip a ciphertext byte */
        uint32_t mm = fl_secagg_get32(m + 1);
        s_flip(m, 5 + 4 * (size_t)mm + 8 + 24 + 10);
        break;
    }
    case 4: { /* ciphertext meant for another party, relabelled as ours */
        uint32_t mm = fl_secagg_get32(m + 1);
        size_t e = 5 + 4 * (size_t)mm;
        /* swap the first two entries' payloads (from two different senders):
         * each is now under the wrong key and associated data */
        uint8_t tmp[24 + FL_SECAGG_SHARE_CT];
        memcpy(tmp, m + e + 8, sizeof tmp);
        memcpy(m + e + 8, m + e + FL_SECAGG_BOX_ENTRY + 8, sizeof tmp);
        memcpy(m + e + FL_SECAGG_BOX_ENTRY + 8, tmp, sizeof tmp);
        break;
    }
    case 5: *len = 3; break; /* truncated */
    case 6: s_flip(m, 5 + 4 + 10); break; /* forged consistency signature */
    default: break;
    }
}

static void s_client_rejects(int step, uint32_t party, int what, int want_rc,
                             const char *want_text)
{
    rnd r;
    s_tamper tp = {step, party, what};
    s_init(&r, 5, 3, 400);
    r.down = s_down_hook;
    r.user = &tp;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.cl_rc[step][party], want_rc, "rc %d", r.cl_rc[step][party]);
    cr_assert(strstr(r.cl_err[step][party], want_text) != NULL, "message: %s",
              r.cl_err[step][party]);
    /* The client aborted for the round and refuses any later step. */
    uint8_t *m = NULL;
    size_t l = 0;
    uint8_t junk[16] = {0};
    cr_assert_eq(fl_secagg_client_unmask(r.cl[party], junk, sizeof junk, &m, &l), FL_ESTATE);
    cr_assert_null(m);
    int set[MAXN];
    for (uint32_t i = 0; i < r.n; i++)
        set[i] = !(i == party && step <= FL_SECAGG_MASKED);
    s_check_sum(&r, set);
    s_free(&r);
}

Test(secagg, client_rejects_forged_advert_signature_in_broadcast)
{
    s_client_rejects(1, 0, 0, FL_EPROTO, "signature");
}

Test(secagg, client_rejects_advert_with_another_context)
{
    s_client_rejects(1, 4, 1, FL_EPROTO, "context");
}

Test(secagg, client_rejects_share_addressed_to_another_party)
{
    s_client_rejects(2, 1, 2, FL_EPROTO, "addressed");
}

Test(secagg, client_rejects_tampered_share_ciphertext)
{
    s_client_rejects(2, 3, 3, FL_EPROTO, "authentication");
}

Test(secagg, client_rejects_ciphertext_meant_for_another_sender_pair)
{
    s_client_rejects(2, 0, 4, FL_EPROTO, "authentication");
}

Test(secagg, client_rejects_truncated_broadcast)
{
    s_client_rejects(3, 2, 5, FL_EPROTO, "bytes");
}

Test(secagg, client_refuses_to_unmask_on_an_invalid_consistency_signature)
{
    s_client_rejects(4, 1, 6, FL_EPROTO, "refusing");
}

Test(secagg, client_error_messages_name_the_problem)
{
    /* Drive one client by hand to read its messages. */
    rnd r;
    s_init(&r, 3, 2, 10);
    s_new_parties(&r);
    uint8_t *m;
    size_t l;
    cr_assert_eq(fl_secagg_client_advertise(r.cl[0], &m, &l), FL_OK);
    free(m);
    cr_assert_eq(fl_secagg_client_advertise(r.cl[0], &m, &l), FL_ESTATE);
    uint8_t bad[5] = {FL_SECAGG_TAG_ADVERTS, 9, 0, 0, 0};
    cr_assert_eq(fl_secagg_client_share(r.cl[0], bad, sizeof bad, &m, &l), FL_EPROTO);
    cr_assert(strstr(fl_error_last(), "claims 9 adverts") != NULL, "%s", fl_error_last());
    cr_assert_eq(fl_secagg_client_share(r.cl[0], bad, sizeof bad, &m, &l), FL_ESTATE);
    cr_assert(strstr(fl_error_last(), "aborted") != NULL, "%s", fl_error_last());
    s_free(&r);
}

/* ------------------------------------------------------------ never both */

static void s_unmask_kinds_hook(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    if (step != FL_SECAGG_UNMASK)
        return;
    /* Exactly one entry per U2 party, of the kind U3 membership demands. */
    const uint8_t *m = *msg;
    uint32_t cnt = fl_secagg_get32(m + 5);
    cr_assert_eq(*len, 9 + (size_t)cnt * FL_SECAGG_UNMASK_ENTRY);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *e = m + 9 + (size_t)i * FL_SECAGG_UNMASK_ENTRY;
        uint32_t v = fl_secagg_get32(e);
        if (i > 0)
            cr_assert_gt(v, prev, "party %u listed twice", v);
        prev = v;
        int in_u3 = r->silent[v] > FL_SECAGG_MASKED;
        cr_assert_eq(e[4], in_u3 ? FL_SECAGG_KIND_B : FL_SECAGG_KIND_CSK, "party %u", v);
    }
    /* The client refuses the other kind of share for every party. */
    for (uint32_t v = 0; v < r->n; v++) {
        uint64_t sh[8];
        int in_u2 = r->silent[v] > FL_SECAGG_SHARE;
        if (!in_u2) {
            cr_assert_eq(fl_secagg_client_reveal(r->cl[party], v, FL_SECAGG_KIND_B, sh),
                         FL_ESTATE);
            continue;
        }
        int in_u3 = r->silent[v] > FL_SECAGG_MASKED;
        unsigned other = in_u3 ? FL_SECAGG_KIND_CSK : FL_SECAGG_KIND_B;
        cr_assert_eq(fl_secagg_client_reveal(r->cl[party], v, other, sh), FL_ESTATE,
                     "party %u revealed both shares of %u", party, v);
        cr_assert(strstr(fl_error_last(), "already revealed") != NULL);
        cr_assert_eq(fl_secagg_client_reveal(r->cl[party], v, 3 - other, sh), FL_OK);
    }
}

Test(secagg, client_never_reveals_both_shares_of_one_party)
{
    rnd r;
    s_init(&r, 10, 6, 100);
    r.silent[1] = FL_SECAGG_SHARE;  /* not in U2 */
    r.silent[4] = FL_SECAGG_MASKED; /* in U2, not U3: mask-key share revealed */
    r.silent[7] = FL_SECAGG_MASKED;
    r.up = s_unmask_kinds_hook;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    int set[MAXN];
    for (uint32_t i = 0; i < r.n; i++)
        set[i] = r.silent[i] > FL_SECAGG_MASKED;
    s_check_sum(&r, set);
    s_free(&r);
}

Test(secagg, client_reveals_self_mask_share_first_then_refuses_mask_key_share)
{
    rnd r;
    s_init(&r, 3, 2, 10);
    s_inputs(&r);
    s_new_parties(&r);
    uint64_t sh[8];
    /* before the shares exist there is nothing to reveal */
    cr_assert_eq(fl_secagg_client_reveal(r.cl[0], 1, FL_SECAGG_KIND_B, sh), FL_ESTATE);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    for (uint32_t v = 0; v < 3; v++) {
        cr_assert_eq(fl_secagg_client_reveal(r.cl[0], v, FL_SECAGG_KIND_B, sh), FL_OK);
        cr_assert_eq(fl_secagg_client_reveal(r.cl[0], v, FL_SECAGG_KIND_CSK, sh), FL_ESTATE);
    }
    s_free(&r);
}

/* ------------------------------------------------------------ field, Shamir */

Test(secagg, field_arithmetic_matches_hand_cases)
{
    const uint64_t p = FL_SECAGG_P;
    cr_assert_eq(p, (1ull << 61) - 1);
    cr_assert_eq(fl_secagg_fp_add(p - 1, 1), 0);
    cr_assert_eq(fl_secagg_fp_add(p - 1, p - 1), p - 2);
    cr_assert_eq(fl_secagg_fp_sub(0, 1), p - 1);
    cr_assert_eq(fl_secagg_fp_sub(5, 3), 2);
    cr_assert_eq(fl_secagg_fp_mul(p - 1, p - 1), 1);          /* (-1)(-1) */
    cr_assert_eq(fl_secagg_fp_mul(1ull << 32, 1ull << 32), 8); /* 2^64 = 2^3 * 2^61 */
    cr_assert_eq(fl_secagg_fp_mul(1ull << 60, 2), 1);          /* 2^61 = 1 */
    cr_assert_eq(fl_secagg_fp_mul(123456789, 987654321), 121932631112635269ull);
    cr_assert_eq(fl_secagg_fp_inv(2), 1ull << 60);
    cr_assert_eq(fl_secagg_fp_inv(1), 1);
    cr_assert_eq(fl_secagg_fp_inv(p - 1), p - 1);
    cr_assert_eq(fl_secagg_fp_inv(3), 1537228672809129301ull); /* 3 * x = 2p + 1 */
    for (uint64_t a = 1; a < 2000; a += 37)
        cr_assert_eq(fl_secagg_fp_mul(a, fl_secagg_fp_inv(a)), 1);
    /* Lagrange at 0 for x = 1, 2, 3: 3, -3, 1 */
    uint64_t xs[3] = {1, 2, 3}, lam[3];
    cr_assert_eq(fl_secagg_lagrange0(lam, xs, 3), FL_OK);
    cr_assert_eq(lam[0], 3);
    cr_assert_eq(lam[1], p - 3);
    cr_assert_eq(lam[2], 1);
    uint64_t dup[2] = {4, 4};
    cr_assert_eq(fl_secagg_lagrange0(lam, dup, 2), FL_EINVAL);
    /* f(x) = 7 + 2x + x^2: f(1) = 10, f(2) = 15, f(3) = 22 -> f(0) = 7 */
    uint64_t ys[3] = {10, 15, 22};
    cr_assert_eq(fl_secagg_interpolate0((uint64_t[]){3, p - 3, 1}, ys, 1, 3), 7);
}

Test(secagg, shamir_reconstructs_from_any_t_shares_and_not_from_t_minus_1)
{
    const uint32_t n = 10, t = 6;
    uint8_t secret[32], got[32];
    uint64_t sh[10 * 8], sub[10 * 8], xs[10];
    for (int trial = 0; trial < 50; trial++) {
        randombytes_buf(secret, sizeof secret);
        cr_assert_eq(fl_secagg_shamir_split(secret, n, t, sh), FL_OK);
        uint32_t perm[10];
        for (uint32_t i = 0; i < n; i++)
            perm[i] = i;
        for (uint32_t i = n - 1; i > 0; i--) {
            uint32_t j = randombytes_uniform(i + 1), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        uint32_t m = t + (uint32_t)(trial % 3 == 0 ? randombytes_uniform(n - t + 1) : 0);
        for (uint32_t i = 0; i < m; i++) {
            xs[i] = perm[i] + 1;
            memcpy(sub + 8 * i, sh + 8 * perm[i], 8 * sizeof *sh);
        }
        cr_assert_eq(fl_secagg_shamir_combine(got, xs, sub, m), FL_OK, "%s", fl_error_last());
        cr_assert_eq(memcmp(got, secret, 32), 0, "trial %d with %u shares", trial, m);
        /* t - 1 shares: the interpolated limbs are not the secret's */
        uint64_t lam[10];
        cr_assert_eq(fl_secagg_lagrange0(lam, xs, t - 1), FL_OK);
        int same = 0;
        for (uint32_t j = 0; j < 8; j++)
            same += fl_secagg_interpolate0(lam, sub + j, 8, t - 1) ==
                    fl_secagg_get32(secret + 4 * j);
        cr_assert_lt(same, 8, "t-1 shares gave the secret");
        if (fl_secagg_shamir_combine(got, xs, sub, t - 1) == FL_OK)
            cr_assert_neq(memcmp(got, secret, 32), 0);
    }
}

Test(secagg, shamir_shares_are_points_of_a_degree_t_minus_1_polynomial)
{
    /* With t = 1 every share equals the secret limb (constant polynomial);
     * with t = n = 2 the shares y1, y2 give f(0) = 2 y1 - y2 by hand. */
    uint8_t secret[32];
    uint64_t sh[2 * 8];
    randombytes_buf(secret, sizeof secret);
    cr_assert_eq(fl_secagg_shamir_split(secret, 2, 1, sh), FL_OK);
    for (uint32_t j = 0; j < 8; j++)
        cr_assert_eq(sh[j], fl_secagg_get32(secret + 4 * j));
    cr_assert_eq(fl_secagg_shamir_split(secret, 2, 2, sh), FL_OK);
    for (uint32_t j = 0; j < 8; j++)
        cr_assert_eq(fl_secagg_fp_sub(fl_secagg_fp_add(sh[j], sh[j]), sh[8 + j]),
                     fl_secagg_get32(secret + 4 * j));
}

/* Across calls: a repeated step 4 (lost reply) reveals exactly the same
 * shares again, never the other kind. */
typedef struct {
    uint8_t *sigs, *first;
    size_t sigs_len, first_len;
} s_saved;

static void s_save_sigs(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    s_saved *sv = r->user;
    if (step == FL_SECAGG_UNMASK && party == 0) {
        sv->sigs = malloc(*len);
        memcpy(sv->sigs, *msg, *len);
        sv->sigs_len = *len;
    }
}

static void s_save_first(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    s_saved *sv = r->user;
    if (step == FL_SECAGG_UNMASK && party == 0) {
        sv->first = malloc(*len);
        memcpy(sv->first, *msg, *len);
        sv->first_len = *len;
    }
}

Test(secagg, repeated_unmask_call_reveals_the_same_shares_again)
{
    rnd r;
    s_saved sv = {0};
    s_init(&r, 5, 3, 50);
    r.silent[3] = FL_SECAGG_MASKED;
    r.down = s_save_sigs;
    r.up = s_save_first;
    r.user = &sv;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    uint8_t *m;
    size_t l;
    cr_assert_eq(fl_secagg_client_unmask(r.cl[0], sv.sigs, sv.sigs_len, &m, &l), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(l, sv.first_len);
    cr_assert_eq(memcmp(m, sv.first, l), 0);
    free(m);
    free(sv.sigs);
    free(sv.first);
    s_free(&r);
}

/* A server that shows party 0 a different U3 (party 1 left out) gets a
 * consistency signature that does not verify on the real U3. */
static void s_shrink_u3(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    (void)r;
    if (step != FL_SECAGG_CONSIST || party != 0)
        return;
    uint8_t *m = *msg;
    uint32_t cnt = fl_secagg_get32(m + 1);
    for (uint32_t i = 0; i < cnt; i++)
        if (fl_secagg_get32(m + 5 + 4 * i) == 1) {
            memmove(m + 5 + 4 * i, m + 9 + 4 * i, 4 * (cnt - i - 1));
            fl_secagg_put32(m + 1, cnt - 1);
            *len -= 4;
            break;
        }
}

Test(secagg, server_rejects_consistency_signature_on_a_different_u3)
{
    rnd r;
    s_init(&r, 5, 3, 80);
    r.down = s_shrink_u3;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.up_rc[FL_SECAGG_CONSIST][0], FL_EPROTO);
    cr_assert(strstr(r.up_err[FL_SECAGG_CONSIST][0], "does not verify") != NULL, "%s",
              r.up_err[FL_SECAGG_CONSIST][0]);
    int set[MAXN] = {1, 1, 1, 1, 1}; /* party 0's input is in U3 and still counted */
    s_check_sum(&r, set);
    s_free(&r);
}

/* ------------------------------------------------------------ counters */

/* Gives every party m counters bounded by maxc, drawn here: uniform in
 * [0, maxc], with counter j exactly maxc for the parties i = j (mod 5) and
 * 0 for every 7th j otherwise, so both ends of the range occur. */
static void s_counters(rnd *r, uint32_t m, uint32_t maxc)
{
    r->p.num_counters = m;
    r->p.max_counter = maxc;
    for (uint32_t i = 0; i < r->n; i++) {
        r->ctr[i] = malloc(sizeof(uint32_t) * (m ? m : 1));
        cr_assert_not_null(r->ctr[i]);
        for (uint32_t j = 0; j < m; j++)
            r->ctr[i][j] = j % 5 == i % 5 ? maxc
                           : j % 7 == 3   ? 0
                                          : randombytes_uniform(maxc + 1);
    }
}

/* Each counter sum against the total computed here in 64-bit integers
 * from the plaintext values of the parties in `set` (U3). */
static void s_check_counters(rnd *r, const int *set)
{
    uint32_t m = r->p.num_counters;
    uint64_t *got = malloc(sizeof(uint64_t) * (m ? m : 1));
    cr_assert_eq(fl_secagg_server_counters(r->sv, got), FL_OK, "%s", fl_error_last());
    for (uint32_t j = 0; j < m; j++) {
        uint64_t want = 0;
        for (uint32_t i = 0; i < r->n; i++)
            if (set[i])
                want += r->ctr[i][j];
        if (got[j] != want)
            cr_assert_fail("n=%u counter %u: got %llu, want %llu", r->n, j,
                           (unsigned long long)got[j], (unsigned long long)want);
    }
    free(got);
}

/* One round with counters; silent_at as in s_round (NULL: nobody drops),
 * or with k > 0 up to `drops` droppers chosen by s_pick_droppers. Checks
 * the weighted sum, the total weight and every counter over U3. */
static void s_counter_round(uint32_t n, uint32_t t, uint32_t k, uint32_t dim, uint32_t m,
                            uint32_t maxc, const int *silent_at, int drop_step, uint32_t drops)
{
    rnd r;
    s_init(&r, n, t, dim);
    r.p.k = k;
    for (uint32_t i = 0; i < n; i++)
        r.silent[i] = silent_at ? silent_at[i] : NSTEP;
    if (k && drops)
        cr_assert_geq(s_pick_droppers(&r, drops, drop_step), 1, "n=%u k=%u: no party could drop",
                      n, k);
    s_counters(&r, m, maxc);
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "n=%u t=%u k=%u m=%u: %s", n, t, k, m, fl_error_last());
    int set[MAXN];
    for (uint32_t i = 0; i < n; i++) {
        set[i] = r.silent[i] > FL_SECAGG_MASKED;
        if (r.cl_rc[FL_SECAGG_MASKED][i] == FL_OK)
            cr_assert_eq(r.up_len[FL_SECAGG_MASKED][i], 9 + 4 * ((size_t)dim + 1 + m));
    }
    s_check_sum(&r, set);
    s_check_counters(&r, set);
    s_free(&r);
}

Test(secagg, counters_sum_exactly_for_3_5_10_parties_without_dropout)
{
    for (int c = 0; c < 3; c++) {
        uint32_t n = s_ns[c], top = 0xFFFFFFFFu / n; /* largest max_counter allowed */
        /* 4096 counters after 100 coordinates: the second PRG block holds
         * counters only; 9000 coordinates: counters start mid-block 3 */
        s_counter_round(n, s_ts[c], 0, 100, FL_SECAGG_MAX_COUNTERS, 1000, NULL, 0, 0);
        s_counter_round(n, s_ts[c], 0, 9000, 37, top, NULL, 0, 0);
        s_counter_round(n, s_ts[c], 0, 8191, 5, 1, NULL, 0, 0); /* counters open block 2 */
    }
}

Test(secagg, counter_sums_reach_n_times_max_counter_without_wrapping)
{
    for (int c = 0; c < 3; c++) {
        uint32_t n = s_ns[c], top = 0xFFFFFFFFu / n;
        rnd r;
        s_init(&r, n, s_ts[c], 50);
        s_counters(&r, 3, top);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < 3; j++)
                r.ctr[i][j] = top;
        s_inputs(&r);
        s_new_parties(&r);
        cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
        uint64_t got[3];
        cr_assert_eq(fl_secagg_server_counters(r.sv, got), FL_OK, "%s", fl_error_last());
        /* n * floor((2^32 - 1) / n), e.g. 10 * 429496729 = 4294967290: just below 2^32 */
        for (uint32_t j = 0; j < 3; j++) {
            cr_assert_eq(got[j], (uint64_t)n * top, "n=%u: %llu", n, (unsigned long long)got[j]);
            cr_assert_lt(got[j], 1ull << 32);
        }
        s_free(&r);
    }
}

static void s_counter_drop_rounds(int step)
{
    for (int c = 0; c < 3; c++) {
        int sil[MAXN];
        for (int i = 0; i < MAXN; i++)
            sil[i] = NSTEP;
        uint32_t drops = s_ns[c] - s_ts[c] < 3 ? s_ns[c] - s_ts[c] : 3;
        for (uint32_t d = 0; d < drops; d++)
            sil[(2 * d + 1) % s_ns[c]] = step;
        s_counter_round(s_ns[c], s_ts[c], 0, 300, 600, 5000, sil, 0, 0);
    }
}

Test(secagg, counters_sum_over_u3_when_parties_drop_before_sending_masked_input)
{
    s_counter_drop_rounds(FL_SECAGG_MASKED); /* in U2, not U3: excluded */
}

Test(secagg, counters_sum_over_u3_when_parties_drop_after_sending_masked_input)
{
    s_counter_drop_rounds(FL_SECAGG_CONSIST); /* in U3: included */
    s_counter_drop_rounds(FL_SECAGG_UNMASK);
}

Test(secagg, counters_sum_over_u3_with_dropouts_spread_over_all_steps)
{
    int sil[MAXN];
    for (int i = 0; i < MAXN; i++)
        sil[i] = NSTEP;
    sil[0] = FL_SECAGG_SHARE;
    sil[3] = FL_SECAGG_MASKED;
    sil[5] = FL_SECAGG_CONSIST;
    sil[9] = FL_SECAGG_UNMASK;
    s_counter_round(10, 6, 0, 200, 64, 250, sil, 0, 0);
}

Test(secagg, secagg_plus_counters_sum_exactly_with_and_without_dropouts)
{
    static const uint32_t ns[] = {3, 5, 5, 10, 10}, ks[] = {2, 2, 4, 2, 4};
    for (int c = 0; c < 5; c++) {
        uint32_t n = ns[c], k = ks[c], t = s_t_for(k);
        s_counter_round(n, t, k, 100, FL_SECAGG_MAX_COUNTERS, 0xFFFFFFFFu / n, NULL, 0, 0);
        s_counter_round(n, t, k, 100, 300, 77, NULL, FL_SECAGG_MASKED, 2);
        s_counter_round(n, t, k, 100, 300, 77, NULL, FL_SECAGG_CONSIST, 2);
    }
}

/* Before party 1 masks: a NULL counters array and a counter one above the
 * bound are refused without touching the client, which then masks the
 * valid counters the harness passes. */
static void s_bad_counter_first(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    if (step != FL_SECAGG_MASKED || party != 1)
        return;
    uint8_t *m = NULL;
    size_t l = 0;
    cr_assert_eq(fl_secagg_client_masked(r->cl[1], *msg, *len, r->x[1], r->w[1], NULL, NULL, &m,
                                         &l),
                 FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "counters is NULL") != NULL, "%s", fl_error_last());
    uint32_t *bad = malloc(sizeof(uint32_t) * r->p.num_counters);
    memcpy(bad, r->ctr[1], sizeof(uint32_t) * r->p.num_counters);
    bad[17] = r->p.max_counter + 1;
    cr_assert_eq(fl_secagg_client_masked(r->cl[1], *msg, *len, r->x[1], r->w[1], bad, NULL, &m,
                                         &l),
                 FL_EINVAL);
    cr_assert_null(m);
    cr_assert(strstr(fl_error_last(), "counter 17 is 1001, above max_counter 1000") != NULL,
              "%s", fl_error_last());
    free(bad);
}

Test(secagg, client_refuses_a_counter_above_max_counter_naming_its_index_then_masks_valid_ones)
{
    rnd r;
    s_init(&r, 5, 3, 40);
    s_counters(&r, 20, 1000);
    r.down = s_bad_counter_first;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    int set[MAXN] = {1, 1, 1, 1, 1};
    s_check_sum(&r, set);
    s_check_counters(&r, set);
    s_free(&r);
}

Test(secagg, party_with_a_counter_above_max_counter_is_left_out_never_clamped)
{
    rnd r;
    s_init(&r, 5, 3, 40);
    s_counters(&r, 20, 1000);
    r.ctr[2][0] = UINT32_MAX; /* clamping it to 1000 would corrupt the total silently */
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.cl_rc[FL_SECAGG_MASKED][2], FL_EINVAL);
    cr_assert(strstr(r.cl_err[FL_SECAGG_MASKED][2], "counter 0 is 4294967295") != NULL, "%s",
              r.cl_err[FL_SECAGG_MASKED][2]);
    int set[MAXN] = {1, 1, 0, 1, 1};
    s_check_sum(&r, set);
    s_check_counters(&r, set);
    s_free(&r);
}

Test(secagg, rejects_params_whose_counter_sums_could_wrap_or_are_out_of_range)
{
    rnd r;
    s_init(&r, 10, 6, 10);
    fl_secagg_server *s = NULL;
    fl_secagg_client *c = NULL;
    r.p.num_counters = 8;
    /* 10 * 429496730 = 4294967300 >= 2^32 = 4294967296 */
    r.p.max_counter = 429496730u;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert_null(s);
    cr_assert(strstr(fl_error_last(), "n = 10") != NULL, "%s", fl_error_last());
    cr_assert(strstr(fl_error_last(), "max_counter = 429496730") != NULL, "%s", fl_error_last());
    cr_assert(strstr(fl_error_last(), "2^32") != NULL, "%s", fl_error_last());
    cr_assert_eq(fl_secagg_client_new(&c, &r.p, 0, r.ids[0]), FL_EINVAL);
    cr_assert_null(c);
    /* 10 * 429496729 = 4294967290 < 2^32 */
    r.p.max_counter = 429496729u;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_OK, "%s", fl_error_last());
    fl_secagg_server_free(s);
    s = NULL;
    cr_assert_eq(fl_secagg_client_new(&c, &r.p, 0, r.ids[0]), FL_OK, "%s", fl_error_last());
    fl_secagg_client_free(c);
    c = NULL;
    /* max_counter = 0 with counters, and too many counters */
    r.p.max_counter = 0;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "max_counter = 0") != NULL, "%s", fl_error_last());
    r.p.max_counter = 1;
    r.p.num_counters = FL_SECAGG_MAX_COUNTERS + 1;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    cr_assert(strstr(fl_error_last(), "num_counters = 4097") != NULL, "%s", fl_error_last());
    cr_assert_eq(fl_secagg_client_new(&c, &r.p, 0, r.ids[0]), FL_EINVAL);
    r.p.num_counters = FL_SECAGG_MAX_COUNTERS;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_OK, "%s", fl_error_last());
    fl_secagg_server_free(s);
    s = NULL;
    /* without counters max_counter plays no part */
    r.p.num_counters = 0;
    r.p.max_counter = UINT32_MAX;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_OK, "%s", fl_error_last());
    fl_secagg_server_free(s);
    s = NULL;
    s_free(&r);
    /* n = 2: 2 * 2^31 = 2^32 refused, 2 * (2^31 - 1) allowed */
    s_init(&r, 2, 2, 10);
    r.p.num_counters = 1;
    r.p.max_counter = 1u << 31;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_EINVAL);
    r.p.max_counter = (1u << 31) - 1;
    cr_assert_eq(fl_secagg_server_new(&s, &r.p), FL_OK, "%s", fl_error_last());
    fl_secagg_server_free(s);
    s_free(&r);
}

Test(secagg, server_counters_are_refused_before_step_4_and_after_an_abort)
{
    rnd r;
    s_init(&r, 5, 3, 20);
    s_counters(&r, 4, 9);
    s_inputs(&r);
    s_new_parties(&r);
    uint64_t got[4];
    cr_assert_eq(fl_secagg_server_counters(r.sv, got), FL_ESTATE);
    cr_assert(strstr(fl_error_last(), "not complete") != NULL, "%s", fl_error_last());
    cr_assert_eq(fl_secagg_server_counters(r.sv, NULL), FL_EINVAL);
    s_free(&r);

    s_init(&r, 5, 3, 20);
    s_counters(&r, 4, 9);
    for (uint32_t i = 2; i < 5; i++)
        r.silent[i] = FL_SECAGG_UNMASK; /* 2 = t - 1 reveal */
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_ESTATE);
    cr_assert_eq(fl_secagg_server_counters(r.sv, got), FL_ESTATE);
    cr_assert(strstr(fl_error_last(), "aborted") != NULL, "%s", fl_error_last());
    s_free(&r);
}

Test(secagg, without_counters_the_masked_vector_is_unchanged_and_counters_is_empty)
{
    rnd r;
    s_init(&r, 3, 2, 500);
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    for (uint32_t i = 0; i < r.n; i++)
        cr_assert_eq(r.up_len[FL_SECAGG_MASKED][i], 9 + 4 * (size_t)(500 + 1));
    cr_assert_eq(fl_secagg_server_counters(r.sv, NULL), FL_OK, "%s", fl_error_last());
    int set[MAXN] = {1, 1, 1};
    s_check_sum(&r, set);
    s_free(&r);
}

/* Strips the counters from party 0's masked vector (a client of a round
 * without counters). */
static void s_strip_counters(rnd *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    if (step != FL_SECAGG_MASKED || party != 0)
        return;
    *len -= 4 * (size_t)r->p.num_counters;
    fl_secagg_put32(*msg + 5, r->p.dim + 1);
}

Test(secagg, server_rejects_masked_vector_without_its_counters)
{
    rnd r;
    s_init(&r, 5, 3, 30);
    s_counters(&r, 6, 100);
    r.up = s_strip_counters;
    s_inputs(&r);
    s_new_parties(&r);
    cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
    cr_assert_eq(r.up_rc[FL_SECAGG_MASKED][0], FL_EPROTO);
    cr_assert(strstr(r.up_err[FL_SECAGG_MASKED][0], "6 counters") != NULL, "%s",
              r.up_err[FL_SECAGG_MASKED][0]);
    int set[MAXN] = {0, 1, 1, 1, 1};
    s_check_sum(&r, set);
    s_check_counters(&r, set);
    s_free(&r);
}

Test(secagg, masked_counters_of_one_party_are_uniform_bytes)
{
    for (int fill = 0; fill < 2; fill++) {
        rnd r;
        s_init(&r, 3, 2, 16);
        s_counters(&r, FL_SECAGG_MAX_COUNTERS, 1000);
        for (uint32_t i = 0; i < r.n; i++)
            for (uint32_t j = 0; j < FL_SECAGG_MAX_COUNTERS; j++)
                r.ctr[i][j] = fill ? 1000 : 0; /* constant plaintext */
        r.keep_masked = 1;
        s_inputs(&r);
        s_new_parties(&r);
        cr_assert_eq(s_run(&r), FL_OK, "%s", fl_error_last());
        size_t off = 9 + 4 * ((size_t)r.dim + 1), clen = 4 * (size_t)FL_SECAGG_MAX_COUNTERS;
        for (uint32_t i = 0; i < r.n; i++) {
            cr_assert_eq(r.masked_len[i], off + clen);
            double c = s_chi2(r.masked[i] + off, clen); /* 16384 bytes, 64 per value */
            cr_assert_lt(c, 330.52, "party %u, counters all %u: chi2 = %g", i, fill ? 1000 : 0,
                         c);
        }
        int set[MAXN] = {1, 1, 1};
        s_check_counters(&r, set);
        /* sanity of the test itself: the plaintext counters are far from uniform */
        uint8_t *plain = malloc(clen);
        for (size_t b = 0; b < clen; b += 4)
            fl_secagg_put32(plain + b, fill ? 1000 : 0);
        cr_assert_gt(s_chi2(plain, clen), 1e4);
        free(plain);
        s_free(&r);
    }
}
