/*
 * fl_secagg_server: the coordinator's side of a secure-aggregation round.
 * It relays messages between parties, keeps the survivor sets U1..U5,
 * accumulates masked vectors as they arrive (mod 2^32), and at the end
 * reconstructs the self-mask seeds of U3 and the mask keys of U2 \ U3 from
 * t revealed shares to cancel every mask. Every message is validated
 * (size before anything else, then structure, indices, signatures,
 * addressing); a bad one drops its sender for the step.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "secagg/fl_secagg_internal.h"

/* got[] values within a step */
enum { S_NONE = 0, S_ACCEPTED = 1, S_REJECTED = 2 };

struct fl_secagg_server {
    fl_secagg_params p;
    int step; /* fl_secagg_step */
    int aborted;
    uint32_t nrecv;
    uint8_t *alive;  /* survivors of the last completed step */
    uint8_t *got;    /* this step */
    uint8_t *u[6];   /* u[1]..u[5]: U1..U5 */
    uint8_t (*adverts)[FL_SECAGG_ADVERT_LEN];
    uint8_t **box;   /* box[u]: (n) x (nonce|ct) from sender u, by recipient */
    uint32_t *sum;   /* dim + 1 words */
    uint8_t (*sigs)[64];
    uint64_t *rev;   /* n senders x n parties x 8 limbs; wiped on free */
    uint8_t *cons;   /* bytes signed in CONSIST (on U3) */
    size_t cons_len;
};

#define S_BOX_ITEM (24u + FL_SECAGG_SHARE_CT)

static uint32_t s_count(const uint8_t *set, uint32_t n)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        m += set[i] != 0;
    return m;
}

int fl_secagg_server_new(fl_secagg_server **out, const fl_secagg_params *p)
{
    if (!out)
        return fl_error_set(FL_EINVAL, "secagg server: out is NULL");
    *out = NULL;
    int rc = fl_secagg_params_check(p);
    if (rc)
        return rc;
    fl_secagg_server *s = calloc(1, sizeof *s);
    if (!s)
        return fl_error_set(FL_ENOMEM, "secagg server: out of memory");
    s->p = *p;
    size_t n = p->n;
    s->alive = malloc(n);
    s->got = calloc(n, 1);
    for (int i = 1; i <= 5; i++)
        s->u[i] = calloc(n, 1);
    s->adverts = calloc(n, sizeof *s->adverts);
    s->box = calloc(n, sizeof *s->box);
    s->sum = calloc((size_t)p->dim + 1, sizeof *s->sum);
    s->sigs = calloc(n, sizeof *s->sigs);
    if (!s->alive || !s->got || !s->u[1] || !s->u[2] || !s->u[3] || !s->u[4] || !s->u[5] ||
        !s->adverts || !s->box || !s->sum || !s->sigs) {
        fl_secagg_server_free(s);
        return fl_error_set(FL_ENOMEM, "secagg server: out of memory for n = %u, dim = %u",
                            p->n, p->dim);
    }
    memset(s->alive, 1, n);
    *out = s;
    return FL_OK;
}

void fl_secagg_server_free(fl_secagg_server *s)
{
    if (!s)
        return;
    free(s->alive);
    free(s->got);
    for (int i = 1; i <= 5; i++)
        free(s->u[i]);
    free(s->adverts);
    if (s->box)
        for (uint32_t i = 0; i < s->p.n; i++)
            free(s->box[i]);
    free(s->box);
    if (s->sum)
        sodium_memzero(s->sum, ((size_t)s->p.dim + 1) * sizeof *s->sum);
    free(s->sum);
    free(s->sigs);
    if (s->rev) {
        sodium_memzero(s->rev, (size_t)s->p.n * s->p.n * 8 * sizeof *s->rev);
        free(s->rev);
    }
    free(s->cons);
    free(s);
}

fl_secagg_step fl_secagg_server_step(const fl_secagg_server *s)
{
    return (fl_secagg_step)s->step;
}

uint32_t fl_secagg_server_received(const fl_secagg_server *s)
{
    return s->nrecv;
}

const uint8_t *fl_secagg_server_alive(const fl_secagg_server *s)
{
    return s->alive;
}

/* ------------------------------------------------------------ receive */

static int s_recv_advert(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    if (len != FL_SECAGG_ADVERT_LEN)
        return fl_error_set(FL_EPROTO, "advert of %zu bytes (must be %u)", len,
                            FL_SECAGG_ADVERT_LEN);
    uint32_t party = fl_secagg_get32(msg + 1);
    if (party != from)
        return fl_error_set(FL_EPROTO, "advert names party %u but came from party %u", party,
                            from);
    int rc = fl_secagg_advert_check(&s->p, msg, &party);
    if (rc)
        return rc;
    memcpy(s->adverts[from], msg, FL_SECAGG_ADVERT_LEN);
    return FL_OK;
}

static int s_recv_shares(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    uint32_t m1 = s_count(s->u[1], s->p.n);
    size_t want = 9 + (size_t)(m1 - 1) * FL_SECAGG_SHARE_ENTRY;
    if (len != want)
        return fl_error_set(FL_EPROTO, "share bundle of %zu bytes (must be %zu for |U1| = %u)",
                            len, want, m1);
    if (msg[0] != FL_SECAGG_TAG_SHARES)
        return fl_error_set(FL_EPROTO, "share bundle has tag 0x%02x", msg[0]);
    if (fl_secagg_get32(msg + 1) != from)
        return fl_error_set(FL_EPROTO, "share bundle names sender %u", fl_secagg_get32(msg + 1));
    if (fl_secagg_get32(msg + 5) != m1 - 1)
        return fl_error_set(FL_EPROTO, "share bundle has %u entries (must be %u)",
                            fl_secagg_get32(msg + 5), m1 - 1);
    const uint8_t *e = msg + 9;
    for (uint32_t v = 0; v < s->p.n; v++) {
        if (!s->u[1][v] || v == from)
            continue;
        uint32_t r = fl_secagg_get32(e);
        if (r != v)
            return fl_error_set(FL_EPROTO, "share bundle entry addressed to party %u where "
                                           "party %u was expected (one entry per U1 member but "
                                           "the sender, ascending)", r, v);
        e += FL_SECAGG_SHARE_ENTRY;
    }
    uint8_t *b = malloc((size_t)s->p.n * S_BOX_ITEM);
    if (!b)
        return fl_error_set(FL_ENOMEM, "out of memory for a share bundle");
    e = msg + 9;
    for (uint32_t v = 0; v < s->p.n; v++) {
        if (!s->u[1][v] || v == from)
            continue;
        memcpy(b + (size_t)v * S_BOX_ITEM, e + 4, S_BOX_ITEM);
        e += FL_SECAGG_SHARE_ENTRY;
    }
    free(s->box[from]);
    s->box[from] = b;
    return FL_OK;
}

static int s_recv_masked(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    size_t words = (size_t)s->p.dim + 1, want = 9 + 4 * words;
    if (len != want)
        return fl_error_set(FL_EPROTO, "masked vector of %zu bytes (must be %zu for dim %u)", len,
                            want, s->p.dim);
    if (msg[0] != FL_SECAGG_TAG_MASKED)
        return fl_error_set(FL_EPROTO, "masked vector has tag 0x%02x", msg[0]);
    if (fl_secagg_get32(msg + 1) != from || fl_secagg_get32(msg + 5) != words)
        return fl_error_set(FL_EPROTO, "masked vector names sender %u and %u words",
                            fl_secagg_get32(msg + 1), fl_secagg_get32(msg + 5));
    const uint8_t *p = msg + 9;
    uint32_t *sum = s->sum;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; i < words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        sum[i] += w;
    }
#else
    for (size_t i = 0; i < words; i++)
        sum[i] += fl_secagg_get32(p + 4 * i);
#endif
    return FL_OK;
}

static int s_recv_consist(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    if (len != FL_SECAGG_CONSIST_LEN)
        return fl_error_set(FL_EPROTO, "consistency message of %zu bytes (must be %u)", len,
                            FL_SECAGG_CONSIST_LEN);
    if (msg[0] != FL_SECAGG_TAG_CONSIST || fl_secagg_get32(msg + 1) != from)
        return fl_error_set(FL_EPROTO, "consistency message has tag 0x%02x, sender %u", msg[0],
                            fl_secagg_get32(msg + 1));
    if (fl_identity_verify(s->p.identity_pks[from], s->cons, s->cons_len, msg + 5) != FL_OK)
        return fl_error_set(FL_EPROTO, "consistency signature does not verify on (context, U3)");
    memcpy(s->sigs[from], msg + 5, 64);
    return FL_OK;
}

static int s_recv_unmask(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    uint32_t n = s->p.n, m2 = s_count(s->u[2], n);
    size_t want = 9 + (size_t)m2 * FL_SECAGG_UNMASK_ENTRY;
    if (len != want)
        return fl_error_set(FL_EPROTO, "unmask message of %zu bytes (must be %zu for |U2| = %u)",
                            len, want, m2);
    if (msg[0] != FL_SECAGG_TAG_UNMASK || fl_secagg_get32(msg + 1) != from ||
        fl_secagg_get32(msg + 5) != m2)
        return fl_error_set(FL_EPROTO, "unmask message has tag 0x%02x, sender %u, %u entries",
                            msg[0], fl_secagg_get32(msg + 1), fl_secagg_get32(msg + 5));
    const uint8_t *e = msg + 9;
    for (uint32_t v = 0; v < n; v++) {
        if (!s->u[2][v])
            continue;
        unsigned kind = s->u[3][v] ? FL_SECAGG_KIND_B : FL_SECAGG_KIND_CSK;
        if (fl_secagg_get32(e) != v || e[4] != kind)
            return fl_error_set(FL_EPROTO, "unmask entry for party %u kind %u where party %u "
                                           "kind %u was expected", fl_secagg_get32(e), e[4], v,
                                kind);
        for (uint32_t j = 0; j < 8; j++)
            if (fl_secagg_get64(e + 5 + 8 * j) >= FL_SECAGG_P)
                return fl_error_set(FL_EPROTO, "unmask share for party %u is not a field element",
                                    v);
        e += FL_SECAGG_UNMASK_ENTRY;
    }
    if (!s->rev) {
        s->rev = calloc((size_t)n * n * 8, sizeof *s->rev);
        if (!s->rev)
            return fl_error_set(FL_ENOMEM, "out of memory for revealed shares");
    }
    e = msg + 9;
    for (uint32_t v = 0; v < n; v++) {
        if (!s->u[2][v])
            continue;
        for (uint32_t j = 0; j < 8; j++)
            s->rev[((size_t)from * n + v) * 8 + j] = fl_secagg_get64(e + 5 + 8 * j);
        e += FL_SECAGG_UNMASK_ENTRY;
    }
    return FL_OK;
}

int fl_secagg_server_receive(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    if (!s)
        return fl_error_set(FL_EINVAL, "secagg server: NULL server");
    if (s->aborted)
        return fl_error_set(FL_ESTATE, "secagg server: the round was aborted; start a new round");
    if (s->step >= FL_SECAGG_DONE)
        return fl_error_set(FL_ESTATE, "secagg server: the round is complete; no more messages");
    if (from >= s->p.n)
        return fl_error_set(FL_EINVAL, "secagg server: sender %u out of range 0..%u", from,
                            s->p.n - 1);
    if (s->got[from] == S_ACCEPTED)
        return fl_error_set(FL_ESTATE, "secagg server: party %u already sent its step %d "
                                       "message; duplicate ignored", from, s->step);
    if (s->got[from] == S_REJECTED)
        return fl_error_set(FL_ESTATE, "secagg server: party %u sent a bad step %d message and "
                                       "is dropped for this step", from, s->step);
    if (!s->alive[from])
        return fl_error_set(FL_ESTATE, "secagg server: party %u is not a survivor of the previous "
                                       "step; message for step %d ignored", from, s->step);
    if (!msg || len == 0 || len > FL_SECAGG_MAX_MSG) {
        s->got[from] = S_REJECTED;
        return fl_error_set(FL_EPROTO, "secagg server: step %d message from party %u has %zu "
                                       "bytes (allowed 1..%u); party dropped for this step",
                            s->step, from, len, FL_SECAGG_MAX_MSG);
    }
    int rc;
    switch (s->step) {
    case FL_SECAGG_ADVERTISE: rc = s_recv_advert(s, from, msg, len); break;
    case FL_SECAGG_SHARE: rc = s_recv_shares(s, from, msg, len); break;
    case FL_SECAGG_MASKED: rc = s_recv_masked(s, from, msg, len); break;
    case FL_SECAGG_CONSIST: rc = s_recv_consist(s, from, msg, len); break;
    default: rc = s_recv_unmask(s, from, msg, len); break;
    }
    if (rc) {
        s->got[from] = S_REJECTED;
        return fl_error_wrap(rc == FL_ENOMEM ? FL_ENOMEM : FL_EPROTO,
                             "secagg server: step %d message from party %u rejected, party "
                             "dropped for this step", s->step, from);
    }
    s->got[from] = S_ACCEPTED;
    s->nrecv++;
    return FL_OK;
}

/* ------------------------------------------------------------ advance */

static int s_abort(fl_secagg_server *s, uint32_t have)
{
    s->aborted = 1;
    return fl_error_set(FL_ESTATE, "secagg server: only %u parties survived step %d, fewer than "
                                   "the threshold t = %u; round aborted", have, s->step, s->p.t);
}

static uint8_t *s_members_msg(uint8_t tag, const uint8_t *set, uint32_t n, size_t extra,
                              size_t *len)
{
    uint32_t m = s_count(set, n);
    size_t l = 5 + 4 * (size_t)m + extra;
    uint8_t *b = malloc(l);
    if (!b)
        return NULL;
    b[0] = tag;
    fl_secagg_put32(b + 1, m);
    size_t o = 5;
    for (uint32_t i = 0; i < n; i++)
        if (set[i]) {
            fl_secagg_put32(b + o, i);
            o += 4;
        }
    *len = l;
    return b;
}

static int s_build_out(fl_secagg_server *s, const uint8_t *set, uint8_t **out, size_t *lens)
{
    uint32_t n = s->p.n;
    for (uint32_t i = 0; i < n; i++) {
        out[i] = NULL;
        lens[i] = 0;
    }
    size_t len = 0;
    uint8_t *common = NULL;
    uint32_t m = s_count(set, n);
    if (s->step == FL_SECAGG_ADVERTISE) {
        len = 5 + (size_t)m * FL_SECAGG_ADVERT_LEN;
        common = malloc(len);
        if (common) {
            common[0] = FL_SECAGG_TAG_ADVERTS;
            fl_secagg_put32(common + 1, m);
            size_t o = 5;
            for (uint32_t i = 0; i < n; i++)
                if (set[i]) {
                    memcpy(common + o, s->adverts[i], FL_SECAGG_ADVERT_LEN);
                    o += FL_SECAGG_ADVERT_LEN;
                }
        }
    } else if (s->step == FL_SECAGG_MASKED) {
        common = s_members_msg(FL_SECAGG_TAG_U3LIST, set, n, 0, &len);
    } else if (s->step == FL_SECAGG_CONSIST) {
        len = 5 + (size_t)m * FL_SECAGG_SIG_ENTRY;
        common = malloc(len);
        if (common) {
            common[0] = FL_SECAGG_TAG_SIGS;
            fl_secagg_put32(common + 1, m);
            size_t o = 5;
            for (uint32_t i = 0; i < n; i++)
                if (set[i]) {
                    fl_secagg_put32(common + o, i);
                    memcpy(common + o + 4, s->sigs[i], 64);
                    o += FL_SECAGG_SIG_ENTRY;
                }
        }
    }
    for (uint32_t v = 0; v < n; v++) {
        if (!set[v])
            continue;
        if (s->step == FL_SECAGG_SHARE) {
            uint8_t *b = s_members_msg(FL_SECAGG_TAG_SHAREBOX, set, n,
                                       (size_t)(m - 1) * FL_SECAGG_BOX_ENTRY, &len);
            if (!b)
                goto nomem;
            size_t o = 5 + 4 * (size_t)m;
            for (uint32_t u = 0; u < n; u++) {
                if (!set[u] || u == v)
                    continue;
                fl_secagg_put32(b + o, u);
                fl_secagg_put32(b + o + 4, v);
                memcpy(b + o + 8, s->box[u] + (size_t)v * S_BOX_ITEM, S_BOX_ITEM);
                o += FL_SECAGG_BOX_ENTRY;
            }
            out[v] = b;
        } else {
            if (!common || !(out[v] = malloc(len)))
                goto nomem;
            memcpy(out[v], common, len);
        }
        lens[v] = len;
    }
    free(common);
    return FL_OK;
nomem:
    free(common);
    for (uint32_t i = 0; i < n; i++) {
        free(out[i]);
        out[i] = NULL;
        lens[i] = 0;
    }
    return fl_error_set(FL_ENOMEM, "secagg server: out of memory for step %d replies", s->step);
}

/* Final step: cancel every mask left in the sum (Bonawitz §4, round 4). */
static int s_unmask(fl_secagg_server *s)
{
    uint32_t n = s->p.n, t = s->p.t, m2 = s_count(s->u[2], n), nst = 0;
    uint32_t m3 = s_count(s->u[3], n);
    uint64_t xs[FL_SECAGG_MAX_PARTIES], lambda[FL_SECAGG_MAX_PARTIES];
    uint32_t who[FL_SECAGG_MAX_PARTIES];
    int rc = FL_OK;
    /* Shares from the first t parties of U5 (any t determine the secret). */
    uint32_t k = 0;
    for (uint32_t w = 0; w < n && k < t; w++)
        if (s->u[5][w]) {
            who[k] = w;
            xs[k++] = (uint64_t)w + 1;
        }
    if ((rc = fl_secagg_lagrange0(lambda, xs, t)))
        return rc;
    size_t nstreams = m3 + (size_t)(m2 - m3) * m3;
    uint8_t *keys = sodium_allocarray(nstreams + 1, 32);
    uint8_t *sec = sodium_malloc(32 + FL_SECAGG_BLOCK_WORDS * 4);
    uint64_t *ys = sodium_allocarray((size_t)t * 8, sizeof *ys); /* t x 8 shares of one party */
    fl_secagg_stream *st = calloc(nstreams + 1, sizeof *st);
    if (!keys || !sec || !ys || !st) {
        rc = fl_error_set(FL_ENOMEM, "secagg server: out of memory to unmask");
        goto done;
    }
    for (uint32_t v = 0; v < n && rc == FL_OK; v++) {
        if (!s->u[2][v])
            continue;
        for (uint32_t i = 0; i < t; i++)
            memcpy(ys + 8 * i, s->rev + ((size_t)who[i] * n + v) * 8, 8 * sizeof *ys);
        for (uint32_t j = 0; j < 8; j++) {
            uint64_t y = fl_secagg_interpolate0(lambda, ys + j, 8, t);
            if (y > UINT32_MAX) {
                rc = fl_error_set(FL_ECRYPTO, "secagg server: reconstructed secret of party %u "
                                              "is not 32-bit limbs: a party revealed a bad "
                                              "share; round aborted", v);
                break;
            }
            fl_secagg_put32(sec + 4 * j, (uint32_t)y);
        }
        if (rc)
            break;
        if (s->u[3][v]) { /* remove PRG(b_v) */
            memcpy(keys + 32 * (size_t)nst, sec, 32);
            st[nst] = (fl_secagg_stream){keys + 32 * (size_t)nst, -1, FL_SECAGG_NONCE_SELF};
            nst++;
            continue;
        }
        /* v dropped after sharing: its mask key must match its signed advert. */
        uint8_t pk[32];
        crypto_scalarmult_base(pk, sec);
        if (sodium_memcmp(pk, s->adverts[v] + 37, 32) != 0) {
            rc = fl_error_set(FL_ECRYPTO, "secagg server: reconstructed mask key of party %u "
                                          "does not match its advert: a party revealed a bad "
                                          "share; round aborted", v);
            break;
        }
        for (uint32_t u = 0; u < n; u++) {
            if (!s->u[3][u])
                continue;
            uint8_t *sd = keys + 32 * (size_t)nst;
            if (fl_secagg_mask_seed(sd, sec, s->adverts[u] + 37, s->p.context, v, u) != FL_OK) {
                rc = fl_error_set(FL_ECRYPTO, "secagg server: mask key of party %u is low order",
                                  u);
                break;
            }
            /* u added +PRG(s_uv) if v > u, -PRG if v < u: undo it. */
            st[nst++] = (fl_secagg_stream){sd, v > u ? -1 : +1, FL_SECAGG_NONCE_PAIR};
        }
    }
    sodium_memzero(sec, 32);
    if (rc)
        goto done;
    uint32_t *ks = (uint32_t *)(void *)(sec + 32);
    size_t words = (size_t)s->p.dim + 1;
    for (size_t w0 = 0; w0 < words; w0 += FL_SECAGG_BLOCK_WORDS) {
        size_t bw = words - w0 < FL_SECAGG_BLOCK_WORDS ? words - w0 : FL_SECAGG_BLOCK_WORDS;
        fl_secagg_apply_block(s->sum + w0, bw, w0, st, nst, ks);
    }
done:
    free(st);
    sodium_free(keys);
    sodium_free(sec);
    sodium_free(ys);
    sodium_memzero(xs, sizeof xs);
    return rc;
}

int fl_secagg_server_advance(fl_secagg_server *s, uint8_t **out, size_t *lens)
{
    if (!s)
        return fl_error_set(FL_EINVAL, "secagg server: NULL server");
    if (s->aborted)
        return fl_error_set(FL_ESTATE, "secagg server: the round was aborted; start a new round");
    if (s->step >= FL_SECAGG_DONE)
        return fl_error_set(FL_ESTATE, "secagg server: the round is already complete");
    if (s->step < FL_SECAGG_UNMASK && (!out || !lens))
        return fl_error_set(FL_EINVAL, "secagg server: step %d needs out and lens arrays of n",
                            s->step);
    uint32_t n = s->p.n;
    uint8_t *set = s->u[s->step + 1];
    for (uint32_t i = 0; i < n; i++)
        set[i] = s->got[i] == S_ACCEPTED;
    uint32_t m = s_count(set, n);
    if (m < s->p.t)
        return s_abort(s, m);
    int rc = FL_OK;
    if (s->step == FL_SECAGG_MASKED) {
        rc = fl_secagg_consist_bytes(&s->cons, &s->cons_len, s->p.context, set, n);
    }
    if (rc == FL_OK && s->step < FL_SECAGG_UNMASK)
        rc = s_build_out(s, set, out, lens);
    if (rc == FL_OK && s->step == FL_SECAGG_UNMASK) {
        rc = s_unmask(s);
        if (out && lens)
            for (uint32_t i = 0; i < n; i++) {
                out[i] = NULL;
                lens[i] = 0;
            }
    }
    if (rc) {
        s->aborted = 1;
        return rc;
    }
    memcpy(s->alive, set, n);
    memset(s->got, 0, n);
    s->nrecv = 0;
    s->step++;
    return FL_OK;
}

int fl_secagg_server_result(const fl_secagg_server *s, double *sum, uint64_t *total_weight)
{
    if (!s || !sum)
        return fl_error_set(FL_EINVAL, "secagg server: NULL argument to result");
    if (s->step != FL_SECAGG_DONE || s->aborted)
        return fl_error_set(FL_ESTATE, "secagg server: no result: the round is %s",
                            s->aborted ? "aborted" : "not complete");
    double scale = fl_secagg_scale(&s->p);
    for (uint32_t i = 0; i < s->p.dim; i++) {
        uint32_t w = s->sum[i];
        int64_t v = w >= 0x80000000u ? (int64_t)w - 4294967296ll : (int64_t)w;
        sum[i] = (double)v / scale;
    }
    if (total_weight)
        *total_weight = s->sum[s->p.dim];
    return FL_OK;
}
