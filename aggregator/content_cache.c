/* Content registry cache: a chained hash map of id and unique-id keys with an
 * LRU list, per-entry expiry, and the list of keys the current batch uses. */
#include "content_cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct cc_entry {
    struct cc_entry *hnext;               /* hash chain */
    struct cc_entry *lru_prev, *lru_next; /* most recently used first */
    struct cc_entry *batch_next;          /* next key of the current batch */
    uint64_t hash;
    char *uid; /* the key when a unique id, owned; NULL for an id key */
    size_t uid_len;
    int64_t id; /* the key when an id key; the content id once known */
    int64_t project_id;
    int64_t company_id;
    bool known;          /* found in the registry at the last read */
    uint64_t expires_ms; /* read again from then on; 0: read next time */
    uint64_t batch_gen;  /* == the cache's gen: used by the current batch */
};

struct content_cache {
    struct cc_entry **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    size_t capacity;
    long ttl_ms;
    struct cc_entry *lru_head, *lru_tail;
    struct cc_entry *batch; /* keys of the current batch */
    uint64_t gen;
    struct content_cache_stats stats;
    struct strbuf ids, uids; /* array literals of one refresh */
};

/* FNV-1a over the key kind and bytes. */
static uint64_t key_hash(const char *uid, size_t len, int64_t id)
{
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = uid ? (const unsigned char *)uid : (const unsigned char *)&id;
    size_t n = uid ? len : sizeof(id);

    h = (h ^ (uid ? 'u' : 'i')) * 1099511628211ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

struct content_cache *content_cache_new(size_t capacity, long ttl_ms)
{
    struct content_cache *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->nbuckets = 1024;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->capacity = capacity > 0 ? capacity : 1;
    c->ttl_ms = ttl_ms;
    c->gen = 1;
    strbuf_init(&c->ids);
    strbuf_init(&c->uids);
    return c;
}

void content_cache_free(struct content_cache *c)
{
    struct cc_entry *e, *next;

    if (!c)
        return;
    for (e = c->lru_head; e; e = next) {
        next = e->lru_next;
        free(e->uid);
        free(e);
    }
    free(c->buckets);
    strbuf_deinit(&c->ids);
    strbuf_deinit(&c->uids);
    free(c);
}

void content_cache_begin(struct content_cache *c)
{
    c->gen++;
    c->batch = NULL;
}

static bool entry_matches(const struct cc_entry *e, uint64_t hash, const char *uid, size_t len,
                          int64_t id)
{
    if (e->hash != hash || (e->uid != NULL) != (uid != NULL))
        return false;
    return uid ? e->uid_len == len && memcmp(e->uid, uid, len) == 0 : e->id == id;
}

static struct cc_entry *find(const struct content_cache *c, const char *uid, size_t len, int64_t id)
{
    uint64_t h = key_hash(uid, len, id);

    for (struct cc_entry *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->hnext)
        if (entry_matches(e, h, uid, len, id))
            return e;
    return NULL;
}

static void lru_unlink(struct content_cache *c, struct cc_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct content_cache *c, struct cc_entry *e)
{
    e->lru_next = c->lru_head;
    e->lru_prev = NULL;
    if (c->lru_head)
        c->lru_head->lru_prev = e;
    c->lru_head = e;
    if (!c->lru_tail)
        c->lru_tail = e;
}

static void hash_unlink(struct content_cache *c, struct cc_entry *e)
{
    struct cc_entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

/* Doubles the bucket array; keeps the old one if that fails. */
static void grow(struct content_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct cc_entry **b = calloc(n, sizeof(*b));

    if (!b)
        return;
    for (struct cc_entry *e = c->lru_head; e; e = e->lru_next) {
        e->hnext = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

/* Drops least recently used entries over capacity, never one the current
 * batch uses (those are the most recent, so the walk stops at the first). */
static void evict(struct content_cache *c)
{
    while (c->count > c->capacity && c->lru_tail && c->lru_tail->batch_gen != c->gen) {
        struct cc_entry *e = c->lru_tail;
        lru_unlink(c, e);
        hash_unlink(c, e);
        free(e->uid);
        free(e);
        c->count--;
    }
}

static int note(struct content_cache *c, const char *uid, size_t len, int64_t id)
{
    struct cc_entry *e = find(c, uid, len, id);

    if (!e) {
        if (!(e = calloc(1, sizeof(*e))))
            return -ENOMEM;
        if (uid) {
            if (!(e->uid = malloc(len + 1))) {
                free(e);
                return -ENOMEM;
            }
            memcpy(e->uid, uid, len);
            e->uid[len] = '\0';
            e->uid_len = len;
        } else {
            e->id = id;
        }
        e->hash = key_hash(uid, len, id);
        e->hnext = c->buckets[e->hash & (c->nbuckets - 1)];
        c->buckets[e->hash & (c->nbuckets - 1)] = e;
        c->count++;
    } else {
        lru_unlink(c, e);
    }
    lru_push_front(c, e);
    /* After the push: grow() rebuilds the buckets from the LRU list, which
     * must hold the new entry too. */
    if (c->count > c->nbuckets)
        grow(c);
    if (e->batch_gen != c->gen) {
        e->batch_gen = c->gen;
        e->batch_next = c->batch;
        c->batch = e;
    }
    evict(c);
    return 0;
}

int content_cache_note_id(struct content_cache *c, int64_t id)
{
    return note(c, NULL, 0, id);
}

int content_cache_note_uid(struct content_cache *c, const char *uid, size_t len)
{
    return note(c, uid, len, 0);
}

/* Appends `s` as an element of a PostgreSQL array literal. */
static void array_elem(struct strbuf *sb, const char *s, size_t n)
{
    strbuf_putc(sb, sb->len > 1 ? ',' : '{');
    strbuf_putc(sb, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            strbuf_putc(sb, '\\');
        strbuf_putc(sb, s[i]);
    }
    strbuf_putc(sb, '"');
}

PGresult *content_cache_refresh(struct content_cache *c, PGconn *conn, const char *relation,
                                uint64_t now_ms, bool *oom)
{
    struct strbuf sql;
    const char *params[2];
    PGresult *res = NULL;
    size_t want = 0;

    *oom = false;
    strbuf_reset(&c->ids);
    strbuf_reset(&c->uids);
    for (struct cc_entry *e = c->batch; e; e = e->batch_next) {
        if (e->expires_ms != 0 && e->expires_ms > now_ms) {
            c->stats.hits++;
            continue;
        }
        c->stats.misses++;
        want++;
        if (e->uid) {
            array_elem(&c->uids, e->uid, e->uid_len);
        } else {
            strbuf_putc(&c->ids, c->ids.len > 0 ? ',' : '{');
            strbuf_printf(&c->ids, "%" PRId64, e->id);
        }
    }
    if (want == 0)
        return NULL;
    strbuf_puts(&c->ids, c->ids.len > 0 ? "}" : "{}");
    strbuf_puts(&c->uids, c->uids.len > 0 ? "}" : "{}");
    strbuf_init(&sql);
    strbuf_printf(&sql,
                  "SELECT id, unique_id, project_id, company_id FROM %s"
                  " WHERE id = ANY($1::bigint[]) OR unique_id = ANY($2::text[])",
                  relation);
    if (sql.oom || c->ids.oom || c->uids.oom) {
        *oom = true;
        goto out;
    }
    params[0] = c->ids.data;
    params[1] = c->uids.data;
    c->stats.queries++;
    res = PQexecParams(conn, sql.data, 2, NULL, params, NULL, NULL, 0);
    if (!res) {
        *oom = true; /* libpq could not even make a result: never "all unknown" */
        goto out;
    }
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        goto out; /* the caller reads the error */

    /* Everything asked is unknown, and asked again next time, until a row
     * says otherwise. */
    for (struct cc_entry *e = c->batch; e; e = e->batch_next) {
        if (e->expires_ms != 0 && e->expires_ms > now_ms)
            continue;
        e->known = false;
        e->expires_ms = 0;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        int64_t project = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        int64_t company = strtoll(PQgetvalue(res, r, 3), NULL, 10);
        struct cc_entry *hits[2] = {find(c, NULL, 0, id), NULL};

        if (!PQgetisnull(res, r, 1))
            hits[1] = find(c, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1), 0);
        for (int k = 0; k < 2; k++) {
            struct cc_entry *e = hits[k];
            if (!e || e->batch_gen != c->gen)
                continue;
            e->known = true;
            e->id = id;
            e->project_id = project;
            e->company_id = company;
            e->expires_ms = now_ms + (uint64_t)c->ttl_ms;
        }
    }
    PQclear(res);
    res = NULL;
out:
    strbuf_deinit(&sql);
    return res;
}

bool content_cache_lookup_id(const struct content_cache *c, int64_t id, int64_t *project_id,
                             int64_t *company_id)
{
    const struct cc_entry *e = find(c, NULL, 0, id);

    if (!e || !e->known)
        return false;
    *project_id = e->project_id;
    *company_id = e->company_id;
    return true;
}

bool content_cache_lookup_uid(const struct content_cache *c, const char *uid, size_t len,
                              int64_t *id, int64_t *project_id, int64_t *company_id)
{
    const struct cc_entry *e = find(c, uid, len, 0);

    if (!e || !e->known)
        return false;
    *id = e->id;
    *project_id = e->project_id;
    *company_id = e->company_id;
    return true;
}

void content_cache_stats(const struct content_cache *c, struct content_cache_stats *out)
{
    *out = c->stats;
    out->size = c->count;
}
