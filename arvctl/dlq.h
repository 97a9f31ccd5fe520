/* arvctl dlq list/replay: the aggregator's dead letters (analytics.dead_letters). */
#ifndef ARV_ARVCTL_DLQ_H
#define ARV_ARVCTL_DLQ_H

#include <stdbool.h>
#include <stddef.h>

/* Where replayed events go: the collector's stream layout. */
struct dlq_target {
    const char *redis_url; /* REDIS_URL: one URL or a comma-separated list (borrowed) */
    const char *stream;    /* ARV_STREAM base name (borrowed) */
    long shards;           /* ARV_STREAM_SHARDS */
};

/* The session_id of an event payload (the event JSON as the collector wrote it
 * to the stream), copied into `out`; false if the payload is not a JSON object
 * with a string session_id (1..outlen-1 bytes). Pure. */
bool dlq_session_id(const char *payload, char *out, size_t outlen);

/* The event a dead letter's payload holds: the payload itself if it is an event
 * (unknown_content, db_rejected), or the `e` field of a payload that is a stream
 * entry's fields as a JSON object with `v` = EVENT_SCHEMA_VERSION
 * (max_deliveries). Returns it (malloc'd, NUL-terminated; the caller frees it)
 * and copies its session_id into `session` (as dlq_session_id); NULL if the
 * payload holds no event or memory ran out. Pure. */
char *dlq_event(const char *payload, char *session, size_t session_len);

/* Runs `arvctl dlq ...` (argv[0] is "dlq") against `database_url`, replaying to
 * `target` (both borrowed). Blocking. Returns the exit status (CLI_EXIT_*). */
int dlq_command(const char *database_url, const struct dlq_target *target, int argc, char **argv);

#endif
