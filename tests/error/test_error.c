/* Tests for fl_error: codes, messages and wrapping. */
#include <criterion/criterion.h>
#include <string.h>

#include "error/fl_error.h"

Test(error, set_returns_code_and_keeps_message)
{
    fl_error_clear();
    cr_assert_eq(fl_error_set(FL_EIO, "cannot open %s", "x.csv"), FL_EIO);
    cr_assert_str_eq(fl_error_last(), "cannot open x.csv");
    cr_assert_eq(fl_error_code(), FL_EIO);
}

Test(error, wrap_prefixes_context)
{
    fl_error_set(FL_EPARSE, "line 3: bad number");
    fl_error_wrap(FL_EPARSE, "loading %s", "data.csv");
    cr_assert_str_eq(fl_error_last(), "loading data.csv: line 3: bad number");
}

Test(error, names_are_distinct)
{
    int codes[] = {FL_OK, FL_EINVAL, FL_ENOMEM, FL_EIO, FL_EPARSE, FL_EPROTO,
                   FL_ECRYPTO, FL_EBUDGET, FL_ETIMEOUT, FL_EAUTH, FL_ERANGE, FL_ESTATE};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert_neq(strcmp(fl_error_name(codes[i]), fl_error_name(codes[j])), 0);
    cr_assert_str_eq(fl_error_name(-999), "FL_EUNKNOWN");
}
