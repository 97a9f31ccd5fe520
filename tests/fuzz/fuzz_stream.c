/* libFuzzer target over the aggregator's reading of a stream entry
 * (batch_add): any fields, any values, with user-agent parsing (uap-core) and
 * GeoIP (ARV_FUZZ_GEOIP, a test database) on. Whatever the entry, it becomes
 * an event whose binary raw row has its 16 fields, text ones valid UTF-8
 * without NUL, or a dead letter whose text COPY row is one line of 5 fields.
 * An event is also turned into a dead letter (db_rejected), as PostgreSQL
 * refusing its row would. Input: a flags byte (bit 0: ARV_STORE_FULL_IP),
 * then fields as name \x01 value \x01 name \x01 value ... */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "geoip.h"
#include "strbuf.h"
#include "ua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FIELDS 8

static const char *const streams[] = {"arv:events"};
static struct ua_cache *ua;
static struct geoip *geo;

static void setup(void)
{
    static bool done;
    struct ua_db *db;
    char err[256];
    const char *mmdb = getenv("ARV_FUZZ_GEOIP");

    if (done)
        return;
    done = true;
    /* The rules are a test dependency (uap-core); kept for the process's life. */
    if (ua_db_open(UA_DEFAULT_REGEXES, &db, err, sizeof(err)) < 0 || !(ua = ua_cache_new(db, 64)))
        abort();
    if (mmdb && *mmdb && geoip_open(mmdb, &geo, err, sizeof(err)) < 0)
        abort();
}

/* Text a row holds: valid UTF-8, no NUL (PostgreSQL refuses both). */
static void check_text(const char *s, size_t n)
{
    if (memchr(s, 0, n) || !strbuf_utf8_valid(s, n))
        abort();
}

/* An event's binary raw row: 16 fields; the text ones (user agent, device,
 * browser, os, country, city, tracking quality) checked. */
static void check_event_row(const struct batch *b, const struct batch_entry *e)
{
    const unsigned char *q = (const unsigned char *)b->rows.data + e->row_off;
    const unsigned char *end = q + e->row_len;
    int field = 0;

    for (; q < end; field++) {
        if (end - q < 4)
            abort();
        int32_t len =
            (int32_t)((uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3]);
        q += 4;
        if (len == -1)
            continue; /* NULL */
        if (len < 0)
            abort();
        if (end - q < len)
            abort();
        if ((field >= 2 && field <= 8 && field != 6) || field == 10)
            check_text((const char *)q, (size_t)len);
        q += len;
    }
    if (field != BATCH_RAW_NFIELDS - 3) /* the content, project and company come later */
        abort();
}

/* A dead letter's text COPY row: one line, 5 fields. */
static void check_dead_row(const struct batch *b, const struct batch_entry *e)
{
    const char *r = b->rows.data + e->row_off;
    size_t n = e->row_len, tabs = 0;

    check_text(r, n);
    if (n == 0 || r[n - 1] != '\n')
        abort();
    for (size_t i = 0; i + 1 < n; i++) {
        tabs += r[i] == '\t';
        if (r[i] == '\n' || r[i] == '\r')
            abort();
    }
    if (tabs != 4)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct batch_field f[MAX_FIELDS];
    struct batch b;
    size_t nf = 0;

    if (size < 1)
        return 0;
    setup();
    batch_init(&b, streams);
    b.ua = ua;
    b.geoip = geo;
    b.store_full_ip = data[0] & 1;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p < end && nf < MAX_FIELDS) {
        const char *sep = memchr(p, 1, (size_t)(end - p));
        const char *name_end = sep ? sep : end;
        const char *v = sep ? sep + 1 : end;
        const char *v_end = memchr(v, 1, (size_t)(end - v));
        v_end = v_end ? v_end : end;
        f[nf++] = (struct batch_field){p, (size_t)(name_end - p), v, (size_t)(v_end - v)};
        p = v_end < end ? v_end + 1 : end;
    }
    if (batch_add(&b, 0, "1-1", 3, f, nf) == 0) {
        struct batch_entry *e = &b.entries[0];
        if (e->kind == BATCH_EVENT) {
            check_event_row(&b, e);
            for (size_t k = 0; k < nf; k++) {
                if (f[k].name_len == 1 && f[k].name[0] == 'e' &&
                    batch_set_payload(&b, 0, f[k].value, f[k].value_len) == 0)
                    break;
            }
            batch_reject(&b, 0, BATCH_REASON_REJECTED, "fuzz");
        }
        if (b.entries[0].kind == BATCH_DEAD)
            check_dead_row(&b, &b.entries[0]);
    }
    batch_deinit(&b);
    return 0;
}
