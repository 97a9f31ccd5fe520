/* Token buckets per key in a 4-way set-associative table. */
#include "ratelimit.h"

#include <math.h>
#include <stdlib.h>

#define RATELIMIT_WAYS 4

struct ratelimit_entry {
    int64_t key;      /* the API key's id */
    bool used;        /* slot holds a bucket */
    double tokens;    /* at last_ms */
    uint64_t last_ms; /* last refill */
};

struct ratelimit {
    double rate;                     /* tokens per second; 0: off */
    double burst;                    /* bucket size */
    unsigned nsets;                  /* sets of RATELIMIT_WAYS */
    struct ratelimit_entry *entries; /* nsets * RATELIMIT_WAYS */
};

struct ratelimit *ratelimit_new(double rate, double burst, unsigned capacity)
{
    struct ratelimit *rl = calloc(1, sizeof(*rl));

    if (!rl)
        return NULL;
    rl->rate = rate;
    rl->burst = burst < 1 ? 1 : burst;
    rl->nsets = capacity / RATELIMIT_WAYS ? capacity / RATELIMIT_WAYS : 1;
    rl->entries = calloc((size_t)rl->nsets * RATELIMIT_WAYS, sizeof(*rl->entries));
    if (!rl->entries) {
        free(rl);
        return NULL;
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (!rl)
        return;
    free(rl->entries);
    free(rl);
}

bool ratelimit_take(struct ratelimit *rl, int64_t key, uint64_t now_ms, unsigned *retry_after_s)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    struct ratelimit_entry *set = &rl->entries[(size_t)((h >> 32) % rl->nsets) * RATELIMIT_WAYS];
    struct ratelimit_entry *e = NULL;

    if (rl->rate <= 0)
        return true;
    for (int w = 0; w < RATELIMIT_WAYS && !e; w++) {
        if (set[w].used && set[w].key == key)
            e = &set[w];
    }
    if (!e) {
        /* A free slot, else the least recently used bucket of the set. */
        e = &set[0];
        for (int w = 0; w < RATELIMIT_WAYS; w++) {
            if (!set[w].used) {
                e = &set[w];
                break;
            }
            if (set[w].last_ms < e->last_ms)
                e = &set[w];
        }
        e->used = true;
        e->key = key;
        e->tokens = rl->burst;
        e->last_ms = now_ms;
    }
    if (now_ms > e->last_ms) {
        e->tokens += (double)(now_ms - e->last_ms) / 1000.0 * rl->rate;
        if (e->tokens > rl->burst)
            e->tokens = rl->burst;
        e->last_ms = now_ms;
    }
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
        return true;
    }
    *retry_after_s = (unsigned)ceil((1.0 - e->tokens) / rl->rate);
    if (*retry_after_s < 1)
        *retry_after_s = 1;
    return false;
}
