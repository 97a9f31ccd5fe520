/* Stream entries -> raw-table rows, dead-letter rows and rollup inputs for one
 * aggregator batch. Pure. */
#include "batch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copy.h"
#include "event.h"
#include "content_cache.h"
#include "geoip.h"
#include "hll.h"
#include "ip_anon.h"
#include "timeutil.h"
#include "ua.h"

const char *const batch_dim_names[BATCH_DIMS] = {"device_type", "browser", "os",
                                                 "country",     "city",    "tracking_quality"};

void batch_init(struct batch *b, const char *const *streams)
{
    memset(b, 0, sizeof(*b));
    b->streams = streams;
    strbuf_init(&b->rows);
    strbuf_init(&b->scratch);
    strbuf_init(&b->values);
}

int batch_reserve(struct batch *b, size_t entries, size_t bytes)
{
    if (entries > b->cap) {
        struct batch_entry *p = realloc(b->entries, entries * sizeof(*p));
        if (!p)
            return -ENOMEM;
        b->entries = p;
        b->cap = entries;
    }
    return strbuf_reserve(&b->rows, bytes);
}

void batch_deinit(struct batch *b)
{
    free(b->entries);
    free(b->vals);
    free(b->val_slots);
    free(b->key_slots);
    strbuf_deinit(&b->rows);
    strbuf_deinit(&b->scratch);
    strbuf_deinit(&b->values);
    memset(b, 0, sizeof(*b));
}

void batch_next(struct batch *b)
{
    b->count = 0;
    b->invalid = 0;
    b->dead = 0;
    b->max_delay_ms = 0;
    b->bots = 0;
    strbuf_reset(&b->rows);
    if (b->contents)
        content_cache_begin(b->contents);
}

void batch_forget_values(struct batch *b)
{
    strbuf_reset(&b->values);
    b->nvals = 0;
    if (b->nslots)
        memset(b->val_slots, 0, b->nslots * sizeof(*b->val_slots));
}

void batch_reset(struct batch *b)
{
    batch_next(b);
    batch_forget_values(b);
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

const struct batch_field *batch_fields_json(const struct batch_field *fields, size_t nfields,
                                            struct strbuf *out)
{
    const struct batch_field *cut = NULL;

    strbuf_putc(out, '{');
    for (size_t i = 0; i < nfields; i++) {
        /* At a character's first byte, so that no character is halved. */
        size_t name =
            strbuf_utf8_prefix(fields[i].name, fields[i].name_len, BATCH_PAYLOAD_NAME_MAX);
        size_t n =
            strbuf_utf8_prefix(fields[i].value, fields[i].value_len, BATCH_PAYLOAD_VALUE_MAX);
        if (!cut && (name < fields[i].name_len || n < fields[i].value_len))
            cut = &fields[i];
        if (i > 0)
            strbuf_putc(out, ',');
        strbuf_json_string(out, fields[i].name, name);
        strbuf_putc(out, ':');
        strbuf_json_string(out, fields[i].value, n);
    }
    strbuf_putc(out, '}');
    return cut;
}

/* Doubles the value table's slots and places every value again. */
static int values_grow(struct batch *b)
{
    size_t n = b->nslots ? b->nslots * 2 : 256;
    uint32_t *slots = calloc(n, sizeof(*slots));

    if (!slots)
        return -ENOMEM;
    for (size_t id = 0; id < b->nvals; id++) {
        size_t k = b->vals[id].hash & (n - 1);
        while (slots[k])
            k = (k + 1) & (n - 1);
        slots[k] = (uint32_t)id + 1;
    }
    free(b->val_slots);
    b->val_slots = slots;
    b->nslots = n;
    return 0;
}

/* The slot of value `s` (`n` bytes, hash `h`) in the value table, or the free
 * slot where it would go (the table has one). */
static size_t value_slot(const struct batch *b, const char *s, size_t n, uint32_t h)
{
    size_t k;

    for (k = h & (b->nslots - 1); b->val_slots[k]; k = (k + 1) & (b->nslots - 1)) {
        const struct batch_value *v = &b->vals[b->val_slots[k] - 1];
        if (v->hash == h && v->len == n && memcmp(b->values.data + v->off, s, n) == 0)
            break;
    }
    return k;
}

int64_t batch_find_value(const struct batch *b, const char *s, size_t n)
{
    size_t k;

    if (!b->nslots)
        return -1;
    k = value_slot(b, s, n, (uint32_t)strbuf_hash64(s, n, 0));
    return b->val_slots[k] ? (int64_t)b->val_slots[k] - 1 : -1;
}

/* The id of breakdown value `s` (`n` bytes), interning it; -ENOMEM. */
static int64_t value_intern(struct batch *b, const char *s, size_t n)
{
    size_t k;
    uint32_t h = (uint32_t)strbuf_hash64(s, n, 0);

    if (2 * (b->nvals + 1) > b->nslots && values_grow(b) < 0)
        return -ENOMEM;
    k = value_slot(b, s, n, h);
    if (b->val_slots[k])
        return b->val_slots[k] - 1;
    if (b->nvals == b->vals_cap) {
        size_t cap = b->vals_cap ? b->vals_cap * 2 : 64;
        struct batch_value *p = realloc(b->vals, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        b->vals = p;
        b->vals_cap = cap;
    }
    b->vals[b->nvals] = (struct batch_value){.off = b->values.len, .len = n, .hash = h};
    strbuf_append(&b->values, s, n);
    if (b->values.oom)
        return -ENOMEM;
    b->val_slots[k] = (uint32_t)++b->nvals;
    return (int64_t)b->nvals - 1;
}

int batch_intern_dims(struct batch *b, size_t i, uint32_t dims[BATCH_DIMS])
{
    const struct batch_entry *e = &b->entries[i];

    for (int d = 0; d < BATCH_DIMS; d++) {
        /* None counts as "unknown", like the rebuild's coalesce. */
        int64_t id = e->dim_len[d]
                         ? value_intern(b, b->rows.data + e->row_off + e->dim_at[d], e->dim_len[d])
                         : value_intern(b, "unknown", strlen("unknown"));
        if (id < 0)
            return -ENOMEM;
        dims[d] = (uint32_t)id;
    }
    return 0;
}

size_t batch_value_bytes(const struct batch *b)
{
    return b->values.len + b->nvals * (sizeof(*b->vals) + 2 * sizeof(*b->val_slots));
}

const char *batch_value(const struct batch *b, uint32_t id, size_t *len)
{
    *len = b->vals[id].len;
    return b->values.data + b->vals[id].off;
}

/* Appends the payload COPY-escaped to `rows`, noting where it is. */
static void put_payload(struct batch *b, struct batch_entry *e, const char *payload, size_t len)
{
    e->payload_off = b->rows.len;
    copy_escape(&b->rows, payload, len);
    e->payload_len = b->rows.len - e->payload_off;
    e->payload_kept = true;
}

int batch_set_payload(struct batch *b, size_t i, const char *payload, size_t len)
{
    put_payload(b, &b->entries[i], payload, len);
    return b->rows.oom ? -ENOMEM : 0;
}

static void put_dead_row(struct strbuf *out, const char *stream, const char *id, const char *reason,
                         const char *detail, const char *payload, size_t payload_len)
{
    struct copy_row row;

    copy_row_begin(&row, out);
    copy_row_str(&row, stream);
    copy_row_str(&row, id);
    copy_row_str(&row, reason);
    copy_row_opt_str(&row, detail);
    copy_row_escaped(&row, payload, payload_len);
    copy_row_end(&row);
}

/* Makes entry `e` a dead letter with its payload as kept. */
static void make_dead(struct batch *b, struct batch_entry *e, const char *reason,
                      const char *detail)
{
    /* Written apart first: `rows` may move while the payload is read from it. */
    strbuf_reset(&b->scratch);
    batch_dead_row(b, (size_t)(e - b->entries), reason, detail, &b->scratch);
    e->kind = BATCH_DEAD;
    e->reason = reason;
    e->row_off = b->rows.len;
    strbuf_append(&b->rows, b->scratch.data, b->scratch.len);
    e->row_len = b->rows.len - e->row_off;
}

/* The 16 bytes of a canonical UUID (as event.c validated it). */
static void uuid_bytes(const char *s, unsigned char out[16])
{
    for (int i = 0; i < 16; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c;
            while ((c = *s++) == '-')
                ;
            v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        }
        out[i] = (unsigned char)v;
    }
}

static enum batch_tq tq_class(const char *tq)
{
    static const char *const names[] = {"excellent", "good", "fair", "poor"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(tq, names[i]) == 0)
            return (enum batch_tq)i;
    }
    return BATCH_TQ_OTHER;
}

/* A row holds some of the event's texts and numbers, each field at most 16
 * bytes more than the event keeps of it (a 4-byte length, a uuid's 16 bytes
 * from its 37-byte text, an 8-byte time, an inet's header): it fits the
 * 16-bit offsets of dim_at. */
_Static_assert(sizeof(struct event) + BATCH_RAW_NFIELDS * 16 < UINT16_MAX, "rows fit dim_at");

/* Writes breakdown value `s` of dimension `d` as the next field of entry
 * `e`'s row (NULL when there is none), noting where its bytes are. */
static void put_dim(struct batch *b, struct batch_entry *e, int d, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    e->dim_at[d] = (uint16_t)(b->rows.len + 4 - e->row_off); /* past the field's length */
    e->dim_len[d] = (uint16_t)n;
    copy_bin_opt_bytes(&b->rows, s, n);
}

/* Writes the event's raw row up to is_bot (see struct batch_entry) and what
 * the rollups need of it. */
static int put_event(struct batch *b, struct batch_entry *e, const struct event *ev, bool is_bot)
{
    struct ip_addr ip;
    unsigned char session[16], event_id[16];

    e->kind = BATCH_EVENT;
    e->received_ms = ev->received_at_ms;
    e->content_id = ev->ar_content_id > 0 ? ev->ar_content_id : 0;
    e->duration = ev->duration_seconds;
    e->tq = tq_class(ev->tracking_quality);
    e->video_played = ev->video_played;
    e->is_bot = is_bot;
    uuid_bytes(ev->session_id, session);
    e->session_hash = hll_hash(session, sizeof(session));
    if (!e->content_id) {
        e->uid_off = b->rows.len;
        e->uid_len = strlen(ev->content_uid);
        strbuf_append(&b->rows, ev->content_uid, e->uid_len);
    }

    e->row_off = b->rows.len;
    uuid_bytes(ev->event_id, event_id);
    copy_bin_bytes(&b->rows, event_id, sizeof(event_id));
    copy_bin_bytes(&b->rows, session, sizeof(session));
    copy_bin_opt_str(&b->rows, ev->user_agent);
    put_dim(b, e, 0, ev->device_type);
    put_dim(b, e, 1, ev->browser);
    put_dim(b, e, 2, ev->os);
    /* Anonymised before storage unless told; an address that does not parse
     * is dropped. */
    (b->store_full_ip ? ip_unmap : ip_anon)(ev->ip, &ip);
    copy_bin_inet(&b->rows, &ip);
    put_dim(b, e, 3, ev->country);
    put_dim(b, e, 4, ev->city);
    if (ev->duration_seconds >= 0)
        copy_bin_int4(&b->rows, ev->duration_seconds);
    else
        copy_bin_null(&b->rows);
    put_dim(b, e, 5, ev->tracking_quality);
    copy_bin_bool(&b->rows, ev->video_played);
    copy_bin_time_ms(&b->rows, ev->received_at_ms); /* created_at */
    if (ev->has_occurred_at)
        copy_bin_time_ms(&b->rows, ev->occurred_at_ms);
    else
        copy_bin_null(&b->rows);
    copy_bin_time_ms(&b->rows, ev->received_at_ms);
    copy_bin_bool(&b->rows, is_bot);
    e->row_len = b->rows.len - e->row_off;
    return 0;
}

/* Decodes `fields` into `ev`; on failure writes why into `detail`. */
static bool decode_fields(const struct batch_field *fields, size_t nfields, struct event *ev,
                          char *detail, size_t detail_len)
{
    const struct batch_field *v = find_field(fields, nfields, "v");
    const struct batch_field *e = find_field(fields, nfields, "e");
    struct event_error err;

    if (!v || v->value_len != strlen(EVENT_SCHEMA_VERSION) ||
        memcmp(v->value, EVENT_SCHEMA_VERSION, v->value_len) != 0) {
        snprintf(detail, detail_len, "field v must be \"%s\"", EVENT_SCHEMA_VERSION);
        return false;
    }
    if (!e) {
        snprintf(detail, detail_len, "field e is missing");
        return false;
    }
    if (e->value_len > BATCH_PAYLOAD_VALUE_MAX) {
        /* Not the collector's (a few KB): kept whole in a dead letter (unknown
         * content, a rejected row), it could pass what a row may hold. */
        snprintf(detail, detail_len, "field e is %zu bytes: an event takes at most %d",
                 e->value_len, BATCH_PAYLOAD_VALUE_MAX);
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

/* Makes entry `e` a dead letter whose payload is every field as JSON. */
static void add_dead(struct batch *b, struct batch_entry *e, const struct batch_field *fields,
                     size_t nfields, const char *reason, const char *detail)
{
    const struct batch_field *cut;
    char noted[400];

    strbuf_reset(&b->scratch);
    cut = batch_fields_json(fields, nfields, &b->scratch);
    put_payload(b, e, b->scratch.data, b->scratch.len);
    if (cut && cut->name_len > BATCH_PAYLOAD_NAME_MAX) {
        snprintf(noted, sizeof(noted),
                 "%s; the payload keeps the first %d bytes of a field name of %zu", detail,
                 BATCH_PAYLOAD_NAME_MAX, cut->name_len);
        detail = noted;
    } else if (cut) {
        snprintf(noted, sizeof(noted),
                 "%s; the payload keeps the first %d bytes of field %.*s's %zu", detail,
                 BATCH_PAYLOAD_VALUE_MAX, (int)strbuf_utf8_prefix(cut->name, cut->name_len, 64),
                 cut->name, cut->value_len);
        detail = noted;
    }
    make_dead(b, e, reason, detail);
    b->dead++;
}

int batch_add(struct batch *b, unsigned stream, const char *id, size_t id_len,
              const struct batch_field *fields, size_t nfields)
{
    struct event ev;
    char detail[200];
    int err = 0;
    struct batch_entry *e = batch_push(b, stream, id, id_len, &err);

    if (!e)
        return err;
    bool decoded = decode_fields(fields, nfields, &ev, detail, sizeof(detail));
    int64_t day = decoded ? timeutil_period(ev.received_at_ms, TIMEUTIL_DAY_MS) : 0;
    if (decoded && b->today &&
        (day < b->today - BATCH_DAYS_BACK || day > b->today + BATCH_DAYS_AHEAD)) {
        /* No partition is made for it: written, it would fail its whole
         * read, then be found entry by entry. */
        char at[32];
        event_format_rfc3339(ev.received_at_ms, at, sizeof(at));
        snprintf(detail, sizeof(detail),
                 "received_at %s is outside the days written: %d days before today (UTC) to %d "
                 "after",
                 at, BATCH_DAYS_BACK, BATCH_DAYS_AHEAD);
        add_dead(b, e, fields, nfields, BATCH_REASON_OUT_OF_RANGE, detail);
    } else if (decoded) {
        if (b->contents)
            err = ev.ar_content_id > 0
                      ? content_cache_note_id(b->contents, ev.ar_content_id)
                      : content_cache_note_uid(b->contents, ev.content_uid, strlen(ev.content_uid));
        bool is_bot = enrich(b, &ev);
        if (put_event(b, e, &ev, is_bot) < 0)
            err = -ENOMEM;
        b->bots += is_bot;
        /* Both positive: no overflow. */
        int64_t delay = ev.received_at_ms > 0 ? strtoll(e->id, NULL, 10) - ev.received_at_ms : 0;
        if (delay > b->max_delay_ms && delay <= BATCH_DELAY_MAX_MS)
            b->max_delay_ms = delay;
    } else {
        add_dead(b, e, fields, nfields, BATCH_REASON_INVALID, detail);
        b->invalid++;
    }
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
    add_dead(b, e, fields, nfields, reason, detail);
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
                 e->payload_kept ? b->rows.data + e->payload_off : "",
                 e->payload_kept ? e->payload_len : 0);
}

int batch_reject(struct batch *b, size_t i, const char *reason, const char *detail)
{
    make_dead(b, &b->entries[i], reason, detail);
    return b->rows.oom || b->scratch.oom ? -ENOMEM : 0;
}

/* Hash of an event entry's company and event id (its row's first field). */
static uint32_t event_key_hash(const struct batch *b, const struct batch_entry *e)
{
    return (uint32_t)strbuf_hash64(b->rows.data + e->row_off, BATCH_EVENT_ID_FIELD,
                                   (uint64_t)e->company_id);
}

int batch_resolve(struct batch *b, size_t first, size_t n)
{
    size_t nslots = 16;
    uint32_t *slots;

    while (nslots < 2 * n)
        nslots *= 2;
    if (nslots > b->nkey_slots) {
        free(b->key_slots);
        b->nkey_slots = 0;
        if (!(b->key_slots = malloc(nslots * sizeof(*b->key_slots))))
            return -ENOMEM;
        b->nkey_slots = nslots;
    }
    slots = b->key_slots;
    memset(slots, 0, nslots * sizeof(*slots));
    for (size_t i = first; i < first + n; i++) {
        struct batch_entry *e = &b->entries[i];
        bool known;
        size_t k;

        if (e->kind != BATCH_EVENT)
            continue;
        e->ar_content_id = e->content_id;
        e->repeat = e->counted = false;
        if (!b->contents)
            known = false;
        else if (e->content_id)
            known =
                content_cache_lookup_id(b->contents, e->content_id, &e->project_id, &e->company_id);
        else
            known = content_cache_lookup_uid(b->contents, b->rows.data + e->uid_off, e->uid_len,
                                             &e->ar_content_id, &e->project_id, &e->company_id);
        if (!known) {
            e->ar_content_id = e->project_id = e->company_id = 0;
            continue;
        }
        /* The first entry with a company and event id is the one written. */
        for (k = event_key_hash(b, e) & (nslots - 1); slots[k]; k = (k + 1) & (nslots - 1)) {
            const struct batch_entry *o = &b->entries[slots[k] - 1];
            if (o->company_id == e->company_id &&
                memcmp(b->rows.data + o->row_off, b->rows.data + e->row_off,
                       BATCH_EVENT_ID_FIELD) == 0) {
                e->repeat = true;
                break;
            }
        }
        if (!e->repeat)
            slots[k] = (uint32_t)i + 1;
    }
    return 0;
}
