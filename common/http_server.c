/* The HTTP/1.1 server every daemon shares: raw accept, one read event per
 * connection, llhttp parsing, answers written with send(2) strictly in order. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif
#include "http_server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

/* llhttp's method enumerators (HTTP_GET, ...) collide with enum http_method:
 * include it with its colliding names renamed. */
#define HTTP_DELETE  LLHTTP_M_DELETE
#define HTTP_GET     LLHTTP_M_GET
#define HTTP_HEAD    LLHTTP_M_HEAD
#define HTTP_POST    LLHTTP_M_POST
#define HTTP_PUT     LLHTTP_M_PUT
#define HTTP_OPTIONS LLHTTP_M_OPTIONS
#include <llhttp.h>
#undef HTTP_DELETE
#undef HTTP_GET
#undef HTTP_HEAD
#undef HTTP_POST
#undef HTTP_PUT
#undef HTTP_OPTIONS

#include "log.h"
#include "metrics.h"
#include "strbuf.h"
#include "timeutil.h"
#include "urlcode.h"

#define READ_CHUNK      65536  /* one recv(2) into the server's shared buffer */
#define CONN_IN_MAX     65536  /* unparsed bytes buffered at most (pipelined requests) */
#define CONN_OUT_HIGH   262144 /* unsent output past which no new request is parsed */
#define KEEP_BUF_MAX    65536  /* larger per-request buffers are freed after the answer */
#define LINGER_MS       2000   /* reading and discarding after a closing answer */
#define STOP_FLUSH_MS   3000   /* a stop waits this long for clients to take answers */
#define ACCEPT_BATCH    64     /* accept(2) calls per listener wake-up */
#define ACCEPT_PAUSE_MS 100    /* out of descriptors: retry accepting after this */
#define LISTEN_BACKLOG  1024

/* The default limits with a body of at most `body` bytes. */
#define LIMITS_WITH_BODY(body)                                                                     \
    {                                                                                              \
        .max_header_bytes = 16 * 1024, .max_body_bytes = (body), .max_connections = 10000,         \
        .idle_timeout_ms = 60 * 1000, .request_timeout_ms = 10 * 1000,                             \
        .max_buffered_bytes = 256 << 20,                                                           \
    }
const struct http_server_limits http_server_default_limits = LIMITS_WITH_BODY(1024 * 1024);
const struct http_server_limits http_server_get_limits = LIMITS_WITH_BODY(16 * 1024);

/* Method labels for metrics, indexed by the bit position of enum http_method. */
enum { METHOD_COUNT = 7 };
static const char *const method_labels[METHOD_COUNT] = {"GET",    "HEAD",    "POST", "PUT",
                                                        "DELETE", "OPTIONS", "OTHER"};

enum conn_state {
    CONN_IDLE,    /* between requests */
    CONN_READING, /* a request has begun and is not complete */
    CONN_WAITING, /* a complete request is with its handler */
    CONN_CLOSING, /* sending the last answer; closes after it */
    CONN_LINGER   /* write side shut down; discarding input until EOF or timeout */
};

struct status_counter {
    int status;              /* HTTP status */
    unsigned method;         /* index into method_labels */
    struct metric *m;        /* http_requests_total child */
    struct metric *duration; /* http_request_duration_seconds child (route and status) */
};

/* Metric children of one route, cached so requests never take the registry lock
 * once a (method, status) pair has been seen. */
struct route_stats {
    const char *label;               /* route path, or "unmatched"; borrowed */
    struct status_counter *counters; /* seen (method, status) pairs */
    size_t ncounters;                /* used entries */
    size_t counters_cap;             /* allocated entries */
};

struct route {
    unsigned methods;         /* mask of enum http_method */
    const char *path;         /* borrowed */
    size_t len;               /* strlen(path) */
    bool prefix;              /* match paths starting with `path` */
    http_handler *h;          /* the handler */
    void *arg;                /* passed to h */
    struct route_stats stats; /* metrics of this route */
};

struct header {
    size_t name;      /* offset of the NUL-terminated name in the arena */
    size_t name_len;  /* its length */
    size_t value;     /* offset of the NUL-terminated value */
    size_t value_len; /* its length */
};

struct conn;

struct http_request {
    struct http_server *srv;     /* owner */
    struct conn *conn;           /* NULL once the client has gone */
    struct http_request *prev;   /* orphan list (client gone, not answered) */
    struct http_request *next;   /* orphan list */
    char *arena;                 /* URL, header names and values, body; NUL-separated */
    size_t len;                  /* arena bytes used */
    size_t cap;                  /* arena bytes allocated */
    struct header *hdrs;         /* headers, in arrival order */
    size_t nhdrs;                /* used entries */
    size_t nhdrs_done;           /* of them, those whose value is complete (the rest:
                                  * cut off by an error, neither ended nor NUL-terminated) */
    size_t hdrs_cap;             /* allocated entries */
    size_t url;                  /* offset of the URL in the arena */
    size_t body;                 /* offset of the body in the arena */
    size_t body_len;             /* body length */
    const char *path;            /* set when complete: raw path */
    const char *query;           /* set when complete: after '?', or "" */
    const char *body_ptr;        /* set when complete: NUL-terminated body */
    struct strbuf extra;         /* response headers added by the handler */
    struct route *route;         /* matched by path, or NULL */
    struct route_stats *stats;   /* route's or the server's "unmatched" */
    uint64_t start_us;           /* first byte of the request (timeutil_mono_us) */
    enum http_method method;     /* parsed method */
    unsigned method_idx;         /* index into method_labels */
    const char *method_name;     /* method text for logs */
    char peer[INET6_ADDRSTRLEN]; /* numeric client address */
    bool keep_alive;             /* the client allows another request */
    bool pending;                /* dispatched and not answered yet */
    bool in_field;               /* a header name is being received */
    bool in_value;               /* a header value is being received */
    bool in_trailers;            /* headers done: further header callbacks are a
                                  * chunked body's trailer, counted, not kept */
    bool url_done;               /* the URL is complete */
};

struct conn {
    struct http_server *srv;     /* owner */
    int fd;                      /* the socket */
    struct event *ev_read;       /* persistent read event */
    struct event *ev_write;      /* added only while the socket buffer is full */
    struct event *ev_parse;      /* activated to parse buffered input: never ev_read,
                                  * which event_add() would not register while active */
    struct event *ev_timer;      /* idle / request / linger deadline */
    llhttp_t parser;             /* request parser */
    enum conn_state state;       /* where the connection is */
    struct http_request *req;    /* current request (reused across requests) */
    char *in;                    /* bytes received but not parsed yet */
    size_t in_off;               /* first unparsed byte */
    size_t in_len;               /* end of buffered bytes */
    size_t in_cap;               /* allocated */
    char *out;                   /* answers not sent yet */
    size_t out_off;              /* first unsent byte */
    size_t out_len;              /* end of buffered output */
    size_t out_cap;              /* allocated */
    size_t out_responses;        /* answers in `out` not completely sent */
    size_t header_bytes;         /* request line and headers received so far */
    uint64_t last_active_ms;     /* accepted, or output last written: the idle
                                  * clock (blank lines between requests, which
                                  * start none, do not reset it) */
    uint64_t req_start_ms;       /* first byte of the request being read */
    uint64_t linger_until_ms;    /* end of lingering close */
    uint64_t timer_at_ms;        /* when ev_timer fires; 0 if not armed */
    int fail_status;             /* status chosen by a parser callback that failed */
    int depth;                   /* nesting of our callbacks; freeing waits for 0 */
    bool msg_done;               /* parser paused on a complete message */
    bool reading;                /* ev_read is added */
    bool writing;                /* ev_write is added */
    bool eof;                    /* the client shut down its side */
    bool dead;                   /* closed; freed when depth drops to 0 */
    struct conn *prev;           /* server's connection list */
    struct conn *next;           /* server's connection list */
    char peer[INET6_ADDRSTRLEN]; /* numeric client address */
};

struct http_server {
    struct event_base *base;          /* borrowed */
    struct http_server_limits limits; /* copied */
    struct metric_family *f_requests; /* http_requests_total, or NULL */
    struct metric_family *f_duration; /* http_request_duration_seconds, or NULL */
    struct metric *m_open;            /* http_connections_open */
    struct metric *m_rejected;        /* http_connections_rejected_total */
    struct route **routes;            /* registration order */
    size_t nroutes;                   /* used entries */
    size_t routes_cap;                /* allocated entries */
    struct route_stats unmatched;     /* metrics of requests no route matched */
    http_handler *on_error;           /* sees its own error answers */
    void *on_error_arg;               /* its argument */
    int lfd;                          /* listening socket, or -1 */
    uint16_t port;                    /* bound port */
    struct event *ev_listen;          /* accept event */
    struct event *ev_accept_resume;   /* re-enables accepting after EMFILE */
    struct conn *conns;               /* open connections */
    size_t nconns;                    /* count of them */
    struct http_request *orphans;     /* unanswered requests whose client has gone */
    size_t pending;                   /* dispatched requests not answered yet */
    size_t unflushed;                 /* answered requests not completely sent */
    bool stopping;                    /* http_server_stop_accepting() was called */
    uint64_t stopped_ms;              /* when */
    char *rbuf;                       /* READ_CHUNK bytes shared by all connections */
    time_t date_sec;                  /* second `date` was formatted for */
    char date[40];                    /* IMF-fixdate for the Date header */
};

static const llhttp_settings_t parser_settings;

static const char *status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        break;
    }
    if (status >= 500)
        return "Server Error";
    if (status >= 400)
        return "Client Error";
    return "Status";
}

/* Maps llhttp's method number to ours. */
static enum http_method method_from_llhttp(uint8_t m)
{
    switch (m) {
    case LLHTTP_M_GET:
        return HTTP_GET;
    case LLHTTP_M_HEAD:
        return HTTP_HEAD;
    case LLHTTP_M_POST:
        return HTTP_POST;
    case LLHTTP_M_PUT:
        return HTTP_PUT;
    case LLHTTP_M_DELETE:
        return HTTP_DELETE;
    case LLHTTP_M_OPTIONS:
        return HTTP_OPTIONS;
    default:
        return HTTP_OTHER;
    }
}

static unsigned method_index(enum http_method m)
{
    unsigned i = 0;
    while (i < METHOD_COUNT - 1 && !((unsigned)m & (1u << i)))
        i++;
    return i;
}

/* ---- metrics ---------------------------------------------------------------- */

static void stats_init(struct route_stats *st, const char *label)
{
    memset(st, 0, sizeof(*st));
    st->label = label;
}

static void stats_deinit(struct route_stats *st)
{
    free(st->counters);
    st->counters = NULL;
}

/* Counts an answer of route `st` and observes its duration, by method and status. */
static void stats_record(struct http_server *s, struct route_stats *st, unsigned method, int status,
                         double secs)
{
    for (size_t i = 0; i < st->ncounters; i++) {
        if (st->counters[i].status == status && st->counters[i].method == method) {
            metric_inc(st->counters[i].m);
            metric_observe(st->counters[i].duration, secs);
            return;
        }
    }
    if (!s->f_requests)
        return;
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    const char *values[3] = {st->label, method_labels[method], code};
    const char *dvalues[2] = {st->label, code};
    struct status_counter sc = {status, method, metric_family_child(s->f_requests, values),
                                metric_family_child(s->f_duration, dvalues)};
    metric_inc(sc.m);
    metric_observe(sc.duration, secs);
    if (!sc.m || !sc.duration)
        return; /* uncached: next time takes the slow path again */
    if (st->ncounters == st->counters_cap) {
        size_t cap = st->counters_cap ? st->counters_cap * 2 : 8;
        struct status_counter *v = realloc(st->counters, cap * sizeof(*v));
        if (!v)
            return;
        st->counters = v;
        st->counters_cap = cap;
    }
    st->counters[st->ncounters++] = sc;
}

/* ---- requests --------------------------------------------------------------- */

static struct http_request *request_new(struct conn *c)
{
    struct http_request *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->srv = c->srv;
    r->conn = c;
    strbuf_init(&r->extra);
    memcpy(r->peer, c->peer, sizeof(r->peer));
    return r;
}

/* Bytes of request buffers (arenas) allocated, every server of the process
 * together: each connection may buffer a body of max_body_bytes, and
 * max_connections of them would otherwise take gigabytes. */
static atomic_size_t buffered_bytes;

static void arena_release(struct http_request *r)
{
    atomic_fetch_sub(&buffered_bytes, r->cap);
    free(r->arena);
    r->arena = NULL;
    r->cap = 0;
}

static void request_free(struct http_request *r)
{
    if (!r)
        return;
    arena_release(r);
    free(r->hdrs);
    strbuf_deinit(&r->extra);
    free(r);
}

static void request_reset(struct http_request *r)
{
    r->len = 0;
    r->nhdrs = 0;
    r->nhdrs_done = 0;
    r->url = 0;
    r->body = 0;
    r->body_len = 0;
    r->path = "";
    r->query = "";
    r->body_ptr = "";
    strbuf_reset(&r->extra);
    r->route = NULL;
    r->stats = &r->srv->unmatched;
    r->method = HTTP_OTHER;
    r->method_idx = METHOD_COUNT - 1;
    r->method_name = "-";
    r->keep_alive = false;
    r->pending = false;
    r->in_field = false;
    r->in_value = false;
    r->in_trailers = false;
    r->url_done = false;
}

/* Drops buffers a large request grew, so idle connections stay small. */
static void request_trim(struct http_request *r)
{
    if (r->cap > KEEP_BUF_MAX)
        arena_release(r);
    if (r->hdrs_cap > 256) {
        free(r->hdrs);
        r->hdrs = NULL;
        r->hdrs_cap = 0;
    }
    if (r->extra.cap > 4096)
        strbuf_deinit(&r->extra);
    else
        strbuf_reset(&r->extra);
}

/* Appends to the request's arena. Returns 0, or the status to answer: 503
 * when growing it past KEEP_BUF_MAX would take the process's request buffers
 * past max_buffered_bytes (if set; small requests always get their buffer),
 * 500 out of memory. */
static int arena_append(struct http_request *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        size_t grow = cap - r->cap;
        size_t limit = r->srv->limits.max_buffered_bytes;
        if (atomic_fetch_add(&buffered_bytes, grow) + grow > limit && limit && cap > KEEP_BUF_MAX) {
            atomic_fetch_sub(&buffered_bytes, grow);
            return 503;
        }
        char *a = realloc(r->arena, cap);
        if (!a) {
            atomic_fetch_sub(&buffered_bytes, grow);
            return 500;
        }
        r->arena = a;
        r->cap = cap;
    }
    memcpy(r->arena + r->len, p, n);
    r->len += n;
    return 0;
}

static int arena_nul(struct http_request *r)
{
    return arena_append(r, "", 1);
}

/* Sets path and query from the URL (raw, in place). */
static void request_split_url(struct http_request *r)
{
    if (!r->url_done || !r->arena) {
        r->path = "";
        r->query = "";
        return;
    }
    char *url = r->arena + r->url;
    /* Absolute form (a proxy's request line): skip scheme and authority. */
    if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0) {
        char *slash = strchr(strstr(url, "//") + 2, '/');
        url = slash ? slash : (char *)"/";
    }
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    char *frag = strchr(q ? q + 1 : url, '#');
    if (frag)
        *frag = '\0';
    r->path = url;
}

static bool path_matches(const struct route *rt, const char *path)
{
    if (rt->prefix)
        return strncmp(path, rt->path, rt->len) == 0;
    return strcmp(path, rt->path) == 0;
}

static bool method_allowed(unsigned mask, enum http_method m)
{
    return (mask & (unsigned)m) || (m == HTTP_HEAD && (mask & HTTP_GET));
}

/* ---- connections ------------------------------------------------------------- */

static void conn_after_io(struct conn *c);

static void conn_free(struct conn *c)
{
    if (c->ev_read)
        event_free(c->ev_read);
    if (c->ev_write)
        event_free(c->ev_write);
    if (c->ev_parse)
        event_free(c->ev_parse);
    if (c->ev_timer)
        event_free(c->ev_timer);
    free(c->in);
    free(c->out);
    free(c);
}

/* Leaves one of our callbacks; frees the connection if it closed meanwhile. */
static void conn_release(struct conn *c)
{
    if (--c->depth == 0 && c->dead)
        conn_free(c);
}

/* Closes the socket at once. An unanswered request becomes an orphan that
 * http_respond() frees. The memory goes when no callback of ours is using it. */
static void conn_close(struct conn *c)
{
    struct http_server *s = c->srv;
    if (c->dead)
        return;
    c->dead = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    metric_add(s->m_open, -1);
    s->unflushed -= c->out_responses;
    c->out_responses = 0;

    struct http_request *r = c->req;
    c->req = NULL;
    if (r && r->pending) {
        r->conn = NULL;
        r->prev = NULL;
        r->next = s->orphans;
        if (s->orphans)
            s->orphans->prev = r;
        s->orphans = r;
    } else {
        request_free(r);
    }
    event_del(c->ev_read);
    event_del(c->ev_write);
    event_del(c->ev_parse);
    event_del(c->ev_timer);
    close(c->fd);
    c->fd = -1;
    if (c->depth == 0)
        conn_free(c);
}

static struct http_request *conn_request(struct conn *c)
{
    if (!c->req) {
        c->req = request_new(c);
        if (c->req)
            request_reset(c->req);
    }
    return c->req;
}

static bool conn_out_blocked(const struct conn *c)
{
    return c->out_len - c->out_off > CONN_OUT_HIGH;
}

static bool conn_out_reserve(struct conn *c, size_t n)
{
    if (c->out_off == c->out_len) {
        c->out_off = 0;
        c->out_len = 0;
    }
    if (c->out_len + n <= c->out_cap)
        return true;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_cap)
            return true;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

static void conn_out_append(struct conn *c, const char *p, size_t n)
{
    /* Callers reserved room first. */
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Sends buffered output; arms the write event when the socket buffer is full. */
static void conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->writing) {
                event_add(c->ev_write, NULL);
                c->writing = true;
            }
            c->last_active_ms = timeutil_mono_ms();
            return;
        }
        conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
        return;
    }
    c->last_active_ms = timeutil_mono_ms();
    c->srv->unflushed -= c->out_responses;
    c->out_responses = 0;
    c->out_off = 0;
    c->out_len = 0;
    if (c->out_cap > KEEP_BUF_MAX) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->writing) {
        event_del(c->ev_write);
        c->writing = false;
    }
}

static void conn_set_reading(struct conn *c, bool want)
{
    if (want == c->reading || c->dead)
        return;
    if (want)
        event_add(c->ev_read, NULL);
    else
        event_del(c->ev_read);
    c->reading = want;
}

static void conn_sync_reading(struct conn *c)
{
    bool want;
    switch (c->state) {
    case CONN_CLOSING:
        want = false;
        break;
    case CONN_LINGER:
        want = true;
        break;
    default:
        /* Unparsed input is bounded whatever the state: requests pipelined
         * behind one that is answered later are read as they are parsed. */
        want = !c->eof && c->in_len - c->in_off < CONN_IN_MAX;
        break;
    }
    conn_set_reading(c, want);
}

/* Arms the timer for the state's deadline unless it already fires earlier (it
 * then re-checks), so a busy connection rarely touches the timer heap. */
static void conn_update_timer(struct conn *c)
{
    const struct http_server_limits *l = &c->srv->limits;
    uint64_t deadline = 0;
    switch (c->state) {
    case CONN_IDLE:
    case CONN_CLOSING:
        if (l->idle_timeout_ms)
            deadline = c->last_active_ms + l->idle_timeout_ms;
        break;
    case CONN_READING:
        if (l->request_timeout_ms)
            deadline = c->req_start_ms + l->request_timeout_ms;
        break;
    case CONN_WAITING:
        break; /* the handler owns the time it takes */
    case CONN_LINGER:
        deadline = c->linger_until_ms;
        break;
    }
    if (!deadline || (c->timer_at_ms && c->timer_at_ms <= deadline))
        return;
    uint64_t now = timeutil_mono_ms();
    uint64_t wait = deadline > now ? deadline - now : 0;
    struct timeval tv = timeutil_tv(wait);
    event_add(c->ev_timer, &tv);
    c->timer_at_ms = deadline;
}

static void conn_start_linger(struct conn *c)
{
    if (c->eof) {
        conn_close(c);
        return;
    }
    /* Closing with unread input makes the kernel send RST, which can destroy the
     * answer in flight (a 413 while the body is still coming): shut the write
     * side and drain for a while first. */
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    c->linger_until_ms = timeutil_mono_ms() + LINGER_MS;
    c->in_off = 0;
    c->in_len = 0;
}

/* Common tail of every callback touching a connection: send what is buffered,
 * move on from a closing answer, pick the read interest and the deadline. */
static void conn_after_io(struct conn *c)
{
    if (c->dead)
        return;
    if (c->out_len > c->out_off && !c->writing)
        conn_flush(c);
    if (c->dead)
        return;
    if (c->state == CONN_CLOSING && c->out_len == c->out_off) {
        conn_start_linger(c);
        if (c->dead)
            return;
    }
    if (c->eof && c->state == CONN_IDLE && c->out_len == c->out_off) {
        conn_close(c);
        return;
    }
    /* Parsing waits while an answer is pending or output is backed up; once
     * neither holds, let the read callback parse what is buffered. */
    if (c->state == CONN_IDLE && c->in_len > c->in_off && !conn_out_blocked(c) && !c->eof)
        event_active(c->ev_parse, EV_READ, 1);
    conn_sync_reading(c);
    conn_update_timer(c);
}

/* Starts a request that did not reach a handler, so error answers go through
 * http_respond() like any other (logs, metrics, ordering). */
static void conn_fail(struct conn *c, int status, const char *code, const char *message)
{
    struct http_request *r = conn_request(c);
    assert(c->state != CONN_WAITING);
    if (!r) {
        conn_close(c);
        return;
    }
    if (r->start_us == 0) {
        request_reset(r);
        r->start_us = timeutil_mono_us();
    }
    request_split_url(r);
    struct http_server *s = c->srv;
    for (size_t i = 0; i < s->nroutes && r->url_done; i++) {
        if (path_matches(s->routes[i], r->path)) {
            r->route = s->routes[i];
            r->stats = &s->routes[i]->stats;
            break;
        }
    }
    r->keep_alive = false;
    r->pending = true;
    s->pending++;
    c->state = CONN_WAITING;
    if (s->on_error)
        s->on_error(r, s->on_error_arg);
    if (status == 503)
        http_request_add_header(r, "Retry-After", "1");
    http_respond_error(r, status, code, NULL, message);
}

void http_server_on_error(struct http_server *s, http_handler *fn, void *arg)
{
    s->on_error = fn;
    s->on_error_arg = arg;
}

static void conn_dispatch(struct conn *c)
{
    struct http_server *s = c->srv;
    struct http_request *r = c->req;
    struct route *match = NULL;
    struct route *by_path = NULL;
    unsigned allow = 0;

    c->msg_done = false;
    request_split_url(r);
    r->body_ptr = r->arena + r->body;
    /* An upgrade or CONNECT leaves the stream in another protocol: answer, close. */
    r->keep_alive = llhttp_should_keep_alive(&c->parser) && !llhttp_get_upgrade(&c->parser);
    r->pending = true;
    s->pending++;
    c->state = CONN_WAITING;

    for (size_t i = 0; i < s->nroutes; i++) {
        struct route *rt = s->routes[i];
        if (!path_matches(rt, r->path))
            continue;
        if (!by_path)
            by_path = rt;
        allow |= rt->methods;
        if (method_allowed(rt->methods, r->method)) {
            match = rt;
            break;
        }
    }
    r->route = match ? match : by_path;
    r->stats = r->route ? &r->route->stats : &s->unmatched;

    if (log_enabled(LOG_LEVEL_DEBUG))
        log_debug("http_request_started", LF_STR("method", r->method_name), LF_STR("path", r->path),
                  LF_STR("peer", r->peer));
    if (match) {
        match->h(r, match->arg);
    } else if (by_path) {
        char list[80] = "";
        char msg[120];
        if (allow & HTTP_GET)
            allow |= HTTP_HEAD;
        for (unsigned i = 0; i < METHOD_COUNT - 1; i++) {
            if (allow & (1u << i)) {
                if (list[0])
                    strcat(list, ", ");
                strcat(list, method_labels[i]);
            }
        }
        snprintf(msg, sizeof(msg), "method %s not allowed; allowed: %s", r->method_name, list);
        http_request_add_header(r, "Allow", list);
        http_respond_error(r, 405, "method_not_allowed", NULL, msg);
    } else {
        http_respond_error(r, 404, "not_found", NULL, "no such endpoint");
    }
}

/* Feeds `data` to the parser, dispatching each complete request. Stops when a
 * request waits for its answer, output is backed up, or the connection closes.
 * Returns the bytes consumed; the caller keeps the rest. */
static size_t conn_parse(struct conn *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && !c->dead) {
        if (c->state != CONN_IDLE && c->state != CONN_READING)
            break;
        if (conn_out_blocked(c))
            break;
        enum llhttp_errno err = llhttp_execute(&c->parser, data + off, len - off);
        if (err == HPE_OK)
            return len;
        if (err == HPE_PAUSED && c->msg_done) {
            off = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            llhttp_resume(&c->parser);
            conn_dispatch(c);
            continue;
        }
        switch (c->fail_status) {
        case 413:
            conn_fail(c, 413, "payload_too_large", "request body too large");
            break;
        case 431:
            conn_fail(c, 431, "headers_too_large", "request headers too large");
            break;
        case 500:
            conn_fail(c, 500, "internal_error", "out of memory");
            break;
        case 503:
            conn_fail(c, 503, "busy", "too many large requests in memory; retry after Retry-After");
            break;
        case 501:
            conn_fail(c, 501, "not_implemented", "transfer coding not supported (only chunked)");
            break;
        default:
            conn_fail(c, 400, "bad_request", llhttp_get_error_reason(&c->parser));
            break;
        }
        return len;
    }
    return off;
}

static bool conn_in_reserve(struct conn *c, size_t n)
{
    if (c->in_off > 0 && c->in_off == c->in_len) {
        c->in_off = 0;
        c->in_len = 0;
    }
    if (c->in_len + n <= c->in_cap)
        return true;
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
        if (c->in_len + n <= c->in_cap)
            return true;
    }
    size_t cap = c->in_cap ? c->in_cap : 4096;
    while (cap < c->in_len + n)
        cap *= 2;
    char *p = realloc(c->in, cap);
    if (!p)
        return false;
    c->in = p;
    c->in_cap = cap;
    return true;
}

static void conn_in_consumed(struct conn *c, size_t n)
{
    c->in_off += n;
    if (c->in_off == c->in_len) {
        c->in_off = 0;
        c->in_len = 0;
        if (c->in_cap > KEEP_BUF_MAX) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
}

/* Handles recv() returning 0 or an error. */
static void conn_read_end(struct conn *c, ssize_t n)
{
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->eof = true;
    /* A client that goes away while its request is being read or answered is
     * gone; one that half-closes after complete answers still gets them. */
    if (c->state == CONN_WAITING || c->state == CONN_READING || c->state == CONN_LINGER)
        conn_close(c);
}

static void conn_linger_read(struct conn *c)
{
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(c->fd, c->srv->rbuf, READ_CHUNK, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
}

/* ev_read's callback, and ev_parse's (fd -1): reads what the socket has and
 * parses what is buffered. */
static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct http_server *s = c->srv;
    (void)fd;
    (void)what;
    c->depth++;
    if (c->state == CONN_LINGER) {
        conn_linger_read(c);
        goto out;
    }
    if (c->state == CONN_CLOSING || c->eof)
        goto out;

    bool held = c->state == CONN_WAITING || conn_out_blocked(c);
    if (!held && c->in_len == c->in_off) {
        /* Common case: parse straight from the shared buffer, keep only leftovers. */
        ssize_t n = recv(c->fd, s->rbuf, READ_CHUNK, 0);
        if (n <= 0) {
            conn_read_end(c, n);
            goto out;
        }
        size_t used = conn_parse(c, s->rbuf, (size_t)n);
        if (!c->dead && used < (size_t)n && c->state != CONN_CLOSING) {
            if (!conn_in_reserve(c, (size_t)n - used)) {
                conn_close(c);
                goto out;
            }
            memcpy(c->in + c->in_len, s->rbuf + used, (size_t)n - used);
            c->in_len += (size_t)n - used;
        }
        goto out;
    }

    /* Leftovers (pipelined requests) plus what is read stay within
     * CONN_IN_MAX, held or not: after each answer a client that pipelines
     * must not get another READ_CHUNK in ahead of the parser. */
    size_t have = c->in_len - c->in_off;
    size_t want = have < CONN_IN_MAX ? CONN_IN_MAX - have : 0;
    if (want > READ_CHUNK)
        want = READ_CHUNK;
    if (want > 0) {
        if (!conn_in_reserve(c, want)) {
            conn_close(c);
            goto out;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, want, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
        } else {
            conn_read_end(c, n);
            if (c->dead)
                goto out;
        }
    }
    if (!held && c->in_len > c->in_off) {
        size_t used = conn_parse(c, c->in + c->in_off, c->in_len - c->in_off);
        if (!c->dead) {
            if (c->state == CONN_CLOSING)
                used = c->in_len - c->in_off;
            conn_in_consumed(c, used);
        }
    }
out:
    conn_after_io(c);
    conn_release(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    c->depth++;
    conn_flush(c);
    conn_after_io(c);
    conn_release(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    const struct http_server_limits *l = &c->srv->limits;
    (void)fd;
    (void)what;
    c->depth++;
    c->timer_at_ms = 0;
    uint64_t now = timeutil_mono_ms();
    switch (c->state) {
    case CONN_IDLE:
    case CONN_CLOSING:
        if (l->idle_timeout_ms && now >= c->last_active_ms + l->idle_timeout_ms)
            conn_close(c);
        break;
    case CONN_READING:
        if (l->request_timeout_ms && now >= c->req_start_ms + l->request_timeout_ms)
            conn_fail(c, 408, "request_timeout", "request not received in time");
        break;
    case CONN_WAITING:
        break;
    case CONN_LINGER:
        if (now >= c->linger_until_ms)
            conn_close(c);
        break;
    }
    conn_after_io(c);
    conn_release(c);
}

/* Formats the peer address; IPv4-mapped IPv6 addresses are shown as IPv4. */
static void format_peer(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    out[0] = '\0';
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, out, (socklen_t)outlen);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ss;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr))
            inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], out, (socklen_t)outlen);
        else
            inet_ntop(AF_INET6, &a->sin6_addr, out, (socklen_t)outlen);
    }
}

static int conn_new(struct http_server *s, int fd, const struct sockaddr_storage *ss)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->srv = s;
    c->fd = fd;
    c->ev_read = event_new(s->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    c->ev_write = event_new(s->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    c->ev_parse = event_new(s->base, -1, 0, conn_read_cb, c);
    c->ev_timer = evtimer_new(s->base, conn_timer_cb, c);
    if (!c->ev_read || !c->ev_write || !c->ev_parse || !c->ev_timer) {
        conn_free(c);
        return -ENOMEM;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    format_peer(ss, c->peer, sizeof(c->peer));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    metric_add(s->m_open, 1);
    c->last_active_ms = timeutil_mono_ms();
    c->depth++;
    conn_after_io(c);
    conn_release(c);
    return 0;
}

/* ---- parser callbacks -------------------------------------------------------- */

static int parser_fail(struct conn *c, int status)
{
    c->fail_status = status;
    return -1;
}

/* Counts request line and header bytes; past the limit the request gets 431. */
static bool header_bytes_ok(struct conn *c, size_t n)
{
    c->header_bytes += n;
    return c->header_bytes <= c->srv->limits.max_header_bytes;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = conn_request(c);
    if (!r)
        return parser_fail(c, 500);
    request_reset(r);
    r->start_us = timeutil_mono_us();
    c->req_start_ms = r->start_us / 1000;
    c->header_bytes = 0;
    c->fail_status = 0;
    c->state = CONN_READING;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (!header_bytes_ok(c, n))
        return parser_fail(c, 431);
    int st = arena_append(c->req, at, n);
    if (st != 0)
        return parser_fail(c, st);
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    int st = arena_nul(c->req);
    if (st != 0)
        return parser_fail(c, st);
    c->req->url_done = true;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    if (r->in_trailers) /* never appended after the body: counted only */
        return header_bytes_ok(c, n) ? 0 : parser_fail(c, 431);
    if (!r->in_field) {
        if (!header_bytes_ok(c, 4)) /* ": " and CRLF */
            return parser_fail(c, 431);
        if (r->nhdrs == r->hdrs_cap) {
            size_t cap = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
            struct header *h = realloc(r->hdrs, cap * sizeof(*h));
            if (!h)
                return parser_fail(c, 500);
            r->hdrs = h;
            r->hdrs_cap = cap;
        }
        r->hdrs[r->nhdrs].name = r->len;
        r->nhdrs++;
        r->in_field = true;
    }
    if (!header_bytes_ok(c, n))
        return parser_fail(c, 431);
    int st = arena_append(r, at, n);
    if (st != 0)
        return parser_fail(c, st);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    if (r->in_trailers)
        return 0;
    struct header *h = &r->hdrs[r->nhdrs - 1];
    h->name_len = r->len - h->name;
    int st = arena_nul(r);
    if (st != 0)
        return parser_fail(c, st);
    r->in_field = false;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    if (r->in_trailers)
        return header_bytes_ok(c, n) ? 0 : parser_fail(c, 431);
    if (!r->in_value) {
        r->hdrs[r->nhdrs - 1].value = r->len;
        r->in_value = true;
    }
    if (!header_bytes_ok(c, n))
        return parser_fail(c, 431);
    int st = arena_append(r, at, n);
    if (st != 0)
        return parser_fail(c, st);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    if (r->in_trailers)
        return 0;
    struct header *h = &r->hdrs[r->nhdrs - 1];
    if (!r->in_value)
        h->value = r->len; /* empty value */
    h->value_len = r->len - h->value;
    int st = arena_nul(r);
    if (st != 0)
        return parser_fail(c, st);
    r->in_value = false;
    r->nhdrs_done = r->nhdrs;
    return 0;
}

static const char *next_header(const struct http_request *req, const char *name, size_t n,
                               size_t *i);

/* True unless a Transfer-Encoding names a coding other than chunked (gzip,
 * deflate, ...): those are not decoded, and RFC 9112 answers them 501 rather
 * than hand the coded body on as if it were the content. */
static bool transfer_codings_ok(const struct http_request *r)
{
    size_t i = 0;
    const char *v;
    while ((v = next_header(r, "Transfer-Encoding", 17, &i))) {
        for (const char *t = v; *t;) {
            t += strspn(t, " \t,");
            size_t n = strcspn(t, " \t,");
            if (n && !(n == 7 && strncasecmp(t, "chunked", 7) == 0))
                return false;
            t += n;
        }
    }
    return true;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    const struct http_server_limits *l = &c->srv->limits;

    r->method = method_from_llhttp(llhttp_get_method(p));
    r->method_idx = method_index(r->method);
    r->method_name = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > l->max_body_bytes)
        return parser_fail(c, 413);
    /* (The header lines are searched only when llhttp saw the header.) */
    if ((p->flags & F_TRANSFER_ENCODING) && !transfer_codings_ok(r))
        return parser_fail(c, 501);

    bool body_follows =
        (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    const char *expect = http_request_header(r, "Expect");
    if (body_follows && expect && strcasecmp(expect, "100-continue") == 0 &&
        llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!conn_out_reserve(c, sizeof(cont) - 1))
            return parser_fail(c, 500);
        conn_out_append(c, cont, sizeof(cont) - 1);
    }
    r->body = r->len;
    r->in_trailers = true;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    if (r->len - r->body + n > c->srv->limits.max_body_bytes)
        return parser_fail(c, 413);
    int st = arena_append(r, at, n);
    if (st != 0)
        return parser_fail(c, st);
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    /* Refuse an oversized chunk before receiving it. */
    if (p->content_length > c->srv->limits.max_body_bytes ||
        r->len - r->body + p->content_length > c->srv->limits.max_body_bytes)
        return parser_fail(c, 413);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct http_request *r = c->req;
    r->body_len = r->len - r->body;
    int st = arena_nul(r);
    if (st != 0)
        return parser_fail(c, st);
    c->msg_done = true;
    return HPE_PAUSED; /* one request at a time: resumed after its answer */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

/* ---- server ------------------------------------------------------------------ */

struct http_server *http_server_new(struct event_base *base,
                                    const struct http_server_limits *limits, struct metrics *m)
{
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->base = base;
    s->limits = limits ? *limits : http_server_default_limits;
    s->lfd = -1;
    s->rbuf = malloc(READ_CHUNK);
    if (!s->rbuf)
        goto fail;
    if (m) {
        s->f_requests = metrics_counter(m, "http_requests_total", "HTTP requests answered.",
                                        "route,method,status");
        s->f_duration =
            metrics_histogram(m, "http_request_duration_seconds",
                              "Time from a request's first byte to its answer, in seconds.",
                              "route,status", metrics_latency_buckets, metrics_latency_buckets_len);
        s->m_open = metric_family_single(
            metrics_gauge(m, "http_connections_open", "Open HTTP connections.", NULL));
        s->m_rejected = metric_family_single(
            metrics_counter(m, "http_connections_rejected_total",
                            "HTTP connections closed at once because of max_connections.", NULL));
    }
    stats_init(&s->unmatched, "unmatched");
    return s;
fail:
    free(s->rbuf);
    free(s);
    return NULL;
}

static void srv_pause_accept(struct http_server *s);

static void srv_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *s = arg;
    (void)what;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("http_accept_failed", LF_STR("error", strerror(errno)));
                srv_pause_accept(s);
            }
            return;
        }
        if (s->limits.max_connections && s->nconns >= s->limits.max_connections) {
            close(cfd);
            metric_inc(s->m_rejected);
            continue;
        }
        if (conn_new(s, cfd, &ss) < 0)
            close(cfd);
    }
}

static void srv_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *s = arg;
    (void)fd;
    (void)what;
    if (s->ev_listen)
        event_add(s->ev_listen, NULL);
}

/* Out of descriptors: the pending connection would wake the loop at once again,
 * so stop accepting for a moment instead of spinning. */
static void srv_pause_accept(struct http_server *s)
{
    if (!s->ev_accept_resume)
        s->ev_accept_resume = evtimer_new(s->base, srv_accept_resume_cb, s);
    if (!s->ev_accept_resume)
        return;
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    event_del(s->ev_listen);
    evtimer_add(s->ev_accept_resume, &tv);
}

/* SO_REUSEPORT lets any socket of the same user bind a port one of ours has,
 * so another daemon (a second reporter, an old collector) would share it in
 * silence, the kernel splitting connections between the two. A socket without
 * it, bound to the address for a moment, finds one listening there; with
 * SO_REUSEADDR, connections in TIME_WAIT and our own socket, bound and not yet
 * listening, are no obstacle. Returns 0 or a negative errno (-EADDRINUSE). */
static int srv_probe(const struct sockaddr_storage *ss, socklen_t sl)
{
    int one = 1;
    int rc = 0;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)ss, sl) < 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Binds and listens on `ss`; `shared`: a further socket on a port of this
 * process, where the port is in use by design. */
static int srv_listen_at(struct http_server *s, struct sockaddr_storage *ss, socklen_t sl,
                         bool shared)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)ss;
    int fd = -1;
    int rc;
    int one = 1;

    fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)ss, sl) < 0)
        goto fail;
    /* The probe goes after the bind, at the address bound: for port 0, the
     * port the kernel picked. */
    sl = sizeof(*ss);
    if (getsockname(fd, (struct sockaddr *)ss, &sl) < 0)
        goto fail;
    rc = shared ? 0 : srv_probe(ss, sl);
    if (rc < 0) {
        errno = -rc;
        goto fail;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0)
        goto fail;
    s->port = ntohs(ss->ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    s->ev_listen = event_new(s->base, fd, EV_READ | EV_PERSIST, srv_accept_cb, s);
    if (!s->ev_listen) {
        errno = ENOMEM;
        goto fail;
    }
    if (event_add(s->ev_listen, NULL) < 0) {
        event_free(s->ev_listen);
        s->ev_listen = NULL;
        errno = ENOMEM;
        goto fail;
    }
    s->lfd = fd;
    return 0;
fail:
    rc = -errno;
    if (fd >= 0)
        close(fd);
    s->port = 0;
    return rc;
}

int http_server_listen(struct http_server *s, const char *host, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char buf[64];

    if (s->lfd >= 0 || s->stopping)
        return -EBUSY;
    if (!host || !*host)
        host = "0.0.0.0";
    size_t hl = strlen(host);
    if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']' && hl - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, hl - 2);
        buf[hl - 2] = '\0';
        host = buf;
    }
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)(void *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)(void *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        sl = sizeof(*a4);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        sl = sizeof(*a6);
    } else {
        return -EINVAL;
    }
    return srv_listen_at(s, &ss, sl, false);
}

int http_server_listen_beside(struct http_server *s, const struct http_server *first)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    if (s->lfd >= 0 || s->stopping)
        return -EBUSY;
    if (first->lfd < 0)
        return -EINVAL;
    if (getsockname(first->lfd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    return srv_listen_at(s, &ss, sl, true);
}

uint16_t http_server_port(const struct http_server *s)
{
    return s ? s->port : 0;
}

int http_server_route(struct http_server *s, unsigned methods, const char *path, bool prefix,
                      http_handler *h, void *arg)
{
    if (s->nroutes == s->routes_cap) {
        size_t cap = s->routes_cap ? s->routes_cap * 2 : 8;
        struct route **v = realloc(s->routes, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->routes = v;
        s->routes_cap = cap;
    }
    struct route *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return -ENOMEM;
    rt->methods = methods;
    rt->path = path;
    rt->len = strlen(path);
    rt->prefix = prefix;
    rt->h = h;
    rt->arg = arg;
    stats_init(&rt->stats, path);
    s->routes[s->nroutes++] = rt;
    return 0;
}

static void srv_close_listener(struct http_server *s)
{
    if (s->ev_listen) {
        event_free(s->ev_listen);
        s->ev_listen = NULL;
    }
    if (s->ev_accept_resume) {
        event_free(s->ev_accept_resume);
        s->ev_accept_resume = NULL;
    }
    if (s->lfd >= 0) {
        close(s->lfd);
        s->lfd = -1;
    }
}

void http_server_stop_accepting(struct http_server *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = true;
    s->stopped_ms = timeutil_mono_ms();
    srv_close_listener(s);
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != CONN_IDLE || c->in_len > c->in_off)
            continue; /* a request is under way: its answer closes the connection */
        if (c->out_len == c->out_off && c->depth == 0) {
            conn_close(c);
        } else {
            c->state = CONN_CLOSING;
            c->depth++;
            conn_after_io(c);
            conn_release(c);
        }
    }
}

/* Connections with a request begun and not complete: once stopping, a drain
 * waits for them as for a request with its handler, so that they are answered
 * rather than cut when the daemon exits. */
static size_t srv_receiving(const struct http_server *s)
{
    size_t n = 0;
    for (const struct conn *c = s->conns; c; c = c->next)
        n += c->state == CONN_READING || (c->state == CONN_IDLE && c->in_len > c->in_off);
    return n;
}

size_t http_server_inflight(const struct http_server *s)
{
    if (!s)
        return 0;
    /* A client that does not read its answers, or sends its request slower
     * than this, must not hold a stop until the daemon's deadline forces the
     * exit. */
    if (s->stopping && timeutil_mono_ms() - s->stopped_ms >= STOP_FLUSH_MS)
        return s->pending;
    return s->pending + s->unflushed + (s->stopping ? srv_receiving(s) : 0);
}

size_t http_server_buffered_input(const struct http_server *s)
{
    size_t n = 0;
    for (const struct conn *c = s ? s->conns : NULL; c; c = c->next)
        n += c->in_len - c->in_off;
    return n;
}

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    srv_close_listener(s);
    while (s->conns) {
        struct conn *c = s->conns;
        /* Unanswered requests are dropped, not orphaned. */
        if (c->req)
            c->req->pending = false;
        conn_close(c);
    }
    while (s->orphans) {
        struct http_request *r = s->orphans;
        s->orphans = r->next;
        request_free(r);
    }
    for (size_t i = 0; i < s->nroutes; i++) {
        stats_deinit(&s->routes[i]->stats);
        free(s->routes[i]);
    }
    free(s->routes);
    stats_deinit(&s->unmatched);
    free(s->rbuf);
    free(s);
}

/* ---- request accessors -------------------------------------------------------- */

enum http_method http_request_method(const struct http_request *req)
{
    return req->method;
}

const char *http_request_path(const struct http_request *req)
{
    return req->path;
}

const char *http_request_query(const struct http_request *req)
{
    return req->query;
}

const char *http_request_route(const struct http_request *req)
{
    return req->route ? req->route->path : "unmatched";
}

/* The value of the next line of header `name` (`n` bytes, case-insensitive)
 * from line *i on, which moves past it; NULL when there is none. Only whole
 * lines count: an error answer's hook may look at a request cut off in one. */
static const char *next_header(const struct http_request *req, const char *name, size_t n,
                               size_t *i)
{
    for (; *i < req->nhdrs_done; ++*i) {
        const struct header *h = &req->hdrs[*i];
        if (h->name_len == n && strcasecmp(req->arena + h->name, name) == 0) {
            ++*i;
            return req->arena + h->value;
        }
    }
    return NULL;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    size_t i = 0;
    return next_header(req, name, strlen(name), &i);
}

const char *http_request_header_list(const struct http_request *req, const char *name,
                                     struct strbuf *scratch)
{
    size_t n = strlen(name), i = 0;
    const char *first = next_header(req, name, n, &i), *more;

    /* One line, the usual case, is returned without a copy. */
    strbuf_reset(scratch);
    while (first && (more = next_header(req, name, n, &i))) {
        if (scratch->len == 0)
            strbuf_puts(scratch, first);
        strbuf_append(scratch, ", ", 2);
        strbuf_puts(scratch, more);
    }
    if (scratch->oom)
        return NULL;
    return scratch->len ? scratch->data : first;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body_ptr;
}

const char *http_request_peer(const struct http_request *req)
{
    return req->peer;
}

bool http_request_client_gone(const struct http_request *req)
{
    return req->conn == NULL;
}

int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t outlen)
{
    const char *q = req->query;
    char key[256];
    while (q && *q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));
        const char *kend = eq ? eq : end;
        if (urlcode_decode(q, (size_t)(kend - q), URLCODE_FORM, key, sizeof(key)) &&
            strcmp(key, name) == 0) {
            bool ok = eq ? urlcode_decode(eq + 1, (size_t)(end - eq - 1), URLCODE_FORM, out, outlen)
                         : urlcode_decode("", 0, URLCODE_FORM, out, outlen);
            return ok ? 1 : -1;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* ---- answers ----------------------------------------------------------------- */

/* Appends s without CR or LF, so a header value cannot start another header. */
static void put_header_text(struct strbuf *sb, const char *s)
{
    for (const char *p = s; *p;) {
        size_t run = strcspn(p, "\r\n");
        strbuf_append(sb, p, run);
        p += run;
        if (*p)
            p++;
    }
}

void http_request_add_header(struct http_request *req, const char *name, const char *value)
{
    put_header_text(&req->extra, name);
    strbuf_append(&req->extra, ": ", 2);
    put_header_text(&req->extra, value);
    strbuf_append(&req->extra, "\r\n", 2);
}

static const char *srv_date(struct http_server *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = time(NULL);
    if (t != s->date_sec) {
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(s->date, sizeof(s->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        s->date_sec = t;
    }
    return s->date;
}

static char *put_str(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_uint(char *p, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

#define PUT_LIT(p, lit) put_str((p), (lit), sizeof(lit) - 1)

/* Appends the answer to the connection's output. Returns false if out of memory. */
static bool conn_put_response(struct conn *c, const struct http_request *r, int status,
                              const char *ctype, const char *body, size_t len, bool keep)
{
    const char *reason = status_reason(status);
    const char *date = srv_date(c->srv);
    size_t ctlen = ctype ? strlen(ctype) : 0;
    bool with_length = status >= 200 && status != 204 && status != 304;
    bool with_body = with_length && r->method != HTTP_HEAD && body && len;
    size_t need =
        160 + strlen(reason) + strlen(date) + ctlen + r->extra.len + (with_body ? len : 0);
    if (!conn_out_reserve(c, need))
        return false;

    char *p = c->out + c->out_len;
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put_uint(p, (size_t)(status < 0 ? 500 : status) % 1000);
    *p++ = ' ';
    p = put_str(p, reason, strlen(reason));
    p = PUT_LIT(p, "\r\nDate: ");
    p = put_str(p, date, strlen(date));
    p = PUT_LIT(p, "\r\n");
    if (ctype) {
        p = PUT_LIT(p, "Content-Type: ");
        p = put_str(p, ctype, ctlen);
        p = PUT_LIT(p, "\r\n");
    }
    if (with_length) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_uint(p, body ? len : 0);
        p = PUT_LIT(p, "\r\n");
    }
    if (keep)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    else
        p = PUT_LIT(p, "Connection: close\r\n");
    if (r->extra.len)
        p = put_str(p, r->extra.data, r->extra.len);
    p = PUT_LIT(p, "\r\n");
    if (with_body)
        p = put_str(p, body, len);
    c->out_len = (size_t)(p - c->out);
    return true;
}

static void request_record(struct http_request *r, int status, double secs)
{
    struct http_server *s = r->srv;
    stats_record(s, r->stats, r->method_idx, status, secs);
    if (!log_enabled(LOG_LEVEL_INFO))
        return;
    if (r->conn)
        log_info("http_request_completed", LF_STR("method", r->method_name),
                 LF_STR("path", r->path), LF_INT("status", status),
                 LF_DBL("duration_ms", secs * 1000.0), LF_STR("peer", r->peer));
    else
        log_info("http_request_completed", LF_STR("method", r->method_name),
                 LF_STR("path", r->path), LF_INT("status", status),
                 LF_DBL("duration_ms", secs * 1000.0), LF_STR("peer", r->peer),
                 LF_BOOL("client_gone", true));
}

void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t len)
{
    struct http_server *s = req->srv;
    struct conn *c = req->conn;

    assert(req->pending);
    if (!req->pending)
        return;
    request_record(req, status, (double)(timeutil_mono_us() - req->start_us) / 1e6);
    req->pending = false;
    s->pending--;

    if (!c) {
        if (req->prev)
            req->prev->next = req->next;
        else
            s->orphans = req->next;
        if (req->next)
            req->next->prev = req->prev;
        request_free(req);
        return;
    }

    bool keep = req->keep_alive && !s->stopping;
    bool ok = conn_put_response(c, req, status, content_type, body, len, keep);
    request_trim(req);
    req->start_us = 0;
    if (!ok) {
        conn_close(c);
        return;
    }
    c->out_responses++;
    s->unflushed++;
    c->state = keep ? CONN_IDLE : CONN_CLOSING;
    if (!keep) {
        /* Nothing after this answer is parsed. */
        c->in_off = 0;
        c->in_len = 0;
    }
    if (c->depth == 0) {
        /* Answered later, from outside our callbacks: send now. */
        c->depth++;
        conn_after_io(c);
        conn_release(c);
    }
}

void http_respond_json(struct http_request *req, int status, const char *json)
{
    http_respond(req, status, "application/json", json, json ? strlen(json) : 0);
}

void http_respond_error(struct http_request *req, int status, const char *code, const char *field,
                        const char *message)
{
    struct strbuf sb;
    strbuf_init(&sb);
    strbuf_puts(&sb, "{\"error\":");
    strbuf_json_str(&sb, code);
    if (field) {
        strbuf_puts(&sb, ",\"field\":");
        strbuf_json_str(&sb, field);
    }
    strbuf_puts(&sb, ",\"message\":");
    strbuf_json_str(&sb, message);
    strbuf_putc(&sb, '}');
    http_respond(req, status, "application/json", sb.data ? sb.data : "", sb.len);
    strbuf_deinit(&sb);
}
