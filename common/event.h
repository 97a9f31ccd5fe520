/* The event schema shared by collector and aggregator: parse and validate a
 * client's AR session JSON, normalise it, and encode/decode the compact JSON that
 * travels in the Redis stream (field `e`, schema version in field `v`). Pure. */
#ifndef ARV_EVENT_H
#define ARV_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

struct json_object;

#define EVENT_SCHEMA_VERSION "1"
#define EVENT_UUID_LEN       36

/* A normalised event. Strings are NUL-terminated; "" means absent. */
struct event {
    int64_t ar_content_id;               /* 0 when named only by content_uid */
    char content_uid[129];               /* ar_content_unique_id / portrait_id */
    char session_id[EVENT_UUID_LEN + 1]; /* lowercase canonical UUID */
    char event_id[EVENT_UUID_LEN + 1];   /* client's, or generated (UUIDv7) */
    int32_t duration_seconds;            /* -1 when absent */
    char tracking_quality[33];           /* lowercased token */
    bool video_played;
    char device_type[33];
    char browser[65];
    char os[65];
    char country[3]; /* ISO 3166-1 alpha-2, upper case */
    char city[129];
    char user_agent[513];   /* body field, else the header; truncated */
    char ip[46];            /* client address (numeric) */
    bool has_occurred_at;   /* occurred_at was sent (its time may be 0, the epoch) */
    int64_t occurred_at_ms; /* client clock */
    int64_t received_at_ms; /* collector clock */
};

/* What the collector knows besides the body. Strings borrowed, may be NULL. */
struct event_context {
    const char *user_agent_header;
    const char *client_ip;
    int64_t now_ms;      /* receive time, ms since the epoch */
    int64_t max_skew_ms; /* occurred_at outside now +- this is rejected; 0: 24 h */
};

/* Why an input was refused: an error code for the JSON answer ("invalid_json",
 * "invalid_field"), the field (NULL for the whole body), and a message. */
struct event_error {
    const char *code;
    const char *field;
    char message[160];
};

/* Limits on client JSON: nesting depth, object size, and what one event may
 * hold in all (its own fields and whatever their values nest). */
#define EVENT_MAX_DEPTH      8
#define EVENT_MAX_FIELDS     64
#define EVENT_MAX_VALUES     256
#define EVENT_MAX_CONTAINERS 16

/* Validates and normalises one client event object (borrowed). Unknown fields
 * are ignored. Generates event_id when absent. Returns false with `err` set. */
bool event_from_client(struct json_object *obj, const struct event_context *ctx, struct event *ev,
                       struct event_error *err);

/* Parses a client body of `len` bytes as one JSON object and validates it
 * (event_scan_client() first, json-c for what it leaves). Returns false with
 * `err` set (invalid_json for a body that does not parse). */
bool event_parse_client(const char *body, size_t len, const struct event_context *ctx,
                        struct event *ev, struct event_error *err);

/* The outcome of event_scan_client(). */
enum event_scan {
    EVENT_SCAN_OK,         /* `ev` is valid */
    EVENT_SCAN_INVALID,    /* `err` says why, exactly as event_from_client() would */
    EVENT_SCAN_UNSUPPORTED /* not a plain object: use json-c (event_from_client()) */
};

/* The allocation-free fast path of the decoders: reads one JSON object at the
 * start of `json` (len bytes; blanks before it allowed) when it is plain (no
 * nested values, no repeated known keys, common escapes and numbers only) and
 * validates it. Sets *used to the bytes up to its closing brace when the result
 * is OK or INVALID. For such input the answer is the one json-c plus
 * event_from_client() gives; anything else is UNSUPPORTED, never an error. */
enum event_scan event_scan_client(const char *json, size_t len, const struct event_context *ctx,
                                  struct event *ev, struct event_error *err, size_t *used);

/* Appends the stream encoding of `ev` (compact JSON, fixed key order) to `out`. */
void event_to_stream(const struct event *ev, struct strbuf *out);

/* Decodes a stream entry's `e` field (as written by event_to_stream). Returns
 * false with `err` set if it is not a valid schema-1 event. */
bool event_from_stream(const char *json, size_t len, struct event *ev, struct event_error *err);

/* Bytes of any content key, its NUL included (a content_uid fits). */
#define EVENT_CONTENT_KEY_MAX 129

/* Writes the content key of `ev` into `out` (`outlen` bytes;
 * EVENT_CONTENT_KEY_MAX hold any): the content as the client named it, the
 * decimal ar_content_id when it is non-zero, else content_uid (the
 * collector's shard on a node follows it). Returns its length (cut to
 * outlen - 1). Pure. */
size_t event_content_key(const struct event *ev, char *out, size_t outlen);

/* Writes a time-ordered UUIDv7 for `now_ms` (random bits from the OS) into
 * `out` (EVENT_UUID_LEN + 1 bytes). Thread-safe. */
void event_uuid_v7(char *out, int64_t now_ms);

/* True if s[0..n) is what an event's text fields may hold (the collector's
 * rule for ar_content_unique_id, device_type, city, ...): valid UTF-8 without
 * ASCII control characters (U+0000 to U+001F, U+007F). Pure. */
bool event_text_ok(const char *s, size_t n);

/* Parses RFC 3339 ("2026-11-25T10:00:00Z", fractions, offsets) into ms since the
 * epoch. Formats ms as "2026-11-25T10:00:00.000Z" (`out` >= 25 bytes). */
bool event_parse_rfc3339(const char *s, int64_t *out_ms);
void event_format_rfc3339(int64_t ms, char *out, size_t outlen);

/* Reads `json` (`len` bytes) as JSON (RFC 8259: no comments, trailing commas,
 * single quotes, NaN or leading zeros, though json-c would take some) nested at
 * most `levels` deep, blanks allowed after the value. An event (the value, or
 * each element when it is an array) holds at most EVENT_MAX_VALUES values and
 * EVENT_MAX_CONTAINERS objects and arrays, and an array at most `max_elements`
 * elements, all checked before json-c builds anything. Returns the value (the
 * caller puts it), or NULL with `err` set: "invalid_json", "batch_too_large"
 * (too many elements), or "internal" when out of memory. What the collector
 * reads with json-c goes through here. */
struct json_object *event_json_read(const char *json, size_t len, int levels, size_t max_elements,
                                    struct event_error *err);

#endif
