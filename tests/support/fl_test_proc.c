/*
 * fl_test_proc: processes and files for integration tests (see
 * fl_test_proc.h). Every wait is bounded.
 */
#include "tests/support/fl_test_proc.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double fl_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void fl_test_write(const char *dir, const char *name, const char *text)
{
    char p[512];
    FILE *f;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "w");
    cr_assert_not_null(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

long fl_test_read(const char *dir, const char *name, char *buf, size_t cap)
{
    char p[512];
    FILE *f;
    size_t n;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    f = fopen(p, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return (long)n;
}

pid_t fl_test_spawn(const char *dir, const char *log, char *const argv[])
{
    char logp[512];
    pid_t pid;
    snprintf(logp, sizeof logp, "%s/%s", dir, log);
    pid = fork();
    cr_assert_neq(pid, -1, "fork failed");
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int fl_test_wait(pid_t pid, double seconds)
{
    double t0 = fl_test_now();
    int status = 0;
    while (fl_test_now() - t0 < seconds) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

int fl_test_alive(pid_t pid)
{
    return waitpid(pid, NULL, WNOHANG) == 0;
}

int fl_test_wait_file(const char *dir, const char *name, char *buf, size_t cap,
                      double seconds)
{
    double t0 = fl_test_now();
    while (fl_test_now() - t0 < seconds) {
        if (fl_test_read(dir, name, buf, cap) > 0) {
            buf[strcspn(buf, "\n")] = '\0';
            if (buf[0])
                return 0;
        }
        usleep(20000);
    }
    return -1;
}
