/* Per-client token buckets in a fixed-size table: bounded memory whatever the
 * number of clients (a new client takes over the bucket of the least recently
 * seen one in its set, refilled since: full again unless that one was busy,
 * so that clients cycled through a set cannot each start full). Thread-safe
 * (one short lock per take): shared by the collector's threads (keyed by
 * client IP) and the reporter (keyed by API key id). */
#ifndef ARV_RATE_LIMIT_H
#define ARV_RATE_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct rate_limit;

/* Creates a limiter allowing `rps` requests per second per key with bursts of
 * `burst` (0: same as rps), tracking at most `slots` keys (rounded up to a
 * multiple of the associativity). Returns NULL if out of memory or rps <= 0.
 * Caller frees with rate_limit_free(). */
struct rate_limit *rate_limit_new(double rps, double burst, unsigned slots);

/* Takes one token for `key` (borrowed, truncated to 63 bytes) at time `now_ms`
 * (monotonic). Returns true if allowed; otherwise false with *retry_after_s set
 * to the whole seconds until a token is back (at least 1). Thread-safe. */
bool rate_limit_take(struct rate_limit *r, const char *key, int64_t now_ms,
                     unsigned *retry_after_s);

void rate_limit_free(struct rate_limit *r);

#endif
