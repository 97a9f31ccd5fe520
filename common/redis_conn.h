/* One asynchronous Redis connection on a libevent loop (hiredis async): connects
 * in the background, pings (and optionally times commands out) to notice a dead
 * or hung server, reconnects with backoff (also after a command answered
 * READONLY or MASTERDOWN: a primary demoted behind the same name), and never
 * blocks the loop. Also parses redis:// URLs. */
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

/* True if Redis maxmemory-policy `policy` may evict keys without an expiry,
 * such as the streams (allkeys-lru, allkeys-lfu, allkeys-random): events the
 * collector acknowledged could then vanish before the aggregators read them.
 * Each connection checks at connect and logs redis_eviction_policy_unsafe. */
bool redis_policy_evicts_keys(const char *policy);

/* The policy a `CONFIG GET maxmemory-policy` reply names, if it is one that
 * evicts keys (borrowed from `reply`); NULL for a safe one, an error reply
 * (CONFIG renamed or denied) or no reply. */
const char *redis_policy_unsafe(const struct redisReply *reply);

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

/* Sends a command already in the Redis protocol (RESP: "*3\r\n$3\r\nSET..."),
 * `len` bytes copied at once; saves the per-command formatting of
 * redis_conn_command(). Same callback and return rules. Not for blocking
 * commands (their block time is not parsed from the text). */
int redis_conn_command_formatted(struct redis_conn *c, redis_conn_reply_cb *cb, void *arg,
                                 const char *cmd, size_t len);

/* Sets how long a command may stay unanswered (ms; 0, the default: no limit).
 * Past it, and a short grace (a quarter of it, 10..100 ms, for a loop that was
 * too busy to read), its callback gets reply NULL and errstr "command timed
 * out". If the server answered nothing at all in that grace, it is taken as
 * hung: the connection is dropped, every command in flight fails the same way,
 * and it reconnects with backoff. Else (a server that answers, slowly) the
 * connection stays and the late reply is dropped. A blocking command's own
 * block time is added to its limit and to the limits of the commands queued
 * behind it. The server may still have executed a timed-out command. */
void redis_conn_set_timeout(struct redis_conn *c, unsigned timeout_ms);

/* True while connected and the last ping was answered in time. Safe to call
 * from any thread (readiness checks read other loops' connections). */
bool redis_conn_is_up(const struct redis_conn *c);

/* Times the connection came up (connected, handshake done): each one after the
 * first is a reconnect. From the loop's thread. */
unsigned long redis_conn_connects(const struct redis_conn *c);

/* Commands sent whose replies have not come yet (those answered "command
 * timed out" included, until their late replies come or the connection drops). */
size_t redis_conn_pending(const struct redis_conn *c);

/* Last error text (borrowed), or "" if none. */
const char *redis_conn_errstr(const struct redis_conn *c);

/* Closes the connection; pending callbacks run with reply NULL before this
 * returns. Must not be called from inside one of its callbacks. NULL is fine. */
void redis_conn_free(struct redis_conn *c);

#endif
