/*
 * fl_keystream: the ChaCha20 keystream (RFC 8439: 256-bit key, 96-bit
 * nonce, 32-bit block counter) behind the DP noise (dp/fl_noise) and the
 * secure-aggregation masks (secagg).  Computed by OpenSSL's libcrypto
 * (EVP ChaCha20, with AVX-512 code: ~6 GB/s on this project's machines
 * against ~2 GB/s for libsodium 1.0.18), and bit-identical to libsodium's
 * crypto_stream_chacha20_ietf_xor_ic on zeros, which is the fallback when
 * no EVP context can be had -- so every party derives the same masks
 * whichever library computes them (tests/keystream checks the two
 * against each other).
 */
#ifndef FL_KEYSTREAM_H
#define FL_KEYSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"

/** Writes len bytes of the ChaCha20 keystream for key and nonce, starting
 *  at block ic (64-byte blocks), into out.  The same bytes as libsodium's
 *  crypto_stream_chacha20_ietf_xor_ic(out, zeros, len, nonce, ic, key).
 *  The calling thread's cipher context is re-keyed with zeros before
 *  returning, so no key stays in it between calls (it is freed, and
 *  cleansed, when the thread exits or on fl_keystream_thread_free).
 *  Errors: FL_EINVAL (NULL buffer with len > 0; ic + ceil(len / 64) above
 *  2^32, where the 32-bit block counter would wrap; len above INT_MAX). */
FL_NODISCARD int fl_chacha20_ietf(uint8_t *out, size_t len, const uint8_t nonce[12],
                                  uint32_t ic, const uint8_t key[32]);

/** Frees (and cleanses) the calling thread's cipher context now; the next
 *  call makes a new one.  Threads that exit free theirs themselves. */
void fl_keystream_thread_free(void);

/** Test hook: 1 makes the calling thread use libsodium instead of OpenSSL
 *  (the fallback path), 0 restores the default. */
void fl_keystream_test_force_sodium(int on);

#endif
