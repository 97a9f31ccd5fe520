/* GET /api/health/status, /api/health/readiness and /metrics, mounted on every
 * daemon's HTTP server. */
#include "health.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "http_server.h"
#include "metrics.h"
#include "strbuf.h"

struct health_check {
    const char *name;    /* dependency name; borrowed */
    health_check_fn *fn; /* non-blocking probe */
    void *arg;           /* passed to fn */
};

struct health {
    struct metrics *m;           /* rendered at /metrics; borrowed */
    const char *service;         /* borrowed */
    const char *environment;     /* borrowed */
    struct health_check *checks; /* readiness dependencies */
    size_t nchecks;              /* used entries */
    size_t checks_cap;           /* allocated entries */
    bool draining;               /* shutting down: readiness fails */
};

static void health_status(struct http_request *req, void *arg)
{
    struct health *h = arg;
    struct strbuf sb;
    char ts[32];
    struct tm tm;
    time_t now = time(NULL);

    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    strbuf_init(&sb);
    strbuf_puts(&sb, "{\"status\":\"ok\",\"service\":");
    strbuf_json_str(&sb, h->service);
    strbuf_puts(&sb, ",\"version\":");
    strbuf_json_str(&sb, ARV_VERSION);
    strbuf_puts(&sb, ",\"environment\":");
    strbuf_json_str(&sb, h->environment);
    strbuf_puts(&sb, ",\"timestamp\":");
    strbuf_json_str(&sb, ts);
    strbuf_putc(&sb, '}');
    http_request_add_header(req, "Cache-Control", "no-store");
    http_respond(req, 200, "application/json", sb.data, sb.len);
    strbuf_deinit(&sb);
}

static void health_readiness(struct http_request *req, void *arg)
{
    struct health *h = arg;
    struct strbuf failing;
    struct strbuf checks;
    struct strbuf body;
    bool ready = !h->draining;

    strbuf_init(&failing);
    strbuf_init(&checks);
    strbuf_init(&body);
    if (h->draining)
        strbuf_puts(&failing, "\"shutting_down\"");
    for (size_t i = 0; i < h->nchecks; i++) {
        const struct health_check *c = &h->checks[i];
        const char *detail = NULL;
        bool ok = c->fn(c->arg, &detail);
        if (checks.len)
            strbuf_putc(&checks, ',');
        strbuf_json_str(&checks, c->name);
        strbuf_putc(&checks, ':');
        if (ok) {
            strbuf_puts(&checks, "\"ok\"");
            continue;
        }
        ready = false;
        strbuf_json_str(&checks, detail ? detail : "down");
        if (failing.len)
            strbuf_putc(&failing, ',');
        strbuf_json_str(&failing, c->name);
    }
    if (ready) {
        strbuf_puts(&body, "{\"status\":\"ready\",\"checks\":{");
    } else {
        strbuf_puts(&body, "{\"status\":\"unavailable\",\"failing\":[");
        strbuf_append(&body, failing.data ? failing.data : "", failing.len);
        strbuf_puts(&body, "],\"checks\":{");
    }
    strbuf_append(&body, checks.data ? checks.data : "", checks.len);
    strbuf_puts(&body, "}}");
    http_request_add_header(req, "Cache-Control", "no-store");
    http_respond(req, ready ? 200 : 503, "application/json", body.data, body.len);
    strbuf_deinit(&failing);
    strbuf_deinit(&checks);
    strbuf_deinit(&body);
}

static void health_metrics(struct http_request *req, void *arg)
{
    struct health *h = arg;
    struct strbuf sb;
    strbuf_init(&sb);
    metrics_render(h->m, &sb);
    http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", sb.data, sb.len);
    strbuf_deinit(&sb);
}

struct health *health_new(struct http_server *s, struct metrics *m, const char *service,
                          const char *environment)
{
    struct health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->m = m;
    h->service = service;
    h->environment = environment;
    if (http_server_route(s, HTTP_GET, "/api/health/status", false, health_status, h) < 0 ||
        http_server_route(s, HTTP_GET, "/api/health/readiness", false, health_readiness, h) < 0 ||
        http_server_route(s, HTTP_GET, "/metrics", false, health_metrics, h) < 0) {
        /* A route already added points at h; the server is unusable anyway and
         * its owner frees it before anything could call the handler. */
        free(h);
        return NULL;
    }
    return h;
}

int health_add_check(struct health *h, const char *name, health_check_fn *fn, void *arg)
{
    if (h->nchecks == h->checks_cap) {
        size_t cap = h->checks_cap ? h->checks_cap * 2 : 4;
        struct health_check *v = realloc(h->checks, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        h->checks = v;
        h->checks_cap = cap;
    }
    h->checks[h->nchecks++] = (struct health_check){name, fn, arg};
    return 0;
}

void health_set_draining(struct health *h)
{
    if (h)
        h->draining = true;
}

void health_free(struct health *h)
{
    if (!h)
        return;
    free(h->checks);
    free(h);
}
