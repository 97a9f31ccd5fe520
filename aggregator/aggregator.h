/* arv-aggregator's application: configuration, the worker threads (one per
 * Redis node holding stream shards), their readiness checks and metrics, and
 * the drain on SIGTERM/SIGINT/SIGHUP. */
#ifndef ARV_AGGREGATOR_H
#define ARV_AGGREGATOR_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct service;
struct aggregator;

struct aggregator_config {
    struct common_config common;
    long batch_size;                 /* ARV_BATCH_SIZE: entries per read and stream */
    long batch_max_bytes;            /* ARV_BATCH_MAX_BYTES: raw rows per batch */
    long batch_deltas_max_bytes;     /* ARV_BATCH_DELTAS_MAX_BYTES: rollup deltas per write */
    long breakdown_max_values;       /* ARV_BREAKDOWN_MAX_VALUES: per content, day, dimension */
    long batch_wait_ms;              /* ARV_BATCH_WAIT_MS: XREADGROUP BLOCK */
    long batch_linger_ms;            /* ARV_BATCH_LINGER_MS: a caught-up write stays open */
    long workers;                    /* ARV_WORKERS: worker threads per Redis node */
    const char *consumer;            /* ARV_CONSUMER, NULL: hostname-pid */
    const char *content_relation;    /* ARV_CONTENT_RELATION */
    long content_cache_size;         /* ARV_CONTENT_CACHE_SIZE: entries per worker */
    long content_cache_ttl_s;        /* ARV_CONTENT_CACHE_TTL_S: known entries trusted this long */
    const char *geoip_db;            /* ARV_GEOIP_DB, "": no GeoIP */
    const char *ua_regexes;          /* ARV_UA_REGEXES, "": no user-agent parsing */
    long ua_cache_size;              /* ARV_UA_CACHE_SIZE: parsed user agents per worker */
    long claim_idle_ms;              /* ARV_CLAIM_IDLE_MS, 0 disables claiming */
    long statement_timeout_ms;       /* ARV_STATEMENT_TIMEOUT_MS */
    long max_deliveries;             /* ARV_MAX_DELIVERIES */
    bool store_full_ip;              /* ARV_STORE_FULL_IP: do not anonymise IPs */
    long raw_retention_days;         /* ARV_RAW_RETENTION_DAYS: raw partitions */
    long dedupe_retention_days;      /* ARV_DEDUPE_RETENTION_DAYS: event ids; 0: raw's */
    long dead_letter_retention_days; /* ARV_DEAD_LETTER_RETENTION_DAYS: dead letters; 0: raw's */
    long hourly_retention_days;      /* ARV_HOURLY_RETENTION_DAYS: hourly rollup rows */
    long retention_interval_s;       /* ARV_RETENTION_INTERVAL_S: between retention runs */
    long retention_slice_pages;      /* ARV_RETENTION_SLICE_PAGES: event_ids pages per DELETE */
};

/* The option table (with the common options) and its length. */
extern const struct config_option aggregator_options[];
extern const size_t aggregator_options_len;

/* Checks what the table cannot: the Redis URL list, the relation name, the
 * consumer name, DATABASE_URL. A config_validate_fn. */
bool aggregator_config_validate(const void *cfg, char *err, size_t errlen);

/* The shards that worker `w` (of `per` per node, node w / per) reads of
 * `nstreams` spread over `nodes` (shard i on node i % nodes): their indexes
 * into idx, its own ones first (*nown of them), then the node's others. With
 * at least a shard per worker on the node, worker j owns every per-th one:
 * the collector routes a content to one shard per node, so its rollup rows
 * are written by one worker, and the workers' merges do not wait for each
 * other's rows. With fewer, every worker owns them all. Returns how many
 * (the node's shards). Pure. */
unsigned aggregator_worker_streams(unsigned nstreams, unsigned nodes, unsigned per, unsigned w,
                                   unsigned *idx, unsigned *nown);

/* Creates the aggregator on `svc` (borrowed, initialised): workers, readiness
 * checks "redis" and "postgresql", metrics, and the drain hook. `cfg` is
 * borrowed and must outlive it. Returns NULL after logging why. Caller frees
 * with aggregator_free(). */
struct aggregator *aggregator_new(struct service *svc, const struct aggregator_config *cfg);

/* Starts the worker threads. Returns 0 or a negative errno. */
int aggregator_start(struct aggregator *a);

/* True when no worker thread is running (all returned, or never started). */
bool aggregator_stopped(const struct aggregator *a);

/* Stops and joins the workers (blocking until they return), then frees. Call
 * after the loop ended; NULL is fine. */
void aggregator_free(struct aggregator *a);

#endif
