/* The aggregator's PostgreSQL side: one blocking libpq connection (used only by
 * the worker thread) that writes a batch in one transaction: its event ids
 * into event_ids (the dedupe), the new events' raw rows by COPY, the rollup
 * deltas computed here for those (rollup.h) merged into the rollups, dead
 * letters and the watermark, then COMMIT. */
#ifndef ARV_AGGREGATOR_STORE_H
#define ARV_AGGREGATOR_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "batch.h"
#include "content_cache.h"
#include "rollup.h"
#include "strbuf.h"

/* How a store call ended; decides what the worker does next. */
enum store_status {
    STORE_OK,     /* done (committed) */
    STORE_CONN,   /* connection lost or unusable: reconnect, retry */
    STORE_DATA,   /* a row was rejected (data or constraint error): retry entry by entry */
    STORE_SCHEMA, /* relation or function missing: migrations not applied; retry later */
    STORE_RETRY   /* anything else (deadlock, timeout, ...): roll back, retry later */
};

/* Outcome of one flushed batch. */
struct store_counts {
    long events;       /* decoded events in the batch */
    long inserted;     /* events new to the raw table (bots included) */
    long bots;         /* of those, bots': stored but not in the rollups */
    long unknown;      /* events whose content is not registered */
    long invalid;      /* entries that did not decode */
    long other_dead;   /* entries dead-lettered for another reason */
    long dead_letters; /* dead-letter rows actually written (not seen before) */
    bool ids_slow;     /* an id seen before, or a dead letter already there: the slow way */
    long ids_us;       /* BEGIN, day locks, dead letters, event ids (the dedupe) */
    long raw_us;       /* raw rows, and the rollup deltas computed meanwhile */
    long deltas_us;    /* the rollup deltas sent */
    long merge_us;     /* the statement merging them */
    long commit_us;    /* COMMIT (the WAL flush) */
};

struct store {
    PGconn *conn;         /* NULL while disconnected */
    char *conninfo;       /* DATABASE_URL, owned */
    char *relation;       /* ARV_CONTENT_RELATION, owned */
    struct strbuf sql;    /* scratch for one call's SQL */
    struct strbuf rows;   /* COPY data being sent */
    struct rollup rollup; /* the rollup deltas of the write being made */
    int64_t *days;        /* the UTC days of the batch being written */
    size_t days_cap;
    struct store_key *keys; /* the read's dedupe keys, sorted (copy_ids) */
    size_t keys_cap;
    enum store_status status;      /* of the last call */
    char sqlstate[6];              /* of the last error, "" if none */
    char errstr[256];              /* last error, one line */
    long statement_timeout_ms;     /* the session's statement_timeout */
    unsigned breakdown_max_values; /* rollup_cap_breakdown's cap; 0: none */
    uint64_t cut_ms;               /* the last call was given up after this long (store_watch) */
    /* The call to the server in progress, which store_watch() may give up
     * on from another thread: guarded by call_mu. */
    pthread_mutex_t call_mu;
    bool call_mu_ready;
    uint64_t call_since_ms; /* monotonic start of the call; 0: none */
    int call_fd;            /* its connection's socket */
    uint64_t call_cut_ms;   /* > 0: store_watch() shut that socket down */
};

/* Appends the statement that merges the rollup deltas (pg_temp.arv_measures,
 * pg_temp.arv_breakdown) into the rollups (in the order docs/aggregator.md
 * gives) and writes the dead letters of pg_temp.arv_dead. Its one result row:
 * the dead letters written (not seen before). Pure. */
void store_build_merge_sql(struct strbuf *out);

/* The least a stream's floor is moved back by to give its complete_until:
 * a collector answers 503 to an XADD unanswered for ARV_REDIS_TIMEOUT_MS
 * (500 ms by default) and a grace. */
#define STORE_FLOOR_SLACK_MS 1000

/* Appends the statement that sets the rows of analytics.stream_watermarks of
 * the `n` streams named by the already quoted SQL `literals` to their floors
 * `floor_ms[i]` (Redis's clock; 0, or `floor_ms` NULL for all: unknown, the
 * row only marked current, or added at the epoch), reporting `delay_ms`, the largest XADD delay the
 * writer saw recently: complete_until is the floor less the larger of that
 * and the row's own (reported by any aggregator in the last 10 minutes), at
 * least STORE_FLOOR_SLACK_MS, and never past now() less it. Its rows: each
 * stream's name and complete_until (ms). Pure. */
void store_build_floors_sql(struct strbuf *out, const char *const *literals,
                            const int64_t *floor_ms, size_t n, int64_t delay_ms);

/* Appends the statement that takes, inside the batch's transaction and before
 * any write, pg_advisory_xact_lock_shared(ARV_LOCK_ROLLUP_DAY, day) for each
 * of the `n` days (days since the epoch, ascending and distinct; see locks.h).
 * Its one result row has one column. Pure. */
void store_build_lock_sql(struct strbuf *out, const int64_t *days, size_t n);

/* Maps an SQLSTATE (NULL or "" when unknown) to the worker's next step. Pure. */
enum store_status store_classify(const char *sqlstate);

/* Prepares `s` for `conninfo` (URL or key=value) and `relation` (both
 * copied), its session's statement_timeout `statement_timeout_ms`. Does not
 * connect. Returns 0 or a negative errno. */
int store_init(struct store *s, const char *conninfo, const char *relation,
               long statement_timeout_ms);

/* Closes the connection and frees everything. Safe on a zeroed store. */
void store_deinit(struct store *s);

/* Connects (blocking, 5 s connect timeout unless the URL says otherwise), sets
 * the session up and creates its temporary tables. Returns STORE_OK or the error
 * kind with `errstr` set. */
enum store_status store_connect(struct store *s);

/* Closes the connection if open. */
void store_disconnect(struct store *s);

/* True while a connection is open (closed after any connection failure). */
bool store_connected(const struct store *s);

/* True while a write's transaction is open (store_write, until store_commit
 * or a failure). */
bool store_in_write(const struct store *s);

/* Creates the raw table's day partitions for [first_day, last_day] (days since
 * the epoch, UTC). Blocking. */
enum store_status store_ensure_partitions(struct store *s, int64_t first_day, int64_t last_day);

/* Reads into `cc` every content key of its current batch that it does not
 * hold fresh, from the store's content relation. Blocking. */
enum store_status store_resolve_content(struct store *s, struct content_cache *cc);

/* Writes entries [first, first + n) of batch `b` in the store's open write,
 * beginning one (BEGIN) if none is open, as batch_resolve() left them (after
 * store_resolve_content()): events new to event_ids as raw rows and into the
 * write's rollup deltas (bots only as raw rows), events of unknown content
 * and dead entries as dead letters. Several reads can go into one write; the
 * breakdown values of all of them must stay in `b` until store_commit()
 * (batch_next). Sets the entries' `counted`, and adds to `counts` on
 * STORE_OK. On failure the whole write is rolled back (or the connection
 * closed): nothing of it was written. Blocking. */
enum store_status store_write(struct store *s, struct batch *b, size_t first, size_t n,
                              struct store_counts *counts);

/* Ends the open write: merges its rollup deltas (their breakdown values are
 * `b`'s), writes its dead letters and COMMITs; adds to `counts`. With no
 * write open, does nothing. On failure the write is rolled back. Blocking. */
enum store_status store_commit(struct store *s, const struct batch *b, struct store_counts *counts);

/* Rolls back the open write, if any. */
void store_abort(struct store *s);

/* Writes entries [first, first + n) of batch `b` in one transaction of their
 * own (store_write, then store_commit); `counts` is reset first. */
enum store_status store_flush(struct store *s, struct batch *b, size_t first, size_t n,
                              struct store_counts *counts);

/* Writes the floors of the `n` streams `streams` (store_build_floors_sql), in
 * one statement, and sets `until_ms[i]` to each row's complete_until (ms; 0
 * if none was read back). Doubles as the connection check. Blocking. */
enum store_status store_put_floors(struct store *s, const char *const *streams,
                                   const int64_t *floor_ms, size_t n, int64_t delay_ms,
                                   int64_t *until_ms);

/* Checks the connection with SELECT 1. Blocking. */
enum store_status store_ping(struct store *s);

/* How long a call to the server may go unanswered before store_watch() gives
 * it up: the statement timeout, which a server that answers enforces itself,
 * and a quarter of it more (at most 15 s). Pure. */
uint64_t store_watch_limit_ms(long statement_timeout_ms);

/* From any thread: if the store's call to the server in progress began more
 * than store_watch_limit_ms() before `now_ms` (monotonic), shuts its
 * connection's socket down, so that the blocked call fails as a lost
 * connection (a server that stopped answering: its host still acknowledges
 * the packets, so no TCP timeout ends the wait). Returns how long the call
 * had lasted if it did so, else 0. A call still in progress at `stop_cut_ms`
 * (monotonic; 0: never), whenever it began, is given up the same way: a
 * process that stops does not wait out the limit. */
uint64_t store_watch(struct store *s, uint64_t now_ms, uint64_t stop_cut_ms);

#endif
