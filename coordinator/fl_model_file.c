/*
 * fl_model_file: model files (see fl_model_file.h).
 */
#include "coordinator/fl_model_file.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fl_wire.h"
#include "storage/fl_storage.h"

static const char s_magic1[8] = {'F', 'L', 'M', 'O', 'D', 'E', 'L', '1'};
static const char s_magic2[8] = {'F', 'L', 'M', 'O', 'D', 'E', 'L', '2'};

static void s_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t s_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int fl_model_file_save(const char *path, const fl_model_spec *spec, const float *params,
                       size_t num_params)
{
    size_t len, off = 0;
    unsigned char *buf;
    int rc;

    if (fl_model_spec_validate(spec) != FL_OK)
        return fl_error_wrap(FL_EINVAL, "cannot save model '%s'", path);
    if (fl_model_spec_num_params(spec) != num_params)
        return fl_error_set(FL_EINVAL, "model '%s': the spec has %zu parameters, not %zu", path,
                            fl_model_spec_num_params(spec), num_params);
    len = 8 + 4 * 5 + 12 * (size_t)spec->num_layers + 8 + 4 * num_params + 32;
    buf = malloc(len);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory writing '%s'", path);
    memcpy(buf, s_magic2, 8);
    off = 8;
    s_put32(buf + off, spec->output_kind);
    s_put32(buf + off + 4, spec->in_c);
    s_put32(buf + off + 8, spec->in_h);
    s_put32(buf + off + 12, spec->in_w);
    s_put32(buf + off + 16, spec->num_layers);
    off += 20;
    for (uint32_t i = 0; i < spec->num_layers; i++, off += 12) {
        s_put32(buf + off, spec->layers[i].kind);
        s_put32(buf + off + 4, spec->layers[i].units);
        s_put32(buf + off + 8, spec->layers[i].kernel);
    }
    s_put32(buf + off, (uint32_t)num_params);
    s_put32(buf + off + 4, (uint32_t)((uint64_t)num_params >> 32));
    off += 8;
    for (size_t i = 0; i < num_params; i++, off += 4) {
        uint32_t u;
        memcpy(&u, &params[i], 4);
        s_put32(buf + off, u);
    }
    fl_wire_model_digest(params, num_params, buf + off);
    rc = fl_storage_write_atomic(path, buf, len, 0644);
    free(buf);
    return rc;
}

void fl_model_file_clear(fl_model_file *m)
{
    if (!m)
        return;
    free(m->params);
    memset(m, 0, sizeof *m);
}

/* Reads the spec of either layout at buf (len bytes); *off receives where
 * the parameter count starts. */
static int s_read_spec(fl_model_file *m, const unsigned char *buf, size_t len, size_t *off,
                       const char *path)
{
    if (len >= 16 && memcmp(buf, s_magic1, 8) == 0) {
        uint32_t sizes[FL_SPEC_MAX_LAYERS + 1];
        uint32_t kind = s_get32(buf + 8), n = s_get32(buf + 12);
        if (n < 2 || n > FL_SPEC_MAX_LAYERS + 1)
            return fl_error_set(FL_EPARSE, "'%s': %u layer sizes is out of range (2..%d)", path,
                                n, FL_SPEC_MAX_LAYERS + 1);
        if (len < 16 + 4 * (size_t)n + 8)
            return fl_error_set(FL_EPARSE, "'%s' is truncated", path);
        for (uint32_t i = 0; i < n; i++)
            sizes[i] = s_get32(buf + 16 + 4 * (size_t)i);
        *off = 16 + 4 * (size_t)n;
        if (fl_model_spec_from_sizes(&m->spec, sizes, n, kind) != FL_OK)
            return fl_error_wrap(FL_EPARSE, "'%s': invalid model", path);
        return FL_OK;
    }
    if (len >= 28 && memcmp(buf, s_magic2, 8) == 0) {
        fl_model_spec *s = &m->spec;
        s->output_kind = s_get32(buf + 8);
        s->in_c = s_get32(buf + 12);
        s->in_h = s_get32(buf + 16);
        s->in_w = s_get32(buf + 20);
        s->num_layers = s_get32(buf + 24);
        if (s->num_layers < 1 || s->num_layers > FL_SPEC_MAX_LAYERS)
            return fl_error_set(FL_EPARSE, "'%s': %u layers is out of range (1..%d)", path,
                                s->num_layers, FL_SPEC_MAX_LAYERS);
        if (len < 28 + 12 * (size_t)s->num_layers + 8)
            return fl_error_set(FL_EPARSE, "'%s' is truncated", path);
        for (uint32_t i = 0; i < s->num_layers; i++) {
            const unsigned char *p = buf + 28 + 12 * (size_t)i;
            s->layers[i].kind = s_get32(p);
            s->layers[i].units = s_get32(p + 4);
            s->layers[i].kernel = s_get32(p + 8);
        }
        *off = 28 + 12 * (size_t)s->num_layers;
        if (fl_model_spec_validate(s) != FL_OK)
            return fl_error_wrap(FL_EPARSE, "'%s': invalid model", path);
        return FL_OK;
    }
    return fl_error_set(FL_EPARSE, "'%s' is not a model file (bad magic)", path);
}

int fl_model_file_load(fl_model_file *m, const char *path)
{
    unsigned char *buf = NULL;
    size_t len = 0, off = 0, need;
    uint8_t digest[32];
    uint64_t np;
    int rc;

    memset(m, 0, sizeof *m);
    rc = fl_storage_read_all(path, 28 + 12 * (size_t)FL_SPEC_MAX_LAYERS + 8 +
                                       4 * (size_t)FL_SPEC_MAX_PARAMS + 32,
                             &buf, &len);
    if (rc != FL_OK)
        return rc;
    if ((rc = s_read_spec(m, buf, len, &off, path)) != FL_OK)
        goto done;
    rc = FL_EPARSE;
    np = s_get32(buf + off) | (uint64_t)s_get32(buf + off + 4) << 32;
    off += 8;
    if (np == 0 || np != fl_model_spec_num_params(&m->spec)) {
        fl_error_set(rc, "'%s': parameter count %llu does not match the model's layers (%zu)",
                     path, (unsigned long long)np, fl_model_spec_num_params(&m->spec));
        goto done;
    }
    need = off + 4 * (size_t)np + 32;
    if (len != need) {
        fl_error_set(rc, "'%s' is %zu bytes, expected %zu", path, len, need);
        goto done;
    }
    m->num_params = (size_t)np;
    m->params = malloc(4 * m->num_params);
    if (!m->params) {
        rc = fl_error_set(FL_ENOMEM, "out of memory reading '%s'", path);
        goto done;
    }
    for (size_t i = 0; i < m->num_params; i++, off += 4) {
        uint32_t u = s_get32(buf + off);
        memcpy(&m->params[i], &u, 4);
    }
    fl_wire_model_digest(m->params, m->num_params, digest);
    if (sodium_memcmp(digest, buf + off, 32) != 0) {
        fl_error_set(rc, "'%s': checksum mismatch, the file is damaged", path);
        goto done;
    }
    rc = FL_OK;
done:
    if (rc != FL_OK)
        fl_model_file_clear(m);
    free(buf);
    return rc;
}
