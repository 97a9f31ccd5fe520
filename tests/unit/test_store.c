/* Unit tests for aggregator/store.c's pure parts: relation names, SQLSTATE
 * classes, and the per-batch statement. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "locks.h"
#include "store.h"

Test(store, sqlstate_classes)
{
    cr_assert_eq(store_classify("08006"), STORE_CONN);
    cr_assert_eq(store_classify("57P01"), STORE_CONN);
    cr_assert_eq(store_classify(NULL), STORE_CONN);
    cr_assert_eq(store_classify(""), STORE_CONN);
    cr_assert_eq(store_classify("22P02"), STORE_DATA);
    cr_assert_eq(store_classify("23514"), STORE_DATA);
    cr_assert_eq(store_classify("42P01"), STORE_SCHEMA);
    cr_assert_eq(store_classify("42883"), STORE_SCHEMA);
    cr_assert_eq(store_classify("40P01"), STORE_RETRY);
    cr_assert_eq(store_classify("57014"), STORE_RETRY);
}

Test(store, flush_statement)
{
    struct strbuf sql;

    strbuf_init(&sql);
    store_build_flush_sql(&sql, "(VALUES (1, 2, 3))", "(VALUES ('u', 1, 2, 3))", "'agg-1'",
                          1764064800123LL);
    /* Content comes from the cache's answers for the batch, not the registry. */
    cr_assert(strstr(sql.data, "LEFT JOIN (VALUES (1, 2, 3)) AS c1 (id, project_id, company_id)"
                               " ON c1.id = s.ar_content_id"));
    cr_assert(strstr(sql.data, "LEFT JOIN (VALUES ('u', 1, 2, 3)) AS c2 (unique_id, id,"
                               " project_id, company_id) ON s.ar_content_id IS NULL"));
    cr_assert(strstr(sql.data, "ON CONFLICT (stream, entry_id) DO NOTHING"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.event_ids"));
    cr_assert(strstr(sql.data, "hll_union(r.sessions, EXCLUDED.sessions)"));
    /* Every rollup table, each upserted on its primary key. */
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_content_hourly AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, ar_content_id, hour) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_content_daily AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, ar_content_id, day) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_company_hourly AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, hour) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_company_daily AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, day) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_breakdown_daily AS r"));
    cr_assert(strstr(sql.data, "('tracking_quality', coalesce(n.tracking_quality, 'unknown'))"));
    /* Rollups read only the rows that were new. */
    cr_assert(strstr(sql.data, "FROM new_rows GROUP BY 1, company_id, content_id"));
    cr_assert(strstr(sql.data, "VALUES ('agg-1', to_timestamp(1764064800123 / 1000.0), now())"));
    strbuf_reset(&sql);
    store_build_flush_sql(&sql, "(VALUES (1, 2, 3))", "(VALUES ('u', 1, 2, 3))", "'agg-1'", 0);
    cr_assert_null(strstr(sql.data, "ingest_watermarks"));
    strbuf_deinit(&sql);
}

Test(store, day_lock_statement)
{
    struct strbuf sql;
    char key[64];

    strbuf_init(&sql);
    store_build_lock_sql(&sql);
    snprintf(key, sizeof(key), "pg_advisory_xact_lock_shared(%d, d)", ARV_LOCK_ROLLUP_DAY);
    cr_assert(strstr(sql.data, key), "%s", sql.data);
    /* Shared, one per distinct UTC day of the events, ascending. */
    cr_assert(strstr(sql.data, "SELECT DISTINCT ((received_at AT TIME ZONE 'UTC')::date"));
    cr_assert(strstr(sql.data, "WHERE reason IS NULL ORDER BY 1"));
    cr_assert_null(strstr(sql.data, "lock_shared(%"));
    strbuf_deinit(&sql);
}
