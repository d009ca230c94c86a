/*
 * fuzz_support: deterministic randomness, fixed identities and scratch
 * directories for the fuzz targets (see fuzz_support.h).
 */
/* nftw is an X/Open extension. */
#define _XOPEN_SOURCE 700

#include "fuzz/fuzz_support.h"

#include <ftw.h>
#include <stdint.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* ------------------------------------------------- deterministic randomness */

/* ChaCha20 keystream under a fixed key; every call takes the next block of
 * the stream (one nonce per call), so the output depends only on the number
 * and sizes of the calls since the last rewind. */
static const uint8_t s_key[crypto_stream_chacha20_KEYBYTES] = "flc fuzz: deterministic stream";
static uint64_t s_calls;

static void s_rng_buf(void *buf, size_t size)
{
    uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
    uint64_t c = s_calls++;
    for (size_t i = 0; i < sizeof nonce; i++)
        nonce[i] = (uint8_t)(c >> (8 * i));
    memset(buf, 0, size);
    crypto_stream_chacha20_xor(buf, buf, size, nonce, s_key);
}

static uint32_t s_rng_random(void)
{
    uint32_t v;
    s_rng_buf(&v, sizeof v);
    return v;
}

static const char *s_rng_name(void)
{
    return "flc-fuzz-deterministic";
}

static struct randombytes_implementation s_rng = {
    .implementation_name = s_rng_name,
    .random = s_rng_random,
    .stir = NULL,
    .uniform = NULL,
    .buf = s_rng_buf,
    .close = NULL,
};

void fuzz_init(void)
{
    static int installed;
    if (!installed) {
        /* Must precede sodium_init, which may draw from the source. */
        if (randombytes_set_implementation(&s_rng) != 0)
            abort();
        installed = 1;
    }
    if (sodium_init() < 0)
        abort();
    s_calls = 0;
}

size_t fuzz_identity_text(unsigned index, char *text, size_t cap)
{
    char seed_z85[64], sign_z85[64], curve_z85[64];
    uint8_t seed[32], sign_pk[32], sign_sk[64], curve_pk[32];
    int len;

    /* The seed is public on purpose: these identities exist for fuzzing. */
    memset(seed, 0, sizeof seed);
    snprintf((char *)seed, sizeof seed, "flc fuzz identity %u", index);
    crypto_sign_seed_keypair(sign_pk, sign_sk, seed);
    if (crypto_sign_ed25519_pk_to_curve25519(curve_pk, sign_pk) != 0)
        abort();
    sodium_memzero(sign_sk, sizeof sign_sk);
    if (!zmq_z85_encode(seed_z85, seed, 32) || !zmq_z85_encode(sign_z85, sign_pk, 32) ||
        !zmq_z85_encode(curve_z85, curve_pk, 32))
        abort();
    len = snprintf(text, cap,
                   "# fuzz identity %u\nidentity-seed = %s\nidentity-key = %s\npublic-key = %s\n",
                   index, seed_z85, sign_z85, curve_z85);
    if (len < 0 || (size_t)len >= cap)
        abort();
    return (size_t)len;
}

fl_identity *fuzz_identity(unsigned index)
{
    fuzz_dir d;
    fl_identity *id = NULL;
    char path[600], text[512];
    size_t len = fuzz_identity_text(index, text, sizeof text);

    fuzz_dir_new(&d);
    fuzz_dir_write(&d, "id.key", (const uint8_t *)text, len, path, sizeof path);
    if (fl_identity_load(&id, path) != FL_OK) {
        fprintf(stderr, "fuzz: cannot load the fixed identity: %s\n", fl_error_last());
        abort();
    }
    fuzz_dir_remove(&d);
    return id;
}

/* --------------------------------------------------- guarded allocations */

/* libsodium's guarded allocator costs about six system calls per
 * allocation (mmap, guard-page mprotect, mlock, and as many to free); a
 * secure-aggregation round makes dozens, which would slow those targets to
 * a crawl. Fuzz and replay binaries (which alone link this file) replace
 * it with malloc: ASan's redzones and leak checker then watch these
 * buffers more closely than guard pages do. The fill byte is libsodium's,
 * so code that relied on zeroed memory would still be caught. */
#define S_HDR 16u /* keeps malloc's 16-byte alignment */

void *sodium_malloc(size_t size)
{
    unsigned char *p;
    if (size > SIZE_MAX - S_HDR)
        return NULL;
    p = malloc(S_HDR + size);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    memset(p + S_HDR, 0xdb, size);
    return p + S_HDR;
}

void *sodium_allocarray(size_t count, size_t size)
{
    if (count > 0 && size >= SIZE_MAX / count)
        return NULL;
    return sodium_malloc(count * size);
}

void sodium_free(void *ptr)
{
    unsigned char *p = ptr;
    size_t size;
    if (!p)
        return;
    memcpy(&size, p - S_HDR, sizeof size);
    sodium_memzero(p, size);
    free(p - S_HDR);
}

/* ------------------------------------------------------------ directories */

void fuzz_dir_new(fuzz_dir *d)
{
    const char *tmp = getenv("TMPDIR");
    size_t n;
    if (!tmp || !tmp[0])
        tmp = "/tmp";
    n = (size_t)snprintf(d->path, sizeof d->path, "%s/flc-fuzz-", tmp);
    if (n + 7 > sizeof d->path)
        abort();
    /* mkdtemp's template suffix, spelled without writing it out. */
    memset(d->path + n, 'X', 6);
    d->path[n + 6] = '\0';
    if (!mkdtemp(d->path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
}

void fuzz_dir_write(const fuzz_dir *d, const char *name, const uint8_t *data, size_t len,
                    char *path, size_t cap)
{
    FILE *f;
    if ((size_t)snprintf(path, cap, "%s/%s", d->path, name) >= cap)
        abort();
    f = fopen(path, "wb");
    if (!f) {
        perror("fuzz: fopen");
        abort();
    }
    if (chmod(path, 0600) != 0 || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror("fuzz: write");
        abort();
    }
}

static int s_remove(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

void fuzz_dir_remove(fuzz_dir *d)
{
    if (d->path[0] && nftw(d->path, s_remove, 16, FTW_DEPTH | FTW_PHYS) != 0)
        perror("fuzz: removing the scratch directory");
    d->path[0] = '\0';
}

void fuzz_hex(char *out, const uint8_t *in, size_t n)
{
    sodium_bin2hex(out, 2 * n + 1, in, n);
}
