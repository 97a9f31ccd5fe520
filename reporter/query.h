/* The reporter's pure query logic: what a request asks (struct query_spec), the
 * SQL (text + parameters) that answers it from the rollups, which rows a key may
 * read, reading the result, and the JSON / CSV answers. */
#ifndef ARV_REPORTER_QUERY_H
#define ARV_REPORTER_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

struct strbuf;

/* Seed-compatible window: the last 30 days (in the request's zone), today included. */
#define QUERY_WINDOW_DAYS 30
/* Relative standard error of the HLL sketches (log2m 12): 1.04 / sqrt(2^12). */
#define QUERY_UNIQUE_SESSIONS_ERROR "0.016"
/* Longest windows: hourly rollups are kept 400 days; daily ones about 5 years. */
#define QUERY_MAX_DAYS_HOURLY 400
#define QUERY_MAX_DAYS_DAILY  1827
#define QUERY_TZ_MAX          64
#define QUERY_LIMIT_DEFAULT   10
#define QUERY_LIMIT_MAX       100

enum query_endpoint {
    QUERY_EP_OVERVIEW,   /* /overview: totals + active content */
    QUERY_EP_ENTITY,     /* /companies|projects|ar-content/{id}: totals */
    QUERY_EP_TIMESERIES, /* /timeseries: one point per bucket */
    QUERY_EP_TOP,        /* /top: the biggest contents, projects or companies */
    QUERY_EP_BREAKDOWN,  /* /breakdown: views per value of a dimension */
    QUERY_EP_EXPORT,     /* /export.csv: daily rows as CSV */
    QUERY_EP_COUNT
};

enum query_scope {
    QUERY_SCOPE_ALL,     /* every company (admin keys only) */
    QUERY_SCOPE_COMPANY, /* company:ID */
    QUERY_SCOPE_PROJECT, /* project:ID */
    QUERY_SCOPE_CONTENT  /* content:ID */
};

enum query_interval {
    QUERY_INTERVAL_HOUR,
    QUERY_INTERVAL_DAY,
    QUERY_INTERVAL_WEEK,
    QUERY_INTERVAL_MONTH
};

enum query_by { QUERY_BY_CONTENT, QUERY_BY_PROJECT, QUERY_BY_COMPANY };

enum query_dimension {
    QUERY_DIM_DEVICE_TYPE,
    QUERY_DIM_BROWSER,
    QUERY_DIM_OS,
    QUERY_DIM_COUNTRY,
    QUERY_DIM_CITY,
    QUERY_DIM_TRACKING_QUALITY,
    QUERY_DIM_COUNT
};

/* The reporting window as asked: explicit dates, or a period relative to today
 * in `tz` (PostgreSQL computes "today" so that it is the zone's today). */
struct query_window {
    bool explicit_range;       /* from/to given */
    char from[11];             /* YYYY-MM-DD when explicit_range */
    char to[11];               /* YYYY-MM-DD when explicit_range */
    char period[6];            /* "7", "30", "90", "month" or "12mo" otherwise */
    char tz[QUERY_TZ_MAX + 1]; /* IANA name, validated */
    bool tz_utc;               /* the zone's days are UTC days: daily rollups serve */
};

/* What to count, for whom. */
struct query_spec {
    enum query_endpoint ep;
    enum query_scope scope;
    int64_t id;         /* company/project/content id; unused for QUERY_SCOPE_ALL */
    bool restricted;    /* a company key: only rows of `company_id` */
    int64_t company_id; /* the key's company when restricted */
    struct query_window win;
    enum query_interval interval; /* timeseries (export: always day) */
    enum query_by by;             /* top */
    enum query_dimension dim;     /* breakdown */
    unsigned limit;               /* top, breakdown: rows at most */
};

#define QUERY_NPARAMS 8
/* A statement reusing a closed part (query_build_split) has 4 more: $9 .. $11
 * the window and last closed day the part was computed for, $12 its sketch. */
#define QUERY_NPARAMS_MAX 12

/* The parameters of a built statement: `nparams` of them. `params` point into
 * `storage`, or into a borrowed struct query_closed (or are NULL for SQL NULL),
 * so the struct must not be copied once built. */
struct query_params {
    int nparams;
    const char *params[QUERY_NPARAMS_MAX];
    char storage[QUERY_NPARAMS + 3][QUERY_TZ_MAX + 1];
};

/* UTC days of a window that are this many days or more before today are
 * "closed": their rollups change only through late events (see docs/reporter.md). */
#define QUERY_OPEN_DAYS 2

/* Columns of every statement. Row 0 carries the meta and totals columns; rows
 * whose QUERY_COL_KEY is not NULL are the answer's items/points. */
enum query_col {
    QUERY_COL_OWNER_MIN, /* lowest company owning the project/content; NULL if unknown */
    QUERY_COL_OWNER_MAX, /* highest: equals OWNER_MIN when one company owns it */
    QUERY_COL_COMPLETE_UNTIL,
    QUERY_COL_FROM, /* first local day of the window */
    QUERY_COL_TO,   /* last local day */
    QUERY_COL_T_VIEWS,
    QUERY_COL_T_UNIQUE,
    QUERY_COL_T_PLAYS, /* NULL for breakdowns */
    QUERY_COL_T_DSUM,
    QUERY_COL_T_DCOUNT,
    QUERY_COL_T_ACTIVE, /* overview only */
    QUERY_COL_KEY,      /* bucket label, id, or dimension value */
    QUERY_COL_VIEWS,
    QUERY_COL_UNIQUE,
    QUERY_COL_PLAYS,
    QUERY_COL_DSUM,
    QUERY_COL_DCOUNT,
    QUERY_NCOLS
};

struct query_counts {
    int64_t views;
    int64_t unique_sessions;
    int64_t video_plays;
    int64_t duration_sum;
    int64_t duration_count;
};

struct query_row {
    const char *key; /* borrowed from the PGresult, or from `keys` */
    struct query_counts c;
};

/* One closed day with rollup rows. */
struct query_closed_day {
    int64_t day; /* days since 1970-01-01 */
    struct query_counts c;
};

/* The closed part of a window: its UTC days d0 .. last. Daily rollups of such
 * days are read once (query_build_fill) with the watermark, kept by the caller
 * when that watermark says they were complete, and merged into later answers
 * (query_build_split, query_merge_closed), whose statements then read only the
 * open days. */
struct query_closed {
    int64_t d0;                    /* the window's first day (days since 1970-01-01) */
    int64_t d1;                    /* its last day */
    int64_t last;                  /* last closed day: d0 <= last <= d1 */
    struct query_counts sum;       /* of every closed day (unique_sessions unused) */
    size_t ndays;                  /* days with rows */
    struct query_closed_day *days; /* owned: ascending */
    char *sketch;                  /* owned: hll text of their union; NULL: no rows */
    char complete_until[40];       /* watermark read with the days (RFC 3339); "": none */
    bool complete;                 /* it was at or past their end: nothing of them was owed */
};

/* A read result. `rows` and `keys` are owned (query_result_deinit). */
struct query_result {
    bool owner_known; /* the registry knows the project/content */
    int64_t owner_min, owner_max;
    char complete_until[40]; /* RFC 3339, or "" when no live watermark */
    char from[11], to[11];   /* the window actually used (local days) */
    struct query_counts total;
    int64_t active_content;
    size_t nrows;
    /* Owned; each row's key points into `keys` or into the PGresult (valid only
     * while it is). */
    struct query_row *rows;
    char (*keys)[11]; /* owned: keys of closed days merged in */
};

/* Parses a decimal id (digits only, 1 .. INT64_MAX) of `len` bytes. */
bool query_parse_id(const char *s, size_t len, int64_t *out);

enum query_path_result {
    QUERY_PATH_OK,       /* *out holds the id */
    QUERY_PATH_INVALID,  /* one segment that is not an id: 400 */
    QUERY_PATH_NOT_FOUND /* empty, or more than one segment: 404 */
};

/* Splits `path` (raw, without query) after `prefix` ("/api/analytics/companies/")
 * and parses the id segment. */
enum query_path_result query_path_id(const char *path, const char *prefix, int64_t *out);

/* True when the spec is served from hourly rollups: an hour interval, or a zone
 * whose days are not UTC days. Breakdowns always read daily (UTC) rollups. */
bool query_uses_hourly(const struct query_spec *spec);

/* The days d0..d1 (since 1970-01-01) of window `w` as PostgreSQL computes them
 * (QUERY_SQL_WINDOW) in a zone whose today is `today`. Returns false when its
 * dates or period do not parse. Pure. */
bool query_window_days(const struct query_window *w, int64_t today, int64_t *d0, int64_t *d1);

/* Appends the statement answering `spec` to `sql` and fills `p` ($1 from, $2 to,
 * $3 tz, $4 period, $5 scope id, $6 the key's company, $7 dimension, $8 limit).
 * `rel` (borrowed) is the content registry relation (config_relation_valid).
 * Returns 0 or -EINVAL. Pure. */
int query_build(const struct query_spec *spec, const char *rel, struct strbuf *sql,
                struct query_params *p);

/* True and `out` filled (days, sketch: none; overwritten, not freed) when
 * `spec` can reuse a closed part: a company-level question (overview and
 * company totals in UTC, daily timeseries and export in any zone) whose
 * window, computed here from `today` (UTC days since 1970-01-01), has days
 * before today - QUERY_OPEN_DAYS + 1. Should
 * PostgreSQL's today differ from `today` (midnight), the split statement sees
 * it and reads every day itself. Pure. */
bool query_closed_window(const struct query_spec *spec, int64_t today, struct query_closed *out);

/* query_closed_window() for zones other than UTC, whose today the caller
 * believes is `zone_today` (UTC `today` is a fine guess: a wrong one only makes
 * PostgreSQL read every day). Their closed days end one day earlier. */
bool query_closed_window_tz(const struct query_spec *spec, int64_t today, int64_t zone_today,
                            struct query_closed *out);

/* Writes the key of the closed part `c` of `spec` (what it depends on: scope,
 * reader, days) into `out`. */
void query_closed_key(const struct query_spec *spec, const struct query_closed *c, char *out,
                      size_t outlen);

/* Appends the statement computing the closed part `c` of `spec` (one row: day,
 * views, uniques, plays, duration sum and count as arrays, then the union
 * sketch, the watermark of the same snapshot and whether it is at or past the
 * end of those days) and fills `p`. Returns 0 or -EINVAL. Pure. */
int query_build_fill(const struct query_spec *spec, const char *rel, const struct query_closed *c,
                     struct strbuf *sql, struct query_params *p);

/* Packs a fill statement's result (`res` borrowed) into `out`: a byte string
 * for query_closed_load(). Returns false if its shape is not the expected one. */
bool query_read_fill(const PGresult *res, struct strbuf *out);

/* Loads a packed closed part (`body`, `len` bytes, borrowed) into c->sum, days,
 * sketch (owned: query_closed_deinit), complete_until and complete. Returns
 * false if it is not one. Only a complete part may be kept for later answers. */
bool query_closed_load(struct query_closed *c, const char *body, size_t len);
void query_closed_deinit(struct query_closed *c);

/* query_build() for a spec whose closed part `c` (borrowed, loaded) is known:
 * the statement reads rollups of the open days only, and its totals' uniques
 * are one union with c->sketch. query_merge_closed() completes its result. */
int query_build_split(const struct query_spec *spec, const char *rel, const struct query_closed *c,
                      struct strbuf *sql, struct query_params *p);

/* Completes a split statement's result `r` with the closed part `c`: totals,
 * and for timeseries and exports one point per closed day (zeros where no
 * rows) before the open ones; when `c` is not complete (read while some of its
 * days were still owed), r->complete_until becomes the older of the two
 * watermarks ("" when either is), so that the answer claims no more than its
 * closed days hold. A no-op when PostgreSQL's window was not c's (it then read
 * every day itself). Returns false when out of memory. */
bool query_merge_closed(struct query_result *r, const struct query_spec *spec,
                        const struct query_closed *c);

/* Authorisation known before querying: false when a company key asks for another
 * company or for every company. Projects and content need the owner. */
bool query_scope_allowed(const struct query_spec *spec);

/* Authorisation after the query: an admin reads anything; a company key reads a
 * project or content only when the registry knows it and its company alone owns it. */
bool query_owner_allowed(const struct query_spec *spec, const struct query_result *r);

/* Reads a result of query_build()'s statement (`res` borrowed). Returns false
 * if its shape is not the expected one (then `out` is deinitialised). */
bool query_read(const PGresult *res, struct query_result *out);
void query_result_deinit(struct query_result *r);

/* Appends the JSON answer (any endpoint but export) to `sb`. */
void query_json(struct strbuf *sb, const struct query_spec *spec, const struct query_result *r);

/* Appends the CSV answer of an export: a header line, then one line per day. */
void query_csv(struct strbuf *sb, const struct query_spec *spec, const struct query_result *r);

/* Appends `s` as one CSV field (RFC 4180): quoted, with quotes doubled, when it
 * holds a comma, quote, CR or LF, or starts/ends with a space. */
void query_csv_field(struct strbuf *sb, const char *s);

/* Writes "company:7" etc. (or "all") into `out`. */
void query_scope_name(const struct query_spec *spec, char *out, size_t outlen);

/* Average duration rounded to 2 decimals; 0 when there is no duration. */
double query_avg_duration(int64_t sum, int64_t count);

/* Names used in parameters and answers. */
const char *query_interval_name(enum query_interval i);
const char *query_by_name(enum query_by b);
const char *query_dimension_name(enum query_dimension d);

/* True when a failed statement's SQLSTATE (may be NULL) is worth retrying: lost
 * connection, shutdown, timeout, resource shortage, serialization (503 rather than 500). */
bool query_sqlstate_retryable(const char *sqlstate);

#endif
