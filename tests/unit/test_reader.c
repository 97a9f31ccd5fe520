/* Unit tests for aggregator/reader.c: stream ids and the ack list, then reads
 * against a real redis-server (pieces, reads sent ahead, recovery). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "live_redis.h"
#include "reader.h"
#include "timeutil.h"

Test(reader, parses_stream_ids)
{
    uint64_t ms, seq;

    cr_assert(reader_parse_id("1764064800123-7", &ms, &seq));
    cr_assert_eq(ms, 1764064800123ULL);
    cr_assert_eq(seq, 7);
    cr_assert(reader_parse_id("0-0", &ms, &seq));
    cr_assert_eq(ms, 0);
    cr_assert(reader_parse_id("42", &ms, &seq));
    cr_assert_eq(ms, 42);
    cr_assert_eq(seq, 0);
    cr_assert_not(reader_parse_id("", &ms, &seq));
    cr_assert_not(reader_parse_id(NULL, &ms, &seq));
    cr_assert_not(reader_parse_id("-1", &ms, &seq));
    cr_assert_not(reader_parse_id("1-", &ms, &seq));
    cr_assert_not(reader_parse_id("1-2-3", &ms, &seq));
    cr_assert_not(reader_parse_id("99999999999999999999999-0", &ms, &seq));
}

/* The ids a batch's reads leave to acknowledge: every entry but those kept
 * pending, with its stream, across reads. */
/* The floor: the smallest of the oldest pending entry, the first
 * undelivered one and Redis's clock; unknown (0) for an id that does not
 * parse. */
Test(reader, floor_is_the_smallest)
{
    cr_assert_eq(reader_floor_ms(5000, "", ""), 5000);
    cr_assert_eq(reader_floor_ms(5000, NULL, NULL), 5000);
    cr_assert_eq(reader_floor_ms(5000, "3000-7", ""), 3000);
    cr_assert_eq(reader_floor_ms(5000, "", "4000-0"), 4000);
    cr_assert_eq(reader_floor_ms(5000, "4500-1", "4000-0"), 4000);
    cr_assert_eq(reader_floor_ms(5000, "3000-0", "4000-0"), 3000);
    /* An entry given a future id by hand: the clock still bounds it. */
    cr_assert_eq(reader_floor_ms(5000, "", "99999999999999-0"), 5000);
    cr_assert_eq(reader_floor_ms(5000, "x-1", ""), 0);
    cr_assert_eq(reader_floor_ms(0, "", ""), 0);
}

Test(reader, acks_collect_entries_across_reads)
{
    static const char *const streams[] = {"s0", "s1", "s2"};
    struct batch b;
    struct reader_acks a;
    const char *want[][2] = {{"0", "1-0"}, {"2", "1-2"}, {"1", "5-0"}};
    size_t off = 0;

    batch_init(&b, streams);
    reader_acks_init(&a);
    cr_assert_eq(batch_add_ack_only(&b, 0, "1-0", 3), 0);
    cr_assert_eq(batch_add_ack_only(&b, 1, "1-1", 3), 0);
    cr_assert_eq(batch_add_ack_only(&b, 2, "1-2", 3), 0);
    b.entries[1].keep_pending = true;
    cr_assert_eq(reader_acks_add(&a, &b), 0);
    batch_next(&b);
    cr_assert_eq(batch_add_ack_only(&b, 1, "5-0", 3), 0);
    cr_assert_eq(reader_acks_add(&a, &b), 0);
    for (size_t i = 0; i < 3; i++) {
        uint16_t stream;
        memcpy(&stream, a.ids.data + off, sizeof(stream));
        cr_assert_eq(stream, (uint16_t)(want[i][0][0] - '0'), "entry %zu", i);
        cr_assert_str_eq(a.ids.data + off + sizeof(stream), want[i][1]);
        off += sizeof(stream) + strlen(want[i][1]) + 1;
    }
    cr_assert_eq(off, a.ids.len, "exactly those 3 entries");
    reader_acks_reset(&a);
    cr_assert_eq(a.ids.len, 0);
    reader_acks_deinit(&a);
    batch_deinit(&b);
}

/* ---- reads against a real redis-server ---- */

static const char *const live_streams[] = {"arv:test"};
static redisContext *admin; /* adds entries and looks at the group */

static void live_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/arv-reader-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    port = free_port();
    server_start(NULL);
    admin = redisConnect("127.0.0.1", port);
    cr_assert(admin && !admin->err);
}

static void live_teardown(void)
{
    char cmd[128];
    if (admin)
        redisFree(admin);
    admin = NULL;
    server_kill();
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

/* Adds `n` entries to `stream` (pipelined). */
static void add_entries_to(const char *stream, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(redisAppendCommand(admin, "XADD %s * v 1 e {}", stream), REDIS_OK);
    for (int i = 0; i < n; i++) {
        redisReply *reply = NULL;
        cr_assert_eq(redisGetReply(admin, (void **)&reply), REDIS_OK);
        cr_assert_eq(reply->type, REDIS_REPLY_STRING);
        freeReplyObject(reply);
    }
}

static void add_entries(int n)
{
    add_entries_to("arv:test", n);
}

static long long pending_count(void)
{
    redisReply *reply = redisCommand(admin, "XPENDING arv:test " READER_GROUP);
    long long n;
    cr_assert(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4);
    n = reply->element[0]->integer;
    freeReplyObject(reply);
    return n;
}

/* A reader "c1" of `streams` (reads of `count` entries, `max_bytes`), as
 * Redis user `user` (password "pw"), or the default user; not connected. */
static void reader_make(struct reader *r, const char *user, const char *const *streams,
                        unsigned nstreams, long count, size_t max_bytes)
{
    struct redis_url url;
    char spec[96];
    snprintf(spec, sizeof(spec), "redis://%s%s127.0.0.1:%d/0", user ? user : "", user ? ":pw@" : "",
             port);
    cr_assert(redis_url_parse(spec, &url));
    cr_assert_eq(reader_init(r, &url, streams, nstreams, "c1", count, max_bytes, 50), 0);
}

/* The same, connected. */
static void reader_open(struct reader *r, const char *user, const char *const *streams,
                        unsigned nstreams, long count, size_t max_bytes)
{
    reader_make(r, user, streams, nstreams, count, max_bytes);
    cr_assert_eq(reader_connect(r), 0, "%s", r->errstr);
}

/* A stream of `entries` entries, a batch for the stream and a reader of it
 * (reads of `count` entries, `max_bytes`), connected, its start-up recovery
 * of its own pending entries (none yet) done. */
static void live_start(struct reader *r, struct batch *b, int entries, long count, size_t max_bytes)
{
    enum reader_kind kind;
    bool caught_up;
    batch_init(b, live_streams);
    add_entries(entries);
    reader_open(r, NULL, live_streams, 1, count, max_bytes);
    cr_assert(r->recovering, "a connect starts with the own pending entries");
    cr_assert_eq(reader_read(r, b, &kind, &caught_up), 0, "%s", r->errstr);
    cr_assert_eq(kind, READER_PENDING);
    cr_assert_eq(b->count, 0);
    cr_assert_not(r->recovering);
}

static void live_end(struct reader *r, struct batch *b)
{
    reader_deinit(r);
    batch_deinit(b);
}

/* Reads new entries into a fresh batch `b` (emptied first). */
static void read_new(struct reader *r, struct batch *b, bool *caught_up)
{
    enum reader_kind kind;
    batch_reset(b);
    cr_assert_eq(reader_read(r, b, &kind, caught_up), 0, "%s", r->errstr);
    cr_assert_eq(kind, READER_NEW);
}

static void ack_all(struct reader *r, const struct batch *b)
{
    struct reader_acks a;
    reader_acks_init(&a);
    cr_assert_eq(reader_acks_add(&a, b), 0);
    cr_assert_eq(reader_ack(r, &a), 0, "%s", r->errstr);
    reader_acks_deinit(&a);
}

/* reader_stats of stream 0, with Redis's clock read first as the worker does
 * (0 when refused). */
static int stats_of(struct reader *r, bool trim, struct reader_stats *st)
{
    int64_t time_ms = 0;
    if (!reader_time_ms(r, &time_ms))
        time_ms = 0;
    return reader_stats(r, 0, trim, time_ms, st);
}

/* 30 entries, and a reader of them (reads of 100) as a Redis user "no<cmd>"
 * allowed everything but `cmd`, connected, its start-up recovery done. */
static void open_without(struct reader *r, struct batch *b, const char *cmd)
{
    enum reader_kind kind;
    bool caught_up;
    char user[32];
    snprintf(user, sizeof(user), "no%s", cmd);
    redisReply *acl = redisCommand(admin, "ACL SETUSER %s on >pw ~* &* +@all -%s", user, cmd);
    cr_assert(acl && acl->type == REDIS_REPLY_STATUS);
    freeReplyObject(acl);
    add_entries(30);
    batch_init(b, live_streams);
    reader_open(r, user, live_streams, 1, 100, 0);
    cr_assert_eq(reader_read(r, b, &kind, &caught_up), 0, "%s", r->errstr); /* recovery */
}

TestSuite(reader_live, .init = live_setup, .fini = live_teardown, .timeout = 60);

/* A read in pieces, one sent ahead of the next read; an acknowledgement in
 * between keeps the reply for that read, and no entry is lost or read twice. */
Test(reader_live, read_sent_ahead_is_kept_across_other_commands)
{
    struct reader r;
    struct batch b;
    bool caught_up;
    live_start(&r, &b, 5000, 3000, 0);

    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 3000, "pieces of 2000 and 1000");
    cr_assert_not(caught_up);
    cr_assert_eq(r.ahead, READER_AHEAD_NONE, "a read that reached its count sends nothing ahead");
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    cr_assert_eq(r.ahead, READER_AHEAD_SENT);
    cr_assert_eq(reader_prefetch(&r), 0);
    ack_all(&r, &b);
    cr_assert_eq(r.ahead, READER_AHEAD_KEPT, "the XACK's reply came after the read's");
    cr_assert_eq(pending_count(), 2000, "the piece sent ahead is delivered: pending, not lost");
    char last[BATCH_ENTRY_ID_MAX];
    snprintf(last, sizeof(last), "%s", b.entries[b.count - 1].id);

    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 2000, "the kept piece, then nothing more");
    cr_assert(caught_up);
    uint64_t ms0, seq0, ms1, seq1;
    cr_assert(reader_parse_id(last, &ms0, &seq0) && reader_parse_id(b.entries[0].id, &ms1, &seq1));
    cr_assert(ms1 > ms0 || (ms1 == ms0 && seq1 > seq0), "continues after the first read: %s, %s",
              last, b.entries[0].id);
    ack_all(&r, &b);
    cr_assert_eq(pending_count(), 0);
    live_end(&r, &b);
}

/* The time part of stream id `id`. */
static int64_t id_ms(const char *id)
{
    uint64_t ms, seq;
    cr_assert(reader_parse_id(id, &ms, &seq), "%s", id);
    return (int64_t)ms;
}

/* The id of the `k`th entry (from 0) of arv:test into `out`. */
static void nth_id(long k, char *out, size_t outlen)
{
    redisReply *reply = redisCommand(admin, "XRANGE arv:test - + COUNT %ld", k + 1);
    cr_assert(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == (size_t)k + 1);
    snprintf(out, outlen, "%s", reply->element[k]->element[0]->str);
    freeReplyObject(reply);
}

static int64_t redis_now_ms(void)
{
    redisReply *t = redisCommand(admin, "TIME");
    cr_assert(t && t->type == REDIS_REPLY_ARRAY && t->elements == 2);
    int64_t ms =
        strtoll(t->element[0]->str, NULL, 10) * 1000 + strtoll(t->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(t);
    return ms;
}

/* A stream's floor is its first entry not yet acknowledged: the oldest
 * pending one, else the first undelivered one; caught up, Redis's clock
 * when asked, which a later entry's id cannot be below. */
Test(reader_live, floor_is_the_first_entry_not_acknowledged)
{
    struct reader r;
    struct batch b;
    struct reader_stats st;
    bool caught_up;
    char first[BATCH_ENTRY_ID_MAX], sixth[BATCH_ENTRY_ID_MAX];
    live_start(&r, &b, 10, 5, 0);
    nth_id(0, first, sizeof(first));
    nth_id(5, sixth, sizeof(sixth));
    usleep(5 * 1000); /* the clock past the entries' ids */

    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(st.floor_ms, id_ms(first), "undelivered: %lld", (long long)st.floor_ms);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 5);
    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(st.floor_ms, id_ms(first), "pending, not acknowledged");
    ack_all(&r, &b);
    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(st.floor_ms, id_ms(sixth), "the first undelivered");
    /* Another consumer's pending entry holds it as much as this one's. */
    redisReply *other =
        redisCommand(admin, "XREADGROUP GROUP %s c2 COUNT 1 STREAMS arv:test >", READER_GROUP);
    cr_assert(other && other->type == REDIS_REPLY_ARRAY);
    freeReplyObject(other);
    read_new(&r, &b, &caught_up);
    ack_all(&r, &b);
    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(st.floor_ms, id_ms(sixth), "c2's pending entry");
    redisReply *ack = redisCommand(admin, "XACK arv:test %s %s", READER_GROUP, sixth);
    cr_assert(ack && ack->type == REDIS_REPLY_INTEGER && ack->integer == 1);
    freeReplyObject(ack);

    int64_t before = redis_now_ms();
    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    int64_t after = redis_now_ms();
    cr_assert(st.floor_ms >= before && st.floor_ms <= after, "caught up: %lld in [%lld, %lld]",
              (long long)st.floor_ms, (long long)before, (long long)after);
    add_entries(1);
    char later[BATCH_ENTRY_ID_MAX];
    nth_id(10, later, sizeof(later));
    cr_assert_geq(id_ms(later), st.floor_ms, "a later entry is not below it");
    live_end(&r, &b);
}

/* A floor command refused (a user without TIME) leaves the floor unknown
 * and the other figures good. */
Test(reader_live, refused_floor_keeps_the_figures)
{
    struct reader r;
    struct batch b;
    struct reader_stats st;
    open_without(&r, &b, "time");
    cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(st.floor_ms, 0);
    cr_assert_eq(st.length, 30);
    cr_assert_eq(st.lag, 30);
    cr_assert(reader_connected(&r));
    live_end(&r, &b);
}

/* A read that its byte budget ends leaves the next piece sent ahead; a
 * recovery drops a piece sent ahead, whose entries it reads as pending. */
Test(reader_live, budget_leaves_a_piece_ahead_and_recovery_reads_it)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    size_t seen = 0;
    live_start(&r, &b, 4500, 10000, 1);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 2000, "the budget ends the read after its first piece");
    cr_assert_not(caught_up);
    cr_assert_eq(r.ahead, READER_AHEAD_SENT,
                 "the second piece was sent before the first was decoded");
    ack_all(&r, &b);
    cr_assert_eq(pending_count(), 2000);

    reader_recover(&r);
    cr_assert_eq(r.ahead, READER_AHEAD_NONE);
    do {
        batch_reset(&b);
        cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
        cr_assert_eq(kind, READER_PENDING);
        seen += b.count;
        ack_all(&r, &b);
    } while (r.recovering);
    cr_assert_eq(seen, 2000, "the dropped piece's entries, read as pending");
    cr_assert_eq(pending_count(), 0);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 500, "then the rest, once");
    ack_all(&r, &b);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 0);
    cr_assert(caught_up);
    live_end(&r, &b);
}

/* A limit below COUNT (the worker's, near its deltas bound) ends a read of
 * new entries there, as not caught up; without one the next read takes
 * COUNT again. */
Test(reader_live, limit_ends_a_read_early)
{
    struct reader r;
    struct batch b;
    bool caught_up;
    live_start(&r, &b, 3000, 2500, 0);
    r.limit = 300;
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 300);
    cr_assert_not(caught_up, "entries are left");
    ack_all(&r, &b);
    r.limit = 0;
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 2500, "COUNT again");
    ack_all(&r, &b);
    r.limit = 5000;
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 200, "a limit above COUNT changes nothing");
    cr_assert(caught_up);
    ack_all(&r, &b);
    /* Between a piece and COUNT: a piece, then the rest of the limit. */
    add_entries(3000);
    r.limit = 2300;
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 2300);
    cr_assert_not(caught_up);
    ack_all(&r, &b);
    /* A piece already sent ahead is taken whole, whatever the limit. */
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    r.limit = 300;
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 700, "the rest of the stream, sent ahead");
    ack_all(&r, &b);
    live_end(&r, &b);
}

/* A write of several reads acknowledges them all at once, in XACKs of
 * READER_ACK_CHUNK ids. */
Test(reader_live, acks_a_write_of_several_reads_at_once)
{
    struct reader r;
    struct batch b;
    struct reader_acks a;
    bool caught_up;
    size_t total = 0;
    reader_acks_init(&a);
    live_start(&r, &b, 20500, 10000, 0);
    do {
        read_new(&r, &b, &caught_up);
        total += b.count;
        cr_assert_eq(reader_acks_add(&a, &b), 0);
    } while (!caught_up);
    cr_assert_eq(total, 20500);
    cr_assert_eq(pending_count(), 20500);
    cr_assert_eq(reader_ack(&r, &a), 0, "%s", r.errstr);
    cr_assert_eq(pending_count(), 0);
    reader_acks_deinit(&a);
    live_end(&r, &b);
}

/* The delivery count of the entry `i`-th pending on the group (from 0). */
static long long deliveries_of(size_t i)
{
    redisReply *reply = redisCommand(admin, "XPENDING arv:test " READER_GROUP " - + 100");
    cr_assert(reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > i);
    long long n = reply->element[i]->element[3]->integer;
    freeReplyObject(reply);
    return n;
}

/* Own pending entries read again within a run (after a failed write, say)
 * keep their delivery counts; after a restart under the same consumer name,
 * one already delivered max_deliveries times is read again as a
 * max_deliveries dead letter (as a claim would make it), the others as they
 * are. */
Test(reader_live, recovery_dead_letters_an_entry_delivered_too_often)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    live_start(&r, &b, 2, 100, 0);
    read_new(&r, &b, &caught_up); /* both delivered once, not acknowledged */
    cr_assert_eq(b.count, 2);
    for (int k = 0; k < 3; k++) { /* read again within the run: not counted */
        reader_recover(&r);
        batch_reset(&b);
        cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
        cr_assert_eq(kind, READER_PENDING);
        cr_assert_eq(b.count, 2);
        cr_assert_eq(b.entries[0].kind, b.entries[1].kind);
    }
    cr_assert_eq(deliveries_of(0), 1);
    for (int i = 0; i < 4; i++) { /* the first read again 4 times: 5 deliveries */
        redisReply *again =
            redisCommand(admin, "XREADGROUP GROUP " READER_GROUP " c1 COUNT 1 STREAMS arv:test 0");
        cr_assert(again && again->type == REDIS_REPLY_ARRAY);
        freeReplyObject(again);
    }
    reader_deinit(&r); /* a restart */
    reader_open(&r, NULL, live_streams, 1, 100, 0);
    r.max_deliveries = 5;
    batch_reset(&b);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
    cr_assert_eq(kind, READER_PENDING);
    cr_assert_eq(b.count, 2);
    cr_assert_eq(b.entries[0].kind, BATCH_DEAD);
    cr_assert_str_eq(b.entries[0].reason, BATCH_REASON_DELIVERIES);
    cr_assert(b.entries[1].kind != BATCH_DEAD ||
                  strcmp(b.entries[1].reason, BATCH_REASON_DELIVERIES) != 0,
              "the entry delivered twice is not dead-lettered for it");
    /* That recovery read again (its write failed, say): the restart counted once. */
    cr_assert_eq(deliveries_of(1), 2);
    reader_recover(&r);
    batch_reset(&b);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
    cr_assert_eq(b.count, 2);
    cr_assert_eq(deliveries_of(1), 2);
    live_end(&r, &b);
}

/* The group deleted while the worker recovers its own entries: the reader
 * disconnects, so that the reconnect creates the group again. */
Test(reader_live, recovery_without_the_group_disconnects)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    live_start(&r, &b, 3, 100, 0);
    read_new(&r, &b, &caught_up);
    reader_recover(&r);
    redisReply *gone = redisCommand(admin, "XGROUP DESTROY arv:test " READER_GROUP);
    cr_assert(gone && gone->type == REDIS_REPLY_INTEGER && gone->integer == 1);
    freeReplyObject(gone);
    batch_reset(&b);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), -1);
    cr_assert(strstr(r.errstr, "NOGROUP"), "%s", r.errstr);
    cr_assert_not(reader_connected(&r));
    cr_assert_eq(reader_connect(&r), 0, "%s", r.errstr);
    live_end(&r, &b);
}

/* Sets the server's maxmemory (0: no limit). */
static void set_maxmemory(const char *bytes)
{
    redisReply *rep = redisCommand(admin, "CONFIG SET maxmemory %s", bytes);
    cr_assert(rep && rep->type == REDIS_REPLY_STATUS, "CONFIG SET maxmemory %s", bytes);
    freeReplyObject(rep);
}

/* Redis at maxmemory refuses XGROUP CREATE (OOM) even for a group that
 * exists. A restarted aggregator must still connect, read its own pending
 * entries and new ones, and acknowledge them: that is what frees memory. */
Test(reader_live, connects_and_drains_while_redis_is_full)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    live_start(&r, &b, 3, 100, 0);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 3);
    reader_deinit(&r); /* killed with 3 entries pending */
    add_entries(1);
    set_maxmemory("1");
    redisReply *rep = redisCommand(admin, "XADD arv:test * v 1 e {}");
    cr_assert(rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "OOM", 3) == 0,
              "the server is full");
    freeReplyObject(rep);
    reader_open(&r, NULL, live_streams, 1, 100, 0);
    batch_reset(&b);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
    cr_assert_eq(kind, READER_PENDING);
    cr_assert_eq(b.count, 3, "its own pending entries");
    ack_all(&r, &b);
    batch_reset(&b);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
    cr_assert(kind == READER_PENDING && b.count == 0, "recovery ends");
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 1, "the entry not read before");
    ack_all(&r, &b);
    cr_assert_eq(pending_count(), 0);
    live_end(&r, &b);

    /* A group that does not exist cannot be made: the connect fails (and
     * backs off) instead of reading into NOGROUP. */
    static const char *const other[] = {"arv:other"};
    reader_make(&r, NULL, other, 1, 100, 0);
    cr_assert_eq(reader_connect(&r), -1);
    cr_assert(strstr(r.errstr, "XGROUP CREATE") && strstr(r.errstr, "OOM"), "%s", r.errstr);
    reader_deinit(&r);
    set_maxmemory("0");
}

/* The node turned replica (READONLY): the reader disconnects, so that a new
 * connection may reach the new primary behind the same name. */
Test(reader_live, replica_disconnects)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    live_start(&r, &b, 3, 100, 0);
    redisReply *rep = redisCommand(admin, "REPLICAOF 127.0.0.1 1");
    cr_assert(rep && rep->type == REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    batch_reset(&b);
    int rc = reader_read(&r, &b, &kind, &caught_up);
    rep = redisCommand(admin, "REPLICAOF NO ONE");
    freeReplyObject(rep);
    cr_assert_eq(rc, -1);
    cr_assert(strstr(r.errstr, "READONLY"), "%s", r.errstr);
    cr_assert_not(reader_connected(&r));
    live_end(&r, &b);
}

/* A dead letter's payload read back from the stream is the field named
 * exactly "e", not one whose name merely starts so ("e\0x"). */
Test(reader_live, payload_read_back_is_the_e_field)
{
    struct reader r;
    struct batch b;
    bool caught_up;
    live_start(&r, &b, 0, 100, 0);
    const char *argv[] = {"XADD", "arv:test", "*", "e\0x", "junk", "v", "1", "e", "good"};
    const size_t len[] = {4, 8, 1, 3, 4, 1, 1, 1, 4};
    redisReply *added = redisCommandArgv(admin, 9, argv, len);
    cr_assert(added && added->type == REDIS_REPLY_STRING);
    freeReplyObject(added);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 1);
    const size_t idx[] = {0};
    cr_assert_eq(reader_fetch_payloads(&r, &b, idx, 1), 0, "%s", r.errstr);
    cr_assert(b.entries[0].payload_kept);
    cr_assert_eq(b.entries[0].payload_len, 4);
    cr_assert_eq(memcmp(b.rows.data + b.entries[0].payload_off, "good", 4), 0);
    live_end(&r, &b);
}

/* An entry deleted before its payload is read back (to become a dead
 * letter) is only acknowledged: before, it became a dead letter with an
 * empty payload, which is no JSON and cannot be replayed. */
Test(reader_live, payload_deleted_before_read_back_is_acknowledged_only)
{
    struct reader r;
    struct batch b;
    bool caught_up;
    live_start(&r, &b, 0, 100, 0);
    redisReply *added = redisCommand(admin, "XADD arv:test * v 1 e gone");
    cr_assert(added && added->type == REDIS_REPLY_STRING);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 1);
    redisReply *del = redisCommand(admin, "XDEL arv:test %s", added->str);
    cr_assert(del && del->type == REDIS_REPLY_INTEGER && del->integer == 1);
    freeReplyObject(del);
    freeReplyObject(added);
    /* As an event of unknown content ("gone" is no event: a dead letter). */
    b.entries[0].kind = BATCH_EVENT;
    b.entries[0].payload_kept = false;
    const size_t idx[] = {0};
    cr_assert_eq(reader_fetch_payloads(&r, &b, idx, 1), 0, "%s", r.errstr);
    cr_assert_not(b.entries[0].payload_kept);
    cr_assert_eq(b.entries[0].kind, BATCH_ACK_ONLY);
    live_end(&r, &b);
}

/* An event in an entry of many more fields (someone else's XADD) is read as
 * the event: its `v` and `e` after the 32nd field are kept. */
Test(reader_live, schema_fields_after_many_others_are_kept)
{
    static const char event[] =
        "{\"event_id\":\"01a2127b-db01-7b91-beb4-9ff4e5fe1586\","
        "\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f\",\"ar_content_id\":42,"
        "\"ip\":\"203.0.113.7\",\"received_at\":\"2025-11-25T10:00:00.123Z\"}";
    struct reader r;
    struct batch b;
    bool caught_up;
    const char *argv[3 + 2 * 40 + 4] = {"XADD", "arv:test", "*"};
    char names[40][8];
    int argc = 3;
    live_start(&r, &b, 0, 100, 0);
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        argv[argc++] = names[i];
        argv[argc++] = "1";
    }
    argv[argc++] = "v";
    argv[argc++] = "1";
    argv[argc++] = "e";
    argv[argc++] = event;
    redisReply *added = redisCommandArgv(admin, argc, argv, NULL);
    cr_assert(added && added->type == REDIS_REPLY_STRING);
    freeReplyObject(added);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 1);
    cr_assert_eq(b.entries[0].kind, BATCH_EVENT, "a dead letter: %s",
                 b.entries[0].reason ? b.entries[0].reason : "");
    live_end(&r, &b);
}

/* The entries of the first read of new entries from 4 streams of
 * `per_stream` entries each, ended after its first piece (a byte budget of
 * 1), the last piece before it having had an entry of `entry_max` bytes. */
static size_t first_piece_of_four(const char *const *four, int per_stream, size_t entry_max)
{
    struct reader r;
    struct batch b;
    enum reader_kind kind;
    bool caught_up;
    for (int s = 0; s < 4; s++)
        add_entries_to(four[s], per_stream);
    batch_init(&b, four);
    reader_open(&r, NULL, four, 4, 10000, 1);
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr); /* recovery */
    r.entry_max = entry_max;
    cr_assert_eq(reader_read(&r, &b, &kind, &caught_up), 0, "%s", r.errstr);
    cr_assert_eq(kind, READER_NEW);
    size_t n = b.count;
    live_end(&r, &b);
    return n;
}

/* With several streams on a node, a piece of a read is shared by them:
 * READER_CHUNK entries in all, not READER_CHUNK per stream. */
Test(reader_live, piece_is_shared_by_the_streams)
{
    static const char *const four[] = {"arv:m0", "arv:m1", "arv:m2", "arv:m3"};
    size_t n = first_piece_of_four(four, 3000, 0);
    cr_assert_eq(n, READER_CHUNK, "a piece of %zu entries", n);
}

/* After entries of 1 MiB, a piece asks each of 4 streams for a quarter of
 * READER_PIECE_BYTES: COUNT is per stream (before: 16 each, 64 MiB). */
Test(reader_live, large_entries_piece_is_shared_by_the_streams)
{
    static const char *const four[] = {"arv:l0", "arv:l1", "arv:l2", "arv:l3"};
    size_t n = first_piece_of_four(four, 100, (size_t)1 << 20);
    cr_assert_eq(n, 4 * (READER_PIECE_BYTES >> 20) / 4, "a piece of %zu entries", n);
}

/* How many of `b`'s entries came from stream `s`. */
static size_t from_stream(const struct batch *b, unsigned s)
{
    size_t n = 0;
    for (size_t i = 0; i < b->count; i++)
        n += b->entries[i].stream == s;
    return n;
}

/* A reader of `two` streams that owns the first (a worker's own shard; reads
 * of 1,000 entries), its start-up recovery done, with `n0` and `n1` entries
 * in them. */
static void own_first_open(struct reader *r, struct batch *b, const char *const *two, int n0,
                           int n1)
{
    enum reader_kind kind;
    bool caught_up;

    add_entries_to(two[0], n0);
    add_entries_to(two[1], n1);
    batch_init(b, two);
    reader_open(r, NULL, two, 2, 1000, 0);
    r->nown = 1;
    cr_assert_eq(reader_read(r, b, &kind, &caught_up), 0, "%s", r->errstr); /* recovery */
}

/* A reader that owns the first of two streams (a worker's own shard) reads
 * only it while it has entries; once it is caught up, the other one too (a
 * backlog there is not left waiting); once its own has more again, only its
 * own. */
Test(reader_live, own_streams_first_then_the_others)
{
    static const char *const two[] = {"arv:o0", "arv:o1"};
    struct reader r;
    struct batch b;
    bool caught_up;

    own_first_open(&r, &b, two, 1500, 500);
    cr_assert_eq(reader_read_streams(&r), 1);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 0), 1000, "COUNT from its own stream alone");
    cr_assert_eq(from_stream(&b, 1), 0, "the other stream waits");
    cr_assert_not(caught_up);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 0), 500);
    cr_assert_eq(from_stream(&b, 1), 0);
    cr_assert(caught_up, "caught up on its own stream");
    cr_assert_eq(reader_read_streams(&r), 2, "next, every stream");
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 1), 500, "the other stream's backlog");
    cr_assert_eq(reader_read_streams(&r), 2, "its own stream is still caught up");
    add_entries_to("arv:o0", 2000);
    add_entries_to("arv:o1", 300);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 0), 500, "COUNT shared by both");
    cr_assert_eq(from_stream(&b, 1), 300);
    cr_assert_eq(reader_read_streams(&r), 1, "its own stream has more: its own alone");
    add_entries_to("arv:o1", 100);
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 0), 1000, "a piece sent ahead reads its own stream alone");
    cr_assert_eq(from_stream(&b, 1), 0);
    live_end(&r, &b);
}

/* A claim takes up to COUNT entries per stream and says whether more wait, so
 * that a dead consumer's backlog comes back a claim after another. */
Test(reader_live, claim_says_when_more_are_left)
{
    struct reader r;
    struct batch b;
    int rc;
    live_start(&r, &b, 250, 100, 0);
    redisReply *ghost = redisCommand(admin, "XREADGROUP GROUP " READER_GROUP
                                            " ghost COUNT 1000 STREAMS arv:test >");
    cr_assert(ghost && ghost->type == REDIS_REPLY_ARRAY);
    freeReplyObject(ghost);
    usleep(600 * 1000); /* idle 500 ms: claimable */
    size_t total = 0;
    for (int k = 0; k < 3; k++) {
        batch_reset(&b);
        rc = reader_claim(&r, &b, 500, 0);
        cr_assert_eq(rc, k < 2 ? 1 : 0, "claim %d returned %d", k, rc);
        total += b.count;
        ack_all(&r, &b); /* written: never claimed again, however slow this runs */
    }
    cr_assert_eq(total, 250);
    batch_reset(&b);
    cr_assert_eq(reader_claim(&r, &b, 500, 0), 0);
    cr_assert_eq(b.count, 0);
    live_end(&r, &b);
}

/* A claim over several streams stops once the batch is full (its byte
 * budget), as a read does, and the next claim begins where it stopped
 * (before: each further stream added a piece past the budget). */
/* A piece sent ahead from a reader's own stream that comes back empty (its
 * stream caught up meanwhile): the read says it caught up at once, rather
 * than waiting on its own stream, and the next one reads every stream. */
Test(reader_live, own_stream_empty_ahead_reads_the_others)
{
    static const char *const two[] = {"arv:e0", "arv:e1"};
    struct reader r;
    struct batch b;
    bool caught_up;

    own_first_open(&r, &b, two, 1000, 300);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 0), 1000);
    cr_assert_not(caught_up);
    cr_assert_eq(reader_read_streams(&r), 1);
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr); /* its own stream: nothing */
    r.block_ms = 1000;
    int64_t t0 = (int64_t)timeutil_mono_ms();
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 0, "the other stream's entries wait for the next read");
    cr_assert(caught_up);
    cr_assert_lt((int64_t)timeutil_mono_ms() - t0, 900, "no BLOCK of 1 s on its own stream");
    cr_assert_eq(reader_read_streams(&r), 2);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(from_stream(&b, 1), 300, "the other stream's entries");
    live_end(&r, &b);
}

/* What the group has not acknowledged in a stream of another shard count:
 * nothing for a stream that does not exist, every entry without the group,
 * pending + lag with it. */
Test(reader_live, unacked_entries_of_any_stream)
{
    struct reader r;
    struct batch b;
    live_start(&r, &b, 0, 100, 0);
    cr_assert_eq(reader_unacked(&r, "arv:gone"), 0);
    add_entries_to("arv:old", 5);
    cr_assert_eq(reader_unacked(&r, "arv:old"), 5, "no group: every entry");
    redisReply *rep = redisCommand(admin, "XGROUP CREATE arv:old " READER_GROUP " 0");
    freeReplyObject(rep);
    rep = redisCommand(admin, "XREADGROUP GROUP " READER_GROUP " ghost COUNT 3 STREAMS arv:old >");
    cr_assert(rep && rep->type == REDIS_REPLY_ARRAY);
    const char *id = rep->element[0]->element[1]->element[0]->element[0]->str;
    redisReply *ack = redisCommand(admin, "XACK arv:old " READER_GROUP " %s", id);
    freeReplyObject(ack);
    freeReplyObject(rep);
    cr_assert_eq(reader_unacked(&r, "arv:old"), 4, "2 pending + 2 never delivered");
    live_end(&r, &b);
}

/* `n` streams of `per_stream` entries each, all read by another consumer
 * ("ghost") and idle 500 ms, so claimable; a batch for them and a reader
 * (reads of `count`, `max_bytes`), connected. */
static void ghost_pending(struct reader *r, struct batch *b, const char *const *names, unsigned n,
                          int per_stream, long count, size_t max_bytes)
{
    const char *argv[16] = {"XREADGROUP", "GROUP", READER_GROUP, "ghost",
                            "COUNT",      "1000",  "STREAMS"};
    int argc = 7;
    cr_assert_leq(n, 4);
    for (unsigned s = 0; s < n; s++) {
        add_entries_to(names[s], per_stream);
        argv[argc++] = names[s];
    }
    for (unsigned s = 0; s < n; s++)
        argv[argc++] = ">";
    batch_init(b, names);
    reader_open(r, NULL, names, n, count, max_bytes);
    redisReply *ghost = redisCommandArgv(admin, argc, argv, NULL);
    cr_assert(ghost && ghost->type == REDIS_REPLY_ARRAY);
    freeReplyObject(ghost);
    usleep(600 * 1000); /* idle 500 ms: claimable */
}

/* A claim's entries are shared by the streams, as a read's: COUNT in all,
 * not COUNT per stream (a claim from 16 shards took 16 reads' worth). */
Test(reader_live, claim_count_is_shared_by_the_streams)
{
    static const char *const two[] = {"arv:d0", "arv:d1"};
    struct reader r;
    struct batch b;
    ghost_pending(&r, &b, two, 2, 800, 1000, 0);
    cr_assert_eq(reader_claim(&r, &b, 500, 0), 1, "more wait");
    cr_assert_eq(b.count, 1000, "a claim of %zu entries", b.count);
    cr_assert_eq(from_stream(&b, 0), 500);
    cr_assert_eq(from_stream(&b, 1), 500);
    live_end(&r, &b);
}

Test(reader_live, claim_stops_at_the_budget_across_streams)
{
    static const char *const three[] = {"arv:c0", "arv:c1", "arv:c2"};
    struct reader r;
    struct batch b;
    ghost_pending(&r, &b, three, 3, 300, 10000, 1);
    for (int k = 0; k < 3; k++) {
        batch_reset(&b);
        int rc = reader_claim(&r, &b, 500, 0);
        cr_assert_eq(b.count, 300, "claim %d took %zu entries", k, b.count);
        cr_assert_eq(rc, 1, "claim %d returned %d: more may wait", k, rc);
        cr_assert_eq(b.entries[0].stream, (unsigned)k, "claim %d began at stream %u", k,
                     b.entries[0].stream);
        ack_all(&r, &b);
    }
    batch_reset(&b);
    cr_assert_eq(reader_claim(&r, &b, 500, 0), 0);
    cr_assert_eq(b.count, 0);
    live_end(&r, &b);
}

/* One pass trims every acknowledged entry, more than one XTRIM's worth: an
 * approximate trim stops at 10,000 entries by default. */
Test(reader_live, trim_removes_all_that_is_acknowledged)
{
    struct reader r;
    struct batch b;
    struct reader_stats st;
    bool caught_up;
    live_start(&r, &b, 50000, 10000, 0);
    do {
        read_new(&r, &b, &caught_up);
        ack_all(&r, &b);
    } while (!caught_up);
    add_entries(5); /* delivered to nobody yet: kept */
    cr_assert_eq(stats_of(&r, true, &st), 0, "%s", r.errstr);
    cr_assert_geq(st.trimmed, 49000, "trimmed %lld", st.trimmed);
    redisReply *len = redisCommand(admin, "XLEN arv:test");
    cr_assert(len && len->type == REDIS_REPLY_INTEGER);
    cr_assert(len->integer >= 5 && len->integer < 1000, "XLEN %lld after the trim", len->integer);
    freeReplyObject(len);
    live_end(&r, &b);
}

/* A trim Redis refuses (a user without XTRIM) is reported apart: the stream's
 * figures are still read. */
Test(reader_live, refused_trim_keeps_the_figures)
{
    struct reader r;
    struct batch b;
    struct reader_stats st;
    bool caught_up;
    open_without(&r, &b, "xtrim");
    read_new(&r, &b, &caught_up);
    ack_all(&r, &b);
    cr_assert_eq(stats_of(&r, true, &st), 0, "%s", r.errstr);
    cr_assert(st.trim_failed);
    cr_assert(strstr(r.errstr, "NOPERM"), "%s", r.errstr);
    cr_assert_eq(st.length, 30);
    cr_assert_eq(st.pending, 0);
    cr_assert(reader_connected(&r));
    live_end(&r, &b);
}

/* A piece kept while other commands come and go lives in an arena of its
 * own: the reader's arena goes on reusing its first block. */
/* After a piece whose largest entry is large (someone else's XADD with a big
 * field), pieces ask for READER_PIECE_BYTES of such entries; once entries are
 * small again, for READER_CHUNK. Before, every piece asked for 2,000 whatever
 * their size: 150 entries of 2 MB took the aggregator to 312 MB. */
Test(reader_live, pieces_shrink_after_large_entries)
{
    struct reader r;
    struct batch b;
    bool caught_up;
    size_t big = (size_t)5 << 20;
    char *junk = malloc(big);
    cr_assert_not_null(junk);
    memset(junk, 'x', big);
    live_start(&r, &b, 0, 100, 0);
    for (int i = 0; i < 3; i++) {
        redisReply *added = redisCommand(admin, "XADD arv:test * v 1 e {} junk %b", junk, big);
        cr_assert(added && added->type == REDIS_REPLY_STRING);
        freeReplyObject(added);
    }
    add_entries(300);
    read_new(&r, &b, &caught_up); /* one piece: the 3 large entries and 97 others */
    cr_assert_eq(b.count, 100);
    cr_assert_geq(r.entry_max, big, "the largest entry of the last piece: %zu", r.entry_max);
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    cr_assert_eq(r.ahead_count, 3, "16 MiB of 5 MiB entries: %ld", r.ahead_count);
    read_new(&r, &b, &caught_up);
    cr_assert_lt(r.entry_max, 100, "small entries again: %zu", r.entry_max);
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    cr_assert_eq(r.ahead_count, 100);
    free(junk);
    live_end(&r, &b);
}

Test(reader_live, kept_piece_does_not_pin_the_arena)
{
    struct reader r;
    struct batch b;
    struct reader_stats st;
    bool caught_up;
    live_start(&r, &b, 300, 100, 0);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(reader_prefetch(&r), 0, "%s", r.errstr);
    for (int i = 0; i < 2000; i++)
        cr_assert_eq(stats_of(&r, false, &st), 0, "%s", r.errstr);
    cr_assert_eq(r.ahead, READER_AHEAD_KEPT);
    cr_assert_leq(r.arena.kept, REPLY_ARENA_BLOCK, "the reader's arena grew to %zu bytes",
                  r.arena.kept);
    read_new(&r, &b, &caught_up);
    cr_assert_eq(b.count, 100, "the kept piece");
    live_end(&r, &b);
}
