/* Per-API-key rate limit: a token bucket per key (rate per second, burst), in a
 * bounded table; a key pushed out of the table starts again with a full bucket. */
#ifndef ARV_REPORTER_RATELIMIT_H
#define ARV_REPORTER_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;

/* Creates a limiter of `rate` tokens per second, `burst` at most, for up to
 * `capacity` keys. rate 0 disables it (every take succeeds). Caller frees with
 * ratelimit_free(). Returns NULL if out of memory. */
struct ratelimit *ratelimit_new(double rate, double burst, unsigned capacity);
void ratelimit_free(struct ratelimit *rl);

/* Takes one token for `key` at monotonic time `now_ms`. Returns true if allowed;
 * otherwise false with `*retry_after_s` (>= 1) the seconds until a token is back. */
bool ratelimit_take(struct ratelimit *rl, int64_t key, uint64_t now_ms, unsigned *retry_after_s);

#endif
