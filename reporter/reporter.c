/* arv-reporter's application: the analytics routes, each request answered exactly
 * once: auth, rate limit, parameters, answer cache, else one rollup statement on
 * the PostgreSQL pool; and the dashboard page (dashboard.c). */
#include "reporter.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "auth.h"
#include "dashboard.h"
#include "health.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "params.h"
#include "pg_pool.h"
#include "qcache.h"
#include "query.h"
#include "client_ip.h"
#include "rate_limit.h"
#include "service.h"
#include "strbuf.h"
#include "timeutil.h"

#define REPORTER_DEFAULT_LISTEN   "0.0.0.0:8083"
#define REPORTER_WWW_AUTH         "Bearer realm=\"arv-reporter\""
#define REPORTER_WWW_AUTH_INVALID "Bearer realm=\"arv-reporter\", error=\"invalid_token\""

const struct config_option reporter_options[] = {
    CONFIG_BASE_OPTIONS(struct reporter_config, REPORTER_DEFAULT_LISTEN),
    CONFIG_DATABASE_OPTIONS(struct reporter_config),
    {"db-pool-size", "ARV_DB_POOL_SIZE", CONFIG_INT, offsetof(struct reporter_config, db_pool_size),
     "4", NULL, 1, 256, "PostgreSQL connections in the query pool"},
    {"db-queue-timeout-ms", "ARV_DB_QUEUE_TIMEOUT_MS", CONFIG_INT,
     offsetof(struct reporter_config, db_queue_timeout_ms), "2000", NULL, 1, 60000,
     "longest a query waits for a free connection before a 503"},
    {"auth-cache-ttl", "ARV_AUTH_CACHE_TTL", CONFIG_INT,
     offsetof(struct reporter_config, auth_cache_ttl_s), "30", NULL, 0, 3600,
     "seconds an API key lookup is reused (revocation takes effect within it)"},
    {"auth-lookup-rps", "ARV_AUTH_LOOKUP_RPS", CONFIG_INT,
     offsetof(struct reporter_config, auth_lookup_rps), "20", NULL, 0, 1000000,
     "API keys not in the cache looked up per second per client address (token bucket"
     " refill; past it 429 without a lookup); 0 disables the limit"},
    {"auth-lookup-burst", "ARV_AUTH_LOOKUP_BURST", CONFIG_INT,
     offsetof(struct reporter_config, auth_lookup_burst), "100", NULL, 1, 10000000,
     "API keys not in the cache a client address may have looked up at once"},
    CONFIG_TRUSTED_PROXIES_OPTION(struct reporter_config),
    {"content-relation", "ARV_CONTENT_RELATION", CONFIG_STRING,
     offsetof(struct reporter_config, content_relation), "analytics.ar_content", NULL, 0, 0,
     "table or view mapping content to project and company (id, project_id, company_id)"},
    {"rate-limit-rps", "ARV_REPORTER_RATE_LIMIT_RPS", CONFIG_INT,
     offsetof(struct reporter_config, rate_limit_rps), "50", NULL, 0, 1000000,
     "requests per second per API key (token bucket refill); 0 disables the limit"},
    {"rate-limit-burst", "ARV_REPORTER_RATE_LIMIT_BURST", CONFIG_INT,
     offsetof(struct reporter_config, rate_limit_burst), "100", NULL, 1, 10000000,
     "requests an API key may send at once (token bucket size)"},
    {"query-cache-ttl-ms", "ARV_QUERY_CACHE_TTL_MS", CONFIG_INT,
     offsetof(struct reporter_config, query_cache_ttl_ms), "1000", NULL, 0, 60000,
     "milliseconds an identical query (same key scope) is answered from memory; 0 disables"},
    {"query-cache-entries", "ARV_QUERY_CACHE_ENTRIES", CONFIG_INT,
     offsetof(struct reporter_config, query_cache_entries), "1024", NULL, 4, 1000000,
     "answers the query cache holds at most (each at most 256 KiB)"},
    {"query-closed-ttl-ms", "ARV_QUERY_CLOSED_TTL_MS", CONFIG_INT,
     offsetof(struct reporter_config, query_closed_ttl_ms), "300000", NULL, 0, 86400000,
     "milliseconds the rollups of closed days (UTC days before yesterday) are reused by "
     "company-level daily questions; late changes to such days show within it; 0: none"},
    {"zoneinfo-dir", "ARV_ZONEINFO_DIR", CONFIG_STRING,
     offsetof(struct reporter_config, zoneinfo_dir), "/usr/share/zoneinfo", NULL, 0, 0,
     "IANA time zone files the tz parameter is checked against"},
    {"query-timeout-ms", "ARV_QUERY_TIMEOUT_MS", CONFIG_INT,
     offsetof(struct reporter_config, query_timeout_ms), "5000", NULL, 0, 600000,
     "PostgreSQL statement_timeout of the reporter's queries: one running longer (a lock held,"
     " a slow server) is cancelled and answered 503; one still unanswered 1 s later (a hung"
     " server) has its connection closed and is answered 503 too; 0: none"},
    {"hourly-retention-days", "ARV_HOURLY_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct reporter_config, hourly_retention_days), CONFIG_HOURLY_RETENTION_DAYS_DEFAULT,
     NULL, 1, 100000,
     "the aggregators' hourly retention: a window that needs hourly rollups (interval=hour, a tz"
     " other than UTC) must not reach back before it"},
};
const size_t reporter_options_len = sizeof(reporter_options) / sizeof(reporter_options[0]);

enum reporter_endpoint {
    REPORTER_EP_OVERVIEW,
    REPORTER_EP_COMPANY,
    REPORTER_EP_PROJECT,
    REPORTER_EP_CONTENT,
    REPORTER_EP_TIMESERIES,
    REPORTER_EP_TOP,
    REPORTER_EP_BREAKDOWN,
    REPORTER_EP_EXPORT,
    REPORTER_EP_COUNT
};

enum reporter_outcome {
    REPORTER_OUT_OK,
    REPORTER_OUT_UNAUTHORIZED,
    REPORTER_OUT_FORBIDDEN,
    REPORTER_OUT_INVALID,
    REPORTER_OUT_RATE_LIMITED,
    REPORTER_OUT_DB_UNAVAILABLE,
    REPORTER_OUT_DB_ERROR,
    REPORTER_OUT_COUNT
};

static const char *const reporter_endpoint_names[REPORTER_EP_COUNT] = {
    "overview", "company", "project", "ar_content", "timeseries", "top", "breakdown", "export"};
static const char *const reporter_endpoint_paths[REPORTER_EP_COUNT] = {
    "/api/analytics/overview",    "/api/analytics/companies/", "/api/analytics/projects/",
    "/api/analytics/ar-content/", "/api/analytics/timeseries", "/api/analytics/top",
    "/api/analytics/breakdown",   "/api/analytics/export.csv"};
/* Scope of the routes whose path names it; the others read the scope parameter. */
static const enum query_scope reporter_endpoint_scopes[REPORTER_EP_COUNT] = {
    QUERY_SCOPE_ALL, QUERY_SCOPE_COMPANY, QUERY_SCOPE_PROJECT, QUERY_SCOPE_CONTENT};
static const enum query_endpoint reporter_endpoint_kinds[REPORTER_EP_COUNT] = {
    QUERY_EP_OVERVIEW,   QUERY_EP_ENTITY, QUERY_EP_ENTITY,    QUERY_EP_ENTITY,
    QUERY_EP_TIMESERIES, QUERY_EP_TOP,    QUERY_EP_BREAKDOWN, QUERY_EP_EXPORT};
static const char *const reporter_outcome_names[REPORTER_OUT_COUNT] = {
    "ok", "unauthorized", "forbidden", "invalid", "rate_limited", "db_unavailable", "db_error"};

/* reporter_auth_failures_total{reason}: the 401 causes, then scope refusals (403). */
enum reporter_auth_failure {
    REPORTER_AUTH_MISSING,
    REPORTER_AUTH_MALFORMED,
    REPORTER_AUTH_UNKNOWN,
    REPORTER_AUTH_REVOKED,
    REPORTER_AUTH_FORBIDDEN,
    REPORTER_AUTH_FAILURE_COUNT
};
static const char *const reporter_auth_failure_names[REPORTER_AUTH_FAILURE_COUNT] = {
    "missing", "malformed", "unknown", "revoked", "forbidden"};

struct reporter;

#define REPORTER_TZ_SLOTS     64
#define REPORTER_TZ_DAY_TTL   60000
#define REPORTER_STOP_GRACE_S 2 /* before the stop deadline: what waits on PostgreSQL gets 503 */

/* A zone's today as PostgreSQL last answered it, relative to the UTC today. */
struct reporter_tz_day {
    char tz[QUERY_TZ_MAX + 1]; /* the zone's name; "" for a free slot */
    int delta;                 /* zone's today minus UTC today: -1, 0 or 1 */
    uint64_t at_ms;            /* when it was learnt (monotonic) */
};

/* The argument of one route: which endpoint it is. */
struct reporter_route {
    struct reporter *r;        /* owner */
    enum reporter_endpoint ep; /* what the route answers */
};

struct reporter {
    struct service *svc;                               /* borrowed */
    const struct reporter_config *cfg;                 /* borrowed */
    struct pg_pool *pool;                              /* owned */
    struct auth *auth;                                 /* owned */
    struct rate_limit *ratelimit;                      /* owned; NULL: no limit */
    struct client_ip_trust trust;                      /* ARV_TRUSTED_PROXIES */
    struct qcache *cache;                              /* owned */
    struct qcache *closed;                             /* owned: closed parts (query_closed) */
    struct reporter_tz_day tz_days[REPORTER_TZ_SLOTS]; /* for closed parts in other zones */
    bool closing;                                      /* past stop grace or freeing: no query */
    struct reporter_route routes[REPORTER_EP_COUNT];   /* route arguments */
    struct dashboard dashboard;                        /* GET /dashboard: the page, its CSP */
    struct metric *queries[REPORTER_EP_COUNT][REPORTER_OUT_COUNT]; /* reporter_queries_total */
    struct metric *duration[REPORTER_EP_COUNT];                /* reporter_query_duration_seconds */
    struct metric *auth_failures[REPORTER_AUTH_FAILURE_COUNT]; /* reporter_auth_failures_total */
    struct metric *cache_hit;   /* reporter_query_cache_lookups_total{result="hit"} */
    struct metric *cache_miss;  /* ...{result="miss"} */
    struct metric *closed_hit;  /* reporter_closed_cache_lookups_total{result="hit"} */
    struct metric *closed_miss; /* ...{result="miss"} */
};

/* One request between its arrival and its answer. */
struct reporter_call {
    struct reporter *r;              /* borrowed */
    struct http_request *req;        /* answered exactly once, then NULL */
    enum reporter_endpoint ep;       /* which route */
    struct auth_principal principal; /* the key's scope, once authenticated */
    struct query_spec spec;          /* what is counted */
    char cache_key[QCACHE_KEY_MAX];  /* normalised query + reader scope */
    struct query_closed closed;      /* the window's closed days (owned parts) */
    bool split;                      /* the statement is query_build_split()'s */
    char closed_key[QCACHE_KEY_MAX]; /* their key in the closed-part cache */
    double query_started;            /* first statement sent (timeutil_mono_s) */
};

bool reporter_config_validate(const void *cfgp, char *err, size_t errlen)
{
    const struct reporter_config *cfg = cfgp;

    if (!config_check_urls(&cfg->common, false, 0, true, err, errlen))
        return false;
    if (!config_relation_valid(cfg->content_relation)) {
        snprintf(err, errlen,
                 "ARV_CONTENT_RELATION must be a plain [schema.]name of letters, digits and "
                 "underscores, got '%s'",
                 cfg->content_relation ? cfg->content_relation : "");
        return false;
    }
    struct client_ip_trust trust;
    if (!client_ip_parse_trust(cfg->trusted_proxies, &trust, err, errlen))
        return false;
    /* Every tz is checked against these files; without them even UTC is a 400. */
    char utc[4096];
    snprintf(utc, sizeof(utc), "%s/UTC", cfg->zoneinfo_dir ? cfg->zoneinfo_dir : "");
    return config_check_readable("ARV_ZONEINFO_DIR", utc, err, errlen);
}

static void reporter_call_end(struct reporter_call *call, enum reporter_outcome outcome)
{
    metric_inc(call->r->queries[call->ep][outcome]);
    query_closed_deinit(&call->closed);
    call->req = NULL;
    free(call);
}

static void reporter_fail(struct reporter_call *call, int status, enum reporter_outcome outcome,
                          const char *code, const char *field, const char *message)
{
    http_request_add_header(call->req, "Cache-Control", "no-store");
    if (status == 503)
        http_request_add_header(call->req, "Retry-After", "1");
    http_respond_error(call->req, status, code, field, message);
    reporter_call_end(call, outcome);
}

static void reporter_unauthorized(struct reporter_call *call, enum auth_status st)
{
    enum reporter_auth_failure reason = REPORTER_AUTH_UNKNOWN;
    const char *message = "the API key is not valid";

    if (st == AUTH_MISSING) {
        reason = REPORTER_AUTH_MISSING;
        message = "a valid API key is required: Authorization: Bearer <key>";
    } else if (st == AUTH_MALFORMED) {
        reason = REPORTER_AUTH_MALFORMED;
    } else if (st == AUTH_REVOKED) {
        reason = REPORTER_AUTH_REVOKED;
        message = "the API key has been revoked";
    }
    metric_inc(call->r->auth_failures[reason]);
    /* RFC 6750: name the error only when a token was presented. */
    http_request_add_header(call->req, "WWW-Authenticate",
                            st == AUTH_MISSING ? REPORTER_WWW_AUTH : REPORTER_WWW_AUTH_INVALID);
    reporter_fail(call, 401, REPORTER_OUT_UNAUTHORIZED, "unauthorized", NULL, message);
}

static void reporter_forbidden(struct reporter_call *call)
{
    metric_inc(call->r->auth_failures[REPORTER_AUTH_FORBIDDEN]);
    reporter_fail(call, 403, REPORTER_OUT_FORBIDDEN, "forbidden", NULL,
                  "this API key may not read this company's analytics");
}

static void reporter_db_unavailable(struct reporter_call *call)
{
    reporter_fail(call, 503, REPORTER_OUT_DB_UNAVAILABLE, "database_unavailable", NULL,
                  "the analytics database is unavailable; retry shortly");
}

/* Logs why the query failed (`error`) and answers 500 with `message`. */
static void reporter_query_failed(struct reporter_call *call, const char *error,
                                  const char *message)
{
    log_error("reporter_query_failed", LF_STR("endpoint", reporter_endpoint_names[call->ep]),
              LF_STR("error", error));
    reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL, message);
}

/* Sends a rendered answer (JSON, or CSV for the export). */
static void reporter_answer(struct reporter_call *call, const char *body, size_t len, bool csv,
                            const char *complete_until)
{
    http_request_add_header(call->req, "Cache-Control", "no-store");
    if (csv) {
        http_request_add_header(call->req, "Content-Disposition",
                                "attachment; filename=\"arv-export.csv\"");
        /* CSV has no place for it in the body: freshness travels as a header. */
        http_request_add_header(call->req, "X-Data-Complete-Until",
                                complete_until && complete_until[0] ? complete_until : "null");
        http_respond(call->req, 200, "text/csv; charset=utf-8", body, len);
    } else {
        http_respond(call->req, 200, "application/json", body, len);
    }
    reporter_call_end(call, REPORTER_OUT_OK);
}

static struct reporter_tz_day *reporter_tz_slot(struct reporter *r, const char *tz)
{
    return &r->tz_days[strbuf_fnv1a(tz, strlen(tz)) % REPORTER_TZ_SLOTS];
}

/* The zone's today as last seen (UTC today when unknown or old): only a guess
 * for query_closed_window_tz(), which PostgreSQL checks. */
static int64_t reporter_zone_today(struct reporter *r, const char *tz, int64_t today)
{
    const struct reporter_tz_day *d = reporter_tz_slot(r, tz);

    if (strcmp(d->tz, tz) == 0 && timeutil_mono_ms() - d->at_ms < REPORTER_TZ_DAY_TTL)
        return today + d->delta;
    return today;
}

/* Learns a zone's today from an answer over a period (whose last day is today). */
static void reporter_zone_learn(struct reporter *r, const struct query_spec *spec,
                                const struct query_result *qr)
{
    int64_t to, today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
    struct reporter_tz_day *d;

    if (spec->win.explicit_range || spec->win.tz_utc || !timeutil_parse_date(qr->to, &to) ||
        to < today - 1 || to > today + 1)
        return;
    d = reporter_tz_slot(r, spec->win.tz);
    snprintf(d->tz, sizeof(d->tz), "%s", spec->win.tz);
    d->delta = (int)(to - today);
    d->at_ms = timeutil_mono_ms();
}

static void reporter_query_done(void *arg, const PGresult *res, const char *errstr)
{
    struct reporter_call *call = arg;
    struct reporter *r = call->r;
    struct query_result qr;
    struct strbuf sb;
    bool csv = call->spec.ep == QUERY_EP_EXPORT;
    bool merged;

    metric_observe(r->duration[call->ep], timeutil_mono_s() - call->query_started);
    if (!res) {
        /* The pool logs its outages; a per-request line would only repeat it. */
        log_debug("reporter_query_unavailable",
                  LF_STR("endpoint", reporter_endpoint_names[call->ep]), LF_STR("error", errstr));
        reporter_db_unavailable(call);
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "22023") == 0) {
            /* A zone file PostgreSQL's own time zone data does not have. */
            reporter_fail(call, 400, REPORTER_OUT_INVALID, "invalid_parameter", "tz",
                          "tz is not a time zone PostgreSQL knows");
            return;
        }
        /* A statement cancelled by its timeout, a server shutting down: the
         * client gets 503 and retries; only a failure retrying will not fix
         * is an error. */
        bool retry = query_sqlstate_retryable(state);
        LOG_AT_(retry ? LOG_LEVEL_WARN : LOG_LEVEL_ERROR, "reporter_query_failed",
                LF_STR("endpoint", reporter_endpoint_names[call->ep]), LF_STR("sqlstate", state),
                LF_STR("error", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)));
        if (retry)
            reporter_db_unavailable(call);
        else
            reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL,
                          "the analytics query failed");
        return;
    }
    if (!query_read(res, &qr)) {
        reporter_query_failed(call, "unexpected result shape", "the analytics query failed");
        return;
    }
    if (!query_owner_allowed(&call->spec, &qr)) {
        query_result_deinit(&qr);
        reporter_forbidden(call);
        return;
    }
    reporter_zone_learn(r, &call->spec, &qr);
    strbuf_init(&sb);
    merged = !call->split || query_merge_closed(&qr, &call->spec, &call->closed);
    if (merged && csv)
        query_csv(&sb, &call->spec, &qr);
    else if (merged)
        query_json(&sb, &call->spec, &qr);
    if (!merged || sb.oom || !sb.data) {
        strbuf_deinit(&sb);
        query_result_deinit(&qr);
        reporter_query_failed(call, "out of memory", "the analytics query failed");
        return;
    }
    qcache_put(r->cache, call->cache_key, timeutil_mono_ms(), sb.data, sb.len, csv,
               qr.complete_until);
    reporter_answer(call, sb.data, sb.len, csv, qr.complete_until);
    strbuf_deinit(&sb);
    query_result_deinit(&qr);
}

/* params_get_fn over the request's query string. */
static enum params_found reporter_param(void *arg, const char *name, char *out, size_t outlen)
{
    int found = http_request_query_param(arg, name, out, outlen);

    return found > 0 ? PARAMS_PRESENT : found < 0 ? PARAMS_TOO_LONG : PARAMS_ABSENT;
}

/* The cache key: everything the answer depends on, normalised, and who reads. */
static void reporter_cache_key(const struct query_spec *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%d|%d|%" PRId64 "|%" PRId64 "|%s|%s|%s|%s|%d|%d|%d|%u", (int)s->ep,
             (int)s->scope, s->id, s->restricted ? s->company_id : (int64_t)0,
             s->win.explicit_range ? s->win.from : "", s->win.explicit_range ? s->win.to : "",
             s->win.explicit_range ? "" : s->win.period, s->win.tz, (int)s->interval, (int)s->by,
             (int)s->dim, s->limit);
}

/* Each distinct statement text is prepared once per connection under a name
 * derived from it (FNV-1a 64): a few hundred shapes at most. */
static void reporter_statement_name(const char *sql, char *out, size_t outlen)
{
    uint64_t h = 1469598103934665603ull;

    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    snprintf(out, outlen, "arv_rq_%016" PRIx64, h);
}

static pg_pool_result_cb reporter_fill_done;

/* Builds and queues the answering statement (query_build, or query_build_split
 * when `closed` is given, borrowed: the pool copies the parameters); fill
 * statements (`fill`) answer into reporter_fill_done. Answers the call on failure. */
static void reporter_send(struct reporter_call *call, const struct query_closed *closed, bool fill)
{
    struct reporter *r = call->r;
    struct query_params qp;
    struct strbuf sql;
    char name[32];
    int rc;

    strbuf_init(&sql);
    rc = fill     ? query_build_fill(&call->spec, r->cfg->content_relation, closed, &sql, &qp)
         : closed ? query_build_split(&call->spec, r->cfg->content_relation, closed, &sql, &qp)
                  : query_build(&call->spec, r->cfg->content_relation, &sql, &qp);
    if (rc < 0) {
        strbuf_deinit(&sql);
        reporter_query_failed(call, "cannot build the query",
                              "the analytics query could not be built");
        return;
    }
    if (r->closing) {
        strbuf_deinit(&sql);
        reporter_db_unavailable(call);
        return;
    }
    call->split = closed && !fill;
    reporter_statement_name(sql.data, name, sizeof(name));
    rc = pg_pool_query_prepared(r->pool, name, sql.data, qp.nparams, qp.params,
                                fill ? reporter_fill_done : reporter_query_done, call);
    strbuf_deinit(&sql);
    if (rc < 0) {
        if (rc != -ENOTCONN)
            log_error("reporter_query_failed",
                      LF_STR("endpoint", reporter_endpoint_names[call->ep]),
                      LF_STR("error", strerror(-rc)));
        reporter_db_unavailable(call);
    }
}

/* The closed part of the window has been read: keep it when the watermark read
 * with it says its days were complete, then ask for the rest. */
static void reporter_fill_done(void *arg, const PGresult *res, const char *errstr)
{
    struct reporter_call *call = arg;
    struct reporter *r = call->r;
    struct strbuf body;

    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* Outage or failed statement: answered (and logged) as for any query. */
        reporter_query_done(arg, res, errstr);
        return;
    }
    strbuf_init(&body);
    if (!query_read_fill(res, &body) || !query_closed_load(&call->closed, body.data, body.len)) {
        strbuf_deinit(&body);
        reporter_query_failed(call, "unexpected closed-part result", "the analytics query failed");
        return;
    }
    /* One still being written (an aggregator backlog of those days) serves this
     * answer only, which query_merge_closed() then dates no later than it. */
    if (call->closed.complete)
        qcache_put(r->closed, call->closed_key, timeutil_mono_ms(), body.data, body.len, false,
                   NULL);
    reporter_send(call, &call->closed, false);
    strbuf_deinit(&body);
}

/* Authenticated: rate limit, path and parameters, the key's scope, the cache,
 * then the statement. */
static void reporter_run(struct reporter_call *call)
{
    struct reporter *r = call->r;
    struct query_spec *spec = &call->spec;
    struct params_error perr = {0};
    const struct qcache_entry *hit;
    const struct query_closed *closed = NULL;
    bool fill = false;
    unsigned retry_s = 1;
    int64_t today;

    char key[24];
    snprintf(key, sizeof(key), "%lld", (long long)call->principal.key_id);
    if (r->ratelimit &&
        !rate_limit_take(r->ratelimit, key, (int64_t)timeutil_mono_ms(), &retry_s)) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", retry_s);
        http_request_add_header(call->req, "Retry-After", ra);
        reporter_fail(call, 429, REPORTER_OUT_RATE_LIMITED, "rate_limited", NULL,
                      "too many requests for this API key; retry after Retry-After seconds");
        return;
    }
    spec->ep = reporter_endpoint_kinds[call->ep];
    spec->scope = reporter_endpoint_scopes[call->ep];
    spec->restricted = !call->principal.is_admin;
    spec->company_id = call->principal.company_id;
    if (call->ep == REPORTER_EP_OVERVIEW && spec->restricted) {
        spec->scope = QUERY_SCOPE_COMPANY;
        spec->id = spec->company_id;
    } else if (spec->ep == QUERY_EP_ENTITY) {
        enum query_path_result pr = query_path_id(http_request_path(call->req),
                                                  reporter_endpoint_paths[call->ep], &spec->id);
        if (pr == QUERY_PATH_NOT_FOUND) {
            reporter_fail(call, 404, REPORTER_OUT_INVALID, "not_found", NULL, "no such resource");
            return;
        }
        if (pr == QUERY_PATH_INVALID) {
            reporter_fail(call, 400, REPORTER_OUT_INVALID, "invalid_parameter", "id",
                          "id must be a positive integer");
            return;
        }
    }
    /* UTC today, for the hourly retention and the closed days alike. */
    today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
    const struct params_env env = {r->cfg->zoneinfo_dir, r->cfg->hourly_retention_days, today};
    if (!params_parse(spec, reporter_param, call->req, &env, &perr)) {
        if (perr.unavailable) {
            log_warn("reporter_zoneinfo_unavailable", LF_STR("tz_dir", r->cfg->zoneinfo_dir));
            reporter_fail(call, 503, REPORTER_OUT_DB_UNAVAILABLE, "unavailable", NULL,
                          perr.message);
            return;
        }
        reporter_fail(call, 400, REPORTER_OUT_INVALID, "invalid_parameter", perr.field,
                      perr.message);
        return;
    }
    if (!query_scope_allowed(spec)) {
        reporter_forbidden(call);
        return;
    }
    reporter_cache_key(spec, call->cache_key, sizeof(call->cache_key));
    hit = qcache_get(r->cache, call->cache_key, timeutil_mono_ms());
    if (hit) {
        metric_inc(r->cache_hit);
        reporter_answer(call, hit->body, hit->len, hit->csv, hit->complete_until);
        return;
    }
    metric_inc(r->cache_miss);
    /* Days before yesterday (UTC) rarely change: their rollups are read once per
     * ARV_QUERY_CLOSED_TTL_MS, and each request reads only the open days. */
    if (r->cfg->query_closed_ttl_ms > 0 &&
        query_closed_window_tz(spec, today, reporter_zone_today(r, spec->win.tz, today),
                               &call->closed)) {
        query_closed_key(spec, &call->closed, call->closed_key, sizeof(call->closed_key));
        hit = qcache_get(r->closed, call->closed_key, timeutil_mono_ms());
        closed = &call->closed;
        fill = !(hit && query_closed_load(&call->closed, hit->body, hit->len));
        metric_inc(fill ? r->closed_miss : r->closed_hit);
    }
    /* The duration covers every statement of the request (a fill, then the answer). */
    call->query_started = timeutil_mono_s();
    reporter_send(call, closed, fill);
}

static void reporter_auth_done(void *arg, enum auth_status st, const struct auth_principal *p)
{
    struct reporter_call *call = arg;

    switch (st) {
    case AUTH_OK:
        call->principal = *p;
        reporter_run(call);
        return;
    case AUTH_MISSING:
    case AUTH_MALFORMED:
    case AUTH_UNKNOWN:
    case AUTH_REVOKED:
        reporter_unauthorized(call, st);
        return;
    case AUTH_UNAVAILABLE:
        reporter_db_unavailable(call);
        return;
    case AUTH_LIMITED:
        http_request_add_header(call->req, "Retry-After", "1");
        reporter_fail(call, 429, REPORTER_OUT_RATE_LIMITED, "rate_limited", NULL,
                      "too many API keys looked up for this address; retry after Retry-After"
                      " seconds");
        return;
    case AUTH_FAILED:
    case AUTH_PENDING:
        break;
    }
    reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL,
                  "the API key could not be checked");
}

static void reporter_handle(struct http_request *req, void *arg)
{
    struct reporter_route *route = arg;
    struct reporter_call *call;
    enum auth_status st;
    char ip[CLIENT_IP_LEN], client[CLIENT_IP_KEY_LEN];
    struct strbuf scratch;

    /* Lookups are limited per client, an IPv6 one per /64. */
    strbuf_init(&scratch);
    bool known = client_ip_of_request(&route->r->trust, req, &scratch, ip);
    strbuf_deinit(&scratch);
    if (!known || !(call = calloc(1, sizeof(*call)))) {
        http_respond_error(req, 503, "out_of_memory", NULL, "try again");
        return;
    }
    call->r = route->r;
    call->req = req;
    call->ep = route->ep;
    st = auth_check(route->r->auth, http_request_header(req, "Authorization"),
                    client_ip_limit_key(ip, client, sizeof(client)), &call->principal,
                    reporter_auth_done, call);
    if (st != AUTH_PENDING)
        reporter_auth_done(call, st, &call->principal);
}

static bool reporter_db_ready(void *arg, const char **detail)
{
    struct reporter *r = arg;

    if (pg_pool_is_up(r->pool))
        return true;
    *detail = pg_pool_errstr(r->pool);
    return false;
}

static int reporter_metrics_init(struct reporter *r, struct metrics *m)
{
    struct metric_family *q =
        metrics_counter(m, "reporter_queries_total", "Analytics requests by endpoint and outcome",
                        "endpoint,outcome");
    struct metric_family *d =
        metrics_histogram(m, "reporter_query_duration_seconds",
                          "Time of a request's analytics statements in PostgreSQL", "endpoint",
                          metrics_latency_buckets, metrics_latency_buckets_len);

    struct metric_family *a =
        metrics_counter(m, "reporter_auth_failures_total",
                        "Requests refused by API key authentication or scope", "reason");
    struct metric_family *c = metrics_counter(
        m, "reporter_query_cache_lookups_total",
        "Analytics answers served from the answer cache (hit) or computed (miss)", "result");
    struct metric_family *cc = metrics_counter(
        m, "reporter_closed_cache_lookups_total",
        "Closed days' rollups reused from memory (hit) or read from PostgreSQL (miss)", "result");

    if (!q || !d || !a || !c || !cc)
        return -ENOMEM;
    r->cache_hit = metric_family_child(c, (const char *const[]){"hit"});
    r->cache_miss = metric_family_child(c, (const char *const[]){"miss"});
    r->closed_hit = metric_family_child(cc, (const char *const[]){"hit"});
    r->closed_miss = metric_family_child(cc, (const char *const[]){"miss"});
    for (int i = 0; i < REPORTER_AUTH_FAILURE_COUNT; i++)
        r->auth_failures[i] =
            metric_family_child(a, (const char *const[]){reporter_auth_failure_names[i]});
    /* Children made now: the request path then never takes the registry lock. */
    for (int ep = 0; ep < REPORTER_EP_COUNT; ep++) {
        for (int o = 0; o < REPORTER_OUT_COUNT; o++)
            r->queries[ep][o] = metric_family_child(
                q, (const char *const[]){reporter_endpoint_names[ep], reporter_outcome_names[o]});
        r->duration[ep] =
            metric_family_child(d, (const char *const[]){reporter_endpoint_names[ep]});
    }
    return 0;
}

/* A stop's grace is over: the requests still waiting on PostgreSQL are
 * answered 503 (their statements ended), so that the loop ends before the
 * stop deadline and the reporter exits 0. */
static void reporter_stop_due(evutil_socket_t fd, short what, void *arg)
{
    struct reporter *r = arg;
    (void)fd;
    (void)what;
    r->closing = true;
    pg_pool_close(r->pool);
}

/* A stop signal: in-flight requests are answered as they finish, until
 * REPORTER_STOP_GRACE_S before the deadline (a statement may run for up to
 * ARV_QUERY_TIMEOUT_MS, 10 minutes at most). */
static void reporter_on_stop(void *arg)
{
    struct reporter *r = arg;
    struct timeval tv = {SERVICE_STOP_DEADLINE_S - REPORTER_STOP_GRACE_S, 0};

    if (event_base_once(r->svc->base, -1, EV_TIMEOUT, reporter_stop_due, r, &tv) < 0)
        reporter_stop_due(-1, 0, r);
    service_stopped(r->svc);
}

struct reporter *reporter_new(struct service *svc, const struct reporter_config *cfg)
{
    struct reporter *r = calloc(1, sizeof(*r));

    if (!r) {
        log_error("reporter_init_failed", LF_STR("error", "out of memory"));
        return NULL;
    }
    r->svc = svc;
    r->cfg = cfg;

    /* Order: proxies (checked by reporter_config_validate), limiter and cache,
     * metrics, pool (connects in the background), auth on the pool, readiness,
     * and routes last so nothing is served half-built. */
    char err[128];
    if (!client_ip_parse_trust(cfg->trusted_proxies, &r->trust, err, sizeof(err))) {
        log_error("reporter_init_failed", LF_STR("error", err));
        goto fail;
    }
    if (cfg->rate_limit_rps > 0) {
        r->ratelimit =
            rate_limit_new((double)cfg->rate_limit_rps, (double)cfg->rate_limit_burst, 4096);
        if (!r->ratelimit)
            goto oom;
    }
    r->cache = qcache_new((unsigned)cfg->query_cache_entries, (uint64_t)cfg->query_cache_ttl_ms);
    if (!r->cache)
        goto oom;
    r->closed = qcache_new((unsigned)cfg->query_cache_entries, (uint64_t)cfg->query_closed_ttl_ms);
    if (!r->closed)
        goto oom;
    if (reporter_metrics_init(r, svc->metrics) < 0) {
        log_error("reporter_init_failed", LF_STR("error", "cannot register metrics"));
        goto fail;
    }
    r->pool = pg_pool_new(svc->base, cfg->common.database_url, (unsigned)cfg->db_pool_size,
                          (unsigned)cfg->db_queue_timeout_ms, (unsigned)cfg->query_timeout_ms);
    r->auth = r->pool
                  ? auth_new(r->pool, (unsigned)cfg->auth_cache_ttl_s, (double)cfg->auth_lookup_rps,
                             (double)cfg->auth_lookup_burst, svc->metrics)
                  : NULL;
    if (!r->auth) {
        log_error("reporter_init_failed", LF_STR("error", "cannot create the database pool"));
        goto fail;
    }
    if (health_add_check(svc->health, "postgresql", reporter_db_ready, r) < 0)
        goto oom;
    if (dashboard_init(&r->dashboard) < 0) {
        log_error("reporter_init_failed",
                  LF_STR("error", "reporter/dashboard.html needs one bare <script> and one "
                                  "bare <style> element: their hashes make its CSP"));
        goto fail;
    }
    for (int ep = 0; ep < REPORTER_EP_COUNT; ep++) {
        r->routes[ep].r = r;
        r->routes[ep].ep = (enum reporter_endpoint)ep;
        if (http_server_route(svc->http, HTTP_GET, reporter_endpoint_paths[ep],
                              reporter_endpoint_kinds[ep] == QUERY_EP_ENTITY, reporter_handle,
                              &r->routes[ep]) < 0)
            goto oom;
    }
    /* The page needs no key: it holds no data, and asks the API with the user's. */
    if (http_server_route(svc->http, HTTP_GET, "/dashboard", false, dashboard_handle,
                          &r->dashboard) < 0)
        goto oom;
    service_on_stop(svc, reporter_on_stop, r);
    log_info("reporter_ready", LF_INT("db_pool_size", cfg->db_pool_size),
             LF_INT("auth_cache_ttl_s", cfg->auth_cache_ttl_s),
             LF_STR("content_relation", cfg->content_relation),
             LF_INT("rate_limit_rps", cfg->rate_limit_rps),
             LF_INT("auth_lookup_rps", cfg->auth_lookup_rps),
             LF_INT("trusted_proxies", (long long)r->trust.n),
             LF_INT("query_cache_ttl_ms", cfg->query_cache_ttl_ms),
             LF_INT("query_closed_ttl_ms", cfg->query_closed_ttl_ms));
    return r;
oom:
    log_error("reporter_init_failed", LF_STR("error", "out of memory"));
fail:
    reporter_free(r);
    return NULL;
}

void reporter_free(struct reporter *r)
{
    if (!r)
        return;
    r->closing = true;
    /* The pool first: its pending callbacks answer their requests (503) and may
     * still reach the authenticator. */
    pg_pool_free(r->pool);
    auth_free(r->auth);
    qcache_free(r->cache);
    qcache_free(r->closed);
    rate_limit_free(r->ratelimit);
    free(r);
}
