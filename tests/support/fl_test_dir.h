/*
 * fl_test_dir: scratch directories for tests, made fresh under /tmp and
 * removed with everything in them.
 */
#ifndef FL_TEST_DIR_H
#define FL_TEST_DIR_H

#include <stddef.h>

/** Creates a new private directory /tmp/fl-<tag>-<random> and writes its
 *  path to buf (capacity cap). Fails the current test if it cannot. */
void fl_test_dir_new(char *buf, size_t cap, const char *tag);

/** Removes `dir` and everything below it (no-op for "" or NULL). */
void fl_test_dir_remove(const char *dir);

#endif
