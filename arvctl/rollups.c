/* arvctl rollups rebuild: per UTC day, under the day's exclusive advisory lock
 * (batches hold it shared), delete the day's rollup rows and recompute them
 * from the raw rows, in one transaction. */
#include "rollups.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "cli.h"
#include "rollup_sql.h"
#include "locks.h"
#include "retention.h"
#include "timeutil.h"

#define ROLLUPS_MAX_DAYS 3660

static const char rollups_usage[] =
    "Usage: arvctl rollups rebuild --from YYYY-MM-DD --to YYYY-MM-DD\n"
    "\n"
    "rebuild  recomputes every rollup table (content and company, daily and hourly,\n"
    "         breakdowns) from the raw rows, one UTC day per transaction, the days\n"
    "         from..to inclusive. Safe while the aggregator runs: each day is locked\n"
    "         against batches writing it. A day whose raw partition was dropped by\n"
    "         retention is skipped (its daily rollups are all that is left), and so\n"
    "         is a day older than ARV_RAW_RETENTION_DAYS (its partition may have been\n"
    "         recreated for a few replayed events).\n"
    "         Prints one progress line per day on stderr.\n";

/* The day's bounds as timestamptz SQL expressions. */
#define DAY_LO "(DATE '1970-01-01' + %" PRId64 ")::timestamp AT TIME ZONE 'UTC'"
#define DAY_HI "(DATE '1970-01-01' + %" PRId64 " + 1)::timestamp AT TIME ZONE 'UTC'"

void rollups_build_delete_sql(struct strbuf *out, int64_t day)
{
    strbuf_printf(
        out,
        "DELETE FROM analytics.rollup_content_daily WHERE day = DATE '1970-01-01' + %" PRId64 ";"
        " DELETE FROM analytics.rollup_company_daily WHERE day = DATE '1970-01-01' + %" PRId64 ";"
        /* Every dimension named: the (dimension, day) index finds the day's
         * rows (its primary key starts with company_id). */
        " DELETE FROM analytics.rollup_breakdown_daily WHERE dimension IN ('device_type',"
        " 'browser', 'os', 'country', 'city', 'tracking_quality')"
        " AND day = DATE '1970-01-01' + %" PRId64 ";"
        " DELETE FROM analytics.rollup_content_hourly"
        " WHERE hour >= " DAY_LO " AND hour < " DAY_HI ";"
        " DELETE FROM analytics.rollup_company_hourly"
        " WHERE hour >= " DAY_LO " AND hour < " DAY_HI,
        day, day, day, day, day, day, day);
}

/* The breakdown rows of new_rows, capped at `max_values` values per day,
 * content and dimension (0: every value): the values with the most views
 * (over all projects) keep their rows, ties going to the lower value; the
 * rest, and a client's own (other), are summed into (other). */
static void breakdown_select(struct strbuf *out, long max_values)
{
    if (max_values <= 0) {
        strbuf_puts(out, ROLLUP_SQL_BREAKDOWN_SELECT);
        return;
    }
    strbuf_printf(
        out,
        " SELECT day, company_id, project_id, content_id, dimension, value, sum(views),"
        " hll_union_agg(sessions) FROM ("
        " SELECT day, company_id, project_id, content_id, dimension,"
        " CASE WHEN value <> '" ROLLUP_OTHER_TEXT "' AND dense_rank() OVER (PARTITION BY"
        " company_id, content_id, day, dimension ORDER BY value = '" ROLLUP_OTHER_TEXT "',"
        " total DESC, value) <= %ld"
        " THEN value ELSE '" ROLLUP_OTHER_TEXT "' END AS value, views, sessions"
        " FROM (SELECT b.*, sum(b.views) OVER (PARTITION BY b.company_id, b.content_id, b.day,"
        " b.dimension, b.value) AS total FROM (" ROLLUP_SQL_BREAKDOWN_SELECT ") b (day,"
        " company_id, project_id, content_id, dimension, value, views, sessions)) b) c"
        " GROUP BY day, company_id, project_id, content_id, dimension, value",
        max_values);
}

void rollups_build_rebuild_sql(struct strbuf *out, int64_t day, long max_values)
{
    /* The raw rows of the day in the shape of store.c's new_rows (received_at
     * is the raw created_at; bots left out as in a batch), then the same aggregates: ch per hour
     * and content, the other rollups summed from ch, breakdowns from the rows. */
    strbuf_printf(
        out,
        "WITH new_rows AS ("
        " SELECT ar_content_id AS content_id, project_id, company_id, session_id, device_type,"
        " browser, os, country, city, duration_seconds, tracking_quality, video_played,"
        " created_at AS received_at, hll_hash_bytea(uuid_send(session_id)) AS session_hash"
        " FROM analytics.ar_view_sessions"
        " WHERE created_at >= " DAY_LO " AND created_at < " DAY_HI
        " AND NOT is_bot)," ROLLUP_SQL_HOURLY_CTE " r_bd AS ("
        " INSERT INTO analytics.rollup_breakdown_daily (day, company_id, project_id,"
        " ar_content_id, dimension, value, views, sessions)",
        day, day);
    breakdown_select(out, max_values);
    strbuf_puts(
        out,
        "),"
        " r_ch AS ("
        " INSERT INTO analytics.rollup_content_hourly (hour, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT hour, company_id, project_id, content_id, " ROLLUP_MEASURES_COLUMNS " FROM ch),"
        " r_cd AS ("
        " INSERT INTO analytics.rollup_content_daily (day, company_id, project_id,"
        " ar_content_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (hour AT TIME ZONE 'UTC')::date, company_id, project_id, "
        "content_id, " ROLLUP_MEASURES_SUMS
        " FROM ch GROUP BY 1, company_id, project_id, content_id),"
        " r_kh AS ("
        " INSERT INTO analytics.rollup_company_hourly (hour, company_id, " ROLLUP_MEASURES_COLUMNS
        ")"
        " SELECT hour, company_id, " ROLLUP_MEASURES_SUMS " FROM ch GROUP BY hour, company_id),"
        " r_kd AS ("
        " INSERT INTO analytics.rollup_company_daily (day, company_id, " ROLLUP_MEASURES_COLUMNS ")"
        " SELECT (hour AT TIME ZONE 'UTC')::date, company_id, " ROLLUP_MEASURES_SUMS
        " FROM ch GROUP BY 1, company_id)"
        " SELECT count(*) FROM new_rows");
}

/* Rebuilds one day in one transaction. Returns true and sets *events, or
 * prints why not (the transaction is then rolled back). */
static bool rebuild_day(PGconn *conn, struct strbuf *sql, int64_t day, const char *date,
                        long max_values, bool *skipped, long long *events)
{
    PGresult *res = NULL;
    bool ok = false;

    *skipped = false;
    strbuf_reset(sql);
    /* READ COMMITTED whatever the database's default: each statement after
     * the lock must see what the writers it waited for committed. */
    strbuf_printf(sql,
                  "BEGIN ISOLATION LEVEL READ COMMITTED;"
                  " SELECT pg_try_advisory_xact_lock(%d, %" PRId64 ")",
                  ARV_LOCK_ROLLUP_DAY, day);
    res = PQexec(conn, sql->data);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
        fprintf(stderr,
                "waiting for %s: the day is locked (aggregators writing it, a rebuild or"
                " retention)\n",
                date);
    }
    PQclear(res);
    /* The day's partition, attached (a detached one's rows are not the
     * day's: its rollups would be rebuilt from nothing). A separate
     * statement after the lock: it reads raw rows with a snapshot taken once
     * every batch writing the day has committed. */
    strbuf_reset(sql);
    strbuf_printf(sql,
                  "SELECT pg_advisory_xact_lock(%d, %" PRId64 ");"
                  " SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent ="
                  " 'analytics.ar_view_sessions'::regclass AND inhrelid = to_regclass("
                  "'analytics.ar_view_sessions_p' || to_char(DATE '%s', 'YYYYMMDD')))",
                  ARV_LOCK_ROLLUP_DAY, day, date);
    res = PQexec(conn, sql->data);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cli_report("cannot lock the day", res, conn);
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        *skipped = true;
        ok = cli_exec(conn, "ROLLBACK", "rollback");
        goto out;
    }
    PQclear(res);
    strbuf_reset(sql);
    rollups_build_delete_sql(sql, day);
    res = PQexec(conn, sql->data);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        cli_report("cannot delete the day's rollups", res, conn);
        goto out;
    }
    PQclear(res);
    strbuf_reset(sql);
    rollups_build_rebuild_sql(sql, day, max_values);
    res = PQexec(conn, sql->data);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cli_report("cannot recompute the day's rollups", res, conn);
        goto out;
    }
    *events = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    ok = cli_exec(conn, "COMMIT", "cannot commit");
out:
    PQclear(res);
    if (!ok && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    return ok;
}

static int rollups_rebuild(const char *database_url, const struct rollups_options *ro, int argc,
                           char **argv)
{
    const char *from = NULL, *to = NULL;
    const struct cli_option opts[] = {{"from", &from, NULL}, {"to", &to, NULL}};
    int64_t first, last;
    struct strbuf sql;
    PGconn *conn = NULL;
    long long total = 0;
    int64_t nskipped = 0;
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("rollups rebuild", argc, argv, 2, opts, 2, rollups_usage, &rc))
        return rc;
    if (!from || !to) {
        fprintf(stderr, "arvctl rollups rebuild: --from and --to are required\n");
        return CLI_EXIT_USAGE;
    }
    if (!timeutil_parse_date(from, &first) || !timeutil_parse_date(to, &last)) {
        fprintf(stderr, "arvctl rollups rebuild: dates must be YYYY-MM-DD (got '%s', '%s')\n", from,
                to);
        return CLI_EXIT_USAGE;
    }
    if (last < first || last - first >= ROLLUPS_MAX_DAYS) {
        fprintf(stderr,
                "arvctl rollups rebuild: --to must be on or after --from, at most %d days\n",
                ROLLUPS_MAX_DAYS);
        return CLI_EXIT_USAGE;
    }
    strbuf_init(&sql);
    /* A day without its raw partition is skipped as dropped by retention: a
     * database never migrated, without the parent table, must not pass for
     * one where every day was. */
    if (!(conn = cli_connect(database_url)) ||
        !cli_exec(conn, "SET TIME ZONE 'UTC'; SET work_mem = '64MB'",
                  "cannot set up the session") ||
        !cli_exec(conn, "SELECT FROM ONLY analytics.ar_view_sessions LIMIT 0",
                  "cannot read the raw rows"))
        goto out;
    /* Retention drops days before this one; an aggregator recreates such a
     * day's partition for an old event (a replayed dead letter), so its raw
     * rows may be a few of the day's: never recompute its rollups from them. */
    int64_t oldest = (int64_t)(time(NULL) / 86400) - ro->raw_retention_days;
    for (int64_t day = first; day <= last; day++) {
        char date[16], why[64] = "";
        long long events = 0;
        bool skipped = false;
        double t0 = timeutil_mono_s();
        timeutil_format_date(day, date, sizeof(date));
        if (day < oldest) {
            snprintf(why, sizeof(why), "older than ARV_RAW_RETENTION_DAYS (%ld)",
                     ro->raw_retention_days);
        } else if (!rebuild_day(conn, &sql, day, date, ro->breakdown_max_values, &skipped,
                                &events)) {
            fprintf(stderr, "arvctl rollups rebuild: %s failed; days before it are rebuilt\n",
                    date);
            goto out;
        } else if (skipped) {
            snprintf(why, sizeof(why), "no raw partition");
        }
        if (why[0]) {
            fprintf(stderr, "skipped %s (%" PRId64 "/%" PRId64 "): %s\n", date, day - first + 1,
                    last - first + 1, why);
            nskipped++;
            continue;
        }
        fprintf(stderr, "rebuilt %s (%" PRId64 "/%" PRId64 "): %lld events, %.1f s\n", date,
                day - first + 1, last - first + 1, events, timeutil_mono_s() - t0);
        total += events;
    }
    printf("rebuilt %" PRId64 " days from %s to %s (%" PRId64 " skipped): %lld events\n",
           last - first + 1 - nskipped, from, to, nskipped, total);
    rc = CLI_EXIT_OK;
out:
    strbuf_deinit(&sql);
    if (conn)
        PQfinish(conn);
    return rc;
}

int rollups_command(const char *database_url, const struct rollups_options *opts, int argc,
                    char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(rollups_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "rebuild") == 0)
        return rollups_rebuild(database_url, opts, argc, argv);
    fprintf(stderr, "arvctl rollups: unknown command '%s' (expected rebuild)\n", argv[1]);
    return CLI_EXIT_USAGE;
}
