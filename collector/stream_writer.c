/* Appends normalised events to the Redis stream(s) with XADD, routed by session
 * (the node) and content (the shard on it). */
#include "stream_writer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "event.h"
#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "strbuf.h"
#include "timeutil.h"

#define BACKLOG_POLL_MS 500

struct stream_writer {
    struct redis_conn *nodes[STREAM_WRITER_MAX_NODES]; /* one connection per Redis node */
    int nnodes;
    size_t max_pending; /* XADDs awaiting a node's answer, at most (0: no limit) */
    char stream[STREAM_WRITER_NAME_MAX + 1]; /* base stream name */
    long shards;               /* streams per base name (>= 1), spread over the nodes */
    struct metric *xadd_ok;    /* collector_xadd_total{outcome="ok"} */
    struct metric *xadd_error; /* collector_xadd_total{outcome="error"} */
    struct metric *xadd_time;  /* collector_xadd_duration_seconds */
    struct metric *reconnects; /* collector_redis_reconnects_total */
    struct metric *length;     /* collector_stream_length (longest shard) */
    struct push *free_pushes;  /* recycled push records */
    char **xadd_prefix;        /* per shard: RESP of "XADD <stream> * v 1 e" */
    size_t *xadd_prefix_len;   /* per shard: its length */
    struct strbuf cmd;         /* one XADD in RESP, reused */
    struct event *poll_ev;     /* backlog / connection poll */
    long high_water;           /* entries per shard; 0: no backlog limit */
    long *lens;                /* last XLEN of each shard */
    bool over;                 /* some shard is past high_water */
    unsigned long connects[STREAM_WRITER_MAX_NODES]; /* each node's connects counted so far */
    size_t polls_on[STREAM_WRITER_MAX_NODES];        /* XLENs awaiting each node: not XADDs, so
                                                      * not counted against max_pending */
};

struct push {
    stream_writer_done_cb *cb;
    void *arg;
    struct stream_writer *w;
    struct push *next; /* free list link */
    double sent;       /* timeutil_mono_s(), for collector_xadd_duration_seconds */
};

/* An XLEN of one shard in flight. */
struct xlen_poll {
    struct stream_writer *w;
    long shard;
};

/* The shard of `ev` among `shards` on `nodes` nodes: see stream_writer_route. */
static long shard_of(long shards, int nodes, const struct event *ev)
{
    char key[EVENT_CONTENT_KEY_MAX];

    if (shards <= 1)
        return 0;
    /* The session picks the node, so that one hot content still spreads over
     * every node; the content picks the shard on it, so that one content's
     * rollup rows come from one shard per node, each read by the aggregator
     * worker that owns it. */
    uint32_t n = (uint32_t)(nodes < shards ? nodes : shards);
    uint32_t k = strbuf_fnv1a(ev->session_id, strlen(ev->session_id)) % n;
    uint32_t on_node = ((uint32_t)shards - k + n - 1) / n; /* shards k, k + n, ... */
    size_t len = event_content_key(ev, key, sizeof(key));
    return (long)(k + n * (strbuf_fnv1a(key, len) % on_node));
}

/* The stream name of `shard`: ARV_STREAM, or ARV_STREAM:{shard} when sharded. */
static void shard_name(const char *stream, long shards, long shard, char *out, size_t outlen)
{
    if (shards <= 1)
        snprintf(out, outlen, "%s", stream);
    else
        snprintf(out, outlen, "%s:%ld", stream, shard);
}

int stream_writer_route(const char *stream, long shards, int nodes, const struct event *ev,
                        char *out, size_t outlen)
{
    long shard = shard_of(shards, nodes, ev);
    shard_name(stream, shards, shard, out, outlen);
    return (int)(shard % nodes);
}

/* Appends one RESP bulk string. */
static void resp_bulk(struct strbuf *sb, const char *s, size_t n)
{
    char len[32];
    char *p = len + sizeof(len);
    *--p = '\n';
    *--p = '\r';
    size_t v = n;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    *--p = '$';
    strbuf_append(sb, p, (size_t)(len + sizeof(len) - p));
    strbuf_append(sb, s, n);
    strbuf_append(sb, "\r\n", 2);
}

/* Formats every shard's XADD up to the event's length once: a push then only
 * appends "$<len>\r\n<json>\r\n". */
static int xadd_prefixes_init(struct stream_writer *w)
{
    struct strbuf sb;
    char name[300];
    int rc = 0;

    w->xadd_prefix = calloc((size_t)w->shards, sizeof(*w->xadd_prefix));
    w->xadd_prefix_len = calloc((size_t)w->shards, sizeof(*w->xadd_prefix_len));
    if (!w->xadd_prefix || !w->xadd_prefix_len)
        return -ENOMEM;
    strbuf_init(&sb);
    for (long i = 0; i < w->shards && rc == 0; i++) {
        shard_name(w->stream, w->shards, i, name, sizeof(name));
        strbuf_reset(&sb);
        strbuf_puts(&sb, "*7\r\n");
        resp_bulk(&sb, "XADD", 4);
        resp_bulk(&sb, name, strlen(name));
        resp_bulk(&sb, "*", 1);
        resp_bulk(&sb, "v", 1);
        resp_bulk(&sb, EVENT_SCHEMA_VERSION, strlen(EVENT_SCHEMA_VERSION));
        resp_bulk(&sb, "e", 1);
        w->xadd_prefix_len[i] = sb.len;
        w->xadd_prefix[i] = sb.oom ? NULL : strbuf_steal(&sb);
        if (!w->xadd_prefix[i])
            rc = -ENOMEM;
    }
    strbuf_deinit(&sb);
    return rc;
}

/* A round of XLENs is in: the longest shard against the high-water mark. */
static void backlog_update(struct stream_writer *w)
{
    long longest = 0;
    for (long i = 0; i < w->shards; i++) {
        if (w->lens[i] > longest)
            longest = w->lens[i];
    }
    metric_set(w->length, (double)longest);
    bool over = w->high_water > 0 && longest > w->high_water;
    if (over != w->over)
        log_warn(over ? "stream_backlog_high" : "stream_backlog_recovered",
                 LF_INT("length", longest), LF_INT("high_water", w->high_water));
    w->over = over;
}

/* XLEN replies awaited, on every node. */
static size_t polls_out(const struct stream_writer *w)
{
    size_t n = 0;
    for (int i = 0; i < w->nnodes; i++)
        n += w->polls_on[i];
    return n;
}

static void xlen_done(void *arg, struct redisReply *reply, const char *errstr)
{
    struct xlen_poll *p = arg;
    struct stream_writer *w = p->w;
    (void)errstr;
    w->polls_on[p->shard % w->nnodes]--;
    /* A shard whose length is not known now (its node down, an error reply)
     * counts as empty: an old length would keep refusing the events of the
     * other nodes' shards for as long as its node is away (its own events
     * fail as Redis unavailable meanwhile). */
    w->lens[p->shard] = reply && reply->type == REDIS_REPLY_INTEGER ? (long)reply->integer : 0;
    free(p);
    if (polls_out(w) == 0)
        backlog_update(w);
}

/* Every BACKLOG_POLL_MS: counts reconnects, and asks every shard its length on
 * the same connection as the XADDs (a pipelined XLEN costs nothing noticeable). */
static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
    struct stream_writer *w = arg;
    char stream[300];
    (void)fd;
    (void)what;
    for (int i = 0; i < w->nnodes; i++) {
        unsigned long n = redis_conn_connects(w->nodes[i]);
        /* The first connect is none. */
        if (n > w->connects[i])
            metric_add(w->reconnects, (double)(n - w->connects[i] - (w->connects[i] == 0)));
        w->connects[i] = n;
    }
    if (polls_out(w) > 0)
        return; /* the previous round is still out */
    for (long s = 0; s < w->shards; s++) {
        shard_name(w->stream, w->shards, s, stream, sizeof(stream));
        struct xlen_poll *p = malloc(sizeof(*p));
        if (!p)
            return;
        p->w = w;
        p->shard = s;
        const char *argv[] = {"XLEN", stream};
        const size_t argvlen[] = {4, strlen(stream)};
        w->polls_on[s % w->nnodes]++;
        if (redis_conn_command(w->nodes[s % w->nnodes], xlen_done, p, 2, argv, argvlen) < 0) {
            w->polls_on[s % w->nnodes]--;
            w->lens[s] = 0; /* not known now: see xlen_done */
            free(p);
        }
    }
    if (polls_out(w) == 0)
        backlog_update(w); /* none could be sent */
}

struct stream_writer *stream_writer_new(struct event_base *base, struct metrics *m,
                                        const char *redis_urls, const char *stream, long shards,
                                        char *err, size_t errlen)
{
    struct redis_url urls[STREAM_WRITER_MAX_NODES];
    int n = redis_url_parse_list(redis_urls, urls, STREAM_WRITER_MAX_NODES);
    if (n <= 0) {
        /* Not echoed: it may hold a password. */
        snprintf(err, errlen, "REDIS_URL: invalid list (expected redis://host:port/db, ...)");
        return NULL;
    }
    if (strlen(stream) > STREAM_WRITER_NAME_MAX) {
        snprintf(err, errlen, "ARV_STREAM: longer than %d bytes", STREAM_WRITER_NAME_MAX);
        return NULL;
    }
    struct stream_writer *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(w->stream, sizeof(w->stream), "%s", stream);
    w->shards = shards > 1 ? shards : 1; /* 0 and 1 both mean one stream */
    struct metric_family *xadd =
        metrics_counter(m, "collector_xadd_total", "XADD commands answered, by outcome", "outcome");
    w->xadd_ok = metric_family_child(xadd, (const char *const[]){"ok"});
    w->xadd_error = metric_family_child(xadd, (const char *const[]){"error"});
    w->xadd_time = metric_family_single(
        metrics_histogram(m, "collector_xadd_duration_seconds", "Time from XADD sent to answer",
                          NULL, metrics_latency_buckets, metrics_latency_buckets_len));
    w->reconnects = metric_family_single(
        metrics_counter(m, "collector_redis_reconnects_total",
                        "Redis connections re-established after a loss", NULL));
    w->length = metric_family_single(metrics_gauge(
        m, "collector_stream_length", "Entries in the longest stream shard (last poll)", NULL));
    strbuf_init(&w->cmd);
    w->lens = calloc((size_t)w->shards, sizeof(*w->lens));
    if (!w->lens || xadd_prefixes_init(w) < 0) {
        snprintf(err, errlen, "out of memory");
        stream_writer_free(w);
        return NULL;
    }
    w->poll_ev = event_new(base, -1, EV_PERSIST, poll_tick, w);
    struct timeval tv = {0, BACKLOG_POLL_MS * 1000};
    if (!w->poll_ev || event_add(w->poll_ev, &tv) < 0) {
        snprintf(err, errlen, "out of memory");
        stream_writer_free(w);
        return NULL;
    }
    /* Shard i lives on node i % nodes, with as many nodes as shards at most
     * (as the aggregator reads them): a URL past those would hold no shard,
     * yet its outage would make the collector not ready. */
    if (n > shards) {
        log_warn("redis_urls_unused", LF_INT("urls", n), LF_INT("shards", shards),
                 LF_STR("detail", "only the first ARV_STREAM_SHARDS nodes hold a shard"));
        n = (int)shards;
    }
    for (int i = 0; i < n; i++) {
        w->nodes[i] = redis_conn_new(base, &urls[i], "stream");
        if (!w->nodes[i]) {
            snprintf(err, errlen, "out of memory");
            stream_writer_free(w);
            return NULL;
        }
        w->nnodes++;
    }
    return w;
}

static void push_done(void *arg, struct redisReply *reply, const char *errstr)
{
    struct push *p = arg;
    metric_observe(p->w->xadd_time, timeutil_mono_s() - p->sent);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        metric_inc(p->w->xadd_ok);
        p->cb(p->arg, true, reply->str, NULL);
    } else {
        metric_inc(p->w->xadd_error); /* READONLY: redis_conn reconnects */
        p->cb(p->arg, false, NULL,
              reply && reply->type == REDIS_REPLY_ERROR ? reply->str
                                                        : (errstr ? errstr : "no reply"));
    }
    p->next = p->w->free_pushes;
    p->w->free_pushes = p;
}

int stream_writer_push(struct stream_writer *w, const struct event *ev, const char *json,
                       size_t len, stream_writer_done_cb *cb, void *arg)
{
    long shard = shard_of(w->shards, w->nnodes, ev);
    int node = (int)(shard % w->nnodes);
    /* The node's commands in flight (those answered "command timed out" but
     * still in its queue included), its XLEN polls apart. */
    size_t inflight = redis_conn_pending(w->nodes[node]), polls = w->polls_on[node];
    if (w->max_pending && inflight > polls && inflight - polls >= w->max_pending)
        return -EBUSY;
    struct push *p = w->free_pushes;
    if (p)
        w->free_pushes = p->next;
    else
        p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->cb = cb;
    p->arg = arg;
    p->w = w;
    p->sent = timeutil_mono_s();
    strbuf_reset(&w->cmd);
    strbuf_append(&w->cmd, w->xadd_prefix[shard], w->xadd_prefix_len[shard]);
    resp_bulk(&w->cmd, json, len);
    int rc = -ENOMEM;
    if (!w->cmd.oom)
        rc = redis_conn_command_formatted(w->nodes[node], push_done, p, w->cmd.data, w->cmd.len);
    w->cmd.oom = false;
    if (rc < 0) {
        p->next = w->free_pushes;
        w->free_pushes = p;
    }
    return rc;
}

void stream_writer_set_max_pending(struct stream_writer *w, size_t max)
{
    w->max_pending = max;
}

void stream_writer_set_timeout(struct stream_writer *w, unsigned timeout_ms)
{
    for (int i = 0; i < w->nnodes; i++)
        redis_conn_set_timeout(w->nodes[i], timeout_ms);
}

bool stream_writer_is_up(const struct stream_writer *w, const char **detail)
{
    for (int i = 0; i < w->nnodes; i++) {
        if (!redis_conn_is_up(w->nodes[i])) {
            if (detail) {
                *detail = redis_conn_errstr(w->nodes[i]);
                if (!**detail)
                    *detail = "not connected";
            }
            return false;
        }
    }
    return true;
}

void stream_writer_set_high_water(struct stream_writer *w, long high_water)
{
    w->high_water = high_water;
}

bool stream_writer_backlogged(const struct stream_writer *w)
{
    return w->over;
}

size_t stream_writer_pending(const struct stream_writer *w)
{
    size_t n = 0;
    for (int i = 0; i < w->nnodes; i++)
        n += redis_conn_pending(w->nodes[i]);
    return n;
}

void stream_writer_free(struct stream_writer *w)
{
    if (!w)
        return;
    if (w->poll_ev)
        event_free(w->poll_ev);
    /* Runs the callbacks of unanswered commands, which still use `w`. */
    for (int i = 0; i < w->nnodes; i++)
        redis_conn_free(w->nodes[i]);
    while (w->free_pushes) {
        struct push *p = w->free_pushes;
        w->free_pushes = p->next;
        free(p);
    }
    if (w->xadd_prefix) {
        for (long i = 0; i < w->shards; i++)
            free(w->xadd_prefix[i]);
    }
    free(w->xadd_prefix);
    free(w->xadd_prefix_len);
    strbuf_deinit(&w->cmd);
    free(w->lens);
    free(w);
}
