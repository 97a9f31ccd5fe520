/* arvctl dlq list/replay: lists dead letters, and re-appends their events to the
 * stream (blocking hiredis) so the aggregator counts them once they can be. */
#include "dlq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <libpq-fe.h>

#include "batch.h"
#include "cli.h"
#include "event.h"
#include "locks.h"
#include "reader.h"
#include "redis_conn.h"
#include "stream_writer.h"
#include "timeutil.h"

#define DLQ_MAX_NODES   64
#define DLQ_REPLAY_PAGE 1000       /* dead letters a replay reads at a time, */
#define DLQ_PAGE_BYTES  "16777216" /* and their payloads' bytes, past the first */
#define DLQ_STREAM_MAX  400        /* bytes of a stream name, the shard suffix apart */

/* The reasons the aggregator writes. */
static const char *const dlq_reasons[] = {BATCH_REASON_INVALID, BATCH_REASON_UNKNOWN,
                                          BATCH_REASON_REJECTED, BATCH_REASON_DELIVERIES,
                                          BATCH_REASON_OUT_OF_RANGE};

/* True if `reason` is one of dlq_reasons, or some dead letter has it (written
 * by hand, say); else says so on stderr: a typo would replay nothing. False
 * too (said) if PostgreSQL fails; *usage tells which. */
static bool dlq_reason_ok(PGconn *conn, const char *reason, bool *usage)
{
    size_t n = sizeof(dlq_reasons) / sizeof(dlq_reasons[0]);

    *usage = false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(reason, dlq_reasons[i]) == 0)
            return true;
    const char *params[] = {reason};
    PGresult *res =
        cli_query(conn, "SELECT EXISTS (SELECT 1 FROM analytics.dead_letters WHERE reason = $1)", 1,
                  params, "cannot read dead letters");
    bool found = res && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    if (res && !found) {
        *usage = true;
        fprintf(stderr,
                "arvctl dlq replay: --reason: no dead letter has reason '%s' (the"
                " aggregator writes",
                reason);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "%s %s", i ? "," : "", dlq_reasons[i]);
        fprintf(stderr, ")\n");
    }
    PQclear(res);
    return found;
}

static const char dlq_usage[] =
    "Usage: arvctl dlq list [--reason R] [--limit N] [--json]\n"
    "       arvctl dlq replay (--id ID | --reason R) [--stream NAME] [--force]\n"
    "\n"
    "list    prints dead letters, newest last (default limit 100): id, created_at,\n"
    "        reason, stream, entry_id, detail, replayed_at and the payload (cut to 60\n"
    "        characters in the table, whole with --json: one JSON array).\n"
    "replay  appends each dead letter's event again to the stream (REDIS_URL,\n"
    "        ARV_STREAM or --stream, ARV_STREAM_SHARDS: the collector's routing) and\n"
    "        sets replayed_at. --id replays that one (again, if it was); --reason\n"
    "        replays those of that reason not replayed yet. The aggregator drops\n"
    "        events it already counted (event_id dedupe) for as long as it keeps\n"
    "        their ids, so an event received before that window\n"
    "        (ARV_DEDUPE_RETENTION_DAYS, else ARV_RAW_RETENTION_DAYS) is skipped: if\n"
    "        it was counted once, a replay would count it again. --force replays it\n"
    "        (an event known never to have been counted). An event received before\n"
    "        ARV_RAW_RETENTION_DAYS is always skipped: its day's raw rows are gone.\n"
    "        invalid_payload entries, and payloads the aggregator would not decode,\n"
    "        are not events and are skipped; a max_deliveries dead letter (the\n"
    "        entry's fields) is replayed as the event in its e field.\n";

/* Says in `err` that there is no payload, or that memory ran out. */
static void dlq_event_error(struct event_error *err, const char *code, const char *message)
{
    err->code = code;
    err->field = NULL;
    snprintf(err->message, sizeof(err->message), "%s", message);
}

char *dlq_event(const char *payload, struct event *ev, struct event_error *err)
{
    struct json_object *root = NULL, *v, *e;
    const char *text = payload;
    char *event = NULL;

    if (!payload) {
        dlq_event_error(err, "invalid_json", "no payload");
        return NULL;
    }
    /* The payload itself first: the decoder reads it without json-c. */
    if (!event_from_stream(payload, strlen(payload), ev, err)) {
        root = json_tokener_parse(payload);
        if (!root || !json_object_is_type(root, json_type_object) ||
            !json_object_object_get_ex(root, "v", &v) ||
            !json_object_is_type(v, json_type_string) ||
            strcmp(json_object_get_string(v), EVENT_SCHEMA_VERSION) != 0 ||
            !json_object_object_get_ex(root, "e", &e) || !json_object_is_type(e, json_type_string))
            goto out; /* `err` says why the payload is no event */
        text = json_object_get_string(e);
        if (!event_from_stream(text, (size_t)json_object_get_string_len(e), ev, err))
            goto out;
    }
    if (!(event = strdup(text)))
        dlq_event_error(err, "internal", "out of memory");
out:
    json_object_put(root);
    return event;
}

/* The days dedupe ids are kept: ARV_DEDUPE_RETENTION_DAYS, at most (and by
 * default) ARV_RAW_RETENTION_DAYS. */
static long dlq_dedupe_window(long dedupe_days, long raw_days)
{
    return dedupe_days > 0 && dedupe_days < raw_days ? dedupe_days : raw_days;
}

enum dlq_age dlq_replay_age(int64_t day, int64_t today, long dedupe_days, long raw_days)
{
    /* Retention deletes the ids and raw rows of days before today - N; a day
     * of margin covers a replay read after the next UTC midnight. */
    if (day <= today - raw_days)
        return DLQ_AGE_RAW;
    if (day > today + BATCH_DAYS_AHEAD)
        return DLQ_AGE_AHEAD;
    return day <= today - dlq_dedupe_window(dedupe_days, raw_days) ? DLQ_AGE_DEDUPE : DLQ_AGE_OK;
}

/* Why an event received on `day` is not replayed, on stderr; false if it is. */
static bool dlq_refused(const char *row_id, int64_t day, int64_t today, bool force,
                        const struct dlq_target *t)
{
    enum dlq_age age = dlq_replay_age(day, today, t->dedupe_days, t->raw_days);
    char date[16];

    if (age == DLQ_AGE_OK || (age == DLQ_AGE_DEDUPE && force))
        return false;
    timeutil_format_date(day, date, sizeof(date));
    if (age == DLQ_AGE_AHEAD)
        fprintf(stderr,
                "skipped %s: received %s, more than %d days ahead: the aggregator would"
                " dead-letter it again (received_out_of_range); replay it later\n",
                row_id, date, BATCH_DAYS_AHEAD);
    else if (age == DLQ_AGE_RAW)
        fprintf(stderr,
                "skipped %s: received %s, past ARV_RAW_RETENTION_DAYS (%ld): its day's raw rows"
                " are gone\n",
                row_id, date, t->raw_days);
    else
        fprintf(stderr,
                "skipped %s: received %s, past the %ld-day dedupe window: if it was counted,"
                " a replay counts it again; --force replays it\n",
                row_id, date, dlq_dedupe_window(t->dedupe_days, t->raw_days));
    return true;
}

static int dlq_list(const char *database_url, int argc, char **argv)
{
    static const char *const headers[] = {"ID",    "CREATED_AT", "REASON",   "STREAM",
                                          "ENTRY", "DETAIL",     "REPLAYED", "PAYLOAD"};
    const char *reason = NULL, *limit = "100";
    bool json = false;
    const struct cli_option opts[] = {
        {"reason", &reason, NULL}, {"limit", &limit, NULL}, {"json", NULL, &json}};
    long long n;
    char nbuf[24];
    const char *params[2];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("dlq list", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), dlq_usage,
                     &rc))
        return rc;
    if (!cli_parse_id(limit, &n) || n > 1000000) {
        fprintf(stderr, "arvctl dlq list: --limit: '%s' is not an integer 1..1000000\n", limit);
        return CLI_EXIT_USAGE;
    }
    snprintf(nbuf, sizeof(nbuf), "%lld", n);
    params[0] = reason;
    params[1] = nbuf;
    if (!(conn = cli_connect(database_url)))
        goto out;
    /* The newest N, printed oldest first. */
    static const char rows[] =
        "SELECT * FROM (SELECT id, to_char(created_at AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, reason, stream, entry_id,"
        " coalesce(detail, '') AS detail, coalesce(to_char(replayed_at AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') AS replayed_at, payload"
        " FROM analytics.dead_letters WHERE ($1::text IS NULL OR reason = $1)"
        " ORDER BY id DESC LIMIT $2::bigint) d ORDER BY id";
    char sql[1024];
    if (json)
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(json_agg(json_build_object('id', id, 'created_at', created_at,"
                 " 'reason', reason, 'stream', stream, 'entry_id', entry_id, 'detail',"
                 " nullif(detail, ''), 'replayed_at', nullif(replayed_at, ''), 'payload', payload)"
                 " ORDER BY id), '[]') FROM (%s) x",
                 rows);
    else
        snprintf(sql, sizeof(sql),
                 "SELECT id, created_at, reason, stream, entry_id, detail, replayed_at,"
                 " CASE WHEN length(payload) > 60 THEN left(payload, 57) || '...'"
                 " ELSE payload END FROM (%s) x ORDER BY id",
                 rows);
    if (!(res = cli_query(conn, sql, 2, params, "cannot list dead letters")))
        goto out;
    if (json)
        printf("%s\n", PQgetvalue(res, 0, 0));
    else
        cli_print_table(stdout, res, headers);
    rc = CLI_EXIT_OK;
out:
    PQclear(res);
    if (conn)
        PQfinish(conn);
    return rc;
}

/* Blocking connections to the Redis nodes, opened on first use, and the
 * streams found read by the aggregators. */
struct dlq_redis {
    struct redis_url urls[DLQ_MAX_NODES];
    redisContext *ctx[DLQ_MAX_NODES];
    int nodes;
    char **read; /* stream names, malloc'd */
    size_t nread;
};

/* Runs one command on `c`; true if the reply is not an error. Prints why not. */
static bool dlq_redis_ok(redisContext *c, const char *what, int argc, const char **argv,
                         const size_t *argvlen, char *id_out, size_t id_len)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, argvlen);
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;

    if (!ok)
        fprintf(stderr, "arvctl dlq replay: %s: %s\n", what,
                reply ? reply->str : (c->errstr[0] ? c->errstr : "no reply"));
    else if (id_out && reply->type == REDIS_REPLY_STRING)
        snprintf(id_out, id_len, "%s", reply->str);
    if (reply)
        freeReplyObject(reply);
    return ok;
}

/* The connection to node `k`, connecting (AUTH, SELECT) if needed; NULL after
 * printing why. */
static redisContext *dlq_redis_node(struct dlq_redis *r, int k)
{
    const struct redis_url *u = &r->urls[k];
    struct timeval tv = {5, 0};
    char db[16];
    redisContext *c;

    if (r->ctx[k])
        return r->ctx[k];
    c = redisConnectWithTimeout(u->host, u->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "arvctl dlq replay: cannot connect to Redis %s:%u: %s\n", u->host,
                (unsigned)u->port, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (u->password[0]) {
        const char *av[] = {"AUTH", u->username, u->password};
        const size_t al[] = {4, strlen(u->username), strlen(u->password)};
        bool user = u->username[0] != '\0';
        const char *av2[] = {"AUTH", u->password};
        const size_t al2[] = {4, strlen(u->password)};
        if (!(user ? dlq_redis_ok(c, "AUTH", 3, av, al, NULL, 0)
                   : dlq_redis_ok(c, "AUTH", 2, av2, al2, NULL, 0)))
            goto fail;
    }
    if (u->db != 0) {
        snprintf(db, sizeof(db), "%d", u->db);
        const char *av[] = {"SELECT", db};
        const size_t al[] = {6, strlen(db)};
        if (!dlq_redis_ok(c, "SELECT", 2, av, al, NULL, 0))
            goto fail;
    }
    return r->ctx[k] = c;
fail:
    redisFree(c);
    return NULL;
}

/* True if `stream` on `c` has the aggregators' consumer group (the
 * aggregators create it on every stream they read), asked once per stream;
 * else says so on stderr: events appended there would never be counted. */
static bool dlq_stream_read(struct dlq_redis *r, redisContext *c, const char *stream)
{
    for (size_t i = 0; i < r->nread; i++)
        if (strcmp(r->read[i], stream) == 0)
            return true;
    redisReply *reply = redisCommand(c, "XINFO GROUPS %s", stream);
    bool found = false;
    for (size_t i = 0; reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        const redisReply *name = reader_map_get(reply->element[i], "name");
        found = found ||
                (name && name->type == REDIS_REPLY_STRING && strcmp(name->str, READER_GROUP) == 0);
    }
    /* A stream that does not exist is answered "ERR no such key". */
    bool refused =
        !reply || (reply->type == REDIS_REPLY_ERROR && !strstr(reply->str, "no such key"));
    if (refused)
        fprintf(stderr, "arvctl dlq replay: XINFO GROUPS %s: %s\n", stream,
                reply          ? reply->str
                : c->errstr[0] ? c->errstr
                               : "no reply");
    else if (!found)
        fprintf(stderr,
                "arvctl dlq replay: stream '%s' has no consumer group %s: no aggregator reads it"
                " (REDIS_URL, ARV_STREAM or --stream, and ARV_STREAM_SHARDS must be the"
                " aggregators')\n",
                stream, READER_GROUP);
    if (reply)
        freeReplyObject(reply);
    char **p = found ? realloc(r->read, (r->nread + 1) * sizeof(*p)) : NULL;
    if (p) { /* out of memory: asked again next time */
        r->read = p;
        if ((p[r->nread] = strdup(stream)))
            r->nread++;
    }
    return found;
}

/* What a replay did, dead letter by dead letter. */
struct dlq_counts {
    long replayed, skipped, failed;
};

/* Replays row `i` of `res` (id, reason, payload): appends its event to its
 * stream and marks it replayed, or skips it (not an event, or refused by
 * age); counts which. A failure stops the replay: it is counted, and said on
 * stderr. */
static void replay_one(PGconn *conn, struct dlq_redis *redis, const struct dlq_target *t,
                       const PGresult *res, int i, int64_t today, bool force, struct dlq_counts *n)
{
    const char *row_id = PQgetvalue(res, i, 0);
    char stream[512], entry[64] = "", *event = NULL;
    struct event ev;
    struct event_error err;

    if (strcmp(PQgetvalue(res, i, 1), BATCH_REASON_INVALID) == 0) {
        fprintf(stderr, "skipped %s: %s, not an event\n", row_id, PQgetvalue(res, i, 1));
        n->skipped++;
        return;
    }
    if (!(event = dlq_event(PQgetvalue(res, i, 2), &ev, &err))) {
        fprintf(stderr, "skipped %s: %s, not an event (%s)\n", row_id, PQgetvalue(res, i, 1),
                err.message);
        n->skipped++;
        return;
    }
    if (dlq_refused(row_id, timeutil_period(ev.received_at_ms, TIMEUTIL_DAY_MS), today, force, t)) {
        free(event);
        n->skipped++;
        return;
    }
    /* The collector's routing: node by session_id, shard on it by content. */
    int node = stream_writer_route(t->stream, t->shards, redis->nodes, &ev, stream, sizeof(stream));
    redisContext *c = dlq_redis_node(redis, node);
    const char *av[] = {"XADD", stream, "*", "v", EVENT_SCHEMA_VERSION, "e", event};
    const size_t al[] = {4, strlen(stream), 1, 1, strlen(EVENT_SCHEMA_VERSION), 1, strlen(event)};
    bool sent = c && dlq_stream_read(redis, c, stream) &&
                dlq_redis_ok(c, "XADD", 7, av, al, entry, sizeof(entry));
    free(event);
    if (!sent) {
        n->failed++; /* Redis is down: the rest would fail the same way */
        return;
    }
    const char *up[] = {row_id};
    PGresult *u = PQexecParams(conn,
                               "UPDATE analytics.dead_letters SET replayed_at = now()"
                               " WHERE id = $1::bigint",
                               1, NULL, up, NULL, NULL, 0);
    printf("replayed %s -> %s %s\n", row_id, stream, entry);
    n->replayed++;
    if (PQresultStatus(u) != PGRES_COMMAND_OK) {
        /* Sent but not marked: a later --reason run sends it again (harmless:
         * it is within the dedupe window, or forced). Stop, as for Redis. */
        cli_report("cannot mark the dead letter replayed", u, conn);
        n->failed++;
    }
    PQclear(u);
}

static int dlq_replay(const char *database_url, const struct dlq_target *t, int argc, char **argv)
{
    const char *id = NULL, *reason = NULL;
    bool force = false;
    const struct cli_option opts[] = {
        {"id", &id, NULL}, {"reason", &reason, NULL}, {"force", NULL, &force}};
    int64_t today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
    struct dlq_redis redis = {0};
    char idbuf[24], after[24], page[16], last[24];
    const char *params[5] = {NULL, NULL, NULL, page, last};
    PGconn *conn = NULL;
    PGresult *res = NULL;
    struct dlq_counts n = {0};
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("dlq replay", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]), dlq_usage,
                     &rc))
        return rc;
    if (!id == !reason) {
        fprintf(stderr, "arvctl dlq replay: give exactly one of --id or --reason\n");
        return CLI_EXIT_USAGE;
    }
    if (strlen(t->stream) > DLQ_STREAM_MAX) {
        fprintf(stderr, "arvctl dlq replay: the stream name is longer than %d bytes\n",
                DLQ_STREAM_MAX);
        return CLI_EXIT_USAGE;
    }
    if (id) {
        if (!cli_id_param("dlq replay", "id", id, idbuf, sizeof(idbuf)))
            return CLI_EXIT_USAGE;
        params[0] = idbuf;
    }
    params[1] = reason;
    redis.nodes = redis_url_parse_list(t->redis_url, redis.urls, DLQ_MAX_NODES);
    if (redis.nodes <= 0) {
        /* Not echoed: it may hold a password. */
        fprintf(stderr, "arvctl dlq replay: REDIS_URL: invalid\n");
        return CLI_EXIT_USAGE;
    }
    snprintf(page, sizeof(page), "%d", DLQ_REPLAY_PAGE);
    if (!(conn = cli_connect(database_url)))
        goto out;
    bool usage;
    if (reason && !dlq_reason_ok(conn, reason, &usage)) {
        rc = usage ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
        goto out;
    }
    /* Up to the newest dead letter now: a replayed event that becomes a dead
     * letter again (its content still unknown) is not replayed again. */
    res = PQexec(conn, "SELECT coalesce(max(id), 0) FROM analytics.dead_letters");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cli_report("cannot read dead letters", res, conn);
        goto out;
    }
    snprintf(last, sizeof(last), "%s", PQgetvalue(res, 0, 0));
    /* One replay at a time: two would send the same letters (harmless within
     * the dedupe window, but not past it, with --force). Held by the session
     * until it ends. */
    char lock[64];
    PQclear(res);
    snprintf(lock, sizeof(lock), "SELECT pg_try_advisory_lock(%d)", ARV_LOCK_DLQ_REPLAY);
    res = PQexec(conn, lock);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
        fprintf(stderr, "arvctl dlq replay: waiting for another replay to finish\n");
        PQclear(res);
        snprintf(lock, sizeof(lock), "SELECT pg_advisory_lock(%d)", ARV_LOCK_DLQ_REPLAY);
        res = PQexec(conn, lock);
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cli_report("cannot take the replay lock", res, conn);
        goto out;
    }
    /* A page at a time, in id order: a reason may hold millions, and a
     * payload megabytes (fields of someone else's XADD). */
    for (bool more = true; more && !n.failed;) {
        PQclear(res);
        if (!(res =
                  cli_query(conn,
                            "SELECT id, reason, payload FROM (SELECT *, sum(octet_length(payload))"
                            " OVER (ORDER BY id) AS upto FROM (SELECT id, reason, payload"
                            " FROM analytics.dead_letters"
                            " WHERE (($1::bigint IS NOT NULL AND id = $1)"
                            " OR ($2::text IS NOT NULL AND reason = $2 AND replayed_at IS NULL))"
                            " AND ($3::bigint IS NULL OR id > $3) AND id <= $5::bigint"
                            " ORDER BY id LIMIT $4::int) l) p"
                            " WHERE upto - octet_length(payload) < " DLQ_PAGE_BYTES " ORDER BY id",
                            5, params, "cannot read dead letters")))
            goto out;
        if (id && PQntuples(res) == 0) {
            fprintf(stderr, "arvctl dlq replay: no dead letter %s\n", idbuf);
            goto out;
        }
        more = !id && PQntuples(res) > 0; /* the next page finds none, or more */
        if (more) {
            snprintf(after, sizeof(after), "%s", PQgetvalue(res, PQntuples(res) - 1, 0));
            params[2] = after;
        }
        for (int i = 0; i < PQntuples(res) && !n.failed; i++)
            replay_one(conn, &redis, t, res, i, today, force, &n);
    }
    printf("%ld replayed, %ld skipped, %ld failed\n", n.replayed, n.skipped, n.failed);
    rc = n.failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
out:
    for (int k = 0; k < DLQ_MAX_NODES; k++) {
        if (redis.ctx[k])
            redisFree(redis.ctx[k]);
    }
    for (size_t i = 0; i < redis.nread; i++)
        free(redis.read[i]);
    free(redis.read);
    PQclear(res);
    if (conn)
        PQfinish(conn);
    return rc;
}

int dlq_command(const char *database_url, const struct dlq_target *target, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(dlq_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "list") == 0)
        return dlq_list(database_url, argc, argv);
    if (strcmp(argv[1], "replay") == 0)
        return dlq_replay(database_url, target, argc, argv);
    fprintf(stderr, "arvctl dlq: unknown command '%s' (expected list or replay)\n", argv[1]);
    return CLI_EXIT_USAGE;
}
