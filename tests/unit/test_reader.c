/* Unit tests for aggregator/reader.c's pure part: stream ids, the ack list. */
#include <criterion/criterion.h>
#include <string.h>

#include "reader.h"

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
