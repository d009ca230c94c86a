/*
 * fl_export: safetensors and ONNX writers for the global model (see
 * fl_export.h).  Both build the whole file in memory (a model is at most
 * FL_SPEC_MAX_PARAMS floats, 64 MiB) and hand it to fl_storage_write_atomic.
 */
#include "export/fl_export.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "export/onnx.pb-c.h"
#include "storage/fl_storage.h"

#define S_FORMAT "flc"
#define S_IR_VERSION 8
#define S_OPSET 13
#define S_NAME_CAP 48 /* "layers.15.weight", "layers.15.relu" and the like */

/* ------------------------------------------------------------ common */

typedef struct {
    uint32_t layer;     /* index in the spec */
    int bias;           /* 0 weight, 1 bias */
    int rank;           /* 1, 2 or 4 */
    int64_t shape[4];
    size_t offset, count; /* in floats, into params */
} s_tensor;

/* What both writers need: checked arguments, the spec's text, the tensors
 * in parameter order and the parameters as little-endian bytes. */
typedef struct {
    char text[FL_SPEC_TEXT_MAX];
    s_tensor tensors[2 * FL_SPEC_MAX_LAYERS];
    size_t num_tensors;
    unsigned char *le; /* n * 4 bytes */
} s_model;

static const char *s_output_name(const fl_model_spec *spec)
{
    return spec->output_kind == 1 ? "sigmoid" : "softmax";
}

static void s_tensor_name(char *buf, size_t cap, const s_tensor *t)
{
    snprintf(buf, cap, "layers.%" PRIu32 ".%s", t->layer, t->bias ? "bias" : "weight");
}

static int s_prepare(s_model *m, const char *what, const char *path, const fl_model_spec *spec,
                     const float *params, size_t n, const char *sha256_hex)
{
    uint32_t c, h, w;
    size_t off = 0, want;

    memset(m, 0, sizeof *m);
    if (!path || !*path)
        return fl_error_set(FL_EINVAL, "%s export: no output file given", what);
    if (fl_model_spec_validate(spec) != FL_OK)
        return fl_error_wrap(FL_EINVAL, "%s export to '%s'", what, path);
    want = fl_model_spec_num_params(spec);
    if (n != want || (n > 0 && !params))
        return fl_error_set(FL_EINVAL, "%s export to '%s': the model has %zu parameters, but "
                            "its spec needs %zu", what, path, n, want);
    if (!sha256_hex || strlen(sha256_hex) != 64 ||
        strspn(sha256_hex, "0123456789abcdef") != 64)
        return fl_error_set(FL_EINVAL, "%s export to '%s': the model's SHA-256 must be 64 "
                            "lowercase hex digits", what, path);
    if (fl_model_spec_format(spec, m->text, sizeof m->text) != FL_OK)
        return fl_error_wrap(FL_EINVAL, "%s export to '%s'", what, path);
    c = spec->in_c;
    h = spec->in_h;
    w = spec->in_w;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const fl_layer_spec *l = &spec->layers[i];
        s_tensor *tw = &m->tensors[m->num_tensors], *tb = tw + 1;
        if (l->kind == FL_LAYER_POOL) {
            h /= 2;
            w /= 2;
            continue;
        }
        tw->layer = tb->layer = i;
        tb->bias = 1;
        tb->rank = 1;
        tb->shape[0] = l->units;
        tb->count = l->units;
        if (l->kind == FL_LAYER_CONV) {
            tw->rank = 4;
            tw->shape[0] = l->units;
            tw->shape[1] = c;
            tw->shape[2] = tw->shape[3] = l->kernel;
            tw->count = (size_t)l->units * c * l->kernel * l->kernel;
            c = l->units;
            h = h - l->kernel + 1;
            w = w - l->kernel + 1;
        } else {
            size_t in = (size_t)c * h * w;
            tw->rank = 2;
            tw->shape[0] = l->units;
            tw->shape[1] = (int64_t)in;
            tw->count = (size_t)l->units * in;
            c = l->units;
            h = w = 1;
        }
        tw->offset = off;
        off += tw->count;
        tb->offset = off;
        off += tb->count;
        m->num_tensors += 2;
    }
    if (off != n)
        return fl_error_set(FL_EINVAL, "%s export to '%s': the layers hold %zu parameters, the "
                            "spec counts %zu", what, path, off, n);
    m->le = malloc(n * 4 + 1);
    if (!m->le)
        return fl_error_set(FL_ENOMEM, "%s export to '%s': out of memory for %zu parameters",
                            what, path, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &params[i], sizeof u);
        m->le[4 * i] = (unsigned char)(u & 0xff);
        m->le[4 * i + 1] = (unsigned char)((u >> 8) & 0xff);
        m->le[4 * i + 2] = (unsigned char)((u >> 16) & 0xff);
        m->le[4 * i + 3] = (unsigned char)(u >> 24);
    }
    return FL_OK;
}

static int s_write(const char *what, const char *path, const void *data, size_t len)
{
    if (fl_storage_write_atomic(path, data, len, 0644) != FL_OK)
        return fl_error_wrap(FL_EIO, "%s export: cannot write '%s'", what, path);
    return FL_OK;
}

/* ------------------------------------------------------- safetensors */

/* A growable, bounded text buffer for the JSON header. */
typedef struct {
    char data[FL_EXPORT_MAX_HEADER];
    size_t len;
    int overflow;
} s_text;

static void s_put(s_text *t, const char *fmt, ...) FL_PRINTF(2, 3);

static void s_put(s_text *t, const char *fmt, ...)
{
    va_list ap;
    int k;
    if (t->overflow)
        return;
    va_start(ap, fmt);
    k = vsnprintf(t->data + t->len, sizeof t->data - t->len, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof t->data - t->len)
        t->overflow = 1;
    else
        t->len += (size_t)k;
}

/* A JSON string.  The values written are ASCII (names, spec text, hex), but
 * quote, backslash and control characters are escaped all the same. */
static void s_put_str(s_text *t, const char *s)
{
    s_put(t, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            s_put(t, "\\%c", ch);
        else if (ch < 0x20)
            s_put(t, "\\u%04x", ch);
        else
            s_put(t, "%c", ch);
    }
    s_put(t, "\"");
}

int fl_export_safetensors(const char *path, const fl_model_spec *spec, const float *params,
                          size_t n, const char *sha256_hex, uint32_t version)
{
    s_model m;
    s_text *t = NULL;
    unsigned char *file = NULL;
    size_t hlen, total;
    char version_text[16];
    int rc;

    rc = s_prepare(&m, "safetensors", path, spec, params, n, sha256_hex);
    if (rc != FL_OK)
        goto done;
    t = calloc(1, sizeof *t);
    if (!t) {
        rc = fl_error_set(FL_ENOMEM, "safetensors export to '%s': out of memory", path);
        goto done;
    }
    snprintf(version_text, sizeof version_text, "%" PRIu32, version);
    s_put(t, "{\"__metadata__\":{\"format\":");
    s_put_str(t, S_FORMAT);
    s_put(t, ",\"spec\":");
    s_put_str(t, m.text);
    s_put(t, ",\"output\":");
    s_put_str(t, s_output_name(spec));
    s_put(t, ",\"sha256\":");
    s_put_str(t, sha256_hex);
    s_put(t, ",\"version\":");
    s_put_str(t, version_text);
    s_put(t, "}");
    for (size_t i = 0; i < m.num_tensors; i++) {
        const s_tensor *x = &m.tensors[i];
        char name[S_NAME_CAP];
        s_tensor_name(name, sizeof name, x);
        s_put(t, ",");
        s_put_str(t, name);
        s_put(t, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < x->rank; d++)
            s_put(t, "%s%" PRId64, d ? "," : "", x->shape[d]);
        s_put(t, "],\"data_offsets\":[%zu,%zu]}", x->offset * 4, (x->offset + x->count) * 4);
    }
    s_put(t, "}");
    /* The format asks for the data to start 8-byte aligned: pad the header
     * with spaces, which JSON ignores. */
    while (!t->overflow && t->len % 8 != 0)
        s_put(t, " ");
    if (t->overflow) {
        rc = fl_error_set(FL_ERANGE, "safetensors export to '%s': the header is larger than "
                          "%d bytes", path, FL_EXPORT_MAX_HEADER);
        goto done;
    }
    hlen = t->len;
    total = 8 + hlen + n * 4;
    file = malloc(total);
    if (!file) {
        rc = fl_error_set(FL_ENOMEM, "safetensors export to '%s': out of memory for %zu bytes",
                          path, total);
        goto done;
    }
    for (int b = 0; b < 8; b++)
        file[b] = (unsigned char)(((uint64_t)hlen >> (8 * b)) & 0xff);
    memcpy(file + 8, t->data, hlen);
    if (n)
        memcpy(file + 8 + hlen, m.le, n * 4);
    rc = s_write("safetensors", path, file, total);
done:
    free(file);
    free(t);
    free(m.le);
    return rc;
}

/* -------------------------------------------------------------- ONNX */

#define S_MAX_NODES (3 * FL_SPEC_MAX_LAYERS + 2)
#define S_MAX_ATTRS 4
#define S_META 5

/* Everything the ONNX graph points to lives here, so one free releases it
 * (protoc-c messages hold pointers, not copies). */
typedef struct {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    Onnx__StringStringEntryProto meta[S_META];
    Onnx__StringStringEntryProto *metas[S_META];
    char version_text[16];

    Onnx__NodeProto nodes[S_MAX_NODES];
    Onnx__NodeProto *node_ptrs[S_MAX_NODES];
    char *node_in[S_MAX_NODES][3];
    char *node_out[S_MAX_NODES][1];
    char node_name[S_MAX_NODES][S_NAME_CAP];
    char value_name[S_MAX_NODES][S_NAME_CAP];
    Onnx__AttributeProto attrs[S_MAX_NODES][S_MAX_ATTRS];
    Onnx__AttributeProto *attr_ptrs[S_MAX_NODES][S_MAX_ATTRS];
    int64_t ints[S_MAX_NODES][S_MAX_ATTRS][4];
    size_t num_nodes;

    Onnx__TensorProto inits[2 * FL_SPEC_MAX_LAYERS];
    Onnx__TensorProto *init_ptrs[2 * FL_SPEC_MAX_LAYERS];
    char init_name[2 * FL_SPEC_MAX_LAYERS][S_NAME_CAP];

    /* graph input and output: value info, type, shape, dimensions */
    Onnx__ValueInfoProto io[2];
    Onnx__ValueInfoProto *in_ptr[1], *out_ptr[1];
    Onnx__TypeProto io_type[2];
    Onnx__TypeProto__Tensor io_tensor[2];
    Onnx__TensorShapeProto io_shape[2];
    Onnx__TensorShapeProto__Dimension io_dim[2][4];
    Onnx__TensorShapeProto__Dimension *io_dim_ptrs[2][4];
} s_onnx;

/* A new node: op_type, its inputs (NULL-terminated, up to 3), its output
 * named `out` (copied).  Returns it for attributes to be added. */
static Onnx__NodeProto *s_node(s_onnx *g, const char *op, const char *out, char *const *in)
{
    size_t k = g->num_nodes++, ni = 0;
    Onnx__NodeProto *nd = &g->nodes[k];
    onnx__node_proto__init(nd);
    while (ni < 3 && in[ni]) {
        g->node_in[k][ni] = in[ni];
        ni++;
    }
    snprintf(g->value_name[k], S_NAME_CAP, "%s", out);
    snprintf(g->node_name[k], S_NAME_CAP, "%s_%zu", op, k);
    g->node_out[k][0] = g->value_name[k];
    nd->n_input = ni;
    nd->input = g->node_in[k];
    nd->n_output = 1;
    nd->output = g->node_out[k];
    nd->name = g->node_name[k];
    nd->op_type = (char *)op;
    nd->attribute = g->attr_ptrs[k];
    g->node_ptrs[k] = nd;
    return nd;
}

/* Adds an INT attribute (nints == 0, value v[0]) or an INTS attribute. */
static void s_attr(s_onnx *g, Onnx__NodeProto *nd, const char *name, const int64_t *v,
                   size_t nints)
{
    size_t k = (size_t)(nd - g->nodes), a = nd->n_attribute++;
    Onnx__AttributeProto *at = &g->attrs[k][a];
    onnx__attribute_proto__init(at);
    at->name = (char *)name;
    at->has_type = 1;
    if (nints == 0) {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        at->has_i = 1;
        at->i = v[0];
    } else {
        at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        memcpy(g->ints[k][a], v, nints * sizeof *v);
        at->n_ints = nints;
        at->ints = g->ints[k][a];
    }
    g->attr_ptrs[k][a] = at;
}

/* The graph's input (which 0) or output (which 1): a float tensor whose
 * first dimension is the symbolic batch size "N". */
static void s_io(s_onnx *g, int which, const char *name, const int64_t *dims, size_t ndims)
{
    Onnx__ValueInfoProto *v = &g->io[which];
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(&g->io_type[which]);
    onnx__type_proto__tensor__init(&g->io_tensor[which]);
    onnx__tensor_shape_proto__init(&g->io_shape[which]);
    for (size_t d = 0; d <= ndims; d++) {
        Onnx__TensorShapeProto__Dimension *dim = &g->io_dim[which][d];
        onnx__tensor_shape_proto__dimension__init(dim);
        if (d == 0) {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dim->dim_param = "N";
        } else {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim->dim_value = dims[d - 1];
        }
        g->io_dim_ptrs[which][d] = dim;
    }
    g->io_shape[which].n_dim = ndims + 1;
    g->io_shape[which].dim = g->io_dim_ptrs[which];
    g->io_tensor[which].has_elem_type = 1;
    g->io_tensor[which].elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    g->io_tensor[which].shape = &g->io_shape[which];
    g->io_type[which].value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    g->io_type[which].tensor_type = &g->io_tensor[which];
    v->name = (char *)name;
    v->type = &g->io_type[which];
}

static void s_meta(s_onnx *g, size_t i, const char *key, const char *value)
{
    onnx__string_string_entry_proto__init(&g->meta[i]);
    g->meta[i].key = (char *)key;
    g->meta[i].value = (char *)value;
    g->metas[i] = &g->meta[i];
}

int fl_export_onnx(const char *path, const fl_model_spec *spec, const float *params, size_t n,
                   const char *sha256_hex, uint32_t version)
{
    static const int64_t ones[2] = {1, 1}, twos[2] = {2, 2}, zeros[4] = {0, 0, 0, 0};
    s_model m;
    s_onnx *g = NULL;
    unsigned char *file = NULL;
    char *prev = "input";
    size_t t = 0, len;
    int64_t dims[3];
    int mlp, flattened, rc;

    rc = s_prepare(&m, "ONNX", path, spec, params, n, sha256_hex);
    if (rc != FL_OK)
        goto done;
    g = calloc(1, sizeof *g);
    if (!g) {
        rc = fl_error_set(FL_ENOMEM, "ONNX export to '%s': out of memory", path);
        goto done;
    }
    /* Initializers: the tensors in parameter order, raw little-endian. */
    for (size_t i = 0; i < m.num_tensors; i++) {
        Onnx__TensorProto *x = &g->inits[i];
        onnx__tensor_proto__init(x);
        s_tensor_name(g->init_name[i], S_NAME_CAP, &m.tensors[i]);
        x->name = g->init_name[i];
        x->n_dims = (size_t)m.tensors[i].rank;
        x->dims = m.tensors[i].shape;
        x->has_data_type = 1;
        x->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        x->has_raw_data = 1;
        x->raw_data.len = m.tensors[i].count * 4;
        x->raw_data.data = m.le + m.tensors[i].offset * 4;
        g->init_ptrs[i] = x;
    }
    /* Nodes, layer by layer.  An MLP (a d x 1 x 1 input with dense layers
     * only) takes [N, d] and needs no Flatten; anything else takes
     * [N, C, H, W] and is flattened (NCHW order) before its first Gemm. */
    mlp = fl_model_spec_is_mlp(spec);
    flattened = mlp;
    for (uint32_t i = 0; i < spec->num_layers; i++) {
        const fl_layer_spec *l = &spec->layers[i];
        Onnx__NodeProto *nd;
        char out[S_NAME_CAP];
        int last = i + 1 == spec->num_layers;
        if (l->kind == FL_LAYER_POOL) {
            snprintf(out, sizeof out, "layers.%" PRIu32 ".pool", i);
            nd = s_node(g, "MaxPool", out, (char *[]){prev, NULL});
            s_attr(g, nd, "kernel_shape", twos, 2);
            s_attr(g, nd, "strides", twos, 2);
            prev = g->value_name[g->num_nodes - 1];
            continue;
        }
        if (l->kind == FL_LAYER_DENSE && !flattened) {
            int64_t axis = 1;
            nd = s_node(g, "Flatten", "flatten", (char *[]){prev, NULL});
            s_attr(g, nd, "axis", &axis, 0);
            prev = g->value_name[g->num_nodes - 1];
            flattened = 1;
        }
        if (l->kind == FL_LAYER_CONV) {
            int64_t k[2] = {l->kernel, l->kernel};
            snprintf(out, sizeof out, "layers.%" PRIu32 ".conv", i);
            nd = s_node(g, "Conv", out,
                        (char *[]){prev, g->init_name[t], g->init_name[t + 1], NULL});
            s_attr(g, nd, "kernel_shape", k, 2);
            s_attr(g, nd, "strides", ones, 2);
            s_attr(g, nd, "pads", zeros, 4);
        } else {
            int64_t trans_b = 1;
            snprintf(out, sizeof out, "layers.%" PRIu32 ".%s", i, last ? "logits" : "gemm");
            nd = s_node(g, "Gemm", out,
                        (char *[]){prev, g->init_name[t], g->init_name[t + 1], NULL});
            s_attr(g, nd, "transB", &trans_b, 0);
        }
        t += 2;
        prev = g->value_name[g->num_nodes - 1];
        if (!last) {
            snprintf(out, sizeof out, "layers.%" PRIu32 ".relu", i);
            s_node(g, "Relu", out, (char *[]){prev, NULL});
            prev = g->value_name[g->num_nodes - 1];
        }
    }
    if (spec->output_kind == 1) {
        s_node(g, "Sigmoid", "probabilities", (char *[]){prev, NULL});
    } else {
        int64_t axis = 1;
        Onnx__NodeProto *nd = s_node(g, "Softmax", "probabilities", (char *[]){prev, NULL});
        s_attr(g, nd, "axis", &axis, 0);
    }
    /* Input and output. */
    if (mlp) {
        dims[0] = spec->in_c;
        s_io(g, 0, "input", dims, 1);
    } else {
        dims[0] = spec->in_c;
        dims[1] = spec->in_h;
        dims[2] = spec->in_w;
        s_io(g, 0, "input", dims, 3);
    }
    dims[0] = (int64_t)fl_model_spec_num_outputs(spec);
    s_io(g, 1, "probabilities", dims, 1);
    g->in_ptr[0] = &g->io[0];
    g->out_ptr[0] = &g->io[1];

    onnx__graph_proto__init(&g->graph);
    g->graph.name = "flc_model";
    g->graph.n_node = g->num_nodes;
    g->graph.node = g->node_ptrs;
    g->graph.n_initializer = m.num_tensors;
    g->graph.initializer = g->init_ptrs;
    g->graph.n_input = 1;
    g->graph.input = g->in_ptr;
    g->graph.n_output = 1;
    g->graph.output = g->out_ptr;

    onnx__operator_set_id_proto__init(&g->opset);
    g->opset.domain = "";
    g->opset.has_version = 1;
    g->opset.version = S_OPSET;
    g->opsets[0] = &g->opset;

    snprintf(g->version_text, sizeof g->version_text, "%" PRIu32, version);
    s_meta(g, 0, "format", S_FORMAT);
    s_meta(g, 1, "spec", m.text);
    s_meta(g, 2, "output", s_output_name(spec));
    s_meta(g, 3, "sha256", sha256_hex);
    s_meta(g, 4, "version", g->version_text);

    onnx__model_proto__init(&g->model);
    g->model.has_ir_version = 1;
    g->model.ir_version = S_IR_VERSION;
    g->model.n_opset_import = 1;
    g->model.opset_import = g->opsets;
    g->model.producer_name = "flc";
    g->model.producer_version = "0.1.0";
    g->model.has_model_version = 1;
    g->model.model_version = version;
    g->model.doc_string = m.text;
    g->model.graph = &g->graph;
    g->model.n_metadata_props = S_META;
    g->model.metadata_props = g->metas;

    len = onnx__model_proto__get_packed_size(&g->model);
    file = malloc(len ? len : 1);
    if (!file) {
        rc = fl_error_set(FL_ENOMEM, "ONNX export to '%s': out of memory for %zu bytes", path,
                          len);
        goto done;
    }
    if (onnx__model_proto__pack(&g->model, file) != len) {
        rc = fl_error_set(FL_EIO, "ONNX export to '%s': the encoder wrote an unexpected size",
                          path);
        goto done;
    }
    rc = s_write("ONNX", path, file, len);
done:
    free(file);
    free(g);
    free(m.le);
    return rc;
}
