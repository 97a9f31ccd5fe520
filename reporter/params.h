/* The reporter's request parameters: window (from/to/period/tz), scope, interval,
 * top/breakdown options, validated into a struct query_spec with one clear
 * error per bad parameter. */
#ifndef ARV_REPORTER_PARAMS_H
#define ARV_REPORTER_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "query.h"

#define PARAMS_BREAKDOWN_LIMIT_DEFAULT 100
#define PARAMS_BREAKDOWN_LIMIT_MAX     1000
#define PARAMS_VALUE_MAX               256

/* What was wrong: the parameter and a sentence for the 400 answer (static strings). */
struct params_error {
    const char *field;
    const char *message;
    bool unavailable; /* not the client's fault (out of descriptors): 503, not 400 */
};

enum params_found {
    PARAMS_ABSENT,  /* not in the query string */
    PARAMS_PRESENT, /* copied into the buffer */
    PARAMS_TOO_LONG /* present but longer than the buffer */
};

/* Looks parameter `name` up for params_parse(), URL-decoded into `out` (`outlen`). */
typedef enum params_found params_get_fn(void *arg, const char *name, char *out, size_t outlen);

/* True when `name` is a time zone in the zoneinfo directory `dir` (a TZif file
 * reached by a plain relative name: no "..", no leading '/'). Reads at most 4
 * bytes of one local file: cheap, but it is file I/O. */
bool params_tz_valid(const char *name, const char *dir);

/* params_tz_valid(), telling a name that is not a zone from a zone file that
 * cannot be opened now (*transient: out of descriptors or memory, I/O). */
bool params_tz_check(const char *name, const char *dir, bool *transient);

/* True for the names of UTC itself (UTC, Etc/UTC, GMT, Zulu, ...): zones whose
 * days are UTC days, so daily rollups answer them exactly. */
bool params_tz_is_utc(const char *name);

/* Parses "all", "company:ID", "project:ID" or "content:ID". */
bool params_parse_scope(const char *s, enum query_scope *scope, int64_t *id);

/* What params_parse() checks a request against. */
struct params_env {
    const char *zoneinfo_dir; /* ARV_ZONEINFO_DIR: tz names are checked here (borrowed) */
    long hourly_days;         /* ARV_HOURLY_RETENTION_DAYS: how long hourly rollups are kept */
    int64_t today;            /* today in UTC, days since the epoch */
};

/* Fills the window and the endpoint's options of `spec`. Before the call set
 * spec->ep, spec->restricted and spec->company_id, and for the seed endpoints
 * spec->scope and spec->id (from the path): the `scope` parameter is read only
 * for timeseries, top, breakdown and export, defaulting to "all" for an admin
 * and to the key's company otherwise. A window that needs hourly rollups
 * (query_uses_hourly) must not reach back before `env->hourly_days` (with a
 * day's margin in zones other than UTC, whose local days start on the UTC day
 * before or the same): retention has deleted those, and the answer would be
 * short. A period's first day is query_window_days()'s for each today the
 * zone may have (`env->today`, the day before or after). Returns false with
 * `err` filled on a bad parameter. */
bool params_parse(struct query_spec *spec, params_get_fn *get, void *arg,
                  const struct params_env *env, struct params_error *err);

#endif
