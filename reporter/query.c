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
#include "timeutil.h"

/* Every answer says how fresh it is: the lowest floor of the streams whose
 * row was kept up to 10 minutes before the newest one (a stream no longer
 * read, after its shards were reduced, must not freeze it; when every
 * aggregator is stopped, the floors of the streams they last read, which
 * stay true and only stop moving); NULL when there is no row. */
#define QUERY_SQL_WATERMARK_AT                                                                     \
    "(SELECT min(complete_until) FROM analytics.stream_watermarks WHERE updated_at >= "            \
    "(SELECT max(updated_at) FROM analytics.stream_watermarks) - interval '10 minutes')"
/* A watermark `at` (SQL) as RFC 3339 UTC with milliseconds (truncated, so the
 * claim stays true): all of one width, so that they compare as strings. */
#define QUERY_SQL_WATERMARK_TEXT(at)                                                               \
    "to_char((" at ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define QUERY_SQL_WATERMARK QUERY_SQL_WATERMARK_TEXT(QUERY_SQL_WATERMARK_AT)

/* The first instant of local day `d` (SQL) in the zone $3: its midnight, or
 * where midnight comes twice (clocks back at 01:00, as in Atlantic/Azores and
 * America/Havana) the first one, which PostgreSQL would not take for an
 * ambiguous time: there the day's first hour is the hour query_local_day()
 * gives that day. */
#define QUERY_SQL_DAY_START(d)                                                                     \
    "least((" d ")::timestamp AT TIME ZONE $3::text, "                                             \
    "((" d ")::timestamp - interval '1 hour') AT TIME ZONE $3::text + interval '1 hour')"

/* The window in local days d0..d1 and as UTC instants [h0, h1): the first
 * instants of d0 and d1 + 1 in the zone $3 (QUERY_SQL_DAY_START); ud0..ud1
 * are the whole UTC days inside [h0, h1) (none when ud0 > ud1). "Today" is the
 * zone's today, computed by PostgreSQL. Every parameter is typed here so that
 * statements not using one still prepare. */
#define QUERY_SQL_DAYS                                                                             \
    "SELECT coalesce($1::date, CASE $4::text WHEN 'month' THEN date_trunc('month', t)::date "      \
    "WHEN '12mo' THEN (t - interval '12 months')::date + 1 "                                       \
    "ELSE t - coalesce($4::text, '30')::int + 1 END) AS d0, coalesce($2::date, t) AS d1 "          \
    "FROM (SELECT (now() AT TIME ZONE $3::text)::date AS t) n"
/* clang-format off */
#define QUERY_SQL_INSTANTS                                                                         \
    "SELECT d0, d1, "                                                                              \
    QUERY_SQL_DAY_START("d0") " AS h0, "                                                           \
    QUERY_SQL_DAY_START("d1 + 1") " AS h1, "                                                       \
    "$5::bigint AS sid, $6::bigint AS kc, $7::text AS dim, $8::int AS lim "                        \
    "FROM (" QUERY_SQL_DAYS ") x"
/* clang-format on */
#define QUERY_SQL_WINDOW                                                                           \
    "WITH w AS (SELECT y.*, ((h0 AT TIME ZONE 'UTC') + interval '1 day' - "                        \
    "interval '1 microsecond')::date AS ud0, (h1 AT TIME ZONE 'UTC')::date - 1 AS ud1 FROM "       \
    "(" QUERY_SQL_INSTANTS ") y)"

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

/* A split statement: x says whether the closed part ($9 .. $12) was computed
 * for this very window (the caller computed "today" itself; at midnight it may
 * disagree with PostgreSQL's) and where the open days start: after the last
 * closed day, or at the window's start when the part does not fit (then every
 * day is read here, and the caller sees from the window it gets back that it
 * must not merge the part). */
#define QUERY_SQL_SPLIT                                                                            \
    ", x AS (SELECT ok, CASE WHEN ok THEN $11::date + 1 ELSE d0 END AS od0 FROM ("                 \
    "SELECT w.d0, (w.d0 = $9::date AND w.d1 = $10::date) AS ok FROM w) y)"
/* Totals over the open rows, and uniques as one HLL union with the closed
 * days' sketch: one union over the whole window, as without a split. */
#define QUERY_SQL_TOTALS_SPLIT                                                                     \
    "t AS (SELECT coalesce(sum(v), 0)::bigint AS tv, "                                             \
    "coalesce(round(hll_cardinality(hll_union_agg(u))), 0)::bigint AS tu, sum(p)::bigint AS tp, "  \
    "sum(ds)::bigint AS tds, sum(dc)::bigint AS tdc FROM (SELECT v, u, p, ds, dc FROM s "          \
    "UNION ALL SELECT NULL, $12::hll, NULL, NULL, NULL FROM x WHERE x.ok) z)"
/* The closed part itself: one row, the days with rows and their counts as
 * arrays (uniques per day computed as QUERY_SQL_ITEM_COLS does), the union of
 * their sketches, and the watermark read in the same snapshot with whether it
 * is at or past the end of the rows read: h1 (the first instant after the
 * last closed day), or where that is not on the hour (a half-hour zone) the
 * end of the hour straddling it, which counts for the closed day. */
/* clang-format off */
#define QUERY_SQL_FILL                                                                             \
    ", m AS (SELECT " QUERY_SQL_WATERMARK_AT " AS at, "                                            \
    "date_trunc('hour', w.h1 + interval '1 hour' - interval '1 microsecond', 'UTC') AS e FROM w) " \
    "SELECT array_agg(to_char(b, 'YYYY-MM-DD') ORDER BY b)::text, "                                \
    "array_agg(v ORDER BY b)::text, "                                                              \
    "array_agg(coalesce(round(hll_cardinality(u)), 0)::bigint ORDER BY b)::text, "                 \
    "array_agg(p ORDER BY b)::text, array_agg(ds ORDER BY b)::text, "                              \
    "array_agg(dc ORDER BY b)::text, hll_union_agg(u)::text, "                                     \
    "(SELECT " QUERY_SQL_WATERMARK_TEXT("m.at") " FROM m), "                                       \
    "(SELECT coalesce(m.at >= m.e, false) FROM m) FROM s"
/* clang-format on */
/* Its columns: the six arrays, then these. */
#define QUERY_FILL_COL_SKETCH         6
#define QUERY_FILL_COL_COMPLETE_UNTIL 7
#define QUERY_FILL_COL_COMPLETE       8
#define QUERY_FILL_NCOLS              9

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
                           bool hourly, bool split)
{
    if (split && hourly) {
        /* The open local days' hours: from the local midnight starting od0. */
        strbuf_printf(
            sb,
            " FROM w, x, %s r WHERE r.hour >= " QUERY_SQL_DAY_START("x.od0") " AND r.hour < w.h1",
            query_source(spec, true));
    } else if (split) {
        strbuf_printf(sb, " FROM w, x, %s r WHERE r.day BETWEEN x.od0 AND w.d1",
                      query_source(spec, false));
    } else if (query_hybrid(spec)) {
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

static bool query_splittable(const struct query_spec *spec);

/* Fills `p` with $1 .. $8 of `spec`. */
static void query_put_params(const struct query_spec *spec, struct query_params *p)
{
    p->nparams = QUERY_NPARAMS;
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
}

static bool query_spec_valid(const struct query_spec *spec, const char *rel)
{
    if (spec->ep >= QUERY_EP_COUNT || !config_relation_valid(rel))
        return false;
    if (spec->scope != QUERY_SCOPE_ALL && spec->id <= 0)
        return false;
    if (spec->restricted && spec->company_id <= 0)
        return false;
    if (spec->ep == QUERY_EP_OVERVIEW && spec->scope != QUERY_SCOPE_ALL &&
        spec->scope != QUERY_SCOPE_COMPANY)
        return false;
    return true;
}

static int query_build_impl(const struct query_spec *spec, const char *rel,
                            const struct query_closed *cl, struct strbuf *sb,
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
    if (!query_spec_valid(spec, rel))
        return -EINVAL;
    if (cl && (!query_splittable(spec) || cl->last < cl->d0 || cl->last > cl->d1))
        return -EINVAL;

    strbuf_puts(sb, QUERY_SQL_WINDOW);
    if (cl)
        strbuf_puts(sb, QUERY_SQL_SPLIT);
    strbuf_puts(sb, ", s AS (SELECT ");
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
    query_put_from(sb, spec, rel, hourly, cl != NULL);
    if (items && !row_buckets)
        strbuf_puts(sb, " GROUP BY 1");
    strbuf_puts(sb, "), ");
    strbuf_puts(sb, cl ? QUERY_SQL_TOTALS_SPLIT : QUERY_SQL_TOTALS);

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
        if (cl)
            /* Only the open days: the caller adds the closed ones. */
            strbuf_puts(sb, "generate_series(x.od0::timestamp, w.d1::timestamp, "
                            "interval '1 day')::date AS b FROM w, x) g ");
        else {
            query_put_series(sb, iv);
            strbuf_puts(sb, " AS b FROM w) g ");
        }
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

    query_put_params(spec, p);
    if (cl) {
        timeutil_format_date(cl->d0, p->storage[8], sizeof(p->storage[8]));
        timeutil_format_date(cl->d1, p->storage[9], sizeof(p->storage[9]));
        timeutil_format_date(cl->last, p->storage[10], sizeof(p->storage[10]));
        for (int i = 0; i < 3; i++)
            p->params[8 + i] = p->storage[8 + i];
        p->params[11] = cl->sketch;
        p->nparams = QUERY_NPARAMS_MAX;
    }
    return 0;
}

int query_build(const struct query_spec *spec, const char *rel, struct strbuf *sb,
                struct query_params *p)
{
    return query_build_impl(spec, rel, NULL, sb, p);
}

int query_build_split(const struct query_spec *spec, const char *rel, const struct query_closed *c,
                      struct strbuf *sb, struct query_params *p)
{
    if (!c) {
        memset(p, 0, sizeof(*p));
        return -EINVAL;
    }
    return query_build_impl(spec, rel, c, sb, p);
}

/* Questions answered from per-company daily rows with day buckets or none:
 * their days can be split into closed and open ones. */
static bool query_splittable(const struct query_spec *spec)
{
    if (!query_company_level(spec))
        return false;
    switch (spec->ep) {
    case QUERY_EP_OVERVIEW:
    case QUERY_EP_ENTITY:
        /* Totals in other zones already read whole UTC days from daily rows. */
        return !query_uses_hourly(spec);
    case QUERY_EP_EXPORT:
        return true;
    case QUERY_EP_TIMESERIES:
        return spec->interval == QUERY_INTERVAL_DAY;
    default:
        return false;
    }
}

bool query_window_days(const struct query_window *w, int64_t today, int64_t *d0, int64_t *d1)
{
    int64_t y;
    unsigned m, d;

    if (w->explicit_range)
        return timeutil_parse_date(w->from, d0) && timeutil_parse_date(w->to, d1);
    *d1 = today;
    timeutil_civil_from_days(today, &y, &m, &d);
    if (strcmp(w->period, "month") == 0) {
        *d0 = timeutil_days_from_civil(y, m, 1);
    } else if (strcmp(w->period, "12mo") == 0) {
        /* today - 12 months (the day clamped to the month's length), plus a day. */
        int64_t first = timeutil_days_from_civil(y - 1, m, 1);
        int64_t next =
            m == 12 ? timeutil_days_from_civil(y, 1, 1) : timeutil_days_from_civil(y - 1, m + 1, 1);
        int64_t day = first + (int64_t)d - 1;
        *d0 = (day < next ? day : next - 1) + 1;
    } else {
        long n;
        if (!parse_long(w->period, 1, QUERY_MAX_DAYS_DAILY, &n))
            return false;
        *d0 = today - n + 1;
    }
    return true;
}

bool query_closed_window_tz(const struct query_spec *spec, int64_t today, int64_t zone_today,
                            struct query_closed *out)
{
    memset(out, 0, sizeof(*out));
    if (!query_splittable(spec) || !query_window_days(&spec->win, zone_today, &out->d0, &out->d1) ||
        out->d1 < out->d0)
        return false;
    if (spec->win.tz_utc) {
        out->last = today - QUERY_OPEN_DAYS;
    } else {
        /* A local day ends at most 14 h after the UTC day of the same date: one
         * more day keeps every closed local day before yesterday (UTC). */
        out->last = (zone_today < today ? zone_today : today) - QUERY_OPEN_DAYS - 1;
    }
    if (out->last > out->d1)
        out->last = out->d1;
    return out->last >= out->d0;
}

bool query_closed_window(const struct query_spec *spec, int64_t today, struct query_closed *out)
{
    return query_closed_window_tz(spec, today, today, out);
}

void query_closed_key(const struct query_spec *spec, const struct query_closed *c, char *out,
                      size_t outlen)
{
    snprintf(out, outlen, "closed|%d|%" PRId64 "|%" PRId64 "|%" PRId64 "|%" PRId64 "|%s",
             (int)spec->scope, spec->scope == QUERY_SCOPE_ALL ? (int64_t)0 : spec->id,
             spec->restricted ? spec->company_id : (int64_t)0, c->d0, c->last,
             spec->win.tz_utc ? "UTC" : spec->win.tz);
}

int query_build_fill(const struct query_spec *spec, const char *rel, const struct query_closed *c,
                     struct strbuf *sb, struct query_params *p)
{
    struct query_spec f = *spec;
    bool hourly, rows;

    memset(p, 0, sizeof(*p));
    if (!query_spec_valid(spec, rel) || !query_splittable(spec) || c->last < c->d0)
        return -EINVAL;
    /* The closed days as an explicit window in the zone, one bucket per day. */
    f.ep = QUERY_EP_TIMESERIES;
    f.interval = QUERY_INTERVAL_DAY;
    f.win.explicit_range = true;
    timeutil_format_date(c->d0, f.win.from, sizeof(f.win.from));
    timeutil_format_date(c->last, f.win.to, sizeof(f.win.to));
    f.win.period[0] = '\0';
    hourly = query_uses_hourly(&f);
    rows = f.scope == QUERY_SCOPE_COMPANY && !hourly;
    strbuf_puts(sb, QUERY_SQL_WINDOW ", s AS (SELECT ");
    query_put_bucket(sb, QUERY_INTERVAL_DAY, hourly);
    strbuf_puts(sb, " AS b, ");
    strbuf_puts(sb, rows ? QUERY_SQL_ROW : QUERY_SQL_AGG);
    query_put_from(sb, &f, rel, hourly, false);
    if (!rows)
        strbuf_puts(sb, " GROUP BY 1");
    strbuf_puts(sb, ")" QUERY_SQL_FILL);
    if (sb->oom)
        return -ENOMEM;
    query_put_params(&f, p);
    return 0;
}

/* Head of a packed closed part; the days follow, then the sketch text and a NUL. */
struct query_closed_head {
    uint64_t ndays;          /* struct query_closed_day that follow */
    struct query_counts sum; /* of every closed day */
    char complete_until[40]; /* as in struct query_closed */
    bool complete;
};

/* Parses a PostgreSQL array text of `n` integers or dates ("{1,2}", "{2026-03-01}";
 * "" for none) into out[i].day or the count at byte `off` of out[i]. */
static bool query_parse_array(const char *s, size_t n, struct query_closed_day *out, size_t off)
{
    size_t i = 0;

    if (*s == '\0')
        return n == 0;
    if (*s++ != '{')
        return false;
    while (i < n) {
        int64_t v = 0;
        size_t len = strcspn(s, ",}");
        char item[24];

        if (len == 0 || len >= sizeof(item))
            return false;
        memcpy(item, s, len);
        item[len] = '\0';
        if (off == offsetof(struct query_closed_day, day)) {
            if (!timeutil_parse_date(item, &v))
                return false;
        } else if (strcmp(item, "NULL") != 0) {
            char *end = NULL;
            errno = 0;
            long long ll = strtoll(item, &end, 10);
            if (errno != 0 || *end != '\0')
                return false;
            v = ll;
        }
        memcpy((char *)&out[i] + off, &v, sizeof(v));
        i++;
        s += len;
        if (*s == '}')
            break;
        s++;
    }
    return i == n && s[0] == '}' && s[1] == '\0';
}

static bool query_cell_text(const PGresult *res, int col, char *out, size_t outlen);

bool query_read_fill(const PGresult *res, struct strbuf *out)
{
    static const size_t offs[QUERY_FILL_COL_SKETCH] = {
        offsetof(struct query_closed_day, day),
        offsetof(struct query_closed_day, c.views),
        offsetof(struct query_closed_day, c.unique_sessions),
        offsetof(struct query_closed_day, c.video_plays),
        offsetof(struct query_closed_day, c.duration_sum),
        offsetof(struct query_closed_day, c.duration_count),
    };
    struct query_closed_head head = {0};
    struct query_closed_day *days = NULL;
    const char *daytext;
    bool ok = false;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != QUERY_FILL_NCOLS ||
        PQntuples(res) != 1 ||
        !query_cell_text(res, QUERY_FILL_COL_COMPLETE_UNTIL, head.complete_until,
                         sizeof(head.complete_until)))
        return false;
    head.complete = strcmp(PQgetvalue(res, 0, QUERY_FILL_COL_COMPLETE), "t") == 0;
    /* Elements: as many as commas plus one in the days array. */
    daytext = PQgetvalue(res, 0, 0);
    if (*daytext) {
        head.ndays = 1;
        for (const char *q = daytext; *q; q++)
            head.ndays += *q == ',';
    }
    days = calloc(head.ndays ? head.ndays : 1, sizeof(*days));
    if (!days)
        goto out;
    for (int i = 0; i < QUERY_FILL_COL_SKETCH; i++) {
        if (!query_parse_array(PQgetvalue(res, 0, i), head.ndays, days, offs[i]))
            goto out;
    }
    for (size_t i = 0; i < head.ndays; i++) {
        if (i > 0 && days[i].day <= days[i - 1].day)
            goto out;
        head.sum.views += days[i].c.views;
        head.sum.video_plays += days[i].c.video_plays;
        head.sum.duration_sum += days[i].c.duration_sum;
        head.sum.duration_count += days[i].c.duration_count;
    }
    strbuf_append(out, (const char *)&head, sizeof(head));
    strbuf_append(out, (const char *)days, head.ndays * sizeof(*days));
    strbuf_append(out, PQgetvalue(res, 0, QUERY_FILL_COL_SKETCH),
                  (size_t)PQgetlength(res, 0, QUERY_FILL_COL_SKETCH));
    strbuf_putc(out, '\0');
    ok = !out->oom;
out:
    free(days);
    return ok;
}

bool query_closed_load(struct query_closed *c, const char *body, size_t len)
{
    struct query_closed_head head;
    size_t days_len;

    query_closed_deinit(c);
    if (len < sizeof(head) + 1 || body[len - 1] != '\0')
        return false;
    memcpy(&head, body, sizeof(head));
    if (head.ndays > (len - sizeof(head) - 1) / sizeof(struct query_closed_day))
        return false;
    days_len = (size_t)head.ndays * sizeof(struct query_closed_day);
    c->days = malloc(days_len ? days_len : 1);
    if (!c->days)
        return false;
    memcpy(c->days, body + sizeof(head), days_len);
    c->ndays = (size_t)head.ndays;
    c->sum = head.sum;
    memcpy(c->complete_until, head.complete_until, sizeof(c->complete_until));
    c->complete_until[sizeof(c->complete_until) - 1] = '\0';
    c->complete = head.complete;
    if (body[sizeof(head) + days_len] != '\0') {
        c->sketch = strdup(body + sizeof(head) + days_len);
        if (!c->sketch) {
            query_closed_deinit(c);
            return false;
        }
    }
    return true;
}

void query_closed_deinit(struct query_closed *c)
{
    free(c->days);
    free(c->sketch);
    c->days = NULL;
    c->sketch = NULL;
    c->ndays = 0;
    memset(&c->sum, 0, sizeof(c->sum));
    c->complete_until[0] = '\0';
    c->complete = false;
}

bool query_merge_closed(struct query_result *r, const struct query_spec *spec,
                        const struct query_closed *c)
{
    char d0[11], d1[11];
    size_t nclosed, j = 0;
    struct query_row *rows;

    timeutil_format_date(c->d0, d0, sizeof(d0));
    timeutil_format_date(c->d1, d1, sizeof(d1));
    if (strcmp(r->from, d0) != 0 || strcmp(r->to, d1) != 0)
        return true; /* PostgreSQL read every day itself (see QUERY_SQL_SPLIT) */
    /* A part read while its days were still owed holds events only up to its
     * own watermark: the answer must claim no more. RFC 3339 strings of one
     * width (QUERY_SQL_WATERMARK_TEXT) compare as their instants. */
    if (!c->complete && (!c->complete_until[0] || strcmp(c->complete_until, r->complete_until) < 0))
        snprintf(r->complete_until, sizeof(r->complete_until), "%s", c->complete_until);
    r->total.views += c->sum.views;
    r->total.video_plays += c->sum.video_plays;
    r->total.duration_sum += c->sum.duration_sum;
    r->total.duration_count += c->sum.duration_count;
    if (spec->ep != QUERY_EP_TIMESERIES && spec->ep != QUERY_EP_EXPORT)
        return true;
    nclosed = (size_t)(c->last - c->d0 + 1);
    rows = calloc(nclosed + r->nrows, sizeof(*rows));
    r->keys = calloc(nclosed, sizeof(*r->keys));
    if (!rows || !r->keys) {
        free(rows);
        return false;
    }
    for (size_t i = 0; i < nclosed; i++) {
        int64_t day = c->d0 + (int64_t)i;
        timeutil_format_date(day, r->keys[i], sizeof(r->keys[i]));
        rows[i].key = r->keys[i];
        while (j < c->ndays && c->days[j].day < day)
            j++;
        if (j < c->ndays && c->days[j].day == day)
            rows[i].c = c->days[j].c;
    }
    memcpy(rows + nclosed, r->rows, r->nrows * sizeof(*rows));
    free(r->rows);
    r->rows = rows;
    r->nrows += nclosed;
    return true;
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
    bool null; /* every column may be NULL (read as 0) */

    return query_cell_i64(res, row, col, &c->views, &null) &&
           query_cell_i64(res, row, col + 1, &c->unique_sessions, &null) &&
           query_cell_i64(res, row, col + 2, &c->video_plays, &null) &&
           query_cell_i64(res, row, col + 3, &c->duration_sum, &null) &&
           query_cell_i64(res, row, col + 4, &c->duration_count, &null);
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
        row->key = PQgetvalue(res, i, QUERY_COL_KEY);
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
    free(r->keys);
    memset(r, 0, sizeof(*r));
}

double query_avg_duration(int64_t sum, int64_t count)
{
    if (count <= 0 || sum < 0)
        return 0.0;
    /* Rounded half up in integers: in binary floating point 1347 / 40 * 100
     * is 3367.4999..., which round() took down to 33.67. */
    unsigned __int128 hundredths =
        ((unsigned __int128)sum * 200 + (unsigned __int128)count) / ((unsigned __int128)count * 2);
    return (double)hundredths / 100.0;
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

/* The counts as JSON members; video plays and durations only with `plays`
 * (breakdowns have none). */
static void query_json_counts(struct strbuf *sb, const struct query_counts *c,
                              const char *views_name, bool plays)
{
    strbuf_printf(sb, "\"%s\":%" PRId64 ",\"unique_sessions\":%" PRId64, views_name, c->views,
                  c->unique_sessions);
    if (plays) {
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
        const char *key = r->rows[i].key;
        if (i > 0)
            strbuf_putc(sb, ',');
        strbuf_printf(sb, "{\"%s\":", key_name);
        if (key_is_number)
            strbuf_puts(sb, key);
        else
            strbuf_json_str(sb, key);
        strbuf_putc(sb, ',');
        query_json_counts(sb, &r->rows[i].c, "views", spec->ep != QUERY_EP_BREAKDOWN);
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
    const struct query_counts *total = &r->total;
    bool plays = spec->ep != QUERY_EP_BREAKDOWN;

    switch (spec->ep) {
    case QUERY_EP_OVERVIEW:
        strbuf_printf(sb,
                      "{\"total_views\":%" PRId64 ",\"unique_sessions\":%" PRId64
                      ",\"active_content\":%" PRId64,
                      total->views, total->unique_sessions, r->active_content);
        if (spec->restricted)
            strbuf_printf(sb, ",\"company_id\":%" PRId64, spec->company_id);
        break;
    case QUERY_EP_ENTITY:
        strbuf_printf(sb, "{\"%s\":%" PRId64 ",", id_field[spec->scope], spec->id);
        /* Every entity answer names its company (the seed API's did): a
         * project's or content's is the registry's, null when it names none
         * or several. */
        if (spec->scope == QUERY_SCOPE_PROJECT || spec->scope == QUERY_SCOPE_CONTENT) {
            if (r->owner_known && r->owner_min == r->owner_max)
                strbuf_printf(sb, "\"company_id\":%" PRId64 ",", r->owner_min);
            else
                strbuf_puts(sb, "\"company_id\":null,");
        }
        query_json_counts(sb, total, "views", plays);
        break;
    case QUERY_EP_TIMESERIES:
    case QUERY_EP_EXPORT:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"interval\":\"%s\",\"totals\":{",
                      query_interval_names[spec->ep == QUERY_EP_EXPORT ? QUERY_INTERVAL_DAY
                                                                       : spec->interval]);
        query_json_counts(sb, total, "views", plays);
        strbuf_putc(sb, '}');
        query_json_items(sb, spec, r, "points", "start", false);
        break;
    case QUERY_EP_TOP:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"by\":\"%s\",\"limit\":%u,\"totals\":{", query_by_names[spec->by],
                      spec->limit);
        query_json_counts(sb, total, "views", plays);
        strbuf_putc(sb, '}');
        query_json_items(sb, spec, r, "items", "id", true);
        break;
    case QUERY_EP_BREAKDOWN:
        strbuf_putc(sb, '{');
        query_json_scope(sb, spec);
        strbuf_printf(sb, ",\"dimension\":\"%s\",\"limit\":%u,\"days\":\"utc\",\"totals\":{",
                      query_dimension_names[spec->dim], spec->limit);
        query_json_counts(sb, total, "views", plays);
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
        query_csv_field(sb, r->rows[i].key);
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
