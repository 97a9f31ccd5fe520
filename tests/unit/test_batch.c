/* Unit tests for aggregator/batch.c: stream entries -> raw rows, dead letters
 * and rollup inputs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "hll.h"
#include "ua.h"

static const char *const streams[] = {"arv:events:0", "arv:events:1"};
static struct batch b;

static void setup(void)
{
    batch_init(&b, streams);
}

static void teardown(void)
{
    batch_deinit(&b);
}

TestSuite(batch, .init = setup, .fini = teardown);

#define FIELD(k, v)                                                                                \
    {                                                                                              \
        k, sizeof(k) - 1, v, strlen(v)                                                             \
    }

static const char event_json[] =
    "{\"event_id\":\"01a2127b-db01-7b91-beb4-9ff4e5fe1586\","
    "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\",\"ar_content_id\":42,"
    "\"duration_seconds\":37,\"tracking_quality\":\"good\",\"video_played\":true,"
    "\"device_type\":\"mobile\",\"city\":\"K\\\\oln\",\"user_agent\":\"UA\","
    "\"ip\":\"203.0.113.7\",\"received_at\":\"2025-11-25T10:00:00.123Z\"}";

/* The row of entry i, as a NUL-terminated copy. */
static char *row_of(size_t i)
{
    static char buf[4 * BATCH_PAYLOAD_VALUE_MAX];
    const struct batch_entry *e = &b.entries[i];
    cr_assert_lt(e->row_len, sizeof(buf));
    memcpy(buf, b.rows.data + e->row_off, e->row_len);
    buf[e->row_len] = '\0';
    return buf;
}

/* Field k of event entry i's binary row: its length (-1 for NULL), *p its
 * bytes; k = -1 counts the fields (and checks the row ends after the last). */
static int field_of(size_t i, int k, const unsigned char **p)
{
    const struct batch_entry *e = &b.entries[i];
    const unsigned char *q = (const unsigned char *)b.rows.data + e->row_off;
    const unsigned char *end = q + e->row_len;
    int j = 0;

    for (; q < end; j++) {
        cr_assert_leq(q + 4, end);
        int32_t len = (int32_t)((uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 |
                                (uint32_t)q[3]);
        q += 4;
        if (j == k) {
            *p = q;
            return len;
        }
        if (len > 0)
            q += len;
    }
    cr_assert_eq(q, end);
    cr_assert_eq(k, -1, "no field %d", k);
    return j;
}

/* True if field k of entry i is the text `want` (NULL: the field is NULL). */
static bool field_is(size_t i, int k, const char *want)
{
    const unsigned char *p;
    int len = field_of(i, k, &p);

    if (!want)
        return len == -1;
    return len == (int)strlen(want) && memcmp(p, want, (size_t)len) == 0;
}

/* True if field k of entry i holds the `n` bytes `want`. */
static bool field_bytes(size_t i, int k, const void *want, int n)
{
    const unsigned char *p;

    return field_of(i, k, &p) == n && memcmp(p, want, (size_t)n) == 0;
}

/* Network-order bytes of v, for a field's expected value. */
static void be64(int64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--, v = (int64_t)((uint64_t)v >> 8))
        out[i] = (unsigned char)(v & 0xff);
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static const char *value_of(uint32_t id)
{
    static char buf[256];
    size_t len;
    const char *v = batch_value(&b, id, &len);
    cr_assert_lt(len, sizeof(buf));
    memcpy(buf, v, len);
    buf[len] = '\0';
    return buf;
}

/* An event received more than BATCH_DAYS_BACK days before the read's day,
 * or more than BATCH_DAYS_AHEAD after, is a dead letter: no partition is
 * made for it (before, it failed its whole read, and one old event made a
 * partition for every day back to it). At the edges it is an event. */
Test(batch, event_received_outside_the_days_written_is_a_dead_letter)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    const int64_t day = 1764064800123LL / 86400000; /* the event's, 2025-11-25 */
    const int64_t todays[] = {day + BATCH_DAYS_BACK + 1, day + BATCH_DAYS_BACK,
                              day - BATCH_DAYS_AHEAD - 1, day - BATCH_DAYS_AHEAD};

    for (size_t i = 0; i < 4; i++) {
        b.today = todays[i];
        cr_assert_eq(batch_add(&b, 0, "7-0", 3, f, 2), 0);
    }
    cr_assert_eq(b.entries[0].kind, BATCH_DEAD);
    cr_assert_str_eq(b.entries[0].reason, BATCH_REASON_OUT_OF_RANGE);
    cr_assert(strstr(row_of(0),
                     "arv:events:0\t7-0\treceived_out_of_range\treceived_at "
                     "2025-11-25T10:00:00.123Z is outside the days written: 400 days before "
                     "today (UTC) to 2 after\t{\"v\":\"1\",\"e\":"),
              "%s", row_of(0));
    cr_assert_eq(b.entries[1].kind, BATCH_EVENT);
    cr_assert_eq(b.entries[2].kind, BATCH_DEAD);
    cr_assert_eq(b.entries[3].kind, BATCH_EVENT);
    cr_assert_eq(b.dead, 2);
    cr_assert_eq(b.invalid, 0);
}

Test(batch, decodes_an_event_into_a_raw_row)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    static const unsigned char session[16] = {0x7f, 0x1c, 0x2f, 0x3a, 0x5b, 0x7e, 0x4c, 0x2a,
                                              0x9d, 0x3e, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f};

    cr_assert_eq(batch_add(&b, 1, "1764064800123-0", 15, f, 2), 0);
    cr_assert_eq(b.count, 1);
    cr_assert_eq(b.entries[0].kind, BATCH_EVENT);
    cr_assert_eq(b.invalid, 0);
    /* The raw row up to is_bot in COPY binary format, BATCH_RAW_COLUMNS
     * order: 16 fields (the store adds the count and the content columns). */
    const unsigned char event_id[16] = {0x01, 0xa2, 0x12, 0x7b, 0xdb, 0x01, 0x7b, 0x91,
                                        0xbe, 0xb4, 0x9f, 0xf4, 0xe5, 0xfe, 0x15, 0x86};
    const unsigned char ip[8] = {2, 32, 0, 4, 203, 0, 113, 0};
    const unsigned char duration[4] = {0, 0, 0, 37}, yes = 1, no = 0;
    unsigned char when[8];
    const unsigned char *p;
    be64((1764064800123LL - 946684800000LL) * 1000, when); /* us since 2000 */
    cr_assert_eq(field_of(0, -1, &p), 16);
    cr_assert(field_bytes(0, 0, event_id, 16));
    cr_assert_eq(memcmp(b.rows.data + b.entries[0].row_off, "\0\0\0\x10", 4), 0);
    cr_assert(field_bytes(0, 1, session, 16));
    cr_assert(field_is(0, 2, "UA"));
    cr_assert(field_is(0, 3, "mobile"));
    cr_assert(field_is(0, 4, NULL));     /* browser */
    cr_assert(field_is(0, 5, NULL));     /* os */
    cr_assert(field_bytes(0, 6, ip, 8)); /* 203.0.113.0/32, anonymised */
    cr_assert(field_is(0, 7, NULL));     /* country */
    cr_assert(field_is(0, 8, "K\\oln")); /* as sent: no escaping in binary */
    cr_assert(field_bytes(0, 9, duration, 4));
    cr_assert(field_is(0, 10, "good"));
    cr_assert(field_bytes(0, 11, &yes, 1));
    cr_assert(field_bytes(0, 12, when, 8)); /* created_at */
    cr_assert(field_is(0, 13, NULL));       /* occurred_at */
    cr_assert(field_bytes(0, 14, when, 8)); /* received_at */
    cr_assert(field_bytes(0, 15, &no, 1));  /* is_bot */
    /* What the rollups need of it. */
    const struct batch_entry *e = &b.entries[0];
    cr_assert_eq(e->content_id, 42);
    cr_assert_eq(e->received_ms, 1764064800123LL);
    cr_assert_eq(e->duration, 37);
    cr_assert_eq(e->tq, BATCH_TQ_GOOD);
    cr_assert(e->video_played);
    cr_assert_not(e->is_bot);
    cr_assert_eq(e->session_hash, hll_hash(session, 16));
    /* Its breakdown values are interned only for the rollups: an event
     * that is a duplicate, a bot's or of unknown content takes no value
     * memory for the rest of the write. */
    uint32_t dims[BATCH_DIMS];
    cr_assert_eq(b.nvals, 0);
    cr_assert_eq(batch_value_bytes(&b), 0);
    cr_assert_eq(batch_intern_dims(&b, 0, dims), 0);
    cr_assert_str_eq(value_of(dims[0]), "mobile");
    cr_assert_str_eq(value_of(dims[1]), "unknown"); /* no browser */
    cr_assert_str_eq(value_of(dims[4]), "K\\oln");  /* as sent */
    cr_assert_str_eq(value_of(dims[5]), "good");
    cr_assert_eq(dims[1], dims[2]); /* both "unknown": one value */
    cr_assert_eq(b.nvals, 4);       /* mobile, unknown, K\\oln, good */
    /* No payload kept: only a dead letter needs it (batch_set_payload). */
    cr_assert_not(e->payload_kept);
    cr_assert_eq(batch_set_payload(&b, 0, event_json, strlen(event_json)), 0);
    cr_assert(e->payload_kept);
    /* COPY-escaped: the backslashes of K\\oln doubled. */
    cr_assert_eq(e->payload_len, strlen(event_json) + 2);
    cr_assert_eq(memcmp(b.rows.data + e->payload_off, "{\"event_id\"", 11), 0);
}

/* The largest delay from received_at to the entry id's time: a collector
 * clock ahead counts nothing, an event replayed long after (arvctl dlq
 * replay) is not a delay, and a new read starts from nothing. */
Test(batch, notes_the_largest_xadd_delay)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};

    /* received_at is 1764064800123 ms. */
    cr_assert_eq(batch_add(&b, 0, "1764064800000-0", 15, f, 2), 0);
    cr_assert_eq(b.max_delay_ms, 0, "ahead of Redis");
    cr_assert_eq(batch_add(&b, 0, "1764064800623-0", 15, f, 2), 0);
    cr_assert_eq(b.max_delay_ms, 500);
    cr_assert_eq(batch_add(&b, 0, "1764064860123-0", 15, f, 2), 0);
    cr_assert_eq(b.max_delay_ms, 60000);
    cr_assert_eq(batch_add(&b, 0, "1764064800723-0", 15, f, 2), 0);
    cr_assert_eq(b.max_delay_ms, 60000, "the largest is kept");
    cr_assert_eq(batch_add(&b, 0, "1764151200123-0", 15, f, 2), 0);
    cr_assert_eq(b.max_delay_ms, 60000, "a day later: a replay, not a delay");
    batch_next(&b);
    cr_assert_eq(b.max_delay_ms, 0);
}

Test(batch, tracking_quality_classes_and_values)
{
    static const char *const tq[] = {"excellent", "good", "fair", "poor", "meh", NULL};
    static const enum batch_tq want[] = {BATCH_TQ_EXCELLENT, BATCH_TQ_GOOD,  BATCH_TQ_FAIR,
                                         BATCH_TQ_POOR,      BATCH_TQ_OTHER, BATCH_TQ_OTHER};
    char json[512];

    for (int i = 0; i < 6; i++) {
        snprintf(json, sizeof(json),
                 "{\"event_id\":\"01a2127b-db01-7b91-beb4-9ff4e5fe15%02d\","
                 "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\",\"ar_content_unique_id\":"
                 "\"u%d\""
                 "%s%s%s,\"received_at\":\"2025-11-25T10:00:00.123Z\"}",
                 i, i, tq[i] ? ",\"tracking_quality\":\"" : "", tq[i] ? tq[i] : "",
                 tq[i] ? "\"" : "");
        struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json)};
        cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 2), 0);
        const struct batch_entry *e = &b.entries[i];
        cr_assert_eq(e->kind, BATCH_EVENT, "%s", json);
        cr_assert_eq(e->tq, want[i], "%s", tq[i] ? tq[i] : "(none)");
        uint32_t dims[BATCH_DIMS];
        cr_assert_eq(batch_intern_dims(&b, (size_t)i, dims), 0);
        cr_assert_str_eq(value_of(dims[5]), tq[i] ? tq[i] : "unknown");
        /* Named by unique id: its bytes kept for the lookup. */
        cr_assert_eq(e->content_id, 0);
        cr_assert_eq(e->uid_len, 2);
        cr_assert_eq(b.rows.data[e->uid_off + 1], '0' + i);
    }
    /* Interned: "unknown" and the five qualities sent. */
    cr_assert_eq(b.nvals, 6, "%zu values", b.nvals);
}

Test(batch, ip_anonymised_unless_full_ip)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};

    const unsigned char anon[8] = {2, 32, 0, 4, 203, 0, 113, 0};
    const unsigned char full[8] = {2, 32, 0, 4, 203, 0, 113, 7};

    cr_assert_eq(batch_add(&b, 1, "1-0", 3, f, 2), 0);
    cr_assert(field_bytes(0, 6, anon, 8));
    b.store_full_ip = true;
    cr_assert_eq(batch_add(&b, 1, "2-0", 3, f, 2), 0);
    cr_assert(field_bytes(1, 6, full, 8));
    /* An IPv4 client behind a dual-stack proxy (::ffff:a.b.c.d) is stored
     * as the IPv4 address it is, as anonymised addresses are. */
    char mapped[sizeof(event_json) + 8];
    snprintf(mapped, sizeof(mapped), "%.*s::ffff:%s",
             (int)(strstr(event_json, "203.") - event_json), event_json,
             strstr(event_json, "203."));
    struct batch_field m[] = {FIELD("v", "1"), FIELD("e", mapped)};
    cr_assert_eq(batch_add(&b, 1, "3-0", 3, m, 2), 0);
    cr_assert_eq(b.entries[2].kind, BATCH_EVENT, "%s", mapped);
    cr_assert(field_bytes(2, 6, full, 8));
}

Test(batch, occurred_at_at_the_epoch_is_stored)
{
    /* An entry someone else wrote may say occurred_at 1970-01-01: that is a
     * time, not an absent one (it was stored as NULL). */
    char json[sizeof(event_json) + 48];
    snprintf(json, sizeof(json), "%.*s,\"occurred_at\":\"1970-01-01T00:00:00Z\"}",
             (int)(sizeof(event_json) - 2), event_json);
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json)};
    unsigned char epoch[8];

    be64(-946684800000000LL, epoch); /* us since 2000 */
    cr_assert_eq(batch_add(&b, 1, "1-0", 3, f, 2), 0);
    cr_assert_eq(b.entries[0].kind, BATCH_EVENT, "%s", json);
    cr_assert(field_bytes(0, 13, epoch, 8));
}

Test(batch, wrong_version_becomes_invalid_payload)
{
    struct batch_field f[] = {FIELD("v", "2"), FIELD("e", event_json)};

    cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 2), 0);
    cr_assert_eq(b.entries[0].kind, BATCH_DEAD);
    cr_assert_str_eq(b.entries[0].reason, BATCH_REASON_INVALID);
    cr_assert_eq(b.invalid, 1);
    cr_assert_eq(b.dead, 1);
    char *row = row_of(0);
    cr_assert(starts_with(row, "arv:events:0\t1-0\tinvalid_payload\tfield v must be \"1\"\t"
                               "{\"v\":\"2\""),
              "row: %s", row);
    cr_assert_eq(count_char(row, '\t'), 4);
    cr_assert_eq(row[strlen(row) - 1], '\n');
}

Test(batch, bad_json_and_missing_e_are_invalid)
{
    struct batch_field bad[] = {FIELD("v", "1"), FIELD("e", "{not json")};
    struct batch_field missing[] = {FIELD("v", "1")};
    struct batch_field tab[] = {FIELD("v", "1"), FIELD("e", "x\ty")};

    cr_assert_eq(batch_add(&b, 0, "1-0", 3, bad, 2), 0);
    cr_assert_eq(batch_add(&b, 0, "1-1", 3, missing, 1), 0);
    cr_assert_eq(batch_add(&b, 0, "1-2", 3, tab, 2), 0);
    /* JSON null: json-c's NULL object, once a failure without its reason. */
    struct batch_field null[] = {FIELD("v", "1"), FIELD("e", " null ")};
    cr_assert_eq(batch_add(&b, 0, "1-3", 3, null, 2), 0);
    cr_assert_eq(b.invalid, 4);
    cr_assert(strstr(row_of(3), "the body is null"), "row: %s", row_of(3));
    cr_assert(strstr(row_of(1), "field e is missing"));
    /* The payload is the fields as JSON, then COPY-escaped: no raw tab. */
    cr_assert(strstr(row_of(2), "{\"v\":\"1\",\"e\":\"x\\\\ty\"}"), "row: %s", row_of(2));
    cr_assert_eq(count_char(row_of(2), '\t'), 4);
}

/* Someone else's entry with a huge field: the dead letter's payload keeps its
 * first BATCH_PAYLOAD_VALUE_MAX bytes (ending at a character), and the detail
 * says how long it was; the whole value is never copied. */
Test(batch, a_huge_field_is_cut_in_the_payload)
{
    size_t n = 1 << 20;
    char *big = malloc(n + 1);

    cr_assert_not_null(big);
    memset(big, 'y', n);
    big[n] = '\0';
    /* A two-byte character across the limit: cut before it, not in it. */
    big[BATCH_PAYLOAD_VALUE_MAX - 1] = (char)0xC3;
    big[BATCH_PAYLOAD_VALUE_MAX] = (char)0xA9;
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", big)};
    cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 2), 0);
    const struct batch_entry *e = &b.entries[0];
    cr_assert_eq(e->kind, BATCH_DEAD);
    cr_assert_str_eq(e->reason, BATCH_REASON_INVALID);
    cr_assert_lt(e->row_len, BATCH_PAYLOAD_VALUE_MAX + 400, "row of %zu bytes", e->row_len);
    cr_assert_lt(b.rows.len, 3 * BATCH_PAYLOAD_VALUE_MAX, "rows hold %zu bytes", b.rows.len);
    const char *row = row_of(0);
    cr_assert(strstr(row, "; the payload keeps the first 65536 bytes of field e's 1048576\t"),
              "detail: %.200s", row);
    /* The payload: {"v":"1","e":"yyy...y"} with 65,535 y and no half character. */
    const char *payload = strstr(row, "{\"v\":\"1\",\"e\":\"");
    cr_assert_not_null(payload);
    payload += strlen("{\"v\":\"1\",\"e\":\"");
    size_t ys = strspn(payload, "y");
    cr_assert_eq(ys, BATCH_PAYLOAD_VALUE_MAX - 1);
    cr_assert_str_eq(payload + ys, "\"}\n");
    free(big);
}

Test(batch, a_huge_field_name_is_cut_in_the_payload)
{
    /* Someone else's XADD with a 1 MiB field name of control bytes (each
     * \u0001 in JSON, \\u0001 escaped for COPY): before, it went whole into
     * the payload, seven times its size, and one of 160 MB made a row
     * PostgreSQL cannot take (retried for ever). */
    size_t n = 1 << 20;
    char *big = malloc(n);

    cr_assert_not_null(big);
    memset(big, 1, n);
    struct batch_field f[] = {{big, n, "x", 1}};
    cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 1), 0);
    const struct batch_entry *e = &b.entries[0];
    cr_assert_eq(e->kind, BATCH_DEAD);
    cr_assert_str_eq(e->reason, BATCH_REASON_INVALID);
    cr_assert_lt(b.rows.len, 3 * BATCH_PAYLOAD_VALUE_MAX, "rows hold %zu bytes", b.rows.len);
    const char *row = row_of(0);
    cr_assert(strstr(row, "; the payload keeps the first 256 bytes of a field name of 1048576"),
              "detail: %.300s", row);
    free(big);
}

Test(batch, an_event_larger_than_any_collector_writes_is_invalid)
{
    /* An `e` that decodes, of an unknown field of 100 KB: its dead letter
     * (unknown content, a rejected row) would keep it whole. */
    size_t pad = 100 * 1024;
    char *json = malloc(sizeof(event_json) + pad + 16);

    cr_assert_not_null(json);
    int k = snprintf(json, sizeof(event_json) + 16, "%.*s,\"pad\":\"",
                     (int)(sizeof(event_json) - 2), event_json);
    memset(json + k, 'y', pad);
    strcpy(json + k + pad, "\"}");
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json)};
    cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 2), 0);
    const struct batch_entry *e = &b.entries[0];
    cr_assert_eq(e->kind, BATCH_DEAD, "an event of %zu bytes decoded", strlen(json));
    cr_assert_str_eq(e->reason, BATCH_REASON_INVALID);
    cr_assert_lt(b.rows.len, 3 * BATCH_PAYLOAD_VALUE_MAX, "rows hold %zu bytes", b.rows.len);
    free(json);
}

Test(batch, a_nil_or_max_event_id_is_invalid)
{
    /* Each later event of the company would be a repeat of the first,
     * dropped without a trace. */
    static const char *const ids[] = {"00000000-0000-0000-0000-000000000000",
                                      "ffffffff-ffff-ffff-ffff-ffffffffffff"};
    for (size_t i = 0; i < 2; i++) {
        char json[sizeof(event_json)];
        snprintf(json, sizeof(json), "%s", event_json);
        memcpy(strstr(json, "01a2127b"), ids[i], 36);
        struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json)};
        cr_assert_eq(batch_add(&b, 0, "1-0", 3, f, 2), 0);
        cr_assert_eq(b.entries[i].kind, BATCH_DEAD, "%s", json);
        cr_assert_str_eq(b.entries[i].reason, BATCH_REASON_INVALID);
    }
}

Test(batch, dead_and_ack_only_entries)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};

    cr_assert_eq(
        batch_add_dead(&b, 0, "5-0", 3, f, 2, BATCH_REASON_DELIVERIES, "delivered 11 times"), 0);
    cr_assert_eq(batch_add_ack_only(&b, 1, "6-0", 3), 0);
    cr_assert_eq(b.count, 2);
    cr_assert_eq(b.dead, 1);
    cr_assert(strstr(row_of(0), "\tmax_deliveries\tdelivered 11 times\t"));
    cr_assert_eq(b.entries[0].kind, BATCH_DEAD);
    cr_assert_eq(b.entries[1].kind, BATCH_ACK_ONLY);
    cr_assert_str_eq(b.entries[1].id, "6-0");
    cr_assert_eq(b.entries[1].stream, 1);
}

Test(batch, dead_row_rebuilds_from_the_payload)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    struct batch_field bad[] = {FIELD("v", "2"), FIELD("e", "x\ty")};
    const char *field;
    struct strbuf out;

    strbuf_init(&out);
    cr_assert_eq(batch_add(&b, 0, "7-0", 3, f, 2), 0);
    /* No payload kept yet: an empty one, never another entry's bytes. */
    batch_dead_row(&b, 0, BATCH_REASON_UNKNOWN, NULL, &out);
    cr_assert_str_eq(out.data, "arv:events:0\t7-0\tunknown_content\t\\N\t\n");
    strbuf_reset(&out);
    cr_assert_eq(batch_set_payload(&b, 0, event_json, strlen(event_json)), 0);
    batch_dead_row(&b, 0, BATCH_REASON_REJECTED, "bad\tvalue", &out);
    cr_assert(starts_with(out.data, "arv:events:0\t7-0\tdb_rejected\tbad\\tvalue\t{\"event_id\""),
              "row: %s", out.data);
    cr_assert_eq(count_char(out.data, '\t'), 4);
    /* The payload field is the event row's, byte for byte (escapes included). */
    field = out.data + strlen("arv:events:0\t7-0\tdb_rejected\tbad\\tvalue\t");
    cr_assert_eq(memcmp(field, b.rows.data + b.entries[0].payload_off, b.entries[0].payload_len),
                 0);
    cr_assert_eq(field[b.entries[0].payload_len], '\n');
    /* The same for an entry that did not decode: its fields as JSON. */
    cr_assert_eq(batch_add(&b, 1, "7-1", 3, bad, 2), 0);
    strbuf_reset(&out);
    batch_dead_row(&b, 1, BATCH_REASON_REJECTED, NULL, &out);
    cr_assert(starts_with(out.data, "arv:events:1\t7-1\tdb_rejected\t\\N\t"
                                    "{\"v\":\"2\",\"e\":\"x\\\\ty\"}\n"),
              "row: %s", out.data);
    strbuf_deinit(&out);
}

Test(batch, reject_turns_an_event_into_a_dead_letter)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    char want[1024];

    cr_assert_eq(batch_add(&b, 0, "9-0", 3, f, 2), 0);
    cr_assert_eq(batch_add(&b, 0, "9-1", 3, f, 2), 0);
    cr_assert_eq(batch_set_payload(&b, 0, event_json, strlen(event_json)), 0);
    cr_assert_eq(batch_reject(&b, 0, BATCH_REASON_REJECTED, "no partition"), 0);
    cr_assert_eq(b.entries[0].kind, BATCH_DEAD);
    cr_assert_eq(b.entries[1].kind, BATCH_EVENT);
    cr_assert_str_eq(b.entries[0].reason, BATCH_REASON_REJECTED);
    /* Its payload exactly as added (escaped once, not twice). */
    snprintf(want, sizeof(want), "arv:events:0\t9-0\tdb_rejected\tno partition\t%.*s\n",
             (int)b.entries[0].payload_len, b.rows.data + b.entries[0].payload_off);
    cr_assert_str_eq(row_of(0), want);
    cr_assert(strstr(row_of(0), "K\\\\\\\\oln"), "row: %s", row_of(0));
}

Test(batch, resolve_without_a_cache_knows_no_content)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};

    cr_assert_eq(batch_add(&b, 0, "9-0", 3, f, 2), 0);
    b.entries[0].counted = true;
    cr_assert_eq(batch_resolve(&b, 0, 1), 0);
    /* Unknown content: a dead letter later, never a guess; never counted. */
    cr_assert_eq(b.entries[0].ar_content_id, 0);
    cr_assert_eq(b.entries[0].company_id, 0);
    cr_assert_not(b.entries[0].counted);
    cr_assert_not(b.entries[0].repeat);
}

Test(batch, rejects_bad_ids_and_resets)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    char long_id[64];

    memset(long_id, '1', sizeof(long_id));
    cr_assert_eq(batch_add(&b, 0, long_id, sizeof(long_id), f, 2), -EINVAL);
    cr_assert_eq(batch_add(&b, 0, "", 0, f, 2), -EINVAL);
    cr_assert_eq(b.count, 0);
    for (int i = 0; i < 600; i++)
        cr_assert_eq(batch_add(&b, 0, "8-0", 3, f, 2), 0);
    cr_assert_eq(b.count, 600);
    batch_reset(&b);
    cr_assert_eq(b.count, 0);
    cr_assert_eq(b.rows.len, 0);
}

/* An event with only a user agent, as the collector streams it. */
static void add_with_ua(const char *id, const char *ua)
{
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"event_id\":\"01a2127b-db01-7b91-beb4-9ff4e5fe15%s\","
             "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\",\"ar_content_id\":42,"
             "\"user_agent\":\"%s\",\"received_at\":\"2025-11-25T10:00:00.123Z\"}",
             id, ua);
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json)};
    cr_assert_eq(batch_add(&b, 0, "1764064800123-0", 15, f, 2), 0);
}

Test(batch, user_agent_fills_fields_and_marks_bots)
{
    struct ua_db *db;
    struct ua_cache *ua;
    char err[256];

    cr_assert_eq(ua_db_open(UA_DEFAULT_REGEXES, &db, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(ua = ua_cache_new(db, 16));
    b.ua = ua;
    add_with_ua("01", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like "
                      "Gecko) Chrome/120.0.0.0 Mobile Safari/537.36");
    add_with_ua("02", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
    /* Filled where the client sent nothing; a person, not a bot. */
    cr_assert(field_is(0, 3, "mobile"));
    cr_assert(field_is(0, 4, "Chrome Mobile"));
    cr_assert(field_is(0, 5, "Android"));
    const unsigned char no = 0, yes = 1;
    cr_assert(field_bytes(0, 15, &no, 1));
    cr_assert_not(b.entries[0].is_bot);
    /* A bot is kept (as a row) but marked, and counted. */
    cr_assert(field_bytes(1, 15, &yes, 1));
    cr_assert(b.entries[1].is_bot);
    cr_assert_eq(b.bots, 1);
    batch_reset(&b);
    cr_assert_eq(b.bots, 0);
    b.ua = NULL;
    ua_cache_free(ua);
    ua_db_close(db);
}

/* The next read of the same write starts empty but keeps the interned
 * breakdown values (the write's rollup deltas refer to them); a reset drops
 * them. */
Test(batch, next_read_keeps_interned_values)
{
    struct batch_field f[] = {FIELD("v", "1"), FIELD("e", event_json)};
    uint32_t city;
    size_t nvals, len;
    const char *v;

    uint32_t dims[BATCH_DIMS];

    cr_assert_eq(batch_add(&b, 0, "8-0", 3, f, 2), 0);
    cr_assert_eq(batch_intern_dims(&b, 0, dims), 0);
    city = dims[4];
    nvals = b.nvals;
    cr_assert_gt(nvals, 0);
    batch_next(&b);
    cr_assert_eq(b.count, 0);
    cr_assert_eq(b.rows.len, 0);
    cr_assert_eq(b.nvals, nvals);
    v = batch_value(&b, city, &len);
    cr_assert(len > 0 && v);
    cr_assert_eq(batch_add(&b, 0, "9-0", 3, f, 2), 0);
    cr_assert_eq(batch_intern_dims(&b, 0, dims), 0);
    cr_assert_eq(dims[4], city, "the same value, the same id");
    cr_assert_eq(b.nvals, nvals);
    /* A write committed while its next read waits: that read's values are
     * interned when it is written, so the table starts afresh. */
    batch_forget_values(&b);
    cr_assert_eq(b.count, 1);
    cr_assert_eq(b.nvals, 0);
    cr_assert_eq(batch_value_bytes(&b), 0);
    cr_assert_eq(batch_intern_dims(&b, 0, dims), 0);
    cr_assert_str_eq(value_of(dims[4]), "K\\oln");
    batch_reset(&b);
    cr_assert_eq(b.nvals, 0);
}

/* Hundreds of distinct cities in one batch (the value table grows several
 * times): each keeps its id and its text, and a repeat finds its id. */
Test(batch, many_values_keep_their_ids)
{
    enum { N = 300 };
    static char json[N][512];
    uint32_t ids[N];
    char id[24], want[32];

    for (int i = 0; i < N; i++) {
        snprintf(json[i], sizeof(json[i]),
                 "{\"event_id\":\"01a2127b-db01-7b91-beb4-%012x\","
                 "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\",\"ar_content_id\":42,"
                 "\"city\":\"city %d\",\"received_at\":\"2025-11-25T10:00:00.123Z\"}",
                 i, i);
        struct batch_field f[] = {FIELD("v", "1"), FIELD("e", json[i])};
        snprintf(id, sizeof(id), "%d-0", i + 1);
        if (batch_add(&b, 0, id, strlen(id), f, 2) != 0)
            cr_assert_fail("event %d", i);
        uint32_t dims[BATCH_DIMS];
        if (batch_intern_dims(&b, (size_t)i, dims) != 0)
            cr_assert_fail("intern %d", i);
        ids[i] = dims[4];
    }
    /* Checked without an assertion per pass: Criterion reports each one to
     * its runner, and tens of thousands make it slow. */
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof(want), "city %d", i);
        if (strcmp(value_of(ids[i]), want) != 0)
            cr_assert_fail("value %d is %s", i, value_of(ids[i]));
        for (int j = 0; j < i; j++)
            if (ids[i] == ids[j])
                cr_assert_fail("cities %d and %d share id %u", i, j, ids[i]);
    }
    /* What the values hold grows with them. */
    cr_assert_geq(batch_value_bytes(&b), N * (strlen("city 100") + sizeof(struct batch_value)));
    /* A later entry's row is exactly its fields, like the first's. */
    const unsigned char *p;
    cr_assert_eq(field_of(N - 1, -1, &p), field_of(0, -1, &p));
    struct batch_field again[] = {FIELD("v", "1"), FIELD("e", json[123])};
    uint32_t dims[BATCH_DIMS];
    cr_assert_eq(batch_add(&b, 0, "999-0", 5, again, 2), 0);
    cr_assert_eq(batch_intern_dims(&b, N, dims), 0);
    cr_assert_eq(dims[4], ids[123], "a repeat finds its id");
}
