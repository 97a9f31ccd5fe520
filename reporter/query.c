/* The reporter's pure query logic: window, path ids, authorisation rules, SQL per
 * scope, result reading and JSON. No I/O, so Criterion tests it directly. */
#include "query.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

#define QUERY_SECONDS_PER_DAY 86400
#define QUERY_RELATION_MAX    127

/* Every answer says how fresh it is: the lowest watermark of the aggregators
 * that reported in the last 10 minutes (a dead one must not freeze it), as
 * RFC 3339 UTC with milliseconds (truncated, so the claim stays true). */
#define QUERY_SQL_WATERMARK                                                                        \
    "(SELECT to_char(min(complete_until) AT TIME ZONE 'UTC', "                                     \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM analytics.ingest_watermarks "                       \
    "WHERE updated_at > now() - interval '10 minutes')"

/* hll_union_agg over no rows is NULL, hence the coalesce. */
#define QUERY_SQL_UNIQUE "coalesce(round(hll_cardinality(hll_union_agg(sessions))), 0)::bigint"

#define QUERY_SQL_ENTITY_AGGREGATES                                                                \
    "coalesce(sum(views), 0)::bigint, " QUERY_SQL_UNIQUE ", "                                      \
    "coalesce(sum(video_plays), 0)::bigint, coalesce(sum(duration_sum), 0)::bigint, "              \
    "coalesce(sum(duration_count), 0)::bigint, " QUERY_SQL_WATERMARK " "

#define QUERY_SQL_DAYS "day BETWEEN $1::date AND $2::date"

bool query_period_last_days(time_t now, unsigned days, struct query_period *out)
{
    struct tm tm;
    time_t first;

    if (days == 0)
        return false;
    /* UTC days have no DST: whole-day arithmetic on seconds is exact. */
    first = now - (time_t)(days - 1) * QUERY_SECONDS_PER_DAY;
    if (!gmtime_r(&now, &tm) || strftime(out->to, sizeof(out->to), "%Y-%m-%d", &tm) != 10)
        return false;
    if (!gmtime_r(&first, &tm) || strftime(out->from, sizeof(out->from), "%Y-%m-%d", &tm) != 10)
        return false;
    return true;
}

bool query_parse_id(const char *s, size_t len, int64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 19)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

enum query_path_result query_path_id(const char *path, const char *prefix, int64_t *out)
{
    size_t plen = strlen(prefix);
    const char *seg;

    if (strncmp(path, prefix, plen) != 0)
        return QUERY_PATH_NOT_FOUND;
    seg = path + plen;
    if (*seg == '\0' || strchr(seg, '/'))
        return QUERY_PATH_NOT_FOUND;
    return query_parse_id(seg, strlen(seg), out) ? QUERY_PATH_OK : QUERY_PATH_INVALID;
}

static bool query_ident_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

bool query_relation_valid(const char *rel)
{
    size_t len = rel ? strlen(rel) : 0;
    bool first = true;
    bool dotted = false;

    if (len == 0 || len > QUERY_RELATION_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (rel[i] == '.' && !first && !dotted) {
            dotted = true;
            first = true;
            continue;
        }
        if (!query_ident_char(rel[i], first))
            return false;
        first = false;
    }
    return !first;
}

/* Builds one statement; owner columns read `rel` for projects and content. */
static char *query_text_for(enum query_variant v, const char *rel)
{
    struct strbuf sb;

    strbuf_init(&sb);
    switch (v) {
    case QUERY_VARIANT_ALL:
    case QUERY_VARIANT_ALL_COMPANY:
        strbuf_puts(
            &sb, "SELECT coalesce(sum(views), 0)::bigint, " QUERY_SQL_UNIQUE ", "
                 "count(DISTINCT ar_content_id) FILTER (WHERE views > 0), " QUERY_SQL_WATERMARK " "
                 "FROM analytics.rollup_content_daily WHERE " QUERY_SQL_DAYS);
        if (v == QUERY_VARIANT_ALL_COMPANY)
            strbuf_puts(&sb, " AND company_id = $3::bigint");
        break;
    case QUERY_VARIANT_COMPANY:
        strbuf_puts(&sb, "SELECT NULL::bigint, NULL::bigint, " QUERY_SQL_ENTITY_AGGREGATES
                         "FROM analytics.rollup_content_daily "
                         "WHERE company_id = $3::bigint AND " QUERY_SQL_DAYS);
        break;
    case QUERY_VARIANT_PROJECT:
    case QUERY_VARIANT_PROJECT_COMPANY:
        strbuf_printf(&sb,
                      "SELECT (SELECT min(company_id) FROM %s WHERE project_id = $3::bigint), "
                      "(SELECT max(company_id) FROM %s WHERE project_id = $3::bigint), ",
                      rel, rel);
        strbuf_puts(&sb, QUERY_SQL_ENTITY_AGGREGATES
                    "FROM analytics.rollup_content_daily "
                    "WHERE project_id = $3::bigint AND " QUERY_SQL_DAYS);
        if (v == QUERY_VARIANT_PROJECT_COMPANY)
            strbuf_puts(&sb, " AND company_id = $4::bigint");
        break;
    case QUERY_VARIANT_CONTENT:
        /* The rollup key leads with company_id: taking it from the registry lets
         * the primary key serve the lookup instead of a scan of the whole window. */
        strbuf_printf(&sb,
                      "SELECT (SELECT company_id FROM %s WHERE id = $3::bigint), "
                      "(SELECT company_id FROM %s WHERE id = $3::bigint), ",
                      rel, rel);
        strbuf_puts(&sb, QUERY_SQL_ENTITY_AGGREGATES "FROM analytics.rollup_content_daily ");
        strbuf_printf(&sb,
                      "WHERE company_id = (SELECT company_id FROM %s WHERE id = $3::bigint) "
                      "AND ar_content_id = $3::bigint AND " QUERY_SQL_DAYS,
                      rel);
        break;
    case QUERY_VARIANT_COUNT:
        break;
    }
    if (sb.oom || !sb.data) {
        strbuf_deinit(&sb);
        return NULL;
    }
    return strbuf_steal(&sb);
}

int query_texts_init(struct query_texts *t, const char *content_relation)
{
    memset(t, 0, sizeof(*t));
    if (!query_relation_valid(content_relation))
        return -EINVAL;
    for (int v = 0; v < QUERY_VARIANT_COUNT; v++) {
        t->sql[v] = query_text_for((enum query_variant)v, content_relation);
        if (!t->sql[v])
            return -ENOMEM;
    }
    return 0;
}

void query_texts_deinit(struct query_texts *t)
{
    for (int v = 0; v < QUERY_VARIANT_COUNT; v++) {
        free(t->sql[v]);
        t->sql[v] = NULL;
    }
}

enum query_variant query_variant_of(const struct query_spec *spec)
{
    switch (spec->scope) {
    case QUERY_SCOPE_ALL:
        return spec->restricted ? QUERY_VARIANT_ALL_COMPANY : QUERY_VARIANT_ALL;
    case QUERY_SCOPE_COMPANY:
        return QUERY_VARIANT_COMPANY;
    case QUERY_SCOPE_PROJECT:
        return spec->restricted ? QUERY_VARIANT_PROJECT_COMPANY : QUERY_VARIANT_PROJECT;
    case QUERY_SCOPE_CONTENT:
        /* Content is read from its owner's rows; a company key is let through only
         * when that owner is its company (query_owner_allowed). */
        return QUERY_VARIANT_CONTENT;
    }
    return QUERY_VARIANT_COUNT;
}

static void query_set_param(struct query_sql *out, const char *text)
{
    int i = out->nparams++;

    snprintf(out->storage[i], sizeof(out->storage[i]), "%s", text);
    out->params[i] = out->storage[i];
}

static void query_set_id(struct query_sql *out, int64_t id)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "%" PRId64, id);
    query_set_param(out, buf);
}

int query_build(const struct query_texts *t, const struct query_spec *spec, struct query_sql *out)
{
    enum query_variant v = query_variant_of(spec);

    memset(out, 0, sizeof(*out));
    if (v == QUERY_VARIANT_COUNT || !t->sql[v])
        return -EINVAL;
    if (spec->scope != QUERY_SCOPE_ALL && spec->id <= 0)
        return -EINVAL;
    if (spec->restricted && spec->company_id <= 0)
        return -EINVAL;
    out->sql = t->sql[v];
    query_set_param(out, spec->period.from);
    query_set_param(out, spec->period.to);
    switch (v) {
    case QUERY_VARIANT_ALL:
        break;
    case QUERY_VARIANT_ALL_COMPANY:
        query_set_id(out, spec->company_id);
        break;
    case QUERY_VARIANT_COMPANY:
    case QUERY_VARIANT_PROJECT:
    case QUERY_VARIANT_CONTENT:
        query_set_id(out, spec->id);
        break;
    case QUERY_VARIANT_PROJECT_COMPANY:
        query_set_id(out, spec->id);
        query_set_id(out, spec->company_id);
        break;
    case QUERY_VARIANT_COUNT:
        return -EINVAL;
    }
    return 0;
}

bool query_scope_allowed(const struct query_spec *spec)
{
    if (!spec->restricted)
        return true;
    if (spec->scope == QUERY_SCOPE_COMPANY)
        return spec->id == spec->company_id;
    return true;
}

bool query_owner_allowed(const struct query_spec *spec, const struct query_entity *e)
{
    if (!spec->restricted)
        return true;
    switch (spec->scope) {
    case QUERY_SCOPE_ALL:
        return true;
    case QUERY_SCOPE_COMPANY:
        return spec->id == spec->company_id;
    case QUERY_SCOPE_PROJECT:
    case QUERY_SCOPE_CONTENT:
        /* Unknown to the registry is forbidden too: a company key must never get
         * an empty 200 for an id that may belong to someone else. */
        return e->owner_known && e->owner_min == spec->company_id &&
               e->owner_max == spec->company_id;
    }
    return false;
}

/* Reads a bigint cell; NULL reads as 0 with *is_null set. */
static bool query_cell_i64(const PGresult *res, int col, int64_t *out, bool *is_null)
{
    const char *s;
    char *end = NULL;
    long long v;

    if (is_null)
        *is_null = PQgetisnull(res, 0, col);
    if (PQgetisnull(res, 0, col)) {
        *out = 0;
        return is_null != NULL;
    }
    s = PQgetvalue(res, 0, col);
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool query_cell_text(const PGresult *res, int col, char *out, size_t outlen)
{
    int len;

    out[0] = '\0';
    if (PQgetisnull(res, 0, col))
        return true;
    len = PQgetlength(res, 0, col);
    if (len < 0 || (size_t)len >= outlen)
        return false;
    memcpy(out, PQgetvalue(res, 0, col), (size_t)len);
    out[len] = '\0';
    return true;
}

static bool query_result_shape(const PGresult *res, int ncols)
{
    return res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
           PQnfields(res) == ncols;
}

bool query_read_overview(const PGresult *res, struct query_overview *out)
{
    memset(out, 0, sizeof(*out));
    return query_result_shape(res, QUERY_OV_NCOLS) &&
           query_cell_i64(res, QUERY_OV_TOTAL_VIEWS, &out->total_views, NULL) &&
           query_cell_i64(res, QUERY_OV_UNIQUE_SESSIONS, &out->unique_sessions, NULL) &&
           query_cell_i64(res, QUERY_OV_ACTIVE_CONTENT, &out->active_content, NULL) &&
           query_cell_text(res, QUERY_OV_COMPLETE_UNTIL, out->complete_until,
                           sizeof(out->complete_until));
}

bool query_read_entity(const PGresult *res, struct query_entity *out)
{
    bool min_null = true, max_null = true;

    memset(out, 0, sizeof(*out));
    if (!query_result_shape(res, QUERY_EN_NCOLS) ||
        !query_cell_i64(res, QUERY_EN_OWNER_MIN, &out->owner_min, &min_null) ||
        !query_cell_i64(res, QUERY_EN_OWNER_MAX, &out->owner_max, &max_null) ||
        !query_cell_i64(res, QUERY_EN_VIEWS, &out->views, NULL) ||
        !query_cell_i64(res, QUERY_EN_UNIQUE_SESSIONS, &out->unique_sessions, NULL) ||
        !query_cell_i64(res, QUERY_EN_VIDEO_PLAYS, &out->video_plays, NULL) ||
        !query_cell_i64(res, QUERY_EN_DURATION_SUM, &out->duration_sum, NULL) ||
        !query_cell_i64(res, QUERY_EN_DURATION_COUNT, &out->duration_count, NULL) ||
        !query_cell_text(res, QUERY_EN_COMPLETE_UNTIL, out->complete_until,
                         sizeof(out->complete_until)))
        return false;
    out->owner_known = !min_null && !max_null;
    return true;
}

double query_avg_duration(int64_t sum, int64_t count)
{
    if (count <= 0)
        return 0.0;
    return round((double)sum / (double)count * 100.0) / 100.0;
}

static void query_json_period(struct strbuf *sb, const struct query_period *p)
{
    strbuf_puts(sb, "\"period\":{\"from\":");
    strbuf_json_str(sb, p->from);
    strbuf_puts(sb, ",\"to\":");
    strbuf_json_str(sb, p->to);
    strbuf_putc(sb, '}');
}

static void query_json_tail(struct strbuf *sb, const struct query_spec *spec,
                            const char *complete_until)
{
    strbuf_putc(sb, ',');
    query_json_period(sb, &spec->period);
    strbuf_puts(sb, ",\"data_complete_until\":");
    strbuf_json_str(sb, complete_until[0] ? complete_until : NULL);
    strbuf_puts(sb, ",\"unique_sessions_error\":" QUERY_UNIQUE_SESSIONS_ERROR "}");
}

void query_overview_json(struct strbuf *sb, const struct query_spec *spec,
                         const struct query_overview *o)
{
    strbuf_printf(sb,
                  "{\"total_views\":%" PRId64 ",\"unique_sessions\":%" PRId64
                  ",\"active_content\":%" PRId64,
                  o->total_views, o->unique_sessions, o->active_content);
    if (spec->restricted)
        strbuf_printf(sb, ",\"company_id\":%" PRId64, spec->company_id);
    query_json_tail(sb, spec, o->complete_until);
}

/* Writes a non-negative number with at most 2 decimals and no trailing zeros. */
static void query_json_decimal2(struct strbuf *sb, double v)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.2f", v);

    if (n <= 0 || (size_t)n >= sizeof(buf) || !isfinite(v)) {
        strbuf_putc(sb, '0');
        return;
    }
    while (n > 0 && buf[n - 1] == '0')
        n--;
    if (n > 0 && buf[n - 1] == '.')
        n--;
    strbuf_append(sb, buf, (size_t)n);
}

void query_entity_json(struct strbuf *sb, const struct query_spec *spec,
                       const struct query_entity *e)
{
    static const char *const id_field[] = {
        [QUERY_SCOPE_ALL] = "company_id",
        [QUERY_SCOPE_COMPANY] = "company_id",
        [QUERY_SCOPE_PROJECT] = "project_id",
        [QUERY_SCOPE_CONTENT] = "ar_content_id",
    };

    strbuf_printf(sb,
                  "{\"%s\":%" PRId64 ",\"views\":%" PRId64 ",\"unique_sessions\":%" PRId64
                  ",\"video_plays\":%" PRId64 ",\"avg_duration_seconds\":",
                  id_field[spec->scope], spec->id, e->views, e->unique_sessions, e->video_plays);
    query_json_decimal2(sb, query_avg_duration(e->duration_sum, e->duration_count));
    query_json_tail(sb, spec, e->complete_until);
}

bool query_sqlstate_retryable(const char *sqlstate)
{
    static const char *const exact[] = {
        "57014", /* query_canceled (statement_timeout) */
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now */
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
    };

    if (!sqlstate || strlen(sqlstate) != 5)
        return true; /* no SQLSTATE: the connection failed, not the statement */
    /* Class 08: connection exception; 53: insufficient resources. */
    if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "53", 2) == 0)
        return true;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(sqlstate, exact[i]) == 0)
            return true;
    }
    return false;
}
