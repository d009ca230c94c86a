/*
 * fl_model_file: model files (see fl_model_file.h).
 */
#include "coordinator/fl_model_file.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "proto/fl_wire.h"
#include "storage/fl_storage.h"

static const char s_magic[8] = {'F', 'L', 'M', 'O', 'D', 'E', 'L', '1'};

static void s_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t s_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int fl_model_file_save(const char *path, uint32_t output_kind, const uint32_t *sizes,
                       uint32_t num_sizes, const float *params, size_t num_params)
{
    size_t len, off = 0;
    unsigned char *buf;
    int rc;

    if ((output_kind != 1 && output_kind != 2) || num_sizes < 2 ||
        num_sizes > FL_MODEL_FILE_MAX_LAYERS ||
        fl_wire_spec_num_params(sizes, num_sizes) != num_params)
        return fl_error_set(FL_EINVAL, "model shape (output kind %u, %u layer sizes) does not "
                            "match its %zu parameters", output_kind, num_sizes, num_params);
    len = 8 + 4 + 4 + 4 * (size_t)num_sizes + 8 + 4 * num_params + 32;
    buf = malloc(len);
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory writing '%s'", path);
    memcpy(buf, s_magic, 8);
    off = 8;
    s_put32(buf + off, output_kind);
    off += 4;
    s_put32(buf + off, num_sizes);
    off += 4;
    for (uint32_t i = 0; i < num_sizes; i++, off += 4)
        s_put32(buf + off, sizes[i]);
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

int fl_model_file_load(fl_model_file *m, const char *path)
{
    unsigned char *buf = NULL;
    size_t len = 0, off, need;
    uint8_t digest[32];
    uint64_t np;
    int rc;

    memset(m, 0, sizeof *m);
    rc = fl_storage_read_all(path, 8 + 12 + 4 * FL_MODEL_FILE_MAX_LAYERS + 8 +
                                       4 * (size_t)FL_WIRE_MAX_PARAMS + 32,
                             &buf, &len);
    if (rc != FL_OK)
        return rc;
    rc = FL_EPARSE;
    if (len < 16 || memcmp(buf, s_magic, 8) != 0) {
        fl_error_set(rc, "'%s' is not a model file (bad magic)", path);
        goto done;
    }
    m->output_kind = s_get32(buf + 8);
    m->num_sizes = s_get32(buf + 12);
    if ((m->output_kind != 1 && m->output_kind != 2) || m->num_sizes < 2 ||
        m->num_sizes > FL_MODEL_FILE_MAX_LAYERS) {
        fl_error_set(rc, "'%s': invalid output kind or layer count", path);
        goto done;
    }
    off = 16;
    if (len < off + 4 * (size_t)m->num_sizes + 8) {
        fl_error_set(rc, "'%s' is truncated", path);
        goto done;
    }
    for (uint32_t i = 0; i < m->num_sizes; i++, off += 4)
        m->sizes[i] = s_get32(buf + off);
    np = s_get32(buf + off) | (uint64_t)s_get32(buf + off + 4) << 32;
    off += 8;
    if (np == 0 || np != fl_wire_spec_num_params(m->sizes, m->num_sizes)) {
        fl_error_set(rc, "'%s': parameter count does not match the layer sizes", path);
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
    if (rc != FL_OK) {
        free(m->params);
        memset(m, 0, sizeof *m);
    }
    free(buf);
    return rc;
}
