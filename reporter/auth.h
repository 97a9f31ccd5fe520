/* Reporter authentication: `Authorization: Bearer <key>` checked against
 * analytics.api_keys by SHA-256, through a small TTL cache so most requests need
 * no database round trip. Revocation is seen within the TTL. */
#ifndef ARV_REPORTER_AUTH_H
#define ARV_REPORTER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api_key.h"

struct pg_pool;
struct metrics;
struct auth;
struct auth_cache;

/* Who a valid key speaks for. */
struct auth_principal {
    int64_t key_id;     /* analytics.api_keys.id */
    bool is_admin;      /* reads every company */
    int64_t company_id; /* the only company a non-admin key reads; 0 for admins */
};

enum auth_status {
    AUTH_OK,          /* principal filled */
    AUTH_MISSING,     /* no Authorization header, or not a Bearer one */
    AUTH_MALFORMED,   /* a Bearer token that cannot be one of our keys */
    AUTH_UNKNOWN,     /* well formed, but no such key */
    AUTH_REVOKED,     /* the key was revoked */
    AUTH_UNAVAILABLE, /* PostgreSQL unreachable: answer 503 */
    AUTH_FAILED,      /* the lookup statement failed: answer 500 */
    AUTH_LIMITED,     /* not cached, and the client has used up its lookups: answer 429 */
    AUTH_PENDING      /* the answer comes later through the callback */
};

/* Completion of a lookup that auth_check() left pending; called exactly once,
 * from the loop. `p` is borrowed (valid during the call) and meaningful only
 * with AUTH_OK. */
typedef void auth_done_cb(void *arg, enum auth_status status, const struct auth_principal *p);

/* Creates the authenticator. `pool` is borrowed and must outlive it (free the
 * pool first: pending lookups then complete with AUTH_UNAVAILABLE). Known keys
 * (valid or revoked) are cached `ttl_s` seconds (0 disables caching), unknown ones
 * min(ttl_s, 5) seconds. A client (see auth_check) may have `lookup_rps` keys
 * that are not cached looked up per second, `lookup_burst` at once (0 rps: no
 * limit): well-formed random keys would otherwise cost a statement each. `m`
 * (borrowed, may be NULL) receives reporter_auth_cache_lookups_total{result}.
 * Caller frees with auth_free(). Returns NULL if out of memory. */
struct auth *auth_new(struct pg_pool *pool, unsigned ttl_s, double lookup_rps, double lookup_burst,
                      struct metrics *m);
void auth_free(struct auth *a);

/* Checks the Authorization header value `authorization` (borrowed, may be NULL)
 * of a request from `client` (its address; borrowed, NULL: not limited).
 * Returns the outcome at once (cache hit, bad token or AUTH_LIMITED; then
 * `*out` is filled on AUTH_OK and `cb` is never called), or AUTH_PENDING:
 * `cb(arg, ...)` follows exactly once. Never blocks. */
enum auth_status auth_check(struct auth *a, const char *authorization, const char *client,
                            struct auth_principal *out, auth_done_cb *cb, void *arg);

/* Short name of a status for logs and metrics ("unknown", "revoked", ...). */
const char *auth_status_name(enum auth_status s);

/* Finds the token in an Authorization header value: scheme "Bearer"
 * (case-insensitive), spaces, the token, optional trailing spaces. `*tok` points
 * into `header`. Returns false when absent or not Bearer. */
bool auth_bearer_token(const char *header, const char **tok, size_t *len);

/* The cache, exposed for tests: a fixed number of entries keyed by the key's hex
 * SHA-256 (compared in constant time), 4 per set, the oldest of a set evicted.
 * Times are monotonic milliseconds supplied by the caller. */
struct auth_cache *auth_cache_new(unsigned capacity);
void auth_cache_free(struct auth_cache *c);

/* Returns true on a live entry, filling `*status` (AUTH_OK, AUTH_UNKNOWN or
 * AUTH_REVOKED) and, for AUTH_OK, `*p`. */
bool auth_cache_get(struct auth_cache *c, const char *hash_hex, uint64_t now_ms,
                    enum auth_status *status, struct auth_principal *p);

/* How long a lookup's answer `st` is cached with a TTL of `ttl_s`: known keys
 * (valid or revoked) `ttl_s`, unknown ones min(ttl_s, 5 s), anything else
 * (a failure) not at all. In ms. */
uint64_t auth_cache_ttl_ms(unsigned ttl_s, enum auth_status st);

/* Remembers `status`/`p` (copied; `p` may be NULL unless AUTH_OK) for `ttl_ms`. */
void auth_cache_put(struct auth_cache *c, const char *hash_hex, uint64_t now_ms, uint64_t ttl_ms,
                    enum auth_status status, const struct auth_principal *p);

#endif
