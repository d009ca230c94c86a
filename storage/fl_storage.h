/*
 * fl_storage: durable files.  Everything the project keeps on disk (keys,
 * models, later checkpoints and ledgers) is written through here, atomically:
 * a temporary file in the same directory, write, fsync, rename, fsync of the
 * directory.  A crash leaves either the old file or the new one, never half.
 */
#ifndef FL_STORAGE_H
#define FL_STORAGE_H

#include <stddef.h>
#include <sys/types.h>

#include "error/fl_error.h"

/** Writes `len` bytes to `path` atomically with permission bits `mode`
 *  (the temporary file is created with `mode`, so a 0600 file is never
 *  readable by others, not even briefly). FL_EIO with the path on failure. */
FL_NODISCARD int fl_storage_write_atomic(const char *path, const void *data, size_t len,
                                         mode_t mode);

/** Reads a whole file of at most `max_len` bytes into a fresh malloc'd buffer
 *  (NUL-terminated for convenience; *len excludes the NUL). The caller frees
 *  *data. FL_EIO if missing or unreadable, FL_ERANGE if larger than max_len. */
FL_NODISCARD int fl_storage_read_all(const char *path, size_t max_len, unsigned char **data,
                                     size_t *len);

/** Creates directory `path` (one level) with `mode` if it does not exist. */
FL_NODISCARD int fl_storage_mkdir(const char *path, mode_t mode);

#endif
