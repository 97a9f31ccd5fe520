/* Unit tests for common/strbuf.c. */
#include <criterion/criterion.h>
#include <string.h>

#include "strbuf.h"

Test(strbuf, utf8_copy_valid)
{
    char out[32];

    /* A sequence cut at the start ("\xbc" of "\xc3\xbc"), a stray byte, a
     * sequence cut at the end: dropped; whole ones kept. */
    size_t n = strbuf_utf8_copy_valid(out, sizeof(out),
                                      "\xbc"
                                      "fb\xff"
                                      "\xc3\xa9t\xe2\x82",
                                      9);
    cr_assert_eq(n, 5);
    cr_assert(memcmp(out, "fb\xc3\xa9t", 5) == 0);
    /* Only whole sequences that fit: "\xe2\x82\xac" does not fit in 4 - 2. */
    n = strbuf_utf8_copy_valid(out, 4,
                               "ab\xe2\x82\xac"
                               "c",
                               6);
    cr_assert_eq(n, 2);
    cr_assert_eq(strbuf_utf8_copy_valid(out, sizeof(out), "", 0), 0);
    /* Overlong and surrogate encodings are not well-formed. */
    cr_assert_eq(strbuf_utf8_copy_valid(out, sizeof(out),
                                        "\xc0\xaf"
                                        "\xed\xa0\x80",
                                        5),
                 0);
}

Test(strbuf, utf8_prefix)
{
    /* "aé€😀": 1 + 2 + 3 + 4 bytes; boundaries at 0, 1, 3, 6, 10. */
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    size_t len = strlen(s);
    static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};

    cr_assert_eq(len, 10);
    for (size_t max = 0; max <= len; max++)
        cr_assert_eq(strbuf_utf8_prefix(s, len, max), want[max], "max %zu", max);
    /* Not cut: the whole string, whatever it holds. */
    cr_assert_eq(strbuf_utf8_prefix(s, len, 100), len);
    cr_assert_eq(strbuf_utf8_prefix(s, 2, 2), 2); /* ends inside "é": len <= max */
    cr_assert_eq(strbuf_utf8_prefix("", 0, 0), 0);
    cr_assert_eq(strbuf_utf8_prefix("abc", 3, 0), 0);
    /* Only continuation bytes: nothing can be kept. */
    cr_assert_eq(strbuf_utf8_prefix("\x80\x80\x80", 3, 2), 0);
}

/* strbuf_hash64 reads 8 bytes at a step: every length around those steps,
 * bytes past a shorter key's end that are NUL, the seed, and a single bit
 * anywhere give other hashes; the same bytes the same hash. */
Test(strbuf, hash64_tells_keys_apart)
{
    static const char zeros[24];
    char buf[24];
    uint64_t seen[64];
    size_t n = 0;

    for (size_t len = 0; len <= 17; len++)
        seen[n++] = strbuf_hash64(zeros, len, 0); /* NULs of each length */
    memcpy(buf, "0123456789abcdefghij", 21);
    for (size_t len = 1; len <= 17; len++)
        seen[n++] = strbuf_hash64(buf, len, 0);
    seen[n++] = strbuf_hash64(buf, 17, 1);
    for (size_t bit = 0; bit < 8 * 17; bit += 9) {
        buf[bit / 8] ^= (char)(1 << bit % 8);
        seen[n++] = strbuf_hash64(buf, 17, 0);
        buf[bit / 8] ^= (char)(1 << bit % 8);
    }
    cr_assert_lt(n, sizeof(seen) / sizeof(seen[0]) + 1);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert_neq(seen[i], seen[j], "keys %zu and %zu", i, j);
    cr_assert_eq(strbuf_hash64(buf, 17, 0), seen[18 + 16]);
}

Test(strbuf, fnv1a_vectors)
{
    /* FNV-1a 32-bit reference values: the collector's shards depend on them. */
    cr_assert_eq(strbuf_fnv1a("", 0), 0x811c9dc5u);
    cr_assert_eq(strbuf_fnv1a("a", 1), 0xe40c292cu);
    cr_assert_eq(strbuf_fnv1a("foobar", 6), 0xbf9cf968u);
    /* Bytes, not a C string: a NUL counts. */
    cr_assert_neq(strbuf_fnv1a("a\0b", 3), strbuf_fnv1a("a", 1));
}
