/* Unit tests for aggregator/reply_arena.c: replies parsed from RESP bytes
 * (no server) equal hiredis's own, memory is reused only once every reply is
 * given back, and a protocol error or a failed allocation mid-reply leaves
 * nothing alive. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "reply_arena.h"
#include "strbuf.h"

/* Parses `resp` with a reader of hiredis's own functions (arena NULL) or
 * attached to `a`; the reply, or NULL if incomplete. */
static redisReply *parse(struct reply_arena *a, const char *resp, size_t len)
{
    redisReader *reader = redisReaderCreate();
    void *reply = NULL;

    cr_assert_not_null(reader);
    if (a)
        reply_arena_attach(a, reader);
    cr_assert_eq(redisReaderFeed(reader, resp, len), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(reader, &reply), REDIS_OK, "%s", reader->errstr);
    redisReaderFree(reader);
    return reply;
}

static void assert_same(const redisReply *x, const redisReply *y)
{
    cr_assert_eq(x->type, y->type);
    cr_assert_eq(x->integer, y->integer);
    cr_assert_eq(x->len, y->len);
    cr_assert_eq(x->str == NULL, y->str == NULL);
    if (x->str) {
        cr_assert_eq(memcmp(x->str, y->str, x->len), 0);
        cr_assert_eq(y->str[y->len], '\0');
    }
    cr_assert_eq(x->elements, y->elements);
    for (size_t i = 0; i < x->elements; i++)
        assert_same(x->element[i], y->element[i]);
}

/* `ours` (of arena `a`, the only reply it still holds) equals hiredis's
 * `own`; both given back. */
static void same_then_free(struct reply_arena *a, redisReply *own, redisReply *ours)
{
    cr_assert_not_null(own);
    cr_assert_not_null(ours);
    assert_same(own, ours);
    cr_assert_eq(a->live, 1);
    reply_arena_free(ours);
    cr_assert_eq(a->live, 0);
    freeReplyObject(own);
}

/* An XREADGROUP-shaped reply of `n` entries with `payload`, plus every other
 * RESP type at its end. */
static void build_reply(struct strbuf *out, size_t n, const char *payload)
{
    strbuf_reset(out);
    strbuf_printf(out, "*2\r\n*2\r\n$6\r\nstream\r\n*%zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        char id[32];
        int idlen = snprintf(id, sizeof(id), "%zu-%zu", 1764000000000 + i, i % 3);
        strbuf_printf(out,
                      "*2\r\n$%d\r\n%s\r\n*4\r\n$1\r\nv\r\n$1\r\n1\r\n$1\r\ne\r\n$%zu\r\n%s\r\n",
                      idlen, id, strlen(payload), payload);
    }
    strbuf_puts(out, "*6\r\n:42\r\n:-7\r\n$-1\r\n+OK\r\n-ERR no such key\r\n*0\r\n");
    cr_assert_not(out->oom);
}

Test(reply_arena, replies_equal_hiredis_own)
{
    static const size_t sizes[] = {0, 1, 2, 300, 5000};
    struct reply_arena a;
    struct strbuf resp;

    reply_arena_init(&a);
    strbuf_init(&resp);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        build_reply(&resp, sizes[k], "{\"event_id\":\"x\",\"with\\\\escapes\":\"\\u00e9\"}");
        same_then_free(&a, parse(NULL, resp.data, resp.len), parse(&a, resp.data, resp.len));
    }
    strbuf_deinit(&resp);
    reply_arena_deinit(&a);
}

Test(reply_arena, memory_reused_once_every_reply_is_back)
{
    struct reply_arena a;
    struct strbuf resp;
    size_t kept;

    reply_arena_init(&a);
    strbuf_init(&resp);
    build_reply(&resp, 2000, "{\"e\":1}");
    reply_arena_free(parse(&a, resp.data, resp.len));
    kept = a.kept;
    cr_assert_gt(kept, REPLY_ARENA_BLOCK, "a reply of 2,000 entries should span blocks");
    /* Parsed again: the same blocks, nothing new. */
    for (int i = 0; i < 3; i++) {
        reply_arena_free(parse(&a, resp.data, resp.len));
        cr_assert_eq(a.kept, kept);
    }

    /* A reply still alive is not overwritten by the next ones. */
    redisReply *held = parse(&a, resp.data, resp.len);
    redisReply *own = parse(NULL, resp.data, resp.len);
    build_reply(&resp, 2000, "{\"overwritten\":true}");
    for (int i = 0; i < 2; i++) {
        reply_arena_free(parse(&a, resp.data, resp.len));
        cr_assert_eq(a.live, 1);
    }
    same_then_free(&a, own, held);
    strbuf_deinit(&resp);
    reply_arena_deinit(&a);
}

Test(reply_arena, large_strings_and_the_memory_kept)
{
    struct reply_arena a;
    struct strbuf resp, big;

    reply_arena_init(&a);
    strbuf_init(&resp);
    strbuf_init(&big);
    /* A string larger than a block gets one of its own. */
    for (size_t i = 0; i < 3 * REPLY_ARENA_BLOCK; i++)
        strbuf_putc(&big, (char)('a' + i % 26));
    strbuf_printf(&resp, "*2\r\n$%zu\r\n%s\r\n$2\r\nok\r\n", big.len, big.data);
    redisReply *r = parse(&a, resp.data, resp.len);
    cr_assert_eq(r->element[0]->len, big.len);
    cr_assert_eq(memcmp(r->element[0]->str, big.data, big.len), 0);
    cr_assert_str_eq(r->element[1]->str, "ok");
    reply_arena_free(r);
    /* A reply far beyond REPLY_ARENA_KEEP: what is kept after it is bounded. */
    build_reply(&resp, 30000, "{\"event_id\":\"0000b000-0000-4000-8000-000000000001\"}");
    reply_arena_free(parse(&a, resp.data, resp.len));
    cr_assert_leq(a.kept, REPLY_ARENA_KEEP);
    cr_assert_gt(a.kept, 0);
    strbuf_deinit(&big);
    strbuf_deinit(&resp);
    reply_arena_deinit(&a);
}

Test(reply_arena, protocol_error_leaves_nothing_alive)
{
    static const char bad[] = "*3\r\n$1\r\na\r\n:1\r\n!bad\r\n";
    struct reply_arena a;
    redisReader *reader = redisReaderCreate();
    void *reply = NULL;

    reply_arena_init(&a);
    reply_arena_attach(&a, reader);
    cr_assert_eq(redisReaderFeed(reader, bad, sizeof(bad) - 1), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(reader, &reply), REDIS_ERR);
    cr_assert_null(reply);
    redisReaderFree(reader);
    cr_assert_eq(a.live, 0);
    reply_arena_deinit(&a);
}

/* A malloc that gives the first block and refuses every other. */
static int mallocs;
static void *first_block_only(size_t n)
{
    return mallocs++ == 0 ? malloc(n) : NULL;
}

/* A root reply whose string or element array cannot be allocated is never
 * handed to hiredis, which therefore never frees it: it must not stay
 * counted live, or the arena would never be reused again. */
Test(reply_arena, allocation_failure_leaves_nothing_alive)
{
    static const char *const heads[] = {"$300000\r\n", "*70000\r\n"};
    struct strbuf resp;

    strbuf_init(&resp);
    for (size_t k = 0; k < sizeof(heads) / sizeof(heads[0]); k++) {
        struct reply_arena a;
        redisReader *reader = redisReaderCreate();
        void *reply = NULL;

        strbuf_reset(&resp);
        strbuf_puts(&resp, heads[k]);
        if (k == 0) {
            for (int i = 0; i < 300000; i++)
                strbuf_putc(&resp, 'x');
            strbuf_puts(&resp, "\r\n");
        }
        cr_assert(!resp.oom);
        reply_arena_init(&a);
        reply_arena_attach(&a, reader);
        mallocs = 0;
        reply_arena_set_malloc(first_block_only);
        cr_assert_eq(redisReaderFeed(reader, resp.data, resp.len), REDIS_OK);
        cr_assert_eq(redisReaderGetReply(reader, &reply), REDIS_ERR, "%s", heads[k]);
        reply_arena_set_malloc(NULL);
        cr_assert_null(reply);
        cr_assert_eq(mallocs, 2, "%s", heads[k]);
        redisReaderFree(reader);
        cr_assert_eq(a.live, 0, "%s", heads[k]);
        reply_arena_deinit(&a);
    }
    strbuf_deinit(&resp);
}
