/* Unit tests for aggregator/content_cache.c without a server: the batch key
 * set, unknown keys, bounds. Reading the registry is covered against
 * PostgreSQL by tests/integration/test_aggregator.sh. */
#include <criterion/criterion.h>
#include <string.h>

#include "content_cache.h"

Test(content_cache, unresolved_keys_are_unknown)
{
    struct content_cache *c = content_cache_new(10, 60000);
    int64_t p, k, id;

    content_cache_begin(c);
    cr_assert_eq(content_cache_note_id(c, 42), 0);
    cr_assert_eq(content_cache_note_uid(c, "it's", 4), 0);
    /* Never read from the registry: unknown, so no row (the event becomes an
     * unknown_content dead letter, never a guess). */
    cr_assert_not(content_cache_lookup_id(c, 42, &p, &k));
    cr_assert_not(content_cache_lookup_uid(c, "it's", 4, &id, &p, &k));
    content_cache_free(c);
}

Test(content_cache, noting_a_key_twice_keeps_one_entry)
{
    struct content_cache *c = content_cache_new(10, 60000);
    struct content_cache_stats st;

    content_cache_begin(c);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(content_cache_note_id(c, 7), 0);
        cr_assert_eq(content_cache_note_uid(c, "7", 1), 0); /* a uid "7" is another key */
    }
    content_cache_stats(c, &st);
    cr_assert_eq(st.size, 2);
    content_cache_free(c);
}

Test(content_cache, every_key_found_across_table_growth)
{
    /* 1024 buckets at first: the 1025th, 2049th and 4097th keys each grow the
     * table as they are added, and must be found afterwards like the others
     * (noted again, a key that was lost would get a second entry). */
    struct content_cache *c = content_cache_new(100000, 60000);
    struct content_cache_stats st;

    content_cache_begin(c);
    for (int round = 0; round < 2; round++) {
        for (int64_t id = 1; id <= 5000; id++)
            cr_assert_eq(content_cache_note_id(c, id), 0);
        for (int64_t id = 1; id <= 5000; id++) {
            char uid[16];
            int n = snprintf(uid, sizeof(uid), "u%lld", (long long)id);
            cr_assert_eq(content_cache_note_uid(c, uid, (size_t)n), 0);
        }
        content_cache_stats(c, &st);
        cr_assert_eq(st.size, 10000, "round %d: %zu entries for 10000 keys", round, st.size);
    }
    content_cache_free(c);
}

Test(content_cache, bounded_but_never_evicts_the_current_batch)
{
    struct content_cache *c = content_cache_new(4, 60000);
    struct content_cache_stats st;

    content_cache_begin(c);
    for (int64_t id = 1; id <= 10; id++)
        cr_assert_eq(content_cache_note_id(c, id), 0);
    content_cache_stats(c, &st);
    cr_assert_eq(st.size, 10, "one batch's keys all stay: %zu", st.size);

    /* The next batch may evict the older ones, least recently used first. */
    content_cache_begin(c);
    cr_assert_eq(content_cache_note_id(c, 1000), 0);
    content_cache_stats(c, &st);
    cr_assert_eq(st.size, 4);
    for (int64_t id = 1000; id < 1100; id++)
        cr_assert_eq(content_cache_note_id(c, id), 0);
    content_cache_begin(c);
    cr_assert_eq(content_cache_note_id(c, 5000), 0);
    content_cache_stats(c, &st);
    cr_assert_eq(st.size, 4);
    content_cache_free(c);
}

Test(content_cache, refresh_without_keys_does_not_query)
{
    struct content_cache *c = content_cache_new(4, 60000);
    struct content_cache_stats st;
    bool oom = true;

    content_cache_begin(c);
    /* No key: no query, so no connection is needed. */
    cr_assert_null(content_cache_refresh(c, NULL, "analytics.ar_content", 1000, &oom));
    cr_assert_not(oom);
    content_cache_stats(c, &st);
    cr_assert_eq(st.queries, 0);
    content_cache_free(c);
}
