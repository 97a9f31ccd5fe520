/* Clock readings in milliseconds and seconds; calendar date arithmetic. */
#include "timeutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t timeutil_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t timeutil_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

double timeutil_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t timeutil_real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timeval timeutil_tv(uint64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000),
                            .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

int64_t timeutil_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void timeutil_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

bool timeutil_parse_date(const char *s, int64_t *days)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned v[8];

    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0, j = 0; i < 10; i++) {
        if (i == 4 || i == 7)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return false;
        v[j++] = (unsigned)(s[i] - '0');
    }
    unsigned y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
    unsigned m = v[4] * 10 + v[5];
    unsigned d = v[6] * 10 + v[7];
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1900 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap))
        return false;
    *days = timeutil_days_from_civil(y, m, d);
    return true;
}

void timeutil_format_date(int64_t days, char *out, size_t outlen)
{
    int64_t y;
    unsigned m, d;
    timeutil_civil_from_days(days, &y, &m, &d);
    snprintf(out, outlen, "%04" PRId64 "-%02u-%02u", y, m, d);
}

int64_t timeutil_period(int64_t ms, int64_t unit)
{
    return ms >= 0 ? ms / unit : -1 - (-(ms + 1)) / unit; /* no overflow at INT64_MIN */
}

unsigned timeutil_jitter(unsigned d, unsigned *seed)
{
    return d / 2 + (unsigned)(rand_r(seed) % (d / 2 + 1));
}

unsigned timeutil_jitter_seed(const void *p)
{
    return (unsigned)timeutil_mono_ms() ^ (unsigned)getpid() ^ (unsigned)(uintptr_t)p;
}
