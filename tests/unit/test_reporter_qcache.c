/* Unit tests for reporter/qcache.c (the answer cache), with caller-supplied
 * clocks. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "qcache.h"

Test(qcache, hit_until_ttl)
{
    struct qcache *c = qcache_new(16, 1000);
    const struct qcache_entry *e;

    cr_assert_null(qcache_get(c, "a", 0));
    qcache_put(c, "a", 0, "{\"x\":1}", 7, false, "2026-01-01T00:00:00.000Z");
    e = qcache_get(c, "a", 999);
    cr_assert_not_null(e);
    cr_assert_eq(e->len, 7);
    cr_assert_str_eq(e->body, "{\"x\":1}");
    cr_assert_str_eq(e->complete_until, "2026-01-01T00:00:00.000Z");
    cr_assert_null(qcache_get(c, "a", 1000));
    cr_assert_null(qcache_get(c, "b", 0));
    /* Replacing keeps one entry per key. */
    qcache_put(c, "a", 2000, "csv", 3, true, NULL);
    e = qcache_get(c, "a", 2001);
    cr_assert(e->csv);
    cr_assert_str_eq(e->body, "csv");
    qcache_free(c);
}

Test(qcache, bounded_and_off)
{
    struct qcache *c = qcache_new(8, 1000);
    char key[32];
    int live = 0;

    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        qcache_put(c, key, 0, "x", 1, false, "");
    }
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        live += qcache_get(c, key, 1) != NULL;
    }
    cr_assert_leq(live, 8);
    cr_assert_geq(live, 1);
    qcache_free(c);
    c = qcache_new(8, 0);
    qcache_put(c, "a", 0, "x", 1, false, "");
    cr_assert_null(qcache_get(c, "a", 0));
    qcache_free(c);
    qcache_free(NULL);
}
