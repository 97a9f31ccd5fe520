/* Tests of the collector's pure body handling: batch splitting (JSON array,
 * NDJSON), Content-Type / Content-Encoding classification, capped gzip
 * decoding, and the CORS origin list. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "body.h"
#include "cors.h"
#include "ingest_batch.h"

#define SID  "7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f"
#define GOOD "{\"ar_content_id\":1,\"session_id\":\"" SID "\"}"

static const struct event_context ctx = {.now_ms = 1795000000000LL, .client_ip = "1.2.3.4"};

Test(ingest_batch, json_array_with_good_and_bad_events)
{
    struct ingest_batch b;
    struct event_error err;
    const char body[] = " [" GOOD ",{\"ar_content_id\":1,\"session_id\":\"x\"},7," GOOD "] ";
    cr_assert_eq(ingest_batch_parse(body, strlen(body), false, 500, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 4);
    cr_expect_eq(b.valid, 2);
    cr_expect(b.items[0].ok);
    cr_expect_str_eq(b.items[0].ev.session_id, SID);
    cr_expect_str_eq(b.items[0].ev.ip, "1.2.3.4");
    cr_expect_not(b.items[1].ok);
    cr_expect_str_eq(b.items[1].err.field, "session_id");
    cr_expect_not(b.items[2].ok);
    cr_expect_str_eq(b.items[2].err.code, "invalid_json");
    cr_expect(b.items[3].ok);
    /* Each event gets its own event_id. */
    cr_expect_str_neq(b.items[0].ev.event_id, b.items[3].ev.event_id);
    ingest_batch_deinit(&b);
}

Test(ingest_batch, ndjson_skips_blank_lines_and_isolates_bad_lines)
{
    struct ingest_batch b;
    struct event_error err;
    const char body[] = GOOD "\n\n  \r\n{not json\n" GOOD "\r\n" GOOD;
    cr_assert_eq(ingest_batch_parse(body, strlen(body), true, 500, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 4);
    cr_expect_eq(b.valid, 3);
    cr_expect_not(b.items[1].ok);
    cr_expect_str_eq(b.items[1].err.code, "invalid_json");
    ingest_batch_deinit(&b);
}

Test(ingest_batch, limits_and_whole_body_errors)
{
    struct ingest_batch b;
    struct event_error err;
    const char three[] = "[" GOOD "," GOOD "," GOOD "]";
    cr_expect_eq(ingest_batch_parse(three, strlen(three), false, 2, &ctx, &b, &err), -E2BIG);
    ingest_batch_deinit(&b);
    const char nd[] = GOOD "\n" GOOD "\n" GOOD "\n";
    cr_expect_eq(ingest_batch_parse(nd, strlen(nd), true, 2, &ctx, &b, &err), -E2BIG);
    ingest_batch_deinit(&b);
    cr_expect_eq(ingest_batch_parse(nd, strlen(nd), true, 3, &ctx, &b, &err), 0);
    ingest_batch_deinit(&b);
    const char *bad[] = {"[]",        "  ",           "[" GOOD,
                         "{\"a\":1}", "[" GOOD "] x", "[[[[[[[[[[[1]]]]]]]]]]]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.code = NULL;
        cr_expect_eq(ingest_batch_parse(bad[i], strlen(bad[i]), false, 500, &ctx, &b, &err),
                     -EINVAL, "%s", bad[i]);
        cr_expect_str_eq(err.code ? err.code : "", "invalid_json", "%s", bad[i]);
        ingest_batch_deinit(&b);
    }
    /* Without NDJSON allowed, a lone object is not a batch. */
    cr_expect_eq(ingest_batch_parse(GOOD, strlen(GOOD), false, 500, &ctx, &b, &err), -EINVAL);
    ingest_batch_deinit(&b);
}

Test(body, classifies_content_types_and_encodings)
{
    cr_expect_eq(body_media_of(NULL), BODY_MEDIA_JSON);
    cr_expect_eq(body_media_of("application/json; charset=utf-8"), BODY_MEDIA_JSON);
    cr_expect_eq(body_media_of("Text/Plain;charset=UTF-8"), BODY_MEDIA_TEXT);
    cr_expect_eq(body_media_of("application/x-ndjson"), BODY_MEDIA_NDJSON);
    cr_expect_eq(body_media_of("application/x-www-form-urlencoded"), BODY_MEDIA_UNSUPPORTED);
    cr_expect_eq(body_media_of("application/jsonx"), BODY_MEDIA_UNSUPPORTED);
    cr_expect_eq(body_encoding_of(NULL), BODY_ENC_IDENTITY);
    cr_expect_eq(body_encoding_of("GZIP"), BODY_ENC_GZIP);
    cr_expect_eq(body_encoding_of("x-gzip "), BODY_ENC_GZIP);
    cr_expect_eq(body_encoding_of("deflate"), BODY_ENC_DEFLATE);
    cr_expect_eq(body_encoding_of("br"), BODY_ENC_UNSUPPORTED);
    cr_expect_eq(body_encoding_of("gzip, gzip"), BODY_ENC_UNSUPPORTED);
}

/* Compresses `in` as gzip (wbits 31) or zlib (15) into a malloc'ed buffer. */
static char *compress_buf(const char *in, size_t len, int wbits, size_t *outlen)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, wbits, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, len);
    char *out = malloc(cap);
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    zs.next_out = (Bytef *)out;
    zs.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *outlen = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

Test(body, inflates_gzip_and_deflate)
{
    struct strbuf out;
    size_t n;
    strbuf_init(&out);
    char *gz = compress_buf(GOOD, strlen(GOOD), 31, &n);
    cr_assert_eq(body_inflate(BODY_ENC_GZIP, gz, n, 1024, &out), 0);
    cr_expect_str_eq(out.data, GOOD);
    /* Exactly at the cap is fine. */
    cr_assert_eq(body_inflate(BODY_ENC_GZIP, gz, n, strlen(GOOD), &out), 0);
    cr_expect_eq(body_inflate(BODY_ENC_GZIP, gz, n, strlen(GOOD) - 1, &out), -EFBIG);
    /* Truncated and corrupt streams. */
    cr_expect_eq(body_inflate(BODY_ENC_GZIP, gz, n - 4, 1024, &out), -EINVAL);
    gz[n / 2] ^= 0x55;
    cr_expect_eq(body_inflate(BODY_ENC_GZIP, gz, n, 1024, &out), -EINVAL);
    cr_expect_eq(body_inflate(BODY_ENC_GZIP, "", 0, 1024, &out), -EINVAL);
    free(gz);
    char *zl = compress_buf(GOOD, strlen(GOOD), 15, &n);
    cr_assert_eq(body_inflate(BODY_ENC_DEFLATE, zl, n, 1024, &out), 0);
    cr_expect_str_eq(out.data, GOOD);
    free(zl);
    strbuf_deinit(&out);
}

Test(body, compression_bomb_stops_at_the_cap)
{
    size_t big = 64u << 20, n;
    char *zeros = calloc(1, big);
    char *gz = compress_buf(zeros, big, 31, &n);
    free(zeros);
    struct strbuf out;
    strbuf_init(&out);
    cr_assert_eq(body_inflate(BODY_ENC_GZIP, gz, n, 1 << 20, &out), -EFBIG);
    /* Never more than about twice the cap was allocated. */
    cr_expect_leq(out.cap, (size_t)(2u << 20) + 2);
    strbuf_deinit(&out);
    free(gz);
}

Test(cors, origin_lists)
{
    struct cors c;
    char err[128];
    cr_assert(cors_parse("https://a.example, https://B.example/ ", &c, err, sizeof(err)));
    cr_expect(cors_allows(&c, "https://a.example"));
    cr_expect(cors_allows(&c, "https://b.example"));
    cr_expect_not(cors_allows(&c, "https://a.example.evil"));
    cr_expect_not(cors_allows(&c, NULL));
    cr_assert(cors_parse("*", &c, err, sizeof(err)));
    cr_expect(cors_allows(&c, "https://any.example"));
    cr_expect_not(cors_allows(&c, ""));
    cr_assert(cors_parse("", &c, err, sizeof(err)));
    cr_expect_not(cors_allows(&c, "https://a.example"));
}
