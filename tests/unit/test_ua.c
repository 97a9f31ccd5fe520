/* Unit tests for aggregator/ua.c: real uap-core regexes on real user agents,
 * uap-core's own test cases, replacement rules, the LRU cache, bad files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "event.h"
#include "ua.h"

#define UAP_TESTS "/usr/share/uap-core/tests"

static struct ua_db *db;
static char tmpdir[64];

static void open_default(void)
{
    char err[256] = "";
    int rc = ua_db_open(UA_DEFAULT_REGEXES, &db, err, sizeof(err));

    cr_assert_eq(rc, 0, "%s: %d %s (apt-get install uap-core)", UA_DEFAULT_REGEXES, rc, err);
    cr_assert_not_null(db);
}

static void close_db(void)
{
    ua_db_close(db);
    db = NULL;
}

/* Writes `text` to a fresh file in a private temp dir; returns its path. */
static const char *write_file(const char *name, const char *text)
{
    static char path[128];
    FILE *f;

    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/ua-test-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
    }
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_tmp(void)
{
    char cmd[128];

    if (tmpdir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
        tmpdir[0] = '\0';
    }
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0)
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return false;
    }
    return true;
}

static void lookup(struct ua_cache *c, const char *ua, struct ua_result *r)
{
    ua_cache_lookup(c, ua, strlen(ua), r);
}

/* ---- real user agents ------------------------------------------------------ */

struct ua_case {
    const char *ua;
    const char *browser;
    const char *os;
    const char *device_type;
    bool is_bot;
};

static const struct ua_case cases[] = {
    /* iPhone Safari */
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
     "Mobile Safari", "iOS", "mobile", false},
    /* Chrome on iOS */
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
     "Chrome Mobile iOS", "iOS", "mobile", false},
    /* Android Chrome (reduced UA) */
    {"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36",
     "Chrome Mobile", "Android", "mobile", false},
    {"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.6367.82 Mobile Safari/537.36",
     "Chrome Mobile", "Android", "mobile", false},
    {"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
     "Samsung Internet", "Android", "mobile", false},
    /* In-app browser (WebView) */
    {"Mozilla/5.0 (Linux; Android 12; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
     "Chrome/124.0.0.0 Mobile Safari/537.36 Instagram 330.0.0.40.92 Android",
     "Instagram", "Android", "mobile", false},
    /* Tablets: iPad (pre-iPadOS 13 UA), Android without "Mobile" */
    {"Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1",
     "Mobile Safari", "iOS", "tablet", false},
    {"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36",
     "Chrome", "Android", "tablet", false},
    /* Windows Chrome, Edge, Firefox */
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36",
     "Chrome", "Windows", "desktop", false},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
     "Edge", "Windows", "desktop", false},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox",
     "Windows", "desktop", false},
    /* macOS Safari; Apple Vision Pro's Safari sends exactly this string too, so
     * by its user agent alone it is a Mac (see docs/aggregator.md). */
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15",
     "Safari", "Mac OS X", "desktop", false},
    {"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36",
     "Chrome", "Chrome OS", "desktop", false},
    {"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox",
     "Ubuntu", "desktop", false},
    /* Headsets: Quest Browser (Quest 3, Quest 2), Oculus Go, Pico, visionOS media */
    {"Mozilla/5.0 (X11; Linux x86_64; Quest 3) AppleWebKit/537.36 (KHTML, like Gecko) "
     "OculusBrowser/33.0.0.x SamsungBrowser/4.0 Chrome/126.0.6478.122 VR Safari/537.36",
     "Oculus Browser", "Linux", "headset", false},
    {"Mozilla/5.0 (Linux; Android 10; Quest 2) AppleWebKit/537.36 (KHTML, like Gecko) "
     "OculusBrowser/15.0.0.0.22.280317669 SamsungBrowser/4.0 Chrome/89.0.4389.90 VR "
     "Safari/537.36",
     "Oculus Browser", "Android", "headset", false},
    {"Mozilla/5.0 (Linux; Android 7.1.1; Pacific Build/NGI77B; wv) AppleWebKit/537.36 (KHTML, "
     "like Gecko) Version/4.0 Chrome/75.0.3770.143 Mobile VR Safari/537.36",
     "Chrome Mobile WebView", "Android", "headset", false},
    {"Mozilla/5.0 (X11; Linux x86_64; PICO 4 OS5.4.0 like Quest) AppleWebKit/537.36 (KHTML, like "
     "Gecko) PicoBrowser/3.3.22 Chrome/105.0.5195.68 VR Safari/537.36",
     "Pico Browser", "Linux", "headset", false},
    {"AppleCoreMedia/1.0.0.21N305 (Apple Vision Pro; U; CPU OS 1_0 like Mac OS X; en_us)", "Other",
     "visionOS", "headset", false},
    /* Native app over CFNetwork */
    {"MyARApp/2.3 CFNetwork/1494.0.7 Darwin/23.4.0", "MyARApp", "iOS", "mobile", false},
    /* TVs and consoles */
    {"Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "76.0.3809.146/6.0 TV Safari/537.36",
     "Safari", "Tizen", "other", false},
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Chrome/124.0.0.0 Safari/537.36 Edge/44.18363.8131",
     "Edge", "Windows", "other", false},
    /* Crawlers */
    {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot",
     "Other", "bot", true},
    {"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
     "+http://www.google.com/bot.html)",
     "Googlebot", "Android", "bot", true},
    {"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bingbot", "Other",
     "bot", true},
    {"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
     "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
     "bingbot", "Other", "bot", true},
    {"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "FacebookBot",
     "Other", "bot", true},
    /* Tools and headless browsers */
    {"curl/7.88.1", "curl", "Other", "bot", true},
    {"Wget/1.21.3", "Wget", "Other", "bot", true},
    {"python-requests/2.31.0", "Python Requests", "Other", "bot", true},
    {"Go-http-client/1.1", "Go-http-client", "Other", "bot", true},
    {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/124.0.0.0 Safari/537.36",
     "HeadlessChrome", "Linux", "bot", true},
    /* An app's HTTP stack is not a bot. */
    {"okhttp/4.12.0", "okhttp", "Other", "other", false},
    /* Nothing to go on */
    {"", "Other", "Other", "other", false},
    {"asdkjh ((( ;;; 12.3 zzz", "Other", "Other", "other", false},
    {"\xff\xfe\x80 \xc3( Mozilla", "Other", "Other", "other", false},
};

static void check_case(const struct ua_case *k, const struct ua_result *r)
{
    cr_expect_str_eq(r->browser, k->browser, "browser of [%s]: %s", k->ua, r->browser);
    cr_expect_str_eq(r->os, k->os, "os of [%s]: %s", k->ua, r->os);
    cr_expect_str_eq(r->device_type, k->device_type, "device_type of [%s]: %s", k->ua,
                     r->device_type);
    cr_expect_eq(r->is_bot, k->is_bot, "is_bot of [%s]: %d", k->ua, r->is_bot);
}

Test(ua, real_user_agents, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 64);
    struct ua_result r;

    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lookup(c, cases[i].ua, &r);
        check_case(&cases[i], &r);
    }
    ua_cache_free(c);
}

Test(ua, device_brand_and_model, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_result r;

    cr_assert_not_null(c);
    lookup(c, cases[0].ua, &r);
    cr_assert_str_eq(r.device, "iPhone");
    cr_assert_str_eq(r.brand, "Apple");
    cr_assert_str_eq(r.model, "iPhone");
    lookup(c, cases[3].ua, &r); /* Pixel 8 */
    cr_assert_str_eq(r.device, "Pixel 8");
    cr_assert_str_eq(r.brand, "Google");
    cr_assert_str_eq(r.model, "Pixel 8");
    lookup(c, cases[14].ua, &r); /* Quest 3 */
    cr_assert_str_eq(r.device, "Meta Quest 3");
    cr_assert_str_eq(r.brand, "Meta");
    cr_assert_str_eq(r.model, "Quest 3");
    lookup(c, "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", &r);
    cr_assert_str_eq(r.device, "Spider");
    lookup(c, "curl/8.0", &r);
    cr_assert_str_eq(r.device, "Other");
    cr_assert_str_eq(r.brand, "");
    cr_assert_str_eq(r.model, "");
    ua_cache_free(c);
}

Test(ua, null_and_empty_are_other, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_result r;

    cr_assert_not_null(c);
    ua_cache_lookup(c, NULL, 0, &r);
    cr_assert_str_eq(r.browser, "Other");
    cr_assert_str_eq(r.os, "Other");
    cr_assert_str_eq(r.device, "Other");
    cr_assert_str_eq(r.device_type, UA_TYPE_OTHER);
    cr_assert_not(r.is_bot);
    ua_cache_free(c);
}

/* Only the first UA_MAX_LEN bytes count: a 100 KB string costs no more than
 * 512 bytes, is cached under its first 512 bytes, and nothing past them is seen. */
Test(ua, long_strings_are_capped, .init = open_default, .fini = close_db)
{
    const char *head = cases[8].ua; /* Windows Chrome */
    size_t n = 100 * 1024, hl = strlen(head);
    char *big = malloc(n);
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_cache_stats st;
    struct ua_result r, r2;

    cr_assert(big && c);
    memcpy(big, head, hl);
    for (size_t i = hl; i < n; i++)
        big[i] = "( ;/)aZ9."[i % 9];
    memcpy(big + n - 40, " Googlebot/2.1 bingbot/2.0 ", 27); /* past the cap */
    ua_cache_lookup(c, big, n, &r);
    cr_assert_str_eq(r.browser, "Chrome");
    cr_assert_str_eq(r.os, "Windows");
    cr_assert_str_eq(r.device_type, UA_TYPE_DESKTOP);
    cr_assert_not(r.is_bot);
    /* The same first 512 bytes: answered from the cache. */
    ua_cache_lookup(c, big, UA_MAX_LEN, &r2);
    cr_assert_eq(memcmp(&r, &r2, sizeof(r)), 0);
    ua_cache_stats(c, &st);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.limit_errors, 0);

    /* Pathological repetition everywhere: still bounded, still an answer. */
    memset(big, '(', n);
    ua_cache_lookup(c, big, n, &r);
    cr_assert_str_eq(r.browser, "Other");
    memset(big, 'a', n);
    memcpy(big, "Mozilla/5.0 (Linux; Android 10; ", 33);
    ua_cache_lookup(c, big, n, &r);
    cr_assert_str_eq(r.os, "Android");
    cr_assert(strlen(r.device) < UA_FIELD_SIZE);
    ua_cache_free(c);
    free(big);
}

/* Fields are cut at a UTF-8 character boundary, input too. */
Test(ua, truncation_keeps_utf8_valid, .init = open_default, .fini = close_db)
{
    char ua[UA_MAX_LEN + 64];
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_result r;
    size_t n;

    cr_assert_not_null(c);
    n = (size_t)snprintf(ua, sizeof(ua), "Mozilla/5.0 (Linux; Android 10; ");
    while (n + 3 < sizeof(ua) - 1) { /* "€" is 3 bytes: the cuts fall inside one */
        memcpy(ua + n, "\xe2\x82\xac", 3);
        n += 3;
    }
    ua[n] = '\0';
    ua_cache_lookup(c, ua, n, &r);
    cr_assert_str_eq(r.os, "Android");
    cr_assert(utf8_valid(r.browser) && utf8_valid(r.os) && utf8_valid(r.device) &&
                  utf8_valid(r.brand) && utf8_valid(r.model),
              "device [%s] model [%s]", r.device, r.model);
    cr_assert(strlen(r.model) > 0 && strlen(r.model) < UA_FIELD_SIZE);
    ua_cache_free(c);
}

/* The rules match bytes: a capture can start or end inside a character of a
 * well-formed user agent. Every field stays well-formed UTF-8 (PostgreSQL
 * refuses the raw row otherwise). */
Test(ua, captures_inside_characters_stay_utf8_valid, .init = open_default, .fini = close_db)
{
    static const char *const uas[] = {
        "Pr\xc3\xbc"
        "fbot", /* browser "\xbcfbot" before the fix */
        "Sla\xc3\xa9kbot-LinkExpanding 1.0",
        "Mozilla/5.0 (Linux; Android 10; v89_jbla728_asx\xe6\x97\xa5 Build/QP1A)",
        "Mozilla/5.0 (compatible; \xc3\xa9\xc3\xa9Spider/2.0)",
    };
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_result r;

    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(uas) / sizeof(uas[0]); i++) {
        ua_cache_lookup(c, uas[i], strlen(uas[i]), &r);
        cr_assert(utf8_valid(r.browser) && utf8_valid(r.os) && utf8_valid(r.device) &&
                      utf8_valid(r.brand) && utf8_valid(r.model),
                  "%zu: browser [%s] os [%s] device [%s] brand [%s] model [%s]", i, r.browser, r.os,
                  r.device, r.brand, r.model);
        cr_assert(r.browser[0] && r.os[0], "%zu: an empty field", i);
    }
    ua_cache_lookup(c, uas[0], strlen(uas[0]), &r);
    cr_assert_str_eq(r.browser, "fbot");
    ua_cache_free(c);
}

/* The aggregator's step: fill only what the client left empty; bots flagged. */
Test(ua, enrich_event_fills_only_missing_fields, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 8);
    struct event ev;

    cr_assert_not_null(c);
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.user_agent, sizeof(ev.user_agent), "%s", cases[14].ua); /* Quest 3 */
    cr_assert_not(ua_enrich_event(c, &ev));
    cr_assert_str_eq(ev.device_type, "headset");
    cr_assert_str_eq(ev.browser, "Oculus Browser");
    cr_assert_str_eq(ev.os, "Linux");

    memset(&ev, 0, sizeof(ev));
    snprintf(ev.user_agent, sizeof(ev.user_agent), "%s", cases[0].ua); /* iPhone */
    snprintf(ev.device_type, sizeof(ev.device_type), "tablet");
    snprintf(ev.browser, sizeof(ev.browser), "MyViewer");
    cr_assert_not(ua_enrich_event(c, &ev));
    cr_assert_str_eq(ev.device_type, "tablet"); /* the client's own values win */
    cr_assert_str_eq(ev.browser, "MyViewer");
    cr_assert_str_eq(ev.os, "iOS");

    memset(&ev, 0, sizeof(ev));
    snprintf(ev.user_agent, sizeof(ev.user_agent), "asdkjh ((( ;;;");
    cr_assert_not(ua_enrich_event(c, &ev));
    cr_assert_str_eq(ev.device_type, "other");
    cr_assert_str_eq(ev.browser, ""); /* "Other" is left as unknown */
    cr_assert_str_eq(ev.os, "");

    memset(&ev, 0, sizeof(ev)); /* no user agent: nothing to say */
    cr_assert_not(ua_enrich_event(c, &ev));
    cr_assert_str_eq(ev.device_type, "");

    memset(&ev, 0, sizeof(ev));
    snprintf(ev.user_agent, sizeof(ev.user_agent), "curl/8.4.0");
    snprintf(ev.device_type, sizeof(ev.device_type), "mobile");
    cr_assert(ua_enrich_event(c, &ev)); /* a bot, whatever the body claims */
    cr_assert_str_eq(ev.device_type, "mobile");
    cr_assert_str_eq(ev.browser, "curl");
    ua_cache_free(c);
}

/* ---- the cache ----------------------------------------------------------- */

Test(ua, lru_eviction_and_counters, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 2);
    struct ua_cache_stats st;
    struct ua_result r;
    const char *a = cases[0].ua, *b = cases[8].ua, *d = "curl/8.0";

    cr_assert_not_null(c);
    lookup(c, a, &r); /* miss: [a] */
    lookup(c, b, &r); /* miss: [b a] */
    lookup(c, a, &r); /* hit: [a b] */
    cr_assert_str_eq(r.browser, "Mobile Safari");
    ua_cache_stats(c, &st);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.misses, 2);
    cr_assert_eq(st.evictions, 0);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.capacity, 2);
    lookup(c, d, &r); /* miss, evicts b (least recently used): [d a] */
    lookup(c, a, &r); /* hit: [a d] */
    lookup(c, d, &r); /* hit: [d a] */
    cr_assert_str_eq(r.browser, "curl");
    ua_cache_stats(c, &st);
    cr_assert_eq(st.hits, 3);
    cr_assert_eq(st.misses, 3);
    cr_assert_eq(st.evictions, 1);
    lookup(c, b, &r); /* miss (was evicted), evicts a: [b d] */
    cr_assert_str_eq(r.browser, "Chrome");
    lookup(c, a, &r); /* miss, evicts d */
    cr_assert_str_eq(r.browser, "Mobile Safari");
    ua_cache_stats(c, &st);
    cr_assert_eq(st.hits, 3);
    cr_assert_eq(st.misses, 5);
    cr_assert_eq(st.evictions, 3);
    cr_assert_eq(st.entries, 2);
    ua_cache_free(c);
}

Test(ua, capacity_zero_never_caches, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 0);
    struct ua_cache_stats st;
    struct ua_result r;

    cr_assert_not_null(c);
    for (int i = 0; i < 3; i++)
        lookup(c, cases[0].ua, &r);
    cr_assert_str_eq(r.browser, "Mobile Safari");
    ua_cache_stats(c, &st);
    cr_assert_eq(st.hits, 0);
    cr_assert_eq(st.misses, 3);
    cr_assert_eq(st.entries, 0);
    ua_cache_free(c);
}

/* Many distinct strings through a small cache: cached answers equal fresh
 * parses, and the cache never grows past its capacity. */
Test(ua, cached_equals_uncached_under_churn, .init = open_default, .fini = close_db)
{
    struct ua_cache *c = ua_cache_new(db, 7), *raw = ua_cache_new(db, 0);
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    struct ua_cache_stats st;
    struct ua_result r1, r2;

    cr_assert(c && raw);
    for (size_t i = 0; i < 400; i++) {
        const char *ua = cases[(i * 7 + i / 13) % ncases].ua;
        lookup(c, ua, &r1);
        lookup(raw, ua, &r2);
        cr_assert_eq(memcmp(&r1, &r2, sizeof(r1)), 0, "differs for [%s]", ua);
    }
    ua_cache_stats(c, &st);
    cr_assert_eq(st.entries, 7);
    cr_assert_eq(st.hits + st.misses, 400);
    cr_assert_gt(st.hits, 0);
    cr_assert_eq(st.evictions, st.misses - 7);
    ua_cache_free(c);
    ua_cache_free(raw);
}

struct thread_arg {
    const struct ua_db *db;
    int failures;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct ua_cache *c = ua_cache_new(a->db, 4);
    struct ua_result r;

    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            lookup(c, cases[i].ua, &r);
            if (strcmp(r.browser, cases[i].browser) != 0 || r.is_bot != cases[i].is_bot ||
                strcmp(r.device_type, cases[i].device_type) != 0)
                a->failures++;
        }
    }
    ua_cache_free(c);
    return NULL;
}

Test(ua, one_db_many_threads, .init = open_default, .fini = close_db)
{
    pthread_t t[3];
    struct thread_arg a[3];

    for (int i = 0; i < 3; i++) {
        a[i] = (struct thread_arg){.db = db};
        cr_assert_eq(pthread_create(&t[i], NULL, thread_main, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(a[i].failures, 0, "thread %d: %d wrong answers", i, a[i].failures);
    }
}

/* ---- replacement rules, on a small regexes file ---------------------------- */

static const char small_yaml[] = "# a tiny regexes file\n"
                                 "user_agent_parsers:\n"
                                 "  - regex: '(Foo)Browser/(\\d+)'\n"
                                 "    family_replacement: 'Foo $1 v$2'\n"
                                 "  - regex: 'Plain/(\\d+)'\n"
                                 "    family_replacement: 'Plain'\n"
                                 "  - regex: '(Bar)(?:/(\\d+)|)'\n"
                                 "    family_replacement: '$1 $2'\n"
                                 "  - regex: '(\\w+)Agent'\n"
                                 "os_parsers:\n"
                                 "  - regex: 'Win(95|98|NT)'\n"
                                 "    os_replacement: 'Windows $1'\n"
                                 "  - regex: '(ZedOS) (\\d+)'\n"
                                 "device_parsers:\n"
                                 "  - regex: 'gizmo (\\w+)-(\\w+)'\n"
                                 "    regex_flag: 'i'\n"
                                 "    device_replacement: '$2 $1'\n"
                                 "    brand_replacement: 'Acme'\n"
                                 "    model_replacement: '$2'\n"
                                 "  - regex: '; (Phone[^;]*);'\n"
                                 "  - regex: 'Nothing(X|)'\n"
                                 "    device_replacement: '  $1  '\n"
                                 "    model_replacement: ''\n"
                                 "other_key:\n"
                                 "  - ignored: [1, 2, {a: b}]\n";

Test(ua, replacement_rules, .fini = remove_tmp)
{
    const char *path = write_file("small.yaml", small_yaml);
    char err[256] = "";
    struct ua_db *s = NULL;
    struct ua_cache *c;
    struct ua_result r;

    cr_assert_eq(ua_db_open(path, &s, err, sizeof(err)), 0, "%s", err);
    c = ua_cache_new(s, 4);
    cr_assert_not_null(c);

    lookup(c, "FooBrowser/12 (WinNT; GIZMO ab-cd)", &r);
    cr_assert_str_eq(r.browser, "Foo Foo v12"); /* $1 and $2 substituted */
    cr_assert_str_eq(r.os, "Windows NT");
    cr_assert_str_eq(r.device, "cd ab"); /* regex_flag 'i': GIZMO matches gizmo */
    cr_assert_str_eq(r.brand, "Acme");
    cr_assert_str_eq(r.model, "cd");

    lookup(c, "Plain/3 ZedOS 4 (x; Phone 7 ;)", &r);
    cr_assert_str_eq(r.browser, "Plain");  /* replacement without $ */
    cr_assert_str_eq(r.os, "ZedOS");       /* no replacement: group 1 */
    cr_assert_str_eq(r.device, "Phone 7"); /* group 1, trimmed */
    cr_assert_str_eq(r.brand, "");         /* no brand_replacement: none */
    cr_assert_str_eq(r.model, "Phone 7");  /* no model_replacement: group 1 */

    lookup(c, "Bar", &r);
    cr_assert_str_eq(r.browser, "Bar"); /* unset group 2 is empty, then trimmed */
    lookup(c, "gizmo ab-cd", &r);
    cr_assert_str_eq(r.device, "cd ab");
    lookup(c, "GIZMO AB-CD QuxAgent", &r);
    cr_assert_str_eq(r.browser, "Qux");
    cr_assert_str_eq(r.device, "CD AB");
    lookup(c, "Nothing", &r);
    cr_assert_str_eq(r.device, "Other"); /* replacement empty after trimming */
    cr_assert_str_eq(r.model, "");
    lookup(c, "nothing at all", &r);
    cr_assert_str_eq(r.browser, "Other");
    cr_assert_str_eq(r.os, "Other");
    cr_assert_str_eq(r.device, "Other");

    /* Built-in headset rules come first even with another regexes file. */
    lookup(c, cases[14].ua, &r);
    cr_assert_str_eq(r.browser, "Oculus Browser");
    cr_assert_str_eq(r.device_type, UA_TYPE_HEADSET);
    ua_cache_free(c);
    ua_db_close(s);
}

/* The literal prefilter skips a rule only when none of its literals is in the
 * user agent: each rule here has a construct the literal extraction must get
 * right (case, optional parts, alternation, escapes, lookaround, inline flags),
 * and each string matches only its rule. */
static const char prefilter_yaml[] =
    "user_agent_parsers:\n"
    "  - regex: 'xy[Bb]ot'\n"
    "    family_replacement: 'R2'\n"
    "  - regex: 'Colou?r/(\\d)'\n"
    "    family_replacement: 'R3'\n"
    "  - regex: '(?:Mobile )?Safar[i]/(\\d+)'\n"
    "    family_replacement: 'R4'\n"
    "  - regex: 'ab{2,3}c'\n"
    "    family_replacement: 'R5'\n"
    "  - regex: '(?:Foo|)Bar\\d'\n"
    "    family_replacement: 'R6'\n"
    "  - regex: '(Alpha|Beta)Gamma'\n"
    "    family_replacement: 'R7'\n"
    "  - regex: '((?:Fire)fox)/(\\d+)'\n"
    "    family_replacement: 'R8 $1'\n"
    "  - regex: '\\(Quest\\)'\n"
    "    family_replacement: 'R9'\n"
    "  - regex: 'Qux(?!Bar)'\n"
    "    family_replacement: 'R10'\n"
    "  - regex: 'a\\{b'\n"
    "    family_replacement: 'R11'\n"
    "  - regex: '(?i)zebra'\n"
    "    family_replacement: 'R12'\n"
    "  - regex: '^Ab|Cd9'\n"
    "    family_replacement: 'R13'\n"
    "  - regex: 'ThisIsAVeryLongProductNameThatGoesOnAndOn/(\\d)'\n"
    "    family_replacement: 'R14'\n"
    "  - regex: '(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Cc]rawl)(\\d)'\n"
    "    family_replacement: 'R15'\n"
    "os_parsers:\n"
    "  - regex: 'NoSuchOS'\n"
    "device_parsers:\n"
    "  - regex: 'GiZmO (\\w+)'\n"
    "    regex_flag: 'i'\n"
    "    device_replacement: 'R1 $1'\n";

Test(ua, prefilter_never_hides_a_match, .fini = remove_tmp)
{
    static const char *const want[][2] = {
        {"xybot", "R2"},
        {"Color/1", "R3"},
        {"Safari/5", "R4"},
        {"abbbc", "R5"},
        {"Bar1", "R6"},
        {"BetaGamma", "R7"},
        {"Firefox/3", "R8 Firefox"},
        {"(Quest)", "R9"},
        {"QuxBaz", "R10"},
        {"a{b", "R11"},
        {"ZEBRA", "R12"},
        {"xCd9", "R13"},
        {"x ThisIsAVeryLongProductNameThatGoesOnAndOn/7", "R14"},
        {"SpIdEr1", "R15"},
        {"crawl2", "R15"},
    };
    const char *path = write_file("prefilter.yaml", prefilter_yaml);
    char err[256] = "";
    struct ua_db *s = NULL;
    struct ua_cache *c;
    struct ua_result r;

    cr_assert_eq(ua_db_open(path, &s, err, sizeof(err)), 0, "%s", err);
    c = ua_cache_new(s, 0);
    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        lookup(c, want[i][0], &r);
        cr_expect_str_eq(r.browser, want[i][1], "[%s] -> %s", want[i][0], r.browser);
    }
    lookup(c, "Mozilla gIzMo abc", &r); /* regex_flag 'i' against a folded literal */
    cr_assert_str_eq(r.device, "R1 abc");
    lookup(c, "Bar Colr/1 Safari abbbbc SPIDER", &r); /* near misses */
    cr_assert_str_eq(r.browser, "Other");
    ua_cache_free(c);
    ua_db_close(s);
}

/* ---- bad files --------------------------------------------------------------- */

static void expect_open_fails(const char *path, int want_rc, const char *want_in_err)
{
    char err[256] = "";
    struct ua_db *s = (struct ua_db *)&err; /* must be reset to NULL */
    int rc = ua_db_open(path, &s, err, sizeof(err));

    cr_assert_eq(rc, want_rc, "%s: rc %d (%s), expected %d", path, rc, err, want_rc);
    cr_assert_null(s);
    cr_assert(strstr(err, path), "error names the file: %s", err);
    cr_assert(strstr(err, want_in_err), "error [%s] should say [%s]", err, want_in_err);
}

Test(ua, missing_file)
{
    expect_open_fails("/nonexistent/regexes.yaml", -ENOENT, "No such file");
}

Test(ua, unreadable_file, .fini = remove_tmp)
{
    /* A directory opens but cannot be read: what root gets instead of EACCES. */
    const char *path = write_file("x", "");
    char dir[128];

    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    expect_open_fails(dir, -EISDIR, "directory");
    if (geteuid() != 0) {
        path = write_file("noperm.yaml", small_yaml);
        cr_assert_eq(chmod(path, 0), 0);
        expect_open_fails(path, -EACCES, "Permission denied");
    }
}

Test(ua, invalid_yaml, .fini = remove_tmp)
{
    expect_open_fails(write_file("syntax.yaml", "user_agent_parsers:\n  - regex: 'unterminated\n"),
                      -EINVAL, "invalid YAML");
    expect_open_fails(write_file("tabs.yaml", "a:\n\t- b: [c\n"), -EINVAL, "invalid YAML");
}

Test(ua, not_a_regexes_file, .fini = remove_tmp)
{
    expect_open_fails(write_file("empty.yaml", ""), -EINVAL, "not a uap-core regexes file");
    expect_open_fails(write_file("list.yaml", "- a\n- b\n"), -EINVAL, "not a uap-core");
    expect_open_fails(write_file("other.yaml", "foo: bar\n"), -EINVAL, "no user_agent_parsers");
    expect_open_fails(write_file("scalar.yaml", "user_agent_parsers: 3\n"), -EINVAL,
                      "is not a list");
    expect_open_fails(
        write_file("noregex.yaml", "user_agent_parsers:\n  - family_replacement: x\n"), -EINVAL,
        ":2: rule without a regex");
    expect_open_fails(write_file("nested.yaml", "user_agent_parsers:\n  - regex: [a]\n"), -EINVAL,
                      "not a string");
    expect_open_fails(write_file("noos.yaml", "user_agent_parsers:\n  - regex: 'a'\n"), -EINVAL,
                      "no os_parsers");
}

Test(ua, bad_regex, .fini = remove_tmp)
{
    expect_open_fails(write_file("regex.yaml", "user_agent_parsers:\n"
                                               "  - regex: 'ok'\n"
                                               "  - regex: '(unclosed'\n"
                                               "os_parsers:\n  - regex: 'a'\n"
                                               "device_parsers:\n  - regex: 'a'\n"),
                      -EINVAL, ":3: regex does not compile");
}

Test(ua, default_file_loads_everything, .init = open_default, .fini = close_db)
{
    /* uap-core 0.16 has 1166 rules; a later version may have more. */
    cr_assert_gt(ua_db_rule_count(db), 1100);
}

/* ---- uap-core's own test cases ------------------------------------------------ */

struct uap_case {
    char *ua;     /* user_agent_string */
    char *family; /* expected family */
    char *brand;  /* device tests: expected brand ("" for null) */
    char *model;  /* device tests: expected model ("" for null) */
};

/* Reads the first `max` test_cases of a uap-core test file. */
static size_t load_uap_cases(const char *path, struct uap_case *out, size_t max)
{
    FILE *f = fopen(path, "rb");
    yaml_parser_t p;
    yaml_event_t ev;
    size_t n = 0;
    int depth = 0;
    char *key = NULL;
    bool done = false;

    cr_assert_not_null(f, "%s missing (apt-get install uap-core)", path);
    cr_assert(yaml_parser_initialize(&p));
    yaml_parser_set_input_file(&p, f);
    while (!done) {
        cr_assert(yaml_parser_parse(&p, &ev), "%s: YAML error", path);
        switch (ev.type) {
        case YAML_MAPPING_START_EVENT:
            depth++;
            if (depth == 2) {
                if (n == max)
                    done = true;
                else
                    memset(&out[n], 0, sizeof(out[n]));
            }
            break;
        case YAML_MAPPING_END_EVENT:
            if (depth == 2 && out[n].ua)
                n++;
            depth--;
            break;
        case YAML_SCALAR_EVENT:
            if (depth == 2) {
                const char *v = (const char *)ev.data.scalar.value;
                if (!key) {
                    key = strdup(v);
                } else {
                    char **slot = strcmp(key, "user_agent_string") == 0 ? &out[n].ua
                                  : strcmp(key, "family") == 0          ? &out[n].family
                                  : strcmp(key, "brand") == 0           ? &out[n].brand
                                  : strcmp(key, "model") == 0           ? &out[n].model
                                                                        : NULL;
                    if (slot)
                        *slot = strdup(v);
                    free(key);
                    key = NULL;
                }
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    free(key);
    yaml_parser_delete(&p);
    fclose(f);
    return n;
}

static void free_uap_cases(struct uap_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].ua);
        free(c[i].family);
        free(c[i].brand);
        free(c[i].model);
    }
}

/* got == want, or want was longer than a field and got is its truncation. */
static bool same_field(const char *got, const char *want)
{
    size_t g = strlen(got);

    if (strlen(want) < UA_FIELD_SIZE)
        return strcmp(got, want) == 0;
    return g + 4 >= UA_FIELD_SIZE - 1 && strncmp(got, want, g) == 0;
}

#ifndef UAP_SAMPLE
#define UAP_SAMPLE 20000 /* every case (16,111 in test_device.yaml): ~3 s under ASan */
#endif

/* Runs (the first UAP_SAMPLE) cases of `file`; `what` picks the field compared. */
static void run_uap_file(const char *file, char what)
{
    static struct uap_case uc[UAP_SAMPLE];
    char path[256];
    struct ua_cache *c = ua_cache_new(db, 0);
    struct ua_result r;
    size_t n, checked = 0, wrong = 0;

    snprintf(path, sizeof(path), "%s/%s", UAP_TESTS, file);
    n = load_uap_cases(path, uc, UAP_SAMPLE);
    cr_assert_gt(n, 100, "%s: %zu cases", path, n);
    for (size_t i = 0; i < n; i++) {
        if (strlen(uc[i].ua) > UA_MAX_LEN)
            continue; /* parsed only up to the cap, by design */
        lookup(c, uc[i].ua, &r);
        checked++;
        const char *want = uc[i].family ? uc[i].family : "Other";
        const char *got = what == 'u' ? r.browser : what == 'o' ? r.os : r.device;
        bool ok = same_field(got, want);
        if (what == 'd')
            ok = ok && same_field(r.brand, uc[i].brand ? uc[i].brand : "") &&
                 same_field(r.model, uc[i].model ? uc[i].model : "");
        if (!ok) {
            wrong++;
            cr_log_warn("%s: [%s] -> %s/%s/%s, expected %s/%s/%s", file, uc[i].ua, got, r.brand,
                        r.model, want, uc[i].brand ? uc[i].brand : "",
                        uc[i].model ? uc[i].model : "");
        }
    }
    cr_assert_gt(checked, 100);
    cr_assert_eq(wrong, 0, "%s: %zu of %zu cases disagree", file, wrong, checked);
    free_uap_cases(uc, n);
    ua_cache_free(c);
}

Test(ua_uap_tests, user_agents, .init = open_default, .fini = close_db)
{
    run_uap_file("test_ua.yaml", 'u');
}

Test(ua_uap_tests, operating_systems, .init = open_default, .fini = close_db)
{
    run_uap_file("test_os.yaml", 'o');
}

Test(ua_uap_tests, devices, .init = open_default, .fini = close_db)
{
    run_uap_file("test_device.yaml", 'd');
}

/* Crawlers whose user agent reads as a browser's (uap-core names them as the
 * browser family, on a device other than "Spider", or not at all), and
 * scripting clients named past the start: bots, out of the rollups. A phone
 * of the brand Cubot is not one. */
Test(ua, crawlers_named_as_browsers_are_bots, .init = open_default, .fini = close_db)
{
    static const char *const bots[] = {
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/119.0.0.0 Safari/537.36 (compatible; Amazonbot/0.1; "
        "+https://developer.amazon.com/support/amazonbot)",
        "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
        "Mozilla/5.0 (compatible; GoogleOther)",
        "Mozilla/5.0 (compatible; Google-InspectionTool/1.0)",
        "Mediapartners-Google",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; "
        "+https://openai.com/bot",
        "Python/3.11 aiohttp/3.9.1",
        /* Marked by their family's name alone, as the list once named them. */
        "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)",
    };
    static const char *const people[] = {
        "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    };
    struct ua_cache *c = ua_cache_new(db, 8);
    struct ua_result r;

    cr_assert_not_null(c);
    for (size_t i = 0; i < sizeof(bots) / sizeof(bots[0]); i++) {
        ua_cache_lookup(c, bots[i], strlen(bots[i]), &r);
        cr_expect(r.is_bot, "not a bot: [%s] (browser [%s], device [%s])", bots[i], r.browser,
                  r.device);
        cr_expect_str_eq(r.device_type, "bot", "[%s]", bots[i]);
    }
    for (size_t i = 0; i < sizeof(people) / sizeof(people[0]); i++) {
        ua_cache_lookup(c, people[i], strlen(people[i]), &r);
        cr_expect_not(r.is_bot, "a bot: [%s] (browser [%s])", people[i], r.browser);
    }
    ua_cache_free(c);
}
