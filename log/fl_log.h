/*
 * fl_log: readable log lines on stderr, "2026-11-23T10:00:00Z INFO  node: ...".
 * Never pass patient data, per-example values or individual updates here.
 */
#ifndef FL_LOG_H
#define FL_LOG_H

#include "error/fl_error.h"

typedef enum { FL_LOG_DEBUG = 0, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR } fl_log_level;

/** Sets the program name shown in every line and the minimum level. */
void fl_log_init(const char *program, fl_log_level min_level);

/** Also appends every line, as one JSON object per line ({"time", "level",
 *  "program", "message"}), to `path` (created 0640), replacing any file
 *  opened before. FL_EIO if the file cannot be opened. */
FL_NODISCARD int fl_log_json_open(const char *path);

/** Stops writing the JSON-lines file. */
void fl_log_json_close(void);

/** Writes one line at `level` if it is at or above the minimum level. */
void fl_log(fl_log_level level, const char *fmt, ...) FL_PRINTF(2, 3);

#define fl_log_debug(...) fl_log(FL_LOG_DEBUG, __VA_ARGS__)
#define fl_log_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_log_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_log_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

#endif
