/* A pool of non-blocking PostgreSQL connections on a libevent loop (libpq
 * PQconnectStart/PQsendQueryParams/PQconsumeInput): queries queue until a
 * connection is free, connections reconnect with backoff, the loop never blocks. */
#ifndef ARV_PG_POOL_H
#define ARV_PG_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

struct event_base;
struct pg_pool;

/* Keys (and values) pg_conn_params() fills at most, the NULL end included. */
#define PG_CONN_PARAMS_MAX 10

/* The options every daemon's PostgreSQL connection starts from, as `keys` and
 * `values` (each PG_CONN_PARAMS_MAX long) for PQconnectdbParams() or
 * PQconnectStartParams() with expand_dbname = 1: connect_timeout 5 s,
 * application_name `app` (NULL: none), TCP keepalives (a peer silent for
 * 10 s is probed every 5 s) and a TCP user timeout of 30 s: a peer that
 * vanished is given up about 30 s after it last answered, whether the
 * connection waits for a result (keepalive probes unanswered; with a user
 * timeout Linux counts that, not the probes) or for data it sent to be
 * acknowledged (which keepalives do not probe, and the kernel's own
 * retransmissions would keep up for about 15 minutes); `options` when not NULL, and last
 * `conninfo` as dbname, so that a URL or key=value string that sets any of
 * them wins. Borrows every string. */
void pg_conn_params(const char *app, const char *options, const char *conninfo, const char **keys,
                    const char **values);

/* A query's outcome, called exactly once from the loop. `res` is the last
 * PGresult (owned by the pool, cleared after the call: copy what you keep), or
 * NULL when the query could not run (then `errstr` says why). A failed statement
 * arrives as a res with PQresultStatus PGRES_FATAL_ERROR. */
typedef void pg_pool_result_cb(void *arg, const PGresult *res, const char *errstr);

/* Creates a pool of `size` connections to `conninfo` (URL or key=value; copied)
 * on `base` (borrowed), connecting in the background. Queries wait at most
 * `queue_timeout_ms` for a connection, and run at most `statement_timeout_ms`
 * (PostgreSQL's statement_timeout on every connection; 0: none; an `options`
 * in `conninfo` replaces it): a query held by a lock or a slow server ends in
 * an error result (SQLSTATE 57014) instead of waiting for ever. A server that
 * does not even end it so (stopped, hung on its disk: its kernel still
 * acknowledges, so no TCP timeout fires) is given up `statement_timeout_ms`
 * + 1 s after a connection took the query, whatever `conninfo` says: the
 * connection is closed (PQcancel would block on the same server) and
 * reconnected, the query's callback gets res NULL, and the pool is not up
 * until the server answers again. Caller frees with pg_pool_free(). */
struct pg_pool *pg_pool_new(struct event_base *base, const char *conninfo, unsigned size,
                            unsigned queue_timeout_ms, unsigned statement_timeout_ms);

/* Queues `sql` with text parameters (all copied; `params[i]` NULL is SQL NULL).
 * Returns 0, or -ENOTCONN when no connection is up (then `cb` is not called),
 * or -ENOMEM. */
int pg_pool_query(struct pg_pool *p, const char *sql, int nparams, const char *const *params,
                  pg_pool_result_cb *cb, void *arg);

/* pg_pool_query() through a prepared statement named `name` (copied; unique per
 * SQL text, since a connection prepares each name once): parsed and planned
 * once per connection rather than per query. A failed PREPARE is reported like
 * a failed statement. NULL `name` is pg_pool_query(). */
int pg_pool_query_prepared(struct pg_pool *p, const char *name, const char *sql, int nparams,
                           const char *const *params, pg_pool_result_cb *cb, void *arg);

/* True while at least one connection is up and answered its last check, and
 * no query has passed its deadline since the server last answered (a new
 * connection made, a check or query answered). */
bool pg_pool_is_up(const struct pg_pool *p);

/* Last connection error (borrowed), or "". */
const char *pg_pool_errstr(const struct pg_pool *p);

/* Queries waiting plus running. */
size_t pg_pool_pending(const struct pg_pool *p);

/* Closes every connection: queued and running queries get cb(res NULL) (the
 * server cancels a running statement once it notices), and later ones are
 * refused (-ENOTCONN). For a stop that cannot wait for them. Must not be
 * called from inside a callback. NULL is fine. */
void pg_pool_close(struct pg_pool *p);

/* pg_pool_close(), then frees the pool. */
void pg_pool_free(struct pg_pool *p);

#endif
