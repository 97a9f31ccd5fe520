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
    /* 8 slots: a flood of new keys evicts the least recently seen ones, which
     * come back with a full bucket; nothing grows. */
    struct rate_limit *r = rate_limit_new(1, 1, 8);
    unsigned wait = 0;
    char key[32];
    cr_assert(rate_limit_take(r, "victim", 0, &wait));
    cr_assert_not(rate_limit_take(r, "victim", 0, &wait));
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_assert(rate_limit_take(r, key, 1 + i / 1000, &wait));
    }
    cr_expect(rate_limit_take(r, "victim", 2, &wait));
    /* The most recent keys are still limited. */
    cr_expect_not(rate_limit_take(r, "k999", 2, &wait));
    rate_limit_free(r);
}
