/* Partition upkeep and retention on its own thread and blocking connection:
 * day partitions ahead, old raw partitions dropped, old hourly rollups and
 * (once a day, in slices) dedupe ids deleted; one aggregator at a time
 * (advisory lock). */
#include "retention.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libpq-fe.h>

#include "locks.h"
#include "log.h"
#include "metrics.h"
#include "pg_pool.h"
#include "timeutil.h"

#define PARTITION_PREFIX "ar_view_sessions_p"
#define RETRY_S          60 /* after a failed run, at most this long to the next */

struct retention {
    struct retention_config cfg; /* copied; database_url points to url */
    char *url;                   /* the database URL, owned */
    PGconn *conn;                /* NULL while disconnected; thread only */
    struct metric *dropped_partitions;
    struct metric *dropped_hourly;
    struct metric *dropped_event_ids;
    struct metric *dropped_dead_letters;
    pthread_t thread;
    bool started; /* thread created */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;        /* under lock */
    int call_fd;      /* under lock: conn's socket while a statement runs, else -1 */
    char sqlstate[6]; /* of the last statement that failed ("" if none said) */
};

bool retention_partition_day(const char *name, int64_t *day)
{
    size_t plen = strlen(PARTITION_PREFIX);
    char date[11];
    int64_t d;

    if (!name || strncmp(name, PARTITION_PREFIX, plen) != 0 || strlen(name) != plen + 8)
        return false;
    name += plen;
    snprintf(date, sizeof(date), "%.4s-%.2s-%.2s", name, name + 4, name + 6);
    /* Partitions start at the epoch; anything before is not one of ours. */
    if (!timeutil_parse_date(date, &d) || d < 0)
        return false;
    *day = d;
    return true;
}

bool retention_should_drop(const char *name, int64_t today, long keep_days, int64_t *day)
{
    return retention_partition_day(name, day) && *day < today - keep_days;
}

struct retention *retention_new(const struct retention_config *cfg, struct metrics *m)
{
    struct retention *r = calloc(1, sizeof(*r));
    struct metric_family *f;

    if (!r)
        return NULL;
    r->cfg = *cfg;
    r->call_fd = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    r->url = strdup(cfg->database_url);
    r->cfg.database_url = r->url;
    f = metrics_counter(m, "aggregator_retention_dropped_total",
                        "Removed by retention: raw day partitions, hourly rollup rows, dedupe ids",
                        "what");
    if (f) {
        r->dropped_partitions = metric_family_child(f, (const char *const[]){"raw_partitions"});
        r->dropped_hourly = metric_family_child(f, (const char *const[]){"hourly_rollup_rows"});
        r->dropped_event_ids = metric_family_child(f, (const char *const[]){"event_ids"});
        r->dropped_dead_letters = metric_family_child(f, (const char *const[]){"dead_letters"});
    }
    if (!r->url || !r->dropped_partitions || !r->dropped_hourly || !r->dropped_event_ids ||
        !r->dropped_dead_letters) {
        retention_free(r);
        return NULL;
    }
    return r;
}

static void retention_disconnect(struct retention *r)
{
    if (r->conn)
        PQfinish(r->conn);
    r->conn = NULL;
}

static bool retention_stopping(struct retention *r)
{
    pthread_mutex_lock(&r->lock);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Logs a failed statement (res may be NULL) as `what`. */
static void retention_report(struct retention *r, const char *what, const PGresult *res)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[256];
    size_t n = 0;

    if (!msg || !*msg)
        msg = r->conn ? PQerrorMessage(r->conn) : "not connected";
    while (msg[n] && msg[n] != '\n' && n + 1 < sizeof(line)) {
        line[n] = msg[n];
        n++;
    }
    line[n] = '\0';
    log_warn("retention_failed", LF_STR("step", what), LF_STR("error", line));
}

/* Runs `sql`; returns its result on success (caller clears), else NULL after
 * logging it. */
static PGresult *retention_exec(struct retention *r, const char *sql, const char *what)
{
    PGresult *res;
    ExecStatusType rs;

    if (retention_stopping(r) || !r->conn)
        return NULL; /* stopping: no new statement; or the connection was lost */
    pthread_mutex_lock(&r->lock);
    r->call_fd = PQsocket(r->conn);
    pthread_mutex_unlock(&r->lock);
    res = PQexec(r->conn, sql);
    pthread_mutex_lock(&r->lock);
    r->call_fd = -1;
    pthread_mutex_unlock(&r->lock);
    rs = PQresultStatus(res);

    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK)
        return res;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", state ? state : "");
    retention_report(r, what, res);
    PQclear(res);
    if (PQstatus(r->conn) != CONNECTION_OK)
        retention_disconnect(r);
    return NULL;
}

static int retention_connect(struct retention *r)
{
    const char *keys[PG_CONN_PARAMS_MAX], *values[PG_CONN_PARAMS_MAX];
    PGresult *res;

    pg_conn_params("arv-aggregator-retention", NULL, r->cfg.database_url, keys, values);
    r->conn = PQconnectdbParams(keys, values, 1);
    if (!r->conn || PQstatus(r->conn) != CONNECTION_OK) {
        retention_report(r, "connect", NULL);
        retention_disconnect(r);
        return -ECONNREFUSED;
    }
    /* No lock wait longer than 5 s (a partition's DROP: 1 s, see
     * retention_steps): the next run retries. A statement whose client went
     * away (retention_stop) is ended within 1 s (PostgreSQL 14 and later). */
    res = retention_exec(r,
                         "SET client_min_messages = warning; SET TIME ZONE 'UTC';"
                         " SET statement_timeout = '600s'; SET lock_timeout = '5s';"
                         " SET default_transaction_isolation = 'read committed';"
                         " SELECT set_config('client_connection_check_interval', '1000', false)"
                         " WHERE current_setting('server_version_num')::int >= 140000",
                         "session");
    if (!res)
        return -EIO;
    PQclear(res);
    return 0;
}

/* Rows a DELETE removed, from its command tag. */
static long affected(PGresult *res)
{
    return strtol(PQcmdTuples(res), NULL, 10);
}

/* The cut-off `day` (days since the epoch) as SQL: that UTC midnight. */
#define CUTOFF_SQL "(DATE '1970-01-01' + %" PRId64 ")::timestamp AT TIME ZONE 'UTC'"

/* Deletes the dedupe ids received before day `cutoff` in one pass a day,
 * shared by every aggregator: the table is read in its physical order,
 * `slice_pages` pages per DELETE (a TID range scan, its own statement and
 * transaction, which also records the pass's next page in
 * analytics.retention_passes), up to its size when the pass began. A failed
 * or interrupted pass resumes at the slice that failed; a pass done waits for
 * the next cut-off day. Ids written later below that day (an old backlog) go
 * in the next day's pass. On Citus, where the table's pages are its shards',
 * one DELETE by received_at runs instead, on every shard. Adds the ids
 * deleted to *ids and the statements to *slices. Returns 0 or -EIO. */
static int delete_event_ids(struct retention *r, int64_t cutoff, long *ids, long *slices)
{
    char sql[640];
    PGresult *res;
    long long next, end;
    bool citus;

    /* Begins a pass when the cut-off moved (or there was none). */
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO analytics.retention_passes AS p (relation, cutoff, next_page, end_page)"
        " SELECT 'event_ids', " CUTOFF_SQL ", 0,"
        " pg_relation_size('analytics.event_ids') / current_setting('block_size')::bigint"
        " ON CONFLICT (relation) DO UPDATE SET cutoff = EXCLUDED.cutoff, next_page = 0,"
        " end_page = EXCLUDED.end_page WHERE p.cutoff <> EXCLUDED.cutoff;"
        " SELECT next_page, end_page, EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"
        " FROM analytics.retention_passes WHERE relation = 'event_ids'",
        cutoff);
    if (!(res = retention_exec(r, sql, "event_ids_pass")))
        return -EIO;
    next = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    end = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    citus = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
    PQclear(res);
    if (citus) {
        snprintf(sql, sizeof(sql),
                 "DELETE FROM analytics.event_ids WHERE received_at < " CUTOFF_SQL, cutoff);
        if (!(res = retention_exec(r, sql, "delete_event_ids")))
            return -EIO;
        *ids += affected(res);
        ++*slices;
        PQclear(res);
        return 0;
    }
    while (next < end) {
        long long upto = end - next > r->cfg.slice_pages ? next + r->cfg.slice_pages : end;
        snprintf(sql, sizeof(sql),
                 "WITH d AS (DELETE FROM analytics.event_ids"
                 " WHERE ctid >= '(%lld,0)'::tid AND ctid < '(%lld,0)'::tid"
                 " AND received_at < " CUTOFF_SQL " RETURNING 1),"
                 " p AS (UPDATE analytics.retention_passes SET next_page = %lld"
                 " WHERE relation = 'event_ids')"
                 " SELECT count(*) FROM d",
                 next, upto, cutoff, upto);
        if (!(res = retention_exec(r, sql, "delete_event_ids")))
            return -EIO;
        *ids += strtol(PQgetvalue(res, 0, 0), NULL, 10);
        ++*slices;
        PQclear(res);
        next = upto;
    }
    return 0;
}

/* Runs the DELETE `sql` again, each time its own bounded transaction, until
 * one deletes fewer than `full` rows (or the thread stops). Adds the rows, and
 * (when `slices` is given) the statements that deleted some. */
static int delete_in_slices(struct retention *r, const char *sql, const char *what, long full,
                            long *rows, long *slices)
{
    PGresult *res;

    while (!retention_stopping(r)) {
        if (!(res = retention_exec(r, sql, what)))
            return -EIO;
        long n = affected(res);
        PQclear(res);
        *rows += n;
        if (n > 0 && slices)
            ++*slices;
        if (n < full)
            return 0;
    }
    return 0;
}

/* Deletes `table`'s hourly rows before day `cutoff` (days since the epoch),
 * one UTC day per statement, oldest first: each a bounded transaction. A
 * single DELETE after ARV_HOURLY_RETENTION_DAYS was lowered by months could
 * outlast the session's statement_timeout, and be retried in vain at every
 * run. Adds the rows, and the statements that deleted some. */
static int delete_hourly(struct retention *r, const char *table, int64_t cutoff, long *rows,
                         long *slices)
{
    char sql[512];

    /* Each statement takes the oldest day left (the hour index's first
     * entry), up to the cut-off; one that deletes nothing ends it. */
    snprintf(sql, sizeof(sql),
             "DELETE FROM analytics.%s WHERE hour < least(" CUTOFF_SQL ","
             " (SELECT date_trunc('day', min(hour), 'UTC') + interval '1 day'"
             " FROM analytics.%s))",
             table, cutoff, table);
    return delete_in_slices(r, sql, table, 1, rows, slices);
}

/* Dead letters written before day `cutoff`, DEAD_LETTERS_SLICE rows per
 * statement, oldest first by id (ids rise with created_at): any number of
 * them (a client can write unknown_content ones at the collector's rate)
 * goes in bounded transactions. Adds the rows deleted. */
#define DEAD_LETTERS_SLICE 10000
static int delete_dead_letters(struct retention *r, int64_t cutoff, long *rows)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "DELETE FROM analytics.dead_letters WHERE id IN (SELECT id FROM"
             " analytics.dead_letters WHERE created_at < " CUTOFF_SQL " ORDER BY id LIMIT %d)",
             cutoff, DEAD_LETTERS_SLICE);
    return delete_in_slices(r, sql, "delete_dead_letters", DEAD_LETTERS_SLICE, rows, NULL);
}

/* The steps of one run, under the maintenance lock. Each runs whatever the
 * ones before it did: a partition that cannot be created or dropped now (its
 * lock not granted in time: a rebuild of its day, a long dump) must not keep
 * the hourly rows and the dedupe ids from going. Returns 0 if all went well. */
static int retention_steps(struct retention *r, int64_t today)
{
    char sql[512];
    PGresult *res = NULL;
    long parts_created = 0, parts_dropped = 0, hourly = 0, hourly_slices = 0, ids = 0, slices = 0,
         dead = 0;
    int rc = 0;

    snprintf(sql, sizeof(sql),
             "SELECT analytics.ensure_day_partitions(DATE '1970-01-01' + %" PRId64
             ", DATE '1970-01-01' + %" PRId64 ")",
             today - 1, today + RETENTION_DAYS_AHEAD);
    if ((res = retention_exec(r, sql, "create_partitions")))
        parts_created = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    else
        rc = -EIO;
    PQclear(res);

    res = retention_exec(r,
                         "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                         " WHERE i.inhparent = 'analytics.ar_view_sessions'::regclass ORDER BY 1",
                         "list_partitions");
    if (!res)
        rc = -EIO;
    for (int i = 0; res && i < PQntuples(res) && !retention_stopping(r); i++) {
        const char *name = PQgetvalue(res, i, 0);
        PGresult *drop;
        int64_t day;
        if (!retention_should_drop(name, today, r->cfg.raw_days, &day))
            continue;
        /* The name matched ar_view_sessions_pYYYYMMDD: safe to splice. The
         * DROP holds the day's lock exclusively, as `arvctl rollups rebuild`
         * does while it checks for the partition and recomputes the day from
         * it: a partition dropped in between would leave the day's rollups
         * deleted and recomputed from nothing. A day held (a rebuild, a batch
         * of its replayed events) is left to the next run; the others go now.
         * The DROP also needs the raw table exclusively, and every new batch
         * queues behind it while it waits for the batches in progress: it
         * waits at most 1 s, and after a wait that long the run drops no
         * more, so that batches queue once per run, not once per partition. */
        snprintf(sql, sizeof(sql),
                 "DO $$BEGIN PERFORM set_config('lock_timeout', '1s', true);"
                 " IF NOT pg_try_advisory_xact_lock(%d, %" PRId64 ") THEN"
                 " RAISE EXCEPTION 'its day is locked (a rebuild, a batch writing it)'"
                 " USING ERRCODE = 'object_in_use'; END IF;"
                 " DROP TABLE analytics.%s; END$$",
                 ARV_LOCK_ROLLUP_DAY, day, name);
        if (!(drop = retention_exec(r, sql, "drop_partition"))) {
            rc = -EIO; /* the next run tries again */
            if (strcmp(r->sqlstate, "55P03") == 0)
                break; /* lock_not_available: the raw table's */
            continue;
        }
        PQclear(drop);
        log_info("retention_partition_dropped", LF_STR("partition", name));
        metric_inc(r->dropped_partitions);
        parts_dropped++;
    }
    PQclear(res);

    /* Cut-offs at UTC midnight, as the oldest kept raw partition's start: by
     * default dedupe ids live exactly as long as the raw rows they guard;
     * ARV_DEDUPE_RETENTION_DAYS (>= 1: at least 24 h) can keep them shorter. */
    static const char *const hourly_tables[] = {"rollup_content_hourly", "rollup_company_hourly"};
    for (size_t i = 0; i < sizeof(hourly_tables) / sizeof(hourly_tables[0]); i++) {
        if (delete_hourly(r, hourly_tables[i], today - r->cfg.hourly_days, &hourly,
                          &hourly_slices) < 0)
            rc = -EIO;
    }
    metric_add(r->dropped_hourly, (double)hourly);
    res = NULL;
    if (delete_event_ids(r, today - r->cfg.dedupe_days, &ids, &slices) < 0)
        rc = -EIO;
    metric_add(r->dropped_event_ids, (double)ids);
    if (delete_dead_letters(r, today - r->cfg.dead_letter_days, &dead) < 0)
        rc = -EIO;
    metric_add(r->dropped_dead_letters, (double)dead);
    log_info("retention_run", LF_BOOL("ok", rc == 0), LF_INT("partitions_created", parts_created),
             LF_INT("partitions_dropped", parts_dropped), LF_INT("hourly_rows_deleted", hourly),
             LF_INT("hourly_slices", hourly_slices), LF_INT("event_ids_deleted", ids),
             LF_INT("event_ids_slices", slices), LF_INT("dead_letters_deleted", dead),
             LF_INT("raw_days", r->cfg.raw_days), LF_INT("dedupe_days", r->cfg.dedupe_days),
             LF_INT("hourly_days", r->cfg.hourly_days),
             LF_INT("dead_letter_days", r->cfg.dead_letter_days));
    return rc;
}

/* One run: connect if needed, take the maintenance lock or leave it to the
 * aggregator that holds it, do the steps, release. Returns 0 if all went well. */
static int retention_run(struct retention *r)
{
    char sql[128];
    PGresult *res = NULL;
    int rc;

    if (!r->conn && (rc = retention_connect(r)) < 0)
        return rc;
    snprintf(sql, sizeof(sql), "SELECT pg_try_advisory_lock(%d)", ARV_LOCK_MAINTENANCE);
    if (!(res = retention_exec(r, sql, "lock")))
        return -EIO;
    bool mine = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!mine) {
        log_info("retention_skipped", LF_STR("reason", "another aggregator holds the lock"));
        return 0;
    }
    rc = retention_steps(r, (int64_t)(time(NULL) / 86400));
    if (r->conn) {
        snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)", ARV_LOCK_MAINTENANCE);
        if ((res = retention_exec(r, sql, "unlock")))
            PQclear(res);
    }
    return rc;
}

static void *retention_main(void *arg)
{
    struct retention *r = arg;

    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        pthread_mutex_unlock(&r->lock);
        int rc = retention_run(r);
        long wait_s = rc < 0 && r->cfg.interval_s > RETRY_S ? RETRY_S : r->cfg.interval_s;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_s;
        pthread_mutex_lock(&r->lock);
        while (!r->stop) {
            if (pthread_cond_timedwait(&r->wake, &r->lock, &until) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    retention_disconnect(r);
    return NULL;
}

int retention_start(struct retention *r)
{
    int rc = pthread_create(&r->thread, NULL, retention_main, r);

    if (rc != 0)
        return -rc;
    r->started = true;
    return 0;
}

void retention_stop(struct retention *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    /* A run may be in a long statement (statement_timeout is 600 s): shut
     * its socket down, so that the process stops within its deadline. Never
     * PQcancel, which waits for the server: one that answers nothing (every
     * process of it stopped) would hold the stop for ever. The server ends
     * the statement once it sees the client gone (client_connection_check_interval). */
    if (r->call_fd >= 0)
        shutdown(r->call_fd, SHUT_RDWR);
    pthread_mutex_unlock(&r->lock);
}

void retention_free(struct retention *r)
{
    if (!r)
        return;
    retention_stop(r);
    if (r->started)
        pthread_join(r->thread, NULL);
    retention_disconnect(r);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    free(r->url);
    free(r);
}
