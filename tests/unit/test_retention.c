/* Retention's pure parts: partition names to days, which partitions to drop. */
#include <criterion/criterion.h>

#include "retention.h"
#include "timeutil.h"

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
    int64_t today, day;

    cr_assert(timeutil_parse_date("2026-11-20", &today));
    /* Keep 90 days: 2026-08-22 is today - 90, kept; the day before goes. */
    cr_assert_not(retention_should_drop("ar_view_sessions_p20260822", today, 90, &day));
    cr_assert(retention_should_drop("ar_view_sessions_p20260821", today, 90, &day));
    cr_assert(retention_should_drop("ar_view_sessions_p20250101", today, 90, &day));
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261120", today, 90, &day));
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261127", today, 90, &day));
    /* Keep 1 day: yesterday stays (>= 24 h of raw rows), the day before goes. */
    cr_assert_not(retention_should_drop("ar_view_sessions_p20261119", today, 1, &day));
    cr_assert(retention_should_drop("ar_view_sessions_p20261118", today, 1, &day));
    cr_assert_not(retention_should_drop("ar_view_sessions_default", today, 1, &day));
}
