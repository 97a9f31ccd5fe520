/* The event schema: validation and normalisation of client AR session events,
 * and the compact JSON they travel as in the Redis stream. */
#include "event.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <json-c/json.h>

#include "timeutil.h"

#define DEFAULT_MAX_SKEW_MS (24LL * 3600 * 1000)
#define MAX_DURATION_S      86400

static bool fail(struct event_error *err, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool fail(struct event_error *err, const char *code, const char *field, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->field = field;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return false;
}

/* ---- time ---------------------------------------------------------------- */

static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

bool event_parse_rfc3339(const char *s, int64_t *out_ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    int64_t frac_ms = 0;
    const char *p = s;

    if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mo) || *p++ != '-' ||
        !read_digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
        !read_digits(&p, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return false;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return false;
    if (*p == '.') {
        int digits = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return false;
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        if (!read_digits(&p, 2, &oh) || *p++ != ':' || !read_digits(&p, 2, &om) || oh > 23 ||
            om > 59)
            return false;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    if (sec == 60)
        sec = 59; /* a leap second is folded into the second before it */
    int64_t secs =
        timeutil_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec;
    secs -= sign * (oh * 3600 + om * 60);
    *out_ms = secs * 1000 + frac_ms;
    return true;
}

void event_format_rfc3339(int64_t ms, char *out, size_t outlen)
{
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int millis = (int)(ms - secs * 1000);
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t rem = secs - days * 86400;
    int64_t y;
    unsigned m, d;
    timeutil_civil_from_days(days, &y, &m, &d);
    snprintf(out, outlen, "%04" PRId64 "-%02u-%02uT%02d:%02d:%02d.%03dZ", y, m, d,
             (int)(rem / 3600), (int)(rem % 3600 / 60), (int)(rem % 60), millis);
}

/* ---- UUIDs --------------------------------------------------------------- */

/* Canonicalises a textual UUID (8-4-4-4-12 hex, any case) into lowercase. */
static bool uuid_canonical(const char *s, size_t len, char *out)
{
    if (len != EVENT_UUID_LEN)
        return false;
    for (size_t i = 0; i < EVENT_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!isxdigit((unsigned char)c)) {
            return false;
        }
        out[i] = (char)tolower((unsigned char)c);
    }
    out[EVENT_UUID_LEN] = '\0';
    return true;
}

/* Random bytes from the OS, drawn in blocks so the hot path rarely syscalls. */
static void random_bytes(unsigned char *out, size_t n)
{
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t left;
    while (n > 0) {
        if (left == 0) {
            size_t got = 0;
            while (got < sizeof(pool)) {
                ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
                if (r > 0)
                    got += (size_t)r;
                else if (errno != EINTR)
                    break;
            }
            left = got;
            if (left == 0)
                return;
        }
        size_t take = n < left ? n : left;
        memcpy(out, pool + sizeof(pool) - left, take);
        left -= take;
        out += take;
        n -= take;
    }
}

void event_uuid_v7(char *out, int64_t now_ms)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    random_bytes(b + 6, 10);
    uint64_t ts = (uint64_t)now_ms;
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ts >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (b[6] & 0x0f));
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3f));
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

/* ---- field helpers ------------------------------------------------------- */

/* Length of the longest prefix of s (at most max bytes) that ends on a UTF-8
 * character boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static bool has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    }
    return false;
}

/* Copies an optional string field. NULL/absent leaves `out` empty. Longer than
 * `cap - 1` bytes is an error unless `truncate`. */
static bool take_string(struct json_object *v, const char *field, char *out, size_t cap,
                        bool truncate, struct event_error *err)
{
    out[0] = '\0';
    if (!v)
        return true;
    if (!json_object_is_type(v, json_type_string))
        return fail(err, "invalid_field", field, "%s must be a string", field);
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    if (memchr(s, '\0', len) || has_control(s, len))
        return fail(err, "invalid_field", field, "%s must not contain control characters", field);
    /* Checked here, not only escaped later: the stream and PostgreSQL must hold
     * exactly what was validated. */
    if (!strbuf_utf8_valid(s, len))
        return fail(err, "invalid_field", field, "%s must be valid UTF-8", field);
    if (len >= cap) {
        if (!truncate)
            return fail(err, "invalid_field", field, "%s is longer than %zu bytes", field, cap - 1);
        len = utf8_prefix(s, len, cap - 1);
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool take_uuid(struct json_object *v, const char *field, char *out, bool required,
                      struct event_error *err)
{
    out[0] = '\0';
    if (!v) {
        if (required)
            return fail(err, "invalid_field", field, "%s is required", field);
        return true;
    }
    if (!json_object_is_type(v, json_type_string) ||
        !uuid_canonical(json_object_get_string(v), (size_t)json_object_get_string_len(v), out))
        return fail(err, "invalid_field", field, "%s must be a UUID (8-4-4-4-12 hex digits)",
                    field);
    return true;
}

static bool take_token(struct json_object *v, const char *field, char *out, size_t cap,
                       struct event_error *err)
{
    if (!take_string(v, field, out, cap, false, err))
        return false;
    for (char *p = out; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return fail(err, "invalid_field", field,
                        "%s must be a word of letters, digits, '_' or '-'", field);
        *p = (char)tolower((unsigned char)*p);
    }
    return true;
}

/* Looks a key up treating JSON null as absent. */
static struct json_object *field_get(struct json_object *obj, const char *key)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return v;
}

/* ---- decoding ------------------------------------------------------------ */

enum decode_mode { DECODE_CLIENT, DECODE_STREAM };

static bool decode_event(struct json_object *obj, enum decode_mode mode,
                         const struct event_context *ctx, struct event *ev, struct event_error *err)
{
    struct json_object *v;
    memset(ev, 0, sizeof(*ev));
    ev->duration_seconds = -1;

    if (!obj || !json_object_is_type(obj, json_type_object))
        return fail(err, "invalid_json", NULL, "the body must be a JSON object");
    if (json_object_object_length(obj) > EVENT_MAX_FIELDS)
        return fail(err, "invalid_json", NULL, "the object has more than %d fields",
                    EVENT_MAX_FIELDS);

    /* Content: an integer id, or a string unique id under either name. */
    if ((v = field_get(obj, "ar_content_id"))) {
        int64_t id = 0;
        if (json_object_is_type(v, json_type_int)) {
            errno = 0;
            id = json_object_get_int64(v);
            if (errno != 0)
                id = 0;
        } else if (json_object_is_type(v, json_type_string)) {
            const char *s = json_object_get_string(v);
            char *end = NULL;
            errno = 0;
            long long ll = strtoll(s, &end, 10);
            if (errno == 0 && end != s && *end == '\0')
                id = ll;
        }
        if (id <= 0)
            return fail(err, "invalid_field", "ar_content_id",
                        "ar_content_id must be a positive integer");
        ev->ar_content_id = id;
    }
    const char *uid_field =
        field_get(obj, "ar_content_unique_id") ? "ar_content_unique_id" : "portrait_id";
    if (!take_string(field_get(obj, uid_field), uid_field, ev->content_uid, sizeof(ev->content_uid),
                     false, err))
        return false;
    if (ev->ar_content_id == 0 && ev->content_uid[0] == '\0')
        return fail(err, "invalid_field", "ar_content_id",
                    "ar_content_id or ar_content_unique_id is required");

    if (!take_uuid(field_get(obj, "session_id"), "session_id", ev->session_id, true, err) ||
        !take_uuid(field_get(obj, "event_id"), "event_id", ev->event_id, mode == DECODE_STREAM,
                   err))
        return false;

    if ((v = field_get(obj, "duration_seconds"))) {
        double d;
        if (json_object_is_type(v, json_type_int))
            d = (double)json_object_get_int64(v);
        else if (json_object_is_type(v, json_type_double))
            d = json_object_get_double(v);
        else
            return fail(err, "invalid_field", "duration_seconds",
                        "duration_seconds must be a number");
        if (!(d >= 0 && d <= MAX_DURATION_S))
            return fail(err, "invalid_field", "duration_seconds",
                        "duration_seconds must be between 0 and %d", MAX_DURATION_S);
        ev->duration_seconds = (int32_t)d;
    }

    if ((v = field_get(obj, "video_played"))) {
        if (json_object_is_type(v, json_type_boolean))
            ev->video_played = json_object_get_boolean(v);
        else if (json_object_is_type(v, json_type_int) &&
                 (json_object_get_int64(v) == 0 || json_object_get_int64(v) == 1))
            ev->video_played = json_object_get_int64(v) == 1;
        else
            return fail(err, "invalid_field", "video_played", "video_played must be a boolean");
    }

    if (!take_token(field_get(obj, "tracking_quality"), "tracking_quality", ev->tracking_quality,
                    sizeof(ev->tracking_quality), err) ||
        !take_string(field_get(obj, "device_type"), "device_type", ev->device_type,
                     sizeof(ev->device_type), false, err) ||
        !take_string(field_get(obj, "browser"), "browser", ev->browser, sizeof(ev->browser), false,
                     err) ||
        !take_string(field_get(obj, "os"), "os", ev->os, sizeof(ev->os), false, err) ||
        !take_string(field_get(obj, "city"), "city", ev->city, sizeof(ev->city), false, err) ||
        !take_string(field_get(obj, "user_agent"), "user_agent", ev->user_agent,
                     sizeof(ev->user_agent), true, err))
        return false;

    if ((v = field_get(obj, "country"))) {
        char c[8];
        if (!take_string(v, "country", c, sizeof(c), false, err))
            return false;
        if (c[0] != '\0') {
            if (strlen(c) != 2 || !isalpha((unsigned char)c[0]) || !isalpha((unsigned char)c[1]))
                return fail(err, "invalid_field", "country",
                            "country must be an ISO 3166-1 alpha-2 code such as \"DE\"");
            ev->country[0] = (char)toupper((unsigned char)c[0]);
            ev->country[1] = (char)toupper((unsigned char)c[1]);
            ev->country[2] = '\0';
        }
    }

    if ((v = field_get(obj, "occurred_at"))) {
        if (!json_object_is_type(v, json_type_string) ||
            !event_parse_rfc3339(json_object_get_string(v), &ev->occurred_at_ms))
            return fail(err, "invalid_field", "occurred_at",
                        "occurred_at must be an RFC 3339 time such as 2026-11-25T10:00:00Z");
    }

    if (mode == DECODE_CLIENT) {
        int64_t skew = ctx->max_skew_ms > 0 ? ctx->max_skew_ms : DEFAULT_MAX_SKEW_MS;
        ev->received_at_ms = ctx->now_ms;
        if (ev->occurred_at_ms != 0 &&
            (ev->occurred_at_ms < ctx->now_ms - skew || ev->occurred_at_ms > ctx->now_ms + skew))
            return fail(err, "invalid_field", "occurred_at",
                        "occurred_at is more than %" PRId64 " s away from the server's clock",
                        skew / 1000);
        if (ev->user_agent[0] == '\0' && ctx->user_agent_header) {
            size_t len = strlen(ctx->user_agent_header);
            /* A header that is not clean UTF-8 text is dropped, not mangled. */
            if (!has_control(ctx->user_agent_header, len) &&
                strbuf_utf8_valid(ctx->user_agent_header, len)) {
                len = utf8_prefix(ctx->user_agent_header, len, sizeof(ev->user_agent) - 1);
                memcpy(ev->user_agent, ctx->user_agent_header, len);
                ev->user_agent[len] = '\0';
            }
        }
        if (ctx->client_ip)
            snprintf(ev->ip, sizeof(ev->ip), "%s", ctx->client_ip);
        if (ev->event_id[0] == '\0')
            event_uuid_v7(ev->event_id, ctx->now_ms);
    } else {
        if (!take_string(field_get(obj, "ip"), "ip", ev->ip, sizeof(ev->ip), false, err))
            return false;
        v = field_get(obj, "received_at");
        if (!v || !json_object_is_type(v, json_type_string) ||
            !event_parse_rfc3339(json_object_get_string(v), &ev->received_at_ms))
            return fail(err, "invalid_field", "received_at", "received_at is missing or invalid");
    }
    return true;
}

static bool parse_object(const char *json, size_t len, struct json_object **out,
                         struct event_error *err)
{
    bool ok = false;
    struct json_tokener *tok = json_tokener_new_ex(EVENT_MAX_DEPTH);
    if (!tok)
        return fail(err, "internal", NULL, "out of memory");
    if (len > INT32_MAX) {
        fail(err, "invalid_json", NULL, "the body is too large");
        goto out;
    }
    *out = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr != json_tokener_success) {
        fail(err, "invalid_json", NULL, "the body is not valid JSON: %s",
             jerr == json_tokener_continue ? "unexpected end of input"
                                           : json_tokener_error_desc(jerr));
        goto out;
    }
    /* Anything but whitespace after the value is an error. */
    for (size_t i = tok->char_offset; i < len; i++) {
        if (!isspace((unsigned char)json[i])) {
            fail(err, "invalid_json", NULL, "the body has data after the JSON value");
            goto out;
        }
    }
    ok = true;
out:
    if (!ok && *out) {
        json_object_put(*out);
        *out = NULL;
    }
    json_tokener_free(tok);
    return ok;
}

bool event_from_client(struct json_object *obj, const struct event_context *ctx, struct event *ev,
                       struct event_error *err)
{
    return decode_event(obj, DECODE_CLIENT, ctx, ev, err);
}

bool event_parse_client(const char *body, size_t len, const struct event_context *ctx,
                        struct event *ev, struct event_error *err)
{
    struct json_object *obj = NULL;
    if (!parse_object(body, len, &obj, err))
        return false;
    bool ok = decode_event(obj, DECODE_CLIENT, ctx, ev, err);
    json_object_put(obj);
    return ok;
}

bool event_from_stream(const char *json, size_t len, struct event *ev, struct event_error *err)
{
    struct json_object *obj = NULL;
    if (!parse_object(json, len, &obj, err))
        return false;
    bool ok = decode_event(obj, DECODE_STREAM, NULL, ev, err);
    json_object_put(obj);
    return ok;
}

/* ---- encoding ------------------------------------------------------------ */

static void put_key(struct strbuf *out, const char *key)
{
    strbuf_putc(out, ',');
    strbuf_putc(out, '"');
    strbuf_puts(out, key);
    strbuf_puts(out, "\":");
}

static void put_opt_string(struct strbuf *out, const char *key, const char *value)
{
    if (value[0] == '\0')
        return;
    put_key(out, key);
    strbuf_json_str(out, value);
}

void event_to_stream(const struct event *ev, struct strbuf *out)
{
    char ts[40];
    strbuf_puts(out, "{\"event_id\":\"");
    strbuf_puts(out, ev->event_id);
    strbuf_puts(out, "\",\"session_id\":\"");
    strbuf_puts(out, ev->session_id);
    strbuf_putc(out, '"');
    if (ev->ar_content_id > 0) {
        put_key(out, "ar_content_id");
        strbuf_printf(out, "%" PRId64, ev->ar_content_id);
    }
    put_opt_string(out, "ar_content_unique_id", ev->content_uid);
    if (ev->duration_seconds >= 0) {
        put_key(out, "duration_seconds");
        strbuf_printf(out, "%" PRId32, ev->duration_seconds);
    }
    put_opt_string(out, "tracking_quality", ev->tracking_quality);
    put_key(out, "video_played");
    strbuf_puts(out, ev->video_played ? "true" : "false");
    put_opt_string(out, "device_type", ev->device_type);
    put_opt_string(out, "browser", ev->browser);
    put_opt_string(out, "os", ev->os);
    put_opt_string(out, "country", ev->country);
    put_opt_string(out, "city", ev->city);
    put_opt_string(out, "user_agent", ev->user_agent);
    put_opt_string(out, "ip", ev->ip);
    if (ev->occurred_at_ms != 0) {
        event_format_rfc3339(ev->occurred_at_ms, ts, sizeof(ts));
        put_opt_string(out, "occurred_at", ts);
    }
    event_format_rfc3339(ev->received_at_ms, ts, sizeof(ts));
    put_opt_string(out, "received_at", ts);
    strbuf_putc(out, '}');
}
