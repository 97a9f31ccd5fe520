/* Unit tests for aggregator/reader.c's pure part: stream ids. */
#include <criterion/criterion.h>

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
