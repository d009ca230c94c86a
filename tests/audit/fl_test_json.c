/*
 * fl_test_json: a small strict JSON reader for tests (see fl_test_json.h).
 * Recursive descent over RFC 8259's grammar.
 */
#include "tests/audit/fl_test_json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    int depth;
} s_in;

static void s_ws(s_in *in)
{
    while (*in->s == ' ' || *in->s == '\t' || *in->s == '\n' || *in->s == '\r')
        in->s++;
}

static fl_test_json *s_value(s_in *in);

static char *s_string(s_in *in)
{
    size_t cap = 16, n = 0;
    char *out;
    if (*in->s != '"')
        return NULL;
    in->s++;
    out = malloc(cap);
    if (!out)
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*in->s;
        if (c == '"') {
            in->s++;
            break;
        }
        if (c < 0x20) /* also the terminating NUL: unterminated string */
            goto fail;
        if (c == '\\') {
            in->s++;
            switch (*in->s) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case '/': c = '/'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                for (int k = 1; k <= 4; k++) {
                    char h = in->s[k];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
                          (h >= 'A' && h <= 'F')))
                        goto fail;
                }
                in->s += 4;
                c = '?';
                break;
            default: goto fail;
            }
        }
        if (n + 2 > cap) {
            char *g = realloc(out, cap *= 2);
            if (!g)
                goto fail;
            out = g;
        }
        out[n++] = (char)c;
        in->s++;
    }
    out[n] = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

static int s_number(s_in *in, double *out)
{
    const char *p = in->s;
    char *end;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9')
            p++;
    else
        return -1;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    *out = strtod(in->s, &end);
    if (end != p)
        return -1;
    in->s = p;
    return 0;
}

static int s_push(fl_test_json *v, fl_test_json *item, char *key)
{
    fl_test_json **g = realloc(v->items, (v->n + 1) * sizeof *g);
    if (!g)
        return -1;
    v->items = g;
    if (v->type == FL_TEST_JSON_OBJECT) {
        char **k = realloc(v->keys, (v->n + 1) * sizeof *k);
        if (!k)
            return -1;
        v->keys = k;
        v->keys[v->n] = key;
    }
    v->items[v->n++] = item;
    return 0;
}

static fl_test_json *s_value(s_in *in)
{
    fl_test_json *v = calloc(1, sizeof *v);
    if (!v || ++in->depth > 64)
        goto fail;
    s_ws(in);
    if (*in->s == '{' || *in->s == '[') {
        int obj = *in->s == '{';
        char close = obj ? '}' : ']';
        v->type = obj ? FL_TEST_JSON_OBJECT : FL_TEST_JSON_ARRAY;
        in->s++;
        s_ws(in);
        if (*in->s == close) {
            in->s++;
        } else {
            for (;;) {
                char *key = NULL;
                fl_test_json *item;
                s_ws(in);
                if (obj) {
                    if (!(key = s_string(in)))
                        goto fail;
                    s_ws(in);
                    if (*in->s != ':') {
                        free(key);
                        goto fail;
                    }
                    in->s++;
                }
                item = s_value(in);
                if (!item || s_push(v, item, key) != 0) {
                    free(key);
                    fl_test_json_free(item);
                    goto fail;
                }
                s_ws(in);
                if (*in->s == ',') {
                    in->s++;
                    continue;
                }
                if (*in->s == close) {
                    in->s++;
                    break;
                }
                goto fail;
            }
        }
    } else if (*in->s == '"') {
        v->type = FL_TEST_JSON_STRING;
        if (!(v->string = s_string(in)))
            goto fail;
    } else if (strncmp(in->s, "true", 4) == 0 || strncmp(in->s, "false", 5) == 0) {
        v->type = FL_TEST_JSON_BOOL;
        v->boolean = in->s[0] == 't';
        in->s += v->boolean ? 4 : 5;
    } else if (strncmp(in->s, "null", 4) == 0) {
        v->type = FL_TEST_JSON_NULL;
        in->s += 4;
    } else {
        v->type = FL_TEST_JSON_NUMBER;
        if (s_number(in, &v->number) != 0)
            goto fail;
    }
    in->depth--;
    return v;
fail:
    fl_test_json_free(v);
    return NULL;
}

fl_test_json *fl_test_json_parse(const char *text)
{
    s_in in = {text, 0};
    fl_test_json *v = s_value(&in);
    if (!v)
        return NULL;
    s_ws(&in);
    if (*in.s != '\0') {
        fl_test_json_free(v);
        return NULL;
    }
    return v;
}

const fl_test_json *fl_test_json_get(const fl_test_json *v, const char *key)
{
    if (!v || v->type != FL_TEST_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0)
            return v->items[i];
    return NULL;
}

const fl_test_json *fl_test_json_at(const fl_test_json *v, size_t i)
{
    if (!v || v->type != FL_TEST_JSON_ARRAY || i >= v->n)
        return NULL;
    return v->items[i];
}

void fl_test_json_free(fl_test_json *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        fl_test_json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}
