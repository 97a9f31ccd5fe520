/* Structured logging to stderr: JSON lines in production, readable lines in
 * development. */
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "strbuf.h"

static const char *log_service = "arv";
static enum log_format log_fmt = LOG_FORMAT_JSON;
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

void log_init(const char *service, enum log_format format, enum log_level level)
{
    log_service = service;
    log_fmt = format;
    log_min = level;
}

bool log_enabled(enum log_level level)
{
    return level >= log_min;
}

bool log_parse_level(const char *s, enum log_level *out)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {{"debug", LOG_LEVEL_DEBUG},
                 {"info", LOG_LEVEL_INFO},
                 {"warn", LOG_LEVEL_WARN},
                 {"warning", LOG_LEVEL_WARN},
                 {"error", LOG_LEVEL_ERROR}};
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return true;
        }
    }
    return false;
}

bool log_parse_format(const char *s, enum log_format *out)
{
    if (s && strcasecmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else if (s && strcasecmp(s, "console") == 0)
        *out = LOG_FORMAT_CONSOLE;
    else
        return false;
    return true;
}

static void format_timestamp(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

/* A string value over this many bytes is cut (at a UTF-8 character) and
 * marked "...": a record stays well under PIPE_BUF (4096 bytes), so that its
 * one write() to a pipe is never interleaved with another thread's. */
#define LOG_VALUE_MAX 256

/* True when the console format may write `s` as it is: no space, quote or
 * '=' (which would end or split the value), no control byte (a terminal's
 * escape sequence, say: from a request path), valid UTF-8. */
static bool console_bare(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f)
            return false;
    }
    return strbuf_utf8_valid(s, strlen(s));
}

static void append_str(struct strbuf *sb, const char *s, bool json)
{
    char cut[LOG_VALUE_MAX + 4];
    size_t len = s ? strlen(s) : 0;

    if (len > LOG_VALUE_MAX) {
        size_t n = strbuf_utf8_prefix(s, len, LOG_VALUE_MAX);
        memcpy(cut, s, n);
        memcpy(cut + n, "...", 4);
        s = cut;
    }
    if (json || !s || !console_bare(s))
        strbuf_json_str(sb, s);
    else
        strbuf_puts(sb, s);
}

static void append_value(struct strbuf *sb, const struct log_field *f, bool json)
{
    switch (f->type) {
    case LOG_FIELD_STR:
        append_str(sb, f->v.s, json);
        break;
    case LOG_FIELD_INT:
        strbuf_printf(sb, "%lld", f->v.i);
        break;
    case LOG_FIELD_DBL:
        if (isfinite(f->v.d))
            strbuf_printf(sb, "%.3f", f->v.d);
        else
            strbuf_puts(sb, "null");
        break;
    case LOG_FIELD_BOOL:
        strbuf_puts(sb, f->v.b ? "true" : "false");
        break;
    }
}

void log_write(enum log_level level, const char *event, const struct log_field *fields, size_t n)
{
    if (level < log_min)
        return;
    char ts[64];
    struct strbuf sb;
    format_timestamp(ts, sizeof(ts));
    strbuf_init(&sb);

    if (log_fmt == LOG_FORMAT_JSON) {
        strbuf_puts(&sb, "{\"timestamp\":\"");
        strbuf_puts(&sb, ts);
        strbuf_puts(&sb, "\",\"level\":\"");
        strbuf_puts(&sb, level_names[level]);
        strbuf_puts(&sb, "\",\"event\":");
        strbuf_json_str(&sb, event);
        strbuf_puts(&sb, ",\"service\":");
        strbuf_json_str(&sb, log_service);
        for (size_t i = 0; i < n; i++) {
            if (!fields[i].key)
                continue;
            strbuf_putc(&sb, ',');
            strbuf_json_str(&sb, fields[i].key);
            strbuf_putc(&sb, ':');
            append_value(&sb, &fields[i], true);
        }
        strbuf_puts(&sb, "}\n");
    } else {
        strbuf_printf(&sb, "%s %-7s %-28s", ts, level_names[level], event);
        for (size_t i = 0; i < n; i++) {
            if (!fields[i].key)
                continue;
            strbuf_putc(&sb, ' ');
            strbuf_puts(&sb, fields[i].key);
            strbuf_putc(&sb, '=');
            append_value(&sb, &fields[i], false);
        }
        strbuf_putc(&sb, '\n');
    }
    /* One write per record keeps lines whole across threads and processes
     * (up to PIPE_BUF on a pipe: see LOG_VALUE_MAX); a short one is finished. */
    for (size_t off = 0; sb.data && off < sb.len;) {
        ssize_t rc = write(STDERR_FILENO, sb.data + off, sb.len - off);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            break;
        off += (size_t)rc;
    }
    strbuf_deinit(&sb);
}

void die(const char *event, const char *message)
{
    log_error(event, LF_STR("message", message));
    exit(1);
}
