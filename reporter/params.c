/* Request parameters -> struct query_spec: strict dates, IANA zones checked
 * against the zoneinfo files, ranges bounded by what the rollups keep. */
#include "params.h"
#include "timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool params_tz_is_utc(const char *name)
{
    static const char *const utc[] = {
        "UTC",   "Etc/UTC",   "UCT",   "Etc/UCT",   "Universal", "Etc/Universal",
        "Zulu",  "Etc/Zulu",  "GMT",   "Etc/GMT",   "GMT0",      "Etc/GMT0",
        "GMT+0", "Etc/GMT+0", "GMT-0", "Etc/GMT-0", "Greenwich", "Etc/Greenwich",
    };

    for (size_t i = 0; i < sizeof(utc) / sizeof(utc[0]); i++) {
        if (strcmp(name, utc[i]) == 0)
            return true;
    }
    return false;
}

bool params_tz_valid(const char *name, const char *dir)
{
    bool transient;
    return params_tz_check(name, dir, &transient);
}

bool params_tz_check(const char *name, const char *dir, bool *transient)
{
    char path[512];
    char magic[4];
    size_t n = strlen(name);
    int fd = -1;
    bool ok = false;
    struct stat st;

    *transient = false;
    if (n == 0 || n > QUERY_TZ_MAX || name[0] == '/' || name[0] == '.' || strstr(name, "..") ||
        strstr(name, "/.") || strstr(name, "//") || name[n - 1] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '+' || c == '/'))
            return false;
    }
    /* Not zones PostgreSQL knows by these names, though the files exist. */
    if (strcmp(name, "localtime") == 0 || strcmp(name, "posixrules") == 0 ||
        strncmp(name, "right/", 6) == 0 || strncmp(name, "posix/", 6) == 0)
        return false;
    /* Zones with summer time whose names PostgreSQL reads first as its fixed
     * abbreviations (timezonesets/Default): CET would stay +01:00 in July. */
    static const char *const abbrevs[] = {"CET", "EET", "MET", "WET"};
    for (size_t i = 0; i < sizeof(abbrevs) / sizeof(abbrevs[0]); i++) {
        if (strcmp(name, abbrevs[i]) == 0)
            return false;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return false;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        /* Out of descriptors or memory says nothing about the name. */
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR || errno == EIO)
            *transient = true;
        goto out;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto out;
    ok = read(fd, magic, sizeof(magic)) == (ssize_t)sizeof(magic) && memcmp(magic, "TZif", 4) == 0;
out:
    if (fd >= 0)
        close(fd);
    return ok;
}

bool params_parse_scope(const char *s, enum query_scope *scope, int64_t *id)
{
    static const struct {
        const char *prefix;
        enum query_scope scope;
    } kinds[] = {{"company:", QUERY_SCOPE_COMPANY},
                 {"project:", QUERY_SCOPE_PROJECT},
                 {"content:", QUERY_SCOPE_CONTENT}};

    if (strcmp(s, "all") == 0) {
        *scope = QUERY_SCOPE_ALL;
        *id = 0;
        return true;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        size_t pl = strlen(kinds[i].prefix);
        if (strncmp(s, kinds[i].prefix, pl) == 0) {
            *scope = kinds[i].scope;
            return query_parse_id(s + pl, strlen(s + pl), id);
        }
    }
    return false;
}

/* Finds `v` in `names` (n entries). */
static bool params_enum(const char *v, const char *(*name_of)(int), int n, int *out)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(v, name_of(i)) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static const char *params_interval_name(int i)
{
    return query_interval_name((enum query_interval)i);
}

static const char *params_by_name(int i)
{
    return query_by_name((enum query_by)i);
}

static const char *params_dim_name(int i)
{
    return query_dimension_name((enum query_dimension)i);
}

static bool params_fail(struct params_error *err, const char *field, const char *message)
{
    err->field = field;
    err->message = message;
    return false;
}

/* Reads `name`: false with err set when it is present but too long. */
static bool params_get(params_get_fn *get, void *arg, const char *name, char *out, size_t outlen,
                       bool *present, struct params_error *err)
{
    enum params_found f = get(arg, name, out, outlen);

    *present = f == PARAMS_PRESENT;
    if (f == PARAMS_TOO_LONG)
        return params_fail(err, name, "the value is too long or not valid URL encoding");
    return true;
}

/* A window that needs hourly rollups older than they are kept. */
#define PARAMS_HOURLY_GONE                                                                         \
    "the window reaches back before the hourly rollups kept (ARV_HOURLY_RETENTION_DAYS), which "   \
    "interval=hour and a tz other than UTC need: start it later, or ask in UTC for days"

/* True when the period window `w` reads hourly rows of UTC days before `kept`
 * on whichever day today is in its zone (UTC today `today`, the day before or
 * the day after): its first day is the one query_window_days() gives. */
static bool params_period_gone(const struct query_window *w, int64_t today, int64_t kept)
{
    int64_t d0, d1, behind;

    if (!query_window_days(w, today, &d0, &d1) || !query_window_days(w, today - 1, &behind, &d1))
        return true; /* not a period: cannot happen */
    if (w->tz_utc)
        return d0 < kept;
    /* A zone ahead of UTC is at today or tomorrow, and its local days start on
     * the UTC day before; a zone behind UTC is at today or yesterday, and its
     * local days start on their own UTC day. A later today never starts the
     * window earlier. */
    return d0 - 1 < kept || behind < kept;
}

static bool params_window(struct query_spec *spec, params_get_fn *get, void *arg,
                          const struct params_env *env, struct params_error *err)
{
    struct query_window *w = &spec->win;
    char from[PARAMS_VALUE_MAX], to[PARAMS_VALUE_MAX], period[PARAMS_VALUE_MAX],
        tz[PARAMS_VALUE_MAX];
    bool has_from, has_to, has_period, has_tz, transient;
    int64_t d0, d1, max_days, kept;

    if (!params_get(get, arg, "tz", tz, sizeof(tz), &has_tz, err) ||
        !params_get(get, arg, "from", from, sizeof(from), &has_from, err) ||
        !params_get(get, arg, "to", to, sizeof(to), &has_to, err) ||
        !params_get(get, arg, "period", period, sizeof(period), &has_period, err))
        return false;
    if (!has_tz)
        snprintf(tz, sizeof(tz), "UTC");
    if (!params_tz_check(tz, env->zoneinfo_dir, &transient)) {
        if (transient) {
            err->unavailable = true;
            return params_fail(err, "tz", "the time zone files cannot be read now; retry");
        }
        return params_fail(err, "tz", "tz must be an IANA time zone name such as Europe/Berlin");
    }
    memcpy(w->tz, tz, strlen(tz) + 1); /* fits: params_tz_valid bounds it */
    w->tz_utc = params_tz_is_utc(tz);

    if (has_period && (has_from || has_to))
        return params_fail(err, "period", "give either period or from/to, not both");
    if (has_from != has_to)
        return params_fail(err, has_from ? "to" : "from", "from and to go together");
    /* Hourly rollups of UTC days before today - hourly_days are deleted. */
    kept = env->today - env->hourly_days;
    if (!has_from) {
        /* name, code (w->period) */
        static const struct {
            const char *name, *code;
        } periods[] = {
            {"7d", "7"}, {"30d", "30"}, {"90d", "90"}, {"month", "month"}, {"12mo", "12mo"}};
        size_t i = 1; /* 30d, the default */
        w->explicit_range = false;
        if (has_period) {
            for (i = 0; i < sizeof(periods) / sizeof(periods[0]); i++) {
                if (strcmp(period, periods[i].name) == 0)
                    break;
            }
            if (i == sizeof(periods) / sizeof(periods[0]))
                return params_fail(err, "period",
                                   "period must be one of 7d, 30d, 90d, month, 12mo");
        }
        snprintf(w->period, sizeof(w->period), "%s", periods[i].code);
        if (query_uses_hourly(spec) && params_period_gone(w, env->today, kept))
            return params_fail(err, has_period ? "period" : "tz", PARAMS_HOURLY_GONE);
        return true;
    }
    if (!timeutil_parse_date(from, &d0))
        return params_fail(err, "from",
                           "from must be a date YYYY-MM-DD, from 1900-01-01 to 9999-12-31");
    if (!timeutil_parse_date(to, &d1))
        return params_fail(err, "to",
                           "to must be a date YYYY-MM-DD, from 1900-01-01 to 9999-12-31");
    if (d0 > d1)
        return params_fail(err, "from", "from is after to");
    max_days = query_uses_hourly(spec) ? QUERY_MAX_DAYS_HOURLY : QUERY_MAX_DAYS_DAILY;
    if (d1 - d0 + 1 > max_days)
        return params_fail(err, "to",
                           query_uses_hourly(spec)
                               ? "the range is too long: at most 400 days with hourly data "
                                 "(interval=hour or a tz other than UTC)"
                               : "the range is too long: at most 1827 days");
    /* A local day elsewhere starts on its UTC day or the one before. */
    if (query_uses_hourly(spec) && d0 - (w->tz_utc ? 0 : 1) < kept)
        return params_fail(err, "from", PARAMS_HOURLY_GONE);
    w->explicit_range = true;
    memcpy(w->from, from, sizeof(w->from));
    memcpy(w->to, to, sizeof(w->to));
    return true;
}

bool params_parse(struct query_spec *spec, params_get_fn *get, void *arg,
                  const struct params_env *env, struct params_error *err)
{
    char v[PARAMS_VALUE_MAX];
    bool has;
    int e;

    spec->interval = QUERY_INTERVAL_DAY;
    spec->by = QUERY_BY_CONTENT;
    spec->limit =
        spec->ep == QUERY_EP_BREAKDOWN ? PARAMS_BREAKDOWN_LIMIT_DEFAULT : QUERY_LIMIT_DEFAULT;
    if (spec->ep != QUERY_EP_OVERVIEW && spec->ep != QUERY_EP_ENTITY) {
        if (!params_get(get, arg, "scope", v, sizeof(v), &has, err))
            return false;
        if (!has) {
            spec->scope = spec->restricted ? QUERY_SCOPE_COMPANY : QUERY_SCOPE_ALL;
            spec->id = spec->restricted ? spec->company_id : 0;
        } else if (!params_parse_scope(v, &spec->scope, &spec->id)) {
            return params_fail(err, "scope",
                               "scope must be all, company:ID, project:ID or content:ID");
        }
    }
    if (spec->ep == QUERY_EP_TIMESERIES) {
        if (!params_get(get, arg, "interval", v, sizeof(v), &has, err))
            return false;
        if (has) {
            if (!params_enum(v, params_interval_name, 4, &e))
                return params_fail(err, "interval", "interval must be hour, day, week or month");
            spec->interval = (enum query_interval)e;
        }
    }
    if (spec->ep == QUERY_EP_TOP) {
        if (!params_get(get, arg, "by", v, sizeof(v), &has, err))
            return false;
        if (has) {
            if (!params_enum(v, params_by_name, 3, &e))
                return params_fail(err, "by", "by must be content, project or company");
            spec->by = (enum query_by)e;
        }
    }
    if (spec->ep == QUERY_EP_BREAKDOWN) {
        if (!params_get(get, arg, "dimension", v, sizeof(v), &has, err))
            return false;
        if (!has)
            return params_fail(err, "dimension", "dimension is required");
        if (!params_enum(v, params_dim_name, QUERY_DIM_COUNT, &e))
            return params_fail(err, "dimension",
                               "dimension must be device_type, browser, os, country, city or "
                               "tracking_quality");
        spec->dim = (enum query_dimension)e;
    }
    if (spec->ep == QUERY_EP_TOP || spec->ep == QUERY_EP_BREAKDOWN) {
        unsigned max = spec->ep == QUERY_EP_TOP ? QUERY_LIMIT_MAX : PARAMS_BREAKDOWN_LIMIT_MAX;
        int64_t lim;
        if (!params_get(get, arg, "limit", v, sizeof(v), &has, err))
            return false;
        if (has) {
            if (!query_parse_id(v, strlen(v), &lim) || lim > (int64_t)max)
                return params_fail(err, "limit",
                                   spec->ep == QUERY_EP_TOP ? "limit must be 1..100"
                                                            : "limit must be 1..1000");
            spec->limit = (unsigned)lim;
        }
    }
    return params_window(spec, get, arg, env, err);
}
