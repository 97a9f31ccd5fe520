/* Answer cache: 4-way sets by FNV-1a of the key, the entry nearest expiry evicted. */
#include "qcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QCACHE_WAYS 4

struct qcache {
    uint64_t ttl_ms;              /* 0: off */
    unsigned nsets;               /* sets of QCACHE_WAYS */
    struct qcache_entry *entries; /* nsets * QCACHE_WAYS */
};

struct qcache *qcache_new(unsigned capacity, uint64_t ttl_ms)
{
    struct qcache *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->ttl_ms = ttl_ms;
    c->nsets = capacity / QCACHE_WAYS ? capacity / QCACHE_WAYS : 1;
    c->entries = calloc((size_t)c->nsets * QCACHE_WAYS, sizeof(*c->entries));
    if (!c->entries) {
        free(c);
        return NULL;
    }
    return c;
}

void qcache_free(struct qcache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < (size_t)c->nsets * QCACHE_WAYS; i++)
        free(c->entries[i].body);
    free(c->entries);
    free(c);
}

static struct qcache_entry *qcache_set(struct qcache *c, const char *key)
{
    uint64_t h = 1469598103934665603ull;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return &c->entries[(size_t)(h % c->nsets) * QCACHE_WAYS];
}

const struct qcache_entry *qcache_get(struct qcache *c, const char *key, uint64_t now_ms)
{
    struct qcache_entry *set;

    if (c->ttl_ms == 0)
        return NULL;
    set = qcache_set(c, key);
    for (int w = 0; w < QCACHE_WAYS; w++) {
        if (set[w].used && strcmp(set[w].key, key) == 0)
            return now_ms < set[w].expires_ms ? &set[w] : NULL;
    }
    return NULL;
}

void qcache_put(struct qcache *c, const char *key, uint64_t now_ms, const char *body, size_t len,
                bool csv, const char *complete_until)
{
    struct qcache_entry *set, *e = NULL;
    char *copy;

    if (c->ttl_ms == 0 || len > QCACHE_BODY_MAX || strlen(key) >= QCACHE_KEY_MAX)
        return;
    set = qcache_set(c, key);
    for (int w = 0; w < QCACHE_WAYS && !e; w++) {
        if (set[w].used && strcmp(set[w].key, key) == 0)
            e = &set[w];
    }
    for (int w = 0; w < QCACHE_WAYS && !e; w++) {
        if (!set[w].used)
            e = &set[w];
    }
    if (!e) {
        e = &set[0];
        for (int w = 1; w < QCACHE_WAYS; w++) {
            if (set[w].expires_ms < e->expires_ms)
                e = &set[w];
        }
    }
    copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, body, len);
    copy[len] = '\0';
    free(e->body);
    e->body = copy;
    e->len = len;
    e->used = true;
    e->csv = csv;
    e->expires_ms = now_ms + c->ttl_ms;
    snprintf(e->key, sizeof(e->key), "%s", key);
    snprintf(e->complete_until, sizeof(e->complete_until), "%s",
             complete_until ? complete_until : "");
}
