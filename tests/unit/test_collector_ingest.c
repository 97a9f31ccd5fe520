/* Tests of the collector's pure body handling: batch splitting (JSON array,
 * NDJSON), the allocation-free event scanner against json-c, Content-Type /
 * Content-Encoding classification, capped gzip decoding, and the CORS origin
 * list. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
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
                         "{\"a\":1}", "[" GOOD "] x", "[[[[[[[[[[[1]]]]]]]]]]]",
                         "null",      " null "};
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

/* json-c's answer for one object, read as the collector reads with it (the
 * reference the scanner must match). */
static bool json_c_event(const char *body, struct event *ev, struct event_error *err)
{
    struct json_object *obj = event_json_read(body, strlen(body), EVENT_MAX_DEPTH, SIZE_MAX, err);
    cr_assert_not_null(obj, "json-c cannot parse %s", body);
    bool ok = event_from_client(obj, &ctx, ev, err);
    json_object_put(obj);
    return ok;
}

/* The scanner's verdict on `body` and, unless it declines, the same answer
 * as json-c (a generated event_id aside). */
static enum event_scan scan_matches_json_c(const char *body)
{
    struct event a, b;
    struct event_error ea, eb;
    size_t used = 0;
    enum event_scan r = event_scan_client(body, strlen(body), &ctx, &a, &ea, &used);
    bool ok_b = json_c_event(body, &b, &eb);
    /* The public parser answers like json-c whatever the scanner did. */
    struct event c;
    struct event_error ec;
    bool ok_c = event_parse_client(body, strlen(body), &ctx, &c, &ec);
    cr_assert_eq(ok_c, ok_b, "%s", body);
    if (!ok_b)
        cr_assert_str_eq(ec.message, eb.message);
    if (r == EVENT_SCAN_UNSUPPORTED)
        return r;
    cr_assert_eq(r == EVENT_SCAN_OK, ok_b, "%s", body);
    if (ok_b) {
        memcpy(b.event_id, a.event_id, sizeof(a.event_id));
        cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "%s", body);
        cr_assert_eq(body[used - 1], '}');
    } else {
        cr_assert_str_eq(ea.code, eb.code);
        cr_assert_str_eq(ea.message, eb.message, "%s", body);
    }
    return r;
}

Test(event_scan, plain_objects_match_json_c)
{
    cr_assert_eq(scan_matches_json_c(GOOD), EVENT_SCAN_OK);
    cr_assert_eq(
        scan_matches_json_c(
            " {\"ar_content_id\": 42, \"session_id\": \"7F1C2F3A-5B7E-4C2A-9D3E-1A2B3C4D5E6F\","
            " \"duration_seconds\": 37.9, \"video_played\": 1, \"tracking_quality\": \"Good\","
            " \"browser\": \"Sa\\/fari \\\"x\\\" \\u00e9\\u20ac\", \"city\": null,"
            " \"country\": \"de\", \"occurred_at\": \"2026-11-19T08:00:00.5+01:00\","
            " \"extra\": -1.25, \"flag\": false, \"\": 0} "),
        EVENT_SCAN_OK);
    /* \u escapes of one, two and three bytes, at the ends of their ranges. */
    static const char *const escapes[] = {"K\\u00f6ln", "\\u0041b", "\\u0080",       "\\u07ff",
                                          "\\u0800",    "\\uffff",  "\\u00e9\\u00E9"};
    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"city\":\"%s\"}", escapes[i]);
        cr_assert_eq(scan_matches_json_c(body), EVENT_SCAN_OK, "%s", body);
    }
    struct event ev;
    struct event_error err;
    const char koln[] = "{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"city\":\"K\\u00f6ln\"}";
    size_t used;
    cr_assert_eq(event_scan_client(koln, strlen(koln), &ctx, &ev, &err, &used), EVENT_SCAN_OK);
    cr_assert_str_eq(ev.city, "K\xc3\xb6ln");
    /* Invalid fields: the scanner reads the object and gives json-c's error. */
    cr_assert_eq(scan_matches_json_c("{\"ar_content_id\":\"x\",\"session_id\":\"" SID "\"}"),
                 EVENT_SCAN_INVALID);
    cr_assert_eq(
        scan_matches_json_c("{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"os\":\"a\\tb\"}"),
        EVENT_SCAN_INVALID);
    cr_assert_eq(
        scan_matches_json_c("{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"video_played\":2}"),
        EVENT_SCAN_INVALID);
    cr_assert_eq(scan_matches_json_c("{\"session_id\":\"" SID "\"}"), EVENT_SCAN_INVALID);
}

Test(event_scan, leaves_the_unusual_to_json_c)
{
    /* A repeated known key (json-c keeps the last), nested values, exponents,
     * negative or huge numbers for known fields, surrogate escapes. */
    const char *const unusual[] = {
        "{\"ar_content_id\":1,\"ar_content_id\":2,\"session_id\":\"" SID "\"}",
        "{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"meta\":{\"a\":[1]}}",
        "{\"ar_content_id\":1e2,\"session_id\":\"" SID "\"}",
        "{\"ar_content_id\":-3,\"session_id\":\"" SID "\"}",
        "{\"ar_content_id\":12345678901234567890,\"session_id\":\"" SID "\"}",
        "{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"city\":\"\\ud83d\\ude00\"}",
    }; /* (007, not JSON, is refused: test_event) */
    for (size_t i = 0; i < sizeof(unusual) / sizeof(unusual[0]); i++)
        cr_assert_eq(scan_matches_json_c(unusual[i]), EVENT_SCAN_UNSUPPORTED, "%s", unusual[i]);
    struct event ev;
    struct event_error err;
    cr_assert(event_parse_client(unusual[0], strlen(unusual[0]), &ctx, &ev, &err));
    cr_assert_eq(ev.ar_content_id, 2);
}

Test(ingest_batch, arrays_with_unusual_elements_and_reuse)
{
    /* One nested element sends the whole array to json-c: same results. */
    const char *body =
        "[" GOOD ",{\"ar_content_id\":2,\"session_id\":\"" SID "\",\"m\":{}},{\"session_id\":1},7]";
    struct ingest_batch b = {0};
    struct event_error err;
    cr_assert_eq(ingest_batch_parse_reuse(body, strlen(body), false, 10, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 4);
    cr_assert_eq(b.valid, 2);
    cr_assert(b.items[0].ok && b.items[1].ok && !b.items[2].ok && !b.items[3].ok);
    cr_assert_eq(b.items[1].ev.ar_content_id, 2);
    cr_assert_str_eq(b.items[3].err.message, "a batch element must be a JSON object");
    /* Reused for a smaller plain batch, then a larger one. */
    const char *two = "[" GOOD ", " GOOD "]";
    cr_assert_eq(ingest_batch_parse_reuse(two, strlen(two), false, 10, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 2);
    cr_assert_eq(b.valid, 2);
    char big[4096] = "[";
    for (int i = 0; i < 9; i++) {
        strcat(big, GOOD);
        strcat(big, i < 8 ? "," : "]");
    }
    cr_assert_eq(ingest_batch_parse_reuse(big, strlen(big), false, 10, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 9);
    cr_assert_eq(b.valid, 9);
    cr_assert_eq(ingest_batch_parse_reuse(big, strlen(big), false, 8, &ctx, &b, &err), -E2BIG);
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

/* Two gzip members one after another (legal gzip: `cat a.gz b.gz`) are both
 * inflated; bytes after a stream that are not a member are corrupt. */
Test(body, gzip_members_and_trailing_bytes)
{
    struct strbuf out;
    size_t n1, n2;
    strbuf_init(&out);
    char *a = compress_buf("{\"a\":1}\n", 8, 31, &n1);
    char *b = compress_buf("{\"b\":2}\n", 8, 31, &n2);
    char *both = malloc(n1 + n2 + 3);
    memcpy(both, a, n1);
    memcpy(both + n1, b, n2);
    cr_assert_eq(body_inflate(BODY_ENC_GZIP, both, n1 + n2, 1024, &out), 0);
    cr_expect_str_eq(out.data, "{\"a\":1}\n{\"b\":2}\n");
    memcpy(both + n1, "xyz", 3);
    cr_expect_eq(body_inflate(BODY_ENC_GZIP, both, n1 + 3, 1024, &out), -EINVAL);
    free(a);
    char *z = compress_buf("{\"a\":1}\n", 8, 15, &n1);
    memcpy(both, z, n1);
    memcpy(both + n1, "xyz", 3);
    cr_expect_eq(body_inflate(BODY_ENC_DEFLATE, both, n1 + 3, 1024, &out), -EINVAL);
    cr_expect_eq(body_inflate(BODY_ENC_DEFLATE, both, n1, 1024, &out), 0);
    free(z);
    free(b);
    free(both);
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
    /* Spaces and slashes at the end go together, in any order. */
    cr_assert(cors_parse("https://c.example /, https://d.example/ /", &c, err, sizeof(err)));
    cr_expect(cors_allows(&c, "https://c.example"));
    cr_expect(cors_allows(&c, "https://d.example"));
    cr_assert(cors_parse("*", &c, err, sizeof(err)));
    cr_expect(cors_allows(&c, "https://any.example"));
    cr_expect_not(cors_allows(&c, ""));
    cr_assert(cors_parse("", &c, err, sizeof(err)));
    cr_expect_not(cors_allows(&c, "https://a.example"));
}

/* The array's punctuation: anything but a comma between elements, or
 * anything after the closing bracket, refuses the whole body; blanks pass. */
Test(ingest_batch, array_punctuation)
{
    struct ingest_batch b;
    struct event_error err;
    const char *bad[] = {"[" GOOD "]x", "[" GOOD ";" GOOD "]", "[" GOOD " " GOOD "]",
                         "\f[" GOOD "]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(ingest_batch_parse(bad[i], strlen(bad[i]), false, 500, &ctx, &b, &err),
                     -EINVAL, "%s", bad[i]);
        ingest_batch_deinit(&b);
    }
    const char one[] = "[" GOOD " ]";
    cr_assert_eq(ingest_batch_parse(one, strlen(one), false, 500, &ctx, &b, &err), 0);
    cr_expect_eq(b.n, 1);
    ingest_batch_deinit(&b);
    const char two[] = "\t[ " GOOD " ,\r\n" GOOD " ]\n";
    cr_assert_eq(ingest_batch_parse(two, strlen(two), false, 500, &ctx, &b, &err), 0);
    cr_expect_eq(b.n, 2);
    cr_expect_eq(b.valid, 2);
    ingest_batch_deinit(&b);
}

/* NDJSON of one line, of blank lines only, and with a one-character line. */
Test(ingest_batch, ndjson_edges)
{
    struct ingest_batch b;
    struct event_error err;
    cr_assert_eq(ingest_batch_parse(GOOD, strlen(GOOD), true, 500, &ctx, &b, &err), 0);
    cr_expect_eq(b.n, 1);
    cr_expect_eq(b.valid, 1);
    ingest_batch_deinit(&b);
    cr_expect_eq(ingest_batch_parse("\n \n", 3, true, 500, &ctx, &b, &err), -EINVAL);
    ingest_batch_deinit(&b);
    const char nd[] = GOOD "\nx\n" GOOD;
    cr_assert_eq(ingest_batch_parse(nd, strlen(nd), true, 500, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 3);
    cr_expect(b.items[0].ok && !b.items[1].ok && b.items[2].ok);
    ingest_batch_deinit(&b);
}

/* An element nested deeper than a single event may be refuses the body, as
 * the single-event route would; one level less passes. */
Test(ingest_batch, nesting_limit_as_for_one_event)
{
    struct ingest_batch b;
    struct event_error err;
    const char deep[] =
        "[{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"a\":[[[[[[[[1]]]]]]]]}]";
    const char fine[] = "[{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"a\":[[[[[[[1]]]]]]]}]";
    cr_expect_eq(ingest_batch_parse(deep, strlen(deep), false, 500, &ctx, &b, &err), -EINVAL);
    ingest_batch_deinit(&b);
    cr_expect_eq(ingest_batch_parse(fine, strlen(fine), false, 500, &ctx, &b, &err), 0);
    ingest_batch_deinit(&b);
}

/* An array of more elements than a batch may hold is refused as too large
 * before it is parsed: even when it would not parse at the end. And an element
 * empty containers nest too deep is refused as a single event would be. */
Test(ingest_batch, too_many_elements_refused_unparsed)
{
    struct ingest_batch b;
    struct event_error err;
    size_t n = 600;
    char *body = malloc(3 * n + 8);
    cr_assert_not_null(body);
    size_t o = 0;
    body[o++] = '[';
    for (size_t i = 0; i < n; i++) {
        memcpy(body + o, i ? ",{}" : "{}", i ? 3 : 2);
        o += i ? 3 : 2;
    }
    memcpy(body + o, ",x", 2); /* not JSON */
    o += 2;
    cr_expect_eq(ingest_batch_parse(body, o, false, 500, &ctx, &b, &err), -E2BIG);
    ingest_batch_deinit(&b);
    free(body);

    const char deep[] = "[{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"a\":[[[[[[[[]]]]]]]]}]";
    cr_expect_eq(ingest_batch_parse(deep, strlen(deep), false, 500, &ctx, &b, &err), -EINVAL);
    ingest_batch_deinit(&b);
}

/* A reused batch starts clean: elements that are not objects are not the
 * previous request's events, the error field is not a previous one, and a
 * batch of exactly the maximum (through json-c) passes. */
Test(ingest_batch, reuse_starts_clean)
{
    struct ingest_batch b = {0};
    struct event_error err;
    const char three[] = "[" GOOD "," GOOD "," GOOD "]";
    cr_assert_eq(ingest_batch_parse_reuse(three, strlen(three), false, 10, &ctx, &b, &err), 0);
    cr_assert_eq(b.valid, 3);
    const char odd[] = "[7,{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"m\":{}},7]";
    cr_assert_eq(ingest_batch_parse_reuse(odd, strlen(odd), false, 10, &ctx, &b, &err), 0);
    cr_assert_eq(b.n, 3);
    cr_expect(!b.items[0].ok && b.items[1].ok && !b.items[2].ok);
    cr_expect_eq(b.valid, 1);
    const char max[] = "[" GOOD ",{\"ar_content_id\":1,\"session_id\":\"" SID "\",\"m\":{}}]";
    cr_expect_eq(ingest_batch_parse_reuse(max, strlen(max), false, 2, &ctx, &b, &err), 0);
    err.field = "stale";
    cr_expect_eq(ingest_batch_parse_reuse("[]", 2, false, 10, &ctx, &b, &err), -EINVAL);
    cr_expect_null(err.field);
    ingest_batch_deinit(&b);
}

/* Blanks around media types and codings. */
Test(body, blanks_in_headers)
{
    cr_expect_eq(body_media_of(" application/json"), BODY_MEDIA_JSON);
    cr_expect_eq(body_media_of("application/json ; charset=utf-8"), BODY_MEDIA_JSON);
    cr_expect_eq(body_media_of("text/plain\t;x"), BODY_MEDIA_TEXT);
    cr_expect_eq(body_encoding_of(" gzip"), BODY_ENC_GZIP);
    cr_expect_eq(body_encoding_of("gzip\t"), BODY_ENC_GZIP);
    cr_expect_eq(body_encoding_of(""), BODY_ENC_IDENTITY);
}

/* The decoded body is a C string, whatever the buffer held before. */
Test(body, inflated_body_is_terminated)
{
    struct strbuf out;
    size_t zlen;
    char *z = compress_buf("{}", 2, 31, &zlen);
    strbuf_init(&out);
    strbuf_puts(&out, "a longer body that was here before");
    cr_assert_eq(body_inflate(BODY_ENC_GZIP, z, zlen, 1024, &out), 0);
    cr_assert_eq(out.len, 2);
    cr_assert_eq(out.data[2], '\0');
    cr_assert_str_eq(out.data, "{}");
    strbuf_deinit(&out);
    free(z);
}
