/* Tests for redis_conn: URL parsing, then live tests against a real redis-server
 * on a free port (commands, outage, restart, hung server, AUTH/SELECT, free). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "live_redis.h"
#include "redis_conn.h"

/* ---- URL parsing ---- */

Test(redis_url, defaults)
{
    struct redis_url u;
    cr_assert(redis_url_parse("redis://127.0.0.1", &u));
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.password, "");
    cr_assert_str_eq(u.username, "");
    cr_assert(redis_url_parse("redis://localhost/", &u));
    cr_assert_str_eq(u.host, "localhost");
    cr_assert_eq(u.db, 0);
}

Test(redis_url, full)
{
    struct redis_url u;
    cr_assert(redis_url_parse("redis://app:p%40ss%3Aw@redis-1.example.com:6380/2", &u));
    cr_assert_str_eq(u.username, "app");
    cr_assert_str_eq(u.password, "p@ss:w");
    cr_assert_str_eq(u.host, "redis-1.example.com");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 2);

    cr_assert(redis_url_parse("redis://:secret@10.0.0.5:7000/15", &u));
    cr_assert_str_eq(u.username, "");
    cr_assert_str_eq(u.password, "secret");
    cr_assert_str_eq(u.host, "10.0.0.5");
    cr_assert_eq(u.port, 7000);
    cr_assert_eq(u.db, 15);

    cr_assert(redis_url_parse("redis://[::1]:6390/1", &u));
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 6390);
    cr_assert_eq(u.db, 1);

    cr_assert(redis_url_parse("redis://h:65535", &u));
    cr_assert_eq(u.port, 65535);
}

Test(redis_url, rejects_garbage)
{
    static const char *const bad[] = {
        "",
        "redis:/host",
        "http://host",
        "rediss://host",
        "REDIS://host",
        "redis://",
        "redis://:6379",
        "redis://host:",
        "redis://host:0",
        "redis://host:65536",
        "redis://host:99999999999",
        "redis://host:12ab",
        "redis://host:-1",
        "redis://host/x",
        "redis://host/-1",
        "redis://host/1x",
        "redis://host/1/2",
        "redis://host/99999999999",
        "redis://host/1?timeout=3",
        "redis://host#frag",
        "redis://pw@host",
        "redis://@host",
        "redis://a:b@c@d",
        "redis://u:%zz@h",
        "redis://u:%4@h",
        "redis://u:%00@h",
        "redis://ho st",
        "redis://host name:1",
        "redis://[::1",
        "redis://[]:1",
        "redis://[::1]x",
        "redis://host:6379 ",
    };
    struct redis_url u;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(redis_url_parse(bad[i], &u), "accepted %s", bad[i]);
    cr_assert_not(redis_url_parse(NULL, &u));

    char longhost[400] = "redis://";
    memset(longhost + 8, 'a', 300);
    longhost[308] = '\0';
    cr_assert_not(redis_url_parse(longhost, &u));
}

Test(redis_url, list)
{
    struct redis_url u[4];
    cr_assert_eq(redis_url_parse_list("redis://a:1,redis://b:2/3", u, 4), 2);
    cr_assert_str_eq(u[0].host, "a");
    cr_assert_eq(u[0].port, 1);
    cr_assert_str_eq(u[1].host, "b");
    cr_assert_eq(u[1].db, 3);
    cr_assert_eq(redis_url_parse_list(" redis://a , redis://b ", u, 4), 2);
    cr_assert_eq(redis_url_parse_list("redis://127.0.0.1:6379/0", u, 1), 1);
    cr_assert_eq(redis_url_parse_list("redis://a,redis://b", u, 1), -1);
    cr_assert_eq(redis_url_parse_list("redis://a,", u, 4), -1);
    cr_assert_eq(redis_url_parse_list("redis://a,,redis://b", u, 4), -1);
    cr_assert_eq(redis_url_parse_list("redis://a,http://b", u, 4), -1);
    cr_assert_eq(redis_url_parse_list("", u, 4), -1);
    cr_assert_eq(redis_url_parse_list(NULL, u, 4), -1);
    cr_assert_eq(redis_url_parse_list("redis://a", u, 0), -1);
}

/* Only the policies that may evict a key without an expiry (a stream). */
Test(redis_policy, evicts_keys)
{
    cr_assert(redis_policy_evicts_keys("allkeys-lru"));
    cr_assert(redis_policy_evicts_keys("allkeys-lfu"));
    cr_assert(redis_policy_evicts_keys("allkeys-random"));
    cr_assert_not(redis_policy_evicts_keys("noeviction"));
    cr_assert_not(redis_policy_evicts_keys("volatile-lru"));
    cr_assert_not(redis_policy_evicts_keys("volatile-lfu"));
    cr_assert_not(redis_policy_evicts_keys("volatile-random"));
    cr_assert_not(redis_policy_evicts_keys("volatile-ttl"));
    cr_assert_not(redis_policy_evicts_keys(""));
    cr_assert_not(redis_policy_evicts_keys(NULL));
}

/* ---- a real redis-server ---- */

static struct event_base *base;
static struct event *ticker;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/arv-redis-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    port = free_port();
    base = event_base_new();
    /* A ticker keeps EVLOOP_ONCE from sleeping forever on an empty loop. */
    ticker = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(ticker, &tv);
}

static void teardown(void)
{
    server_kill();
    event_free(ticker);
    event_base_free(base);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop until *flag becomes `want` or `secs` pass; returns the outcome. */
static bool loop_until(const bool *flag, bool want, double secs)
{
    double end = now_s() + secs;
    while (*flag != want && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return *flag == want;
}

/* Runs the loop until the connection's state is `up` or `secs` pass. */
static bool wait_up(struct redis_conn *c, bool up, double secs)
{
    double end = now_s() + secs;
    while (redis_conn_is_up(c) != up && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return redis_conn_is_up(c) == up;
}

static struct redis_conn *conn_to(const char *userinfo, int db)
{
    char url[256];
    struct redis_url u;
    snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d/%d", userinfo ? userinfo : "", port, db);
    cr_assert(redis_url_parse(url, &u), "%s", url);
    struct redis_conn *c = redis_conn_new(base, &u, "test");
    cr_assert_not_null(c);
    return c;
}

/* What a command's callback saw. */
struct result {
    bool done;         /* callback ran */
    int calls;         /* times it ran (must be 1) */
    bool null_reply;   /* reply was NULL */
    int type;          /* reply->type */
    char str[256];     /* reply->str, or errstr for a NULL reply */
    long long integer; /* reply->integer */
};

static void on_reply(void *arg, struct redisReply *reply, const char *errstr)
{
    struct result *r = arg;
    r->done = true;
    r->calls++;
    r->null_reply = reply == NULL;
    if (reply) {
        r->type = reply->type;
        r->integer = reply->integer;
        snprintf(r->str, sizeof(r->str), "%s", reply->str ? reply->str : "");
    } else {
        cr_assert_not_null(errstr);
        snprintf(r->str, sizeof(r->str), "%s", errstr);
    }
}

static int command(struct redis_conn *c, struct result *r, int argc, const char **argv)
{
    memset(r, 0, sizeof(*r));
    return redis_conn_command(c, on_reply, r, argc, argv, NULL);
}

/* Sends a command and waits for its reply. */
static void roundtrip(struct redis_conn *c, struct result *r, int argc, const char **argv)
{
    cr_assert_eq(command(c, r, argc, argv), 0);
    cr_assert(loop_until(&r->done, true, 3), "no reply to %s", argv[0]);
    cr_assert_eq(r->calls, 1);
}

TestSuite(redis_conn, .init = setup, .fini = teardown, .timeout = 60);

Test(redis_conn, connects_and_answers)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    cr_assert_not(redis_conn_is_up(c));
    cr_assert(wait_up(c, true, 3), "not up: %s", redis_conn_errstr(c));
    cr_assert_str_eq(redis_conn_errstr(c), "");

    struct result r;
    roundtrip(c, &r, 3, (const char *[]){"SET", "k", "v\r\nwith bytes"});
    cr_assert_eq(r.type, REDIS_REPLY_STATUS);
    cr_assert_str_eq(r.str, "OK");
    roundtrip(c, &r, 2, (const char *[]){"GET", "k"});
    cr_assert_eq(r.type, REDIS_REPLY_STRING);
    cr_assert_str_eq(r.str, "v\r\nwith bytes");
    roundtrip(c, &r, 1, (const char *[]){"NOSUCHCOMMAND"});
    cr_assert_eq(r.type, REDIS_REPLY_ERROR);
    cr_assert(redis_conn_is_up(c));

    /* Pipelined commands are counted as pending until answered. */
    struct result many[50];
    for (int i = 0; i < 50; i++)
        cr_assert_eq(command(c, &many[i], 2, (const char *[]){"INCR", "n"}), 0);
    cr_assert_eq(redis_conn_pending(c), 50);
    cr_assert(loop_until(&many[49].done, true, 3));
    cr_assert_eq(redis_conn_pending(c), 0);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(many[i].calls, 1);
        cr_assert_eq(many[i].integer, i + 1);
    }
    redis_conn_free(c);
}

Test(redis_conn, down_until_server_appears)
{
    struct redis_conn *c = conn_to(NULL, 0);
    struct result r;
    cr_assert_not(wait_up(c, true, 0.5));
    cr_assert_eq(command(c, &r, 1, (const char *[]){"PING"}), -ENOTCONN);
    cr_assert_neq(redis_conn_errstr(c)[0], '\0');
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_not(r.done, "callback of a refused command ran");

    server_start(NULL);
    cr_assert(wait_up(c, true, 4), "not up after the server started: %s", redis_conn_errstr(c));
    roundtrip(c, &r, 1, (const char *[]){"PING"});
    cr_assert_str_eq(r.str, "PONG");
    redis_conn_free(c);
}

Test(redis_conn, server_killed_then_restarted)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    cr_assert(wait_up(c, true, 3));
    cr_assert_eq(redis_conn_connects(c), 1);

    struct result blocked;
    cr_assert_eq(command(c, &blocked, 3, (const char *[]){"BLPOP", "nothing", "20"}), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    double t0 = now_s();
    server_kill();
    cr_assert(loop_until(&blocked.done, true, 2), "pending command not failed");
    cr_assert(blocked.null_reply);
    cr_assert_eq(blocked.calls, 1);
    cr_assert(wait_up(c, false, 2));
    cr_assert_lt(now_s() - t0, 2.0);
    cr_assert_eq(redis_conn_pending(c), 0);
    struct result r;
    cr_assert_eq(command(c, &r, 1, (const char *[]){"PING"}), -ENOTCONN);

    server_start(NULL);
    cr_assert(wait_up(c, true, 8), "not back up: %s", redis_conn_errstr(c));
    cr_assert_eq(redis_conn_connects(c), 2);
    roundtrip(c, &r, 1, (const char *[]){"PING"});
    cr_assert_str_eq(r.str, "PONG");
    redis_conn_free(c);
}

Test(redis_conn, hung_server_detected_by_ping)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    cr_assert(wait_up(c, true, 3));

    struct result r;
    kill(server_pid, SIGSTOP);
    cr_assert_eq(command(c, &r, 2, (const char *[]){"GET", "k"}), 0);
    double t0 = now_s();
    cr_assert(wait_up(c, false, 4), "still up with a stopped server");
    double took = now_s() - t0;
    cr_assert(took >= 1.5 && took < 3.5, "detected after %.2f s", took);
    cr_assert(loop_until(&r.done, true, 1));
    cr_assert(r.null_reply);
    cr_assert_str_eq(r.str, "ping timed out");
    cr_assert_str_eq(redis_conn_errstr(c), "ping timed out");
    /* Connects that the stopped server's kernel accepts must not count as up. */
    cr_assert_not(wait_up(c, true, 1.5));

    kill(server_pid, SIGCONT);
    cr_assert(wait_up(c, true, 8), "not back up: %s", redis_conn_errstr(c));
    redis_conn_free(c);
}

Test(redis_conn, command_timeout_drops_a_hung_server)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    redis_conn_set_timeout(c, 300);
    cr_assert(wait_up(c, true, 3));

    struct result a, b;
    kill(server_pid, SIGSTOP);
    cr_assert_eq(command(c, &a, 2, (const char *[]){"GET", "k"}), 0);
    cr_assert_eq(redis_conn_command_formatted(c, on_reply, &b, "*1\r\n$4\r\nPING\r\n", 14), 0);
    memset(&b, 0, sizeof(b));
    double t0 = now_s();
    cr_assert(loop_until(&b.done, true, 3), "no answer from a stopped server");
    double took = now_s() - t0;
    /* The timeout plus its grace (75 ms), well before the 2 s ping deadline. */
    cr_assert(took >= 0.29 && took < 1.0, "failed after %.2f s", took);
    cr_assert(a.done && a.null_reply && a.calls == 1);
    cr_assert(b.null_reply && b.calls == 1);
    cr_assert_str_eq(a.str, "command timed out");
    cr_assert_not(redis_conn_is_up(c));
    cr_assert_eq(redis_conn_pending(c), 0);
    struct result r;
    cr_assert_eq(command(c, &r, 1, (const char *[]){"PING"}), -ENOTCONN);

    kill(server_pid, SIGCONT);
    cr_assert(wait_up(c, true, 8), "not back up: %s", redis_conn_errstr(c));
    roundtrip(c, &r, 1, (const char *[]){"PING"});
    cr_assert_str_eq(r.str, "PONG");
    redis_conn_free(c);
}

Test(redis_conn, command_timeout_spares_a_busy_loop_and_blocking_commands)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    redis_conn_set_timeout(c, 100);
    cr_assert(wait_up(c, true, 3));

    /* The loop stalls past the deadline before it even sends the command: the
     * answer still counts. */
    struct result r;
    cr_assert_eq(redis_conn_command_formatted(c, on_reply, &r, "*1\r\n$4\r\nPING\r\n", 14), 0);
    memset(&r, 0, sizeof(r));
    usleep(300 * 1000);
    cr_assert(loop_until(&r.done, true, 3));
    cr_assert_not(r.null_reply, "dropped: %s", r.str);
    cr_assert_str_eq(r.str, "PONG");

    /* A read that blocks longer than the timeout, and a command queued behind
     * it, are answered normally. */
    struct result blocked, behind;
    cr_assert_eq(
        command(c, &blocked, 8,
                (const char *[]){"XREAD", "COUNT", "1", "BLOCK", "600", "STREAMS", "s", "$"}),
        0);
    cr_assert_eq(command(c, &behind, 2, (const char *[]){"GET", "k"}), 0);
    cr_assert(loop_until(&behind.done, true, 3));
    cr_assert(blocked.done && !blocked.null_reply);
    cr_assert_eq(blocked.type, REDIS_REPLY_NIL);
    cr_assert_not(behind.null_reply, "dropped: %s", behind.str);
    cr_assert(redis_conn_is_up(c));
    redis_conn_free(c);
}

/* A server that answers every command "+OK", one after the other, `delay_ms`
 * apart: slow, not hung. */
struct slow_server {
    int lfd;
    int port;
    int delay_ms;
    atomic_bool stop;
    pthread_t thread;
};

/* The length of the first whole RESP array in b[0..n), or 0. */
static size_t resp_command_len(const char *b, size_t n)
{
    char *end;
    size_t off;
    if (n < 4 || b[0] != '*' || !memchr(b, '\n', n))
        return 0;
    long count = strtol(b + 1, &end, 10);
    off = (size_t)(strchr(b, '\n') - b) + 1;
    for (long i = 0; i < count; i++) {
        if (off >= n || b[off] != '$' || !memchr(b + off, '\n', n - off))
            return 0;
        long len = strtol(b + off + 1, &end, 10);
        off = (size_t)((const char *)memchr(b + off, '\n', n - off) - b) + 1 + (size_t)len + 2;
        if (off > n)
            return 0;
    }
    return off;
}

static void *slow_main(void *arg)
{
    struct slow_server *s = arg;
    static char buf[1 << 16];
    size_t len = 0;
    int fd = -1;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {fd >= 0 ? fd : s->lfd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        if (fd < 0) {
            fd = accept(s->lfd, NULL, NULL);
            continue;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        size_t used;
        while ((used = resp_command_len(buf, len)) > 0 && !atomic_load(&s->stop)) {
            memmove(buf, buf + used, len - used);
            len -= used;
            usleep((useconds_t)s->delay_ms * 1000);
            if (write(fd, "+OK\r\n", 5) != 5)
                break;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void slow_server_start(struct slow_server *s, int delay_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    memset(s, 0, sizeof(*s));
    s->delay_ms = delay_ms;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(s->lfd, 0);
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(s->lfd, 4), 0);
    cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    cr_assert_eq(pthread_create(&s->thread, NULL, slow_main, s), 0);
}

static void slow_server_stop(struct slow_server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->lfd);
}

/* A server that answers, slowly: each command gets its answer or "command
 * timed out" within about its timeout and grace, and the connection stays
 * (before, each new oldest command got a grace of its own, so commands queued
 * behind others waited for the server however long it took). */
Test(redis_conn, command_timeout_answers_in_time_while_a_slow_server_answers)
{
    struct slow_server srv;
    struct redis_url u;
    char url[64];
    enum { N = 100 };
    static struct result r[N];
    double sent, latest = 0;
    int ok = 0, timed_out = 0;

    slow_server_start(&srv, 10);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", srv.port);
    cr_assert(redis_url_parse(url, &u));
    struct redis_conn *c = redis_conn_new(base, &u, "test");
    redis_conn_set_timeout(c, 200);
    cr_assert(wait_up(c, true, 3), "not up: %s", redis_conn_errstr(c));

    sent = now_s();
    for (int i = 0; i < N; i++)
        cr_assert_eq(command(c, &r[i], 2, (const char *[]){"GET", "k"}), 0);
    for (int i = 0; i < N; i++) {
        cr_assert(loop_until(&r[i].done, true, 3), "command %d unanswered", i);
        cr_assert_eq(r[i].calls, 1);
    }
    latest = now_s() - sent;
    for (int i = 0; i < N; i++) {
        if (!r[i].null_reply && strcmp(r[i].str, "OK") == 0)
            ok++;
        else if (r[i].null_reply && strcmp(r[i].str, "command timed out") == 0)
            timed_out++;
    }
    /* 100 answers 10 ms apart take the server 1 s. */
    cr_assert_lt(latest, 0.5, "the last answer came %.2f s after the commands", latest);
    cr_assert(ok > 0 && timed_out > 0 && ok + timed_out == N, "%d ok, %d timed out", ok, timed_out);
    cr_assert(redis_conn_is_up(c), "dropped: %s", redis_conn_errstr(c));
    /* The late replies come, and are dropped; the next command gets its own. */
    double end = now_s() + 3;
    while (redis_conn_pending(c) > 0 && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_eq(redis_conn_pending(c), 0);
    cr_assert(redis_conn_is_up(c), "dropped: %s", redis_conn_errstr(c));
    struct result last;
    cr_assert_eq(command(c, &last, 1, (const char *[]){"PING"}), 0);
    cr_assert(loop_until(&last.done, true, 3));
    cr_assert_not(last.null_reply, "%s", last.str);
    cr_assert_str_eq(last.str, "OK");
    for (int i = 0; i < N; i++)
        cr_assert_eq(r[i].calls, 1);
    redis_conn_free(c);
    slow_server_stop(&srv);
}

Test(redis_conn, blocking_command_is_not_a_dead_server)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    cr_assert(wait_up(c, true, 3));

    struct result r;
    cr_assert_eq(
        command(c, &r, 8,
                (const char *[]){"XREAD", "COUNT", "1", "BLOCK", "3500", "STREAMS", "s", "$"}),
        0);
    double t0 = now_s();
    /* Pings queue behind the blocked read for 3.5 s: longer than the ping
     * timeout, yet the connection is healthy. */
    while (!r.done && now_s() < t0 + 5) {
        event_base_loop(base, EVLOOP_ONCE);
        cr_assert(redis_conn_is_up(c), "dropped after %.2f s: %s", now_s() - t0,
                  redis_conn_errstr(c));
    }
    cr_assert(r.done);
    cr_assert_eq(r.type, REDIS_REPLY_NIL);
    cr_assert_geq(now_s() - t0, 3.4);
    roundtrip(c, &r, 1, (const char *[]){"PING"});
    cr_assert_str_eq(r.str, "PONG");
    redis_conn_free(c);
}

Test(redis_conn, auth_and_select)
{
    server_start("s3cret");
    struct redis_conn *c = conn_to(":s3cret@", 3);
    cr_assert(wait_up(c, true, 3), "not up: %s", redis_conn_errstr(c));
    struct result r;
    roundtrip(c, &r, 2, (const char *[]){"CLIENT", "INFO"});
    cr_assert_eq(r.type, REDIS_REPLY_STRING);
    cr_assert_not_null(strstr(r.str, " db=3 "), "%s", r.str);
    redis_conn_free(c);

    c = conn_to("default:s3cret@", 0);
    cr_assert(wait_up(c, true, 3), "not up: %s", redis_conn_errstr(c));
    roundtrip(c, &r, 2, (const char *[]){"CLIENT", "INFO"});
    cr_assert_not_null(strstr(r.str, " db=0 "), "%s", r.str);
    redis_conn_free(c);

    c = conn_to(":wrong@", 0);
    cr_assert_not(wait_up(c, true, 1.5));
    cr_assert_not_null(strstr(redis_conn_errstr(c), "WRONGPASS"), "%s", redis_conn_errstr(c));
    redis_conn_free(c);

    c = conn_to(NULL, 0); /* no password: PING gets NOAUTH */
    cr_assert_not(wait_up(c, true, 1));
    cr_assert_not_null(strstr(redis_conn_errstr(c), "NOAUTH"), "%s", redis_conn_errstr(c));
    redis_conn_free(c);
}

Test(redis_conn, free_runs_pending_callbacks)
{
    server_start(NULL);
    struct redis_conn *c = conn_to(NULL, 0);
    cr_assert(wait_up(c, true, 3));
    struct result a, b;
    cr_assert_eq(command(c, &a, 3, (const char *[]){"BLPOP", "nothing", "20"}), 0);
    cr_assert_eq(command(c, &b, 2, (const char *[]){"GET", "x"}), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    redis_conn_free(c);
    cr_assert(a.done && a.null_reply && a.calls == 1);
    cr_assert(b.done && b.null_reply && b.calls == 1);
    cr_assert_str_eq(a.str, "connection closed");
}

Test(redis_conn, free_while_down)
{
    struct redis_conn *c = conn_to(NULL, 0);
    event_base_loop(base, EVLOOP_ONCE);
    redis_conn_free(c);
    redis_conn_free(NULL);
}

/* A host name is looked up off the loop, then connected to; a connection
 * freed while its lookup runs leaves nothing behind. */
Test(redis_conn, host_name)
{
    char url[128];
    struct redis_url u;
    struct result r;
    server_start(NULL);
    snprintf(url, sizeof(url), "redis://localhost:%d/0", port);
    cr_assert(redis_url_parse(url, &u));
    struct redis_conn *c = redis_conn_new(base, &u, "test");
    cr_assert_not_null(c);
    cr_assert(wait_up(c, true, 5), "not up: %s", redis_conn_errstr(c));
    roundtrip(c, &r, 1, (const char *[]){"PING"});
    cr_assert_str_eq(r.str, "PONG");
    redis_conn_free(c);

    redis_conn_free(redis_conn_new(base, &u, "test"));
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
}
