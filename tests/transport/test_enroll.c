/* Tests for fl_enroll: the enrollment file format, its errors (with
 * file:line), lookup by raw key, add and remove. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "transport/fl_enroll.h"

/* Three valid Z85 keys taken from the CurveZMQ (RFC 26) / libzmq test vectors. */
#define S_KEY_A "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define S_KEY_B "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
#define S_KEY_C "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"

static char s_dir[64];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "enroll");
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(enroll, .init = s_setup, .fini = s_teardown);

static const char *s_write(const char *text)
{
    static char path[128];
    static int k;
    FILE *f;
    snprintf(path, sizeof path, "%s/enroll-%d.txt", s_dir, k++);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void s_raw(const char *z85, uint8_t key[32])
{
    cr_assert_not_null(zmq_z85_decode(key, z85));
}

/* Loading must fail with FL_EPARSE and "path:line" in the message. */
static void s_rejects(const char *text, int line, const char *what)
{
    fl_enroll *e = (fl_enroll *)0x1;
    char want[160];
    const char *p = s_write(text);
    cr_assert_eq(fl_enroll_load(&e, p), FL_EPARSE, "%s", fl_error_last());
    cr_assert_null(e);
    snprintf(want, sizeof want, "%s:%d", p, line);
    cr_assert_not_null(strstr(fl_error_last(), want), "'%s' should contain '%s'",
                       fl_error_last(), want);
    if (what)
        cr_assert_not_null(strstr(fl_error_last(), what), "'%s' should contain '%s'",
                           fl_error_last(), what);
}

Test(enroll, loads_a_file_with_comments_and_blank_lines)
{
    fl_enroll *e = NULL;
    uint8_t a[32], b[32], c[32];
    const char *p = s_write("# name            public key\n"
                            "\n"
                            "hospital-a  " S_KEY_A "\n"
                            "   \t\n"
                            "  # indented comment\n"
                            "hospital-b\t" S_KEY_B "   # trailing comment\n"
                            "hospital-c " S_KEY_C); /* no final newline */
    cr_assert_eq(fl_enroll_load(&e, p), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_enroll_count(e), 3u);
    s_raw(S_KEY_A, a);
    s_raw(S_KEY_B, b);
    s_raw(S_KEY_C, c);
    cr_assert_str_eq(fl_enroll_lookup(e, a), "hospital-a");
    cr_assert_str_eq(fl_enroll_lookup(e, b), "hospital-b");
    cr_assert_str_eq(fl_enroll_lookup(e, c), "hospital-c");
    fl_enroll_free(e);
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
    s_rejects("a " S_KEY_A "\n# c\na " S_KEY_B "\n", 3, "enrolled twice");
}

Test(enroll, rejects_a_duplicate_key_with_file_and_line)
{
    s_rejects("a " S_KEY_A "\nb " S_KEY_B "\nc " S_KEY_A "\n", 3, "share one public key");
}

Test(enroll, rejects_a_bad_key_with_file_and_line)
{
    /* 39 characters */
    s_rejects("a " S_KEY_A "\nb rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\n", 2, "Z85");
    /* a character outside the Z85 alphabet */
    s_rejects("b rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\"\n", 1, "Z85");
}

Test(enroll, rejects_a_bad_name_with_file_and_line)
{
    s_rejects("\nhospital/a " S_KEY_A "\n", 2, "hospital/a");
    s_rejects("h:a " S_KEY_A "\n", 1, "invalid");
    s_rejects("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " S_KEY_A "\n",
              1, "invalid"); /* 65 characters */
}

Test(enroll, rejects_extra_fields_and_missing_keys_with_file_and_line)
{
    s_rejects("a " S_KEY_A " extra\n", 1, "NAME PUBLIC_KEY");
    s_rejects("a " S_KEY_A "\nb\n", 2, "NAME PUBLIC_KEY");
}

Test(enroll, rejects_an_overlong_line)
{
    char text[700];
    memset(text, 'x', 600);
    strcpy(text + 600, " " S_KEY_A "\n");
    s_rejects(text, 1, "too long");
}

Test(enroll, lookup_of_an_unknown_key_is_null)
{
    fl_enroll *e = NULL;
    uint8_t b[32];
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", S_KEY_A), FL_OK, "%s", fl_error_last());
    s_raw(S_KEY_B, b);
    cr_assert_null(fl_enroll_lookup(e, b));
    b[0] ^= 1;
    cr_assert_null(fl_enroll_lookup(e, b));
    fl_enroll_free(e);
}

Test(enroll, add_rejects_bad_input_and_duplicates)
{
    fl_enroll *e = NULL;
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", S_KEY_A), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", S_KEY_B), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b", S_KEY_A), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b c", S_KEY_B), FL_EINVAL);
    cr_assert_eq(fl_enroll_add(e, "b", "short"), FL_EINVAL);
    cr_assert_eq(fl_enroll_count(e), 1u);
    fl_enroll_free(e);
}

Test(enroll, add_and_remove_keep_lookups_consistent)
{
    fl_enroll *e = NULL;
    uint8_t a[32], b[32], c[32];
    char name[16];
    s_raw(S_KEY_A, a);
    s_raw(S_KEY_B, b);
    s_raw(S_KEY_C, c);
    cr_assert_eq(fl_enroll_new(&e), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "a", S_KEY_A), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "b", S_KEY_B), FL_OK);
    cr_assert_eq(fl_enroll_add(e, "c", S_KEY_C), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "a"), FL_OK);
    cr_assert_eq(fl_enroll_count(e), 2u);
    cr_assert_null(fl_enroll_lookup(e, a));
    cr_assert_str_eq(fl_enroll_lookup(e, b), "b");
    cr_assert_str_eq(fl_enroll_lookup(e, c), "c");
    cr_assert_eq(fl_enroll_remove(e, "a"), FL_EINVAL, "removing twice is an error");
    cr_assert_not_null(strstr(fl_error_last(), "not enrolled"));
    /* A removed key may be enrolled again, under a new name. */
    cr_assert_eq(fl_enroll_add(e, "a2", S_KEY_A), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_enroll_lookup(e, a), "a2");
    /* Growing past the initial capacity keeps earlier entries. */
    for (int i = 0; i < 40; i++) {
        uint8_t raw[32] = {0};
        char z85[41];
        raw[0] = (uint8_t)i;
        raw[31] = 0xee;
        cr_assert_not_null(zmq_z85_encode(z85, raw, 32));
        snprintf(name, sizeof name, "n%d", i);
        cr_assert_eq(fl_enroll_add(e, name, z85), FL_OK, "%s", fl_error_last());
    }
    cr_assert_eq(fl_enroll_count(e), 43u);
    cr_assert_str_eq(fl_enroll_lookup(e, b), "b");
    cr_assert_eq(fl_enroll_remove(e, "c"), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "b"), FL_OK);
    cr_assert_eq(fl_enroll_remove(e, "a2"), FL_OK);
    cr_assert_eq(fl_enroll_count(e), 40u);
    {
        uint8_t raw[32] = {0};
        raw[0] = 17;
        raw[31] = 0xee;
        cr_assert_str_eq(fl_enroll_lookup(e, raw), "n17");
    }
    fl_enroll_free(e);
}

Test(enroll, free_of_null_is_a_no_op)
{
    fl_enroll_free(NULL);
}
