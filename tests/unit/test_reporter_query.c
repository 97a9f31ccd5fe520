/* Unit tests for reporter/query.c: window, path ids, scope rules, SQL and params,
 * result reading and JSON answers. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "query.h"
#include "strbuf.h"

/* 2026-11-25T13:45:10Z */
#define NOW_2026_11_25 ((time_t)1795614310)

Test(query_period, last_30_days_from_fixed_now)
{
    struct query_period p;

    cr_assert(query_period_last_days(NOW_2026_11_25, 30, &p));
    cr_assert_str_eq(p.to, "2026-11-25");
    cr_assert_str_eq(p.from, "2026-10-27");
}

Test(query_period, day_boundaries_are_utc)
{
    struct query_period p;

    /* 2026-03-01T00:00:00Z and one second before. */
    cr_assert(query_period_last_days((time_t)1772323200, 30, &p));
    cr_assert_str_eq(p.to, "2026-03-01");
    cr_assert_str_eq(p.from, "2026-01-31");
    cr_assert(query_period_last_days((time_t)1772323199, 30, &p));
    cr_assert_str_eq(p.to, "2026-02-28");
    cr_assert_str_eq(p.from, "2026-01-30");
}

Test(query_period, leap_year_and_single_day)
{
    struct query_period p;

    /* 2028-03-01T12:00:00Z: the window crosses 2028-02-29. */
    cr_assert(query_period_last_days((time_t)1835524800, 2, &p));
    cr_assert_str_eq(p.to, "2028-03-01");
    cr_assert_str_eq(p.from, "2028-02-29");
    cr_assert(query_period_last_days(NOW_2026_11_25, 1, &p));
    cr_assert_str_eq(p.from, "2026-11-25");
    cr_assert_str_eq(p.to, "2026-11-25");
    cr_assert_not(query_period_last_days(NOW_2026_11_25, 0, &p));
}

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

Test(query_relation, valid_names)
{
    cr_assert(query_relation_valid("analytics.ar_content"));
    cr_assert(query_relation_valid("ar_content"));
    cr_assert(query_relation_valid("_x.Y9"));
    cr_assert_not(query_relation_valid(NULL));
    cr_assert_not(query_relation_valid(""));
    cr_assert_not(query_relation_valid("a.b.c"));
    cr_assert_not(query_relation_valid("a."));
    cr_assert_not(query_relation_valid(".a"));
    cr_assert_not(query_relation_valid("9a"));
    cr_assert_not(query_relation_valid("a;drop table x"));
    cr_assert_not(query_relation_valid("\"a\""));
    cr_assert_not(query_relation_valid("a b"));
}

static struct query_texts texts;

static void texts_setup(void)
{
    cr_assert_eq(query_texts_init(&texts, "analytics.ar_content"), 0);
}

static void texts_teardown(void)
{
    query_texts_deinit(&texts);
}

static struct query_spec spec_of(enum query_scope scope, int64_t id, bool restricted,
                                 int64_t company)
{
    struct query_spec s = {
        .scope = scope, .id = id, .restricted = restricted, .company_id = company};

    strcpy(s.period.from, "2026-10-27");
    strcpy(s.period.to, "2026-11-25");
    return s;
}

TestSuite(query_sql, .init = texts_setup, .fini = texts_teardown);

Test(query_sql, overview_admin)
{
    struct query_spec s = spec_of(QUERY_SCOPE_ALL, 0, false, 0);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 2);
    cr_assert_str_eq(q.params[0], "2026-10-27");
    cr_assert_str_eq(q.params[1], "2026-11-25");
    cr_assert_not_null(strstr(q.sql, "FROM analytics.rollup_content_daily"));
    cr_assert_not_null(strstr(q.sql, "day BETWEEN $1::date AND $2::date"));
    cr_assert_not_null(strstr(q.sql, "hll_cardinality(hll_union_agg(sessions))"));
    cr_assert_not_null(strstr(q.sql, "count(DISTINCT ar_content_id) FILTER (WHERE views > 0)"));
    cr_assert_not_null(strstr(q.sql, "analytics.ingest_watermarks"));
    cr_assert_null(strstr(q.sql, "company_id ="));
    cr_assert_null(strstr(q.sql, "ar_view_sessions"), "never the raw table");
}

Test(query_sql, overview_company_key_is_scoped)
{
    struct query_spec s = spec_of(QUERY_SCOPE_ALL, 0, true, 7);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 3);
    cr_assert_str_eq(q.params[2], "7");
    cr_assert_not_null(strstr(q.sql, "AND company_id = $3::bigint"));
}

Test(query_sql, company)
{
    struct query_spec s = spec_of(QUERY_SCOPE_COMPANY, 12, false, 0);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 3);
    cr_assert_str_eq(q.params[2], "12");
    cr_assert_not_null(strstr(q.sql, "WHERE company_id = $3::bigint AND day BETWEEN"));
    cr_assert_not_null(strstr(q.sql, "sum(video_plays)"));
    cr_assert_not_null(strstr(q.sql, "sum(duration_count)"));
}

Test(query_sql, project_admin_and_company_key)
{
    struct query_spec s = spec_of(QUERY_SCOPE_PROJECT, 5, false, 0);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 3);
    cr_assert_str_eq(q.params[2], "5");
    cr_assert_not_null(strstr(q.sql, "min(company_id) FROM analytics.ar_content WHERE "
                                     "project_id = $3::bigint"));
    cr_assert_null(strstr(q.sql, "$4"));

    s = spec_of(QUERY_SCOPE_PROJECT, 5, true, 9);
    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 4);
    cr_assert_str_eq(q.params[2], "5");
    cr_assert_str_eq(q.params[3], "9");
    cr_assert_not_null(strstr(q.sql, "AND company_id = $4::bigint"));
}

Test(query_sql, content_uses_registry_owner)
{
    struct query_spec s = spec_of(QUERY_SCOPE_CONTENT, 42, true, 9);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), 0);
    cr_assert_eq(q.nparams, 3);
    cr_assert_str_eq(q.params[2], "42");
    cr_assert_not_null(strstr(q.sql, "WHERE company_id = (SELECT company_id FROM "
                                     "analytics.ar_content WHERE id = $3::bigint) AND "
                                     "ar_content_id = $3::bigint"));
}

Test(query_sql, custom_content_relation)
{
    struct query_texts t;
    struct query_spec s = spec_of(QUERY_SCOPE_PROJECT, 5, false, 0);
    struct query_sql q;

    cr_assert_eq(query_texts_init(&t, "platform.ar_contents"), 0);
    cr_assert_eq(query_build(&t, &s, &q), 0);
    cr_assert_not_null(strstr(q.sql, "FROM platform.ar_contents WHERE project_id"));
    query_texts_deinit(&t);
    cr_assert_eq(query_texts_init(&t, "x; DROP TABLE y"), -EINVAL);
    query_texts_deinit(&t);
}

Test(query_sql, rejects_bad_specs)
{
    struct query_spec s = spec_of(QUERY_SCOPE_COMPANY, 0, false, 0);
    struct query_sql q;

    cr_assert_eq(query_build(&texts, &s, &q), -EINVAL);
    s = spec_of(QUERY_SCOPE_ALL, 0, true, 0);
    cr_assert_eq(query_build(&texts, &s, &q), -EINVAL);
}

Test(query_access, scope_rules)
{
    struct query_spec s = spec_of(QUERY_SCOPE_COMPANY, 7, true, 7);
    struct query_entity e = {0};

    cr_assert(query_scope_allowed(&s));
    s.id = 8;
    cr_assert_not(query_scope_allowed(&s));
    s.restricted = false;
    cr_assert(query_scope_allowed(&s), "admin reads any company");

    s = spec_of(QUERY_SCOPE_PROJECT, 5, true, 7);
    cr_assert(query_scope_allowed(&s), "decided after the owner lookup");
    cr_assert_not(query_owner_allowed(&s, &e), "unknown project: 403, never an empty 200");
    e.owner_known = true;
    e.owner_min = e.owner_max = 7;
    cr_assert(query_owner_allowed(&s, &e));
    e.owner_max = 8;
    cr_assert_not(query_owner_allowed(&s, &e), "project shared with another company");
    e.owner_min = e.owner_max = 8;
    cr_assert_not(query_owner_allowed(&s, &e));
    s.restricted = false;
    cr_assert(query_owner_allowed(&s, &e));
    e.owner_known = false;
    cr_assert(query_owner_allowed(&s, &e), "admin: unknown content reads as zeros");
}

/* A one-row text result, as libpq would return it; NULL values are SQL NULL. */
static PGresult *make_result(int ncols, const char *const *values)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[16];
    static char name[] = "c";

    cr_assert_not_null(res);
    memset(attrs, 0, sizeof(attrs));

    for (int i = 0; i < ncols; i++)
        attrs[i].name = name;
    cr_assert(PQsetResultAttrs(res, ncols, attrs));
    for (int i = 0; i < ncols; i++) {
        char buf[64] = "";
        if (values[i])
            snprintf(buf, sizeof(buf), "%s", values[i]);
        cr_assert(PQsetvalue(res, 0, i, buf, values[i] ? (int)strlen(buf) : -1));
    }
    return res;
}

Test(query_result, overview)
{
    const char *v[] = {"120", "97", "3", "2026-11-25T13:44:58.123Z"};
    PGresult *res = make_result(4, v);
    struct query_overview o;
    struct query_spec s = spec_of(QUERY_SCOPE_ALL, 0, false, 0);
    struct strbuf sb;

    cr_assert(query_read_overview(res, &o));
    cr_assert_eq(o.total_views, 120);
    cr_assert_eq(o.unique_sessions, 97);
    cr_assert_eq(o.active_content, 3);
    strbuf_init(&sb);
    query_overview_json(&sb, &s, &o);
    cr_assert_str_eq(sb.data, "{\"total_views\":120,\"unique_sessions\":97,\"active_content\":3,"
                              "\"period\":{\"from\":\"2026-10-27\",\"to\":\"2026-11-25\"},"
                              "\"data_complete_until\":\"2026-11-25T13:44:58.123Z\","
                              "\"unique_sessions_error\":0.016}");
    strbuf_reset(&sb);
    s = spec_of(QUERY_SCOPE_ALL, 0, true, 7);
    o.complete_until[0] = '\0';
    query_overview_json(&sb, &s, &o);
    cr_assert_not_null(strstr(sb.data, "\"company_id\":7,"));
    cr_assert_not_null(strstr(sb.data, "\"data_complete_until\":null"));
    strbuf_deinit(&sb);
    PQclear(res);
}

Test(query_result, overview_wrong_shape)
{
    const char *v[] = {"120", "97", "3"};
    PGresult *res = make_result(3, v);
    struct query_overview o;

    cr_assert_not(query_read_overview(res, &o));
    PQclear(res);
    cr_assert_not(query_read_overview(NULL, &o));
}

Test(query_result, entity)
{
    const char *v[] = {"7", "7", "10", "9", "4", "113", "3", NULL};
    PGresult *res = make_result(8, v);
    struct query_entity e;
    struct query_spec s = spec_of(QUERY_SCOPE_CONTENT, 42, true, 7);
    struct strbuf sb;

    cr_assert(query_read_entity(res, &e));
    cr_assert(e.owner_known);
    cr_assert_eq(e.owner_min, 7);
    cr_assert_eq(e.views, 10);
    cr_assert_eq(e.duration_sum, 113);
    cr_assert(query_owner_allowed(&s, &e));
    strbuf_init(&sb);
    query_entity_json(&sb, &s, &e);
    cr_assert_str_eq(sb.data, "{\"ar_content_id\":42,\"views\":10,\"unique_sessions\":9,"
                              "\"video_plays\":4,\"avg_duration_seconds\":37.67,"
                              "\"period\":{\"from\":\"2026-10-27\",\"to\":\"2026-11-25\"},"
                              "\"data_complete_until\":null,\"unique_sessions_error\":0.016}");
    strbuf_deinit(&sb);
    PQclear(res);
}

Test(query_result, entity_unknown_owner_and_no_rows)
{
    const char *v[] = {NULL, NULL, "0", "0", "0", "0", "0", NULL};
    PGresult *res = make_result(8, v);
    struct query_entity e;
    struct query_spec s = spec_of(QUERY_SCOPE_COMPANY, 3, false, 0);
    struct strbuf sb;

    cr_assert(query_read_entity(res, &e));
    cr_assert_not(e.owner_known);
    strbuf_init(&sb);
    query_entity_json(&sb, &s, &e);
    cr_assert_not_null(strstr(sb.data, "{\"company_id\":3,\"views\":0,"));
    cr_assert_not_null(strstr(sb.data, "\"avg_duration_seconds\":0,"));
    strbuf_deinit(&sb);
    PQclear(res);
}

Test(query_result, entity_rejects_null_counts)
{
    const char *v[] = {"7", "7", NULL, "0", "0", "0", "0", NULL};
    PGresult *res = make_result(8, v);
    struct query_entity e;

    cr_assert_not(query_read_entity(res, &e));
    PQclear(res);
}

Test(query_result, avg_duration)
{
    cr_assert_float_eq(query_avg_duration(0, 0), 0.0, 1e-12);
    cr_assert_float_eq(query_avg_duration(75, 2), 37.5, 1e-12);
    cr_assert_float_eq(query_avg_duration(100, 3), 33.33, 1e-9);
    cr_assert_float_eq(query_avg_duration(200, 3), 66.67, 1e-9);
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
