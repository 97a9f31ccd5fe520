/* A short-lived cache of whole answers for hot queries, keyed by the normalised
 * query and the reader's scope: bounded in entries and in bytes per answer. */
#ifndef ARV_REPORTER_QCACHE_H
#define ARV_REPORTER_QCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QCACHE_KEY_MAX  256
#define QCACHE_BODY_MAX (256 * 1024)

struct qcache;

/* One cached answer (borrowed from the cache; valid until the next put). */
struct qcache_entry {
    char key[QCACHE_KEY_MAX]; /* normalised query + scope */
    bool used;                /* slot holds an answer */
    uint64_t expires_ms;      /* monotonic; dead at or after it */
    char *body;               /* owned */
    size_t len;               /* bytes of body */
    bool csv;                 /* text/csv rather than JSON */
    char complete_until[40];  /* for the CSV header */
};

/* Creates a cache of up to `capacity` answers kept `ttl_ms`; ttl_ms 0 disables
 * it (get misses, put does nothing). Caller frees with qcache_free(). */
struct qcache *qcache_new(unsigned capacity, uint64_t ttl_ms);
void qcache_free(struct qcache *c);

/* Returns the live answer for `key` at `now_ms`, or NULL. */
const struct qcache_entry *qcache_get(struct qcache *c, const char *key, uint64_t now_ms);

/* Stores a copy of `body` (`len` bytes) for `key`; answers over QCACHE_BODY_MAX
 * or keys over QCACHE_KEY_MAX - 1 are not kept. Out of memory only skips it. */
void qcache_put(struct qcache *c, const char *key, uint64_t now_ms, const char *body, size_t len,
                bool csv, const char *complete_until);

#endif
