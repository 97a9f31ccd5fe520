/* libFuzzer target for everything the collector does with a request body before
 * Redis: gzip/deflate decoding with its cap, single-event parsing and batch
 * splitting (JSON array and NDJSON), and the stream encoding of what passes,
 * which must decode back to the same event. The allocation-free scanner must
 * answer exactly as json-c does (valid or not, same event, same error). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "body.h"
#include "event.h"
#include "ingest_batch.h"
#include "strbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_round_trip(const struct event *ev)
{
    struct strbuf sb;
    struct event back;
    struct event_error err;
    strbuf_init(&sb);
    event_to_stream(ev, &sb);
    if (!event_from_stream(sb.data, sb.len, &back, &err) || memcmp(ev, &back, sizeof(back)) != 0)
        abort(); /* a valid event must survive the stream encoding unchanged */
    strbuf_deinit(&sb);
}

/* The collector's reading of `body` with json-c (event_json_read), the
 * reference the scanner must match; NULL if it does not parse. */
static struct json_object *json_c_parse(const char *body, size_t len, int levels)
{
    struct event_error err;
    return event_json_read(body, len, levels, SIZE_MAX, &err);
}

/* Same validity, same event (a generated event_id aside), same error. */
static void check_same(bool ok_a, struct event *a, const struct event_error *ea, bool ok_b,
                       struct event *b, const struct event_error *eb)
{
    if (ok_a != ok_b)
        abort();
    if (ok_a) {
        if (strcmp(a->event_id, b->event_id) != 0 && a->event_id[14] == '7' &&
            b->event_id[14] == '7')
            memcpy(b->event_id, a->event_id, sizeof(a->event_id));
        if (memcmp(a, b, sizeof(*a)) != 0)
            abort();
    } else if (strcmp(ea->code, eb->code) != 0 || (ea->field == NULL) != (eb->field == NULL) ||
               (ea->field && strcmp(ea->field, eb->field) != 0) ||
               strcmp(ea->message, eb->message) != 0) {
        abort();
    }
}

static void check_scanner(const char *body, size_t size, const struct event_context *ctx)
{
    struct event a, b;
    struct event_error ea, eb;
    struct json_object *obj = json_c_parse(body, size, EVENT_MAX_DEPTH);
    bool ok_a = event_parse_client(body, size, ctx, &a, &ea);
    if (obj) {
        bool ok_b = event_from_client(obj, ctx, &b, &eb);
        check_same(ok_a, &a, &ea, ok_b, &b, &eb);
    } else if (ok_a || strcmp(ea.code, "invalid_json") != 0) {
        abort();
    }
    json_object_put(obj);

    /* Arrays: every element as json-c reads it. */
    struct ingest_batch batch;
    memset(&batch, 0, sizeof(batch));
    int rc = ingest_batch_parse(body, size, false, 64, ctx, &batch, &ea);
    struct json_object *arr = json_c_parse(body, size, EVENT_MAX_DEPTH + 1);
    if (rc == 0 && (!arr || !json_object_is_type(arr, json_type_array) ||
                    json_object_array_length(arr) != batch.n))
        abort();
    for (size_t i = 0; rc == 0 && i < batch.n; i++) {
        struct json_object *el = json_object_array_get_idx(arr, i);
        struct ingest_batch_item *it = &batch.items[i];
        if (!json_object_is_type(el, json_type_object)) {
            if (it->ok)
                abort();
            continue;
        }
        bool ok_b = event_from_client(el, ctx, &b, &eb);
        check_same(it->ok, &it->ev, &it->err, ok_b, &b, &eb);
    }
    json_object_put(arr);
    ingest_batch_deinit(&batch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct event_context ctx = {
        .user_agent_header = "fuzz/1.0",
        .client_ip = "192.0.2.1",
        .now_ms = 1795595200000LL,
        .max_skew_ms = 86400000LL,
    };
    const char *body = (const char *)data;
    struct event ev;
    struct event_error err;
    struct ingest_batch batch;
    struct strbuf inflated;

    if (event_parse_client(body, size, &ctx, &ev, &err))
        check_round_trip(&ev);
    check_scanner(body, size, &ctx);

    memset(&batch, 0, sizeof(batch));
    if (ingest_batch_parse(body, size, true, 64, &ctx, &batch, &err) == 0) {
        for (size_t i = 0; i < batch.n; i++) {
            if (batch.items[i].ok)
                check_round_trip(&batch.items[i].ev);
        }
    }
    ingest_batch_deinit(&batch);

    strbuf_init(&inflated);
    body_inflate(BODY_ENC_GZIP, body, size, 1 << 16, &inflated);
    if (inflated.len > (1 << 16))
        abort(); /* the cap must hold */
    body_inflate(BODY_ENC_DEFLATE, body, size, 1 << 16, &inflated);
    if (inflated.len > (1 << 16))
        abort();
    strbuf_deinit(&inflated);
    return 0;
}
