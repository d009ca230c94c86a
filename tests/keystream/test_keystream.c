/* Tests for keystream/fl_keystream: the RFC 8439 block-function test
 * vector (Sec. 2.3.2), and equality with libsodium's own ChaCha20-IETF
 * (crypto_stream_chacha20_ietf_xor_ic on zeros) for lengths around block
 * and call boundaries, initial counters and nonces -- on the OpenSSL path
 * and on the forced libsodium fallback; a counter that would wrap, and
 * NULL buffers, are refused. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "keystream/fl_keystream.h"

Test(keystream, rfc8439_block_function_test_vector)
{
    /* RFC 8439 Sec. 2.3.2: key 00 01 .. 1f, nonce 00 00 00 09 00 00 00 4a
     * 00 00 00 00, block counter 1: the serialized block begins so. */
    uint8_t key[32], out[64];
    const uint8_t nonce[12] = {0, 0, 0, 0x09, 0, 0, 0, 0x4a, 0, 0, 0, 0};
    const uint8_t want[16] = {0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15,
                              0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4};
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    for (int forced = 0; forced < 2; forced++) {
        fl_keystream_test_force_sodium(forced);
        cr_assert_eq(fl_chacha20_ietf(out, sizeof out, nonce, 1, key), FL_OK);
        cr_expect_eq(memcmp(out, want, sizeof want), 0, "path %s",
                     forced ? "libsodium" : "OpenSSL");
    }
    fl_keystream_test_force_sodium(0);
}

Test(keystream, equals_libsodium_for_lengths_counters_and_nonces)
{
    static const size_t lens[] = {1, 63, 64, 65, 1000, 16384, 65535, 65536, 65537, 200003};
    static const uint32_t ics[] = {0, 1, 7, 100000, 0xffffffffu - 3125u};
    uint8_t *a = malloc(200003), *b = malloc(200003), *zero = calloc(1, 200003);
    cr_assert(a && b && zero && sodium_init() >= 0);
    uint8_t key[32], nonce[12];
    size_t cases = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t ci = 0; ci < sizeof ics / sizeof ics[0]; ci++) {
            size_t n = lens[li];
            if ((uint64_t)ics[ci] + (n + 63) / 64 > ((uint64_t)1 << 32))
                continue;
            randombytes_buf(key, sizeof key);
            randombytes_buf(nonce, sizeof nonce);
            crypto_stream_chacha20_ietf_xor_ic(b, zero, n, nonce, ics[ci], key);
            for (int forced = 0; forced < 2; forced++) {
                memset(a, 0x5a, n);
                fl_keystream_test_force_sodium(forced);
                cr_assert_eq(fl_chacha20_ietf(a, n, nonce, ics[ci], key), FL_OK, "%s",
                             fl_error_last());
                cr_assert_eq(memcmp(a, b, n), 0, "length %zu, counter %u, path %s", n, ics[ci],
                             forced ? "libsodium" : "OpenSSL");
                cases++;
            }
        }
    fl_keystream_test_force_sodium(0);
    cr_expect_eq(cases, 2 * 50); /* the last counter ends the longest exactly at 2^32 - 1 */
    /* a fresh context after freeing this thread's */
    fl_keystream_thread_free();
    crypto_stream_chacha20_ietf_xor_ic(b, zero, 300, nonce, 5, key);
    cr_assert_eq(fl_chacha20_ietf(a, 300, nonce, 5, key), FL_OK);
    cr_expect_eq(memcmp(a, b, 300), 0);
    free(a);
    free(b);
    free(zero);
}

Test(keystream, refuses_a_wrapping_counter_and_null_buffers)
{
    uint8_t key[32] = {1}, nonce[12] = {2}, out[128];
    cr_expect_eq(fl_chacha20_ietf(out, 128, nonce, 0xffffffffu, key), FL_EINVAL,
                 "two blocks from the last counter value would wrap");
    cr_expect_eq(fl_chacha20_ietf(out, 64, nonce, 0xffffffffu, key), FL_OK,
                 "the last block itself is fine");
    cr_expect_eq(fl_chacha20_ietf(NULL, 64, nonce, 0, key), FL_EINVAL);
    cr_expect_eq(fl_chacha20_ietf(out, 64, NULL, 0, key), FL_EINVAL);
    cr_expect_eq(fl_chacha20_ietf(out, 64, nonce, 0, NULL), FL_EINVAL);
    cr_expect_eq(fl_chacha20_ietf(NULL, 0, NULL, 0, NULL), FL_OK);
}
