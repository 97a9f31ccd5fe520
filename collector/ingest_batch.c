/* Batch bodies: JSON arrays parsed with json-c (depth-capped), NDJSON split on
 * newlines; every element goes through the single-event validation. */
#include "ingest_batch.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static void set_err(struct event_error *err, const char *code, const char *msg)
{
    err->code = code;
    err->field = NULL;
    snprintf(err->message, sizeof(err->message), "%s", msg);
}

/* Makes room for n items in `out` (reusing its array) and clears them. */
static int items_alloc(struct ingest_batch *out, size_t n)
{
    if (n > out->cap) {
        free(out->items);
        out->items = malloc(n * sizeof(*out->items));
        out->cap = out->items ? n : 0;
        if (!out->items)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        out->items[i].ok = false;
    out->n = n;
    out->valid = 0;
    return 0;
}

static bool json_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Makes room for at least n items, keeping those parsed so far. */
static int items_grow(struct ingest_batch *out, size_t n)
{
    if (n <= out->cap)
        return 0;
    size_t cap = out->cap ? out->cap * 2 : 64;
    while (cap < n)
        cap *= 2;
    struct ingest_batch_item *items = realloc(out->items, cap * sizeof(*items));
    if (!items)
        return -ENOMEM;
    out->items = items;
    out->cap = cap;
    return 0;
}

/* The fast path for a JSON array of plain objects (event_scan_client() on each
 * element, no json-c tree). 1: parsed; 0: leave the whole body to json-c (an
 * element or the array is not plain, or there are more than `max` elements,
 * whose error json-c words); -ENOMEM. */
static int scan_array(const char *body, size_t len, size_t max, const struct event_context *ctx,
                      struct ingest_batch *out)
{
    size_t i = 0, n = 0;
    while (i < len && json_ws(body[i]))
        i++;
    if (i >= len || body[i] != '[')
        return 0;
    i++;
    for (;;) {
        if (n >= max)
            return 0;
        if (items_grow(out, n + 1) < 0)
            return -ENOMEM;
        struct ingest_batch_item *it = &out->items[n];
        size_t used = 0;
        enum event_scan r = event_scan_client(body + i, len - i, ctx, &it->ev, &it->err, &used);
        if (r == EVENT_SCAN_UNSUPPORTED)
            return 0;
        it->ok = r == EVENT_SCAN_OK;
        out->valid += it->ok;
        n++;
        i += used;
        while (i < len && json_ws(body[i]))
            i++;
        if (i >= len)
            return 0;
        if (body[i] == ']')
            break;
        if (body[i] != ',')
            return 0;
        i++;
    }
    for (i++; i < len; i++) {
        if (!json_ws(body[i]))
            return 0;
    }
    out->n = n;
    return 1;
}

static int parse_array(const char *body, size_t len, size_t max, const struct event_context *ctx,
                       struct ingest_batch *out, struct event_error *err)
{
    int rc = -EINVAL;
    /* One level more than a single event: the array itself. */
    struct json_object *arr = event_json_read(body, len, EVENT_MAX_DEPTH + 1, max, err);
    if (!arr)
        return strcmp(err->code, "internal") == 0          ? -ENOMEM
               : strcmp(err->code, "batch_too_large") == 0 ? -E2BIG
                                                           : -EINVAL;
    if (!json_object_is_type(arr, json_type_array)) {
        set_err(err, "invalid_json", "a batch is a JSON array of events or NDJSON");
        goto out;
    }
    size_t n = json_object_array_length(arr);
    if (n > max) {
        rc = -E2BIG;
        goto out;
    }
    if (n == 0) {
        set_err(err, "invalid_json", "the batch holds no events");
        goto out;
    }
    rc = items_alloc(out, n);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct ingest_batch_item *it = &out->items[i];
        struct json_object *el = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(el, json_type_object)) {
            set_err(&it->err, "invalid_json", "a batch element must be a JSON object");
            continue;
        }
        it->ok = event_from_client(el, ctx, &it->ev, &it->err);
        out->valid += it->ok;
    }
    rc = 0;
out:
    json_object_put(arr);
    return rc;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isspace((unsigned char)s[i]))
            return false;
    }
    return true;
}

static int parse_ndjson(const char *body, size_t len, size_t max, const struct event_context *ctx,
                        struct ingest_batch *out, struct event_error *err)
{
    size_t n = 0;
    for (size_t off = 0; off < len;) {
        const char *nl = memchr(body + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - body) : len;
        if (!blank(body + off, end - off) && ++n > max)
            return -E2BIG;
        off = end + 1;
    }
    if (n == 0) {
        set_err(err, "invalid_json", "the batch holds no events");
        return -EINVAL;
    }
    int rc = items_alloc(out, n);
    if (rc < 0)
        return rc;
    size_t i = 0;
    for (size_t off = 0; off < len && i < n;) {
        const char *nl = memchr(body + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - body) : len;
        if (!blank(body + off, end - off)) {
            struct ingest_batch_item *it = &out->items[i++];
            it->ok = event_parse_client(body + off, end - off, ctx, &it->ev, &it->err);
            out->valid += it->ok;
        }
        off = end + 1;
    }
    return 0;
}

int ingest_batch_parse(const char *body, size_t len, bool ndjson_allowed, size_t max,
                       const struct event_context *ctx, struct ingest_batch *out,
                       struct event_error *err)
{
    memset(out, 0, sizeof(*out));
    return ingest_batch_parse_reuse(body, len, ndjson_allowed, max, ctx, out, err);
}

int ingest_batch_parse_reuse(const char *body, size_t len, bool ndjson_allowed, size_t max,
                             const struct event_context *ctx, struct ingest_batch *out,
                             struct event_error *err)
{
    out->n = 0;
    out->valid = 0;
    size_t i = 0;
    while (i < len && isspace((unsigned char)body[i]))
        i++;
    if (i < len && body[i] == '[') {
        int rc = scan_array(body, len, max, ctx, out);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        out->valid = 0;
        return parse_array(body, len, max, ctx, out, err);
    }
    if (ndjson_allowed)
        return parse_ndjson(body, len, max, ctx, out, err);
    set_err(err, "invalid_json",
            "a batch is a JSON array of events (or NDJSON with "
            "Content-Type application/x-ndjson)");
    return -EINVAL;
}

void ingest_batch_deinit(struct ingest_batch *b)
{
    free(b->items);
    memset(b, 0, sizeof(*b));
}
