/* Tests of common/rate_limit: token buckets per key, refill, Retry-After,
 * and bounded memory with eviction. */
#include <criterion/criterion.h>

#include <stdio.h>

#include "rate_limit.h"

Test(rate_limit, allows_a_burst_then_refuses_with_retry_after)
{
    struct rate_limit *r = rate_limit_new(2, 5, 1024);
    unsigned wait = 0;
    for (int i = 0; i < 5; i++)
        cr_assert(rate_limit_take(r, "1.2.3.4", 1000, &wait), "request %d", i);
    cr_assert_not(rate_limit_take(r, "1.2.3.4", 1000, &wait));
    cr_expect_eq(wait, 1); /* 2/s: a token is back within 0.5 s, rounded up */
    /* Another client has its own bucket. */
    cr_expect(rate_limit_take(r, "5.6.7.8", 1000, &wait));
    /* 500 ms later one token is back, not two. */
    cr_expect(rate_limit_take(r, "1.2.3.4", 1500, &wait));
    cr_expect_not(rate_limit_take(r, "1.2.3.4", 1500, &wait));
    /* A long pause refills up to the burst only. */
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += rate_limit_take(r, "1.2.3.4", 100000, &wait);
    cr_expect_eq(ok, 5);
    rate_limit_free(r);
}

Test(rate_limit, slow_rates_give_longer_retry_after)
{
    struct rate_limit *r = rate_limit_new(0.1, 1, 16); /* one per 10 s */
    unsigned wait = 0;
    cr_assert_null(rate_limit_new(0, 1, 16));
    cr_assert(rate_limit_take(r, "a", 0, &wait));
    cr_assert_not(rate_limit_take(r, "a", 0, &wait));
    cr_expect_eq(wait, 10);
    cr_assert_not(rate_limit_take(r, "a", 4000, &wait));
    cr_expect_eq(wait, 6);
    rate_limit_free(r);
}

Test(rate_limit, memory_is_bounded_and_old_keys_are_evicted)
{
    /* 8 slots: a flood of new keys evicts the least recently seen ones and
     * takes over their buckets, so it gets what the free slots held, and a
     * limited client pushed out comes back no fuller; nothing grows. */
    struct rate_limit *r = rate_limit_new(1, 1, 8);
    unsigned wait = 0;
    char key[32];
    int ok = 0;
    cr_assert(rate_limit_take(r, "victim", 0, &wait));
    cr_assert_not(rate_limit_take(r, "victim", 0, &wait));
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        ok += rate_limit_take(r, key, 1, &wait);
    }
    cr_expect_eq(ok, 7, "the flood: %d of 1000 allowed", ok);
    cr_expect_not(rate_limit_take(r, "victim", 2, &wait));
    cr_expect_not(rate_limit_take(r, "k999", 2, &wait));
    /* Idle buckets refill, whoever takes them over. */
    cr_expect(rate_limit_take(r, "victim", 3000, &wait));
    cr_expect(rate_limit_take(r, "k999", 3000, &wait));
    rate_limit_free(r);
}

Test(rate_limit, keys_cycled_through_one_set_stay_limited)
{
    /* One set of 8 slots, 1/s with bursts of 1. Nine keys in turn evict the
     * next one to come each time: a key that came back with a full bucket
     * was never limited (900 of 900 allowed). A new key takes over the
     * bucket of the one it evicts (refilled for the time since): the set
     * lets through at most what its 8 buckets hold. */
    struct rate_limit *r = rate_limit_new(1, 1, 8);
    unsigned wait = 0;
    int ok = 0;
    char key[16];

    for (int round = 0; round < 100; round++) {
        for (int k = 0; k < 9; k++) {
            snprintf(key, sizeof(key), "10.0.0.%d", k);
            ok += rate_limit_take(r, key, 1000, &wait);
        }
    }
    cr_expect_eq(ok, 8, "%d of 900 allowed", ok);
    /* A second later each bucket has a token again, whoever holds it. */
    ok = 0;
    for (int k = 0; k < 9; k++) {
        snprintf(key, sizeof(key), "10.0.0.%d", k);
        ok += rate_limit_take(r, key, 2000, &wait);
    }
    cr_expect_eq(ok, 8, "%d of 9 allowed a second later", ok);
    /* The empty key is a key like any other. */
    ok = 0;
    for (int i = 0; i < 10; i++)
        ok += rate_limit_take(r, "", 1000, &wait);
    cr_expect_eq(ok, 0, "the empty key: %d of 10 allowed", ok);
    rate_limit_free(r);
}
