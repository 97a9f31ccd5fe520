/* Stream entries -> staging rows (COPY text) for one aggregator batch. Pure. */
#include "batch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "event.h"
#include "content_cache.h"
#include "geoip.h"
#include "ip_anon.h"
#include "ua.h"

const char batch_staging_ddl[] = "CREATE TEMP TABLE IF NOT EXISTS arv_staging ("
                                 " stream text NOT NULL,"
                                 " entry_id text NOT NULL,"
                                 " reason text,"
                                 " detail text,"
                                 " payload text NOT NULL,"
                                 " event_id uuid,"
                                 " ar_content_id bigint,"
                                 " content_uid text,"
                                 " session_id uuid,"
                                 " user_agent text,"
                                 " device_type text,"
                                 " browser text,"
                                 " os text,"
                                 " ip_address inet,"
                                 " country text,"
                                 " city text,"
                                 " duration_seconds integer,"
                                 " tracking_quality text,"
                                 " video_played boolean,"
                                 " occurred_at timestamptz,"
                                 " received_at timestamptz,"
                                 " is_bot boolean"
                                 ") ON COMMIT DELETE ROWS";

const char batch_staging_copy[] = "COPY pg_temp.arv_staging FROM STDIN";

void batch_init(struct batch *b, const char *const *streams)
{
    memset(b, 0, sizeof(*b));
    b->streams = streams;
    strbuf_init(&b->rows);
    strbuf_init(&b->scratch);
}

void batch_deinit(struct batch *b)
{
    free(b->entries);
    strbuf_deinit(&b->rows);
    strbuf_deinit(&b->scratch);
    memset(b, 0, sizeof(*b));
}

void batch_reset(struct batch *b)
{
    b->count = 0;
    b->invalid = 0;
    b->dead = 0;
    b->min_received_ms = 0;
    b->max_received_ms = 0;
    b->bots = 0;
    strbuf_reset(&b->rows);
    if (b->contents)
        content_cache_begin(b->contents);
}

/* Appends a new entry with its id; NULL if the id is too long or out of memory. */
static struct batch_entry *batch_push(struct batch *b, unsigned stream, const char *id,
                                      size_t id_len, int *err)
{
    struct batch_entry *e;

    if (id_len == 0 || id_len >= BATCH_ENTRY_ID_MAX) {
        *err = -EINVAL;
        return NULL;
    }
    if (b->count == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        struct batch_entry *p = realloc(b->entries, cap * sizeof(*p));
        if (!p) {
            *err = -ENOMEM;
            return NULL;
        }
        b->entries = p;
        b->cap = cap;
    }
    e = &b->entries[b->count++];
    memset(e, 0, sizeof(*e));
    memcpy(e->id, id, id_len);
    e->id[id_len] = '\0';
    e->stream = stream;
    e->row_off = b->rows.len;
    return e;
}

static const struct batch_field *find_field(const struct batch_field *fields, size_t nfields,
                                            const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].name_len == len && memcmp(fields[i].name, name, len) == 0)
            return &fields[i];
    }
    return NULL;
}

void batch_fields_json(const struct batch_field *fields, size_t nfields, struct strbuf *out)
{
    strbuf_putc(out, '{');
    for (size_t i = 0; i < nfields; i++) {
        if (i > 0)
            strbuf_putc(out, ',');
        strbuf_json_string(out, fields[i].name, fields[i].name_len);
        strbuf_putc(out, ':');
        strbuf_json_string(out, fields[i].value, fields[i].value_len);
    }
    strbuf_putc(out, '}');
}

/* Writes the payload, the fifth field of every staging row. For entry `e`
 * (raw payload) it notes where the escaped field is in the row's buffer; with
 * `e` NULL the payload is such a field already (a dead letter rebuilt later). */
static void put_payload(struct copy_row *row, const char *payload, size_t len,
                        struct batch_entry *e)
{
    size_t start = row->out->len + 1; /* after the tab */

    if (!e) {
        copy_row_escaped(row, payload, len);
        return;
    }
    copy_row_text(row, payload, len);
    e->payload_off = start;
    e->payload_len = row->out->len - start;
}

/* Appends a dead-letter row: the leading columns, then NULL for the event's. */
static void put_dead_row(struct strbuf *out, const char *stream, const char *id, const char *reason,
                         const char *detail, const char *payload, size_t payload_len,
                         struct batch_entry *e)
{
    struct copy_row row;

    copy_row_begin(&row, out);
    copy_row_str(&row, stream);
    copy_row_str(&row, id);
    copy_row_str(&row, reason);
    copy_row_opt_str(&row, detail);
    put_payload(&row, payload, payload_len, e);
    for (int i = 0; i < 17; i++) /* event_id .. is_bot */
        copy_row_null(&row);
    copy_row_end(&row);
}

static void put_event_row(struct strbuf *out, const char *stream, struct batch_entry *e,
                          const char *payload, size_t payload_len, const struct event *ev,
                          bool full_ip, bool is_bot)
{
    struct copy_row row;
    char ip[IP_ANON_MAX];

    copy_row_begin(&row, out);
    copy_row_str(&row, stream);
    copy_row_str(&row, e->id);
    copy_row_null(&row); /* reason */
    copy_row_null(&row); /* detail */
    put_payload(&row, payload, payload_len, e);
    copy_row_str(&row, ev->event_id);
    if (ev->ar_content_id > 0)
        copy_row_int(&row, (long long)ev->ar_content_id);
    else
        copy_row_null(&row);
    copy_row_opt_str(&row, ev->content_uid);
    copy_row_str(&row, ev->session_id);
    copy_row_opt_str(&row, ev->user_agent);
    copy_row_opt_str(&row, ev->device_type);
    copy_row_opt_str(&row, ev->browser);
    copy_row_opt_str(&row, ev->os);
    /* Anonymised before storage; an address that does not parse is dropped. */
    if (full_ip)
        copy_row_opt_str(&row, ev->ip);
    else
        copy_row_opt_str(&row, ip_anon(ev->ip, ip, sizeof(ip)) ? ip : NULL);
    copy_row_opt_str(&row, ev->country);
    copy_row_opt_str(&row, ev->city);
    if (ev->duration_seconds >= 0)
        copy_row_int(&row, ev->duration_seconds);
    else
        copy_row_null(&row);
    copy_row_opt_str(&row, ev->tracking_quality);
    copy_row_bool(&row, ev->video_played);
    if (ev->occurred_at_ms != 0)
        copy_row_time_ms(&row, ev->occurred_at_ms);
    else
        copy_row_null(&row);
    copy_row_time_ms(&row, ev->received_at_ms);
    copy_row_bool(&row, is_bot);
    copy_row_end(&row);
}

/* Decodes `fields` into `ev`; on failure writes why into `detail`. */
static bool decode_fields(const struct batch_field *fields, size_t nfields, struct event *ev,
                          const struct batch_field **payload, char *detail, size_t detail_len)
{
    const struct batch_field *v = find_field(fields, nfields, "v");
    const struct batch_field *e = find_field(fields, nfields, "e");
    struct event_error err;

    *payload = e;
    if (!v || v->value_len != strlen(EVENT_SCHEMA_VERSION) ||
        memcmp(v->value, EVENT_SCHEMA_VERSION, v->value_len) != 0) {
        snprintf(detail, detail_len, "field v must be \"%s\"", EVENT_SCHEMA_VERSION);
        return false;
    }
    if (!e) {
        snprintf(detail, detail_len, "field e is missing");
        return false;
    }
    memset(&err, 0, sizeof(err));
    if (!event_from_stream(e->value, e->value_len, ev, &err)) {
        snprintf(detail, detail_len, "%s%s%s", err.field ? err.field : "", err.field ? ": " : "",
                 err.message[0] ? err.message : "invalid event");
        return false;
    }
    return true;
}

/* Fills what the client left out from the user agent and the client IP (before
 * the IP is anonymised); true if the user agent is a bot's. */
static bool enrich(const struct batch *b, struct event *ev)
{
    struct geoip_result where;

    if (b->geoip && ev->ip[0] && (!ev->country[0] || !ev->city[0]) &&
        geoip_lookup(b->geoip, ev->ip, &where) == 0)
        geoip_apply(&where, ev);
    return b->ua ? ua_enrich_event(b->ua, ev) : false;
}

int batch_add(struct batch *b, unsigned stream, const char *id, size_t id_len,
              const struct batch_field *fields, size_t nfields)
{
    struct event ev;
    const struct batch_field *payload = NULL;
    char detail[200];
    int err = 0;
    struct batch_entry *e = batch_push(b, stream, id, id_len, &err);

    if (!e)
        return err;
    if (decode_fields(fields, nfields, &ev, &payload, detail, sizeof(detail))) {
        if (b->contents)
            err = ev.ar_content_id > 0
                      ? content_cache_note_id(b->contents, ev.ar_content_id)
                      : content_cache_note_uid(b->contents, ev.content_uid, strlen(ev.content_uid));
        bool is_bot = enrich(b, &ev);
        put_event_row(&b->rows, b->streams[stream], e, payload->value, payload->value_len, &ev,
                      b->store_full_ip, is_bot);
        b->bots += is_bot;
        e->valid = true;
        if (b->min_received_ms == 0 || ev.received_at_ms < b->min_received_ms)
            b->min_received_ms = ev.received_at_ms;
        if (ev.received_at_ms > b->max_received_ms)
            b->max_received_ms = ev.received_at_ms;
    } else {
        strbuf_reset(&b->scratch);
        batch_fields_json(fields, nfields, &b->scratch);
        put_dead_row(&b->rows, b->streams[stream], e->id, BATCH_REASON_INVALID, detail,
                     b->scratch.data, b->scratch.len, e);
        b->invalid++;
        b->dead++;
    }
    e->row_len = b->rows.len - e->row_off;
    return b->rows.oom || b->scratch.oom || err < 0 ? -ENOMEM : 0;
}

int batch_add_dead(struct batch *b, unsigned stream, const char *id, size_t id_len,
                   const struct batch_field *fields, size_t nfields, const char *reason,
                   const char *detail)
{
    int err = 0;
    struct batch_entry *e = batch_push(b, stream, id, id_len, &err);

    if (!e)
        return err;
    strbuf_reset(&b->scratch);
    batch_fields_json(fields, nfields, &b->scratch);
    put_dead_row(&b->rows, b->streams[stream], e->id, reason, detail, b->scratch.data,
                 b->scratch.len, e);
    e->row_len = b->rows.len - e->row_off;
    b->dead++;
    return b->rows.oom || b->scratch.oom ? -ENOMEM : 0;
}

int batch_add_ack_only(struct batch *b, unsigned stream, const char *id, size_t id_len)
{
    int err = 0;

    return batch_push(b, stream, id, id_len, &err) ? 0 : err;
}

void batch_dead_row(const struct batch *b, size_t i, const char *reason, const char *detail,
                    struct strbuf *out)
{
    const struct batch_entry *e = &b->entries[i];

    put_dead_row(out, b->streams[e->stream], e->id, reason, detail,
                 b->rows.data ? b->rows.data + e->payload_off : "", e->payload_len, NULL);
}
