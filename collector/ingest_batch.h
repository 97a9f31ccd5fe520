/* Splitting a batch body (POST /api/analytics/ar-sessions) into events: a JSON
 * array of objects, or NDJSON (one object per line). Each element is validated
 * on its own, so one bad event does not spoil the others. Pure. */
#ifndef ARV_INGEST_BATCH_H
#define ARV_INGEST_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "event.h"

/* One element of a batch: a valid event, or why it was refused. */
struct ingest_batch_item {
    bool ok;                /* `ev` is valid */
    struct event ev;        /* when ok */
    struct event_error err; /* when not ok */
};

struct ingest_batch {
    struct ingest_batch_item *items; /* n entries, owned */
    size_t n;                        /* elements in the body */
    size_t valid;                    /* items with ok set */
    size_t cap;                      /* entries allocated in items */
};

/* Parses `body` (len bytes): a JSON array when it starts with '[' (after
 * blanks), else NDJSON when `ndjson_allowed`, else it is invalid. Blank NDJSON
 * lines are skipped. Fills `out` (caller frees with ingest_batch_deinit(), also after a
 * failure). Returns 0; -EINVAL with `err` set when the body is not a batch at
 * all (bad JSON around the elements, no elements); -E2BIG when it holds more
 * than `max` elements; -ENOMEM. */
int ingest_batch_parse(const char *body, size_t len, bool ndjson_allowed, size_t max,
                       const struct event_context *ctx, struct ingest_batch *out,
                       struct event_error *err);

/* ingest_batch_parse() into a batch parsed before (or zero-initialised): its
 * items are reused when there are enough, so a loop parsing batch after batch
 * allocates only when a batch is larger than any before. */
int ingest_batch_parse_reuse(const char *body, size_t len, bool ndjson_allowed, size_t max,
                             const struct event_context *ctx, struct ingest_batch *out,
                             struct event_error *err);

void ingest_batch_deinit(struct ingest_batch *b);

#endif
