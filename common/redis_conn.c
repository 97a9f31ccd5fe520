/* A hiredis async connection that keeps itself alive on a libevent loop (connect,
 * AUTH/SELECT, pings, reconnect with backoff), and the redis:// URL parser. */
#include "redis_conn.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "log.h"
#include "resolve.h"
#include "timeutil.h"
#include "urlcode.h"

enum {
    PING_INTERVAL_MS = 1000,   /* keep-alive period */
    PING_TIMEOUT_MS = 2000,    /* a ping unanswered this long means the server is gone */
    CONNECT_TIMEOUT_MS = 2000, /* hiredis 0.14 has no connect timeout of its own */
    BACKOFF_MIN_MS = 100,      /* first reconnect delay */
    BACKOFF_MAX_MS = 5000,     /* reconnect delay cap */
    CMD_POOL_MAX = 4096,       /* command records kept for reuse */
};

/* One user command in flight. */
struct redis_conn_cmd {
    struct redis_conn *conn;     /* owner */
    redis_conn_reply_cb *cb;     /* called exactly once */
    void *arg;                   /* passed to cb */
    uint64_t deadline_ms;        /* monotonic; UINT64_MAX: none */
    bool overdue;                /* found past its deadline at a check */
    struct redis_conn_cmd *next; /* in-flight FIFO, or the free list */
};

struct redis_conn {
    struct event_base *base;    /* borrowed */
    struct redis_url url;       /* where to connect */
    const char *name;           /* borrowed, labels logs */
    redisAsyncContext *ac;      /* NULL while disconnected */
    struct resolve *lookup;     /* the host name's lookup, while it runs */
    struct event *retry_ev;     /* reconnect timer */
    struct event *connect_ev;   /* connect (and handshake) deadline */
    struct event *ping_ev;      /* keep-alive period */
    struct event *ping_dead_ev; /* deadline of the outstanding ping */
    struct event *drop_ev;      /* deferred drop, for decisions taken inside callbacks */
    struct event *cmd_dead_ev;  /* deadline of the oldest command in flight */
    atomic_bool up;             /* connected, handshake done, pings answered */
    bool connected;             /* TCP connected (handshake may still run) */
    bool closing;               /* redis_conn_free running: no reconnect */
    enum { LOGGED_NONE, LOGGED_UP, LOGGED_DOWN } logged; /* last state logged at info/warn */
    bool ping_outstanding;                               /* a PING awaits its answer */
    unsigned handshake_left;                             /* AUTH/SELECT replies still expected */
    bool hold_backoff;           /* dropped for READONLY: the next connect keeps the backoff */
    unsigned backoff_ms;         /* next reconnect delay before jitter */
    unsigned attempts;           /* connect attempts since the last success */
    unsigned long connects;      /* times the connection came up */
    unsigned seed;               /* jitter state */
    uint64_t block_until_ms;     /* a blocking command may hold replies back until then */
    size_t pending;              /* user commands awaiting a reply */
    unsigned timeout_ms;         /* a command unanswered this long drops the connection; 0: never */
    struct redis_conn_cmd *head; /* oldest command in flight (replies come in order) */
    struct redis_conn_cmd *live; /* oldest one not answered yet: those before it timed out
                                  * and only wait for their replies, to drop them */
    unsigned long replies;       /* replies to commands so far */
    unsigned long replies_seen;  /* `replies` at the last deadline check */
    struct redis_conn_cmd *tail; /* newest command in flight */
    struct redis_conn_cmd *free_cmds; /* recycled command records */
    size_t nfree;                     /* records on free_cmds */
    char drop_reason[256];            /* why drop_ev fires */
    char errstr[256];                 /* last error */
};

static void conn_start(struct redis_conn *c);

/* ---- URL parsing ---- */

/* Parses decimal digits s[0..n) into a value no larger than max. */
static bool parse_digits(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool host_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

bool redis_url_parse(const char *url, struct redis_url *out)
{
    static const char scheme[] = "redis://";
    struct redis_url u = {.port = 6379, .db = 0};
    long v;

    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return false;
    const char *p = url + sizeof(scheme) - 1;
    const char *auth_end = p + strcspn(p, "/?#");
    const char *end = auth_end + strlen(auth_end);

    /* userinfo: [user]:password@ ; the password may hold '@' only percent-encoded. */
    const char *at = memchr(p, '@', (size_t)(auth_end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon ||
            !urlcode_decode(p, (size_t)(colon - p), URLCODE_STRICT, u.username,
                            sizeof(u.username)) ||
            !urlcode_decode(colon + 1, (size_t)(at - colon - 1), URLCODE_STRICT, u.password,
                            sizeof(u.password)))
            return false;
        if (memchr(at + 1, '@', (size_t)(auth_end - at - 1)))
            return false;
        p = at + 1;
    }

    /* host: a name, an IPv4 address, or [IPv6]. */
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end || host_end == host)
            return false;
        for (const char *q = host; q < host_end; q++) {
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                return false;
        }
        p = host_end + 1;
    } else {
        host_end = p;
        while (host_end < auth_end && host_char(*host_end))
            host_end++;
        if (host_end == host)
            return false;
        p = host_end;
    }
    if ((size_t)(host_end - host) >= sizeof(u.host))
        return false;
    memcpy(u.host, host, (size_t)(host_end - host));
    u.host[host_end - host] = '\0';

    if (p < auth_end) {
        if (*p != ':' || !parse_digits(p + 1, (size_t)(auth_end - p - 1), 65535, &v) || v == 0)
            return false;
        u.port = (uint16_t)v;
    }

    if (auth_end < end) {
        if (*auth_end != '/')
            return false; /* query strings and fragments are not supported */
        if (auth_end + 1 < end) {
            if (!parse_digits(auth_end + 1, (size_t)(end - auth_end - 1), INT_MAX, &v))
                return false;
            u.db = (int)v;
        }
    }
    *out = u;
    return true;
}

int redis_url_parse_list(const char *list, struct redis_url *out, int max)
{
    int n = 0;
    char one[1024];
    const char *item;
    size_t len;

    if (max <= 0)
        return -1;
    /* Spaces around commas are forgiven ("a, b"), nothing else. */
    for (const char *p = list; config_list_next(&p, &item, &len);) {
        if (len == 0 || len >= sizeof(one) || n >= max)
            return -1;
        memcpy(one, item, len);
        one[len] = '\0';
        if (!redis_url_parse(one, &out[n]))
            return -1;
        n++;
    }
    return n > 0 ? n : -1;
}

/* ---- connection state ---- */

static void set_errstr(struct redis_conn *c, const char *s)
{
    snprintf(c->errstr, sizeof(c->errstr), "%s", s && *s ? s : "connection lost");
}

/* Marks the connection up once TCP is connected and the handshake is done. */
static void conn_set_up(struct redis_conn *c)
{
    c->up = true;
    c->connects++;
    c->logged = LOGGED_UP;
    /* After a drop for READONLY the backoff grows on: a node that answers
     * its handshake but still refuses the commands is retried less often. */
    if (!c->hold_backoff)
        c->backoff_ms = BACKOFF_MIN_MS;
    c->hold_backoff = false;
    evtimer_del(c->connect_ev);
    struct timeval tv = timeutil_tv(PING_INTERVAL_MS);
    evtimer_add(c->ping_ev, &tv);
    log_info("redis_connected", LF_STR("name", c->name), LF_STR("host", c->url.host),
             LF_INT("port", c->url.port), LF_INT("db", c->url.db), LF_INT("attempts", c->attempts));
    c->attempts = 0;
}

/* Schedules the next connect attempt with exponential backoff and jitter. */
static void conn_schedule_retry(struct redis_conn *c)
{
    unsigned d = c->backoff_ms;
    unsigned delay = timeutil_jitter(d, &c->seed);
    c->backoff_ms = d * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d * 2;
    struct timeval tv = timeutil_tv(delay);
    evtimer_add(c->retry_ev, &tv);
}

/* The context `c->ac` is gone (hiredis freed it or is about to): forget it, log
 * the state change once, and reconnect later. */
static void conn_lost(struct redis_conn *c)
{
    bool was_connected = c->connected;

    c->ac = NULL;
    c->up = false;
    c->connected = false;
    c->ping_outstanding = false;
    c->handshake_left = 0;
    c->block_until_ms = 0;
    evtimer_del(c->ping_ev);
    evtimer_del(c->ping_dead_ev);
    evtimer_del(c->connect_ev);
    evtimer_del(c->drop_ev);
    evtimer_del(c->cmd_dead_ev);
    if (c->closing)
        return;
    /* One line per state change; the retries of an outage go to debug. */
    if (c->logged == LOGGED_UP) {
        log_warn("redis_disconnected", LF_STR("name", c->name), LF_STR("host", c->url.host),
                 LF_INT("port", c->url.port), LF_STR("error", c->errstr));
    } else if (c->logged == LOGGED_NONE) {
        log_warn("redis_connect_failed", LF_STR("name", c->name), LF_STR("host", c->url.host),
                 LF_INT("port", c->url.port), LF_STR("error", c->errstr));
    } else {
        log_debug("redis_connect_retry_failed", LF_STR("name", c->name),
                  LF_STR("host", c->url.host), LF_INT("port", c->url.port),
                  LF_STR("error", c->errstr), LF_INT("attempts", c->attempts),
                  LF_BOOL("was_connected", was_connected));
    }
    c->logged = LOGGED_DOWN;
    conn_schedule_retry(c);
}

/* Closes the current context from outside any hiredis callback: pending
 * callbacks run with a NULL reply, then the connection is marked down. */
static void conn_drop(struct redis_conn *c, const char *reason)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    set_errstr(c, reason);
    c->up = false;
    redisAsyncFree(ac);
    /* hiredis calls the disconnect callback only for connected contexts. */
    if (c->ac == ac)
        conn_lost(c);
}

/* Drops the connection later, from the loop: used inside hiredis callbacks,
 * where freeing the context is not allowed. */
static void conn_drop_later(struct redis_conn *c, const char *reason)
{
    c->up = false;
    snprintf(c->drop_reason, sizeof(c->drop_reason), "%s", reason);
    event_active(c->drop_ev, EV_TIMEOUT, 1);
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *c = arg;
    (void)fd;
    (void)what;
    conn_drop(c, c->drop_reason);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *c = arg;
    (void)fd;
    (void)what;
    conn_drop(c, c->connected ? "handshake timed out" : "connect timed out");
}

/* Grace after a command's deadline before the connection is dropped: the
 * loop may have been too busy to send the command or read its answer. */
static unsigned cmd_grace_ms(const struct redis_conn *c)
{
    unsigned g = c->timeout_ms / 4;
    return g < 10 ? 10 : g > 100 ? 100 : g;
}

/* Answers "command timed out" to each command found past its deadline at an
 * earlier check and still unanswered (the server answers, but too slowly:
 * the connection stays, and their replies are dropped when they come), and
 * marks those past it now. Overdue commands are a prefix of those from
 * `live` on, since deadlines never decrease along the FIFO. */
static void expire_overdue(struct redis_conn *c, uint64_t now)
{
    struct redis_conn_cmd *cmd = c->live;
    while (cmd && cmd->deadline_ms <= now && c->ac) {
        if (!cmd->overdue) {
            cmd->overdue = true;
            cmd = cmd->next;
            continue;
        }
        redis_conn_reply_cb *cb = cmd->cb;
        c->live = cmd->next;
        cmd->cb = NULL;
        cb(cmd->arg, NULL, "command timed out");
        cmd = c->live;
    }
}

/* The oldest command in flight is past its deadline: read what the server may
 * already have sent. A command still unanswered one grace period later (in
 * which the loop sends and reads) is answered "command timed out"; and if
 * nothing at all came back in that period, the server is hung or gone: the
 * connection is dropped, which fails every command in flight at once. */
static void on_cmd_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *c = arg;
    uint64_t wait_ms;
    (void)fd;
    (void)what;
    if (!c->head || !c->ac)
        return;
    uint64_t now = timeutil_mono_ms();
    if (c->head->deadline_ms <= now) {
        redisAsyncHandleRead(c->ac);
        if (!c->head || !c->ac)
            return;
    }
    bool progress = c->replies != c->replies_seen;
    c->replies_seen = c->replies;
    if (c->head->overdue && !progress) {
        conn_drop(c, "command timed out");
        return;
    }
    expire_overdue(c, now);
    if (!c->head || !c->ac)
        return;
    if (c->head->overdue)
        wait_ms = cmd_grace_ms(c);
    else if (c->head->deadline_ms == UINT64_MAX)
        return;
    else
        wait_ms = c->head->deadline_ms > now ? c->head->deadline_ms - now : 1;
    struct timeval tv = timeutil_tv(wait_ms);
    evtimer_add(c->cmd_dead_ev, &tv);
}

/* ---- hiredis callbacks ---- */

static void on_ping_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_conn *c = privdata;
    (void)ac;
    if (!r)
        return; /* the context is going away; on_disconnect handles it */
    /* Any answer, even an error (LOADING), proves the server is alive. */
    c->ping_outstanding = false;
    evtimer_del(c->ping_dead_ev);
}

static void on_ping_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *c = arg;
    (void)fd;
    (void)what;
    /* Replies come in order: a ping queued behind a blocking command (XREADGROUP
     * BLOCK) cannot be answered before that command returns. */
    uint64_t now = timeutil_mono_ms();
    if (c->block_until_ms == UINT64_MAX)
        return; /* blocked forever (BLOCK 0): nothing to judge by */
    if (now < c->block_until_ms + PING_TIMEOUT_MS) {
        struct timeval tv = timeutil_tv(c->block_until_ms + PING_TIMEOUT_MS - now);
        evtimer_add(c->ping_dead_ev, &tv);
        return;
    }
    conn_drop(c, "ping timed out");
}

static void on_ping_tick(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *c = arg;
    (void)fd;
    (void)what;
    if (!c->ac || c->ping_outstanding)
        return;
    if (redisAsyncCommand(c->ac, on_ping_reply, c, "PING") != REDIS_OK)
        return;
    c->ping_outstanding = true;
    struct timeval tv = timeutil_tv(PING_TIMEOUT_MS);
    evtimer_add(c->ping_dead_ev, &tv);
}

static void on_handshake_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_conn *c = privdata;
    redisReply *reply = r;
    (void)ac;
    if (!reply || c->handshake_left == 0)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char msg[200];
        snprintf(msg, sizeof(msg), "handshake failed: %s", reply->str ? reply->str : "error");
        c->handshake_left = 0;
        conn_drop_later(c, msg);
        return;
    }
    if (--c->handshake_left == 0)
        conn_set_up(c);
}

bool redis_policy_evicts_keys(const char *policy)
{
    /* allkeys-*: any key may be evicted, a stream with its entries too.
     * volatile-* evict only keys with an expiry, and streams have none. */
    return policy && strncmp(policy, "allkeys-", 8) == 0;
}

const char *redis_policy_unsafe(const struct redisReply *reply)
{
    /* No answer, or an error: CONFIG renamed or denied (managed Redis, ACLs),
     * and nothing is known. */
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return NULL;
    return redis_policy_evicts_keys(reply->element[1]->str) ? reply->element[1]->str : NULL;
}

static void on_policy_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_conn *c = privdata;
    const char *policy = redis_policy_unsafe(r);
    (void)ac;
    if (policy)
        log_warn("redis_eviction_policy_unsafe", LF_STR("name", c->name),
                 LF_STR("host", c->url.host), LF_INT("port", c->url.port),
                 LF_STR("policy", policy));
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this returns; no disconnect
         * callback follows. */
        set_errstr(c, ac->errstr);
        conn_lost(c);
        return;
    }
    c->connected = true;
    c->handshake_left = 0;
    /* AUTH and SELECT go first: every later command runs authenticated, on the
     * right database. */
    if (c->url.password[0]) {
        int rc;
        if (c->url.username[0])
            rc = redisAsyncCommand(c->ac, on_handshake_reply, c, "AUTH %s %s", c->url.username,
                                   c->url.password);
        else
            rc = redisAsyncCommand(c->ac, on_handshake_reply, c, "AUTH %s", c->url.password);
        if (rc == REDIS_OK)
            c->handshake_left++;
    }
    if (c->url.db != 0 &&
        redisAsyncCommand(c->ac, on_handshake_reply, c, "SELECT %d", c->url.db) == REDIS_OK)
        c->handshake_left++;
    /* Up only once the server answers: a stopped server's kernel still accepts
     * connections. */
    if (redisAsyncCommand(c->ac, on_handshake_reply, c, "PING") == REDIS_OK)
        c->handshake_left++;
    if (c->handshake_left == 0) {
        conn_drop_later(c, "cannot send the handshake");
        return;
    }
    /* Not part of the handshake: a warning at most. */
    redisAsyncCommand(c->ac, on_policy_reply, c, "CONFIG GET maxmemory-policy");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    /* A clean close is one we asked for, and we set errstr then. */
    if (status != REDIS_OK || !c->errstr[0])
        set_errstr(c, ac->errstr);
    conn_lost(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_start(arg);
}

/* Connects to `addr` (numeric), without blocking. */
static void conn_connect(struct redis_conn *c, const char *addr)
{
    redisAsyncContext *ac = redisAsyncConnect(addr, c->url.port);

    if (!ac) {
        set_errstr(c, "out of memory");
        goto fail;
    }
    if (ac->err) {
        set_errstr(c, ac->errstr);
        redisAsyncFree(ac);
        goto fail;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
        set_errstr(c, "cannot attach to the event loop");
        redisAsyncFree(ac);
        goto fail;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    struct timeval tv = timeutil_tv(CONNECT_TIMEOUT_MS);
    evtimer_add(c->connect_ev, &tv);
    return;
fail:
    conn_lost(c);
}

static void on_resolved(void *arg, const struct resolve_result *res)
{
    struct redis_conn *c = arg;

    c->lookup = NULL;
    if (res->n == 0) {
        set_errstr(c, res->errstr);
        conn_lost(c);
        return;
    }
    /* An IPv4 address first, as hiredis itself takes them: `localhost` is
     * ::1 first in most /etc/hosts, and Redis often listens on 127.0.0.1. */
    const char *addr = res->addrs[0];
    for (unsigned i = 0; i < res->n; i++) {
        if (!strchr(res->addrs[i], ':')) {
            addr = res->addrs[i];
            break;
        }
    }
    conn_connect(c, addr);
}

/* Starts one connect attempt: a host name is looked up first, off the loop
 * (no deadline of ours: the resolver's own timeouts end it, and meanwhile
 * the connection is simply down). On an immediate failure, schedules the
 * next attempt. */
static void conn_start(struct redis_conn *c)
{
    c->attempts++;
    if (resolve_is_numeric(c->url.host)) {
        conn_connect(c, c->url.host);
        return;
    }
    c->lookup = resolve_start(c->base, c->url.host, on_resolved, c);
    if (!c->lookup) {
        set_errstr(c, "cannot start the host name lookup");
        conn_lost(c);
    }
}

struct redis_conn *redis_conn_new(struct event_base *base, const struct redis_url *url,
                                  const char *name)
{
    struct redis_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->url = *url;
    c->name = name ? name : "redis";
    c->backoff_ms = BACKOFF_MIN_MS;
    c->seed = timeutil_jitter_seed(c);
    c->retry_ev = evtimer_new(base, on_retry, c);
    c->connect_ev = evtimer_new(base, on_connect_timeout, c);
    c->ping_ev = event_new(base, -1, EV_PERSIST, on_ping_tick, c);
    c->ping_dead_ev = evtimer_new(base, on_ping_deadline, c);
    c->drop_ev = evtimer_new(base, on_drop, c);
    c->cmd_dead_ev = evtimer_new(base, on_cmd_deadline, c);
    if (!c->retry_ev || !c->connect_ev || !c->ping_ev || !c->ping_dead_ev || !c->drop_ev ||
        !c->cmd_dead_ev) {
        redis_conn_free(c);
        return NULL;
    }
    conn_start(c);
    return c;
}

/* ---- commands ---- */

static bool arg_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Parses a timeout argument (`scale` units per second); UINT64_MAX for 0
 * (block forever), 0 if unparsable. */
static uint64_t parse_block(const char *s, size_t n, double scale)
{
    char buf[32];
    if (n == 0 || n >= sizeof(buf))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    double v = strtod(buf, &end);
    if (*end || !(v >= 0))
        return 0;
    if (v == 0)
        return UINT64_MAX;
    return (uint64_t)(v * 1000.0 / scale);
}

/* How long a command may legitimately hold back the replies behind it: XREAD /
 * XREADGROUP BLOCK ms, BLPOP-style trailing timeouts, WAIT. */
static uint64_t command_block_ms(int argc, const char **argv, const size_t *argvlen)
{
#define ARG_LEN(i)   (argvlen ? argvlen[(i)] : strlen(argv[(i)]))
#define ARG_IS(i, w) arg_is(argv[(i)], ARG_LEN(i), (w))
    if (ARG_IS(0, "XREAD") || ARG_IS(0, "XREADGROUP")) {
        for (int i = 1; i + 1 < argc; i++) {
            if (ARG_IS(i, "BLOCK"))
                return parse_block(argv[i + 1], ARG_LEN(i + 1), 1000);
            if (ARG_IS(i, "STREAMS"))
                break;
        }
        return 0;
    }
    static const char *const trailing[] = {"BLPOP",  "BRPOP",    "BRPOPLPUSH",
                                           "BLMOVE", "BZPOPMIN", "BZPOPMAX"};
    for (size_t k = 0; k < sizeof(trailing) / sizeof(trailing[0]); k++) {
        if (ARG_IS(0, trailing[k]) && argc >= 2)
            return parse_block(argv[argc - 1], ARG_LEN(argc - 1), 1);
    }
    if ((ARG_IS(0, "BLMPOP") || ARG_IS(0, "BZMPOP")) && argc >= 2)
        return parse_block(argv[1], ARG_LEN(1), 1);
    if (ARG_IS(0, "WAIT") && argc == 3)
        return parse_block(argv[2], ARG_LEN(2), 1000);
    return 0;
#undef ARG_IS
#undef ARG_LEN
}

/* A command record from the pool (or the heap), or NULL when out of memory. */
static struct redis_conn_cmd *cmd_get(struct redis_conn *c)
{
    struct redis_conn_cmd *cmd = c->free_cmds;
    if (cmd) {
        c->free_cmds = cmd->next;
        c->nfree--;
        return cmd;
    }
    return malloc(sizeof(*cmd));
}

/* Returns a record to the pool, or frees it when the pool is full. */
static void cmd_put(struct redis_conn *c, struct redis_conn_cmd *cmd)
{
    if (c->nfree >= CMD_POOL_MAX) {
        free(cmd);
        return;
    }
    cmd->next = c->free_cmds;
    c->free_cmds = cmd;
    c->nfree++;
}

static void on_command_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_conn_cmd *cmd = privdata;
    struct redis_conn *c = cmd->conn;
    const char *errstr = NULL;

    c->pending--;
    if (c->live == cmd)
        c->live = cmd->next;
    /* Replies come in order, so this is the head; the search is only a guard. */
    if (c->head == cmd) {
        c->head = cmd->next;
        if (!c->head)
            c->tail = NULL;
    } else {
        struct redis_conn_cmd *p = c->head;
        while (p && p->next != cmd)
            p = p->next;
        if (p) {
            p->next = cmd->next;
            if (c->tail == cmd)
                c->tail = p;
        }
    }
    if (!r) {
        /* The connection is dying: new commands must fail fast from now on. */
        c->up = false;
        if (ac->err && ac->errstr)
            set_errstr(c, ac->errstr);
        else if (!c->errstr[0])
            set_errstr(c, "connection closed");
        errstr = c->errstr;
    } else {
        c->replies++;
        const redisReply *reply = r;
        /* A primary demoted to a replica (a failover behind the same name)
         * refuses every write and still answers pings: connect again, with a
         * backoff that grows while it still refuses, to reach the new primary
         * instead of failing every command for ever with the node up. */
        if (reply->type == REDIS_REPLY_ERROR && reply->str &&
            (strncmp(reply->str, "READONLY", 8) == 0 ||
             strncmp(reply->str, "MASTERDOWN", 10) == 0) &&
            c->ac) {
            c->hold_backoff = true;
            conn_drop_later(c, reply->str);
        }
    }
    if (cmd->cb) /* else it timed out already */
        cmd->cb(cmd->arg, r, errstr);
    cmd_put(c, cmd);
}

/* Records a command just handed to hiredis: in-flight FIFO, pending count, and
 * its deadline (a command queued behind a blocking one cannot be answered
 * before that one returns, so deadlines never decrease along the FIFO). */
static void cmd_sent(struct redis_conn *c, struct redis_conn_cmd *cmd, uint64_t block_ms)
{
    uint64_t now = timeutil_mono_ms();
    if (block_ms) {
        uint64_t until = block_ms == UINT64_MAX ? UINT64_MAX : now + block_ms;
        if (until > c->block_until_ms)
            c->block_until_ms = until;
    }
    cmd->deadline_ms = UINT64_MAX;
    cmd->overdue = false;
    if (c->timeout_ms && c->block_until_ms != UINT64_MAX) {
        uint64_t from = c->block_until_ms > now ? c->block_until_ms : now;
        cmd->deadline_ms = from + c->timeout_ms;
        if (!evtimer_pending(c->cmd_dead_ev, NULL)) {
            struct timeval tv = timeutil_tv(c->timeout_ms);
            evtimer_add(c->cmd_dead_ev, &tv);
        }
    }
    cmd->next = NULL;
    if (c->tail)
        c->tail->next = cmd;
    else
        c->head = cmd;
    c->tail = cmd;
    if (!c->live)
        c->live = cmd;
    c->pending++;
}

/* Sends a command given either as argv (cmdtext NULL) or preformatted. */
static int command_send(struct redis_conn *c, redis_conn_reply_cb *cb, void *arg, int argc,
                        const char **argv, const size_t *argvlen, const char *cmdtext, size_t len)
{
    if (!c->up || !c->ac)
        return -ENOTCONN;
    struct redis_conn_cmd *cmd = cmd_get(c);
    if (!cmd)
        return -ENOMEM;
    *cmd = (struct redis_conn_cmd){.conn = c, .cb = cb, .arg = arg};
    int rc = cmdtext ? redisAsyncFormattedCommand(c->ac, on_command_reply, cmd, cmdtext, len)
                     : redisAsyncCommandArgv(c->ac, on_command_reply, cmd, argc, argv, argvlen);
    if (rc != REDIS_OK) {
        cmd_put(c, cmd);
        return -ENOTCONN;
    }
    cmd_sent(c, cmd, cmdtext ? 0 : command_block_ms(argc, argv, argvlen));
    return 0;
}

int redis_conn_command(struct redis_conn *c, redis_conn_reply_cb *cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen)
{
    if (argc <= 0 || !argv || !cb)
        return -EINVAL;
    return command_send(c, cb, arg, argc, argv, argvlen, NULL, 0);
}

int redis_conn_command_formatted(struct redis_conn *c, redis_conn_reply_cb *cb, void *arg,
                                 const char *cmdtext, size_t len)
{
    if (!cmdtext || len == 0 || !cb)
        return -EINVAL;
    return command_send(c, cb, arg, 0, NULL, NULL, cmdtext, len);
}

void redis_conn_set_timeout(struct redis_conn *c, unsigned timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

bool redis_conn_is_up(const struct redis_conn *c)
{
    return c && c->up;
}

unsigned long redis_conn_connects(const struct redis_conn *c)
{
    return c->connects;
}

size_t redis_conn_pending(const struct redis_conn *c)
{
    return c ? c->pending : 0;
}

const char *redis_conn_errstr(const struct redis_conn *c)
{
    return c ? c->errstr : "";
}

void redis_conn_free(struct redis_conn *c)
{
    if (!c)
        return;
    c->closing = true;
    c->up = false;
    resolve_cancel(c->lookup);
    if (c->ac) {
        set_errstr(c, "connection closed");
        /* Runs every pending callback with a NULL reply before returning. */
        redisAsyncFree(c->ac);
        c->ac = NULL;
    }
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->connect_ev)
        event_free(c->connect_ev);
    if (c->ping_ev)
        event_free(c->ping_ev);
    if (c->ping_dead_ev)
        event_free(c->ping_dead_ev);
    if (c->drop_ev)
        event_free(c->drop_ev);
    if (c->cmd_dead_ev)
        event_free(c->cmd_dead_ev);
    while (c->free_cmds) {
        struct redis_conn_cmd *cmd = c->free_cmds;
        c->free_cmds = cmd->next;
        free(cmd);
    }
    free(c);
}
