/* libFuzzer target for everything the collector does with a request body before
 * Redis: gzip/deflate decoding with its cap, single-event parsing and batch
 * splitting (JSON array and NDJSON), and the stream encoding of what passes,
 * which must decode back to the same event. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
