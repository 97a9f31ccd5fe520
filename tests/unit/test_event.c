/* Unit tests for common/event.c: validation, normalisation, stream encoding. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "event.h"
#include "strbuf.h"

#define NOW_MS 1795595200000LL /* 2026-11-25T08:26:40Z */

static const struct event_context ctx = {
    .user_agent_header = "Mozilla/5.0 (iPhone)",
    .client_ip = "203.0.113.7",
    .now_ms = NOW_MS,
    .max_skew_ms = 3600 * 1000,
};

static bool parse(const char *json, struct event *ev, struct event_error *err)
{
    return event_parse_client(json, strlen(json), &ctx, ev, err);
}

#define SID "\"session_id\":\"7F1C2F3A-5B7E-4C2A-9D3E-1A2B3C4D5E6F\""

/* What JSON allows around zeros, and RFC 3339 fractions of any length. */
Test(event, zeros_and_long_fractions_pass)
{
    struct event ev;
    struct event_error err = {0};
    const char *json = "{\"ar_content_id\":1," SID ",\"duration_seconds\":0,"
                       "\"x\":[0,-0,0.5,-0.05,10,100,1e05,2E-07,-0e+00,1.05],"
                       "\"occurred_at\":\"2026-11-25T08:00:00.1234567891Z\"}";

    cr_assert(parse(json, &ev, &err), "%s: %s", err.code, err.message);
    cr_assert_eq(ev.duration_seconds, 0);
    cr_assert_eq(ev.occurred_at_ms, NOW_MS - (26 * 60 + 40) * 1000 + 123);
}

Test(event, full_event_is_normalised)
{
    struct event ev;
    struct event_error err;
    const char *json = "{\"ar_content_id\":42," SID ",\"duration_seconds\":37.9,"
                       "\"tracking_quality\":\"Good\",\"video_played\":true,"
                       "\"device_type\":\"Mobile\",\"browser\":\"Safari\",\"os\":\"iOS\","
                       "\"country\":\"de\",\"city\":\"Berlin\",\"user_agent\":\"UA/1\","
                       "\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\","
                       "\"occurred_at\":\"2026-11-25T09:00:00+01:00\",\"extra\":[1,2]}";
    cr_assert(parse(json, &ev, &err), "%s", err.message);
    cr_assert_eq(ev.ar_content_id, 42);
    cr_assert_str_eq(ev.session_id, "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f");
    cr_assert_eq(ev.duration_seconds, 37);
    cr_assert_str_eq(ev.tracking_quality, "good");
    /* The UA parser's vocabulary is lower case: one breakdown value. */
    cr_assert_str_eq(ev.device_type, "mobile");
    cr_assert_str_eq(ev.browser, "Safari");
    cr_assert_str_eq(ev.os, "iOS");
    cr_assert(ev.video_played);
    cr_assert_str_eq(ev.country, "DE");
    cr_assert_str_eq(ev.user_agent, "UA/1");
    cr_assert_str_eq(ev.ip, "203.0.113.7");
    cr_assert_str_eq(ev.event_id, "0190a3e4-0000-7000-8000-000000000001");
    cr_assert_eq(ev.occurred_at_ms, NOW_MS - (26 * 60 + 40) * 1000);
    cr_assert_eq(ev.received_at_ms, NOW_MS);
}

Test(event, minimal_event_takes_header_and_generates_id)
{
    struct event ev;
    struct event_error err;
    cr_assert(parse("{\"ar_content_unique_id\":\"portrait-9\"," SID "}", &ev, &err), "%s",
              err.message);
    cr_assert_eq(ev.ar_content_id, 0);
    cr_assert_str_eq(ev.content_uid, "portrait-9");
    cr_assert_eq(ev.duration_seconds, -1);
    cr_assert_str_eq(ev.user_agent, "Mozilla/5.0 (iPhone)");
    cr_assert_eq(strlen(ev.event_id), 36);
    cr_assert_eq(ev.event_id[14], '7', "UUIDv7 version nibble: %s", ev.event_id);
}

Test(event, portrait_id_and_string_content_id)
{
    struct event ev;
    struct event_error err;
    cr_assert(parse("{\"portrait_id\":\"p1\"," SID "}", &ev, &err));
    cr_assert_str_eq(ev.content_uid, "p1");
    cr_assert(parse("{\"ar_content_id\":\"17\"," SID "}", &ev, &err));
    cr_assert_eq(ev.ar_content_id, 17);
}

struct bad_case {
    const char *json;
    const char *code;
    const char *field;
};

Test(event, nesting_of_8_levels_passes)
{
    struct event ev;
    struct event_error err = {0};

    cr_assert(parse("{\"ar_content_id\":1," SID ",\"a\":[[[[[[[1]]]]]]]}", &ev, &err), "%s",
              err.message);
}

/* `{"ar_content_id":1,SID,"a":[<n x unit>]}`: the event itself, its two
 * commas and the array are 4 values, and the array's units n - 1 more. */
static char *event_with_array(const char *unit, size_t n)
{
    struct strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "{\"ar_content_id\":1," SID ",\"a\":[");
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(&sb, i ? "," : "");
        strbuf_puts(&sb, unit);
    }
    strbuf_puts(&sb, "]}");
    return sb.data;
}

/* What one event may hold in all is bounded before json-c builds a tree of
 * it: 256 values, 16 objects and arrays (the event and its array are 2). */
Test(event, values_and_containers_are_bounded)
{
    static const struct {
        const char *unit;
        size_t n;
        bool ok;
        const char *says;
    } cases[] = {
        {"1", 253, true, NULL},
        {"1", 254, false, "more than 256 JSON values"},
        {"\"a,b,c\"", 253, true, NULL}, /* commas in strings are not values */
        {"{}", 14, true, NULL},
        {"{}", 15, false, "more than 16 objects and arrays"},
        {"[]", 15, false, "more than 16 objects and arrays"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = event_with_array(cases[i].unit, cases[i].n);
        struct event ev;
        struct event_error err = {0};
        bool ok = parse(body, &ev, &err);
        cr_expect_eq(ok, cases[i].ok, "%zu x %s: %s", cases[i].n, cases[i].unit, err.message);
        if (!cases[i].ok) {
            cr_expect_str_eq(err.code, "invalid_json");
            cr_expect(strstr(err.message, cases[i].says), "%s", err.message);
        }
        free(body);
    }
}

/* 1 MiB of empty objects in a field nobody reads: json-c would take about
 * 270 MB and seconds for it; it is refused before. */
Test(event, a_body_of_many_objects_is_refused_unread)
{
    char *body = event_with_array("{}", 349000);
    struct event ev;
    struct event_error err = {0};
    cr_assert_not(parse(body, &ev, &err));
    cr_expect(strstr(err.message, "more than 16 objects and arrays"), "%s", err.message);
    free(body);
}

/* Empty arrays nested 8 deep in the event are 9 levels, like [[...[1]...]]
 * (json-c's own limit let them one level further). */
Test(event, empty_containers_count_as_levels)
{
    struct event ev;
    struct event_error err = {0};
    cr_expect_not(parse("{\"ar_content_id\":1," SID ",\"a\":[[[[[[[[]]]]]]]]}", &ev, &err));
    cr_expect_str_eq(err.message, "the body is not valid JSON: nesting too deep");
    cr_expect(parse("{\"ar_content_id\":1," SID ",\"a\":[[[[[[[]]]]]]]}", &ev, &err), "%s",
              err.message);
}

Test(event, bad_input_names_the_field)
{
    static const struct bad_case cases[] = {
        {"", "invalid_json", NULL},
        {"null", "invalid_json", NULL}, /* json-c's NULL object: once no error was set */
        {"  null ", "invalid_json", NULL},
        {"{", "invalid_json", NULL},
        {"[1]", "invalid_json", NULL},
        {"{} x", "invalid_json", NULL},
        {"{\"a\":[[[[[[[[[[1]]]]]]]]]]}", "invalid_json", NULL},
        /* 9 levels: one too many (8 pass: see nesting_of_8_levels_passes) */
        {"{\"ar_content_id\":1," SID ",\"a\":[[[[[[[[1]]]]]]]]}", "invalid_json", NULL},
        /* not JSON, though json-c's lenient mode took them */
        {"{\"ar_content_id\":1," SID ",}", "invalid_json", NULL},
        {"{'ar_content_id':1," SID "}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID " /* c */}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":NaN}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"video_played\":True}", "invalid_json", NULL},
        {"{\"ar_content_id\":007," SID "}", "invalid_json", NULL},
        /* json-c takes these leading zeros even in its strict mode */
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":037.5}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":00}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":-01}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":[1,01.5]}", "invalid_json", NULL},
        /* json-c takes these in fields nobody reads: not JSON either */
        {"{\"ar_content_id\":1," SID ",\"x\":1.}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":[1.e5]}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":5.}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":\"a\001b\"}", "invalid_json", NULL},
        {"{\"ar_content_id\":1," SID ",\"x\":\"a\tb\"}", "invalid_json", NULL},
        /* beyond int64: refused, not clamped to INT64_MAX */
        {"{\"ar_content_id\":12345678901234567890," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":\" +42\"," SID "}", "invalid_field", "ar_content_id"},
        /* \u0000 ends a C string: what follows it must not pass unseen */
        {"{\"ar_content_id\":\"42\\u0000x\"," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":1," SID ",\"occurred_at\":\"2026-11-25T08:00:00Z\\u0000junk\"}",
         "invalid_field", "occurred_at"},
        {"{" SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":0," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":-5," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":1.5," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":1}", "invalid_field", "session_id"},
        {"{\"ar_content_id\":1,\"session_id\":\"not-a-uuid\"}", "invalid_field", "session_id"},
        {"{\"ar_content_id\":1,\"session_id\":42}", "invalid_field", "session_id"},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":-1}", "invalid_field",
         "duration_seconds"},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":\"9\"}", "invalid_field",
         "duration_seconds"},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":100000}", "invalid_field",
         "duration_seconds"},
        {"{\"ar_content_id\":1," SID ",\"video_played\":\"yes\"}", "invalid_field", "video_played"},
        {"{\"ar_content_id\":1," SID ",\"country\":\"Germany\"}", "invalid_field", "country"},
        {"{\"ar_content_id\":1," SID ",\"tracking_quality\":\"very good\"}", "invalid_field",
         "tracking_quality"},
        {"{\"ar_content_id\":1," SID ",\"city\":\"a\\nb\"}", "invalid_field", "city"},
        {"{\"ar_content_id\":1," SID ",\"event_id\":\"x\"}", "invalid_field", "event_id"},
        /* placeholders: every event after the first would count as a repeat */
        {"{\"ar_content_id\":1," SID ",\"event_id\":\"00000000-0000-0000-0000-000000000000\"}",
         "invalid_field", "event_id"},
        {"{\"ar_content_id\":1," SID ",\"event_id\":\"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF\"}",
         "invalid_field", "event_id"},
        {"{\"ar_content_id\":1," SID ",\"occurred_at\":\"yesterday\"}", "invalid_field",
         "occurred_at"},
        {"{\"ar_content_id\":1," SID ",\"occurred_at\":\"2020-01-01T00:00:00Z\"}", "invalid_field",
         "occurred_at"},
        /* the epoch is a time like any other, far outside the skew (it was
         * taken for "absent" and dropped) */
        {"{\"ar_content_id\":1," SID ",\"occurred_at\":\"1970-01-01T00:00:00Z\"}", "invalid_field",
         "occurred_at"},
        {"{\"ar_content_id\":1," SID ",\"occurred_at\":\"1970-01-01T01:00:00+01:00\"}",
         "invalid_field", "occurred_at"},
        {"{\"ar_content_id\":1," SID ",\"browser\":{\"name\":\"x\"}}", "invalid_field", "browser"},
        /* Found by tests/fuzz: invalid UTF-8 was accepted, then rewritten to
         * U+FFFD by the stream encoding, so what was stored differed. */
        {"{\"ar_content_id\":1," SID ",\"city\":\"\xff\\u00f6ln\"}", "invalid_field", "city"},
        {"{\"ar_content_id\":1," SID ",\"os\":\"\xed\xa0\x80\"}", "invalid_field", "os"},
        /* a unique id that is not a string stops there, before session_id */
        {"{\"ar_content_unique_id\":5,\"session_id\":\"x\"}", "invalid_field",
         "ar_content_unique_id"},
        {"{\"portrait_id\":true," SID "}", "invalid_field", "portrait_id"},
        {"{\"ar_content_id\":\"+5\"," SID "}", "invalid_field", "ar_content_id"},
        {"{\"ar_content_id\":1," SID
         ",\"tracking_quality\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
         "invalid_field", "tracking_quality"},
        {"{\"ar_content_id\":1," SID
         ",\"device_type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
         "invalid_field", "device_type"},
        {"{\"ar_content_id\":1," SID ",\"country\":\"D1\"}", "invalid_field", "country"},
        {"{\"ar_content_id\":1," SID ",\"country\":\"1D\"}", "invalid_field", "country"},
        {"{\"ar_content_id\":1," SID ",\"duration_seconds\":86401}", "invalid_field",
         "duration_seconds"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct event ev;
        struct event_error err = {0};
        cr_assert_not(parse(cases[i].json, &ev, &err), "accepted: %s", cases[i].json);
        cr_assert_str_eq(err.code, cases[i].code, "%s: code %s", cases[i].json, err.code);
        if (cases[i].field)
            cr_assert(err.field && strcmp(err.field, cases[i].field) == 0, "%s: field %s",
                      cases[i].json, err.field ? err.field : "(null)");
        else
            cr_assert_null(err.field, "%s", cases[i].json);
        cr_assert(err.message[0] != '\0');
    }
}

Test(event, long_user_agent_is_truncated_on_a_character)
{
    char json[2048];
    char ua[700];
    memset(ua, 'a', sizeof(ua));
    /* A 2-byte character straddling the 512-byte limit must not be cut in half. */
    memcpy(ua + 511, "\xc3\xa9", 2);
    ua[sizeof(ua) - 1] = '\0';
    snprintf(json, sizeof(json), "{\"ar_content_id\":1," SID ",\"user_agent\":\"%s\"}", ua);
    struct event ev;
    struct event_error err;
    cr_assert(parse(json, &ev, &err), "%s", err.message);
    cr_assert_eq(strlen(ev.user_agent), 511);
}

Test(event, stream_round_trip)
{
    struct event in, out;
    struct event_error err;
    struct strbuf sb;
    const char *json = "{\"ar_content_id\":42," SID ",\"duration_seconds\":12,"
                       "\"tracking_quality\":\"poor\",\"video_played\":true,"
                       "\"city\":\"K\\u00f6ln \\\"Mitte\\\"\",\"country\":\"DE\","
                       "\"occurred_at\":\"2026-11-25T08:00:00.250Z\"}";
    cr_assert(parse(json, &in, &err), "%s", err.message);
    strbuf_init(&sb);
    event_to_stream(&in, &sb);
    cr_assert(event_from_stream(sb.data, sb.len, &out, &err), "%s: %s", sb.data, err.message);
    cr_assert_eq(memcmp(&in, &out, sizeof(in)), 0, "round trip differs: %s", sb.data);
    strbuf_deinit(&sb);
}

Test(event, stream_round_trip_keeps_an_occurred_at_of_the_epoch)
{
    struct event in, out;
    struct event_error err;
    struct strbuf sb;
    const char *json = "{\"ar_content_id\":42," SID ",\"occurred_at\":\"1970-01-01T00:00:00Z\","
                       "\"received_at\":\"2026-11-25T08:26:40.000Z\","
                       "\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\"}";
    cr_assert(event_from_stream(json, strlen(json), &in, &err), "%s", err.message);
    cr_assert(in.has_occurred_at);
    cr_assert_eq(in.occurred_at_ms, 0);
    strbuf_init(&sb);
    event_to_stream(&in, &sb);
    cr_assert(strstr(sb.data, "\"occurred_at\":\"1970-01-01T00:00:00.000Z\""), "%s", sb.data);
    cr_assert(event_from_stream(sb.data, sb.len, &out, &err), "%s: %s", sb.data, err.message);
    cr_assert_eq(memcmp(&in, &out, sizeof(in)), 0, "round trip differs: %s", sb.data);
    strbuf_deinit(&sb);
}

Test(event, stream_encoding_is_compact_and_ordered)
{
    struct event ev;
    struct event_error err;
    struct strbuf sb;
    cr_assert(parse("{\"ar_content_id\":5," SID
                    ",\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\"}",
                    &ev, &err));
    strbuf_init(&sb);
    event_to_stream(&ev, &sb);
    cr_assert_str_eq(sb.data, "{\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\","
                              "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\","
                              "\"ar_content_id\":5,\"video_played\":false,"
                              "\"user_agent\":\"Mozilla/5.0 (iPhone)\",\"ip\":\"203.0.113.7\","
                              "\"received_at\":\"2026-11-25T08:26:40.000Z\"}");
    strbuf_deinit(&sb);
}

Test(event, stream_requires_received_at_and_event_id)
{
    struct event ev;
    struct event_error err;
    const char *no_rx = "{\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\","
                        "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\","
                        "\"ar_content_id\":5}";
    cr_assert_not(event_from_stream(no_rx, strlen(no_rx), &ev, &err));
    cr_assert_str_eq(err.field, "received_at");
    const char *no_id = "{\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\","
                        "\"ar_content_id\":5,\"received_at\":\"2026-11-25T08:26:40.000Z\"}";
    cr_assert_not(event_from_stream(no_id, strlen(no_id), &ev, &err));
    cr_assert_str_eq(err.field, "event_id");
    const char *nul_rx =
        "{\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\","
        "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\","
        "\"ar_content_id\":5,\"received_at\":\"2026-11-25T08:26:40.000Z\\u0000x\"}";
    cr_assert_not(event_from_stream(nul_rx, strlen(nul_rx), &ev, &err));
    cr_assert_str_eq(err.field, "received_at");
}

Test(event, rfc3339)
{
    int64_t ms;
    char buf[40];
    cr_assert(event_parse_rfc3339("1970-01-01T00:00:00Z", &ms));
    cr_assert_eq(ms, 0);
    cr_assert(event_parse_rfc3339("2024-02-29T23:59:59.999Z", &ms));
    event_format_rfc3339(ms, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2024-02-29T23:59:59.999Z");
    cr_assert(event_parse_rfc3339("2026-11-25T10:00:00-05:30", &ms));
    event_format_rfc3339(ms, buf, sizeof(buf));
    cr_assert_str_eq(buf, "2026-11-25T15:30:00.000Z");
    cr_assert_not(event_parse_rfc3339("2023-02-29T00:00:00Z", &ms));
    cr_assert_not(event_parse_rfc3339("2026-13-01T00:00:00Z", &ms));
    cr_assert_not(event_parse_rfc3339("2026-11-25T10:00:00", &ms));
    cr_assert_not(event_parse_rfc3339("2026-11-25T10:00:00Zjunk", &ms));
    cr_assert_not(event_parse_rfc3339("2026-11-25T10:00:00.Z", &ms));
    cr_assert_not(event_parse_rfc3339("2026-11-25T10:00:00+24:00", &ms));
    cr_assert_not(event_parse_rfc3339("2026-11-25T10:00:00+01:60", &ms));
    cr_assert(event_parse_rfc3339("2000-02-29T00:00:00Z", &ms)); /* every 400 years */
    cr_assert(event_parse_rfc3339("2026-11-25T10:00:00+23:59", &ms));
    event_format_rfc3339(-1, buf, sizeof(buf));
    cr_assert_str_eq(buf, "1969-12-31T23:59:59.999Z");
}

Test(event, uuid_v7_is_time_ordered_and_unique)
{
    char a[37], b[37];
    event_uuid_v7(a, NOW_MS);
    event_uuid_v7(b, NOW_MS + 1);
    cr_assert(strcmp(a, b) < 0);
    event_uuid_v7(b, NOW_MS);
    cr_assert(strcmp(a, b) != 0);
    cr_assert(strchr("89ab", a[19]) != NULL, "variant: %s", a);
}

/* The scanner and the encoder test eight bytes at a time: a byte that needs
 * attention must be found at every position of a word, in strings of every
 * length around a word, exactly as json-c plus event_from_client() read it. */
Test(event, every_byte_class_at_every_position)
{
    static const struct {
        const char *json;    /* as written in the body */
        const char *decoded; /* as the field holds it; NULL: an error */
    } specials[] = {
        {"\\\"", "\""},          {"\\\\", "\\"}, {"\x7f", NULL},    {"\xc3\xb6", "\xc3\xb6"},
        {"\\u00e9", "\xc3\xa9"}, {"\\/", "/"},   {"\\u0001", NULL}, {"\x01", NULL},
    };
    char body[256], want[64];
    struct strbuf sb;

    strbuf_init(&sb);
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
        for (int len = 1; len <= 20; len++) {
            for (int pos = 0; pos < len; pos++) {
                struct event fast, slow, back;
                struct event_error e1, e2;
                char city[32];
                memset(city, 'a', (size_t)len);
                city[len] = '\0';
                snprintf(body, sizeof(body),
                         "{\"ar_content_id\":1," SID ",\"event_id\":"
                         "\"0190a3e4-0000-7000-8000-000000000001\",\"city\":\"%.*s%s%s\"}",
                         pos, city, specials[k].json, city + pos + 1);
                bool ok = parse(body, &fast, &e1);
                json_object *obj = json_tokener_parse(body);
                bool ok_slow = obj && event_from_client(obj, &ctx, &slow, &e2);
                json_object_put(obj);
                cr_assert_eq(ok, ok_slow, "%s: scanner %d, json-c %d", body, ok, ok_slow);
                if (!specials[k].decoded) {
                    cr_assert(!ok, "%s: accepted", body);
                    continue;
                }
                cr_assert(ok, "%s: %s", body, e1.message);
                snprintf(want, sizeof(want), "%.*s%s%s", pos, city, specials[k].decoded,
                         city + pos + 1);
                cr_assert_str_eq(fast.city, want, "%s", body);
                cr_assert_eq(memcmp(&fast, &slow, sizeof(fast)), 0, "%s: json-c differs", body);
                strbuf_reset(&sb);
                event_to_stream(&fast, &sb);
                cr_assert(event_from_stream(sb.data, sb.len, &back, &e1), "%s: %s", sb.data,
                          e1.message);
                cr_assert_str_eq(back.city, want, "%s", sb.data);
            }
        }
    }
    strbuf_deinit(&sb);
}

/* Values at their edges, read as they were meant. */
Test(event, edge_values_are_read_as_meant)
{
    struct event ev;
    struct event_error err = {0};

    cr_assert(parse("{\"ar_content_id\":\"9\"," SID ",\"video_played\":1,"
                    "\"duration_seconds\":86400,\"device_type\":\"TABLET\"}",
                    &ev, &err),
              "%s", err.message);
    cr_assert_eq(ev.ar_content_id, 9);
    cr_assert(ev.video_played);
    cr_assert_eq(ev.duration_seconds, 86400);
    cr_assert_str_eq(ev.device_type, "tablet");
    cr_assert(parse("{\"ar_content_id\":1," SID ",\"video_played\":0}", &ev, &err), "%s",
              err.message);
    cr_assert_not(ev.video_played);

    /* occurred_at exactly the allowed skew away passes, either way. */
    char json[256], when[40];
    event_format_rfc3339(NOW_MS - ctx.max_skew_ms, when, sizeof(when));
    snprintf(json, sizeof(json), "{\"ar_content_id\":1," SID ",\"occurred_at\":\"%s\"}", when);
    cr_assert(parse(json, &ev, &err), "%s: %s", json, err.message);
    event_format_rfc3339(NOW_MS + ctx.max_skew_ms, when, sizeof(when));
    snprintf(json, sizeof(json), "{\"ar_content_id\":1," SID ",\"occurred_at\":\"%s\"}", when);
    cr_assert(parse(json, &ev, &err), "%s: %s", json, err.message);

    /* A User-Agent header with a space near its end is kept whole. */
    struct event_context c = ctx;
    c.user_agent_header = "curl 8";
    const char *min = "{\"ar_content_id\":1," SID "}";
    cr_assert(event_parse_client(min, strlen(min), &c, &ev, &err), "%s", err.message);
    cr_assert_str_eq(ev.user_agent, "curl 8");
}

/* A stream entry's ip must be a string. */
Test(event, stream_ip_must_be_a_string)
{
    struct event ev;
    struct event_error err = {0};
    const char *json = "{\"event_id\":\"0190a3e4-0000-7000-8000-000000000001\","
                       "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\","
                       "\"ar_content_id\":5,\"ip\":5,\"received_at\":\"2026-11-25T08:26:40.000Z\"}";
    cr_assert_not(event_from_stream(json, strlen(json), &ev, &err));
    cr_assert_str_eq(err.field, "ip");
}
