/*
 * fuzz_admin_json: the coordinator's admin channel requests
 * (fl_admin_json_parse: strict RFC 8259 JSON, UTF-8, depth and duplicate
 * key checks), then the lookups and field checks every command handler
 * makes on a request that fl_admin_serve let through (an object with a
 * string "cmd": fl_admin_json_get, fl_admin_check_fields),
 * and the reply writer on the strings it got (fl_admin_buf_str, which must
 * escape anything a request can contain: what it writes parses back to
 * the same string).
 */
#include <stdlib.h>
#include <string.h>

#include "coordinator/fl_admin.h"
#include "fuzz/fuzz_support.h"

/* A string the parser accepted, written back by the reply writer, must
 * parse again to the same string: replies can carry any request text. */
static void s_roundtrip(const char *str)
{
    fl_admin_buf b;
    fl_json *v = NULL;

    fl_admin_buf_init(&b, FL_ADMIN_MAX_MSG);
    fl_admin_buf_str(&b, str);
    if (!b.overflow) {
        if (fl_admin_json_parse(&v, b.data, b.len) != FL_OK || v->type != FL_JSON_STRING ||
            strcmp(v->string, str) != 0)
            abort();
        fl_admin_json_free(v);
    }
    fl_admin_buf_free(&b);
}

static void s_walk(const fl_json *v, fl_admin_buf *out, int depth)
{
    if (depth > 64)
        abort(); /* the parser bounds depth at 16 */
    for (; v; v = v->next) {
        if (v->key) {
            fl_admin_buf_str(out, v->key);
            s_roundtrip(v->key);
        }
        if (v->type == FL_JSON_STRING) {
            if (!v->string)
                abort();
            fl_admin_buf_str(out, v->string);
            s_roundtrip(v->string);
        } else if (v->type == FL_JSON_NUMBER) {
            fl_admin_buf_num(out, v->number);
        }
        s_walk(v->child, out, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = {"name", "key", "round", "last", "json"};
    fl_json *req = NULL;
    const fl_json *cmd;
    fl_admin_buf out;

    fuzz_init();
    if (fl_admin_json_parse(&req, (const char *)data, size) != FL_OK) {
        if (req || !fl_error_last()[0])
            abort();
        return 0;
    }
    /* What fl_admin_serve checks before a handler sees the request. */
    cmd = fl_admin_json_get(req, "cmd");
    (void)fl_admin_json_get(req, "name");
    if (req->type == FL_JSON_OBJECT && cmd && cmd->type == FL_JSON_STRING &&
        fl_admin_check_fields(req, allowed, sizeof allowed / sizeof allowed[0]) != FL_OK &&
        !fl_error_last()[0])
        abort();
    fl_admin_buf_init(&out, FL_ADMIN_MAX_MSG);
    s_walk(req, &out, 0);
    if (out.len > FL_ADMIN_MAX_MSG)
        abort();
    fl_admin_buf_free(&out);
    fl_admin_json_free(req);
    return 0;
}
