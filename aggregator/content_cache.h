/* The aggregator's cache of the content registry (ARV_CONTENT_RELATION):
 * content id or unique id -> (id, project, company), bounded (LRU), known
 * entries re-read after a TTL. Unknown keys are not cached: they are asked
 * again in every batch that uses them, so content registered a moment ago (or
 * just before `arvctl dlq replay`) is counted at once. One per worker thread:
 * not thread-safe. */
#ifndef ARV_AGGREGATOR_CONTENT_CACHE_H
#define ARV_AGGREGATOR_CONTENT_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "strbuf.h"

struct content_cache;

struct content_cache_stats {
    uint64_t hits;    /* keys of a batch answered from the cache */
    uint64_t misses;  /* keys that had to be read (new or expired) */
    uint64_t queries; /* registry queries made */
    size_t size;      /* entries held */
};

/* Creates a cache of at most `capacity` entries (it may hold more while one
 * batch needs them) whose known entries live `ttl_ms`. NULL if out of memory.
 * Free with content_cache_free(). */
struct content_cache *content_cache_new(size_t capacity, long ttl_ms);

/* Frees the cache. NULL is fine. */
void content_cache_free(struct content_cache *c);

/* Starts a new batch: the set of keys the batch uses is emptied. */
void content_cache_begin(struct content_cache *c);

/* Notes that the batch uses content id `id`, or unique id `uid` (`len`
 * bytes, borrowed). Returns 0 or -ENOMEM. */
int content_cache_note_id(struct content_cache *c, int64_t id);
int content_cache_note_uid(struct content_cache *c, const char *uid, size_t len);

/* Reads from `relation` (a validated relation name) every key of the batch that
 * is not cached or has expired, in one query; `now_ms` is a monotonic clock.
 * Blocking. Returns the PGresult of a failed query (caller clears it, and
 * classifies it), or NULL when done (also when nothing had to be read); on out
 * of memory, NULL with *oom set. */
PGresult *content_cache_refresh(struct content_cache *c, PGconn *conn, const char *relation,
                                uint64_t now_ms, bool *oom);

/* Resolves one key from the cache as last refreshed; false if unknown. */
bool content_cache_lookup_id(const struct content_cache *c, int64_t id, int64_t *project_id,
                             int64_t *company_id);
bool content_cache_lookup_uid(const struct content_cache *c, const char *uid, size_t len,
                              int64_t *id, int64_t *project_id, int64_t *company_id);

/* Counters so far. */
void content_cache_stats(const struct content_cache *c, struct content_cache_stats *out);

#endif
