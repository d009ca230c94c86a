/*
 * fl_secagg_server: the coordinator's side of a secure-aggregation round.
 * It relays messages between parties, keeps the survivor sets U1..U5,
 * accumulates masked vectors as they arrive (mod 2^32), and at the end
 * reconstructs the self-mask seeds of U3 and the mask keys of U2 \ U3 from
 * t revealed shares to cancel every mask. Every message is validated
 * (size before anything else, then structure, indices, signatures,
 * addressing); a bad one drops its sender for the step.
 *
 * SecAgg+ (k > 0, Bell et al. 2020): the server computes the round's public
 * neighbour graph and works per neighbourhood. H(v) = v and its k
 * neighbours hold v's shares; v is sent only the adverts, share
 * ciphertexts and consistency signatures of H(v), and v's secrets are
 * reconstructed from the shares revealed by H(v) ∩ U5 — a round whose
 * unmasking needs a party with fewer than t revealing holders aborts
 * (FL_ESTATE). Shares and reveals are stored by slot (v's position in
 * H(w)), so memory is O(n k), not O(n^2). k = 0: H(v) = all, slot = v.
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
    uint32_t *sum;   /* dim + 1 + num_counters words (fl_secagg_words) */
    uint8_t (*sigs)[64];
    uint64_t *rev;   /* n senders x n parties x 8 limbs; wiped on free */
    uint8_t *cons;   /* bytes signed in CONSIST (on U3) */
    size_t cons_len;
    uint32_t *nbr;   /* k > 0: n x k neighbours, rows ascending (fl_secagg_graph) */
    uint32_t slots;  /* entries per party in box[] and rev[]: n, or k + 1 */
};

/* v in H(w)? (symmetric); *slot receives v's slot in w's tables. */
static int s_holds(const fl_secagg_server *s, uint32_t w, uint32_t v, uint32_t *slot)
{
    uint32_t k = s->p.k, sl = v;
    int in = 1;
    if (k && v == w)
        sl = k;
    else if (k)
        in = fl_secagg_graph_has(s->nbr + (size_t)w * k, k, v, &sl);
    if (slot)
        *slot = sl;
    return in;
}

/* |set ∩ H(w)| */
static uint32_t s_count_h(const fl_secagg_server *s, const uint8_t *set, uint32_t w)
{
    uint32_t m = 0;
    if (!s->p.k) {
        for (uint32_t i = 0; i < s->p.n; i++)
            m += set[i] != 0;
        return m;
    }
    m = set[w] != 0;
    for (uint32_t j = 0; j < s->p.k; j++)
        m += set[s->nbr[(size_t)w * s->p.k + j]] != 0;
    return m;
}

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
    s->sum = calloc(fl_secagg_words(p), sizeof *s->sum);
    s->sigs = calloc(n, sizeof *s->sigs);
    if (!s->alive || !s->got || !s->u[1] || !s->u[2] || !s->u[3] || !s->u[4] || !s->u[5] ||
        !s->adverts || !s->box || !s->sum || !s->sigs) {
        fl_secagg_server_free(s);
        return fl_error_set(FL_ENOMEM, "secagg server: out of memory for n = %u, dim = %u",
                            p->n, p->dim);
    }
    memset(s->alive, 1, n);
    s->slots = p->k ? p->k + 1 : p->n;
    if (p->k) {
        s->nbr = malloc(n * p->k * sizeof *s->nbr);
        if (!s->nbr) {
            fl_secagg_server_free(s);
            return fl_error_set(FL_ENOMEM, "secagg server: out of memory for the SecAgg+ graph");
        }
        if ((rc = fl_secagg_graph(s->nbr, p->n, p->k, p->context))) {
            fl_secagg_server_free(s);
            return rc;
        }
    }
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
        sodium_memzero(s->sum, fl_secagg_words(&s->p) * sizeof *s->sum);
    free(s->sum);
    free(s->sigs);
    if (s->rev) {
        sodium_memzero(s->rev, (size_t)s->p.n * s->slots * 8 * sizeof *s->rev);
        free(s->rev);
    }
    free(s->cons);
    free(s->nbr);
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

void fl_secagg_server_holders(const fl_secagg_server *s, uint32_t u, uint8_t *map)
{
    for (uint32_t v = 0; v < s->p.n; v++)
        map[v] = (uint8_t)s_holds(s, u, v, NULL);
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
    /* one entry per U1 ∩ N(from); from itself is in U1 */
    uint32_t m1 = s_count_h(s, s->u[1], from);
    size_t want = 9 + (size_t)(m1 - 1) * FL_SECAGG_SHARE_ENTRY;
    if (len != want)
        return fl_error_set(FL_EPROTO, "share bundle of %zu bytes (must be %zu for |U1 ∩ H| = %u)",
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
        if (!s->u[1][v] || v == from || !s_holds(s, from, v, NULL))
            continue;
        uint32_t r = fl_secagg_get32(e);
        if (r != v)
            return fl_error_set(FL_EPROTO, "share bundle entry addressed to party %u where "
                                           "party %u was expected (one entry per U1 member of "
                                           "the sender's neighbourhood, ascending)", r, v);
        e += FL_SECAGG_SHARE_ENTRY;
    }
    uint8_t *b = malloc((size_t)s->slots * S_BOX_ITEM);
    if (!b)
        return fl_error_set(FL_ENOMEM, "out of memory for a share bundle");
    e = msg + 9;
    for (uint32_t v = 0; v < s->p.n; v++) {
        uint32_t sl;
        if (!s->u[1][v] || v == from || !s_holds(s, from, v, &sl))
            continue;
        memcpy(b + (size_t)sl * S_BOX_ITEM, e + 4, S_BOX_ITEM);
        e += FL_SECAGG_SHARE_ENTRY;
    }
    free(s->box[from]);
    s->box[from] = b;
    return FL_OK;
}

static int s_recv_masked(fl_secagg_server *s, uint32_t from, const uint8_t *msg, size_t len)
{
    size_t words = fl_secagg_words(&s->p), want = 9 + 4 * words;
    if (len != want)
        return fl_error_set(FL_EPROTO, "masked vector of %zu bytes (must be %zu for dim %u and "
                                       "%u counters)", len, want, s->p.dim, s->p.num_counters);
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
    uint32_t n = s->p.n, m2 = s_count_h(s, s->u[2], from);
    size_t want = 9 + (size_t)m2 * FL_SECAGG_UNMASK_ENTRY;
    if (len != want)
        return fl_error_set(FL_EPROTO, "unmask message of %zu bytes (must be %zu for "
                                       "|U2 ∩ H| = %u)", len, want, m2);
    if (msg[0] != FL_SECAGG_TAG_UNMASK || fl_secagg_get32(msg + 1) != from ||
        fl_secagg_get32(msg + 5) != m2)
        return fl_error_set(FL_EPROTO, "unmask message has tag 0x%02x, sender %u, %u entries",
                            msg[0], fl_secagg_get32(msg + 1), fl_secagg_get32(msg + 5));
    const uint8_t *e = msg + 9;
    for (uint32_t v = 0; v < n; v++) {
        if (!s->u[2][v] || !s_holds(s, from, v, NULL))
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
        s->rev = calloc((size_t)n * s->slots * 8, sizeof *s->rev);
        if (!s->rev)
            return fl_error_set(FL_ENOMEM, "out of memory for revealed shares");
    }
    e = msg + 9;
    for (uint32_t v = 0; v < n; v++) {
        uint32_t sl;
        if (!s->u[2][v] || !s_holds(s, from, v, &sl))
            continue;
        for (uint32_t j = 0; j < 8; j++)
            s->rev[((size_t)from * s->slots + sl) * 8 + j] = fl_secagg_get64(e + 5 + 8 * j);
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

/* The ADVERTS (step 0) or SIGS (step 3) message for recipient v: the
 * entries of set ∩ H(v) — everything for k = 0. */
static uint8_t *s_list_msg(const fl_secagg_server *s, const uint8_t *set, uint32_t v, size_t *len)
{
    uint32_t n = s->p.n, m = s_count_h(s, set, v);
    int adv = s->step == FL_SECAGG_ADVERTISE;
    size_t ent = adv ? FL_SECAGG_ADVERT_LEN : FL_SECAGG_SIG_ENTRY;
    size_t l = 5 + (size_t)m * ent;
    uint8_t *b = malloc(l);
    if (!b)
        return NULL;
    b[0] = adv ? FL_SECAGG_TAG_ADVERTS : FL_SECAGG_TAG_SIGS;
    fl_secagg_put32(b + 1, m);
    size_t o = 5;
    for (uint32_t i = 0; i < n; i++) {
        if (!set[i] || !s_holds(s, v, i, NULL))
            continue;
        if (adv) {
            memcpy(b + o, s->adverts[i], FL_SECAGG_ADVERT_LEN);
        } else {
            fl_secagg_put32(b + o, i);
            memcpy(b + o + 4, s->sigs[i], 64);
        }
        o += ent;
    }
    *len = l;
    return b;
}

/* SHAREBOX for v: the list U2 ∩ H(v) and the ciphertexts from U2 ∩ N(v). */
static uint8_t *s_box_msg(const fl_secagg_server *s, const uint8_t *set, uint32_t v, size_t *len)
{
    uint32_t n = s->p.n, m = s_count_h(s, set, v);
    size_t l = 5 + 4 * (size_t)m + (size_t)(m - 1) * FL_SECAGG_BOX_ENTRY;
    uint8_t *b = malloc(l);
    if (!b)
        return NULL;
    b[0] = FL_SECAGG_TAG_SHAREBOX;
    fl_secagg_put32(b + 1, m);
    size_t o = 5, e = 5 + 4 * (size_t)m;
    for (uint32_t u = 0; u < n; u++) {
        uint32_t sl;
        if (!set[u] || !s_holds(s, v, u, NULL))
            continue;
        fl_secagg_put32(b + o, u);
        o += 4;
        if (u == v)
            continue;
        (void)s_holds(s, u, v, &sl); /* v's slot in u's bundle (symmetric graph) */
        fl_secagg_put32(b + e, u);
        fl_secagg_put32(b + e + 4, v);
        memcpy(b + e + 8, s->box[u] + (size_t)sl * S_BOX_ITEM, S_BOX_ITEM);
        e += FL_SECAGG_BOX_ENTRY;
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
    /* One message for everyone: the global U3 always; adverts and
     * signatures too when k = 0. With k > 0 those are per neighbourhood. */
    int per_party = s->step == FL_SECAGG_SHARE ||
                    (s->p.k && (s->step == FL_SECAGG_ADVERTISE || s->step == FL_SECAGG_CONSIST));
    if (s->step == FL_SECAGG_MASKED)
        common = s_members_msg(FL_SECAGG_TAG_U3LIST, set, n, 0, &len);
    else if (!per_party)
        common = s_list_msg(s, set, 0, &len);
    for (uint32_t v = 0; v < n; v++) {
        if (!set[v])
            continue;
        if (s->step == FL_SECAGG_SHARE) {
            if (!(out[v] = s_box_msg(s, set, v, &len)))
                goto nomem;
        } else if (per_party) {
            if (!(out[v] = s_list_msg(s, set, v, &len)))
                goto nomem;
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

/* Final step: cancel every mask left in the sum (Bonawitz §4, round 4;
 * with k > 0 per neighbourhood, Bell et al. 2020). */
static int s_unmask(fl_secagg_server *s)
{
    uint32_t n = s->p.n, t = s->p.t, nst = 0;
    uint64_t xs[FL_SECAGG_MAX_PARTIES], lambda[FL_SECAGG_MAX_PARTIES];
    uint32_t who[FL_SECAGG_MAX_PARTIES], slot[FL_SECAGG_MAX_PARTIES];
    int have_lambda = 0; /* lambda[] is for the points of who[0..t) */
    int rc = FL_OK;
    /* Before any work: every party whose mask must go (self mask of U3,
     * pairwise masks of U2 \ U3) needs t revealing share holders. With
     * k = 0 that is |U5| >= t, already checked by the caller. */
    size_t nstreams = 0;
    for (uint32_t v = 0; v < n; v++) {
        if (!s->u[2][v])
            continue;
        uint32_t r = s_count_h(s, s->u[5], v);
        if (r < t)
            return fl_error_set(FL_ESTATE,
                                "secagg server: the %s of party %u must be removed, but only %u "
                                "of its share holders (itself and its SecAgg+ neighbours) revealed "
                                "shares, fewer than the threshold t = %u; round aborted",
                                s->u[3][v] ? "self mask" : "pairwise masks", v, r, t);
        nstreams += s->u[3][v] ? 1 : s_count_h(s, s->u[3], v);
    }
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
        /* Shares from the first t revealing holders of v (any t determine
         * the secret); the Lagrange weights are recomputed only when that
         * set changes — never for k = 0. */
        uint32_t m = 0, same = 1;
        for (uint32_t w = 0; w < n && m < t; w++) {
            if (!s->u[5][w] || !s_holds(s, v, w, NULL))
                continue;
            (void)s_holds(s, w, v, &slot[m]);
            same &= have_lambda && who[m] == w;
            who[m++] = w;
        }
        if (!same || !have_lambda) {
            for (uint32_t i = 0; i < t; i++)
                xs[i] = (uint64_t)who[i] + 1;
            if ((rc = fl_secagg_lagrange0(lambda, xs, t)))
                break;
            have_lambda = 1;
        }
        for (uint32_t i = 0; i < t; i++)
            memcpy(ys + 8 * i, s->rev + ((size_t)who[i] * s->slots + slot[i]) * 8,
                   8 * sizeof *ys);
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
            /* v masked only with its neighbours (everyone for k = 0) */
            if (!s->u[3][u] || !s_holds(s, v, u, NULL))
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
    if (sec)
        sodium_memzero(sec, 32);
    if (rc)
        goto done;
    uint32_t *ks = (uint32_t *)(void *)(sec + 32);
    size_t words = fl_secagg_words(&s->p); /* the counters are unmasked like the rest */
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

int fl_secagg_server_counters(const fl_secagg_server *s, uint64_t *sums)
{
    if (!s || (!sums && s->p.num_counters > 0))
        return fl_error_set(FL_EINVAL, "secagg server: NULL argument to counters");
    if (s->step != FL_SECAGG_DONE || s->aborted)
        return fl_error_set(FL_ESTATE, "secagg server: no counter sums: the round is %s",
                            s->aborted ? "aborted" : "not complete");
    /* Exact: params check guarantees n * max_counter < 2^32, so the word in
     * Z_2^32 is the integer sum over U3 itself. */
    const uint32_t *c = s->sum + (size_t)s->p.dim + 1;
    for (uint32_t i = 0; i < s->p.num_counters; i++)
        sums[i] = c[i];
    return FL_OK;
}
