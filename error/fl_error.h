/*
 * fl_error: the project-wide error codes and the thread-local last-error
 * message.  Every fallible public function returns FL_OK (0) or a negative
 * fl_err code and, on failure, leaves a message for a person in
 * fl_error_last(): what failed, on which input, and what to do.
 */
#ifndef FL_ERROR_H
#define FL_ERROR_H

#include <stdarg.h>

#if defined(__GNUC__)
#define FL_NODISCARD __attribute__((warn_unused_result))
#define FL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FL_NODISCARD
#define FL_PRINTF(a, b)
#endif

typedef enum {
    FL_OK = 0,
    FL_EINVAL = -1,   /* invalid argument or configuration value */
    FL_ENOMEM = -2,   /* allocation failed */
    FL_EIO = -3,      /* file or socket I/O failed */
    FL_EPARSE = -4,   /* malformed file (CSV, schema, config, key) */
    FL_EPROTO = -5,   /* malformed or out-of-order protocol message */
    FL_ECRYPTO = -6,  /* cryptographic failure (keys, CSPRNG, CURVE) */
    FL_EBUDGET = -7,  /* the privacy budget would be exceeded */
    FL_ETIMEOUT = -8, /* a peer did not answer in time */
    FL_EAUTH = -9,    /* a peer is not enrolled or was refused */
    FL_ERANGE = -10,  /* a numeric value is outside its allowed range */
    FL_ESTATE = -11   /* operation not allowed in the current state */
} fl_err;

/** Records `code` and a printf-style message as this thread's last error.
 *  Returns `code` so callers can write `return fl_error_set(...)`. */
int fl_error_set(int code, const char *fmt, ...) FL_PRINTF(2, 3);

/** Like fl_error_set, but prefixes the message with `context: `, keeping the
 *  current message after it (used to add which file or peer was involved). */
int fl_error_wrap(int code, const char *fmt, ...) FL_PRINTF(2, 3);

/** This thread's last error message ("" if none). Valid until the next
 *  fl_error_set or fl_error_clear on this thread. */
const char *fl_error_last(void);

/** This thread's last error code (FL_OK if none). */
int fl_error_code(void);

/** Clears this thread's last error. */
void fl_error_clear(void);

/** A short stable name for an error code ("FL_EPROTO"). */
const char *fl_error_name(int code);

#endif
