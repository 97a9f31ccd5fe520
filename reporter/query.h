/* The reporter's pure query logic: the reporting window, path ids, which rows a
 * key may read, the SQL (text + parameters) per scope, and the JSON answers. */
#ifndef ARV_REPORTER_QUERY_H
#define ARV_REPORTER_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

struct strbuf;

/* Seed-compatible window: the last 30 UTC days, today included. */
#define QUERY_WINDOW_DAYS 30
/* Relative standard error of the HLL sketches (log2m 12): 1.04 / sqrt(2^12). */
#define QUERY_UNIQUE_SESSIONS_ERROR "0.016"

enum query_scope {
    QUERY_SCOPE_ALL,     /* overview: every company (or the key's company) */
    QUERY_SCOPE_COMPANY, /* /companies/{id} */
    QUERY_SCOPE_PROJECT, /* /projects/{id} */
    QUERY_SCOPE_CONTENT  /* /ar-content/{id} */
};

/* Inclusive range of UTC days as "YYYY-MM-DD". */
struct query_period {
    char from[11]; /* first day */
    char to[11];   /* last day (today) */
};

/* What to count: a scope, its id, and the reader's restriction. */
struct query_spec {
    enum query_scope scope;
    int64_t id;         /* the company/project/content id; unused for QUERY_SCOPE_ALL */
    bool restricted;    /* a company key: only rows of `company_id` */
    int64_t company_id; /* the key's company when restricted */
    struct query_period period;
};

/* The SQL texts, built once for a content relation (see query_texts_init). */
enum query_variant {
    QUERY_VARIANT_ALL,
    QUERY_VARIANT_ALL_COMPANY, /* overview for a company key */
    QUERY_VARIANT_COMPANY,
    QUERY_VARIANT_PROJECT,
    QUERY_VARIANT_PROJECT_COMPANY, /* project, only a company key's rows */
    QUERY_VARIANT_CONTENT,
    QUERY_VARIANT_COUNT
};

struct query_texts {
    char *sql[QUERY_VARIANT_COUNT]; /* owned; freed by query_texts_deinit() */
};

#define QUERY_MAX_PARAMS 4

/* One statement ready for pg_pool_query(). `params` point into `storage`, so the
 * struct must not be copied once built. */
struct query_sql {
    const char *sql;                      /* borrowed from struct query_texts */
    int nparams;                          /* 2..QUERY_MAX_PARAMS */
    const char *params[QUERY_MAX_PARAMS]; /* text parameters */
    char storage[QUERY_MAX_PARAMS][24];   /* their bytes */
};

/* Result columns of the overview statement. */
enum query_overview_col {
    QUERY_OV_TOTAL_VIEWS,
    QUERY_OV_UNIQUE_SESSIONS,
    QUERY_OV_ACTIVE_CONTENT,
    QUERY_OV_COMPLETE_UNTIL,
    QUERY_OV_NCOLS
};

/* Result columns of the company/project/content statements. */
enum query_entity_col {
    QUERY_EN_OWNER_MIN, /* lowest company owning the project/content; NULL if unknown */
    QUERY_EN_OWNER_MAX, /* highest: equals OWNER_MIN when one company owns it */
    QUERY_EN_VIEWS,
    QUERY_EN_UNIQUE_SESSIONS,
    QUERY_EN_VIDEO_PLAYS,
    QUERY_EN_DURATION_SUM,
    QUERY_EN_DURATION_COUNT,
    QUERY_EN_COMPLETE_UNTIL,
    QUERY_EN_NCOLS
};

struct query_overview {
    int64_t total_views;
    int64_t unique_sessions;
    int64_t active_content;
    char complete_until[40]; /* RFC 3339, or "" when no live watermark */
};

struct query_entity {
    bool owner_known; /* the registry knows the project/content */
    int64_t owner_min, owner_max;
    int64_t views;
    int64_t unique_sessions;
    int64_t video_plays;
    int64_t duration_sum;
    int64_t duration_count;
    char complete_until[40]; /* RFC 3339, or "" when no live watermark */
};

/* Fills `out` with the `days` UTC days ending on the day of `now`. Returns false
 * if `days` is 0 or the date cannot be represented. */
bool query_period_last_days(time_t now, unsigned days, struct query_period *out);

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

/* True if `rel` is a safe relation name for SQL: identifier or schema.identifier
 * of [A-Za-z_][A-Za-z0-9_]*, at most 127 characters. */
bool query_relation_valid(const char *rel);

/* Builds every statement, reading content ownership from `content_relation`
 * (borrowed; must satisfy query_relation_valid). Returns 0, -EINVAL or -ENOMEM;
 * on failure query_texts_deinit() is still safe. */
int query_texts_init(struct query_texts *t, const char *content_relation);
void query_texts_deinit(struct query_texts *t);

/* Which statement answers `spec`. */
enum query_variant query_variant_of(const struct query_spec *spec);

/* Fills `out` with the statement and parameters for `spec` ($1 from, $2 to, $3
 * the scope id or the key's company, $4 the key's company). Returns 0 or -EINVAL. */
int query_build(const struct query_texts *t, const struct query_spec *spec, struct query_sql *out);

/* Authorisation known before querying: false when a company key asks for another
 * company. Projects and content need the owner: see query_owner_allowed(). */
bool query_scope_allowed(const struct query_spec *spec);

/* Authorisation after the query: an admin reads anything; a company key reads a
 * project or content only when the registry knows it and its company alone owns it. */
bool query_owner_allowed(const struct query_spec *spec, const struct query_entity *e);

/* Reads a one-row result of the matching statement (`res` borrowed). Returns
 * false if its shape is not the expected one. */
bool query_read_overview(const PGresult *res, struct query_overview *out);
bool query_read_entity(const PGresult *res, struct query_entity *out);

/* Appends the JSON answers to `sb`. The overview names `company_id` when restricted. */
void query_overview_json(struct strbuf *sb, const struct query_spec *spec,
                         const struct query_overview *o);
void query_entity_json(struct strbuf *sb, const struct query_spec *spec,
                       const struct query_entity *e);

/* Average duration rounded to 2 decimals; 0 when there is no duration. */
double query_avg_duration(int64_t sum, int64_t count);

/* True when a failed statement's SQLSTATE (may be NULL) is worth retrying: lost
 * connection, shutdown, timeout, resource shortage, serialization (503 rather than 500). */
bool query_sqlstate_retryable(const char *sqlstate);

#endif
