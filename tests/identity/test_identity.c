/* Tests for fl_identity: file modes, round trip, refusal of readable secret
 * files, damaged files, create-files without and with force, and every
 * derived key checked against a second computation: the RFC 8032 test
 * vectors for Ed25519, and libsodium's primitives called directly here
 * (seed -> key pair, Ed25519 -> X25519 map, X25519 base-point
 * multiplication, SHA-512 of the seed clamped as in RFC 7748 section 5). */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "identity/fl_identity.h"

/* RFC 8032 section 7.1, TEST 2: seed ("SECRET KEY"), public key, the
 * one-byte message 0x72 and its signature. */
#define S_RFC_SEED "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
#define S_RFC_PK "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
#define S_RFC_SIG                                                         \
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da" \
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"

static char s_dir[64];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "identity");
    cr_assert_geq(sodium_init(), 0);
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(identity, .init = s_setup, .fini = s_teardown);

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

static void s_hex(uint8_t *out, size_t len, const char *hex)
{
    size_t got = 0;
    cr_assert_eq(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &got, NULL), 0);
    cr_assert_eq(got, len);
}

static void s_z85(char out[41], const uint8_t raw[32])
{
    cr_assert_not_null(zmq_z85_encode(out, raw, 32));
}

static void s_raw(uint8_t out[32], const char *z85)
{
    cr_assert_eq(strlen(z85), 40u);
    cr_assert_not_null(zmq_z85_decode(out, z85));
}

/* The three public lines of a seed, computed here with libsodium alone:
 * RFC 8032 key generation, then the Ed25519 -> X25519 map. */
static void s_keys_of_seed(const uint8_t seed[32], char seed_z85[41], char sign_z85[41],
                           char curve_z85[41])
{
    uint8_t pk[32], sk[64], curve[32];
    cr_assert_eq(crypto_sign_seed_keypair(pk, sk, seed), 0);
    cr_assert_eq(crypto_sign_ed25519_pk_to_curve25519(curve, pk), 0);
    s_z85(seed_z85, seed);
    s_z85(sign_z85, pk);
    s_z85(curve_z85, curve);
    sodium_memzero(sk, sizeof sk);
}

/* Builds a secret identity file from the given Z85 lines (lines 3, 4, 5). */
static const char *s_keyfile(const char *name, const char *seed, const char *sign,
                             const char *curve)
{
    char text[512];
    const char *p = s_path(name);
    snprintf(text, sizeof text,
             "# test identity\n\nidentity-seed = %s\nidentity-key = %s\npublic-key = %s\n", seed,
             sign, curve);
    s_write(p, text, 0600);
    return p;
}

/* Reads the identity-seed line of a saved secret file back as raw bytes,
 * without fl_identity. */
static void s_seed_of_file(const char *path, uint8_t seed[32])
{
    char line[256], z85[41] = "";
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, " identity-seed = %40s", z85) == 1)
            break;
    fclose(f);
    s_raw(seed, z85);
}

/* Asserts that `err` contains "path:line:". */
static void s_at_line(const char *path, int line)
{
    char want[160];
    snprintf(want, sizeof want, "%s:%d:", path, line);
    cr_assert_not_null(strstr(fl_error_last(), want), "'%s' should contain '%s'",
                       fl_error_last(), want);
}

/* ------------------------------------------------------- derived keys */

Test(identity, generated_identity_key_is_the_rfc8032_public_key_of_the_saved_seed)
{
    fl_identity *id = NULL;
    uint8_t seed[32];
    char want_seed[41], want_sign[41], want_curve[41];
    const char *sec = s_path("gen.key");
    cr_assert_eq(fl_identity_generate(&id), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_identity_save(id, "gen", sec, NULL), FL_OK, "%s", fl_error_last());
    s_seed_of_file(sec, seed);
    s_keys_of_seed(seed, want_seed, want_sign, want_curve);
    cr_assert_str_eq(fl_identity_public_of(id)->sign_z85, want_sign);
    cr_assert_str_eq(fl_identity_public_of(id)->curve_z85, want_curve);
    {
        uint8_t pk[32];
        s_raw(pk, want_sign);
        cr_assert_arr_eq(fl_identity_public_of(id)->sign_pk, pk, 32);
    }
    fl_identity_free(id);
}

Test(identity, curve_public_key_is_the_x25519_map_of_the_identity_key)
{
    fl_identity *id = NULL;
    uint8_t want[32], have[32], from_z85[32];
    cr_assert_eq(fl_identity_generate(&id), FL_OK, "%s", fl_error_last());
    const fl_identity_public *pub = fl_identity_public_of(id);
    cr_assert_eq(strlen(pub->sign_z85), 40u);
    cr_assert_eq(strlen(pub->curve_z85), 40u);
    /* sign_pk and sign_z85 are the same key. */
    s_raw(from_z85, pub->sign_z85);
    cr_assert_arr_eq(from_z85, pub->sign_pk, 32);
    cr_assert_eq(crypto_sign_ed25519_pk_to_curve25519(want, pub->sign_pk), 0);
    s_raw(have, pub->curve_z85);
    cr_assert_arr_eq(have, want, 32);
    fl_identity_free(id);
}

Test(identity, curve_secret_times_the_base_point_is_the_curve_public_key)
{
    fl_identity *id = NULL;
    uint8_t sk[32], pk[32], have[32];
    cr_assert_eq(fl_identity_generate(&id), FL_OK, "%s", fl_error_last());
    cr_assert_eq(strlen(fl_identity_curve_secret_z85(id)), 40u);
    s_raw(sk, fl_identity_curve_secret_z85(id));
    cr_assert_eq(crypto_scalarmult_base(pk, sk), 0);
    s_raw(have, fl_identity_public_of(id)->curve_z85);
    cr_assert_arr_eq(pk, have, 32);
    sodium_memzero(sk, sizeof sk);
    fl_identity_free(id);
}

/* RFC 8032 section 5.1.5: the Ed25519 secret scalar is the first half of
 * SHA-512(seed), clamped; X25519 (RFC 7748) uses the same clamping, so the
 * CURVE secret must be exactly those 32 bytes. */
Test(identity, curve_secret_is_the_clamped_sha512_of_the_rfc8032_seed)
{
    uint8_t seed[32], pk[32], h[64], have[32];
    char seed_z85[41], sign_z85[41], curve_z85[41];
    fl_identity *id = NULL;
    s_hex(seed, 32, S_RFC_SEED);
    s_hex(pk, 32, S_RFC_PK);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    const char *p = s_keyfile("rfc.key", seed_z85, sign_z85, curve_z85);
    cr_assert_eq(fl_identity_load(&id, p), FL_OK, "%s", fl_error_last());
    cr_assert_arr_eq(fl_identity_public_of(id)->sign_pk, pk, 32, "not the RFC 8032 public key");
    crypto_hash_sha512(h, seed, 32);
    h[0] &= 248;
    h[31] &= 127;
    h[31] |= 64;
    s_raw(have, fl_identity_curve_secret_z85(id));
    cr_assert_arr_eq(have, h, 32);
    fl_identity_free(id);
}

Test(identity, two_generated_identities_differ)
{
    fl_identity *a = NULL, *b = NULL;
    cr_assert_eq(fl_identity_generate(&a), FL_OK);
    cr_assert_eq(fl_identity_generate(&b), FL_OK);
    cr_assert_str_neq(fl_identity_public_of(a)->sign_z85, fl_identity_public_of(b)->sign_z85);
    cr_assert_str_neq(fl_identity_public_of(a)->curve_z85, fl_identity_public_of(b)->curve_z85);
    cr_assert_str_neq(fl_identity_curve_secret_z85(a), fl_identity_curve_secret_z85(b));
    fl_identity_free(a);
    fl_identity_free(b);
}

/* ----------------------------------------------------------- signing */

Test(identity, signs_the_rfc8032_test_vector)
{
    uint8_t seed[32], sig[FL_IDENTITY_SIG_BYTES], want[FL_IDENTITY_SIG_BYTES];
    char seed_z85[41], sign_z85[41], curve_z85[41];
    const uint8_t msg[1] = {0x72};
    fl_identity *id = NULL;
    s_hex(seed, 32, S_RFC_SEED);
    s_hex(want, sizeof want, S_RFC_SIG);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    cr_assert_eq(fl_identity_load(&id, s_keyfile("rfc.key", seed_z85, sign_z85, curve_z85)),
                 FL_OK, "%s", fl_error_last());
    fl_identity_sign(id, msg, sizeof msg, sig);
    cr_assert_arr_eq(sig, want, sizeof want, "Ed25519 is deterministic: RFC 8032 TEST 2");
    cr_assert_eq(fl_identity_verify(fl_identity_public_of(id)->sign_pk, msg, sizeof msg, sig),
                 FL_OK, "%s", fl_error_last());
    fl_identity_free(id);
}

Test(identity, sign_then_verify_round_trips_and_libsodium_agrees)
{
    fl_identity *id = NULL;
    uint8_t sig[FL_IDENTITY_SIG_BYTES];
    static const char msg[] = "round 7: epsilon spent 0.41";
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    fl_identity_sign(id, msg, sizeof msg, sig);
    cr_assert_eq(fl_identity_verify(fl_identity_public_of(id)->sign_pk, msg, sizeof msg, sig),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(crypto_sign_verify_detached(sig, (const uint8_t *)msg, sizeof msg,
                                             fl_identity_public_of(id)->sign_pk),
                 0);
    /* The empty message is a message too. */
    fl_identity_sign(id, "", 0, sig);
    cr_assert_eq(fl_identity_verify(fl_identity_public_of(id)->sign_pk, "", 0, sig), FL_OK);
    fl_identity_free(id);
}

Test(identity, verify_fails_on_a_flipped_byte_in_message_or_signature_or_key)
{
    fl_identity *id = NULL, *other = NULL;
    uint8_t sig[FL_IDENTITY_SIG_BYTES];
    char msg[] = "model digest 0123456789abcdef";
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_generate(&other), FL_OK);
    const uint8_t *pk = fl_identity_public_of(id)->sign_pk;
    fl_identity_sign(id, msg, sizeof msg, sig);
    cr_assert_eq(fl_identity_verify(pk, msg, sizeof msg, sig), FL_OK);
    for (size_t i = 0; i < sizeof msg; i += 7) {
        msg[i] ^= 0x01;
        cr_assert_eq(fl_identity_verify(pk, msg, sizeof msg, sig), FL_ECRYPTO,
                     "message byte %zu flipped", i);
        msg[i] ^= 0x01;
    }
    cr_assert_not_null(strstr(fl_error_last(), "signature"), "%s", fl_error_last());
    for (size_t i = 0; i < sizeof sig; i += 9) {
        sig[i] ^= 0x80;
        cr_assert_eq(fl_identity_verify(pk, msg, sizeof msg, sig), FL_ECRYPTO,
                     "signature byte %zu flipped", i);
        sig[i] ^= 0x80;
    }
    cr_assert_eq(fl_identity_verify(fl_identity_public_of(other)->sign_pk, msg, sizeof msg,
                                    sig),
                 FL_ECRYPTO, "another identity's key must not verify");
    /* A shorter message (the prefix) does not verify either. */
    cr_assert_eq(fl_identity_verify(pk, msg, sizeof msg - 1, sig), FL_ECRYPTO);
    cr_assert_eq(fl_identity_verify(pk, msg, sizeof msg, sig), FL_OK, "all bytes restored");
    fl_identity_free(id);
    fl_identity_free(other);
}

/* ------------------------------------------------------------- files */

Test(identity, save_creates_secret_file_0600_and_public_file_0644)
{
    fl_identity *id = NULL;
    struct stat st;
    const char *sec = s_path("node.key"), *pub = s_path("node.pub");
    mode_t old = umask(0); /* the modes must not depend on the caller's umask */
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    int rc = fl_identity_save(id, "hospital-a", sec, pub);
    umask(old);
    cr_assert_eq(rc, FL_OK, "%s", fl_error_last());
    cr_assert_eq(stat(sec, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "secret file mode %o", st.st_mode & 07777);
    cr_assert_eq(stat(pub, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0644, "public file mode %o", st.st_mode & 07777);
    fl_identity_free(id);
}

Test(identity, public_file_holds_no_secret)
{
    fl_identity *id = NULL;
    unsigned char buf[2048];
    size_t n;
    uint8_t seed[32];
    char seed_z85[41];
    const char *sec = s_path("ns.key"), *pub = s_path("ns.pub");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, "x", sec, pub), FL_OK, "%s", fl_error_last());
    s_seed_of_file(sec, seed);
    s_z85(seed_z85, seed);
    FILE *f = fopen(pub, "r");
    cr_assert_not_null(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cr_assert_null(strstr((char *)buf, "identity-seed"), "%s", buf);
    cr_assert_null(strstr((char *)buf, seed_z85), "the seed is in the public file");
    cr_assert_null(strstr((char *)buf, fl_identity_curve_secret_z85(id)),
                   "the CURVE secret is in the public file");
    fl_identity_free(id);
}

Test(identity, load_round_trips_a_saved_identity)
{
    fl_identity *id = NULL, *back = NULL;
    fl_identity_public pub;
    const char *sec = s_path("rt.key"), *pubp = s_path("rt.pub");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, "hospital-b", sec, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_identity_load(&back, sec), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, fl_identity_public_of(id)->sign_z85);
    cr_assert_arr_eq(fl_identity_public_of(back)->sign_pk, fl_identity_public_of(id)->sign_pk,
                     32);
    cr_assert_str_eq(fl_identity_public_of(back)->curve_z85,
                     fl_identity_public_of(id)->curve_z85);
    cr_assert_str_eq(fl_identity_curve_secret_z85(back), fl_identity_curve_secret_z85(id));
    {
        /* Same seed, same signatures (Ed25519 is deterministic). */
        uint8_t s1[FL_IDENTITY_SIG_BYTES], s2[FL_IDENTITY_SIG_BYTES];
        fl_identity_sign(id, "m", 1, s1);
        fl_identity_sign(back, "m", 1, s2);
        cr_assert_arr_eq(s1, s2, sizeof s1);
    }
    cr_assert_eq(fl_identity_load_public(&pub, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub.sign_z85, fl_identity_public_of(id)->sign_z85);
    cr_assert_str_eq(pub.curve_z85, fl_identity_public_of(id)->curve_z85);
    cr_assert_arr_eq(pub.sign_pk, fl_identity_public_of(id)->sign_pk, 32);
    /* The public half can also be read from the secret file. */
    memset(&pub, 0, sizeof pub);
    cr_assert_eq(fl_identity_load_public(&pub, sec), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub.sign_z85, fl_identity_public_of(id)->sign_z85);
    cr_assert_str_eq(pub.curve_z85, fl_identity_public_of(id)->curve_z85);
    fl_identity_free(id);
    fl_identity_free(back);
}

Test(identity, save_without_public_path_writes_only_the_secret_file)
{
    fl_identity *id = NULL;
    const char *sec = s_path("only.key");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, "x", sec, NULL), FL_OK, "%s", fl_error_last());
    cr_assert_eq(access(sec, F_OK), 0);
    cr_assert_neq(access(s_path("only.pub"), F_OK), 0);
    fl_identity_free(id);
}

Test(identity, load_refuses_a_secret_file_readable_by_others)
{
    fl_identity *id = NULL, *back = (fl_identity *)0x1;
    const char *sec = s_path("open.key");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, "x", sec, NULL), FL_OK);
    cr_assert_eq(chmod(sec, 0644), 0);
    cr_assert_eq(fl_identity_load(&back, sec), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "chmod 600"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), sec), "%s", fl_error_last());
    back = (fl_identity *)0x1;
    cr_assert_eq(chmod(sec, 0640), 0); /* group-readable is refused too */
    cr_assert_eq(fl_identity_load(&back, sec), FL_ECRYPTO);
    cr_assert_null(back);
    /* Any group or other permission bit, not only read, is refused. */
    for (mode_t bit = 01; bit <= 040; bit <<= 1) {
        back = (fl_identity *)0x1;
        cr_assert_eq(chmod(sec, 0600 | bit), 0);
        cr_assert_eq(fl_identity_load(&back, sec), FL_ECRYPTO, "mode %o", 0600 | bit);
        cr_assert_null(back);
    }
    cr_assert_eq(chmod(sec, 0600), 0); /* and after chmod 600 it loads */
    cr_assert_eq(fl_identity_load(&back, sec), FL_OK, "%s", fl_error_last());
    fl_identity_free(back);
    fl_identity_free(id);
}

Test(identity, load_of_a_missing_file_is_an_io_error)
{
    fl_identity *back = (fl_identity *)0x1;
    fl_identity_public pub;
    cr_assert_eq(fl_identity_load(&back, s_path("absent.key")), FL_EIO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "absent.key"));
    cr_assert_eq(fl_identity_load_public(&pub, s_path("absent.pub")), FL_EIO);
    cr_assert_not_null(strstr(fl_error_last(), "absent.pub"));
}

Test(identity, load_rejects_bad_z85_with_file_and_line)
{
    fl_identity *back = (fl_identity *)0x1;
    uint8_t seed[32];
    char seed_z85[41], sign_z85[41], curve_z85[41], bad[41];
    randombytes_buf(seed, sizeof seed);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    /* '"' is not in the Z85 alphabet. */
    memcpy(bad, seed_z85, 41);
    bad[7] = '"';
    const char *p = s_keyfile("badz85.key", bad, sign_z85, curve_z85);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    s_at_line(p, 3);
    cr_assert_not_null(strstr(fl_error_last(), "identity-seed"), "%s", fl_error_last());

    /* 39 characters: too short. */
    memcpy(bad, curve_z85, 41);
    bad[39] = '\0';
    p = s_keyfile("short.key", seed_z85, sign_z85, bad);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    s_at_line(p, 5);
    cr_assert_not_null(strstr(fl_error_last(), "public-key"), "%s", fl_error_last());

    /* 41 characters: too long. */
    char longer[42];
    memcpy(longer, sign_z85, 40);
    longer[40] = '0';
    longer[41] = '\0';
    p = s_keyfile("long.key", seed_z85, longer, curve_z85);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    s_at_line(p, 4);
    cr_assert_not_null(strstr(fl_error_last(), "identity-key"), "%s", fl_error_last());
}

Test(identity, load_rejects_unknown_fields_and_lines_without_equals)
{
    fl_identity *back = (fl_identity *)0x1;
    const char *p = s_path("junk.key");
    s_write(p, "# c\nprivate-key = abc\n", 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    s_at_line(p, 2);
    cr_assert_not_null(strstr(fl_error_last(), "private-key"), "%s", fl_error_last());

    /* The old CURVE-only format is not silently accepted. */
    s_write(p, "# c\n\nsecret-key = rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n", 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    s_at_line(p, 3);
    cr_assert_not_null(strstr(fl_error_last(), "secret-key"), "%s", fl_error_last());

    s_write(p, "just some words\n", 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    s_at_line(p, 1);
}

Test(identity, load_rejects_a_repeated_field_and_an_overlong_line_with_file_and_line)
{
    fl_identity *back = (fl_identity *)0x1;
    uint8_t seed[32];
    char seed_z85[41], sign_z85[41], curve_z85[41], text[1024];
    const char *p = s_path("twice.key");
    randombytes_buf(seed, sizeof seed);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    snprintf(text, sizeof text,
             "identity-seed = %s\nidentity-key = %s\npublic-key = %s\nidentity-key = %s\n",
             seed_z85, sign_z85, curve_z85, sign_z85);
    s_write(p, text, 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    s_at_line(p, 4);
    cr_assert_not_null(strstr(fl_error_last(), "twice"), "%s", fl_error_last());

    memset(text, 'x', 700);
    snprintf(text + 700, sizeof text - 700, "\nidentity-seed = %s\n", seed_z85);
    text[0] = '\n';
    s_write(p, text, 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    s_at_line(p, 2);
    cr_assert_not_null(strstr(fl_error_last(), "too long"), "%s", fl_error_last());
}

Test(identity, load_rejects_public_lines_that_do_not_belong_to_the_seed)
{
    fl_identity *back = (fl_identity *)0x1;
    uint8_t a[32], b[32];
    char seed_a[41], sign_a[41], curve_a[41], seed_b[41], sign_b[41], curve_b[41];
    randombytes_buf(a, sizeof a);
    randombytes_buf(b, sizeof b);
    s_keys_of_seed(a, seed_a, sign_a, curve_a);
    s_keys_of_seed(b, seed_b, sign_b, curve_b);
    /* Independent check that the halves really do not belong together. */
    cr_assert_str_neq(sign_a, sign_b);
    cr_assert_str_neq(curve_a, curve_b);

    /* Both public lines of another identity. */
    const char *p = s_keyfile("mixed.key", seed_b, sign_a, curve_a);
    cr_assert_eq(fl_identity_load(&back, p), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), p), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "do not belong"), "%s", fl_error_last());

    /* Only the identity-key line wrong. */
    back = (fl_identity *)0x1;
    p = s_keyfile("mixed-sign.key", seed_a, sign_b, curve_a);
    cr_assert_eq(fl_identity_load(&back, p), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "do not belong"), "%s", fl_error_last());

    /* Only the public-key (CURVE) line wrong. */
    back = (fl_identity *)0x1;
    p = s_keyfile("mixed-curve.key", seed_a, sign_a, curve_b);
    cr_assert_eq(fl_identity_load(&back, p), FL_ECRYPTO);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "do not belong"), "%s", fl_error_last());
}

Test(identity, load_accepts_a_hand_written_file_whose_lines_match)
{
    /* A seed chosen by hand, its public lines computed here. */
    uint8_t seed[32];
    char seed_z85[41], sign_z85[41], curve_z85[41];
    fl_identity *back = NULL;
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 7 + 1);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    const char *p = s_keyfile("hand.key", seed_z85, sign_z85, curve_z85);
    cr_assert_eq(fl_identity_load(&back, p), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, sign_z85);
    cr_assert_str_eq(fl_identity_public_of(back)->curve_z85, curve_z85);
    fl_identity_free(back);
}

Test(identity, load_rejects_a_secret_file_without_the_seed_line)
{
    fl_identity *id = NULL, *back = (fl_identity *)0x1;
    char text[256];
    const char *p = s_path("noseed.key");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    snprintf(text, sizeof text, "identity-key = %s\npublic-key = %s\n",
             fl_identity_public_of(id)->sign_z85, fl_identity_public_of(id)->curve_z85);
    s_write(p, text, 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "no identity-seed"), "%s", fl_error_last());
    fl_identity_free(id);
}

Test(identity, load_rejects_a_secret_file_without_a_public_line)
{
    fl_identity *back = (fl_identity *)0x1;
    uint8_t seed[32];
    char seed_z85[41], sign_z85[41], curve_z85[41], text[256];
    const char *p = s_path("nopub.key");
    randombytes_buf(seed, sizeof seed);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    snprintf(text, sizeof text, "identity-seed = %s\nidentity-key = %s\n", seed_z85, sign_z85);
    s_write(p, text, 0600);
    cr_assert_eq(fl_identity_load(&back, p), FL_EPARSE);
    cr_assert_null(back);
    cr_assert_not_null(strstr(fl_error_last(), "public-key"), "%s", fl_error_last());
}

Test(identity, load_public_reads_a_pub_file_and_rejects_one_without_keys)
{
    fl_identity_public pub;
    uint8_t seed[32], pk[32];
    char seed_z85[41], sign_z85[41], curve_z85[41], text[256];
    const char *p = s_path("x.pub");
    /* The RFC 8032 TEST 2 public key, its CURVE key computed here. */
    s_hex(seed, 32, S_RFC_SEED);
    s_hex(pk, 32, S_RFC_PK);
    s_keys_of_seed(seed, seed_z85, sign_z85, curve_z85);
    snprintf(text, sizeof text, "# public identity of x\nidentity-key = %s\npublic-key = %s\n",
             sign_z85, curve_z85);
    s_write(p, text, 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub.sign_z85, sign_z85);
    cr_assert_str_eq(pub.curve_z85, curve_z85);
    cr_assert_arr_eq(pub.sign_pk, pk, 32);

    s_write(p, "# nothing here\n", 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "identity-key and a public-key"), "%s",
                       fl_error_last());

    /* One of the two lines is not enough. */
    snprintf(text, sizeof text, "identity-key = %s\n", sign_z85);
    s_write(p, text, 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "identity-key and a public-key"), "%s",
                       fl_error_last());

    s_write(p, "public-key = not-a-key\n", 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_EPARSE);
    s_at_line(p, 1);
}

Test(identity, load_public_refuses_a_public_key_that_does_not_match_the_identity_key)
{
    fl_identity_public pub;
    uint8_t a[32], b[32];
    char seed_a[41], sign_a[41], curve_a[41], seed_b[41], sign_b[41], curve_b[41], text[256];
    const char *p = s_path("mixed.pub");
    randombytes_buf(a, sizeof a);
    randombytes_buf(b, sizeof b);
    s_keys_of_seed(a, seed_a, sign_a, curve_a);
    s_keys_of_seed(b, seed_b, sign_b, curve_b);
    cr_assert_str_neq(curve_a, curve_b);
    snprintf(text, sizeof text, "identity-key = %s\npublic-key = %s\n", sign_a, curve_b);
    s_write(p, text, 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_ECRYPTO);
    cr_assert_not_null(strstr(fl_error_last(), p), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "does not belong"), "%s", fl_error_last());
}

Test(identity, load_public_refuses_an_identity_key_that_is_not_an_ed25519_point)
{
    fl_identity_public pub;
    uint8_t zero[32] = {0}, curve[32];
    char z[41], text[256];
    const char *p = s_path("zero.pub");
    /* All zero bytes: y = 0 is a point of small order (4), which the
     * Ed25519 -> X25519 map refuses. */
    cr_assert_neq(crypto_sign_ed25519_pk_to_curve25519(curve, zero), 0);
    s_z85(z, zero);
    snprintf(text, sizeof text, "identity-key = %s\npublic-key = %s\n", z, z);
    s_write(p, text, 0644);
    cr_assert_eq(fl_identity_load_public(&pub, p), FL_ECRYPTO);
    cr_assert_not_null(strstr(fl_error_last(), "not a valid Ed25519 key"), "%s",
                       fl_error_last());
}

/* ----------------------------------------------------- create_files */

Test(identity, create_files_writes_key_and_pub_that_load_back)
{
    fl_identity_public pub, pub_file;
    fl_identity *back = NULL;
    struct stat st;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/keys", s_dir); /* does not exist yet */
    mode_t old = umask(0);
    int rc = fl_identity_create_files(dir, "hospital-c", "hospital C", 0, &pub);
    umask(old);
    cr_assert_eq(rc, FL_OK, "%s", fl_error_last());
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0700, "key directory mode %o", st.st_mode & 07777);
    cr_assert_eq(stat(s_path("keys/hospital-c.key"), &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600);
    cr_assert_eq(stat(s_path("keys/hospital-c.pub"), &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0644);
    cr_assert_eq(fl_identity_load(&back, s_path("keys/hospital-c.key")), FL_OK, "%s",
                 fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, pub.sign_z85);
    cr_assert_str_eq(fl_identity_public_of(back)->curve_z85, pub.curve_z85);
    cr_assert_arr_eq(fl_identity_public_of(back)->sign_pk, pub.sign_pk, 32);
    cr_assert_eq(fl_identity_load_public(&pub_file, s_path("keys/hospital-c.pub")), FL_OK, "%s",
                 fl_error_last());
    cr_assert_str_eq(pub_file.sign_z85, pub.sign_z85);
    cr_assert_str_eq(pub_file.curve_z85, pub.curve_z85);
    fl_identity_free(back);
}

Test(identity, create_files_refuses_to_overwrite_without_force_and_replaces_with_force)
{
    fl_identity_public first, second, again;
    fl_identity *back = NULL;
    cr_assert_eq(fl_identity_create_files(s_dir, "n", "n", 0, &first), FL_OK, "%s",
                 fl_error_last());

    memset(&second, 0, sizeof second);
    cr_assert_eq(fl_identity_create_files(s_dir, "n", "n", 0, &second), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), s_path("n.key")), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "already exists"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "--force"), "%s", fl_error_last());
    /* Both files still hold the first identity. */
    cr_assert_eq(fl_identity_load(&back, s_path("n.key")), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, first.sign_z85);
    fl_identity_free(back);
    back = NULL;
    cr_assert_eq(fl_identity_load_public(&again, s_path("n.pub")), FL_OK);
    cr_assert_str_eq(again.sign_z85, first.sign_z85);

    cr_assert_eq(fl_identity_create_files(s_dir, "n", "n", 1, &second), FL_OK, "%s",
                 fl_error_last());
    cr_assert_str_neq(second.sign_z85, first.sign_z85);
    cr_assert_eq(fl_identity_load(&back, s_path("n.key")), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, second.sign_z85);
    cr_assert_str_eq(fl_identity_public_of(back)->curve_z85, second.curve_z85);
    cr_assert_eq(fl_identity_load_public(&again, s_path("n.pub")), FL_OK);
    cr_assert_str_eq(again.sign_z85, second.sign_z85);
    cr_assert_str_eq(again.curve_z85, second.curve_z85);
    fl_identity_free(back);
}

/* --------------------------------------------------------------- misc */

Test(identity, z85_ok_checks_length_and_alphabet)
{
    cr_assert(fl_identity_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"));
    cr_assert(!fl_identity_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf"));
    cr_assert(!fl_identity_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf77"));
    cr_assert(!fl_identity_z85_ok("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\""));
    cr_assert(!fl_identity_z85_ok(NULL));
}

Test(identity, free_of_null_is_a_no_op)
{
    fl_identity_free(NULL);
}

/* The label goes into a comment line of a fixed 512-byte buffer: a label
 * that does not fit must fail cleanly, not write past the buffer. */
Test(identity, save_refuses_a_label_too_long_for_the_file_header)
{
    fl_identity *id = NULL;
    char label[1024];
    const char *sec = s_path("long.key"), *pub = s_path("long.pub");
    memset(label, 'L', sizeof label - 1);
    label[sizeof label - 1] = '\0';
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, label, sec, pub), FL_EINVAL, "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), "label"), "%s", fl_error_last());
    cr_assert_neq(access(sec, F_OK), 0, "no secret file is left behind");
    cr_assert_neq(access(pub, F_OK), 0, "no public file is left behind");
    fl_identity_free(id);
}

/* The longest label the header documents (200 bytes) still gives complete
 * files that load back. */
Test(identity, save_accepts_a_label_of_the_documented_maximum)
{
    fl_identity *id = NULL, *back = NULL;
    fl_identity_public pub;
    char label[201];
    const char *sec = s_path("max.key"), *pubp = s_path("max.pub");
    memset(label, 'M', 200);
    label[200] = '\0';
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, label, sec, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_identity_load(&back, sec), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(fl_identity_public_of(back)->sign_z85, fl_identity_public_of(id)->sign_z85);
    cr_assert_eq(fl_identity_load_public(&pub, pubp), FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(pub.curve_z85, fl_identity_public_of(id)->curve_z85);
    fl_identity_free(back);
    fl_identity_free(id);
}

/* A newline in the label would start a new line in the key file: the
 * comment must stay one line. */
Test(identity, save_refuses_a_label_with_a_line_break)
{
    fl_identity *id = NULL;
    const char *sec = s_path("nl.key");
    cr_assert_eq(fl_identity_generate(&id), FL_OK);
    cr_assert_eq(fl_identity_save(id, "x\nidentity-seed = forged", sec, NULL), FL_EINVAL);
    cr_assert_neq(access(sec, F_OK), 0);
    cr_assert_eq(fl_identity_save(id, "x\rforged", sec, NULL), FL_EINVAL);
    cr_assert_neq(access(sec, F_OK), 0);
    fl_identity_free(id);
}
