/* One asynchronous Redis connection on a libevent loop (hiredis async): connects
 * in the background, pings to notice a dead server, reconnects with backoff, and
 * never blocks the loop. Also parses redis:// URLs. */
#ifndef ARV_REDIS_CONN_H
#define ARV_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
struct redis_conn;

struct redis_url {
    char host[256];
    uint16_t port;      /* default 6379 */
    int db;             /* default 0 */
    char password[256]; /* empty: no AUTH */
    char username[128]; /* empty: default user */
};

/* Parses redis://[[user]:password@]host[:port][/db]. False on anything else. */
bool redis_url_parse(const char *url, struct redis_url *out);

/* Splits a comma-separated REDIS_URL list into at most `max` URLs. Returns the
 * count, or -1 if any is invalid or there are more than `max`. */
int redis_url_parse_list(const char *list, struct redis_url *out, int max);

/* A command's outcome: `reply` is hiredis-owned, valid only during the call, and
 * NULL when the connection failed before an answer (then `errstr` says why). A
 * Redis error reply arrives as reply->type == REDIS_REPLY_ERROR. */
typedef void redis_conn_reply_cb(void *arg, struct redisReply *reply, const char *errstr);

/* Creates a connection to `url` (copied) on `base` (borrowed) and starts
 * connecting in the background. `name` (borrowed) labels logs. Caller frees with
 * redis_conn_free(). NULL if out of memory. */
struct redis_conn *redis_conn_new(struct event_base *base, const struct redis_url *url,
                                  const char *name);

/* Sends a command (argv copied at once). `cb` is called exactly once, later, from
 * the loop. Returns 0, or -ENOTCONN while the connection is down (then `cb` is
 * not called). */
int redis_conn_command(struct redis_conn *c, redis_conn_reply_cb *cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen);

/* True while connected and the last ping was answered in time. Safe to call
 * from any thread (readiness checks read other loops' connections). */
bool redis_conn_is_up(const struct redis_conn *c);

/* Commands sent and not yet answered. */
size_t redis_conn_pending(const struct redis_conn *c);

/* Last error text (borrowed), or "" if none. */
const char *redis_conn_errstr(const struct redis_conn *c);

/* Closes the connection; pending callbacks run with reply NULL before this
 * returns. Must not be called from inside one of its callbacks. NULL is fine. */
void redis_conn_free(struct redis_conn *c);

#endif
