/* Tests for fl_model_file: the on-disk layout checked byte by byte against
 * the documented format, bit-exact round trips, and rejection of damaged
 * files (bad magic, truncation, flipped bytes, counts that disagree). */
#include <criterion/criterion.h>
#include "tests/support/fl_test_dir.h"
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coordinator/fl_model_file.h"

static char s_dir[64];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "model");
    cr_assert_geq(sodium_init(), 0);
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(model_file, .init = s_setup, .fini = s_teardown);

static const char *s_path(const char *name)
{
    static char buf[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

static unsigned char *s_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = malloc(1 << 16);
    cr_assert_not_null(f);
    cr_assert_not_null(b);
    *len = fread(b, 1, 1 << 16, f);
    fclose(f);
    return b;
}

static void s_write(const char *path, const unsigned char *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static uint32_t s_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void s_put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* Model 3-2-1 (sigmoid): 3*2+2 + 2*1+1 = 11 parameters.
 * File: 8 magic + 4 kind + 3*4 input shape + 4 L + 2*12 layers + 8 count
 * + 11*4 params + 32 digest = 136 bytes; the layers start at 28, the count
 * at 52, params at 60, the digest at 104. */
static const uint32_t s_sizes[3] = {3, 2, 1};
#define S_NP 11
#define S_LEN 136
#define S_OFF_LAYERS 28
#define S_OFF_COUNT 52
#define S_OFF_PARAMS 60
#define S_OFF_DIGEST 104

static fl_model_spec s_spec(const uint32_t *sizes, size_t n, uint32_t kind)
{
    fl_model_spec sp;
    cr_assert_eq(fl_model_spec_from_sizes(&sp, sizes, n, kind), FL_OK, "%s", fl_error_last());
    return sp;
}

static void s_params(float p[S_NP])
{
    const float v[S_NP] = {0.5f, -1.25f, 3.0e-8f, -0.0f, 1e30f, -7.75f,
                           0.1f, 0.2f,   0.3f,    2.5f,  -1e-38f};
    memcpy(p, v, sizeof v);
}

static const char *s_saved(const char *name)
{
    float p[S_NP];
    const char *path = s_path(name);
    s_params(p);
    fl_model_spec sp = s_spec(s_sizes, 3, 1);
    cr_assert_eq(fl_model_file_save(path, &sp, p, S_NP), FL_OK, "%s", fl_error_last());
    return path;
}

static void s_rejects(const unsigned char *b, size_t len, const char *what)
{
    fl_model_file m;
    const char *p = s_path("damaged.bin");
    s_write(p, b, len);
    cr_assert_eq(fl_model_file_load(&m, p), FL_EPARSE, "len %zu: %s", len, fl_error_last());
    cr_assert_null(m.params);
    if (what)
        cr_assert_not_null(strstr(fl_error_last(), what), "'%s' should mention '%s'",
                           fl_error_last(), what);
}

Test(model_file, writes_the_documented_little_endian_layout)
{
    size_t len;
    float p[S_NP];
    uint8_t want[32];
    unsigned char raw[S_NP * 4];
    struct stat st;
    const char *path = s_saved("layout.bin");
    unsigned char *b = s_read(path, &len);

    s_params(p);
    cr_assert_eq(len, (size_t)S_LEN);
    cr_assert_arr_eq(b, "FLMODEL2", 8);
    cr_assert_eq(s_le32(b + 8), 1u, "output kind");
    cr_assert_eq(s_le32(b + 12), 3u, "input channels = features");
    cr_assert_eq(s_le32(b + 16), 1u, "input height");
    cr_assert_eq(s_le32(b + 20), 1u, "input width");
    cr_assert_eq(s_le32(b + 24), 2u, "number of layers");
    cr_assert_eq(s_le32(b + S_OFF_LAYERS), 1u, "dense");
    cr_assert_eq(s_le32(b + S_OFF_LAYERS + 4), 2u);
    cr_assert_eq(s_le32(b + S_OFF_LAYERS + 8), 0u);
    cr_assert_eq(s_le32(b + S_OFF_LAYERS + 12), 1u, "dense");
    cr_assert_eq(s_le32(b + S_OFF_LAYERS + 16), 1u);
    cr_assert_eq(s_le32(b + S_OFF_COUNT), 11u);
    cr_assert_eq(s_le32(b + S_OFF_COUNT + 4), 0u, "high half of the u64 count");
    /* params[0] = 0.5f = 0x3f000000 -> 00 00 00 3f */
    cr_assert_eq(b[S_OFF_PARAMS + 0], 0x00);
    cr_assert_eq(b[S_OFF_PARAMS + 3], 0x3f);
    /* params[3] = -0.0f = 0x80000000 */
    cr_assert_eq(s_le32(b + S_OFF_PARAMS + 12), 0x80000000u);
    /* The digest is SHA-256 of exactly the parameter bytes as stored. */
    memcpy(raw, b + S_OFF_PARAMS, sizeof raw);
    crypto_hash_sha256(want, raw, sizeof raw);
    cr_assert_arr_eq(b + S_OFF_DIGEST, want, 32);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644);
    free(b);
}

Test(model_file, round_trips_bit_exactly)
{
    fl_model_file m;
    float p[S_NP];
    const char *path = s_saved("rt.bin");
    s_params(p);
    uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
    size_t n = 0;
    cr_assert_eq(fl_model_file_load(&m, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(m.spec.output_kind, 1u);
    cr_assert_eq(fl_model_spec_to_sizes(&m.spec, sizes, &n), FL_OK);
    cr_assert_eq(n, 3u);
    cr_assert_arr_eq(sizes, s_sizes, sizeof s_sizes);
    cr_assert_eq(m.num_params, (size_t)S_NP);
    cr_assert_arr_eq(m.params, p, sizeof p, "every bit of every float, -0.0 included");
    cr_assert(signbit(m.params[3]));
    fl_model_file_clear(&m);
}

Test(model_file, round_trips_a_softmax_model)
{
    fl_model_file m;
    const uint32_t sizes[4] = {4, 5, 3, 2};
    float p[4 * 5 + 5 + 5 * 3 + 3 + 3 * 2 + 2]; /* 25 + 18 + 8 = 51 */
    const char *path = s_path("softmax.bin");
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        p[i] = (float)i / 7.0f - 3.0f;
    fl_model_spec sp = s_spec(sizes, 4, 2);
    cr_assert_eq(sizeof p / sizeof p[0], 51u);
    cr_assert_eq(fl_model_file_save(path, &sp, p, 51), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_model_file_load(&m, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(memcmp(&m.spec, &sp, sizeof sp), 0);
    cr_assert_eq(m.num_params, 51u);
    cr_assert_arr_eq(m.params, p, sizeof p);
    fl_model_file_clear(&m);
}

/* A small CNN: conv 2 3x3 on 6x6x1 is 2*9+2 = 20 parameters, leaving 4x4x2;
 * pooling leaves 2x2x2 = 8 inputs to dense 3: 8*3+3 = 27; 47 in all. */
Test(model_file, round_trips_a_cnn_and_records_its_layers)
{
    fl_model_file m;
    fl_model_spec sp;
    float p[47];
    size_t len;
    unsigned char *b;
    const char *path = s_path("cnn.bin");
    cr_assert_eq(fl_model_spec_parse(&sp, "input 6x6x1; conv 2 3; pool 2; dense 3", 2), FL_OK,
                 "%s", fl_error_last());
    for (size_t i = 0; i < 47; i++)
        p[i] = (float)i * 0.25f - 5.0f;
    cr_assert_eq(fl_model_file_save(path, &sp, p, 47), FL_OK, "%s", fl_error_last());
    b = s_read(path, &len);
    cr_assert_eq(len, 8 + 20 + 3 * 12 + 8 + 47 * 4 + 32);
    cr_assert_eq(s_le32(b + 12), 1u, "channels");
    cr_assert_eq(s_le32(b + 16), 6u, "height");
    cr_assert_eq(s_le32(b + 28), 2u, "conv");
    cr_assert_eq(s_le32(b + 32), 2u, "conv channels");
    cr_assert_eq(s_le32(b + 36), 3u, "conv kernel");
    cr_assert_eq(s_le32(b + 40), 3u, "pool");
    cr_assert_eq(s_le32(b + 64), 47u, "count");
    free(b);
    cr_assert_eq(fl_model_file_load(&m, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(memcmp(&m.spec, &sp, sizeof sp), 0);
    cr_assert_arr_eq(m.params, p, sizeof p);
    fl_model_file_clear(&m);
    cr_assert_eq(fl_model_file_save(path, &sp, p, 46), FL_EINVAL);
}

/* Files written before CNNs (magic FLMODEL1: kind, sizes, count, params,
 * digest) are still read; the bytes are built here by hand. */
Test(model_file, reads_the_first_layout)
{
    unsigned char b[112];
    float p[S_NP];
    fl_model_file m;
    uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
    size_t n = 0;
    const char *path = s_path("v1.bin");
    s_params(p);
    memcpy(b, "FLMODEL1", 8);
    s_put_le32(b + 8, 1);
    s_put_le32(b + 12, 3);
    s_put_le32(b + 16, 3);
    s_put_le32(b + 20, 2);
    s_put_le32(b + 24, 1);
    s_put_le32(b + 28, S_NP);
    s_put_le32(b + 32, 0);
    for (size_t i = 0; i < S_NP; i++) {
        uint32_t u;
        memcpy(&u, &p[i], 4);
        s_put_le32(b + 36 + 4 * i, u);
    }
    crypto_hash_sha256(b + 80, b + 36, S_NP * 4);
    s_write(path, b, sizeof b);
    cr_assert_eq(fl_model_file_load(&m, path), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_model_spec_to_sizes(&m.spec, sizes, &n), FL_OK);
    cr_assert_eq(n, 3u);
    cr_assert_arr_eq(sizes, s_sizes, sizeof s_sizes);
    cr_assert_arr_eq(m.params, p, sizeof p);
    fl_model_file_clear(&m);
    b[100] ^= 1;
    s_write(path, b, sizeof b);
    cr_assert_eq(fl_model_file_load(&m, path), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "checksum"), "%s", fl_error_last());
}

Test(model_file, save_rejects_a_count_that_does_not_match_the_sizes)
{
    float p[S_NP + 1] = {0};
    fl_model_spec sp = s_spec(s_sizes, 3, 1), bad = sp;
    cr_assert_eq(fl_model_file_save(s_path("bad.bin"), &sp, p, S_NP + 1), FL_EINVAL);
    cr_assert_eq(fl_model_file_save(s_path("bad.bin"), &sp, p, S_NP - 1), FL_EINVAL);
    bad.num_layers = 0;
    cr_assert_eq(fl_model_file_save(s_path("bad.bin"), &bad, p, 0), FL_EINVAL);
}

Test(model_file, load_of_a_missing_file_is_an_io_error)
{
    fl_model_file m;
    cr_assert_eq(fl_model_file_load(&m, s_path("absent.bin")), FL_EIO);
    cr_assert_null(m.params);
}

Test(model_file, load_rejects_a_bad_magic)
{
    size_t len;
    unsigned char *b = s_read(s_saved("magic.bin"), &len);
    b[7] = '3'; /* "FLMODEL3" */
    s_rejects(b, len, "bad magic");
    free(b);
}

Test(model_file, load_rejects_every_truncation)
{
    size_t len;
    unsigned char *b = s_read(s_saved("trunc.bin"), &len);
    cr_assert_eq(len, (size_t)S_LEN);
    for (size_t cut = 0; cut < len; cut++)
        s_rejects(b, cut, NULL);
    free(b);
}

Test(model_file, load_rejects_trailing_bytes)
{
    size_t len;
    unsigned char *b = s_read(s_saved("long.bin"), &len);
    b[len] = 0;
    s_rejects(b, len + 1, "expected 136");
    free(b);
}

Test(model_file, load_rejects_a_flipped_byte_in_params_or_digest)
{
    size_t len;
    unsigned char *b = s_read(s_saved("flip.bin"), &len);
    for (size_t off = S_OFF_PARAMS; off < S_LEN; off += 5) {
        b[off] ^= 0x10;
        s_rejects(b, len, "checksum");
        b[off] ^= 0x10;
    }
    free(b);
}

Test(model_file, load_rejects_a_param_count_that_does_not_match_the_sizes)
{
    size_t len;
    unsigned char *b = s_read(s_saved("count.bin"), &len);
    s_put_le32(b + S_OFF_COUNT, 12);
    s_rejects(b, len, "parameter count");
    s_put_le32(b + S_OFF_COUNT, 0);
    s_rejects(b, len, "parameter count");
    /* 11 + 2^32: the low half alone would match. */
    s_put_le32(b + S_OFF_COUNT, 11);
    s_put_le32(b + S_OFF_COUNT + 4, 1);
    s_rejects(b, len, "parameter count");
    s_put_le32(b + S_OFF_COUNT + 4, 0);
    /* First layer widened to 3 units (3*3+3+3+1 = 16 params) under a count of 11. */
    s_put_le32(b + S_OFF_LAYERS + 4, 3);
    s_rejects(b, len, "parameter count");
    /* A zero width. */
    s_put_le32(b + S_OFF_LAYERS + 4, 0);
    s_rejects(b, len, "dense 0");
    free(b);
}

Test(model_file, load_rejects_a_bad_output_kind_layer_count_or_layer)
{
    size_t len;
    unsigned char *b = s_read(s_saved("kind.bin"), &len);
    s_put_le32(b + 8, 3);
    s_rejects(b, len, "output kind");
    s_put_le32(b + 8, 0);
    s_rejects(b, len, "output kind");
    s_put_le32(b + 8, 1);
    s_put_le32(b + 24, 0);
    s_rejects(b, len, "layers is out of range");
    s_put_le32(b + 24, 17);
    s_rejects(b, len, "layers is out of range");
    s_put_le32(b + 24, 0xffffffffu);
    s_rejects(b, len, "layers is out of range");
    s_put_le32(b + 24, 2);
    s_put_le32(b + S_OFF_LAYERS, 9); /* unknown layer kind */
    s_rejects(b, len, "unknown kind");
    s_put_le32(b + S_OFF_LAYERS, 3); /* pool on a 3x1x1 input */
    s_rejects(b, len, "pool");
    free(b);
}
