/* Tests for fl_log's JSON-lines file: one valid object per line, escaped. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "log/fl_log.h"
#include "tests/support/fl_test_dir.h"

Test(log, json_lines_file_holds_one_escaped_object_per_line)
{
    char dir[128], path[256], line[1024];
    FILE *f;
    int n = 0;
    fl_test_dir_new(dir, sizeof dir, "log");
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    fl_log_init("tester", FL_LOG_INFO);
    cr_assert_eq(fl_log_json_open(path), FL_OK, "%s", fl_error_last());
    fl_log_info("plain %d", 42);
    fl_log_warn("quote \" backslash \\ newline \n tab \t end");
    fl_log_debug("below the minimum level: not written");
    fl_log_json_close();
    f = fopen(path, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f)) {
        n++;
        cr_assert_eq(line[0], '{');
        cr_assert_not_null(strstr(line, "\"program\":\"tester\""), "%s", line);
        if (n == 1)
            cr_assert_not_null(strstr(line, "\"level\":\"info\",\"program\":\"tester\","
                                            "\"message\":\"plain 42\"}"), "%s", line);
        if (n == 2)
            cr_assert_not_null(strstr(line, "\"message\":\"quote \\\" backslash \\\\ newline "
                                            "\\u000a tab \\u0009 end\"}"), "%s", line);
    }
    fclose(f);
    cr_assert_eq(n, 2);
    cr_assert_eq(fl_log_json_open("/nonexistent/dir/x.jsonl"), FL_EIO);
    fl_test_dir_remove(dir);
}
