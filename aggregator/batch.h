/* A batch of stream entries read for one aggregator write: decoded and enriched
 * events as raw-table rows (COPY text) with what the rollups need of them, and
 * dead letters for entries that do not decode. Pure: no I/O, testable without
 * servers. */
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
#define BATCH_REASON_INVALID      "invalid_payload"
#define BATCH_REASON_UNKNOWN      "unknown_content"
#define BATCH_REASON_REJECTED     "db_rejected"
#define BATCH_REASON_DELIVERIES   "max_deliveries"
#define BATCH_REASON_OUT_OF_RANGE "received_out_of_range"

/* The UTC days an event may be received on to be written, around the day of
 * its read (batch.today); others become dead letters (received_out_of_range).
 * Day partitions are made for these days only. */
#define BATCH_DAYS_BACK  400
#define BATCH_DAYS_AHEAD 2

/* The rollup dimensions of the daily breakdown, in the order of
 * batch_entry.dim_at: device_type, browser, os, country, city,
 * tracking_quality. */
#define BATCH_DIMS 6
extern const char *const batch_dim_names[BATCH_DIMS];

/* The raw table's columns in the order of an event's row: the batch writes
 * everything up to is_bot, the store appends the resolved content columns. */
#define BATCH_RAW_COLUMNS                                                                          \
    "event_id, session_id, user_agent, device_type, browser, os, ip_address, country, city,"       \
    " duration_seconds, tracking_quality, video_played, created_at, occurred_at, received_at,"     \
    " is_bot, ar_content_id, project_id, company_id"
#define BATCH_RAW_NFIELDS 19

/* An event's row starts with its event id as a COPY binary field: the length
 * (16) and the uuid's bytes. */
#define BATCH_EVENT_ID_FIELD 20

/* The columns of a dead-letter row (batch_entry of kind BATCH_DEAD). */
#define BATCH_DEAD_COLUMNS "stream, entry_id, reason, detail, payload"

/* Classes of tracking_quality that the rollups count apart. */
enum batch_tq { BATCH_TQ_EXCELLENT, BATCH_TQ_GOOD, BATCH_TQ_FAIR, BATCH_TQ_POOR, BATCH_TQ_OTHER };

/* One field of a stream entry; bytes borrowed for the duration of the call. */
struct batch_field {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

enum batch_kind {
    BATCH_ACK_ONLY, /* nothing to write, only to acknowledge */
    BATCH_EVENT,    /* a decoded event */
    BATCH_DEAD      /* a dead letter */
};

struct batch_entry {
    char id[BATCH_ENTRY_ID_MAX];     /* stream entry id, NUL-terminated */
    unsigned stream;                 /* index into the batch's stream names */
    enum batch_kind kind;            /* what the entry becomes */
    const char *reason;              /* dead letter: why (a string constant) */
    bool keep_pending;               /* could not be written: not acknowledged */
    bool payload_kept;               /* payload_off/len are set: see batch_set_payload */
    size_t row_off, row_len;         /* in `rows`: see below */
    size_t payload_off, payload_len; /* its payload in `rows`, COPY-escaped */
    /* An event's row is its raw-table row in COPY binary format
     * (copy.h): its fields up to is_bot (BATCH_RAW_COLUMNS), without the
     * tuple's field count and the content columns. A dead letter's row is the
     * whole dead-letter row (BATCH_DEAD_COLUMNS) in COPY text format. */
    int64_t received_ms;     /* event: collector clock */
    int64_t content_id;      /* event: as sent; 0 when named by unique id */
    size_t uid_off, uid_len; /* event: the unique id's raw bytes in `rows` */
    uint64_t session_hash;   /* event: hll_hash of the session id's 16 bytes */
    int32_t duration;        /* event: seconds, -1 when absent */
    enum batch_tq tq;        /* event: tracking-quality class */
    bool video_played;       /* event */
    bool is_bot;             /* event: stored, never counted */
    /* event: where its breakdown values are in its row (bytes from row_off;
     * a length of 0: none, counted as "unknown"), interned only for the
     * events the rollups count (batch_intern_dims). A row is a few KB. */
    uint16_t dim_at[BATCH_DIMS];
    uint16_t dim_len[BATCH_DIMS];
    /* Filled when the batch is written (batch_resolve, then the store): */
    int64_t ar_content_id; /* resolved content; 0 when unknown */
    int64_t project_id;
    int64_t company_id;
    bool repeat;  /* an earlier entry of the same write has its company and event id */
    bool counted; /* new to the raw table in this write (duplicates are not) */
};

/* Dimension values interned once per batch (see batch_value). */
struct batch_value {
    size_t off; /* in `values` */
    size_t len;
    uint32_t hash; /* of the bytes */
};

/* A longer delay from received_at to the XADD is no collector's clock or
 * slow XADD but an event appended again on purpose (`arvctl dlq replay`
 * keeps its received_at) or an entry given its id by hand: not noted in
 * max_delay_ms. */
#define BATCH_DELAY_MAX_MS (3600 * 1000)

struct batch {
    const char *const *streams;  /* stream names by index; borrowed */
    struct batch_entry *entries; /* `count` entries in stream order */
    size_t count;
    size_t cap;
    struct strbuf rows;       /* COPY text: payloads, event rows, dead-letter rows */
    struct strbuf scratch;    /* one undecodable entry's fields as JSON */
    struct strbuf values;     /* interned breakdown values */
    struct batch_value *vals; /* `nvals` interned values; id = index */
    size_t nvals, vals_cap;
    uint32_t *val_slots; /* open addressing: 0 free, else id + 1 */
    size_t nslots;       /* a power of two, or 0 */
    uint32_t *key_slots; /* batch_resolve's table of event ids, kept for the next */
    size_t nkey_slots;
    size_t invalid; /* entries that did not decode (dead letters) */
    size_t dead;    /* entries dead-lettered for any reason */
    int64_t today;  /* UTC day (since the epoch) of the read, set by its reader (see
                       BATCH_DAYS_BACK); 0: any day is written */
    /* The largest delay over decoded events from received_at (the
     * collector's clock) to its entry id's time (Redis's at the XADD), up to
     * BATCH_DELAY_MAX_MS; 0 when there is none or none is positive. */
    int64_t max_delay_ms;
    bool store_full_ip;             /* ARV_STORE_FULL_IP: keep client IPs as received */
    struct content_cache *contents; /* notes the content keys used; borrowed, may be NULL */
    const struct geoip *geoip;      /* fills country/city from the IP; borrowed, may be NULL */
    struct ua_cache *ua;            /* fills device/browser/os, finds bots; borrowed, may be NULL */
    size_t bots;                    /* decoded events from bots (kept out of the rollups) */
};

/* Initialises an empty batch. `streams` (borrowed) names stream index i. */
void batch_init(struct batch *b, const char *const *streams);

/* Allocates room for `entries` entries and `bytes` of rows at once, so that a
 * batch up to that size never reallocates: growing by copying would hold the
 * old and the new buffer at the same time. Pages not yet written take no
 * memory. Returns 0 or -ENOMEM. */
int batch_reserve(struct batch *b, size_t entries, size_t bytes);

/* Frees the batch's memory. */
void batch_deinit(struct batch *b);

/* Empties the batch, keeping its allocations; starts a new key set in its
 * content cache. */
void batch_reset(struct batch *b);

/* Empties the batch for the next read of the same write: as batch_reset, but
 * the interned breakdown values stay (the write's rollup deltas refer to
 * them). */
void batch_next(struct batch *b);

/* Drops the interned breakdown values, keeping the entries: a new write
 * begins with a read whose events have interned none yet. */
void batch_forget_values(struct batch *b);

/* Adds one stream entry of stream index `stream`: decodes fields `v` and `e`,
 * enriches the event (GeoIP, user agent; see struct batch) into an event entry
 * marked as a bot's or not, or, when that fails, into an `invalid_payload` dead
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

/* Keeps `len` bytes of `payload` (the entry's `e` field) as event entry i's
 * payload. An event's payload is kept only when it becomes a dead letter
 * (which is rare), read back from the stream: most of a batch's memory would
 * otherwise go to payloads never used. Returns 0 or -ENOMEM. */
int batch_set_payload(struct batch *b, size_t i, const char *payload, size_t len);

/* Appends to `out` a dead-letter row (BATCH_DEAD_COLUMNS) for entry `i` with
 * `reason` and `detail` (borrowed, may be NULL) and the entry's payload (empty
 * if none is kept). */
void batch_dead_row(const struct batch *b, size_t i, const char *reason, const char *detail,
                    struct strbuf *out);

/* Turns event entry `i` into a dead letter with `reason` and `detail` (its
 * row is appended to `rows`), its payload as kept. Returns 0 or -ENOMEM. */
int batch_reject(struct batch *b, size_t i, const char *reason, const char *detail);

/* Resolves the content of the event entries among [first, first + n) through
 * the batch's content cache (as last refreshed; every content is unknown
 * without one) and marks the repeats among them. Returns 0 or -ENOMEM. */
int batch_resolve(struct batch *b, size_t first, size_t n);

/* The ids of event entry `i`'s breakdown values (in the order of
 * batch_dim_names), interned for the rest of the write (see batch_next).
 * Returns 0 or -ENOMEM. */
int batch_intern_dims(struct batch *b, size_t i, uint32_t dims[BATCH_DIMS]);

/* Bytes the interned breakdown values (kept for the whole write) take, with
 * their records and slots; in use, as rollup_group_bytes(). Clients choose
 * the values, so these grow with their variety. */
size_t batch_value_bytes(const struct batch *b);

/* The id of the interned breakdown value of `n` bytes `s`, or -1. */
int64_t batch_find_value(const struct batch *b, const char *s, size_t n);

/* The interned breakdown value `id` (`*len` bytes, not NUL-terminated). */
const char *batch_value(const struct batch *b, uint32_t id, size_t *len);

/* A field's value kept in a dead letter's payload at most. An event's `e` is
 * a few KB; a larger value is someone else's entry, and copying it whole (into
 * the payload, its COPY escape, the dead row, the COPY buffer) would cost a
 * worker several times its size, kept for the buffers' life. */
#define BATCH_PAYLOAD_VALUE_MAX 65536
/* And a field's name. */
#define BATCH_PAYLOAD_NAME_MAX 256

/* Writes the stream encoding of the entry's fields as one JSON object
 * ({"v":"1","e":"..."}), the payload of an entry that did not decode; a name
 * longer than BATCH_PAYLOAD_NAME_MAX, or a value longer than
 * BATCH_PAYLOAD_VALUE_MAX, keeps only its first bytes (as many, or the few
 * fewer that end at a character). Returns the first field cut so, or NULL. */
const struct batch_field *batch_fields_json(const struct batch_field *fields, size_t nfields,
                                            struct strbuf *out);

#endif
