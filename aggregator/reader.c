/* Blocking hiredis reader of one Redis node's stream shards for the worker
 * thread: XREADGROUP, own-pending recovery, XPENDING + XCLAIM, XACK, stats. */
#include "reader.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "timeutil.h"

#define READER_MAX_FIELDS   32   /* fields kept of one entry; the schema has two */
#define READER_ACK_CHUNK    1000 /* ids per XACK */
#define READER_CONNECT_MS   2000
#define READER_BLOCK_MAX_MS 1000 /* a BLOCK at most this long, so that a stop is seen */
#define READER_REPLY_MARGIN 5000 /* socket timeout beyond a read's BLOCK */
#define READER_FORGET_MS    (24LL * 3600 * 1000) /* idle consumers with nothing pending */

int reader_init(struct reader *r, const struct redis_url *url, const char *const *streams,
                unsigned nstreams, const char *consumer, long count, size_t max_bytes,
                long block_ms)
{
    memset(r, 0, sizeof(*r));
    r->url = *url;
    r->streams = streams;
    r->nstreams = nstreams;
    r->count = count;
    r->max_bytes = max_bytes;
    r->restarted = true;
    /* At most READER_BLOCK_MAX_MS, so that a stop is seen. */
    r->block_ms = block_ms < READER_BLOCK_MAX_MS ? block_ms : READER_BLOCK_MAX_MS;
    reply_arena_init(&r->arena);
    reply_arena_init(&r->ahead_arena);
    r->consumer = strdup(consumer);
    r->recover_from = calloc(nstreams, sizeof(*r->recover_from));
    r->xargv = calloc(10 + 2 * (size_t)nstreams, sizeof(*r->xargv));
    r->xids = calloc(nstreams, sizeof(*r->xids));
    r->xgot = calloc(nstreams, sizeof(*r->xgot));
    if (!r->consumer || !r->recover_from || !r->xargv || !r->xids || !r->xgot) {
        reader_deinit(r);
        return -ENOMEM;
    }
    return 0;
}

void reader_disconnect(struct reader *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    /* A reply sent ahead is lost with the connection; its entries stay
     * pending (read again after reconnecting). */
    reply_arena_free(r->ahead_reply);
    r->ahead_reply = NULL;
    r->ahead = READER_AHEAD_NONE;
}

void reader_deinit(struct reader *r)
{
    reader_disconnect(r);
    reply_arena_deinit(&r->arena);
    reply_arena_deinit(&r->ahead_arena);
    free(r->consumer);
    free(r->recover_from);
    free(r->xargv);
    free(r->xids);
    free(r->xgot);
    memset(r, 0, sizeof(*r));
}

bool reader_connected(const struct reader *r)
{
    return r->ctx != NULL;
}

bool reader_parse_id(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end = NULL;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    *ms = strtoull(s, &end, 10);
    if (errno != 0)
        return false;
    *seq = 0;
    if (*end == '\0')
        return true;
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return false;
    *seq = strtoull(end + 1, &end, 10);
    return errno == 0 && *end == '\0';
}

static void reader_set_err(struct reader *r, const char *what, const char *detail)
{
    snprintf(r->errstr, sizeof(r->errstr), "%s: %s", what, detail ? detail : "unknown error");
}

/* Receives the reply of a read sent ahead, if any, and keeps it for the next
 * reader_read(): any other command's reply comes after it. Returns 0, or -1
 * after a connection failure (then disconnected). */
static int settle_ahead(struct reader *r, const char *what)
{
    redisReply *reply = NULL;

    if (r->ahead != READER_AHEAD_SENT)
        return 0;
    /* Built in an arena of its own: kept while other commands' replies come
     * and go, it would keep `arena` from reusing its blocks. */
    reply_arena_attach(&r->ahead_arena, r->ctx->reader);
    int rc = redisGetReply(r->ctx, (void **)&reply);
    reply_arena_attach(&r->arena, r->ctx->reader);
    if (rc != REDIS_OK || !reply) {
        reader_set_err(r, what, r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        reader_disconnect(r);
        return -1;
    }
    r->ahead_reply = reply;
    r->ahead = READER_AHEAD_KEPT;
    return 0;
}

/* Sends one command. Returns the reply (the caller gives it back with
 * reply_arena_free()), or NULL after a connection failure (then the reader is
 * disconnected). An error reply is returned as is. */
static redisReply *reader_command(struct reader *r, int argc, const char **argv, const size_t *lens)
{
    redisReply *reply;

    if (!r->ctx) {
        reader_set_err(r, argv[0], "not connected");
        return NULL;
    }
    if (settle_ahead(r, argv[0]) < 0)
        return NULL;
    reply = redisCommandArgv(r->ctx, argc, argv, lens);
    if (!reply) {
        reader_set_err(r, argv[0], r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        reader_disconnect(r);
    }
    return reply;
}

/* Same, for a command of NUL-terminated words. */
static redisReply *reader_commandv(struct reader *r, int argc, const char **argv)
{
    return reader_command(r, argc, argv, NULL);
}

/* True (errstr set) if `reply` is an error reply. Two errors are the
 * connection's, not the command's, and disconnect (the reply stays valid):
 * NOGROUP, the stream or group deleted, since reconnecting creates the group
 * again; READONLY, the node turned replica (a failover behind the same name),
 * since a new connection may reach the new primary. Any other (NOPERM, BUSY,
 * OOM, ...) keeps the connection. */
static bool reply_is_error(struct reader *r, const redisReply *reply, const char *what)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return false;
    reader_set_err(r, what, reply->str);
    if (strncmp(reply->str, "NOGROUP", 7) == 0 || strncmp(reply->str, "READONLY", 8) == 0)
        reader_disconnect(r);
    return true;
}

/* After XGROUP CREATE got OOM: Redis is over maxmemory and refuses every
 * command that may allocate, that one even when the group exists. Reading,
 * acknowledging and trimming are still allowed, and only they free memory:
 * true if the group of stream `i` exists (XPENDING, which needs no memory,
 * answers), so that the reader can go on. */
static bool group_exists(struct reader *r, unsigned i)
{
    redisReply *reply =
        reader_commandv(r, 3, (const char *[]){"XPENDING", r->streams[i], READER_GROUP});
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY;

    reply_arena_free(reply);
    return ok;
}

int reader_connect(struct reader *r)
{
    struct timeval tv = {READER_CONNECT_MS / 1000, (READER_CONNECT_MS % 1000) * 1000};
    long reply_ms = r->block_ms + READER_REPLY_MARGIN;
    struct timeval rtv = {reply_ms / 1000, (reply_ms % 1000) * 1000};
    redisReply *reply = NULL;
    char db[16];
    int rc = -1;

    reader_disconnect(r);
    r->ctx = redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!r->ctx || r->ctx->err) {
        reader_set_err(r, "connect", r->ctx ? r->ctx->errstr : "out of memory");
        goto out;
    }
    if (redisSetTimeout(r->ctx, rtv) != REDIS_OK) {
        reader_set_err(r, "connect", "cannot set the socket timeout");
        goto out;
    }
    reply_arena_attach(&r->arena, r->ctx->reader);
    if (r->url.password[0]) {
        const char *argv[] = {"AUTH", r->url.username, r->url.password};
        bool user = r->url.username[0] != '\0';
        reply = user ? reader_commandv(r, 3, argv)
                     : reader_commandv(r, 2, (const char *[]){"AUTH", r->url.password});
        if (!reply || reply_is_error(r, reply, "AUTH"))
            goto out;
        reply_arena_free(reply);
        reply = NULL;
    }
    if (r->url.db != 0) {
        snprintf(db, sizeof(db), "%d", r->url.db);
        reply = reader_commandv(r, 2, (const char *[]){"SELECT", db});
        if (!reply || reply_is_error(r, reply, "SELECT"))
            goto out;
        reply_arena_free(reply);
        reply = NULL;
    }
    reply = reader_commandv(r, 3, (const char *[]){"CONFIG", "GET", "maxmemory-policy"});
    if (!reply)
        goto out;
    const char *policy = redis_policy_unsafe(reply);
    if (policy)
        log_warn("redis_eviction_policy_unsafe", LF_STR("host", r->url.host),
                 LF_INT("port", r->url.port), LF_STR("policy", policy));
    reply_arena_free(reply);
    reply = NULL;
    for (unsigned i = 0; i < r->nstreams; i++) {
        /* From the start ("0"), not "$": entries added before any aggregator
         * ran are still counted. Dedupe makes re-reading harmless. */
        const char *argv[] = {"XGROUP", "CREATE", r->streams[i], READER_GROUP, "0", "MKSTREAM"};
        reply = reader_commandv(r, 6, argv);
        if (!reply)
            goto out;
        if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9) != 0 &&
            !(strncmp(reply->str, "OOM", 3) == 0 && group_exists(r, i))) {
            reader_set_err(r, "XGROUP CREATE", reply->str);
            goto out;
        }
        reply_arena_free(reply);
        reply = NULL;
    }
    reader_recover(r);
    rc = 0;
out:
    reply_arena_free(reply);
    if (rc < 0)
        reader_disconnect(r);
    return rc;
}

static int stream_index(const struct reader *r, const redisReply *name)
{
    if (!name || name->type != REDIS_REPLY_STRING)
        return -1;
    for (unsigned i = 0; i < r->nstreams; i++) {
        if (strlen(r->streams[i]) == name->len && memcmp(r->streams[i], name->str, name->len) == 0)
            return (int)i;
    }
    return -1;
}

/* Fills `fields` from an entry's flat [name, value, ...] array: the schema's
 * `v` and `e` wherever they are, and the others while there is room for
 * them, READER_MAX_FIELDS - 2 (an event among many more fields, added by
 * someone else's XADD, is still an event, not an invalid payload). */
static size_t entry_fields(const redisReply *arr, struct batch_field *fields)
{
    size_t n = 0, others = 0;

    for (size_t j = 0; j + 1 < arr->elements && n < READER_MAX_FIELDS; j += 2) {
        const redisReply *k = arr->element[j];
        const redisReply *v = arr->element[j + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        bool schema = k->len == 1 && (k->str[0] == 'v' || k->str[0] == 'e');
        if (!schema && others++ >= READER_MAX_FIELDS - 2)
            continue;
        fields[n].name = k->str;
        fields[n].name_len = k->len;
        fields[n].value = v->str;
        fields[n].value_len = v->len;
        n++;
    }
    return n;
}

/* The id of an [id, fields] entry, or NULL if it has no such shape. */
static const char *entry_id(const redisReply *entry)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING)
        return NULL;
    return entry->element[0]->str;
}

/* Adds one [id, fields] entry of stream `s`; entries whose fields are nil were
 * deleted while pending and are only acknowledged. `deliveries` >= 0 with
 * `max_deliveries` > 0 dead-letters an entry delivered too often. */
static int add_entry(struct reader *r, struct batch *b, unsigned s, const redisReply *entry,
                     long long deliveries, long max_deliveries)
{
    struct batch_field fields[READER_MAX_FIELDS];
    const redisReply *id;
    const redisReply *arr;
    char detail[64];
    int rc;

    if (!entry_id(entry)) {
        reader_set_err(r, "XREADGROUP", "unexpected entry shape");
        return -1;
    }
    id = entry->element[0];
    arr = entry->element[1];
    if (arr->type != REDIS_REPLY_ARRAY) {
        rc = batch_add_ack_only(b, s, id->str, id->len);
    } else if (max_deliveries > 0 && deliveries >= max_deliveries) {
        snprintf(detail, sizeof(detail), "delivered %lld times", deliveries);
        rc = batch_add_dead(b, s, id->str, id->len, fields, entry_fields(arr, fields),
                            BATCH_REASON_DELIVERIES, detail);
    } else {
        rc = batch_add(b, s, id->str, id->len, fields, entry_fields(arr, fields));
    }
    if (rc < 0)
        reader_set_err(r, "batch", rc == -ENOMEM ? "out of memory" : "bad entry id");
    return rc < 0 ? -1 : 0;
}

/* Fills r->xargv with an XREADGROUP of up to `want` entries from the streams
 * whose `ids` entry is set (NULL when `ids` is NULL: the first `n` streams,
 * from ">"), blocking if `block`; returns the word count. */
static int xreadgroup_argv(struct reader *r, const char *const *ids, unsigned n, long want,
                           bool block)
{
    const char **argv = r->xargv;
    int argc = 0;
    unsigned used = 0;

    snprintf(r->xcount, sizeof(r->xcount), "%ld", want);
    snprintf(r->xblock, sizeof(r->xblock), "%ld", r->block_ms);

    argv[argc++] = "XREADGROUP";
    argv[argc++] = "GROUP";
    argv[argc++] = READER_GROUP;
    argv[argc++] = r->consumer;
    argv[argc++] = "COUNT";
    argv[argc++] = r->xcount;
    if (block) {
        argv[argc++] = "BLOCK";
        argv[argc++] = r->xblock;
    }
    argv[argc++] = "STREAMS";
    for (unsigned i = 0; i < r->nstreams; i++)
        used += ids ? ids[i] != NULL : i < n;
    for (unsigned i = 0, k = 0; i < r->nstreams; i++) {
        if (ids ? ids[i] != NULL : i < n) {
            argv[argc + k] = r->streams[i];
            argv[argc + used + k] = ids ? ids[i] : ">";
            k++;
        }
    }
    return argc + 2 * (int)used;
}

/* Sends an XREADGROUP of up to `want` new entries from each of the first `n`
 * streams, without BLOCK, and returns at once: the next reader_read() takes
 * its reply. */
static int send_ahead(struct reader *r, unsigned n, long want)
{
    int done = 0;

    if (redisAppendCommandArgv(r->ctx, xreadgroup_argv(r, NULL, n, want, false), r->xargv, NULL) !=
        REDIS_OK) {
        reader_set_err(r, "XREADGROUP", "out of memory");
        reader_disconnect(r);
        return -1;
    }
    while (!done) {
        if (redisBufferWrite(r->ctx, &done) != REDIS_OK) {
            reader_set_err(r, "XREADGROUP", r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
            reader_disconnect(r);
            return -1;
        }
    }
    r->ahead = READER_AHEAD_SENT;
    r->ahead_count = want;
    r->ahead_n = n;
    return 0;
}

/* The reply of the read sent ahead (NULL after a connection failure, then
 * disconnected); there is none ahead any more. */
static redisReply *take_ahead(struct reader *r)
{
    redisReply *reply;

    if (settle_ahead(r, "XREADGROUP") < 0)
        return NULL;
    reply = r->ahead_reply;
    r->ahead_reply = NULL;
    r->ahead = READER_AHEAD_NONE;
    return reply;
}

long reader_per_stream(long total, unsigned n)
{
    long each = total / (long)(n > 0 ? n : 1);
    long least = total < READER_CHUNK_MIN ? total : READER_CHUNK_MIN;

    return each < least ? least : each;
}

unsigned reader_read_streams(const struct reader *r)
{
    return r->nown > 0 && r->nown < r->nstreams && !r->wide ? r->nown : r->nstreams;
}

/* Entries per stream in a read of new entries from `n` streams: its COUNT, or
 * the caller's smaller limit, shared by them. */
static long read_count(const struct reader *r, unsigned n)
{
    return reader_per_stream(r->limit > 0 && r->limit < r->count ? r->limit : r->count, n);
}

/* Entries per stream in one piece of a read from `n` streams: READER_CHUNK in
 * all, shared by them (at least READER_CHUNK_MIN each), so that a piece's
 * reply stays about as large with many shards on a node as with one. */
static long read_chunk(const struct reader *r, unsigned n)
{
    long chunk = READER_CHUNK / (long)n, count = reader_per_stream(r->count, n);

    chunk = chunk < READER_CHUNK_MIN ? READER_CHUNK_MIN : chunk;
    if (r->entry_max > 0) {
        /* COUNT is per stream; 0 for an entry over 16 MiB */
        size_t fit = READER_PIECE_BYTES / n / r->entry_max;
        if ((size_t)chunk > fit)
            chunk = fit > 0 ? (long)fit : 1;
    }
    return count < chunk ? count : chunk;
}

int reader_prefetch(struct reader *r)
{
    if (!r->ctx) {
        reader_set_err(r, "XREADGROUP", "not connected");
        return -1;
    }
    if (r->ahead != READER_AHEAD_NONE || r->recovering || r->no_ahead)
        return 0;
    unsigned n = reader_read_streams(r);
    return send_ahead(r, n, read_chunk(r, n));
}

/* One stream's part of an XREADGROUP reply, [name, [entry...]]: its entries,
 * with its index in *s; NULL if it is not one of the reader's streams. */
static const redisReply *stream_entries(const struct reader *r, const redisReply *st, int *s)
{
    if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
        (*s = stream_index(r, st->element[0])) < 0 || st->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    return st->element[1];
}

/* Counts, per stream, the entries of an XREADGROUP reply (`got`). An error
 * reply fails the read (see reply_is_error). Returns 0 or -1. */
static int reply_counts(struct reader *r, const redisReply *reply, size_t *got)
{
    memset(got, 0, r->nstreams * sizeof(*got));
    if (reply_is_error(r, reply, "XREADGROUP"))
        return -1;
    for (size_t k = 0; reply->type == REDIS_REPLY_ARRAY && k < reply->elements; k++) {
        int s;
        const redisReply *entries = stream_entries(r, reply->element[k], &s);
        if (entries)
            got[s] = entries->elements;
    }
    return 0;
}

/* Adds the entries of an XREADGROUP reply (checked by reply_counts). */
static int reply_add(struct reader *r, struct batch *b, const redisReply *reply)
{
    size_t largest = 0;

    for (size_t k = 0; reply->type == REDIS_REPLY_ARRAY && k < reply->elements; k++) {
        int s;
        const redisReply *entries = stream_entries(r, reply->element[k], &s);
        for (size_t e = 0; entries && e < entries->elements; e++) {
            const redisReply *entry = entries->element[e];
            if (add_entry(r, b, (unsigned)s, entry, -1, 0) < 0)
                return -1;
            const redisReply *arr = entry->element[1];
            size_t bytes = 0;
            for (size_t j = 0; arr->type == REDIS_REPLY_ARRAY && j < arr->elements; j++)
                bytes += arr->element[j]->type == REDIS_REPLY_STRING ? arr->element[j]->len : 0;
            largest = bytes > largest ? bytes : largest;
        }
    }
    r->entry_max = largest;
    return 0;
}

/* The delivery count that the extended XPENDING reply `pending` gives entry
 * `id`, looking from its element *j on (both lists are in id order: the
 * search resumes where the last one ended); -1 if it is not there. */
static long long pending_deliveries(const redisReply *pending, size_t *j, const char *id)
{
    while (pending && id && pending->type == REDIS_REPLY_ARRAY && *j < pending->elements) {
        const redisReply *p = pending->element[(*j)++];
        if (p->type == REDIS_REPLY_ARRAY && p->elements >= 4 &&
            p->element[0]->type == REDIS_REPLY_STRING &&
            p->element[3]->type == REDIS_REPLY_INTEGER && strcmp(p->element[0]->str, id) == 0)
            return p->element[3]->integer;
    }
    return -1;
}

/* Adds the entries of a read of this consumer's own pending entries
 * (checked by reply_counts). With r->max_deliveries, each stream's entries
 * get their delivery counts from one XPENDING of their range, taken after
 * the read counted it: an entry that made the aggregator crash every time it
 * was read would otherwise be read again after every restart under the same
 * name, never idle long enough for another consumer to claim it. */
static int pending_add(struct reader *r, struct batch *b, const redisReply *reply)
{
    for (size_t k = 0; reply->type == REDIS_REPLY_ARRAY && k < reply->elements; k++) {
        int s;
        const redisReply *entries = stream_entries(r, reply->element[k], &s);
        redisReply *pending = NULL;
        size_t n = entries ? entries->elements : 0, j = 0;
        int rc = 0;

        if (n > 0 && r->max_deliveries > 0 && entry_id(entries->element[0]) &&
            entry_id(entries->element[n - 1])) {
            char count[24];
            snprintf(count, sizeof(count), "%zu", n);
            pending = reader_commandv(r, 7,
                                      (const char *[]){"XPENDING", r->streams[s], READER_GROUP,
                                                       entry_id(entries->element[0]),
                                                       entry_id(entries->element[n - 1]), count,
                                                       r->consumer});
            if (!pending || reply_is_error(r, pending, "XPENDING")) {
                reply_arena_free(pending);
                return -1;
            }
        }
        for (size_t e = 0; e < n && rc == 0; e++) {
            long long d = pending_deliveries(pending, &j, entry_id(entries->element[e]));
            /* The count includes this read: the deliveries before it. */
            rc = add_entry(r, b, (unsigned)s, entries->element[e], d < 0 ? -1 : d - 1,
                           r->max_deliveries);
        }
        reply_arena_free(pending);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Sends an XREADGROUP over the streams with `ids` (NULL entries are skipped)
 * and returns its reply (NULL after a connection failure). */
static redisReply *xreadgroup(struct reader *r, const char *const *ids, bool block, long want)
{
    return reader_commandv(r, xreadgroup_argv(r, ids, 0, want, block), r->xargv);
}

/* True once the batch's rows take the reader's byte budget. */
static bool batch_full(const struct reader *r, const struct batch *b)
{
    return r->max_bytes > 0 && b->rows.len >= r->max_bytes;
}

/* Queues `XRANGE stream id id` on the connection (pipelined; read with
 * xrange_reply()). Returns 0, or -1 with `errstr` set (then disconnected). */
static int xrange_send(struct reader *r, const char *stream, const char *id)
{
    const char *argv[] = {"XRANGE", stream, id, id};

    if (redisAppendCommandArgv(r->ctx, 4, argv, NULL) == REDIS_OK)
        return 0;
    reader_set_err(r, "XRANGE", "out of memory");
    reader_disconnect(r);
    return -1;
}

/* The next queued XRANGE's reply (caller frees), or NULL with `errstr` set
 * after a connection failure (then disconnected) or an error reply (NOPERM,
 * say: the connection kept, so the caller reads the replies still queued
 * with xrange_skip(): a refusal is no outage, and reconnecting would only
 * meet it again). */
static redisReply *xrange_reply(struct reader *r)
{
    redisReply *reply = NULL;

    if (redisGetReply(r->ctx, (void **)&reply) != REDIS_OK || !reply) {
        reader_set_err(r, "XRANGE", r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
        reader_disconnect(r);
        return NULL;
    }
    if (reply_is_error(r, reply, "XRANGE")) {
        reply_arena_free(reply);
        return NULL;
    }
    return reply;
}

/* Reads and drops the `n` XRANGE replies still queued after xrange_reply()
 * failed, if the connection is up (else it is closed). Keeps `errstr`. */
static void xrange_skip(struct reader *r, size_t n)
{
    for (; n > 0 && r->ctx; n--) {
        redisReply *reply = NULL;
        if (redisGetReply(r->ctx, (void **)&reply) != REDIS_OK || !reply)
            reader_disconnect(r);
        reply_arena_free(reply);
    }
}

/* Reads this consumer's pending entries of stream `s` after recover_from[s]
 * (up to `want`) again without counting a delivery: XPENDING lists them and
 * an XRANGE per entry (pipelined) reads it; one deleted meanwhile is only
 * acknowledged. Sets *got to how many were listed. */
static int refetch_pending(struct reader *r, struct batch *b, unsigned s, long want, size_t *got)
{
    char start[BATCH_ENTRY_ID_MAX + 1], count[24];
    const char *from = r->recover_from[s];
    redisReply *pending, *reply = NULL;
    int rc = -1;

    *got = 0;
    if (strcmp(from, "0") == 0)
        snprintf(start, sizeof(start), "-");
    else
        snprintf(start, sizeof(start), "(%s", from); /* exclusive: after it */
    snprintf(count, sizeof(count), "%ld", want);
    pending = reader_commandv(
        r, 7,
        (const char *[]){"XPENDING", r->streams[s], READER_GROUP, start, "+", count, r->consumer});
    if (!pending || reply_is_error(r, pending, "XPENDING"))
        goto out;
    if (pending->type != REDIS_REPLY_ARRAY || pending->elements == 0) {
        rc = 0;
        goto out;
    }
    for (size_t k = 0; k < pending->elements; k++) {
        const redisReply *p = pending->element[k];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 1 ||
            p->element[0]->type != REDIS_REPLY_STRING) {
            reader_set_err(r, "XPENDING", "unexpected entry shape");
            goto out;
        }
    }
    for (size_t k = 0; k < pending->elements; k++) {
        if (xrange_send(r, r->streams[s], pending->element[k]->element[0]->str) < 0)
            goto out;
    }
    for (size_t k = 0; k < pending->elements; k++) {
        const redisReply *id = pending->element[k]->element[0];
        int added;
        if (!(reply = xrange_reply(r))) {
            xrange_skip(r, pending->elements - k - 1);
            goto out;
        }
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
            added = add_entry(r, b, s, reply->element[0], -1, 0);
        else if ((added = batch_add_ack_only(b, s, id->str, id->len)) < 0)
            reader_set_err(r, "batch", added == -ENOMEM ? "out of memory" : "bad entry id");
        reply_arena_free(reply);
        reply = NULL;
        if (added < 0) {
            reader_disconnect(r); /* replies may still be queued */
            goto out;
        }
    }
    *got = pending->elements;
    rc = 0;
out:
    reply_arena_free(reply);
    reply_arena_free(pending);
    return rc;
}

/* A read of this consumer's own pending entries, from where the last one
 * ended; a stream is done when its read comes back empty. The first
 * recovery after the reader's start (a restart) reads them with XREADGROUP,
 * which counts a delivery, so that an entry that crashes the aggregator each
 * time meets ARV_MAX_DELIVERIES; later ones (after a failed write, a read
 * error, a reconnect) leave the counts alone, which would otherwise grow with
 * every retry of a write that keeps failing. */
static int read_pending(struct reader *r, struct batch *b, const char **ids, size_t *got, long want)
{
    redisReply *reply = NULL;
    unsigned left = 0;
    int rc = -1;

    if (r->restarted) {
        for (unsigned i = 0; i < r->nstreams; i++)
            ids[i] = r->recover_from[i][0] ? r->recover_from[i] : NULL;
        if (!(reply = xreadgroup(r, ids, false, want)))
            return -1;
        r->restart_counted = true;
        if (reply_counts(r, reply, got) < 0 || pending_add(r, b, reply) < 0)
            goto out;
    } else {
        for (unsigned i = 0; i < r->nstreams; i++) {
            got[i] = 0;
            if (r->recover_from[i][0] && refetch_pending(r, b, i, want, &got[i]) < 0)
                goto out;
        }
    }
    /* Continue after the last id read, so an entry that stays pending (not
     * acknowledged) cannot stall recovery. */
    for (unsigned i = 0; i < r->nstreams; i++) {
        if (!r->recover_from[i][0])
            continue;
        if (got[i] == 0)
            r->recover_from[i][0] = '\0';
        for (size_t k = b->count; got[i] > 0 && k > 0; k--) {
            if (b->entries[k - 1].stream == i) {
                snprintf(r->recover_from[i], sizeof(r->recover_from[i]), "%s",
                         b->entries[k - 1].id);
                break;
            }
        }
        if (r->recover_from[i][0])
            left++;
    }
    r->recovering = left > 0;
    if (!r->recovering)
        r->restarted = false;
    rc = 0;
out:
    reply_arena_free(reply);
    return rc;
}

/* True if a read got no entry from any stream. */
static bool none_got(const struct reader *r, const size_t *got)
{
    for (unsigned i = 0; i < r->nstreams; i++) {
        if (got[i] > 0)
            return false;
    }
    return true;
}

int reader_read(struct reader *r, struct batch *b, enum reader_kind *kind, bool *caught_up)
{
    const char **ids = r->xids;
    size_t *got = r->xgot;
    redisReply *reply = NULL;
    long done = 0;
    int rc = -1;

    *caught_up = false;
    if (r->recovering) {
        *kind = READER_PENDING;
        return read_pending(r, b, ids, got, read_chunk(r, r->nstreams));
    }
    /* Up to `count` entries per stream, in pieces of read_chunk() each:
     * the reply in memory stays one piece's, whatever the batch size. Only
     * the first piece blocks; a stream whose piece comes back short is caught
     * up and read no more for this batch. Every stream still read has had the
     * same `done` entries. Once the batch is full (count, or `max_bytes` of
     * rows: memory bounded whatever the events' size), the read stops. While
     * every stream is still read, the next piece is sent before this one is
     * decoded, so that Redis serves it meanwhile. The streams read are the
     * reader's own ones, or all of them (reader_read_streams); a piece sent
     * ahead decided which. */
    *kind = READER_NEW;
    unsigned n = r->ahead != READER_AHEAD_NONE ? r->ahead_n : reader_read_streams(r);
    long count = read_count(r, n);
    for (unsigned i = 0; i < r->nstreams; i++)
        ids[i] = i < n ? ">" : NULL;
    *caught_up = true;
    for (bool first = true;; first = false) {
        long chunk = read_chunk(r, n); /* smaller after a piece of large entries */
        long want = count - done < chunk ? count - done : chunk, next;
        bool more = false, all = true;
        if (r->ahead != READER_AHEAD_NONE) {
            /* Sent ahead, from all the streams read (all are still read). */
            want = r->ahead_count;
            if (!(reply = take_ahead(r)) || reply_counts(r, reply, got) < 0)
                goto out;
            if (first && n == r->nstreams && none_got(r, got)) {
                /* Nothing then: wait for entries as any first piece does.
                 * A read of its own streams only takes the empty piece as
                 * it is: caught up at once, so that the open batch commits
                 * before the next read takes the other streams' entries
                 * (in this batch they would share rollup rows with their
                 * owner's, whose COMMIT its merge would wait for). */
                reply_arena_free(reply);
                reply = NULL;
                want = count < chunk ? count : chunk;
            }
        }
        if (!reply) {
            /* A stopping worker's last read waits for nothing. */
            bool block = first && !r->no_ahead;
            if (!(reply = xreadgroup(r, ids, block, want)) || reply_counts(r, reply, got) < 0)
                goto out;
        }
        done += want;
        next = count - done < chunk ? count - done : chunk;
        for (unsigned i = 0; i < n; i++) {
            if (!ids[i]) {
                all = false;
            } else if ((long)got[i] < want) {
                ids[i] = NULL; /* caught up */
                all = false;
            } else {
                more = true;
            }
        }
        if (more && all && !r->no_ahead && next > 0 && !batch_full(r, b) &&
            send_ahead(r, n, next) < 0)
            goto out;
        if (reply_add(r, b, reply) < 0)
            goto out;
        reply_arena_free(reply);
        reply = NULL;
        if (more && (done >= count || batch_full(r, b))) {
            *caught_up = false;
            more = false;
        }
        if (!more)
            break;
    }
    /* Once its own streams are caught up, a reader reads every stream, so
     * that no backlog waits while it is idle; once they have more again, its
     * own ones only. */
    r->wide = true;
    for (unsigned i = 0; i < r->nown && i < n; i++)
        r->wide = r->wide && !ids[i];
    rc = 0;
out:
    reply_arena_free(reply);
    return rc;
}

/* Claims up to `want` of stream `s`'s entries idle for `min_idle` ms, from
 * pending id `start` on, with their delivery counts from XPENDING. Sets *seen
 * to the pending entries listed and `last` to the last one's id. */
static int claim_chunk(struct reader *r, struct batch *b, unsigned s, const char *min_idle,
                       const char *start, long want, long max_deliveries, size_t *seen,
                       char last[BATCH_ENTRY_ID_MAX])
{
    char count[24];
    const char *pargv[] = {"XPENDING", r->streams[s], READER_GROUP, "IDLE",
                           min_idle,   start,         "+",          count};
    redisReply *pending = NULL;
    redisReply *claimed = NULL;
    const char **argv = NULL;
    size_t j = 0;
    int argc = 0, rc = -1;

    *seen = 0;
    last[0] = '\0';
    snprintf(count, sizeof(count), "%ld", want);
    pending = reader_commandv(r, 8, pargv);
    if (!pending || reply_is_error(r, pending, "XPENDING"))
        goto out;
    if (pending->type != REDIS_REPLY_ARRAY || pending->elements == 0) {
        rc = 0;
        goto out;
    }
    *seen = pending->elements;
    argv = calloc(6 + pending->elements, sizeof(*argv));
    if (!argv) {
        reader_set_err(r, "XCLAIM", "out of memory");
        goto out;
    }
    argv[argc++] = "XCLAIM";
    argv[argc++] = r->streams[s];
    argv[argc++] = READER_GROUP;
    argv[argc++] = r->consumer;
    argv[argc++] = min_idle;
    for (size_t k = 0; k < pending->elements; k++) {
        const redisReply *p = pending->element[k];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 ||
            p->element[0]->type != REDIS_REPLY_STRING || p->element[3]->type != REDIS_REPLY_INTEGER)
            continue;
        argv[argc++] = p->element[0]->str;
        snprintf(last, BATCH_ENTRY_ID_MAX, "%s", p->element[0]->str);
    }
    if (argc == 5) {
        rc = 0;
        goto out;
    }
    claimed = reader_commandv(r, argc, argv);
    if (!claimed || reply_is_error(r, claimed, "XCLAIM"))
        goto out;
    if (claimed->type == REDIS_REPLY_ARRAY) {
        /* XCLAIM answers in the order asked, leaving out entries that were
         * claimed meanwhile or deleted: match the delivery counts by id. */
        for (size_t k = 0; k < claimed->elements; k++) {
            const redisReply *e = claimed->element[k];
            if (!entry_id(e))
                continue;
            if (add_entry(r, b, s, e, pending_deliveries(pending, &j, entry_id(e)),
                          max_deliveries) < 0)
                goto out;
        }
    }
    rc = 0;
out:
    reply_arena_free(pending);
    reply_arena_free(claimed);
    free(argv);
    return rc;
}

/* Claims stream `s`'s entries idle for `min_idle` ms: up to its share of
 * `count` (every stream is claimed from), in pieces of READER_CHUNK like a
 * read, and no more once the batch's rows take `max_bytes`. Returns 0 when
 * none is left, 1 when there may be more, or -1. */
static int claim_stream(struct reader *r, struct batch *b, unsigned s, const char *min_idle,
                        long max_deliveries)
{
    char start[BATCH_ENTRY_ID_MAX + 1] = "-";
    char last[BATCH_ENTRY_ID_MAX];
    long total = 0, count = reader_per_stream(r->count, r->nstreams);

    for (;;) {
        long want = count - total < READER_CHUNK ? count - total : READER_CHUNK;
        size_t seen;
        if (claim_chunk(r, b, s, min_idle, start, want, max_deliveries, &seen, last) < 0)
            return -1;
        total += (long)seen;
        if ((long)seen < want || !last[0])
            return 0;
        if (total >= count || batch_full(r, b))
            return 1;                                /* maybe more */
        snprintf(start, sizeof(start), "(%s", last); /* exclusive: after the last one */
    }
}

/* Removes the group's consumers of stream KEYS[1] that hold nothing and have
 * been idle ARGV[2] ms, other than ARGV[3]; returns how many. A script, so
 * that no read lands between the check and the delete: DELCONSUMER drops the
 * consumer's pending entries, which would then never be delivered again. */
static const char forget_script[] =
    "local n = 0\n"
    "for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do\n"
    "  local f = {}\n"
    "  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end\n"
    "  if f['pending'] == 0 and f['idle'] >= tonumber(ARGV[2]) and f['name'] ~= ARGV[3] then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/* Removes consumers of stream `s` that hold nothing and have not read for
 * READER_FORGET_MS: default names are per process, so restarts leave them. A
 * live consumer removed by mistake is recreated by its next read. */
static int forget_idle_consumers(struct reader *r, unsigned s)
{
    char idle[24];
    redisReply *reply;
    int rc = -1;

    snprintf(idle, sizeof(idle), "%lld", (long long)READER_FORGET_MS);
    reply = reader_commandv(r, 7,
                            (const char *[]){"EVAL", forget_script, "1", r->streams[s],
                                             READER_GROUP, idle, r->consumer});
    if (reply && !reply_is_error(r, reply, "forget idle consumers"))
        rc = 0;
    reply_arena_free(reply);
    return rc;
}

int reader_claim(struct reader *r, struct batch *b, long min_idle_ms, long max_deliveries)
{
    char min_idle[24];
    int more = 0, rc;

    snprintf(min_idle, sizeof(min_idle), "%ld", min_idle_ms);
    for (unsigned k = 0; k < r->nstreams; k++) {
        unsigned s = (r->claim_next + k) % r->nstreams;
        /* A full batch takes no more (as a read); the next claim, at once,
         * begins with this stream. */
        if (k > 0 && batch_full(r, b)) {
            r->claim_next = s;
            return 1;
        }
        if ((rc = claim_stream(r, b, s, min_idle, max_deliveries)) < 0)
            return -1;
        more |= rc;
        /* Housekeeping: an error reply (scripts denied by an ACL, say) must
         * not cost the claimed entries. */
        if (forget_idle_consumers(r, s) < 0) {
            if (!reader_connected(r))
                return -1;
            log_warn("consumers_not_forgotten", LF_STR("stream", r->streams[s]),
                     LF_STR("error", r->errstr));
        }
    }
    return more;
}

void reader_recover(struct reader *r)
{
    /* Recovering again once the restart's deliveries were counted (a write
     * of the first recovery failed, a reconnect): count nothing more. */
    if (r->restart_counted)
        r->restarted = false;
    if (r->ahead != READER_AHEAD_NONE)
        reply_arena_free(take_ahead(r));
    for (unsigned i = 0; i < r->nstreams; i++)
        snprintf(r->recover_from[i], sizeof(r->recover_from[i]), "0");
    r->recovering = true;
}

void reader_acks_init(struct reader_acks *a)
{
    strbuf_init(&a->ids);
}

void reader_acks_deinit(struct reader_acks *a)
{
    strbuf_deinit(&a->ids);
}

void reader_acks_reset(struct reader_acks *a)
{
    strbuf_reset(&a->ids);
}

int reader_acks_add(struct reader_acks *a, const struct batch *b)
{
    for (size_t k = 0; k < b->count; k++) {
        const struct batch_entry *e = &b->entries[k];
        uint16_t stream = (uint16_t)e->stream;
        if (e->keep_pending)
            continue;
        strbuf_append(&a->ids, (const char *)&stream, sizeof(stream));
        strbuf_append(&a->ids, e->id, strlen(e->id) + 1);
    }
    return a->ids.oom ? -ENOMEM : 0;
}

int reader_ack(struct reader *r, const struct reader_acks *a)
{
    const char **argv = calloc(3 + READER_ACK_CHUNK, sizeof(*argv));
    redisReply *reply = NULL;
    int rc = -1;

    if (!argv) {
        reader_set_err(r, "XACK", "out of memory");
        return -1;
    }
    for (unsigned s = 0; s < r->nstreams; s++) {
        size_t off = 0;
        while (off < a->ids.len) {
            int argc = 3;
            argv[0] = "XACK";
            argv[1] = r->streams[s];
            argv[2] = READER_GROUP;
            while (off < a->ids.len && argc < 3 + READER_ACK_CHUNK) {
                uint16_t stream;
                const char *id = a->ids.data + off + sizeof(stream);
                memcpy(&stream, a->ids.data + off, sizeof(stream));
                off += sizeof(stream) + strlen(id) + 1;
                if (stream == s)
                    argv[argc++] = id;
            }
            if (argc == 3)
                continue;
            reply = reader_commandv(r, argc, argv);
            if (!reply || reply_is_error(r, reply, "XACK"))
                goto out;
            reply_arena_free(reply);
            reply = NULL;
        }
    }
    rc = 0;
out:
    reply_arena_free(reply);
    free(argv);
    return rc;
}

/* Keeps entry i's payload from an XRANGE reply for it. */
static int keep_payload(struct reader *r, struct batch *b, size_t i, const redisReply *reply)
{
    const redisReply *e = NULL;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
        reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2)
        e = reader_map_get(reply->element[0]->element[1], "e");
    if (!e || e->type != REDIS_REPLY_STRING) {
        /* Deleted from the stream since it was read (XDEL, a foreign trim):
         * like a pending entry deleted, it is only acknowledged; a dead
         * letter without its payload could not be replayed. */
        log_warn("payload_gone", LF_STR("stream", r->streams[b->entries[i].stream]),
                 LF_STR("entry_id", b->entries[i].id), LF_STR("action", "acknowledged only"));
        b->entries[i].kind = BATCH_ACK_ONLY;
        return 0;
    }
    return batch_set_payload(b, i, e->str, e->len);
}

int reader_fetch_payloads(struct reader *r, struct batch *b, const size_t *idx, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t k = n - done < READER_ACK_CHUNK ? n - done : READER_ACK_CHUNK;
        if (!r->ctx) {
            reader_set_err(r, "XRANGE", "not connected");
            return -1;
        }
        if (settle_ahead(r, "XRANGE") < 0)
            return -1;
        for (size_t j = done; j < done + k; j++) {
            const struct batch_entry *e = &b->entries[idx[j]];
            if (xrange_send(r, r->streams[e->stream], e->id) < 0)
                return -1;
        }
        for (size_t j = done; j < done + k; j++) {
            redisReply *reply = xrange_reply(r);
            if (!reply) {
                xrange_skip(r, done + k - j - 1);
                return -1;
            }
            int rc = keep_payload(r, b, idx[j], reply);
            reply_arena_free(reply);
            if (rc < 0) {
                reader_set_err(r, "batch", "out of memory");
                reader_disconnect(r); /* replies may still be queued */
                return -1;
            }
        }
        done += k;
    }
    return 0;
}

const redisReply *reader_map_get(const redisReply *map, const char *key)
{
    for (size_t k = 0; map->type == REDIS_REPLY_ARRAY && k + 1 < map->elements; k += 2) {
        const redisReply *name = map->element[k];
        /* By length too: a field named "e\0x" is not "e". */
        if (name->type == REDIS_REPLY_STRING && name->len == strlen(key) &&
            memcmp(name->str, key, name->len) == 0)
            return map->element[k + 1];
    }
    return NULL;
}

/* The smallest of `a` and `b` ("" counts as none) into `out`. */
static void min_id(const char *a, const char *b, char *out, size_t outlen)
{
    uint64_t ams, aseq, bms, bseq;
    bool ha = reader_parse_id(a, &ams, &aseq);
    bool hb = reader_parse_id(b, &bms, &bseq);

    if (ha && (!hb || ams < bms || (ams == bms && aseq <= bseq)))
        snprintf(out, outlen, "%s", a);
    else if (hb)
        snprintf(out, outlen, "%s", b);
    else
        out[0] = '\0';
}

/* The smallest id after stream id `id` into `out`; false if `id` does not
 * parse. */
static bool id_after(const char *id, char *out, size_t outlen)
{
    uint64_t ms, seq;

    if (!reader_parse_id(id, &ms, &seq))
        return false;
    if (seq == UINT64_MAX)
        snprintf(out, outlen, "%" PRIu64 "-0", ms + 1);
    else
        snprintf(out, outlen, "%" PRIu64 "-%" PRIu64, ms, seq + 1);
    return true;
}

/* Trims stream `s` below what every consumer has acknowledged: entries up to
 * the group's last delivered id `last`, except those still pending (the
 * smallest is `smallest`, "" when none), both read before this call, so later
 * deliveries are kept. */
static int trim_stream(struct reader *r, unsigned s, const char *last, const char *smallest,
                       struct reader_stats *out)
{
    redisReply *reply = NULL;
    char after_last[BATCH_ENTRY_ID_MAX] = "";
    char minid[BATCH_ENTRY_ID_MAX];

    if (strcmp(last, "0-0") == 0 || !id_after(last, after_last, sizeof(after_last)))
        return 0; /* nothing delivered yet */
    min_id(after_last, smallest, minid, sizeof(minid));
    /* LIMIT 0: an approximate trim otherwise stops at 100 x
     * stream-node-max-entries (10,000 entries by default), which trims about
     * 1,000 entries/s per stream at one XTRIM per pass. Whole nodes go at
     * once, so even a long backlog's trim is quick. */
    reply = reader_commandv(
        r, 7, (const char *[]){"XTRIM", r->streams[s], "MINID", "~", minid, "LIMIT", "0"});
    if (!reply || reply_is_error(r, reply, "XTRIM")) {
        reply_arena_free(reply);
        return -1;
    }
    out->trimmed = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
    reply_arena_free(reply);
    return 0;
}

int64_t reader_floor_ms(int64_t time_ms, const char *pending_min, const char *first_new)
{
    const char *ids[2] = {pending_min, first_new};
    int64_t floor = time_ms;
    uint64_t ms, seq;

    for (unsigned k = 0; k < 2; k++) {
        if (!ids[k] || !ids[k][0])
            continue;
        if (!reader_parse_id(ids[k], &ms, &seq) || ms > (uint64_t)INT64_MAX)
            return 0;
        if ((int64_t)ms < floor)
            floor = (int64_t)ms;
    }
    return floor > 0 ? floor : 0;
}

bool reader_time_ms(struct reader *r, int64_t *out)
{
    redisReply *reply = reader_commandv(r, 1, (const char *[]){"TIME"});
    bool ok = reply && !reply_is_error(r, reply, "TIME") && reply->type == REDIS_REPLY_ARRAY &&
              reply->elements == 2 && reply->element[0]->type == REDIS_REPLY_STRING &&
              reply->element[1]->type == REDIS_REPLY_STRING;

    if (ok)
        *out = strtoll(reply->element[0]->str, NULL, 10) * 1000 +
               strtoll(reply->element[1]->str, NULL, 10) / 1000;
    reply_arena_free(reply);
    return ok && *out > 0;
}

/* The id of the first entry of stream `s` after `last` into `out` ("" when
 * there is none); false if refused. */
static bool first_after(struct reader *r, unsigned s, const char *last, char *out, size_t outlen)
{
    char after[BATCH_ENTRY_ID_MAX];
    redisReply *reply;
    bool ok;

    out[0] = '\0';
    if (!id_after(last, after, sizeof(after)))
        return false;
    reply =
        reader_commandv(r, 6, (const char *[]){"XRANGE", r->streams[s], after, "+", "COUNT", "1"});
    ok = reply && !reply_is_error(r, reply, "XRANGE") && reply->type == REDIS_REPLY_ARRAY;
    if (ok && reply->elements > 0) {
        const redisReply *e = reply->element[0];
        if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 &&
            e->element[0]->type == REDIS_REPLY_STRING)
            snprintf(out, outlen, "%s", e->element[0]->str);
        else
            ok = false;
    }
    reply_arena_free(reply);
    return ok;
}

long long reader_unacked(struct reader *r, const char *stream)
{
    redisReply *reply = reader_commandv(r, 2, (const char *[]){"XLEN", stream});
    long long len, n = -1;

    if (!reply || reply_is_error(r, reply, "XLEN") || reply->type != REDIS_REPLY_INTEGER)
        goto out;
    len = n = reply->integer;
    reply_arena_free(reply);
    reply = NULL;
    if (len == 0)
        return 0;
    /* An error reply (XINFO refused): XLEN stands. */
    if (!(reply = reader_commandv(r, 3, (const char *[]){"XINFO", "GROUPS", stream})))
        return -1;
    for (size_t k = 0; reply->type == REDIS_REPLY_ARRAY && k < reply->elements; k++) {
        const redisReply *g = reply->element[k], *name = reader_map_get(g, "name"), *v;
        if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, READER_GROUP) != 0)
            continue;
        v = reader_map_get(g, "lag");
        n = v && v->type == REDIS_REPLY_INTEGER ? v->integer : len;
        v = reader_map_get(g, "pending");
        n += v && v->type == REDIS_REPLY_INTEGER ? v->integer : 0;
    }
out:
    reply_arena_free(reply);
    return n;
}

int reader_stats(struct reader *r, unsigned i, bool trim, int64_t time_ms, struct reader_stats *out)
{
    redisReply *reply = NULL;
    char last[BATCH_ENTRY_ID_MAX] = "";
    char smallest[BATCH_ENTRY_ID_MAX] = "";
    char first_new[BATCH_ENTRY_ID_MAX] = "";
    size_t groups = 0;
    bool ours = false, floor_known = time_ms > 0, pending_known = false, settled = false;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->lag = -1;
    /* The floor's commands in this order (see reader_floor_ms): Redis's clock
     * first (`time_ms`, read before), then the group's last delivered id,
     * then its pending entries, then the first entry after that id. An entry
     * delivered meanwhile is then pending or acknowledged, and one added
     * meanwhile gets an id at or after the clock read. A refused one leaves
     * the floor unknown. */
    reply = reader_commandv(r, 3, (const char *[]){"XINFO", "GROUPS", r->streams[i]});
    if (!reply || reply_is_error(r, reply, "XINFO GROUPS"))
        goto out;
    for (size_t k = 0; reply->type == REDIS_REPLY_ARRAY && k < reply->elements; k++) {
        const redisReply *g = reply->element[k];
        const redisReply *name = reader_map_get(g, "name");
        const redisReply *v;
        groups++;
        if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, READER_GROUP) != 0)
            continue;
        ours = true;
        if ((v = reader_map_get(g, "pending")) && v->type == REDIS_REPLY_INTEGER)
            out->pending = v->integer;
        if ((v = reader_map_get(g, "lag")) && v->type == REDIS_REPLY_INTEGER)
            out->lag = v->integer;
        if ((v = reader_map_get(g, "last-delivered-id")) && v->type == REDIS_REPLY_STRING)
            snprintf(last, sizeof(last), "%s", v->str);
    }
    reply_arena_free(reply);
    reply = NULL;
    if (ours && r->stats_pause_ms > 0) {
        log_warn("failpoint_pause", LF_STR("failpoint", "stats_pause"),
                 LF_INT("ms", r->stats_pause_ms));
        nanosleep(
            &(struct timespec){r->stats_pause_ms / 1000, (r->stats_pause_ms % 1000) * 1000000},
            NULL);
        r->stats_pause_ms = 0;
    }
    if (ours) {
        reply = reader_commandv(r, 3, (const char *[]){"XPENDING", r->streams[i], READER_GROUP});
        if (!reply)
            goto out;
        pending_known = !reply_is_error(r, reply, "XPENDING") && reply->type == REDIS_REPLY_ARRAY;
        if (pending_known && reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_STRING)
            snprintf(smallest, sizeof(smallest), "%s", reply->element[1]->str);
        reply_arena_free(reply);
        reply = NULL;
        /* XINFO counted entries pending that XPENDING no longer shows: they
         * were acknowledged in between, or the group was destroyed and made
         * again (`last` is then the old group's, and its pending entries,
         * not yet read by the new one, would be trimmed away). Neither floor
         * nor trim this time: the next pass will tell. */
        settled = !(pending_known && out->pending > 0 && !smallest[0]);
        floor_known = floor_known && settled;
        /* Lag 0: nothing undelivered, no need to look. */
        if (floor_known && pending_known && out->lag != 0)
            floor_known = first_after(r, i, last, first_new, sizeof(first_new));
        if (!reader_connected(r))
            goto out;
        if (floor_known && pending_known)
            out->floor_ms = reader_floor_ms(time_ms, smallest, first_new);
    }
    reply = reader_commandv(r, 2, (const char *[]){"XLEN", r->streams[i]});
    if (!reply || reply_is_error(r, reply, "XLEN"))
        goto out;
    if (reply->type == REDIS_REPLY_INTEGER)
        out->length = reply->integer;
    /* Another group on the stream has its own progress: never trim under it.
     * A refused trim leaves the figures above good. */
    if (trim && groups == 1 && ours && last[0] && settled &&
        (!pending_known || trim_stream(r, i, last, smallest, out) < 0)) {
        if (!reader_connected(r))
            goto out;
        out->trim_failed = true;
    }
    rc = 0;
out:
    reply_arena_free(reply);
    return rc;
}
