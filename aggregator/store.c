/* The aggregator's PostgreSQL writer: blocking libpq on the worker thread, one
 * transaction per batch (event ids and the dedupe, raw rows by COPY, rollup
 * deltas by COPY and one merging statement, COMMIT). */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "locks.h"
#include "log.h"
#include "pg_pool.h"
#include "rollup_sql.h"
#include "timeutil.h"

#define STORE_COPY_PIECE (256 * 1024) /* bytes per PQputCopyData */
/* The longest a write's transaction is idle in a healthy worker: a read from
 * Redis (BLOCK at most 1 s, a socket timeout 5 s past it) and its decoding. */
#define STORE_IDLE_IN_WRITE_MS 15000

/* The session's temporary tables, for a batch's event ids (i: its entry
 * index) and dead letters when a read takes the slow way, and for its rollup
 * deltas (rollup.h's columns). */
static const char store_temp_ddl[] =
    "CREATE TEMP TABLE IF NOT EXISTS arv_keys (i integer NOT NULL, company_id bigint NOT NULL,"
    " event_id uuid NOT NULL, received_at timestamptz NOT NULL) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS arv_measures (kind integer, at timestamptz,"
    " company_id bigint, project_id bigint, content_id bigint, views bigint, sessions hll,"
    " video_plays bigint, duration_sum bigint, duration_count bigint, tq_excellent bigint,"
    " tq_good bigint, tq_fair bigint, tq_poor bigint, tq_other bigint) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS arv_breakdown (day integer, company_id bigint,"
    " project_id bigint, content_id bigint, dimension text, value text, views bigint,"
    " sessions hll) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS arv_dead (stream text, entry_id text, reason text,"
    " detail text, payload text) ON COMMIT DELETE ROWS";

enum store_status store_classify(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return STORE_CONN; /* no server error: the client or the connection failed */
    if (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0 ||
        strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0)
        return STORE_CONN;
    if (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0)
        return STORE_DATA;
    if (strcmp(sqlstate, "42P01") == 0 || strcmp(sqlstate, "42883") == 0 ||
        strcmp(sqlstate, "3F000") == 0 || strcmp(sqlstate, "42703") == 0 ||
        strcmp(sqlstate, "42704") == 0 || strcmp(sqlstate, "42P10") == 0)
        return STORE_SCHEMA; /* table, function, schema, column, type or index missing */
    return STORE_RETRY;
}

/* The SET list of a measures upsert (the row alias is r). */
#define MEASURES_UPDATE                                                                            \
    " views = r.views + EXCLUDED.views,"                                                           \
    " sessions = hll_union(r.sessions, EXCLUDED.sessions),"                                        \
    " video_plays = r.video_plays + EXCLUDED.video_plays,"                                         \
    " duration_sum = r.duration_sum + EXCLUDED.duration_sum,"                                      \
    " duration_count = r.duration_count + EXCLUDED.duration_count,"                                \
    " tq_excellent = r.tq_excellent + EXCLUDED.tq_excellent,"                                      \
    " tq_good = r.tq_good + EXCLUDED.tq_good,"                                                     \
    " tq_fair = r.tq_fair + EXCLUDED.tq_fair,"                                                     \
    " tq_poor = r.tq_poor + EXCLUDED.tq_poor,"                                                     \
    " tq_other = r.tq_other + EXCLUDED.tq_other"

/* Inserts the batch's event ids that are new; its rows are the entry indexes
 * of those that are not (seen before: duplicates). */
static const char store_dedupe_sql[] =
    "WITH fresh AS (INSERT INTO analytics.event_ids (company_id, event_id, received_at)"
    " SELECT company_id, event_id, received_at FROM pg_temp.arv_keys ORDER BY 2, 1"
    " ON CONFLICT DO NOTHING RETURNING company_id, event_id)"
    " SELECT k.i FROM pg_temp.arv_keys k LEFT JOIN fresh f"
    " ON f.company_id = k.company_id AND f.event_id = k.event_id WHERE f.event_id IS NULL";

void store_build_lock_sql(struct strbuf *out, const int64_t *days, size_t n)
{
    /* Shared per UTC day the batch's events fall on, ascending so that two
     * lockers never wait on each other in opposite orders; `arvctl rollups
     * rebuild` takes the same keys exclusively. */
    strbuf_printf(out, "SELECT count(pg_advisory_xact_lock_shared(%d, d)) FROM ",
                  ARV_LOCK_ROLLUP_DAY);
    if (n == 0)
        strbuf_puts(out, "(SELECT 0 WHERE false)");
    for (size_t i = 0; i < n; i++)
        strbuf_printf(out, "%s(%" PRId64 ")", i ? ", " : "(VALUES ", days[i]);
    strbuf_puts(out, n ? ") days (d)" : " days (d)");
}

void store_build_merge_sql(struct strbuf *out)
{
    /* Each upsert in the rollups' key order, the tables in one order
     * (breakdown, content hourly, content daily, company hourly, company
     * daily: the hottest rows last): two writers wait on each other row by
     * row instead of deadlocking. PostgreSQL runs the data-modifying CTEs
     * that the final SELECT does not read after it, in the reverse of the
     * order they are written in: hence company daily first here. */
    strbuf_puts(out, "WITH dead AS ("
                     " INSERT INTO analytics.dead_letters (" BATCH_DEAD_COLUMNS ")"
                     " SELECT " BATCH_DEAD_COLUMNS " FROM pg_temp.arv_dead"
                     " ON CONFLICT (stream, entry_id) DO NOTHING RETURNING 1)");
    strbuf_puts(
        out,
        ", r_kd AS ("
        " INSERT INTO analytics.rollup_company_daily AS r (day, "
        "company_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (at AT TIME ZONE 'UTC')::date, company_id, " ROLLUP_MEASURES_COLUMNS
        " FROM pg_temp.arv_measures WHERE kind = 3 ORDER BY company_id, at"
        " ON CONFLICT (company_id, day) DO UPDATE SET" MEASURES_UPDATE "),"
        " r_kh AS ("
        " INSERT INTO analytics.rollup_company_hourly AS r (hour, "
        "company_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT at, company_id, " ROLLUP_MEASURES_COLUMNS
        " FROM pg_temp.arv_measures WHERE kind = 2 ORDER BY company_id, at"
        " ON CONFLICT (company_id, hour) DO UPDATE SET" MEASURES_UPDATE "),"
        " r_cd AS ("
        " INSERT INTO analytics.rollup_content_daily AS r (day, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (at AT TIME ZONE 'UTC')::date, company_id, project_id, "
        "content_id, " ROLLUP_MEASURES_COLUMNS
        " FROM pg_temp.arv_measures WHERE kind = 1 ORDER BY company_id, content_id, at, project_id"
        " ON CONFLICT (company_id, ar_content_id, day, project_id) DO UPDATE SET" MEASURES_UPDATE
        "),"
        " r_ch AS ("
        " INSERT INTO analytics.rollup_content_hourly AS r (hour, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT at, company_id, project_id, content_id, " ROLLUP_MEASURES_COLUMNS
        " FROM pg_temp.arv_measures WHERE kind = 0 ORDER BY company_id, content_id, at, project_id"
        " ON CONFLICT (company_id, ar_content_id, hour, project_id) DO UPDATE SET" MEASURES_UPDATE
        "),"
        " r_bd AS ("
        " INSERT INTO analytics.rollup_breakdown_daily AS r (day, company_id, project_id,"
        " ar_content_id, dimension, value, views, sessions)"
        " SELECT DATE '1970-01-01' + day, company_id, project_id, content_id, dimension, value,"
        " views, sessions FROM pg_temp.arv_breakdown ORDER BY 2, 4, 1, 5, 6, 3"
        " ON CONFLICT (company_id, ar_content_id, day, dimension, value, project_id) DO UPDATE SET"
        " views = r.views + EXCLUDED.views,"
        " sessions = hll_union(r.sessions, EXCLUDED.sessions))"
        " SELECT count(*) FROM dead");
}

int store_init(struct store *s, const char *conninfo, const char *relation,
               long statement_timeout_ms)
{
    int rc;

    memset(s, 0, sizeof(*s));
    s->statement_timeout_ms = statement_timeout_ms;
    s->call_fd = -1;
    if ((rc = pthread_mutex_init(&s->call_mu, NULL)) != 0)
        return -rc;
    s->call_mu_ready = true;
    strbuf_init(&s->sql);
    strbuf_init(&s->rows);
    rollup_init(&s->rollup);
    s->conninfo = strdup(conninfo);
    s->relation = strdup(relation);
    if (!s->conninfo || !s->relation) {
        store_deinit(s);
        return -ENOMEM;
    }
    return 0;
}

void store_disconnect(struct store *s)
{
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}

void store_deinit(struct store *s)
{
    store_disconnect(s);
    free(s->conninfo);
    free(s->relation);
    strbuf_deinit(&s->sql);
    strbuf_deinit(&s->rows);
    rollup_deinit(&s->rollup);
    free(s->days);
    free(s->keys);
    if (s->call_mu_ready)
        pthread_mutex_destroy(&s->call_mu);
    memset(s, 0, sizeof(*s));
}

uint64_t store_watch_limit_ms(long statement_timeout_ms)
{
    uint64_t t = statement_timeout_ms > 0 ? (uint64_t)statement_timeout_ms : 0;

    return t + (t / 4 < 15000 ? t / 4 : 15000);
}

uint64_t store_watch(struct store *s, uint64_t now_ms, uint64_t stop_cut_ms)
{
    uint64_t cut = 0;

    pthread_mutex_lock(&s->call_mu);
    if (s->call_since_ms && !s->call_cut_ms &&
        (now_ms - s->call_since_ms > store_watch_limit_ms(s->statement_timeout_ms) ||
         (stop_cut_ms && now_ms >= stop_cut_ms))) {
        /* The owner closes the socket only after call_end(), under this
         * lock: the descriptor is still the call's. */
        shutdown(s->call_fd, SHUT_RDWR);
        cut = s->call_cut_ms = now_ms - s->call_since_ms;
    }
    pthread_mutex_unlock(&s->call_mu);
    return cut;
}

/* Marks the start of a blocking call on s->conn, for store_watch(). */
static void call_begin(struct store *s)
{
    pthread_mutex_lock(&s->call_mu);
    s->call_since_ms = timeutil_mono_ms();
    s->call_fd = PQsocket(s->conn);
    s->call_cut_ms = 0;
    pthread_mutex_unlock(&s->call_mu);
    s->cut_ms = 0;
}

/* Marks its end; s->cut_ms says whether store_watch() gave it up. */
static void call_end(struct store *s)
{
    pthread_mutex_lock(&s->call_mu);
    s->cut_ms = s->call_cut_ms;
    s->call_since_ms = 0;
    s->call_fd = -1;
    s->call_cut_ms = 0;
    pthread_mutex_unlock(&s->call_mu);
}

/* PQexec() as a call store_watch() may give up. */
static PGresult *exec_watched(struct store *s, const char *sql)
{
    PGresult *res;

    call_begin(s);
    res = PQexec(s->conn, sql);
    call_end(s);
    return res;
}

bool store_in_write(const struct store *s)
{
    PGTransactionStatusType t = s->conn ? PQtransactionStatus(s->conn) : PQTRANS_UNKNOWN;

    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

bool store_connected(const struct store *s)
{
    return s->conn != NULL;
}

/* Copies the first line of `msg` into errstr. */
static void set_errstr(struct store *s, const char *msg)
{
    size_t n = 0;

    if (!msg || !*msg)
        msg = "unknown error";
    while (msg[n] && msg[n] != '\n' && n + 1 < sizeof(s->errstr))
        n++;
    memcpy(s->errstr, msg, n);
    s->errstr[n] = '\0';
}

/* Records a failed call (res may be NULL) and returns its kind. */
static enum store_status store_fail(struct store *s, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char cut[128];

    if (s->cut_ms) {
        snprintf(cut, sizeof(cut),
                 "no answer from PostgreSQL for %" PRIu64 " ms: connection given up", s->cut_ms);
        msg = cut;
    }
    if (!msg || !*msg)
        msg = s->conn ? PQerrorMessage(s->conn) : "not connected";
    snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state ? state : "");
    set_errstr(s, msg);
    s->status = store_classify(state);
    if (s->cut_ms || (s->conn && PQstatus(s->conn) == CONNECTION_BAD))
        s->status = STORE_CONN;
    return s->status;
}

/* Ends an open or failed transaction; closes the connection if that fails. */
static void store_rollback(struct store *s)
{
    PGresult *res;

    if (!s->conn)
        return;
    if (PQstatus(s->conn) != CONNECTION_OK) {
        store_disconnect(s);
        return;
    }
    if (PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        return;
    res = exec_watched(s, "ROLLBACK");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        store_disconnect(s);
    PQclear(res);
}

/* Runs `sql` (one or more statements); `*res` gets its result (cleared by the
 * caller) when it returns rows. */
static enum store_status run(struct store *s, const char *sql, PGresult **res)
{
    PGresult *r = exec_watched(s, sql);
    ExecStatusType rs = PQresultStatus(r);
    enum store_status st = STORE_OK;

    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK)
        st = store_fail(s, r);
    if (st == STORE_OK && res)
        *res = r;
    else
        PQclear(r);
    return st;
}

/* Runs `sql` outside a transaction; on failure ends what it began. */
static enum store_status store_oom(struct store *s)
{
    set_errstr(s, "out of memory");
    return s->status = STORE_RETRY;
}

static enum store_status store_exec(struct store *s, const char *sql)
{
    enum store_status st = run(s, sql, NULL);

    if (st != STORE_OK) {
        store_rollback(s);
        if (st == STORE_CONN)
            store_disconnect(s);
    }
    return s->status = st;
}

static void store_notice(void *arg, const char *message)
{
    char line[256];
    size_t n = 0;

    (void)arg;
    while (message[n] && message[n] != '\n' && n + 1 < sizeof(line)) {
        line[n] = message[n];
        n++;
    }
    line[n] = '\0';
    log_warn("postgresql_notice", LF_STR("message", line));
}

enum store_status store_connect(struct store *s)
{
    const char *keys[PG_CONN_PARAMS_MAX], *values[PG_CONN_PARAMS_MAX];
    enum store_status st;

    store_disconnect(s);
    pg_conn_params("arv-aggregator", NULL, s->conninfo, keys, values);
    s->conn = PQconnectdbParams(keys, values, 1);
    if (!s->conn) {
        set_errstr(s, "out of memory");
        return s->status = STORE_CONN;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", "");
        set_errstr(s, PQerrorMessage(s->conn));
        store_disconnect(s);
        return s->status = STORE_CONN;
    }
    PQsetNoticeProcessor(s->conn, store_notice, NULL);
    /* A write's transaction is idle while the worker reads its next entries
     * from Redis (at most STORE_IDLE_IN_WRITE_MS, a hung Redis included); one
     * idle longer belongs to a worker that stopped (a frozen VM, SIGSTOP), and
     * its row locks would hold every other aggregator's dedupe and merge: the
     * server ends that session. READ COMMITTED whatever the database's
     * default: a merge that waited for another writer's rollup row must add to
     * the version it finds (under REPEATABLE READ it fails to serialize, and
     * the write is retried), and a batch must see a rebuild committed before
     * its day lock was granted. */
    long idle_ms = s->statement_timeout_ms > STORE_IDLE_IN_WRITE_MS ? s->statement_timeout_ms
                                                                    : STORE_IDLE_IN_WRITE_MS;
    strbuf_reset(&s->sql);
    strbuf_printf(&s->sql,
                  "SET client_min_messages = warning; SET client_encoding = 'UTF8';"
                  " SET statement_timeout = %ld; SET idle_in_transaction_session_timeout = %ld;"
                  " SET TIME ZONE 'UTC'; SET standard_conforming_strings = on;"
                  " SET work_mem = '64MB'; SET default_transaction_isolation = 'read committed'; ",
                  s->statement_timeout_ms, idle_ms);
    strbuf_puts(&s->sql, store_temp_ddl);
    st = store_exec(s, s->sql.data);
    return st;
}

enum store_status store_ensure_partitions(struct store *s, int64_t first_day, int64_t last_day)
{
    if (!s->conn)
        return s->status = STORE_CONN;
    strbuf_reset(&s->sql);
    strbuf_printf(&s->sql,
                  "SELECT analytics.ensure_day_partitions(DATE '1970-01-01' + %" PRId64
                  ", DATE '1970-01-01' + %" PRId64 ")",
                  first_day, last_day);
    return store_exec(s, s->sql.data);
}

/* The delay a floor is moved back by: the row's, while some aggregator
 * reported it in the last 10 minutes and it is the larger, else the writer's
 * (EXCLUDED). */
#define FLOORS_KEEP_DELAY                                                                          \
    "w.delay_at > now() - interval '10 minutes' AND w.delay_ms > EXCLUDED.delay_ms"
#define FLOORS_DELAY   "CASE WHEN " FLOORS_KEEP_DELAY " THEN w.delay_ms ELSE EXCLUDED.delay_ms END"
#define FLOORS_STR_(x) #x
#define FLOORS_STR(x)  FLOORS_STR_(x)
#define FLOORS_SLACK   FLOORS_STR(STORE_FLOOR_SLACK_MS) " * interval '1 millisecond'"
/* complete_until of floor `f` moved back by delay `d` (SQL), and never past
 * this server's now() less the slack (a Redis clock ahead of the
 * collectors'). */
#define FLOORS_UNTIL(f, d)                                                                         \
    "least(" f " - greatest(" d " * interval '1 millisecond', " FLOORS_SLACK "), "                 \
    "now() - " FLOORS_SLACK ")"

void store_build_floors_sql(struct strbuf *out, const char *const *literals,
                            const int64_t *floor_ms, size_t n, int64_t delay_ms)
{
    /* One statement, its rows in the streams' order (two aggregators lock
     * them in one order). A stream whose floor is unknown (NULL) gets a row
     * at the epoch if it has none, else only has it marked current. */
    strbuf_puts(out, "INSERT INTO analytics.stream_watermarks AS w"
                     " (stream, floor_at, delay_ms, delay_at, complete_until, updated_at)"
                     " SELECT s, f, d, now(), CASE WHEN f IS NULL THEN 'epoch' ELSE " FLOORS_UNTIL(
                         "f", "d") " END, now() FROM (VALUES ");
    for (size_t i = 0; i < n; i++) {
        strbuf_printf(out, "%s(%s, ", i ? ", " : "", literals[i]);
        if (floor_ms && floor_ms[i] > 0)
            strbuf_printf(out, "to_timestamp(%" PRId64 " / 1000.0)", floor_ms[i]);
        else
            strbuf_puts(out, "NULL::timestamptz");
        strbuf_printf(out, ", %" PRId64 "::bigint)", delay_ms);
    }
    strbuf_puts(out,
                ") v (s, f, d) ORDER BY s ON CONFLICT (stream) DO UPDATE SET"
                " floor_at = coalesce(EXCLUDED.floor_at, w.floor_at),"
                " delay_ms = " FLOORS_DELAY ","
                " delay_at = CASE WHEN " FLOORS_KEEP_DELAY " THEN w.delay_at ELSE now() END,"
                " complete_until = CASE WHEN EXCLUDED.floor_at IS NULL THEN w.complete_until"
                " ELSE " FLOORS_UNTIL(
                    "EXCLUDED.floor_at",
                    "(" FLOORS_DELAY
                    ")") " END,"
                         " updated_at = now()"
                         " RETURNING stream, (extract(epoch FROM complete_until) * 1000)::bigint");
}

enum store_status store_put_floors(struct store *s, const char *const *streams,
                                   const int64_t *floor_ms, size_t n, int64_t delay_ms,
                                   int64_t *until_ms)
{
    PGresult *res = NULL;
    enum store_status st = STORE_OK;

    if (!s->conn)
        return s->status = STORE_CONN;
    char **literals = calloc(n ? n : 1, sizeof(*literals));
    if (!literals)
        return store_oom(s);
    for (size_t i = 0; i < n && st == STORE_OK; i++) {
        if (!(literals[i] = PQescapeLiteral(s->conn, streams[i], strlen(streams[i])))) {
            set_errstr(s, PQerrorMessage(s->conn));
            st = s->status = STORE_RETRY;
        }
    }
    if (st == STORE_OK) {
        strbuf_reset(&s->sql);
        store_build_floors_sql(&s->sql, (const char *const *)literals, floor_ms, n, delay_ms);
        st = s->sql.oom ? store_oom(s) : run(s, s->sql.data, &res);
    }
    for (size_t i = 0; i < n; i++) {
        until_ms[i] = 0;
        if (literals[i])
            PQfreemem(literals[i]);
    }
    free(literals);
    /* What each row holds now, by stream (a few: a scan each). */
    for (int r = 0; st == STORE_OK && r < PQntuples(res); r++) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(PQgetvalue(res, r, 0), streams[i]) == 0)
                until_ms[i] = strtoll(PQgetvalue(res, r, 1), NULL, 10);
        }
    }
    PQclear(res);
    return st;
}

enum store_status store_ping(struct store *s)
{
    if (!s->conn)
        return s->status = STORE_CONN;
    return store_exec(s, "SELECT 1");
}

static long result_long(const PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? 0 : strtol(PQgetvalue(res, 0, col), NULL, 10);
}

enum store_status store_resolve_content(struct store *s, struct content_cache *cc)
{
    PGresult *res;
    bool oom;
    enum store_status st = STORE_OK;

    if (!s->conn)
        return s->status = STORE_CONN;
    call_begin(s);
    res = content_cache_refresh(cc, s->conn, s->relation, timeutil_mono_ms(), &oom);
    call_end(s);
    if (res) {
        st = store_fail(s, res);
        PQclear(res);
        if (st == STORE_CONN)
            store_disconnect(s);
        /* A data error of the registry's query (a view's cast failing on one
         * of its rows, say) rejects no row of the batch: the registry is
         * failing, and the batch waits for it. Taken for a rejected row, it
         * would have the batch written entry by entry, unresolved: its
         * events dead-lettered as unknown content. */
        if (st == STORE_DATA)
            st = s->status = STORE_RETRY;
    } else if (oom) {
        set_errstr(s, "out of memory");
        st = STORE_RETRY;
    }
    return s->status = st;
}

/* Sends `sql`, which must end in a COPY FROM STDIN. */
static enum store_status copy_begin(struct store *s, const char *sql)
{
    PGresult *res = exec_watched(s, sql);
    enum store_status st = STORE_OK;

    if (PQresultStatus(res) != PGRES_COPY_IN)
        st = store_fail(s, res);
    PQclear(res);
    return st;
}

/* Sends the COPY data in s->rows once it holds a piece (any of it if `all`),
 * emptying it: libpq copies what it is given into its output buffer and keeps
 * that buffer, so sending a whole batch at once would keep a copy of it for
 * the connection's life. */
static enum store_status copy_send(struct store *s, bool all)
{
    if (s->rows.oom)
        return store_oom(s);
    if (!all && s->rows.len < STORE_COPY_PIECE)
        return STORE_OK;
    for (size_t off = 0; off < s->rows.len; off += STORE_COPY_PIECE) {
        size_t len = s->rows.len - off < STORE_COPY_PIECE ? s->rows.len - off : STORE_COPY_PIECE;
        call_begin(s);
        int sent = PQputCopyData(s->conn, s->rows.data + off, (int)len);
        call_end(s);
        if (sent != 1)
            return store_fail(s, NULL);
    }
    strbuf_reset(&s->rows);
    return STORE_OK;
}

/* rollup_drain_fn for the rollup writers: sends what they wrote so far. */
static int drain_rows(void *arg)
{
    return copy_send(arg, false) == STORE_OK ? 0 : -EIO;
}

/* Sends the rest and ends the COPY; after a failure `st` of sending, ends it
 * with an error instead, so that it fails (and returns `st`). */
static enum store_status copy_end(struct store *s, enum store_status st)
{
    PGresult *res;

    if (st == STORE_OK)
        st = copy_send(s, true);
    strbuf_reset(&s->rows);
    call_begin(s);
    int ended =
        PQputCopyEnd(s->conn, st == STORE_OK ? NULL : "the aggregator could not send its rows");
    call_end(s);
    if (ended != 1 && st == STORE_OK)
        st = store_fail(s, NULL);
    /* A failed COPY still ends in a result: read them all. */
    for (;;) {
        call_begin(s);
        res = PQgetResult(s->conn);
        call_end(s);
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_COMMAND_OK && st == STORE_OK)
            st = store_fail(s, res);
        PQclear(res);
    }
    return st;
}

/* copy_begin for a COPY ... (FORMAT binary): the stream's header goes first. */
static enum store_status copy_begin_binary(struct store *s, const char *sql)
{
    enum store_status st = copy_begin(s, sql);

    if (st == STORE_OK)
        strbuf_append(&s->rows, COPY_BINARY_HEADER, COPY_BINARY_HEADER_LEN);
    return st;
}

/* copy_end for a COPY ... (FORMAT binary): the trailer goes last. */
static enum store_status copy_end_binary(struct store *s, enum store_status st)
{
    if (st == STORE_OK)
        copy_bin_trailer(&s->rows);
    return copy_end(s, st);
}

/* An event of known content, the first of the write with its event id: its
 * id is looked up in event_ids, and it is written if that is new. */
static bool to_look_up(const struct batch_entry *e)
{
    return e->kind == BATCH_EVENT && e->ar_content_id && !e->repeat;
}

static int cmp_day(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The distinct UTC days of the entries to look up (ascending) into s->days;
 * returns how many, or -1 if out of memory. */
static long collect_days(struct store *s, const struct batch *b, size_t first, size_t n)
{
    size_t nd = 0;

    for (size_t i = first; i < first + n; i++) {
        const struct batch_entry *e = &b->entries[i];
        int64_t day;
        if (!to_look_up(e))
            continue;
        day = timeutil_period(e->received_ms, TIMEUTIL_DAY_MS);
        if (nd > 0 && s->days[nd - 1] == day)
            continue; /* entries come mostly in time order */
        if (nd == s->days_cap) {
            size_t cap = s->days_cap ? s->days_cap * 2 : 16;
            int64_t *p = realloc(s->days, cap * sizeof(*p));
            if (!p)
                return -1;
            s->days = p;
            s->days_cap = cap;
        }
        s->days[nd++] = day;
    }
    if (nd > 1) /* s->days is NULL until a read has a day */
        qsort(s->days, nd, sizeof(*s->days), cmp_day);
    size_t out = 0;
    for (size_t i = 0; i < nd; i++) {
        if (out == 0 || s->days[out - 1] != s->days[i])
            s->days[out++] = s->days[i];
    }
    return (long)out;
}

/* A dedupe key: the index's order is the uuid's bytes, then company_id. */
struct store_key {
    int64_t company_id;
    unsigned char id[16];
    uint32_t entry;
};

static int cmp_key(const void *a, const void *b)
{
    const struct store_key *x = a, *y = b;
    int c = memcmp(x->id, y->id, sizeof(x->id));

    if (c != 0)
        return c;
    return x->company_id < y->company_id ? -1 : x->company_id > y->company_id;
}

/* Collects the dedupe keys of the entries to look up (see collect_days) into
 * s->keys in the index's order. Returns their number, or -1 out of memory. */
static long collect_keys(struct store *s, const struct batch *b, size_t first, size_t n)
{
    size_t nk = 0;

    if (n > s->keys_cap) {
        struct store_key *p = realloc(s->keys, n * sizeof(*p));
        if (!p)
            return -1;
        s->keys = p;
        s->keys_cap = n;
    }
    for (size_t i = first; i < first + n; i++) {
        const struct batch_entry *e = &b->entries[i];
        if (!to_look_up(e))
            continue;
        s->keys[nk].company_id = e->company_id;
        /* the field's 4-byte length, then the uuid's 16 bytes */
        memcpy(s->keys[nk].id, b->rows.data + e->row_off + 4, sizeof(s->keys[nk].id));
        s->keys[nk++].entry = (uint32_t)i;
    }
    if (nk > 1)
        qsort(s->keys, nk, sizeof(*s->keys), cmp_key);
    return (long)nk;
}

/* COPYs the `nk` keys collect_keys() left in s->keys with the statement
 * `sql`; `indexed`: each row starts with the entry's index. Marks those
 * entries counted. A key's received_at, which only retention reads, is the
 * later of its event's receipt and now: an old backlog's ids are kept the
 * dedupe window from their write, not deleted by the next pass while their
 * entries can still come back (a crash before XACK, a client retry in the
 * same backlog). */
static enum store_status copy_ids(struct store *s, struct batch *b, size_t nk, const char *sql,
                                  bool indexed)
{
    const int64_t now_ms = timeutil_real_ms();
    enum store_status st;

    if ((st = copy_begin_binary(s, sql)) != STORE_OK)
        return st;
    for (size_t k = 0; k < nk && st == STORE_OK; k++) {
        struct batch_entry *e = &b->entries[s->keys[k].entry];
        e->counted = true;
        copy_bin_tuple(&s->rows, indexed ? 4 : 3);
        if (indexed)
            copy_bin_int4(&s->rows, (int32_t)s->keys[k].entry);
        copy_bin_int8(&s->rows, e->company_id);
        strbuf_append(&s->rows, b->rows.data + e->row_off, BATCH_EVENT_ID_FIELD);
        copy_bin_time_ms(&s->rows, e->received_ms > now_ms ? e->received_ms : now_ms);
        st = copy_send(s, false);
    }
    return copy_end_binary(s, st);
}

/* Whether entry `e` is dead-lettered: it did not decode, or names content
 * nobody registered. */
static bool is_dead(const struct batch_entry *e)
{
    return e->kind == BATCH_DEAD || (e->kind == BATCH_EVENT && !e->ar_content_id);
}

/* COPYs the dead letters among entries [first, first + n) with the statement
 * `sql` (text format, BATCH_DEAD_COLUMNS); *rows: how many. */
static enum store_status copy_dead(struct store *s, const struct batch *b, size_t first, size_t n,
                                   const char *sql, long *rows)
{
    enum store_status st;

    *rows = 0;
    if ((st = copy_begin(s, sql)) != STORE_OK)
        return st;
    for (size_t i = first; i < first + n && st == STORE_OK; i++) {
        const struct batch_entry *e = &b->entries[i];
        if (!is_dead(e))
            continue;
        if (e->kind == BATCH_DEAD)
            strbuf_append(&s->rows, b->rows.data + e->row_off, e->row_len);
        else
            batch_dead_row(b, i, BATCH_REASON_UNKNOWN, NULL, &s->rows);
        (*rows)++;
        st = copy_send(s, false);
    }
    return copy_end(s, st);
}

/* Round trips 1 to 4: BEGIN, the day locks, the read's dead letters (if any)
 * and its event ids. Most reads hold only new ids and entries never
 * dead-lettered before, so both are first COPYed straight into their tables
 * (dead_letters, event_ids). A unique violation in either (an id seen
 * before, or an entry redelivered after its dead letter was committed) undoes
 * both and takes the slow way: the dead letters into a temporary table, for
 * the merge to insert those not there yet; the ids into another, and one
 * statement that inserts the new ones and names the others, which are then
 * not counted. */
static enum store_status write_ids(struct store *s, struct batch *b, size_t first, size_t n,
                                   struct store_counts *counts)
{
    long ndays = collect_days(s, b, first, n);
    long nkeys = ndays < 0 ? -1 : collect_keys(s, b, first, n);
    bool begin = !store_in_write(s), dead = false;
    long ndead = 0;
    PGresult *res = NULL;
    enum store_status st = STORE_OK;

    if (nkeys < 0)
        return store_oom(s);
    for (size_t i = first; i < first + n && !dead; i++)
        dead = is_dead(&b->entries[i]);
    strbuf_reset(&s->sql);
    if (begin)
        strbuf_puts(&s->sql, "BEGIN; ");
    store_build_lock_sql(&s->sql, s->days, (size_t)ndays);
    strbuf_puts(&s->sql, "; SAVEPOINT ids;");
    if (dead) {
        strbuf_puts(&s->sql, " COPY analytics.dead_letters (" BATCH_DEAD_COLUMNS ") FROM STDIN");
        if (s->sql.oom)
            return store_oom(s);
        st = copy_dead(s, b, first, n, s->sql.data, &ndead);
        strbuf_reset(&s->sql);
    }
    strbuf_puts(&s->sql, " COPY analytics.event_ids (company_id, event_id, received_at)"
                         " FROM STDIN (FORMAT binary)");
    if (s->sql.oom)
        return store_oom(s);
    if (begin)
        rollup_reset(&s->rollup);
    if (st == STORE_OK)
        st = copy_ids(s, b, (size_t)nkeys, s->sql.data, false);
    if (st == STORE_OK)
        counts->dead_letters += ndead;
    if (st != STORE_DATA || strcmp(s->sqlstate, "23505") != 0)
        return st;
    counts->ids_slow = true;
    /* arv_keys empties only at COMMIT: an earlier read of the same write may
     * have left its keys there, whose entry indexes are not this read's. */
    if ((st = run(s, "ROLLBACK TO SAVEPOINT ids; DELETE FROM pg_temp.arv_keys", NULL)) != STORE_OK)
        return st;
    if (dead &&
        (st = copy_dead(s, b, first, n, "COPY pg_temp.arv_dead (" BATCH_DEAD_COLUMNS ") FROM STDIN",
                        &ndead)) != STORE_OK)
        return st;
    st = copy_ids(s, b, (size_t)nkeys, "COPY pg_temp.arv_keys FROM STDIN (FORMAT binary)", true);
    if (st != STORE_OK || nkeys == 0)
        return st;
    if ((st = run(s, store_dedupe_sql, &res)) != STORE_OK)
        return st;
    for (int r = 0; r < PQntuples(res); r++) {
        long i = strtol(PQgetvalue(res, r, 0), NULL, 10);
        if (i >= (long)first && i < (long)(first + n))
            b->entries[i].counted = false;
    }
    PQclear(res);
    return STORE_OK;
}

/* The raw rows of the counted events by COPY, while their rollup deltas
 * (of those that are not bots') are computed. */
static enum store_status write_raw(struct store *s, struct batch *b, size_t first, size_t n)
{
    enum store_status st = STORE_OK;
    bool started = false;

    strbuf_reset(&s->rows);
    for (size_t i = first; i < first + n && st == STORE_OK; i++) {
        struct batch_entry *e = &b->entries[i];
        if (e->kind != BATCH_EVENT || !e->counted)
            continue;
        if (!started) {
            st = copy_begin_binary(s, "COPY analytics.ar_view_sessions (" BATCH_RAW_COLUMNS
                                      ") FROM STDIN (FORMAT binary)");
            if (st != STORE_OK)
                return st;
            started = true;
        }
        copy_bin_tuple(&s->rows, BATCH_RAW_NFIELDS);
        strbuf_append(&s->rows, b->rows.data + e->row_off, e->row_len);
        copy_bin_int8(&s->rows, e->ar_content_id);
        copy_bin_int8(&s->rows, e->project_id);
        copy_bin_int8(&s->rows, e->company_id);
        if (!e->is_bot && rollup_add(&s->rollup, b, i) < 0)
            st = store_oom(s);
        else
            st = copy_send(s, false);
    }
    return started ? copy_end_binary(s, st) : st;
}

/* Ends a binary COPY whose rows a rollup writer wrote (returning `rc`). */
static enum store_status copy_written(struct store *s, int rc)
{
    if (rc == -ENOMEM)
        return copy_end(s, store_oom(s));
    return copy_end_binary(s, rc < 0 ? s->status : STORE_OK);
}

/* The write's rollup deltas, by COPY into their temporary tables (only if
 * there are any); breakdown values are batch `b`'s. */
static enum store_status write_deltas(struct store *s, const struct batch *b)
{
    enum store_status st;

    strbuf_reset(&s->rows);
    if (s->rollup.hourly.n == 0)
        return STORE_OK;
    if ((st = copy_begin_binary(s, "COPY pg_temp.arv_measures (" ROLLUP_MEASURE_ROW_COLUMNS
                                   ") FROM STDIN (FORMAT binary)")) != STORE_OK ||
        (st = copy_written(s, rollup_write_measures(&s->rollup, &s->rows, drain_rows, s))) !=
            STORE_OK)
        return st;
    if ((st = copy_begin_binary(s, "COPY pg_temp.arv_breakdown (" ROLLUP_BREAKDOWN_ROW_COLUMNS
                                   ") FROM STDIN (FORMAT binary)")) != STORE_OK)
        return st;
    return copy_written(s, rollup_write_breakdown(&s->rollup, b, &s->rows, drain_rows, s));
}

/* What the write did, from the entries' marks. */
static void count_entries(const struct batch *b, size_t first, size_t n, struct store_counts *c)
{
    for (size_t i = first; i < first + n; i++) {
        const struct batch_entry *e = &b->entries[i];
        if (e->kind == BATCH_EVENT) {
            c->events++;
            c->unknown += !e->ar_content_id;
            c->inserted += e->counted;
            c->bots += e->counted && e->is_bot;
        } else if (e->kind == BATCH_DEAD) {
            if (strcmp(e->reason, BATCH_REASON_INVALID) == 0)
                c->invalid++;
            else
                c->other_dead++;
        }
    }
}

/* Microseconds since *t, which moves to now. */
static long lap_us(uint64_t *t)
{
    uint64_t now = timeutil_mono_us();
    long d = (long)(now - *t);

    *t = now;
    return d;
}

/* Ends a failed call: rolls back what is open (closing the connection after
 * a connection failure); or marks a successful one. Returns `st`. */
static enum store_status store_done(struct store *s, enum store_status st)
{
    if (st != STORE_OK) {
        store_rollback(s);
        if (st == STORE_CONN)
            store_disconnect(s);
    } else {
        s->status = STORE_OK;
        s->sqlstate[0] = '\0';
    }
    return st;
}

enum store_status store_write(struct store *s, struct batch *b, size_t first, size_t n,
                              struct store_counts *counts)
{
    enum store_status st;
    uint64_t t = timeutil_mono_us();

    if (!s->conn)
        return s->status = STORE_CONN;
    if ((st = write_ids(s, b, first, n, counts)) != STORE_OK)
        return store_done(s, st);
    counts->ids_us += lap_us(&t);
    if ((st = write_raw(s, b, first, n)) != STORE_OK)
        return store_done(s, st);
    counts->raw_us += lap_us(&t);
    count_entries(b, first, n, counts);
    return store_done(s, STORE_OK);
}

/* Appends the keys `idx` of `keys` as rows (i, c, a, d, m): key index,
 * company, content, day (days since the epoch) and dimension. Numbers and
 * dimension names only, so literals are safe. */
static void cap_keys_sql(struct strbuf *sql, const struct rollup_bkey *keys, const uint32_t *idx,
                         size_t n)
{
    strbuf_puts(sql, "(VALUES ");
    for (size_t j = 0; j < n; j++) {
        const struct rollup_bkey *e = &keys[idx[j]];
        strbuf_printf(
            sql, "%s(%" PRIu32 ", %" PRId64 "::bigint, %" PRId64 "::bigint, %" PRId64 ", '%s')",
            j ? ", " : "", idx[j], e->company_id, e->content_id, e->period,
            batch_dim_names[e->dim]);
    }
    strbuf_puts(sql, ") AS k (i, c, a, d, m)");
}

/* The join of those keys to their stored breakdown rows. */
#define CAP_ROWS_SQL                                                                               \
    " analytics.rollup_breakdown_daily r WHERE r.company_id = k.c AND r.ar_content_id = k.a"       \
    " AND r.day = DATE '1970-01-01' + k.d AND r.dimension = k.m"

/* Runs the cap's query in s->sql; -ENOMEM, or -EIO with the store's status set. */
static int cap_query(struct store *s, PGresult **res)
{
    if (s->sql.oom) {
        store_oom(s);
        return -ENOMEM;
    }
    return run(s, s->sql.data, res) == STORE_OK ? 0 : -EIO;
}

/* rollup_cap_source.count: the distinct values stored per key. */
static int cap_count(void *arg, struct rollup_bkey *keys, const uint32_t *idx, size_t n)
{
    struct store *s = arg;
    PGresult *res = NULL;
    int rc;

    strbuf_reset(&s->sql);
    /* (other), a client's own included, is not one of the values kept. */
    strbuf_puts(&s->sql, "SELECT k.i, (SELECT count(DISTINCT r.value) FROM" CAP_ROWS_SQL
                         " AND r.value <> '" ROLLUP_OTHER_TEXT "') FROM ");
    cap_keys_sql(&s->sql, keys, idx, n);
    if ((rc = cap_query(s, &res)) < 0)
        return rc;
    for (int row = 0; row < PQntuples(res); row++)
        keys[strtoul(PQgetvalue(res, row, 0), NULL, 10)].upper =
            (uint32_t)strtoul(PQgetvalue(res, row, 1), NULL, 10);
    PQclear(res);
    return 0;
}

/* rollup_cap_source.values: every value stored per key. */
static int cap_values(void *arg, const struct rollup_bkey *keys, const uint32_t *idx, size_t n,
                      rollup_mark_fn mark, void *mark_arg)
{
    struct store *s = arg;
    PGresult *res = NULL;
    int rc;

    strbuf_reset(&s->sql);
    strbuf_puts(&s->sql, "SELECT DISTINCT k.i, r.value FROM ");
    cap_keys_sql(&s->sql, keys, idx, n);
    strbuf_puts(&s->sql, " JOIN LATERAL (SELECT r.value FROM" CAP_ROWS_SQL ") r ON true");
    if ((rc = cap_query(s, &res)) < 0)
        return rc;
    for (int row = 0; row < PQntuples(res); row++)
        mark(mark_arg, (uint32_t)strtoul(PQgetvalue(res, row, 0), NULL, 10),
             PQgetvalue(res, row, 1), (size_t)PQgetlength(res, row, 1));
    PQclear(res);
    return 0;
}

enum store_status store_commit(struct store *s, const struct batch *b, struct store_counts *counts)
{
    PGresult *res = NULL;
    enum store_status st;
    uint64_t t = timeutil_mono_us();

    if (!s->conn)
        return s->status = STORE_CONN;
    if (!store_in_write(s))
        return STORE_OK;
    const struct rollup_cap_source cap = {.count = cap_count, .values = cap_values, .arg = s};
    int rc = rollup_cap_breakdown(&s->rollup, b, s->breakdown_max_values, &cap);
    if (rc < 0)
        return store_done(s, rc == -ENOMEM ? store_oom(s) : s->status);
    if ((st = write_deltas(s, b)) != STORE_OK)
        return store_done(s, st);
    counts->deltas_us += lap_us(&t);

    /* The rollups and dead letters in one statement. */
    strbuf_reset(&s->sql);
    store_build_merge_sql(&s->sql);
    if (s->sql.oom)
        return store_done(s, store_oom(s));
    if ((st = run(s, s->sql.data, &res)) != STORE_OK)
        return store_done(s, st);
    if (PQntuples(res) != 1 || PQnfields(res) != 1) {
        PQclear(res);
        set_errstr(s, "unexpected answer to the merge statement");
        return store_done(s, s->status = STORE_RETRY);
    }
    counts->dead_letters += result_long(res, 0);
    PQclear(res);
    counts->merge_us += lap_us(&t);

    /* COMMIT, timed apart since it is the WAL flush. */
    res = exec_watched(s, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        st = store_fail(s, res);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        /* A transaction that failed answers COMMIT with ROLLBACK. */
        set_errstr(s, "the batch transaction was rolled back at COMMIT");
        st = s->status = STORE_RETRY;
    }
    PQclear(res);
    counts->commit_us += lap_us(&t);
    return store_done(s, st);
}

void store_abort(struct store *s)
{
    store_rollback(s);
}

enum store_status store_flush(struct store *s, struct batch *b, size_t first, size_t n,
                              struct store_counts *counts)
{
    enum store_status st;

    memset(counts, 0, sizeof(*counts));
    if ((st = store_write(s, b, first, n, counts)) != STORE_OK)
        return st;
    return store_commit(s, b, counts);
}
