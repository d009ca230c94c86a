/*
 * replay_main: runs a fuzz target over a committed corpus without
 * libFuzzer, so every corpus replays as an ordinary ctest (normal and
 * sanitizer builds, any compiler).
 *
 * usage: replay_<target> PATH...   (each PATH a file or a directory of files)
 *
 * Files are run in name order, at most S_MAX_FILES per directory and
 * S_MAX_BYTES each (larger files are a mistake in the corpus and fail the
 * run). Exits 0 after running at least one input; a crash or sanitizer
 * report ends the process as it would under libFuzzer. With FL_FUZZ_VERBOSE
 * set in the environment, prints each file with the last error message it
 * left (to see which seeds a decoder accepts).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error/fl_error.h"
#include "fuzz/fuzz_support.h"

#define S_MAX_FILES 20000
#define S_MAX_BYTES (8u * 1024u * 1024u)

static int s_run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long size;
    int rc = 1;

    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: cannot size %s\n", path);
        goto done;
    }
    if ((unsigned long)size > S_MAX_BYTES) {
        fprintf(stderr, "replay: %s is %ld bytes, more than the %u a corpus file may hold\n",
                path, size, S_MAX_BYTES);
        goto done;
    }
    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    buf = malloc(size ? (size_t)size : 1);
    if (!buf || (size && fread(buf, 1, (size_t)size, f) != (size_t)size)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        goto done;
    }
    fl_error_clear();
    LLVMFuzzerTestOneInput(buf, (size_t)size);
    if (getenv("FL_FUZZ_VERBOSE"))
        printf("%s: %s\n", path, fl_error_last()[0] ? fl_error_last() : "(no error)");
    (*count)++;
    rc = 0;
done:
    free(buf);
    fclose(f);
    return rc;
}

static int s_run_path(const char *path, size_t *count)
{
    struct stat st;
    struct dirent **names = NULL;
    int n, rc = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s does not exist\n", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode))
        return s_run_file(path, count);
    n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list %s\n", path);
        return 1;
    }
    if (n > S_MAX_FILES + 2) {
        fprintf(stderr, "replay: %s holds %d entries, more than %d\n", path, n, S_MAX_FILES);
        rc = 1;
    }
    for (int i = 0; i < n; i++) {
        char full[4096];
        struct stat fs;
        if (rc == 0 && names[i]->d_name[0] != '.' &&
            (size_t)snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name) < sizeof full &&
            stat(full, &fs) == 0 && S_ISREG(fs.st_mode))
            rc = s_run_file(full, count);
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE-OR-DIRECTORY...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (s_run_path(argv[i], &count) != 0)
            return 1;
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found in the given paths\n");
        return 1;
    }
    printf("replay: %zu inputs ran without a crash\n", count);
    return 0;
}
