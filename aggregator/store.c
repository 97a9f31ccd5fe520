/* The aggregator's PostgreSQL writer: blocking libpq on the worker thread, one
 * transaction per batch (COPY into staging, one data-modifying statement, COMMIT). */
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "rollup_sql.h"
#include "locks.h"
#include "log.h"
#include "timeutil.h"

#define STORE_COPY_PIECE (256 * 1024) /* bytes per PQputCopyData */

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

/* The watermark upsert; `consumer_literal` is already quoted. */
static void append_watermark_sql(struct strbuf *out, const char *consumer_literal,
                                 int64_t watermark_ms)
{
    strbuf_printf(out,
                  "INSERT INTO analytics.ingest_watermarks (consumer, complete_until, updated_at)"
                  " VALUES (%s, to_timestamp(%" PRId64 " / 1000.0), now())"
                  " ON CONFLICT (consumer) DO UPDATE SET complete_until = EXCLUDED.complete_until,"
                  " updated_at = EXCLUDED.updated_at",
                  consumer_literal, watermark_ms);
}

/* The measures every per-content and per-company rollup shares, as the SET list
 * of its upsert (the row alias is r). */
#define ROLLUP_MEASURES_UPDATE                                                                     \
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

void store_build_lock_sql(struct strbuf *out)
{
    /* Shared per UTC day the batch's events fall on, ascending so that two
     * lockers never wait on each other in opposite orders; `arvctl rollups
     * rebuild` takes the same keys exclusively. Dead letters have no day. */
    strbuf_printf(out,
                  "SELECT count(pg_advisory_xact_lock_shared(%d, d)) FROM (SELECT DISTINCT"
                  " ((received_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01') AS d"
                  " FROM pg_temp.arv_staging WHERE reason IS NULL ORDER BY 1) days",
                  ARV_LOCK_ROLLUP_DAY);
}

void store_build_flush_sql(struct strbuf *out, const char *by_id, const char *by_uid,
                           const char *consumer_literal, int64_t watermark_ms)
{
    /* Content is named by id, or only by unique id (then ar_content_id is NULL);
     * the registry is read through the worker's content cache, whose answers
     * for this batch's keys are the row sources by_id and by_uid.
     * An event is new only if its (company_id, event_id) is new to event_ids;
     * raw rows and rollups take only those, so redelivery never counts twice.
     * The new rows are aggregated once per (hour, content) in ch; the daily
     * and per-company rollups sum ch's rows instead of rescanning new_rows. */
    strbuf_printf(
        out,
        "WITH ev AS ("
        " SELECT s.stream, s.entry_id, s.payload, s.event_id, s.session_id, s.user_agent,"
        " s.device_type, s.browser, s.os, s.ip_address, s.country, s.city, s.duration_seconds,"
        " s.tracking_quality, coalesce(s.video_played, false) AS video_played, s.occurred_at,"
        " s.received_at, coalesce(s.is_bot, false) AS is_bot,"
        " coalesce(c1.id, c2.id) AS content_id,"
        " coalesce(c1.project_id, c2.project_id) AS project_id,"
        " coalesce(c1.company_id, c2.company_id) AS company_id"
        " FROM pg_temp.arv_staging s"
        " LEFT JOIN %s AS c1 (id, project_id, company_id) ON c1.id = s.ar_content_id"
        " LEFT JOIN %s AS c2 (unique_id, id, project_id, company_id)"
        " ON s.ar_content_id IS NULL AND c2.unique_id = s.content_uid"
        " WHERE s.reason IS NULL),"
        " dead AS ("
        " INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)"
        " SELECT stream, entry_id, reason, detail, payload FROM pg_temp.arv_staging"
        " WHERE reason IS NOT NULL"
        " UNION ALL SELECT stream, entry_id, '" BATCH_REASON_UNKNOWN "', NULL, payload FROM ev"
        " WHERE content_id IS NULL"
        " ON CONFLICT (stream, entry_id) DO NOTHING RETURNING 1),"
        " known AS ("
        " SELECT DISTINCT ON (company_id, event_id) * FROM ev WHERE content_id IS NOT NULL"
        " ORDER BY company_id, event_id, received_at, entry_id),"
        " fresh AS ("
        " INSERT INTO analytics.event_ids (company_id, event_id, received_at)"
        " SELECT company_id, event_id, received_at FROM known ORDER BY company_id, event_id"
        " ON CONFLICT DO NOTHING RETURNING company_id, event_id),"
        " new_all AS ("
        " SELECT k.* FROM known k"
        " JOIN fresh f ON f.company_id = k.company_id AND f.event_id = k.event_id),"
        " raw AS ("
        " INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id,"
        " company_id, session_id, user_agent, device_type, browser, os, ip_address, country,"
        " city, duration_seconds, tracking_quality, video_played, created_at, occurred_at,"
        " received_at, is_bot)"
        " SELECT event_id, content_id, project_id, company_id, session_id, user_agent,"
        " device_type, browser, os, ip_address, country, city, duration_seconds,"
        " tracking_quality, video_played, received_at, occurred_at, received_at, is_bot"
        " FROM new_all),"
        /* Bots are stored, marked, and never counted. */
        " new_rows AS ("
        " SELECT *, hll_hash_bytea(uuid_send(session_id)) AS session_hash FROM new_all"
        " WHERE NOT is_bot)," ROLLUP_SQL_HOURLY_CTE " r_bd AS ("
        " INSERT INTO analytics.rollup_breakdown_daily AS r (day, company_id, project_id,"
        " ar_content_id, dimension, value, views, sessions)" ROLLUP_SQL_BREAKDOWN_SELECT
        " ORDER BY 2, 4, 1, 5, 6"
        " ON CONFLICT (company_id, ar_content_id, day, dimension, value) DO UPDATE SET"
        " views = r.views + EXCLUDED.views,"
        " sessions = hll_union(r.sessions, EXCLUDED.sessions)),"
        " r_ch AS ("
        " INSERT INTO analytics.rollup_content_hourly AS r (hour, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT hour, company_id, project_id, content_id, " ROLLUP_MEASURES_COLUMNS
        " FROM ch ORDER BY company_id, content_id, hour"
        " ON CONFLICT (company_id, ar_content_id, hour) DO UPDATE SET" ROLLUP_MEASURES_UPDATE "),"
        " r_cd AS ("
        " INSERT INTO analytics.rollup_content_daily AS r (day, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (hour AT TIME ZONE 'UTC')::date, company_id, min(project_id), "
        "content_id, " ROLLUP_MEASURES_SUMS
        " FROM ch GROUP BY 1, company_id, content_id ORDER BY 2, 4, 1"
        " ON CONFLICT (company_id, ar_content_id, day) DO UPDATE SET" ROLLUP_MEASURES_UPDATE "),"
        " r_kh AS ("
        " INSERT INTO analytics.rollup_company_hourly AS r (hour, "
        "company_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT hour, company_id, " ROLLUP_MEASURES_SUMS
        " FROM ch GROUP BY hour, company_id ORDER BY 2, 1"
        " ON CONFLICT (company_id, hour) DO UPDATE SET" ROLLUP_MEASURES_UPDATE "),"
        " r_kd AS ("
        " INSERT INTO analytics.rollup_company_daily AS r (day, "
        "company_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (hour AT TIME ZONE 'UTC')::date, company_id, " ROLLUP_MEASURES_SUMS
        " FROM ch GROUP BY 1, company_id ORDER BY 2, 1"
        " ON CONFLICT (company_id, day) DO UPDATE SET" ROLLUP_MEASURES_UPDATE ")",
        by_id, by_uid);
    if (watermark_ms > 0) {
        strbuf_puts(out, ", wm AS (");
        append_watermark_sql(out, consumer_literal, watermark_ms);
        strbuf_putc(out, ')');
    }
    strbuf_puts(out, " SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM new_all),"
                     " (SELECT count(*) FROM ev WHERE content_id IS NULL),"
                     " (SELECT count(*) FROM pg_temp.arv_staging"
                     " WHERE reason = '" BATCH_REASON_INVALID "'),"
                     " (SELECT count(*) FROM pg_temp.arv_staging"
                     " WHERE reason IS NOT NULL AND reason <> '" BATCH_REASON_INVALID "'),"
                     " (SELECT count(*) FROM dead),"
                     " (SELECT count(*) FROM new_all WHERE is_bot)");
}

int store_init(struct store *s, const char *conninfo, const char *relation, const char *consumer)
{
    memset(s, 0, sizeof(*s));
    strbuf_init(&s->sql);
    strbuf_init(&s->by_id);
    strbuf_init(&s->by_uid);
    s->conninfo = strdup(conninfo);
    s->relation = strdup(relation);
    s->consumer = strdup(consumer);
    if (!s->conninfo || !s->relation || !s->consumer) {
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
    if (s->consumer_literal)
        PQfreemem(s->consumer_literal);
    s->consumer_literal = NULL;
}

void store_deinit(struct store *s)
{
    store_disconnect(s);
    free(s->conninfo);
    free(s->relation);
    free(s->consumer);
    strbuf_deinit(&s->sql);
    strbuf_deinit(&s->by_id);
    strbuf_deinit(&s->by_uid);
    memset(s, 0, sizeof(*s));
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

    if (!msg || !*msg)
        msg = s->conn ? PQerrorMessage(s->conn) : "not connected";
    snprintf(s->sqlstate, sizeof(s->sqlstate), "%s", state ? state : "");
    set_errstr(s, msg);
    s->status = store_classify(state);
    if (s->conn && PQstatus(s->conn) == CONNECTION_BAD)
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
    res = PQexec(s->conn, "ROLLBACK");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        store_disconnect(s);
    PQclear(res);
}

/* Runs `sql` (one or more statements) outside a transaction. */
static enum store_status store_exec(struct store *s, const char *sql)
{
    PGresult *res = PQexec(s->conn, sql);
    enum store_status st = STORE_OK;
    ExecStatusType rs = PQresultStatus(res);

    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK)
        st = store_fail(s, res);
    PQclear(res);
    if (st != STORE_OK) {
        store_rollback(s);
        if (st == STORE_CONN)
            store_disconnect(s);
    }
    s->status = st;
    return st;
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
    /* Defaults first: a URL that sets any of these wins (expand_dbname). */
    static const char *const keys[] = {
        "connect_timeout",     "application_name", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "dbname",     NULL};
    const char *values[] = {"5", "arv-aggregator", "1", "30", "10", "3", s->conninfo, NULL};
    enum store_status st;

    store_disconnect(s);
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
    s->consumer_literal = PQescapeLiteral(s->conn, s->consumer, strlen(s->consumer));
    if (!s->consumer_literal) {
        set_errstr(s, PQerrorMessage(s->conn));
        store_disconnect(s);
        return s->status = STORE_CONN;
    }
    strbuf_reset(&s->sql);
    strbuf_puts(&s->sql, "SET client_min_messages = warning; SET client_encoding = 'UTF8';"
                         " SET statement_timeout = '60s'; SET TIME ZONE 'UTC';"
                         " SET standard_conforming_strings = on;"
                         " SET work_mem = '64MB'; ");
    strbuf_puts(&s->sql, batch_staging_ddl);
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

enum store_status store_heartbeat(struct store *s, int64_t watermark_ms)
{
    if (!s->conn)
        return s->status = STORE_CONN;
    strbuf_reset(&s->sql);
    append_watermark_sql(&s->sql, s->consumer_literal, watermark_ms);
    return store_exec(s, s->sql.data);
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
    res = content_cache_refresh(cc, s->conn, s->relation, timeutil_mono_ms(), &oom);
    if (res) {
        st = store_fail(s, res);
        PQclear(res);
        if (st == STORE_CONN)
            store_disconnect(s);
    } else if (oom) {
        set_errstr(s, "out of memory");
        st = STORE_RETRY;
    }
    if (st != STORE_OK)
        return s->status = st;
    /* Once per batch: store_flush() may run per entry after a rejection. */
    strbuf_reset(&s->by_id);
    strbuf_reset(&s->by_uid);
    content_cache_write_sql(cc, &s->by_id, &s->by_uid);
    if (s->by_id.oom || s->by_uid.oom) {
        set_errstr(s, "out of memory");
        st = STORE_RETRY;
    }
    return s->status = st;
}

enum store_status store_flush(struct store *s, const char *rows, size_t len, int64_t watermark_ms,
                              struct store_counts *counts)
{
    PGresult *res = NULL;
    enum store_status st = STORE_OK;
    bool have_counts = false;
    uint64_t t0 = timeutil_mono_us(), t1;

    memset(counts, 0, sizeof(*counts));
    if (!s->conn)
        return s->status = STORE_CONN;

    /* Round trip 1: open the transaction and start the COPY. */
    strbuf_reset(&s->sql);
    strbuf_puts(&s->sql, "BEGIN; ");
    strbuf_puts(&s->sql, batch_staging_copy);
    res = PQexec(s->conn, s->sql.data);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        st = store_fail(s, res);
        goto out;
    }
    PQclear(res);
    res = NULL;

    /* Round trip 2: the rows, in pieces: libpq copies what it is given into
     * its output buffer (and keeps that buffer), so one call with a whole
     * batch would hold a second copy of it for the connection's life. */
    for (size_t off = 0; off < len;) {
        size_t n = len - off < STORE_COPY_PIECE ? len - off : STORE_COPY_PIECE;
        if (PQputCopyData(s->conn, rows + off, (int)n) != 1) {
            st = store_fail(s, NULL);
            goto out;
        }
        off += n;
    }
    if (PQputCopyEnd(s->conn, NULL) != 1) {
        st = store_fail(s, NULL);
        goto out;
    }
    while ((res = PQgetResult(s->conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && st == STORE_OK)
            st = store_fail(s, res);
        PQclear(res);
    }
    if (st != STORE_OK)
        goto out;

    /* Round trip 3: the day locks and everything else. */
    t1 = timeutil_mono_us();
    counts->copy_us = (long)(t1 - t0);
    strbuf_reset(&s->sql);
    store_build_lock_sql(&s->sql);
    strbuf_puts(&s->sql, "; ");
    store_build_flush_sql(&s->sql, s->by_id.data, s->by_uid.data, s->consumer_literal,
                          watermark_ms);
    if (s->sql.oom) {
        set_errstr(s, "out of memory");
        st = s->status = STORE_RETRY;
        goto out;
    }
    if (!PQsendQuery(s->conn, s->sql.data)) {
        st = store_fail(s, NULL);
        goto out;
    }
    while ((res = PQgetResult(s->conn)) != NULL) {
        ExecStatusType rs = PQresultStatus(res);
        if (rs == PGRES_TUPLES_OK && !have_counts && PQntuples(res) == 1 && PQnfields(res) == 7) {
            counts->events = result_long(res, 0);
            counts->inserted = result_long(res, 1);
            counts->unknown = result_long(res, 2);
            counts->invalid = result_long(res, 3);
            counts->other_dead = result_long(res, 4);
            counts->dead_letters = result_long(res, 5);
            counts->bots = result_long(res, 6);
            have_counts = true;
        } else if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK && st == STORE_OK) {
            st = store_fail(s, res);
        }
        PQclear(res);
    }
    res = NULL;
    counts->statement_us = (long)(timeutil_mono_us() - t1);
    if (st == STORE_OK && (!have_counts || PQtransactionStatus(s->conn) != PQTRANS_INTRANS)) {
        set_errstr(s, "unexpected answer to the batch statement");
        st = s->status = STORE_RETRY;
    }
    if (st != STORE_OK)
        goto out;

    /* Round trip 4: COMMIT, timed apart since it is the WAL flush. */
    t1 = timeutil_mono_us();
    res = PQexec(s->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        st = store_fail(s, res);
    } else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        /* A transaction that failed answers COMMIT with ROLLBACK. */
        set_errstr(s, "the batch transaction was rolled back at COMMIT");
        st = s->status = STORE_RETRY;
    }
    counts->commit_us = (long)(timeutil_mono_us() - t1);
out:
    PQclear(res);
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
