/* Unit tests for aggregator/geoip.c against a tiny database that
 * tests/fixtures/make-geoip.pl writes into a temporary folder. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "geoip.h"

/* Built once per run (perl takes half a second) and found by every test's
 * process through the environment. */
#define DIR_ENV "ARV_TEST_GEOIP_DIR"

static char dir[64];
static char db6[128]; /* IPv6 database, IPv4 aliased as in GeoIP2 */
static char db4[128]; /* IPv4-only database */

static bool make_db(const char *out, const char *version)
{
    char cmd[512];
    int rc;

    snprintf(cmd, sizeof(cmd), "perl '%s/tests/fixtures/make-geoip.pl' '%s' %s", ARV_SOURCE_DIR,
             out, version);
    rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "%s failed (%d): is libmaxmind-db-writer-perl installed?\n", cmd, rc);
    return rc == 0;
}

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    const char *tmp = getenv("TMPDIR");
    char d[64], p4[128], p6[128];

    (void)set;
    snprintf(d, sizeof(d), "%s/arv-geoip-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d)) {
        perror("mkdtemp");
        return;
    }
    snprintf(p6, sizeof(p6), "%s/city6.mmdb", d);
    snprintf(p4, sizeof(p4), "%s/city4.mmdb", d);
    if (make_db(p6, "6") && make_db(p4, "4"))
        setenv(DIR_ENV, d, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    const char *d = getenv(DIR_ENV);
    char cmd[128];

    (void)stats;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d ? d : "");
    if (d && *d && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", d);
}

static void setup(void)
{
    const char *d = getenv(DIR_ENV);

    cr_assert(d && *d, "the test databases were not built (see the messages above)");
    snprintf(dir, sizeof(dir), "%s", d);
    snprintf(db6, sizeof(db6), "%s/city6.mmdb", dir);
    snprintf(db4, sizeof(db4), "%s/city4.mmdb", dir);
}

TestSuite(geoip, .init = setup);

static struct geoip *open_ok(const char *path)
{
    struct geoip *g = NULL;
    char err[256];
    int rc = geoip_open(path, &g, err, sizeof(err));

    cr_assert_eq(rc, 0, "geoip_open(%s) = %d: %s", path, rc, err);
    cr_assert_not_null(g);
    return g;
}

static void expect_hit(const struct geoip *g, const char *ip, const char *country, const char *city)
{
    struct geoip_result r;
    int rc;

    memset(&r, 'x', sizeof(r));
    rc = geoip_lookup(g, ip, &r);
    cr_assert_eq(rc, 0, "%s: rc %d", ip, rc);
    cr_assert_str_eq(r.country, country, "%s: country %s, expected %s", ip, r.country, country);
    cr_assert_str_eq(r.city, city, "%s: city %s, expected %s", ip, r.city, city);
}

static void expect_rc(const struct geoip *g, const char *ip, int want)
{
    struct geoip_result r;
    int rc;

    memset(&r, 'x', sizeof(r));
    rc = geoip_lookup(g, ip, &r);
    cr_assert_eq(rc, want, "%s: rc %d, expected %d", ip ? ip : "(null)", rc, want);
    cr_assert_str_eq(r.country, "", "%s: country not cleared", ip ? ip : "(null)");
    cr_assert_str_eq(r.city, "", "%s: city not cleared", ip ? ip : "(null)");
}

Test(geoip, ipv4_hits)
{
    struct geoip *g = open_ok(db6);

    expect_hit(g, "81.2.69.0", "GB", "London");
    expect_hit(g, "81.2.69.160", "GB", "London");
    expect_hit(g, "81.2.69.255", "GB", "London");
    expect_hit(g, "89.160.20.112", "SE", "Linköping");
    expect_hit(g, "89.160.20.127", "SE", "Linköping");
    geoip_close(g);
}

Test(geoip, ipv6_hits)
{
    struct geoip *g = open_ok(db6);

    expect_hit(g, "2001:db8::1", "DE", "Berlin");
    expect_hit(g, "2001:db8:ffff:ffff::42", "DE", "Berlin");
    expect_hit(g, "2001:DB8:0:0:0:0:0:1", "DE", "Berlin");
    /* An IPv4 client seen on a dual-stack socket. */
    expect_hit(g, "::ffff:81.2.69.7", "GB", "London");
    geoip_close(g);
}

Test(geoip, partial_records)
{
    struct geoip *g = open_ok(db6);

    /* Country only; a city named in German only; only a registered country. */
    expect_hit(g, "2a02:cf40::1", "NO", "");
    expect_hit(g, "192.0.2.77", "FR", "");
    expect_hit(g, "198.51.100.7", "US", "");
    geoip_close(g);
}

Test(geoip, misses_are_not_errors)
{
    struct geoip *g = open_ok(db6);

    expect_rc(g, "10.0.0.1", -ENOENT);
    expect_rc(g, "192.168.1.20", -ENOENT);
    expect_rc(g, "127.0.0.1", -ENOENT);
    expect_rc(g, "::1", -ENOENT);
    expect_rc(g, "fe80::1", -ENOENT);
    /* Just outside the listed networks. */
    expect_rc(g, "81.2.70.0", -ENOENT);
    expect_rc(g, "81.2.68.255", -ENOENT);
    expect_rc(g, "89.160.20.128", -ENOENT);
    expect_rc(g, "2001:db9::1", -ENOENT);
    /* A record with neither a country nor a city. */
    expect_rc(g, "203.0.113.5", -ENOENT);
    geoip_close(g);
}

Test(geoip, refuses_non_addresses)
{
    struct geoip *g = open_ok(db6);

    expect_rc(g, NULL, -EINVAL);
    expect_rc(g, "", -EINVAL);
    expect_rc(g, "example.com", -EINVAL);
    expect_rc(g, "81.2.69", -EINVAL);
    expect_rc(g, "81.2.69.1/24", -EINVAL);
    expect_rc(g, " 81.2.69.1", -EINVAL);
    expect_rc(g, "2001:db8::1%eth0", -EINVAL);
    geoip_close(g);
}

Test(geoip, ipv4_only_database)
{
    struct geoip *g = open_ok(db4);

    expect_hit(g, "81.2.69.1", "GB", "London");
    expect_hit(g, "::ffff:81.2.69.1", "GB", "London");
    /* IPv6 in an IPv4 database: unknown, not an error. */
    expect_rc(g, "2001:db8::1", -ENOENT);
    expect_rc(g, "10.0.0.1", -ENOENT);
    geoip_close(g);
}

Test(geoip, missing_file)
{
    struct geoip *g = (struct geoip *)1;
    char path[160], err[256];

    snprintf(path, sizeof(path), "%s/no-such.mmdb", dir);
    cr_assert_eq(geoip_open(path, &g, err, sizeof(err)), -ENOENT);
    cr_assert_null(g);
    cr_assert(strstr(err, path), "%s", err);
    cr_assert(strstr(err, "No such file"), "%s", err);
    /* err may be NULL. */
    cr_assert_eq(geoip_open(path, &g, NULL, 0), -ENOENT);
    cr_assert_null(g);
    /* A folder given for the file. */
    cr_assert_eq(geoip_open(dir, &g, err, sizeof(err)), -EISDIR);
    cr_assert_null(g);
    cr_assert(strstr(err, "Is a directory"), "%s", err);
    geoip_close(NULL);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(1 << 16);

    cr_assert(f && buf);
    *len = fread(buf, 1, 1 << 16, f);
    cr_assert(*len > 0 && *len < 1 << 16);
    fclose(f);
    return buf;
}

static void expect_invalid(const char *path)
{
    struct geoip *g = NULL;
    char err[256];
    int rc = geoip_open(path, &g, err, sizeof(err));

    cr_assert_eq(rc, -EINVAL, "%s: rc %d (%s)", path, rc, err);
    cr_assert_null(g);
    cr_assert(strstr(err, path), "%s", err);
    cr_assert(strstr(err, "not a valid MaxMind DB file"), "%s", err);
}

Test(geoip, corrupt_files)
{
    char path[160], garbage[4096];
    size_t len;
    char *real = read_file(db6, &len);

    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (char)(i * 131 + 7);
    snprintf(path, sizeof(path), "%s/garbage.mmdb", dir);
    write_file(path, garbage, sizeof(garbage));
    expect_invalid(path);

    /* The metadata sits at the end: a truncated download loses it. */
    snprintf(path, sizeof(path), "%s/truncated.mmdb", dir);
    write_file(path, real, len / 2);
    expect_invalid(path);

    snprintf(path, sizeof(path), "%s/empty.mmdb", dir);
    write_file(path, "", 0);
    expect_invalid(path);
    free(real);
}

Test(geoip, damaged_search_tree)
{
    char path[160];
    size_t len;
    char *real = read_file(db6, &len);
    struct geoip *g;

    /* The search tree starts the file; records pointing past the data are
     * caught at lookup time, not by the open. */
    memset(real, 0xff, 64);
    snprintf(path, sizeof(path), "%s/tree.mmdb", dir);
    write_file(path, real, len);
    g = open_ok(path);
    expect_rc(g, "81.2.69.1", -EIO);
    expect_rc(g, "2001:db8::1", -EIO);
    geoip_close(g);
    free(real);
}

struct worker {
    const struct geoip *g;
    int wrong; /* lookups that gave another answer */
};

static void *lookups(void *arg)
{
    struct worker *w = arg;
    static const char *const ips[] = {"81.2.69.3", "2001:db8::7", "10.1.1.1", "2a02:cf40::9"};
    static const char *const want[] = {"GB", "DE", "", "NO"};
    struct geoip_result r;

    for (int i = 0; i < 20000; i++) {
        int k = i % 4;

        geoip_lookup(w->g, ips[k], &r);
        if (strcmp(r.country, want[k]) != 0)
            w->wrong++;
    }
    return NULL;
}

Test(geoip, concurrent_readers)
{
    struct geoip *g = open_ok(db6);
    struct worker w[4];
    pthread_t t[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.g = g};
        cr_assert_eq(pthread_create(&t[i], NULL, lookups, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pthread_join(t[i], NULL), 0);
        cr_assert_eq(w[i].wrong, 0, "thread %d: %d wrong answers", i, w[i].wrong);
    }
    geoip_close(g);
}

static struct event ev_with(const char *country, const char *city)
{
    struct event ev;

    memset(&ev, 0, sizeof(ev));
    snprintf(ev.country, sizeof(ev.country), "%s", country);
    snprintf(ev.city, sizeof(ev.city), "%s", city);
    return ev;
}

Test(geoip_apply, fills_what_the_client_left_empty)
{
    const struct geoip_result london = {.country = "GB", .city = "London"};
    struct event ev = ev_with("", "");

    cr_assert(geoip_apply(&london, &ev));
    cr_assert_str_eq(ev.country, "GB");
    cr_assert_str_eq(ev.city, "London");

    /* The client's country agrees: only the city is added. */
    ev = ev_with("GB", "");
    cr_assert(geoip_apply(&london, &ev));
    cr_assert_str_eq(ev.city, "London");

    /* Only a country known. */
    ev = ev_with("", "");
    cr_assert(geoip_apply(&(struct geoip_result){.country = "NO"}, &ev));
    cr_assert_str_eq(ev.country, "NO");
    cr_assert_str_eq(ev.city, "");
}

Test(geoip_apply, client_values_win)
{
    const struct geoip_result london = {.country = "GB", .city = "London"};
    struct event ev = ev_with("FR", "Paris");

    cr_assert_not(geoip_apply(&london, &ev));
    cr_assert_str_eq(ev.country, "FR");
    cr_assert_str_eq(ev.city, "Paris");

    /* Another country than the database's: no city from elsewhere. */
    ev = ev_with("FR", "");
    cr_assert_not(geoip_apply(&london, &ev));
    cr_assert_str_eq(ev.country, "FR");
    cr_assert_str_eq(ev.city, "");

    /* The client's city stays, the missing country is added. */
    ev = ev_with("", "Londres");
    cr_assert(geoip_apply(&london, &ev));
    cr_assert_str_eq(ev.country, "GB");
    cr_assert_str_eq(ev.city, "Londres");

    ev = ev_with("", "");
    cr_assert_not(geoip_apply(&(struct geoip_result){0}, &ev));
    cr_assert_str_eq(ev.country, "");
    cr_assert_str_eq(ev.city, "");

    /* A record with a city but no country: the city's country is unknown, so
     * it is not added, with or without the client's country. */
    const struct geoip_result cityless = {.country = "", .city = "Springfield"};
    ev = ev_with("", "");
    cr_assert_not(geoip_apply(&cityless, &ev));
    cr_assert_str_eq(ev.city, "");
    ev = ev_with("US", "");
    cr_assert_not(geoip_apply(&cityless, &ev));
    cr_assert_str_eq(ev.city, "");
}
