/*
 * fl_log: timestamped, levelled log lines on stderr (see fl_log.h).
 */
#include "log/fl_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char s_program[64] = "fl";
static fl_log_level s_min = FL_LOG_INFO;
static FILE *s_json;

void fl_log_json_close(void)
{
    if (s_json) {
        fclose(s_json);
        s_json = NULL;
    }
}

int fl_log_json_open(const char *path)
{
    int fd;
    fl_log_json_close();
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0 || !(s_json = fdopen(fd, "a"))) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return fl_error_set(FL_EIO, "cannot open JSON log file '%s': %s", path, strerror(e));
    }
    return FL_OK;
}

/* JSON string body: escapes quotes, backslashes and control characters. */
static void s_json_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

void fl_log_init(const char *program, fl_log_level min_level)
{
    if (program) {
        strncpy(s_program, program, sizeof s_program - 1);
        s_program[sizeof s_program - 1] = '\0';
    }
    s_min = min_level;
}

void fl_log(fl_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    char stamp[32];
    char line[2048];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level < s_min)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line so lines from concurrent processes do not mix. */
    fprintf(stderr, "%s.%03ldZ %s %s: %s\n", stamp, ts.tv_nsec / 1000000L,
            names[level], s_program, line);
    if (s_json) {
        static const char *lower[] = {"debug", "info", "warn", "error"};
        fprintf(s_json, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"program\":\"", stamp,
                ts.tv_nsec / 1000000L, lower[level]);
        s_json_str(s_json, s_program);
        fputs("\",\"message\":\"", s_json);
        s_json_str(s_json, line);
        fputs("\"}\n", s_json);
        fflush(s_json);
    }
}
