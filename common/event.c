/* The event schema: validation and normalisation of client AR session events,
 * and the compact JSON they travel as in the Redis stream. */
#include "event.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <json-c/json.h>

#include "timeutil.h"
#include "urlcode.h"

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
        if (digits == 0)
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

/* Writes v as exactly `width` decimal digits (v < 10^width). */
static void put_digits(char *out, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
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
    if (y >= 0 && y <= 9999 && outlen >= 25) {
        /* Without printf: this runs twice per event on the ingest path. */
        put_digits(out, (unsigned)y, 4);
        out[4] = '-';
        put_digits(out + 5, m, 2);
        out[7] = '-';
        put_digits(out + 8, d, 2);
        out[10] = 'T';
        put_digits(out + 11, (unsigned)(rem / 3600), 2);
        out[13] = ':';
        put_digits(out + 14, (unsigned)(rem % 3600 / 60), 2);
        out[16] = ':';
        put_digits(out + 17, (unsigned)(rem % 60), 2);
        out[19] = '.';
        put_digits(out + 20, (unsigned)millis, 3);
        out[23] = 'Z';
        out[24] = '\0';
        return;
    }
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
        } else if (c >= '0' && c <= '9') {
            out[i] = c;
            continue;
        } else {
            /* isxdigit + tolower without the locale tables (it runs twice per
             * event): ASCII letters differ from upper case only in bit 5. */
            char l = (char)(c | 0x20);
            if (l < 'a' || l > 'f')
                return false;
            c = l;
        }
        out[i] = c;
    }
    out[EVENT_UUID_LEN] = '\0';
    return true;
}

/* Random bytes from the OS, drawn in blocks so the hot path rarely syscalls.
 * Without them event ids would repeat, and the aggregator would drop distinct
 * events as retries: a getrandom that fails aborts the process. */
static void random_bytes(unsigned char *out, size_t n)
{
    static _Thread_local unsigned char pool[4096];
    static _Thread_local size_t have, left; /* bytes in pool, of them unused (its end) */
    while (n > 0) {
        if (left == 0) {
            ssize_t r;
            do
                r = getrandom(pool, sizeof(pool), 0);
            while (r < 0 && errno == EINTR);
            if (r <= 0) {
                fprintf(stderr, "getrandom failed: %s\n", r < 0 ? strerror(errno) : "no bytes");
                abort();
            }
            have = left = (size_t)r;
        }
        size_t take = n < left ? n : left;
        memcpy(out, pool + have - left, take);
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

/* Byte classes eight bytes at a time (SWAR): each test sets the high bit of
 * the bytes of a little-endian word that match. A borrow can only mark bytes
 * after a true match, so the first marked byte is always exact. */
#define SWAR_ONES  0x0101010101010101ull
#define SWAR_HIGHS 0x8080808080808080ull

/* What ends a run (control bytes, below 0x20, always do). */
enum stop_class {
    STOP_JSON = 1,     /* '"' and '\\' */
    STOP_NONASCII = 2, /* bytes >= 0x80 */
    STOP_DEL = 4,      /* 0x7f */
};

static uint64_t swar_eq(uint64_t w, unsigned char c)
{
    uint64_t x = w ^ (SWAR_ONES * c);
    return (x - SWAR_ONES) & ~x & SWAR_HIGHS;
}

static inline __attribute__((always_inline)) uint64_t swar_stops(uint64_t w, unsigned stop)
{
    uint64_t m = (w - SWAR_ONES * 0x20) & ~w & SWAR_HIGHS;
    if (stop & STOP_JSON)
        m |= swar_eq(w, '"') | swar_eq(w, '\\');
    if (stop & STOP_NONASCII)
        m |= w & SWAR_HIGHS;
    if (stop & STOP_DEL)
        m |= swar_eq(w, 0x7f);
    return m;
}

static inline __attribute__((always_inline)) bool byte_stops(unsigned char c, unsigned stop)
{
    return c < 0x20 || ((stop & STOP_JSON) && (c == '"' || c == '\\')) ||
           ((stop & STOP_NONASCII) && c >= 0x80) || ((stop & STOP_DEL) && c == 0x7f);
}

/* The end of the run at p of bytes outside the `stop` classes, a word at a
 * time on little-endian machines. Always inlined, so that each caller's
 * constant classes leave only the tests it needs. */
static inline __attribute__((always_inline)) const char *stop_scan(const char *p, const char *end,
                                                                   unsigned stop)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w, m;
        memcpy(&w, p, sizeof(w));
        if ((m = swar_stops(w, stop)))
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && !byte_stops((unsigned char)*p, stop))
        p++;
    return p;
}

/* True if s[0..len) holds a control character (below 0x20, or DEL). */
static bool has_control(const char *s, size_t len)
{
    return stop_scan(s, s + len, STOP_DEL) != s + len;
}

bool event_text_ok(const char *s, size_t n)
{
    return !has_control(s, n) && strbuf_utf8_valid(s, n);
}

/* ---- field values ---------------------------------------------------------- */

/* The fields the schema knows. Both decoders (json-c for anything, the scanner
 * below for plain objects) reduce an object to these values, and one validator
 * works on them, so both give the same answer. */
enum field_key {
    F_AR_CONTENT_ID,
    F_AR_CONTENT_UNIQUE_ID,
    F_PORTRAIT_ID,
    F_SESSION_ID,
    F_EVENT_ID,
    F_DURATION_SECONDS,
    F_VIDEO_PLAYED,
    F_TRACKING_QUALITY,
    F_DEVICE_TYPE,
    F_BROWSER,
    F_OS,
    F_CITY,
    F_USER_AGENT,
    F_COUNTRY,
    F_OCCURRED_AT,
    F_IP,
    F_RECEIVED_AT,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "ar_content_id",
    "ar_content_unique_id",
    "portrait_id",
    "session_id",
    "event_id",
    "duration_seconds",
    "video_played",
    "tracking_quality",
    "device_type",
    "browser",
    "os",
    "city",
    "user_agent",
    "country",
    "occurred_at",
    "ip",
    "received_at",
};

/* A field's JSON value; JSON null counts as absent. */
struct fval {
    enum { FV_ABSENT, FV_STRING, FV_INT, FV_DOUBLE, FV_BOOL, FV_OTHER } type;
    const char *s; /* FV_STRING: NUL-terminated (len bytes, which may hold NULs) */
    size_t len;    /* FV_STRING */
    int64_t i;     /* FV_INT: as json_object_get_int64() returns it */
    bool i_err;    /* FV_INT: json_object_get_int64() set errno (out of range) */
    double d;      /* FV_DOUBLE */
    bool b;        /* FV_BOOL */
};

struct fields {
    struct fval v[F_COUNT]; /* by enum field_key */
    size_t nkeys;           /* distinct keys in the object */
};

/* Copies an optional string field. Absent leaves `out` empty. Longer than
 * `cap - 1` bytes is an error unless `truncate`. */
static bool take_string(const struct fval *v, const char *field, char *out, size_t cap,
                        bool truncate, struct event_error *err)
{
    out[0] = '\0';
    if (v->type == FV_ABSENT)
        return true;
    if (v->type != FV_STRING)
        return fail(err, "invalid_field", field, "%s must be a string", field);
    const char *s = v->s;
    size_t len = v->len;
    /* Printable ASCII (the usual case) has no NUL, no control and is UTF-8:
     * only what follows the first other byte needs checking. */
    const char *rest = stop_scan(s, s + len, STOP_NONASCII | STOP_DEL);
    size_t nrest = (size_t)(s + len - rest);
    if (nrest > 0) {
        if (has_control(rest, nrest))
            return fail(err, "invalid_field", field, "%s must not contain control characters",
                        field);
        /* Checked here, not only escaped later: the stream and PostgreSQL must
         * hold exactly what was validated. */
        if (!strbuf_utf8_valid(rest, nrest))
            return fail(err, "invalid_field", field, "%s must be valid UTF-8", field);
    }
    if (len >= cap) {
        if (!truncate)
            return fail(err, "invalid_field", field, "%s is longer than %zu bytes", field, cap - 1);
        len = strbuf_utf8_prefix(s, len, cap - 1);
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool take_uuid(const struct fval *v, const char *field, char *out, bool required,
                      struct event_error *err)
{
    out[0] = '\0';
    if (v->type == FV_ABSENT) {
        if (required)
            return fail(err, "invalid_field", field, "%s is required", field);
        return true;
    }
    if (v->type != FV_STRING || !uuid_canonical(v->s, v->len, out))
        return fail(err, "invalid_field", field, "%s must be a UUID (8-4-4-4-12 hex digits)",
                    field);
    return true;
}

static bool take_token(const struct fval *v, const char *field, char *out, size_t cap,
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

/* ---- validation ------------------------------------------------------------ */

/* A string read as a C string (a number, a time): a \u0000 in it would end it
 * early, and what follows would pass unseen. */
static bool fv_text(const struct fval *v)
{
    return v->type == FV_STRING && strlen(v->s) == v->len;
}

enum decode_mode { DECODE_CLIENT, DECODE_STREAM };

static bool decode_fields(const struct fields *f, enum decode_mode mode,
                          const struct event_context *ctx, struct event *ev,
                          struct event_error *err)
{
    const struct fval *v;
    memset(ev, 0, sizeof(*ev));
    ev->duration_seconds = -1;

    if (f->nkeys > EVENT_MAX_FIELDS)
        return fail(err, "invalid_json", NULL, "the object has more than %d fields",
                    EVENT_MAX_FIELDS);

    /* Content: an integer id, or a string unique id under either name. */
    v = &f->v[F_AR_CONTENT_ID];
    if (v->type != FV_ABSENT) {
        int64_t id = 0;
        if (v->type == FV_INT) {
            id = v->i_err ? 0 : v->i;
        } else if (fv_text(v) && v->s[0] >= '0' && v->s[0] <= '9') {
            /* digits only: strtoll alone would take " +42" */
            char *end = NULL;
            errno = 0;
            long long ll = strtoll(v->s, &end, 10);
            if (errno == 0 && *end == '\0')
                id = ll;
        }
        if (id <= 0)
            return fail(err, "invalid_field", "ar_content_id",
                        "ar_content_id must be a positive integer");
        ev->ar_content_id = id;
    }
    enum field_key uid =
        f->v[F_AR_CONTENT_UNIQUE_ID].type != FV_ABSENT ? F_AR_CONTENT_UNIQUE_ID : F_PORTRAIT_ID;
    if (!take_string(&f->v[uid], field_names[uid], ev->content_uid, sizeof(ev->content_uid), false,
                     err))
        return false;
    if (ev->ar_content_id == 0 && ev->content_uid[0] == '\0')
        return fail(err, "invalid_field", "ar_content_id",
                    "ar_content_id or ar_content_unique_id is required");

    if (!take_uuid(&f->v[F_SESSION_ID], "session_id", ev->session_id, true, err) ||
        !take_uuid(&f->v[F_EVENT_ID], "event_id", ev->event_id, mode == DECODE_STREAM, err))
        return false;
    /* A placeholder (RFC 9562's Nil and Max UUIDs: a client's, or in someone
     * else's XADD) would make every later event of the company a repeat of
     * the first, silently dropped. */
    if (strcmp(ev->event_id, "00000000-0000-0000-0000-000000000000") == 0 ||
        strcmp(ev->event_id, "ffffffff-ffff-ffff-ffff-ffffffffffff") == 0)
        return fail(err, "invalid_field", "event_id",
                    "event_id must identify the event: not the nil or max UUID (leave it out and "
                    "the collector makes one)");

    v = &f->v[F_DURATION_SECONDS];
    if (v->type != FV_ABSENT) {
        double d;
        if (v->type == FV_INT)
            d = (double)v->i;
        else if (v->type == FV_DOUBLE)
            d = v->d;
        else
            return fail(err, "invalid_field", "duration_seconds",
                        "duration_seconds must be a number");
        if (!(d >= 0 && d <= MAX_DURATION_S))
            return fail(err, "invalid_field", "duration_seconds",
                        "duration_seconds must be between 0 and %d", MAX_DURATION_S);
        ev->duration_seconds = (int32_t)d;
    }

    v = &f->v[F_VIDEO_PLAYED];
    if (v->type != FV_ABSENT) {
        if (v->type == FV_BOOL)
            ev->video_played = v->b;
        else if (v->type == FV_INT && (v->i == 0 || v->i == 1))
            ev->video_played = v->i == 1;
        else
            return fail(err, "invalid_field", "video_played", "video_played must be a boolean");
    }

    if (!take_token(&f->v[F_TRACKING_QUALITY], "tracking_quality", ev->tracking_quality,
                    sizeof(ev->tracking_quality), err) ||
        !take_string(&f->v[F_DEVICE_TYPE], "device_type", ev->device_type, sizeof(ev->device_type),
                     false, err) ||
        !take_string(&f->v[F_BROWSER], "browser", ev->browser, sizeof(ev->browser), false, err) ||
        !take_string(&f->v[F_OS], "os", ev->os, sizeof(ev->os), false, err) ||
        !take_string(&f->v[F_CITY], "city", ev->city, sizeof(ev->city), false, err) ||
        !take_string(&f->v[F_USER_AGENT], "user_agent", ev->user_agent, sizeof(ev->user_agent),
                     true, err))
        return false;
    /* The user-agent parser's device types are lower case (mobile, tablet,
     * desktop, ...): a client's "Mobile" is the same value. */
    for (char *p = ev->device_type; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');

    v = &f->v[F_COUNTRY];
    if (v->type != FV_ABSENT) {
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

    v = &f->v[F_OCCURRED_AT];
    if (v->type != FV_ABSENT) {
        if (!fv_text(v) || !event_parse_rfc3339(v->s, &ev->occurred_at_ms))
            return fail(err, "invalid_field", "occurred_at",
                        "occurred_at must be an RFC 3339 time such as 2026-11-25T10:00:00Z");
        ev->has_occurred_at = true;
    }

    if (mode == DECODE_CLIENT) {
        int64_t skew = ctx->max_skew_ms > 0 ? ctx->max_skew_ms : DEFAULT_MAX_SKEW_MS;
        ev->received_at_ms = ctx->now_ms;
        if (ev->has_occurred_at &&
            (ev->occurred_at_ms < ctx->now_ms - skew || ev->occurred_at_ms > ctx->now_ms + skew))
            return fail(err, "invalid_field", "occurred_at",
                        "occurred_at is more than %" PRId64 " s away from the server's clock",
                        skew / 1000);
        if (ev->user_agent[0] == '\0' && ctx->user_agent_header) {
            size_t len = strlen(ctx->user_agent_header);
            /* A header that is not clean UTF-8 text is dropped, not mangled. */
            if (!has_control(ctx->user_agent_header, len) &&
                strbuf_utf8_valid(ctx->user_agent_header, len)) {
                len = strbuf_utf8_prefix(ctx->user_agent_header, len, sizeof(ev->user_agent) - 1);
                memcpy(ev->user_agent, ctx->user_agent_header, len);
                ev->user_agent[len] = '\0';
            }
        }
        if (ctx->client_ip) {
            size_t n = strnlen(ctx->client_ip, sizeof(ev->ip) - 1);
            memcpy(ev->ip, ctx->client_ip, n);
            ev->ip[n] = '\0';
        }
        if (ev->event_id[0] == '\0')
            event_uuid_v7(ev->event_id, ctx->now_ms);
    } else {
        if (!take_string(&f->v[F_IP], "ip", ev->ip, sizeof(ev->ip), false, err))
            return false;
        v = &f->v[F_RECEIVED_AT];
        if (!fv_text(v) || !event_parse_rfc3339(v->s, &ev->received_at_ms))
            return fail(err, "invalid_field", "received_at", "received_at is missing or invalid");
    }
    return true;
}

/* ---- json-c decoding (any JSON json-c accepts) ------------------------------ */

static void fval_from_json(struct json_object *obj, const char *key, struct fval *out)
{
    struct json_object *v = NULL;
    memset(out, 0, sizeof(*out));
    if (!json_object_object_get_ex(obj, key, &v))
        return;
    switch (json_object_get_type(v)) {
    case json_type_null:
        break;
    case json_type_string:
        out->type = FV_STRING;
        out->s = json_object_get_string(v);
        out->len = (size_t)json_object_get_string_len(v);
        break;
    case json_type_int:
        out->type = FV_INT;
        errno = 0;
        out->i = json_object_get_int64(v);
        /* json-c keeps integers above INT64_MAX as unsigned, and get_int64
         * then returns INT64_MAX without an error */
        out->i_err = errno != 0 || json_object_get_uint64(v) > (uint64_t)INT64_MAX;
        break;
    case json_type_double:
        out->type = FV_DOUBLE;
        out->d = json_object_get_double(v);
        break;
    case json_type_boolean:
        out->type = FV_BOOL;
        out->b = json_object_get_boolean(v);
        break;
    default:
        out->type = FV_OTHER;
        break;
    }
}

static bool decode_event(struct json_object *obj, enum decode_mode mode,
                         const struct event_context *ctx, struct event *ev, struct event_error *err)
{
    struct fields f;
    if (!obj || !json_object_is_type(obj, json_type_object)) {
        memset(ev, 0, sizeof(*ev));
        ev->duration_seconds = -1;
        return fail(err, "invalid_json", NULL, "the body must be a JSON object");
    }
    f.nkeys = (size_t)json_object_object_length(obj);
    for (int k = 0; k < F_COUNT; k++)
        fval_from_json(obj, field_names[k], &f.v[k]);
    return decode_fields(&f, mode, ctx, ev, err);
}

/* True if json[i] is a 0 that begins a number's integer part (not a digit
 * after others, a fraction or an exponent) and another digit follows it. */
static bool leading_zero(const char *json, size_t len, size_t i)
{
    char prev = i > 0 ? json[i - 1] : ' ';

    if (json[i] != '0' || i + 1 >= len || !isdigit((unsigned char)json[i + 1]))
        return false;
    if (isdigit((unsigned char)prev) || prev == '.' || prev == 'e' || prev == 'E')
        return false;
    if ((prev == '+' || prev == '-') && i > 1 && (json[i - 2] == 'e' || json[i - 2] == 'E'))
        return false; /* an exponent's digits may start with 0 */
    return true;
}

static bool json_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* One pass over `json` before json-c reads it, refusing what json-c would take
 * though JSON never has it, and bounding what json-c would build.
 * - Not JSON, though json-c takes it even in its strict mode: outside strings
 *   a single quote ('strings'), a slash (comments), a letter other than those
 *   of true, false, null and an exponent (NaN, Infinity), a number with a
 *   leading zero (00, -01, 037.5) or a point without a digit after it (1.,
 *   1.e5); inside them a raw control character.
 * - Bounded: json-c's tree costs about 70 bytes per value and 750 per object,
 *   so that 1 MiB of "[{},{},...]" in a field nobody reads would take hundreds
 *   of MB and seconds of the event loop. Per event (the body, or each element
 *   of a body that is an array) the values ('{', '[' and ',' in it) and the
 *   objects and arrays are counted, and the nesting (json-c's own depth limit
 *   lets empty containers one level deeper); an array body's elements are
 *   counted as they come.
 * Other syntax is json-c's to check. False with `err` set ("batch_too_large"
 * for more than `max_elements`). */
static bool json_prescan(const char *json, size_t len, int levels, size_t max_elements,
                         struct event_error *err)
{
    size_t i = 0;
    while (i < len && json_ws(json[i]))
        i++;
    int event_depth = i < len && json[i] == '[' ? 2 : 1; /* an event's own object */
    int depth = 0;
    size_t elements = 1, values = 0, containers = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)json[i];
        switch (c) {
        case '"':
            for (i++; i < len && json[i] != '"'; i++) {
                if ((unsigned char)json[i] < 0x20)
                    goto nonstandard;
                i += json[i] == '\\';
            }
            continue;
        case '{':
        case '[':
            if (++depth > levels)
                return fail(err, "invalid_json", NULL,
                            "the body is not valid JSON: nesting too deep");
            if (depth < event_depth)
                continue;
            values++;
            if (++containers > EVENT_MAX_CONTAINERS)
                return fail(err, "invalid_json", NULL,
                            "an event holds more than %d objects and arrays (itself and its"
                            " fields' values)",
                            EVENT_MAX_CONTAINERS);
            break;
        case '}':
        case ']':
            depth--;
            continue;
        case ',':
            if (depth < event_depth) {
                if (++elements > max_elements)
                    return fail(err, "batch_too_large", NULL, "more than %zu elements",
                                max_elements);
                values = containers = 0;
                continue;
            }
            values++;
            break;
        default:
            if (c == '\'' || c == '/' || (isalpha(c) && !strchr("truefalsnE", c)) ||
                leading_zero(json, len, i) ||
                (c == '.' && (i + 1 >= len || !isdigit((unsigned char)json[i + 1]))))
                goto nonstandard;
            continue;
        }
        if (values > EVENT_MAX_VALUES)
            return fail(err, "invalid_json", NULL,
                        "an event holds more than %d JSON values (its fields and what they hold)",
                        EVENT_MAX_VALUES);
    }
    return true;
nonstandard:
    return fail(err, "invalid_json", NULL,
                "the body is not valid JSON: a single quote, comment, NaN, Infinity, a number"
                " with a leading zero or a point without digits, or a control character in a"
                " string");
}

struct json_object *event_json_read(const char *json, size_t len, int levels, size_t max_elements,
                                    struct event_error *err)
{
    struct json_object *obj = NULL;
    if (!json_prescan(json, len, levels, max_elements, err))
        return NULL;
    /* json-c's depth counts one more than the levels it allows */
    struct json_tokener *tok = json_tokener_new_ex(levels + 1);
    if (!tok) {
        fail(err, "internal", NULL, "out of memory");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT); /* no comments, trailing commas, ... */
    if (len > INT32_MAX) {
        fail(err, "invalid_json", NULL, "the body is too large");
        goto out;
    }
    obj = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (jerr != json_tokener_success) {
        fail(err, "invalid_json", NULL, "the body is not valid JSON: %s",
             jerr == json_tokener_continue ? "unexpected end of input"
                                           : json_tokener_error_desc(jerr));
        goto fail;
    }
    /* Anything but whitespace after the value is an error. */
    for (size_t i = tok->char_offset; i < len; i++) {
        if (!isspace((unsigned char)json[i])) {
            fail(err, "invalid_json", NULL, "the body has data after the JSON value");
            goto fail;
        }
    }
    /* JSON null is valid JSON, and json-c's NULL: say so, as for any failure. */
    if (!obj)
        fail(err, "invalid_json", NULL, "the body is null, not an event or a batch");
    goto out;
fail:
    json_object_put(obj);
    obj = NULL;
out:
    json_tokener_free(tok);
    return obj;
}

/* ---- the scanner: plain objects without allocations ------------------------ */

/* Decoded strings of the known fields, NUL-terminated. */
#define SCAN_ARENA 4096
/* Longest number text the scanner converts itself. */
#define SCAN_NUMBER_MAX 32

struct scan {
    const char *p, *end;    /* input */
    struct fields f;        /* what was found */
    size_t used;            /* arena bytes used */
    char arena[SCAN_ARENA]; /* decoded strings */
};

/* The end of the run at p of string bytes that need no attention (not '"',
 * '\\' or a control byte). */
static const char *plain_run(const char *p, const char *end)
{
    return stop_scan(p, end, STOP_JSON);
}

static void scan_ws(struct scan *sc)
{
    while (sc->p < sc->end && json_ws(*sc->p))
        sc->p++;
}

/* Scans a string whose opening quote is at sc->p. With `out`, decodes it into
 * the arena and sets out->s/len. False for anything the scanner leaves to
 * json-c: raw control bytes, unusual escapes (\u0000, surrogates), a full arena. */
static bool scan_string(struct scan *sc, struct fval *out)
{
    const char *p = sc->p + 1;
    char *dst = out ? sc->arena + sc->used : NULL;
    size_t room = out ? SCAN_ARENA - sc->used : 0, n = 0;

    for (;;) {
        const char *run = p;
        p = plain_run(p, sc->end);
        if (out) {
            size_t k = (size_t)(p - run);
            if (k >= room - n)
                return false;
            memcpy(dst + n, run, k);
            n += k;
        }
        if (p >= sc->end || (unsigned char)*p < 0x20)
            return false;
        if (*p == '"')
            break;
        /* A backslash. */
        if (p + 1 >= sc->end)
            return false;
        char e = p[1], c;
        unsigned cp = 0;
        p += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            c = e;
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u':
            if (sc->end - p < 4)
                return false;
            for (int i = 0; i < 4; i++) {
                int h = urlcode_hex_value(p[i]);
                if (h < 0)
                    return false;
                cp = cp << 4 | (unsigned)h;
            }
            p += 4;
            if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
                return false;
            break;
        default:
            return false;
        }
        if (!out)
            continue;
        char u[3];
        size_t k = 1;
        if (e != 'u') {
            u[0] = c;
        } else if (cp < 0x80) {
            u[0] = (char)cp;
        } else if (cp < 0x800) {
            u[0] = (char)(0xc0 | cp >> 6);
            u[1] = (char)(0x80 | (cp & 0x3f));
            k = 2;
        } else {
            u[0] = (char)(0xe0 | cp >> 12);
            u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
            u[2] = (char)(0x80 | (cp & 0x3f));
            k = 3;
        }
        if (k >= room - n)
            return false;
        memcpy(dst + n, u, k);
        n += k;
    }
    sc->p = p + 1;
    if (out) {
        dst[n] = '\0';
        out->type = FV_STRING;
        out->s = dst;
        out->len = n;
        sc->used += n + 1;
    }
    return true;
}

/* Scans a number. With `out` (a known field): only what converts exactly like
 * json-c (plain non-negative integers of up to 18 digits, or decimals through
 * strtod) is taken; the rest goes to json-c. */
static bool scan_number(struct scan *sc, struct fval *out)
{
    const char *s = sc->p, *p = s;
    bool neg = false, frac = false;
    if (p < sc->end && *p == '-') {
        neg = true;
        p++;
    }
    const char *digits = p;
    while (p < sc->end && *p >= '0' && *p <= '9')
        p++;
    size_t nd = (size_t)(p - digits);
    if (nd == 0 || (nd > 1 && *digits == '0') || nd > 18)
        return false;
    if (p < sc->end && *p == '.') {
        const char *f = ++p;
        while (p < sc->end && *p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return false;
        frac = true;
    }
    if (p < sc->end && (*p == 'e' || *p == 'E'))
        return false;
    sc->p = p;
    if (!out)
        return true;
    if (neg)
        return false; /* never valid for a known field; json-c words the error */
    if (!frac) {
        int64_t v = 0;
        for (const char *q = digits; q < p; q++)
            v = v * 10 + (*q - '0');
        out->type = FV_INT;
        out->i = v;
        return true;
    }
    char buf[SCAN_NUMBER_MAX + 1];
    size_t n = (size_t)(p - s);
    if (n > SCAN_NUMBER_MAX)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    out->type = FV_DOUBLE;
    out->d = strtod(buf, NULL);
    return true;
}

static bool scan_word(struct scan *sc, const char *word, size_t n)
{
    if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0)
        return false;
    sc->p += n;
    return true;
}

/* The known field named by key[0..n), or F_COUNT. */
static enum field_key scan_key(const char *key, size_t n)
{
    /* strncmp stops at the name's end, so name[n] is read only when the name
     * has at least n characters (keys hold no NUL: the scanner stops at
     * control bytes). */
    for (int k = 0; k < F_COUNT; k++) {
        if (field_names[k][0] == key[0] && strncmp(field_names[k], key, n) == 0 &&
            field_names[k][n] == '\0')
            return (enum field_key)k;
    }
    return F_COUNT;
}

/* Scans one object at sc->p (blanks before it allowed) into sc->f. False when
 * the input is anything but a plain object this scanner is sure to read exactly
 * as json-c does: nested values, duplicate known keys, unusual numbers or
 * escapes, more than EVENT_MAX_FIELDS keys, any syntax error. */
static bool scan_object(struct scan *sc)
{
    uint32_t seen = 0; /* known keys met, by enum field_key */
    memset(&sc->f, 0, sizeof(sc->f));
    sc->used = 0;
    scan_ws(sc);
    if (sc->p >= sc->end || *sc->p != '{')
        return false;
    sc->p++;
    scan_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        return true;
    }
    for (;;) {
        if (sc->p >= sc->end || *sc->p != '"')
            return false;
        const char *key = sc->p + 1, *q = plain_run(key, sc->end);
        if (q >= sc->end || *q != '"')
            return false;
        enum field_key k = scan_key(key, (size_t)(q - key));
        if (++sc->f.nkeys > EVENT_MAX_FIELDS)
            return false;
        sc->p = q + 1;
        scan_ws(sc);
        if (sc->p >= sc->end || *sc->p != ':')
            return false;
        sc->p++;
        scan_ws(sc);
        if (sc->p >= sc->end)
            return false;
        struct fval *v = NULL;
        if (k != F_COUNT) {
            if (seen & (1u << k))
                return false; /* a repeated key: json-c keeps the last one */
            seen |= 1u << k;
            v = &sc->f.v[k];
        }
        bool ok;
        switch (*sc->p) {
        case '"':
            ok = scan_string(sc, v);
            break;
        case 't':
            ok = scan_word(sc, "true", 4);
            if (ok && v) {
                v->type = FV_BOOL;
                v->b = true;
            }
            break;
        case 'f':
            ok = scan_word(sc, "false", 5);
            if (ok && v)
                v->type = FV_BOOL;
            break;
        case 'n':
            ok = scan_word(sc, "null", 4); /* absent */
            break;
        default:
            ok = scan_number(sc, v);
            break;
        }
        if (!ok)
            return false;
        scan_ws(sc);
        if (sc->p >= sc->end)
            return false;
        if (*sc->p == '}') {
            sc->p++;
            return true;
        }
        if (*sc->p != ',')
            return false;
        sc->p++;
        scan_ws(sc);
    }
}

/* ---- public decoding ----------------------------------------------------- */

enum event_scan event_scan_client(const char *json, size_t len, const struct event_context *ctx,
                                  struct event *ev, struct event_error *err, size_t *used)
{
    struct scan sc;
    sc.p = json;
    sc.end = json + len;
    if (!scan_object(&sc))
        return EVENT_SCAN_UNSUPPORTED;
    *used = (size_t)(sc.p - json);
    return decode_fields(&sc.f, DECODE_CLIENT, ctx, ev, err) ? EVENT_SCAN_OK : EVENT_SCAN_INVALID;
}

/* The scanner for a whole body: one object and blanks. -1: leave it to json-c. */
static int scan_body(const char *json, size_t len, enum decode_mode mode,
                     const struct event_context *ctx, struct event *ev, struct event_error *err)
{
    struct scan sc;
    sc.p = json;
    sc.end = json + len;
    if (!scan_object(&sc))
        return -1;
    scan_ws(&sc);
    if (sc.p != sc.end)
        return -1;
    return decode_fields(&sc.f, mode, ctx, ev, err) ? 1 : 0;
}

bool event_from_client(struct json_object *obj, const struct event_context *ctx, struct event *ev,
                       struct event_error *err)
{
    return decode_event(obj, DECODE_CLIENT, ctx, ev, err);
}

/* One object: the scanner, or json-c for what the scanner leaves. */
static bool parse_decode(const char *json, size_t len, enum decode_mode mode,
                         const struct event_context *ctx, struct event *ev, struct event_error *err)
{
    int rc = scan_body(json, len, mode, ctx, ev, err);
    if (rc >= 0)
        return rc == 1;
    struct json_object *obj = event_json_read(json, len, EVENT_MAX_DEPTH, SIZE_MAX, err);
    if (!obj)
        return false;
    bool ok = decode_event(obj, mode, ctx, ev, err);
    json_object_put(obj);
    return ok;
}

bool event_parse_client(const char *body, size_t len, const struct event_context *ctx,
                        struct event *ev, struct event_error *err)
{
    return parse_decode(body, len, DECODE_CLIENT, ctx, ev, err);
}

bool event_from_stream(const char *json, size_t len, struct event *ev, struct event_error *err)
{
    return parse_decode(json, len, DECODE_STREAM, NULL, ev, err);
}

/* ---- encoding ------------------------------------------------------------ */

/* event_to_stream() writes through a cursor into room reserved once: it runs
 * for every event on the ingest path. */

/* Longest encoding of a string of n bytes: every byte as \u00XX, and quotes. */
#define JSON_STR_MAX(n) (6 * (n) + 2)

static char *put_lit(char *w, const char *lit, size_t n)
{
    memcpy(w, lit, n);
    return w + n;
}

#define PUT_LIT(w, lit) put_lit((w), (lit), sizeof(lit) - 1)

static char *put_int(char *w, int64_t v)
{
    char buf[24];
    char *p = buf + sizeof(buf);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put_lit(w, p, (size_t)(buf + sizeof(buf) - p));
}

_Static_assert(sizeof(((struct event *)0)->content_uid) <= EVENT_CONTENT_KEY_MAX,
               "a content_uid fits EVENT_CONTENT_KEY_MAX");

size_t event_content_key(const struct event *ev, char *out, size_t outlen)
{
    char digits[24];
    const char *key = ev->content_uid;
    size_t n;

    if (ev->ar_content_id != 0) {
        *put_int(digits, ev->ar_content_id) = '\0';
        key = digits;
    }
    n = strlen(key);
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, key, n);
    out[n] = '\0';
    return n;
}

/* A JSON string, exactly as strbuf_json_string() writes it (which handles
 * anything but plain printable ASCII). */
static char *put_str(struct strbuf *out, char *w, const char *s)
{
    size_t n = strlen(s);
    /* ASCII but controls, '"' and '\\' needs no escaping (0x7f is copied as is). */
    if (stop_scan(s, s + n, STOP_JSON | STOP_NONASCII) == s + n) {
        *w++ = '"';
        w = put_lit(w, s, n);
        *w++ = '"';
        return w;
    }
    out->len = (size_t)(w - out->data);
    strbuf_json_string(out, s, n);
    return out->data + out->len;
}

/* ,"key":"value" unless value is empty. */
static char *put_opt_str(struct strbuf *out, char *w, const char *key, size_t keylen,
                         const char *value)
{
    if (value[0] == '\0')
        return w;
    *w++ = ',';
    *w++ = '"';
    w = put_lit(w, key, keylen);
    *w++ = '"';
    *w++ = ':';
    return put_str(out, w, value);
}

#define PUT_OPT(out, w, key, value) put_opt_str((out), (w), (key), sizeof(key) - 1, (value))

void event_to_stream(const struct event *ev, struct strbuf *out)
{
    char ts[40];
    /* Keys, punctuation, numbers and timestamps, then every string at its
     * longest encoding: each fits its array in *ev, so a constant bound holds
     * without measuring them (the buffer is reused, so this costs nothing). */
    if (strbuf_reserve(out, 512 + JSON_STR_MAX(sizeof(*ev))) < 0)
        return;
    char *w = out->data + out->len;
    w = PUT_LIT(w, "{\"event_id\":\"");
    w = put_lit(w, ev->event_id, strlen(ev->event_id));
    w = PUT_LIT(w, "\",\"session_id\":\"");
    w = put_lit(w, ev->session_id, strlen(ev->session_id));
    *w++ = '"';
    if (ev->ar_content_id > 0) {
        w = PUT_LIT(w, ",\"ar_content_id\":");
        w = put_int(w, ev->ar_content_id);
    }
    w = PUT_OPT(out, w, "ar_content_unique_id", ev->content_uid);
    if (ev->duration_seconds >= 0) {
        w = PUT_LIT(w, ",\"duration_seconds\":");
        w = put_int(w, ev->duration_seconds);
    }
    w = PUT_OPT(out, w, "tracking_quality", ev->tracking_quality);
    w = PUT_LIT(w, ",\"video_played\":");
    w = ev->video_played ? PUT_LIT(w, "true") : PUT_LIT(w, "false");
    w = PUT_OPT(out, w, "device_type", ev->device_type);
    w = PUT_OPT(out, w, "browser", ev->browser);
    w = PUT_OPT(out, w, "os", ev->os);
    w = PUT_OPT(out, w, "country", ev->country);
    w = PUT_OPT(out, w, "city", ev->city);
    w = PUT_OPT(out, w, "user_agent", ev->user_agent);
    w = PUT_OPT(out, w, "ip", ev->ip);
    if (ev->has_occurred_at) {
        event_format_rfc3339(ev->occurred_at_ms, ts, sizeof(ts));
        w = PUT_OPT(out, w, "occurred_at", ts);
    }
    event_format_rfc3339(ev->received_at_ms, ts, sizeof(ts));
    w = PUT_OPT(out, w, "received_at", ts);
    *w++ = '}';
    out->len = (size_t)(w - out->data);
    out->data[out->len] = '\0';
}
