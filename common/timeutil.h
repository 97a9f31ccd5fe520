/* Clock readings in the units the daemons use: milliseconds and seconds on the
 * monotonic clock (timeouts, latencies) and on the wall clock (timestamps). */
#ifndef ARV_TIMEUTIL_H
#define ARV_TIMEUTIL_H

#include <stdint.h>
#include <sys/time.h>

/* Monotonic milliseconds: for deadlines and durations, never for timestamps. */
uint64_t timeutil_mono_ms(void);

/* Monotonic seconds as a double: for latency histograms. */
double timeutil_mono_s(void);

/* Wall-clock milliseconds since the epoch. */
int64_t timeutil_real_ms(void);

/* A timeval of `ms` milliseconds, for libevent timers. */
struct timeval timeutil_tv(uint64_t ms);

#endif
