/* log: JSON records stay whole and valid whatever the values. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Runs one log_info with a string field `value` to a pipe and returns the
 * record (malloc'd), or NULL. */
static char *record_of(const char *value)
{
    int fds[2], saved = dup(STDERR_FILENO);
    static char buf[65536];
    ssize_t n;

    cr_assert_eq(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    log_info("test_event", LF_STR("path", value), LF_INT("n", 1));
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return strdup(buf);
}

Test(log, long_values_are_cut_and_records_stay_valid_json)
{
    static char big[20000];
    struct json_object *o, *path;
    char *rec;

    log_init("test", LOG_FORMAT_JSON, LOG_LEVEL_INFO);
    /* 2-byte characters with a cut inside one, then bytes that escape large. */
    for (size_t i = 0; i + 2 < sizeof(big); i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    big[sizeof(big) - 1] = '\0';
    cr_assert_not_null(rec = record_of(big));
    cr_assert(strlen(rec) < 4096, "a record of %zu bytes", strlen(rec));
    cr_assert(rec[strlen(rec) - 1] == '\n');
    cr_assert_not_null(o = json_tokener_parse(rec), "%s", rec);
    cr_assert(json_object_object_get_ex(o, "path", &path));
    const char *v = json_object_get_string(path);
    cr_assert(strlen(v) <= 256 + 3 && strcmp(v + strlen(v) - 3, "...") == 0, "%s", v);
    json_object_put(o);
    free(rec);

    memset(big, '\x01', sizeof(big) - 1); /* control bytes: \u0001 each */
    cr_assert_not_null(rec = record_of(big));
    cr_assert(strlen(rec) < 4096, "a record of %zu bytes", strlen(rec));
    cr_assert_not_null(o = json_tokener_parse(rec), "%s", rec);
    json_object_put(o);
    free(rec);

    /* Short values are written whole. */
    cr_assert_not_null(rec = record_of("/api/analytics/overview"));
    cr_assert_not_null(strstr(rec, "\"path\":\"/api/analytics/overview\""), "%s", rec);
    free(rec);
}

/* The console format (development) quotes and escapes a value with a control
 * byte or invalid UTF-8 as JSON does: a request path could write raw control
 * bytes (a terminal's escape sequences among them) to the developer's
 * terminal. */
Test(log, console_values_carry_no_control_bytes)
{
    char *rec;

    log_init("test", LOG_FORMAT_CONSOLE, LOG_LEVEL_INFO);
    cr_assert_not_null(rec = record_of("/a\x0c\xff\x1b[2J\rb"));
    for (size_t i = 0; rec[i + 1]; i++)
        cr_assert((unsigned char)rec[i] >= 0x20, "byte %zu is 0x%02x: %s", i, (unsigned char)rec[i],
                  rec);
    cr_assert_not_null(strstr(rec, "path=\"/a\\u000c\xef\xbf\xbd\\u001b[2J\\rb\""), "%s", rec);
    free(rec);
    /* A plain value stays bare. */
    cr_assert_not_null(rec = record_of("/api/analytics/overview"));
    cr_assert_not_null(strstr(rec, "path=/api/analytics/overview "), "%s", rec);
    free(rec);
}
