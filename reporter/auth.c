/* Reporter authentication: Bearer token -> SHA-256 -> cached or looked-up key row. */
#include "auth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "pg_pool.h"
#include "query.h"
#include "rate_limit.h"
#include "timeutil.h"

#define AUTH_CACHE_CAPACITY 4096
#define AUTH_CACHE_WAYS     4
/* Clients whose lookups are counted at once (the oldest of a set forgotten). */
#define AUTH_LOOKUP_CLIENTS 4096
/* An unknown key is remembered briefly: enough to keep a client retrying a bad
 * key off the database, short enough that a key just created works at once. */
#define AUTH_NEGATIVE_TTL_S 5

#define AUTH_LOOKUP_SQL                                                                            \
    "SELECT key_hash, id, company_id, is_admin, revoked_at IS NOT NULL "                           \
    "FROM analytics.api_keys WHERE key_hash = $1"

enum auth_lookup_col {
    AUTH_COL_HASH,
    AUTH_COL_ID,
    AUTH_COL_COMPANY,
    AUTH_COL_ADMIN,
    AUTH_COL_REVOKED,
    AUTH_NCOLS
};

struct auth_cache_entry {
    char hash[API_KEY_HASH_HEX_LEN]; /* hex SHA-256, not NUL-terminated */
    bool used;                       /* slot holds an entry */
    enum auth_status status;         /* AUTH_OK, AUTH_UNKNOWN or AUTH_REVOKED */
    struct auth_principal principal; /* with AUTH_OK */
    uint64_t expires_ms;             /* monotonic; dead at or after it */
};

struct auth_cache {
    unsigned nsets;                   /* sets of AUTH_CACHE_WAYS entries */
    struct auth_cache_entry *entries; /* nsets * AUTH_CACHE_WAYS */
};

struct auth {
    struct pg_pool *pool;       /* borrowed */
    struct auth_cache *cache;   /* owned */
    struct rate_limit *lookups; /* owned: lookups per client; NULL: no limit */
    unsigned ttl_s;             /* see auth_cache_ttl_ms() */
    struct metric *cache_hit;   /* reporter_auth_cache_lookups_total{result="hit"} */
    struct metric *cache_miss;  /* ...{result="miss"} */
};

/* One database lookup in flight. */
struct auth_lookup {
    struct auth *a;                      /* borrowed */
    char hash[API_KEY_HASH_HEX_LEN + 1]; /* what was asked */
    auth_done_cb *cb;
    void *arg;
};

bool auth_bearer_token(const char *header, const char **tok, size_t *len)
{
    const char *p = header;
    size_t n;

    if (!p)
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return false;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    n = strcspn(p, " \t");
    if (n == 0)
        return false;
    /* Only trailing whitespace may follow the token. */
    if (p[n + strspn(p + n, " \t")] != '\0')
        return false;
    *tok = p;
    *len = n;
    return true;
}

const char *auth_status_name(enum auth_status s)
{
    switch (s) {
    case AUTH_OK:
        return "ok";
    case AUTH_MISSING:
        return "missing";
    case AUTH_MALFORMED:
        return "malformed";
    case AUTH_UNKNOWN:
        return "unknown";
    case AUTH_REVOKED:
        return "revoked";
    case AUTH_UNAVAILABLE:
        return "unavailable";
    case AUTH_FAILED:
        return "failed";
    case AUTH_LIMITED:
        return "limited";
    case AUTH_PENDING:
        return "pending";
    }
    return "invalid";
}

struct auth_cache *auth_cache_new(unsigned capacity)
{
    struct auth_cache *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->nsets = capacity / AUTH_CACHE_WAYS;
    if (c->nsets == 0)
        c->nsets = 1;
    c->entries = calloc((size_t)c->nsets * AUTH_CACHE_WAYS, sizeof(*c->entries));
    if (!c->entries) {
        free(c);
        return NULL;
    }
    return c;
}

void auth_cache_free(struct auth_cache *c)
{
    if (!c)
        return;
    free(c->entries);
    free(c);
}

/* The hash is uniformly distributed, so its first bits pick the set. */
static struct auth_cache_entry *auth_cache_set(struct auth_cache *c, const char *hash_hex)
{
    uint32_t v = 0;

    for (int i = 0; i < 8; i++) {
        char ch = hash_hex[i];
        uint32_t d = (ch >= '0' && ch <= '9') ? (uint32_t)(ch - '0') : (uint32_t)(ch - 'a' + 10);
        v = (v << 4) | (d & 0xf);
    }
    return &c->entries[(size_t)(v % c->nsets) * AUTH_CACHE_WAYS];
}

bool auth_cache_get(struct auth_cache *c, const char *hash_hex, uint64_t now_ms,
                    enum auth_status *status, struct auth_principal *p)
{
    struct auth_cache_entry *set = auth_cache_set(c, hash_hex);

    for (int w = 0; w < AUTH_CACHE_WAYS; w++) {
        struct auth_cache_entry *e = &set[w];
        if (!e->used || !api_key_equal(e->hash, hash_hex, API_KEY_HASH_HEX_LEN))
            continue;
        if (now_ms >= e->expires_ms) {
            e->used = false;
            return false;
        }
        *status = e->status;
        if (e->status == AUTH_OK && p)
            *p = e->principal;
        return true;
    }
    return false;
}

void auth_cache_put(struct auth_cache *c, const char *hash_hex, uint64_t now_ms, uint64_t ttl_ms,
                    enum auth_status status, const struct auth_principal *p)
{
    struct auth_cache_entry *set = auth_cache_set(c, hash_hex);
    struct auth_cache_entry *slot = NULL;

    if (ttl_ms == 0)
        return;
    /* The same key, else a free or dead slot, else the one closest to expiry. */
    for (int w = 0; w < AUTH_CACHE_WAYS; w++) {
        struct auth_cache_entry *e = &set[w];
        if (e->used && api_key_equal(e->hash, hash_hex, API_KEY_HASH_HEX_LEN)) {
            slot = e;
            break;
        }
        if (!e->used || now_ms >= e->expires_ms) {
            if (!slot || slot->used)
                slot = e;
        } else if (!slot || (slot->used && e->expires_ms < slot->expires_ms)) {
            slot = e;
        }
    }
    memcpy(slot->hash, hash_hex, API_KEY_HASH_HEX_LEN);
    slot->used = true;
    slot->status = status;
    memset(&slot->principal, 0, sizeof(slot->principal));
    if (status == AUTH_OK && p)
        slot->principal = *p;
    slot->expires_ms = now_ms + ttl_ms;
}

uint64_t auth_cache_ttl_ms(unsigned ttl_s, enum auth_status st)
{
    switch (st) {
    case AUTH_OK:
    case AUTH_REVOKED:
        return (uint64_t)ttl_s * 1000u;
    case AUTH_UNKNOWN:
        /* Short: a key created just after a failed attempt works soon. */
        return (uint64_t)(ttl_s < AUTH_NEGATIVE_TTL_S ? ttl_s : AUTH_NEGATIVE_TTL_S) * 1000u;
    default:
        return 0; /* a failure is asked again */
    }
}

struct auth *auth_new(struct pg_pool *pool, unsigned ttl_s, double lookup_rps, double lookup_burst,
                      struct metrics *m)
{
    struct auth *a = calloc(1, sizeof(*a));

    if (!a)
        return NULL;
    a->pool = pool;
    a->ttl_s = ttl_s;
    a->cache = auth_cache_new(AUTH_CACHE_CAPACITY);
    if (lookup_rps > 0)
        a->lookups = rate_limit_new(lookup_rps, lookup_burst, AUTH_LOOKUP_CLIENTS);
    if (!a->cache || (lookup_rps > 0 && !a->lookups)) {
        auth_free(a);
        return NULL;
    }
    if (m) {
        struct metric_family *f = metrics_counter(
            m, "reporter_auth_cache_lookups_total",
            "API key lookups answered by the cache (hit) or the database (miss)", "result");
        a->cache_hit = metric_family_child(f, (const char *const[]){"hit"});
        a->cache_miss = metric_family_child(f, (const char *const[]){"miss"});
    }
    return a;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    auth_cache_free(a->cache);
    rate_limit_free(a->lookups);
    free(a);
}

/* Turns the lookup row into a status; AUTH_FAILED if it is not what we asked. */
static enum auth_status auth_read_row(const PGresult *res, const char *hash,
                                      struct auth_principal *p)
{
    char *end = NULL;

    memset(p, 0, sizeof(*p));
    if (PQntuples(res) == 0)
        return AUTH_UNKNOWN;
    if (PQntuples(res) != 1 || PQnfields(res) != AUTH_NCOLS ||
        PQgetlength(res, 0, AUTH_COL_HASH) != API_KEY_HASH_HEX_LEN ||
        !api_key_equal(PQgetvalue(res, 0, AUTH_COL_HASH), hash, API_KEY_HASH_HEX_LEN))
        return AUTH_FAILED;
    p->key_id = strtoll(PQgetvalue(res, 0, AUTH_COL_ID), &end, 10);
    p->is_admin = PQgetvalue(res, 0, AUTH_COL_ADMIN)[0] == 't';
    if (!p->is_admin) {
        if (PQgetisnull(res, 0, AUTH_COL_COMPANY))
            return AUTH_FAILED; /* the table's CHECK forbids it; refuse, never widen */
        p->company_id = strtoll(PQgetvalue(res, 0, AUTH_COL_COMPANY), &end, 10);
        if (p->company_id <= 0)
            return AUTH_FAILED;
    }
    return PQgetvalue(res, 0, AUTH_COL_REVOKED)[0] == 't' ? AUTH_REVOKED : AUTH_OK;
}

static void auth_lookup_done(void *arg, const PGresult *res, const char *errstr)
{
    struct auth_lookup *l = arg;
    struct auth *a = l->a;
    struct auth_principal p = {0};
    enum auth_status st;

    (void)errstr; /* the pool already logs why it is down */
    if (!res) {
        st = AUTH_UNAVAILABLE;
    } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        st = query_sqlstate_retryable(state) ? AUTH_UNAVAILABLE : AUTH_FAILED;
        log_error("auth_lookup_failed", LF_STR("sqlstate", state),
                  LF_STR("error", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)));
    } else {
        st = auth_read_row(res, l->hash, &p);
        if (st == AUTH_FAILED)
            log_error("auth_lookup_failed", LF_STR("error", "unexpected api_keys row"));
        auth_cache_put(a->cache, l->hash, timeutil_mono_ms(), auth_cache_ttl_ms(a->ttl_s, st), st,
                       &p);
    }
    l->cb(l->arg, st, &p);
    free(l);
}

enum auth_status auth_check(struct auth *a, const char *authorization, const char *client,
                            struct auth_principal *out, auth_done_cb *cb, void *arg)
{
    const char *tok = NULL;
    size_t len = 0;
    char hash[API_KEY_HASH_HEX_LEN + 1];
    enum auth_status st;
    struct auth_lookup *l = NULL;
    const char *params[1];
    int rc;

    memset(out, 0, sizeof(*out));
    if (!auth_bearer_token(authorization, &tok, &len))
        return AUTH_MISSING;
    if (!api_key_well_formed(tok, len))
        return AUTH_MALFORMED;
    if (api_key_hash_hex(tok, len, hash) < 0)
        return AUTH_FAILED;
    if (auth_cache_get(a->cache, hash, timeutil_mono_ms(), &st, out)) {
        metric_inc(a->cache_hit);
        return st;
    }
    /* At 1 lookup per second or more (the option's least), a token is back
     * within the second the caller's Retry-After names. */
    if (a->lookups && client &&
        !rate_limit_take(a->lookups, client, (int64_t)timeutil_mono_ms(), &(unsigned){0}))
        return AUTH_LIMITED;
    metric_inc(a->cache_miss);
    l = calloc(1, sizeof(*l));
    if (!l)
        return AUTH_FAILED;
    l->a = a;
    memcpy(l->hash, hash, sizeof(hash));
    l->cb = cb;
    l->arg = arg;
    params[0] = l->hash;
    rc = pg_pool_query_prepared(a->pool, "arv_auth_lookup", AUTH_LOOKUP_SQL, 1, params,
                                auth_lookup_done, l);
    if (rc < 0) {
        free(l);
        return rc == -ENOTCONN ? AUTH_UNAVAILABLE : AUTH_FAILED;
    }
    return AUTH_PENDING;
}
