/* The collector application: POST /api/analytics/ar-session (one event) and
 * /ar-sessions (a batch) -> decode, validate -> XADD -> 2xx only once Redis holds
 * the events. One event loop per thread, each with its own HTTP server on the
 * shared port and its own Redis connections. */
#define _GNU_SOURCE /* sched_getaffinity */
#include "collector.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ingest_batch.h"
#include "body.h"
#include "client_ip.h"
#include "cors.h"
#include "event.h"
#include "health.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "rate_limit.h"
#include "service.h"
#include "stream_writer.h"
#include "timeutil.h"

#define COLLECTOR_MAX_THREADS 64
#define RATE_LIMIT_SLOTS      65536 /* clients tracked at once (about 6 MB) */
#define DRAIN_POLL_MS         10
#define BATCH_POOL_MAX        64 /* batch records a lane keeps for reuse */

struct lane;

/* A single event waiting for its XADD answer; recycled through the lane. */
struct pending_event {
    struct lane *lane;                 /* owner */
    struct http_request *req;          /* answered from xadd_done */
    struct pending_event *next;        /* free list link */
    char event_id[EVENT_UUID_LEN + 1]; /* echoed in the answer */
};

enum item_status { ITEM_REJECTED, ITEM_SENT, ITEM_TRACKED, ITEM_UNAVAILABLE };

struct batch_req;

/* One batch element's outcome: what its answer needs once the parsed batch (a
 * lane-wide scratch) has been reused. */
struct batch_slot {
    struct batch_req *br;              /* owner */
    enum item_status status;           /* outcome so far */
    char event_id[EVENT_UUID_LEN + 1]; /* valid elements */
    const char *err_code, *err_field;  /* rejected elements (static strings) */
    char err_message[sizeof(((struct event_error *)0)->message)]; /* rejected elements */
};

/* A batch waiting for its XADD answers. */
struct batch_req {
    struct lane *lane;         /* owner */
    struct http_request *req;  /* answered once `remaining` is 0 */
    struct batch_req *next;    /* the lane's free list */
    size_t cap;                /* slots allocated */
    size_t n;                  /* elements */
    size_t sent;               /* XADDs sent */
    size_t remaining;          /* XADDs not answered yet */
    size_t stored;             /* XADDs acknowledged */
    char xadd_error[96];       /* the first failed XADD's error, logged once */
    struct batch_slot slots[]; /* n outcomes */
};

/* One thread: its loop, HTTP server, health routes and Redis connections. */
struct lane {
    struct collector *c;               /* owner */
    int index;                         /* 0: the service frame's thread */
    struct event_base *base;           /* lane 0: the service's (borrowed) */
    struct http_server *http;          /* lane 0: the service's (borrowed) */
    struct health *health;             /* lane 0: the service's (borrowed) */
    struct stream_writer *writer;      /* owned */
    struct strbuf json;                /* stream encoding, reused per event */
    struct strbuf inflated;            /* decoded gzip body, reused */
    struct strbuf answer;              /* batch answer, reused */
    struct strbuf joined;              /* a header's lines joined, reused */
    struct ingest_batch batch;         /* parsed batch, reused */
    struct batch_req *free_batches;    /* recycled batch records (their slots are large) */
    size_t nfree_batches;              /* records on free_batches */
    struct pending_event *free_events; /* recycled pending_event records */
    struct event *stop_ev;             /* workers: activated by thread 0 */
    struct event *drain_ev;            /* polls until the lane is drained */
    pthread_t thread;                  /* workers */
    bool started;                      /* the thread was created */
    bool stopping;                     /* refuse new events */
    atomic_bool finished;              /* the worker's loop has returned */
};

struct collector {
    struct service *svc;                /* borrowed frame */
    const struct collector_config *cfg; /* borrowed */
    struct lane *lanes;                 /* nlanes, lanes[0] on the service loop */
    int nlanes;                         /* threads */
    struct client_ip_trust trust;       /* ARV_TRUSTED_PROXIES */
    struct cors cors;                   /* ARV_CORS_ORIGINS */
    struct rate_limit *limiter;         /* NULL: no rate limit */
    struct metric_family *rejected;     /* collector_events_rejected_total{reason} */
    struct metric *accepted;            /* collector_events_accepted_total */
    struct metric *inflight;            /* collector_xadd_inflight */
    struct metric *batch_events;        /* collector_batch_events (histogram) */
};

static const double batch_buckets[] = {1, 5, 10, 25, 50, 100, 250, 500, 1000};

static void count_rejected(struct collector *c, const char *reason)
{
    metric_inc(metric_family_child(c->rejected, (const char *const[]){reason}));
}

/* Answers an error and counts it under `reason`. */
static void reject(struct collector *c, struct http_request *req, int status, const char *reason,
                   const char *code, const char *field, const char *message)
{
    count_rejected(c, reason);
    http_respond_error(req, status, code, field, message);
}

static void unavailable(struct collector *c, struct http_request *req, const char *reason,
                        const char *message)
{
    http_request_add_header(req, "Retry-After", "1");
    reject(c, req, 503, reason, "unavailable", NULL, message);
}

/* ---- admission: CORS, shutdown, client address, rate limit, backlog ----------- */

static void preflight(struct collector *c, struct http_request *req, const char *origin,
                      bool allowed)
{
    if (origin && !allowed) {
        http_respond_error(req, 403, "origin_not_allowed", NULL,
                           "this origin may not send events (ARV_CORS_ORIGINS)");
        return;
    }
    (void)c;
    if (allowed) {
        http_request_add_header(req, "Access-Control-Allow-Methods", "POST, OPTIONS");
        http_request_add_header(req, "Access-Control-Allow-Headers",
                                "Content-Type, Content-Encoding");
        http_request_add_header(req, "Access-Control-Max-Age", "86400");
    }
    http_request_add_header(req, "Allow", "POST, OPTIONS");
    http_respond(req, 204, NULL, NULL, 0);
}

/* Adds the CORS headers of an answer to an allowed `origin`: every POST answer
 * to one carries them, errors too, so that a browser can read them. */
static bool cors_answer(const struct collector *c, struct http_request *req, const char *origin)
{
    if (!cors_allows(&c->cors, origin))
        return false;
    http_request_add_header(req, "Access-Control-Allow-Origin", origin);
    http_request_add_header(req, "Vary", "Origin");
    return true;
}

/* The HTTP server's own error answers (a body over the limit, a malformed
 * request, a slow one) carry them as the collector's own do. */
static void cors_on_error(struct http_request *req, void *arg)
{
    const struct collector *c = arg;
    cors_answer(c, req, http_request_header(req, "origin"));
}

/* Common checks of both ingest routes. Writes the client address into `ip`.
 * Returns false once the request has been answered. */
static bool admit(struct lane *l, struct http_request *req, char *ip)
{
    struct collector *c = l->c;
    const char *origin = http_request_header(req, "origin");
    bool allowed = cors_answer(c, req, origin);
    if (http_request_method(req) == HTTP_OPTIONS) {
        preflight(c, req, origin, allowed);
        return false;
    }
    if (l->stopping) {
        unavailable(c, req, "shutting_down", "the collector is shutting down; retry later");
        return false;
    }
    if (!client_ip_of_request(&c->trust, req, &l->joined, ip)) {
        /* Rather than the proxy's address for every client. */
        unavailable(c, req, "out_of_memory", "out of memory");
        return false;
    }
    unsigned wait_s = 0;
    char key[CLIENT_IP_KEY_LEN];
    if (c->limiter && !rate_limit_take(c->limiter, client_ip_limit_key(ip, key, sizeof(key)),
                                       (int64_t)timeutil_mono_ms(), &wait_s)) {
        char v[16];
        snprintf(v, sizeof(v), "%u", wait_s);
        http_request_add_header(req, "Retry-After", v);
        reject(c, req, 429, "rate_limited", "rate_limited", NULL,
               "too many requests from this address; retry later");
        return false;
    }
    if (stream_writer_backlogged(l->writer)) {
        unavailable(c, req, "stream_backlog",
                    "the event stream is over its high-water mark; retry later");
        return false;
    }
    return true;
}

/* Applies Content-Type and Content-Encoding: sets *body and *len to the decoded
 * body (borrowed from the request or the lane) and *media. Returns false once the
 * request has been answered. */
static bool decode_body(struct lane *l, struct http_request *req, bool batch, const char **body,
                        size_t *len, enum body_media *media)
{
    struct collector *c = l->c;
    *body = http_request_body(req, len);
    /* Every line: two Content-Type lines are no type, and two Content-Encoding
     * lines are a list (RFC 9110, 5.3), which is refused as one line is. */
    *media = body_media_of(http_request_header_list(req, "content-type", &l->joined));
    bool oom = l->joined.oom;
    enum body_encoding enc =
        body_encoding_of(http_request_header_list(req, "content-encoding", &l->joined));
    if (oom || l->joined.oom) {
        unavailable(c, req, "out_of_memory", "out of memory");
        return false;
    }
    if (*media == BODY_MEDIA_UNSUPPORTED || (!batch && *media == BODY_MEDIA_NDJSON)) {
        reject(c, req, 415, "unsupported_media_type", "unsupported_media_type", NULL,
               batch ? "Content-Type must be application/json, application/x-ndjson or "
                       "text/plain"
                     : "Content-Type must be application/json or text/plain");
        return false;
    }
    if (enc == BODY_ENC_UNSUPPORTED) {
        reject(c, req, 415, "unsupported_encoding", "unsupported_media_type", NULL,
               "Content-Encoding must be gzip, deflate or identity");
        return false;
    }
    if (enc == BODY_ENC_IDENTITY)
        return true;
    int rc = body_inflate(enc, *body, *len, (size_t)c->cfg->max_body_bytes, &l->inflated);
    if (rc == -EFBIG) {
        reject(c, req, 413, "payload_too_large", "payload_too_large", NULL,
               "the decompressed body is larger than ARV_MAX_BODY_BYTES");
        return false;
    }
    if (rc == -ENOMEM) {
        unavailable(c, req, "out_of_memory", "out of memory");
        return false;
    }
    if (rc < 0) {
        reject(c, req, 400, "invalid_encoding", "invalid_encoding", NULL,
               "the compressed body is corrupt or truncated");
        return false;
    }
    *body = l->inflated.data;
    *len = l->inflated.len;
    return true;
}

static void fill_context(const struct collector *c, struct http_request *req, const char *ip,
                         struct event_context *ctx)
{
    *ctx = (struct event_context){
        .user_agent_header = http_request_header(req, "user-agent"),
        .client_ip = ip,
        .now_ms = timeutil_real_ms(),
        .max_skew_ms = c->cfg->max_skew_s * 1000,
    };
}

/* ---- POST /api/analytics/ar-session ------------------------------------------- */

/* Room for the answers of respond_event_id(). */
#define EVENT_ID_BODY_MAX 192

/* Answers `status` with the JSON object `head` (len bytes, its fields up to
 * and including `"event_id":"`) closed by the event id `id`. */
static void respond_event_id(struct http_request *req, int status, const char *head, size_t len,
                             const char *id)
{
    char body[EVENT_ID_BODY_MAX];

    memcpy(body, head, len);
    memcpy(body + len, id, EVENT_UUID_LEN);
    memcpy(body + len + EVENT_UUID_LEN, "\"}", 3);
    http_respond_json(req, status, body);
}

static void xadd_done(void *arg, bool ok, const char *entry_id, const char *errstr)
{
    static const char tracked[] = "{\"status\":\"tracked\",\"event_id\":\"";
    /* The XADD may still land (a hung Redis runs it later): the answer names
     * the event id, made here if the client sent none, so that a retry with
     * it is counted once. */
    static const char unavail[] = "{\"error\":\"unavailable\",\"message\":\"the event store is "
                                  "unavailable; retry later with this event_id\",\"event_id\":\"";
    _Static_assert(sizeof(unavail) + EVENT_UUID_LEN + 2 <= EVENT_ID_BODY_MAX, "body room");
    struct pending_event *p = arg;
    struct lane *l = p->lane;
    struct collector *c = l->c;
    (void)entry_id;
    metric_add(c->inflight, -1);
    if (ok) {
        metric_inc(c->accepted);
        respond_event_id(p->req, 200, tracked, sizeof(tracked) - 1, p->event_id);
    } else {
        log_warn("xadd_failed", LF_STR("error", errstr), LF_STR("event_id", p->event_id));
        count_rejected(c, "redis_unavailable");
        http_request_add_header(p->req, "Retry-After", "1");
        respond_event_id(p->req, 503, unavail, sizeof(unavail) - 1, p->event_id);
    }
    p->next = l->free_events;
    l->free_events = p;
}

static void handle_session(struct http_request *req, void *arg)
{
    struct lane *l = arg;
    struct collector *c = l->c;
    struct event ev;
    struct event_error err;
    struct event_context ctx;
    enum body_media media;
    char ip[CLIENT_IP_LEN];
    const char *body;
    size_t len;

    if (!admit(l, req, ip) || !decode_body(l, req, false, &body, &len, &media))
        return;
    fill_context(c, req, ip, &ctx);
    if (!event_parse_client(body, len, &ctx, &ev, &err)) {
        if (strcmp(err.code, "internal") == 0) /* out of memory: not the client's fault */
            unavailable(c, req, "out_of_memory", "out of memory");
        else
            reject(c, req, 400, err.code, err.code, err.field, err.message);
        return;
    }
    strbuf_reset(&l->json);
    event_to_stream(&ev, &l->json);
    struct pending_event *p = l->free_events;
    if (p)
        l->free_events = p->next;
    else
        p = malloc(sizeof(*p));
    if (!p || l->json.oom) {
        free(p);
        l->json.oom = false;
        unavailable(c, req, "out_of_memory", "out of memory");
        return;
    }
    p->lane = l;
    p->req = req;
    memcpy(p->event_id, ev.event_id, sizeof(p->event_id));
    if (stream_writer_push(l->writer, &ev, l->json.data, l->json.len, xadd_done, p) < 0) {
        p->next = l->free_events;
        l->free_events = p;
        unavailable(c, req, "redis_unavailable", "the event store is unavailable; retry later");
        return;
    }
    metric_add(c->inflight, 1);
}

/* ---- POST /api/analytics/ar-sessions ------------------------------------------ */

/* Appends a decimal number without printf (it runs once per batch element). */
static void put_size(struct strbuf *sb, size_t v)
{
    char buf[24];
    char *p = buf + sizeof(buf);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    strbuf_append(sb, p, (size_t)(buf + sizeof(buf) - p));
}

/* All XADDs answered: 200 when at least one event is stored; 503 when none is
 * but some could not be stored for want of Redis; 400 when every one is invalid. */
static void batch_finish(struct batch_req *br)
{
    struct lane *l = br->lane;
    struct collector *c = l->c;
    struct strbuf *sb = &l->answer;
    size_t accepted = 0, rejected = 0, unavail = 0;

    if (br->sent) {
        metric_add(c->inflight, -(double)br->sent);
        metric_add(c->accepted, (double)br->stored);
    }
    if (br->xadd_error[0])
        log_warn("xadd_failed", LF_STR("error", br->xadd_error),
                 LF_INT("events", (long long)(br->sent - br->stored)));
    strbuf_reset(sb);
    strbuf_puts(sb, "{\"results\":[");
    for (size_t i = 0; i < br->n; i++) {
        const struct batch_slot *s = &br->slots[i];
        if (i)
            strbuf_putc(sb, ',');
        strbuf_puts(sb, "{\"index\":");
        put_size(sb, i);
        strbuf_puts(sb, ",\"status\":");
        switch (s->status) {
        case ITEM_TRACKED:
            accepted++;
            strbuf_puts(sb, "\"tracked\",\"event_id\":\"");
            strbuf_append(sb, s->event_id, EVENT_UUID_LEN); /* canonical: no escaping */
            strbuf_putc(sb, '"');
            break;
        case ITEM_REJECTED:
            rejected++;
            count_rejected(c, s->err_code);
            strbuf_puts(sb, "\"rejected\",\"error\":");
            strbuf_json_str(sb, s->err_code);
            if (s->err_field) {
                strbuf_puts(sb, ",\"field\":");
                strbuf_json_str(sb, s->err_field);
            }
            strbuf_puts(sb, ",\"message\":");
            strbuf_json_str(sb, s->err_message);
            break;
        default:
            unavail++;
            count_rejected(c, "redis_unavailable");
            strbuf_puts(sb, "\"unavailable\",\"event_id\":\"");
            strbuf_append(sb, s->event_id, EVENT_UUID_LEN);
            strbuf_putc(sb, '"');
            break;
        }
        strbuf_putc(sb, '}');
    }
    strbuf_puts(sb, "],\"accepted\":");
    put_size(sb, accepted);
    strbuf_puts(sb, ",\"rejected\":");
    put_size(sb, rejected);
    strbuf_puts(sb, ",\"unavailable\":");
    put_size(sb, unavail);
    int status = 200;
    if (accepted == 0 && unavail > 0) {
        status = 503;
        strbuf_puts(sb, ",\"error\":\"unavailable\",\"message\":\"the event store is "
                        "unavailable; retry later\"");
    } else if (accepted == 0) {
        status = 400;
        strbuf_puts(sb, ",\"error\":\"invalid_batch\",\"message\":\"no event in the batch "
                        "is valid\"");
    }
    strbuf_putc(sb, '}');
    if (unavail > 0)
        http_request_add_header(br->req, "Retry-After", "1");
    if (sb->oom)
        http_respond_error(br->req, 500, "internal_error", NULL, "out of memory");
    else
        http_respond(br->req, status, "application/json", sb->data, sb->len);
    sb->oom = false;
    if (l->nfree_batches < BATCH_POOL_MAX) {
        br->next = l->free_batches;
        l->free_batches = br;
        l->nfree_batches++;
    } else {
        free(br);
    }
}

/* A batch record with room for n results: recycled (a malloc of this size per
 * request would also make glibc consolidate its small chunks every time). */
static struct batch_req *batch_req_get(struct lane *l, size_t n)
{
    struct batch_req *br = l->free_batches;
    if (br) {
        l->free_batches = br->next;
        l->nfree_batches--;
        if (br->cap >= n)
            return br;
        free(br);
    }
    br = malloc(sizeof(*br) + n * sizeof(br->slots[0]));
    if (br)
        br->cap = n;
    return br;
}

static void batch_xadd_done(void *arg, bool ok, const char *entry_id, const char *errstr)
{
    struct batch_slot *s = arg;
    struct batch_req *br = s->br;
    (void)entry_id;
    if (ok) {
        br->stored++;
        s->status = ITEM_TRACKED;
    } else {
        s->status = ITEM_UNAVAILABLE;
        if (!br->xadd_error[0])
            snprintf(br->xadd_error, sizeof(br->xadd_error), "%s", errstr ? errstr : "unknown");
    }
    if (--br->remaining == 0)
        batch_finish(br);
}

static void handle_batch(struct http_request *req, void *arg)
{
    struct lane *l = arg;
    struct collector *c = l->c;
    struct event_error err;
    struct event_context ctx;
    enum body_media media;
    char ip[CLIENT_IP_LEN];
    const char *body;
    size_t len;
    char msg[96];

    if (!admit(l, req, ip) || !decode_body(l, req, true, &body, &len, &media))
        return;
    fill_context(c, req, ip, &ctx);
    struct ingest_batch *b = &l->batch;
    int rc = ingest_batch_parse_reuse(body, len, media != BODY_MEDIA_JSON,
                                      (size_t)c->cfg->max_batch, &ctx, b, &err);
    struct batch_req *br = NULL;
    if (rc == 0) {
        br = batch_req_get(l, b->n);
        if (!br)
            rc = -ENOMEM;
    }
    if (rc < 0 || !br) {
        if (rc == -E2BIG) {
            snprintf(msg, sizeof(msg), "a batch holds at most %ld events (ARV_MAX_BATCH)",
                     c->cfg->max_batch);
            reject(c, req, 413, "batch_too_large", "payload_too_large", NULL, msg);
        } else if (rc == -ENOMEM) {
            unavailable(c, req, "out_of_memory", "out of memory");
        } else {
            reject(c, req, 400, err.code, err.code, err.field, err.message);
        }
        return;
    }
    br->lane = l;
    br->req = req;
    br->n = b->n;
    br->sent = br->remaining = br->stored = 0;
    br->xadd_error[0] = '\0';
    metric_observe(c->batch_events, (double)b->n);
    /* Every XADD goes out in this loop turn: hiredis writes them as one pipeline.
     * `remaining` holds one extra count until the loop ends, so that no answer
     * can finish the batch while it is still being sent. */
    br->remaining = 1;
    for (size_t i = 0; i < b->n; i++) {
        const struct ingest_batch_item *it = &b->items[i];
        struct batch_slot *s = &br->slots[i];
        s->br = br;
        if (!it->ok) {
            s->status = ITEM_REJECTED;
            s->err_code = it->err.code;
            s->err_field = it->err.field;
            memcpy(s->err_message, it->err.message, sizeof(s->err_message));
            continue;
        }
        memcpy(s->event_id, it->ev.event_id, sizeof(s->event_id));
        strbuf_reset(&l->json);
        event_to_stream(&it->ev, &l->json);
        if (l->json.oom || stream_writer_push(l->writer, &it->ev, l->json.data, l->json.len,
                                              batch_xadd_done, s) < 0) {
            l->json.oom = false;
            s->status = ITEM_UNAVAILABLE;
            continue;
        }
        s->status = ITEM_SENT;
        br->sent++;
        br->remaining++;
    }
    if (br->sent)
        metric_add(c->inflight, (double)br->sent);
    if (--br->remaining == 0)
        batch_finish(br);
}

/* ---- readiness ------------------------------------------------------------------ */

/* Ready only when every loop's Redis connections are up: a probe answered by
 * one loop must not hide another loop that would still answer POSTs with 503. */
static bool redis_ready(void *arg, const char **detail)
{
    struct lane *l = arg;
    if (!stream_writer_is_up(l->writer, detail))
        return false;
    for (int i = 0; i < l->c->nlanes; i++) {
        if (&l->c->lanes[i] != l && l->c->lanes[i].writer &&
            !stream_writer_is_up(l->c->lanes[i].writer, NULL)) {
            *detail = "not connected on another event loop";
            return false;
        }
    }
    return true;
}

static bool backlog_ready(void *arg, const char **detail)
{
    struct lane *l = arg;
    if (!stream_writer_backlogged(l->writer))
        return true;
    *detail = "stream over ARV_STREAM_HIGH_WATER";
    return false;
}

/* ---- lanes and threads ------------------------------------------------------------ */

static void lane_drain_poll(evutil_socket_t fd, short what, void *arg)
{
    struct lane *l = arg;
    struct collector *c = l->c;
    (void)fd;
    (void)what;
    bool done = stream_writer_pending(l->writer) == 0;
    if (l->index == 0) {
        for (int i = 1; i < c->nlanes && done; i++)
            done = atomic_load(&c->lanes[i].finished);
        if (done) {
            service_stopped(c->svc);
            return;
        }
    } else if (done && http_server_inflight(l->http) == 0) {
        event_base_loopexit(l->base, NULL);
        return;
    }
    struct timeval tv = {0, DRAIN_POLL_MS * 1000};
    evtimer_add(l->drain_ev, &tv);
}

/* Runs on a worker's loop when thread 0 got the stop signal. */
static void lane_stop(evutil_socket_t fd, short what, void *arg)
{
    struct lane *l = arg;
    (void)fd;
    (void)what;
    l->stopping = true;
    health_set_draining(l->health);
    http_server_stop_accepting(l->http);
    lane_drain_poll(-1, 0, l);
}

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    event_base_dispatch(l->base);
    atomic_store(&l->finished, true);
    return NULL;
}

/* Sets up lane `i`: lane 0 borrows the service's loop, server and health. */
static int lane_init(struct collector *c, int i, char *err, size_t errlen)
{
    struct lane *l = &c->lanes[i];
    struct service *svc = c->svc;
    const struct collector_config *cfg = c->cfg;

    l->c = c;
    l->index = i;
    strbuf_init(&l->json);
    strbuf_init(&l->inflated);
    strbuf_init(&l->answer);
    strbuf_init(&l->joined);
    atomic_init(&l->finished, false);
    if (i == 0) {
        l->base = svc->base;
        l->http = svc->http;
        l->health = svc->health;
    } else {
        l->base = event_base_new();
        l->http = l->base ? http_server_new(l->base, &cfg->limits, svc->metrics) : NULL;
        l->health = l->http ? health_new(l->http, svc->metrics, svc->name, cfg->common.env) : NULL;
        l->stop_ev = l->base ? event_new(l->base, -1, 0, lane_stop, l) : NULL;
        if (!l->stop_ev || !l->health) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        int rc = http_server_listen_beside(l->http, svc->http);
        if (rc < 0) {
            snprintf(err, errlen, "thread %d cannot listen: %s", i, strerror(-rc));
            return rc;
        }
    }
    l->drain_ev = evtimer_new(l->base, lane_drain_poll, l);
    l->writer = stream_writer_new(l->base, svc->metrics, cfg->common.redis_url, cfg->common.stream,
                                  cfg->common.stream_shards, err, errlen);
    if (!l->drain_ev || !l->writer)
        return l->drain_ev ? -EINVAL : -ENOMEM;
    stream_writer_set_high_water(l->writer, cfg->stream_high_water);
    stream_writer_set_timeout(l->writer, (unsigned)cfg->redis_timeout_ms);
    stream_writer_set_max_pending(l->writer, (size_t)cfg->redis_max_pending);
    if (health_add_check(l->health, "redis", redis_ready, l) < 0 ||
        health_add_check(l->health, "stream_backlog", backlog_ready, l) < 0 ||
        http_server_route(l->http, HTTP_POST | HTTP_OPTIONS, "/api/analytics/ar-session", false,
                          handle_session, l) < 0 ||
        http_server_route(l->http, HTTP_POST | HTTP_OPTIONS, "/api/analytics/ar-sessions", false,
                          handle_batch, l) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    http_server_on_error(l->http, cors_on_error, l->c);
    return 0;
}

static int lane_start(struct lane *l, char *err, size_t errlen)
{
    sigset_t all, old;
    /* Signals belong to thread 0's loop. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, lane_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
        return -rc;
    }
    l->started = true;
    return 0;
}

/* Ends the lane's thread if it still runs (a forced exit, or a start that
 * failed part way): breaks its loop, repeatedly in case it had not yet
 * entered dispatch, and waits for it. */
static void lane_join(struct lane *l)
{
    if (!l->c || !l->started)
        return;
    while (!atomic_load(&l->finished)) {
        event_base_loopbreak(l->base);
        usleep(1000);
    }
    pthread_join(l->thread, NULL);
    l->started = false;
}

static void lane_deinit(struct lane *l)
{
    if (!l->c)
        return;
    lane_join(l);
    /* The writer first: its unanswered callbacks still answer requests. */
    stream_writer_free(l->writer);
    if (l->drain_ev)
        event_free(l->drain_ev);
    if (l->index > 0) {
        if (l->stop_ev)
            event_free(l->stop_ev);
        http_server_free(l->http);
        health_free(l->health);
        if (l->base)
            event_base_free(l->base);
    }
    while (l->free_events) {
        struct pending_event *p = l->free_events;
        l->free_events = p->next;
        free(p);
    }
    strbuf_deinit(&l->json);
    strbuf_deinit(&l->inflated);
    strbuf_deinit(&l->answer);
    strbuf_deinit(&l->joined);
    ingest_batch_deinit(&l->batch);
    while (l->free_batches) {
        struct batch_req *br = l->free_batches;
        l->free_batches = br->next;
        free(br);
    }
}

/* One event loop per CPU the process may run on (its affinity: taskset, a
 * container's cpuset), not per CPU of the machine. */
static int thread_count(long configured)
{
    cpu_set_t set;
    long n = configured > 0                                 ? configured
             : sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                            : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > COLLECTOR_MAX_THREADS ? COLLECTOR_MAX_THREADS : (int)n;
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
    if (!client_ip_parse_trust(cfg->trusted_proxies, &c->trust, err, errlen) ||
        !cors_parse(cfg->cors_origins, &c->cors, err, errlen))
        goto fail;
    if (cfg->rate_limit_rps > 0) {
        c->limiter = rate_limit_new((double)cfg->rate_limit_rps, (double)cfg->rate_limit_burst,
                                    RATE_LIMIT_SLOTS);
        if (!c->limiter) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    c->rejected = metrics_counter(svc->metrics, "collector_events_rejected_total",
                                  "Events refused, by reason", "reason");
    c->accepted = metric_family_single(metrics_counter(
        svc->metrics, "collector_events_accepted_total", "Events acknowledged by Redis", NULL));
    c->inflight = metric_family_single(
        metrics_gauge(svc->metrics, "collector_xadd_inflight", "XADDs awaiting an answer", NULL));
    c->batch_events = metric_family_single(
        metrics_histogram(svc->metrics, "collector_batch_events", "Events per batch request", NULL,
                          batch_buckets, sizeof(batch_buckets) / sizeof(batch_buckets[0])));
    int n = thread_count(cfg->threads);
    /* Each thread's server takes as many connections. */
    service_expect_connections(svc, (size_t)n * cfg->limits.max_connections);
    c->lanes = calloc((size_t)n, sizeof(*c->lanes));
    if (!c->lanes) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->nlanes = n;
    /* Order: every lane set up (listening, routes) before any worker runs. */
    for (int i = 0; i < n; i++) {
        if (lane_init(c, i, err, errlen) < 0)
            goto fail;
    }
    for (int i = 1; i < n; i++) {
        if (lane_start(&c->lanes[i], err, errlen) < 0)
            goto fail;
    }
    log_info("collector_started", LF_INT("threads", n), LF_INT("max_batch", cfg->max_batch),
             LF_INT("trusted_proxies", (long long)c->trust.n),
             LF_INT("rate_limit_rps", cfg->rate_limit_rps),
             LF_INT("stream_high_water", cfg->stream_high_water));
    return c;
fail:
    collector_free(c);
    return NULL;
}

void collector_stop(void *arg)
{
    struct collector *c = arg;
    c->lanes[0].stopping = true;
    for (int i = 1; i < c->nlanes; i++)
        event_active(c->lanes[i].stop_ev, EV_TIMEOUT, 1);
    lane_drain_poll(-1, 0, &c->lanes[0]);
}

void collector_free(struct collector *c)
{
    if (!c)
        return;
    /* Every thread ends before any lane is freed: a readiness probe on one
     * loop reads every lane's writer. */
    for (int i = c->nlanes - 1; i >= 0; i--)
        lane_join(&c->lanes[i]);
    for (int i = c->nlanes - 1; i >= 0; i--)
        lane_deinit(&c->lanes[i]);
    free(c->lanes);
    rate_limit_free(c->limiter);
    free(c);
}
