/*
 * fl_config: table-driven INI parsing on top of inih (see fl_config.h).
 */
#include "config/fl_config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    FILE *file;
    int line; /* line being parsed: Debian's inih passes no line numbers */
    const char *path;
    char dir[FL_CONFIG_STR_MAX];
    fl_config_field *fields;
    size_t n;
    int failed;
} s_state;

static int s_fail(s_state *st, int line, const char *fmt, ...) FL_PRINTF(3, 4);

static int s_fail(s_state *st, int line, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fl_error_set(FL_EPARSE, "%s:%d: %s", st->path, line, what);
    st->failed = 1;
    return 0; /* stop inih */
}

static char *s_reader(char *str, int num, void *stream)
{
    s_state *st = stream;
    char *r = fgets(str, num, st->file);
    if (r)
        st->line++;
    return r;
}

static int s_handler(void *user, const char *section, const char *key, const char *value)
{
    s_state *st = user;
    int section_known = 0, line = st->line;

    if (st->failed)
        return 0;
    for (size_t i = 0; i < st->n; i++) {
        fl_config_field *f = &st->fields[i];
        char *end = NULL;
        if (strcmp(f->section, section) != 0)
            continue;
        section_known = 1;
        if (strcmp(f->key, key) != 0)
            continue;
        if (f->seen)
            return s_fail(st, line, "[%s] %s is set twice", section, key);
        f->seen = 1;
        switch (f->type) {
        case FL_CONFIG_STRING:
        case FL_CONFIG_PATH:
            if (value[0] == '\0')
                return s_fail(st, line, "[%s] %s is empty", section, key);
            if (f->type == FL_CONFIG_PATH && value[0] != '/' && st->dir[0] != '\0') {
                if ((size_t)snprintf(f->target, FL_CONFIG_STR_MAX, "%s/%s", st->dir, value) >=
                    FL_CONFIG_STR_MAX)
                    return s_fail(st, line, "[%s] %s: path too long", section, key);
            } else if ((size_t)snprintf(f->target, FL_CONFIG_STR_MAX, "%s", value) >=
                       FL_CONFIG_STR_MAX) {
                return s_fail(st, line, "[%s] %s: value too long", section, key);
            }
            return 1;
        case FL_CONFIG_INT: {
            long long v;
            errno = 0;
            v = strtoll(value, &end, 10);
            if (errno || end == value || *end != '\0')
                return s_fail(st, line, "[%s] %s = '%s' is not an integer", section, key, value);
            if ((double)v < f->min || (double)v > f->max) {
                char range[128];
                snprintf(range, sizeof range, "'%s' is outside %.17g..%.17g", value, f->min,
                         f->max);
                return s_fail(st, line, "[%s] %s = %s", section, key, range);
            }
            *(int64_t *)f->target = v;
            return 1;
        }
        case FL_CONFIG_DOUBLE: {
            double v;
            errno = 0;
            v = strtod(value, &end);
            if (errno || end == value || *end != '\0' || !isfinite(v))
                return s_fail(st, line, "[%s] %s = '%s' is not a finite number", section, key,
                              value);
            if (v < f->min || v > f->max) {
                char range[128];
                snprintf(range, sizeof range, "'%s' is outside %g..%g", value, f->min, f->max);
                return s_fail(st, line, "[%s] %s = %s", section, key, range);
            }
            *(double *)f->target = v;
            return 1;
        }
        }
    }
    if (!section_known)
        return s_fail(st, line, "unknown section [%s] (key '%s')", section, key);
    return s_fail(st, line, "unknown key '%s' in section [%s]", key, section);
}

int fl_config_load(const char *path, fl_config_field *fields, size_t n)
{
    s_state st = {.path = path, .fields = fields, .n = n};
    const char *slash = strrchr(path, '/');
    int rc;

    if (slash && (size_t)(slash - path) < sizeof st.dir) {
        memcpy(st.dir, path, (size_t)(slash - path));
        st.dir[slash - path] = '\0';
        if (st.dir[0] == '\0')
            strcpy(st.dir, "/");
    }
    for (size_t i = 0; i < n; i++)
        fields[i].seen = 0;
    st.file = fopen(path, "r");
    if (!st.file)
        return fl_error_set(FL_EIO, "cannot open configuration file '%s': %s", path,
                            strerror(errno));
    rc = ini_parse_stream(s_reader, &st, s_handler, &st);
    fclose(st.file);
    if (rc == -2)
        return fl_error_set(FL_ENOMEM, "out of memory reading '%s'", path);
    if (st.failed)
        return FL_EPARSE;
    if (rc > 0)
        return fl_error_set(FL_EPARSE, "%s:%d: expected '[section]' or 'key = value'", path, rc);
    for (size_t i = 0; i < n; i++)
        if (fields[i].required && !fields[i].seen)
            return fl_error_set(FL_EPARSE, "%s: [%s] %s is required but missing", path,
                                fields[i].section, fields[i].key);
    return FL_OK;
}
