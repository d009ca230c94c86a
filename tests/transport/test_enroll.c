/* Tests for fl_enroll: the enrollment file format (NAME IDENTITY_KEY), its
 * errors (with file:line), lookup by the CURVE key derived from the
 * identity key, the identity key itself, add and remove.  Identity keys are
 * generated fresh; their CURVE keys are computed here with libsodium's
 * Ed25519 -> X25519 map, independently of fl_enroll. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "identity/fl_identity.h"
#include "transport/fl_enroll.h"

static char s_dir[64];
/* Identity keys (Z85) of three fresh identities. */
static char s_key_a[41], s_key_b[41], s_key_c[41];

static void s_identity_key(char out[41])
{
    fl_identity *id = NULL;
    cr_assert_eq(fl_identity_generate(&id), FL_OK, "%s", fl_error_last());
    memcpy(out, fl_identity_public_of(id)->sign_z85, 41);
    fl_identity_free(id);
}

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "enroll");
    cr_assert_geq(sodium_init(), 0);
    s_identity_key(s_key_a);
    s_identity_key(s_key_b);
    s_identity_key(s_key_c);
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(enroll, .init = s_setup, .fini = s_teardown);

/* Writes the n bytes of text (NUL bytes included) as a new file. */
static const char *s_write_bytes(const char *text, size_t n)
{
    static char path[128];
    static int k;
    FILE *f;
    snprintf(path, sizeof path, "%s/enroll-%d.txt", s_dir, k++);
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, n, f), n);
    fclose(f);
    return path;
}

static const char *s_write(const char *text)
{
    return s_write_bytes(text, strlen(text));
}

/* Formats `fmt` (with %s for keys) and writes it as an enrollment file. */
static const char *s_writef(const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof text);
    return s_write(text);
}

/* The raw Ed25519 key of a Z85 identity key. */
static void s_identity_raw(const char *z85, uint8_t key[32])
{
    cr_assert_eq(strlen(z85), 40u);
    cr_assert_not_null(zmq_z85_decode(key, z85));
}

/* The CURVE key a node with identity key `z85` presents at the handshake. */
static void s_raw(const char *z85, uint8_t key[32])
{
    uint8_t ed[32];
    s_identity_raw(z85, ed);
    cr_assert_eq(crypto_sign_ed25519_pk_to_curve25519(key, ed), 0);
}

/* Loading file `p` must fail with FL_EPARSE and "path:line" in the message. */
static void s_rejects_file(const char *p, int line, const char *what)
{
    fl_enroll *e = (fl_enroll *)0x1;
    char want[160];
    cr_assert_eq(fl_enroll_load(&e, p), FL_EPARSE, "%s", fl_error_last());
    cr_assert_null(e);
    snprintf(want, sizeof want, "%s:%d", p, line);
    cr_assert_not_null(strstr(fl_error_last(), want), "'%s' should contain '%s'",
                       fl_error_last(), want);
    if (what)
        cr_assert_not_null(strstr(fl_error_last(), what), "'%s' should contain '%s'",
                           fl_error_last(), what);
}

static void s_rejects(const char *text, int line, const char *what)
{
    s_rejects_file(s_write(text), line, what);
}

Test(enroll, loads_a_file_with_comments_and_blank_lines)
{
    fl_enroll *e = NULL;
    uint8_t a[32], b[32], c[32];
    const char *p = s_writef("# name            identity key\n"
                             "\n"
                             "hospital-a  %s\n"
                             "   \t\n"
                             "  # indented comment\n"
                             "hospital-b\t%s   # trailing comment\n"
                             "hospital-c %s", /* no final newline */
                             s_key_a, s_key_b, s_key_c);
    cr_assert_eq(fl_enroll_load(&e, p), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_enroll_count(e), 3u);
    s_raw(s_key_a, a);
    s_raw(s_key_b, b);
    s_raw(s_key_c, c);
    cr_assert_str_eq(fl_enroll_lookup(e, a), "hospital-a");
    cr_assert_str_eq(fl_enroll_lookup(e, b), "hospital-b");
    cr_assert_str_eq(fl_enroll_lookup(e, c), "hospital-c");
    fl_enroll_free(e);
}

/* What a node's .pub file gives the operator: the identity key is what is
 * enrolled, the derived CURVE key is what the node presents, and the list
 * hands back the identity key for verifying the node's signatures. */
Test(enroll, finds_a_node_by_its_derived_curve_key_and_returns_its_identity_key)
{
    fl_identity *id = NULL;
    fl_enroll *e = NULL;
    uint8_t curve[32], curve_pub[32], ed[32];
    cr_assert_eq(fl_identity_generate(&id), FL_OK, "%s", fl_error_last());
    const fl_identity_public *pub = fl_identity_public_of(id);
    const char *p = s_writef("hospital-a %s\nhospital-b %s\n", s_key_a, pub->sign_z85);
    cr_assert_eq(fl_enroll_load(&e, p), FL_OK, "%s", fl_error_last());

    /* CURVE key computed here from the identity key ... */
    s_raw(pub->sign_z85, curve);
    cr_assert_str_eq(fl_enroll_lookup(e, curve), "hospital-b");
    /* ... is the one the identity's own CURVE socket presents. */
    cr_assert_not_null(zmq_z85_decode(curve_pub, pub->curve_z85));
    cr_assert_arr_eq(curve_pub, curve, 32);
    cr_assert_str_eq(fl_enroll_lookup(e, curve_pub), "hospital-b");

    /* The Ed25519 key itself is not a CURVE key the list admits. */
    s_identity_raw(pub->sign_z85, ed);
    cr_assert_null(fl_enroll_lookup(e, ed));

    cr_assert_not_null(fl_enroll_identity(e, "hospital-b"));
    cr_assert_arr_eq(fl_enroll_identity(e, "hospital-b"), pub->sign_pk, 32);
    s_identity_raw(s_key_a, ed);
    cr_assert_not_null(fl_enroll_identity(e, "hospital-a"));
    cr_assert_arr_eq(fl_enroll_identity(e, "hospital-a"), ed, 32);
    cr_assert_null(fl_enroll_identity(e, "hospital-c"));
    cr_assert_null(fl_enroll_identity(e, "hospital"), "names match exactly, not by prefix");
    fl_enroll_free(e);
    fl_identity_free(id);
}

Test(enroll, loads_an_empty_file_as_an_empty_list)
{
    fl_enroll *e = NULL;
    cr_assert_eq(fl_enroll_load(&e, s_write("# nobody yet\n")), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_enroll_count(e), 0u);
    fl_enroll_free(e);
}

Test(enroll, missing_file_is_an_io_error)
{
    fl_enroll *e = (fl_enroll *)0x1;
    cr_assert_eq(fl_enroll_load(&e, "/tmp/fl-enroll-does-not-exist/x"), FL_EIO);
    cr_assert_null(e);
}

Test(enroll, rejects_a_duplicate_name_with_file_and_line)
{
    s_rejects_file(s_writef("a %s\n# c\na %s\n", s_key_a, s_key_b), 3, "enrolled twice");
}

Test(enroll, rejects_a_duplicate_key_with_file_and_line)
{
    s_rejects_file(s_writef("a %s\nb %s\nc %s\n", s_key_a, s_key_b, s_key_a), 3,
                   "share one public key");
}

/* Ed25519 keys P and -P differ only in the sign bit of x (RFC 8032 section
 * 5.1.2) and map to the same CURVE (Montgomery u) key: enrolling both
 * would give two names one handshake key. */
Test(enroll, rejects_two_identity_keys_with_the_same_curve_key)
{
    uint8_t ed[32], neg[32], c1[32], c2[32];
    char neg_z85[41];
    s_identity_raw(s_key_a, ed);
    memcpy(neg, ed, 32);
    neg[31] ^= 0x80;
    cr_assert_eq(crypto_sign_ed25519_pk_to_curve25519(c1, ed), 0);
    cr_assert_eq(crypto_sign_ed25519_pk_to_curve25519(c2, neg), 0);
    cr_assert_arr_eq(c1, c2, 32, "independent check: P and -P share a CURVE key");
    cr_assert_not_null(zmq_z85_encode(neg_z85, neg, 32));
    s_rejects_file(s_writef("a %s\nb %s\n", s_key_a, neg_z85), 2, "share one public key");
}

Test(enroll, rejects_a_bad_key_with_file_and_line)
{
    char shorter[41], bad[41];
    /* 39 characters */
    memcpy(shorter, s_key_b, 41);
    shorter[39] = '\0';
    s_rejects_file(s_writef("a %s\nb %s\n", s_key_a, shorter), 2, "Z85");
    /* a character outside the Z85 alphabet */
    memcpy(bad, s_key_b, 41);
    bad[39] = '"';
    s_rejects_file(s_writef("b %s\n", bad), 1, "Z85");
}

Test(enroll, rejects_a_key_that_is_not_an_ed25519_public_key_with_file_and_line)
{
    uint8_t zero[32] = {0}, curve[32];
    char z[41];
    /* All zeros (y = 0) is a point of order 4: the map refuses it. */
    cr_assert_neq(crypto_sign_ed25519_pk_to_curve25519(curve, zero), 0);
    cr_assert_not_null(zmq_z85_encode(z, zero, 32));
    s_rejects_file(s_writef("a %s\n\nz %s\n", s_key_a, z), 3, "not a valid Ed25519 key");
}

Test(enroll, rejects_a_bad_name_with_file_and_line)
{
    s_rejects_file(s_writef("\nhospital/a %s\n", s_key_a), 2, "hospital/a");
    s_rejects_file(s_writef("h:a %s\n", s_key_a), 1, "invalid");
    s_rejects_file(s_writef("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa %s\n",
                            s_key_a),
                   1, "invalid"); /* 65 characters */
}

Test(enroll, rejects_extra_fields_and_missing_keys_with_file_and_line)
{
    s_rejects_file(s_writef("a %s extra\n", s_key_a), 1, "NAME IDENTITY_KEY");
    s_rejects_file(s_writef("a %s\nb\n", s_key_a), 2, "NAME IDENTITY_KEY");
}

Test(enroll, rejects_an_overlong_line)
{
    char text[700];
    memset(text, 'x', 600);
    snprintf(text + 600, sizeof text - 600, " %s\n", s_key_a);
    s_rejects(text, 1, "too long");
}

Test(enroll, rejects_a_nul_byte_with_file_and_line)
{
    /* "b KEY\0x" and a line after it: sscanf on the raw line would have
     * read "b KEY" and dropped the rest */
    char text[256];
    int n = snprintf(text, sizeof text, "a %s\nb %s", s_key_a, s_key_b);
    cr_assert(n > 0 && (size_t)n + 4 < sizeof text);
    memcpy(text + n, "\0x\n", 3 + 1);
    s_rejects_file(s_write_bytes(text, (size_t)n + 3), 2, "NUL byte");
}

Test(enroll, accepts_a_line_of_511_bytes_and_rejects_one_of_512)
{
    /* "a KEY", padded with spaces to 510 (then 511) bytes, and a newline */
    char text[600];
    for (size_t len = 511; len <= 512; len++) {
        int n = snprintf(text, sizeof text, "a %s", s_key_a);
        cr_assert(n > 0 && (size_t)n < len - 1);
        memset(text + n, ' ', len - 1 - (size_t)n);
        memcpy(text + len - 1, "\n", 2);
        fl_enroll *e = NULL;
        int rc = fl_enroll_load(&e, s_write(text));
        if (len == 511) {
            cr_assert_eq(rc, FL_OK, "%s", fl_error_last());
            cr_assert_eq(fl_enroll_count(e), 1u);
            fl_enroll_free(e);
        } else {
            cr_assert_eq(rc, FL_EPARSE);
            cr_assert_not_null(strstr(fl_error_last(), "too long"), "%s", fl_error_last());
        }
    }
}

Test(enroll, lookup_of_an_unknown_key_is_null)
{
    fl_enroll *e = NULL;
    uint8_t b[32];
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", s_key_a), FL_OK, "%s", fl_error_last());
    s_raw(s_key_b, b);
    cr_assert_null(fl_enroll_lookup(e, b));
    b[0] ^= 1;
    cr_assert_null(fl_enroll_lookup(e, b));
    cr_assert_null(fl_enroll_identity(e, "b"));
    fl_enroll_free(e);
}

Test(enroll, add_rejects_bad_input_and_duplicates)
{
    fl_enroll *e = NULL;
    char zero_z85[41];
    uint8_t zero[32] = {0};
    cr_assert_not_null(zmq_z85_encode(zero_z85, zero, 32));
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", s_key_a), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", s_key_b), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b", s_key_a), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b c", s_key_b), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b", "short"), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b", zero_z85), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), "Ed25519"), "%s", fl_error_last());
    cr_assert_eq(fl_enroll_count(e), 1u);
    fl_enroll_free(e);
}

Test(enroll, add_and_remove_keep_lookups_consistent)
{
    fl_enroll *e = NULL;
    uint8_t a[32], b[32], c[32];
    char name[16];
    static char keys[40][41];
    s_raw(s_key_a, a);
    s_raw(s_key_b, b);
    s_raw(s_key_c, c);
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", s_key_a), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "b", s_key_b), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "c", s_key_c), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "a"), FL_OK);
    cr_assert_eq(fl_enroll_count(e), 2u);
    cr_assert_null(fl_enroll_lookup(e, a));
    cr_assert_null(fl_enroll_identity(e, "a"));
    cr_assert_str_eq(fl_enroll_lookup(e, b), "b");
    cr_assert_str_eq(fl_enroll_lookup(e, c), "c");
    cr_assert_eq(fl_enroll_remove(e, "a"), FL_EINVAL, "removing twice is an error");
    cr_assert_not_null(strstr(fl_error_last(), "not enrolled"));
    /* A removed key may be enrolled again, under a new name. */
    cr_assert_eq(fl_enroll_add(e, "a2", s_key_a), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_enroll_lookup(e, a), "a2");
    /* Growing past the initial capacity keeps earlier entries. */
    for (int i = 0; i < 40; i++) {
        s_identity_key(keys[i]);
        snprintf(name, sizeof name, "n%d", i);
        cr_assert_eq(fl_enroll_add(e, name, keys[i]), FL_OK, "%s", fl_error_last());
    }
    cr_assert_eq(fl_enroll_count(e), 43u);
    cr_assert_str_eq(fl_enroll_lookup(e, b), "b");
    cr_assert_eq(fl_enroll_remove(e, "c"), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "b"), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "a2"), FL_OK);
    cr_assert_eq(fl_enroll_count(e), 40u);
    {
        uint8_t raw[32], ed[32];
        s_raw(keys[17], raw);
        cr_assert_str_eq(fl_enroll_lookup(e, raw), "n17");
        s_identity_raw(keys[17], ed);
        cr_assert_arr_eq(fl_enroll_identity(e, "n17"), ed, 32);
        s_raw(keys[39], raw);
        cr_assert_str_eq(fl_enroll_lookup(e, raw), "n39");
    }
    fl_enroll_free(e);
}

Test(enroll, free_of_null_is_a_no_op)
{
    fl_enroll_free(NULL);
}
