/*
 * Tests for the privacy ledger: charges compose as the accountant says,
 * the cap is enforced before anything is written, a torn append is
 * recovered without losing or rewriting a line, and a reopened ledger
 * continues where it stopped.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dp/fl_accountant.h"
#include "dp/fl_ledger.h"
#include "identity/fl_identity.h"
#include "tests/support/fl_test_dir.h"

static char s_dir[128];
static char s_path[256];
static fl_identity *s_id;

static void s_setup(void)
{
    fl_test_dir_new(s_dir, sizeof s_dir, "ledger");
    snprintf(s_path, sizeof s_path, "%s/node.ledger", s_dir);
    cr_assert_eq(fl_identity_generate(&s_id), FL_OK);
}

static void s_teardown(void)
{
    fl_identity_free(s_id);
    s_id = NULL;
    fl_test_dir_remove(s_dir);
}

TestSuite(ledger, .init = s_setup, .fini = s_teardown, .timeout = 60);

static void s_charge(fl_ledger_charge *c, uint32_t round, double q, double sigma,
                     uint64_t steps, double cap)
{
    memset(c, 0, sizeof *c);
    strcpy(c->node, "hospital-a");
    strcpy(c->consortium, "test");
    c->round = round;
    c->accountant = FL_ACCOUNTANT_RDP;
    c->q = q;
    c->sigma = sigma;
    c->clip = 1.0;
    c->steps = steps;
    c->dataset_size = 150;
    c->delta = 1e-5;
    c->epsilon_max = cap;
}

static size_t s_count_lines(void)
{
    FILE *f = fopen(s_path, "r");
    size_t n = 0;
    int ch;
    cr_assert_not_null(f);
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

Test(ledger, homogeneous_charges_compose_like_one_run_of_all_steps)
{
    fl_ledger *l = NULL;
    fl_ledger_charge c;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK, "%s",
                 fl_error_last());
    for (uint32_t r = 1; r <= 4; r++) {
        double want;
        s_charge(&c, r, 0.25, 3.0, 5, 10.0);
        cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK, "%s", fl_error_last());
        /* Independent check: RDP composes additively, so r charges of 5
         * steps cost exactly what one run of 5r steps costs. */
        cr_assert_eq(fl_accountant_epsilon(0.25, 3.0, 5 * r, 1e-5, &want, NULL), FL_OK);
        cr_assert_float_eq(c.epsilon, want, 1e-12 * want, "round %u: %g vs %g", r, c.epsilon,
                           want);
        cr_assert_eq(c.total_steps, 5 * r);
        cr_assert_eq(c.seq, r);
    }
    fl_ledger_free(l);
    cr_assert_eq(s_count_lines(), 4);
}

Test(ledger, heterogeneous_charges_are_never_cheaper_than_their_parts)
{
    fl_ledger *l = NULL;
    fl_ledger_charge a, b;
    double ea, eb;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    s_charge(&a, 1, 0.1, 2.0, 20, 50.0);
    s_charge(&b, 2, 0.3, 1.5, 10, 50.0);
    cr_assert_eq(fl_ledger_append_charge(l, &a), FL_OK);
    cr_assert_eq(fl_ledger_append_charge(l, &b), FL_OK);
    cr_assert_eq(fl_accountant_epsilon(0.1, 2.0, 20, 1e-5, &ea, NULL), FL_OK);
    cr_assert_eq(fl_accountant_epsilon(0.3, 1.5, 10, 1e-5, &eb, NULL), FL_OK);
    /* Composition costs at least each part ... */
    cr_assert_geq(b.epsilon, fmax(ea, eb));
    /* ... and, RDP adding up order by order (Mironov 2017, Prop. 1), at most
     * the conversion (Balle et al. 2020, Thm 21) of the summed RDP at any
     * single order of the grid, computed here by hand. */
    {
        const double orders[] = {2, 8, 32};
        for (size_t i = 0; i < 3; i++) {
            double ord = orders[i];
            double rdp =
                20 * fl_accountant_rdp(0.1, 2.0, ord) + 10 * fl_accountant_rdp(0.3, 1.5, ord);
            double bound = rdp + log1p(-1 / ord) - (log(1e-5) + log(ord)) / (ord - 1);
            cr_assert_leq(b.epsilon, bound * (1 + 1e-12), "order %g: %g > %g", ord, b.epsilon,
                          bound);
        }
    }
    fl_ledger_free(l);
}

Test(ledger, a_charge_past_the_cap_is_refused_and_nothing_is_written)
{
    fl_ledger *l = NULL;
    fl_ledger_charge c;
    double one_round;
    cr_assert_eq(fl_accountant_epsilon(0.25, 1.0, 10, 1e-5, &one_round, NULL), FL_OK);
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    s_charge(&c, 1, 0.25, 1.0, 10, one_round * 0.5);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_EBUDGET);
    cr_assert_eq(fl_ledger_num_charges(l), 0);
    fl_ledger_free(l);
    cr_assert_eq(s_count_lines(), 0);
}

Test(ledger, reopened_ledger_continues_from_its_cumulative_epsilon)
{
    fl_ledger *l = NULL;
    fl_ledger_charge c;
    double before, want;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    s_charge(&c, 1, 0.2, 2.0, 7, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    s_charge(&c, 2, 0.2, 2.0, 7, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    before = c.epsilon;
    fl_ledger_free(l);

    l = NULL;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(fl_ledger_num_charges(l), 2);
    cr_assert_float_eq(fl_ledger_charge_at(l, 1)->epsilon, before, 0.0);
    s_charge(&c, 3, 0.2, 2.0, 7, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    cr_assert_eq(fl_accountant_epsilon(0.2, 2.0, 21, 1e-5, &want, NULL), FL_OK);
    cr_assert_float_eq(c.epsilon, want, 1e-12 * want);
    cr_assert_eq(c.seq, 3);
    fl_ledger_free(l);
}

Test(ledger, calibration_accounts_for_earlier_charges)
{
    fl_ledger *l = NULL;
    fl_ledger_charge c;
    double s_fresh, s_after, eps;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    cr_assert_eq(fl_ledger_calibrate_sigma(l, FL_ACCOUNTANT_RDP, 0.25, 60, 3.0, 1e-5, &s_fresh),
                 FL_OK);
    /* With an empty ledger it is the plain calibration. */
    cr_assert_eq(fl_accountant_epsilon(0.25, s_fresh, 60, 1e-5, &eps, NULL), FL_OK);
    cr_assert_leq(eps, 3.0);
    s_charge(&c, 1, 0.25, 4.0, 30, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    cr_assert_eq(fl_ledger_calibrate_sigma(l, FL_ACCOUNTANT_RDP, 0.25, 60, 3.0, 1e-5, &s_after),
                 FL_OK);
    cr_assert_gt(s_after, s_fresh, "earlier spending must leave less room: more noise");
    cr_assert_eq(fl_ledger_epsilon_after(l, FL_ACCOUNTANT_RDP, 0.25, s_after, 60, 1e-5, &eps),
                 FL_OK);
    cr_assert_leq(eps, 3.0 * (1 + 1e-12));
    cr_assert_eq(fl_ledger_epsilon_after(l, FL_ACCOUNTANT_RDP, 0.25, s_after * 0.98, 60, 1e-5,
                                         &eps), FL_OK);
    cr_assert_gt(eps, 3.0, "a noticeably smaller sigma must overshoot: calibration is tight");
    /* A budget already spent leaves no room. */
    cr_assert_eq(fl_ledger_calibrate_sigma(l, FL_ACCOUNTANT_RDP, 0.25, 60, c.epsilon * 0.99,
                                           1e-5, &s_after), FL_EBUDGET);
    fl_ledger_free(l);
}

Test(ledger, torn_last_line_is_recovered_not_dropped)
{
    fl_ledger *l = NULL;
    fl_ledger_charge c;
    fl_ledger_status st;
    int recovered = 0, fd;
    static const char torn[] = "{\"v\":1,\"seq\":3,\"time\":\"2026-";
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    s_charge(&c, 1, 0.2, 2.0, 5, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    s_charge(&c, 2, 0.2, 2.0, 5, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    fl_ledger_free(l);
    /* A crash in the middle of the third append. */
    fd = open(s_path, O_WRONLY | O_APPEND);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, torn, sizeof torn - 1), (ssize_t)(sizeof torn - 1));
    close(fd);

    cr_assert_eq(fl_ledger_verify(s_path, fl_identity_public_of(s_id)->sign_pk, &st, NULL, NULL),
                 FL_EPARSE);
    cr_assert(st.torn_tail);
    cr_assert_eq(st.bad_line, 3);

    l = NULL;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", &recovered), FL_OK, "%s",
                 fl_error_last());
    cr_assert_eq(recovered, 3);
    cr_assert_eq(fl_ledger_num_charges(l), 2, "the charges before the torn line are kept");
    s_charge(&c, 3, 0.2, 2.0, 5, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK, "%s", fl_error_last());
    cr_assert_eq(c.seq, 5, "torn line 3, recovery record 4, new charge 5");
    fl_ledger_free(l);

    cr_assert_eq(fl_ledger_verify(s_path, fl_identity_public_of(s_id)->sign_pk, &st, NULL, NULL),
                 FL_OK, "%s", fl_error_last());
    cr_assert_eq(st.recoveries, 1);
    cr_assert_eq(st.charges, 3);
    cr_assert_eq(s_count_lines(), 5);
    {
        /* The torn bytes are still there, verbatim. */
        char buf[8192];
        FILE *f = fopen(s_path, "r");
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        cr_assert_not_null(strstr(buf, torn));
    }
}

Test(ledger, a_ledger_signed_by_another_identity_is_refused)
{
    fl_ledger *l = NULL;
    fl_identity *other = NULL;
    fl_ledger_charge c;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    s_charge(&c, 1, 0.2, 2.0, 5, 10.0);
    cr_assert_eq(fl_ledger_append_charge(l, &c), FL_OK);
    fl_ledger_free(l);
    cr_assert_eq(fl_identity_generate(&other), FL_OK);
    l = NULL;
    cr_assert_eq(fl_ledger_open(&l, s_path, other, "hospital-a", NULL), FL_EPARSE);
    cr_assert_not_null(strstr(fl_error_last(), "line 1"), "%s", fl_error_last());
    cr_assert_null(l);
    fl_identity_free(other);
}

Test(ledger, new_ledger_file_is_private)
{
    fl_ledger *l = NULL;
    struct stat st;
    cr_assert_eq(fl_ledger_open(&l, s_path, s_id, "hospital-a", NULL), FL_OK);
    cr_assert_eq(stat(s_path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    fl_ledger_free(l);
}
