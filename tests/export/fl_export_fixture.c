/*
 * fl_export_fixture: writes the files the independent export checks read
 * (check_safetensors.py, check_onnx.py, check_onnx_ort.mjs).
 *
 *   fl_export_fixture OUTDIR
 *
 * For each model - the WDBC MLP 30,128,64,1 (sigmoid), a 784,64,10 softmax
 * MLP and the CNN "input 28x28x1; conv 4 3; pool 2; conv 8 3; pool 2;
 * dense 10" - it draws deterministic parameters, exports them, and writes a
 * batch of inputs and the C model's predictions on them:
 *   NAME.safetensors, NAME.onnx   the exports (version 7)
 *   NAME.input.f32                n x inputs little-endian floats (NCHW)
 *   NAME.pred.f32                 n x outputs, the C model's probabilities
 *                                 (fl_mlp, or fl_model for the CNN when the
 *                                 build has it; absent otherwise)
 *   NAME.json                     {"input_shape":[...],"outputs":K,"n":n,
 *                                  "sha256":...,"version":7}
 * The image models take the first Fashion-MNIST test images when
 * /usr/share/datasets/fashion-mnist is installed, else uniform noise.
 */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export/fl_export.h"
#include "nn/fl_idx.h"
#include "nn/fl_mlp.h"
#include "nn/fl_model_spec.h"
#include "storage/fl_storage.h"
#ifdef FL_EXPORT_HAVE_MODEL
#include "nn/fl_model.h"
#endif

#define S_N 16
#define S_VERSION 7
#define S_FASHION "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

typedef struct {
    const char *name;
    const char *spec;
    uint32_t output_kind;
} s_case;

static uint64_t s_state = 0x9e3779b97f4a7c15ull;

/* splitmix64: a fixed, portable sequence (the checks only need the same
 * numbers in every file of one run). */
static double s_uniform(void)
{
    uint64_t z = (s_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static int s_die(const char *what)
{
    fprintf(stderr, "fl_export_fixture: %s: %s\n", what, fl_error_last());
    return 1;
}

static int s_write_floats(const char *dir, const char *name, const char *ext, const float *v,
                          size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext);
    return fl_storage_write_atomic(path, v, n * sizeof *v, 0644);
}

/* He-uniform weights U(-sqrt(6/fan_in), +) and small non-zero biases, so
 * that a bias written in the wrong place shows in the predictions. */
static void s_params(const fl_model_spec *sp, float *p)
{
    uint32_t c = sp->in_c, h = sp->in_h, w = sp->in_w;
    size_t off = 0;
    for (uint32_t i = 0; i < sp->num_layers; i++) {
        const fl_layer_spec *l = &sp->layers[i];
        size_t fan_in, nw;
        double a;
        if (l->kind == FL_LAYER_POOL) {
            h /= 2;
            w /= 2;
            continue;
        }
        if (l->kind == FL_LAYER_CONV) {
            fan_in = (size_t)c * l->kernel * l->kernel;
            nw = fan_in * l->units;
            h = h - l->kernel + 1;
            w = w - l->kernel + 1;
        } else {
            fan_in = (size_t)c * h * w;
            nw = fan_in * l->units;
            h = w = 1;
        }
        c = l->units;
        a = sqrt(6.0 / (double)fan_in);
        for (size_t k = 0; k < nw; k++)
            p[off++] = (float)((2.0 * s_uniform() - 1.0) * a);
        for (size_t k = 0; k < l->units; k++)
            p[off++] = (float)((2.0 * s_uniform() - 1.0) * 0.1);
    }
}

static void s_inputs(const fl_model_spec *sp, float *x, size_t per)
{
    fl_idx_images *im = NULL;
    if (per == 784 && fl_idx_load_images(&im, S_FASHION) == FL_OK && im->n >= S_N) {
        memcpy(x, im->pixels, S_N * per * sizeof *x);
        fl_idx_images_free(im);
        return;
    }
    fl_idx_images_free(im);
    for (size_t i = 0; i < S_N * per; i++)
        x[i] = per == 784 ? (float)s_uniform() : (float)(4.0 * s_uniform() - 2.0);
    (void)sp;
}

/* The C model's predictions; 0 if written, 1 on error, 2 if this build has
 * no C model for the spec. */
static int s_predict(const fl_model_spec *sp, const float *p, size_t np, const float *x,
                     float *probs)
{
    if (fl_model_spec_is_mlp(sp)) {
        uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
        size_t ns;
        fl_mlp *m = NULL;
        int rc;
        if (fl_model_spec_to_sizes(sp, sizes, &ns) != FL_OK ||
            fl_mlp_new(&m, sizes, ns, (fl_mlp_output)sp->output_kind) != FL_OK)
            return 1;
        memcpy(fl_mlp_params(m), p, np * sizeof *p);
        rc = fl_mlp_predict(m, x, S_N, probs);
        fl_mlp_free(m);
        return rc == FL_OK ? 0 : 1;
    }
#ifdef FL_EXPORT_HAVE_MODEL
    {
        fl_model *m = NULL;
        int rc;
        if (fl_model_new(&m, sp) != FL_OK)
            return 1;
        memcpy(fl_model_params(m), p, np * sizeof *p);
        rc = fl_model_predict(m, x, S_N, probs);
        fl_model_free(m);
        return rc == FL_OK ? 0 : 1;
    }
#else
    return 2;
#endif
}

static int s_case_run(const char *dir, const s_case *c)
{
    fl_model_spec sp;
    float *p = NULL, *x = NULL, *probs = NULL;
    size_t np, per, outs;
    unsigned char digest[crypto_hash_sha256_BYTES];
    char hex[65], path[1024], json[512];
    int rc = 1, pr;

    if (fl_model_spec_parse(&sp, c->spec, c->output_kind) != FL_OK)
        return s_die(c->spec);
    np = fl_model_spec_num_params(&sp);
    per = fl_model_spec_num_inputs(&sp);
    outs = fl_model_spec_num_outputs(&sp);
    p = malloc(np * sizeof *p);
    x = malloc(S_N * per * sizeof *x);
    probs = malloc(S_N * outs * sizeof *probs);
    if (!p || !x || !probs) {
        fprintf(stderr, "fl_export_fixture: out of memory\n");
        goto done;
    }
    s_params(&sp, p);
    s_inputs(&sp, x, per);
    /* The model's SHA-256 as the coordinator computes it: over the
     * parameters' little-endian bytes (this fixture runs on little-endian
     * machines only, checked in main). */
    crypto_hash_sha256(digest, (const unsigned char *)p, np * sizeof *p);
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);

    snprintf(path, sizeof path, "%s/%s.safetensors", dir, c->name);
    if (fl_export_safetensors(path, &sp, p, np, hex, S_VERSION) != FL_OK) {
        s_die(path);
        goto done;
    }
    snprintf(path, sizeof path, "%s/%s.onnx", dir, c->name);
    if (fl_export_onnx(path, &sp, p, np, hex, S_VERSION) != FL_OK) {
        s_die(path);
        goto done;
    }
    /* No stale predictions from an earlier run may stand in for these. */
    snprintf(path, sizeof path, "%s/%s.pred.f32", dir, c->name);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s.ref.f32", dir, c->name);
    unlink(path);
    if (s_write_floats(dir, c->name, "input.f32", x, S_N * per) != FL_OK) {
        s_die("input");
        goto done;
    }
    pr = s_predict(&sp, p, np, x, probs);
    if (pr == 1) {
        s_die("C model");
        goto done;
    }
    if (pr == 0 && s_write_floats(dir, c->name, "pred.f32", probs, S_N * outs) != FL_OK) {
        s_die("predictions");
        goto done;
    }
    if (fl_model_spec_is_mlp(&sp))
        snprintf(json, sizeof json, "{\"input_shape\":[%zu]", per);
    else
        snprintf(json, sizeof json, "{\"input_shape\":[%u,%u,%u]", sp.in_c, sp.in_h, sp.in_w);
    snprintf(json + strlen(json), sizeof json - strlen(json),
             ",\"outputs\":%zu,\"n\":%d,\"sha256\":\"%s\",\"version\":%d,\"c_predictions\":%s}"
             "\n", outs, S_N, hex, S_VERSION, pr == 0 ? "true" : "false");
    snprintf(path, sizeof path, "%s/%s.json", dir, c->name);
    if (fl_storage_write_atomic(path, json, strlen(json), 0644) != FL_OK) {
        s_die(path);
        goto done;
    }
    printf("%s: %s, %zu parameters, %s\n", c->name, c->spec, np,
           pr == 0 ? "C predictions written" : "no C model for this spec in this build");
    rc = 0;
done:
    free(p);
    free(x);
    free(probs);
    return rc;
}

int main(int argc, char **argv)
{
    static const s_case cases[] = {
        {"wdbc_mlp", "30,128,64,1", 1},
        {"fashion_mlp", "784,64,10", 2},
        {"fashion_cnn", "input 28x28x1; conv 4 3; pool 2; conv 8 3; pool 2; dense 10", 2},
    };
    const uint32_t one = 1;
    if (argc != 2) {
        fprintf(stderr, "usage: fl_export_fixture OUTDIR\n");
        return 2;
    }
    if (*(const unsigned char *)&one != 1) {
        fprintf(stderr, "fl_export_fixture: this fixture assumes a little-endian machine\n");
        return 1;
    }
    if (sodium_init() < 0 || fl_storage_mkdir(argv[1], 0755) != FL_OK)
        return s_die(argv[1]);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (s_case_run(argv[1], &cases[i]) != 0)
            return 1;
    return 0;
}
