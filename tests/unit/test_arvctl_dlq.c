/* arvctl dlq and rollups: session id extraction for replay routing, and the
 * rebuild statements name every rollup table for the right day. */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "dlq.h"
#include "rollups.h"
#include "stream_writer.h"

/* Whether dlq_event() takes `payload` for an event, its session in `out`. */
static bool session_of(const char *payload, char *out, size_t outlen)
{
    bool dated;
    int64_t day;
    char *event = dlq_event(payload, out, outlen, &dated, &day);
    bool ok = event != NULL;

    free(event);
    return ok;
}

/* Whether dlq_event() finds the received day of `payload`, an event. */
static bool day_of(const char *payload, int64_t *day)
{
    char session[16];
    bool dated = false;
    char *event = dlq_event(payload, session, sizeof(session), &dated, day);
    bool ok = event != NULL && dated;

    free(event);
    return ok;
}

Test(arvctl_dlq, session_id_from_event_json)
{
    char out[64];

    cr_assert(
        session_of("{\"event_id\":\"a\",\"session_id\":\"7f1c2f3a-1\",\"x\":1}", out, sizeof(out)));
    cr_assert_str_eq(out, "7f1c2f3a-1");
}

Test(arvctl_dlq, session_id_refuses_non_events)
{
    char out[8];

    cr_assert_not(session_of("not json", out, sizeof(out)));
    cr_assert_not(session_of("[1,2]", out, sizeof(out)));
    cr_assert_not(session_of("{\"session_id\":5}", out, sizeof(out)));
    cr_assert_not(session_of("{\"session_id\":\"\"}", out, sizeof(out)));
    cr_assert_not(session_of("{\"session_id\":\"longer-than-8\"}", out, sizeof(out)));
    cr_assert_not(session_of("{\"event_id\":\"a\"}", out, sizeof(out)));
    cr_assert_not(session_of(NULL, out, sizeof(out)));
}

/* What replay sends: an event payload as it is; a stream entry's fields
 * (max_deliveries) as the event in their e field, if v is this schema's. */
Test(arvctl_dlq, event_from_either_payload)
{
    static const char ev[] = "{\"event_id\":\"a\",\"session_id\":\"s-1\",\"city\":\"Q \\\" x\"}";
    static const char fields[] = "{\"v\":\"1\",\"e\":\"{\\\"event_id\\\":\\\"a\\\","
                                 "\\\"session_id\\\":\\\"s-2\\\"}\"}";
    char session[16], *event;
    bool dated;
    int64_t day;

    cr_assert_not_null(event = dlq_event(ev, session, sizeof(session), &dated, &day));
    cr_assert_str_eq(event, ev);
    cr_assert_str_eq(session, "s-1");
    free(event);
    cr_assert_not_null(event = dlq_event(fields, session, sizeof(session), &dated, &day));
    cr_assert_str_eq(event, "{\"event_id\":\"a\",\"session_id\":\"s-2\"}");
    cr_assert_str_eq(session, "s-2");
    free(event);
}

Test(arvctl_dlq, event_refuses_what_is_none)
{
    char session[16];
    bool dated;
    int64_t day;

    cr_assert_null(dlq_event(NULL, session, sizeof(session), &dated, &day));
    cr_assert_null(dlq_event("{\"not\":\"an event\"}", session, sizeof(session), &dated, &day));
    /* fields of another schema version, an e that is not an event, no e */
    cr_assert_null(dlq_event("{\"v\":\"2\",\"e\":\"{\\\"session_id\\\":\\\"s\\\"}\"}", session,
                             sizeof(session), &dated, &day));
    cr_assert_null(dlq_event("{\"v\":\"1\",\"e\":\"{\\\"not\\\":1}\"}", session, sizeof(session),
                             &dated, &day));
    cr_assert_null(dlq_event("{\"v\":\"1\"}", session, sizeof(session), &dated, &day));
    cr_assert_null(dlq_event("{\"v\":1,\"e\":\"{\\\"session_id\\\":\\\"s\\\"}\"}", session,
                             sizeof(session), &dated, &day));
}

Test(arvctl_dlq, received_day_of_an_event)
{
    int64_t day = -1;

    /* 2026-12-05 is day 20792 since the epoch. */
    cr_assert(day_of("{\"session_id\":\"s\",\"received_at\":\"2026-12-05T23:59:59.999Z\"}", &day));
    cr_assert_eq(day, 20792);
    cr_assert(day_of("{\"session_id\":\"s\",\"received_at\":\"2026-12-06T00:00:00.000Z\"}", &day));
    cr_assert_eq(day, 20793);
    cr_assert_not(day_of("{\"session_id\":\"s\"}", &day));
    cr_assert_not(day_of("{\"session_id\":\"s\",\"received_at\":\"yesterday\"}", &day));
    cr_assert_not(day_of("{\"session_id\":\"s\",\"received_at\":1733400000000}", &day));
    cr_assert_not(day_of("not json", &day));
    cr_assert_not(day_of(NULL, &day));
    /* A max_deliveries payload: the day of the event in its e field. */
    cr_assert(day_of("{\"v\":\"1\",\"e\":\"{\\\"session_id\\\":\\\"s\\\",\\\"received_at\\\":"
                     "\\\"2026-12-05T00:00:00Z\\\"}\"}",
                     &day));
    cr_assert_eq(day, 20792);
}

Test(arvctl_dlq, replay_age_follows_the_retention_windows)
{
    const int64_t today = 20792;

    /* Dedupe ids of day D are deleted once today - N > D: a day of margin. */
    cr_assert_eq(dlq_replay_age(today, today, 3, 90), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today - 2, today, 3, 90), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today - 3, today, 3, 90), DLQ_AGE_DEDUPE);
    cr_assert_eq(dlq_replay_age(today - 89, today, 3, 90), DLQ_AGE_DEDUPE);
    cr_assert_eq(dlq_replay_age(today - 90, today, 3, 90), DLQ_AGE_RAW);
    /* 0: the dedupe window is the raw retention; a longer one is cut to it. */
    cr_assert_eq(dlq_replay_age(today - 89, today, 0, 90), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today - 90, today, 0, 90), DLQ_AGE_RAW);
    cr_assert_eq(dlq_replay_age(today - 89, today, 400, 90), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today - 90, today, 400, 90), DLQ_AGE_RAW);
    /* A clock ahead of the event's day (tomorrow) is fine, up to the days
     * the aggregator writes (before: any day ahead was replayed, and
     * dead-lettered again as received_out_of_range). */
    cr_assert_eq(dlq_replay_age(today + 1, today, 1, 1), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today + 2, today, 1, 1), DLQ_AGE_OK);
    cr_assert_eq(dlq_replay_age(today + 3, today, 1, 1), DLQ_AGE_AHEAD);
    cr_assert_eq(dlq_replay_age(today - 1, today, 1, 1), DLQ_AGE_RAW);
}

Test(arvctl_dlq, replay_routes_as_the_collector)
{
    char a[64], b[64];

    cr_assert_eq(stream_writer_route("arv:events", 1, 1, "s1", a, sizeof(a)), 0);
    cr_assert_str_eq(a, "arv:events");
    stream_writer_route("arv:events", 4, 2, "s1", a, sizeof(a));
    stream_writer_route("arv:events", 4, 2, "s1", b, sizeof(b));
    cr_assert_str_eq(a, b);
    cr_assert(strncmp(a, "arv:events:", 11) == 0);
}

Test(arvctl_rollups, rebuild_sql_covers_every_table_for_the_day)
{
    static const char *const tables[] = {"rollup_content_daily", "rollup_content_hourly",
                                         "rollup_company_daily", "rollup_company_hourly",
                                         "rollup_breakdown_daily"};
    struct strbuf del, ins;

    strbuf_init(&del);
    strbuf_init(&ins);
    rollups_build_delete_sql(&del, 20412);
    rollups_build_rebuild_sql(&ins, 20412, 0);
    cr_assert_not(del.oom || ins.oom);
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        cr_assert(strstr(del.data, tables[i]), "delete misses %s", tables[i]);
        cr_assert(strstr(ins.data, tables[i]), "rebuild misses %s", tables[i]);
    }
    cr_assert(strstr(del.data, "DATE '1970-01-01' + 20412 + 1"));
    /* the breakdown rows found by the (dimension, day) index: every dimension */
    cr_assert(strstr(del.data, "dimension IN ('device_type', 'browser', 'os', 'country', 'city',"
                               " 'tracking_quality') AND day = DATE '1970-01-01' + 20412;"));
    cr_assert(strstr(ins.data, "DATE '1970-01-01' + 20412)"));
    cr_assert_null(strstr(ins.data, "ON CONFLICT"));
    cr_assert_null(strstr(ins.data, "dense_rank"), "no cap asked for");
    strbuf_reset(&ins);
    rollups_build_rebuild_sql(&ins, 20412, 5);
    cr_assert(
        strstr(ins.data,
               "ORDER BY value = '(other)', total DESC, value) <= 5 THEN value ELSE '(other)'"),
        "%s", ins.data);
    strbuf_deinit(&del);
    strbuf_deinit(&ins);
}
