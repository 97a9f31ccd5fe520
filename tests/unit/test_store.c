/* Unit tests for aggregator/store.c's pure parts: relation names, SQLSTATE
 * classes, and the per-batch statement. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

Test(store, watch_limit)
{
    cr_assert_eq(store_watch_limit_ms(60000), 75000);
    cr_assert_eq(store_watch_limit_ms(1000), 1250);
    cr_assert_eq(store_watch_limit_ms(3600000), 3615000); /* a quarter, at most 15 s */
}

/* A store whose call to the server, begun at `since_ms`, is on socket
 * sv[0] of a fresh pair (sv[1]: the server's end). */
static void watched_call(struct store *s, int sv[2], long statement_timeout_ms, uint64_t since_ms)
{
    cr_assert_eq(
        store_init(s, "postgresql://x@127.0.0.1/x", "analytics.ar_content", statement_timeout_ms),
        0);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(store_watch(s, since_ms + 4000, since_ms - 1000), 0, "no call in progress");
    s->call_since_ms = since_ms;
    s->call_fd = sv[0];
}

static void watched_call_end(struct store *s, int sv[2])
{
    s->call_since_ms = 0;
    s->call_fd = -1;
    store_deinit(s);
    close(sv[0]);
    close(sv[1]);
}

/* A call that outlasts the limit has its socket shut down once; one that
 * does not, or no call, is left alone. */
Test(store, watch_shuts_an_unanswered_call_down)
{
    struct store s;
    int sv[2];
    char c;

    watched_call(&s, sv, 1000, 1000);
    cr_assert_eq(store_watch(&s, 2250, 0), 0, "1,250 ms is within the limit");
    cr_assert_eq(send(sv[1], "x", 1, 0), 1);
    cr_assert_eq(recv(sv[0], &c, 1, MSG_DONTWAIT), 1, "the socket still works");
    cr_assert_eq(store_watch(&s, 2251, 0), 1251);
    cr_assert_eq(recv(sv[1], &c, 1, 0), 0, "the peer sees the connection end");
    cr_assert_eq(store_watch(&s, 9000, 0), 0, "given up once");
    watched_call_end(&s, sv);
}

/* Once stopping, a call still going at the stop's cut is given up, however
 * short it has been; before the cut it is left alone. */
Test(store, watch_cuts_a_call_at_the_stop)
{
    struct store s;
    int sv[2];
    char c;

    watched_call(&s, sv, 60000, 10000);
    cr_assert_eq(store_watch(&s, 10500, 11000), 0, "before the cut");
    cr_assert_eq(recv(sv[0], &c, 1, MSG_DONTWAIT), -1, "the socket still works");
    cr_assert_eq(store_watch(&s, 11000, 11000), 1000, "at the cut, far within the limit");
    cr_assert_eq(recv(sv[1], &c, 1, 0), 0, "the peer sees the connection end");
    watched_call_end(&s, sv);
}

Test(store, merge_statement)
{
    struct strbuf sql;

    strbuf_init(&sql);
    store_build_merge_sql(&sql);
    cr_assert(strstr(sql.data, "ON CONFLICT (stream, entry_id) DO NOTHING"));
    cr_assert(strstr(sql.data, "hll_union(r.sessions, EXCLUDED.sessions)"));
    /* Every rollup table, each upserted on its primary key, from the deltas. */
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_content_hourly AS r"));
    cr_assert(
        strstr(sql.data, "ON CONFLICT (company_id, ar_content_id, hour, project_id) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_content_daily AS r"));
    cr_assert(
        strstr(sql.data, "ON CONFLICT (company_id, ar_content_id, day, project_id) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_company_hourly AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, hour) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_company_daily AS r"));
    cr_assert(strstr(sql.data, "ON CONFLICT (company_id, day) DO UPDATE"));
    cr_assert(strstr(sql.data, "INSERT INTO analytics.rollup_breakdown_daily AS r"));
    cr_assert(strstr(sql.data, "FROM pg_temp.arv_measures WHERE kind = 3 ORDER BY company_id, at"));
    cr_assert(strstr(sql.data, "FROM pg_temp.arv_breakdown ORDER BY 2, 4, 1, 5, 6, 3"));
    cr_assert_null(strstr(sql.data, "watermarks"));
    strbuf_deinit(&sql);
}

/* One statement for every stream, its rows in the streams' order; an
 * unknown floor (NULL) added at the epoch or only marked current; the delay
 * the larger of the writer's and the row's recent one, at least the slack;
 * never past now() less the slack. */
Test(store, floors_statement)
{
    struct strbuf sql;
    const char *lit[] = {"'arv:events:0'", "'arv:events:2'"};
    const int64_t floor[] = {1764064800123LL, 0};

    strbuf_init(&sql);
    store_build_floors_sql(&sql, lit, floor, 2, 60000);
    cr_assert(strstr(sql.data,
                     "FROM (VALUES ('arv:events:0', to_timestamp(1764064800123 / 1000.0),"
                     " 60000::bigint), ('arv:events:2', NULL::timestamptz, 60000::bigint))"
                     " v (s, f, d) ORDER BY s ON CONFLICT (stream) DO UPDATE SET"),
              "%s", sql.data);
    cr_assert(strstr(sql.data, "CASE WHEN f IS NULL THEN 'epoch' ELSE least(f - greatest(d *"));
    cr_assert(strstr(sql.data, "complete_until = CASE WHEN EXCLUDED.floor_at IS NULL THEN"
                               " w.complete_until ELSE least(EXCLUDED.floor_at - greatest((CASE"
                               " WHEN w.delay_at > now() - interval '10 minutes' AND w.delay_ms >"
                               " EXCLUDED.delay_ms THEN w.delay_ms ELSE EXCLUDED.delay_ms END)"));
    cr_assert(strstr(sql.data, "now() - 1000 * interval '1 millisecond')"));
    cr_assert(strstr(sql.data, "RETURNING stream,"));
    strbuf_deinit(&sql);
}

Test(store, day_lock_statement)
{
    struct strbuf sql;
    char key[64];
    const int64_t days[] = {20416, 20417};

    strbuf_init(&sql);
    store_build_lock_sql(&sql, days, 2);
    snprintf(key, sizeof(key), "SELECT count(pg_advisory_xact_lock_shared(%d, d))",
             ARV_LOCK_ROLLUP_DAY);
    cr_assert(strstr(sql.data, key), "%s", sql.data);
    /* Shared, one per day, in the order given (ascending). */
    cr_assert(strstr(sql.data, "FROM (VALUES (20416), (20417)) days (d)"), "%s", sql.data);
    strbuf_reset(&sql);
    store_build_lock_sql(&sql, days, 0);
    cr_assert(strstr(sql.data, "(SELECT 0 WHERE false) days (d)"), "%s", sql.data);
    strbuf_deinit(&sql);
}
