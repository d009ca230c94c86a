/*
 * fl_log: timestamped, levelled log lines on stderr (see fl_log.h).
 */
#include "log/fl_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static char s_program[64] = "fl";
static fl_log_level s_min = FL_LOG_INFO;

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
}
