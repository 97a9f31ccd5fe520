/* Unit tests for reporter/query.c: path ids, scope rules, SQL and params per
 * request shape, result reading, JSON and CSV answers. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "query.h"
#include "strbuf.h"
#include "timeutil.h"

Test(query_id, parse)
{
    int64_t id = -1;

    cr_assert(query_parse_id("42", 2, &id));
    cr_assert_eq(id, 42);
    cr_assert(query_parse_id("9223372036854775807", 19, &id));
    cr_assert_eq(id, INT64_MAX);
    cr_assert(query_parse_id("007", 3, &id));
    cr_assert_eq(id, 7);
    cr_assert_not(query_parse_id("9223372036854775808", 19, &id));
    cr_assert_not(query_parse_id("99999999999999999999", 20, &id));
    cr_assert_not(query_parse_id("0", 1, &id));
    cr_assert_not(query_parse_id("-1", 2, &id));
    cr_assert_not(query_parse_id("+1", 2, &id));
    cr_assert_not(query_parse_id("1a", 2, &id));
    cr_assert_not(query_parse_id(" 1", 2, &id));
    cr_assert_not(query_parse_id("", 0, &id));
    cr_assert_not(query_parse_id("1.5", 3, &id));
}

Test(query_id, path)
{
    const char *prefix = "/api/analytics/companies/";
    int64_t id = 0;

    cr_assert_eq(query_path_id("/api/analytics/companies/7", prefix, &id), QUERY_PATH_OK);
    cr_assert_eq(id, 7);
    cr_assert_eq(query_path_id("/api/analytics/companies/abc", prefix, &id), QUERY_PATH_INVALID);
    cr_assert_eq(query_path_id("/api/analytics/companies/7%20", prefix, &id), QUERY_PATH_INVALID);
    cr_assert_eq(query_path_id("/api/analytics/companies/1e3", prefix, &id), QUERY_PATH_INVALID);
    cr_assert_eq(query_path_id("/api/analytics/companies/", prefix, &id), QUERY_PATH_NOT_FOUND);
    cr_assert_eq(query_path_id("/api/analytics/companies/7/", prefix, &id), QUERY_PATH_NOT_FOUND);
    cr_assert_eq(query_path_id("/api/analytics/companies/7/x", prefix, &id), QUERY_PATH_NOT_FOUND);
    cr_assert_eq(query_path_id("/api/analytics/projects/7", prefix, &id), QUERY_PATH_NOT_FOUND);
}

static struct query_spec spec_of(enum query_endpoint ep, enum query_scope scope, int64_t id,
                                 bool restricted, int64_t company)
{
    struct query_spec s = {.ep = ep,
                           .scope = scope,
                           .id = id,
                           .restricted = restricted,
                           .company_id = company,
                           .interval = QUERY_INTERVAL_DAY,
                           .limit = 10};

    strcpy(s.win.period, "30");
    strcpy(s.win.tz, "UTC");
    s.win.tz_utc = true;
    return s;
}

/* Builds the statement of `s` into a string the caller frees. */
static char *build(const struct query_spec *s, struct query_params *p)
{
    struct strbuf sb;

    strbuf_init(&sb);
    cr_assert_eq(query_build(s, "analytics.ar_content", &sb, p), 0);
    return strbuf_steal(&sb);
}

static bool has(const char *sql, const char *needle)
{
    return strstr(sql, needle) != NULL;
}

Test(query_sql, overview_admin_reads_company_rollups)
{
    struct query_spec s = spec_of(QUERY_EP_OVERVIEW, QUERY_SCOPE_ALL, 0, false, 0);
    struct query_params p;
    char *sql = build(&s, &p);

    cr_assert(has(sql, "FROM w, analytics.rollup_company_daily r WHERE r.day BETWEEN"));
    cr_assert(has(sql, "CROSS JOIN LATERAL (SELECT 1 FROM analytics.rollup_content_daily a"));
    cr_assert_not(has(sql, "r.company_id = $6"));
    cr_assert_null(p.params[0]);
    cr_assert_null(p.params[1]);
    cr_assert_str_eq(p.params[2], "UTC");
    cr_assert_str_eq(p.params[3], "30");
    cr_assert_null(p.params[4]);
    cr_assert_null(p.params[5]);
    free(sql);
}

Test(query_sql, company_key_is_restricted_everywhere)
{
    struct query_spec s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_PROJECT, 3, true, 7);
    struct query_params p;
    char *sql = build(&s, &p);

    cr_assert(has(sql, "analytics.rollup_content_daily r"));
    cr_assert(has(sql, "r.project_id = $5::bigint AND r.company_id = $6::bigint"));
    cr_assert(has(sql, "LIMIT $8::int"));
    cr_assert_str_eq(p.params[4], "3");
    cr_assert_str_eq(p.params[5], "7");
    cr_assert_str_eq(p.params[7], "10");
    free(sql);
}

Test(query_sql, other_zones_read_hourly_rollups)
{
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    struct query_params p;
    char *sql;

    strcpy(s.win.tz, "Europe/Berlin");
    s.win.tz_utc = false;
    cr_assert(query_uses_hourly(&s));
    sql = build(&s, &p);
    cr_assert(has(sql, "analytics.rollup_company_hourly r WHERE r.hour >= w.h0 AND r.hour < w.h1"));
    cr_assert(has(sql, "(r.hour AT TIME ZONE $3::text)::date"));
    cr_assert_str_eq(p.params[2], "Europe/Berlin");
    free(sql);

    /* Totals in another zone: whole UTC days from daily rows, edges from hourly. */
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_PROJECT, 3, false, 0);
    strcpy(s.win.tz, "Asia/Kolkata");
    s.win.tz_utc = false;
    sql = build(&s, &p);
    cr_assert(has(sql, "FROM w wd, analytics.rollup_content_daily d WHERE d.day BETWEEN wd.ud0 "
                       "AND wd.ud1 UNION ALL SELECT"));
    cr_assert(has(sql, "analytics.rollup_content_hourly h WHERE h.hour >= wh.h0"));
    cr_assert(has(sql, "r WHERE true AND r.project_id = $5::bigint"));
    free(sql);

    /* Hour intervals need hourly rows even in UTC; breakdowns never use them. */
    s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_ALL, 0, false, 0);
    s.interval = QUERY_INTERVAL_HOUR;
    cr_assert(query_uses_hourly(&s));
    s = spec_of(QUERY_EP_BREAKDOWN, QUERY_SCOPE_ALL, 0, false, 0);
    s.win.tz_utc = false;
    cr_assert_not(query_uses_hourly(&s));
}

Test(query_sql, company_days_need_no_union_per_bucket)
{
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    struct query_params p;
    char *sql = build(&s, &p);

    cr_assert(has(sql, "r.sessions AS u"));
    cr_assert_not(has(sql, "GROUP BY"));
    free(sql);
    s.interval = QUERY_INTERVAL_WEEK;
    sql = build(&s, &p);
    cr_assert(has(sql, "hll_union_agg(r.sessions) AS u"));
    cr_assert(has(sql, "GROUP BY 1"));
    free(sql);
    s = spec_of(QUERY_EP_EXPORT, QUERY_SCOPE_ALL, 0, false, 0);
    sql = build(&s, &p);
    cr_assert(has(sql, "GROUP BY 1"));
    free(sql);
}

Test(query_sql, explicit_range_and_buckets)
{
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_CONTENT, 42, false, 0);
    struct query_params p;
    char *sql;

    s.win.explicit_range = true;
    strcpy(s.win.from, "2026-03-01");
    strcpy(s.win.to, "2026-03-31");
    s.interval = QUERY_INTERVAL_WEEK;
    sql = build(&s, &p);
    cr_assert_str_eq(p.params[0], "2026-03-01");
    cr_assert_str_eq(p.params[1], "2026-03-31");
    cr_assert_null(p.params[3]);
    cr_assert(has(sql, "date_trunc('week', (r.day)::timestamp)::date"));
    cr_assert(has(sql, "generate_series(date_trunc('week', w.d0::timestamp)"));
    cr_assert(has(sql, "r.company_id = (SELECT company_id FROM analytics.ar_content WHERE id = "
                       "$5::bigint) AND r.ar_content_id = $5::bigint"));
    free(sql);
}

Test(query_sql, breakdown_and_top_by_company)
{
    struct query_spec s = spec_of(QUERY_EP_BREAKDOWN, QUERY_SCOPE_COMPANY, 7, true, 7);
    struct query_params p;
    char *sql;

    s.dim = QUERY_DIM_COUNTRY;
    s.limit = 100;
    sql = build(&s, &p);
    cr_assert(has(sql, "analytics.rollup_breakdown_daily r"));
    cr_assert(has(sql, "r.dimension = $7::text"));
    cr_assert_str_eq(p.params[6], "country");
    cr_assert_str_eq(p.params[7], "100");
    free(sql);

    s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_ALL, 0, false, 0);
    s.by = QUERY_BY_COMPANY;
    sql = build(&s, &p);
    cr_assert(has(sql, "SELECT r.company_id AS b"));
    cr_assert(has(sql, "analytics.rollup_company_daily r"));
    free(sql);
}

Test(query_sql, rejects_bad_specs)
{
    struct query_spec s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 0, false, 0);
    struct query_params p;
    struct strbuf sb;

    strbuf_init(&sb);
    cr_assert_eq(query_build(&s, "analytics.ar_content", &sb, &p), -EINVAL);
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 1, true, 0);
    cr_assert_eq(query_build(&s, "analytics.ar_content", &sb, &p), -EINVAL);
    s = spec_of(QUERY_EP_OVERVIEW, QUERY_SCOPE_PROJECT, 1, false, 0);
    cr_assert_eq(query_build(&s, "analytics.ar_content", &sb, &p), -EINVAL);
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 1, false, 0);
    cr_assert_eq(query_build(&s, "x; drop", &sb, &p), -EINVAL);
    strbuf_deinit(&sb);
}

static int64_t day_of(const char *s)
{
    int64_t d = 0;

    cr_assert(timeutil_parse_date(s, &d), "%s", s);
    return d;
}

Test(query_closed, window_days_match_postgresql)
{
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    int64_t today = day_of("2026-11-25");
    struct query_closed c;

    strcpy(s.win.period, "90");
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.d0, day_of("2026-08-28"));
    cr_assert_eq(c.d1, today);
    cr_assert_eq(c.last, day_of("2026-11-23")); /* yesterday and today stay open */
    cr_assert_null(c.days);
    cr_assert_null(c.sketch);

    strcpy(s.win.period, "month");
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.d0, day_of("2026-11-01"));
    cr_assert_not(query_closed_window(&s, day_of("2026-11-02"), &c)); /* nothing closed yet */

    /* (t - interval '12 months')::date + 1, the day clamped to the month. */
    strcpy(s.win.period, "12mo");
    cr_assert(query_closed_window(&s, day_of("2028-02-29"), &c));
    cr_assert_eq(c.d0, day_of("2027-03-01"));
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.d0, day_of("2025-11-26"));

    strcpy(s.win.period, "7");
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.d0, day_of("2026-11-19"));

    /* Explicit windows: all closed in the past, none in the future. */
    s.win.explicit_range = true;
    strcpy(s.win.from, "2026-03-01");
    strcpy(s.win.to, "2026-03-31");
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.last, c.d1);
    strcpy(s.win.from, "2026-11-24");
    strcpy(s.win.to, "2026-11-30");
    cr_assert_not(query_closed_window(&s, today, &c));
}

Test(query_closed, only_company_level_daily_questions)
{
    int64_t today = day_of("2026-11-25");
    struct query_closed c;
    struct query_spec s = spec_of(QUERY_EP_OVERVIEW, QUERY_SCOPE_ALL, 0, false, 0);

    cr_assert(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 7, true, 7);
    cr_assert(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_EXPORT, QUERY_SCOPE_COMPANY, 7, false, 0);
    cr_assert(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_ALL, 0, false, 0);
    cr_assert(query_closed_window(&s, today, &c));

    s.interval = QUERY_INTERVAL_WEEK; /* a week can straddle the open days */
    cr_assert_not(query_closed_window(&s, today, &c));
    s.interval = QUERY_INTERVAL_HOUR;
    cr_assert_not(query_closed_window(&s, today, &c));
    /* Other zones: local days from hourly rows; closed ones end a day earlier. */
    s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    strcpy(s.win.tz, "Europe/Berlin");
    s.win.tz_utc = false;
    cr_assert(query_closed_window(&s, today, &c));
    cr_assert_eq(c.last, day_of("2026-11-22"));
    cr_assert(query_closed_window_tz(&s, today, today - 1, &c)); /* evening in America */
    cr_assert_eq(c.d1, today - 1);
    cr_assert_eq(c.last, day_of("2026-11-21"));
    cr_assert(query_closed_window_tz(&s, today, today + 1, &c)); /* morning in Asia */
    cr_assert_eq(c.d1, today + 1);
    cr_assert_eq(c.last, day_of("2026-11-22"));
    s.ep = QUERY_EP_ENTITY; /* totals there read whole UTC days from daily rows already */
    cr_assert_not(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_PROJECT, 3, false, 0);
    cr_assert_not(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_COMPANY, 7, false, 0);
    s.by = QUERY_BY_COMPANY;
    cr_assert_not(query_closed_window(&s, today, &c));
    s = spec_of(QUERY_EP_BREAKDOWN, QUERY_SCOPE_COMPANY, 7, false, 0);
    cr_assert_not(query_closed_window(&s, today, &c));
}

Test(query_closed, fill_and_split_statements)
{
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, true, 7);
    struct query_closed c, other;
    struct query_params p;
    struct strbuf sb;
    char key[256], key2[256];
    char *sql;

    strcpy(s.win.period, "90");
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &c));

    strbuf_init(&sb);
    cr_assert_eq(query_build_fill(&s, "analytics.ar_content", &c, &sb, &p), 0);
    sql = strbuf_steal(&sb);
    cr_assert(has(sql, "FROM w, analytics.rollup_company_daily r WHERE r.day BETWEEN w.d0 AND "
                       "w.d1 AND r.company_id = $5::bigint AND r.company_id = $6::bigint"));
    cr_assert(has(sql, "hll_union_agg(u)::text, "));
    /* The watermark of the same snapshot, and whether it has passed the end of
     * the hours read (h1, or the end of the hour straddling it). */
    cr_assert(has(sql, "m AS (SELECT (SELECT min(complete_until) FROM analytics.stream_watermarks"
                       " WHERE updated_at >= (SELECT max(updated_at) FROM"));
    cr_assert(has(sql, "interval '10 minutes') AS at, date_trunc('hour', w.h1 + "
                       "interval '1 hour' - interval '1 microsecond', 'UTC') AS e FROM w)"));
    cr_assert(has(sql, "(SELECT coalesce(m.at >= m.e, false) FROM m) FROM s"));
    cr_assert_not(has(sql, "GROUP BY"));
    cr_assert_eq(p.nparams, QUERY_NPARAMS);
    cr_assert_str_eq(p.params[0], "2026-08-28");
    cr_assert_str_eq(p.params[1], "2026-11-23");
    cr_assert_null(p.params[3]);
    cr_assert_str_eq(p.params[5], "7");
    free(sql);

    c.sketch = (char *)(uintptr_t) "\\x128b7f";
    strbuf_init(&sb);
    cr_assert_eq(query_build_split(&s, "analytics.ar_content", &c, &sb, &p), 0);
    sql = strbuf_steal(&sb);
    cr_assert(has(sql, "FROM w, x, analytics.rollup_company_daily r WHERE r.day BETWEEN x.od0 "
                       "AND w.d1 AND r.company_id = $5::bigint"));
    /* Points of the open days only; uniques in one union with the closed sketch. */
    cr_assert(has(sql, "generate_series(x.od0::timestamp, w.d1::timestamp"));
    cr_assert(has(sql, "UNION ALL SELECT NULL, $12::hll"));
    cr_assert_eq(p.nparams, QUERY_NPARAMS_MAX);
    cr_assert_str_eq(p.params[3], "90");
    cr_assert_str_eq(p.params[8], "2026-08-28");
    cr_assert_str_eq(p.params[9], "2026-11-25");
    cr_assert_str_eq(p.params[10], "2026-11-23");
    cr_assert_eq(p.params[11], c.sketch);
    c.sketch = NULL;
    free(sql);

    /* Every company-level answer over the same days shares one closed part. */
    query_closed_key(&s, &c, key, sizeof(key));
    s.ep = QUERY_EP_ENTITY;
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &other));
    query_closed_key(&s, &other, key2, sizeof(key2));
    cr_assert_str_eq(key, key2);
    s.id = s.company_id = 8;
    query_closed_key(&s, &other, key2, sizeof(key2));
    cr_assert_str_neq(key, key2);

    /* Another zone: local days of hourly rows, the open ones from od0's midnight. */
    s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    strcpy(s.win.tz, "America/New_York");
    s.win.tz_utc = false;
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &c));
    query_closed_key(&s, &c, key2, sizeof(key2));
    cr_assert(has(key2, "America/New_York"));
    strbuf_init(&sb);
    cr_assert_eq(query_build_fill(&s, "analytics.ar_content", &c, &sb, &p), 0);
    sql = strbuf_steal(&sb);
    cr_assert(has(sql, "(r.hour AT TIME ZONE $3::text)::date AS b"));
    cr_assert(has(sql, "analytics.rollup_company_hourly r WHERE r.hour >= w.h0 AND r.hour < w.h1"));
    cr_assert(has(sql, "GROUP BY 1"));
    cr_assert_str_eq(p.params[2], "America/New_York");
    free(sql);
    strbuf_init(&sb);
    cr_assert_eq(query_build_split(&s, "analytics.ar_content", &c, &sb, &p), 0);
    sql = strbuf_steal(&sb);
    /* The open days start at od0's first instant (where midnight comes twice,
     * the first midnight). */
    cr_assert(has(sql, "analytics.rollup_company_hourly r WHERE r.hour >= least((x.od0)::timestamp "
                       "AT TIME ZONE $3::text, ((x.od0)::timestamp - interval '1 hour') AT TIME "
                       "ZONE $3::text + interval '1 hour') AND r.hour < w.h1"));
    free(sql);

    /* Every company: one union per day. */
    s = spec_of(QUERY_EP_OVERVIEW, QUERY_SCOPE_ALL, 0, false, 0);
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &c));
    strbuf_init(&sb);
    cr_assert_eq(query_build_fill(&s, "analytics.ar_content", &c, &sb, &p), 0);
    sql = strbuf_steal(&sb);
    cr_assert(has(sql, "hll_union_agg(r.sessions) AS u"));
    cr_assert(has(sql, "GROUP BY 1"));
    free(sql);

    /* Not splittable: refused. */
    s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_ALL, 0, false, 0);
    strbuf_init(&sb);
    cr_assert_eq(query_build_split(&s, "analytics.ar_content", &c, &sb, &p), -EINVAL);
    cr_assert_eq(query_build_fill(&s, "analytics.ar_content", &c, &sb, &p), -EINVAL);
    strbuf_deinit(&sb);
}

/* A one-row result of `n` text columns (NULL entries are SQL NULL). */
static PGresult *make_row(int n, const char *const *vals)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[QUERY_NCOLS];
    static char name[] = "f";

    cr_assert(n <= QUERY_NCOLS);
    memset(attrs, 0, sizeof(attrs));
    for (int i = 0; i < n; i++)
        attrs[i].name = name;
    cr_assert(PQsetResultAttrs(res, n, attrs));
    for (int i = 0; i < n; i++)
        cr_assert(PQsetvalue(res, 0, i, (char *)(uintptr_t)(vals[i] ? vals[i] : ""),
                             vals[i] ? (int)strlen(vals[i]) : -1));
    return res;
}

static bool load_fill(const char *const *vals, struct query_closed *c)
{
    PGresult *res = make_row(9, vals);
    struct strbuf sb;
    bool ok;

    strbuf_init(&sb);
    ok = query_read_fill(res, &sb) && query_closed_load(c, sb.data, sb.len);
    strbuf_deinit(&sb);
    PQclear(res);
    return ok;
}

Test(query_closed, fill_result_round_trip)
{
    const char *vals[9] = {
        "{2026-08-28,2026-08-30}",  "{3,4}", "{2,4}", "{1,1}", "{90,120}", "{3,4}", "\\x148b7f",
        "2026-11-25T13:44:58.123Z", "t"};
    const char *none[9] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "f"};
    const char *bad[9] = {
        "{2026-08-28,2026-08-30}", "{3}", "{2,4}", "{1,1}", "{90,120}", "{3,4}", NULL, NULL, "f"};
    struct query_closed c = {0};
    struct strbuf sb;
    PGresult *res;

    cr_assert(load_fill(vals, &c));
    cr_assert_eq(c.ndays, 2);
    cr_assert_eq(c.days[0].day, day_of("2026-08-28"));
    cr_assert_eq(c.days[1].day, day_of("2026-08-30"));
    cr_assert_eq(c.days[1].c.views, 4);
    cr_assert_eq(c.days[0].c.unique_sessions, 2);
    cr_assert_eq(c.days[1].c.duration_sum, 120);
    cr_assert_eq(c.sum.views, 7);
    cr_assert_eq(c.sum.video_plays, 2);
    cr_assert_eq(c.sum.duration_sum, 210);
    cr_assert_eq(c.sum.duration_count, 7);
    cr_assert_str_eq(c.sketch, "\\x148b7f");
    cr_assert_str_eq(c.complete_until, "2026-11-25T13:44:58.123Z");
    cr_assert(c.complete);

    vals[8] = "f"; /* read while some of its days were still owed */
    cr_assert(load_fill(vals, &c));
    cr_assert_not(c.complete);
    cr_assert_str_eq(c.complete_until, "2026-11-25T13:44:58.123Z");
    cr_assert_eq(c.ndays, 2);

    cr_assert(load_fill(none, &c)); /* no rows, no watermark: nothing, no sketch */
    cr_assert_eq(c.ndays, 0);
    cr_assert_null(c.sketch);
    cr_assert_eq(c.sum.views, 0);
    cr_assert_str_eq(c.complete_until, "");
    cr_assert_not(c.complete);

    cr_assert_not(load_fill(bad, &c)); /* arrays of different lengths */
    bad[1] = "{3,4";
    cr_assert_not(load_fill(bad, &c));
    bad[1] = "{3,4}";
    bad[0] = "{2026-08-30,2026-08-28}"; /* not ascending */
    cr_assert_not(load_fill(bad, &c));
    cr_assert_not(query_closed_load(&c, "x", 1));

    res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK); /* no columns */
    strbuf_init(&sb);
    cr_assert_not(query_read_fill(res, &sb));
    PQclear(res);
    res = make_row(7, vals); /* without the watermark */
    cr_assert_not(query_read_fill(res, &sb));
    strbuf_deinit(&sb);
    PQclear(res);
    query_closed_deinit(&c);
}

Test(query_closed, merge_adds_closed_days)
{
    /* The open part as PostgreSQL answers it: totals of 2026-11-24..25 (uniques
     * already one union with the closed sketch) and their two points. */
    static const char *const meta[] = {NULL, NULL, NULL,  "2026-11-19", "2026-11-25", "10",
                                       "9",  "4",  "113", "3",          NULL};
    static const char *const items[][6] = {{"2026-11-24", "0", "0", NULL, NULL, NULL},
                                           {"2026-11-25", "10", "8", "4", "113", "3"}};
    const char *vals[9] = {
        "{2026-11-19,2026-11-21}",  "{5,6}", "{5,6}", "{1,2}", "{50,60}", "{5,6}", "\\x148b7f",
        "2026-11-25T13:44:58.123Z", "t"};
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[QUERY_NCOLS];
    static char name[] = "c";
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    struct query_closed c = {0};
    struct query_result r;
    struct strbuf sb;

    memset(attrs, 0, sizeof(attrs));
    for (int i = 0; i < QUERY_NCOLS; i++)
        attrs[i].name = name;
    cr_assert(PQsetResultAttrs(res, QUERY_NCOLS, attrs));
    for (int row = 0; row < 2; row++)
        for (int col = 0; col < QUERY_NCOLS; col++) {
            const char *v = col < QUERY_COL_KEY ? meta[col] : items[row][col - QUERY_COL_KEY];
            cr_assert(PQsetvalue(res, row, col, (char *)(uintptr_t)(v ? v : ""),
                                 v ? (int)strlen(v) : -1));
        }
    strcpy(s.win.period, "7");
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &c));
    cr_assert(load_fill(vals, &c));
    cr_assert(query_read(res, &r));
    cr_assert(query_merge_closed(&r, &s, &c));
    cr_assert_eq(r.nrows, 7);
    cr_assert_eq(r.total.views, 21);
    cr_assert_eq(r.total.unique_sessions, 9);
    cr_assert_eq(r.total.video_plays, 7);
    cr_assert_eq(r.total.duration_count, 14);
    strbuf_init(&sb);
    query_json(&sb, &s, &r);
    cr_assert(has(sb.data,
                  "\"points\":[{\"start\":\"2026-11-19\",\"views\":5,\"unique_sessions\":5,"
                  "\"video_plays\":1,\"avg_duration_seconds\":10},"
                  "{\"start\":\"2026-11-20\",\"views\":0,\"unique_sessions\":0,"
                  "\"video_plays\":0,\"avg_duration_seconds\":0},"
                  "{\"start\":\"2026-11-21\",\"views\":6,"),
              "%s", sb.data);
    cr_assert(has(sb.data, "{\"start\":\"2026-11-25\",\"views\":10,\"unique_sessions\":8,"));
    strbuf_deinit(&sb);
    query_result_deinit(&r);

    /* PostgreSQL's window was another (its today differed): nothing merged. */
    c.d0--;
    cr_assert(query_read(res, &r));
    cr_assert(query_merge_closed(&r, &s, &c));
    cr_assert_eq(r.nrows, 2);
    cr_assert_eq(r.total.views, 10);
    query_result_deinit(&r);
    query_closed_deinit(&c);
    PQclear(res);
}

/* Reads a company total as a split statement answers it over 2026-11-19..25,
 * with the watermark `until` (NULL: none) and 10 views in the open days. */
static void read_split_total(const char *until, struct query_result *r)
{
    const char *meta[QUERY_NCOLS] = {NULL, NULL, until, "2026-11-19", "2026-11-25",
                                     "10", "9",  "4",   "113",        "3"};
    PGresult *res = make_row(QUERY_NCOLS, meta);

    cr_assert(query_read(res, r));
    PQclear(res); /* no item rows point into it */
}

Test(query_closed, merge_dates_an_incomplete_part)
{
    /* A part read while its days were still owed (an aggregator backlog) holds
     * events only up to the watermark read with it: the answer may claim no
     * more, though its own statement read a newer one. A complete part holds
     * every event before its end, and the open days every later one up to the
     * answer's own watermark, which stands. */
    static const char *const answer = "2026-11-25T13:44:58.123Z";
    static const struct {
        bool complete;
        const char *part, *until, *want;
    } cases[] = {
        {true, "2026-11-25T13:40:00.000Z", answer, answer},
        {false, "2026-11-22T08:00:00.000Z", answer, "2026-11-22T08:00:00.000Z"},
        {false, "2026-11-25T13:44:58.122Z", answer, "2026-11-25T13:44:58.122Z"},
        {false, NULL, answer, ""},                           /* no watermark when read: unknown */
        {false, "2026-11-25T13:50:00.000Z", answer, answer}, /* never newer than its own */
        {false, "2026-11-22T08:00:00.000Z", NULL, ""},       /* none now: still none */
    };
    const char *vals[9] = {"{2026-11-20}", "{5}",       "{5}", "{1}", "{50}",
                           "{5}",          "\\x148b7f", NULL,  NULL};
    struct query_spec s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 7, false, 0);
    struct query_closed c = {0};
    struct query_result r;
    struct strbuf sb;

    strcpy(s.win.period, "7");
    cr_assert(query_closed_window(&s, day_of("2026-11-25"), &c));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vals[7] = cases[i].part;
        vals[8] = cases[i].complete ? "t" : "f";
        cr_assert(load_fill(vals, &c));
        read_split_total(cases[i].until, &r);
        cr_assert(query_merge_closed(&r, &s, &c));
        cr_assert_str_eq(r.complete_until, cases[i].want, "case %zu: %s", i, r.complete_until);
        cr_assert_eq(r.total.views, 15, "case %zu: the part is merged all the same", i);
        query_result_deinit(&r);
    }
    vals[7] = NULL; /* no watermark when read: the answer says null */
    vals[8] = "f";
    cr_assert(load_fill(vals, &c));
    strbuf_init(&sb);
    read_split_total(answer, &r);
    cr_assert(query_merge_closed(&r, &s, &c));
    query_json(&sb, &s, &r);
    cr_assert(has(sb.data, "\"data_complete_until\":null"), "%s", sb.data);
    strbuf_deinit(&sb);
    query_result_deinit(&r);

    /* PostgreSQL's window was another: it read every day itself, with the
     * watermark of its own snapshot, which stands. */
    vals[7] = "2026-11-22T08:00:00.000Z";
    vals[8] = "f";
    cr_assert(load_fill(vals, &c));
    c.d0--;
    read_split_total(answer, &r);
    cr_assert(query_merge_closed(&r, &s, &c));
    cr_assert_str_eq(r.complete_until, answer);
    cr_assert_eq(r.total.views, 10);
    query_result_deinit(&r);
    query_closed_deinit(&c);
}

Test(query_access, scope_rules)
{
    struct query_spec s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_ALL, 0, true, 7);
    struct query_result r = {0};

    cr_assert_not(query_scope_allowed(&s)); /* a company key never reads "all" */
    s = spec_of(QUERY_EP_TOP, QUERY_SCOPE_ALL, 0, false, 0);
    cr_assert(query_scope_allowed(&s));
    cr_assert(query_owner_allowed(&s, &r));
    s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_COMPANY, 8, true, 7);
    cr_assert_not(query_scope_allowed(&s));
    s.id = 7;
    cr_assert(query_scope_allowed(&s));
    cr_assert(query_owner_allowed(&s, &r));

    s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_PROJECT, 3, true, 7);
    cr_assert(query_scope_allowed(&s));
    cr_assert_not(query_owner_allowed(&s, &r)); /* unknown to the registry */
    r.owner_known = true;
    r.owner_min = r.owner_max = 7;
    cr_assert(query_owner_allowed(&s, &r));
    r.owner_min = 6; /* shared with company 6 */
    cr_assert_not(query_owner_allowed(&s, &r));
    r.owner_min = r.owner_max = 8;
    cr_assert_not(query_owner_allowed(&s, &r));
    s.restricted = false;
    cr_assert(query_owner_allowed(&s, &r));
}

/* A result of `nrows` rows of QUERY_NCOLS columns; row 0 holds `meta`
 * (QUERY_COL_KEY columns), each row i its item `items[i]` (6 columns). */
static PGresult *make_rows(const char *const *meta, int nrows, const char *const (*items)[6])
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[QUERY_NCOLS];
    static char name[] = "c";

    memset(attrs, 0, sizeof(attrs));
    for (int i = 0; i < QUERY_NCOLS; i++)
        attrs[i].name = name;
    cr_assert(PQsetResultAttrs(res, QUERY_NCOLS, attrs));
    for (int row = 0; row < nrows; row++) {
        for (int c = 0; c < QUERY_NCOLS; c++) {
            const char *v = c < QUERY_COL_KEY ? meta[c]
                            : items           ? items[row][c - QUERY_COL_KEY]
                                              : NULL;
            char buf[64] = "";
            if (v)
                snprintf(buf, sizeof(buf), "%s", v);
            cr_assert(PQsetvalue(res, row, c, buf, v ? (int)strlen(buf) : -1));
        }
    }
    return res;
}

static const char *const meta_entity[] = {
    "7", "7", "2026-11-25T13:44:58.123Z", "2026-10-27", "2026-11-25", "10", "9", "4", "113",
    "3", NULL};

Test(query_result, entity_json)
{
    PGresult *res = make_rows(meta_entity, 1, NULL);
    struct query_spec s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_CONTENT, 42, true, 7);
    struct query_result r;
    struct strbuf sb;

    cr_assert(query_read(res, &r));
    cr_assert(r.owner_known);
    cr_assert_eq(r.owner_min, 7);
    cr_assert_eq(r.total.views, 10);
    cr_assert_eq(r.nrows, 0);
    strbuf_init(&sb);
    query_json(&sb, &s, &r);
    cr_assert_str_eq(sb.data,
                     "{\"ar_content_id\":42,\"company_id\":7,\"views\":10,\"unique_sessions\":9,"
                     "\"video_plays\":4,\"avg_duration_seconds\":37.67,"
                     "\"period\":{\"from\":\"2026-10-27\",\"to\":\"2026-11-25\","
                     "\"tz\":\"UTC\"},\"data_complete_until\":\"2026-11-25T13:44:58.123Z\","
                     "\"unique_sessions_error\":0.016}");
    strbuf_deinit(&sb);
    query_result_deinit(&r);
    PQclear(res);
}

/* A project the registry puts under two companies, or does not know: its
 * company is null (an admin's answer; a company key gets 403 for both). */
Test(query_result, entity_json_company_unknown)
{
    static const char *const two[] = {
        "7", "8", "2026-11-25T13:44:58.123Z", "2026-10-27", "2026-11-25", "0", "0", "0", "0",
        "0", NULL};
    static const char *const none[] = {
        NULL, NULL, "2026-11-25T13:44:58.123Z", "2026-10-27", "2026-11-25", "0", "0", "0", "0",
        "0",  NULL};
    const char *const *metas[] = {two, none};
    struct query_spec s = spec_of(QUERY_EP_ENTITY, QUERY_SCOPE_PROJECT, 10, false, 0);
    const char *want = "{\"project_id\":10,\"company_id\":null,\"views\":0,";

    for (size_t i = 0; i < 2; i++) {
        PGresult *res = make_rows(metas[i], 1, NULL);
        struct query_result r;
        struct strbuf sb;
        cr_assert(query_read(res, &r));
        strbuf_init(&sb);
        query_json(&sb, &s, &r);
        cr_assert(strncmp(sb.data, want, strlen(want)) == 0, "%s", sb.data);
        strbuf_deinit(&sb);
        query_result_deinit(&r);
        PQclear(res);
    }
}

Test(query_result, overview_json)
{
    const char *meta[] = {NULL, NULL, NULL, "2026-10-27", "2026-11-25", "120",
                          "97", "0",  "0",  "0",          "3"};
    PGresult *res = make_rows(meta, 1, NULL);
    struct query_spec s = spec_of(QUERY_EP_OVERVIEW, QUERY_SCOPE_COMPANY, 7, true, 7);
    struct query_result r;
    struct strbuf sb;

    cr_assert(query_read(res, &r));
    cr_assert_not(r.owner_known);
    strbuf_init(&sb);
    query_json(&sb, &s, &r);
    cr_assert_str_eq(sb.data, "{\"total_views\":120,\"unique_sessions\":97,\"active_content\":3,"
                              "\"company_id\":7,\"period\":{\"from\":\"2026-10-27\","
                              "\"to\":\"2026-11-25\",\"tz\":\"UTC\"},\"data_complete_until\":null,"
                              "\"unique_sessions_error\":0.016}");
    strbuf_deinit(&sb);
    query_result_deinit(&r);
    PQclear(res);
}

Test(query_result, timeseries_and_csv)
{
    const char *const items[][6] = {{"2026-03-07", "5", "4", "1", "10", "2"},
                                    {"2026-03-08", "0", "0", "0", "0", "0"}};
    PGresult *res = make_rows(meta_entity, 2, items);
    struct query_spec s = spec_of(QUERY_EP_TIMESERIES, QUERY_SCOPE_COMPANY, 7, false, 0);
    struct query_result r;
    struct strbuf sb;

    cr_assert(query_read(res, &r));
    cr_assert_eq(r.nrows, 2);
    strbuf_init(&sb);
    query_json(&sb, &s, &r);
    cr_assert(
        has(sb.data, "\"scope\":\"company:7\",\"interval\":\"day\",\"totals\":{\"views\":10,"));
    cr_assert(has(sb.data,
                  "\"points\":[{\"start\":\"2026-03-07\",\"views\":5,\"unique_sessions\":4,"
                  "\"video_plays\":1,\"avg_duration_seconds\":5},{\"start\":\"2026-03-08\""));
    strbuf_reset(&sb);
    s.ep = QUERY_EP_EXPORT;
    query_csv(&sb, &s, &r);
    cr_assert_str_eq(sb.data,
                     "date,scope,tz,views,unique_sessions,video_plays,avg_duration_seconds\r\n"
                     "2026-03-07,company:7,UTC,5,4,1,5\r\n"
                     "2026-03-08,company:7,UTC,0,0,0,0\r\n");
    strbuf_deinit(&sb);
    query_result_deinit(&r);
    PQclear(res);
}

Test(query_result, breakdown_values_are_escaped)
{
    const char *meta[] = {NULL, NULL, NULL, "2026-10-27", "2026-11-25", "3",
                          "3",  NULL, NULL, NULL,         NULL};
    const char *const items[][6] = {{"S\"o Paulo", "3", "3", NULL, NULL, NULL}};
    PGresult *res = make_rows(meta, 1, items);
    struct query_spec s = spec_of(QUERY_EP_BREAKDOWN, QUERY_SCOPE_ALL, 0, false, 0);
    struct query_result r;
    struct strbuf sb;

    s.dim = QUERY_DIM_CITY;
    cr_assert(query_read(res, &r));
    strbuf_init(&sb);
    query_json(&sb, &s, &r);
    cr_assert(has(sb.data, "\"dimension\":\"city\""));
    cr_assert(has(sb.data, "\"totals\":{\"views\":3,\"unique_sessions\":3}"));
    cr_assert(
        has(sb.data, "\"items\":[{\"value\":\"S\\\"o Paulo\",\"views\":3,\"unique_sessions\":3}]"));
    strbuf_deinit(&sb);
    query_result_deinit(&r);
    PQclear(res);
}

Test(query_result, wrong_shape)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    const char *meta[] = {NULL, NULL, NULL, "x", "y", "abc", "0", "0", "0", "0", NULL};
    struct query_result r;

    cr_assert_not(query_read(res, &r)); /* no columns */
    PQclear(res);
    cr_assert_not(query_read(NULL, &r));
    res = make_rows(meta, 1, NULL);
    cr_assert_not(query_read(res, &r)); /* views not a number */
    PQclear(res);
}

Test(query_csv, quoting)
{
    struct strbuf sb;

    strbuf_init(&sb);
    query_csv_field(&sb, "plain");
    strbuf_putc(&sb, '|');
    query_csv_field(&sb, "a,b");
    strbuf_putc(&sb, '|');
    query_csv_field(&sb, "say \"hi\"");
    strbuf_putc(&sb, '|');
    query_csv_field(&sb, "two\nlines");
    strbuf_putc(&sb, '|');
    query_csv_field(&sb, " padded");
    strbuf_putc(&sb, '|');
    query_csv_field(&sb, "");
    cr_assert_str_eq(sb.data, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|\" padded\"|");
    strbuf_deinit(&sb);
}

Test(query_result, avg_duration)
{
    cr_assert_float_eq(query_avg_duration(113, 3), 37.67, 1e-9);
    cr_assert_float_eq(query_avg_duration(0, 0), 0.0, 1e-9);
    cr_assert_float_eq(query_avg_duration(5, 2), 2.5, 1e-9);
    /* Halves round up, as PostgreSQL's round(numeric, 2) does: 1347 / 40 is
     * 33.675, which a double takes for 33.67499... */
    cr_assert_float_eq(query_avg_duration(1347, 40), 33.68, 1e-9);
    cr_assert_float_eq(query_avg_duration(1, 8), 0.13, 1e-9);
    cr_assert_float_eq(query_avg_duration(INT64_MAX / 2, 3), (double)(INT64_MAX / 6) + 0.33, 1e3);
}

Test(query_errors, retryable_sqlstates)
{
    cr_assert(query_sqlstate_retryable(NULL));
    cr_assert(query_sqlstate_retryable("08006"));
    cr_assert(query_sqlstate_retryable("57014"));
    cr_assert(query_sqlstate_retryable("57P01"));
    cr_assert(query_sqlstate_retryable("53300"));
    cr_assert(query_sqlstate_retryable("40001"));
    cr_assert_not(query_sqlstate_retryable("42P01"));
    cr_assert_not(query_sqlstate_retryable("42703"));
    cr_assert_not(query_sqlstate_retryable("22P02"));
}
