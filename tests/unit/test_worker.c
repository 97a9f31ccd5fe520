/* Unit tests for aggregator/worker.c's pure part: the test-only failpoint spec. */
#include <criterion/criterion.h>

#include "worker.h"

Test(worker, failpoint_spec)
{
    long n = -1;

    cr_assert(worker_failpoint_parse(NULL, &n));
    cr_assert_eq(n, 0);
    cr_assert(worker_failpoint_parse("", &n));
    cr_assert_eq(n, 0);
    cr_assert(worker_failpoint_parse("after_commit:1", &n));
    cr_assert_eq(n, 1);
    cr_assert(worker_failpoint_parse("after_commit:250", &n));
    cr_assert_eq(n, 250);
    cr_assert_not(worker_failpoint_parse("after_commit:0", &n));
    cr_assert_not(worker_failpoint_parse("after_commit:", &n));
    cr_assert_not(worker_failpoint_parse("after_commit:3x", &n));
    cr_assert_not(worker_failpoint_parse("before_commit:3", &n));
    cr_assert_not(worker_failpoint_parse("after_commit:-2", &n));
}
