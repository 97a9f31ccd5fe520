/* PostgreSQL COPY encoding (pure): text format (escaped values, \N for NULL,
 * tab-separated rows ended by a newline) and binary format. */
#ifndef ARV_AGGREGATOR_COPY_H
#define ARV_AGGREGATOR_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ip_anon.h"
#include "strbuf.h"

/* One row being appended to a buffer; fields are separated automatically. */
struct copy_row {
    struct strbuf *out; /* borrowed; rows are appended to it */
    unsigned nfields;   /* fields written so far in this row */
};

/* Appends `s` (n bytes) escaped for COPY text format: backslash, tab, newline
 * and carriage return become \\, \t, \n, \r; NUL bytes and bytes that are not
 * valid UTF-8 become U+FFFD so the server never rejects the row for them. */
void copy_escape(struct strbuf *out, const char *s, size_t n);

/* Starts a row on `out` (borrowed, must outlive the row). */
void copy_row_begin(struct copy_row *row, struct strbuf *out);

/* Field writers: each appends one field (with the tab before it when it is not
 * the first). Strings are borrowed and copied. */
void copy_row_null(struct copy_row *row);
void copy_row_text(struct copy_row *row, const char *s, size_t n);
/* Starts a field that the caller appends itself, in COPY text form, to the
 * buffer returned (the row's). */
struct strbuf *copy_row_field(struct copy_row *row);
/* A field already in COPY text form (as copy_escape() writes it), as is. */
void copy_row_escaped(struct copy_row *row, const char *s, size_t n);
/* NUL-terminated text; NULL is written as \N. */
void copy_row_str(struct copy_row *row, const char *s);
/* NUL-terminated text where "" (or NULL) means absent and is written as \N. */
void copy_row_opt_str(struct copy_row *row, const char *s);
void copy_row_int(struct copy_row *row, long long v);
/* A timestamptz from ms since the epoch, as "2026-11-25 10:00:00.123+00". */
void copy_row_time_ms(struct copy_row *row, int64_t ms);

/* Ends the row with a newline. */
void copy_row_end(struct copy_row *row);

/* Formats `ms` since the epoch as "YYYY-MM-DD HH:MM:SS.mmm+00" (UTC) into `out`
 * (at least 32 bytes). Returns false if the year is out of 0..9999. */
bool copy_format_time_ms(int64_t ms, char *out, size_t outlen);

/* COPY binary format (FORMAT binary): the stream starts with
 * COPY_BINARY_HEADER and ends with copy_bin_trailer(); each row is
 * copy_bin_tuple() then one field per column, every value in network order.
 * Strings are sent as they are: the caller guarantees valid UTF-8. */
#define COPY_BINARY_HEADER     "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0"
#define COPY_BINARY_HEADER_LEN 19
void copy_bin_tuple(struct strbuf *out, int nfields);
void copy_bin_trailer(struct strbuf *out);
void copy_bin_null(struct strbuf *out);
/* A text, bytea or any value already in its binary form (n may be 0: an
 * empty value, not NULL). */
void copy_bin_bytes(struct strbuf *out, const void *s, size_t n);
/* Starts a field of n bytes, which the caller appends itself. */
void copy_bin_len(struct strbuf *out, size_t n);
/* A text of n bytes; NULL when n is 0. */
void copy_bin_opt_bytes(struct strbuf *out, const void *s, size_t n);
/* A text; NULL when `s` is NULL or empty. */
void copy_bin_opt_str(struct strbuf *out, const char *s);
void copy_bin_int4(struct strbuf *out, int32_t v);
void copy_bin_int8(struct strbuf *out, int64_t v);
void copy_bin_bool(struct strbuf *out, bool v);
/* A timestamptz from ms since the epoch. */
void copy_bin_time_ms(struct strbuf *out, int64_t ms);
/* An inet of address `a` (no prefix); NULL if `a` is NULL or no address. */
void copy_bin_inet(struct strbuf *out, const struct ip_addr *a);

#endif
