/* Unit tests for reporter/auth.c: Bearer header parsing and the key cache. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "api_key.h"
#include "auth.h"

static void check_token(const char *header, const char *want)
{
    const char *tok = NULL;
    size_t len = 0;

    cr_assert(auth_bearer_token(header, &tok, &len), "header '%s'", header);
    cr_assert_eq(len, strlen(want), "header '%s'", header);
    cr_assert(strncmp(tok, want, len) == 0, "header '%s'", header);
}

Test(auth_bearer, accepts)
{
    check_token("Bearer arv_abc", "arv_abc");
    check_token("bearer arv_abc", "arv_abc");
    check_token("BEARER   arv_abc  ", "arv_abc");
    check_token("  Bearer\tarv_abc", "arv_abc");
}

Test(auth_bearer, rejects)
{
    const char *tok;
    size_t len;

    cr_assert_not(auth_bearer_token(NULL, &tok, &len));
    cr_assert_not(auth_bearer_token("", &tok, &len));
    cr_assert_not(auth_bearer_token("Bearer", &tok, &len));
    cr_assert_not(auth_bearer_token("Bearer   ", &tok, &len));
    cr_assert_not(auth_bearer_token("Basic dXNlcjpwYXNz", &tok, &len));
    cr_assert_not(auth_bearer_token("Bearerarv_abc", &tok, &len));
    cr_assert_not(auth_bearer_token("Bearer a b", &tok, &len));
    cr_assert_not(auth_bearer_token("arv_abc", &tok, &len));
}

static void hash_of(const char *key, char out[API_KEY_HASH_HEX_LEN + 1])
{
    cr_assert_eq(api_key_hash_hex(key, strlen(key), out), 0);
}

Test(auth_cache, hit_until_ttl)
{
    struct auth_cache *c = auth_cache_new(64);
    struct auth_principal p = {.key_id = 3, .is_admin = false, .company_id = 7}, got = {0};
    enum auth_status st = AUTH_FAILED;
    char h[API_KEY_HASH_HEX_LEN + 1];

    hash_of("arv_one", h);
    cr_assert_not(auth_cache_get(c, h, 1000, &st, &got));
    auth_cache_put(c, h, 1000, 30000, AUTH_OK, &p);
    cr_assert(auth_cache_get(c, h, 1000, &st, &got));
    cr_assert_eq(st, AUTH_OK);
    cr_assert_eq(got.key_id, 3);
    cr_assert_eq(got.company_id, 7);
    cr_assert_not(got.is_admin);
    cr_assert(auth_cache_get(c, h, 30999, &st, &got));
    cr_assert_not(auth_cache_get(c, h, 31000, &st, &got), "expired at the TTL");
    cr_assert_not(auth_cache_get(c, h, 1000, &st, &got), "an expired entry is dropped");
    auth_cache_free(c);
}

Test(auth_cache, negative_and_revoked_entries)
{
    struct auth_cache *c = auth_cache_new(64);
    struct auth_principal got = {.key_id = 99};
    enum auth_status st = AUTH_OK;
    char h1[API_KEY_HASH_HEX_LEN + 1], h2[API_KEY_HASH_HEX_LEN + 1];

    hash_of("arv_unknown", h1);
    hash_of("arv_revoked", h2);
    auth_cache_put(c, h1, 0, 5000, AUTH_UNKNOWN, NULL);
    auth_cache_put(c, h2, 0, 30000, AUTH_REVOKED, NULL);
    cr_assert(auth_cache_get(c, h1, 10, &st, &got));
    cr_assert_eq(st, AUTH_UNKNOWN);
    cr_assert(auth_cache_get(c, h2, 10, &st, &got));
    cr_assert_eq(st, AUTH_REVOKED);
    cr_assert_not(auth_cache_get(c, h1, 5000, &st, &got));
    cr_assert(auth_cache_get(c, h2, 5000, &st, &got));
    auth_cache_free(c);
}

Test(auth_cache, overwrite_same_key)
{
    struct auth_cache *c = auth_cache_new(4);
    struct auth_principal p = {.key_id = 1, .is_admin = true}, got;
    enum auth_status st;
    char h[API_KEY_HASH_HEX_LEN + 1];

    hash_of("arv_k", h);
    auth_cache_put(c, h, 0, 1000, AUTH_OK, &p);
    auth_cache_put(c, h, 0, 1000, AUTH_REVOKED, NULL);
    cr_assert(auth_cache_get(c, h, 1, &st, &got));
    cr_assert_eq(st, AUTH_REVOKED);
    auth_cache_free(c);
}

Test(auth_cache, bounded_evicts_oldest)
{
    /* One set of 4: the fifth key evicts the entry closest to expiry. */
    struct auth_cache *c = auth_cache_new(4);
    struct auth_principal p = {.key_id = 1, .is_admin = true}, got;
    enum auth_status st;
    char h[5][API_KEY_HASH_HEX_LEN + 1];
    char key[16];

    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "arv_%d", i);
        hash_of(key, h[i]);
    }
    for (int i = 0; i < 4; i++)
        auth_cache_put(c, h[i], 0, 1000 + (uint64_t)i, AUTH_OK, &p);
    auth_cache_put(c, h[4], 0, 5000, AUTH_OK, &p);
    cr_assert_not(auth_cache_get(c, h[0], 1, &st, &got), "the soonest to expire was evicted");
    for (int i = 1; i < 5; i++)
        cr_assert(auth_cache_get(c, h[i], 1, &st, &got), "key %d kept", i);
    auth_cache_free(c);
}

Test(auth_cache, zero_ttl_caches_nothing)
{
    struct auth_cache *c = auth_cache_new(64);
    struct auth_principal p = {.key_id = 1, .is_admin = true}, got;
    enum auth_status st;
    char h[API_KEY_HASH_HEX_LEN + 1];

    hash_of("arv_k", h);
    auth_cache_put(c, h, 0, 0, AUTH_OK, &p);
    cr_assert_not(auth_cache_get(c, h, 0, &st, &got));
    auth_cache_free(c);
}

Test(auth_status, names)
{
    cr_assert_str_eq(auth_status_name(AUTH_REVOKED), "revoked");
    cr_assert_str_eq(auth_status_name(AUTH_MISSING), "missing");
    cr_assert_str_eq(auth_status_name(AUTH_UNKNOWN), "unknown");
}

/* Known keys for the TTL, unknown ones at most 5 s (a key created after a
 * failed attempt works soon), failures not at all. */
Test(auth_cache, ttl_by_answer)
{
    cr_assert_eq(auth_cache_ttl_ms(30, AUTH_OK), 30000);
    cr_assert_eq(auth_cache_ttl_ms(30, AUTH_REVOKED), 30000);
    cr_assert_eq(auth_cache_ttl_ms(30, AUTH_UNKNOWN), 5000);
    cr_assert_eq(auth_cache_ttl_ms(2, AUTH_UNKNOWN), 2000);
    cr_assert_eq(auth_cache_ttl_ms(0, AUTH_UNKNOWN), 0);
    cr_assert_eq(auth_cache_ttl_ms(30, AUTH_FAILED), 0);
    cr_assert_eq(auth_cache_ttl_ms(30, AUTH_UNAVAILABLE), 0);
}

/* Keys spread over the sets: 200 keys in a cache of 4096 are all kept. */
Test(auth_cache, keys_spread_over_sets)
{
    struct auth_cache *c = auth_cache_new(4096);
    struct auth_principal p = {.key_id = 1, .is_admin = true}, got;
    enum auth_status st;
    char h[API_KEY_HASH_HEX_LEN + 1];
    char key[16];

    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "arv_%d", i);
        hash_of(key, h);
        p.key_id = i;
        auth_cache_put(c, h, 0, 1000, AUTH_OK, &p);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "arv_%d", i);
        hash_of(key, h);
        if (!auth_cache_get(c, h, 1, &st, &got) || got.key_id != i)
            cr_assert_fail("key %d not kept", i);
    }
    auth_cache_free(c);
}
