/*
 * fl_admin: the coordinator's admin channel (see fl_admin.h): a strict JSON
 * reader, bounded reply buffers, the REP socket, enrollment-file rewrites
 * and the round history.
 */
#include "coordinator/fl_admin.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <zmq.h>

#include "storage/fl_storage.h"

#define S_MAX_DEPTH 16
#define S_MAX_ENROLL_FILE (1u << 20)

/* ------------------------------------------------------------ JSON */

typedef struct {
    const char *p, *end, *start;
} s_parser;

static int s_fail(const s_parser *ps, const char *what)
{
    return fl_error_set(FL_EPARSE, "JSON at byte %zu: %s", (size_t)(ps->p - ps->start), what);
}

static void s_ws(s_parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Length of the UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), or 0 if invalid. */
static size_t s_utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t n;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

static int s_hex4(const char *p, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            *v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            *v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    return 0;
}

/* Parses a string at ps->p (on the opening quote) into a fresh buffer. */
static int s_string(s_parser *ps, char **out)
{
    /* The decoded text is never longer than the encoded one. */
    const char *q = ++ps->p;
    char *buf, *w;
    size_t cap;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end)
        return s_fail(ps, "unterminated string");
    cap = (size_t)(q - ps->p) + 1;
    buf = malloc(cap);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory");
    w = buf;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            free(buf);
            return s_fail(ps, "control character in a string (escape it)");
        }
        if (c == '\\') {
            char e = ps->p[1];
            ps->p += 2;
            switch (e) {
            case '"': *w++ = '"'; break;
            case '\\': *w++ = '\\'; break;
            case '/': *w++ = '/'; break;
            case 'b': *w++ = '\b'; break;
            case 'f': *w++ = '\f'; break;
            case 'n': *w++ = '\n'; break;
            case 'r': *w++ = '\r'; break;
            case 't': *w++ = '\t'; break;
            case 'u': {
                uint32_t cp;
                if (ps->end - ps->p < 4 || s_hex4(ps->p, &cp) != 0 || cp == 0 ||
                    (cp >= 0xd800 && cp <= 0xdfff)) {
                    /* Surrogates and NUL have no place in names, keys or messages. */
                    free(buf);
                    return s_fail(ps, "\\u escape must be 4 hex digits of a non-surrogate, "
                                      "non-NUL code point");
                }
                ps->p += 4;
                if (cp < 0x80) {
                    *w++ = (char)cp;
                } else if (cp < 0x800) {
                    *w++ = (char)(0xc0 | (cp >> 6));
                    *w++ = (char)(0x80 | (cp & 0x3f));
                } else {
                    *w++ = (char)(0xe0 | (cp >> 12));
                    *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
                    *w++ = (char)(0x80 | (cp & 0x3f));
                }
                break;
            }
            default:
                ps->p -= 1;
                free(buf);
                return s_fail(ps, "unknown escape in a string");
            }
            continue;
        }
        {
            size_t n = s_utf8_len((const unsigned char *)ps->p, (const unsigned char *)ps->end);
            if (n == 0) {
                free(buf);
                return s_fail(ps, "invalid UTF-8 in a string");
            }
            memcpy(w, ps->p, n);
            w += n;
            ps->p += n;
        }
    }
    *w = '\0';
    ps->p++;
    *out = buf;
    return FL_OK;
}

static int s_number(s_parser *ps, double *out)
{
    const char *s = ps->p;
    char tmp[64];
    if (ps->p < ps->end && *ps->p == '-')
        ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return s_fail(ps, "expected a digit");
    if (*ps->p == '0')
        ps->p++;
    else
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return s_fail(ps, "expected a digit after '.'");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return s_fail(ps, "expected a digit in the exponent");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if ((size_t)(ps->p - s) >= sizeof tmp)
        return s_fail(ps, "number too long");
    memcpy(tmp, s, (size_t)(ps->p - s));
    tmp[ps->p - s] = '\0';
    *out = strtod(tmp, NULL);
    if (!isfinite(*out))
        return s_fail(ps, "number out of range");
    return FL_OK;
}

static int s_literal(s_parser *ps, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
        return s_fail(ps, "expected a value (object, array, string, number, true, false, null)");
    ps->p += n;
    return FL_OK;
}

static int s_value(s_parser *ps, fl_json *v, int depth)
{
    int rc;
    s_ws(ps);
    if (ps->p >= ps->end)
        return s_fail(ps, "unexpected end of text");
    switch (*ps->p) {
    case '{':
    case '[': {
        int obj = *ps->p == '{';
        fl_json **tail = &v->child;
        if (depth >= S_MAX_DEPTH)
            return s_fail(ps, "nested too deeply");
        v->type = obj ? FL_JSON_OBJECT : FL_JSON_ARRAY;
        ps->p++;
        s_ws(ps);
        if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) {
            ps->p++;
            return FL_OK;
        }
        for (;;) {
            fl_json *e = calloc(1, sizeof *e);
            if (!e)
                return fl_error_set(FL_ENOMEM, "out of memory");
            *tail = e;
            tail = &e->next;
            if (obj) {
                s_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"')
                    return s_fail(ps, "expected a member name in quotes");
                if ((rc = s_string(ps, &e->key)) != FL_OK)
                    return rc;
                for (const fl_json *o = v->child; o != e; o = o->next)
                    if (strcmp(o->key, e->key) == 0)
                        return s_fail(ps, "duplicate member name");
                s_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':')
                    return s_fail(ps, "expected ':'");
                ps->p++;
            }
            if ((rc = s_value(ps, e, depth + 1)) != FL_OK)
                return rc;
            s_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) {
                ps->p++;
                return FL_OK;
            }
            return s_fail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    case '"':
        v->type = FL_JSON_STRING;
        return s_string(ps, &v->string);
    case 't':
        v->type = FL_JSON_BOOL;
        v->boolean = 1;
        return s_literal(ps, "true");
    case 'f':
        v->type = FL_JSON_BOOL;
        return s_literal(ps, "false");
    case 'n':
        v->type = FL_JSON_NULL;
        return s_literal(ps, "null");
    default:
        v->type = FL_JSON_NUMBER;
        return s_number(ps, &v->number);
    }
}

int fl_admin_json_parse(fl_json **out, const char *text, size_t len)
{
    s_parser ps = {text, text + len, text};
    fl_json *v = calloc(1, sizeof *v);
    int rc;
    *out = NULL;
    if (!v)
        return fl_error_set(FL_ENOMEM, "out of memory");
    rc = s_value(&ps, v, 0);
    if (rc == FL_OK) {
        s_ws(&ps);
        if (ps.p != ps.end)
            rc = s_fail(&ps, "text after the value");
    }
    if (rc != FL_OK) {
        fl_admin_json_free(v);
        return rc;
    }
    *out = v;
    return FL_OK;
}

void fl_admin_json_free(fl_json *v)
{
    while (v) {
        fl_json *next = v->next;
        fl_admin_json_free(v->child);
        free(v->string);
        free(v->key);
        free(v);
        v = next;
    }
}

const fl_json *fl_admin_json_get(const fl_json *obj, const char *key)
{
    if (!obj || obj->type != FL_JSON_OBJECT)
        return NULL;
    for (const fl_json *m = obj->child; m; m = m->next)
        if (strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

/* ---------------------------------------------------- reply buffers */

void fl_admin_buf_init(fl_admin_buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
}

void fl_admin_buf_free(fl_admin_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void fl_admin_buf_reset(fl_admin_buf *b)
{
    b->len = 0;
    b->overflow = 0;
    if (b->data)
        b->data[0] = '\0';
}

static void s_append(fl_admin_buf *b, const char *s, size_t n)
{
    if (b->overflow)
        return;
    if (b->len + n + 1 > b->max) {
        b->overflow = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *d;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        d = realloc(b->data, cap);
        if (!d) {
            b->overflow = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void fl_admin_buf_printf(fl_admin_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->overflow = 1; /* callers format short fields; longer text goes through _str */
        return;
    }
    s_append(b, tmp, (size_t)n);
}

void fl_admin_buf_str(fl_admin_buf *b, const char *s)
{
    s_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            s_append(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            s_append(b, esc, 6);
        } else {
            s_append(b, (const char *)p, 1);
        }
    }
    s_append(b, "\"", 1);
}

void fl_admin_buf_num(fl_admin_buf *b, double v)
{
    if (!isfinite(v))
        s_append(b, "null", 4);
    else
        fl_admin_buf_printf(b, "%.17g", v);
}

/* ---------------------------------------------------------- server */

int fl_admin_bind(void **sock, void *ctx, const char *path)
{
    struct sockaddr_un sa;
    char ep[sizeof sa.sun_path + 16];
    int64_t maxmsg = 1 << 20; /* drop absurd frames; 64 KiB..1 MiB get an error reply */
    int zero = 0, rc;
    mode_t old;
    void *s;

    *sock = NULL;
    if (strlen(path) >= sizeof sa.sun_path)
        return fl_error_set(FL_EINVAL, "admin socket path '%s' is %zu bytes, longer than a Unix "
                            "socket allows (%zu): set [coordinator] admin to a shorter path",
                            path, strlen(path), sizeof sa.sun_path - 1);
    s = zmq_socket(ctx, ZMQ_REP);
    if (!s)
        return fl_error_set(FL_EIO, "cannot create the admin socket: %s", zmq_strerror(errno));
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    snprintf(ep, sizeof ep, "ipc://%s", path);
    /* The file's mode is the channel's only protection: create it private
     * (single-threaded here, so the process-wide umask is safe to swap). */
    old = umask(0177);
    rc = zmq_bind(s, ep);
    umask(old);
    if (rc != 0) {
        int e = errno;
        zmq_close(s);
        return fl_error_set(FL_EIO, "cannot bind the admin socket %s: %s (is another coordinator "
                            "using it? set [coordinator] admin to another path)", ep,
                            zmq_strerror(e));
    }
    if (chmod(path, 0600) != 0) {
        int e = errno;
        zmq_close(s);
        return fl_error_set(FL_EIO, "cannot make the admin socket %s private (chmod 600): %s",
                            path, strerror(e));
    }
    *sock = s;
    return FL_OK;
}

static void s_send_error(void *sock, const char *msg)
{
    fl_admin_buf b;
    fl_admin_buf_init(&b, FL_ADMIN_MAX_MSG);
    fl_admin_buf_printf(&b, "{\"ok\":false,\"error\":");
    fl_admin_buf_str(&b, msg);
    fl_admin_buf_printf(&b, "}");
    if (b.overflow) {
        fl_admin_buf_reset(&b);
        fl_admin_buf_printf(&b, "{\"ok\":false,\"error\":\"(error message too long)\"}");
    }
    zmq_send(sock, b.data, b.len, ZMQ_DONTWAIT);
    fl_admin_buf_free(&b);
}

int fl_admin_check_fields(const fl_json *req, const char *const *allowed, size_t n)
{
    for (const fl_json *m = req->child; m; m = m->next) {
        size_t i;
        if (strcmp(m->key, "cmd") == 0)
            continue;
        for (i = 0; i < n; i++)
            if (strcmp(m->key, allowed[i]) == 0)
                break;
        if (i == n)
            return fl_error_set(FL_EINVAL, "unknown field '%s' in a request", m->key);
    }
    return FL_OK;
}

int fl_admin_serve(void *sock, fl_admin_handler handler, void *arg)
{
    zmq_msg_t msg;
    int more = 0, frames = 1;
    size_t more_len = sizeof more;
    fl_json *req = NULL;
    const fl_json *cmd;
    fl_admin_buf reply;
    size_t len;
    int rc;

    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return 0;
    }
    /* REP must answer once per request: drain any extra frames first. */
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_len);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, sock, 0) < 0) {
            zmq_msg_close(&extra);
            break;
        }
        zmq_msg_close(&extra);
        frames++;
        more_len = sizeof more;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &more_len);
    }
    len = zmq_msg_size(&msg);
    if (frames != 1) {
        s_send_error(sock, "a request must be exactly one frame of JSON text");
        goto done;
    }
    if (len > FL_ADMIN_MAX_MSG) {
        char m[160];
        snprintf(m, sizeof m, "request of %zu bytes is larger than the %u allowed", len,
                 FL_ADMIN_MAX_MSG);
        s_send_error(sock, m);
        goto done;
    }
    if (fl_admin_json_parse(&req, zmq_msg_data(&msg), len) != FL_OK) {
        char m[400];
        snprintf(m, sizeof m, "request is not valid JSON: %s", fl_error_last());
        s_send_error(sock, m);
        goto done;
    }
    cmd = fl_admin_json_get(req, "cmd");
    if (req->type != FL_JSON_OBJECT || !cmd || cmd->type != FL_JSON_STRING) {
        s_send_error(sock, "a request must be a JSON object with a string member \"cmd\"");
        goto done;
    }
    fl_admin_buf_init(&reply, FL_ADMIN_MAX_MSG);
    fl_admin_buf_printf(&reply, "{\"ok\":true");
    fl_error_clear();
    rc = handler(arg, cmd->string, req, &reply);
    fl_admin_buf_printf(&reply, "}");
    if (rc != FL_OK)
        s_send_error(sock, fl_error_last());
    else if (reply.overflow)
        s_send_error(sock, "the reply would be larger than 64 KiB: ask for less (e.g. "
                           "'flctl rounds --last 50')");
    else
        zmq_send(sock, reply.data, reply.len, ZMQ_DONTWAIT);
    fl_admin_buf_free(&reply);
done:
    fl_admin_json_free(req);
    zmq_msg_close(&msg);
    return 1;
}

/* ------------------------------------------------------- enrollment */

/* The white space of sscanf's %s in fl_enroll_load (C isspace): the two
 * readers must split a line alike, or a revoke could leave behind a line
 * the coordinator still enrolls at its next start. */
static int s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* The name on an enrollment line, or 0 for a blank or comment line. */
static int s_line_name(const char *line, size_t len, char *name, size_t cap)
{
    size_t i = 0, k = 0;
    while (i < len && s_space(line[i]))
        i++;
    if (i == len || line[i] == '#')
        return 0;
    while (i < len && !s_space(line[i])) {
        if (k + 1 < cap)
            name[k++] = line[i];
        i++;
    }
    name[k] = '\0';
    return 1;
}

int fl_admin_enroll_names(const char *path, char (*names)[FL_ADMIN_NAME_CAP], size_t cap,
                          size_t *n)
{
    unsigned char *data = NULL;
    size_t len = 0, off = 0;
    int rc;
    *n = 0;
    if ((rc = fl_storage_read_all(path, S_MAX_ENROLL_FILE, &data, &len)) != FL_OK)
        return rc;
    while (off < len) {
        const char *line = (const char *)data + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t ll = nl ? (size_t)(nl - line) + 1 : len - off;
        char name[FL_ADMIN_NAME_CAP];
        if (s_line_name(line, ll, name, sizeof name)) {
            if (*n == cap) {
                free(data);
                return fl_error_set(FL_ERANGE, "enrollment file '%s' holds more than %zu nodes",
                                    path, cap);
            }
            snprintf(names[(*n)++], FL_ADMIN_NAME_CAP, "%s", name);
        }
        off += ll;
    }
    free(data);
    return FL_OK;
}

/* Rewrites the file without `drop`'s lines and with `add` appended. */
static int s_rewrite(const char *path, const char *drop, const char *add)
{
    unsigned char *data = NULL;
    size_t len = 0, off = 0;
    struct stat st;
    mode_t mode = 0644;
    fl_admin_buf out;
    int rc;

    if ((rc = fl_storage_read_all(path, S_MAX_ENROLL_FILE, &data, &len)) != FL_OK)
        return rc;
    if (stat(path, &st) == 0)
        mode = st.st_mode & 0777;
    fl_admin_buf_init(&out, S_MAX_ENROLL_FILE + 256);
    while (off < len) {
        const char *line = (const char *)data + off;
        const char *nl = memchr(line, '\n', len - off);
        size_t ll = nl ? (size_t)(nl - line) + 1 : len - off;
        char name[FL_ADMIN_NAME_CAP];
        if (!(drop && s_line_name(line, ll, name, sizeof name) && strcmp(name, drop) == 0)) {
            s_append(&out, line, ll);
            if (!nl)
                s_append(&out, "\n", 1);
        }
        off += ll;
    }
    if (add)
        s_append(&out, add, strlen(add));
    free(data);
    if (out.overflow) {
        fl_admin_buf_free(&out);
        return fl_error_set(FL_ERANGE, "enrollment file '%s' would exceed %u bytes", path,
                            S_MAX_ENROLL_FILE);
    }
    rc = fl_storage_write_atomic(path, out.data ? out.data : "", out.len, mode);
    fl_admin_buf_free(&out);
    return rc;
}

int fl_admin_enroll_file_add(const char *path, const char *name, const char *z85)
{
    char line[256];
    snprintf(line, sizeof line, "%s %s\n", name, z85);
    return s_rewrite(path, NULL, line);
}

int fl_admin_enroll_file_remove(const char *path, const char *name)
{
    return s_rewrite(path, name, NULL);
}

/* ---------------------------------------------------------- history */

static void s_time(fl_admin_buf *b, int64_t secs)
{
    char buf[32];
    time_t t = (time_t)secs;
    struct tm tm;
    if (secs < 0 || !gmtime_r(&t, &tm)) {
        fl_admin_buf_printf(b, "null");
        return;
    }
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fl_admin_buf_str(b, buf);
}

static void s_metric(fl_admin_buf *b, const char *key, double v)
{
    fl_admin_buf_printf(b, ",\"%s\":", key);
    if (isnan(v))
        fl_admin_buf_printf(b, "null");
    else
        fl_admin_buf_num(b, v);
}

typedef struct {
    fl_admin_buf *out;
    uint32_t *count;
} s_history_ctx;

static int s_history_row(void *ctx, const fl_registry_round *row)
{
    s_history_ctx *h = ctx;
    fl_admin_buf *out = h->out;
    fl_admin_buf_printf(out, "%s{\"round\":%lld,\"started_at\":", *h->count ? "," : "",
                        (long long)row->round);
    s_time(out, row->started_at);
    fl_admin_buf_printf(out, ",\"ended_at\":");
    s_time(out, row->ended_at);
    fl_admin_buf_printf(out, ",\"participants\":%lld,\"contributors\":",
                        (long long)row->participants);
    if (row->contributors < 0)
        fl_admin_buf_printf(out, "null");
    else
        fl_admin_buf_num(out, (double)row->contributors);
    fl_admin_buf_printf(out, ",\"outcome\":");
    fl_admin_buf_str(out, row->outcome[0] ? row->outcome : "running");
    fl_admin_buf_printf(out, ",\"reason\":");
    if (row->reason[0])
        fl_admin_buf_str(out, row->reason);
    else
        fl_admin_buf_printf(out, "null");
    fl_admin_buf_printf(out, ",\"metrics\":{\"loss\":");
    if (isnan(row->metrics.loss))
        fl_admin_buf_printf(out, "null");
    else
        fl_admin_buf_num(out, row->metrics.loss);
    s_metric(out, "accuracy", row->metrics.accuracy);
    s_metric(out, "auc", row->metrics.auc);
    s_metric(out, "precision", row->metrics.precision);
    s_metric(out, "recall", row->metrics.recall);
    s_metric(out, "f1", row->metrics.f1);
    fl_admin_buf_printf(out, "},\"node_metrics\":");
    if (row->node_examples == 0) {
        fl_admin_buf_printf(out, "null}");
    } else {
        fl_admin_buf_printf(out, "{\"examples\":%llu,\"loss\":",
                            (unsigned long long)row->node_examples);
        fl_admin_buf_num(out, row->node_metrics.loss);
        s_metric(out, "accuracy", row->node_metrics.accuracy);
        s_metric(out, "precision", row->node_metrics.precision);
        s_metric(out, "recall", row->node_metrics.recall);
        s_metric(out, "f1", row->node_metrics.f1);
        fl_admin_buf_printf(out, "}}");
    }
    (*h->count)++;
    return FL_OK;
}

int fl_admin_history(fl_registry *reg, uint32_t round, uint32_t last, fl_admin_buf *out,
                     uint32_t *count)
{
    s_history_ctx h = {out, count};
    int rc;
    *count = 0;
    if (last == 0 || last > FL_ADMIN_MAX_ROWS)
        last = FL_ADMIN_MAX_ROWS;
    fl_admin_buf_printf(out, ",\"rounds\":[");
    rc = fl_registry_rounds(reg, round, last, s_history_row, &h);
    fl_admin_buf_printf(out, "]");
    return rc;
}
