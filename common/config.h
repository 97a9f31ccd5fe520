/* Configuration from environment variables and command-line flags (12-factor):
 * one option table per binary, parsed without allocation into a plain struct. */
#ifndef ARV_CONFIG_H
#define ARV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum config_type {
    CONFIG_STRING,   /* const char *  */
    CONFIG_INT,      /* long, within [min, max] */
    CONFIG_BOOL,     /* bool: 1/0, true/false, yes/no, on/off */
    CONFIG_CHOICE,   /* const char *, one of `choices` ("a|b|c") */
    CONFIG_LISTEN,   /* struct config_listen: "host:port", "[v6]:port" or ":port" */
    CONFIG_LOG_LEVEL /* enum log_level */
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

/* Options every binary takes; `type` is the binary's config struct, which must
 * have a member `struct common_config common`. */
struct common_config {
    const char *redis_url;
    const char *database_url;
    const char *env;        /* "development" | "production" */
    const char *log_format; /* "json" | "console" | NULL: from env */
    enum log_level log_level;
    const char *stream;
    long stream_shards;
    struct config_listen listen;
};

#define CONFIG_COMMON_OPTIONS(type, default_listen)                                                \
    {"redis-url",                                                                                  \
     "REDIS_URL",                                                                                  \
     CONFIG_STRING,                                                                                \
     offsetof(type, common.redis_url),                                                             \
     "redis://127.0.0.1:6379/0",                                                                   \
     NULL,                                                                                         \
     0,                                                                                            \
     0,                                                                                            \
     "Redis URL; a comma-separated list shards streams across nodes"},                             \
        {"database-url",                                                                           \
         "DATABASE_URL",                                                                           \
         CONFIG_STRING,                                                                            \
         offsetof(type, common.database_url),                                                      \
         "postgresql://arv@127.0.0.1:5432/arv",                                                    \
         NULL,                                                                                     \
         0,                                                                                        \
         0,                                                                                        \
         "PostgreSQL connection URL"},                                                             \
        {"env",                                                                                    \
         "ARV_ENV",                                                                                \
         CONFIG_CHOICE,                                                                            \
         offsetof(type, common.env),                                                               \
         "development",                                                                            \
         "development|production",                                                                 \
         0,                                                                                        \
         0,                                                                                        \
         "deployment environment"},                                                                \
        {"log-format",                                                                             \
         "ARV_LOG_FORMAT",                                                                         \
         CONFIG_CHOICE,                                                                            \
         offsetof(type, common.log_format),                                                        \
         NULL,                                                                                     \
         "json|console",                                                                           \
         0,                                                                                        \
         0,                                                                                        \
         "log format (default: json in production, else console)"},                                \
        {"log-level",                                                                              \
         "ARV_LOG_LEVEL",                                                                          \
         CONFIG_LOG_LEVEL,                                                                         \
         offsetof(type, common.log_level),                                                         \
         "info",                                                                                   \
         NULL,                                                                                     \
         0,                                                                                        \
         0,                                                                                        \
         "minimum log level: debug|info|warn|error"},                                              \
        {"stream",                                                                                 \
         "ARV_STREAM",                                                                             \
         CONFIG_STRING,                                                                            \
         offsetof(type, common.stream),                                                            \
         "arv:events",                                                                             \
         NULL,                                                                                     \
         0,                                                                                        \
         0,                                                                                        \
         "Redis stream name (ARV_STREAM:{shard} when sharded)"},                                   \
        {"stream-shards",                                                                          \
         "ARV_STREAM_SHARDS",                                                                      \
         CONFIG_INT,                                                                               \
         offsetof(type, common.stream_shards),                                                     \
         "1",                                                                                      \
         NULL,                                                                                     \
         1,                                                                                        \
         1024,                                                                                     \
         "number of stream shards"},                                                               \
    {                                                                                              \
        "listen", "ARV_LISTEN", CONFIG_LISTEN, offsetof(type, common.listen), (default_listen),    \
            NULL, 0, 0, "HTTP listen address host:port"                                            \
    }

enum config_result {
    CONFIG_OK,      /* run */
    CONFIG_CHECK,   /* --check-config: validate, report, exit 0/1 */
    CONFIG_EXIT_OK, /* --help or --version was printed: exit 0 */
    CONFIG_ERROR    /* the message in `err`: exit 1 */
};

typedef const char *config_getenv_fn(const char *name);

/* Fills `cfg` from defaults, then the environment (read with `getenv_fn`, NULL for
 * getenv), then argv. Handles --help and --version (printed to stdout) and
 * --check-config. Strings stored in `cfg` are borrowed from argv, the environment
 * or the table: nothing to free. On CONFIG_ERROR, `err` holds one clear line. */
enum config_result config_load(const char *binary, const char *summary,
                               const struct config_option *opts, size_t nopts, void *cfg, int argc,
                               char **argv, config_getenv_fn *getenv_fn, char *err, size_t errlen);

/* Parses "host:port", "[v6]:port" or ":port"; the host must be numeric. */
bool config_parse_listen(const char *s, struct config_listen *out);

/* Strict integer parsing: the whole string, base 10, within [min, max]. */
bool parse_long(const char *s, long min, long max, long *out);
bool parse_bool(const char *s, bool *out);

/* Applies `common` to logging (format defaults to json in production). */
void config_apply_logging(const struct common_config *common, const char *service);

/* A binary's own checks beyond the option table (URLs parse, limits agree).
 * Returns false with one clear line in `err`. */
typedef bool config_validate_fn(const void *cfg, char *err, size_t errlen);

/* For a binary's main(): load the config, run `validate` (may be NULL), apply
 * logging. On --help/--version exits 0; on --check-config prints the verdict and
 * exits 0 or 1; on a bad value prints one clear line to stderr and exits 1.
 * Returns only when the binary should run. */
void config_load_or_exit(const char *binary, const char *summary, const struct config_option *opts,
                         size_t nopts, void *cfg, const struct common_config *common,
                         config_validate_fn *validate, int argc, char **argv);

#endif
