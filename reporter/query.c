/* The reporter's pure query logic: SQL per request shape, authorisation rules,
 * result reading, JSON and CSV. No I/O, so Criterion tests it directly. */
#include "query.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "strbuf.h"

/* Every answer says how fresh it is: the lowest watermark of the aggregators
 * that reported in the last 10 minutes (a dead one must not freeze it), as
 * RFC 3339 UTC with milliseconds (truncated, so the claim stays true). */
#define QUERY_SQL_WATERMARK                                                                        \
    "(SELECT to_char(min(complete_until) AT TIME ZONE 'UTC', "                                     \
    "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM analytics.ingest_watermarks "                       \
    "WHERE updated_at > now() - interval '10 minutes')"

/* The window in local days d0..d1 and as UTC instants [h0, h1): local midnights
 * of the zone $3; ud0..ud1 are the whole UTC days inside [h0, h1) (none when
 * ud0 > ud1). "Today" is the zone's today, computed by PostgreSQL. Every
 * parameter is typed here so that statements not using one still prepare. */
#define QUERY_SQL_WINDOW                                                                           \
    "WITH w AS (SELECT y.*, ((h0 AT TIME ZONE 'UTC') + interval '1 day' - "                        \
    "interval '1 microsecond')::date AS ud0, (h1 AT TIME ZONE 'UTC')::date - 1 AS ud1 FROM ("      \
    "SELECT d0, d1, d0::timestamp AT TIME ZONE $3::text AS h0, "                                   \
    "(d1 + 1)::timestamp AT TIME ZONE $3::text AS h1, $5::bigint AS sid, $6::bigint AS kc, "       \
    "$7::text AS dim, $8::int AS lim FROM ("                                                       \
    "SELECT coalesce($1::date, CASE $4::text WHEN 'month' THEN date_trunc('month', t)::date "      \
    "WHEN '12mo' THEN (t - interval '12 months')::date + 1 "                                       \
    "ELSE t - coalesce($4::text, '30')::int + 1 END) AS d0, coalesce($2::date, t) AS d1 "          \
    "FROM (SELECT (now() AT TIME ZONE $3::text)::date AS t) n) x) y)"

#define QUERY_SQL_AGG                                                                              \
    "sum(r.views) AS v, hll_union_agg(r.sessions) AS u, sum(r.video_plays) AS p, "                 \
    "sum(r.duration_sum) AS ds, sum(r.duration_count) AS dc"
/* One company's rows are one per day (hour) already: no union needed per bucket. */
#define QUERY_SQL_ROW                                                                              \
    "r.views AS v, r.sessions AS u, r.video_plays AS p, r.duration_sum AS ds, "                    \
    "r.duration_count AS dc"
#define QUERY_SQL_AGG_BREAKDOWN                                                                    \
    "sum(r.views) AS v, hll_union_agg(r.sessions) AS u, NULL::numeric AS p, "                      \
    "NULL::numeric AS ds, NULL::numeric AS dc"
/* hll_union_agg over no rows is NULL, hence the coalesce. */
#define QUERY_SQL_TOTALS                                                                           \
    "t AS (SELECT coalesce(sum(v), 0)::bigint AS tv, "                                             \
    "coalesce(round(hll_cardinality(hll_union_agg(u))), 0)::bigint AS tu, sum(p)::bigint AS tp, "  \
    "sum(ds)::bigint AS tds, sum(dc)::bigint AS tdc FROM s)"
#define QUERY_SQL_ITEM_COLS                                                                        \
    "coalesce(s.v, 0)::bigint AS v, coalesce(round(hll_cardinality(s.u)), 0)::bigint AS u, "       \
    "s.p::bigint AS p, s.ds::bigint AS ds, s.dc::bigint AS dc"

static const char *const query_interval_names[] = {"hour", "day", "week", "month"};
static const char *const query_by_names[] = {"content", "project", "company"};
static const char *const query_dimension_names[QUERY_DIM_COUNT] = {
    "device_type", "browser", "os", "country", "city", "tracking_quality"};

const char *query_interval_name(enum query_interval i)
{
    return query_interval_names[i];
}

const char *query_by_name(enum query_by b)
{
    return query_by_names[b];
}

const char *query_dimension_name(enum query_dimension d)
{
    return query_dimension_names[d];
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

bool query_uses_hourly(const struct query_spec *spec)
{
    if (spec->ep == QUERY_EP_BREAKDOWN)
        return false;
    if (spec->ep == QUERY_EP_TIMESERIES && spec->interval == QUERY_INTERVAL_HOUR)
        return true;
    return !spec->win.tz_utc;
}

/* Per-company rollups answer company-wide questions with one sketch per
 * company-day; per-content ones are needed below a company or per content. */
static bool query_company_level(const struct query_spec *spec)
{
    if (spec->scope != QUERY_SCOPE_ALL && spec->scope != QUERY_SCOPE_COMPANY)
        return false;
    if (spec->ep == QUERY_EP_TOP)
        return spec->by == QUERY_BY_COMPANY;
    return spec->ep != QUERY_EP_BREAKDOWN;
}

static const char *query_source(const struct query_spec *spec, bool hourly)
{
    if (spec->ep == QUERY_EP_BREAKDOWN)
        return "analytics.rollup_breakdown_daily";
    if (query_company_level(spec))
        return hourly ? "analytics.rollup_company_hourly" : "analytics.rollup_company_daily";
    return hourly ? "analytics.rollup_content_hourly" : "analytics.rollup_content_daily";
}

static void query_put_range(struct strbuf *sb, bool hourly, const char *alias)
{
    if (hourly)
        strbuf_printf(sb, "%s.hour >= w.h0 AND %s.hour < w.h1", alias, alias);
    else
        strbuf_printf(sb, "%s.day BETWEEN w.d0 AND w.d1", alias);
}

/* Totals in a zone other than UTC need local days, but not per-day sketches:
 * the whole UTC days inside the window come from daily rows (one sketch per
 * day), only the edges from hourly ones, so a 30-day window merges about 30 +
 * 24 sketches per company or content instead of 720. Same hours as hourly rows
 * alone would give, since a UTC day is its 24 hours. */
static bool query_hybrid(const struct query_spec *spec)
{
    return (spec->ep == QUERY_EP_OVERVIEW || spec->ep == QUERY_EP_ENTITY ||
            spec->ep == QUERY_EP_TOP) &&
           query_uses_hourly(spec);
}

static void query_put_hybrid(struct strbuf *sb, const struct query_spec *spec)
{
    const char *cols =
        query_company_level(spec)
            ? "company_id, views, sessions, video_plays, duration_sum, duration_count"
            : "company_id, project_id, ar_content_id, views, sessions, video_plays, "
              "duration_sum, duration_count";

    strbuf_printf(sb,
                  "(SELECT %s FROM w wd, %s d WHERE d.day BETWEEN wd.ud0 AND wd.ud1 "
                  "UNION ALL SELECT %s FROM w wh, %s h WHERE h.hour >= wh.h0 AND h.hour < wh.h1 "
                  "AND NOT (h.hour >= wh.ud0::timestamp AT TIME ZONE 'UTC' "
                  "AND h.hour < (wh.ud1 + 1)::timestamp AT TIME ZONE 'UTC'))",
                  cols, query_source(spec, false), cols, query_source(spec, true));
}

/* " FROM w, <source> r WHERE <window> AND <scope>" */
static void query_put_from(struct strbuf *sb, const struct query_spec *spec, const char *rel,
                           bool hourly)
{
    if (query_hybrid(spec)) {
        strbuf_puts(sb, " FROM w, ");
        query_put_hybrid(sb, spec);
        strbuf_puts(sb, " r WHERE true");
    } else {
        strbuf_printf(sb, " FROM w, %s r WHERE ", query_source(spec, hourly));
        query_put_range(sb, hourly, "r");
    }
    switch (spec->scope) {
    case QUERY_SCOPE_ALL:
        break;
    case QUERY_SCOPE_COMPANY:
        strbuf_puts(sb, " AND r.company_id = $5::bigint");
        break;
    case QUERY_SCOPE_PROJECT:
        strbuf_puts(sb, " AND r.project_id = $5::bigint");
        break;
    case QUERY_SCOPE_CONTENT:
        /* The rollup keys lead with company_id: taking it from the registry lets
         * the primary key serve the lookup instead of a scan of the window. */
        strbuf_printf(sb,
                      " AND r.company_id = (SELECT company_id FROM %s WHERE id = $5::bigint)"
                      " AND r.ar_content_id = $5::bigint",
                      rel);
        break;
    }
    if (spec->restricted)
        strbuf_puts(sb, " AND r.company_id = $6::bigint");
    if (spec->ep == QUERY_EP_BREAKDOWN)
        strbuf_puts(sb, " AND r.dimension = $7::text");
}

/* The local day of a rollup row: its UTC day, or the local day in which its
 * UTC hour starts. */
static const char *query_local_day(bool hourly)
{
    return hourly ? "(r.hour AT TIME ZONE $3::text)::date" : "r.day";
}

static void query_put_bucket(struct strbuf *sb, enum query_interval iv, bool hourly)
{
    switch (iv) {
    case QUERY_INTERVAL_HOUR:
        strbuf_puts(sb, "r.hour");
        break;
    case QUERY_INTERVAL_DAY:
        strbuf_puts(sb, query_local_day(hourly));
        break;
    case QUERY_INTERVAL_WEEK:
    case QUERY_INTERVAL_MONTH:
        strbuf_printf(sb, "date_trunc('%s', (%s)::timestamp)::date",
                      iv == QUERY_INTERVAL_WEEK ? "week" : "month", query_local_day(hourly));
        break;
    }
}

/* Every bucket of the window, so that empty ones are answered as zeros. Hours
 * are the whole UTC hours starting within [h0, h1). */
static void query_put_series(struct strbuf *sb, enum query_interval iv)
{
    switch (iv) {
    case QUERY_INTERVAL_HOUR:
        strbuf_puts(sb, "generate_series(date_trunc('hour', w.h0 + interval '1 hour' - "
                        "interval '1 microsecond', 'UTC'), w.h1 - interval '1 microsecond', "
                        "interval '1 hour')");
        break;
    case QUERY_INTERVAL_DAY:
        strbuf_puts(sb,
                    "generate_series(w.d0::timestamp, w.d1::timestamp, interval '1 day')::date");
        break;
    case QUERY_INTERVAL_WEEK:
    case QUERY_INTERVAL_MONTH: {
        const char *u = iv == QUERY_INTERVAL_WEEK ? "week" : "month";
        strbuf_printf(sb,
                      "generate_series(date_trunc('%s', w.d0::timestamp), w.d1::timestamp, "
                      "interval '1 %s')::date",
                      u, u);
        break;
    }
    }
}

static void query_put_owner(struct strbuf *sb, const struct query_spec *spec, const char *rel)
{
    if (spec->scope == QUERY_SCOPE_PROJECT || spec->scope == QUERY_SCOPE_CONTENT)
        strbuf_printf(sb,
                      "(SELECT min(company_id) AS omin, max(company_id) AS omax FROM %s "
                      "WHERE %s = $5::bigint) o",
                      rel, spec->scope == QUERY_SCOPE_PROJECT ? "project_id" : "id");
    else
        strbuf_puts(sb, "(SELECT NULL::bigint AS omin, NULL::bigint AS omax) o");
}

/* Contents with views in the window: one primary-key probe per registered
 * content (LIMIT 1 keeps it a probe rather than a join over every content-day
 * of the window), so the cost follows the number of contents. */
static void query_put_active(struct strbuf *sb, const struct query_spec *spec, const char *rel,
                             bool hourly)
{
    strbuf_printf(sb,
                  "(SELECT count(*) FROM %s c CROSS JOIN LATERAL (SELECT 1 FROM "
                  "analytics.rollup_content_%s a WHERE a.company_id = c.company_id AND "
                  "a.ar_content_id = c.id AND ",
                  rel, hourly ? "hourly" : "daily");
    query_put_range(sb, hourly, "a");
    strbuf_puts(sb, " AND a.views > 0 LIMIT 1) x");
    if (spec->scope == QUERY_SCOPE_COMPANY)
        strbuf_puts(sb, " WHERE c.company_id = $5::bigint");
    strbuf_puts(sb, ")::bigint");
}

int query_build(const struct query_spec *spec, const char *rel, struct strbuf *sb,
                struct query_params *p)
{
    bool hourly = query_uses_hourly(spec);
    bool items = spec->ep != QUERY_EP_OVERVIEW && spec->ep != QUERY_EP_ENTITY;
    enum query_interval iv = spec->ep == QUERY_EP_EXPORT ? QUERY_INTERVAL_DAY : spec->interval;
    /* A bucket is one primary-key row: one company's day (from daily rows) or hour. */
    bool row_buckets = (spec->ep == QUERY_EP_TIMESERIES || spec->ep == QUERY_EP_EXPORT) &&
                       spec->scope == QUERY_SCOPE_COMPANY && query_company_level(spec) &&
                       (iv == QUERY_INTERVAL_HOUR || (iv == QUERY_INTERVAL_DAY && !hourly));

    memset(p, 0, sizeof(*p));
    if (spec->ep >= QUERY_EP_COUNT || !config_relation_valid(rel))
        return -EINVAL;
    if (spec->scope != QUERY_SCOPE_ALL && spec->id <= 0)
        return -EINVAL;
    if (spec->restricted && spec->company_id <= 0)
        return -EINVAL;
    if (spec->ep == QUERY_EP_OVERVIEW && spec->scope != QUERY_SCOPE_ALL &&
        spec->scope != QUERY_SCOPE_COMPANY)
        return -EINVAL;

    strbuf_puts(sb, QUERY_SQL_WINDOW ", s AS (SELECT ");
    switch (spec->ep) {
    case QUERY_EP_TIMESERIES:
    case QUERY_EP_EXPORT:
        query_put_bucket(sb, iv, hourly);
        strbuf_puts(sb, " AS b, ");
        break;
    case QUERY_EP_TOP:
        strbuf_printf(sb, "r.%s AS b, ",
                      spec->by == QUERY_BY_CONTENT   ? "ar_content_id"
                      : spec->by == QUERY_BY_PROJECT ? "project_id"
                                                     : "company_id");
        break;
    case QUERY_EP_BREAKDOWN:
        strbuf_puts(sb, "r.value AS b, ");
        break;
    default:
        break;
    }
    strbuf_puts(sb, spec->ep == QUERY_EP_BREAKDOWN ? QUERY_SQL_AGG_BREAKDOWN
                    : row_buckets                  ? QUERY_SQL_ROW
                                                   : QUERY_SQL_AGG);
    query_put_from(sb, spec, rel, hourly);
    if (items && !row_buckets)
        strbuf_puts(sb, " GROUP BY 1");
    strbuf_puts(sb, "), " QUERY_SQL_TOTALS);

    if (spec->ep == QUERY_EP_TIMESERIES || spec->ep == QUERY_EP_EXPORT) {
        strbuf_puts(sb, ", i AS (SELECT ");
        if (iv == QUERY_INTERVAL_HOUR)
            /* The hour's start in local time with its UTC offset: unambiguous
             * across a DST fall-back, where a local hour repeats. */
            strbuf_puts(sb, "to_char(g.b AT TIME ZONE $3::text, 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
                            "CASE WHEN z.om < 0 THEN '-' ELSE '+' END || "
                            "to_char(abs(z.om) / 60, 'FM00') || ':' || "
                            "to_char(abs(z.om) % 60, 'FM00')");
        else
            strbuf_puts(sb, "to_char(g.b, 'YYYY-MM-DD')");
        strbuf_puts(sb, " AS k, " QUERY_SQL_ITEM_COLS ", g.b AS ord FROM (SELECT ");
        query_put_series(sb, iv);
        strbuf_puts(sb, " AS b FROM w) g ");
        if (iv == QUERY_INTERVAL_HOUR)
            strbuf_puts(sb, "CROSS JOIN LATERAL (SELECT (extract(epoch FROM (g.b AT TIME ZONE "
                            "$3::text) - (g.b AT TIME ZONE 'UTC')) / 60)::int AS om) z ");
        strbuf_puts(sb, "LEFT JOIN s ON s.b = g.b)");
    } else if (items) {
        strbuf_puts(sb, ", i AS (SELECT s.b::text AS k, " QUERY_SQL_ITEM_COLS
                        ", row_number() OVER (ORDER BY s.v DESC, s.b) AS ord FROM s "
                        "ORDER BY s.v DESC, s.b LIMIT $8::int)");
    }

    strbuf_puts(sb, " SELECT o.omin, o.omax, " QUERY_SQL_WATERMARK ", to_char(w.d0, 'YYYY-MM-DD'), "
                    "to_char(w.d1, 'YYYY-MM-DD'), t.tv, t.tu, t.tp, t.tds, t.tdc, ");
    if (spec->ep == QUERY_EP_OVERVIEW)
        query_put_active(sb, spec, rel, hourly);
    else
        strbuf_puts(sb, "NULL::bigint");
    if (items)
        strbuf_puts(sb, ", i.k, i.v, i.u, i.p, i.ds, i.dc FROM w CROSS JOIN ");
    else
        strbuf_puts(sb, ", NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, "
                        "NULL::bigint FROM w CROSS JOIN ");
    query_put_owner(sb, spec, rel);
    strbuf_puts(sb, " CROSS JOIN t");
    if (items)
        strbuf_puts(sb, " LEFT JOIN i ON true ORDER BY i.ord");
    if (sb->oom)
        return -ENOMEM;

    if (spec->win.explicit_range) {
        snprintf(p->storage[0], sizeof(p->storage[0]), "%s", spec->win.from);
        snprintf(p->storage[1], sizeof(p->storage[1]), "%s", spec->win.to);
        p->params[0] = p->storage[0];
        p->params[1] = p->storage[1];
    } else {
        snprintf(p->storage[3], sizeof(p->storage[3]), "%s", spec->win.period);
        p->params[3] = p->storage[3];
    }
    snprintf(p->storage[2], sizeof(p->storage[2]), "%s", spec->win.tz);
    p->params[2] = p->storage[2];
    if (spec->scope != QUERY_SCOPE_ALL) {
        snprintf(p->storage[4], sizeof(p->storage[4]), "%" PRId64, spec->id);
        p->params[4] = p->storage[4];
    }
    if (spec->restricted) {
        snprintf(p->storage[5], sizeof(p->storage[5]), "%" PRId64, spec->company_id);
        p->params[5] = p->storage[5];
    }
    if (spec->ep == QUERY_EP_BREAKDOWN) {
        snprintf(p->storage[6], sizeof(p->storage[6]), "%s", query_dimension_names[spec->dim]);
        p->params[6] = p->storage[6];
    }
    if (spec->ep == QUERY_EP_TOP || spec->ep == QUERY_EP_BREAKDOWN) {
        snprintf(p->storage[7], sizeof(p->storage[7]), "%u", spec->limit);
        p->params[7] = p->storage[7];
    }
    return 0;
}

bool query_scope_allowed(const struct query_spec *spec)
{
    if (!spec->restricted)
        return true;
    if (spec->scope == QUERY_SCOPE_ALL)
        return false;
    if (spec->scope == QUERY_SCOPE_COMPANY)
        return spec->id == spec->company_id;
    return true;
}

bool query_owner_allowed(const struct query_spec *spec, const struct query_result *r)
{
    if (!spec->restricted)
        return true;
    switch (spec->scope) {
    case QUERY_SCOPE_ALL:
        return false;
    case QUERY_SCOPE_COMPANY:
        return spec->id == spec->company_id;
    case QUERY_SCOPE_PROJECT:
    case QUERY_SCOPE_CONTENT:
        /* Unknown to the registry is forbidden too: a company key must never get
         * an empty 200 for an id that may belong to someone else. */
        return r->owner_known && r->owner_min == spec->company_id &&
               r->owner_max == spec->company_id;
    }
    return false;
}

/* Reads a bigint cell; NULL reads as 0 with *is_null set (refused if is_null is NULL). */
static bool query_cell_i64(const PGresult *res, int row, int col, int64_t *out, bool *is_null)
{
    const char *s;
    char *end = NULL;
    long long v;

    if (is_null)
        *is_null = PQgetisnull(res, row, col);
    if (PQgetisnull(res, row, col)) {
        *out = 0;
        return is_null != NULL;
    }
    s = PQgetvalue(res, row, col);
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

/* Reads views..dcount starting at `col`; plays and durations may be NULL. */
static bool query_read_counts(const PGresult *res, int row, int col, struct query_counts *c)
{
    bool pn = true, sn = true, cn = true, vn = true, un = true;

    if (!query_cell_i64(res, row, col, &c->views, &vn) ||
        !query_cell_i64(res, row, col + 1, &c->unique_sessions, &un) ||
        !query_cell_i64(res, row, col + 2, &c->video_plays, &pn) ||
        !query_cell_i64(res, row, col + 3, &c->duration_sum, &sn) ||
        !query_cell_i64(res, row, col + 4, &c->duration_count, &cn))
        return false;
    c->has_plays = !(pn && sn && cn);
    return true;
}

bool query_read(const PGresult *res, struct query_result *out)
{
    int n;
    bool min_null = true, max_null = true, active_null = true;

    memset(out, 0, sizeof(*out));
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != QUERY_NCOLS)
        return false;
    n = PQntuples(res);
    if (n < 1)
        return false;
    out->res = res;
    if (!query_cell_i64(res, 0, QUERY_COL_OWNER_MIN, &out->owner_min, &min_null) ||
        !query_cell_i64(res, 0, QUERY_COL_OWNER_MAX, &out->owner_max, &max_null) ||
        !query_cell_text(res, QUERY_COL_COMPLETE_UNTIL, out->complete_until,
                         sizeof(out->complete_until)) ||
        !query_cell_text(res, QUERY_COL_FROM, out->from, sizeof(out->from)) ||
        !query_cell_text(res, QUERY_COL_TO, out->to, sizeof(out->to)) ||
        !query_read_counts(res, 0, QUERY_COL_T_VIEWS, &out->total) ||
        !query_cell_i64(res, 0, QUERY_COL_T_ACTIVE, &out->active_content, &active_null))
        goto fail;
    out->owner_known = !min_null && !max_null;
    out->rows = calloc((size_t)n, sizeof(*out->rows));
    if (!out->rows)
        goto fail;
    for (int i = 0; i < n; i++) {
        struct query_row *row = &out->rows[out->nrows];
        if (PQgetisnull(res, i, QUERY_COL_KEY))
            continue;
        row->row = i;
        if (!query_read_counts(res, i, QUERY_COL_VIEWS, &row->c))
            goto fail;
        out->nrows++;
    }
    return true;
fail:
    query_result_deinit(out);
    return false;
}

void query_result_deinit(struct query_result *r)
{
    free(r->rows);
    memset(r, 0, sizeof(*r));
}

double query_avg_duration(int64_t sum, int64_t count)
{
    if (count <= 0)
        return 0.0;
    return round((double)sum / (double)count * 100.0) / 100.0;
}

void query_scope_name(const struct query_spec *spec, char *out, size_t outlen)
{
    static const char *const names[] = {"all", "company", "project", "content"};

    if (spec->scope == QUERY_SCOPE_ALL)
        snprintf(out, outlen, "all");
    else
        snprintf(out, outlen, "%s:%" PRId64, names[spec->scope], spec->id);
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

static void query_json_counts(struct strbuf *sb, const struct query_counts *c,
                              const char *views_name)
{
    strbuf_printf(sb, "\"%s\":%" PRId64 ",\"unique_sessions\":%" PRId64, views_name, c->views,
                  c->unique_sessions);
    if (c->has_plays) {
        strbuf_printf(sb, ",\"video_plays\":%" PRId64 ",\"avg_duration_seconds\":", c->video_plays);
        query_json_decimal2(sb, query_avg_duration(c->duration_sum, c->duration_count));
    }
}

static void query_json_tail(struct strbuf *sb, const struct query_spec *spec,
                            const struct query_result *r)
{
    strbuf_puts(sb, ",\"period\":{\"from\":");
    strbuf_json_str(sb, r->from);
    strbuf_puts(sb, ",\"to\":");
    strbuf_json_str(sb, r->to);
    strbuf_puts(sb, ",\"tz\":");
    strbuf_json_str(sb, spec->win.tz);
    strbuf_puts(sb, "},\"data_complete_until\":");
    strbuf_json_str(sb, r->complete_until[0] ? r->complete_until : NULL);
    strbuf_puts(sb, ",\"unique_sessions_error\":" QUERY_UNIQUE_SESSIONS_ERROR "}");
}

static void query_json_scope(struct strbuf *sb, const struct query_spec *spec)
{
    char scope[48];

    query_scope_name(spec, scope, sizeof(scope));
    strbuf_puts(sb, "\"scope\":");
    strbuf_json_str(sb, scope);
}

static void query_json_items(struct strbuf *sb, const struct query_spec *spec,
                             const struct query_result *r, const char *name, const char *key_name,
                             bool key_is_number)
{
    strbuf_printf(sb, ",\"%s\":[", name);
    for (size_t i = 0; i < r->nrows; i++) {
        const char *key = PQgetvalue(r->res, r->rows[i].row, QUERY_COL_KEY);
        struct query_counts c = r->rows[i].c;
        if (i > 0)
            strbuf_putc(sb, ',');
        strbuf_printf(sb, "{\"%s\":", key_name);
        if (key_is_number)
            strbuf_puts(sb, key);
        else
            strbuf_json_str(sb, key);
        strbuf_putc(sb, ',');
        c.has_plays = spec->ep != QUERY_EP_BREAKDOWN;
        query_json_counts(sb, &c, "views");
        strbuf_putc(sb, '}');
    }
    strbuf_putc(sb, ']');
}

void query_json(struct strbuf *sb, const struct query_spec *spec, const struct query_result *r)
{
    static const char *const id_field[] = {
        [QUERY_SCOPE_ALL] = "company_id",
        [QUERY_SCOPE_COMPANY] = "company_id",
        [QUERY_SCOPE_PROJECT] = "project_id",
        [QUERY_SCOPE_CONTENT] = "ar_content_id",
    };
    struct query_counts total = r->total;

    total.has_plays = spec->ep != QUERY_EP_BREAKDOWN;
    switch (spec->ep) {
    case QUERY_EP_OVERVIEW:
        strbuf_printf(sb,
                      "{\"total_views\":%" PRId64 ",\"unique_sessions\":%" PRId64
                      ",\"active_content\":%" PRId64,
                      total.views, total.unique_sessions, r->active_content);
        if (spec->restricted)
            strbuf_printf(sb, ",\"company_id\":%" PRId64, spec->company_id);
        break;
    case QUERY_EP_ENTITY:
        strbuf_printf(sb, "{\"%s\":%" PRId64 ",", id_field[spec->scope], spec->id);
        query_json_counts(sb, &total, "views");
        break;
    case QUERY_EP_TIMESERIES:
    case QUERY_EP_EXPORT:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"interval\":\"%s\",\"totals\":{",
                      query_interval_names[spec->ep == QUERY_EP_EXPORT ? QUERY_INTERVAL_DAY
                                                                       : spec->interval]);
        query_json_counts(sb, &total, "views");
        strbuf_putc(sb, '}');
        query_json_items(sb, spec, r, "points", "start", false);
        break;
    case QUERY_EP_TOP:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"by\":\"%s\",\"limit\":%u,\"totals\":{", query_by_names[spec->by],
                      spec->limit);
        query_json_counts(sb, &total, "views");
        strbuf_putc(sb, '}');
        query_json_items(sb, spec, r, "items", "id", true);
        break;
    case QUERY_EP_BREAKDOWN:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"dimension\":\"%s\",\"limit\":%u,\"days\":\"utc\",\"totals\":{",
                      query_dimension_names[spec->dim], spec->limit);
        query_json_counts(sb, &total, "views");
        strbuf_putc(sb, '}');
        query_json_items(sb, spec, r, "items", "value", false);
        break;
    case QUERY_EP_COUNT:
        break;
    }
    query_json_tail(sb, spec, r);
}

void query_csv_field(struct strbuf *sb, const char *s)
{
    size_t n = strlen(s);

    if (strcspn(s, ",\"\r\n") == n && !(n > 0 && (s[0] == ' ' || s[n - 1] == ' '))) {
        strbuf_append(sb, s, n);
        return;
    }
    strbuf_putc(sb, '"');
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            strbuf_putc(sb, '"');
        strbuf_putc(sb, *p);
    }
    strbuf_putc(sb, '"');
}

void query_csv(struct strbuf *sb, const struct query_spec *spec, const struct query_result *r)
{
    char scope[48];

    query_scope_name(spec, scope, sizeof(scope));
    strbuf_puts(sb, "date,scope,tz,views,unique_sessions,video_plays,avg_duration_seconds\r\n");
    for (size_t i = 0; i < r->nrows; i++) {
        const struct query_counts *c = &r->rows[i].c;
        query_csv_field(sb, PQgetvalue(r->res, r->rows[i].row, QUERY_COL_KEY));
        strbuf_putc(sb, ',');
        query_csv_field(sb, scope);
        strbuf_putc(sb, ',');
        query_csv_field(sb, spec->win.tz);
        strbuf_printf(sb, ",%" PRId64 ",%" PRId64 ",%" PRId64 ",", c->views, c->unique_sessions,
                      c->video_plays);
        query_json_decimal2(sb, query_avg_duration(c->duration_sum, c->duration_count));
        strbuf_puts(sb, "\r\n");
    }
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
