/* Unit tests for common/config.c: defaults, environment, flags, errors. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

struct test_config {
    struct common_config common;
    long batch;
    bool full_ip;
    const char *regexes;
};

static const struct config_option opts[] = {
    CONFIG_COMMON_OPTIONS(struct test_config, "0.0.0.0:8081"),
    {"batch", "ARV_BATCH", CONFIG_INT, offsetof(struct test_config, batch), "100", NULL, 1, 1000,
     "batch size"},
    {"store-full-ip", "ARV_STORE_FULL_IP", CONFIG_BOOL, offsetof(struct test_config, full_ip), "0",
     NULL, 0, 0, "keep full IPs"},
    {"regexes", "ARV_REGEXES", CONFIG_STRING_OFF, offsetof(struct test_config, regexes), "/x.yaml",
     NULL, 0, 0, "regexes; empty: off"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const char *env_table[16][2];

static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < 16 && env_table[i][0]; i++) {
        if (strcmp(env_table[i][0], name) == 0)
            return env_table[i][1];
    }
    return NULL;
}

static void setup(void)
{
    memset(env_table, 0, sizeof(env_table));
}

static enum config_result load(struct test_config *cfg, int argc, char **argv, char *err)
{
    memset(cfg, 0, sizeof(*cfg));
    return config_load("arv-test", "test", opts, NOPTS, cfg, argc, argv, fake_getenv, err, 256);
}

TestSuite(config, .init = setup);

Test(config, defaults)
{
    struct test_config cfg;
    char err[256];
    char *argv[] = {"arv-test"};
    cr_assert_eq(load(&cfg, 1, argv, err), CONFIG_OK);
    cr_assert_str_eq(cfg.common.redis_url, "redis://127.0.0.1:6379/0");
    cr_assert_str_eq(cfg.common.database_url, "postgresql://arv@127.0.0.1:5432/arv");
    cr_assert_str_eq(cfg.common.stream, "arv:events");
    cr_assert_str_eq(cfg.common.env, "development");
    cr_assert_null(cfg.common.log_format);
    cr_assert_eq(cfg.common.log_level, LOG_LEVEL_INFO);
    cr_assert_eq(cfg.common.stream_shards, 1);
    cr_assert_str_eq(cfg.common.listen.host, "0.0.0.0");
    cr_assert_eq(cfg.common.listen.port, 8081);
    cr_assert_eq(cfg.batch, 100);
    cr_assert_eq(cfg.full_ip, false);
}

Test(config, environment_then_flags_win)
{
    struct test_config cfg;
    char err[256];
    env_table[0][0] = "ARV_BATCH";
    env_table[0][1] = "200";
    env_table[1][0] = "ARV_LISTEN";
    env_table[1][1] = "127.0.0.1:9000";
    env_table[2][0] = "ARV_STORE_FULL_IP";
    env_table[2][1] = "yes";
    char *argv[] = {"arv-test", "--batch=300", "--listen", "[::1]:9001", "--log-level", "debug"};
    cr_assert_eq(load(&cfg, 6, argv, err), CONFIG_OK, "%s", err);
    cr_assert_eq(cfg.batch, 300);
    cr_assert_str_eq(cfg.common.listen.host, "::1");
    cr_assert_eq(cfg.common.listen.port, 9001);
    cr_assert_eq(cfg.full_ip, true);
    cr_assert_eq(cfg.common.log_level, LOG_LEVEL_DEBUG);
}

/* A variable set to "": unset, but for an option where empty means off. */
Test(config, empty_variable)
{
    struct test_config cfg;
    char err[256];
    env_table[0][0] = "ARV_BATCH";
    env_table[0][1] = "";
    env_table[1][0] = "ARV_REGEXES";
    env_table[1][1] = "";
    char *argv[] = {"arv-test"};
    cr_assert_eq(load(&cfg, 1, argv, err), CONFIG_OK, "%s", err);
    cr_assert_eq(cfg.batch, 100);
    cr_assert_str_eq(cfg.regexes, "");
    env_table[1][0] = NULL;
    cr_assert_eq(load(&cfg, 1, argv, err), CONFIG_OK, "%s", err);
    cr_assert_str_eq(cfg.regexes, "/x.yaml");
}

/* A flag set to "" is as a variable set to "": not given, of every kind, but
 * for an option where empty means off (--stream= must not name the stream ""). */
Test(config, empty_flag)
{
    struct test_config cfg;
    char err[256];
    char *argv[] = {"arv-test",        "--stream=",    "--batch=",      "--store-full-ip=",
                    "--listen=",       "--log-level=", "--env",         "",
                    "--database-url=", "--regexes=",   "--check-config"};
    cr_assert_eq(load(&cfg, 11, argv, err), CONFIG_CHECK, "%s", err);
    cr_assert_str_eq(cfg.common.stream, "arv:events");
    cr_assert_eq(cfg.batch, 100);
    cr_assert_eq(cfg.full_ip, false);
    cr_assert_eq(cfg.common.listen.port, 8081);
    cr_assert_eq(cfg.common.log_level, LOG_LEVEL_INFO);
    cr_assert_str_eq(cfg.common.env, "development");
    cr_assert_str_eq(cfg.common.database_url, "postgresql://arv@127.0.0.1:5432/arv");
    cr_assert_str_eq(cfg.regexes, "");

    /* Not given: the variable applies, as a flag not given leaves it. */
    env_table[0][0] = "ARV_STREAM";
    env_table[0][1] = "arv:env";
    env_table[1][0] = "ARV_BATCH";
    env_table[1][1] = "200";
    char *argv2[] = {"arv-test", "--stream=", "--batch", ""};
    cr_assert_eq(load(&cfg, 4, argv2, err), CONFIG_OK, "%s", err);
    cr_assert_str_eq(cfg.common.stream, "arv:env");
    cr_assert_eq(cfg.batch, 200);
}

Test(config, bool_flag_without_value)
{
    struct test_config cfg;
    char err[256];
    char *argv[] = {"arv-test", "--store-full-ip"};
    cr_assert_eq(load(&cfg, 2, argv, err), CONFIG_OK, "%s", err);
    cr_assert(cfg.full_ip);
}

Test(config, out_of_range_names_the_variable)
{
    struct test_config cfg;
    char err[256];
    env_table[0][0] = "ARV_BATCH";
    env_table[0][1] = "100000";
    char *argv[] = {"arv-test"};
    cr_assert_eq(load(&cfg, 1, argv, err), CONFIG_ERROR);
    cr_assert(strstr(err, "ARV_BATCH") != NULL, "%s", err);
    cr_assert(strstr(err, "100000") != NULL, "%s", err);
}

Test(config, bad_values_are_errors)
{
    struct test_config cfg;
    char err[256];
    char *bad[][2] = {{"arv-test", "--batch=12x"},          {"arv-test", "--env=staging"},
                      {"arv-test", "--listen=nohost"},      {"arv-test", "--listen=host.name:80"},
                      {"arv-test", "--listen=:70000"},      {"arv-test", "--log-level=loud"},
                      {"arv-test", "--no-such-option"},     {"arv-test", "stray"},
                      {"arv-test", "--store-full-ip=maybe"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(load(&cfg, 2, bad[i], err), CONFIG_ERROR, "%s accepted", bad[i][1]);
        cr_assert(err[0] != '\0');
    }
}

Test(config, missing_value)
{
    struct test_config cfg;
    char err[256];
    char *argv[] = {"arv-test", "--batch"};
    cr_assert_eq(load(&cfg, 2, argv, err), CONFIG_ERROR);
    cr_assert(strstr(err, "--batch") != NULL);
}

Test(config, check_config)
{
    struct test_config cfg;
    char err[256];
    char *argv[] = {"arv-test", "--check-config"};
    cr_assert_eq(load(&cfg, 2, argv, err), CONFIG_CHECK);
}

/* Files a daemon opens at start (GeoIP, user-agent rules, zoneinfo) are
 * checked by --check-config too: missing is an error naming the variable. */
Test(config, check_readable)
{
    char err[256] = "";
    cr_assert(config_check_readable("ARV_X", NULL, err, sizeof(err)));
    cr_assert(config_check_readable("ARV_X", "", err, sizeof(err)));
    cr_assert(config_check_readable("ARV_X", "/etc/passwd", err, sizeof(err)));
    cr_assert_not(config_check_readable("ARV_X", "/nonexistent/file", err, sizeof(err)));
    cr_assert_str_eq(err, "ARV_X: cannot read '/nonexistent/file': No such file or directory");
    /* A directory can be "read" (access R_OK) but is no file: the daemon
     * would refuse it at start, so the check does too. */
    cr_assert_not(config_check_readable("ARV_X", "/tmp", err, sizeof(err)));
    cr_assert_str_eq(err, "ARV_X: '/tmp' is a directory, not a file");
}

Test(config, help_and_version_exit_ok, .init = cr_redirect_stdout)
{
    struct test_config cfg;
    char err[256];
    char *help[] = {"arv-test", "--help"};
    char *version[] = {"arv-test", "--version"};
    cr_assert_eq(load(&cfg, 2, help, err), CONFIG_EXIT_OK);
    cr_assert_eq(load(&cfg, 2, version, err), CONFIG_EXIT_OK);
}

/* --help and --version answer whatever the environment holds: a deploy step
 * asking the version, or an operator asking for help with a bad variable
 * set, got a configuration error. */
Test(config, help_and_version_whatever_the_environment, .init = cr_redirect_stdout)
{
    struct test_config cfg;
    char err[256] = "";
    char *help[] = {"arv-test", "--batch=12x", "--help"};
    char *version[] = {"arv-test", "--version"};
    env_table[0][0] = "ARV_BATCH";
    env_table[0][1] = "x";
    cr_assert_eq(load(&cfg, 3, help, err), CONFIG_EXIT_OK, "%s", err);
    cr_assert_eq(load(&cfg, 2, version, err), CONFIG_EXIT_OK, "%s", err);
    /* An option's value that reads as one of them is the value. */
    env_table[0][0] = NULL;
    char *value[] = {"arv-test", "--stream", "-h", "--regexes", "--version"};
    cr_assert_eq(load(&cfg, 5, value, err), CONFIG_OK, "%s", err);
    cr_assert_str_eq(cfg.common.stream, "-h");
    cr_assert_str_eq(cfg.regexes, "--version");
}

Test(config, parse_listen)
{
    struct config_listen l;
    cr_assert(config_parse_listen(":8083", &l));
    cr_assert_str_eq(l.host, "0.0.0.0");
    cr_assert_eq(l.port, 8083);
    cr_assert(config_parse_listen("127.0.0.1:0", &l));
    cr_assert_eq(l.port, 0);
    cr_assert_not(config_parse_listen("[::1]8080", &l));
    cr_assert_not(config_parse_listen("127.0.0.1:", &l));
    cr_assert_not(config_parse_listen("127.0.0.1:-1", &l));
}

Test(config, parse_long_strict)
{
    long v;
    cr_assert(parse_long("42", 0, 100, &v));
    cr_assert_eq(v, 42);
    cr_assert_not(parse_long("", 0, 100, &v));
    cr_assert_not(parse_long(" 42", 0, 100, &v));
    cr_assert_not(parse_long("42 ", 0, 100, &v));
    cr_assert_not(parse_long("101", 0, 100, &v));
    cr_assert_not(parse_long("99999999999999999999", 0, 100, &v));
}

/* ARV_STREAM names the aggregator's metrics' `stream` label: one not valid
 * UTF-8 made every scrape fail (Prometheus refuses the whole page). */
Test(config, stream_name_must_be_utf8)
{
    struct common_config c = {.redis_url = "redis://127.0.0.1:6379/0", .stream = "arv:\xe9v"};
    char err[256] = "";
    cr_assert_not(config_check_urls(&c, true, 4, false, err, sizeof(err)));
    cr_assert(strstr(err, "ARV_STREAM") != NULL, "%s", err);
    c.stream = "arv:\xc3\xa9v";
    cr_assert(config_check_urls(&c, true, 4, false, err, sizeof(err)), "%s", err);
}

Test(config, relation_names)
{
    const char *good[] = {"analytics.ar_content", "ar_content", "platform.content_v2", "_x.Y9",
                          "a$1"};
    const char *bad[] = {NULL,           "",     "a.b.c", ".a",
                         "a.",           "1abc", "9a",    "x; DROP TABLE y",
                         "\"Quoted\".t", "a b",  "$a"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_assert(config_relation_valid(good[i]), "%s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(config_relation_valid(bad[i]), "%s", bad[i] ? bad[i] : "(null)");
}

Test(config, check_urls)
{
    struct common_config c = {.redis_url = "redis://127.0.0.1:6379/0,redis://10.0.0.2",
                              .database_url = "postgresql://arv@127.0.0.1:5432/arv"};
    char err[256];
    cr_assert(config_check_urls(&c, true, 4, true, err, sizeof(err)), "%s", err);
    cr_assert_not(config_check_urls(&c, true, 1, false, err, sizeof(err)));
    cr_assert(strstr(err, "REDIS_URL") != NULL, "%s", err);
    c.redis_url = "nope";
    cr_assert_not(config_check_urls(&c, true, 4, false, err, sizeof(err)));
    cr_assert(config_check_urls(&c, false, 0, true, err, sizeof(err)), "redis not checked");
    c.database_url = "postgresql://x/db?no_such_option=1";
    cr_assert_not(config_check_urls(&c, false, 0, true, err, sizeof(err)));
    cr_assert(strstr(err, "DATABASE_URL") != NULL, "%s", err);
    c.database_url = "";
    cr_assert_not(config_check_urls(&c, false, 0, true, err, sizeof(err)));

    /* A password never reaches the message: an unencoded '/' breaks the URL,
     * and libpq quotes a token it cannot decode. */
    c.redis_url = "redis://:se/cret@redis:6379/0";
    cr_assert_not(config_check_urls(&c, true, 4, false, err, sizeof(err)));
    cr_assert(strstr(err, "REDIS_URL") && !strstr(err, "se/cret") && !strstr(err, "cret"), "%s",
              err);
    c.database_url = "postgresql://arv:s3cr%zzet@db/arv";
    cr_assert_not(config_check_urls(&c, false, 0, true, err, sizeof(err)));
    cr_assert(strstr(err, "DATABASE_URL") && !strstr(err, "s3cr"), "%s", err);

    /* TLS is named as such, not as a malformed URL. */
    c.redis_url = "rediss://:secret@cache.example:6380/0";
    cr_assert_not(config_check_urls(&c, true, 4, false, err, sizeof(err)));
    cr_assert(strstr(err, "rediss:// (TLS) is not supported") && !strstr(err, "secret"), "%s", err);
}

static size_t list_items(const char *list, char out[][16], size_t max)
{
    const char *item;
    size_t len, n = 0;

    for (const char *p = list; config_list_next(&p, &item, &len); n++) {
        if (n < max)
            snprintf(out[n], sizeof(out[n]), "%.*s", (int)len, item);
    }
    return n;
}

/* What libpq parses but refuses at every connect (a daemon would retry for
 * ever) fails the check, naming the option, never echoing the value. */
Test(config, check_database_url_values)
{
    static const struct {
        const char *url;
        const char *says; /* NULL: valid */
    } cases[] = {
        {"postgresql://arv@h/arv?sslmode=bogus", "sslmode must be one of disable|allow|prefer"},
        {"postgresql://arv@h/arv?sslmode=REQUIRE", "sslmode must be one of"},
        {"host=h sslmode=", "sslmode must be one of"},
        {"postgresql://arv@h:99999/arv", "port must be a number from 1 to 65535"},
        {"postgresql://arv@h:0/arv", "port must be a number from 1 to 65535"},
        {"host=localhost port=abc", "port must be a number from 1 to 65535"},
        {"host=a,b port=5432,5433x", "port must be a number from 1 to 65535"},
        {"host=h gssencmode=always", "gssencmode must be one of disable|prefer|require"},
        {"host=h channel_binding=yes", "channel_binding must be one of disable|prefer|require"},
        {"host=h target_session_attrs=master", "target_session_attrs must be one of any|"},
        {"host=h connect_timeout=abc", "connect_timeout must be an integer"},
        {"host=h connect_timeout=99999999999", "connect_timeout must be an integer"},
        {"postgresql://h/arv?keepalives_idle=x", "keepalives_idle must be an integer"},
        {"host=h tcp_user_timeout=1s", "tcp_user_timeout must be an integer"},
        {"postgresql://arv@h/arv?sslmode=verify-full&gssencmode=disable", NULL},
        {"postgresql://h1:5432,h2:5433/arv?target_session_attrs=prefer-standby", NULL},
        {"host=a,b port=5432,", NULL},
        {"host=h port=' 5432 ' connect_timeout=' 7 ' keepalives=0", NULL},
        {"postgres://h/arv?channel_binding=require&connect_timeout=-1", NULL},
    };
    struct common_config c = {0};
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c.database_url = cases[i].url;
        bool ok = config_check_urls(&c, false, 0, true, err, sizeof(err));
        if (!cases[i].says) {
            cr_assert(ok, "%s: %s", cases[i].url, err);
            continue;
        }
        cr_assert_not(ok, "%s passed", cases[i].url);
        cr_assert(strncmp(err, "DATABASE_URL: ", 14) == 0 && strstr(err, cases[i].says), "%s: %s",
                  cases[i].url, err);
    }

    /* A password cut by a blank is a value of its own: not echoed either. */
    c.database_url = "host=h password=se sslmode=cret";
    cr_assert_not(config_check_urls(&c, false, 0, true, err, sizeof(err)));
    cr_assert(strstr(err, "sslmode") && !strstr(err, "cret"), "%s", err);
}

/* A string libpq cannot parse: a message of ours, not its text cut at its
 * first quote ("DATABASE_URL: missing" for mysql://). */
Test(config, check_database_url_unparsable)
{
    static const struct {
        const char *url;
        const char *says;
    } cases[] = {
        {"mysql://arv@h/arv", "the scheme is not postgresql:// or postgres://"},
        {"POSTGRESQL://h/arv", "the scheme is not postgresql:// or postgres://"},
        {"arv@h/arv", "a word that is not key=value"},
        {"host=h password='s3cret", "a quoted value not closed"},
        {"host=h s3cret=1", "an unknown option"},
        {"postgresql://h/arv?s3cret=1", "an unknown option in the query string"},
        {"postgresql://h/arv?s3cret", "a query parameter that is not key=value"},
        {"postgresql://:s3cr%zzet@h/arv", "an invalid %-escape"},
        {"postgresql://[::1/s3cret", "an IPv6 host without its ']'"},
    };
    struct common_config c = {0};
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c.database_url = cases[i].url;
        cr_assert_not(config_check_urls(&c, false, 0, true, err, sizeof(err)), "%s passed",
                      cases[i].url);
        cr_assert(strstr(err, "DATABASE_URL: not a postgresql:// URL or a key=value string: ") ==
                          err &&
                      strstr(err, cases[i].says) && !strstr(err, "s3cr") && !strchr(err, '"'),
                  "%s: %s", cases[i].url, err);
    }
}

Test(config, list_next_trims_and_keeps_empty_items)
{
    char v[8][16];

    cr_assert_eq(list_items(NULL, v, 8), 0);
    cr_assert_eq(list_items("", v, 8), 1);
    cr_assert_str_eq(v[0], "");
    cr_assert_eq(list_items(" a ,b,\tc d ", v, 8), 3);
    cr_assert_str_eq(v[0], "a");
    cr_assert_str_eq(v[1], "b");
    cr_assert_str_eq(v[2], "c d");
    cr_assert_eq(list_items("a,, ,", v, 8), 4);
    cr_assert_str_eq(v[0], "a");
    cr_assert_str_eq(v[1], "");
    cr_assert_str_eq(v[2], "");
    cr_assert_str_eq(v[3], "");
}
