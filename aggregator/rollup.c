/* Rollup deltas of one batch write: hash-grouped sums and HLL sketches. Pure. */
#include "rollup.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "hll.h"
#include "timeutil.h"

void rollup_init(struct rollup *r)
{
    memset(r, 0, sizeof(*r));
    r->hourly.stride = 1;
    r->derived.stride = 1;
    r->breakdown.stride = BATCH_DIMS;
}

static void table_free(struct rollup_table *t)
{
    unsigned stride = t->stride;

    free(t->groups);
    free(t->slots);
    free(t->member);
    free(t->hash);
    free(t->order);
    free(t->scratch);
    memset(t, 0, sizeof(*t));
    t->stride = stride;
}

void rollup_deinit(struct rollup *r)
{
    table_free(&r->hourly);
    table_free(&r->breakdown);
    table_free(&r->derived);
    free(r->caps.keys);
    free(r->caps.slots);
    free(r->caps.group_key);
    free(r->caps.state);
    free(r->caps.idx);
    free(r->caps.write_keys);
    free(r->caps.stored);
    memset(&r->caps, 0, sizeof(r->caps));
}

static void table_reset(struct rollup_table *t)
{
    t->n = 0;
    t->nadded = 0;
    if (t->nslots)
        memset(t->slots, 0, t->nslots * sizeof(*t->slots));
}

void rollup_reset(struct rollup *r)
{
    table_reset(&r->hourly);
    table_reset(&r->breakdown);
}

static uint64_t key_hash(const struct rollup_group *g)
{
    uint64_t h = strbuf_mix64((uint64_t)g->period ^ ((uint64_t)g->dim << 32 | g->value));

    h = strbuf_mix64(h ^ (uint64_t)g->content_id);
    h = strbuf_mix64(h ^ (uint64_t)g->project_id);
    return strbuf_mix64(h ^ (uint64_t)g->company_id);
}

static bool same_key(const struct rollup_group *a, const struct rollup_group *b)
{
    return a->company_id == b->company_id && a->content_id == b->content_id &&
           a->project_id == b->project_id && a->period == b->period && a->dim == b->dim &&
           a->value == b->value;
}

/* Doubles the slots and places every group again. */
static int table_grow(struct rollup_table *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *slots = calloc(n, sizeof(*slots));

    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = key_hash(&t->groups[i]) & (n - 1);
        while (slots[k])
            k = (k + 1) & (n - 1);
        slots[k] = (uint32_t)i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return 0;
}

/* Starts loading the slot that a key of `hash` probes first, and its group
 * when `group` (the slot must be loaded by then): an event's six breakdown
 * lookups then miss the cache together instead of one after another. */
static void table_prefetch(const struct rollup_table *t, uint64_t hash, bool group)
{
    const uint32_t *slot;

    if (!t->nslots)
        return;
    slot = &t->slots[hash & (t->nslots - 1)];
    if (!group)
        __builtin_prefetch(slot);
    else if (*slot)
        __builtin_prefetch(&t->groups[*slot - 1]);
}

/* The index of the group with `key`'s key fields (`hash`: key_hash(key)),
 * added as a copy of `key` (*added set) if new; -1 if out of memory. */
static long table_group(struct rollup_table *t, const struct rollup_group *key, uint64_t hash,
                        bool *added)
{
    size_t k;

    *added = false;
    if (2 * (t->n + 1) > t->nslots && table_grow(t) < 0)
        return -1;
    for (k = hash & (t->nslots - 1); t->slots[k]; k = (k + 1) & (t->nslots - 1)) {
        if (same_key(&t->groups[t->slots[k] - 1], key))
            return t->slots[k] - 1;
    }
    *added = true;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        struct rollup_group *p = realloc(t->groups, cap * sizeof(*p));
        if (!p)
            return -1;
        t->groups = p;
        t->cap = cap;
    }
    t->groups[t->n] = *key;
    t->slots[k] = (uint32_t)t->n + 1;
    return (long)t->n++;
}

/* Makes room for `pairs` (group, hash) pairs in all. Returns 0 or -ENOMEM. */
static int table_reserve(struct rollup_table *t, size_t pairs)
{
    uint32_t *m;
    uint64_t *h;

    if (pairs <= t->added_cap)
        return 0;
    if (pairs > UINT32_MAX)
        return -ENOMEM;
    if (!(m = realloc(t->member, pairs * sizeof(*m))))
        return -ENOMEM;
    t->member = m;
    if (!(h = realloc(t->hash, (pairs / t->stride + 1) * sizeof(*h))))
        return -ENOMEM;
    t->hash = h;
    t->added_cap = pairs;
    return 0;
}

/* Adds a session hash to group `gi`: in a table of stride k, the k pairs of
 * one event are added in a row with the same hash, kept once. Returns 0 or
 * -ENOMEM. */
static int table_hash(struct rollup_table *t, long gi, uint64_t session_hash)
{
    if (t->nadded == t->added_cap &&
        table_reserve(t, t->added_cap ? t->added_cap * 2 : 1024 * t->stride) < 0)
        return -ENOMEM;
    if (t->nadded % t->stride == 0)
        t->hash[t->nadded / t->stride] = session_hash;
    t->member[t->nadded++] = (uint32_t)gi;
    return 0;
}

int rollup_reserve(struct rollup *r, size_t events)
{
    if (table_reserve(&r->hourly, events) < 0 || table_reserve(&r->derived, events) < 0 ||
        table_reserve(&r->breakdown, events * BATCH_DIMS) < 0)
        return -ENOMEM;
    return 0;
}

size_t rollup_group_bytes(const struct rollup *r)
{
    /* A group and its two slots (the table stays at most half full); the
     * derived groups are as many as the hourly ones at most. */
    return (r->hourly.n * 2 + r->breakdown.n) *
           (sizeof(struct rollup_group) + 2 * sizeof(uint32_t));
}

/* Adds `v`'s measures to `g`. */
static void add_measures(struct rollup_group *g, const struct rollup_group *v)
{
    g->views += v->views;
    g->video_plays += v->video_plays;
    g->duration_sum += v->duration_sum;
    g->duration_count += v->duration_count;
    for (int q = 0; q <= BATCH_TQ_OTHER; q++)
        g->tq[q] += v->tq[q];
}

int rollup_add(struct rollup *r, struct batch *b, size_t i)
{
    const struct batch_entry *e = &b->entries[i];
    uint32_t dims[BATCH_DIMS];
    struct rollup_group key = {.company_id = e->company_id,
                               .project_id = e->project_id,
                               .content_id = e->ar_content_id,
                               .period = timeutil_period(e->received_ms, TIMEUTIL_DAY_MS),
                               .views = 1};
    struct rollup_group hour = key;
    uint64_t hash[BATCH_DIMS];
    long gi;
    bool added;

    if (batch_intern_dims(b, i, dims) < 0)
        return -ENOMEM;
    /* The breakdown groups' slots load while the hourly group is found. */
    for (uint32_t d = 0; d < BATCH_DIMS; d++) {
        key.dim = d;
        key.value = dims[d];
        hash[d] = key_hash(&key);
        table_prefetch(&r->breakdown, hash[d], false);
    }

    hour.period = timeutil_period(e->received_ms, TIMEUTIL_HOUR_MS);
    hour.video_plays = e->video_played;
    hour.duration_sum = e->duration >= 0 ? e->duration : 0;
    hour.duration_count = e->duration >= 0;
    hour.tq[e->tq] = 1;
    if ((gi = table_group(&r->hourly, &hour, key_hash(&hour), &added)) < 0 ||
        table_hash(&r->hourly, gi, e->session_hash) < 0)
        return -ENOMEM;
    if (!added)
        add_measures(&r->hourly.groups[gi], &hour);

    for (uint32_t d = 0; d < BATCH_DIMS; d++)
        table_prefetch(&r->breakdown, hash[d], true);
    for (uint32_t d = 0; d < BATCH_DIMS; d++) {
        key.dim = d;
        key.value = dims[d];
        if ((gi = table_group(&r->breakdown, &key, hash[d], &added)) < 0 ||
            table_hash(&r->breakdown, gi, e->session_hash) < 0)
            return -ENOMEM;
        if (!added)
            r->breakdown.groups[gi].views++;
    }
    return 0;
}

/* Orders the added pairs by group into `order` (a counting sort), setting
 * every group's first and nhashes, and makes `scratch` room for the largest
 * group's hashes. */
static int table_sort(struct rollup_table *t)
{
    size_t largest = 0;

    if (t->nadded > t->order_cap) {
        uint32_t *p = realloc(t->order, t->nadded * sizeof(*p));
        if (!p)
            return -ENOMEM;
        t->order = p;
        t->order_cap = t->nadded;
    }
    for (size_t i = 0; i < t->n; i++)
        t->groups[i].nhashes = 0;
    for (size_t i = 0; i < t->nadded; i++)
        t->groups[t->member[i]].nhashes++;
    for (size_t i = 0, at = 0; i < t->n; i++) {
        t->groups[i].first = at;
        at += t->groups[i].nhashes;
        if (t->groups[i].nhashes > largest)
            largest = t->groups[i].nhashes;
        t->groups[i].nhashes = 0; /* counts again as the hashes are placed */
    }
    if (largest > t->scratch_cap) {
        uint64_t *p = realloc(t->scratch, largest * sizeof(*p));
        if (!p)
            return -ENOMEM;
        t->scratch = p;
        t->scratch_cap = largest;
    }
    for (size_t i = 0; i < t->nadded; i++) {
        struct rollup_group *g = &t->groups[t->member[i]];
        t->order[g->first + g->nhashes++] = (uint32_t)i;
    }
    return 0;
}

/* The session hash of the j-th pair of group `g` (after table_sort). */
static uint64_t group_hash(const struct rollup_table *t, const struct rollup_group *g, size_t j)
{
    return t->hash[t->order[g->first + j] / t->stride];
}

/* Writes group `g`'s session sketch as a binary COPY field (after table_sort). */
static void put_sketch(struct strbuf *out, struct rollup_table *t, const struct rollup_group *g)
{
    size_t n;

    for (size_t j = 0; j < g->nhashes; j++)
        t->scratch[j] = group_hash(t, g, j);
    n = hll_prepare(t->scratch, g->nhashes);
    copy_bin_len(out, hll_sketch_size(n));
    hll_write_sketch(t->scratch, n, out);
}

/* The columns of ROLLUP_MEASURE_ROW_COLUMNS and ROLLUP_BREAKDOWN_ROW_COLUMNS. */
#define MEASURE_FIELDS   15
#define BREAKDOWN_FIELDS 8

static void put_measures_row(struct strbuf *out, enum rollup_kind kind, struct rollup_table *t,
                             const struct rollup_group *g)
{
    bool hourly = kind == ROLLUP_CONTENT_HOURLY || kind == ROLLUP_COMPANY_HOURLY;

    copy_bin_tuple(out, MEASURE_FIELDS);
    copy_bin_int4(out, kind);
    copy_bin_time_ms(out, g->period * (hourly ? TIMEUTIL_HOUR_MS : TIMEUTIL_DAY_MS));
    copy_bin_int8(out, g->company_id);
    if (g->content_id) {
        copy_bin_int8(out, g->project_id);
        copy_bin_int8(out, g->content_id);
    } else {
        copy_bin_null(out);
        copy_bin_null(out);
    }
    copy_bin_int8(out, g->views);
    put_sketch(out, t, g);
    copy_bin_int8(out, g->video_plays);
    copy_bin_int8(out, g->duration_sum);
    copy_bin_int8(out, g->duration_count);
    for (int q = 0; q <= BATCH_TQ_OTHER; q++)
        copy_bin_int8(out, g->tq[q]);
}

/* Fills r->derived with the groups of `kind` summed from the hourly groups
 * (sorted by rollup_write_measures). */
static int derive(struct rollup *r, enum rollup_kind kind)
{
    struct rollup_table *d = &r->derived;

    table_reset(d);
    for (size_t i = 0; i < r->hourly.n; i++) {
        const struct rollup_group *h = &r->hourly.groups[i];
        struct rollup_group key = *h;
        bool added;
        long gi;

        if (kind == ROLLUP_CONTENT_DAILY || kind == ROLLUP_COMPANY_DAILY)
            key.period = timeutil_period(h->period * TIMEUTIL_HOUR_MS, TIMEUTIL_DAY_MS);
        if (kind == ROLLUP_COMPANY_HOURLY || kind == ROLLUP_COMPANY_DAILY)
            key.project_id = key.content_id = 0;
        if ((gi = table_group(d, &key, key_hash(&key), &added)) < 0)
            return -ENOMEM;
        if (!added)
            add_measures(&d->groups[gi], h);
        for (size_t j = 0; j < h->nhashes; j++) {
            if (table_hash(d, gi, group_hash(&r->hourly, h, j)) < 0)
                return -ENOMEM;
        }
    }
    return table_sort(d);
}

/* After a row: out of memory, or the drain's answer once `out` is full. */
static int row_done(struct strbuf *out, rollup_drain_fn drain, void *arg)
{
    if (out->oom)
        return -ENOMEM;
    return drain && out->len >= ROLLUP_PIECE ? drain(arg) : 0;
}

int rollup_write_measures(struct rollup *r, struct strbuf *out, rollup_drain_fn drain, void *arg)
{
    int rc = 0;

    if (table_sort(&r->hourly) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < r->hourly.n && rc == 0; i++) {
        put_measures_row(out, ROLLUP_CONTENT_HOURLY, &r->hourly, &r->hourly.groups[i]);
        rc = row_done(out, drain, arg);
    }
    for (int kind = ROLLUP_CONTENT_DAILY; kind < ROLLUP_KINDS && rc == 0; kind++) {
        if (derive(r, (enum rollup_kind)kind) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < r->derived.n && rc == 0; i++) {
            put_measures_row(out, (enum rollup_kind)kind, &r->derived, &r->derived.groups[i]);
            rc = row_done(out, drain, arg);
        }
    }
    return rc;
}

/* ---- The breakdown value cap ---- */

enum { CAP_NEW, CAP_STORED, CAP_FOLD };

static uint64_t bkey_hash(int64_t company_id, int64_t content_id, int64_t period, uint32_t dim)
{
    uint64_t h = strbuf_mix64((uint64_t)period ^ ((uint64_t)dim << 32));

    h = strbuf_mix64(h ^ (uint64_t)content_id);
    return strbuf_mix64(h ^ (uint64_t)company_id);
}

static bool bkey_is(const struct rollup_bkey *k, const struct rollup_group *g)
{
    return k->company_id == g->company_id && k->content_id == g->content_id &&
           k->period == g->period && k->dim == g->dim;
}

/* The index of group `g`'s key in the cap's memory, added if new; -1 if out
 * of memory. */
static long caps_key(struct rollup_caps *c, const struct rollup_group *g)
{
    size_t k;

    if (2 * (c->n + 1) > c->nslots) {
        size_t n = c->nslots ? c->nslots * 2 : 1024;
        uint32_t *slots = calloc(n, sizeof(*slots));
        if (!slots)
            return -1;
        for (size_t i = 0; i < c->n; i++) {
            const struct rollup_bkey *e = &c->keys[i];
            for (k = bkey_hash(e->company_id, e->content_id, e->period, e->dim) & (n - 1); slots[k];
                 k = (k + 1) & (n - 1))
                ;
            slots[k] = (uint32_t)i + 1;
        }
        free(c->slots);
        c->slots = slots;
        c->nslots = n;
    }
    for (k = bkey_hash(g->company_id, g->content_id, g->period, g->dim) & (c->nslots - 1);
         c->slots[k]; k = (k + 1) & (c->nslots - 1)) {
        if (bkey_is(&c->keys[c->slots[k] - 1], g))
            return c->slots[k] - 1;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct rollup_bkey *p = realloc(c->keys, cap * sizeof(*p));
        if (!p)
            return -1;
        c->keys = p;
        c->cap = cap;
    }
    c->keys[c->n] = (struct rollup_bkey){.company_id = g->company_id,
                                         .content_id = g->content_id,
                                         .period = g->period,
                                         .dim = g->dim};
    c->slots[k] = (uint32_t)c->n + 1;
    return (long)c->n++;
}

/* Room for `n` groups' scratch. */
static int caps_scratch(struct rollup_caps *c, size_t n)
{
    uint32_t *gk, *idx, *wk;
    uint8_t *st;

    if (n <= c->scratch_cap)
        return 0;
    if (!(gk = realloc(c->group_key, n * sizeof(*gk))))
        return -ENOMEM;
    c->group_key = gk;
    if (!(st = realloc(c->state, n * sizeof(*st))))
        return -ENOMEM;
    c->state = st;
    if (!(idx = realloc(c->idx, n * sizeof(*idx))))
        return -ENOMEM;
    c->idx = idx;
    if (!(wk = realloc(c->write_keys, n * sizeof(*wk))))
        return -ENOMEM;
    c->write_keys = wk;
    c->scratch_cap = n;
    return 0;
}

struct cap_mark {
    struct rollup_caps *c;
    const struct batch *b;
};

/* A value stored for key `key`: noted if this write has it (under any
 * project: content may move to another one within a write). */
static void cap_mark_stored(void *arg, uint32_t key, const char *value, size_t len)
{
    struct cap_mark *m = arg;
    struct rollup_caps *c = m->c;
    int64_t id = batch_find_value(m->b, value, len);

    if (id < 0)
        return;
    if (c->nstored == c->stored_cap) {
        size_t cap = c->stored_cap ? c->stored_cap * 2 : 256;
        uint64_t *p = realloc(c->stored, cap * sizeof(*p));
        if (!p) {
            c->oom = true;
            return;
        }
        c->stored = p;
        c->stored_cap = cap;
    }
    c->stored[c->nstored++] = (uint64_t)key << 32 | (uint32_t)id;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Moves the groups marked CAP_FOLD among the first `n` into their key's
 * group of value `other`: views added, pairs moved; the emptied groups keep 0
 * views and are not written. */
static int fold_groups(struct rollup_table *t, const uint8_t *state, size_t n, uint32_t other)
{
    uint32_t *map = malloc(n * sizeof(*map));
    bool added;

    if (!map)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        map[i] = (uint32_t)i;
        if (state[i] != CAP_FOLD)
            continue;
        struct rollup_group key = t->groups[i];
        key.value = other;
        key.views = 0;
        long gi = table_group(t, &key, key_hash(&key), &added);
        if (gi < 0) {
            free(map);
            return -ENOMEM;
        }
        t->groups[gi].views += t->groups[i].views;
        t->groups[i].views = 0;
        map[i] = (uint32_t)gi;
    }
    for (size_t p = 0; p < t->nadded; p++) {
        if (t->member[p] < n)
            t->member[p] = map[t->member[p]];
    }
    free(map);
    return 0;
}

int rollup_cap_breakdown(struct rollup *r, const struct batch *b, unsigned max_values,
                         const struct rollup_cap_source *src)
{
    struct rollup_caps *c = &r->caps;
    struct rollup_table *t = &r->breakdown;
    size_t n = t->n, nkeys = 0, nask = 0, ncapped = 0, nfold = 0;
    /* A client may name a value (other) itself: the same row, so the same group. */
    int64_t named = batch_find_value(b, ROLLUP_OTHER_TEXT, sizeof(ROLLUP_OTHER_TEXT) - 1);
    uint32_t other = named >= 0 ? (uint32_t)named : ROLLUP_OTHER_VALUE;
    int rc;

    if (max_values == 0 || n == 0)
        return 0;
    if (c->n + n > ROLLUP_CAP_KEYS) { /* this write's keys are at most its groups */
        c->n = 0;
        memset(c->slots, 0, c->nslots * sizeof(*c->slots));
    }
    if (caps_scratch(c, n) < 0)
        return -ENOMEM;
    c->stamp++;
    /* Each key's distinct values in this write (a group per value). */
    for (size_t i = 0; i < n; i++) {
        const struct rollup_group *g = &t->groups[i];
        c->state[i] = CAP_STORED; /* (other) always keeps its row */
        c->group_key[i] = UINT32_MAX;
        if (g->value == other)
            continue;
        long k = caps_key(c, g);
        if (k < 0)
            return -ENOMEM;
        struct rollup_bkey *e = &c->keys[k];
        if (e->stamp != c->stamp) {
            e->stamp = c->stamp;
            e->distinct = 0;
            e->capped = false;
            c->write_keys[nkeys++] = (uint32_t)k;
        }
        e->distinct++;
        c->group_key[i] = (uint32_t)k;
        c->state[i] = CAP_NEW;
    }
    /* Counted: keys not known, or that might pass half the cap with this
     * write. Past half, a key is counted at every write that has it, so that
     * other writers' values are seen before this one admits more: together
     * they pass the cap by what their batches in flight admit at most. */
    for (size_t j = 0; j < nkeys; j++) {
        const struct rollup_bkey *e = &c->keys[c->write_keys[j]];
        if (!e->known || e->upper + e->distinct > max_values / 2)
            c->idx[nask++] = c->write_keys[j];
    }
    if (nask > 0 && (rc = src->count(src->arg, c->keys, c->idx, nask)) < 0)
        return rc;
    for (size_t j = 0; j < nask; j++) {
        struct rollup_bkey *e = &c->keys[c->idx[j]];
        e->known = true;
        if (e->upper + e->distinct > max_values) {
            e->capped = true;
            c->idx[ncapped++] = c->idx[j];
        }
    }
    if (ncapped > 0) {
        /* Stored values keep their rows; new ones are admitted while there
         * is room, in the order the write first saw them. */
        struct cap_mark m = {.c = c, .b = b};
        c->nstored = 0;
        c->oom = false;
        if ((rc = src->values(src->arg, c->keys, c->idx, ncapped, cap_mark_stored, &m)) < 0)
            return rc;
        if (c->oom)
            return -ENOMEM;
        if (c->nstored > 0)
            qsort(c->stored, c->nstored, sizeof(*c->stored), cmp_u64);
        for (size_t i = 0; i < n; i++) {
            if (c->state[i] == CAP_STORED)
                continue;
            struct rollup_bkey *e = &c->keys[c->group_key[i]];
            if (!e->capped)
                continue;
            uint64_t mark = (uint64_t)c->group_key[i] << 32 | t->groups[i].value;
            if (c->nstored && bsearch(&mark, c->stored, c->nstored, sizeof(mark), cmp_u64))
                continue;
            if (e->upper < max_values) {
                e->upper++;
            } else {
                c->state[i] = CAP_FOLD;
                nfold++;
            }
        }
    }
    /* The others may have added every value: an upper bound until counted again. */
    for (size_t j = 0; j < nkeys; j++) {
        struct rollup_bkey *e = &c->keys[c->write_keys[j]];
        if (!e->capped)
            e->upper += e->distinct;
    }
    return nfold > 0 ? fold_groups(t, c->state, n, other) : 0;
}

int rollup_write_breakdown(struct rollup *r, const struct batch *b, struct strbuf *out,
                           rollup_drain_fn drain, void *arg)
{
    struct rollup_table *t = &r->breakdown;
    const char *value;
    size_t len;
    int rc = 0;

    if (table_sort(t) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        struct rollup_group *g = &t->groups[i];
        if (g->views == 0)
            continue; /* folded into its key's (other) */
        copy_bin_tuple(out, BREAKDOWN_FIELDS);
        copy_bin_int4(out, (int32_t)g->period);
        copy_bin_int8(out, g->company_id);
        copy_bin_int8(out, g->project_id);
        copy_bin_int8(out, g->content_id);
        copy_bin_opt_str(out, batch_dim_names[g->dim]);
        if (g->value == ROLLUP_OTHER_VALUE) { /* no group of a client's "(other)" */
            value = ROLLUP_OTHER_TEXT;
            len = sizeof(ROLLUP_OTHER_TEXT) - 1;
        } else {
            value = batch_value(b, g->value, &len);
        }
        copy_bin_bytes(out, value, len);
        copy_bin_int8(out, g->views);
        put_sketch(out, t, g);
        rc = row_done(out, drain, arg);
    }
    return rc;
}
