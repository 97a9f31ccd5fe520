/* Unit tests for aggregator/rollup.c: per-batch rollup deltas and their
 * sketches, from batch entries as the store leaves them. */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "copy.h"
#include "hll.h"
#include "rollup.h"

static const char *const streams[] = {"s"};
static struct batch b;
static struct rollup r;
static struct strbuf out;

static void setup(void)
{
    batch_init(&b, streams);
    rollup_init(&r);
    strbuf_init(&out);
}

static void teardown(void)
{
    strbuf_deinit(&out);
    rollup_deinit(&r);
    batch_deinit(&b);
}

TestSuite(rollup, .init = setup, .fini = teardown);

/* The project of the events add() adds. */
static int64_t project = 70;

/* Adds an event of content `content` (company 7, project `project`) received
 * at `when`, counted as the store would after a dedupe; `extra` is more JSON. */
static void add(int n, const char *session, long content, const char *when, const char *extra)
{
    char json[1024], id[32];
    snprintf(json, sizeof(json),
             "{\"event_id\":\"01a2127b-db01-7b91-beb4-%012d\",\"session_id\":\"%s\","
             "\"ar_content_id\":%ld,\"received_at\":\"%s\"%s}",
             n, session, content, when, extra);
    snprintf(id, sizeof(id), "%d-0", n);
    struct batch_field f[] = {{"v", 1, "1", 1}, {"e", 1, json, strlen(json)}};
    /* cr_assert_fail only on failure: tests add thousands of events, and
     * Criterion reports every passing assertion to its runner. */
    if (batch_add(&b, 0, id, strlen(id), f, 2) != 0)
        cr_assert_fail("batch_add: %s", json);
    struct batch_entry *e = &b.entries[b.count - 1];
    if (e->kind != BATCH_EVENT)
        cr_assert_fail("not an event: %s", json);
    e->ar_content_id = content;
    e->project_id = project;
    e->company_id = 7;
    if (rollup_add(&r, &b, b.count - 1) != 0)
        cr_assert_fail("rollup_add: %s", json);
}

static const char s1[] = "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f";
static const char s2[] = "00000000-0000-4000-8000-000000000002";

/* Appends bytes as hll's text output shows them: "\\x<hex>". */
static void put_hex(struct strbuf *to, const unsigned char *p, size_t n)
{
    strbuf_puts(to, "\\x");
    for (size_t i = 0; i < n; i++)
        strbuf_printf(to, "%02x", p[i]);
}

/* `sessions`' sketch as text_rows() shows it. */
static const char *sketch_of(const char *const *sessions, size_t n)
{
    static struct strbuf text;
    struct strbuf sb;
    uint64_t h[8];
    for (size_t i = 0; i < n; i++) {
        unsigned char u[16];
        for (int k = 0, j = 0; k < 16; k++, j += 2) {
            if (sessions[i][j] == '-')
                j++;
            sscanf(sessions[i] + j, "%2hhx", &u[k]);
        }
        h[i] = hll_hash(u, 16);
    }
    strbuf_init(&sb);
    hll_write_sketch(h, hll_sort_unique(h, n), &sb);
    strbuf_reset(&text);
    put_hex(&text, (const unsigned char *)sb.data, sb.len);
    cr_assert(!sb.oom && !text.oom);
    strbuf_deinit(&sb);
    return text.data;
}

/* A big-endian unsigned integer of `n` bytes. */
static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The fields of the measures' and the breakdown's rows, for text_rows(). */
#define MEASURE_TYPES   "itllllhllllllll"
#define BREAKDOWN_TYPES "illlsslh"

/* Rows in COPY binary format (as the writers leave them: no header, no
 * trailer) as text lines, one tab-separated field per letter of `types`:
 * i int4, l int8, t timestamptz ("2025-11-25 10:00:00.000+00"), s text as
 * sent, h a sketch as sketch_of() shows it; NULL as \N. */
static const char *text_rows(const struct strbuf *bin, const char *types)
{
    static struct strbuf text;
    const unsigned char *p = (const unsigned char *)bin->data, *end = p + bin->len;
    size_t nf = strlen(types);
    char buf[64];

    strbuf_reset(&text);
    strbuf_puts(&text, "");
    while (p < end) {
        cr_assert_geq(end - p, 2);
        cr_assert_eq(be(p, 2), nf);
        p += 2;
        for (size_t f = 0; f < nf; f++) {
            cr_assert_geq(end - p, 4);
            uint64_t len = be(p, 4);
            p += 4;
            if (f)
                strbuf_putc(&text, '\t');
            if (len == 0xffffffffu) {
                strbuf_puts(&text, "\\N");
                continue;
            }
            cr_assert_leq(len, (uint64_t)(end - p));
            switch (types[f]) {
            case 'i':
                cr_assert_eq(len, 4);
                strbuf_printf(&text, "%d", (int32_t)(uint32_t)be(p, 4));
                break;
            case 'l':
                cr_assert_eq(len, 8);
                strbuf_printf(&text, "%lld", (long long)(int64_t)be(p, 8));
                break;
            case 't':
                cr_assert_eq(len, 8);
                cr_assert(copy_format_time_ms((int64_t)be(p, 8) / 1000 + INT64_C(946684800000), buf,
                                              sizeof(buf)));
                strbuf_puts(&text, buf);
                break;
            case 's':
                strbuf_append(&text, (const char *)p, len);
                break;
            default:
                put_hex(&text, p, len);
            }
            p += len;
        }
        strbuf_putc(&text, '\n');
    }
    cr_assert(!text.oom);
    return text.data;
}

/* The next line of [*pos, end) that starts with `prefix` (a copy, valid until
 * the next call), *pos moved past it; NULL if none. Bounded memchr and memcmp,
 * not strchr: under ASan's strict_string_checks (scripts/test.sh) each str*
 * call checks the whole rest of the string, which made a search through
 * thousands of lines quadratic. */
static char *next_line_of(const char **pos, const char *end, const char *prefix)
{
    static char line[4096];
    size_t plen = strlen(prefix);

    while (*pos < end) {
        const char *p = *pos, *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        *pos = p + n + 1;
        if (n >= plen && memcmp(p, prefix, plen) == 0) {
            cr_assert_lt(n, sizeof(line));
            memcpy(line, p, n);
            line[n] = '\0';
            return line;
        }
    }
    return NULL;
}

/* The line of `text` that starts with `prefix`, or NULL. */
static char *line_of(const char *text, const char *prefix)
{
    return next_line_of(&text, text + strlen(text), prefix);
}

/* The line of `text` that starts with `prefix` is the one `fmt` prints. */
static void expect_line(const char *text, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_line(const char *text, const char *prefix, const char *fmt, ...)
{
    char want[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    const char *got = line_of(text, prefix);
    cr_assert_not_null(got, "no line %s in:\n%s", prefix, text);
    cr_assert_str_eq(got, want);
}

/* How many lines `text` holds. */
static size_t lines_of(const char *text)
{
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    return lines;
}

Test(rollup, measures_of_every_kind)
{
    const char *both[] = {s1, s2}, *one[] = {s1};

    add(1, s1, 5, "2025-11-25T10:10:00Z",
        ",\"duration_seconds\":10,\"tracking_quality\":\"good\",\"video_played\":true");
    add(2, s1, 5, "2025-11-25T10:50:00Z", ",\"tracking_quality\":\"meh\"");
    add(3, s2, 5, "2025-11-25T11:00:00Z", ",\"duration_seconds\":4");
    add(4, s2, 6, "2025-11-25T23:59:59.999Z", "");
    cr_assert_eq(rollup_write_measures(&r, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, MEASURE_TYPES);

    /* Content 5, 10:00: two events of one session; one duration; good + other. */
    expect_line(text, "0\t2025-11-25 10:00",
                "0\t2025-11-25 10:00:00.000+00\t7\t70\t5\t2\t%s\t1\t10\t1\t0\t1\t0\t0\t1",
                sketch_of(one, 1));
    /* Content 5's day: three events, two sessions, durations 10 + 4. */
    expect_line(text, "1\t2025-11-25 00:00:00.000+00\t7\t70\t5\t",
                "1\t2025-11-25 00:00:00.000+00\t7\t70\t5\t3\t%s\t1\t14\t2\t0\t1\t0\t0\t2",
                sketch_of(both, 2));
    /* Company 7 at 23:00 (content 6 only), and its day (all four). */
    expect_line(text, "2\t2025-11-25 23:00",
                "2\t2025-11-25 23:00:00.000+00\t7\t\\N\t\\N\t1\t%s\t0\t0\t0\t0\t0\t0\t0\t1",
                sketch_of(both + 1, 1));
    expect_line(text, "3\t",
                "3\t2025-11-25 00:00:00.000+00\t7\t\\N\t\\N\t4\t%s\t1\t14\t2\t0\t1\t0\t0\t3",
                sketch_of(both, 2));
    /* 3 content hours, 2 content days, 3 company hours, 1 company day. */
    cr_assert_eq(lines_of(text), 9, "%s", text);
}

Test(rollup, breakdown_per_dimension_and_value)
{
    const char *both[] = {s1, s2};

    add(1, s1, 5, "2025-11-25T10:10:00Z", ",\"device_type\":\"mobile\",\"city\":\"K\\\\oln\"");
    add(2, s2, 5, "2025-11-25T12:10:00Z", ",\"device_type\":\"mobile\"");
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    /* 2025-11-25 is day 20417. */
    expect_line(text, "20417\t7\t70\t5\tdevice_type\t",
                "20417\t7\t70\t5\tdevice_type\tmobile\t2\t%s", sketch_of(both, 2));
    /* A missing value counts as "unknown"; values go as they are. */
    cr_assert(line_of(text, "20417\t7\t70\t5\tbrowser\tunknown\t2\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\tK\\oln\t1\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\tunknown\t1\t"), "%s", text);
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tvideo"));
}

/* Content moved to another project within an hour counts in each project's
 * rows apart, as its raw rows do; the company's rows hold both. */
Test(rollup, content_moved_to_another_project)
{
    const char *one[] = {s1}, *other[] = {s2}, *both[] = {s1, s2};

    add(1, s1, 5, "2025-11-25T10:10:00Z", ",\"device_type\":\"mobile\"");
    project = 80;
    add(2, s2, 5, "2025-11-25T10:20:00Z", ",\"device_type\":\"mobile\"");
    cr_assert_eq(rollup_write_measures(&r, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, MEASURE_TYPES);
    expect_line(text, "0\t2025-11-25 10:00:00.000+00\t7\t70\t",
                "0\t2025-11-25 10:00:00.000+00\t7\t70\t5\t1\t%s\t0\t0\t0\t0\t0\t0\t0\t1",
                sketch_of(one, 1));
    expect_line(text, "1\t2025-11-25 00:00:00.000+00\t7\t80\t",
                "1\t2025-11-25 00:00:00.000+00\t7\t80\t5\t1\t%s\t0\t0\t0\t0\t0\t0\t0\t1",
                sketch_of(other, 1));
    expect_line(text, "3\t",
                "3\t2025-11-25 00:00:00.000+00\t7\t\\N\t\\N\t2\t%s\t0\t0\t0\t0\t0\t0\t0\t2",
                sketch_of(both, 2));
    /* 2 content hours, 2 content days, 1 company hour, 1 company day. */
    cr_assert_eq(lines_of(text), 6, "%s", text);

    strbuf_reset(&out);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    text = text_rows(&out, BREAKDOWN_TYPES);
    cr_assert(line_of(text, "20417\t7\t70\t5\tdevice_type\tmobile\t1\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t80\t5\tdevice_type\tmobile\t1\t"), "%s", text);
}

/* Plays and durations add up: two played events, one of 0 s (a duration
 * of 0 counts), one of 7 s. */
Test(rollup, plays_and_zero_durations_add_up)
{
    add(1, s1, 5, "2025-11-25T10:10:00Z", ",\"duration_seconds\":0,\"video_played\":true");
    add(2, s2, 5, "2025-11-25T10:20:00Z", ",\"duration_seconds\":7,\"video_played\":true");
    cr_assert_eq(rollup_write_measures(&r, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, MEASURE_TYPES);
    /* views 2, plays 2, duration sum 7 over 2, in the hour and the day */
    const char *both[] = {s1, s2};
    expect_line(text, "0\t2025-11-25 10:00:00.000+00\t7\t70\t5\t",
                "0\t2025-11-25 10:00:00.000+00\t7\t70\t5\t2\t%s\t2\t7\t2\t0\t0\t0\t0\t2",
                sketch_of(both, 2));
    expect_line(text, "1\t2025-11-25 00:00:00.000+00\t7\t70\t5\t",
                "1\t2025-11-25 00:00:00.000+00\t7\t70\t5\t2\t%s\t2\t7\t2\t0\t0\t0\t0\t2",
                sketch_of(both, 2));
}

/* Far more groups than the tables start with: each content's hour is a row
 * of its own with its one view, none merged or lost as the tables grow. */
Test(rollup, many_groups_each_a_row)
{
    enum { N = 1500 };
    size_t one;

    for (int i = 0; i < N; i++) {
        add(i, s1, 1000 + i, "2025-11-25T10:10:00Z", "");
        if (i == 0)
            one = rollup_group_bytes(&r);
    }
    /* The groups' bytes grow with them: N hourly and 6 N breakdown groups
     * (the pairs were reserved before). */
    cr_assert_geq(rollup_group_bytes(&r), 7 * N * sizeof(struct rollup_group));
    cr_assert_lt(one, rollup_group_bytes(&r) / 10);
    cr_assert_eq(rollup_write_measures(&r, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, MEASURE_TYPES);
    /* N content hours, N content days, 1 company hour, 1 company day */
    cr_assert_eq(lines_of(text), 2 * N + 2);
    /* Each content's hour row, with one view. */
    static bool seen[N];
    const char *hour = "0\t2025-11-25 10:00:00.000+00\t7\t70\t";
    const char *pos = text, *end = text + strlen(text);
    const char *row;
    int rows = 0, content, views;
    while ((row = next_line_of(&pos, end, hour))) {
        if (sscanf(row + strlen(hour), "%d\t%d\t", &content, &views) != 2 || content < 1000 ||
            content >= 1000 + N || views != 1 || seen[content - 1000])
            cr_assert_fail("unexpected hour row %s", row);
        seen[content - 1000] = true;
        rows++;
    }
    cr_assert_eq(rows, N);
    expect_line(text, "3\t",
                "3\t2025-11-25 00:00:00.000+00\t7\t\\N\t\\N\t%d\t%s\t0\t0\t0\t0\t0\t0\t0\t%d", N,
                sketch_of((const char *[]){s1}, 1), N);
}

/* A drain that moves what was written into `taken`. */
static struct strbuf taken;
static int drains;
static int take(void *arg)
{
    struct strbuf *o = arg;
    strbuf_append(&taken, o->data, o->len);
    strbuf_reset(o);
    drains++;
    return 0;
}

static int refuse(void *arg)
{
    (void)arg;
    return -5;
}

Test(rollup, drained_output_is_the_same)
{
    struct rollup whole;
    struct strbuf all;

    strbuf_init(&taken);
    strbuf_init(&all);
    rollup_init(&whole);
    for (int i = 0; i < 3000; i++) {
        add(i, i % 2 ? s1 : s2, 1000 + i, "2025-11-25T10:10:00Z", "");
        if (rollup_add(&whole, &b, b.count - 1) != 0)
            cr_assert_fail("rollup_add %d", i);
    }
    cr_assert_eq(rollup_write_measures(&r, &out, take, &out), 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, take, &out), 0);
    take(&out);
    cr_assert_gt(drains, 3);
    cr_assert_eq(rollup_write_measures(&whole, &all, NULL, NULL), 0);
    cr_assert_eq(rollup_write_breakdown(&whole, &b, &all, NULL, NULL), 0);
    cr_assert_eq(taken.len, all.len);
    cr_assert_eq(memcmp(taken.data, all.data, all.len), 0);
    /* A drain that fails stops the writer with its answer. */
    rollup_reset(&whole);
    cr_assert_eq(rollup_add(&whole, &b, 0), 0);
    strbuf_reset(&all);
    for (int i = 1; i < 3000; i++)
        if (rollup_add(&whole, &b, (size_t)i) != 0)
            cr_assert_fail("rollup_add %d", i);
    cr_assert_eq(rollup_write_measures(&whole, &all, refuse, NULL), -5);
    strbuf_reset(&all);
    cr_assert_eq(rollup_write_breakdown(&whole, &b, &all, refuse, NULL), -5);
    rollup_deinit(&whole);
    strbuf_deinit(&all);
    strbuf_deinit(&taken);
}

/* One write's deltas over several reads (batch_next between them): groups
 * and sketches go on across reads, the breakdown's values stay valid; and
 * past the reserved room the tables grow. Every event adds its session hash
 * to six breakdown groups, kept once: each group's sketch must still hold
 * exactly its own sessions. */
Test(rollup, deltas_span_reads)
{
    const char *both[] = {s1, s2}, *one[] = {s2};
    char want[512];

    cr_assert_eq(rollup_reserve(&r, 4), 0);
    add(1, s1, 5, "2025-11-25T10:10:00Z", ",\"device_type\":\"mobile\",\"city\":\"Rome\"");
    batch_next(&b);
    for (int i = 0; i < 300; i++)
        add(2 + i, i % 2 ? s1 : s2, 5, "2025-11-25T12:10:00Z",
            i % 2 ? ",\"device_type\":\"mobile\""
                  : ",\"device_type\":\"mobile\",\"city\":\"Rome\"");
    add(400, s2, 5, "2025-11-25T12:10:00Z", ",\"device_type\":\"tablet\"");
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    expect_line(text, "20417\t7\t70\t5\tdevice_type\tmobile",
                "20417\t7\t70\t5\tdevice_type\tmobile\t301\t%s", sketch_of(both, 2));
    expect_line(text, "20417\t7\t70\t5\tdevice_type\ttablet",
                "20417\t7\t70\t5\tdevice_type\ttablet\t1\t%s", sketch_of(one, 1));
    /* Rome: event 1 (s1) and the 150 even ones (s2). */
    expect_line(text, "20417\t7\t70\t5\tcity\tRome", "20417\t7\t70\t5\tcity\tRome\t151\t%s",
                sketch_of(both, 2));
    /* The 150 odd ones (s1) have no city. */
    expect_line(text, "20417\t7\t70\t5\tcity\tunknown", "20417\t7\t70\t5\tcity\tunknown\t151\t%s",
                sketch_of(both, 2));
    strbuf_reset(&out);
    cr_assert_eq(rollup_write_measures(&r, &out, NULL, NULL), 0);
    text = text_rows(&out, MEASURE_TYPES);
    snprintf(want, sizeof(want), "0\t2025-11-25 12:00:00.000+00\t7\t70\t5\t301\t%s",
             sketch_of(both, 2));
    cr_assert(strncmp(line_of(text, "0\t2025-11-25 12:00"), want, strlen(want)) == 0, "%s", text);
}

/* A stand-in for what PostgreSQL has stored: the city values of content 5 on
 * 2025-11-25 (day 20417), none for anything else; and how often it was asked. */
static const char *stored_cities[16];
static int count_calls, values_calls;
static size_t counted_keys;

static bool is_stored_key(const struct rollup_bkey *k)
{
    return k->content_id == 5 && k->period == 20417 && strcmp(batch_dim_names[k->dim], "city") == 0;
}

static int fake_count(void *arg, struct rollup_bkey *keys, const uint32_t *idx, size_t n)
{
    (void)arg;
    count_calls++;
    counted_keys += n;
    for (size_t j = 0; j < n; j++) {
        uint32_t c = 0;
        while (is_stored_key(&keys[idx[j]]) && c < 16 && stored_cities[c])
            c++;
        keys[idx[j]].upper = c;
    }
    return 0;
}

static int fake_values(void *arg, const struct rollup_bkey *keys, const uint32_t *idx, size_t n,
                       rollup_mark_fn mark, void *mark_arg)
{
    (void)arg;
    values_calls++;
    for (size_t j = 0; j < n; j++)
        for (int c = 0; is_stored_key(&keys[idx[j]]) && c < 16 && stored_cities[c]; c++)
            mark(mark_arg, idx[j], stored_cities[c], strlen(stored_cities[c]));
    return 0;
}

static const struct rollup_cap_source fake_source = {fake_count, fake_values, NULL};

static void add_city(int n, const char *session, const char *city)
{
    char extra[64];
    snprintf(extra, sizeof(extra), ",\"city\":\"%s\"", city);
    add(n, session, 5, "2025-11-25T10:10:00Z", extra);
}

/* At most 4 city values for content 5 that day: A, B and C are stored, so of
 * the write's A, D, E and F, A keeps its row, D is the fourth value and E and
 * F are counted together as (other), sessions and all. Keys that cannot pass
 * the cap are counted once, then not asked about again; a later write whose
 * values might pass it is counted again. */
Test(rollup, breakdown_values_past_the_cap_are_other)
{
    static const char s3[] = "00000000-0000-4000-8000-000000000003";
    const char *e_and_f[] = {s2, s3};

    stored_cities[0] = "A";
    stored_cities[1] = "B";
    stored_cities[2] = "C";
    add_city(1, s1, "A");
    add_city(2, s1, "D");
    add_city(3, s2, "E");
    add_city(4, s3, "F");
    add_city(5, s3, "D");
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 4, &fake_source), 0);
    cr_assert_eq(count_calls, 1);
    cr_assert_eq(counted_keys, BATCH_DIMS, "each of the six keys, once");
    cr_assert_eq(values_calls, 1, "only the key that would pass the cap");
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\tA\t1\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\tD\t2\t"), "%s", text);
    expect_line(text, "20417\t7\t70\t5\tcity\t(other)\t", "20417\t7\t70\t5\tcity\t(other)\t2\t%s",
                sketch_of(e_and_f, 2));
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tcity\tE"), "%s", text);
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tcity\tF"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tbrowser\tunknown\t5\t"), "other dimensions stay");
    cr_assert_eq(lines_of(text), 3 + (BATCH_DIMS - 1), "%s", text);

    /* The next write: the other keys are known and far from the cap. */
    rollup_reset(&r);
    batch_reset(&b);
    strbuf_reset(&out);
    count_calls = values_calls = 0;
    counted_keys = 0;
    stored_cities[3] = "D";
    stored_cities[4] = ROLLUP_OTHER_TEXT;
    add_city(6, s1, "A");
    add_city(7, s1, "G");
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 4, &fake_source), 0);
    cr_assert_eq(counted_keys, 1, "only the city key, which might pass the cap");
    cr_assert_eq(values_calls, 1);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    text = text_rows(&out, BREAKDOWN_TYPES);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\tA\t1\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\t(other)\t1\t"), "%s", text);
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tcity\tG"), "%s", text);
    memset(stored_cities, 0, sizeof(stored_cities));
}

/* No cap (0): nothing is asked, every value keeps its row. */
Test(rollup, breakdown_cap_off)
{
    count_calls = values_calls = 0;
    for (int i = 0; i < 20; i++) {
        char city[8];
        snprintf(city, sizeof(city), "c%d", i);
        add_city(i, s1, city);
    }
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 0, &fake_source), 0);
    cr_assert_eq(count_calls + values_calls, 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    cr_assert_eq(lines_of(text_rows(&out, BREAKDOWN_TYPES)), 20 + (BATCH_DIMS - 1));
}

/* A client's own "(other)" is the same row as the values past the cap: one
 * group, never two rows of one key (which the merge would refuse). */
Test(rollup, breakdown_other_named_by_a_client_is_one_row)
{
    stored_cities[0] = "A";
    add_city(1, s1, ROLLUP_OTHER_TEXT);
    add_city(2, s1, "B");
    add_city(3, s2, "C");
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 1, &fake_source), 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    const char *both[] = {s1, s2};
    expect_line(text, "20417\t7\t70\t5\tcity\t", "20417\t7\t70\t5\tcity\t(other)\t3\t%s",
                sketch_of(both, 2));
    cr_assert_eq(lines_of(text), BATCH_DIMS, "%s", text);
    memset(stored_cities, 0, sizeof(stored_cities));
}

/* Content moved to another project within the write: a stored value under
 * the new project is still a stored value (it keeps its row), whichever
 * project the write saw first. */
Test(rollup, breakdown_stored_value_under_a_second_project)
{
    stored_cities[0] = "A";
    stored_cities[1] = "B";
    add_city(1, s1, "X");
    project = 71;
    add_city(2, s2, "A");
    project = 70;
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 2, &fake_source), 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    cr_assert(line_of(text, "20417\t7\t71\t5\tcity\tA\t1\t"), "%s", text);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\t(other)\t1\t"), "%s", text);
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tcity\tX"), "%s", text);
    memset(stored_cities, 0, sizeof(stored_cities));
}

/* Past half the cap a key is counted at every write, so values another
 * writer stored meanwhile are seen: with 6 of 10 stored, this write admits G;
 * another writer then stores H, I and J; the next write's L is (other), not
 * an eleventh value (counted again only near the cap, it was admitted). */
Test(rollup, breakdown_key_past_half_the_cap_is_counted_every_write)
{
    static const char *const six[] = {"A", "B", "C", "D", "E", "F", "G", "H", "I", "J"};

    for (int i = 0; i < 6; i++)
        stored_cities[i] = six[i];
    add_city(1, s1, "G");
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 10, &fake_source), 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    cr_assert(line_of(text_rows(&out, BREAKDOWN_TYPES), "20417\t7\t70\t5\tcity\tG\t1\t"));

    rollup_reset(&r);
    batch_reset(&b);
    strbuf_reset(&out);
    for (int i = 6; i < 10; i++)
        stored_cities[i] = six[i];
    add_city(2, s1, "L");
    cr_assert_eq(rollup_cap_breakdown(&r, &b, 10, &fake_source), 0);
    cr_assert_eq(rollup_write_breakdown(&r, &b, &out, NULL, NULL), 0);
    const char *text = text_rows(&out, BREAKDOWN_TYPES);
    cr_assert(line_of(text, "20417\t7\t70\t5\tcity\t(other)\t1\t"), "%s", text);
    cr_assert_null(line_of(text, "20417\t7\t70\t5\tcity\tL"), "%s", text);
    memset(stored_cities, 0, sizeof(stored_cities));
}
