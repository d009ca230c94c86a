/*
 * fl_keystream: ChaCha20 keystream through OpenSSL's EVP interface, with
 * libsodium as the fallback (see fl_keystream.h).
 *
 * OpenSSL's EVP ChaCha20 takes a 16-byte IV: the 32-bit block counter
 * (little endian), then the 96-bit nonce -- RFC 8439's state layout, the
 * same as libsodium's IETF variant with its initial counter.  One context
 * per thread (pthread key, freed at thread exit) avoids allocating per
 * call; re-keying it costs ~0.1 us, against ~2.7 us for a 16 KiB block.
 */
#include "keystream/fl_keystream.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#define S_ZERO_BYTES 65536

static const unsigned char s_zero[S_ZERO_BYTES];
static EVP_CIPHER *s_cipher; /* fetched once; one reachable object, never freed */
static pthread_key_t s_key;
static int s_key_ok;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static _Thread_local int s_force_sodium;

static void s_ctx_free(void *p)
{
    EVP_CIPHER_CTX_free(p); /* cleanses the cipher state */
}

static void s_init(void)
{
    s_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20", NULL);
    s_key_ok = pthread_key_create(&s_key, s_ctx_free) == 0;
}

/* The calling thread's context, initialised for ChaCha20; NULL if none
 * can be had (the caller then uses libsodium). */
static EVP_CIPHER_CTX *s_ctx(void)
{
    pthread_once(&s_once, s_init);
    if (!s_cipher || !s_key_ok)
        return NULL;
    EVP_CIPHER_CTX *c = pthread_getspecific(s_key);
    if (c)
        return c;
    c = EVP_CIPHER_CTX_new();
    if (!c)
        return NULL;
    if (EVP_EncryptInit_ex2(c, s_cipher, NULL, NULL, NULL) != 1 ||
        pthread_setspecific(s_key, c) != 0) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

void fl_keystream_thread_free(void)
{
    pthread_once(&s_once, s_init);
    if (!s_key_ok)
        return;
    EVP_CIPHER_CTX *c = pthread_getspecific(s_key);
    if (c) {
        (void)pthread_setspecific(s_key, NULL);
        EVP_CIPHER_CTX_free(c);
    }
}

void fl_keystream_test_force_sodium(int on)
{
    s_force_sodium = on != 0;
}

/* OpenSSL's keystream into out; 0 if EVP failed (out then wiped). */
static int s_evp(EVP_CIPHER_CTX *c, uint8_t *out, size_t len, const uint8_t iv[16],
                 const uint8_t key[32])
{
    static const uint8_t zero_iv[16];
    int ok = EVP_EncryptInit_ex2(c, NULL, key, iv, NULL) == 1;
    for (size_t off = 0; ok && off < len; off += S_ZERO_BYTES) {
        size_t m = len - off < S_ZERO_BYTES ? len - off : S_ZERO_BYTES;
        int outl = 0;
        ok = EVP_EncryptUpdate(c, out + off, &outl, s_zero, (int)m) == 1 && (size_t)outl == m;
    }
    /* no live key left in the context between calls */
    if (EVP_EncryptInit_ex2(c, NULL, s_zero, zero_iv, NULL) != 1) {
        fl_keystream_thread_free(); /* frees (cleanses) it; the next call makes another */
    }
    if (!ok)
        sodium_memzero(out, len);
    return ok;
}

int fl_chacha20_ietf(uint8_t *out, size_t len, const uint8_t nonce[12], uint32_t ic,
                     const uint8_t key[32])
{
    if (len == 0)
        return FL_OK;
    if (!out || !nonce || !key)
        return fl_error_set(FL_EINVAL, "fl_chacha20_ietf: out, nonce and key must not be NULL");
    if (len > INT_MAX || (uint64_t)ic + (len + 63) / 64 > ((uint64_t)1 << 32))
        return fl_error_set(FL_EINVAL, "fl_chacha20_ietf: %zu bytes from block %u would "
                            "wrap the 32-bit block counter (or exceed INT_MAX); use "
                            "another nonce for the rest", len, ic);
    if (!s_force_sodium) {
        EVP_CIPHER_CTX *c = s_ctx();
        if (c) {
            uint8_t iv[16];
            for (int k = 0; k < 4; k++)
                iv[k] = (uint8_t)(ic >> (8 * k));
            memcpy(iv + 4, nonce, 12);
            if (s_evp(c, out, len, iv, key))
                return FL_OK;
        }
    }
    /* libsodium: the same keystream (its own code) */
    for (size_t off = 0; off < len; off += S_ZERO_BYTES) {
        size_t m = len - off < S_ZERO_BYTES ? len - off : S_ZERO_BYTES;
        crypto_stream_chacha20_ietf_xor_ic(out + off, s_zero, m, nonce,
                                           ic + (uint32_t)(off / 64), key);
    }
    return FL_OK;
}
