/* Configuration from defaults, environment variables and flags, into a plain
 * struct described by an option table. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <strings.h>

#include <libpq-fe.h>

#include "redis_conn.h"
#include "strbuf.h"

bool parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    /* strtol() would skip leading blanks; a value must be only a number. */
    if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '-' || s[0] == '+'))
        return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; s && i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

bool config_list_next(const char **p, const char **item, size_t *len)
{
    const char *s = *p;
    size_t n;

    if (!s)
        return false;
    n = strcspn(s, ",");
    *p = s[n] == ',' ? s + n + 1 : NULL;
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    *item = s;
    *len = n;
    return true;
}

bool config_parse_listen(const char *s, struct config_listen *out)
{
    const char *colon;
    const char *host = s;
    size_t hostlen;
    long port;
    unsigned char addr[sizeof(struct in6_addr)];

    if (!s)
        return false;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return false;
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return false;
        hostlen = (size_t)(colon - s);
    }
    if (!parse_long(colon + 1, 0, 65535, &port) || hostlen >= sizeof(out->host))
        return false;
    if (hostlen == 0) {
        snprintf(out->host, sizeof(out->host), "0.0.0.0");
    } else {
        memcpy(out->host, host, hostlen);
        out->host[hostlen] = '\0';
    }
    if (inet_pton(AF_INET, out->host, addr) != 1 && inet_pton(AF_INET6, out->host, addr) != 1)
        return false;
    out->port = (uint16_t)port;
    return true;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

/* Stores text value `v` into the field of `opt`; `source` names where it came
 * from for the error message. */
static bool apply_value(const struct config_option *opt, void *cfg, const char *v,
                        const char *source, char *err, size_t errlen)
{
    char *field = (char *)cfg + opt->offset;
    switch (opt->type) {
    case CONFIG_STRING:
    case CONFIG_STRING_OFF:
        *(const char **)field = v;
        return true;
    case CONFIG_CHOICE:
        if (!choice_ok(opt->choices, v)) {
            set_err(err, errlen, "%s: invalid value '%s' (expected %s)", source, v, opt->choices);
            return false;
        }
        *(const char **)field = v;
        return true;
    case CONFIG_INT:
        if (!parse_long(v, opt->min, opt->max, (long *)(void *)field)) {
            set_err(err, errlen, "%s: invalid value '%s' (expected an integer in [%ld, %ld])",
                    source, v, opt->min, opt->max);
            return false;
        }
        return true;
    case CONFIG_BOOL:
        if (!parse_bool(v, (bool *)field)) {
            set_err(err, errlen, "%s: invalid value '%s' (expected true or false)", source, v);
            return false;
        }
        return true;
    case CONFIG_LISTEN:
        if (!config_parse_listen(v, (struct config_listen *)(void *)field)) {
            set_err(err, errlen, "%s: invalid value '%s' (expected host:port with a numeric host)",
                    source, v);
            return false;
        }
        return true;
    case CONFIG_LOG_LEVEL:
        if (!log_parse_level(v, (enum log_level *)(void *)field)) {
            set_err(err, errlen, "%s: invalid value '%s' (expected debug|info|warn|error)", source,
                    v);
            return false;
        }
        return true;
    }
    return false;
}

static void print_help(FILE *out, const char *binary, const char *summary,
                       const struct config_option *opts, size_t nopts)
{
    int flag_w = (int)strlen("--check-config"), env_w = 0;
    for (size_t i = 0; i < nopts; i++) {
        int fw = (int)strlen(opts[i].flag) + 8; /* "--" + "=VALUE" */
        int ew = opts[i].env ? (int)strlen(opts[i].env) : 0;
        flag_w = fw > flag_w ? fw : flag_w;
        env_w = ew > env_w ? ew : env_w;
    }
    fprintf(out,
            "Usage: %s [options]\n%s\n\nOptions (each also settable by the environment "
            "variable shown):\n",
            binary, summary);
    for (size_t i = 0; i < nopts; i++) {
        char flag[96];
        snprintf(flag, sizeof(flag), "--%s=VALUE", opts[i].flag);
        fprintf(out, "  %-*s  %-*s  %s", flag_w, flag, env_w, opts[i].env ? opts[i].env : "",
                opts[i].help);
        if (opts[i].def)
            fprintf(out, " [default: %s]", opts[i].def);
        fputc('\n', out);
    }
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "--check-config", env_w, "",
            "validate the configuration and exit");
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "--version", env_w, "",
            "print the version and exit");
    fprintf(out, "  %-*s  %-*s  %s\n", flag_w, "--help", env_w, "", "print this help and exit");
}

static const struct config_option *find_flag(const struct config_option *opts, size_t nopts,
                                             const char *name, size_t len)
{
    for (size_t i = 0; i < nopts; i++) {
        if (strlen(opts[i].flag) == len && strncmp(opts[i].flag, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

/* True when option `opt`, given as argv[i] without "=", takes argv[i + 1] as
 * its value: any option but a boolean, which takes it unless it is another
 * option. */
static bool takes_next(const struct config_option *opt, int i, int argc, char **argv)
{
    return i + 1 < argc && (opt->type != CONFIG_BOOL || strncmp(argv[i + 1], "--", 2) != 0);
}

enum config_result config_load(const char *binary, const char *summary,
                               const struct config_option *opts, size_t nopts, void *cfg, int argc,
                               char **argv, config_getenv_fn *getenv_fn, char *err, size_t errlen)
{
    bool check = false;
    char source[96];

    if (!getenv_fn)
        getenv_fn = (config_getenv_fn *)getenv;
    /* These answer whatever the environment and the other options hold (an
     * option's value is skipped as the loop below takes it). */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(stdout, binary, summary, opts, nopts);
            return CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", binary, ARV_VERSION);
            return CONFIG_EXIT_OK;
        }
        const struct config_option *opt =
            strncmp(argv[i], "--", 2) == 0 && !strchr(argv[i], '=')
                ? find_flag(opts, nopts, argv[i] + 2, strlen(argv[i] + 2))
                : NULL;
        if (opt && takes_next(opt, i, argc, argv))
            i++;
    }
    for (size_t i = 0; i < nopts; i++) {
        if (!opts[i].def)
            continue;
        snprintf(source, sizeof(source), "default of --%s", opts[i].flag);
        if (!apply_value(&opts[i], cfg, opts[i].def, source, err, errlen))
            return CONFIG_ERROR;
    }
    for (size_t i = 0; i < nopts; i++) {
        const char *v = opts[i].env ? getenv_fn(opts[i].env) : NULL;
        if (!v || (!*v && opts[i].type != CONFIG_STRING_OFF))
            continue;
        snprintf(source, sizeof(source), "%s", opts[i].env);
        if (!apply_value(&opts[i], cfg, v, source, err, errlen))
            return CONFIG_ERROR;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--check-config") == 0) {
            check = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            set_err(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return CONFIG_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct config_option *opt = find_flag(opts, nopts, name, len);
        if (!opt) {
            set_err(err, errlen, "unknown option '%s' (see --help)", arg);
            return CONFIG_ERROR;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (takes_next(opt, i, argc, argv)) {
            v = argv[++i];
        } else if (opt->type == CONFIG_BOOL) {
            v = "true";
        } else {
            set_err(err, errlen, "option --%s needs a value", opt->flag);
            return CONFIG_ERROR;
        }
        /* Empty, as for a variable: not given (--stream= must not name the
         * stream ""), but for an option where empty means off. */
        if (!*v && opt->type != CONFIG_STRING_OFF)
            continue;
        snprintf(source, sizeof(source), "--%s", opt->flag);
        if (!apply_value(opt, cfg, v, source, err, errlen))
            return CONFIG_ERROR;
    }
    return check ? CONFIG_CHECK : CONFIG_OK;
}

void config_apply_logging(const struct common_config *common, const char *service)
{
    enum log_format fmt = LOG_FORMAT_CONSOLE;
    if (common->log_format)
        log_parse_format(common->log_format, &fmt);
    else if (common->env && strcmp(common->env, "production") == 0)
        fmt = LOG_FORMAT_JSON;
    log_init(service, fmt, common->log_level);
}

void config_load_or_exit(const char *binary, const char *summary, const struct config_option *opts,
                         size_t nopts, void *cfg, const struct common_config *common,
                         config_validate_fn *validate, int error_status, int argc, char **argv)
{
    char err[512] = "";
    enum config_result r =
        config_load(binary, summary, opts, nopts, cfg, argc, argv, NULL, err, sizeof(err));
    if (r == CONFIG_EXIT_OK)
        exit(0);
    if (r != CONFIG_ERROR && validate && !validate(cfg, err, sizeof(err)))
        r = CONFIG_ERROR;
    if (r == CONFIG_ERROR) {
        fprintf(stderr, "%s: configuration error: %s\n", binary, err);
        exit(error_status);
    }
    if (r == CONFIG_CHECK) {
        printf("%s: configuration ok\n", binary);
        exit(0);
    }
    if (common)
        config_apply_logging(common, binary);
}

bool config_builtin_flag(const char *arg)
{
    static const char *const flags[] = {"--help", "-h", "--version", "--check-config"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (strcmp(arg, flags[i]) == 0)
            return true;
    }
    return false;
}

bool config_check_readable(const char *var, const char *path, char *err, size_t errlen)
{
    struct stat st;

    if (!path || !*path)
        return true;
    if (access(path, R_OK) != 0 || stat(path, &st) != 0) {
        snprintf(err, errlen, "%s: cannot read '%s': %s", var, path, strerror(errno));
        return false;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: '%s' is a directory, not a file", var, path);
        return false;
    }
    return true;
}

bool config_relation_valid(const char *rel)
{
    bool start = true; /* at the start of an identifier */
    int dots = 0;

    if (!rel || !*rel || strlen(rel) > 127)
        return false;
    for (const char *p = rel; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (start || ++dots > 1)
                return false;
            start = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            start = false;
        } else if (((c >= '0' && c <= '9') || c == '$') && !start) {
            continue;
        } else {
            return false;
        }
    }
    return !start;
}

/* libpq's options whose values it reads only when it connects: a value it
 * refuses there fails every connect, and a daemon would retry for ever. */
static const struct {
    const char *key;
    const char *choices; /* the values taken ("a|b"), or NULL: an integer */
} pg_checked_options[] = {
    {"sslmode", "disable|allow|prefer|require|verify-ca|verify-full"},
    {"gssencmode", "disable|prefer|require"},
    {"channel_binding", "disable|prefer|require"},
    {"target_session_attrs", "any|read-write|read-only|primary|standby|prefer-standby"},
    {"connect_timeout", NULL},
    {"keepalives", NULL},
    {"keepalives_idle", NULL},
    {"keepalives_interval", NULL},
    {"keepalives_count", NULL},
    {"tcp_user_timeout", NULL},
};

/* What libpq's parse failures mean, by the start of its message: the rest
 * quotes the part it could not read, which may be the password. */
static const struct {
    const char *prefix;
    const char *reason;
} pg_parse_reasons[] = {
    {"missing \"=\" after", "a word that is not key=value"},
    {"unterminated quoted string", "a quoted value not closed"},
    {"invalid connection option", "an unknown option"},
    {"invalid URI query parameter", "an unknown option in the query string"},
    {"missing key/value separator", "a query parameter that is not key=value"},
    {"extra key/value separator", "a query parameter with two '='"},
    {"invalid percent-encoded token", "an invalid %-escape (a '%' is written %25)"},
    {"forbidden value %00", "%00 in a value"},
    {"end of string reached when looking for matching \"]\"", "an IPv6 host without its ']'"},
    {"IPv6 host address may not be empty", "an empty IPv6 host"},
    {"unexpected character", "an unexpected character after the host"},
};

/* An integer as libpq reads one (blanks around it allowed), in [min, max]. */
static bool pg_int_ok(const char *s, size_t len, long min, long max)
{
    char buf[32];
    long v;

    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return parse_long(buf, min, max, &v);
}

/* Checks the values libpq checks only at connect; false with the reason in
 * `err`. Values are never echoed: a malformed string may have cut a password
 * into one. */
static bool pg_options_ok(const PQconninfoOption *opts, char *err, size_t errlen)
{
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "port") == 0) {
            const char *item;
            size_t len;
            /* One per host; an empty one is the default port. */
            for (const char *p = o->val; config_list_next(&p, &item, &len);) {
                if (len > 0 && !pg_int_ok(item, len, 1, 65535)) {
                    set_err(err, errlen,
                            "DATABASE_URL: port must be a number from 1 to 65535 (a"
                            " comma-separated list: one per host)");
                    return false;
                }
            }
            continue;
        }
        for (size_t i = 0; i < sizeof(pg_checked_options) / sizeof(pg_checked_options[0]); i++) {
            const char *choices = pg_checked_options[i].choices;
            if (strcmp(o->keyword, pg_checked_options[i].key) != 0)
                continue;
            if (choices && !choice_ok(choices, o->val)) {
                set_err(err, errlen, "DATABASE_URL: %s must be one of %s", o->keyword, choices);
                return false;
            }
            if (!choices && !pg_int_ok(o->val, strlen(o->val), INT_MIN, INT_MAX)) {
                set_err(err, errlen, "DATABASE_URL: %s must be an integer", o->keyword);
                return false;
            }
        }
    }
    return true;
}

/* Why PQconninfoParse() refused `url`, in words of ours: libpq's message
 * quotes what it could not read, which may be the password. */
static void pg_parse_failure(const char *url, const char *pqerr, char *err, size_t errlen)
{
    const char *reason = NULL;
    size_t n = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");

    /* libpq reads any other scheme as a key=value string without '='. */
    if (n > 0 && strncmp(url + n, "://", 3) == 0 && strncmp(url, "postgresql://", n + 3) != 0 &&
        strncmp(url, "postgres://", n + 3) != 0)
        reason = "the scheme is not postgresql:// or postgres://";
    for (size_t i = 0;
         !reason && pqerr && i < sizeof(pg_parse_reasons) / sizeof(pg_parse_reasons[0]); i++) {
        if (strncmp(pqerr, pg_parse_reasons[i].prefix, strlen(pg_parse_reasons[i].prefix)) == 0)
            reason = pg_parse_reasons[i].reason;
    }
    if (reason) {
        set_err(err, errlen, "DATABASE_URL: not a postgresql:// URL or a key=value string: %s",
                reason);
        return;
    }
    /* A message of another libpq (or translated): up to its first quote. */
    n = pqerr ? strcspn(pqerr, "\n\"") : 13;
    while (pqerr && n > 0 && (pqerr[n - 1] == ' ' || pqerr[n - 1] == ':'))
        n--;
    set_err(err, errlen, "DATABASE_URL: not a postgresql:// URL or a key=value string: %.*s",
            (int)n, pqerr ? pqerr : "out of memory");
}

bool config_check_urls(const struct common_config *c, bool redis, int max_redis, bool database,
                       char *err, size_t errlen)
{
    if (redis) {
        struct redis_url *urls = calloc((size_t)max_redis, sizeof(*urls));
        int n = urls ? redis_url_parse_list(c->redis_url, urls, max_redis) : -1;
        free(urls);
        /* The value is never echoed: it may hold a password. */
        if (n <= 0 && c->redis_url && strstr(c->redis_url, "rediss://")) {
            set_err(err, errlen,
                    "REDIS_URL: rediss:// (TLS) is not supported: this build's hiredis (0.14)"
                    " has no TLS; reach a TLS-only Redis through a local TLS tunnel (stunnel)"
                    " at a redis:// address");
            return false;
        }
        if (n <= 0) {
            set_err(err, errlen,
                    "REDIS_URL: invalid (expected redis://[[user]:password@]host[:port][/db],"
                    " comma-separated, at most %d; a password with / # ? @ or %% must be"
                    " percent-encoded)",
                    max_redis);
            return false;
        }
        /* The stream names the aggregator's metrics' `stream` label, and
         * Prometheus refuses a whole page with one not valid UTF-8. */
        if (c->stream && !strbuf_utf8_valid(c->stream, strlen(c->stream))) {
            set_err(err, errlen, "ARV_STREAM: not valid UTF-8");
            return false;
        }
    }
    if (database) {
        char *pqerr = NULL;
        PQconninfoOption *opts = NULL;
        bool ok = false;
        if (!c->database_url || !*c->database_url) {
            set_err(err, errlen, "DATABASE_URL: empty");
            return false;
        }
        opts = PQconninfoParse(c->database_url, &pqerr);
        if (opts)
            ok = pg_options_ok(opts, err, errlen);
        else
            pg_parse_failure(c->database_url, pqerr, err, errlen);
        PQfreemem(pqerr);
        PQconninfoFree(opts);
        return ok;
    }
    return true;
}
