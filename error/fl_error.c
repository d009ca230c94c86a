/*
 * fl_error: thread-local last-error storage (see fl_error.h).
 */
#include "error/fl_error.h"

#include <stdio.h>
#include <string.h>

#define FL_ERROR_MSG_MAX 1024

static _Thread_local char s_msg[FL_ERROR_MSG_MAX];
static _Thread_local int s_code;

int fl_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s_msg, sizeof s_msg, fmt, ap);
    va_end(ap);
    s_code = code;
    return code;
}

int fl_error_wrap(int code, const char *fmt, ...)
{
    char prev[FL_ERROR_MSG_MAX];
    char ctx[FL_ERROR_MSG_MAX];
    char joined[2 * FL_ERROR_MSG_MAX + 2];
    va_list ap;

    memcpy(prev, s_msg, sizeof prev);
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    if (prev[0] != '\0')
        snprintf(joined, sizeof joined, "%s: %s", ctx, prev);
    else
        snprintf(joined, sizeof joined, "%s", ctx);
    /* Truncate to the message buffer, keeping the context in front. */
    memcpy(s_msg, joined, sizeof s_msg - 1);
    s_msg[sizeof s_msg - 1] = '\0';
    s_code = code;
    return code;
}

const char *fl_error_last(void)
{
    return s_msg;
}

int fl_error_code(void)
{
    return s_code;
}

void fl_error_clear(void)
{
    s_msg[0] = '\0';
    s_code = FL_OK;
}

const char *fl_error_name(int code)
{
    switch (code) {
    case FL_OK: return "FL_OK";
    case FL_EINVAL: return "FL_EINVAL";
    case FL_ENOMEM: return "FL_ENOMEM";
    case FL_EIO: return "FL_EIO";
    case FL_EPARSE: return "FL_EPARSE";
    case FL_EPROTO: return "FL_EPROTO";
    case FL_ECRYPTO: return "FL_ECRYPTO";
    case FL_EBUDGET: return "FL_EBUDGET";
    case FL_ETIMEOUT: return "FL_ETIMEOUT";
    case FL_EAUTH: return "FL_EAUTH";
    case FL_ERANGE: return "FL_ERANGE";
    case FL_ESTATE: return "FL_ESTATE";
    default: return "FL_EUNKNOWN";
    }
}
