/*
 * fl_test_proc: real processes for integration tests — write a file, start
 * a program with its output in a log file, wait for it with a time bound.
 */
#ifndef FL_TEST_PROC_H
#define FL_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

/** Writes `text` to dir/name (fails the test if it cannot). */
void fl_test_write(const char *dir, const char *name, const char *text);

/** Reads dir/name into buf (NUL-terminated, truncated to cap-1); returns the
 *  length, or -1 if the file cannot be read. */
long fl_test_read(const char *dir, const char *name, char *buf, size_t cap);

/** Starts `argv[0]` with arguments argv (NULL-terminated), stdout and stderr
 *  to dir/log. Returns the pid. */
pid_t fl_test_spawn(const char *dir, const char *log, char *const argv[]);

/** Waits at most `seconds` for pid to exit. Returns its exit status (0..255),
 *  128+signal if killed, or -1 on timeout (the process is then SIGKILLed). */
int fl_test_wait(pid_t pid, double seconds);

/** True while pid has not exited (reaps it if it has). */
int fl_test_alive(pid_t pid);

/** Monotonic time in seconds. */
double fl_test_now(void);

/** Waits at most `seconds` for dir/name to exist and be non-empty; copies its
 *  first line (without newline) to buf. Returns 0, or -1 on timeout. */
int fl_test_wait_file(const char *dir, const char *name, char *buf, size_t cap,
                      double seconds);

#endif
