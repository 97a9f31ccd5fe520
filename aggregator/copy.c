/* PostgreSQL COPY text-format encoding: escaping, NULLs, rows. Pure. */
#include "copy.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

void copy_row_int(struct copy_row *row, long long v)
{
    copy_row_sep(row);
    strbuf_printf(row->out, "%lld", v);
}

void copy_row_bool(struct copy_row *row, bool v)
{
    copy_row_sep(row);
    strbuf_putc(row->out, v ? 't' : 'f');
}

bool copy_format_time_ms(int64_t ms, char *out, size_t outlen)
{
    /* Floor division so times before 1970 keep a positive millisecond part. */
    int64_t secs = ms / 1000;
    int64_t frac = ms % 1000;
    struct tm tm;

    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return false;
    int n = snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return n > 0 && (size_t)n < outlen;
}

void copy_row_time_ms(struct copy_row *row, int64_t ms)
{
    char buf[48];

    if (!copy_format_time_ms(ms, buf, sizeof(buf))) {
        copy_row_null(row);
        return;
    }
    copy_row_sep(row);
    strbuf_puts(row->out, buf);
}

void copy_row_end(struct copy_row *row)
{
    strbuf_putc(row->out, '\n');
    row->nfields = 0;
}
