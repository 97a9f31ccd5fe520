/* Unit tests for common/urlcode.c: form (lenient) and strict percent-decoding. */
#include <criterion/criterion.h>
#include <string.h>

#include "urlcode.h"

static bool dec(const char *s, enum urlcode_mode mode, char *out, size_t outlen)
{
    return urlcode_decode(s, strlen(s), mode, out, outlen);
}

Test(urlcode, form_rules)
{
    char out[32];
    cr_assert(dec("a+b%2Cc%2f", URLCODE_FORM, out, sizeof(out)));
    cr_assert_str_eq(out, "a b,c/");
    cr_assert(dec("100%", URLCODE_FORM, out, sizeof(out)));
    cr_assert_str_eq(out, "100%");
    cr_assert(dec("%zz%4", URLCODE_FORM, out, sizeof(out)));
    cr_assert_str_eq(out, "%zz%4");
    /* %00 is kept, not decoded into a NUL that would cut the value short. */
    cr_assert(dec("company:7%00x", URLCODE_FORM, out, sizeof(out)));
    cr_assert_str_eq(out, "company:7%00x");
    cr_assert_not(dec("abcdef", URLCODE_FORM, out, 4), "does not fit");
    cr_assert(dec("", URLCODE_FORM, out, 1));
    cr_assert_str_eq(out, "");
}

Test(urlcode, strict_rules)
{
    char out[32];
    cr_assert(dec("p%40ss+w", URLCODE_STRICT, out, sizeof(out)));
    cr_assert_str_eq(out, "p@ss+w");
    cr_assert_not(dec("bad%zz", URLCODE_STRICT, out, sizeof(out)));
    cr_assert_not(dec("end%4", URLCODE_STRICT, out, sizeof(out)));
    cr_assert_not(dec("nul%00", URLCODE_STRICT, out, sizeof(out)));
}
