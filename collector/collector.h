/* The collector application: the ingest route, validation and the stream writer
 * wired onto a service frame. */
#ifndef ARV_COLLECTOR_H
#define ARV_COLLECTOR_H

#include <stddef.h>

#include "config.h"

struct service;
struct collector;

struct collector_config {
    struct common_config common;
    long max_body_bytes; /* ARV_MAX_BODY_BYTES */
    long max_skew_s;     /* ARV_MAX_CLOCK_SKEW_S: occurred_at window */
};

/* Creates the collector on `svc` (borrowed; its loop, metrics, HTTP server and
 * health), with `cfg` (borrowed, must outlive it). Returns NULL with a message in
 * `err`. Caller frees with collector_free() before service_deinit(). */
struct collector *collector_new(struct service *svc, const struct collector_config *cfg, char *err,
                                size_t errlen);

/* Starts draining: new events are refused, and service_stopped() is called once
 * the XADDs in flight are answered. */
void collector_stop(void *collector);

void collector_free(struct collector *c);

#endif
