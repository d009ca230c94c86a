/*
 * fl_secagg_client: one party of a secure-aggregation round (Bonawitz et
 * al. 2017, active-adversary variant with the consistency check of §4).
 * The client trusts nothing the server relays: every advert is checked
 * against the enrolled identity key and the round context, every share is
 * authenticated and addressed to this party, and shares are revealed only
 * after t signatures on one U3 — one kind per party, never both.
 *
 * With SecAgg+ (k > 0, Bell et al. 2020) the client works only with its
 * share holders H(me) = itself and its k neighbours in the round's public
 * graph: it accepts adverts only from them, shares (t of H) and masks only
 * with them, and reveals only their shares. k = 0 makes H(me) every party.
 *
 * Any failure on input from the server aborts the client for the round:
 * its secrets are wiped and every later step is refused (FL_ESTATE).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secagg/fl_secagg_internal.h"

enum { S_ABORTED = -1 };

typedef struct {
    uint8_t c_sk[32]; /* mask-agreement X25519 secret */
    uint8_t s_sk[32]; /* share-encryption X25519 secret */
    uint8_t b[32];    /* self-mask seed */
} s_secrets;

struct fl_secagg_client {
    fl_secagg_params p;
    uint32_t me;
    const fl_identity *id;
    double scale;
    int state; /* next step expected: 0..4, 5 after unmask, S_ABORTED */
    s_secrets *sec;   /* sodium_malloc */
    uint64_t *shares; /* sodium_allocarray: n x 16 (8 of c_sk_v, 8 of b_v) held from v */
    uint8_t c_pk[32], s_pk[32];
    uint8_t (*c_pks)[32];
    uint8_t (*s_pks)[32];
    uint8_t *u1, *u2, *u3; /* n-byte membership maps (U3 is the global one) */
    uint8_t *hold;         /* n: H(me), the parties holding shares of our secrets and
                              whose shares we hold; all 1 for k = 0 */
    uint8_t *revealed;     /* n: 0, FL_SECAGG_KIND_B or FL_SECAGG_KIND_CSK */
};

static void s_abort(fl_secagg_client *c)
{
    c->state = S_ABORTED;
    sodium_memzero(c->sec, sizeof *c->sec);
    sodium_memzero(c->shares, (size_t)c->p.n * 16 * sizeof *c->shares);
}

/* Aborts the round for this client and returns the error already set. */
static int s_fail(fl_secagg_client *c, int rc)
{
    s_abort(c);
    return fl_error_wrap(rc, "secagg client %u: round aborted", c->me);
}

static int s_expect(const fl_secagg_client *c, int step, const char *what)
{
    if (c->state == S_ABORTED)
        return fl_error_set(FL_ESTATE, "secagg client %u: %s refused: this round was aborted "
                                       "earlier", c->me, what);
    if (c->state != step)
        return fl_error_set(FL_ESTATE, "secagg client %u: %s called in step %d (expected step "
                                       "%d); start a new client for a new round",
                            c->me, what, step, c->state);
    return FL_OK;
}

static int s_input_ok(const uint8_t *in, size_t len, size_t min, uint8_t tag, const char *what)
{
    if (!in || len < min || len > FL_SECAGG_MAX_MSG)
        return fl_error_set(FL_EPROTO, "secagg: %s message of %zu bytes (need %zu..%u)", what,
                            len, min, FL_SECAGG_MAX_MSG);
    if (in[0] != tag)
        return fl_error_set(FL_EPROTO, "secagg: %s message has tag 0x%02x, expected 0x%02x",
                            what, in[0], tag);
    return FL_OK;
}

int fl_secagg_client_new(fl_secagg_client **out, const fl_secagg_params *p, uint32_t me,
                         const fl_identity *id)
{
    if (!out || !id)
        return fl_error_set(FL_EINVAL, "secagg client: out and identity must not be NULL");
    *out = NULL;
    int rc = fl_secagg_params_check(p);
    if (rc)
        return rc;
    if (me >= p->n)
        return fl_error_set(FL_EINVAL, "secagg client: party %u out of range 0..%u", me, p->n - 1);
    if (sodium_memcmp(fl_identity_public_of(id)->sign_pk, p->identity_pks[me], 32) != 0)
        return fl_error_set(FL_EINVAL, "secagg client: identity does not match identity_pks[%u]; "
                                       "check the participant order", me);
    fl_secagg_client *c = calloc(1, sizeof *c);
    if (!c)
        return fl_error_set(FL_ENOMEM, "secagg client: out of memory");
    c->p = *p;
    c->me = me;
    c->id = id;
    c->scale = fl_secagg_scale(p);
    size_t n = p->n;
    c->sec = sodium_malloc(sizeof *c->sec);
    c->shares = sodium_allocarray(n * 16, sizeof *c->shares);
    c->c_pks = calloc(n, sizeof *c->c_pks);
    c->s_pks = calloc(n, sizeof *c->s_pks);
    c->u1 = calloc(n, 1);
    c->u2 = calloc(n, 1);
    c->u3 = calloc(n, 1);
    c->revealed = calloc(n, 1);
    c->hold = malloc(n);
    uint32_t *nbr = p->k ? malloc(n * p->k * sizeof *nbr) : NULL;
    if (!c->sec || !c->shares || !c->c_pks || !c->s_pks || !c->u1 || !c->u2 || !c->u3 ||
        !c->revealed || !c->hold || (p->k && !nbr)) {
        free(nbr);
        fl_secagg_client_free(c);
        return fl_error_set(FL_ENOMEM, "secagg client: out of memory for %u parties", p->n);
    }
    memset(c->hold, p->k ? 0 : 1, n);
    if (p->k) {
        if ((rc = fl_secagg_graph(nbr, p->n, p->k, p->context))) {
            free(nbr);
            fl_secagg_client_free(c);
            return rc;
        }
        for (uint32_t j = 0; j < p->k; j++)
            c->hold[nbr[(size_t)me * p->k + j]] = 1;
        c->hold[me] = 1;
        free(nbr);
    }
    sodium_memzero(c->sec, sizeof *c->sec);
    sodium_memzero(c->shares, n * 16 * sizeof *c->shares);
    *out = c;
    return FL_OK;
}

void fl_secagg_client_free(fl_secagg_client *c)
{
    if (!c)
        return;
    sodium_free(c->sec); /* sodium_free wipes */
    sodium_free(c->shares);
    free(c->c_pks);
    free(c->s_pks);
    free(c->u1);
    free(c->u2);
    free(c->u3);
    free(c->revealed);
    free(c->hold);
    free(c);
}

/* ------------------------------------------------------------ step 0 */

int fl_secagg_client_advertise(fl_secagg_client *c, uint8_t **msg, size_t *len)
{
    if (!c || !msg || !len)
        return fl_error_set(FL_EINVAL, "secagg advertise: NULL argument");
    int rc = s_expect(c, FL_SECAGG_ADVERTISE, "advertise");
    if (rc)
        return rc;
    uint8_t *m = malloc(FL_SECAGG_ADVERT_LEN);
    uint8_t signed_bytes[8 + FL_SECAGG_ADVERT_SIGNED];
    if (!m)
        return fl_error_set(FL_ENOMEM, "secagg advertise: out of memory");
    /* Fresh keys every round: a key pair never serves two rounds. */
    crypto_box_keypair(c->c_pk, c->sec->c_sk);
    crypto_box_keypair(c->s_pk, c->sec->s_sk);
    randombytes_buf(c->sec->b, sizeof c->sec->b);
    m[0] = FL_SECAGG_TAG_ADVERT;
    fl_secagg_put32(m + 1, c->me);
    memcpy(m + 5, c->p.context, 32);
    memcpy(m + 37, c->c_pk, 32);
    memcpy(m + 69, c->s_pk, 32);
    memcpy(signed_bytes, "FLSA-adv", 8);
    memcpy(signed_bytes + 8, m, FL_SECAGG_ADVERT_SIGNED);
    fl_identity_sign(c->id, signed_bytes, sizeof signed_bytes, m + FL_SECAGG_ADVERT_SIGNED);
    c->state = FL_SECAGG_SHARE;
    *msg = m;
    *len = FL_SECAGG_ADVERT_LEN;
    return FL_OK;
}

/* ------------------------------------------------------------ step 1 */

/* Checks one advert (also used by the server): tag, party, context,
 * signature. */
int fl_secagg_advert_check(const fl_secagg_params *p, const uint8_t *a, uint32_t *party)
{
    uint8_t signed_bytes[8 + FL_SECAGG_ADVERT_SIGNED];
    if (a[0] != FL_SECAGG_TAG_ADVERT)
        return fl_error_set(FL_EPROTO, "secagg: advert has tag 0x%02x, expected 0x%02x", a[0],
                            FL_SECAGG_TAG_ADVERT);
    uint32_t u = fl_secagg_get32(a + 1);
    if (u >= p->n)
        return fl_error_set(FL_EPROTO, "secagg: advert names party %u, but n = %u", u, p->n);
    if (memcmp(a + 5, p->context, 32) != 0)
        return fl_error_set(FL_EPROTO,
                            "secagg: advert of party %u is for another round context (a replay "
                            "from another round, or a different model); rejected", u);
    memcpy(signed_bytes, "FLSA-adv", 8);
    memcpy(signed_bytes + 8, a, FL_SECAGG_ADVERT_SIGNED);
    if (fl_identity_verify(p->identity_pks[u], signed_bytes, sizeof signed_bytes,
                           a + FL_SECAGG_ADVERT_SIGNED) != FL_OK)
        return fl_error_set(FL_EPROTO, "secagg: advert of party %u has an invalid signature "
                                       "(not made by its enrolled identity); rejected", u);
    *party = u;
    return FL_OK;
}

static uint32_t s_count(const uint8_t *set, uint32_t n)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        m += set[i] != 0;
    return m;
}

static int s_parse_adverts(fl_secagg_client *c, const uint8_t *in, size_t len)
{
    int rc = s_input_ok(in, len, 5, FL_SECAGG_TAG_ADVERTS, "adverts");
    if (rc)
        return rc;
    uint32_t cnt = fl_secagg_get32(in + 1);
    if (cnt > c->p.n || len != 5 + (size_t)cnt * FL_SECAGG_ADVERT_LEN)
        return fl_error_set(FL_EPROTO, "secagg: adverts message of %zu bytes claims %u adverts "
                                       "(n = %u)", len, cnt, c->p.n);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        const uint8_t *a = in + 5 + (size_t)i * FL_SECAGG_ADVERT_LEN;
        uint32_t u;
        rc = fl_secagg_advert_check(&c->p, a, &u);
        if (rc)
            return rc;
        if (i > 0 && u <= prev)
            return fl_error_set(FL_EPROTO, "secagg: adverts not in strictly ascending party "
                                           "order (party %u after %u)", u, prev);
        prev = u;
        if (!c->hold[u])
            return fl_error_set(FL_EPROTO, "secagg: the server relayed the advert of party %u, "
                                           "which is not a neighbour of this party %u in the "
                                           "round's SecAgg+ graph; rejected", u, c->me);
        if (u == c->me && (memcmp(a + 37, c->c_pk, 32) || memcmp(a + 69, c->s_pk, 32)))
            return fl_error_set(FL_EPROTO, "secagg: the server relayed an advert for this party "
                                           "%u that is not the one it sent", u);
        c->u1[u] = 1;
        memcpy(c->c_pks[u], a + 37, 32);
        memcpy(c->s_pks[u], a + 69, 32);
    }
    if (!c->u1[c->me])
        return fl_error_set(FL_EPROTO, "secagg: adverts do not include this party %u", c->me);
    if (cnt < c->p.t)
        return fl_error_set(FL_ESTATE, "secagg: only %u adverts%s, fewer than the threshold %u",
                            cnt, c->p.k ? " from this party's SecAgg+ neighbourhood" : "",
                            c->p.t);
    return FL_OK;
}

int fl_secagg_client_share(fl_secagg_client *c, const uint8_t *in, size_t in_len, uint8_t **msg,
                           size_t *len)
{
    if (!c || !msg || !len)
        return fl_error_set(FL_EINVAL, "secagg share: NULL argument");
    int rc = s_expect(c, FL_SECAGG_SHARE, "share");
    if (rc)
        return rc;
    rc = s_parse_adverts(c, in, in_len);
    if (rc)
        return s_fail(c, rc);
    /* U1 here is U1 ∩ H(me) (the parser refused anything else): the
     * secrets are shared t-of-|U1 ∩ H(me)| at points x = party + 1. */
    uint32_t n = c->p.n, cnt = s_count(c->u1, n);
    size_t mlen = 9 + (size_t)(cnt - 1) * FL_SECAGG_SHARE_ENTRY;
    uint8_t *m = malloc(mlen);
    uint64_t *sh = sodium_allocarray((size_t)cnt * 2 * FL_SECAGG_LIMBS, sizeof *sh);
    uint8_t *pt = sodium_malloc(FL_SECAGG_SHARE_PT + 32);
    uint64_t *xs = malloc((size_t)cnt * sizeof *xs);
    if (!m || !sh || !pt || !xs) {
        rc = fl_error_set(FL_ENOMEM, "secagg share: out of memory");
        goto fail;
    }
    uint8_t *key = pt + FL_SECAGG_SHARE_PT;
    uint64_t *sh_c = sh, *sh_b = sh + (size_t)cnt * FL_SECAGG_LIMBS;
    for (uint32_t v = 0, i = 0; v < n; v++)
        if (c->u1[v])
            xs[i++] = (uint64_t)v + 1;
    if ((rc = fl_secagg_shamir_split_at(c->sec->c_sk, xs, cnt, c->p.t, sh_c)) ||
        (rc = fl_secagg_shamir_split_at(c->sec->b, xs, cnt, c->p.t, sh_b)))
        goto fail;
    m[0] = FL_SECAGG_TAG_SHARES;
    fl_secagg_put32(m + 1, c->me);
    fl_secagg_put32(m + 5, cnt - 1);
    size_t o = 9;
    for (uint32_t v = 0, i = 0; v < n; v++) {
        if (!c->u1[v])
            continue;
        size_t si = (size_t)i++ * FL_SECAGG_LIMBS;
        for (uint32_t j = 0; j < FL_SECAGG_LIMBS; j++) {
            fl_secagg_put64(pt + 8 * j, sh_c[si + j]);
            fl_secagg_put64(pt + 64 + 8 * j, sh_b[si + j]);
        }
        if (v == c->me) { /* our own share stays here, for step 4 */
            for (uint32_t j = 0; j < FL_SECAGG_LIMBS; j++) {
                c->shares[(size_t)v * 16 + j] = sh_c[si + j];
                c->shares[(size_t)v * 16 + 8 + j] = sh_b[si + j];
            }
            continue;
        }
        uint8_t ad[48];
        if ((rc = fl_secagg_share_key(key, c->sec->s_sk, c->s_pks[v], c->p.context, c->me, v))) {
            rc = fl_error_wrap(FL_EPROTO, "share key for party %u", v);
            goto fail;
        }
        fl_secagg_share_ad(ad, c->p.context, c->me, v);
        fl_secagg_put32(m + o, v);
        randombytes_buf(m + o + 4, 24);
        crypto_aead_xchacha20poly1305_ietf_encrypt(m + o + 28, NULL, pt, FL_SECAGG_SHARE_PT, ad,
                                                   sizeof ad, NULL, m + o + 4, key);
        o += FL_SECAGG_SHARE_ENTRY;
    }
    sodium_free(sh);
    sodium_free(pt);
    free(xs);
    c->state = FL_SECAGG_MASKED;
    *msg = m;
    *len = mlen;
    return FL_OK;
fail:
    free(m);
    free(xs);
    sodium_free(sh);
    sodium_free(pt);
    return s_fail(c, rc);
}

/* ------------------------------------------------------------ step 2 */

static int s_parse_members(const fl_secagg_client *c, const uint8_t *in, uint32_t m,
                           const uint8_t *within, uint8_t *set, const char *what)
{
    uint32_t prev = 0;
    for (uint32_t i = 0; i < m; i++) {
        uint32_t v = fl_secagg_get32(in + 4 * (size_t)i);
        /* Membership of the previous set can only be checked for our
         * holders: with k > 0 the global U3 also lists parties we never
         * heard of. For k = 0 every party is a holder. */
        if (v >= c->p.n || (c->hold[v] && !within[v]))
            return fl_error_set(FL_EPROTO, "secagg: %s lists party %u, which is not in the "
                                           "previous set", what, v);
        if (i > 0 && v <= prev)
            return fl_error_set(FL_EPROTO, "secagg: %s not strictly ascending (%u after %u)",
                                what, v, prev);
        prev = v;
        set[v] = 1;
    }
    if (!set[c->me])
        return fl_error_set(FL_EPROTO, "secagg: %s does not include this party %u", what, c->me);
    if (m < c->p.t)
        return fl_error_set(FL_ESTATE, "secagg: %s has %u parties, fewer than the threshold %u",
                            what, m, c->p.t);
    return FL_OK;
}

/* The share box must list U2 ∩ H(me) only. */
static int s_only_holders(const fl_secagg_client *c, const uint8_t *set, const char *what)
{
    for (uint32_t v = 0; v < c->p.n; v++)
        if (set[v] && !c->hold[v])
            return fl_error_set(FL_EPROTO, "secagg: %s lists party %u, which is not a neighbour "
                                           "of this party %u in the SecAgg+ graph", what, v,
                                c->me);
    return FL_OK;
}

static int s_parse_sharebox(fl_secagg_client *c, const uint8_t *in, size_t len)
{
    int rc = s_input_ok(in, len, 5, FL_SECAGG_TAG_SHAREBOX, "share box");
    if (rc)
        return rc;
    uint32_t m = fl_secagg_get32(in + 1);
    if (m == 0 || m > c->p.n ||
        len != 5 + 4 * (size_t)m + (size_t)(m - 1) * FL_SECAGG_BOX_ENTRY)
        return fl_error_set(FL_EPROTO, "secagg: share box of %zu bytes claims %u parties "
                                       "(n = %u)", len, m, c->p.n);
    memset(c->u2, 0, c->p.n);
    if ((rc = s_parse_members(c, in + 5, m, c->u1, c->u2, "U2")) ||
        (rc = s_only_holders(c, c->u2, "U2")))
        return rc;
    uint8_t *pt = sodium_malloc(FL_SECAGG_SHARE_PT + 32);
    if (!pt)
        return fl_error_set(FL_ENOMEM, "secagg: out of guarded memory");
    uint8_t *key = pt + FL_SECAGG_SHARE_PT;
    const uint8_t *e = in + 5 + 4 * (size_t)m;
    for (uint32_t u = 0; u < c->p.n && rc == FL_OK; u++) {
        if (!c->u2[u] || u == c->me)
            continue;
        uint32_t snd = fl_secagg_get32(e), rcp = fl_secagg_get32(e + 4);
        uint8_t ad[48];
        if (snd != u) {
            rc = fl_error_set(FL_EPROTO, "secagg: share box entry from party %u where party %u "
                                         "was expected", snd, u);
        } else if (rcp != c->me) {
            rc = fl_error_set(FL_EPROTO, "secagg: share from party %u is addressed to party %u, "
                                         "not to this party %u; rejected", u, rcp, c->me);
        } else if (fl_secagg_share_key(key, c->sec->s_sk, c->s_pks[u], c->p.context, u,
                                       c->me) != FL_OK) {
            rc = fl_error_set(FL_EPROTO, "secagg: party %u's share key is a low-order point", u);
        } else {
            fl_secagg_share_ad(ad, c->p.context, u, c->me);
            if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, NULL, NULL, e + 32,
                                                           FL_SECAGG_SHARE_CT, ad, sizeof ad,
                                                           e + 8, key) != 0)
                rc = fl_error_set(FL_EPROTO,
                                  "secagg: share from party %u failed authentication (tampered, "
                                  "or from another round or for another party); rejected", u);
            for (uint32_t j = 0; rc == FL_OK && j < 16; j++) {
                uint64_t y = fl_secagg_get64(pt + 8 * j);
                if (y >= FL_SECAGG_P)
                    rc = fl_error_set(FL_EPROTO, "secagg: share from party %u is not a field "
                                                 "element", u);
                c->shares[(size_t)u * 16 + j] = y;
            }
        }
        e += FL_SECAGG_BOX_ENTRY;
    }
    sodium_free(pt);
    return rc;
}

int fl_secagg_client_masked(fl_secagg_client *c, const uint8_t *in, size_t in_len, const float *x,
                            uint32_t weight, const uint32_t *counters, uint32_t *clipped,
                            uint8_t **msg, size_t *len)
{
    if (!c || !x || !msg || !len)
        return fl_error_set(FL_EINVAL, "secagg masked: NULL argument");
    int rc = s_expect(c, FL_SECAGG_MASKED, "masked");
    if (rc)
        return rc;
    if (weight > c->p.max_weight)
        return fl_error_set(FL_EINVAL, "secagg masked: weight %u exceeds max_weight %u", weight,
                            c->p.max_weight);
    if (c->p.num_counters > 0 && !counters)
        return fl_error_set(FL_EINVAL, "secagg masked: counters is NULL but the round has "
                                       "num_counters = %u; pass that many values",
                            c->p.num_counters);
    /* A counter above the public bound could make the sum wrap; refused,
     * never clamped, so a reported total is never silently wrong. */
    for (uint32_t i = 0; i < c->p.num_counters; i++)
        if (counters[i] > c->p.max_counter)
            return fl_error_set(FL_EINVAL, "secagg masked: counter %u is %u, above max_counter "
                                           "%u; raise max_counter for the round or fix the "
                                           "value", i, counters[i], c->p.max_counter);
    for (uint32_t i = 0; i < c->p.dim; i++)
        if (isnan(x[i]))
            return fl_error_set(FL_EINVAL, "secagg masked: coordinate %u is NaN", i);
    rc = s_parse_sharebox(c, in, in_len);
    if (rc)
        return s_fail(c, rc);

    uint32_t n = c->p.n, m2 = s_count(c->u2, n);
    size_t dim = c->p.dim, words = fl_secagg_words(&c->p), mlen = 9 + 4 * words;
    uint8_t *m = malloc(mlen);
    /* guarded: pair seeds, rounding key, then two scratch blocks (the
     * plaintext quantized block and keystream are secret too) */
    size_t gsz = (size_t)m2 * 32 + 32 + 2 * FL_SECAGG_BLOCK_WORDS * 4;
    uint8_t *g = sodium_malloc(gsz);
    fl_secagg_stream *st = calloc(m2, sizeof *st);
    if (!m || !g || !st) {
        rc = fl_error_set(FL_ENOMEM, "secagg masked: out of memory for %zu words", words);
        free(m);
        free(st);
        sodium_free(g);
        return s_fail(c, rc);
    }
    uint8_t *seeds = g, *rkey = g + (size_t)m2 * 32;
    uint32_t *blk = (uint32_t *)(void *)(rkey + 32), *ks = blk + FL_SECAGG_BLOCK_WORDS;
    size_t nst = 0;
    st[nst++] = (fl_secagg_stream){c->sec->b, +1, FL_SECAGG_NONCE_SELF};
    for (uint32_t v = 0; v < n; v++) {
        if (!c->u2[v] || v == c->me)
            continue;
        uint8_t *sd = seeds + 32 * nst;
        if (fl_secagg_mask_seed(sd, c->sec->c_sk, c->c_pks[v], c->p.context, c->me, v)) {
            rc = fl_error_set(FL_EPROTO, "secagg masked: party %u's mask key is a low-order "
                                         "point", v);
            goto done;
        }
        /* Bonawitz eq. (1): u adds PRG(s_uv) for v > u, subtracts for v < u. */
        st[nst++] = (fl_secagg_stream){sd, v > c->me ? +1 : -1, FL_SECAGG_NONCE_PAIR};
    }
    randombytes_buf(rkey, 32);

    m[0] = FL_SECAGG_TAG_MASKED;
    fl_secagg_put32(m + 1, c->me);
    fl_secagg_put32(m + 5, (uint32_t)words);
    const double R = c->p.clip_range, scale = c->scale;
    const int64_t w = weight;
    uint32_t nclip = 0;
    for (size_t w0 = 0; w0 < words; w0 += FL_SECAGG_BLOCK_WORDS) {
        size_t bw = words - w0 < FL_SECAGG_BLOCK_WORDS ? words - w0 : FL_SECAGG_BLOCK_WORDS;
        /* data words in this block (none once the block starts past dim) */
        size_t nx = w0 + bw <= dim ? bw : w0 < dim ? dim - w0 : 0;
        fl_secagg_keystream(ks, nx, w0, rkey, FL_SECAGG_NONCE_ROUND);
        for (size_t i = 0; i < nx; i++) {
            double d = x[w0 + i];
            if (d > R) {
                d = R;
                nclip++;
            } else if (d < -R) {
                d = -R;
                nclip++;
            }
            /* Unbiased stochastic rounding: up with probability frac, tested
             * against a uniform 32-bit word (bias below 2^-32 of a step;
             * none when frac * 2^32 is an integer, e.g. on the grid). */
            double v = d * scale; /* |v| <= 2^31: floor via int64, no libm call */
            int64_t f = (int64_t)v;
            f -= (double)f > v;
            int64_t thr = (int64_t)((v - (double)f) * 4294967296.0); /* in [0, 2^32) */
            int64_t q = f + ((int64_t)ks[i] < thr);
            blk[i] = (uint32_t)(uint64_t)(q * w);
        }
        /* The weight rides as word dim and counter j as word dim + 1 + j;
         * all get the same masks as the coordinates below. */
        for (size_t i = nx; i < bw; i++)
            blk[i] = w0 + i == dim ? weight : counters[w0 + i - dim - 1];
        fl_secagg_apply_block(blk, bw, w0, st, nst, ks);
        uint8_t *dst = m + 9 + 4 * w0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(dst, blk, 4 * bw);
#else
        for (size_t i = 0; i < bw; i++)
            fl_secagg_put32(dst + 4 * i, blk[i]);
#endif
    }
    if (clipped)
        *clipped = nclip;
    c->state = FL_SECAGG_CONSIST;
    *msg = m;
    *len = mlen;
    m = NULL;
done:
    free(m);
    free(st);
    sodium_free(g);
    return rc ? s_fail(c, rc) : FL_OK;
}

/* ------------------------------------------------------------ step 3 */

int fl_secagg_client_consist(fl_secagg_client *c, const uint8_t *in, size_t in_len, uint8_t **msg,
                             size_t *len)
{
    if (!c || !msg || !len)
        return fl_error_set(FL_EINVAL, "secagg consist: NULL argument");
    int rc = s_expect(c, FL_SECAGG_CONSIST, "consist");
    if (rc)
        return rc;
    if ((rc = s_input_ok(in, in_len, 5, FL_SECAGG_TAG_U3LIST, "U3")))
        return s_fail(c, rc);
    uint32_t m = fl_secagg_get32(in + 1);
    if (m > c->p.n || in_len != 5 + 4 * (size_t)m)
        return s_fail(c, fl_error_set(FL_EPROTO, "secagg: U3 message of %zu bytes claims %u "
                                                 "parties", in_len, m));
    memset(c->u3, 0, c->p.n);
    if ((rc = s_parse_members(c, in + 5, m, c->u2, c->u3, "U3")))
        return s_fail(c, rc);
    uint8_t *sb;
    size_t sl;
    if ((rc = fl_secagg_consist_bytes(&sb, &sl, c->p.context, c->u3, c->p.n)))
        return s_fail(c, rc);
    uint8_t *out = malloc(FL_SECAGG_CONSIST_LEN);
    if (!out) {
        free(sb);
        return s_fail(c, fl_error_set(FL_ENOMEM, "secagg consist: out of memory"));
    }
    out[0] = FL_SECAGG_TAG_CONSIST;
    fl_secagg_put32(out + 1, c->me);
    fl_identity_sign(c->id, sb, sl, out + 5);
    free(sb);
    c->state = FL_SECAGG_UNMASK;
    *msg = out;
    *len = FL_SECAGG_CONSIST_LEN;
    return FL_OK;
}

/* ------------------------------------------------------------ step 4 */

/* The one place a share leaves the client; the caller has checked the
 * consistency signatures (unmask) or the round is over (test hook). */
static int s_reveal(fl_secagg_client *c, uint32_t v, unsigned kind, uint64_t share[8])
{
    if (!c->u2[v])
        return fl_error_set(FL_ESTATE, "secagg client %u: holds no share of party %u to reveal",
                            c->me, v);
    /* Bonawitz §4: revealing both the self-mask share and the mask-key
     * share of one party would let the server unmask that party's input. */
    if (c->revealed[v] && c->revealed[v] != kind)
        return fl_error_set(FL_ESTATE, "secagg client %u: refusing to reveal the %s share of "
                                       "party %u: its %s share was already revealed",
                            c->me, kind == FL_SECAGG_KIND_B ? "self-mask" : "mask-key", v,
                            kind == FL_SECAGG_KIND_B ? "mask-key" : "self-mask");
    c->revealed[v] = (uint8_t)kind;
    memcpy(share, c->shares + (size_t)v * 16 + (kind == FL_SECAGG_KIND_B ? 8 : 0),
           8 * sizeof *share);
    return FL_OK;
}

int fl_secagg_client_reveal(fl_secagg_client *c, uint32_t v, unsigned kind, uint64_t share[8])
{
    if (!c || !share || v >= c->p.n || (kind != FL_SECAGG_KIND_B && kind != FL_SECAGG_KIND_CSK))
        return fl_error_set(FL_EINVAL, "secagg reveal: bad argument");
    if (c->state != FL_SECAGG_DONE)
        return fl_error_set(FL_ESTATE, "secagg client %u: no share is revealed before step 4 "
                                       "has checked the consistency signatures", c->me);
    return s_reveal(c, v, kind, share);
}

void fl_secagg_client_holders(const fl_secagg_client *c, uint8_t *map)
{
    memcpy(map, c->hold, c->p.n);
}

int fl_secagg_client_unmask(fl_secagg_client *c, const uint8_t *in, size_t in_len, uint8_t **msg,
                            size_t *len)
{
    if (!c || !msg || !len)
        return fl_error_set(FL_EINVAL, "secagg unmask: NULL argument");
    /* A repeated call (lost reply) is allowed: U3 is fixed, so it reveals
     * the same kinds again; the revealed[] map guards it regardless. */
    int rc = c->state == FL_SECAGG_DONE ? FL_OK : s_expect(c, FL_SECAGG_UNMASK, "unmask");
    if (rc)
        return rc;
    if ((rc = s_input_ok(in, in_len, 5, FL_SECAGG_TAG_SIGS, "signatures")))
        return s_fail(c, rc);
    uint32_t m = fl_secagg_get32(in + 1), n = c->p.n;
    if (m > n || in_len != 5 + (size_t)m * FL_SECAGG_SIG_ENTRY)
        return s_fail(c, fl_error_set(FL_EPROTO, "secagg: signatures message of %zu bytes "
                                                 "claims %u signatures", in_len, m));
    uint8_t *sb;
    size_t sl;
    if ((rc = fl_secagg_consist_bytes(&sb, &sl, c->p.context, c->u3, n)))
        return s_fail(c, rc);
    uint32_t prev = 0;
    for (uint32_t i = 0; i < m && rc == FL_OK; i++) {
        const uint8_t *e = in + 5 + (size_t)i * FL_SECAGG_SIG_ENTRY;
        uint32_t v = fl_secagg_get32(e);
        if (v >= n || !c->u3[v])
            rc = fl_error_set(FL_EPROTO, "secagg: consistency signature from party %u, which is "
                                         "not in U3", v);
        else if (!c->hold[v])
            rc = fl_error_set(FL_EPROTO, "secagg: consistency signature from party %u, which is "
                                         "not in this party's SecAgg+ neighbourhood", v);
        else if (i > 0 && v <= prev)
            rc = fl_error_set(FL_EPROTO, "secagg: consistency signatures not strictly ascending");
        else if (fl_identity_verify(c->p.identity_pks[v], sb, sl, e + 4) != FL_OK)
            rc = fl_error_set(FL_EPROTO, "secagg: consistency signature of party %u does not "
                                         "verify on this party's U3: the server showed parties "
                                         "different U3 sets; refusing to unmask", v);
        prev = v;
    }
    free(sb);
    /* Consistency check (Bonawitz §4 round 3), SecAgg+ form: every survivor
     * still signs the global U3, but a client counts only the signatures of
     * its holders H(me), and needs t of them. Why that is enough: what this
     * client reveals are shares of its holders' secrets, and the server can
     * unmask a party v only by getting t self-mask shares and t mask-key
     * shares of v — all from v's k + 1 holders, each honest holder giving
     * one kind (the revealed[] guard). Non-neighbours' signatures bind no
     * holder of v, and a global count of t << n signatures would not stop a
     * split view either (two disjoint groups of t signers exist), so the
     * global check buys nothing at a per-neighbourhood t; the protection is
     * 2t > k + 1 + (corrupt holders), as documented. For k = 0, H(me) is
     * everyone and this is exactly the Bonawitz check. */
    if (rc == FL_OK && m < c->p.t)
        rc = fl_error_set(FL_ESTATE, "secagg: only %u consistency signatures, fewer than the "
                                     "threshold %u; refusing to unmask", m, c->p.t);
    if (rc)
        return s_fail(c, rc);

    uint32_t m2 = s_count(c->u2, n);
    size_t mlen = 9 + (size_t)m2 * FL_SECAGG_UNMASK_ENTRY;
    uint8_t *out = malloc(mlen);
    if (!out)
        return s_fail(c, fl_error_set(FL_ENOMEM, "secagg unmask: out of memory"));
    out[0] = FL_SECAGG_TAG_UNMASK;
    fl_secagg_put32(out + 1, c->me);
    fl_secagg_put32(out + 5, m2);
    size_t o = 9;
    for (uint32_t v = 0; v < n; v++) {
        if (!c->u2[v])
            continue;
        unsigned kind = c->u3[v] ? FL_SECAGG_KIND_B : FL_SECAGG_KIND_CSK;
        uint64_t sh[8];
        if ((rc = s_reveal(c, v, kind, sh))) {
            sodium_memzero(out, mlen);
            free(out);
            return s_fail(c, rc);
        }
        fl_secagg_put32(out + o, v);
        out[o + 4] = (uint8_t)kind;
        for (uint32_t j = 0; j < 8; j++)
            fl_secagg_put64(out + o + 5 + 8 * j, sh[j]);
        sodium_memzero(sh, sizeof sh);
        o += FL_SECAGG_UNMASK_ENTRY;
    }
    c->state = FL_SECAGG_DONE;
    *msg = out;
    *len = mlen;
    return FL_OK;
}
