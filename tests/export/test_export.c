/*
 * fl_export: the exact bytes of a small safetensors file (worked out by hand
 * from the format's description), the structure of the ONNX graphs (decoded
 * with the same protoc-c schema), and the errors: wrong parameter count, bad
 * digest, invalid spec, unwritable file.  The numerical checks of the files
 * by independent readers (numpy, onnx, ONNX Runtime) are the other tests in
 * this folder.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "export/fl_export.h"
#include "export/onnx.pb-c.h"
#include "storage/fl_storage.h"
#include "tests/support/fl_test_dir.h"

#define S_SHA "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define S_CNN "input 28x28x1; conv 4 3; pool 2; conv 8 3; pool 2; dense 10"

static char s_dir[128];

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "export");
}

static void s_teardown(void)
{
    fl_test_dir_remove(s_dir);
}

TestSuite(export, .init = s_setup, .fini = s_teardown);

static void s_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", s_dir, name);
}

static unsigned char *s_read(const char *path, size_t *len)
{
    unsigned char *data = NULL;
    cr_assert_eq(fl_storage_read_all(path, 1 << 26, &data, len), FL_OK, "%s", fl_error_last());
    return data;
}

static float *s_ramp(size_t n)
{
    float *p = malloc(n * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)i * 0.25f - 1.0f;
    return p;
}

Test(export, safetensors_of_a_two_input_model_is_byte_for_byte_the_hand_written_file)
{
    /* dense 2 -> 1, sigmoid: W = [1, 2], b = [3].  Header by hand from the
     * safetensors description: the JSON below is 307 bytes, padded with 5
     * spaces to 312 (a multiple of 8). */
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"flc\",\"spec\":\"input 1x1x2; dense 1\","
        "\"output\":\"sigmoid\",\"sha256\":\"" S_SHA "\",\"version\":\"3\"},"
        "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
        "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    /* 1.0f, 2.0f, 3.0f in IEEE 754 single precision, little-endian */
    static const unsigned char data[12] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40};
    const uint32_t sizes[] = {2, 1};
    const float params[] = {1.0f, 2.0f, 3.0f};
    fl_model_spec sp;
    char path[256];
    unsigned char *f;
    size_t len, jlen = sizeof json - 1;

    cr_assert_eq(jlen, 307);
    cr_assert_eq(fl_model_spec_from_sizes(&sp, sizes, 2, 1), FL_OK);
    s_path(path, sizeof path, "tiny.safetensors");
    cr_assert_eq(fl_export_safetensors(path, &sp, params, 3, S_SHA, 3), FL_OK, "%s",
                 fl_error_last());
    f = s_read(path, &len);
    cr_assert_eq(len, 8 + 312 + 12);
    cr_assert_eq(f[0], 312 & 0xff);
    cr_assert_eq(f[1], 312 >> 8);
    for (int i = 2; i < 8; i++)
        cr_assert_eq(f[i], 0);
    cr_assert_eq(memcmp(f + 8, json, jlen), 0, "header: %.312s", (const char *)f + 8);
    for (size_t i = jlen; i < 312; i++)
        cr_assert_eq(f[8 + i], ' ');
    cr_assert_eq(memcmp(f + 8 + 312, data, sizeof data), 0);
    free(f);
}

Test(export, safetensors_of_the_cnn_names_layers_by_spec_index_with_pytorch_shapes)
{
    fl_model_spec sp;
    char path[256];
    unsigned char *f;
    size_t len, n;
    float *p;

    cr_assert_eq(fl_model_spec_parse(&sp, S_CNN, 2), FL_OK, "%s", fl_error_last());
    n = fl_model_spec_num_params(&sp);
    /* conv 1->4 k3: 36 + 4; conv 4->8 k3: 288 + 8; dense 8*5*5=200 -> 10: 2000 + 10 */
    cr_assert_eq(n, 40 + 296 + 2010);
    p = s_ramp(n);
    s_path(path, sizeof path, "cnn.safetensors");
    cr_assert_eq(fl_export_safetensors(path, &sp, p, n, S_SHA, 12), FL_OK, "%s",
                 fl_error_last());
    f = s_read(path, &len);
    cr_assert_not_null(strstr((char *)f + 8, "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":"
                                              "[4,1,3,3],\"data_offsets\":[0,144]}"));
    cr_assert_not_null(strstr((char *)f + 8, "\"layers.2.weight\":{\"dtype\":\"F32\",\"shape\":"
                                              "[8,4,3,3],\"data_offsets\":[160,1312]}"));
    cr_assert_not_null(strstr((char *)f + 8, "\"layers.4.weight\":{\"dtype\":\"F32\",\"shape\":"
                                              "[10,200],\"data_offsets\":[1344,9344]}"));
    cr_assert_not_null(strstr((char *)f + 8, "\"layers.4.bias\":{\"dtype\":\"F32\",\"shape\":"
                                              "[10],\"data_offsets\":[9344,9384]}"));
    cr_assert_null(strstr((char *)f + 8, "layers.1."), "pool has no tensors");
    cr_assert_not_null(strstr((char *)f + 8, "\"output\":\"softmax\""));
    cr_assert_not_null(strstr((char *)f + 8, "\"version\":\"12\""));
    {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | f[i];
        cr_assert_eq(hlen % 8, 0);
        cr_assert_eq(len, 8 + hlen + 4 * n);
        cr_assert_eq(memcmp(f + 8 + hlen, p, 4 * n), 0, "data in parameter order");
    }
    free(f);
    free(p);
}

static Onnx__ModelProto *s_onnx(const char *name, const char *spec, uint32_t kind, float **pp,
                                size_t *np)
{
    fl_model_spec sp;
    char path[256];
    unsigned char *f;
    size_t len;
    Onnx__ModelProto *m;

    cr_assert_eq(fl_model_spec_parse(&sp, spec, kind), FL_OK, "%s", fl_error_last());
    *np = fl_model_spec_num_params(&sp);
    *pp = s_ramp(*np);
    s_path(path, sizeof path, name);
    cr_assert_eq(fl_export_onnx(path, &sp, *pp, *np, S_SHA, 5), FL_OK, "%s", fl_error_last());
    f = s_read(path, &len);
    m = onnx__model_proto__unpack(NULL, len, f);
    free(f);
    cr_assert_not_null(m, "the file does not decode as a ModelProto");
    return m;
}

static void s_dims(const Onnx__ValueInfoProto *v, const char *name, const int64_t *want,
                   size_t n)
{
    const Onnx__TensorShapeProto *s;
    cr_assert_str_eq(v->name, name);
    cr_assert_eq(v->type->value_case, ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE);
    cr_assert_eq(v->type->tensor_type->elem_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    s = v->type->tensor_type->shape;
    cr_assert_eq(s->n_dim, n + 1);
    cr_assert_eq(s->dim[0]->value_case, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
    cr_assert_str_eq(s->dim[0]->dim_param, "N");
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(s->dim[i + 1]->dim_value, want[i], "%s dim %zu", name, i + 1);
}

Test(export, onnx_cnn_is_conv_relu_pool_twice_then_flatten_gemm_softmax_at_opset_13)
{
    static const char *const ops[] = {"Conv", "Relu", "MaxPool", "Conv",  "Relu",
                                      "MaxPool", "Flatten", "Gemm", "Softmax"};
    static const int64_t in[] = {1, 28, 28}, out[] = {10};
    float *p;
    size_t n, off = 0;
    Onnx__ModelProto *m = s_onnx("cnn.onnx", S_CNN, 2, &p, &n);
    const Onnx__GraphProto *g = m->graph;

    cr_assert_eq(m->ir_version, 8);
    cr_assert_eq(m->n_opset_import, 1);
    cr_assert_str_eq(m->opset_import[0]->domain, "");
    cr_assert_eq(m->opset_import[0]->version, 13);
    cr_assert_eq(m->model_version, 5);
    cr_assert_eq(g->n_node, sizeof ops / sizeof ops[0]);
    for (size_t i = 0; i < g->n_node; i++)
        cr_assert_str_eq(g->node[i]->op_type, ops[i], "node %zu", i);
    cr_assert_str_eq(g->node[0]->input[0], "input");
    cr_assert_str_eq(g->node[0]->input[1], "layers.0.weight");
    cr_assert_str_eq(g->node[0]->input[2], "layers.0.bias");
    cr_assert_str_eq(g->node[7]->input[1], "layers.4.weight");
    cr_assert_str_eq(g->node[7]->attribute[0]->name, "transB");
    cr_assert_eq(g->node[7]->attribute[0]->i, 1);
    cr_assert_str_eq(g->node[8]->output[0], "probabilities");
    cr_assert_str_eq(g->node[8]->attribute[0]->name, "axis");
    cr_assert_eq(g->node[8]->attribute[0]->i, 1);
    s_dims(g->input[0], "input", in, 3);
    s_dims(g->output[0], "probabilities", out, 1);
    /* Initializers: raw little-endian data, in parameter order. */
    cr_assert_eq(g->n_initializer, 6);
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        cr_assert_eq(t->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        cr_assert(t->has_raw_data);
        cr_assert_eq(memcmp(t->raw_data.data, p + off, t->raw_data.len), 0, "%s", t->name);
        off += t->raw_data.len / 4;
    }
    cr_assert_eq(off, n);
    cr_assert_eq(g->initializer[0]->n_dims, 4);
    cr_assert_eq(g->initializer[0]->dims[1], 1);
    cr_assert_eq(g->initializer[4]->dims[1], 200);
    cr_assert_eq(m->n_metadata_props, 5);
    cr_assert_str_eq(m->metadata_props[1]->key, "spec");
    cr_assert_str_eq(m->metadata_props[1]->value, S_CNN);
    cr_assert_str_eq(m->metadata_props[3]->value, S_SHA);
    onnx__model_proto__free_unpacked(m, NULL);
    free(p);
}

Test(export, onnx_mlp_takes_n_by_d_and_has_no_flatten)
{
    static const char *const ops[] = {"Gemm", "Relu", "Gemm", "Relu", "Gemm", "Sigmoid"};
    static const int64_t in[] = {30}, out[] = {1};
    float *p;
    size_t n;
    Onnx__ModelProto *m = s_onnx("mlp.onnx", "30,128,64,1", 1, &p, &n);
    const Onnx__GraphProto *g = m->graph;
    cr_assert_eq(g->n_node, sizeof ops / sizeof ops[0]);
    for (size_t i = 0; i < g->n_node; i++)
        cr_assert_str_eq(g->node[i]->op_type, ops[i], "node %zu", i);
    s_dims(g->input[0], "input", in, 1);
    s_dims(g->output[0], "probabilities", out, 1);
    cr_assert_str_eq(g->initializer[2]->name, "layers.1.weight");
    cr_assert_eq(g->initializer[2]->dims[0], 64);
    cr_assert_eq(g->initializer[2]->dims[1], 128);
    onnx__model_proto__free_unpacked(m, NULL);
    free(p);
}

/* The folder holds exactly `want` entries: a failed export leaves nothing. */
static void s_entries(size_t want)
{
    DIR *d = opendir(s_dir);
    struct dirent *e;
    size_t k = 0;
    cr_assert_not_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            k++;
    closedir(d);
    cr_assert_eq(k, want, "%zu entries in %s", k, s_dir);
}

Test(export, bad_arguments_are_refused_with_the_file_named_and_nothing_written)
{
    const uint32_t sizes[] = {3, 2, 1};
    float p[11] = {0};
    fl_model_spec sp, bad;
    char path[256];

    cr_assert_eq(fl_model_spec_from_sizes(&sp, sizes, 3, 1), FL_OK);
    s_path(path, sizeof path, "m.onnx");
    cr_assert_eq(fl_export_onnx(path, &sp, p, 10, S_SHA, 1), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), "has 10 parameters, but its spec needs 11"), "%s",
                       fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), path), "%s", fl_error_last());
    cr_assert_eq(fl_export_safetensors(path, &sp, p, 11, "ABC", 1), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), "64 lowercase hex"), "%s", fl_error_last());
    cr_assert_eq(fl_export_safetensors(path, &sp, p, 11, NULL, 1), FL_EINVAL);
    bad = sp;
    bad.num_layers = 0;
    cr_assert_eq(fl_export_onnx(path, &bad, p, 11, S_SHA, 1), FL_EINVAL);
    cr_assert_not_null(strstr(fl_error_last(), "ONNX export to"), "%s", fl_error_last());
    cr_assert_eq(fl_export_onnx("", &sp, p, 11, S_SHA, 1), FL_EINVAL);
    s_entries(0);
}

Test(export, an_unwritable_file_is_an_io_error_naming_it)
{
    const uint32_t sizes[] = {3, 2, 1};
    float p[11] = {0};
    fl_model_spec sp;
    char path[256];
    cr_assert_eq(fl_model_spec_from_sizes(&sp, sizes, 3, 1), FL_OK);
    s_path(path, sizeof path, "no-such-folder/m.safetensors");
    cr_assert_eq(fl_export_safetensors(path, &sp, p, 11, S_SHA, 1), FL_EIO);
    cr_assert_not_null(strstr(fl_error_last(), "cannot write"), "%s", fl_error_last());
    cr_assert_not_null(strstr(fl_error_last(), path), "%s", fl_error_last());
    cr_assert_eq(fl_export_onnx(path, &sp, p, 11, S_SHA, 1), FL_EIO);
    s_entries(0);
}

Test(export, export_replaces_an_existing_file_whole_and_leaves_no_temporary)
{
    const uint32_t sizes[] = {3, 2, 1};
    float p[11] = {0};
    fl_model_spec sp;
    char path[256];
    unsigned char *f;
    size_t len;
    struct stat st;
    cr_assert_eq(fl_model_spec_from_sizes(&sp, sizes, 3, 1), FL_OK);
    s_path(path, sizeof path, "m.safetensors");
    cr_assert_eq(fl_storage_write_atomic(path, "old contents, much longer than a header would "
                                         "be if it were cut short anywhere at all", 85, 0600),
                 FL_OK);
    cr_assert_eq(fl_export_safetensors(path, &sp, p, 11, S_SHA, 2), FL_OK, "%s",
                 fl_error_last());
    f = s_read(path, &len);
    cr_assert_eq(f[8], '{');
    cr_assert_eq(len % 4, 0);
    free(f);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644);
    s_entries(1);
}
