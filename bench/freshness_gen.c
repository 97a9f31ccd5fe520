/* Load generator and probe for bench/freshness.sh: POSTs single events open-loop
 * at a fixed rate over keep-alive loopback connections, notes when each answer
 * arrives, polls a PostgreSQL count, and prints how long acknowledged events took
 * to become visible in it. One thread, epoll, one monotonic clock. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 512
#define PG_TAG    ((uint64_t)-1) /* epoll data of the PostgreSQL socket */

struct conn {
    int fd;          /* -1 when closed */
    bool busy;       /* a request is out, its answer not complete */
    char req[1024];  /* the request being written */
    size_t req_len;  /* its length */
    size_t req_off;  /* bytes written so far */
    int64_t sent_us; /* when its first byte was written */
    char in[4096];   /* answer bytes not yet parsed */
    size_t in_len;   /* bytes in `in` */
};

struct poll_point {
    int64_t t_us;  /* when the answer arrived */
    int64_t total; /* the count, minus the count before the run */
};

struct opts {
    int port;          /* collector port on 127.0.0.1 */
    const char *path;  /* POST target */
    double rate;       /* events per second */
    double seconds;    /* how long to send */
    int conns;         /* keep-alive connections */
    const char *dsn;   /* PostgreSQL connection string */
    const char *sql;   /* returns one number: events visible so far */
    int poll_ms;       /* poll interval */
    double drain_s;    /* how long to wait for visibility after sending */
    int contents;      /* ar_content_id cycles over 1..contents */
    const char *label; /* printed before the results */
};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fail(const char *what)
{
    fprintf(stderr, "freshness_gen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int conn_open(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        fail("socket");
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Blocking connect (loopback: immediate), so the first send finds it open. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        fail("connect");
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
        fail("fcntl");
    return fd;
}

/* A realistic ~400-byte event like bench/post.lua's, with its own session. */
static size_t build_request(char *out, size_t cap, const struct opts *o, uint64_t i)
{
    char body[640];
    int blen = snprintf(
        body, sizeof(body),
        "{\"ar_content_id\":%d,\"session_id\":\"%08x-%04x-4%03x-a%03x-%012llx\","
        "\"duration_seconds\":%d,\"tracking_quality\":\"good\",\"video_played\":true,"
        "\"device_type\":\"mobile\",\"browser\":\"Safari\",\"os\":\"iOS\",\"country\":\"DE\","
        "\"city\":\"Berlin\",\"user_agent\":\"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac "
        "OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 "
        "Safari/604.1\"}",
        (int)(1 + i % (uint64_t)o->contents), (unsigned)((i * 2654435761u) & 0xffffffffu),
        (unsigned)(i % 65536), (unsigned)(i % 4096), (unsigned)((i * 7) % 4096),
        (unsigned long long)((i * 40503) & 0xffffffffffffULL), (int)(5 + i % 120));
    int n = snprintf(out, cap,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     o->path, blen, body);

    return (size_t)n;
}

/* Parses one complete answer at the start of c->in. Returns its length (and the
 * status in *status), 0 when incomplete, -1 when malformed. */
static long parse_answer(const struct conn *c, int *status)
{
    const char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    const char *p;
    long clen = 0, head;

    if (!end)
        return c->in_len >= sizeof(c->in) ? -1 : 0;
    if (c->in_len < 12 || strncmp(c->in, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(c->in + 9);
    head = end + 4 - c->in;
    for (p = c->in; p < end; p++) {
        if ((p == c->in || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0)
            clen = atol(p + 15);
    }
    if (head + clen > (long)sizeof(c->in))
        return -1;
    return c->in_len >= (size_t)(head + clen) ? head + clen : 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* The p-th percentile (0..100) of sorted v[0..n), nearest rank. */
static int64_t pct(const int64_t *v, size_t n, double p)
{
    size_t k;

    if (n == 0)
        return 0;
    k = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    return v[k > n ? n - 1 : k - 1];
}

/* Reads what has arrived of a poll's answer without blocking. Returns true when
 * the query is finished; *v is set when its row came (the count), else left. */
static bool pg_read(PGconn *pg, int64_t *v)
{
    PGresult *r;

    while (!PQisBusy(pg)) {
        r = PQgetResult(pg);
        if (!r)
            return true;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            *v = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
        else
            fprintf(stderr, "freshness_gen: poll: %s", PQerrorMessage(pg));
        PQclear(r);
    }
    return false;
}

static void usage(void)
{
    fprintf(stderr, "usage: freshness_gen --port P --dsn DSN --sql SQL [--rate N] [--seconds S]"
                    " [--conns N] [--poll-ms N] [--drain-s S] [--contents N] [--path P]"
                    " [--label L]\n");
    exit(2);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option longs[] = {
        {"port", 1, NULL, 'p'},    {"rate", 1, NULL, 'r'},    {"seconds", 1, NULL, 's'},
        {"conns", 1, NULL, 'c'},   {"dsn", 1, NULL, 'd'},     {"sql", 1, NULL, 'q'},
        {"poll-ms", 1, NULL, 'i'}, {"drain-s", 1, NULL, 'w'}, {"contents", 1, NULL, 'n'},
        {"path", 1, NULL, 'u'},    {"label", 1, NULL, 'l'},   {NULL, 0, NULL, 0}};
    int ch;

    *o = (struct opts){.path = "/api/analytics/ar-session",
                       .rate = 10000,
                       .seconds = 20,
                       .conns = 64,
                       .poll_ms = 25,
                       .drain_s = 60,
                       .contents = 50,
                       .label = "run"};
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'p':
            o->port = atoi(optarg);
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 's':
            o->seconds = atof(optarg);
            break;
        case 'c':
            o->conns = atoi(optarg);
            break;
        case 'd':
            o->dsn = optarg;
            break;
        case 'q':
            o->sql = optarg;
            break;
        case 'i':
            o->poll_ms = atoi(optarg);
            break;
        case 'w':
            o->drain_s = atof(optarg);
            break;
        case 'n':
            o->contents = atoi(optarg);
            break;
        case 'u':
            o->path = optarg;
            break;
        case 'l':
            o->label = optarg;
            break;
        default:
            usage();
        }
    }
    if (o->port <= 0 || !o->dsn || !o->sql || o->rate <= 0 || o->seconds <= 0 || o->conns < 1 ||
        o->conns > MAX_CONNS || o->poll_ms < 1 || o->contents < 1)
        usage();
}

int main(int argc, char **argv)
{
    static struct conn conns[MAX_CONNS];
    struct opts o;
    struct epoll_event evs[64];
    PGconn *pg = NULL;
    int ep, pg_fd;
    uint64_t target, sent = 0, acked = 0, non2xx = 0, errors = 0, i;
    int64_t *acks, *ack_lat, *fresh, t0, send_end, deadline, next_poll, base = -1, lag_max = 0;
    struct poll_point *polls = NULL;
    size_t npolls = 0, cap_polls = 0;
    bool poll_busy = false;
    int64_t poll_val = -1, poll_at = 0;

    parse_opts(argc, argv, &o);
    target = (uint64_t)(o.rate * o.seconds);
    acks = calloc(target + 1, sizeof(*acks));
    ack_lat = calloc(target + 1, sizeof(*ack_lat));
    fresh = calloc(target + 1, sizeof(*fresh));
    if (!acks || !ack_lat || !fresh)
        fail("calloc");

    pg = PQconnectdb(o.dsn);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "freshness_gen: %s", PQerrorMessage(pg));
        return 1;
    }
    {
        PGresult *r = PQexec(pg, o.sql);

        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "freshness_gen: %s", PQerrorMessage(pg));
            return 1;
        }
        base = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQsetnonblocking(pg, 1);
    pg_fd = PQsocket(pg);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fail("epoll_create1");
    {
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = PG_TAG};

        if (epoll_ctl(ep, EPOLL_CTL_ADD, pg_fd, &e) < 0)
            fail("epoll_ctl");
    }
    for (int k = 0; k < o.conns; k++) {
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)k};

        conns[k].fd = conn_open(o.port);
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[k].fd, &e) < 0)
            fail("epoll_ctl");
    }

    t0 = now_us();
    send_end = t0 + (int64_t)(o.seconds * 1e6);
    deadline = send_end + (int64_t)(o.drain_s * 1e6);
    next_poll = t0;
    for (;;) {
        int64_t now = now_us();
        uint64_t due = now >= send_end ? target : (uint64_t)((double)(now - t0) * o.rate / 1e6);
        int inflight = 0, n, timeout;

        /* Open loop: request i is due at t0 + i / rate, whatever the answers do.
         * A send that finds no idle connection is late; the lateness is shown. */
        bool sending = sent < target && now < send_end + 100000;

        for (int k = 0; k < o.conns && sending && sent < due; k++) {
            struct conn *c = &conns[k];
            ssize_t w;

            if (c->fd < 0 || c->busy)
                continue;
            c->req_len = build_request(c->req, sizeof(c->req), &o, sent);
            c->req_off = 0;
            c->busy = true;
            c->sent_us = now;
            {
                int64_t lag = now - (t0 + (int64_t)((double)sent * 1e6 / o.rate));

                if (lag > lag_max)
                    lag_max = lag;
            }
            sent++;
            w = send(c->fd, c->req, c->req_len, MSG_NOSIGNAL);
            if (w > 0)
                c->req_off = (size_t)w;
            else if (w < 0 && errno != EAGAIN) {
                errors++;
                close(c->fd);
                c->fd = -1;
            }
        }
        for (int k = 0; k < o.conns; k++)
            inflight += conns[k].fd >= 0 && conns[k].busy;

        if (!poll_busy && now >= next_poll) {
            if (!PQsendQuery(pg, o.sql)) {
                fprintf(stderr, "freshness_gen: %s", PQerrorMessage(pg));
                return 1;
            }
            while (PQflush(pg) == 1)
                ;
            poll_busy = true;
            next_poll += (int64_t)o.poll_ms * 1000;
            if (next_poll < now)
                next_poll = now + (int64_t)o.poll_ms * 1000;
        }

        if (now >= send_end && inflight == 0 && !poll_busy &&
            (now >= deadline || (npolls > 0 && polls[npolls - 1].total >= (int64_t)acked)))
            break;
        if (now >= deadline + 5000000)
            break; /* answers that never came: stop anyway */

        timeout = sending ? 1 : (int)((next_poll - now) / 1000) + 1;
        n = epoll_wait(ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait");
        now = now_us();
        for (int e = 0; e < n; e++) {
            struct conn *c;

            if (evs[e].data.u64 == PG_TAG) {
                if (!PQconsumeInput(pg)) {
                    fprintf(stderr, "freshness_gen: %s", PQerrorMessage(pg));
                    return 1;
                }
                if (poll_busy && !PQisBusy(pg) && poll_val < 0)
                    poll_at = now; /* the row has come: the count is as of now */
                if (poll_busy && pg_read(pg, &poll_val)) {
                    int64_t v = poll_val;

                    poll_busy = false;
                    poll_val = -1;
                    if (v < 0)
                        continue;
                    if (npolls == cap_polls) {
                        cap_polls = cap_polls ? cap_polls * 2 : 4096;
                        polls = realloc(polls, cap_polls * sizeof(*polls));
                        if (!polls)
                            fail("realloc");
                    }
                    polls[npolls++] = (struct poll_point){.t_us = poll_at, .total = v - base};
                }
                continue;
            }
            c = &conns[evs[e].data.u64];
            if (c->fd < 0)
                continue;
            if (c->busy && c->req_off < c->req_len) {
                ssize_t w = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);

                if (w > 0)
                    c->req_off += (size_t)w;
            }
            for (;;) {
                ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
                long len;
                int status = 0;

                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    if (c->busy)
                        errors++;
                    close(c->fd);
                    c->fd = -1;
                    break;
                }
                if (r < 0)
                    break;
                c->in_len += (size_t)r;
                while ((len = parse_answer(c, &status)) > 0) {
                    if (status >= 200 && status < 300) {
                        ack_lat[acked] = now - c->sent_us;
                        acks[acked++] = now;
                    } else {
                        non2xx++;
                    }
                    c->busy = false;
                    memmove(c->in, c->in + len, c->in_len - (size_t)len);
                    c->in_len -= (size_t)len;
                }
                if (len < 0) {
                    errors++;
                    close(c->fd);
                    c->fd = -1;
                    break;
                }
            }
        }
        /* A closed connection is reopened; its lost request counted as an error. */
        for (int k = 0; k < o.conns; k++) {
            if (conns[k].fd < 0 && now < send_end) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                                         .data.u64 = (uint64_t)k};

                conns[k] = (struct conn){.fd = conn_open(o.port)};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[k].fd, &ev) < 0)
                    fail("epoll_ctl");
            }
        }
    }

    /* Event k (in order of acknowledgement) is visible at the first poll, after
     * its answer, whose count reaches k. Both sequences only grow, so one pass. */
    {
        size_t j = 0, nfresh = 0;
        uint64_t invisible = 0;
        double secs_sent = (double)(send_end - t0) / 1e6;
        int64_t grow0 = 0, grow1 = 0, tg0 = 0, tg1 = 0;

        for (i = 0; i < acked; i++) {
            while (j < npolls && (polls[j].t_us < acks[i] || polls[j].total < (int64_t)(i + 1)))
                j++;
            if (j == npolls) {
                invisible = acked - i;
                break;
            }
            fresh[nfresh++] = polls[j].t_us - acks[i];
        }
        qsort(fresh, nfresh, sizeof(*fresh), cmp_i64);
        qsort(ack_lat, acked, sizeof(*ack_lat), cmp_i64);
        /* How fast the count grew while events were sent (after the first second). */
        for (size_t k = 0; k < npolls; k++) {
            if (!tg0 && polls[k].t_us >= t0 + 1000000) {
                tg0 = polls[k].t_us;
                grow0 = polls[k].total;
            }
            if (polls[k].t_us <= send_end) {
                tg1 = polls[k].t_us;
                grow1 = polls[k].total;
            }
        }
        printf("[%s] load: %.0f events/s for %.0f s (open loop, %d keep-alive connections): "
               "sent %llu = %.0f/s, acknowledged %llu, non-2xx %llu, errors %llu; "
               "answer p50 %.2f ms p99 %.2f ms; latest send %.1f ms behind schedule\n",
               o.label, o.rate, o.seconds, o.conns, (unsigned long long)sent,
               (double)sent / secs_sent, (unsigned long long)acked, (unsigned long long)non2xx,
               (unsigned long long)errors, (double)pct(ack_lat, acked, 50) / 1000,
               (double)pct(ack_lat, acked, 99) / 1000, (double)lag_max / 1000);
        if (tg1 > tg0)
            printf("[%s] rollup count grew %.0f events/s while sending (from 1 s in)\n", o.label,
                   (double)(grow1 - grow0) * 1e6 / (double)(tg1 - tg0));
        printf("[%s] freshness (answer -> visible, %zu polls every %d ms): p50 %.0f ms, p95 "
               "%.0f ms, p99 %.0f ms, max %.0f ms; not visible %.0f s after sending: %llu\n",
               o.label, npolls, o.poll_ms, (double)pct(fresh, nfresh, 50) / 1000,
               (double)pct(fresh, nfresh, 95) / 1000, (double)pct(fresh, nfresh, 99) / 1000,
               nfresh ? (double)fresh[nfresh - 1] / 1000 : 0.0, o.drain_s,
               (unsigned long long)invisible);
        printf("RESULT label=%s rate=%.0f acked=%llu errors=%llu invisible=%llu p50_ms=%.0f "
               "p95_ms=%.0f p99_ms=%.0f max_ms=%.0f\n",
               o.label, (double)sent / secs_sent, (unsigned long long)acked,
               (unsigned long long)(non2xx + errors), (unsigned long long)invisible,
               (double)pct(fresh, nfresh, 50) / 1000, (double)pct(fresh, nfresh, 95) / 1000,
               (double)pct(fresh, nfresh, 99) / 1000,
               nfresh ? (double)fresh[nfresh - 1] / 1000 : 0.0);
    }
    for (int k = 0; k < o.conns; k++) {
        if (conns[k].fd >= 0)
            close(conns[k].fd);
    }
    close(ep);
    PQfinish(pg);
    free(polls);
    free(acks);
    free(ack_lat);
    free(fresh);
    return 0;
}
