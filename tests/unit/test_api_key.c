/* Unit tests for common/api_key.c: key shape, randomness, SHA-256, comparison. */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "api_key.h"

Test(api_key, generate_shape)
{
    char key[API_KEY_LEN + 1];

    cr_assert_eq(api_key_generate(key, sizeof(key)), 0);
    cr_assert_eq(strlen(key), API_KEY_LEN);
    cr_assert_eq(strncmp(key, "arv_", 4), 0);
    cr_assert(api_key_well_formed(key, strlen(key)));
    cr_assert_eq(api_key_generate(key, API_KEY_LEN), -ENOSPC);
}

Test(api_key, generate_is_random)
{
    char a[API_KEY_LEN + 1], b[API_KEY_LEN + 1];
    int seen[128] = {0};
    int distinct = 0;

    cr_assert_eq(api_key_generate(a, sizeof(a)), 0);
    cr_assert_eq(api_key_generate(b, sizeof(b)), 0);
    cr_assert_str_neq(a, b);
    /* 200 keys, 8000 characters: every one of the 62 symbols shows up. */
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(api_key_generate(a, sizeof(a)), 0);
        for (int j = API_KEY_SCHEME_LEN; j < API_KEY_LEN; j++)
            seen[(unsigned char)a[j] & 127]++;
    }
    for (int i = 0; i < 128; i++)
        distinct += seen[i] > 0;
    cr_assert_eq(distinct, 62);
}

Test(api_key, well_formed)
{
    const char *ok = "arv_0123456789abcdefghijABCDEFGHIJklmnopqrst";

    cr_assert_eq(strlen(ok), API_KEY_LEN);
    cr_assert(api_key_well_formed(ok, strlen(ok)));
    cr_assert_not(api_key_well_formed(ok, strlen(ok) - 1));
    cr_assert_not(api_key_well_formed("xrv_0123456789abcdefghijABCDEFGHIJklmnopqrst", API_KEY_LEN));
    cr_assert_not(api_key_well_formed("arv_0123456789abcdefghijABCDEFGHIJklmnopqr-t", API_KEY_LEN));
    cr_assert_not(api_key_well_formed("", 0));
    /* The ends of each range: 0 9 A Z a z; the characters just past them. */
    char ends[API_KEY_LEN + 1] = "arv_";
    for (size_t k = 4; k < API_KEY_LEN; k++)
        ends[k] = "09AZaz"[k % 6];
    ends[API_KEY_LEN] = '\0';
    cr_assert(api_key_well_formed(ends, API_KEY_LEN), "%s", ends);
    const char past[] = {'/', ':', '@', '[', '`', '{'};
    for (size_t k = 0; k < sizeof(past); k++) {
        ends[API_KEY_LEN - 1] = past[k];
        cr_assert_not(api_key_well_formed(ends, API_KEY_LEN), "%s", ends);
    }
}

Test(api_key, sha256_hex)
{
    char h[API_KEY_HASH_HEX_LEN + 1];

    cr_assert_eq(api_key_hash_hex("abc", 3, h), 0);
    cr_assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(api_key_hash_hex("", 0, h), 0);
    cr_assert_str_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

Test(api_key, prefix)
{
    char p[API_KEY_PREFIX_LEN + 1];

    cr_assert_eq(api_key_prefix("arv_0123456789abcdef", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "arv_01234567");
    cr_assert_eq(api_key_prefix("arv_01", p, sizeof(p)), 0);
    cr_assert_str_eq(p, "arv_01");
    cr_assert_eq(api_key_prefix("arv_0123456789", p, 4), -ENOSPC);
}

Test(api_key, equal)
{
    cr_assert(api_key_equal("abcdef", "abcdef", 6));
    cr_assert_not(api_key_equal("abcdef", "abcdeg", 6));
    cr_assert(api_key_equal("abcdef", "abcxyz", 3));
}
