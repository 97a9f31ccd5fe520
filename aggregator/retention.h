/* Partition upkeep and retention: a thread with its own blocking PostgreSQL
 * connection that, every interval, creates day partitions ahead and drops raw
 * partitions and hourly rollup rows past their retention, and once a day
 * deletes the dedupe ids past theirs. */
#ifndef ARV_AGGREGATOR_RETENTION_H
#define ARV_AGGREGATOR_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics;
struct retention;

/* Days of day partitions created ahead of today. */
#define RETENTION_DAYS_AHEAD 7

struct retention_config {
    const char *database_url; /* borrowed */
    long raw_days;            /* ARV_RAW_RETENTION_DAYS: raw rows */
    long dedupe_days;         /* ARV_DEDUPE_RETENTION_DAYS (or raw_days): dedupe ids */
    long hourly_days;         /* ARV_HOURLY_RETENTION_DAYS: hourly rollup rows */
    long dead_letter_days;    /* ARV_DEAD_LETTER_RETENTION_DAYS (or raw_days): dead letters */
    long interval_s;          /* ARV_RETENTION_INTERVAL_S: between runs (first at start) */
    long slice_pages;         /* ARV_RETENTION_SLICE_PAGES: event_ids pages per DELETE */
};

/* The day (days since 1970-01-01) of raw partition `name`
 * ("ar_view_sessions_pYYYYMMDD"); false if `name` is not one. Pure. */
bool retention_partition_day(const char *name, int64_t *day);

/* True if the raw partition `name` holds only days older than `keep_days`
 * before `today` (days since the epoch), i.e. its day < today - keep_days; then
 * *day is that day. Names that are not day partitions are never dropped. Pure. */
bool retention_should_drop(const char *name, int64_t today, long keep_days, int64_t *day);

/* Creates the retention runner for `cfg` (copied; the URL is copied) and
 * registers aggregator_retention_dropped_total{what} on `m` (borrowed).
 * Does not start it. NULL if out of memory. Caller frees with retention_free(). */
struct retention *retention_new(const struct retention_config *cfg, struct metrics *m);

/* Starts the thread; it runs once at once, then every interval. Only one
 * aggregator at a time does the work (pg_try_advisory_lock(ARV_LOCK_MAINTENANCE)).
 * Returns 0 or a negative errno. */
int retention_start(struct retention *r);

/* Asks the thread to stop (does not wait; safe from the loop). */
void retention_stop(struct retention *r);

/* Stops and joins the thread (blocking until a run in progress ends, at most
 * its statement timeouts), then frees. NULL is fine. */
void retention_free(struct retention *r);

#endif
