/* A batch of stream entries turned into rows of the aggregator's staging table
 * (COPY text): decoded events, and dead letters for entries that do not decode.
 * Pure: no I/O, testable without servers. */
#ifndef ARV_AGGREGATOR_BATCH_H
#define ARV_AGGREGATOR_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

struct content_cache;
struct geoip;
struct ua_cache;

#define BATCH_ENTRY_ID_MAX 48 /* "<ms>-<seq>" is at most 41 bytes */

/* Dead-letter reasons written by the aggregator. */
#define BATCH_REASON_INVALID    "invalid_payload"
#define BATCH_REASON_UNKNOWN    "unknown_content"
#define BATCH_REASON_REJECTED   "db_rejected"
#define BATCH_REASON_DELIVERIES "max_deliveries"

/* The staging table every batch is copied into, one per connection. Its columns
 * are in the order the row writers below use. Rows with a non-NULL `reason` are
 * dead letters; the others are events to resolve and count. */
extern const char batch_staging_ddl[];
extern const char batch_staging_copy[]; /* "COPY ... FROM STDIN" for the same table */

/* One field of a stream entry; bytes borrowed for the duration of the call. */
struct batch_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct batch_entry {
    char id[BATCH_ENTRY_ID_MAX];     /* stream entry id, NUL-terminated */
    unsigned stream;                 /* index into the batch's stream names */
    size_t row_off, row_len;         /* its staging row in `rows`; 0 length: ack only */
    size_t payload_off, payload_len; /* its payload field in `rows` (COPY-escaped) */
    bool valid;                      /* decoded as a schema-1 event */
    bool keep_pending;               /* could not be written: not acknowledged */
};

struct batch {
    const char *const *streams;  /* stream names by index; borrowed */
    struct batch_entry *entries; /* `count` entries in stream order */
    size_t count;
    size_t cap;
    struct strbuf rows;      /* COPY text: every entry's staging row */
    struct strbuf scratch;   /* one undecodable entry's fields as JSON */
    size_t invalid;          /* entries that did not decode (dead letters) */
    size_t dead;             /* entries dead-lettered for any reason */
    int64_t min_received_ms; /* over decoded events; 0 when there are none */
    int64_t max_received_ms;
    bool store_full_ip;             /* ARV_STORE_FULL_IP: keep client IPs as received */
    struct content_cache *contents; /* notes the content keys used; borrowed, may be NULL */
    const struct geoip *geoip;      /* fills country/city from the IP; borrowed, may be NULL */
    struct ua_cache *ua;            /* fills device/browser/os, finds bots; borrowed, may be NULL */
    size_t bots;                    /* decoded events from bots (kept out of the rollups) */
};

/* Initialises an empty batch. `streams` (borrowed) names stream index i. */
void batch_init(struct batch *b, const char *const *streams);

/* Frees the batch's memory. */
void batch_deinit(struct batch *b);

/* Empties the batch, keeping its allocations; starts a new key set in its
 * content cache. */
void batch_reset(struct batch *b);

/* Adds one stream entry of stream index `stream`: decodes fields `v` and `e`,
 * enriches the event (GeoIP, user agent; see struct batch) into a staging event
 * row marked as a bot's or not, or, when that fails, into an `invalid_payload` dead
 * letter whose payload is every field as a JSON object. Returns 0, -EINVAL if
 * the id is too long, or -ENOMEM. */
int batch_add(struct batch *b, unsigned stream, const char *id, size_t id_len,
              const struct batch_field *fields, size_t nfields);

/* Adds an entry that goes straight to the dead letters with `reason` and
 * `detail` (borrowed, detail may be NULL). Returns 0, -EINVAL or -ENOMEM. */
int batch_add_dead(struct batch *b, unsigned stream, const char *id, size_t id_len,
                   const struct batch_field *fields, size_t nfields, const char *reason,
                   const char *detail);

/* Adds an entry that has no row, only to be acknowledged (an entry deleted
 * from the stream while it was pending). Returns 0, -EINVAL or -ENOMEM. */
int batch_add_ack_only(struct batch *b, unsigned stream, const char *id, size_t id_len);

/* Appends to `out` (not the batch's `rows`) a dead-letter staging row for
 * entry `i` with `reason` and `detail` (borrowed, may be NULL), its payload as
 * added, taken from its own row. */
void batch_dead_row(const struct batch *b, size_t i, const char *reason, const char *detail,
                    struct strbuf *out);

/* Writes the stream encoding of the entry's fields as one JSON object
 * ({"v":"1","e":"..."}), the payload of an entry that did not decode. */
void batch_fields_json(const struct batch_field *fields, size_t nfields, struct strbuf *out);

#endif
