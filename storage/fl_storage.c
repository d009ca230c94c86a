/*
 * fl_storage: atomic file writes and bounded reads (see fl_storage.h).
 */
#include "storage/fl_storage.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int s_fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    int fd, rc = FL_OK;
    if (!copy)
        return fl_error_set(FL_ENOMEM, "out of memory");
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        if (fsync(fd) != 0)
            rc = fl_error_set(FL_EIO, "cannot fsync the directory of '%s': %s", path,
                              strerror(errno));
        close(fd);
    }
    free(copy);
    return rc;
}

int fl_storage_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[4096];
    const unsigned char *p = data;
    int fd = -1, rc = FL_OK;
    size_t done = 0;

    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fl_error_set(FL_EINVAL, "path too long: '%s'", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        rc = fl_error_set(FL_EIO, "cannot create '%s': %s (check that the directory exists and is writable)",
                          tmp, strerror(errno));
        goto done;
    }
    /* open() honours the umask; set the exact mode asked for. */
    if (fchmod(fd, mode) != 0) {
        rc = fl_error_set(FL_EIO, "cannot set mode %o on '%s': %s", (unsigned)mode, tmp,
                          strerror(errno));
        goto done;
    }
    while (done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = fl_error_set(FL_EIO, "cannot write '%s': %s", tmp, strerror(errno));
            goto done;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        rc = fl_error_set(FL_EIO, "cannot fsync '%s': %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = fl_error_set(FL_EIO, "cannot close '%s': %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = fl_error_set(FL_EIO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto done;
    }
    rc = s_fsync_dir_of(path);
done:
    if (fd >= 0)
        close(fd);
    if (rc != FL_OK)
        unlink(tmp);
    return rc;
}

int fl_storage_read_all(const char *path, size_t max_len, unsigned char **data, size_t *len)
{
    FILE *f = NULL;
    unsigned char *buf = NULL;
    struct stat st;
    int rc = FL_OK;
    size_t n;

    *data = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (!f)
        return fl_error_set(FL_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = fl_error_set(FL_EIO, "'%s' is not a regular file", path);
        goto done;
    }
    if ((unsigned long long)st.st_size > max_len) {
        rc = fl_error_set(FL_ERANGE, "'%s' is %lld bytes, more than the %zu allowed", path,
                          (long long)st.st_size, max_len);
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = fl_error_set(FL_ENOMEM, "out of memory reading '%s'", path);
        goto done;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    if (n != (size_t)st.st_size) {
        rc = fl_error_set(FL_EIO, "short read on '%s'", path);
        goto done;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return rc;
}

int fl_storage_mkdir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return FL_OK;
    return fl_error_set(FL_EIO, "cannot create directory '%s': %s", path, strerror(errno));
}
