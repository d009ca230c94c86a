/*
 * fl_config: typed, validated INI configuration files (parsed with inih).
 *
 * A program describes the keys it accepts in a table of fl_config_field;
 * fl_config_load fills the targets, checks types and ranges, refuses unknown
 * sections or keys and missing required keys, and names file and line in
 * every error.  Relative paths are resolved against the config file's folder
 * so a configuration can be moved with its files.
 */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

#define FL_CONFIG_STR_MAX 1024

typedef enum {
    FL_CONFIG_STRING, /* target: char[FL_CONFIG_STR_MAX] */
    FL_CONFIG_PATH,   /* target: char[FL_CONFIG_STR_MAX], resolved against the file's folder */
    FL_CONFIG_INT,    /* target: int64_t, range [min, max] */
    FL_CONFIG_DOUBLE  /* target: double, finite, range [min, max] */
} fl_config_type;

typedef struct {
    const char *section;
    const char *key;
    fl_config_type type;
    void *target;
    int required;
    double min, max; /* numeric bounds, inclusive */
    int seen;        /* set by fl_config_load */
} fl_config_field;

/** Loads `path` into the fields' targets. Targets of absent optional keys
 *  keep their values (set defaults before calling). FL_EIO if the file cannot
 *  be read, FL_EPARSE (with file:line and the key) for anything invalid. */
FL_NODISCARD int fl_config_load(const char *path, fl_config_field *fields, size_t n);

#endif
