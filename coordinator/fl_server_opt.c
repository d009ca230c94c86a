/*
 * fl_server_opt: FedAvg, FedAvgM and FedAdam on the coordinator (see
 * fl_server_opt.h).
 */
#include "coordinator/fl_server_opt.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "storage/fl_storage.h"

struct fl_server_opt {
    fl_server_opt_config cfg;
    size_t dim;
    double *m; /* first moment (FedAdam) or velocity (FedAvgM) */
    double *v; /* second moment (FedAdam) */
};

int fl_server_opt_parse(const char *name, fl_server_kind *out)
{
    if (strcmp(name, "fedavg") == 0)
        *out = FL_SERVER_FEDAVG;
    else if (strcmp(name, "fedavgm") == 0)
        *out = FL_SERVER_FEDAVGM;
    else if (strcmp(name, "fedadam") == 0)
        *out = FL_SERVER_FEDADAM;
    else
        return fl_error_set(FL_EINVAL, "server optimizer '%s' is unknown: use fedavg, fedavgm "
                            "or fedadam", name);
    return FL_OK;
}

const char *fl_server_opt_name(fl_server_kind kind)
{
    switch (kind) {
    case FL_SERVER_FEDAVGM: return "fedavgm";
    case FL_SERVER_FEDADAM: return "fedadam";
    default: return "fedavg";
    }
}

static int s_check(const fl_server_opt_config *cfg)
{
    if (!(cfg->lr > 0) || !(cfg->momentum >= 0 && cfg->momentum < 1) ||
        !(cfg->beta1 >= 0 && cfg->beta1 < 1) || !(cfg->beta2 >= 0 && cfg->beta2 < 1) ||
        !(cfg->tau > 0) ||
        (cfg->kind != FL_SERVER_FEDAVG && cfg->kind != FL_SERVER_FEDAVGM &&
         cfg->kind != FL_SERVER_FEDADAM))
        return fl_error_set(FL_EINVAL, "server optimizer settings out of range: need lr > 0, "
                            "0 <= momentum, beta1, beta2 < 1 and tau > 0");
    return FL_OK;
}

/* Number of state vectors a kind keeps. */
static unsigned s_nvec(fl_server_kind kind)
{
    return kind == FL_SERVER_FEDADAM ? 2u : kind == FL_SERVER_FEDAVGM ? 1u : 0u;
}

int fl_server_opt_new(fl_server_opt **out, const fl_server_opt_config *cfg, size_t dim)
{
    fl_server_opt *o;
    *out = NULL;
    if (s_check(cfg) != FL_OK)
        return FL_EINVAL;
    o = calloc(1, sizeof *o);
    if (!o)
        return fl_error_set(FL_ENOMEM, "out of memory");
    o->cfg = *cfg;
    o->dim = dim;
    if (cfg->kind != FL_SERVER_FEDAVG && !(o->m = calloc(dim ? dim : 1, sizeof *o->m))) {
        fl_server_opt_free(o);
        return fl_error_set(FL_ENOMEM, "out of memory for the server optimizer");
    }
    if (cfg->kind == FL_SERVER_FEDADAM && !(o->v = calloc(dim ? dim : 1, sizeof *o->v))) {
        fl_server_opt_free(o);
        return fl_error_set(FL_ENOMEM, "out of memory for the server optimizer");
    }
    *out = o;
    return FL_OK;
}

void fl_server_opt_step(fl_server_opt *o, float *model, const float *avg)
{
    const fl_server_opt_config *c = &o->cfg;
    for (size_t i = 0; i < o->dim; i++) {
        double d = (double)avg[i] - (double)model[i]; /* pseudo-gradient */
        double step;
        switch (c->kind) {
        case FL_SERVER_FEDAVGM:
            o->m[i] = c->momentum * o->m[i] + d;
            step = c->lr * o->m[i];
            break;
        case FL_SERVER_FEDADAM:
            /* Reddi et al. 2021, Alg. 2 (no bias correction, as published). */
            o->m[i] = c->beta1 * o->m[i] + (1.0 - c->beta1) * d;
            o->v[i] = c->beta2 * o->v[i] + (1.0 - c->beta2) * d * d;
            step = c->lr * o->m[i] / (sqrt(o->v[i]) + c->tau);
            break;
        default:
            step = c->lr * d;
            break;
        }
        model[i] = (float)((double)model[i] + step);
    }
}

int fl_server_opt_configure(fl_server_opt *o, const fl_server_opt_config *cfg)
{
    double *m = NULL, *v = NULL;
    if (s_check(cfg) != FL_OK)
        return FL_EINVAL;
    if (cfg->kind == o->cfg.kind) {
        o->cfg = *cfg;
        return FL_OK;
    }
    if ((s_nvec(cfg->kind) >= 1 && !(m = calloc(o->dim ? o->dim : 1, sizeof *m))) ||
        (s_nvec(cfg->kind) >= 2 && !(v = calloc(o->dim ? o->dim : 1, sizeof *v)))) {
        free(m);
        return fl_error_set(FL_ENOMEM, "out of memory for the server optimizer");
    }
    free(o->m);
    free(o->v);
    o->m = m;
    o->v = v;
    o->cfg = *cfg;
    return FL_OK;
}

const fl_server_opt_config *fl_server_opt_settings(const fl_server_opt *o)
{
    return &o->cfg;
}

static const char s_state_magic[8] = {'F', 'L', 'O', 'P', 'T', 'S', 'T', '1'};

static void s_put(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t s_get(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int fl_server_opt_save(const fl_server_opt *o, const char *path)
{
    unsigned nvec = s_nvec(o->cfg.kind);
    size_t body = 8 + 4 + 4 + 8 + 8 * (size_t)nvec * o->dim, off;
    unsigned char *buf = malloc(body + 32);
    int rc;
    if (!buf)
        return fl_error_set(FL_ENOMEM, "out of memory saving the server optimizer to '%s'", path);
    memcpy(buf, s_state_magic, 8);
    s_put(buf + 8, (uint64_t)o->cfg.kind, 4);
    s_put(buf + 12, nvec, 4);
    s_put(buf + 16, o->dim, 8);
    off = 24;
    for (unsigned k = 0; k < nvec; k++) {
        const double *vec = k == 0 ? o->m : o->v;
        for (size_t i = 0; i < o->dim; i++, off += 8) {
            uint64_t u;
            memcpy(&u, &vec[i], 8);
            s_put(buf + off, u, 8);
        }
    }
    crypto_hash_sha256(buf + off, buf, off);
    rc = fl_storage_write_atomic(path, buf, off + 32, 0600);
    free(buf);
    return rc;
}

int fl_server_opt_load(fl_server_opt *o, const char *path)
{
    unsigned char *buf = NULL, digest[32];
    size_t len = 0, need, off;
    unsigned nvec = s_nvec(o->cfg.kind);
    int rc = fl_storage_read_all(path, 24 + 16 * o->dim + 32, &buf, &len);
    if (rc != FL_OK)
        return rc;
    if (len < 24 + 32 || memcmp(buf, s_state_magic, 8) != 0) {
        rc = fl_error_set(FL_EPARSE, "'%s' is not a server optimizer state file", path);
        goto done;
    }
    if (s_get(buf + 8, 4) != (uint64_t)o->cfg.kind || s_get(buf + 12, 4) != nvec ||
        s_get(buf + 16, 8) != o->dim) {
        rc = fl_error_set(FL_EINVAL, "'%s' holds the state of %s for %llu parameters, not of %s "
                          "for %zu", path,
                          fl_server_opt_name((fl_server_kind)s_get(buf + 8, 4)),
                          (unsigned long long)s_get(buf + 16, 8), fl_server_opt_name(o->cfg.kind),
                          o->dim);
        goto done;
    }
    need = 24 + 8 * (size_t)nvec * o->dim + 32;
    if (len != need) {
        rc = fl_error_set(FL_EPARSE, "'%s' is %zu bytes, expected %zu", path, len, need);
        goto done;
    }
    crypto_hash_sha256(digest, buf, need - 32);
    if (sodium_memcmp(digest, buf + need - 32, 32) != 0) {
        rc = fl_error_set(FL_EPARSE, "'%s': checksum mismatch, the file is damaged", path);
        goto done;
    }
    off = 24;
    for (unsigned k = 0; k < nvec; k++) {
        double *vec = k == 0 ? o->m : o->v;
        for (size_t i = 0; i < o->dim; i++, off += 8) {
            uint64_t u = s_get(buf + off, 8);
            memcpy(&vec[i], &u, 8);
        }
    }
    rc = FL_OK;
done:
    free(buf);
    return rc;
}

void fl_server_opt_free(fl_server_opt *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o);
}
