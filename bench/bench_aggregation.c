/*
 * bench_aggregation: the coordinator's cost per update, and that its peak
 * memory does not grow with the number of nodes.
 *
 * For n = 10 and n = 50 nodes and 1,000,000 parameters, each configuration
 * runs in a fresh child process (so getrusage's peak RSS is its own):
 *   fedavg  - n updates streamed into fl_fedavg's running sum (secure
 *             aggregation off), then the average;
 *   baseline- the memory of one model-sized float vector and the time of one
 *             pass reading it (memcpy), measured in the same child;
 * and prints time per update, peak RSS, and the ratio of peak RSS at n = 50
 * to n = 10 (target: ~1, i.e. independent of n). Secure aggregation's
 * server cost is measured by bench_secagg. Never fails on timing.
 *
 * Usage: bench_aggregation [dim=1000000]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/fl_fedavg.h"

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double per_update_ms;
    double copy_ms;
    long peak_kib;
} s_result;

/* One configuration in this (child) process. The update buffer plays the
 * receive buffer: it is refilled for every node, as a decoded message is. */
static int s_run(size_t dim, unsigned n, s_result *r)
{
    fl_fedavg *a = NULL;
    float *upd = malloc(dim * sizeof *upd), *out = malloc(dim * sizeof *out);
    struct rusage ru;
    double t0, t_add = 0.0;

    if (!upd || !out || fl_fedavg_new(&a, dim) != FL_OK)
        return 1;
    for (unsigned k = 0; k < n; k++) {
        for (size_t i = 0; i < dim; i++) /* a new update arrives */
            upd[i] = (float)((k + 1) * 1e-3 + (double)(i % 97) * 1e-4);
        t0 = s_now();
        if (fl_fedavg_add(a, upd, 100 + k) != FL_OK)
            return 1;
        t_add += s_now() - t0;
    }
    if (fl_fedavg_result(a, out) != FL_OK)
        return 1;
    t0 = s_now();
    memcpy(upd, out, dim * sizeof *upd);
    r->copy_ms = (s_now() - t0) * 1e3;
    r->per_update_ms = t_add * 1e3 / n;
    getrusage(RUSAGE_SELF, &ru);
    r->peak_kib = ru.ru_maxrss;
    fl_fedavg_free(a);
    free(upd);
    free(out);
    return 0;
}

static int s_child(size_t dim, unsigned n, s_result *r)
{
    int fds[2], status = 0;
    pid_t pid;
    if (pipe(fds) != 0)
        return 1;
    pid = fork();
    if (pid == 0) {
        s_result mine;
        close(fds[0]);
        if (s_run(dim, n, &mine) != 0)
            _exit(1);
        if (write(fds[1], &mine, sizeof mine) != (ssize_t)sizeof mine)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], r, sizeof *r) != (ssize_t)sizeof *r)
        status = 1;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return status;
}

int main(int argc, char **argv)
{
    size_t dim = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 1000000;
    const unsigned ns[] = {10, 50};
    s_result r[2];

    printf("coordinator aggregation (FedAvg running sum), %zu parameters\n", dim);
    printf("%6s %16s %14s %16s\n", "nodes", "ms per update", "peak RSS MiB",
           "memcpy of model ms");
    for (int i = 0; i < 2; i++) {
        if (s_child(dim, ns[i], &r[i]) != 0) {
            fprintf(stderr, "bench_aggregation: run with %u nodes failed\n", ns[i]);
            return 1;
        }
        printf("%6u %16.3f %14.1f %16.3f\n", ns[i], r[i].per_update_ms,
               (double)r[i].peak_kib / 1024.0, r[i].copy_ms);
    }
    printf("peak RSS ratio n=50 / n=10: %.3f (1.0 = independent of the number of nodes)\n",
           (double)r[1].peak_kib / (double)r[0].peak_kib);
    printf("time per update / memcpy of one model: %.2f (n=10), %.2f (n=50)\n",
           r[0].per_update_ms / r[0].copy_ms, r[1].per_update_ms / r[1].copy_ms);
    return 0;
}
