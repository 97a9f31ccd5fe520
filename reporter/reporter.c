/* arv-reporter's application: routes for the seed-compatible analytics queries,
 * each answered exactly once from one rollup statement on the PostgreSQL pool. */
#include "reporter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "auth.h"
#include "health.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "pg_pool.h"
#include "query.h"
#include "service.h"
#include "strbuf.h"

#define REPORTER_DEFAULT_LISTEN   "0.0.0.0:8083"
#define REPORTER_WWW_AUTH         "Bearer realm=\"arv-reporter\""
#define REPORTER_WWW_AUTH_INVALID "Bearer realm=\"arv-reporter\", error=\"invalid_token\""

const struct config_option reporter_options[] = {
    CONFIG_COMMON_OPTIONS(struct reporter_config, REPORTER_DEFAULT_LISTEN),
    {"db-pool-size", "ARV_DB_POOL_SIZE", CONFIG_INT, offsetof(struct reporter_config, db_pool_size),
     "4", NULL, 1, 256, "PostgreSQL connections in the query pool"},
    {"db-queue-timeout-ms", "ARV_DB_QUEUE_TIMEOUT_MS", CONFIG_INT,
     offsetof(struct reporter_config, db_queue_timeout_ms), "2000", NULL, 1, 60000,
     "longest a query waits for a free connection before a 503"},
    {"auth-cache-ttl", "ARV_AUTH_CACHE_TTL", CONFIG_INT,
     offsetof(struct reporter_config, auth_cache_ttl_s), "30", NULL, 0, 3600,
     "seconds an API key lookup is reused (revocation takes effect within it)"},
    {"content-relation", "ARV_CONTENT_RELATION", CONFIG_STRING,
     offsetof(struct reporter_config, content_relation), "analytics.ar_content", NULL, 0, 0,
     "table or view mapping content to project and company (id, project_id, company_id)"},
};
const size_t reporter_options_len = sizeof(reporter_options) / sizeof(reporter_options[0]);

enum reporter_endpoint {
    REPORTER_EP_OVERVIEW,
    REPORTER_EP_COMPANY,
    REPORTER_EP_PROJECT,
    REPORTER_EP_CONTENT,
    REPORTER_EP_COUNT
};

enum reporter_outcome {
    REPORTER_OUT_OK,
    REPORTER_OUT_UNAUTHORIZED,
    REPORTER_OUT_FORBIDDEN,
    REPORTER_OUT_INVALID,
    REPORTER_OUT_DB_UNAVAILABLE,
    REPORTER_OUT_DB_ERROR,
    REPORTER_OUT_COUNT
};

static const char *const reporter_endpoint_names[REPORTER_EP_COUNT] = {"overview", "company",
                                                                       "project", "ar_content"};
static const char *const reporter_endpoint_paths[REPORTER_EP_COUNT] = {
    "/api/analytics/overview", "/api/analytics/companies/", "/api/analytics/projects/",
    "/api/analytics/ar-content/"};
static const enum query_scope reporter_endpoint_scopes[REPORTER_EP_COUNT] = {
    QUERY_SCOPE_ALL, QUERY_SCOPE_COMPANY, QUERY_SCOPE_PROJECT, QUERY_SCOPE_CONTENT};
static const char *const reporter_outcome_names[REPORTER_OUT_COUNT] = {
    "ok", "unauthorized", "forbidden", "invalid", "db_unavailable", "db_error"};

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

/* The argument of one route: which endpoint it is. */
struct reporter_route {
    struct reporter *r;        /* owner */
    enum reporter_endpoint ep; /* what the route answers */
};

struct reporter {
    struct service *svc;                             /* borrowed */
    const struct reporter_config *cfg;               /* borrowed */
    struct pg_pool *pool;                            /* owned */
    struct auth *auth;                               /* owned */
    struct query_texts texts;                        /* SQL per scope */
    bool closing;                                    /* reporter_free() running: start no query */
    struct reporter_route routes[REPORTER_EP_COUNT]; /* route arguments */
    struct metric *queries[REPORTER_EP_COUNT][REPORTER_OUT_COUNT]; /* reporter_queries_total */
    struct metric *duration[REPORTER_EP_COUNT];                /* reporter_query_duration_seconds */
    struct metric *auth_failures[REPORTER_AUTH_FAILURE_COUNT]; /* reporter_auth_failures_total */
};

/* One request between its arrival and its answer. */
struct reporter_call {
    struct reporter *r;              /* borrowed */
    struct http_request *req;        /* answered exactly once, then NULL */
    enum reporter_endpoint ep;       /* which route */
    struct auth_principal principal; /* the key's scope, once authenticated */
    struct query_spec spec;          /* what is counted */
    struct timespec query_started;   /* for reporter_query_duration_seconds */
};

bool reporter_config_validate(const void *cfgp, char *err, size_t errlen)
{
    const struct reporter_config *cfg = cfgp;
    char *pqerr = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->common.database_url, &pqerr);

    if (!opts) {
        size_t n = pqerr ? strcspn(pqerr, "\n") : 0;
        snprintf(err, errlen, "DATABASE_URL is not a valid PostgreSQL URL: %.*s", (int)n,
                 pqerr ? pqerr : "out of memory");
        PQfreemem(pqerr);
        return false;
    }
    PQconninfoFree(opts);
    if (!query_relation_valid(cfg->content_relation)) {
        snprintf(err, errlen,
                 "ARV_CONTENT_RELATION must be a plain [schema.]name of letters, digits and "
                 "underscores, got '%s'",
                 cfg->content_relation ? cfg->content_relation : "");
        return false;
    }
    return true;
}

static double reporter_elapsed_s(const struct timespec *since)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static void reporter_call_end(struct reporter_call *call, enum reporter_outcome outcome)
{
    metric_inc(call->r->queries[call->ep][outcome]);
    call->req = NULL;
    free(call);
}

/* Every answer is private to its key and changes as events arrive. */
static void reporter_answer_json(struct reporter_call *call, int status, const char *json)
{
    http_request_add_header(call->req, "Cache-Control", "no-store");
    http_respond_json(call->req, status, json);
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

static void reporter_query_done(void *arg, const PGresult *res, const char *errstr)
{
    struct reporter_call *call = arg;
    struct strbuf sb;
    bool ok;

    metric_observe(call->r->duration[call->ep], reporter_elapsed_s(&call->query_started));
    if (!res) {
        /* The pool logs its outages; a per-request line would only repeat it. */
        log_debug("reporter_query_unavailable",
                  LF_STR("endpoint", reporter_endpoint_names[call->ep]), LF_STR("error", errstr));
        reporter_db_unavailable(call);
        return;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        bool retry = query_sqlstate_retryable(state);
        log_error("reporter_query_failed", LF_STR("endpoint", reporter_endpoint_names[call->ep]),
                  LF_STR("sqlstate", state),
                  LF_STR("error", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)));
        if (retry)
            reporter_db_unavailable(call);
        else
            reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL,
                          "the analytics query failed");
        return;
    }

    strbuf_init(&sb);
    if (call->ep == REPORTER_EP_OVERVIEW) {
        struct query_overview o;
        ok = query_read_overview(res, &o);
        if (ok)
            query_overview_json(&sb, &call->spec, &o);
    } else {
        struct query_entity e;
        ok = query_read_entity(res, &e);
        if (ok && !query_owner_allowed(&call->spec, &e)) {
            strbuf_deinit(&sb);
            reporter_forbidden(call);
            return;
        }
        if (ok)
            query_entity_json(&sb, &call->spec, &e);
    }
    if (!ok || sb.oom) {
        log_error("reporter_query_failed", LF_STR("endpoint", reporter_endpoint_names[call->ep]),
                  LF_STR("error", ok ? "out of memory" : "unexpected result shape"));
        strbuf_deinit(&sb);
        reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL,
                      "the analytics query failed");
        return;
    }
    reporter_answer_json(call, 200, sb.data);
    strbuf_deinit(&sb);
    reporter_call_end(call, REPORTER_OUT_OK);
}

/* Authenticated: check the path and the key's scope, then run the statement. */
static void reporter_run(struct reporter_call *call)
{
    struct reporter *r = call->r;
    struct query_spec *spec = &call->spec;
    struct query_sql q;
    int rc;

    spec->scope = reporter_endpoint_scopes[call->ep];
    spec->restricted = !call->principal.is_admin;
    spec->company_id = call->principal.company_id;
    if (call->ep != REPORTER_EP_OVERVIEW) {
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
    if (!query_scope_allowed(spec)) {
        reporter_forbidden(call);
        return;
    }
    if (!query_period_last_days(time(NULL), QUERY_WINDOW_DAYS, &spec->period) ||
        query_build(&r->texts, spec, &q) < 0) {
        log_error("reporter_query_failed", LF_STR("endpoint", reporter_endpoint_names[call->ep]),
                  LF_STR("error", "cannot build the query"));
        reporter_fail(call, 500, REPORTER_OUT_DB_ERROR, "internal_error", NULL,
                      "the analytics query could not be built");
        return;
    }
    if (r->closing) {
        reporter_db_unavailable(call);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &call->query_started);
    rc = pg_pool_query(r->pool, q.sql, q.nparams, q.params, reporter_query_done, call);
    if (rc < 0) {
        if (rc != -ENOTCONN)
            log_error("reporter_query_failed",
                      LF_STR("endpoint", reporter_endpoint_names[call->ep]),
                      LF_STR("error", strerror(-rc)));
        reporter_db_unavailable(call);
    }
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
    struct reporter_call *call = calloc(1, sizeof(*call));
    enum auth_status st;

    if (!call) {
        http_respond_error(req, 503, "out_of_memory", NULL, "try again");
        return;
    }
    call->r = route->r;
    call->req = req;
    call->ep = route->ep;
    st = auth_check(route->r->auth, http_request_header(req, "Authorization"), &call->principal,
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
    struct metric_family *d = metrics_histogram(
        m, "reporter_query_duration_seconds", "Time of the analytics statement in PostgreSQL",
        "endpoint", metrics_latency_buckets, metrics_latency_buckets_len);

    struct metric_family *a =
        metrics_counter(m, "reporter_auth_failures_total",
                        "Requests refused by API key authentication or scope", "reason");

    if (!q || !d || !a)
        return -ENOMEM;
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

struct reporter *reporter_new(struct service *svc, const struct reporter_config *cfg)
{
    struct reporter *r = calloc(1, sizeof(*r));
    int rc;

    if (!r) {
        log_error("reporter_init_failed", LF_STR("error", "out of memory"));
        return NULL;
    }
    r->svc = svc;
    r->cfg = cfg;

    /* Order: SQL texts, metrics, pool (connects in the background), auth on the
     * pool, readiness, and routes last so nothing is served half-built. */
    rc = query_texts_init(&r->texts, cfg->content_relation);
    if (rc < 0) {
        log_error("reporter_init_failed", LF_STR("error", "cannot build the SQL statements"));
        goto fail;
    }
    if (reporter_metrics_init(r, svc->metrics) < 0) {
        log_error("reporter_init_failed", LF_STR("error", "cannot register metrics"));
        goto fail;
    }
    r->pool = pg_pool_new(svc->base, cfg->common.database_url, (unsigned)cfg->db_pool_size,
                          (unsigned)cfg->db_queue_timeout_ms);
    r->auth = r->pool ? auth_new(r->pool, (unsigned)cfg->auth_cache_ttl_s, svc->metrics) : NULL;
    if (!r->auth) {
        log_error("reporter_init_failed", LF_STR("error", "cannot create the database pool"));
        goto fail;
    }
    if (health_add_check(svc->health, "postgresql", reporter_db_ready, r) < 0)
        goto oom;
    for (int ep = 0; ep < REPORTER_EP_COUNT; ep++) {
        r->routes[ep].r = r;
        r->routes[ep].ep = (enum reporter_endpoint)ep;
        if (http_server_route(svc->http, HTTP_GET, reporter_endpoint_paths[ep],
                              ep != REPORTER_EP_OVERVIEW, reporter_handle, &r->routes[ep]) < 0)
            goto oom;
    }
    log_info("reporter_ready", LF_INT("db_pool_size", cfg->db_pool_size),
             LF_INT("auth_cache_ttl_s", cfg->auth_cache_ttl_s),
             LF_STR("content_relation", cfg->content_relation));
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
    query_texts_deinit(&r->texts);
    free(r);
}
