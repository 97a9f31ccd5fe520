/* Non-blocking libpq connections on a libevent loop: a state machine per
 * connection, a FIFO queue with a wait limit, liveness checks, reconnect. */
#include "pg_pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "resolve.h"
#include "timeutil.h"

enum {
    CONNECT_TIMEOUT_MS = 5000, /* PQconnectPoll has no deadline of its own */
    IDLE_CHECK_MS = 5000,      /* an idle connection is checked this often */
    CHECK_TIMEOUT_MS = 5000,   /* a check or reset unanswered this long: drop */
    QUERY_GRACE_MS = 1000,     /* past the statement timeout, before a query is given up */
    BACKOFF_MIN_MS = 100,      /* first reconnect delay */
    BACKOFF_MAX_MS = 5000,     /* reconnect delay cap */
    PREPARED_MAX = 256,        /* named statements kept per connection */
};

enum pg_conn_state {
    CONN_DOWN,       /* waiting to reconnect */
    CONN_CONNECTING, /* the host name looked up, or PQconnectPoll in progress */
    CONN_IDLE,       /* ready for a query */
    CONN_BUSY,       /* a user query or an internal check runs */
};

struct pg_query {
    struct pg_query *next; /* queue link */
    char *sql;             /* owned */
    int nparams;           /* count of params */
    char **params;         /* owned; an entry may be NULL (SQL NULL) */
    char *name;            /* owned prepared-statement name, or NULL */
    pg_pool_result_cb *cb; /* called exactly once */
    void *arg;             /* passed to cb */
    uint64_t deadline_ms;  /* when waiting in the queue stops */
    uint64_t started_ms;   /* when a connection took it */
};

struct pg_conn {
    struct pg_pool *pool;     /* owner */
    unsigned index;           /* position in the pool, for logs */
    PGconn *conn;             /* NULL while down */
    struct resolve *lookup;   /* the host name's lookup, while it runs */
    enum pg_conn_state state; /* see enum */
    struct event *ev;         /* socket readiness; recreated when the socket changes */
    evutil_socket_t ev_fd;    /* the socket ev watches */
    struct event *timer;      /* per state: retry, connect, idle check, check or query deadline */
    struct pg_query *q;       /* running user query, or NULL */
    const char *internal;     /* running internal query (check/reset), or NULL */
    PGresult *last;           /* last result of the running query */
    bool flushing;            /* output not fully sent yet */
    bool copy_out;            /* draining an unexpected COPY TO STDOUT */
    bool up;                  /* connected and answering */
    unsigned backoff_ms;      /* next reconnect delay before jitter */
    char **prepared;          /* owned names prepared on this connection */
    unsigned nprepared;       /* count of them */
    bool preparing;           /* the running step is the PREPARE of pc->q */
};

struct pg_pool {
    struct event_base *base;   /* borrowed */
    char *conninfo;            /* owned copy */
    char *lookup_host;         /* owned: the one host, a name to look up first; or NULL */
    unsigned size;             /* count of conns */
    unsigned queue_timeout_ms; /* longest wait in the queue */
    unsigned query_timeout_ms; /* longest a user query runs unanswered; 0: no limit */
    char options[48];          /* "-c statement_timeout=N", or "" */
    struct pg_conn *conns;     /* size of them */
    struct pg_query *head;     /* queue, FIFO */
    struct pg_query **tail;    /* where the next query is linked */
    size_t nqueued;            /* queries in the queue */
    size_t nrunning;           /* user queries on connections */
    struct event *queue_ev;    /* fires at the head's deadline */
    struct event *fail_ev;     /* fails the queue when no connection is left */
    bool closing;              /* pg_pool_free running */
    bool ever_up;              /* some connection was up once */
    bool logged_down;          /* the current outage has been logged */
    bool stalled;              /* a query passed its deadline, no answer since */
    unsigned seed;             /* jitter state */
    char errstr[256];          /* last connection error */
};

static void conn_start(struct pg_conn *pc);
static void pool_dispatch(struct pg_pool *p);
static void on_socket(evutil_socket_t fd, short what, void *arg);

static void query_free(struct pg_query *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->sql);
    free(q->name);
    free(q);
}

/* Copies libpq's message on one line: its newlines and tabs become spaces. */
static void copy_error(char *out, size_t cap, const char *msg)
{
    size_t o = 0;
    bool space = false;
    if (!msg || !*msg)
        msg = "connection lost";
    for (const char *s = msg; *s && o + 1 < cap; s++) {
        if (*s == '\n' || *s == '\t' || *s == ' ') {
            space = true;
            continue;
        }
        if (space && o > 0 && o + 2 < cap)
            out[o++] = ' ';
        space = false;
        out[o++] = *s;
    }
    out[o] = '\0';
}

static bool pool_any_up(const struct pg_pool *p)
{
    for (unsigned i = 0; i < p->size; i++) {
        if (p->conns[i].up)
            return true;
    }
    return false;
}

static void notice_to_log(void *arg, const char *message)
{
    char msg[512];
    (void)arg;
    copy_error(msg, sizeof(msg), message);
    log_debug("pg_notice", LF_STR("message", msg));
}

/* Points the connection's event at its current socket, waiting for `what`. */
static int conn_watch(struct pg_conn *pc, short what)
{
    evutil_socket_t fd = PQsocket(pc->conn);
    if (fd < 0)
        return -EBADF;
    if (pc->ev) {
        event_del(pc->ev);
        /* libpq may open a new socket (next host, reconnect): never reuse an
         * event across sockets. */
        if (pc->ev_fd != fd) {
            event_free(pc->ev);
            pc->ev = NULL;
        }
    }
    if (!pc->ev) {
        pc->ev = event_new(pc->pool->base, fd, what, NULL, NULL);
        if (!pc->ev)
            return -ENOMEM;
        pc->ev_fd = fd;
    }
    event_assign(pc->ev, pc->pool->base, fd, what, on_socket, pc);
    event_add(pc->ev, NULL);
    return 0;
}

static void conn_timer(struct pg_conn *pc, uint64_t ms)
{
    struct timeval tv = timeutil_tv(ms);
    evtimer_add(pc->timer, &tv);
}

static void queue_rearm(struct pg_pool *p)
{
    if (!p->head) {
        evtimer_del(p->queue_ev);
        return;
    }
    uint64_t now = timeutil_mono_ms();
    struct timeval tv = timeutil_tv(p->head->deadline_ms > now ? p->head->deadline_ms - now : 0);
    evtimer_add(p->queue_ev, &tv);
}

static struct pg_query *queue_pop(struct pg_pool *p)
{
    struct pg_query *q = p->head;
    if (!q)
        return NULL;
    p->head = q->next;
    if (!p->head)
        p->tail = &p->head;
    q->next = NULL;
    p->nqueued--;
    return q;
}

static void queue_push_front(struct pg_pool *p, struct pg_query *q)
{
    q->next = p->head;
    p->head = q;
    if (!q->next)
        p->tail = &q->next;
    p->nqueued++;
}

/* Logs a lost connection once per state change, fails the queue if nothing is
 * left, and schedules the reconnect. */
static void conn_after_loss(struct pg_conn *pc, bool was_up, const char *err)
{
    struct pg_pool *p = pc->pool;
    if (!pool_any_up(p)) {
        if (!p->logged_down) {
            p->logged_down = true;
            if (p->ever_up)
                log_warn("pg_disconnected", LF_INT("conn", pc->index), LF_STR("error", err));
            else
                log_warn("pg_connect_failed", LF_INT("conn", pc->index), LF_STR("error", err));
        } else {
            log_debug("pg_connect_retry_failed", LF_INT("conn", pc->index), LF_STR("error", err));
        }
        /* Queued queries would only wait for the timeout: fail them now, from
         * the loop. */
        if (p->head)
            event_active(p->fail_ev, EV_TIMEOUT, 1);
    } else if (was_up) {
        log_info("pg_connection_lost", LF_INT("conn", pc->index), LF_STR("error", err));
    }

    unsigned d = pc->backoff_ms;
    conn_timer(pc, timeutil_jitter(d, &p->seed));
    pc->backoff_ms = d * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d * 2;
}

/* The connection is gone: close it, fail its running query, reconnect later. */
static void conn_lost(struct pg_conn *pc, const char *why)
{
    struct pg_pool *p = pc->pool;
    struct pg_query *q = pc->q;
    bool was_up = pc->up;
    char err[256];

    copy_error(err, sizeof(err), why);
    snprintf(p->errstr, sizeof(p->errstr), "%s", err);
    /* Free the event before the socket closes so the backend forgets the fd. */
    if (pc->ev) {
        event_free(pc->ev);
        pc->ev = NULL;
    }
    evtimer_del(pc->timer);
    resolve_cancel(pc->lookup);
    pc->lookup = NULL;
    PQclear(pc->last);
    pc->last = NULL;
    PQfinish(pc->conn);
    pc->conn = NULL;
    /* Prepared statements die with the session. */
    for (unsigned i = 0; i < pc->nprepared; i++)
        free(pc->prepared[i]);
    free(pc->prepared);
    pc->prepared = NULL;
    pc->nprepared = 0;
    pc->preparing = false;
    pc->q = NULL;
    pc->internal = NULL;
    pc->flushing = false;
    pc->copy_out = false;
    pc->up = false;
    pc->state = CONN_DOWN;
    if (q)
        p->nrunning--;

    if (!p->closing)
        conn_after_loss(pc, was_up, err);
    if (q) {
        q->cb(q->arg, NULL, err);
        query_free(q);
    }
}

/* Idle: watch the socket so a closing server is noticed at once, and schedule
 * the next liveness check. */
static void conn_idle(struct pg_conn *pc)
{
    pc->state = CONN_IDLE;
    if (conn_watch(pc, EV_READ) < 0) {
        conn_lost(pc, "cannot watch the socket");
        return;
    }
    conn_timer(pc, IDLE_CHECK_MS);
}

/* A query went out on `pc`: busy until its results are read. Returns false if
 * the socket cannot be watched. */
static bool conn_busy(struct pg_conn *pc)
{
    pc->state = CONN_BUSY;
    pc->flushing = true;
    evtimer_del(pc->timer);
    return conn_watch(pc, EV_READ | EV_WRITE) == 0;
}

/* Sends `sql` on an idle connection. Returns false if the connection broke. */
static bool conn_send(struct pg_conn *pc, const char *sql, int nparams, const char *const *params)
{
    int ok;
    /* Without parameters the simple protocol allows several statements
     * ("BEGIN; ...; COMMIT"); the last result is the one reported. */
    if (nparams > 0)
        ok = PQsendQueryParams(pc->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    else
        ok = PQsendQuery(pc->conn, sql);
    return ok && conn_busy(pc);
}

static bool conn_has_prepared(const struct pg_conn *pc, const char *name)
{
    for (unsigned i = 0; i < pc->nprepared; i++) {
        if (strcmp(pc->prepared[i], name) == 0)
            return true;
    }
    return false;
}

/* Sends user query `q`: a named one runs its prepared statement, preparing it
 * first (one extra round trip) on a connection that has not seen it; past
 * PREPARED_MAX names it runs unnamed. The query's deadline, from its dispatch
 * (q->started_ms) over both steps, is armed. Returns false if the connection
 * broke. */
static bool conn_send_query(struct pg_conn *pc, struct pg_query *q)
{
    const char *const *params = (const char *const *)q->params;
    uint64_t deadline = q->started_ms + pc->pool->query_timeout_ms, now;
    bool sent;

    if (!q->name || (!conn_has_prepared(pc, q->name) && pc->nprepared >= PREPARED_MAX)) {
        sent = conn_send(pc, q->sql, q->nparams, params);
    } else if (conn_has_prepared(pc, q->name)) {
        sent = PQsendQueryPrepared(pc->conn, q->name, q->nparams, params, NULL, NULL, 0) &&
               conn_busy(pc);
    } else {
        pc->preparing = PQsendPrepare(pc->conn, q->name, q->sql, q->nparams, NULL);
        sent = pc->preparing && conn_busy(pc);
    }
    if (sent && pc->pool->query_timeout_ms > 0) {
        now = timeutil_mono_ms();
        conn_timer(pc, deadline > now ? deadline - now : 0);
    }
    return sent;
}

/* The PREPARE step of pc->q finished with `res` (taken): on success remember
 * the name and send the execution. Returns true when the query goes on. */
static bool conn_prepared(struct pg_conn *pc, PGresult *res)
{
    char **grown;
    char *name;

    pc->preparing = false;
    if (PQresultStatus(res) != PGRES_COMMAND_OK || PQstatus(pc->conn) == CONNECTION_BAD)
        return false;
    grown = realloc(pc->prepared, (pc->nprepared + 1) * sizeof(*grown));
    name = strdup(pc->q->name);
    if (grown)
        pc->prepared = grown;
    if (!grown || !name) {
        /* Still prepared on the server: run it unnamed from now on. */
        free(name);
        free(pc->q->name);
        pc->q->name = NULL;
    } else {
        pc->prepared[pc->nprepared++] = name;
    }
    PQclear(res);
    pc->last = NULL;
    if (!conn_send_query(pc, pc->q))
        conn_lost(pc, PQerrorMessage(pc->conn));
    return true;
}

static void conn_internal(struct pg_conn *pc, const char *sql)
{
    pc->internal = sql;
    if (!conn_send(pc, sql, 0, NULL)) {
        conn_lost(pc, PQerrorMessage(pc->conn));
        return;
    }
    conn_timer(pc, CHECK_TIMEOUT_MS);
}

/* The running query finished: report it, then make the connection idle again
 * (or reset it first if the query left a transaction open). */
static void conn_complete(struct pg_conn *pc)
{
    struct pg_pool *p = pc->pool;
    struct pg_query *q = pc->q;
    const char *internal = pc->internal;
    PGresult *res = pc->last;

    if (pc->preparing && q && res && conn_prepared(pc, res))
        return;
    pc->preparing = false;
    pc->q = NULL;
    pc->internal = NULL;
    pc->last = NULL;
    if (q)
        p->nrunning--;
    evtimer_del(pc->timer);

    bool bad = PQstatus(pc->conn) == CONNECTION_BAD;
    PGTransactionStatusType tx = bad ? PQTRANS_UNKNOWN : PQtransactionStatus(pc->conn);
    if (internal && PQresultStatus(res) != PGRES_TUPLES_OK &&
        PQresultStatus(res) != PGRES_COMMAND_OK)
        bad = true;
    if (bad) {
        char err[256];
        copy_error(err, sizeof(err),
                   internal && res ? PQresultErrorMessage(res) : PQerrorMessage(pc->conn));
        conn_lost(pc, err);
    } else if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) {
        /* The next user must not inherit a transaction. */
        log_warn("pg_transaction_left_open", LF_INT("conn", pc->index));
        conn_internal(pc, "ROLLBACK");
    } else {
        conn_idle(pc);
    }
    if (!bad)
        p->stalled = false; /* the server answers again */

    if (q) {
        q->cb(q->arg, res, res ? NULL : "no result");
        query_free(q);
    }
    PQclear(res);
    pool_dispatch(p);
}

/* Drives a busy connection: flush output, read input, collect results. */
static void conn_busy_io(struct pg_conn *pc, short what)
{
    PGconn *conn = pc->conn;

    if ((what & EV_READ) && !PQconsumeInput(conn)) {
        conn_lost(pc, PQerrorMessage(conn));
        return;
    }
    if (pc->flushing) {
        int rc = PQflush(conn);
        if (rc < 0) {
            conn_lost(pc, PQerrorMessage(conn));
            return;
        }
        if (rc == 1) {
            /* libpq wants both: the server may need us to read before it reads. */
            if (conn_watch(pc, EV_READ | EV_WRITE) < 0)
                conn_lost(pc, "cannot watch the socket");
            return;
        }
        pc->flushing = false;
    }
    for (;;) {
        if (pc->copy_out) {
            char *buf = NULL;
            int n = PQgetCopyData(conn, &buf, 1);
            if (n > 0) {
                PQfreemem(buf);
                continue;
            }
            if (n == 0)
                break; /* wait for more */
            if (n == -2) {
                conn_lost(pc, PQerrorMessage(conn));
                return;
            }
            pc->copy_out = false;
        }
        if (PQisBusy(conn))
            break;
        PGresult *res = PQgetResult(conn);
        if (!res) {
            conn_complete(pc);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN) {
            /* COPY FROM STDIN needs data the pool cannot supply: refuse it so the
             * server answers with an error result. */
            PQclear(res);
            if (PQputCopyEnd(conn, "COPY FROM STDIN is not supported by pg_pool") != 1) {
                conn_lost(pc, PQerrorMessage(conn));
                return;
            }
            pc->flushing = true;
            conn_busy_io(pc, 0);
            return;
        }
        if (st == PGRES_COPY_OUT) {
            PQclear(res);
            pc->copy_out = true;
            continue;
        }
        if (st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_lost(pc, "replication protocol is not supported by pg_pool");
            return;
        }
        PQclear(pc->last);
        pc->last = res;
    }
    if (conn_watch(pc, EV_READ) < 0)
        conn_lost(pc, "cannot watch the socket");
}

static void conn_idle_read(struct pg_conn *pc)
{
    /* An idle socket turns readable when the server closes it (shutdown,
     * pg_terminate_backend) or sends a notification. */
    if (!PQconsumeInput(pc->conn) || PQstatus(pc->conn) == CONNECTION_BAD) {
        conn_lost(pc, PQerrorMessage(pc->conn));
        return;
    }
    for (PGnotify *n; (n = PQnotifies(pc->conn));)
        PQfreemem(n);
    if (conn_watch(pc, EV_READ) < 0)
        conn_lost(pc, "cannot watch the socket");
}

static void conn_connected(struct pg_conn *pc)
{
    struct pg_pool *p = pc->pool;
    evtimer_del(pc->timer);
    if (PQsetnonblocking(pc->conn, 1) != 0) {
        conn_lost(pc, PQerrorMessage(pc->conn));
        return;
    }
    PQsetNoticeProcessor(pc->conn, notice_to_log, NULL);
    bool was_up = pool_any_up(p);
    pc->up = true;
    pc->backoff_ms = BACKOFF_MIN_MS;
    p->stalled = false;
    if (!was_up) {
        p->logged_down = false;
        p->ever_up = true;
        log_info("pg_connected", LF_INT("conn", pc->index), LF_INT("pool_size", p->size),
                 LF_INT("server_version", PQserverVersion(pc->conn)));
    } else {
        log_debug("pg_conn_connected", LF_INT("conn", pc->index));
    }
    conn_idle(pc);
    if (pc->state == CONN_IDLE)
        pool_dispatch(p);
}

static void conn_connect_poll(struct pg_conn *pc)
{
    switch (PQconnectPoll(pc->conn)) {
    case PGRES_POLLING_READING:
        if (conn_watch(pc, EV_READ) < 0)
            conn_lost(pc, PQerrorMessage(pc->conn));
        break;
    case PGRES_POLLING_WRITING:
        if (conn_watch(pc, EV_WRITE) < 0)
            conn_lost(pc, PQerrorMessage(pc->conn));
        break;
    case PGRES_POLLING_OK:
        conn_connected(pc);
        break;
    case PGRES_POLLING_FAILED:
    default:
        conn_lost(pc, PQerrorMessage(pc->conn));
        break;
    }
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *pc = arg;
    (void)fd;
    switch (pc->state) {
    case CONN_CONNECTING:
        conn_connect_poll(pc);
        break;
    case CONN_IDLE:
        conn_idle_read(pc);
        break;
    case CONN_BUSY:
        conn_busy_io(pc, what);
        break;
    case CONN_DOWN:
        break;
    }
}

/* User query pc->q outlived its deadline: the server did not even end it at
 * its statement timeout, so it answers nothing (stopped, hung on its disk)
 * while its kernel may still acknowledge, so that no TCP timeout ends the
 * wait. PQcancel would block on that same server: close the connection
 * instead (the query fails, res NULL), take the pool as not up until the
 * server answers again, and check the idle connections now rather than at
 * their next check. */
static void conn_query_timed_out(struct pg_conn *pc)
{
    struct pg_pool *p = pc->pool;
    char why[96];

    log_warn("pg_query_timeout", LF_INT("conn", pc->index),
             LF_INT("elapsed_ms", (long long)(timeutil_mono_ms() - pc->q->started_ms)),
             LF_INT("timeout_ms", p->query_timeout_ms),
             LF_STR("statement", pc->q->name ? pc->q->name : "(unnamed)"));
    snprintf(why, sizeof(why), "no answer to a query within %u ms", p->query_timeout_ms);
    p->stalled = true;
    for (unsigned i = 0; i < p->size; i++) {
        if (p->conns[i].state == CONN_IDLE && p->conns[i].up)
            conn_internal(&p->conns[i], "SELECT 1");
    }
    conn_lost(pc, why);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *pc = arg;
    (void)fd;
    (void)what;
    switch (pc->state) {
    case CONN_DOWN:
        conn_start(pc);
        break;
    case CONN_CONNECTING:
        conn_lost(pc, "connect timed out");
        break;
    case CONN_IDLE:
        conn_internal(pc, "SELECT 1");
        break;
    case CONN_BUSY:
        if (pc->internal)
            conn_lost(pc, "liveness check timed out");
        else if (pc->q)
            conn_query_timed_out(pc);
        break;
    }
}

void pg_conn_params(const char *app, const char *options, const char *conninfo, const char **keys,
                    const char **values)
{
    static const char *const defaults[][2] = {
        {"connect_timeout", "5"},     {"keepalives", "1"},       {"keepalives_idle", "10"},
        {"keepalives_interval", "5"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "30000"}};
    size_t k = 0;

    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++, k++) {
        keys[k] = defaults[i][0];
        values[k] = defaults[i][1];
    }
    if (app)
        keys[k] = "application_name", values[k++] = app;
    if (options)
        keys[k] = "options", values[k++] = options;
    keys[k] = "dbname", values[k++] = conninfo;
    keys[k] = values[k] = NULL;
}

/* Starts a non-blocking connect, to `addrs` (the host's addresses, or NULL:
 * as the conninfo says); failures land in conn_lost (which retries). */
static void conn_connect(struct pg_conn *pc, const struct resolve_result *addrs)
{
    struct pg_pool *p = pc->pool;
    /* The statement timeout with the defaults, so that the operator's
     * conninfo can override it; it ends a query that waits on a lock or a
     * slow server. */
    const char *keys[PG_CONN_PARAMS_MAX + 2], *vals[PG_CONN_PARAMS_MAX + 2];
    char hosts[RESOLVE_ADDRS_MAX * 256], hostaddrs[RESOLVE_ADDRS_MAX * RESOLVE_ADDR_LEN];
    size_t k = 0;

    pg_conn_params(NULL, p->options[0] ? p->options : NULL, p->conninfo, keys, vals);
    if (addrs) {
        /* libpq tries each address in turn, the host's name kept for TLS
         * and the password file; set after the conninfo, they win. (Both
         * lists fit: lookup_host is under 256 bytes.) */
        size_t ho = 0, ao = 0;
        for (unsigned i = 0; i < addrs->n; i++) {
            ho += (size_t)snprintf(hosts + ho, sizeof(hosts) - ho, "%s%s", i ? "," : "",
                                   p->lookup_host);
            ao += (size_t)snprintf(hostaddrs + ao, sizeof(hostaddrs) - ao, "%s%s", i ? "," : "",
                                   addrs->addrs[i]);
        }
        while (keys[k])
            k++;
        keys[k] = "host", vals[k++] = hosts;
        keys[k] = "hostaddr", vals[k++] = hostaddrs;
        keys[k] = vals[k] = NULL;
    }
    pc->conn = PQconnectStartParams(keys, vals, 1);
    if (!pc->conn) {
        conn_lost(pc, "out of memory");
        return;
    }
    if (PQstatus(pc->conn) == CONNECTION_BAD) {
        conn_lost(pc, PQerrorMessage(pc->conn));
        return;
    }
    conn_timer(pc, CONNECT_TIMEOUT_MS);
    /* Per libpq, poll as if PQconnectPoll had answered PGRES_POLLING_WRITING. */
    if (conn_watch(pc, EV_WRITE) < 0)
        conn_lost(pc, PQerrorMessage(pc->conn));
}

static void on_resolved(void *arg, const struct resolve_result *res)
{
    struct pg_conn *pc = arg;

    pc->lookup = NULL;
    if (res->n == 0)
        conn_lost(pc, res->errstr);
    else
        conn_connect(pc, res);
}

/* Starts a connect attempt: a host name is looked up first, off the loop (no
 * deadline of ours: the resolver's own timeouts end it, and meanwhile the
 * connection is simply down). */
static void conn_start(struct pg_conn *pc)
{
    pc->state = CONN_CONNECTING;
    if (!pc->pool->lookup_host) {
        conn_connect(pc, NULL);
        return;
    }
    pc->lookup = resolve_start(pc->pool->base, pc->pool->lookup_host, on_resolved, pc);
    if (!pc->lookup)
        conn_lost(pc, "cannot start the host name lookup");
}

/* Hands queued queries to idle connections. */
static void pool_dispatch(struct pg_pool *p)
{
    for (unsigned i = 0; i < p->size && p->head && !p->closing; i++) {
        struct pg_conn *pc = &p->conns[i];
        if (pc->state != CONN_IDLE || !pc->up)
            continue;
        struct pg_query *q = queue_pop(p);
        pc->q = q;
        q->started_ms = timeutil_mono_ms();
        p->nrunning++;
        if (!conn_send_query(pc, q)) {
            /* Nothing was sent: the query goes back to the front, unharmed. */
            pc->q = NULL;
            p->nrunning--;
            queue_push_front(p, q);
            conn_lost(pc, PQerrorMessage(pc->conn));
        }
    }
    queue_rearm(p);
}

static void fail_queue(struct pg_pool *p, const char *why)
{
    struct pg_query *q;
    while ((q = queue_pop(p))) {
        q->cb(q->arg, NULL, why);
        query_free(q);
    }
    if (p->queue_ev)
        queue_rearm(p);
}

static void on_queue_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_pool *p = arg;
    (void)fd;
    (void)what;
    uint64_t now = timeutil_mono_ms();
    while (p->head && p->head->deadline_ms <= now) {
        struct pg_query *q = queue_pop(p);
        q->cb(q->arg, NULL, "timeout waiting for a database connection");
        query_free(q);
    }
    queue_rearm(p);
}

static void on_fail(evutil_socket_t fd, short what, void *arg)
{
    struct pg_pool *p = arg;
    (void)fd;
    (void)what;
    if (!pool_any_up(p))
        fail_queue(p, "no database connection");
}

/* The host name that `opts` (or PGHOST) gives, when it is one to look up
 * before a connect: a single host, not an address or a socket directory, and
 * no hostaddr (which libpq would use without a lookup), no service. Several
 * hosts, or a service's, are left to libpq, which looks them up itself,
 * blocking the loop. -ENOMEM or 0. */
static int lookup_host_of(const PQconninfoOption *opts, char **out)
{
    const char *host = NULL, *hostaddr = NULL, *service = NULL;

    *out = NULL;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    /* A service file's host outranks PGHOST: leave that to libpq. */
    if ((service && *service) || (getenv("PGSERVICE") && *getenv("PGSERVICE")))
        return 0;
    if (!host || !*host)
        host = getenv("PGHOST");
    if (!hostaddr || !*hostaddr)
        hostaddr = getenv("PGHOSTADDR");
    /* (An IPv6 address with a zone, fe80::1%eth0, is numeric to libpq.) */
    if ((hostaddr && *hostaddr) || !host || resolve_is_numeric(host) || host[0] == '/' ||
        host[0] == '@' || strchr(host, ',') || strchr(host, '%') || strlen(host) >= 256)
        return 0;
    *out = strdup(host);
    return *out ? 0 : -ENOMEM;
}

struct pg_pool *pg_pool_new(struct event_base *base, const char *conninfo, unsigned size,
                            unsigned queue_timeout_ms, unsigned statement_timeout_ms)
{
    struct pg_pool *p = NULL;
    char *err = NULL;
    PQconninfoOption *opts = NULL;

    if (!base || !conninfo || size == 0)
        goto fail;
    opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        /* libpq quotes what it could not read, maybe a password: cut there. */
        if (err)
            err[strcspn(err, "\"\n")] = '\0';
        log_error("pg_invalid_conninfo", LF_STR("error", err ? err : "out of memory"));
        goto fail;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        goto fail;
    p->base = base;
    p->size = size;
    p->queue_timeout_ms = queue_timeout_ms;
    if (statement_timeout_ms > 0) {
        snprintf(p->options, sizeof(p->options), "-c statement_timeout=%u", statement_timeout_ms);
        p->query_timeout_ms = statement_timeout_ms + QUERY_GRACE_MS;
    }
    p->tail = &p->head;
    p->seed = timeutil_jitter_seed(p);
    p->conninfo = strdup(conninfo);
    if (lookup_host_of(opts, &p->lookup_host) < 0)
        goto fail;
    p->conns = calloc(size, sizeof(*p->conns));
    p->queue_ev = evtimer_new(base, on_queue_timer, p);
    p->fail_ev = evtimer_new(base, on_fail, p);
    if (!p->conninfo || !p->conns || !p->queue_ev || !p->fail_ev)
        goto fail;
    for (unsigned i = 0; i < size; i++) {
        struct pg_conn *pc = &p->conns[i];
        pc->pool = p;
        pc->index = i;
        pc->ev_fd = -1;
        pc->backoff_ms = BACKOFF_MIN_MS;
        pc->timer = evtimer_new(base, on_conn_timer, pc);
        if (!pc->timer)
            goto fail;
    }
    for (unsigned i = 0; i < size; i++)
        conn_start(&p->conns[i]);
    PQconninfoFree(opts);
    return p;
fail:
    PQfreemem(err);
    PQconninfoFree(opts);
    pg_pool_free(p);
    return NULL;
}

int pg_pool_query(struct pg_pool *p, const char *sql, int nparams, const char *const *params,
                  pg_pool_result_cb *cb, void *arg)
{
    return pg_pool_query_prepared(p, NULL, sql, nparams, params, cb, arg);
}

int pg_pool_query_prepared(struct pg_pool *p, const char *name, const char *sql, int nparams,
                           const char *const *params, pg_pool_result_cb *cb, void *arg)
{
    struct pg_query *q = NULL;
    int rc = -ENOMEM;

    if (!sql || !cb || nparams < 0 || (nparams > 0 && !params) || (name && !*name))
        return -EINVAL;
    if (p->closing || !pool_any_up(p))
        return -ENOTCONN;
    q = calloc(1, sizeof(*q));
    if (!q)
        goto out;
    q->cb = cb;
    q->arg = arg;
    q->deadline_ms = timeutil_mono_ms() + p->queue_timeout_ms;
    q->sql = strdup(sql);
    if (!q->sql || (name && !(q->name = strdup(name))))
        goto out;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof(*q->params));
        if (!q->params)
            goto out;
        q->nparams = nparams;
        for (int i = 0; i < nparams; i++) {
            if (params[i] && !(q->params[i] = strdup(params[i])))
                goto out;
        }
    }
    *p->tail = q;
    p->tail = &q->next;
    p->nqueued++;
    q = NULL;
    rc = 0;
    pool_dispatch(p);
out:
    query_free(q);
    return rc;
}

bool pg_pool_is_up(const struct pg_pool *p)
{
    return p && !p->closing && !p->stalled && pool_any_up(p);
}

const char *pg_pool_errstr(const struct pg_pool *p)
{
    return p ? p->errstr : "";
}

size_t pg_pool_pending(const struct pg_pool *p)
{
    return p ? p->nqueued + p->nrunning : 0;
}

void pg_pool_close(struct pg_pool *p)
{
    if (!p || p->closing)
        return;
    p->closing = true;
    for (unsigned i = 0; p->conns && i < p->size; i++) {
        struct pg_conn *pc = &p->conns[i];
        /* Closing the socket ends a running query (the server cancels it when it
         * notices); its callback runs with res NULL. */
        if (pc->conn || pc->lookup)
            conn_lost(pc, "pool closed");
        /* A reconnect scheduled before the close (the server down) is not made. */
        if (pc->timer)
            evtimer_del(pc->timer);
    }
    fail_queue(p, "pool closed");
}

void pg_pool_free(struct pg_pool *p)
{
    if (!p)
        return;
    pg_pool_close(p);
    for (unsigned i = 0; p->conns && i < p->size; i++) {
        if (p->conns[i].timer)
            event_free(p->conns[i].timer);
    }
    if (p->queue_ev)
        event_free(p->queue_ev);
    if (p->fail_ev)
        event_free(p->fail_ev);
    free(p->conns);
    free(p->conninfo);
    free(p->lookup_host);
    free(p);
}
