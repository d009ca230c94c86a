/*
 * fl_model_spec: model architectures, their checks and text form (see
 * fl_model_spec.h).
 */
#include "nn/fl_model_spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_kind_name(uint32_t kind)
{
    switch (kind) {
    case FL_LAYER_DENSE: return "dense";
    case FL_LAYER_CONV: return "conv";
    case FL_LAYER_POOL: return "pool";
    default: return "unknown";
    }
}

/* One layer's effect: its parameters are added to *params and the
 * activation shape c x h x w becomes the layer's output shape. The one
 * place the layer arithmetic lives (validate checks before calling it). */
static void s_apply_layer(const fl_layer_spec *l, uint64_t *c, uint64_t *h, uint64_t *w,
                          uint64_t *params)
{
    switch (l->kind) {
    case FL_LAYER_CONV:
        *params += (uint64_t)l->units * *c * l->kernel * l->kernel + l->units;
        *c = l->units;
        *h = *h - l->kernel + 1;
        *w = *w - l->kernel + 1;
        break;
    case FL_LAYER_POOL:
        *h /= 2;
        *w /= 2;
        break;
    default: /* dense */
        *params += (uint64_t)l->units * (*c * *h * *w) + l->units;
        *c = l->units;
        *h = *w = 1;
        break;
    }
}

int fl_model_spec_validate(const fl_model_spec *s)
{
    uint64_t c, h, w, params = 0;
    int seen_dense = 0;

    if (!s)
        return fl_error_set(FL_EINVAL, "no model spec");
    if (s->output_kind != 1 && s->output_kind != 2)
        return fl_error_set(FL_EINVAL, "model output kind %u is unknown: use 1 (sigmoid) or 2 "
                            "(softmax)", s->output_kind);
    if (s->in_c < 1 || s->in_h < 1 || s->in_w < 1 || s->in_c > FL_SPEC_MAX_DIM ||
        s->in_h > FL_SPEC_MAX_DIM || s->in_w > FL_SPEC_MAX_DIM)
        return fl_error_set(FL_EINVAL, "model input %ux%ux%u (HxWxC) is out of range: each size "
                            "must be 1..%u", s->in_h, s->in_w, s->in_c, FL_SPEC_MAX_DIM);
    if (s->num_layers < 1 || s->num_layers > FL_SPEC_MAX_LAYERS)
        return fl_error_set(FL_EINVAL, "a model has 1..%d layers, not %u", FL_SPEC_MAX_LAYERS,
                            s->num_layers);
    c = s->in_c;
    h = s->in_h;
    w = s->in_w;
    if (c * h * w > FL_SPEC_MAX_PARAMS)
        return fl_error_set(FL_EINVAL, "model input %llu values per example is too large "
                            "(at most %u)", (unsigned long long)(c * h * w), FL_SPEC_MAX_PARAMS);
    for (uint32_t i = 0; i < s->num_layers; i++) {
        const fl_layer_spec *l = &s->layers[i];
        switch (l->kind) {
        case FL_LAYER_CONV:
            if (seen_dense)
                return fl_error_set(FL_EINVAL, "layer %u (conv) follows a dense layer: convolutions "
                                    "and pooling come before the dense layers", i + 1);
            if (l->units < 1 || l->units > FL_SPEC_MAX_DIM || l->kernel < 1 || l->kernel > h ||
                l->kernel > w)
                return fl_error_set(FL_EINVAL, "layer %u (conv %u %u): channels must be 1..%u and "
                                    "the kernel 1..%llu (the input is %llux%llu)", i + 1, l->units,
                                    l->kernel, FL_SPEC_MAX_DIM,
                                    (unsigned long long)(h < w ? h : w), (unsigned long long)h,
                                    (unsigned long long)w);
            break;
        case FL_LAYER_POOL:
            if (seen_dense)
                return fl_error_set(FL_EINVAL, "layer %u (pool) follows a dense layer: convolutions "
                                    "and pooling come before the dense layers", i + 1);
            if (l->kernel != 2)
                return fl_error_set(FL_EINVAL, "layer %u: only 2x2 pooling is supported, not %u",
                                    i + 1, l->kernel);
            if (h < 2 || w < 2)
                return fl_error_set(FL_EINVAL, "layer %u (pool 2): its input %llux%llu is smaller "
                                    "than 2x2", i + 1, (unsigned long long)h,
                                    (unsigned long long)w);
            break;
        case FL_LAYER_DENSE:
            if (l->units < 1 || l->units > FL_SPEC_MAX_DIM)
                return fl_error_set(FL_EINVAL, "layer %u (dense %u): width must be 1..%u", i + 1,
                                    l->units, FL_SPEC_MAX_DIM);
            seen_dense = 1;
            break;
        default:
            return fl_error_set(FL_EINVAL, "layer %u has unknown kind %u", i + 1, l->kind);
        }
        s_apply_layer(l, &c, &h, &w, &params);
        if (params > FL_SPEC_MAX_PARAMS)
            return fl_error_set(FL_EINVAL, "the model has more than %u parameters (at layer %u)",
                                FL_SPEC_MAX_PARAMS, i + 1);
    }
    {
        const fl_layer_spec *last = &s->layers[s->num_layers - 1];
        if (last->kind != FL_LAYER_DENSE)
            return fl_error_set(FL_EINVAL, "the last layer is %s: it must be dense (the outputs)",
                                s_kind_name(last->kind));
        if (s->output_kind == 1 && last->units != 1)
            return fl_error_set(FL_EINVAL, "a sigmoid output has 1 unit, the last layer has %u",
                                last->units);
        if (s->output_kind == 2 && last->units < 2)
            return fl_error_set(FL_EINVAL, "a softmax output needs at least 2 units, the last "
                                "layer has %u", last->units);
    }
    return FL_OK;
}

size_t fl_model_spec_num_params(const fl_model_spec *s)
{
    uint64_t c, h, w, params = 0;
    if (fl_model_spec_validate(s) != FL_OK)
        return 0;
    c = s->in_c;
    h = s->in_h;
    w = s->in_w;
    for (uint32_t i = 0; i < s->num_layers; i++)
        s_apply_layer(&s->layers[i], &c, &h, &w, &params);
    return (size_t)params;
}

size_t fl_model_spec_num_inputs(const fl_model_spec *s)
{
    return (size_t)s->in_c * s->in_h * s->in_w;
}

size_t fl_model_spec_num_outputs(const fl_model_spec *s)
{
    return s->num_layers ? s->layers[s->num_layers - 1].units : 0;
}

int fl_model_spec_shape(const fl_model_spec *s, int i, uint32_t *c, uint32_t *h, uint32_t *w)
{
    uint64_t cc = s->in_c, hh = s->in_h, ww = s->in_w, params = 0;
    if (i < -1 || i >= (int)s->num_layers)
        return fl_error_set(FL_EINVAL, "layer index %d is out of range (the model has %u layers)",
                            i, s->num_layers);
    for (int j = 0; j <= i; j++)
        s_apply_layer(&s->layers[j], &cc, &hh, &ww, &params);
    *c = (uint32_t)cc;
    *h = (uint32_t)hh;
    *w = (uint32_t)ww;
    return FL_OK;
}

int fl_model_spec_is_mlp(const fl_model_spec *s)
{
    if (s->in_h != 1 || s->in_w != 1)
        return 0;
    for (uint32_t i = 0; i < s->num_layers; i++)
        if (s->layers[i].kind != FL_LAYER_DENSE)
            return 0;
    return 1;
}

int fl_model_spec_from_sizes(fl_model_spec *s, const uint32_t *sizes, size_t n,
                             uint32_t output_kind)
{
    memset(s, 0, sizeof *s);
    if (n < 2 || n > FL_SPEC_MAX_LAYERS + 1)
        return fl_error_set(FL_EINVAL, "an MLP has 2..%d layer sizes (inputs, then each layer), "
                            "not %zu", FL_SPEC_MAX_LAYERS + 1, n);
    s->in_c = sizes[0];
    s->in_h = s->in_w = 1;
    s->output_kind = output_kind;
    s->num_layers = (uint32_t)(n - 1);
    for (size_t i = 1; i < n; i++) {
        s->layers[i - 1].kind = FL_LAYER_DENSE;
        s->layers[i - 1].units = sizes[i];
    }
    return fl_model_spec_validate(s);
}

int fl_model_spec_to_sizes(const fl_model_spec *s, uint32_t *sizes, size_t *n)
{
    if (!fl_model_spec_is_mlp(s))
        return fl_error_set(FL_EINVAL, "the model has convolution or pooling layers: it is not "
                            "an MLP");
    sizes[0] = s->in_c;
    for (uint32_t i = 0; i < s->num_layers; i++)
        sizes[i + 1] = s->layers[i].units;
    *n = (size_t)s->num_layers + 1;
    return FL_OK;
}

/* Reads an unsigned decimal in 1..FL_SPEC_MAX_DIM at *p, advancing *p. */
static int s_number(const char **p, uint32_t *out)
{
    char *end;
    unsigned long v;
    while (**p == ' ' || **p == '\t')
        (*p)++;
    if (!isdigit((unsigned char)**p))
        return 0;
    errno = 0;
    v = strtoul(*p, &end, 10);
    if (errno || v < 1 || v > FL_SPEC_MAX_DIM)
        return 0;
    *p = end;
    *out = (uint32_t)v;
    return 1;
}

static void s_skip_space(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

static int s_word(const char **p, const char *w)
{
    size_t n = strlen(w);
    s_skip_space(p);
    if (strncmp(*p, w, n) != 0 || isalnum((unsigned char)(*p)[n]))
        return 0;
    *p += n;
    return 1;
}

/* The short MLP form "30,128,64,1" (commas or spaces between sizes). */
static int s_parse_sizes(fl_model_spec *s, const char *text, uint32_t output_kind)
{
    uint32_t sizes[FL_SPEC_MAX_LAYERS + 2];
    size_t n = 0;
    const char *p = text;
    for (;;) {
        if (n == FL_SPEC_MAX_LAYERS + 1)
            return fl_error_set(FL_EPARSE, "model '%s' has more than %d layer sizes", text,
                                FL_SPEC_MAX_LAYERS + 1);
        if (!s_number(&p, &sizes[n]))
            return fl_error_set(FL_EPARSE, "model '%s': item %zu is not a size in 1..%u", text,
                                n + 1, FL_SPEC_MAX_DIM);
        n++;
        s_skip_space(&p);
        if (*p == '\0')
            break;
        if (*p == ',')
            p++;
        else if (!isdigit((unsigned char)*p))
            return fl_error_set(FL_EPARSE, "model '%s': expected ',' or a size after item %zu",
                                text, n);
    }
    return fl_model_spec_from_sizes(s, sizes, n, output_kind);
}

int fl_model_spec_parse(fl_model_spec *s, const char *text, uint32_t output_kind)
{
    const char *p = text;
    uint32_t item = 1;

    memset(s, 0, sizeof *s);
    if (!text)
        return fl_error_set(FL_EPARSE, "no model description");
    s_skip_space(&p);
    if (isdigit((unsigned char)*p))
        return s_parse_sizes(s, text, output_kind);
    s->output_kind = output_kind;
    if (!s_word(&p, "input") || !s_number(&p, &s->in_h) || *p != 'x' ||
        (p++, !s_number(&p, &s->in_w)) || *p != 'x' || (p++, !s_number(&p, &s->in_c)))
        return fl_error_set(FL_EPARSE, "model '%s': it must start with 'input HxWxC' (for "
                            "example 'input 28x28x1'), or be layer sizes like '30,128,64,1'",
                            text);
    for (;;) {
        fl_layer_spec *l;
        s_skip_space(&p);
        if (*p == '\0')
            break;
        if (*p != ';')
            return fl_error_set(FL_EPARSE, "model '%s': expected ';' after item %u", text, item);
        p++;
        item++;
        if (s->num_layers == FL_SPEC_MAX_LAYERS)
            return fl_error_set(FL_EPARSE, "model '%s' has more than %d layers", text,
                                FL_SPEC_MAX_LAYERS);
        l = &s->layers[s->num_layers];
        if (s_word(&p, "conv")) {
            l->kind = FL_LAYER_CONV;
            if (!s_number(&p, &l->units) || !s_number(&p, &l->kernel))
                return fl_error_set(FL_EPARSE, "model '%s': item %u: write 'conv CHANNELS KERNEL' "
                                    "(for example 'conv 16 3')", text, item);
        } else if (s_word(&p, "pool")) {
            l->kind = FL_LAYER_POOL;
            if (!s_number(&p, &l->kernel))
                return fl_error_set(FL_EPARSE, "model '%s': item %u: write 'pool 2'", text, item);
        } else if (s_word(&p, "dense")) {
            l->kind = FL_LAYER_DENSE;
            if (!s_number(&p, &l->units))
                return fl_error_set(FL_EPARSE, "model '%s': item %u: write 'dense UNITS' (for "
                                    "example 'dense 10')", text, item);
        } else {
            return fl_error_set(FL_EPARSE, "model '%s': item %u is not 'conv', 'pool' or "
                                "'dense'", text, item);
        }
        s->num_layers++;
    }
    if (s->num_layers == 0)
        return fl_error_set(FL_EPARSE, "model '%s' has no layers after its input", text);
    return fl_model_spec_validate(s);
}

int fl_model_spec_format(const fl_model_spec *s, char *buf, size_t cap)
{
    size_t off;
    int k = snprintf(buf, cap, "input %ux%ux%u", s->in_h, s->in_w, s->in_c);
    if (k < 0 || (size_t)k >= cap)
        return fl_error_set(FL_ERANGE, "model description does not fit in %zu bytes", cap);
    off = (size_t)k;
    for (uint32_t i = 0; i < s->num_layers && i < FL_SPEC_MAX_LAYERS; i++) {
        const fl_layer_spec *l = &s->layers[i];
        if (l->kind == FL_LAYER_CONV)
            k = snprintf(buf + off, cap - off, "; conv %u %u", l->units, l->kernel);
        else if (l->kind == FL_LAYER_POOL)
            k = snprintf(buf + off, cap - off, "; pool %u", l->kernel);
        else
            k = snprintf(buf + off, cap - off, "; dense %u", l->units);
        if (k < 0 || (size_t)k >= cap - off)
            return fl_error_set(FL_ERANGE, "model description does not fit in %zu bytes", cap);
        off += (size_t)k;
    }
    return FL_OK;
}
