/* Unit tests for common/timeutil.c: calendar dates as days since the epoch. */
#include <criterion/criterion.h>
#include <limits.h>

#include "timeutil.h"

Test(timeutil, parse_date_strict)
{
    int64_t d;
    cr_assert(timeutil_parse_date("1970-01-01", &d));
    cr_assert_eq(d, 0);
    cr_assert(timeutil_parse_date("2026-11-25", &d));
    cr_assert_eq(d, 20782);
    cr_assert(timeutil_parse_date("2028-02-29", &d));
    cr_assert(timeutil_parse_date("2000-02-29", &d));
    cr_assert(timeutil_parse_date("1969-12-31", &d));
    cr_assert_eq(d, -1);
    const char *bad[] = {"2026-02-29", "2100-02-29",  "2026-13-01", "2026-04-31", "2026-00-10",
                         "2026-1-01",  "20260101",    "2026/11/20", "",           "2026-01-01T00",
                         "0999-01-01", "2026-11-20x", "2026-01-00", "1:70-01-01", "2026-0:-01",
                         "2026-11/20", "2026-12-32",  "2026-1a-01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(timeutil_parse_date(bad[i], &d), "accepted %s", bad[i]);
    cr_assert_not(timeutil_parse_date(NULL, &d));
}

Test(timeutil, dates_round_trip)
{
    char buf[16];
    int64_t day;
    for (int64_t d = -25567; d < 40000; d += 37) {
        timeutil_format_date(d, buf, sizeof(buf));
        cr_assert(timeutil_parse_date(buf, &day), "%s", buf);
        cr_assert_eq(day, d, "%s", buf);
    }
    timeutil_format_date(20777, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2026-11-20");
    timeutil_format_date(-1, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1969-12-31");
}

Test(timeutil, period_is_a_floor_division)
{
    cr_assert_eq(timeutil_period(0, TIMEUTIL_DAY_MS), 0);
    cr_assert_eq(timeutil_period(TIMEUTIL_DAY_MS - 1, TIMEUTIL_DAY_MS), 0);
    cr_assert_eq(timeutil_period(TIMEUTIL_DAY_MS, TIMEUTIL_DAY_MS), 1);
    /* Before 1970: the last millisecond of 1969 is in day -1, hour -1. */
    cr_assert_eq(timeutil_period(-1, TIMEUTIL_DAY_MS), -1);
    cr_assert_eq(timeutil_period(-1, TIMEUTIL_HOUR_MS), -1);
    cr_assert_eq(timeutil_period(-TIMEUTIL_DAY_MS, TIMEUTIL_DAY_MS), -1);
    cr_assert_eq(timeutil_period(-TIMEUTIL_DAY_MS - 1, TIMEUTIL_DAY_MS), -2);
    cr_assert_eq(timeutil_period(1764064800123LL, TIMEUTIL_HOUR_MS), 490018);
    cr_assert_eq(timeutil_period(INT64_MIN, TIMEUTIL_DAY_MS), -106751991168LL);
    cr_assert_eq(timeutil_period(INT64_MAX, TIMEUTIL_DAY_MS), 106751991167LL);
}

Test(timeutil, tv_splits_milliseconds)
{
    struct timeval tv = timeutil_tv(1500);
    cr_assert_eq(tv.tv_sec, 1);
    cr_assert_eq(tv.tv_usec, 500000);
    tv = timeutil_tv(999);
    cr_assert_eq(tv.tv_sec, 0);
    cr_assert_eq(tv.tv_usec, 999000);
    tv = timeutil_tv(0);
    cr_assert(tv.tv_sec == 0 && tv.tv_usec == 0);
}

/* Retry delays spread over [d/2, d]: never past d, never under half of it,
 * and not all alike. */
Test(timeutil, jitter_within_half_to_whole)
{
    unsigned seed = timeutil_jitter_seed(NULL), lo = UINT_MAX, hi = 0;

    cr_assert_eq(timeutil_jitter(0, &seed), 0);
    cr_assert_eq(timeutil_jitter(1, &seed), 0);
    for (int i = 0; i < 1000; i++) {
        unsigned d = timeutil_jitter(5000, &seed);
        cr_assert(d >= 2500 && d <= 5000, "jitter(5000) = %u", d);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    cr_assert_lt(lo, 3000);
    cr_assert_gt(hi, 4500);
}
