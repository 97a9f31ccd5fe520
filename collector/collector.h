/* The collector application: the ingest routes, validation and the stream
 * writers, run by one event loop per thread (the service frame's loop is
 * thread 0; the others share its port through SO_REUSEPORT). */
#ifndef ARV_COLLECTOR_H
#define ARV_COLLECTOR_H

#include <stddef.h>

#include "config.h"
#include "http_server.h"

struct service;
struct collector;

struct collector_config {
    struct common_config common;
    long max_body_bytes;              /* ARV_MAX_BODY_BYTES (decoded size) */
    long max_buffered_bytes;          /* ARV_MAX_BUFFERED_BYTES: request buffers together */
    long max_skew_s;                  /* ARV_MAX_CLOCK_SKEW_S: occurred_at window */
    long threads;                     /* ARV_THREADS: event loops; 0: one per CPU */
    long max_batch;                   /* ARV_MAX_BATCH: events per batch request */
    const char *cors_origins;         /* ARV_CORS_ORIGINS: "*" or a list */
    const char *trusted_proxies;      /* ARV_TRUSTED_PROXIES: CIDR list */
    long stream_high_water;           /* ARV_STREAM_HIGH_WATER: entries; 0: off */
    long rate_limit_rps;              /* ARV_RATE_LIMIT_RPS per client IP; 0: off */
    long rate_limit_burst;            /* ARV_RATE_LIMIT_BURST; 0: same as rps */
    long redis_timeout_ms;            /* ARV_REDIS_TIMEOUT_MS: XADD answer deadline */
    long redis_max_pending;           /* ARV_REDIS_MAX_PENDING: XADDs awaiting Redis */
    struct http_server_limits limits; /* every thread's HTTP server */
};

/* Creates the collector on `svc` (borrowed; thread 0 uses its loop, HTTP server
 * and health routes; the metrics registry is shared by all threads) with `cfg`
 * (borrowed, must outlive it), and starts the other threads. Call
 * evthread_use_pthreads() before service_init(). Returns NULL with a message in
 * `err`. Caller frees with collector_free() before service_deinit(). */
struct collector *collector_new(struct service *svc, const struct collector_config *cfg, char *err,
                                size_t errlen);

/* The service's stop hook (runs on thread 0): every thread stops accepting and
 * refuses new events; service_stopped() is called once every thread has its
 * XADDs answered and its HTTP answers sent. */
void collector_stop(void *collector);

/* Stops the threads still running (after a forced exit), joins them and frees
 * everything. NULL is fine. */
void collector_free(struct collector *c);

#endif
