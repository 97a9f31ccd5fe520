/* Percent-decoding of query strings and URL credentials. */
#include "urlcode.h"

int urlcode_hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

bool urlcode_decode(const char *s, size_t n, enum urlcode_mode mode, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '+' && mode == URLCODE_FORM) {
            ch = ' ';
        } else if (ch == '%') {
            int hi = i + 2 < n ? urlcode_hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? urlcode_hex_value(s[i + 2]) : -1;
            /* %00 is no escape: a NUL would cut the value short (scope=company:7%00x
             * read as company:7). Strict mode refuses it, form mode keeps it as is. */
            if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
                ch = (char)(hi * 16 + lo);
                i += 2;
            } else if (mode == URLCODE_STRICT) {
                return false;
            }
        }
        if (o + 1 >= outlen)
            return false;
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}
