/*
 * fl_ledger: the signed, hash-chained privacy ledger (see fl_ledger.h).
 *
 * Why a hash chain plus signatures: the signature on each line makes every
 * recorded parameter tamper-evident; the chain (each line carries the
 * SHA-256 of the one before, and seq counts lines) makes deletion,
 * insertion and reordering evident too, so an auditor holding only the
 * node's public identity key can check the whole history offline.
 * Recomputing every epsilon from the recorded (q, sigma, steps) checks the
 * accounting itself, not just its integrity.
 */
#include "dp/fl_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/fl_storage.h"

#define S_MAX_FIELDS 32
#define S_SIG_MARK ",\"sig\":\""

struct fl_ledger {
    char *path;
    int fd;
    const fl_identity *id;
    fl_ledger_charge *charges;
    size_t n, cap;
    uint64_t next_seq;
    uint8_t last_hash[32];
};

/* ------------------------------------------------------------ format */

/* Shortest decimal that reads back as exactly v, so a verifier recomputes
 * from the very doubles the node used. */
static void s_fmt_double(char *buf, size_t cap, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void s_fmt_time(char *buf, size_t cap, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int s_parse_time(const char *s, int64_t *out)
{
    struct tm tm;
    int n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 20 || s[n] != '\0')
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static void s_hex(char *out, const uint8_t *in, size_t n)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}

/* Formats a charge line (without the trailing newline), signed. */
static int s_format_charge(const fl_ledger_charge *c, const uint8_t prev[32],
                           const fl_identity *id, char *out, size_t cap, size_t *len)
{
    char t[32], q[32], sg[32], cl[32], de[32], ep[32], em[32], ph[65], sig_hex[129];
    uint8_t sig[FL_IDENTITY_SIG_BYTES];
    int n;

    s_fmt_time(t, sizeof t, c->time);
    s_fmt_double(q, sizeof q, c->q);
    s_fmt_double(sg, sizeof sg, c->sigma);
    s_fmt_double(cl, sizeof cl, c->clip);
    s_fmt_double(de, sizeof de, c->delta);
    s_fmt_double(ep, sizeof ep, c->epsilon);
    s_fmt_double(em, sizeof em, c->epsilon_max);
    s_hex(ph, prev, 32);
    n = snprintf(out, cap,
                 "{\"v\":1,\"seq\":%llu,\"time\":\"%s\",\"event\":\"charge\",\"node\":\"%s\","
                 "\"consortium\":\"%s\",\"round\":%u,\"accountant\":\"%s\","
                 "\"sampling\":\"poisson\",\"q\":%s,\"sigma\":%s,\"clip\":%s,\"steps\":%llu,"
                 "\"dataset_size\":%llu,\"total_steps\":%llu,\"delta\":%s,\"epsilon\":%s,"
                 "\"epsilon_max\":%s,\"prev\":\"%s\"",
                 (unsigned long long)c->seq, t, c->node, c->consortium, c->round,
                 fl_accountant_name(c->accountant), q, sg, cl, (unsigned long long)c->steps,
                 (unsigned long long)c->dataset_size, (unsigned long long)c->total_steps, de, ep,
                 em, ph);
    if (n < 0 || (size_t)n + sizeof S_SIG_MARK + 2 * FL_IDENTITY_SIG_BYTES + 3 > cap)
        return fl_error_set(FL_EINVAL, "ledger line too long");
    fl_identity_sign(id, out, (size_t)n, sig);
    s_hex(sig_hex, sig, sizeof sig);
    n += snprintf(out + n, cap - (size_t)n, S_SIG_MARK "%s\"}", sig_hex);
    *len = (size_t)n;
    return FL_OK;
}

static int s_format_recovery(uint64_t seq, int64_t time_s, const char *node, uint64_t torn_line,
                             const uint8_t torn_hash[32], const fl_identity *id, char *out,
                             size_t cap, size_t *len)
{
    char t[32], th[65], sig_hex[129];
    uint8_t sig[FL_IDENTITY_SIG_BYTES];
    int n;

    s_fmt_time(t, sizeof t, time_s);
    s_hex(th, torn_hash, 32);
    n = snprintf(out, cap,
                 "{\"v\":1,\"seq\":%llu,\"time\":\"%s\",\"event\":\"recovery\",\"node\":\"%s\","
                 "\"torn_line\":%llu,\"torn_sha256\":\"%s\",\"prev\":\"%s\"",
                 (unsigned long long)seq, t, node, (unsigned long long)torn_line, th, th);
    if (n < 0 || (size_t)n + sizeof S_SIG_MARK + 2 * FL_IDENTITY_SIG_BYTES + 3 > cap)
        return fl_error_set(FL_EINVAL, "ledger line too long");
    fl_identity_sign(id, out, (size_t)n, sig);
    s_hex(sig_hex, sig, sizeof sig);
    n += snprintf(out + n, cap - (size_t)n, S_SIG_MARK "%s\"}", sig_hex);
    *len = (size_t)n;
    return FL_OK;
}

/* ------------------------------------------------------------- parse */

typedef struct {
    char key[32];
    char val[160];
    int is_string;
} s_field;

typedef struct {
    s_field f[S_MAX_FIELDS];
    size_t n;
} s_object;

/* A strict reader for the flat objects this module writes: string values
 * of printable ASCII without escapes, bare numbers. Anything else is
 * rejected with a reason: ledger files are read from disk an attacker may
 * have touched. */
static int s_parse_object(const char *s, size_t len, s_object *o, char *why, size_t why_cap)
{
    size_t i = 0;
    o->n = 0;
#define S_BAD(...) do { snprintf(why, why_cap, __VA_ARGS__); return -1; } while (0)
    if (len < 2 || s[0] != '{' || s[len - 1] != '}')
        S_BAD("not a JSON object");
    i = 1;
    while (i < len - 1) {
        s_field *f;
        size_t k = 0;
        if (o->n == S_MAX_FIELDS)
            S_BAD("more than %d fields", S_MAX_FIELDS);
        f = &o->f[o->n];
        if (s[i] != '"')
            S_BAD("expected a field name at byte %zu", i + 1);
        i++;
        while (i < len && s[i] != '"') {
            if (k + 1 >= sizeof f->key || s[i] < 0x20 || s[i] > 0x7e || s[i] == '\\')
                S_BAD("bad field name at byte %zu", i + 1);
            f->key[k++] = s[i++];
        }
        f->key[k] = '\0';
        if (i + 1 >= len || s[i + 1] != ':')
            S_BAD("expected ':' after \"%s\"", f->key);
        i += 2;
        k = 0;
        if (s[i] == '"') {
            f->is_string = 1;
            i++;
            while (i < len && s[i] != '"') {
                if (k + 1 >= sizeof f->val || s[i] < 0x20 || s[i] > 0x7e || s[i] == '\\')
                    S_BAD("bad value for \"%s\" at byte %zu", f->key, i + 1);
                f->val[k++] = s[i++];
            }
            if (i >= len)
                S_BAD("unterminated string for \"%s\"", f->key);
            i++;
        } else {
            f->is_string = 0;
            while (i < len - 1 && s[i] != ',') {
                char c = s[i];
                if (k + 1 >= sizeof f->val ||
                    !((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' ||
                      c == 'E'))
                    S_BAD("bad number for \"%s\" at byte %zu", f->key, i + 1);
                f->val[k++] = s[i++];
            }
            if (k == 0)
                S_BAD("empty value for \"%s\"", f->key);
        }
        f->val[k] = '\0';
        for (size_t j = 0; j < o->n; j++)
            if (strcmp(o->f[j].key, f->key) == 0)
                S_BAD("field \"%s\" appears twice", f->key);
        o->n++;
        if (s[i] == ',')
            i++;
        else if (i != len - 1)
            S_BAD("expected ',' or '}' at byte %zu", i + 1);
    }
    return 0;
#undef S_BAD
}

static const s_field *s_get(const s_object *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->f[i].key, key) == 0)
            return &o->f[i];
    return NULL;
}

static int s_get_str(const s_object *o, const char *key, char *out, size_t cap, char *why,
                     size_t why_cap)
{
    const s_field *f = s_get(o, key);
    if (!f || !f->is_string || strlen(f->val) >= cap) {
        snprintf(why, why_cap, "field \"%s\" is missing or not a string", key);
        return -1;
    }
    strcpy(out, f->val);
    return 0;
}

static int s_get_u64(const s_object *o, const char *key, uint64_t *out, char *why, size_t cap)
{
    const s_field *f = s_get(o, key);
    char *end;
    if (!f || f->is_string || f->val[0] == '-' || f->val[0] == '+') {
        snprintf(why, cap, "field \"%s\" is missing or not a non-negative integer", key);
        return -1;
    }
    errno = 0;
    *out = strtoull(f->val, &end, 10);
    if (errno || *end) {
        snprintf(why, cap, "field \"%s\" is not an integer", key);
        return -1;
    }
    return 0;
}

static int s_get_double(const s_object *o, const char *key, double *out, char *why, size_t cap)
{
    const s_field *f = s_get(o, key);
    char *end;
    if (!f || f->is_string) {
        snprintf(why, cap, "field \"%s\" is missing or not a number", key);
        return -1;
    }
    errno = 0;
    *out = strtod(f->val, &end);
    if (errno || *end || !isfinite(*out)) {
        snprintf(why, cap, "field \"%s\" is not a finite number", key);
        return -1;
    }
    return 0;
}

static int s_get_hash(const s_object *o, const char *key, uint8_t out[32], char *why, size_t cap)
{
    char hex[80];
    size_t bin_len = 0;
    if (s_get_str(o, key, hex, sizeof hex, why, cap) != 0)
        return -1;
    if (strlen(hex) != 64 ||
        sodium_hex2bin(out, 32, hex, 64, NULL, &bin_len, NULL) != 0 || bin_len != 32) {
        snprintf(why, cap, "field \"%s\" is not 64 hex digits", key);
        return -1;
    }
    return 0;
}

/* Parses a charge line's fields into c (seq, prev and sig are checked by
 * the caller). */
static int s_read_charge(const s_object *o, fl_ledger_charge *c, char *why, size_t cap)
{
    char t[32], acc[16], sampling[16];
    uint64_t round;
    memset(c, 0, sizeof *c);
    if (s_get_u64(o, "seq", &c->seq, why, cap) || s_get_str(o, "time", t, sizeof t, why, cap) ||
        s_get_str(o, "node", c->node, sizeof c->node, why, cap) ||
        s_get_str(o, "consortium", c->consortium, sizeof c->consortium, why, cap) ||
        s_get_u64(o, "round", &round, why, cap) ||
        s_get_str(o, "accountant", acc, sizeof acc, why, cap) ||
        s_get_str(o, "sampling", sampling, sizeof sampling, why, cap) ||
        s_get_double(o, "q", &c->q, why, cap) || s_get_double(o, "sigma", &c->sigma, why, cap) ||
        s_get_double(o, "clip", &c->clip, why, cap) ||
        s_get_u64(o, "steps", &c->steps, why, cap) ||
        s_get_u64(o, "dataset_size", &c->dataset_size, why, cap) ||
        s_get_u64(o, "total_steps", &c->total_steps, why, cap) ||
        s_get_double(o, "delta", &c->delta, why, cap) ||
        s_get_double(o, "epsilon", &c->epsilon, why, cap) ||
        s_get_double(o, "epsilon_max", &c->epsilon_max, why, cap))
        return -1;
    if (s_parse_time(t, &c->time) != 0) {
        snprintf(why, cap, "field \"time\" is not YYYY-MM-DDTHH:MM:SSZ");
        return -1;
    }
    if (round > UINT32_MAX) {
        snprintf(why, cap, "field \"round\" is out of range");
        return -1;
    }
    c->round = (uint32_t)round;
    if (fl_accountant_parse(acc, &c->accountant) != FL_OK) {
        snprintf(why, cap, "unknown accountant \"%s\"", acc);
        return -1;
    }
    if (strcmp(sampling, "poisson") != 0) {
        snprintf(why, cap, "unknown sampling method \"%s\"", sampling);
        return -1;
    }
    if (!(c->q > 0 && c->q <= 1) || !(c->sigma > 0) || !(c->clip > 0) || c->steps == 0 ||
        !(c->delta > 0 && c->delta < 1) || !(c->epsilon >= 0) || !(c->epsilon_max > 0)) {
        snprintf(why, cap, "a mechanism parameter is out of range (need 0<q<=1, sigma>0, C>0, "
                 "steps>0, 0<delta<1)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------- accounting */

static void s_events(const fl_ledger_charge *c, size_t n, fl_accountant_event *ev)
{
    for (size_t i = 0; i < n; i++) {
        ev[i].q = c[i].q;
        ev[i].sigma = c[i].sigma;
        ev[i].steps = c[i].steps;
    }
}

/* Epsilon of charges[0..n) plus an optional extra event. */
static int s_epsilon(const fl_ledger_charge *c, size_t n, const fl_accountant_event *extra,
                     fl_accountant_kind kind, double delta, double *eps)
{
    fl_accountant_event *ev = malloc((n + 1) * sizeof *ev);
    size_t m = n;
    int rc;
    if (!ev)
        return fl_error_set(FL_ENOMEM, "out of memory");
    s_events(c, n, ev);
    if (extra)
        ev[m++] = *extra;
    rc = fl_accountant_epsilon_events(kind, ev, m, delta, eps);
    free(ev);
    return rc;
}

/* -------------------------------------------------------------- verify */

static int s_bad(fl_ledger_status *st, size_t line, const char *what)
{
    st->bad_line = line;
    if (what != st->what)
        snprintf(st->what, sizeof st->what, "%s", what);
    return fl_error_set(FL_EPARSE, "ledger line %zu: %s", line, what);
}

int fl_ledger_verify(const char *path, const uint8_t *sign_pk, fl_ledger_status *st,
                     fl_ledger_charge **charges_out, size_t *num_out)
{
    unsigned char *buf = NULL;
    size_t len = 0, pos = 0, line_no = 0, n = 0, cap = 0;
    fl_ledger_charge *ch = NULL;
    uint8_t prev[32] = {0};
    uint64_t total = 0;
    int rc;
    /* A line that failed to parse, awaiting a recovery record naming it. */
    size_t torn_line = 0;
    uint8_t torn_hash[32];

    memset(st, 0, sizeof *st);
    if (charges_out)
        *charges_out = NULL;
    if (num_out)
        *num_out = 0;
    rc = fl_storage_read_all(path, FL_LEDGER_MAX_BYTES, &buf, &len);
    if (rc != FL_OK)
        return rc;
    while (pos < len) {
        const char *line = (const char *)buf + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        uint8_t hash[32];
        char why[400], ev[16];
        s_object o;
        uint64_t seq;
        uint8_t rec_prev[32];

        line_no++;
        pos += llen + (nl ? 1 : 0);
        crypto_hash_sha256(hash, (const unsigned char *)line, llen);
        if (!nl) {
            /* Torn tail: a crash interrupted the last append. */
            st->torn_tail = 1;
            st->bad_line = line_no;
            snprintf(st->what, sizeof st->what, "line %zu is incomplete (no newline): a crash "
                     "interrupted an append; the node recovers it at its next start",
                     line_no);
            memcpy(st->last_hash, hash, 32);
            rc = fl_error_set(FL_EPARSE, "%s: %s", path, st->what);
            goto done;
        }
        if (torn_line) {
            /* The previous line was damaged: only a recovery record naming it
             * may follow. */
            s_object r;
            uint64_t tl;
            uint8_t th[32];
            if (s_parse_object(line, llen, &r, why, sizeof why) != 0 ||
                s_get_str(&r, "event", ev, sizeof ev, why, sizeof why) != 0 ||
                strcmp(ev, "recovery") != 0 ||
                s_get_u64(&r, "torn_line", &tl, why, sizeof why) != 0 || tl != torn_line ||
                s_get_hash(&r, "torn_sha256", th, why, sizeof why) != 0 ||
                sodium_memcmp(th, torn_hash, 32) != 0) {
                rc = s_bad(st, torn_line, st->what);
                goto done;
            }
        }
        if (llen > FL_LEDGER_MAX_LINE) {
            snprintf(why, sizeof why, "line is %zu bytes, longer than the %u allowed", llen,
                     FL_LEDGER_MAX_LINE);
            goto torn_or_bad;
        }
        if (s_parse_object(line, llen, &o, why, sizeof why) != 0)
            goto torn_or_bad;
        if (s_get_u64(&o, "seq", &seq, why, sizeof why) != 0)
            goto torn_or_bad;
        if (seq != line_no) {
            snprintf(why, sizeof why, "seq is %llu, expected %zu: a line was deleted, inserted "
                     "or moved", (unsigned long long)seq, line_no);
            goto bad;
        }
        if (s_get_hash(&o, "prev", rec_prev, why, sizeof why) != 0)
            goto bad;
        if (sodium_memcmp(rec_prev, prev, 32) != 0) {
            snprintf(why, sizeof why, "prev does not match the SHA-256 of line %zu: the chain "
                     "is broken (a line was changed, deleted or reordered)", line_no - 1);
            goto bad;
        }
        {
            /* The signature covers every byte before ,"sig":" */
            const char *mark = NULL;
            for (size_t k = 0; k + sizeof S_SIG_MARK - 1 <= llen; k++)
                if (memcmp(line + k, S_SIG_MARK, sizeof S_SIG_MARK - 1) == 0)
                    mark = line + k;
            uint8_t sig[FL_IDENTITY_SIG_BYTES];
            size_t bin_len = 0;
            const s_field *f = s_get(&o, "sig");
            /* Only the lower-case hex the node writes: hex digits a-f read
             * as A-F decode to the same bytes, and the signature does not
             * cover its own text, so any other spelling would let a byte of
             * this line change unnoticed here. */
            int lower = f && f->is_string;
            for (const char *p = lower ? f->val : ""; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                    lower = 0;
            if (!lower || !mark || strlen(f->val) != 128 ||
                sodium_hex2bin(sig, sizeof sig, f->val, 128, NULL, &bin_len, NULL) != 0 ||
                bin_len != sizeof sig) {
                snprintf(why, sizeof why, "field \"sig\" is missing or not 128 lower-case hex "
                         "digits");
                goto bad;
            }
            if (line + llen - mark != (ptrdiff_t)(sizeof S_SIG_MARK - 1 + 128 + 2)) {
                snprintf(why, sizeof why, "\"sig\" must be the last field");
                goto bad;
            }
            if (sign_pk && fl_identity_verify(sign_pk, line, (size_t)(mark - line), sig) != FL_OK) {
                snprintf(why, sizeof why, "the signature does not verify with the node's "
                         "identity key: the line was altered or written by another key");
                goto bad;
            }
        }
        if (s_get_str(&o, "event", ev, sizeof ev, why, sizeof why) != 0)
            goto bad;
        if (strcmp(ev, "charge") == 0) {
            fl_ledger_charge c;
            double eps;
            if (s_read_charge(&o, &c, why, sizeof why) != 0)
                goto bad;
            total += c.steps;
            if (c.total_steps != total) {
                snprintf(why, sizeof why, "total_steps is %llu but the charges add up to %llu",
                         (unsigned long long)c.total_steps, (unsigned long long)total);
                goto bad;
            }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                fl_ledger_charge *g = realloc(ch, nc * sizeof *g);
                if (!g) {
                    rc = fl_error_set(FL_ENOMEM, "out of memory reading '%s'", path);
                    goto done;
                }
                ch = g;
                cap = nc;
            }
            ch[n++] = c;
            /* Independent recomputation from the recorded parameters. */
            if (s_epsilon(ch, n, NULL, c.accountant, c.delta, &eps) != FL_OK) {
                snprintf(why, sizeof why, "cannot recompute epsilon: %s", fl_error_last());
                goto bad;
            }
            if (fabs(eps - c.epsilon) > 1e-9 * fmax(1.0, eps)) {
                snprintf(why, sizeof why, "recorded epsilon %.6f differs from the recomputed "
                         "%.6f (%s accountant, delta %g)", c.epsilon, eps,
                         fl_accountant_name(c.accountant), c.delta);
                goto bad;
            }
            if (c.epsilon > c.epsilon_max * (1.0 + 1e-12)) {
                snprintf(why, sizeof why, "epsilon %.6f exceeds the cap %.6f recorded with it",
                         c.epsilon, c.epsilon_max);
                goto bad;
            }
            st->charges++;
            st->epsilon = c.epsilon;
        } else if (strcmp(ev, "recovery") == 0) {
            if (!torn_line) {
                snprintf(why, sizeof why, "a recovery record that follows no damaged line");
                goto bad;
            }
            st->recoveries++;
            torn_line = 0;
        } else {
            snprintf(why, sizeof why, "unknown event \"%s\"", ev);
            goto bad;
        }
        memcpy(prev, hash, 32);
        st->lines = line_no;
        memcpy(st->last_hash, hash, 32);
        continue;
    torn_or_bad:
        /* A line that does not parse is acceptable only as a recovered torn
         * line: remember it, the next line must be its recovery record. */
        if (!torn_line) {
            torn_line = line_no;
            memcpy(torn_hash, hash, 32);
            memcpy(prev, hash, 32);
            snprintf(st->what, sizeof st->what, "%s", why);
            st->lines = line_no;
            continue;
        }
    bad:
        rc = s_bad(st, line_no, why);
        goto done;
    }
    if (torn_line) {
        rc = s_bad(st, torn_line, st->what);
        goto done;
    }
    rc = FL_OK;
done:
    free(buf);
    if (rc == FL_OK && charges_out) {
        *charges_out = ch;
        if (num_out)
            *num_out = n;
    } else {
        free(ch);
    }
    return rc;
}

/* -------------------------------------------------------------- node */

static int s_write_all(fl_ledger *l, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(l->fd, data + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fl_error_set(FL_EIO, "cannot append to ledger '%s': %s", l->path,
                                strerror(errno));
        done += (size_t)w;
    }
    if (fsync(l->fd) != 0)
        return fl_error_set(FL_EIO, "cannot fsync ledger '%s': %s", l->path, strerror(errno));
    return FL_OK;
}

int fl_ledger_open(fl_ledger **out, const char *path, const fl_identity *id, const char *node,
                   int *recovered)
{
    fl_ledger *l = calloc(1, sizeof *l);
    fl_ledger_status st;
    struct stat sb;
    int rc;

    *out = NULL;
    if (recovered)
        *recovered = 0;
    if (!l || !(l->path = strdup(path))) {
        free(l);
        return fl_error_set(FL_ENOMEM, "out of memory");
    }
    l->id = id;
    l->fd = -1;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            rc = fl_error_set(FL_EIO, "cannot open ledger '%s': %s", path, strerror(errno));
            goto fail;
        }
        if ((rc = fl_storage_write_atomic(path, "", 0, 0600)) != FL_OK)
            goto fail;
    }
    rc = fl_ledger_verify(path, fl_identity_public_of(id)->sign_pk, &st, &l->charges, &l->n);
    l->cap = l->n;
    if (rc != FL_OK && !st.torn_tail) {
        rc = fl_error_wrap(rc, "ledger '%s' fails verification; the node will not train until a "
                           "privacy officer has inspected it (flaudit verify)", path);
        goto fail;
    }
    l->fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (l->fd < 0) {
        rc = fl_error_set(FL_EIO, "cannot open ledger '%s' for appending: %s", path,
                          strerror(errno));
        goto fail;
    }
    if (st.torn_tail) {
        /* Terminate the torn line, append a signed recovery record naming
         * it, then verify the whole ledger again from the start. */
        char line[FL_LEDGER_MAX_LINE + 2];
        size_t len = 0;
        size_t torn = st.bad_line;
        line[0] = '\n';
        rc = s_format_recovery(torn + 1, (int64_t)time(NULL), node, torn, st.last_hash, id,
                               line + 1, sizeof line - 2, &len);
        if (rc != FL_OK)
            goto fail;
        line[1 + len] = '\n';
        if ((rc = s_write_all(l, line, len + 2)) != FL_OK)
            goto fail;
        rc = fl_ledger_verify(path, fl_identity_public_of(id)->sign_pk, &st, &l->charges, &l->n);
        if (rc != FL_OK)
            goto fail;
        l->cap = l->n;
        if (recovered)
            *recovered = (int)torn;
    }
    l->next_seq = (uint64_t)st.lines + 1;
    memcpy(l->last_hash, st.last_hash, 32);
    *out = l;
    return FL_OK;
fail:
    fl_ledger_free(l);
    return rc;
}

size_t fl_ledger_num_charges(const fl_ledger *l)
{
    return l->n;
}

const fl_ledger_charge *fl_ledger_charge_at(const fl_ledger *l, size_t i)
{
    return i < l->n ? &l->charges[i] : NULL;
}

int fl_ledger_epsilon_after(const fl_ledger *l, fl_accountant_kind kind, double q, double sigma,
                            uint64_t steps, double delta, double *eps)
{
    fl_accountant_event e = {q, sigma, steps};
    return s_epsilon(l->charges, l->n, steps ? &e : NULL, kind, delta, eps);
}

int fl_ledger_calibrate_sigma(const fl_ledger *l, fl_accountant_kind kind, double q,
                              uint64_t steps, double target_eps, double delta, double *sigma)
{
    fl_accountant_event *ev = malloc((l->n ? l->n : 1) * sizeof *ev);
    int rc;
    if (!ev)
        return fl_error_set(FL_ENOMEM, "out of memory");
    s_events(l->charges, l->n, ev);
    rc = fl_accountant_calibrate_sigma_events(kind, ev, l->n, q, steps, target_eps, delta, sigma);
    free(ev);
    return rc;
}

int fl_ledger_append_charge(fl_ledger *l, fl_ledger_charge *c)
{
    char line[FL_LEDGER_MAX_LINE + 2];
    size_t len = 0;
    double eps;
    int rc;

    rc = fl_ledger_epsilon_after(l, c->accountant, c->q, c->sigma, c->steps, c->delta, &eps);
    if (rc != FL_OK)
        return rc;
    if (eps > c->epsilon_max * (1.0 + 1e-12))
        return fl_error_set(FL_EBUDGET, "charging %llu more steps would raise epsilon to %.4f, "
                            "above the cap %g", (unsigned long long)c->steps, eps,
                            c->epsilon_max);
    c->seq = l->next_seq;
    c->time = (int64_t)time(NULL);
    c->total_steps = (l->n ? l->charges[l->n - 1].total_steps : 0) + c->steps;
    c->epsilon = eps;
    rc = s_format_charge(c, l->last_hash, l->id, line, sizeof line - 1, &len);
    if (rc != FL_OK)
        return rc;
    line[len] = '\n';
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        fl_ledger_charge *g = realloc(l->charges, nc * sizeof *g);
        if (!g)
            return fl_error_set(FL_ENOMEM, "out of memory");
        l->charges = g;
        l->cap = nc;
    }
    if ((rc = s_write_all(l, line, len + 1)) != FL_OK)
        return rc;
    crypto_hash_sha256(l->last_hash, (const unsigned char *)line, len);
    l->charges[l->n++] = *c;
    l->next_seq++;
    return FL_OK;
}

void fl_ledger_free(fl_ledger *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->charges);
    free(l->path);
    free(l);
}
