/*
 * fl_test_dir: scratch directories for tests (see fl_test_dir.h).
 */
#include "tests/support/fl_test_dir.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fl_test_dir_new(char *buf, size_t cap, const char *tag)
{
    int n = snprintf(buf, cap, "/tmp/fl-%s-", tag);
    cr_assert(n > 0 && (size_t)n + 7 <= cap, "scratch path for '%s' does not fit", tag);
    /* mkdtemp's template: six placeholder characters at the end. */
    memset(buf + n, 'X', 6);
    buf[n + 6] = '\0';
    cr_assert_not_null(mkdtemp(buf), "cannot create a scratch directory in /tmp");
}

void fl_test_dir_remove(const char *dir)
{
    DIR *d;
    struct dirent *e;
    char p[4096];

    if (!dir || !dir[0])
        return;
    d = opendir(dir);
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            fl_test_dir_remove(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}
