/* Token buckets keyed by client address in a set-associative table: a key hashes
 * to one set of RATE_LIMIT_WAYS slots; a new key takes the least recently seen
 * slot, and its bucket. */
#include "rate_limit.h"

#include <math.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

#define RATE_LIMIT_WAYS 8
#define RATE_LIMIT_KEY  64

struct rate_slot {
    char key[RATE_LIMIT_KEY]; /* client key */
    bool taken;               /* holds a key (else free) */
    double tokens;            /* tokens left at `seen_ms` */
    int64_t seen_ms;          /* last refill time */
    uint64_t used;            /* table clock at the last take: the LRU order */
};

struct rate_limit {
    pthread_mutex_t lock;    /* guards slots */
    uint64_t seed;           /* of the set hash: random, so that nobody can pick keys of one set */
    double rate;             /* tokens per ms */
    double burst;            /* bucket size */
    unsigned nsets;          /* sets of RATE_LIMIT_WAYS slots */
    uint64_t clock;          /* counts takes */
    struct rate_slot *slots; /* nsets * RATE_LIMIT_WAYS */
};

struct rate_limit *rate_limit_new(double rps, double burst, unsigned slots)
{
    if (!(rps > 0))
        return NULL;
    struct rate_limit *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    /* A client who knew which keys share a set could cycle more keys than
     * it holds through it, or push a chosen client's key out. */
    r->seed = strbuf_hash_seed(r);
    r->rate = rps / 1000.0;
    r->burst = burst >= 1 ? burst : (rps >= 1 ? rps : 1);
    r->nsets = slots / RATE_LIMIT_WAYS + (slots % RATE_LIMIT_WAYS ? 1 : 0);
    if (r->nsets == 0)
        r->nsets = 1;
    r->slots = calloc((size_t)r->nsets * RATE_LIMIT_WAYS, sizeof(*r->slots));
    if (!r->slots) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

bool rate_limit_take(struct rate_limit *r, const char *key, int64_t now_ms, unsigned *retry_after_s)
{
    char k[RATE_LIMIT_KEY];
    size_t n = strlen(key);
    if (n >= sizeof(k))
        n = sizeof(k) - 1;
    memcpy(k, key, n);
    k[n] = '\0';
    bool ok;

    pthread_mutex_lock(&r->lock);
    struct rate_slot *set =
        &r->slots[(size_t)(strbuf_hash64(k, strlen(k), r->seed) % r->nsets) * RATE_LIMIT_WAYS];
    struct rate_slot *s = NULL, *victim = &set[0];
    for (int i = 0; i < RATE_LIMIT_WAYS; i++) {
        if (set[i].taken && strcmp(set[i].key, k) == 0) {
            s = &set[i];
            break;
        }
        if (!set[i].taken || (victim->taken && set[i].used < victim->used))
            victim = &set[i];
    }
    if (!s) {
        /* A new key takes over the evicted one's bucket (refilled below for
         * the time since its last take): an idle one's is full again, and
         * keys cycled through one set, each evicting the next to come, share
         * its buckets instead of each arriving with a full one (unlimited).
         * Only a free slot starts full. */
        s = victim;
        memcpy(s->key, k, n + 1);
        if (!s->taken) {
            s->taken = true;
            s->tokens = r->burst;
            s->seen_ms = now_ms;
        }
    }
    s->used = ++r->clock;
    if (now_ms > s->seen_ms) {
        s->tokens += (double)(now_ms - s->seen_ms) * r->rate;
        if (s->tokens > r->burst)
            s->tokens = r->burst;
        s->seen_ms = now_ms;
    }
    ok = s->tokens >= 1.0;
    if (ok) {
        s->tokens -= 1.0;
    } else {
        double wait_s = (1.0 - s->tokens) / r->rate / 1000.0;
        unsigned w = (unsigned)ceil(wait_s);
        *retry_after_s = w ? w : 1;
    }
    pthread_mutex_unlock(&r->lock);
    return ok;
}

void rate_limit_free(struct rate_limit *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r->slots);
    free(r);
}
