/* arvctl dlq list/replay: the aggregator's dead letters (analytics.dead_letters). */
#ifndef ARV_ARVCTL_DLQ_H
#define ARV_ARVCTL_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct event_error;

/* Where replayed events go: the collector's stream layout, and the
 * aggregators' windows that bound what a replay may send. */
struct dlq_target {
    const char *redis_url; /* REDIS_URL: one URL or a comma-separated list (borrowed) */
    const char *stream;    /* ARV_STREAM base name (borrowed) */
    long shards;           /* ARV_STREAM_SHARDS */
    long dedupe_days;      /* ARV_DEDUPE_RETENTION_DAYS (0: raw_days) */
    long raw_days;         /* ARV_RAW_RETENTION_DAYS */
};

/* Whether an event received on UTC day `day` may be replayed on `today`
 * (days since the epoch), for aggregators that keep dedupe ids `dedupe_days`
 * (0: `raw_days`) and raw rows `raw_days`, with a day's margin for the replay
 * to be read: */
enum dlq_age {
    DLQ_AGE_OK,     /* its event id, if it was counted, is still in event_ids */
    DLQ_AGE_DEDUPE, /* past the dedupe window: if it was counted, a replay counts it
                     * again (only with --force) */
    DLQ_AGE_RAW,    /* past the raw retention: its day's raw rows are gone (never) */
    DLQ_AGE_AHEAD   /* more than BATCH_DAYS_AHEAD after today: the aggregator would
                     * dead-letter it again (received_out_of_range; not yet) */
};
enum dlq_age dlq_replay_age(int64_t day, int64_t today, long dedupe_days, long raw_days);

/* The event a dead letter's payload holds: the payload itself if it is an event
 * (unknown_content, db_rejected), or the `e` field of a payload that is a stream
 * entry's fields as a JSON object with `v` = EVENT_SCHEMA_VERSION
 * (max_deliveries, received_out_of_range). Decodes it into `ev` as the
 * aggregator decodes a stream entry (event_from_stream()), which gives its
 * session_id, content and received_at for routing and the replay's windows.
 * Returns its JSON text (malloc'd, NUL-terminated; the caller frees it), or
 * NULL with `err` set if the payload holds no event that decodes (or memory
 * ran out: code "internal"). Pure. */
char *dlq_event(const char *payload, struct event *ev, struct event_error *err);

/* Runs `arvctl dlq ...` (argv[0] is "dlq") against `database_url`, replaying to
 * `target` (both borrowed). Blocking. Returns the exit status (CLI_EXIT_*). */
int dlq_command(const char *database_url, const struct dlq_target *target, int argc, char **argv);

#endif
