/* Configuration from environment variables and command-line flags (12-factor):
 * one option table per binary, parsed without allocation into a plain struct. */
#ifndef ARV_CONFIG_H
#define ARV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum config_type {
    CONFIG_STRING,     /* const char *; "" (variable or flag) counts as unset, as for all */
    CONFIG_STRING_OFF, /* const char *, where "" (variable or flag) sets "": the feature off */
    CONFIG_INT,        /* long, within [min, max] */
    CONFIG_BOOL,       /* bool: 1/0, true/false, yes/no, on/off */
    CONFIG_CHOICE,     /* const char *, one of `choices` ("a|b|c") */
    CONFIG_LISTEN,     /* struct config_listen: "host:port", "[v6]:port" or ":port" */
    CONFIG_LOG_LEVEL   /* enum log_level */
};

struct config_listen {
    char host[64]; /* numeric address; "0.0.0.0" when the text gave none */
    uint16_t port;
};

struct config_option {
    const char *flag; /* "redis-url": --redis-url=V or --redis-url V */
    const char *env;  /* "REDIS_URL", or NULL for a flag-only option */
    enum config_type type;
    size_t offset;       /* offsetof() the value in the binary's config struct */
    const char *def;     /* default as text; NULL leaves the field zeroed */
    const char *choices; /* CONFIG_CHOICE only */
    long min, max;       /* CONFIG_INT only */
    const char *help;    /* one line for --help */
};

/* Options the daemons share; a binary's config struct has a member
 * `struct common_config common` and its table takes the groups it uses. */
struct common_config {
    const char *redis_url;    /* REDIS_URL: one URL or a comma-separated list */
    const char *database_url; /* DATABASE_URL */
    const char *env;          /* "development" | "production" */
    const char *log_format;   /* "json" | "console" | NULL: from env */
    enum log_level log_level;
    const char *stream;          /* ARV_STREAM base name */
    long stream_shards;          /* ARV_STREAM_SHARDS */
    struct config_listen listen; /* ARV_LISTEN */
};

/* clang-format off */
/* Environment, logging and the listen address: every daemon. */
#define CONFIG_BASE_OPTIONS(cfg_type, default_listen) \
    {.flag = "env", .env = "ARV_ENV", .type = CONFIG_CHOICE, \
     .offset = offsetof(cfg_type, common.env), .def = "development", \
     .choices = "development|production", .help = "deployment environment"}, \
    {.flag = "log-format", .env = "ARV_LOG_FORMAT", .type = CONFIG_CHOICE, \
     .offset = offsetof(cfg_type, common.log_format), .choices = "json|console", \
     .help = "log format (default: json in production, else console)"}, \
    {.flag = "log-level", .env = "ARV_LOG_LEVEL", .type = CONFIG_LOG_LEVEL, \
     .offset = offsetof(cfg_type, common.log_level), .def = "info", \
     .help = "minimum log level: debug|info|warn|error"}, \
    {.flag = "listen", .env = "ARV_LISTEN", .type = CONFIG_LISTEN, \
     .offset = offsetof(cfg_type, common.listen), .def = (default_listen), \
     .help = "HTTP listen address host:port"}

/* Redis and the stream: collector and aggregator. */
#define CONFIG_REDIS_OPTIONS(cfg_type) \
    {.flag = "redis-url", .env = "REDIS_URL", .type = CONFIG_STRING, \
     .offset = offsetof(cfg_type, common.redis_url), .def = "redis://127.0.0.1:6379/0", \
     .help = "Redis URL; a comma-separated list spreads the ARV_STREAM_SHARDS streams over" \
             " the nodes (with 1 shard, the first node only)"}, \
    {.flag = "stream", .env = "ARV_STREAM", .type = CONFIG_STRING, \
     .offset = offsetof(cfg_type, common.stream), .def = "arv:events", \
     .help = "Redis stream name (ARV_STREAM:{shard} when sharded)"}, \
    {.flag = "stream-shards", .env = "ARV_STREAM_SHARDS", .type = CONFIG_INT, \
     .offset = offsetof(cfg_type, common.stream_shards), .def = "1", .min = 1, .max = 1024, \
     .help = "number of stream shards; the collector picks an event's node by session_id," \
             " its shard on that node by content"}

/* ARV_TRUSTED_PROXIES, for a binary whose config has `trusted_proxies`
 * (client_ip_parse_trust() checks it). */
#define CONFIG_TRUSTED_PROXIES_OPTION(cfg_type) \
    {.flag = "trusted-proxies", .env = "ARV_TRUSTED_PROXIES", .type = CONFIG_STRING, \
     .offset = offsetof(cfg_type, trusted_proxies), .def = "", \
     .help = "CIDRs of proxies whose X-Forwarded-For names the client (comma-separated)"}

/* The aggregators' retention defaults and breakdown cap, which arvctl
 * (rebuilds, replays) and the reporter (windows of hourly rollups) must share:
 * each binary's option says what it does with the value. */
#define CONFIG_RAW_RETENTION_DAYS_DEFAULT    "90"
#define CONFIG_DEDUPE_RETENTION_DAYS_DEFAULT "0"
#define CONFIG_HOURLY_RETENTION_DAYS_DEFAULT "400"
#define CONFIG_BREAKDOWN_MAX_VALUES_DEFAULT  "1000"

/* PostgreSQL: aggregator, reporter, arvctl. */
#define CONFIG_DATABASE_OPTIONS(cfg_type) \
    {.flag = "database-url", .env = "DATABASE_URL", .type = CONFIG_STRING, \
     .offset = offsetof(cfg_type, common.database_url), \
     .def = "postgresql://arv@127.0.0.1:5432/arv", .help = "PostgreSQL connection URL"}

/* All of the above. */
#define CONFIG_COMMON_OPTIONS(cfg_type, default_listen) \
    CONFIG_REDIS_OPTIONS(cfg_type), CONFIG_DATABASE_OPTIONS(cfg_type), \
    CONFIG_BASE_OPTIONS(cfg_type, default_listen)
/* clang-format on */

enum config_result {
    CONFIG_OK,      /* run */
    CONFIG_CHECK,   /* --check-config: validate, report, exit 0/1 */
    CONFIG_EXIT_OK, /* --help or --version was printed: exit 0 */
    CONFIG_ERROR    /* the message in `err`: exit 1 */
};

typedef const char *config_getenv_fn(const char *name);

/* Fills `cfg` from defaults, then the environment (read with `getenv_fn`, NULL for
 * getenv), then argv. A variable or flag set to "" counts as not given, but for
 * CONFIG_STRING_OFF. Handles --help and --version (printed to stdout) and
 * --check-config. Strings stored in `cfg` are borrowed from argv, the environment
 * or the table: nothing to free. On CONFIG_ERROR, `err` holds one clear line. */
enum config_result config_load(const char *binary, const char *summary,
                               const struct config_option *opts, size_t nopts, void *cfg, int argc,
                               char **argv, config_getenv_fn *getenv_fn, char *err, size_t errlen);

/* True for the flags every binary takes besides its options: --help, -h,
 * --version, --check-config. */
bool config_builtin_flag(const char *arg);

/* Parses "host:port", "[v6]:port" or ":port"; the host must be numeric. */
bool config_parse_listen(const char *s, struct config_listen *out);

/* Walks a comma-separated list: sets *item and *len to the next item without
 * the spaces around it (len 0 for an empty one) and moves *p past it; false
 * once *p is NULL (the list is done). "a, ,b" has three items, "" one. */
bool config_list_next(const char **p, const char **item, size_t *len);

/* Strict integer parsing: the whole string, base 10, within [min, max]. */
bool parse_long(const char *s, long min, long max, long *out);
bool parse_bool(const char *s, bool *out);

/* True for a relation name SQL can take unquoted: name or schema.name of ASCII
 * letters, digits, '_' and '$' (not first), at most 127 bytes. Used for
 * ARV_CONTENT_RELATION, which is spliced into SQL. */
bool config_relation_valid(const char *rel);

/* True when `path` is NULL or empty (the feature is off) or a file this
 * process can read; else false with "<var>: cannot read '<path>': <why>" in
 * `err`. So --check-config catches a missing file, not one that is corrupt. */
bool config_check_readable(const char *var, const char *path, char *err, size_t errlen);

/* Checks REDIS_URL (when `redis`: a list of at most `max_redis` valid URLs,
 * and ARV_STREAM valid UTF-8) and
 * DATABASE_URL (when `database`: libpq can parse it, and takes the values it
 * reads only when it connects: sslmode, port, connect_timeout, ...). False
 * with one clear line in `err`, which never holds a part of either URL. */
bool config_check_urls(const struct common_config *c, bool redis, int max_redis, bool database,
                       char *err, size_t errlen);

/* Applies `common` to logging (format defaults to json in production). */
void config_apply_logging(const struct common_config *common, const char *service);

/* A binary's own checks beyond the option table (URLs parse, limits agree).
 * Returns false with one clear line in `err`. */
typedef bool config_validate_fn(const void *cfg, char *err, size_t errlen);

/* For a binary's main(): load the config, run `validate` (may be NULL), apply
 * logging. On --help/--version exits 0; on --check-config prints the verdict and
 * exits 0 or `error_status`; on a bad value prints one clear line to stderr and
 * exits `error_status` (the daemons 1; arvctl 2, its usage error). Returns only
 * when the binary should run. */
void config_load_or_exit(const char *binary, const char *summary, const struct config_option *opts,
                         size_t nopts, void *cfg, const struct common_config *common,
                         config_validate_fn *validate, int error_status, int argc, char **argv);

#endif
