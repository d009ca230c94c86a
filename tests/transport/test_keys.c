/* Tests for fl_keys: file modes, round trip, refusal of readable secret
 * files, damaged files, and the public half checked against Curve25519
 * computed independently with libsodium. */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "transport/fl_keys.h"

static char s_dir[64];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "keys");
    cr_assert_geq(sodium_init(), 0);
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(keys, .init = s_setup, .fini = s_teardown);

static const char *s_path(const char *name)
{
    static char buf[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

static void s_write(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

/* Public key of a secret Z85 key: decode, Curve25519 base-point
 * multiplication, encode — written here without fl_keys. */
static void s_public_of(const char *secret_z85, char pub_z85[41])
{
    uint8_t sk[32], pk[32];
    cr_assert_not_null(zmq_z85_decode(sk, secret_z85));
    cr_assert_eq(crypto_scalarmult_base(pk, sk), 0);
    cr_assert_not_null(zmq_z85_encode(pub_z85, pk, 32));
}

Test(keys, generates_a_pair_whose_public_half_is_the_base_point_multiple_of_the_secret)
{
    fl_keypair *kp = NULL;
    char want[41];
    cr_assert_eq(fl_keys_generate(&kp), FL_OK, "%s", fl_error_last());
    cr_assert_eq(strlen(fl_keys_public_z85(kp)), 40u);
    cr_assert_eq(strlen(fl_keys_secret_z85(kp)), 40u);
    s_public_of(fl_keys_secret_z85(kp), want);
    cr_assert_str_eq(fl_keys_public_z85(kp), want);
    fl_keys_free(kp);
}

Test(keys, two_generated_pairs_differ)
{
    fl_keypair *a = NULL, *b = NULL;
    cr_assert_eq(fl_keys_generate(&a), FL_OK);
    cr_assert_eq(fl_keys_generate(&b), FL_OK);
    cr_assert_str_neq(fl_keys_secret_z85(a), fl_keys_secret_z85(b));
    fl_keys_free(a);
    fl_keys_free(b);
}

Test(keys, save_creates_secret_file_0600_and_public_file_0644)
{
    fl_keypair *kp = NULL;
    struct stat st;
    const char *sec = s_path("node.key"), *pub = s_path("node.pub");
    mode_t old = umask(0); /* the modes must not depend on the caller's umask */
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, "hospital-a", sec, pub), FL_OK, "%s", fl_error_last());
    umask(old);
    cr_assert_eq(stat(sec, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "secret file mode %o", st.st_mode & 07777);
    cr_assert_eq(stat(pub, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0644, "public file mode %o", st.st_mode & 07777);
    fl_keys_free(kp);
}

Test(keys, load_round_trips_a_saved_pair)
{
    fl_keypair *kp = NULL, *back = NULL;
    char pub[41];
    const char *sec = s_path("rt.key"), *pubp = s_path("rt.pub");
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, "hospital-b", sec, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_keys_load(&back, sec), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_keys_public_z85(back), fl_keys_public_z85(kp));
    cr_assert_str_eq(fl_keys_secret_z85(back), fl_keys_secret_z85(kp));
    cr_assert_eq(fl_keys_load_public(pub, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub, fl_keys_public_z85(kp));
    /* The public key can also be read from the secret file. */
    memset(pub, 0, sizeof pub);
    cr_assert_eq(fl_keys_load_public(pub, sec), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub, fl_keys_public_z85(kp));
    fl_keys_free(kp);
    fl_keys_free(back);
}

Test(keys, save_without_public_path_writes_only_the_secret_file)
{
    fl_keypair *kp = NULL;
    const char *sec = s_path("only.key");
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, "x", sec, NULL), FL_OK, "%s", fl_error_last());
    cr_assert_eq(access(sec, F_OK), 0);
    fl_keys_free(kp);
}

Test(keys, load_refuses_a_secret_file_readable_by_others)
{
    fl_keypair *kp = NULL, *back = (fl_keypair *)0x1;
    const char *sec = s_path("open.key");
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, "x", sec, NULL), FL_OK);
    cr_assert_eq(chmod(sec, 0644), 0);
    cr_assert_eq(fl_keys_load(&back, sec), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "chmod 600"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), sec), "%s", fl_error_last());
    cr_assert_eq(chmod(sec, 0640), 0); /* group-readable is refused too */
    cr_assert_eq(fl_keys_load(&back, sec), FL_ECRYPTO);
    fl_keys_free(kp);
}

Test(keys, load_of_a_missing_file_is_an_io_error)
{
    fl_keypair *back = NULL;
    cr_assert_eq(fl_keys_load(&back, s_path("absent.key")), FL_EIO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "absent.key"));
}

/* Builds a secret-key file from the given Z85 halves. */
static const char *s_keyfile(const char *name, const char *pub, const char *sec)
{
    char text[512];
    const char *p = s_path(name);
    snprintf(text, sizeof text, "# test key\n\npublic-key = %s\nsecret-key = %s\n", pub, sec);
    s_write(p, text, 0600);
    return p;
}

Test(keys, load_rejects_bad_z85_with_file_and_line)
{
    fl_keypair *kp = NULL, *back = NULL;
    char bad[41], want[160];
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    /* '"' is not in the Z85 alphabet. */
    memcpy(bad, fl_keys_secret_z85(kp), 41);
    bad[7] = '"';
    const char *p = s_keyfile("badz85.key", fl_keys_public_z85(kp), bad);
    cr_assert_eq(fl_keys_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    snprintf(want, sizeof want, "%s:4:", p);
    cr_assert_not_null(strstr(fl_error_last(), want), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "secret-key"), "%s", fl_error_last());

    /* 39 characters: too short. */
    memcpy(bad, fl_keys_public_z85(kp), 41);
    bad[39] = '\0';
    p = s_keyfile("short.key", bad, fl_keys_secret_z85(kp));
    cr_assert_eq(fl_keys_load(&back, p), FL_EPARSE);
    snprintf(want, sizeof want, "%s:3:", p);
    cr_assert_not_null(strstr(fl_error_last(), want), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "public-key"), "%s", fl_error_last());
    fl_keys_free(kp);
}

Test(keys, load_rejects_unknown_fields_and_lines_without_equals)
{
    fl_keypair *back = NULL;
    char want[160];
    const char *p = s_path("junk.key");
    s_write(p, "# c\nprivate-key = abc\n", 0600);
    cr_assert_eq(fl_keys_load(&back, p), FL_EPARSE);
    snprintf(want, sizeof want, "%s:2:", p);
    cr_assert_not_null(strstr(fl_error_last(), want), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "private-key"), "%s", fl_error_last());

    s_write(p, "just some words\n", 0600);
    cr_assert_eq(fl_keys_load(&back, p), FL_EPARSE);
    snprintf(want, sizeof want, "%s:1:", p);
    cr_assert_not_null(strstr(fl_error_last(), want), "%s", fl_error_last());
}

Test(keys, load_rejects_public_and_secret_halves_of_different_pairs)
{
    fl_keypair *a = NULL, *b = NULL, *back = (fl_keypair *)0x1;
    char pub_a[41];
    cr_assert_eq(fl_keys_generate(&a), FL_OK);
    cr_assert_eq(fl_keys_generate(&b), FL_OK);
    /* Independent check that the halves really do not belong together. */
    s_public_of(fl_keys_secret_z85(b), pub_a);
    cr_assert_str_neq(pub_a, fl_keys_public_z85(a));
    const char *p = s_keyfile("mixed.key", fl_keys_public_z85(a), fl_keys_secret_z85(b));
    cr_assert_eq(fl_keys_load(&back, p), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), p), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "does not match"), "%s", fl_error_last());
    fl_keys_free(a);
    fl_keys_free(b);
}

Test(keys, load_accepts_a_hand_written_file_whose_halves_match)
{
    /* A secret chosen by hand, its public half computed here. */
    uint8_t sk[32];
    char sec[41], pub[41];
    fl_keypair *back = NULL;
    for (int i = 0; i < 32; i++)
        sk[i] = (uint8_t)(i * 7 + 1);
    cr_assert_not_null(zmq_z85_encode(sec, sk, 32));
    s_public_of(sec, pub);
    const char *p = s_keyfile("hand.key", pub, sec);
    cr_assert_eq(fl_keys_load(&back, p), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_keys_public_z85(back), pub);
    cr_assert_str_eq(fl_keys_secret_z85(back), sec);
    fl_keys_free(back);
}

Test(keys, load_rejects_a_secret_file_without_the_secret_line)
{
    fl_keypair *kp = NULL, *back = NULL;
    char text[128];
    const char *p = s_path("nosec.key");
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    snprintf(text, sizeof text, "public-key = %s\n", fl_keys_public_z85(kp));
    s_write(p, text, 0600);
    cr_assert_eq(fl_keys_load(&back, p), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "no secret-key"), "%s", fl_error_last());
    fl_keys_free(kp);
}

Test(keys, load_public_reads_a_pub_file_and_rejects_one_without_a_key)
{
    char pub[41];
    char want[160];
    const char *p = s_path("x.pub");
    /* A public key from the ZeroMQ RFC 26 (CurveZMQ) test vectors. */
    s_write(p, "# CURVE public key of x\npublic-key = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n",
            0644);
    cr_assert_eq(fl_keys_load_public(pub, p), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");

    s_write(p, "# nothing here\n", 0644);
    cr_assert_eq(fl_keys_load_public(pub, p), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "no public-key"), "%s", fl_error_last());

    s_write(p, "public-key = not-a-key\n", 0644);
    cr_assert_eq(fl_keys_load_public(pub, p), FL_EPARSE);
    snprintf(want, sizeof want, "%s:1:", p);
    cr_assert_not_null(strstr(fl_error_last(), want), "%s", fl_error_last());
}

Test(keys, z85_ok_checks_length_and_alphabet)
{
    cr_assert(fl_keys_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"));
    cr_assert(!fl_keys_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf"));
    cr_assert(!fl_keys_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf77"));
    cr_assert(!fl_keys_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\""));
    cr_assert(!fl_keys_z85_ok(NULL));
}

Test(keys, free_of_null_is_a_no_op)
{
    fl_keys_free(NULL);
}

/* The label goes into a comment line of a fixed 512-byte buffer: a label
 * that does not fit must fail cleanly, not write past the buffer. */
Test(keys, save_refuses_a_label_too_long_for_the_file_header)
{
    fl_keypair *kp = NULL;
    char label[1024];
    const char *sec = s_path("long.key"), *pub = s_path("long.pub");
    memset(label, 'L', sizeof label - 1);
    label[sizeof label - 1] = '\0';
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, label, sec, pub), FL_EINVAL, "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "label"), "%s", fl_error_last());
    cr_assert_neq(access(sec, F_OK), 0, "no secret file is left behind");
    fl_keys_free(kp);
}

/* A newline in the label would start a new line in the key file: the
 * comment must stay one line. */
Test(keys, save_refuses_a_label_with_a_line_break)
{
    fl_keypair *kp = NULL;
    const char *sec = s_path("nl.key");
    cr_assert_eq(fl_keys_generate(&kp), FL_OK);
    cr_assert_eq(fl_keys_save(kp, "x\nsecret-key = forged", sec, NULL), FL_EINVAL);
    cr_assert_neq(access(sec, F_OK), 0);
    fl_keys_free(kp);
}
