/*
 * fl_test_json: a small strict JSON reader for tests that check what the
 * command-line tools print (RFC 8259 values; no extensions).  Written for
 * the tests, independently of the code under test.
 */
#ifndef FL_TEST_JSON_H
#define FL_TEST_JSON_H

#include <stddef.h>

typedef enum {
    FL_TEST_JSON_NULL,
    FL_TEST_JSON_BOOL,
    FL_TEST_JSON_NUMBER,
    FL_TEST_JSON_STRING,
    FL_TEST_JSON_ARRAY,
    FL_TEST_JSON_OBJECT
} fl_test_json_type;

typedef struct fl_test_json {
    fl_test_json_type type;
    int boolean;
    double number;
    char *string;                /* STRING: the decoded text (\u escapes kept as '?') */
    struct fl_test_json **items; /* ARRAY and OBJECT members */
    char **keys;                 /* OBJECT keys */
    size_t n;
} fl_test_json;

/** Parses exactly one JSON value (surrounding white space allowed) from the
 *  NUL-terminated text; NULL if the text is anything else. Free with
 *  fl_test_json_free. */
fl_test_json *fl_test_json_parse(const char *text);

/** Member `key` of an object, or NULL (also if v is not an object). */
const fl_test_json *fl_test_json_get(const fl_test_json *v, const char *key);

/** Element i of an array, or NULL. */
const fl_test_json *fl_test_json_at(const fl_test_json *v, size_t i);

void fl_test_json_free(fl_test_json *v);

#endif
