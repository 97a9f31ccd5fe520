/* The aggregator's worker thread: read a batch from Redis, write it to
 * PostgreSQL in one transaction, acknowledge after COMMIT; backoff on outages. */
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"

#define BACKOFF_MIN_MS      100
#define BACKOFF_MAX_MS      5000
#define STATS_INTERVAL_MS   1000  /* stream length and lag gauges */
#define TRIM_INTERVAL_MS    10000 /* XTRIM of acknowledged entries */
#define IDLE_PING_MS        1000 /* PG check while idle, floors marked current while Redis is away */
#define PARTITIONS_EVERY_MS (3600 * 1000)
#define FAILPOINT_EXIT      137 /* as if killed with SIGKILL */

/* Test-only failure injection (ARV_FAILPOINT, see worker.h): after_commit
 * _exit()s after the process's Nth committed batch, before the XACK, to prove
 * that a crash between COMMIT and XACK counts nothing twice; read_error fails
 * its Nth read after delivery, to prove such entries are read again. */
static struct worker_failpoint failpoint;
static atomic_long commits_done, reads_done;

/* "<prefix>N" (N >= 1) into *out: 1; another prefix: 0; a bad N: -1. */
static int failpoint_count(const char *spec, const char *prefix, long *out)
{
    size_t len = strlen(prefix);

    if (strncmp(spec, prefix, len) != 0)
        return 0;
    return parse_long(spec + len, 1, LONG_MAX, out) ? 1 : -1;
}

bool worker_failpoint_parse(const char *spec, struct worker_failpoint *fp)
{
    int rc;

    memset(fp, 0, sizeof(*fp));
    if (!spec || !*spec)
        return true;
    if ((rc = failpoint_count(spec, "after_commit:", &fp->after_commit)) == 0 &&
        (rc = failpoint_count(spec, "read_error:", &fp->read_error)) == 0)
        rc = failpoint_count(spec, "stats_pause:", &fp->stats_pause_ms);
    return rc > 0;
}

bool worker_write_ends(const struct worker_write *wr, const struct worker_write_limits *lim,
                       bool caught_up, int64_t now_ms)
{
    int64_t age = now_ms - wr->started_ms;

    return !wr->new_entries ||
           (caught_up && (age >= lim->linger_ms || wr->entries >= WORKER_LINGER_MAX)) ||
           wr->entries >= (size_t)lim->batch_size || wr->reads >= WORKER_WRITE_READS_MAX ||
           wr->deltas_bytes >= lim->deltas_max_bytes || age >= lim->max_ms;
}

void worker_delays_init(struct worker_delays *d)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
}

void worker_delays_deinit(struct worker_delays *d)
{
    pthread_mutex_destroy(&d->mu);
}

/* Starts a new window once the current one is WORKER_DELAYS_WINDOW_MS old. */
static void delays_rotate(struct worker_delays *d, int64_t now_ms)
{
    if (now_ms - d->cur_start < WORKER_DELAYS_WINDOW_MS)
        return;
    /* A window skipped whole (no entry for that long) held nothing. */
    d->prev = now_ms - d->cur_start < 2 * WORKER_DELAYS_WINDOW_MS ? d->cur : 0;
    d->cur = 0;
    d->cur_start = now_ms;
}

void worker_delays_note(struct worker_delays *d, int64_t delay_ms, int64_t now_ms)
{
    pthread_mutex_lock(&d->mu);
    delays_rotate(d, now_ms);
    if (delay_ms > d->cur)
        d->cur = delay_ms;
    d->primed = true;
    pthread_mutex_unlock(&d->mu);
}

int64_t worker_delays_max(struct worker_delays *d, int64_t now_ms)
{
    int64_t max;

    pthread_mutex_lock(&d->mu);
    delays_rotate(d, now_ms);
    max = !d->primed ? -1 : d->cur > d->prev ? d->cur : d->prev;
    pthread_mutex_unlock(&d->mu);
    return max;
}

int64_t worker_write_max_ms(long claim_idle_ms)
{
    if (claim_idle_ms > 0 && claim_idle_ms / 2 < WORKER_WRITE_MAX_MS)
        return claim_idle_ms / 2;
    return WORKER_WRITE_MAX_MS;
}

enum worker_dep worker_redis_state(struct worker *w)
{
    return (enum worker_dep)atomic_load(&w->redis_state);
}

enum worker_dep worker_pg_state(struct worker *w)
{
    return (enum worker_dep)atomic_load(&w->pg_state);
}

uint64_t worker_watch(struct worker *w, uint64_t now_ms, uint64_t stop_cut_ms)
{
    return w->store.call_mu_ready ? store_watch(&w->store, now_ms, stop_cut_ms) : 0;
}

/* Sleeps `ms`, waking early when asked to stop. */
static void worker_sleep(struct worker *w, long ms)
{
    struct timespec until;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        if (pthread_cond_timedwait(&w->wake, &w->mu, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&w->mu);
}

static void backoff_sleep(struct worker *w, long *backoff)
{
    worker_sleep(w, timeutil_jitter((unsigned)*backoff, &w->seed));
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
}

/* Marks Redis failed; logs only when it was not already down. */
static void redis_failed(struct worker *w)
{
    metric_inc(w->m.redis_errors);
    if (atomic_exchange(&w->redis_state, WORKER_DEP_DOWN) != WORKER_DEP_DOWN)
        log_error("redis_unavailable", LF_INT("worker", w->index),
                  LF_STR("host", w->reader.url.host), LF_INT("port", w->reader.url.port),
                  LF_STR("error", w->reader.errstr));
}

/* Redis answered a read's command with an error (NOPERM, BUSY, ...), the
 * connection kept: not ready, since nothing is consumed, until a read of new
 * entries succeeds (redis_ok). */
static void redis_refused(struct worker *w)
{
    atomic_store(&w->redis_state, WORKER_DEP_REFUSED);
    metric_inc(w->m.redis_errors);
    log_warn("stream_read_failed", LF_INT("worker", w->index), LF_STR("error", w->reader.errstr));
}

static void redis_ok(struct worker *w)
{
    /* Refused acknowledgements end only when they go through (a read made
     * while a write is open does not end them). */
    if (w->unacked.ids.len > 0 && atomic_load(&w->redis_state) == WORKER_DEP_ACKS_REFUSED)
        return;
    int was = atomic_exchange(&w->redis_state, WORKER_DEP_UP);

    if (was == WORKER_DEP_REFUSED)
        log_info("stream_reads_resumed", LF_INT("worker", w->index));
    else if (was == WORKER_DEP_ACKS_REFUSED)
        log_info("stream_acks_resumed", LF_INT("worker", w->index));
    else if (was != WORKER_DEP_UP)
        log_info("redis_connected", LF_INT("worker", w->index), LF_STR("host", w->reader.url.host),
                 LF_INT("port", w->reader.url.port), LF_STR("consumer", w->reader.consumer),
                 LF_INT("streams", w->nstreams));
}

/* Acknowledges `a`, entries committed. An error reply with the connection up
 * (NOPERM, say) keeps them in w->unacked, retried before the next read once
 * no write is open (no read is made meanwhile: each would only add to what
 * stays pending; a write kept open by the read in hand ends first); a lost
 * connection keeps them too, and they go after reconnecting. Either way they
 * stay pending until then, so a crash leaves them to be read again (their
 * event ids make that harmless). True once acknowledged; held ones going
 * through end the refusal (not a refusal of reads: a read ends that). */
static bool ack_committed(struct worker *w, struct reader_acks *a)
{
    if (reader_ack(&w->reader, a) == 0) {
        int was = WORKER_DEP_ACKS_REFUSED;
        reader_acks_reset(a);
        if (a == &w->unacked &&
            atomic_compare_exchange_strong(&w->redis_state, &was, WORKER_DEP_UP))
            log_info("stream_acks_resumed", LF_INT("worker", w->index));
        return true;
    }
    if (a != &w->unacked) {
        strbuf_append(&w->unacked.ids, a->ids.data, a->ids.len);
        reader_acks_reset(a);
        if (w->unacked.ids.oom) /* pending, read again or claimed: counted once */
            reader_acks_reset(&w->unacked);
    }
    if (!reader_connected(&w->reader)) {
        redis_failed(w);
        return false;
    }
    metric_inc(w->m.redis_errors);
    if (atomic_exchange(&w->redis_state, WORKER_DEP_ACKS_REFUSED) != WORKER_DEP_ACKS_REFUSED)
        log_error("stream_ack_failed", LF_INT("worker", w->index),
                  LF_STR("error", w->reader.errstr));
    return false;
}

/* Marks PostgreSQL failed with `st`; logs once per kind of failure. */
static void pg_failed(struct worker *w, enum store_status st)
{
    enum worker_dep dep = st == STORE_SCHEMA  ? WORKER_DEP_SCHEMA
                          : st == STORE_RETRY ? WORKER_DEP_ERRORS
                                              : WORKER_DEP_DOWN;

    metric_inc(w->m.db_errors);
    if (atomic_exchange(&w->pg_state, dep) != (int)dep)
        log_error(st == STORE_SCHEMA ? "postgresql_schema_missing" : "postgresql_unavailable",
                  LF_INT("worker", w->index), LF_STR("sqlstate", w->store.sqlstate),
                  LF_STR("error", w->store.errstr), LF_BOOL("connection_lost", st == STORE_CONN));
}

static void pg_ok(struct worker *w)
{
    if (atomic_exchange(&w->pg_state, WORKER_DEP_UP) != WORKER_DEP_UP)
        log_info("postgresql_connected", LF_INT("worker", w->index));
}

static void count_flush(struct worker *w, const struct store_counts *c)
{
    long dup = c->events - c->inserted - c->unknown;

    metric_add(w->m.inserted, (double)(c->inserted - c->bots));
    metric_add(w->m.bot, (double)c->bots);
    metric_add(w->m.duplicate, (double)(dup > 0 ? dup : 0));
    metric_add(w->m.unknown, (double)c->unknown);
    metric_add(w->m.invalid, (double)c->invalid);
    metric_add(w->m.dead_lettered, (double)c->other_dead);
    metric_add(w->m.dead_letters, (double)c->dead_letters);
}

/* Adds the content and user-agent caches' hits and misses since the last call
 * to their metrics (once per written batch). */
static void count_cache_lookups(struct worker *w)
{
    struct content_cache_stats now;

    content_cache_stats(w->contents, &now);
    metric_add(w->m.content_hit, (double)(now.hits - w->contents_seen.hits));
    metric_add(w->m.content_miss, (double)(now.misses - w->contents_seen.misses));
    w->contents_seen = now;
    if (w->ua) {
        struct ua_cache_stats ua;
        ua_cache_stats(w->ua, &ua);
        metric_add(w->m.ua_hit, (double)(ua.hits - w->ua_seen.hits));
        metric_add(w->m.ua_miss, (double)(ua.misses - w->ua_seen.misses));
        w->ua_seen = ua;
    }
}

/* Before a write of entries [first, first + n): resolves their content
 * (batch_resolve, which store_flush writes by) and reads back from Redis the
 * payloads of the events that become dead letters: those of unknown content,
 * or, with `all`, every one. False (Redis marked failed) if that fails. */
static bool resolve_entries(struct worker *w, size_t first, size_t n, bool all)
{
    struct batch *b = &w->batch;
    size_t k = 0;

    if (batch_resolve(b, first, n) < 0)
        return false;
    for (size_t i = first; i < first + n; i++) {
        const struct batch_entry *e = &b->entries[i];
        if (e->kind != BATCH_EVENT || e->payload_kept || (!all && e->ar_content_id))
            continue;
        if (k == w->idx_cap) {
            size_t cap = w->idx_cap ? w->idx_cap * 2 : 64;
            size_t *p = realloc(w->idx, cap * sizeof(*p));
            if (!p)
                return false;
            w->idx = p;
            w->idx_cap = cap;
        }
        w->idx[k++] = i;
    }
    if (k > 0 && reader_fetch_payloads(&w->reader, b, w->idx, k) < 0) {
        (reader_connected(&w->reader) ? redis_refused : redis_failed)(w);
        return false;
    }
    return true;
}

/* Writes the batch entry by entry after a row was rejected: each entry in its
 * own transaction; an entry PostgreSQL rejects becomes a db_rejected dead
 * letter (or, if even that fails, stays pending for a later claim); once the
 * worker is stopping, the entries not yet written stay pending. Returns
 * STORE_OK or the failure that stopped it (the caller retries the batch;
 * entries already written are deduplicated). */
static enum store_status flush_each(struct worker *w)
{
    struct batch *b = &w->batch;
    struct store_counts c;
    enum store_status st;

    for (size_t i = 0; i < b->count; i++) {
        struct batch_entry *e = &b->entries[i];
        if (e->kind == BATCH_ACK_ONLY || e->keep_pending)
            continue;
        if (atomic_load(&w->stop)) {
            /* Stopping: the rest stays pending, read again by this consumer
             * at its next start (or claimed), not written one by one now. */
            e->keep_pending = true;
            continue;
        }
        if (!resolve_entries(w, i, 1, false)) {
            e->keep_pending = true; /* delivered again later */
            continue;
        }
        st = store_flush(&w->store, b, i, 1, &c);
        if (st == STORE_DATA && e->kind == BATCH_EVENT) {
            log_warn("entry_rejected", LF_STR("stream", b->streams[e->stream]),
                     LF_STR("entry_id", e->id), LF_STR("sqlstate", w->store.sqlstate),
                     LF_STR("error", w->store.errstr));
            if (!resolve_entries(w, i, 1, true)) {
                e->keep_pending = true; /* delivered again later */
                continue;
            }
            if (e->kind == BATCH_ACK_ONLY) /* deleted from the stream meanwhile */
                continue;
            if (batch_reject(b, i, BATCH_REASON_REJECTED, w->store.errstr) < 0) {
                e->keep_pending = true;
                continue;
            }
            st = store_flush(&w->store, b, i, 1, &c);
        }
        if (st == STORE_DATA) {
            log_error("dead_letter_rejected", LF_STR("stream", b->streams[e->stream]),
                      LF_STR("entry_id", e->id), LF_STR("error", w->store.errstr));
            e->keep_pending = true;
            continue;
        }
        if (st != STORE_OK)
            return st;
        count_flush(w, &c);
    }
    return STORE_OK;
}

/* After PostgreSQL rejected a write of the batch alone (rolled back): writes
 * it entry by entry (flush_each) and acknowledges what was written, then
 * empties the batch. Returns STORE_OK or the failure that stopped it (the
 * batch is then kept, to be retried as it is). */
static enum store_status write_each(struct worker *w)
{
    enum store_status st;

    log_warn("batch_rejected", LF_INT("worker", w->index),
             LF_INT("entries", (long long)w->batch.count), LF_STR("sqlstate", w->store.sqlstate),
             LF_STR("error", w->store.errstr));
    memset(&w->wr, 0, sizeof(w->wr));
    reader_acks_reset(&w->acks);
    if ((st = flush_each(w)) != STORE_OK)
        return st;
    if (reader_acks_add(&w->acks, &w->batch) < 0) {
        /* Pending until claimed or read again: counted once all the same. */
        log_error("acks_not_kept", LF_INT("worker", w->index), LF_STR("error", "out of memory"));
        reader_acks_reset(&w->acks);
    } else {
        (void)ack_committed(w, &w->acks);
    }
    batch_reset(&w->batch);
    pg_ok(w);
    return STORE_OK;
}

static bool partition_known(const struct worker_partitions *k, int64_t day)
{
    if (day >= k->lo && day <= k->hi)
        return true;
    for (unsigned i = 0; i < k->nextra; i++)
        if (k->extra[i] == day)
            return true;
    return false;
}

size_t worker_partition_days(const struct batch *b, const struct worker_partitions *known,
                             int64_t *out, size_t max)
{
    size_t n = 0;
    int64_t last = INT64_MIN; /* entries come mostly in time order */

    for (size_t i = 0; i < b->count; i++) {
        const struct batch_entry *e = &b->entries[i];
        if (e->kind != BATCH_EVENT)
            continue;
        int64_t day = timeutil_period(e->received_ms, TIMEUTIL_DAY_MS);
        if (day == last || partition_known(known, day))
            continue;
        last = day;
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (out[mid] < day)
                lo = mid + 1;
            else
                hi = mid;
        }
        if ((lo < n && out[lo] == day) || n == max)
            continue;
        memmove(out + lo + 1, out + lo, (n - lo) * sizeof(*out));
        out[lo] = day;
        n++;
    }
    return n;
}

void worker_partitions_window(struct worker_partitions *known, int64_t today)
{
    known->lo = today - 1;
    known->hi = today + 2;
}

void worker_partitions_add(struct worker_partitions *known, const int64_t *days, size_t n)
{
    if (n > WORKER_PARTITIONS_EXTRA) {
        days += n - WORKER_PARTITIONS_EXTRA;
        n = WORKER_PARTITIONS_EXTRA;
    }
    if (known->nextra + n > WORKER_PARTITIONS_EXTRA) {
        unsigned drop = (unsigned)(known->nextra + n - WORKER_PARTITIONS_EXTRA);
        memmove(known->extra, known->extra + drop, (known->nextra - drop) * sizeof(*known->extra));
        known->nextra -= drop;
    }
    memcpy(known->extra + known->nextra, days, n * sizeof(*days));
    known->nextra += (unsigned)n;
}

/* Creates the day partitions that the batch's events need and `known` does
 * not hold: one statement per run of consecutive days. */
static enum store_status ensure_batch_partitions(struct worker *w, struct worker_partitions *known)
{
    int64_t days[BATCH_DAYS_BACK + BATCH_DAYS_AHEAD + 1];
    size_t n = worker_partition_days(&w->batch, known, days, sizeof(days) / sizeof(days[0]));
    enum store_status st;

    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && days[j] == days[j - 1] + 1; j++)
            ;
        if ((st = store_ensure_partitions(&w->store, days[i], days[j - 1])) != STORE_OK)
            return st;
    }
    worker_partitions_add(known, days, n);
    return STORE_OK;
}

/* Reports a refused stats or trim command: counted each time, logged once a
 * streak (`streak`: the last pass failed too; `*failed`: this pass did). */
static void upkeep_refused(struct worker *w, const char *event, unsigned i, bool streak,
                           bool *failed)
{
    metric_inc(w->m.redis_errors);
    if (!streak && !*failed)
        log_warn(event, LF_STR("stream", w->streams[i]), LF_STR("error", w->reader.errstr));
    *failed = true;
}

static void update_stats(struct worker *w, bool trim)
{
    struct reader_stats s;
    bool stats_failed = false, trim_failed = false, floor_failed = false;
    int64_t time_ms = 0;

    /* Redis's clock once, before every stream's figures (reader_stats). */
    if (!reader_time_ms(&w->reader, &time_ms) && !reader_connected(&w->reader))
        return;
    for (unsigned i = 0; i < w->nstreams; i++) {
        if (reader_stats(&w->reader, i, trim, time_ms, &s) < 0) {
            if (!reader_connected(&w->reader))
                return; /* an outage: the loop reports it */
            /* Refused (an ACL without XINFO, say): this stream's gauges
             * stand still. */
            upkeep_refused(w, "stream_stats_failed", i, w->stats_failing, &stats_failed);
            w->floor_ms[i] = 0; /* its row is only marked current */
            continue;
        }
        w->floor_ms[i] = s.floor_ms;
        if (s.floor_ms == 0) /* a refused TIME, XPENDING or XRANGE: stands still */
            upkeep_refused(w, "stream_floor_unknown", i, w->floor_failing, &floor_failed);
        if (s.trim_failed) /* an ACL without XTRIM, say: not trimmed */
            upkeep_refused(w, "stream_trim_failed", i, w->trim_failing, &trim_failed);
        metric_set(w->length[i], (double)s.length);
        metric_set(w->pending[i], (double)s.pending);
        /* Lag counts what is not yet in PostgreSQL: undelivered plus pending.
         * Without Redis's lag, the length is the best bound (acknowledged
         * entries are trimmed). */
        metric_set(w->lag[i], (double)(s.lag >= 0 ? s.lag + s.pending : s.length));
    }
    w->floors_due = true;
    if (w->floor_failing && !floor_failed)
        log_info("stream_floor_resumed", LF_INT("worker", w->index));
    w->floor_failing = floor_failed;
    if (w->stats_failing && !stats_failed)
        log_info("stream_stats_resumed", LF_INT("worker", w->index));
    w->stats_failing = stats_failed;
    /* A stream whose stats failed was not trimmed: no news of its trim. */
    if (trim && (trim_failed || !stats_failed)) {
        if (w->trim_failing && !trim_failed)
            log_info("stream_trim_resumed", LF_INT("worker", w->index));
        w->trim_failing = trim_failed;
    }
}

/* Writes the streams' freshness floors that update_stats() read, with the
 * largest XADD delay the process saw (store_put_floors); with `touch_only`
 * (Redis away), or before the process has read anything (no delay known),
 * only marks their rows current, so that what the streams still hold keeps
 * data_complete_until back. */
static enum store_status put_floors(struct worker *w, bool touch_only)
{
    int64_t delay = worker_delays_max(w->delays, (int64_t)timeutil_mono_ms());
    enum store_status st;

    w->floors_due = false;
    st = store_put_floors(&w->store, (const char *const *)w->streams,
                          touch_only || delay < 0 ? NULL : w->floor_ms, w->nstreams,
                          delay > 0 ? delay : 0, w->until_ms);
    for (unsigned i = 0; st == STORE_OK && i < w->nstreams; i++) {
        if (w->until_ms[i] > 0)
            metric_set(w->watermark[i], (double)w->until_ms[i] / 1000.0);
    }
    return st;
}

/* Gives up the open write after a failure: rolls it back and reads this
 * consumer's pending entries again, since the reads written into it are no
 * longer in memory (none was acknowledged: nothing is lost). */
static void abandon_write(struct worker *w)
{
    if (w->wr.reads > 0)
        log_warn("write_abandoned", LF_INT("worker", w->index),
                 LF_INT("entries", (long long)w->wr.entries), LF_INT("reads", w->wr.reads));
    store_abort(&w->store);
    reader_acks_reset(&w->acks);
    memset(&w->wr, 0, sizeof(w->wr));
    batch_reset(&w->batch);
    reader_recover(&w->reader);
}

/* Commits the open write and acknowledges its entries; empties the batch
 * unless `keep_read` (a read not yet written, for the next write). False
 * after a failure (marked, the write abandoned). */
static bool end_write(struct worker *w, bool keep_read)
{
    struct worker_write *wr = &w->wr;
    int64_t t0 = (int64_t)timeutil_mono_ms();
    enum store_status st = store_commit(&w->store, &w->batch, &wr->counts);

    /* PostgreSQL rejected the merge or the COMMIT (an hll_union of a rollup
     * row edited by hand, say): when the batch holds the whole write, it is
     * written entry by entry, the entries it keeps rejecting dead-lettered;
     * else its entries are read again, as pending reads, each a write of
     * its own, which then goes that way. Retried as it is, it would fail
     * for ever. */
    if (st == STORE_DATA && wr->reads == 1 && !keep_read && w->batch.count > 0 &&
        write_each(w) == STORE_OK)
        return true;
    if (st != STORE_OK) {
        pg_failed(w, st);
        abandon_write(w);
        return false;
    }
    pg_ok(w);
    wr->pg_ms += (int64_t)timeutil_mono_ms() - t0;
    count_flush(w, &wr->counts);
    metric_observe(w->m.batch_size, (double)wr->entries);
    count_cache_lookups(w);
    metric_observe(w->m.flush_duration, (double)wr->pg_ms / 1000.0);

    if (failpoint.after_commit > 0 &&
        atomic_fetch_add(&commits_done, 1) + 1 >= failpoint.after_commit) {
        log_warn("failpoint_exit", LF_STR("failpoint", "after_commit"),
                 LF_INT("commits", failpoint.after_commit));
        _exit(FAILPOINT_EXIT);
    }

    int64_t t_ack = (int64_t)timeutil_mono_ms();
    (void)ack_committed(w, &w->acks);
    /* The split is what bench/aggregator.sh reports per step. */
    log_debug("batch_written", LF_INT("worker", w->index),
              LF_INT("entries", (long long)wr->entries), LF_INT("reads", wr->reads),
              LF_INT("inserted", wr->counts.inserted), LF_INT("ms", (long long)wr->pg_ms),
              LF_INT("read_ms", (long long)wr->read_ms),
              LF_INT("deltas_bytes", (long long)wr->deltas_bytes),
              LF_BOOL("ids_slow", wr->counts.ids_slow), LF_INT("ids_ms", wr->counts.ids_us / 1000),
              LF_INT("raw_ms", wr->counts.raw_us / 1000),
              LF_INT("deltas_ms", wr->counts.deltas_us / 1000),
              LF_INT("merge_ms", wr->counts.merge_us / 1000),
              LF_INT("commit_ms", wr->counts.commit_us / 1000),
              LF_INT("ack_ms", (long long)((int64_t)timeutil_mono_ms() - t_ack)));
    memset(wr, 0, sizeof(*wr));
    if (!keep_read)
        batch_reset(&w->batch);
    else
        batch_forget_values(&w->batch); /* the read kept interns its own when written */
    return true;
}

long worker_read_limit(const struct worker_write *wr, const struct worker_write_limits *lim)
{
    if (wr->entries == 0)
        return 0;
    size_t per_entry = wr->deltas_bytes / wr->entries + 1;
    size_t room =
        lim->deltas_max_bytes > wr->deltas_bytes ? lim->deltas_max_bytes - wr->deltas_bytes : 0;
    size_t fit = room / per_entry;

    /* At most deltas_max_bytes: fits. A read whose first piece was sent
     * ahead (a backlog) takes that whole piece whatever this says. */
    return fit < READER_CHUNK_MIN ? READER_CHUNK_MIN : (long)fit;
}

long worker_read_max(long batch_size)
{
    return batch_size < WORKER_READ_MAX ? batch_size : WORKER_READ_MAX;
}

/* Warns of streams of another ARV_STREAM_SHARDS that still hold entries the
 * group has not acknowledged: after the setting changed, nobody reads them
 * (docs/aggregator.md, "Shards and workers"). Once per process and node. */
static void warn_left_behind(struct worker *w)
{
    for (unsigned i = 0; i < w->nleft_behind; i++) {
        long long n = reader_unacked(&w->reader, w->left_behind[i]);
        if (n < 0) {
            if (!reader_connected(&w->reader))
                return; /* checked at the next connect */
            log_warn("stream_left_behind_unknown", LF_STR("stream", w->left_behind[i]),
                     LF_STR("error", w->reader.errstr));
        } else if (n > 0) {
            log_warn("stream_left_behind", LF_STR("stream", w->left_behind[i]),
                     LF_INT("entries", n),
                     LF_STR("detail", "not read with this ARV_STREAM_SHARDS: drain it with the "
                                      "setting it was written with"));
        }
    }
    w->left_behind_checked = true;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    long redis_backoff = BACKOFF_MIN_MS, pg_backoff = BACKOFF_MIN_MS;
    int64_t next_stats = 0, next_trim = 0, next_idle_ping = 0, next_partitions = 0;
    int64_t next_claim = (int64_t)timeutil_mono_ms() + w->claim_idle_ms / 2;
    struct worker_partitions parts = {.lo = 0, .hi = -1};
    int64_t read_ms = 0; /* time the last read took (XREADGROUP + decode) */
    enum reader_kind kind = READER_NEW;
    bool caught_up = false;
    bool failing = false;              /* the last attempt failed: a stop need not wait for it */
    bool partitions_rechecked = false; /* for the read in hand: see below */
    enum store_status st;

    log_info("worker_started", LF_INT("worker", w->index), LF_STR("stream", w->streams[0]),
             LF_INT("streams", w->nstreams), LF_STR("consumer", w->reader.consumer));
    for (;;) {
        bool stopping = atomic_load(&w->stop);
        int64_t now = (int64_t)timeutil_mono_ms();

        /* An open write ends with the next read once stopping, and a read
         * sent ahead is read and written. */
        if (stopping && ((w->batch.count == 0 && !store_in_write(&w->store) &&
                          w->reader.ahead == READER_AHEAD_NONE) ||
                         failing || !reader_connected(&w->reader) || !store_connected(&w->store)))
            break;
        failing = true;

        if (!reader_connected(&w->reader)) {
            if (store_in_write(&w->store))
                abandon_write(w); /* the reconnect reads its entries again */
            if (reader_connect(&w->reader) < 0) {
                redis_failed(w);
                /* Keep PostgreSQL's readiness honest while Redis is away,
                 * and the streams' floor rows current, unmoved: what they
                 * still hold keeps readers' minimum back for as long as an
                 * aggregator runs, not only for the 10 minutes a row counts
                 * unrefreshed. PostgreSQL is connected here if need be (an
                 * aggregator started while its Redis is away). */
                if (w->stream_upkeep && !store_connected(&w->store) && now >= next_idle_ping &&
                    (st = store_connect(&w->store)) != STORE_OK)
                    pg_failed(w, st);
                if (store_connected(&w->store) && now >= next_idle_ping) {
                    next_idle_ping = now + IDLE_PING_MS;
                    st = w->stream_upkeep ? put_floors(w, true) : store_ping(&w->store);
                    if (st != STORE_OK)
                        pg_failed(w, st);
                }
                backoff_sleep(w, &redis_backoff);
                continue;
            }
            redis_ok(w);
            redis_backoff = BACKOFF_MIN_MS;
            if (w->stream_upkeep && !w->left_behind_checked)
                warn_left_behind(w);
        }

        /* Before PostgreSQL: the gauges go on while it is away. */
        if (w->stream_upkeep && now >= next_stats) {
            update_stats(w, now >= next_trim);
            if (now >= next_trim)
                next_trim = now + TRIM_INTERVAL_MS;
            next_stats = now + STATS_INTERVAL_MS;
            if (!reader_connected(&w->reader)) {
                redis_failed(w);
                continue;
            }
        }

        if (!store_connected(&w->store)) {
            st = store_connect(&w->store);
            if (st == STORE_OK) {
                int64_t today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
                st = store_ensure_partitions(&w->store, today - 1, today + 2);
                parts = (struct worker_partitions){0};
                worker_partitions_window(&parts, today);
                next_partitions = now + PARTITIONS_EVERY_MS;
            }
            if (st != STORE_OK) {
                pg_failed(w, st);
                /* Connected but not set up (a schema not migrated yet rolls
                 * the session's temporary tables back): start afresh. */
                store_disconnect(&w->store);
                backoff_sleep(w, &pg_backoff);
                continue;
            }
            pg_ok(w);
            pg_backoff = BACKOFF_MIN_MS;
        }

        if (now >= next_partitions && !store_in_write(&w->store)) {
            int64_t today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
            if ((st = store_ensure_partitions(&w->store, today - 1, today + 2)) != STORE_OK) {
                pg_failed(w, st);
                backoff_sleep(w, &pg_backoff);
                continue;
            }
            worker_partitions_window(&parts, today);
            next_partitions = now + PARTITIONS_EVERY_MS;
        }

        /* The floors read with the gauges, between writes (a write's open
         * transaction would hold the rows other aggregators update too). */
        if (w->floors_due && !store_in_write(&w->store) &&
            (st = put_floors(w, false)) != STORE_OK) {
            pg_failed(w, st);
            backoff_sleep(w, &pg_backoff);
            continue;
        }

        /* Committed entries whose XACK was refused go first: reading more
         * would only add to them. */
        if (w->unacked.ids.len > 0 && w->batch.count == 0 && !store_in_write(&w->store)) {
            if (!ack_committed(w, &w->unacked)) {
                backoff_sleep(w, &redis_backoff);
                continue;
            }
            redis_backoff = BACKOFF_MIN_MS;
        }

        if (w->batch.count == 0) {
            int rc = 0;
            partitions_rechecked = false; /* a read to come */
            if (caught_up && store_in_write(&w->store)) {
                /* The open write caught up and lingers: let entries gather,
                 * then read them at once (reads of a few entries each would
                 * cost more than the merges saved). */
                int64_t left = w->wr.started_ms + w->limits.linger_ms - (int64_t)timeutil_mono_ms();
                if (left > 0)
                    worker_sleep(w, left);
            }
            caught_up = false;
            w->batch.today = timeutil_period(timeutil_real_ms(), TIMEUTIL_DAY_MS);
            if (w->claim_idle_ms > 0 && now >= next_claim && !w->reader.recovering &&
                !store_in_write(&w->store) && !atomic_load(&w->stop)) {
                kind = READER_CLAIMED;
                rc = reader_claim(&w->reader, &w->batch, w->claim_idle_ms, w->max_deliveries);
                /* A dead consumer's backlog comes back a claim after another. */
                next_claim =
                    rc > 0 ? now
                           : now + (w->claim_idle_ms / 2 > 1000 ? w->claim_idle_ms / 2 : 1000);
                rc = rc > 0 ? 0 : rc;
                if (rc == 0 && w->batch.count > 0)
                    log_info("entries_claimed", LF_INT("worker", w->index),
                             LF_INT("count", (long long)w->batch.count));
            }
            if (rc == 0 && w->batch.count == 0) {
                /* Once stopping (maybe during the linger above), a read
                 * sends nothing ahead and waits for nothing. */
                w->reader.no_ahead = atomic_load(&w->stop);
                w->reader.limit = worker_read_limit(&w->wr, &w->limits);
                rc = reader_read(&w->reader, &w->batch, &kind, &caught_up);
                read_ms = (int64_t)timeutil_mono_ms() - now;
            }
            if (rc == 0 && w->batch.count > 0 && failpoint.read_error > 0 &&
                atomic_fetch_add(&reads_done, 1) + 1 == failpoint.read_error) {
                /* As a first piece that failed past its delivery would: none
                 * of the delivered entries is in the batch. */
                snprintf(w->reader.errstr, sizeof(w->reader.errstr), "failpoint read_error");
                batch_reset(&w->batch);
                rc = -1;
            }
            if (rc < 0 && store_in_write(&w->store))
                abandon_write(w);
            if (rc < 0 && reader_connected(&w->reader)) {
                /* An error reply, not an outage: log it and read on. Entries
                 * that the read delivered (in pieces before it, or in a
                 * piece that failed once delivered: the batch may hold none
                 * of them) are pending on this consumer: read them again. */
                reader_recover(&w->reader);
                batch_reset(&w->batch);
                redis_refused(w);
                backoff_sleep(w, &redis_backoff);
                continue;
            }
            if (rc < 0) {
                batch_reset(&w->batch);
                redis_failed(w);
                if (!reader_connected(&w->reader))
                    backoff_sleep(w, &redis_backoff);
                continue;
            }
            /* Reads refused (NOPERM on XREADGROUP, say) resume only with a
             * read of new entries: a read of pending ones (XPENDING and
             * XRANGE) or a claim may be allowed while XREADGROUP is not,
             * and counted as resumed they reset the backoff at every turn. */
            if (kind == READER_NEW || atomic_load(&w->redis_state) != WORKER_DEP_REFUSED) {
                redis_ok(w);
                redis_backoff = BACKOFF_MIN_MS;
            }
            failing = false;
            worker_delays_note(w->delays, w->batch.max_delay_ms, (int64_t)timeutil_mono_ms());
            if (w->batch.count == 0 && store_in_write(&w->store)) {
                /* Caught up with a write open: it ends here. */
                if (!end_write(w, false))
                    backoff_sleep(w, &pg_backoff);
                continue;
            }
            if (w->batch.count == 0) {
                /* Idle: check PostgreSQL every second. */
                if (now >= next_idle_ping) {
                    next_idle_ping = now + IDLE_PING_MS;
                    st = store_ping(&w->store);
                    if (st != STORE_OK)
                        pg_failed(w, st);
                    else
                        pg_ok(w);
                }
                continue;
            }
        }

        /* Write the read into the open write, or into a new one. A read of
         * pending or claimed entries, or one that needs a partition created
         * (DDL stays out of a long transaction), starts a write of its own. */
        int64_t day;
        if (store_in_write(&w->store) &&
            (kind != READER_NEW || worker_partition_days(&w->batch, &parts, &day, 1) > 0)) {
            if (!end_write(w, true)) {
                backoff_sleep(w, &pg_backoff);
                continue;
            }
        }
        /* A backlog: Redis serves the next read while this one is written.
         * (A failure here shows at the next use of the connection.) */
        if (kind == READER_NEW && !caught_up && !atomic_load(&w->stop))
            (void)reader_prefetch(&w->reader);
        int64_t t0 = (int64_t)timeutil_mono_ms();
        bool first_read = !store_in_write(&w->store);
        st = first_read ? ensure_batch_partitions(w, &parts) : STORE_OK;
        if (st == STORE_OK)
            st = store_resolve_content(&w->store, w->contents);
        if (st == STORE_OK && !resolve_entries(w, 0, w->batch.count, false)) {
            if (!first_read)
                abandon_write(w);
            backoff_sleep(w, &redis_backoff);
            continue;
        }
        if (st == STORE_OK)
            st = store_write(&w->store, &w->batch, 0, w->batch.count, &w->wr.counts);
        if (st == STORE_DATA && first_read && !partitions_rechecked &&
            strcmp(w->store.sqlstate, "23514") == 0) {
            /* "no partition of relation ... found for row": a day partition
             * dropped since it was ensured. Forget what was ensured and retry
             * the read once (its days are ensured again first) before going
             * entry by entry. */
            partitions_rechecked = true;
            parts = (struct worker_partitions){.lo = 0, .hi = -1};
            memset(&w->wr, 0, sizeof(w->wr)); /* the read stays: retried as it is */
            continue;
        }
        if (st == STORE_DATA && first_read) {
            /* Rolled back: find the rejected entries one by one, each written
             * and acknowledged on its own. */
            if ((st = write_each(w)) == STORE_OK) {
                failing = false;
                pg_backoff = BACKOFF_MIN_MS;
                continue;
            }
        }
        if (st == STORE_OK && reader_acks_add(&w->acks, &w->batch) < 0) {
            store_abort(&w->store);
            st = STORE_RETRY;
        }
        if (st != STORE_OK) {
            pg_failed(w, st);
            if (first_read)
                memset(&w->wr, 0, sizeof(w->wr)); /* the read stays: retried as it is */
            else
                abandon_write(w);
            backoff_sleep(w, &pg_backoff);
            continue;
        }
        failing = false;
        pg_ok(w);
        pg_backoff = BACKOFF_MIN_MS;
        if (w->wr.reads++ == 0)
            w->wr.started_ms = now;
        w->wr.entries += w->batch.count;
        w->wr.new_entries = kind == READER_NEW;
        w->wr.read_ms += read_ms;
        w->wr.pg_ms += (int64_t)timeutil_mono_ms() - t0;
        w->wr.deltas_bytes = rollup_group_bytes(&w->store.rollup) + batch_value_bytes(&w->batch);
        read_ms = 0;

        if (worker_write_ends(&w->wr, &w->limits, caught_up, (int64_t)timeutil_mono_ms()) ||
            atomic_load(&w->stop)) {
            if (!end_write(w, false))
                backoff_sleep(w, &pg_backoff);
        } else {
            batch_next(&w->batch);
        }
    }

    /* Committed entries whose XACK was refused: one more try, else they stay
     * pending, to be read again at the next start (or claimed). */
    if (w->unacked.ids.len > 0 && (!reader_connected(&w->reader) || !ack_committed(w, &w->unacked)))
        log_warn("worker_stopped_unacknowledged", LF_INT("worker", w->index));
    if (w->batch.count > 0)
        log_warn("worker_stopped_with_pending", LF_INT("worker", w->index),
                 LF_INT("entries", (long long)w->batch.count));
    /* The floors once more, with this worker's last entries acknowledged. */
    else if (w->stream_upkeep && reader_connected(&w->reader) && store_connected(&w->store) &&
             !store_in_write(&w->store)) {
        update_stats(w, false);
        if (reader_connected(&w->reader))
            (void)put_floors(w, false);
    }
    reader_disconnect(&w->reader);
    store_disconnect(&w->store);
    log_info("worker_stopped", LF_INT("worker", w->index));
    atomic_store(&w->finished, true);
    if (w->notify_fd >= 0) {
        ssize_t n;
        do {
            n = write(w->notify_fd, "x", 1);
        } while (n < 0 && errno == EINTR);
    }
    return NULL;
}

int worker_init(struct worker *w, unsigned index, const struct worker_config *cfg,
                const struct worker_metrics *m, int notify_fd)
{
    pthread_condattr_t attr;
    long read_max;
    int rc = -ENOMEM;

    memset(w, 0, sizeof(*w));
    if (!worker_failpoint_parse(getenv("ARV_FAILPOINT"), &failpoint))
        log_warn("failpoint_ignored", LF_STR("ARV_FAILPOINT", getenv("ARV_FAILPOINT")));
    w->index = index;
    w->seed = timeutil_jitter_seed(w);
    w->m = *m;
    w->notify_fd = notify_fd;
    w->claim_idle_ms = cfg->claim_idle_ms;
    w->stream_upkeep = cfg->stream_upkeep;
    w->left_behind = cfg->left_behind;
    w->nleft_behind = cfg->nleft_behind;
    w->max_deliveries = cfg->max_deliveries;
    atomic_init(&w->redis_state, WORKER_DEP_CONNECTING);
    atomic_init(&w->pg_state, WORKER_DEP_CONNECTING);
    atomic_init(&w->stop, false);
    atomic_init(&w->finished, false);

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        pthread_condattr_destroy(&attr);
        goto out;
    }
    if (pthread_cond_init(&w->wake, &attr) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_condattr_destroy(&attr);
        goto out;
    }
    pthread_condattr_destroy(&attr);
    w->sync_ready = true;

    w->nstreams = cfg->nstreams;
    w->streams = calloc(cfg->nstreams, sizeof(*w->streams));
    w->length = calloc(cfg->nstreams, sizeof(*w->length));
    w->lag = calloc(cfg->nstreams, sizeof(*w->lag));
    w->pending = calloc(cfg->nstreams, sizeof(*w->pending));
    w->watermark = calloc(cfg->nstreams, sizeof(*w->watermark));
    w->floor_ms = calloc(cfg->nstreams, sizeof(*w->floor_ms));
    w->until_ms = calloc(cfg->nstreams, sizeof(*w->until_ms));
    w->delays = cfg->delays;
    if (!w->streams || !w->length || !w->lag || !w->pending || !w->watermark || !w->floor_ms ||
        !w->until_ms)
        goto out;
    for (unsigned i = 0; i < cfg->nstreams; i++) {
        const char *label[] = {cfg->streams[i]};
        if (!(w->streams[i] = strdup(cfg->streams[i])))
            goto out;
        w->length[i] = metric_family_child(m->stream_length, label);
        w->lag[i] = metric_family_child(m->consumer_lag, label);
        w->pending[i] = metric_family_child(m->pending, label);
        w->watermark[i] = metric_family_child(m->watermark, label);
    }
    w->limits = (struct worker_write_limits){
        .batch_size = cfg->batch_size,
        .deltas_max_bytes = (size_t)cfg->batch_deltas_max_bytes,
        .linger_ms = cfg->batch_linger_ms,
        .max_ms = worker_write_max_ms(cfg->claim_idle_ms),
    };
    read_max = worker_read_max(cfg->batch_size);
    reader_acks_init(&w->acks);
    reader_acks_init(&w->unacked);
    batch_init(&w->batch, (const char *const *)w->streams);
    /* A read stops after the piece that reaches either bound. */
    if ((rc = batch_reserve(&w->batch, (size_t)read_max + READER_CHUNK,
                            (size_t)cfg->batch_max_bytes + (size_t)cfg->batch_max_bytes / 8)) < 0)
        goto out;
    rc = -ENOMEM; /* until the caches below exist */
    w->batch.store_full_ip = cfg->store_full_ip;
    if (!(w->contents =
              content_cache_new((size_t)cfg->content_cache_size, cfg->content_cache_ttl_s * 1000)))
        goto out;
    w->batch.contents = w->contents;
    w->batch.geoip = cfg->geoip;
    if (cfg->ua && !(w->ua = ua_cache_new(cfg->ua, (size_t)cfg->ua_cache_size)))
        goto out;
    w->batch.ua = w->ua;
    if ((rc = reader_init(&w->reader, cfg->redis, (const char *const *)w->streams, w->nstreams,
                          cfg->consumer, read_max, (size_t)cfg->batch_max_bytes,
                          cfg->batch_wait_ms)) < 0)
        goto out;
    w->reader.max_deliveries = cfg->max_deliveries;
    w->reader.nown = cfg->nown;
    w->reader.stats_pause_ms = failpoint.stats_pause_ms;
    if ((rc = store_init(&w->store, cfg->database_url, cfg->content_relation,
                         cfg->statement_timeout_ms)) < 0 ||
        (rc = rollup_reserve(&w->store.rollup, (size_t)cfg->batch_size)) < 0)
        goto out;
    w->store.breakdown_max_values = (unsigned)cfg->breakdown_max_values;
    rc = 0;
out:
    return rc;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    if (rc != 0)
        return -rc;
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w)
{
    if (!w->sync_ready)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->mu);
}

bool worker_finished(struct worker *w)
{
    return atomic_load(&w->finished);
}

void worker_join(struct worker *w)
{
    if (!w->started)
        return;
    pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_deinit(struct worker *w)
{
    worker_stop(w);
    worker_join(w);
    reader_deinit(&w->reader);
    store_deinit(&w->store);
    free(w->idx);
    reader_acks_deinit(&w->acks);
    reader_acks_deinit(&w->unacked);
    batch_deinit(&w->batch);
    content_cache_free(w->contents);
    w->contents = NULL;
    ua_cache_free(w->ua);
    w->ua = NULL;
    for (unsigned i = 0; w->streams && i < w->nstreams; i++)
        free(w->streams[i]);
    free(w->streams);
    free(w->length);
    free(w->lag);
    free(w->pending);
    free(w->watermark);
    free(w->floor_ms);
    free(w->until_ms);
    if (w->sync_ready) {
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->mu);
    }
    memset(w, 0, sizeof(*w));
}
