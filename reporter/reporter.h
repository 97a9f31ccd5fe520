/* arv-reporter's application: the analytics query routes, answered from the
 * rollups through a non-blocking PostgreSQL pool, behind API-key auth. */
#ifndef ARV_REPORTER_REPORTER_H
#define ARV_REPORTER_REPORTER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct service;
struct reporter;

struct reporter_config {
    struct common_config common;  /* DATABASE_URL, ARV_LISTEN, logging */
    long db_pool_size;            /* ARV_DB_POOL_SIZE */
    long db_queue_timeout_ms;     /* ARV_DB_QUEUE_TIMEOUT_MS: wait for a free connection */
    long query_timeout_ms;        /* ARV_QUERY_TIMEOUT_MS: statement_timeout (deadline: + 1 s) */
    long auth_cache_ttl_s;        /* ARV_AUTH_CACHE_TTL: seconds a key lookup is reused */
    long auth_lookup_rps;         /* ARV_AUTH_LOOKUP_RPS: per client address; 0 = off */
    long auth_lookup_burst;       /* ARV_AUTH_LOOKUP_BURST */
    const char *trusted_proxies;  /* ARV_TRUSTED_PROXIES: whose X-Forwarded-For is believed */
    const char *content_relation; /* ARV_CONTENT_RELATION: who owns projects/content */
    long rate_limit_rps;          /* ARV_REPORTER_RATE_LIMIT_RPS: per key; 0 = off */
    long rate_limit_burst;        /* ARV_REPORTER_RATE_LIMIT_BURST */
    long query_cache_ttl_ms;      /* ARV_QUERY_CACHE_TTL_MS: 0 = no answer cache */
    long query_cache_entries;     /* ARV_QUERY_CACHE_ENTRIES (also bounds the closed parts) */
    long query_closed_ttl_ms;     /* ARV_QUERY_CLOSED_TTL_MS: 0 = no closed-part reuse */
    const char *zoneinfo_dir;     /* ARV_ZONEINFO_DIR: where tz names are checked */
    long hourly_retention_days;   /* ARV_HOURLY_RETENTION_DAYS: the aggregators' hourly retention */
};

/* The reporter's option table (common options plus its own) for config_load(). */
extern const struct config_option reporter_options[];
extern const size_t reporter_options_len;

/* Checks what the option table cannot: DATABASE_URL parses as a libpq conninfo,
 * ARV_CONTENT_RELATION is a plain [schema.]name. A config_validate_fn. */
bool reporter_config_validate(const void *cfg, char *err, size_t errlen);

/* Creates the pool, the authenticator, the metrics and the routes (the analytics
 * API and /dashboard) on `svc` (borrowed, initialised; must outlive the
 * reporter), and adds the "postgresql" readiness check. `cfg` is borrowed and
 * must outlive the reporter. Returns NULL after logging why. Caller frees with
 * reporter_free() before service_deinit(). */
struct reporter *reporter_new(struct service *svc, const struct reporter_config *cfg);

/* Closes the pool (queries still running complete with 503 answers) and frees
 * the reporter. Not from inside a callback. NULL is fine. */
void reporter_free(struct reporter *r);

#endif
