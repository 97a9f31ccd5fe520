/* Tests for pg_pool against a real PostgreSQL on a free port in a temp folder:
 * rows, parameters, errors, queueing, timeouts, outage, a hung server and recovery, free. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "pg_pool.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

/* A PostgreSQL cluster in a temp folder, run by this test process. */
struct cluster {
    char dir[64];       /* temp folder: data/, socket, logs */
    int port;           /* TCP port on 127.0.0.1 */
    pid_t pid;          /* postmaster, or -1 */
    bool frozen;        /* stopped with SIGSTOP (cluster_freeze) */
    char conninfo[256]; /* how to reach it */
};

/* Most tests share one cluster started before all tests (initdb is the slow
 * part); a test that stops its server gets a private one. */
static struct cluster shared = {.pid = -1};
static struct cluster private_ = {.pid = -1};
static const char *conninfo; /* the cluster this test uses */
static struct event_base *base;
static struct event *ticker;

/* In a child: become `postgres` when running as root (PostgreSQL refuses root). */
static void drop_to_postgres(void)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam("postgres");
    if (!pw || setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        _exit(126);
}

static void redirect_output(const char *logpath)
{
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Creates the folder and runs initdb. Returns false (with a message) on failure. */
static bool cluster_init(struct cluster *c)
{
    char datadir[128], logpath[128];
    snprintf(c->dir, sizeof(c->dir), "/tmp/arv-pg-test-XXXXXX");
    if (!mkdtemp(c->dir)) {
        perror("mkdtemp");
        c->dir[0] = '\0';
        return false;
    }
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (pw && chown(c->dir, pw->pw_uid, pw->pw_gid) != 0)
        perror("chown");
    c->port = free_port();
    snprintf(c->conninfo, sizeof(c->conninfo), "host=127.0.0.1 port=%d user=arv dbname=postgres",
             c->port);
    snprintf(datadir, sizeof(datadir), "%s/data", c->dir);
    snprintf(logpath, sizeof(logpath), "%s/initdb.log", c->dir);
    pid_t pid = fork();
    if (pid == 0) {
        drop_to_postgres();
        redirect_output(logpath);
        execl(PG_BIN "/initdb", "initdb", "-D", datadir, "-A", "trust", "-U", "arv", "-E", "UTF8",
              "--locale=C", "-N", "--wal-segsize=1", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "initdb failed, see %s\n", logpath);
        return false;
    }
    return c->port > 0;
}

/* Starts the postmaster and waits until it answers. */
static bool cluster_start(struct cluster *c)
{
    char datadir[128], logpath[128], portstr[16];
    snprintf(datadir, sizeof(datadir), "%s/data", c->dir);
    snprintf(logpath, sizeof(logpath), "%s/postgres.log", c->dir);
    snprintf(portstr, sizeof(portstr), "%d", c->port);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        drop_to_postgres();
        /* After setuid, which clears it: never outlive the test process. */
        prctl(PR_SET_PDEATHSIG, SIGQUIT);
        redirect_output(logpath);
        execl(PG_BIN "/postgres", "postgres", "-D", datadir, "-p", portstr, "-k", c->dir, "-c",
              "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40", "-c",
              "shared_buffers=8MB", (char *)NULL);
        _exit(127);
    }
    c->pid = pid;
    for (int i = 0; i < 1000; i++) {
        if (PQping(c->conninfo) == PQPING_OK)
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            c->pid = -1;
            break;
        }
        usleep(10000);
    }
    fprintf(stderr, "postgres did not start, see %s\n", logpath);
    return false;
}

/* Sends `sig` to the postmaster, then to its children (backends, checkpointer,
 * ...), found in /proc: the postmaster stopped first forks no new ones. */
static void cluster_signal(const struct cluster *c, int sig)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    char path[300], buf[512];

    kill(c->pid, sig);
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        int ppid = 0;
        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* "pid (comm) state ppid ...": comm may hold spaces and parentheses. */
        const char *rp = strrchr(buf, ')');
        if (rp && sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == c->pid)
            kill(pid, sig);
    }
    if (d)
        closedir(d);
}

/* SIGSTOP (`on`) or SIGCONT to the whole server: stopped, it keeps its
 * sockets open and its kernel acknowledges, but nothing answers, not even
 * statement_timeout. */
static void cluster_freeze(struct cluster *c, bool on)
{
    if (c->pid <= 0 || c->frozen == on)
        return;
    cluster_signal(c, on ? SIGSTOP : SIGCONT);
    c->frozen = on;
}

static void cluster_stop(struct cluster *c)
{
    /* A stopped server would never see the SIGINT. */
    cluster_freeze(c, false);
    if (c->pid > 0) {
        kill(c->pid, SIGINT); /* fast shutdown: ends every session */
        waitpid(c->pid, NULL, 0);
        c->pid = -1;
    }
}

static void cluster_remove(struct cluster *c)
{
    char cmd[128];
    cluster_stop(c);
    if (c->dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", c->dir);
        c->dir[0] = '\0';
    }
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    (void)set;
    /* Test workers are separate processes: they find the cluster through the
     * environment. */
    if (cluster_init(&shared) && cluster_start(&shared)) {
        char portstr[16];
        snprintf(portstr, sizeof(portstr), "%d", shared.port);
        setenv("ARV_TEST_PG_CONNINFO", shared.conninfo, 1);
        setenv("ARV_TEST_PG_PORT", portstr, 1);
    }
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    (void)stats;
    cluster_remove(&shared);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void setup(void)
{
    conninfo = getenv("ARV_TEST_PG_CONNINFO");
    cr_assert_not_null(conninfo, "the shared PostgreSQL did not start");
    base = event_base_new();
    /* A ticker keeps EVLOOP_ONCE from sleeping forever on an empty loop. */
    ticker = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 10000};
    event_add(ticker, &tv);
}

static void teardown(void)
{
    cluster_remove(&private_);
    event_free(ticker);
    event_base_free(base);
}

/* Switches the test to a private cluster it may stop and start. */
static void use_private_cluster(void)
{
    cr_assert(cluster_init(&private_) && cluster_start(&private_), "private cluster failed");
    conninfo = private_.conninfo;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool wait_up(struct pg_pool *p, bool up, double secs)
{
    double end = now_s() + secs;
    while (pg_pool_is_up(p) != up && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return pg_pool_is_up(p) == up;
}

static bool loop_until(const bool *flag, double secs)
{
    double end = now_s() + secs;
    while (!*flag && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    return *flag;
}

static struct pg_pool *pool_up(unsigned size, unsigned queue_timeout_ms)
{
    struct pg_pool *p = pg_pool_new(base, conninfo, size, queue_timeout_ms, 0);
    cr_assert_not_null(p);
    cr_assert(wait_up(p, true, 5), "pool not up: %s", pg_pool_errstr(p));
    return p;
}

/* What a query's callback saw. */
struct result {
    bool done;         /* callback ran */
    int calls;         /* times it ran (must be 1) */
    bool null_res;     /* res was NULL */
    ExecStatusType st; /* PQresultStatus */
    int rows;          /* PQntuples */
    char v0[128];      /* first row, first column */
    char v1[128];      /* first row, second column */
    char sqlstate[8];  /* of an error result */
    char err[256];     /* errstr of a NULL res */
    double at;         /* when it ran */
};

static void on_result(void *arg, const PGresult *res, const char *errstr)
{
    struct result *r = arg;
    r->done = true;
    r->calls++;
    r->at = now_s();
    r->null_res = res == NULL;
    if (!res) {
        cr_assert_not_null(errstr);
        snprintf(r->err, sizeof(r->err), "%s", errstr);
        return;
    }
    r->st = PQresultStatus(res);
    r->rows = PQntuples(res);
    if (r->rows > 0 && PQnfields(res) > 0)
        snprintf(r->v0, sizeof(r->v0), "%s",
                 PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    if (r->rows > 0 && PQnfields(res) > 1)
        snprintf(r->v1, sizeof(r->v1), "%s",
                 PQgetisnull(res, 0, 1) ? "(null)" : PQgetvalue(res, 0, 1));
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", state ? state : "");
}

static int query(struct pg_pool *p, struct result *r, const char *sql, int n,
                 const char *const *params)
{
    memset(r, 0, sizeof(*r));
    return pg_pool_query(p, sql, n, params, on_result, r);
}

static void roundtrip(struct pg_pool *p, struct result *r, const char *sql, int n,
                      const char *const *params)
{
    cr_assert_eq(query(p, r, sql, n, params), 0);
    cr_assert(loop_until(&r->done, 5), "no result for %s", sql);
    cr_assert_eq(r->calls, 1);
}

TestSuite(pg_pool, .init = setup, .fini = teardown, .timeout = 60);

Test(pg_pool, rows_and_params)
{
    struct pg_pool *p = pool_up(2, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT g, 'row ' || g FROM generate_series(1, 3) g ORDER BY g", 0, NULL);
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_eq(r.rows, 3);
    cr_assert_str_eq(r.v0, "1");
    cr_assert_str_eq(r.v1, "row 1");

    roundtrip(p, &r, "SELECT $1::int + $2::int, $3::text IS NULL", 3,
              (const char *[]){"40", "2", NULL});
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_eq(r.v0, "42");
    cr_assert_str_eq(r.v1, "t");

    /* A parameter is data, never SQL. */
    roundtrip(p, &r, "SELECT $1::text", 1, (const char *[]){"'); DROP TABLE x; --"});
    cr_assert_str_eq(r.v0, "'); DROP TABLE x; --");

    /* Several statements without parameters: the last result is reported. */
    roundtrip(p, &r,
              "CREATE TEMP TABLE t(x int); INSERT INTO t VALUES (1), (2); SELECT count(*) FROM t",
              0, NULL);
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_eq(r.v0, "2");
    cr_assert_eq(pg_pool_pending(p), 0);
    cr_assert_str_eq(pg_pool_errstr(p), "");
    pg_pool_free(p);
}

Test(pg_pool, url_conninfo)
{
    char url[128];
    snprintf(url, sizeof(url), "postgresql://arv@127.0.0.1:%s/postgres?application_name=urltest",
             getenv("ARV_TEST_PG_PORT"));
    conninfo = url;
    struct pg_pool *p = pool_up(1, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT current_user, current_setting('application_name')", 0, NULL);
    cr_assert_str_eq(r.v0, "arv");
    cr_assert_str_eq(r.v1, "urltest");
    pg_pool_free(p);
}

/* A host name is looked up off the loop; libpq gets its addresses (each tried
 * in turn) with the name kept as the host. */
Test(pg_pool, host_name)
{
    char url[128];
    snprintf(url, sizeof(url), "postgresql://arv@localhost:%s/postgres",
             getenv("ARV_TEST_PG_PORT"));
    conninfo = url;
    struct pg_pool *p = pool_up(2, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT host(inet_client_addr())", 0, NULL);
    cr_assert(strcmp(r.v0, "127.0.0.1") == 0 || strcmp(r.v0, "::1") == 0, "%s", r.v0);
    pg_pool_free(p);
    /* Freed while its lookups run. */
    pg_pool_free(pg_pool_new(base, url, 2, 1000, 0));
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* A service names its own host, which outranks PGHOST: the pool must not look
 * up PGHOST instead (here a name that cannot resolve). */
Test(pg_pool, service_host_outranks_pghost)
{
    char path[] = "/tmp/arv-pg-service-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    dprintf(fd, "[arvtest]\nhost=127.0.0.1\nport=%s\nuser=arv\ndbname=postgres\n",
            getenv("ARV_TEST_PG_PORT"));
    close(fd);
    setenv("PGSERVICEFILE", path, 1);
    setenv("PGHOST", "no-such-host.invalid", 1);
    conninfo = "service=arvtest";
    struct pg_pool *p = pool_up(1, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT 1", 0, NULL);
    cr_assert_str_eq(r.v0, "1");
    pg_pool_free(p);
    unsetenv("PGHOST");
    unsetenv("PGSERVICEFILE");
    unlink(path);
}

/* The value libpq took for option `key` on `conn` (borrowed until `opts` is freed). */
static const char *conn_option(PQconninfoOption *opts, const char *key)
{
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val ? o->val : "";
    return "";
}

/* The daemons' connection defaults reach libpq, and the operator's URL wins. */
Test(pg_pool, conn_params_defaults_and_url_override)
{
    char url[160];
    snprintf(url, sizeof(url),
             "postgresql://arv@127.0.0.1:%s/postgres?keepalives_idle=7&tcp_user_timeout=1500",
             getenv("ARV_TEST_PG_PORT"));
    const char *urls[] = {conninfo, url};
    const char *idle[] = {"10", "7"}, *user_timeout[] = {"30000", "1500"};
    for (int i = 0; i < 2; i++) {
        const char *keys[PG_CONN_PARAMS_MAX], *vals[PG_CONN_PARAMS_MAX];
        pg_conn_params("arv-test", "-c statement_timeout=1234", urls[i], keys, vals);
        PGconn *conn = PQconnectdbParams(keys, vals, 1);
        cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
        PQconninfoOption *opts = PQconninfo(conn);
        cr_assert_str_eq(conn_option(opts, "keepalives"), "1");
        cr_assert_str_eq(conn_option(opts, "keepalives_idle"), idle[i]);
        cr_assert_str_eq(conn_option(opts, "keepalives_interval"), "5");
        cr_assert_str_eq(conn_option(opts, "keepalives_count"), "3");
        cr_assert_str_eq(conn_option(opts, "tcp_user_timeout"), user_timeout[i]);
        cr_assert_str_eq(conn_option(opts, "connect_timeout"), "5");
        PQconninfoFree(opts);
        PGresult *res = PQexec(conn, "SELECT current_setting('application_name'),"
                                     " current_setting('statement_timeout')");
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
        cr_assert_str_eq(PQgetvalue(res, 0, 0), "arv-test");
        cr_assert_str_eq(PQgetvalue(res, 0, 1), "1234ms");
        PQclear(res);
        PQfinish(conn);
    }
}

Test(pg_pool, idle_connection_is_checked)
{
    struct pg_pool *p = pool_up(1, 1000);
    struct pg_pool *observer = pool_up(1, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT pg_backend_pid()", 0, NULL);
    char pid[128];
    snprintf(pid, sizeof(pid), "%s", r.v0);

    /* Idle for longer than the check period: the pool runs its own SELECT 1. */
    double end = now_s() + 5.6;
    while (now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    roundtrip(observer, &r, "SELECT query FROM pg_stat_activity WHERE pid = $1::int", 1,
              (const char *[]){pid});
    cr_assert_str_eq(r.v0, "SELECT 1");
    cr_assert(pg_pool_is_up(p));
    roundtrip(p, &r, "SELECT pg_backend_pid()", 0, NULL);
    cr_assert_str_eq(r.v0, pid);
    pg_pool_free(p);
    pg_pool_free(observer);
}

Test(pg_pool, sql_error_is_a_result)
{
    struct pg_pool *p = pool_up(1, 1000);
    struct result r;
    roundtrip(p, &r, "SELECT 1 / $1::int", 1, (const char *[]){"0"});
    cr_assert_not(r.null_res);
    cr_assert_eq(r.st, PGRES_FATAL_ERROR);
    cr_assert_str_eq(r.sqlstate, "22012");
    roundtrip(p, &r, "SELEKT 1", 0, NULL);
    cr_assert_eq(r.st, PGRES_FATAL_ERROR);
    cr_assert_str_eq(r.sqlstate, "42601");
    /* The connection is still fine. */
    roundtrip(p, &r, "SELECT 'ok'", 0, NULL);
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_eq(r.v0, "ok");
    cr_assert(pg_pool_is_up(p));
    pg_pool_free(p);
}

/* A query longer than the statement timeout ends in an error result (57014),
 * and the connection serves the next one. */
Test(pg_pool, statement_timeout_ends_a_long_query)
{
    struct pg_pool *p = pg_pool_new(base, conninfo, 1, 1000, 300);
    struct result r;
    cr_assert_not_null(p);
    cr_assert(wait_up(p, true, 5), "pool not up: %s", pg_pool_errstr(p));
    double t0 = now_s();
    roundtrip(p, &r, "SELECT pg_sleep(5)", 0, NULL);
    cr_assert_eq(r.st, PGRES_FATAL_ERROR);
    cr_assert_str_eq(r.sqlstate, "57014");
    cr_assert(now_s() - t0 < 3, "ended after %.1f s", now_s() - t0);
    roundtrip(p, &r, "SELECT current_setting('statement_timeout')", 0, NULL);
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_eq(r.v0, "300ms");
    pg_pool_free(p);
}

/* A hung server (stopped: the kernel still acknowledges, so no TCP timeout
 * fires, and statement_timeout never runs out) fails the running query 1 s
 * after its statement timeout, and the pool is not up until the server
 * answers again, then all works as before. */
Test(pg_pool, hung_server_query_deadline)
{
    use_private_cluster();
    struct pg_pool *p = pg_pool_new(base, conninfo, 2, 5000, 300);
    struct result r;
    cr_assert_not_null(p);
    cr_assert(wait_up(p, true, 5), "pool not up: %s", pg_pool_errstr(p));

    cluster_freeze(&private_, true);
    double t0 = now_s();
    memset(&r, 0, sizeof(r));
    cr_assert_eq(pg_pool_query_prepared(p, "hung", "SELECT $1::int", 1, (const char *[]){"1"},
                                        on_result, &r),
                 0);
    cr_assert(loop_until(&r.done, 4), "no answer %.1f s into the hang", now_s() - t0);
    cr_assert_eq(r.calls, 1);
    cr_assert(r.null_res);
    cr_assert_str_eq(r.err, "no answer to a query within 1300 ms");
    cr_assert(r.at - t0 >= 1.25 && r.at - t0 < 2, "answered after %.3f s", r.at - t0);
    cr_assert_not(pg_pool_is_up(p));
    cr_assert_eq(pg_pool_pending(p), 0);

    cluster_freeze(&private_, false);
    cr_assert(wait_up(p, true, 10), "not back up: %s", pg_pool_errstr(p));
    memset(&r, 0, sizeof(r));
    cr_assert_eq(pg_pool_query_prepared(p, "hung", "SELECT $1::int", 1, (const char *[]){"2"},
                                        on_result, &r),
                 0);
    cr_assert(loop_until(&r.done, 5));
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_eq(r.v0, "2");
    pg_pool_free(p);
}

Test(pg_pool, queue_of_20_on_2)
{
    struct pg_pool *p = pool_up(2, 10000);
    struct result r[20];
    char val[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(val[i], sizeof(val[i]), "%d", i);
        cr_assert_eq(query(p, &r[i], "SELECT $1::int, pg_sleep(0.02)", 1, (const char *[]){val[i]}),
                     0);
    }
    cr_assert_eq(pg_pool_pending(p), 20);
    double end = now_s() + 10;
    int done = 0;
    while (done < 20 && now_s() < end) {
        event_base_loop(base, EVLOOP_ONCE);
        done = 0;
        for (int i = 0; i < 20; i++)
            done += r[i].done;
        /* Two connections: never more than two running. */
        cr_assert_geq(pg_pool_pending(p), (size_t)(20 - done));
    }
    cr_assert_eq(done, 20);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(r[i].calls, 1);
        cr_assert_eq(r[i].st, PGRES_TUPLES_OK);
        cr_assert_str_eq(r[i].v0, val[i]);
    }
    cr_assert_eq(pg_pool_pending(p), 0);
    pg_pool_free(p);
}

Test(pg_pool, queue_timeout)
{
    struct pg_pool *p = pool_up(1, 200);
    struct result slow, waiting;
    double t0 = now_s();
    cr_assert_eq(query(p, &slow, "SELECT pg_sleep(1)", 0, NULL), 0);
    cr_assert_eq(query(p, &waiting, "SELECT 1", 0, NULL), 0);
    cr_assert_eq(pg_pool_pending(p), 2);
    cr_assert(loop_until(&waiting.done, 3));
    cr_assert(waiting.null_res);
    cr_assert_str_eq(waiting.err, "timeout waiting for a database connection");
    cr_assert(waiting.at - t0 >= 0.19 && waiting.at - t0 < 0.8, "after %.3f s", waiting.at - t0);
    cr_assert_not(slow.done);
    cr_assert(loop_until(&slow.done, 3));
    cr_assert_eq(slow.st, PGRES_TUPLES_OK);
    cr_assert_eq(pg_pool_pending(p), 0);

    /* One connection: strictly first in, first out. */
    struct result r[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(query(p, &r[i], "SELECT 1", 0, NULL), 0);
    cr_assert(loop_until(&r[4].done, 3));
    for (int i = 0; i < 4; i++)
        cr_assert(r[i].done && r[i].at <= r[i + 1].at);
    pg_pool_free(p);
}

Test(pg_pool, open_transaction_is_rolled_back)
{
    struct pg_pool *p = pool_up(1, 2000);
    struct result r;
    roundtrip(p, &r, "BEGIN", 0, NULL);
    cr_assert_eq(r.st, PGRES_COMMAND_OK);
    /* SAVEPOINT only works inside a transaction block: it must fail now. */
    roundtrip(p, &r, "SAVEPOINT s", 0, NULL);
    cr_assert_eq(r.st, PGRES_FATAL_ERROR);
    cr_assert_str_eq(r.sqlstate, "25P01");
    pg_pool_free(p);
}

Test(pg_pool, server_stop_and_restart)
{
    use_private_cluster();
    struct pg_pool *p = pool_up(2, 5000);
    struct result running, r;
    cr_assert_eq(query(p, &running, "SELECT pg_sleep(30)", 0, NULL), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);

    double t0 = now_s();
    cluster_stop(&private_);
    cr_assert(wait_up(p, false, 6), "still up %.1f s after the server stopped", now_s() - t0);
    cr_assert(loop_until(&running.done, 2));
    cr_assert_eq(running.calls, 1);
    cr_assert(running.null_res || running.st == PGRES_FATAL_ERROR);
    cr_assert_neq(pg_pool_errstr(p)[0], '\0');
    /* Fails fast while down. */
    cr_assert_eq(query(p, &r, "SELECT 1", 0, NULL), -ENOTCONN);
    cr_assert_eq(pg_pool_pending(p), 0);

    cr_assert(cluster_start(&private_));
    cr_assert(wait_up(p, true, 10), "not back up: %s", pg_pool_errstr(p));
    roundtrip(p, &r, "SELECT 'back'", 0, NULL);
    cr_assert_str_eq(r.v0, "back");
    pg_pool_free(p);
}

/* A pool closed while its server is down (the reporter's stop, say) never
 * reconnects: before, a reconnect timer armed before the close fired after
 * it, and the connection it opened was never closed. */
Test(pg_pool, closed_pool_never_reconnects)
{
    use_private_cluster();
    struct pg_pool *p = pool_up(2, 5000);
    cluster_stop(&private_);
    cr_assert(wait_up(p, false, 6), "still up after the server stopped");
    pg_pool_close(p);
    cr_assert(cluster_start(&private_));
    double end = now_s() + 3;
    while (now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    struct pg_pool *other = pool_up(1, 5000);
    struct result r;
    roundtrip(other, &r,
              "SELECT count(*) FROM pg_stat_activity"
              " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
              0, NULL);
    cr_assert_str_eq(r.v0, "0", "the closed pool holds %s connections", r.v0);
    pg_pool_free(other);
    pg_pool_free(p);
}

Test(pg_pool, terminated_backend_reconnects)
{
    struct pg_pool *victim = pool_up(1, 2000);
    struct pg_pool *killer = pool_up(1, 2000);
    struct result running, r;

    roundtrip(victim, &r, "SELECT pg_backend_pid()", 0, NULL);
    char pid[128];
    snprintf(pid, sizeof(pid), "%s", r.v0);
    cr_assert_eq(query(victim, &running, "SELECT pg_sleep(30)", 0, NULL), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    usleep(100000);
    roundtrip(killer, &r, "SELECT pg_terminate_backend($1::int)", 1, (const char *[]){pid});
    cr_assert_str_eq(r.v0, "t");
    cr_assert(loop_until(&running.done, 3), "running query not ended");
    cr_assert(running.null_res || running.st == PGRES_FATAL_ERROR);

    /* The pool reconnects by itself. */
    cr_assert(wait_up(victim, true, 5));
    roundtrip(victim, &r, "SELECT pg_backend_pid()", 0, NULL);
    cr_assert_eq(r.st, PGRES_TUPLES_OK);
    cr_assert_str_neq(r.v0, pid);

    /* An idle connection killed server-side is noticed without a query. */
    snprintf(pid, sizeof(pid), "%s", r.v0);
    roundtrip(killer, &r, "SELECT pg_terminate_backend($1::int)", 1, (const char *[]){pid});
    cr_assert(wait_up(victim, false, 2), "idle loss not noticed");
    cr_assert(wait_up(victim, true, 5));
    pg_pool_free(victim);
    pg_pool_free(killer);
}

Test(pg_pool, free_with_queries_in_flight)
{
    struct pg_pool *p = pool_up(1, 5000);
    struct result running, queued;
    cr_assert_eq(query(p, &running, "SELECT pg_sleep(5)", 0, NULL), 0);
    cr_assert_eq(query(p, &queued, "SELECT 1", 0, NULL), 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    pg_pool_free(p);
    cr_assert(running.done && running.null_res && running.calls == 1);
    cr_assert(queued.done && queued.null_res && queued.calls == 1);
    cr_assert_str_eq(queued.err, "pool closed");
}

Test(pg_pool, no_server)
{
    char nowhere[128];
    snprintf(nowhere, sizeof(nowhere), "host=127.0.0.1 port=%d user=arv dbname=postgres",
             free_port());
    struct pg_pool *p = pg_pool_new(base, nowhere, 2, 1000, 0);
    cr_assert_not_null(p);
    struct result r;
    cr_assert_not(wait_up(p, true, 0.5));
    cr_assert_eq(query(p, &r, "SELECT 1", 0, NULL), -ENOTCONN);
    cr_assert_neq(pg_pool_errstr(p)[0], '\0');
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_not(r.done);
    pg_pool_free(p);
    pg_pool_free(NULL);

    cr_assert_null(pg_pool_new(base, "host=127.0.0.1 nonsense_key=1", 1, 1000, 0));
    cr_assert_null(pg_pool_new(base, conninfo, 0, 1000, 0));
}
