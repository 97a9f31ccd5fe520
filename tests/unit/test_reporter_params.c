/* Unit tests for reporter/params.c: dates, time zone names, scopes, and every
 * parameter error of the query API. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "params.h"
#include "timeutil.h"

#define ZONEINFO "/usr/share/zoneinfo"

Test(params_tz, names_checked_against_zoneinfo)
{
    cr_assert(params_tz_valid("UTC", ZONEINFO));
    cr_assert(params_tz_valid("Europe/Berlin", ZONEINFO));
    cr_assert(params_tz_valid("America/New_York", ZONEINFO));
    cr_assert(params_tz_valid("Asia/Kolkata", ZONEINFO));
    cr_assert(params_tz_valid("Etc/GMT+5", ZONEINFO));
    cr_assert_not(params_tz_valid("Mars/Olympus", ZONEINFO));
    /* zoneinfo has them with summer time; PostgreSQL reads them as fixed
     * abbreviations first */
    cr_assert_not(params_tz_valid("CET", ZONEINFO));
    cr_assert_not(params_tz_valid("WET", ZONEINFO));
    cr_assert(params_tz_valid("EST", ZONEINFO));        /* fixed in both */
    cr_assert_not(params_tz_valid("Europe", ZONEINFO)); /* a directory */
    cr_assert_not(params_tz_valid("../../etc/passwd", ZONEINFO));
    cr_assert_not(params_tz_valid("/etc/localtime", ZONEINFO));
    cr_assert_not(params_tz_valid("Europe/../UTC", ZONEINFO));
    cr_assert_not(params_tz_valid("", ZONEINFO));
    cr_assert_not(params_tz_valid("Europe/Berlin;", ZONEINFO));
    cr_assert_not(params_tz_valid("posix/Europe/Berlin", ZONEINFO));
    cr_assert_not(params_tz_valid("zone.tab", ZONEINFO));    /* a file, not TZif */
    cr_assert_not(params_tz_valid("leapseconds", ZONEINFO)); /* the same, a name's characters */
    cr_assert_not(params_tz_valid("Europe//Berlin", ZONEINFO));
    /* Every character a zone name has: Z, -, digits after a sign. */
    cr_assert(params_tz_valid("Europe/Zurich", ZONEINFO));
    cr_assert(params_tz_valid("Zulu", ZONEINFO));
    cr_assert(params_tz_valid("America/Port-au-Prince", ZONEINFO));
    cr_assert(params_tz_valid("Etc/GMT-3", ZONEINFO));
    cr_assert(params_tz_is_utc("UTC"));
    cr_assert(params_tz_is_utc("Etc/UTC"));
    cr_assert_not(params_tz_is_utc("Europe/London"));
    cr_assert_not(params_tz_is_utc("utc"));
}

/* Out of descriptors, a zone's file cannot be opened: that says nothing of
 * the name (a 503, not a 400); a name that is no zone stays not transient. */
Test(params_tz, out_of_descriptors_is_transient)
{
    struct rlimit rl = {.rlim_cur = 16, .rlim_max = 16};
    bool transient = false;
    int fd;

    cr_assert(params_tz_check("Europe/Berlin", ZONEINFO, &transient) && !transient);
    cr_assert_not(params_tz_check("Mars/Olympus", ZONEINFO, &transient));
    cr_assert_not(transient);
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0); /* this test's own process */
    while ((fd = open("/dev/null", O_RDONLY)) >= 0)
        ;
    cr_assert_eq(errno, EMFILE);
    cr_assert_not(params_tz_check("Europe/Berlin", ZONEINFO, &transient));
    cr_assert(transient, "EMFILE is no verdict on the name");
}

Test(params_scope, forms)
{
    enum query_scope sc;
    int64_t id;

    cr_assert(params_parse_scope("all", &sc, &id));
    cr_assert_eq(sc, QUERY_SCOPE_ALL);
    cr_assert(params_parse_scope("company:7", &sc, &id));
    cr_assert_eq(sc, QUERY_SCOPE_COMPANY);
    cr_assert_eq(id, 7);
    cr_assert(params_parse_scope("project:3", &sc, &id));
    cr_assert_eq(sc, QUERY_SCOPE_PROJECT);
    cr_assert(params_parse_scope("content:42", &sc, &id));
    cr_assert_eq(sc, QUERY_SCOPE_CONTENT);
    cr_assert_eq(id, 42);
    cr_assert_not(params_parse_scope("company:", &sc, &id));
    cr_assert_not(params_parse_scope("company:0", &sc, &id));
    cr_assert_not(params_parse_scope("company:x", &sc, &id));
    cr_assert_not(params_parse_scope("team:1", &sc, &id));
    cr_assert_not(params_parse_scope("ALL", &sc, &id));
}

/* A query string as parallel name/value arrays for params_get_fn. */
struct fake_query {
    const char *names[8];
    const char *values[8];
};

static enum params_found fake_get(void *arg, const char *name, char *out, size_t outlen)
{
    struct fake_query *q = arg;

    for (int i = 0; i < 8 && q->names[i]; i++) {
        if (strcmp(q->names[i], name) == 0) {
            if (strlen(q->values[i]) >= outlen)
                return PARAMS_TOO_LONG;
            snprintf(out, outlen, "%s", q->values[i]);
            return PARAMS_PRESENT;
        }
    }
    return PARAMS_ABSENT;
}

/* 2026-02-04 (days since the epoch): the last day of the tests' 400-day
 * windows, so that the default hourly retention (400 days) just keeps them. */
#define TODAY 20488

static const struct params_env env = {ZONEINFO, 400, TODAY};

static bool parse_env(enum query_endpoint ep, struct fake_query *q, struct query_spec *s,
                      const struct params_env *e, struct params_error *err)
{
    memset(s, 0, sizeof(*s));
    s->ep = ep;
    return params_parse(s, fake_get, q, e, err);
}

static bool parse(enum query_endpoint ep, struct fake_query *q, struct query_spec *s,
                  struct params_error *err)
{
    return parse_env(ep, q, s, &env, err);
}

Test(params_parse, defaults)
{
    struct fake_query q = {{NULL}, {NULL}};
    struct query_spec s;
    struct params_error err;

    cr_assert(parse(QUERY_EP_TIMESERIES, &q, &s, &err));
    cr_assert_eq(s.scope, QUERY_SCOPE_ALL);
    cr_assert_not(s.win.explicit_range);
    cr_assert_str_eq(s.win.period, "30");
    cr_assert_str_eq(s.win.tz, "UTC");
    cr_assert(s.win.tz_utc);
    cr_assert_eq(s.interval, QUERY_INTERVAL_DAY);

    /* A company key's default scope is its company. */
    memset(&s, 0, sizeof(s));
    s.ep = QUERY_EP_TOP;
    s.restricted = true;
    s.company_id = 7;
    cr_assert(params_parse(&s, fake_get, &q, &env, &err));
    cr_assert_eq(s.scope, QUERY_SCOPE_COMPANY);
    cr_assert_eq(s.id, 7);
    cr_assert_eq(s.limit, 10);
    cr_assert_eq(s.by, QUERY_BY_CONTENT);
}

Test(params_parse, full_request)
{
    struct fake_query q = {{"scope", "interval", "from", "to", "tz"},
                           {"project:3", "week", "2026-03-01", "2026-03-31", "America/New_York"}};
    struct query_spec s;
    struct params_error err;

    cr_assert(parse(QUERY_EP_TIMESERIES, &q, &s, &err));
    cr_assert_eq(s.scope, QUERY_SCOPE_PROJECT);
    cr_assert_eq(s.id, 3);
    cr_assert_eq(s.interval, QUERY_INTERVAL_WEEK);
    cr_assert(s.win.explicit_range);
    cr_assert_str_eq(s.win.from, "2026-03-01");
    cr_assert_str_eq(s.win.to, "2026-03-31");
    cr_assert_str_eq(s.win.tz, "America/New_York");
    cr_assert_not(s.win.tz_utc);

    struct fake_query q2 = {{"period", "by", "limit"}, {"month", "project", "100"}};
    cr_assert(parse(QUERY_EP_TOP, &q2, &s, &err));
    cr_assert_str_eq(s.win.period, "month");
    cr_assert_eq(s.by, QUERY_BY_PROJECT);
    cr_assert_eq(s.limit, 100);

    struct fake_query q3 = {{"dimension", "period"}, {"tracking_quality", "12mo"}};
    cr_assert(parse(QUERY_EP_BREAKDOWN, &q3, &s, &err));
    cr_assert_eq(s.dim, QUERY_DIM_TRACKING_QUALITY);
    cr_assert_str_eq(s.win.period, "12mo");
    cr_assert_eq(s.limit, 100);
}

/* Each bad request and the field its 400 names. */
Test(params_parse, every_error_names_its_field)
{
    static const struct {
        enum query_endpoint ep;
        const char *n[3];
        const char *v[3];
        const char *field;
    } cases[] = {
        {QUERY_EP_ENTITY, {"from", "to"}, {"2026-02-30", "2026-03-01"}, "from"},
        {QUERY_EP_ENTITY, {"from", "to"}, {"2026-03-01", "tomorrow"}, "to"},
        {QUERY_EP_ENTITY, {"from", "to"}, {"2026-03-02", "2026-03-01"}, "from"},
        {QUERY_EP_ENTITY, {"from"}, {"2026-03-01"}, "to"},
        {QUERY_EP_ENTITY, {"to"}, {"2026-03-01"}, "from"},
        {QUERY_EP_ENTITY, {"from", "to", "period"}, {"2026-03-01", "2026-03-02", "7d"}, "period"},
        {QUERY_EP_ENTITY, {"period"}, {"14d"}, "period"},
        {QUERY_EP_ENTITY, {"tz"}, {"Mars/Olympus"}, "tz"},
        {QUERY_EP_ENTITY, {"tz"}, {"../../etc/passwd"}, "tz"},
        /* 5 years of daily data is fine, one day more is not... */
        {QUERY_EP_ENTITY, {"from", "to"}, {"2020-01-01", "2025-01-01"}, "to"},
        /* ... and hourly data (another zone) stops at 400 days. */
        {QUERY_EP_ENTITY,
         {"from", "to", "tz"},
         {"2025-01-01", "2026-02-05", "Europe/Berlin"},
         "to"},
        {QUERY_EP_TIMESERIES, {"interval"}, {"minute"}, "interval"},
        {QUERY_EP_TIMESERIES,
         {"from", "to", "interval"},
         {"2025-01-01", "2026-02-05", "hour"},
         "to"},
        {QUERY_EP_TIMESERIES, {"scope"}, {"everything"}, "scope"},
        {QUERY_EP_TOP, {"by"}, {"city"}, "by"},
        {QUERY_EP_TOP, {"limit"}, {"0"}, "limit"},
        {QUERY_EP_TOP, {"limit"}, {"101"}, "limit"},
        {QUERY_EP_TOP, {"limit"}, {"ten"}, "limit"},
        {QUERY_EP_BREAKDOWN, {"period"}, {"7d"}, "dimension"},
        {QUERY_EP_BREAKDOWN, {"dimension"}, {"planet"}, "dimension"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake_query q = {{NULL}, {NULL}};
        struct query_spec s;
        struct params_error err = {0};
        for (int j = 0; j < 3; j++) {
            q.names[j] = cases[i].n[j];
            q.values[j] = cases[i].v[j];
        }
        cr_assert_not(parse(cases[i].ep, &q, &s, &err), "case %zu accepted", i);
        cr_assert_str_eq(err.field, cases[i].field, "case %zu", i);
        cr_assert_not_null(err.message);
    }
}

/* A date out of the years taken says which are. */
Test(params_parse, a_date_before_1900_names_the_range)
{
    struct fake_query q = {{"from", "to"}, {"1899-12-31", "1900-01-01"}};
    struct query_spec s;
    struct params_error err = {0};

    cr_assert_not(parse(QUERY_EP_ENTITY, &q, &s, &err));
    cr_assert_str_eq(err.field, "from");
    cr_assert(strstr(err.message, "from 1900-01-01 to 9999-12-31"), "%s", err.message);
}

Test(params_parse, limits_at_the_edge_pass)
{
    struct fake_query q = {{"from", "to"}, {"2020-01-01", "2024-12-31"}};
    struct fake_query h = {{"from", "to", "tz"}, {"2025-01-01", "2026-02-04", "Europe/Berlin"}};
    struct query_spec s;
    struct params_error err;

    cr_assert(parse(QUERY_EP_ENTITY, &q, &s, &err)); /* 1827 days */
    cr_assert(parse(QUERY_EP_ENTITY, &h, &s, &err)); /* 400 days */
}

/* A request and whether params_parse() takes it with hourly rollups kept `days`. */
struct window_case {
    long days; /* ARV_HOURLY_RETENTION_DAYS */
    enum query_endpoint ep;
    const char *n[3];
    const char *v[3];
    const char *field; /* NULL: accepted */
};

/* Checks `n` cases on the UTC day `today` (days since the epoch). */
static void expect_windows(int64_t today, const struct window_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct params_env e = {ZONEINFO, cases[i].days, today};
        struct fake_query q = {{NULL}, {NULL}};
        struct query_spec s;
        struct params_error err = {0};
        for (int j = 0; j < 3 && cases[i].v[j]; j++) {
            q.names[j] = cases[i].n[j];
            q.values[j] = cases[i].v[j];
        }
        bool ok = parse_env(cases[i].ep, &q, &s, &e, &err);
        if (!cases[i].field) {
            cr_assert(ok, "day %" PRId64 " case %zu refused: %s", today, i, err.message);
            continue;
        }
        cr_assert_not(ok, "day %" PRId64 " case %zu accepted", today, i);
        cr_assert_str_eq(err.field, cases[i].field, "day %" PRId64 " case %zu", today, i);
        cr_assert_not_null(strstr(err.message, "ARV_HOURLY_RETENTION_DAYS"),
                           "day %" PRId64 " case %zu", today, i);
    }
}

static int64_t day_of(const char *date)
{
    int64_t d;

    cr_assert(timeutil_parse_date(date, &d), "%s", date);
    return d;
}

Test(params_parse, windows_stop_at_the_hourly_retention)
{
    /* Hourly rollups kept 30 days: those of UTC days before TODAY - 30 are gone. */
    static const struct window_case cases[] = {
        /* interval=hour in UTC reads the hours of [from, to]: from TODAY - 30 on. */
        {30,
         QUERY_EP_TIMESERIES,
         {"interval", "from", "to"},
         {"hour", "2026-01-05", "2026-01-06"},
         NULL},
        {30,
         QUERY_EP_TIMESERIES,
         {"interval", "from", "to"},
         {"hour", "2026-01-04", "2026-01-06"},
         "from"},
        /* Local days elsewhere start on their UTC day or the one before. */
        {30,
         QUERY_EP_ENTITY,
         {"tz", "from", "to"},
         {"Europe/Berlin", "2026-01-06", "2026-02-04"},
         NULL},
        {30,
         QUERY_EP_ENTITY,
         {"tz", "from", "to"},
         {"Europe/Berlin", "2026-01-05", "2026-02-04"},
         "from"},
        {30,
         QUERY_EP_OVERVIEW,
         {"tz", "from", "to"},
         {"America/New_York", "2025-12-01", "2025-12-02"},
         "from"},
        /* Daily rollups in UTC are not concerned, nor are breakdowns. */
        {30, QUERY_EP_ENTITY, {"from", "to"}, {"2025-01-01", "2025-01-02"}, NULL},
        {30, QUERY_EP_BREAKDOWN, {"dimension", "tz"}, {"city", "Europe/Berlin"}, NULL},
        /* Periods, by their first day; the default is 30 days. */
        {30, QUERY_EP_ENTITY, {"tz", "period"}, {"Europe/Berlin", "7d"}, NULL},
        {30, QUERY_EP_ENTITY, {"tz", "period"}, {"Europe/Berlin", "30d"}, NULL},
        {30, QUERY_EP_ENTITY, {"tz", "period"}, {"Europe/Berlin", "month"}, NULL}, /* from 02-01 */
        {30, QUERY_EP_ENTITY, {"tz", "period"}, {"Europe/Berlin", "90d"}, "period"},
        {30, QUERY_EP_ENTITY, {"tz"}, {"Europe/Berlin"}, NULL},
        {30, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "12mo"}, "period"},
        {30, QUERY_EP_ENTITY, {"period"}, {"12mo"}, NULL},
        /* A shorter retention: 29 days no longer hold a 30-day window in Berlin. */
        {29, QUERY_EP_ENTITY, {"tz"}, {"Europe/Berlin"}, "tz"},
    };
    expect_windows(TODAY, cases, sizeof(cases) / sizeof(cases[0]));
}

/* 12mo starts the day after the same date a year before: 366 days back only
 * when that span holds a 29 February, so 365 days of hourly rows (364 in UTC)
 * hold it on other days, as they hold the same window given as from/to. */
Test(params_parse, period_12mo_stops_at_its_first_day)
{
    /* 2026-12-06: from 2025-12-07, which a zone ahead of UTC starts on
     * 2025-12-06 (UTC); a zone behind UTC may still be on 2026-12-05, whose
     * window starts on 2025-12-06. Rows are kept from 2026-12-06 - days. */
    static const struct window_case dec06[] = {
        {364, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "12mo"}, NULL},
        {363, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "12mo"}, "period"},
        {365, QUERY_EP_OVERVIEW, {"period", "tz"}, {"12mo", "Europe/Berlin"}, NULL},
        {364, QUERY_EP_OVERVIEW, {"period", "tz"}, {"12mo", "Europe/Berlin"}, "period"},
        {365, QUERY_EP_ENTITY, {"period", "tz"}, {"12mo", "America/New_York"}, NULL},
        {364, QUERY_EP_ENTITY, {"period", "tz"}, {"12mo", "America/New_York"}, "period"},
        {365,
         QUERY_EP_OVERVIEW,
         {"from", "to", "tz"},
         {"2025-12-07", "2026-12-06", "Europe/Berlin"},
         NULL},
        {364,
         QUERY_EP_OVERVIEW,
         {"from", "to", "tz"},
         {"2025-12-07", "2026-12-06", "Europe/Berlin"},
         "from"},
    };
    /* 2025-03-01: from 2024-03-02 in UTC; a zone behind UTC may still be on
     * 2025-02-28, whose window starts on 2024-02-29. */
    static const struct window_case mar01[] = {
        {364, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "12mo"}, NULL},
        {363, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "12mo"}, "period"},
        {366, QUERY_EP_OVERVIEW, {"period", "tz"}, {"12mo", "Europe/Berlin"}, NULL},
        {365, QUERY_EP_OVERVIEW, {"period", "tz"}, {"12mo", "Europe/Berlin"}, "period"},
    };
    expect_windows(day_of("2026-12-06"), dec06, sizeof(dec06) / sizeof(dec06[0]));
    expect_windows(day_of("2025-03-01"), mar01, sizeof(mar01) / sizeof(mar01[0]));
}

/* month starts on the 1st: a few days of hourly rows hold it early in a month. */
Test(params_parse, period_month_stops_at_its_first_day)
{
    /* 2026-12-06: from 2026-12-01, which a zone ahead of UTC starts on
     * 2026-11-30 (UTC). */
    static const struct window_case dec06[] = {
        {5, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "month"}, NULL},
        {4, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "month"}, "period"},
        {6, QUERY_EP_OVERVIEW, {"period", "tz"}, {"month", "Europe/Berlin"}, NULL},
        {5, QUERY_EP_OVERVIEW, {"period", "tz"}, {"month", "Europe/Berlin"}, "period"},
        {10,
         QUERY_EP_TIMESERIES,
         {"interval", "period", "tz"},
         {"hour", "month", "Europe/Berlin"},
         NULL},
        {6,
         QUERY_EP_OVERVIEW,
         {"from", "to", "tz"},
         {"2026-12-01", "2026-12-06", "Europe/Berlin"},
         NULL},
        {5,
         QUERY_EP_OVERVIEW,
         {"from", "to", "tz"},
         {"2026-12-01", "2026-12-06", "Europe/Berlin"},
         "from"},
    };
    /* 2026-12-01: December in UTC; a zone behind UTC may still be on
     * 2026-11-30, whose month starts on 2026-11-01. */
    static const struct window_case dec01[] = {
        {1, QUERY_EP_TIMESERIES, {"interval", "period"}, {"hour", "month"}, NULL},
        {30, QUERY_EP_OVERVIEW, {"period", "tz"}, {"month", "Europe/Berlin"}, NULL},
        {29, QUERY_EP_OVERVIEW, {"period", "tz"}, {"month", "Europe/Berlin"}, "period"},
    };
    expect_windows(day_of("2026-12-06"), dec06, sizeof(dec06) / sizeof(dec06[0]));
    expect_windows(day_of("2026-12-01"), dec01, sizeof(dec01) / sizeof(dec01[0]));
}

Test(params_parse, too_long_value)
{
    struct fake_query q = {{"tz"}, {NULL}};
    char longv[400];
    struct query_spec s;
    struct params_error err;

    memset(longv, 'a', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    q.values[0] = longv;
    cr_assert_not(parse(QUERY_EP_ENTITY, &q, &s, &err));
    cr_assert_str_eq(err.field, "tz");
}

/* Each check closes the zone file: a leak would end the reporter's
 * descriptors after some thousand requests with a tz. */
Test(params_tz, closes_the_zone_file)
{
    char path[64], target[64];
    int before = 0, after = 0;

    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        before += readlink(path, target, sizeof(target)) >= 0;
    }
    for (int i = 0; i < 2000; i++)
        if (!params_tz_valid("Europe/Berlin", ZONEINFO))
            cr_assert_fail("check %d", i);
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        after += readlink(path, target, sizeof(target)) >= 0;
    }
    cr_assert_eq(after, before);
}

/* A breakdown takes its own limit (1..1000); a one-day window is one day. */
Test(params_parse, breakdown_limit_and_one_day)
{
    struct fake_query q = {{"dimension", "limit"}, {"os", "5"}};
    struct fake_query big = {{"dimension", "limit"}, {"os", "1001"}};
    struct fake_query day = {{"from", "to"}, {"2026-01-10", "2026-01-10"}};
    struct query_spec s;
    struct params_error err = {0};

    cr_assert(parse(QUERY_EP_BREAKDOWN, &q, &s, &err));
    cr_assert_eq(s.limit, 5);
    big.values[1] = "1000";
    cr_assert(parse(QUERY_EP_BREAKDOWN, &big, &s, &err));
    cr_assert_eq(s.limit, 1000);
    big.values[1] = "1001";
    cr_assert_not(parse(QUERY_EP_BREAKDOWN, &big, &s, &err));
    cr_assert_str_eq(err.field, "limit");
    cr_assert(parse(QUERY_EP_ENTITY, &day, &s, &err));
    cr_assert(s.win.explicit_range);
}

/* A value too long for any parameter is a 400 naming it, never a pass. */
Test(params_parse, too_long_value_of_each_parameter)
{
    static const struct {
        enum query_endpoint ep;
        const char *name;
    } cases[] = {{QUERY_EP_TOP, "scope"},    {QUERY_EP_TIMESERIES, "interval"},
                 {QUERY_EP_TOP, "by"},       {QUERY_EP_BREAKDOWN, "dimension"},
                 {QUERY_EP_TOP, "limit"},    {QUERY_EP_ENTITY, "from"},
                 {QUERY_EP_ENTITY, "period"}};
    char longv[300];

    memset(longv, 'a', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake_query q = {{cases[i].name}, {longv}};
        struct query_spec s;
        struct params_error err = {0};
        cr_assert_not(parse(cases[i].ep, &q, &s, &err), "%s accepted", cases[i].name);
        cr_assert_str_eq(err.field, cases[i].name);
    }
}
