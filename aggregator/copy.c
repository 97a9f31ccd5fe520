/* PostgreSQL COPY encoding, text (escaping, NULLs, rows) and binary. Pure. */
#include "copy.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "timeutil.h"

static const char replacement_char[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    }
    return len;
}

void copy_escape(struct strbuf *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    size_t i = 0;

    if (strbuf_reserve(out, n) < 0)
        return;
    while (i < n) {
        const char *esc = NULL;
        size_t seq = 1;

        /* Printable ASCII other than the backslash is copied as is. */
        while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '\\')
            i++;
        if (i == n)
            break;

        switch (p[i]) {
        case '\\':
            esc = "\\\\";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\0':
            esc = replacement_char; /* text can hold no NUL: PostgreSQL would refuse the row */
            seq = 1;
            break;
        default:
            seq = utf8_sequence_len(p + i, n - i);
            if (seq == 0) {
                esc = replacement_char;
                seq = 1;
            }
            break;
        }
        if (esc) {
            strbuf_append(out, s + run, i - run);
            strbuf_puts(out, esc);
            run = i + seq;
        }
        i += seq;
    }
    strbuf_append(out, s + run, n - run);
}

void copy_row_begin(struct copy_row *row, struct strbuf *out)
{
    row->out = out;
    row->nfields = 0;
}

static void copy_row_sep(struct copy_row *row)
{
    if (row->nfields++ > 0)
        strbuf_putc(row->out, '\t');
}

void copy_row_null(struct copy_row *row)
{
    copy_row_sep(row);
    strbuf_append(row->out, "\\N", 2);
}

void copy_row_text(struct copy_row *row, const char *s, size_t n)
{
    copy_row_sep(row);
    copy_escape(row->out, s, n);
}

struct strbuf *copy_row_field(struct copy_row *row)
{
    copy_row_sep(row);
    return row->out;
}

void copy_row_escaped(struct copy_row *row, const char *s, size_t n)
{
    strbuf_append(copy_row_field(row), s, n);
}

void copy_row_str(struct copy_row *row, const char *s)
{
    if (!s)
        copy_row_null(row);
    else
        copy_row_text(row, s, strlen(s));
}

void copy_row_opt_str(struct copy_row *row, const char *s)
{
    if (!s || !*s)
        copy_row_null(row);
    else
        copy_row_text(row, s, strlen(s));
}

/* Writes the decimal digits of v backwards, ending at `end`; returns the first. */
static char *put_digits(char *end, unsigned long long v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

void copy_row_int(struct copy_row *row, long long v)
{
    char buf[24], *end = buf + sizeof(buf);
    char *p = put_digits(end, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);

    if (v < 0)
        *--p = '-';
    copy_row_sep(row);
    strbuf_append(row->out, p, (size_t)(end - p));
}

/* Writes v as exactly `width` digits (zero-padded) at p. */
static void put_fixed(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
}

bool copy_format_time_ms(int64_t ms, char *out, size_t outlen)
{
    /* Floor division so times before 1970 keep a positive millisecond part. */
    int64_t days = timeutil_period(ms, TIMEUTIL_DAY_MS), in_day, y;
    unsigned m, d, secs;

    /* Years 0 to 9999: 0000-01-01 is day -719528, 9999-12-31 day 2932896. */
    if (days < -719528 || days > 2932896 || outlen < sizeof("2026-11-25 10:00:00.123+00"))
        return false;
    in_day = ms - days * TIMEUTIL_DAY_MS;
    secs = (unsigned)(in_day / 1000);
    timeutil_civil_from_days(days, &y, &m, &d);
    /* "YYYY-MM-DD HH:MM:SS.mmm+00" */
    memcpy(out, "0000-00-00 00:00:00.000+00", sizeof("0000-00-00 00:00:00.000+00"));
    put_fixed(out, (unsigned)y, 4);
    put_fixed(out + 5, m, 2);
    put_fixed(out + 8, d, 2);
    put_fixed(out + 11, secs / 3600, 2);
    put_fixed(out + 14, secs / 60 % 60, 2);
    put_fixed(out + 17, secs % 60, 2);
    put_fixed(out + 20, (unsigned)(in_day % 1000), 3);
    return true;
}

void copy_row_time_ms(struct copy_row *row, int64_t ms)
{
    char buf[32];

    if (!copy_format_time_ms(ms, buf, sizeof(buf))) {
        copy_row_null(row);
        return;
    }
    copy_row_sep(row);
    strbuf_append(row->out, buf, sizeof("2026-11-25 10:00:00.123+00") - 1);
}

void copy_row_end(struct copy_row *row)
{
    strbuf_putc(row->out, '\n');
    row->nfields = 0;
}

/* Appends v in network order. */
static void put_be(struct strbuf *out, uint64_t v, int bytes)
{
    char b[8];

    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        b[i] = (char)(v & 0xff);
    strbuf_append(out, b, (size_t)bytes);
}

void copy_bin_tuple(struct strbuf *out, int nfields)
{
    put_be(out, (uint64_t)nfields, 2);
}

void copy_bin_trailer(struct strbuf *out)
{
    put_be(out, 0xffff, 2);
}

void copy_bin_null(struct strbuf *out)
{
    put_be(out, 0xffffffffu, 4);
}

void copy_bin_len(struct strbuf *out, size_t n)
{
    put_be(out, n, 4);
}

void copy_bin_bytes(struct strbuf *out, const void *s, size_t n)
{
    copy_bin_len(out, n);
    strbuf_append(out, s, n);
}

void copy_bin_opt_bytes(struct strbuf *out, const void *s, size_t n)
{
    if (n == 0)
        copy_bin_null(out);
    else
        copy_bin_bytes(out, s, n);
}

void copy_bin_opt_str(struct strbuf *out, const char *s)
{
    copy_bin_opt_bytes(out, s, s ? strlen(s) : 0);
}

void copy_bin_int4(struct strbuf *out, int32_t v)
{
    put_be(out, 4, 4);
    put_be(out, (uint32_t)v, 4);
}

void copy_bin_int8(struct strbuf *out, int64_t v)
{
    put_be(out, 8, 4);
    put_be(out, (uint64_t)v, 8);
}

void copy_bin_bool(struct strbuf *out, bool v)
{
    put_be(out, 1, 4);
    strbuf_putc(out, v ? 1 : 0);
}

void copy_bin_time_ms(struct strbuf *out, int64_t ms)
{
    /* Microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's epoch. */
    copy_bin_int8(out, (ms - INT64_C(946684800000)) * 1000);
}

void copy_bin_inet(struct strbuf *out, const struct ip_addr *a)
{
    unsigned char b[4 + 16];

    /* family (PGSQL_AF_INET 2, PGSQL_AF_INET6 3), bits, is_cidr, size, address */
    if (a && a->family == AF_INET) {
        memcpy(b, "\x02\x20\x00\x04", 4);
        memcpy(b + 4, a->bytes, 4);
        copy_bin_bytes(out, b, 8);
    } else if (a && a->family == AF_INET6) {
        memcpy(b, "\x03\x80\x00\x10", 4);
        memcpy(b + 4, a->bytes, 16);
        copy_bin_bytes(out, b, 20);
    } else {
        copy_bin_null(out);
    }
}
