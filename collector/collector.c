/* The collector application: POST /api/analytics/ar-session -> validate ->
 * XADD -> 200 only once Redis holds the event. */
#include "collector.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "event.h"
#include "health.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "stream_writer.h"

struct collector {
    struct service *svc;                /* borrowed frame */
    const struct collector_config *cfg; /* borrowed */
    struct stream_writer *writer;       /* owned */
    struct metric_family *rejected;     /* collector_events_rejected_total{reason} */
    struct metric *accepted;            /* collector_events_accepted_total */
    struct metric *inflight;            /* collector_xadd_inflight */
    struct event *drain_timer;          /* polls for in-flight XADDs while stopping */
    bool stopping;
};

/* An event waiting for its XADD answer. */
struct pending_event {
    struct collector *c;
    struct http_request *req;
    char event_id[EVENT_UUID_LEN + 1];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void reject(struct collector *c, struct http_request *req, int status, const char *code,
                   const char *field, const char *message)
{
    metric_inc(metric_family_child(c->rejected, (const char *const[]){code}));
    http_respond_error(req, status, code, field, message);
}

static void unavailable(struct collector *c, struct http_request *req, const char *message)
{
    http_request_add_header(req, "Retry-After", "1");
    reject(c, req, 503, "unavailable", NULL, message);
}

/* application/json, text/plain (navigator.sendBeacon) or none at all. */
static bool content_type_ok(const char *ct)
{
    if (!ct)
        return true;
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    return (n == 16 && strncasecmp(ct, "application/json", n) == 0) ||
           (n == 10 && strncasecmp(ct, "text/plain", n) == 0);
}

static void xadd_done(void *arg, bool ok, const char *entry_id, const char *errstr)
{
    struct pending_event *p = arg;
    struct collector *c = p->c;
    (void)entry_id;
    metric_add(c->inflight, -1);
    if (ok) {
        char body[96];
        metric_inc(c->accepted);
        snprintf(body, sizeof(body), "{\"status\":\"tracked\",\"event_id\":\"%s\"}", p->event_id);
        http_respond_json(p->req, 200, body);
    } else {
        log_warn("xadd_failed", LF_STR("error", errstr), LF_STR("event_id", p->event_id));
        unavailable(c, p->req, "the event store is unavailable; retry later");
    }
    free(p);
}

static void handle_session(struct http_request *req, void *arg)
{
    struct collector *c = arg;
    struct event ev;
    struct event_error err;
    struct strbuf json;
    size_t len;
    const char *body = http_request_body(req, &len);

    strbuf_init(&json);
    if (c->stopping) {
        unavailable(c, req, "the collector is shutting down");
        goto out;
    }
    if (!content_type_ok(http_request_header(req, "content-type"))) {
        reject(c, req, 415, "unsupported_media_type", NULL,
               "Content-Type must be application/json or text/plain");
        goto out;
    }
    struct event_context ctx = {
        .user_agent_header = http_request_header(req, "user-agent"),
        .client_ip = http_request_peer(req),
        .now_ms = now_ms(),
        .max_skew_ms = c->cfg->max_skew_s * 1000,
    };
    if (!event_parse_client(body, len, &ctx, &ev, &err)) {
        reject(c, req, 400, err.code, err.field, err.message);
        goto out;
    }
    event_to_stream(&ev, &json);
    struct pending_event *p = malloc(sizeof(*p));
    if (!p || json.oom) {
        free(p);
        unavailable(c, req, "out of memory");
        goto out;
    }
    p->c = c;
    p->req = req;
    memcpy(p->event_id, ev.event_id, sizeof(p->event_id));
    int rc = stream_writer_push(c->writer, ev.session_id, json.data, json.len, xadd_done, p);
    if (rc < 0) {
        free(p);
        unavailable(c, req, "the event store is unavailable; retry later");
        goto out;
    }
    metric_add(c->inflight, 1);
out:
    strbuf_deinit(&json);
}

static bool redis_ready(void *arg, const char **detail)
{
    struct collector *c = arg;
    return stream_writer_is_up(c->writer, detail);
}

struct collector *collector_new(struct service *svc, const struct collector_config *cfg, char *err,
                                size_t errlen)
{
    struct collector *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->svc = svc;
    c->cfg = cfg;
    c->writer = stream_writer_new(svc->base, svc->metrics, cfg->common.redis_url,
                                  cfg->common.stream, cfg->common.stream_shards, err, errlen);
    if (!c->writer)
        goto fail;
    c->rejected = metrics_counter(svc->metrics, "collector_events_rejected_total",
                                  "Events refused, by reason", "reason");
    c->accepted = metric_family_single(metrics_counter(
        svc->metrics, "collector_events_accepted_total", "Events acknowledged by Redis", NULL));
    c->inflight = metric_family_single(
        metrics_gauge(svc->metrics, "collector_xadd_inflight", "XADDs awaiting an answer", NULL));
    if (health_add_check(svc->health, "redis", redis_ready, c) < 0 ||
        http_server_route(svc->http, HTTP_POST, "/api/analytics/ar-session", false, handle_session,
                          c) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return c;
fail:
    collector_free(c);
    return NULL;
}

static void drain_poll(evutil_socket_t fd, short what, void *arg)
{
    struct collector *c = arg;
    (void)fd;
    (void)what;
    if (stream_writer_pending(c->writer) == 0) {
        service_stopped(c->svc);
        return;
    }
    struct timeval tv = {0, 10 * 1000};
    evtimer_add(c->drain_timer, &tv);
}

void collector_stop(void *arg)
{
    struct collector *c = arg;
    c->stopping = true;
    c->drain_timer = evtimer_new(c->svc->base, drain_poll, c);
    if (!c->drain_timer) {
        service_stopped(c->svc);
        return;
    }
    drain_poll(-1, 0, c);
}

void collector_free(struct collector *c)
{
    if (!c)
        return;
    if (c->drain_timer)
        event_free(c->drain_timer);
    stream_writer_free(c->writer);
    free(c);
}
