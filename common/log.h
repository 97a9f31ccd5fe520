/* Structured logging: one JSON object per line on stderr (production) or one
 * readable line (development). Thread-safe; each record is a single write(2). */
#ifndef ARV_LOG_H
#define ARV_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_CONSOLE };
enum log_field_type { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_DBL, LOG_FIELD_BOOL };

struct log_field {
    const char *key; /* NULL marks an unused slot */
    enum log_field_type type;
    union {
        const char *s; /* may be NULL: written as null */
        long long i;
        double d;
        bool b;
    } v;
};

#define LF_STR(k, x)  ((struct log_field){.key = (k), .type = LOG_FIELD_STR, .v.s = (x)})
#define LF_INT(k, x)  ((struct log_field){.key = (k), .type = LOG_FIELD_INT, .v.i = (x)})
#define LF_DBL(k, x)  ((struct log_field){.key = (k), .type = LOG_FIELD_DBL, .v.d = (x)})
#define LF_BOOL(k, x) ((struct log_field){.key = (k), .type = LOG_FIELD_BOOL, .v.b = (x)})

/* The leading empty slot lets a call pass no fields at all. */
#define LOG_FIELDS_(...) ((const struct log_field[]){{0}, __VA_ARGS__})
#define LOG_AT_(lvl, ev, ...)                                                                      \
    log_write((lvl), (ev), LOG_FIELDS_(__VA_ARGS__) + 1,                                           \
              sizeof(LOG_FIELDS_(__VA_ARGS__)) / sizeof(struct log_field) - 1)

/* log_info("redis_connected", LF_STR("url", url), LF_INT("attempt", n)); */
#define log_debug(ev, ...) LOG_AT_(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  LOG_AT_(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  LOG_AT_(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) LOG_AT_(LOG_LEVEL_ERROR, ev, __VA_ARGS__)

/* Sets the service name (borrowed: must outlive logging), format and minimum
 * level. Before log_init, records go to stderr as JSON at level info. */
void log_init(const char *service, enum log_format format, enum log_level level);

/* True when records at `level` are written; lets callers skip building fields. */
bool log_enabled(enum log_level level);

/* Writes one record: timestamp, level, event, service, then `fields` (borrowed).
 * Never blocks on anything but stderr. */
void log_write(enum log_level level, const char *event, const struct log_field *fields, size_t n);

/* Parses "debug|info|warn|warning|error" (case-insensitive). */
bool log_parse_level(const char *s, enum log_level *out);

/* Parses "json|console". */
bool log_parse_format(const char *s, enum log_format *out);

/* Writes one fatal start-up error line and exits 1. Only during start-up. */
void die(const char *event, const char *message) __attribute__((noreturn));

#endif
