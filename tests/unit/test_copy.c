/* Unit tests for aggregator/copy.c: COPY text escaping, NULLs, rows, times. */
#include <criterion/criterion.h>
#include <string.h>

#include "copy.h"
#include "strbuf.h"

static struct strbuf sb;

static void setup(void)
{
    strbuf_init(&sb);
}

static void teardown(void)
{
    strbuf_deinit(&sb);
}

TestSuite(copy, .init = setup, .fini = teardown);

static const char *escaped(const char *s, size_t n)
{
    strbuf_reset(&sb);
    copy_escape(&sb, s, n);
    return sb.data ? sb.data : "";
}

Test(copy, plain_text_is_unchanged)
{
    cr_assert_str_eq(escaped("hello world", 11), "hello world");
    cr_assert_str_eq(escaped("", 0), "");
}

Test(copy, escapes_backslash_tab_newline_cr)
{
    cr_assert_str_eq(escaped("a\\b", 3), "a\\\\b");
    cr_assert_str_eq(escaped("a\tb", 3), "a\\tb");
    cr_assert_str_eq(escaped("a\nb", 3), "a\\nb");
    cr_assert_str_eq(escaped("a\rb", 3), "a\\rb");
    cr_assert_str_eq(escaped("\\\t\n\r", 4), "\\\\\\t\\n\\r");
}

Test(copy, end_of_data_marker_cannot_appear)
{
    /* "\." alone on a line ends COPY data: the backslash must be doubled. */
    cr_assert_str_eq(escaped("\\.", 2), "\\\\.");
}

Test(copy, keeps_valid_utf8)
{
    const char *s = "K\xC3\xB6ln \xE2\x82\xAC \xF0\x9F\x98\x80";
    cr_assert_str_eq(escaped(s, strlen(s)), s);
}

Test(copy, replaces_invalid_utf8)
{
    /* A lone continuation byte, a truncated sequence, an overlong NUL, a
     * surrogate: each becomes U+FFFD, the rest is kept. */
    cr_assert_str_eq(escaped("a\x80z", 3), "a\xEF\xBF\xBDz");
    cr_assert_str_eq(escaped("a\xE2\x82", 3), "a\xEF\xBF\xBD\xEF\xBF\xBD");
    cr_assert_str_eq(escaped("\xC0\x80", 2), "\xEF\xBF\xBD\xEF\xBF\xBD");
    cr_assert_str_eq(escaped("\xED\xA0\x80", 3), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    cr_assert_str_eq(escaped("\xF4\x90\x80\x80", 4),
                     "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

/* Text can hold no NUL byte (PostgreSQL refuses the row): it becomes U+FFFD. */
Test(copy, replaces_nul)
{
    strbuf_reset(&sb);
    copy_escape(&sb, "a\0b", 3);
    cr_assert_eq(sb.len, 5);
    cr_assert_eq(memcmp(sb.data,
                        "a\xEF\xBF\xBD"
                        "b",
                        5),
                 0);
}

Test(copy, null_and_optional_strings)
{
    struct copy_row row;

    copy_row_begin(&row, &sb);
    copy_row_str(&row, NULL);
    copy_row_opt_str(&row, "");
    copy_row_opt_str(&row, NULL);
    copy_row_str(&row, "");
    copy_row_end(&row);
    /* NULL is \N; an empty string is an empty field (distinct from NULL). */
    cr_assert_str_eq(sb.data, "\\N\t\\N\t\\N\t\n");
}

Test(copy, literal_backslash_n_is_not_null)
{
    struct copy_row row;

    copy_row_begin(&row, &sb);
    copy_row_str(&row, "\\N");
    copy_row_end(&row);
    cr_assert_str_eq(sb.data, "\\\\N\n");
}

Test(copy, full_row)
{
    struct copy_row row;

    copy_row_begin(&row, &sb);
    copy_row_int(&row, 42);
    copy_row_int(&row, -7);
    copy_row_str(&row, "Ber\tlin\n");
    copy_row_null(&row);
    copy_row_time_ms(&row, 1764064800123LL); /* 2025-11-25T10:00:00.123Z */
    copy_row_end(&row);
    copy_row_begin(&row, &sb);
    copy_row_int(&row, 1);
    copy_row_end(&row);
    cr_assert_str_eq(sb.data, "42\t-7\tBer\\tlin\\n\t\\N\t2025-11-25 10:00:00.123+00\n1\n");
    strbuf_reset(&sb);
    copy_row_begin(&row, &sb);
    copy_row_int(&row, 0);
    copy_row_int(&row, INT64_MIN);
    copy_row_int(&row, INT64_MAX);
    copy_row_end(&row);
    cr_assert_str_eq(sb.data, "0\t-9223372036854775808\t9223372036854775807\n");
}

Test(copy, time_formatting)
{
    char buf[48];

    cr_assert(copy_format_time_ms(0, buf, sizeof(buf)));
    cr_assert_str_eq(buf, "1970-01-01 00:00:00.000+00");
    cr_assert(copy_format_time_ms(-1, buf, sizeof(buf)));
    cr_assert_str_eq(buf, "1969-12-31 23:59:59.999+00");
    cr_assert(copy_format_time_ms(951782400000LL, buf, sizeof(buf))); /* leap day */
    cr_assert_str_eq(buf, "2000-02-29 00:00:00.000+00");
    cr_assert_not(copy_format_time_ms(INT64_C(253402300800000), buf, sizeof(buf))); /* year 10000 */
    cr_assert_not(copy_format_time_ms(0, buf, 10));
    cr_assert(copy_format_time_ms(-62167219200000LL, buf, sizeof(buf)));
    cr_assert_str_eq(buf, "0000-01-01 00:00:00.000+00");
    cr_assert_not(copy_format_time_ms(-62167219200001LL, buf, sizeof(buf))); /* year -1 */
    cr_assert(copy_format_time_ms(253402300799999LL, buf, sizeof(buf)));
    cr_assert_str_eq(buf, "9999-12-31 23:59:59.999+00");
    cr_assert_not(copy_format_time_ms(INT64_MIN, buf, sizeof(buf)));
    cr_assert_not(copy_format_time_ms(INT64_MAX, buf, sizeof(buf)));
}

Test(copy, out_of_range_time_is_null)
{
    struct copy_row row;

    copy_row_begin(&row, &sb);
    copy_row_time_ms(&row, INT64_C(253402300800000));
    copy_row_end(&row);
    cr_assert_str_eq(sb.data, "\\N\n");
}

Test(copy, binary_fields)
{
    static const unsigned char want[] = {
        0,    3,                                        /* a tuple of 3 fields */
        0,    0,    0,    4,    0xff, 0xff, 0xff, 0xfe, /* int4 -2 */
        0,    0,    0,    8,    0,    0,    0,    0,    0,    0,    0x01, 0x2c, /* int8 300 */
        0xff, 0xff, 0xff, 0xff,                                                 /* NULL */
        0,    0,    0,    1,    1,                                              /* true */
        0,    0,    0,    2,    'h',  'i',                                      /* text */
        0xff, 0xff, 0xff, 0xff,                                                 /* "" is NULL */
        0,    0,    0,    8,    0,    0,    0,    0,    0,    0,    0x03, 0xe8, /* 2000-01-01
                                                                                   00:00:00.001 */
        0,    0,    0,    8,    2,    32,   0,    4,    10,   0,    0,    1,    /* inet 10.0.0.1 */
        0,    0,    0,    20,   3,    128,  0,    16,   0x20, 0x01, 0x0d, 0xb8, 0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    1, /* inet 2001:db8::1 */
        0xff, 0xff, 0xff, 0xff, /* an address that does not parse */
        0xff, 0xff};            /* the trailer */

    copy_bin_tuple(&sb, 3);
    copy_bin_int4(&sb, -2);
    copy_bin_int8(&sb, 300);
    copy_bin_null(&sb);
    copy_bin_bool(&sb, true);
    copy_bin_opt_str(&sb, "hi");
    copy_bin_opt_str(&sb, "");
    copy_bin_time_ms(&sb, 946684800001LL);
    struct ip_addr a;
    cr_assert(ip_unmap("10.0.0.1", &a));
    copy_bin_inet(&sb, &a);
    cr_assert(ip_unmap("2001:db8::1", &a));
    copy_bin_inet(&sb, &a);
    cr_assert_not(ip_unmap("fe80::1%eth0", &a));
    copy_bin_inet(&sb, &a);
    copy_bin_trailer(&sb);
    cr_assert_eq(sb.len, sizeof(want));
    cr_assert_eq(memcmp(sb.data, want, sizeof(want)), 0);
    /* The stream header: signature, flags, header extension length. */
    cr_assert_eq(COPY_BINARY_HEADER_LEN, 19);
    cr_assert_eq(memcmp(COPY_BINARY_HEADER, "PGCOPY\n\377\r\n\0", 11), 0);
    /* Before PostgreSQL's epoch the microseconds are negative. */
    strbuf_reset(&sb);
    copy_bin_time_ms(&sb, 0);
    static const unsigned char epoch[] = {0,    0,    0,    8,    0xff, 0xfc,
                                          0xa2, 0xfe, 0xc4, 0xc8, 0x20, 0x00};
    cr_assert_eq(memcmp(sb.data, epoch, sizeof(epoch)), 0);
}
