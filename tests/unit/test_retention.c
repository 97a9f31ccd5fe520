/* Retention's pure parts: partition names to days, which partitions to drop,
 * and the date helpers arvctl rollups rebuild shares. */
#include <criterion/criterion.h>

#include "retention.h"

Test(retention, partition_day_parses_names)
{
    int64_t day = -1;

    cr_assert(retention_partition_day("ar_view_sessions_p19700101", &day));
    cr_assert_eq(day, 0);
    cr_assert(retention_partition_day("ar_view_sessions_p20240229", &day));
    cr_assert_eq(day, 19782);
    cr_assert(retention_partition_day("ar_view_sessions_p20261120", &day));
    cr_assert_eq(day, 20777);
}

Test(retention, partition_day_refuses_other_names)
{
    int64_t day = 7;
    const char *bad[] = {"ar_view_sessions",
                         "ar_view_sessions_p2026112",
                         "ar_view_sessions_p202611201",
                         "ar_view_sessions_p20261320",
                         "ar_view_sessions_p20230229",
                         "ar_view_sessions_p2026-1-2",
                         "ar_view_sessions_default",
                         "rollup_content_daily",
                         "ar_view_sessions_p19691231",
                         ""};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(retention_partition_day(bad[i], &day), "%s", bad[i]);
    cr_assert_not(retention_partition_day(NULL, &day));
    cr_assert_eq(day, 7);
}

Test(retention, should_drop_only_days_before_the_window)
{
    int64_t today;

    cr_assert(retention_parse_date("2026-11-20", &today));
    /* Keep 90 days: 2026-08-22 is today - 90, kept; the day before goes. */
    cr_assert_not(retention_should_drop("ar_view_sessions_p20260822", today, 90));
    cr_assert(retention_should_drop("ar_view_sessions_p20260821", today, 90));
    cr_assert(retention_should_drop("ar_view_sessions_p20250101", today, 90));
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261120", today, 90));
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261127", today, 90));
    /* Keep 1 day: yesterday stays (>= 24 h of raw rows), the day before goes. */
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261119", today, 1));
    cr_assert(retention_should_drop("ar_view_sessions_p20261118", today, 1));
    cr_assert_not(retention_should_drop("ar_view_sessions_default", today, 1));
}

Test(retention, dates_round_trip)
{
    char buf[16];
    int64_t day;

    for (int64_t d = 0; d < 40000; d += 37) {
        retention_format_date(d, buf, sizeof(buf));
        cr_assert(retention_parse_date(buf, &day), "%s", buf);
        cr_assert_eq(day, d, "%s", buf);
    }
    retention_format_date(20777, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2026-11-20");
    cr_assert_not(retention_parse_date("2026-02-29", &day));
    cr_assert_not(retention_parse_date("2026-11-20x", &day));
    cr_assert_not(retention_parse_date("2026/11/20", &day));
    cr_assert_not(retention_parse_date("20261120", &day));
    cr_assert(retention_parse_date("2028-02-29", &day));
}
