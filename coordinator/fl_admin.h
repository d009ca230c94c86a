/*
 * fl_admin: the coordinator's admin channel, shared by flcoord (the server
 * side) and flctl (the operator's client).
 *
 * Transport: one ZeroMQ REP socket bound on ipc://PATH (by default
 * <state_dir or config dir>/admin.sock). Its protection is the file system:
 * the socket file is created with umask 0177 and chmod 0600 right after
 * bind, so only the coordinator's own user can connect. There is no other
 * authentication; keep the socket's folder private (0700) as well.
 *
 * Wire format: a request and its reply are each one frame of JSON text of at
 * most FL_ADMIN_MAX_MSG bytes. A request is one object with a string "cmd"
 * and, per command, a few string or non-negative integer fields; a reply is
 * one object with "ok": true and the command's fields, or "ok": false and
 * "error": a message that says what was wrong and what to do. Requests are
 * parsed strictly (fl_admin_json_parse): valid UTF-8, no trailing bytes, no
 * duplicate keys, bounded depth; anything else gets an error reply and the
 * coordinator carries on.
 *
 * Also here, because both sides of a command need them: the enrollment file
 * rewrite (atomic, through fl_storage) and the round history read from the
 * coordinator's registry (SQLite, read-only).
 */
#ifndef FL_ADMIN_H
#define FL_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/fl_registry.h"
#include "error/fl_error.h"

#define FL_ADMIN_MAX_MSG 65536   /* bytes of one request or reply */
#define FL_ADMIN_MAX_ROWS 100    /* round records in one reply: keeps it under 64 KiB */
#define FL_ADMIN_SOCKET_NAME "admin.sock"
#define FL_ADMIN_NAME_CAP 65     /* a node name (FL_WIRE_MAX_NAME) and its NUL */

/* ------------------------------------------------------------ JSON */

typedef enum {
    FL_JSON_NULL,
    FL_JSON_BOOL,
    FL_JSON_NUMBER,
    FL_JSON_STRING,
    FL_JSON_ARRAY,
    FL_JSON_OBJECT
} fl_json_type;

/** One parsed JSON value. Arrays and objects hold their elements as a list
 *  (child, then next); an object's members carry their key. */
typedef struct fl_json {
    fl_json_type type;
    int boolean;
    double number;
    char *string; /* NUL-terminated; strings with NUL bytes are refused */
    char *key;    /* member name, inside an object */
    struct fl_json *child, *next;
} fl_json;

/** Parses exactly `len` bytes of JSON text (RFC 8259, valid UTF-8, depth at
 *  most 16, no duplicate keys, nothing after the value). *out is freed with
 *  fl_admin_json_free. FL_EPARSE with the byte offset and what was expected. */
FL_NODISCARD int fl_admin_json_parse(fl_json **out, const char *text, size_t len);

/** Frees a parsed value. NULL is a no-op. */
void fl_admin_json_free(fl_json *v);

/** The member `key` of object `obj`, or NULL (also when obj is not an object). */
const fl_json *fl_admin_json_get(const fl_json *obj, const char *key);

/* ---------------------------------------------------- reply buffers */

/** Growable text buffer bounded by `max` bytes; once full, `overflow` is set
 *  and further appends are dropped (the caller then sends an error). */
typedef struct {
    char *data;
    size_t len, cap, max;
    int overflow;
} fl_admin_buf;

void fl_admin_buf_init(fl_admin_buf *b, size_t max);
void fl_admin_buf_free(fl_admin_buf *b);
void fl_admin_buf_reset(fl_admin_buf *b);
void fl_admin_buf_printf(fl_admin_buf *b, const char *fmt, ...) FL_PRINTF(2, 3);
/** Appends `s` as a JSON string (quoted and escaped). */
void fl_admin_buf_str(fl_admin_buf *b, const char *s);
/** Appends `v` as a JSON number, or null if it is not finite. */
void fl_admin_buf_num(fl_admin_buf *b, double v);

/* ---------------------------------------------------------- server */

/** Creates a REP socket on ipc://`path` in `ctx`: the file is created with
 *  mode 0600 (umask around the bind, chmod after it). FL_EINVAL if the path
 *  is too long for a Unix socket, FL_EIO if it cannot be bound. */
FL_NODISCARD int fl_admin_bind(void **sock, void *ctx, const char *path);

/** Handles one validated request: `cmd` is its "cmd" string, `req` the whole
 *  object. Appends the reply's fields after "ok":true (starting with a comma)
 *  and returns FL_OK, or returns an error code with the message in
 *  fl_error_last(), which becomes the "error" of an "ok":false reply. */
typedef int (*fl_admin_handler)(void *arg, const char *cmd, const fl_json *req,
                                fl_admin_buf *reply);

/** Receives one request without blocking, if there is one, validates it,
 *  calls `handler` and sends the reply. Returns 1 if a request was served,
 *  0 if none was waiting. Never fails: every bad request gets an error reply. */
int fl_admin_serve(void *sock, fl_admin_handler handler, void *arg);

/** Checks that `req` has no member besides "cmd" and the `n` names in `allowed`.
 *  FL_EINVAL naming the unknown member. */
FL_NODISCARD int fl_admin_check_fields(const fl_json *req, const char *const *allowed, size_t n);

/* ------------------------------------------------------- enrollment */

/** The node names in enrollment file `path` (the format of fl_enroll.h), in
 *  file order, up to `cap`. FL_EIO if unreadable, FL_ERANGE if more than cap. */
FL_NODISCARD int fl_admin_enroll_names(const char *path, char (*names)[FL_ADMIN_NAME_CAP], size_t cap,
                                       size_t *n);

/** Rewrites enrollment file `path` atomically with the line "NAME KEY" added
 *  (at the end). Comments and other lines are kept; the file keeps its mode. */
FL_NODISCARD int fl_admin_enroll_file_add(const char *path, const char *name, const char *z85);

/** Rewrites enrollment file `path` atomically without NAME's line(s). */
FL_NODISCARD int fl_admin_enroll_file_remove(const char *path, const char *name);

/* ---------------------------------------------------------- history */

/** Appends "rounds":[...] with the round records of registry `reg`: those
 *  of round `round` if round > 0,
 *  otherwise the `last` most recent (at most FL_ADMIN_MAX_ROWS), oldest
 *  first; *count receives how many were written. Each record: round,
 *  started_at, ended_at (UTC, ISO 8601), participants, contributors,
 *  outcome, reason, metrics (the coordinator's public test set) and
 *  node_metrics (the nodes' held-out evaluation of the round's model, or
 *  null). FL_EIO if the registry cannot be read. */
FL_NODISCARD int fl_admin_history(fl_registry *reg, uint32_t round, uint32_t last,
                                  fl_admin_buf *out, uint32_t *count);

#endif
