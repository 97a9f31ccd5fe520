/* arvctl dlq and rollups: a dead letter's event decoded for replay, routed
 * as the collector routes it (node by session, shard by content), and the
 * rebuild statements name every rollup table for the right day. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "dlq.h"
#include "event.h"
#include "rollups.h"
#include "stream_writer.h"
#include "strbuf.h"
#include "timeutil.h"

#define EID "\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\""
#define SID "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\""
#define RX  "\"received_at\":\"2026-12-05T23:59:59.999Z\""

/* The received day dlq_event() finds in `payload`; -1 if it takes no event. */
static int64_t day_of(const char *payload)
{
    struct event ev;
    struct event_error err;
    char *event = dlq_event(payload, &ev, &err);
    int64_t day = event ? timeutil_period(ev.received_at_ms, TIMEUTIL_DAY_MS) : -1;

    free(event);
    return day;
}

/* An event payload (unknown_content, db_rejected) is replayed as it is,
 * decoded for its session, content and received_at. */
Test(arvctl_dlq, event_payload_decoded)
{
    static const char payload[] =
        "{" EID "," SID ",\"ar_content_id\":200," RX ",\"city\":\"Q \\\" x\"}";
    struct event ev;
    struct event_error err;
    char key[EVENT_CONTENT_KEY_MAX], *event;

    cr_assert_not_null(event = dlq_event(payload, &ev, &err), "%s", err.message);
    cr_assert_str_eq(event, payload);
    cr_assert_str_eq(ev.session_id, "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f");
    cr_assert_eq(ev.ar_content_id, 200);
    event_content_key(&ev, key, sizeof(key));
    cr_assert_str_eq(key, "200");
    free(event);
}

/* A stream entry's fields (max_deliveries) give the event in their e field,
 * if v is this schema's. */
Test(arvctl_dlq, event_from_either_payload)
{
    static const char fields[] = "{\"v\":\"1\",\"e\":\"{\\\"event_id\\\":"
                                 "\\\"0190a3e4-0000-7000-8000-000000000002\\\","
                                 "\\\"session_id\\\":\\\"0000b000-0000-4000-8000-000000000002\\\","
                                 "\\\"ar_content_unique_id\\\":\\\"abc\\\","
                                 "\\\"received_at\\\":\\\"2026-12-05T00:00:00Z\\\"}\"}";
    struct event ev;
    struct event_error err;
    char key[EVENT_CONTENT_KEY_MAX], *event;

    cr_assert_not_null(event = dlq_event(fields, &ev, &err), "%s", err.message);
    cr_assert_str_eq(event, "{\"event_id\":\"0190a3e4-0000-7000-8000-000000000002\","
                            "\"session_id\":\"0000b000-0000-4000-8000-000000000002\","
                            "\"ar_content_unique_id\":\"abc\","
                            "\"received_at\":\"2026-12-05T00:00:00Z\"}");
    cr_assert_str_eq(ev.session_id, "0000b000-0000-4000-8000-000000000002");
    cr_assert_eq(ev.ar_content_id, 0);
    event_content_key(&ev, key, sizeof(key));
    cr_assert_str_eq(key, "abc");
    free(event);
}

/* What the aggregator would not decode is no event: before, any JSON object
 * with a string session_id was replayed (and dead-lettered again). */
Test(arvctl_dlq, event_refuses_what_is_none)
{
    static const char *const none[] = {
        "not json",
        "[1,2]",
        "{\"not\":\"an event\"}",
        "{\"event_id\":\"a\",\"session_id\":\"7f1c2f3a-1\",\"x\":1}",
        "{" EID "," SID "," RX "}",                /* no content */
        "{" EID "," SID ",\"ar_content_id\":200}", /* no received_at */
        "{" EID ",\"session_id\":5,\"ar_content_id\":200," RX "}",
        /* fields of another schema version, an e that is not an event, no e */
        "{\"v\":\"2\",\"e\":\"{\\\"event_id\\\":\\\"0190a3e4-0000-7000-8000-000000000001\\\","
        "\\\"session_id\\\":\\\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\\\",\\\"ar_content_id\\\":1,"
        "\\\"received_at\\\":\\\"2026-12-05T00:00:00Z\\\"}\"}",
        "{\"v\":\"1\",\"e\":\"{\\\"not\\\":1}\"}",
        "{\"v\":\"1\"}",
        "{\"v\":1,\"e\":\"{\\\"session_id\\\":\\\"s\\\"}\"}",
    };
    struct event ev;
    struct event_error err;

    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        err.message[0] = '\0';
        cr_assert_null(dlq_event(none[i], &ev, &err), "%s", none[i]);
        cr_assert(err.message[0], "no reason given for %s", none[i]);
    }
    cr_assert_null(dlq_event(NULL, &ev, &err));
    /* The reason is the decoder's, for the replay's "skipped" line. */
    cr_assert_null(dlq_event("{" EID "," SID ",\"ar_content_id\":200}", &ev, &err));
    cr_assert_str_eq(err.field, "received_at");
}

Test(arvctl_dlq, received_day_of_an_event)
{
    /* 2026-12-05 is day 20792 since the epoch. */
    cr_assert_eq(day_of("{" EID "," SID ",\"ar_content_id\":1," RX "}"), 20792);
    cr_assert_eq(day_of("{" EID "," SID ",\"ar_content_id\":1,"
                        "\"received_at\":\"2026-12-06T00:00:00.000Z\"}"),
                 20793);
    cr_assert_eq(day_of("{" EID "," SID ",\"ar_content_id\":1,\"received_at\":\"yesterday\"}"), -1);
    cr_assert_eq(day_of("{" EID "," SID ",\"ar_content_id\":1,\"received_at\":1733400000000}"), -1);
    /* A max_deliveries payload: the day of the event in its e field. */
    cr_assert_eq(day_of("{\"v\":\"1\",\"e\":\"{\\\"event_id\\\":"
                        "\\\"0190a3e4-0000-7000-8000-000000000001\\\",\\\"session_id\\\":"
                        "\\\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\\\",\\\"ar_content_id\\\":1,"
                        "\\\"received_at\\\":\\\"2026-12-05T00:00:00Z\\\"}\"}"),
                 20792);
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

/* An event of `session` naming content `id` (0: only `uid`). */
static struct event route_event(const char *session, int64_t id, const char *uid)
{
    struct event ev;

    memset(&ev, 0, sizeof(ev));
    snprintf(ev.session_id, sizeof(ev.session_id), "%s", session);
    ev.ar_content_id = id;
    snprintf(ev.content_uid, sizeof(ev.content_uid), "%s", uid);
    return ev;
}

/* Sessions whose FNV-1a mod 4 is 0, 3, 2, 1, 0, 3, 2, 1 (mod 2: 0, 1, 0, 1, ...). */
static const char *const sessions[] = {
    "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e00", "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e01",
    "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e02", "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e03",
    "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e04", "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e05",
    "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e06", "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e07",
};
#define NSESSIONS (sizeof(sessions) / sizeof(sessions[0]))

/* The routing's content key: the decimal ar_content_id, else content_uid. */
Test(arvctl_dlq, content_key_is_the_content_as_named)
{
    char key[EVENT_CONTENT_KEY_MAX], small[3];
    struct event ev = route_event(sessions[0], 200, "abc");

    cr_assert_eq(event_content_key(&ev, key, sizeof(key)), 3);
    cr_assert_str_eq(key, "200");
    ev = route_event(sessions[0], 0, "abc");
    cr_assert_eq(event_content_key(&ev, key, sizeof(key)), 3);
    cr_assert_str_eq(key, "abc");
    ev = route_event(sessions[0], INT64_MAX, "");
    event_content_key(&ev, key, sizeof(key));
    cr_assert_str_eq(key, "9223372036854775807");
    /* The longest unique id fits EVENT_CONTENT_KEY_MAX; a short buffer cuts. */
    ev = route_event(sessions[0], 0, "");
    memset(ev.content_uid, 'u', sizeof(ev.content_uid) - 1);
    cr_assert_eq(event_content_key(&ev, key, sizeof(key)), sizeof(ev.content_uid) - 1);
    cr_assert_eq(event_content_key(&ev, small, sizeof(small)), 2);
    cr_assert_str_eq(small, "uu");
}

/* Unsharded: the plain name on node 0, however many nodes. */
Test(arvctl_dlq, route_unsharded)
{
    char a[64];
    struct event ev = route_event(sessions[0], 200, "");

    cr_assert_eq(stream_writer_route("arv:events", 1, 1, &ev, a, sizeof(a)), 0);
    cr_assert_str_eq(a, "arv:events");
    for (size_t i = 0; i < NSESSIONS; i++) {
        ev = route_event(sessions[i], 200, "");
        cr_assert_eq(stream_writer_route("arv:events", 1, 2, &ev, a, sizeof(a)), 0);
        cr_assert_str_eq(a, "arv:events");
    }
}

/* One node: the content alone picks the shard, FNV-1a("200") mod 4 = 1 and
 * FNV-1a("abc") mod 4 = 3, whatever the session (by session, these eight
 * went to shards 0 to 3); an id and a unique id route by their own keys. */
Test(arvctl_dlq, route_one_node_by_content)
{
    char a[64], b[64];
    struct event ev;

    for (size_t i = 0; i < NSESSIONS; i++) {
        ev = route_event(sessions[i], 200, "abc");
        cr_assert_eq(stream_writer_route("arv:events", 4, 1, &ev, a, sizeof(a)), 0);
        cr_assert_str_eq(a, "arv:events:1", "session %zu: %s", i, a);
        ev = route_event(sessions[i], 0, "abc");
        cr_assert_eq(stream_writer_route("arv:events", 4, 1, &ev, b, sizeof(b)), 0);
        cr_assert_str_eq(b, "arv:events:3", "session %zu: %s", i, b);
    }
}

/* Two nodes, four shards: node k = FNV-1a(session) mod 2 holds shards k and
 * k + 2; the content picks which (FNV-1a mod 2: "200" 1, "201" 0). */
Test(arvctl_dlq, route_two_nodes_node_by_session_shard_by_content)
{
    char a[64], b[64];
    struct event ev;
    static const char *const want200[] = {"arv:events:2", "arv:events:3"};
    static const char *const want201[] = {"arv:events:0", "arv:events:1"};
    for (size_t i = 0; i < NSESSIONS; i++) {
        int k = (int)(i % 2);
        ev = route_event(sessions[i], 200, "");
        cr_assert_eq(stream_writer_route("arv:events", 4, 2, &ev, a, sizeof(a)), k);
        cr_assert_str_eq(a, want200[k], "session %zu: %s", i, a);
        ev = route_event(sessions[i], 201, "");
        cr_assert_eq(stream_writer_route("arv:events", 4, 2, &ev, b, sizeof(b)), k);
        cr_assert_str_eq(b, want201[k], "session %zu: %s", i, b);
    }
}

/* Any layout: the node follows the session, the shard is on that node (shard
 * mod nodes), and one content on one node is one shard. */
Test(arvctl_dlq, route_any_layout)
{
    char a[64];
    struct event ev;
    static const long shards[] = {2, 3, 4, 5, 7, 16};
    static const int nodes[] = {1, 2, 3, 4, 8};
    static const char *const uids[] = {"abc", "uid-1", "uid-2", "x"};
    for (size_t s = 0; s < sizeof(shards) / sizeof(shards[0]); s++) {
        for (size_t n = 0; n < sizeof(nodes) / sizeof(nodes[0]); n++) {
            uint32_t used = (uint32_t)(nodes[n] < shards[s] ? nodes[n] : shards[s]);
            for (size_t c = 0; c < sizeof(uids) / sizeof(uids[0]); c++) {
                long first[8];
                for (int k = 0; k < 8; k++)
                    first[k] = -1;
                for (size_t i = 0; i < NSESSIONS; i++) {
                    ev = route_event(sessions[i], 0, uids[c]);
                    int node =
                        stream_writer_route("arv:events", shards[s], nodes[n], &ev, a, sizeof(a));
                    long shard = strtol(a + strlen("arv:events:"), NULL, 10);
                    cr_assert_eq((uint32_t)node,
                                 strbuf_fnv1a(sessions[i], strlen(sessions[i])) % used);
                    cr_assert(shard >= 0 && shard < shards[s], "%s", a);
                    cr_assert_eq(shard % (long)used, node, "%s on node %d", a, node);
                    if (first[node] < 0)
                        first[node] = shard;
                    cr_assert_eq(shard, first[node], "%ld shards, %d nodes, %s: %s", shards[s],
                                 nodes[n], uids[c], a);
                }
            }
        }
    }
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
