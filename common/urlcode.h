/* Percent-decoding for the two places URLs reach us: query strings (form rules,
 * lenient) and credentials in redis:// URLs (strict). Pure. */
#ifndef ARV_URLCODE_H
#define ARV_URLCODE_H

#include <stdbool.h>
#include <stddef.h>

enum urlcode_mode {
    URLCODE_FORM,  /* '+' is a space; a '%' without two hex digits, or %00, stays as is */
    URLCODE_STRICT /* a malformed escape or %00 is an error; '+' stays '+' */
};

/* The value of hex digit `c` (either case), or -1. Also used by the JSON
 * reader for \u escapes. */
int urlcode_hex_value(char c);

/* Decodes s[0..n) into `out` (`outlen` bytes, NUL-terminated). Returns false if
 * it does not fit, or (strict) on a malformed escape. */
bool urlcode_decode(const char *s, size_t n, enum urlcode_mode mode, char *out, size_t outlen);

#endif
