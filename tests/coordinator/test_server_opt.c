/*
 * Tests for the server optimizers against hand-computed values of the
 * update rules of Reddi et al. 2021 (Alg. 2) and Hsu et al. 2019.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "coordinator/fl_server_opt.h"

static fl_server_opt *s_new(fl_server_kind kind, double lr)
{
    fl_server_opt_config c = {kind, lr, 0.9, 0.9, 0.99, 1e-3};
    fl_server_opt *o = NULL;
    cr_assert_eq(fl_server_opt_new(&o, &c, 2), FL_OK, "%s", fl_error_last());
    return o;
}

Test(server_opt, fedavg_with_lr_1_returns_the_average)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDAVG, 1.0);
    float x[2] = {1.0f, -2.0f};
    const float avg[2] = {1.5f, -1.0f};
    fl_server_opt_step(o, x, avg);
    cr_assert_float_eq(x[0], 1.5f, 1e-7);
    cr_assert_float_eq(x[1], -1.0f, 1e-7);
    fl_server_opt_free(o);
}

Test(server_opt, fedavgm_accumulates_momentum)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDAVGM, 1.0);
    float x[2] = {0.0f, 0.0f};
    const float avg1[2] = {1.0f, 0.0f};
    fl_server_opt_step(o, x, avg1); /* v = 1, x = 1 */
    cr_assert_float_eq(x[0], 1.0f, 1e-6);
    {
        const float avg2[2] = {2.0f, 0.0f}; /* d = 1: v = 0.9*1 + 1 = 1.9, x = 2.9 */
        fl_server_opt_step(o, x, avg2);
    }
    cr_assert_float_eq(x[0], 2.9f, 1e-6);
    cr_assert_float_eq(x[1], 0.0f, 1e-7);
    fl_server_opt_free(o);
}

Test(server_opt, fedadam_matches_hand_computation)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDADAM, 0.1);
    float x[2] = {0.0f, 1.0f};
    const float avg[2] = {0.5f, 1.0f};
    fl_server_opt_step(o, x, avg);
    /* d = 0.5: m = 0.05, v = 0.01*0.25 = 0.0025, step = 0.1*0.05/(0.05+0.001) */
    cr_assert_float_eq(x[0], (float)(0.1 * 0.05 / (0.05 + 1e-3)), 1e-6);
    cr_assert_float_eq(x[1], 1.0f, 1e-7, "no change where the pseudo-gradient is zero");
    fl_server_opt_free(o);
}

Test(server_opt, parsing_and_validation)
{
    fl_server_kind k;
    fl_server_opt *o = NULL;
    fl_server_opt_config bad = {FL_SERVER_FEDADAM, 0.1, 0.9, 1.0, 0.99, 1e-3};
    cr_assert_eq(fl_server_opt_parse("fedadam", &k), FL_OK);
    cr_assert_eq(k, FL_SERVER_FEDADAM);
    cr_assert_str_eq(fl_server_opt_name(k), "fedadam");
    cr_assert_eq(fl_server_opt_parse("sgd", &k), FL_EINVAL);
    cr_assert_eq(fl_server_opt_new(&o, &bad, 3), FL_EINVAL);
    cr_assert_null(o);
    fl_server_opt_free(NULL);
}

/* A checkpoint: run 3 rounds, save, restore into a fresh optimizer, run 2
 * more; the model must equal (bit for bit) 5 rounds of one optimizer that
 * never stopped. */
static void s_checkpoint_matches_uninterrupted(fl_server_kind kind, const char *path)
{
    fl_server_opt *a = s_new(kind, 0.5), *b = s_new(kind, 0.5), *c = s_new(kind, 0.5);
    float xa[2] = {0.1f, -0.3f}, xb[2] = {0.1f, -0.3f};
    for (int r = 0; r < 5; r++) {
        const float avg[2] = {(float)r * 0.25f - 0.2f, 0.7f - (float)r * 0.1f};
        fl_server_opt_step(a, xa, avg);
        if (r < 3) {
            fl_server_opt_step(b, xb, avg);
        } else {
            if (r == 3) {
                cr_assert_eq(fl_server_opt_save(b, path), FL_OK, "%s", fl_error_last());
                cr_assert_eq(fl_server_opt_load(c, path), FL_OK, "%s", fl_error_last());
            }
            fl_server_opt_step(c, xb, avg);
        }
    }
    cr_assert_eq(xa[0], xb[0]);
    cr_assert_eq(xa[1], xb[1]);
    fl_server_opt_free(a);
    fl_server_opt_free(b);
    fl_server_opt_free(c);
}

Test(server_opt, a_restored_checkpoint_continues_exactly)
{
    char path[] = "/tmp/fl-opt-state-test.bin";
    s_checkpoint_matches_uninterrupted(FL_SERVER_FEDAVGM, path);
    s_checkpoint_matches_uninterrupted(FL_SERVER_FEDADAM, path);
    s_checkpoint_matches_uninterrupted(FL_SERVER_FEDAVG, path);
    remove(path);
}

Test(server_opt, a_damaged_or_mismatched_state_file_is_refused)
{
    char path[] = "/tmp/fl-opt-state-bad.bin";
    fl_server_opt *adam = s_new(FL_SERVER_FEDADAM, 0.1), *avgm = s_new(FL_SERVER_FEDAVGM, 0.1);
    float x[2] = {0, 0};
    const float avg[2] = {1, 2};
    unsigned char b[256];
    size_t len;
    FILE *f;
    fl_server_opt_step(adam, x, avg);
    cr_assert_eq(fl_server_opt_save(adam, path), FL_OK);
    cr_assert_eq(fl_server_opt_load(avgm, path), FL_EINVAL, "another kind");
    cr_assert_not_null(strstr(fl_error_last(), "fedadam"), "%s", fl_error_last());
    f = fopen(path, "rb");
    len = fread(b, 1, sizeof b, f);
    fclose(f);
    cr_assert_eq(len, 24u + 2 * 2 * 8 + 32);
    b[30] ^= 4;
    f = fopen(path, "wb");
    fwrite(b, 1, len, f);
    fclose(f);
    cr_assert_eq(fl_server_opt_load(adam, path), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "checksum"), "%s", fl_error_last());
    remove(path);
    cr_assert_eq(fl_server_opt_load(adam, path), FL_EIO);
    fl_server_opt_free(adam);
    fl_server_opt_free(avgm);
}

Test(server_opt, configure_keeps_state_for_the_same_kind_and_resets_it_for_another)
{
    fl_server_opt *o = s_new(FL_SERVER_FEDAVGM, 1.0);
    fl_server_opt_config c = *fl_server_opt_settings(o);
    float x[2] = {0.0f, 0.0f};
    const float one[2] = {1.0f, 0.0f};
    fl_server_opt_step(o, x, one); /* v = 1, x = 1 */
    c.lr = 0.5;
    cr_assert_eq(fl_server_opt_configure(o, &c), FL_OK);
    {
        const float two[2] = {2.0f, 0.0f}; /* d = 1: v = 1.9, x = 1 + 0.5*1.9 = 1.95 */
        fl_server_opt_step(o, x, two);
    }
    cr_assert_float_eq(x[0], 1.95f, 1e-6);
    c.kind = FL_SERVER_FEDAVG;
    cr_assert_eq(fl_server_opt_configure(o, &c), FL_OK);
    c.kind = FL_SERVER_FEDAVGM;
    cr_assert_eq(fl_server_opt_configure(o, &c), FL_OK);
    {
        const float avg[2] = {2.95f, 0.0f}; /* fresh v: d = 1, v = 1, x = 1.95 + 0.5 */
        fl_server_opt_step(o, x, avg);
    }
    cr_assert_float_eq(x[0], 2.45f, 1e-6);
    c.lr = -1.0;
    cr_assert_eq(fl_server_opt_configure(o, &c), FL_EINVAL);
    cr_assert_float_eq(fl_server_opt_settings(o)->lr, 0.5, 1e-12, "unchanged after a refusal");
    fl_server_opt_free(o);
}
