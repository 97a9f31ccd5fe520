/* Clock readings in the units the daemons use: milliseconds and seconds on the
 * monotonic clock (timeouts, latencies) and on the wall clock (timestamps); and
 * calendar dates as days since 1970-01-01. */
#ifndef ARV_TIMEUTIL_H
#define ARV_TIMEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

/* Monotonic milliseconds: for deadlines and durations, never for timestamps. */
uint64_t timeutil_mono_ms(void);

/* Monotonic microseconds: for timing steps finer than a millisecond. */
uint64_t timeutil_mono_us(void);

/* Monotonic seconds as a double: for latency histograms. */
double timeutil_mono_s(void);

/* Wall-clock milliseconds since the epoch. */
int64_t timeutil_real_ms(void);

/* A timeval of `ms` milliseconds, for libevent timers. */
struct timeval timeutil_tv(uint64_t ms);

#define TIMEUTIL_HOUR_MS 3600000LL
#define TIMEUTIL_DAY_MS  86400000LL

/* A retry delay in [d/2, d] drawn with rand_r(seed), so that many clients
 * retrying after one outage spread out instead of arriving in step. */
unsigned timeutil_jitter(unsigned d, unsigned *seed);

/* A jitter seed of its own for object `p` in this process. */
unsigned timeutil_jitter_seed(const void *p);

/* The number of the period of `unit` ms (an hour, a UTC day) that `ms` since
 * the epoch falls in, counted from the epoch: a floor division, so that times
 * before 1970 fall in negative periods. */
int64_t timeutil_period(int64_t ms, int64_t unit);

/* Days since 1970-01-01 of a proleptic Gregorian date (y-m-d, not checked),
 * and back (Howard Hinnant's algorithms). */
int64_t timeutil_days_from_civil(int64_t y, unsigned m, unsigned d);
void timeutil_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* Parses exactly "YYYY-MM-DD" (a real date, years 1900..9999) into days since
 * 1970-01-01. */
bool timeutil_parse_date(const char *s, int64_t *days);

/* Formats days since 1970-01-01 as "YYYY-MM-DD" (`out` >= 11 bytes). */
void timeutil_format_date(int64_t days, char *out, size_t outlen);

#endif
