/* Appends normalised events to the Redis stream(s): one asynchronous connection
 * per Redis node, the node chosen by session_id and the shard on it by content. */
#ifndef ARV_STREAM_WRITER_H
#define ARV_STREAM_WRITER_H

#include <stdbool.h>
#include <stddef.h>

/* Most Redis nodes REDIS_URL may list. */
#define STREAM_WRITER_MAX_NODES 64
#define STREAM_WRITER_NAME_MAX  239 /* bytes of ARV_STREAM, before a shard's ":N" */

struct event;
struct event_base;
struct metrics;
struct stream_writer;

/* The outcome of one push: `ok` once Redis acknowledged the XADD (then `entry_id`
 * is the new stream id, borrowed for the call), else `errstr` says why. */
typedef void stream_writer_done_cb(void *arg, bool ok, const char *entry_id, const char *errstr);

/* Creates a writer for `redis_urls` (comma-separated; copied) and stream base name
 * `stream` (copied) with `shards` shards, on `base` (borrowed). Connects in the
 * background and polls the stream lengths (metric collector_stream_length) and
 * connection states (collector_redis_reconnects_total) every 500 ms. Returns NULL
 * with a message in `err` on a bad URL list. Caller frees with
 * stream_writer_free(). */
struct stream_writer *stream_writer_new(struct event_base *base, struct metrics *m,
                                        const char *redis_urls, const char *stream, long shards,
                                        char *err, size_t errlen);

/* The stream of `ev` (borrowed), written into `out` ("arv:events" or
 * "arv:events:3"); returns the index of the node that holds it. Unsharded
 * (shards <= 1): `stream` on node 0. Else, with n = min(nodes, shards), the
 * node is k = FNV-1a(session_id) mod n, which holds shards k, k + n, k + 2n, ...
 * below `shards`, and the shard is the one of those that FNV-1a of the content
 * key picks (mod their number): sessions spread over the nodes, and one
 * content's events on a node all go to one shard. Pure. */
int stream_writer_route(const char *stream, long shards, int nodes, const struct event *ev,
                        char *out, size_t outlen);

/* XADDs `json` (len bytes, copied), the stream encoding of `ev` (borrowed),
 * with fields v=EVENT_SCHEMA_VERSION and e=json to the shard that
 * stream_writer_route() gives `ev`. `cb` runs exactly once, later, from the
 * loop. Returns 0, or -ENOTCONN when that node is down, or -EBUSY when it has
 * the most XADDs awaiting its answer already (then `cb` is not called). */
int stream_writer_push(struct stream_writer *w, const struct event *ev, const char *json,
                       size_t len, stream_writer_done_cb *cb, void *arg);

/* Sets how long an XADD may wait for Redis's answer (ms; 0: no limit). Past it
 * (and a short grace) it gets cb(ok=false, errstr "command timed out"); a node
 * that answered nothing meanwhile is taken as hung, its connection dropped and
 * reconnected, failing every XADD in flight on it the same way: a hung or slow
 * Redis answers 503 instead of holding requests. Redis may still store such an
 * event. */
void stream_writer_set_timeout(struct stream_writer *w, unsigned timeout_ms);

/* Past `max` XADDs awaiting a node's answer (0: no limit), pushes for that
 * node fail at once (-EBUSY): a Redis that answers slowly must not have the
 * collector buffer every event of a burst for it. */
void stream_writer_set_max_pending(struct stream_writer *w, size_t max);

/* Sets the backlog limit: entries per shard (0: none). The writer polls every
 * shard's XLEN every 500 ms on its own connections. */
void stream_writer_set_high_water(struct stream_writer *w, long high_water);

/* True when the last poll found a shard longer than the high-water mark. */
bool stream_writer_backlogged(const struct stream_writer *w);

/* True when every node is connected. Any thread may ask; only the writer's own
 * thread may pass `detail` (set to the failing node's error, borrowed). */
bool stream_writer_is_up(const struct stream_writer *w, const char **detail);

/* XADDs sent and not yet answered. */
size_t stream_writer_pending(const struct stream_writer *w);

/* Closes the connections; unanswered pushes get cb(ok=false). NULL is fine. */
void stream_writer_free(struct stream_writer *w);

#endif
