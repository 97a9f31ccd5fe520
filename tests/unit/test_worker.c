/* Unit tests for aggregator/worker.c's pure part: the test-only failpoint spec, when a
 * write of several reads ends, the XADD delays kept for the freshness floors, and
 * which shards a worker owns (aggregator.c). */
#include <criterion/criterion.h>

#include "aggregator.h"
#include "worker.h"

Test(worker, failpoint_spec)
{
    struct worker_failpoint fp = {.after_commit = -1, .read_error = -1};

    cr_assert(worker_failpoint_parse(NULL, &fp));
    cr_assert(fp.after_commit == 0 && fp.read_error == 0);
    cr_assert(worker_failpoint_parse("", &fp));
    cr_assert(fp.after_commit == 0 && fp.read_error == 0);
    cr_assert(worker_failpoint_parse("after_commit:1", &fp));
    cr_assert(fp.after_commit == 1 && fp.read_error == 0);
    cr_assert(worker_failpoint_parse("after_commit:250", &fp));
    cr_assert_eq(fp.after_commit, 250);
    cr_assert(worker_failpoint_parse("read_error:3", &fp));
    cr_assert(fp.after_commit == 0 && fp.read_error == 3);
    cr_assert_not(worker_failpoint_parse("after_commit:0", &fp));
    cr_assert_not(worker_failpoint_parse("after_commit:", &fp));
    cr_assert_not(worker_failpoint_parse("after_commit:3x", &fp));
    cr_assert_not(worker_failpoint_parse("before_commit:3", &fp));
    cr_assert_not(worker_failpoint_parse("after_commit:-2", &fp));
    cr_assert_not(worker_failpoint_parse("read_error:0", &fp));
    cr_assert_not(worker_failpoint_parse("read_error", &fp));
    cr_assert(worker_failpoint_parse("stats_pause:3000", &fp));
    cr_assert(fp.stats_pause_ms == 3000 && fp.after_commit == 0 && fp.read_error == 0);
    cr_assert_not(worker_failpoint_parse("stats_pause:0", &fp));
}

/* Limits with `batch_size` entries and DELTAS_MAX bytes of deltas. */
#define DELTAS_MAX ((size_t)1 << 24)
#define lim(batch_size, linger_ms, max_ms)                                                         \
    (&(struct worker_write_limits){(batch_size), DELTAS_MAX, (linger_ms), (max_ms)})

/* When a write of several reads ends: each bound alone ends it, and nothing
 * else does. */
Test(worker, write_ends_at_each_bound)
{
    struct worker_write wr = {.entries = 5000, .reads = 2, .new_entries = true, .started_ms = 1000};

    cr_assert_not(worker_write_ends(&wr, lim(8000, 0, 500), false, 1499));
    cr_assert(worker_write_ends(&wr, lim(8000, 0, 500), true, 1499), "a read caught up");
    cr_assert(worker_write_ends(&wr, lim(5000, 0, 500), false, 1499), "batch size reached");
    cr_assert(worker_write_ends(&wr, lim(8000, 0, 500), false, 1500), "open max_ms");
    wr.reads = WORKER_WRITE_READS_MAX;
    cr_assert(worker_write_ends(&wr, lim(8000, 0, 500), false, 1499), "savepoints");
    wr.reads = 2;
    wr.deltas_bytes = DELTAS_MAX - 1;
    cr_assert_not(worker_write_ends(&wr, lim(8000, 0, 500), false, 1499));
    wr.deltas_bytes = DELTAS_MAX;
    cr_assert(worker_write_ends(&wr, lim(8000, 0, 500), false, 1499), "deltas' bytes");
    wr.deltas_bytes = 0;
    wr.new_entries = false;
    cr_assert(worker_write_ends(&wr, lim(8000, 0, 500), false, 1499), "pending or claimed entries");
}

/* A read that caught up ends a small write only once it has lingered; the
 * other bounds do not wait for that. */
Test(worker, caught_up_write_lingers)
{
    struct worker_write wr = {.entries = 300, .reads = 1, .new_entries = true, .started_ms = 1000};

    cr_assert_not(worker_write_ends(&wr, lim(8000, 250, 10000), true, 1249), "lingering");
    cr_assert(worker_write_ends(&wr, lim(8000, 250, 10000), true, 1250), "lingered long enough");
    wr.entries = WORKER_LINGER_MAX;
    cr_assert(worker_write_ends(&wr, lim(80000, 250, 10000), true, 1001),
              "large enough not to linger");
    wr.entries = 300;
    cr_assert_not(worker_write_ends(&wr, lim(8000, 250, 10000), false, 5000), "not caught up");
    cr_assert(worker_write_ends(&wr, lim(300, 250, 10000), true, 1001), "batch size reached");
    cr_assert(worker_write_ends(&wr, lim(8000, 250, 100), true, 1100), "open max_ms");
    wr.new_entries = false;
    cr_assert(worker_write_ends(&wr, lim(8000, 250, 10000), true, 1001),
              "pending or claimed entries");
}

/* The days whose partitions a read needs: its events' days not known,
 * each once, ascending; dead letters need none. */
Test(worker, partition_days_are_the_events_days_not_known)
{
    static const char *const streams[] = {"s"};
    const int64_t D = 86400000;
    const int64_t at[] = {30 * D + 5, 30 * D + 9, 12 * D, 31 * D, 12 * D + 1, 40 * D, 3 * D};
    struct batch b;
    struct worker_partitions known = {.lo = 30, .hi = 33, .extra = {40}, .nextra = 1};
    int64_t days[8];

    batch_init(&b, streams);
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        cr_assert_eq(batch_add_ack_only(&b, 0, "1-0", 3), 0);
        b.entries[i].kind = i == 6 ? BATCH_DEAD : BATCH_EVENT;
        b.entries[i].received_ms = at[i];
    }
    cr_assert_eq(worker_partition_days(&b, &known, days, 8), 1);
    cr_assert_eq(days[0], 12);
    b.entries[6].kind = BATCH_EVENT;
    cr_assert_eq(worker_partition_days(&b, &known, days, 8), 2);
    cr_assert(days[0] == 3 && days[1] == 12);
    cr_assert_eq(worker_partition_days(&b, &known, days, 1), 1, "at most max");
    known = (struct worker_partitions){.lo = 0, .hi = -1};
    cr_assert_eq(worker_partition_days(&b, &known, days, 8), 5, "nothing known");
    cr_assert(days[0] == 3 && days[1] == 12 && days[2] == 30 && days[3] == 31 && days[4] == 40);
    batch_deinit(&b);
}

/* The hourly window is exactly today - 1 .. today + 2, also after the
 * known days were forgotten (a 23514 retry empties them: lo 0, hi -1).
 * Before, the hourly job took the union with that, from day 0: every day
 * since 1970 counted as having a partition. */
Test(worker, partitions_window_is_the_hourly_days)
{
    struct worker_partitions k = {.lo = 0, .hi = -1, .extra = {7}, .nextra = 1};
    struct batch b;
    static const char *const streams[] = {"s"};
    int64_t days[4];

    worker_partitions_window(&k, 20000);
    cr_assert(k.lo == 19999 && k.hi == 20002 && k.nextra == 1);
    batch_init(&b, streams);
    cr_assert_eq(batch_add_ack_only(&b, 0, "1-0", 3), 0);
    b.entries[0].kind = BATCH_EVENT;
    b.entries[0].received_ms = 19990LL * 86400000;
    cr_assert_eq(worker_partition_days(&b, &k, days, 4), 1, "ten days back: not known");
    batch_deinit(&b);
}

/* Days ensured beside [lo, hi] are remembered, the oldest forgotten first. */
Test(worker, partitions_remember_the_latest_extra_days)
{
    struct worker_partitions k = {.lo = 0, .hi = -1};
    int64_t days[WORKER_PARTITIONS_EXTRA + 2];

    for (int i = 0; i < WORKER_PARTITIONS_EXTRA + 2; i++)
        days[i] = 100 + i;
    worker_partitions_add(&k, days, 2);
    cr_assert(k.nextra == 2 && k.extra[0] == 100 && k.extra[1] == 101);
    worker_partitions_add(&k, days + 2, WORKER_PARTITIONS_EXTRA - 1);
    cr_assert_eq(k.nextra, WORKER_PARTITIONS_EXTRA);
    cr_assert_eq(k.extra[0], 101, "the oldest forgotten");
    cr_assert_eq(k.extra[WORKER_PARTITIONS_EXTRA - 1], 100 + WORKER_PARTITIONS_EXTRA);
    worker_partitions_add(&k, days, WORKER_PARTITIONS_EXTRA + 2);
    cr_assert_eq(k.nextra, WORKER_PARTITIONS_EXTRA);
    cr_assert_eq(k.extra[0], 102, "the latest kept");
}

Test(worker, write_stays_open_less_than_the_claim_idle)
{
    cr_assert_eq(worker_write_max_ms(0), WORKER_WRITE_MAX_MS);
    cr_assert_eq(worker_write_max_ms(60000), WORKER_WRITE_MAX_MS);
    cr_assert_eq(worker_write_max_ms(2000), 1000);
    cr_assert_eq(worker_write_max_ms(1), 0);
}

/* The largest XADD delay is kept for one or two windows, then forgotten. */
Test(worker, delays_are_kept_for_a_window_or_two)
{
    struct worker_delays d;
    const int64_t W = WORKER_DELAYS_WINDOW_MS;

    worker_delays_init(&d);
    cr_assert_eq(worker_delays_max(&d, 1000), -1, "nothing read yet: unknown");
    worker_delays_note(&d, 0, 1000);
    cr_assert_eq(worker_delays_max(&d, 1000), 0);
    worker_delays_note(&d, 300, 1000);
    worker_delays_note(&d, 60000, 2000);
    worker_delays_note(&d, 500, 3000);
    worker_delays_note(&d, -5000, 3000); /* a collector clock ahead: nothing */
    cr_assert_eq(worker_delays_max(&d, 4000), 60000);
    /* The next window still holds it, the one after no longer. */
    worker_delays_note(&d, 200, W + 1000);
    cr_assert_eq(worker_delays_max(&d, W + 1000), 60000);
    cr_assert_eq(worker_delays_max(&d, 2 * W + 999), 60000);
    cr_assert_eq(worker_delays_max(&d, 2 * W + 1000), 200);
    cr_assert_eq(worker_delays_max(&d, 3 * W + 1000), 0);
    /* A silent spell longer than two windows forgets everything. */
    worker_delays_note(&d, 7000, 4 * W);
    cr_assert_eq(worker_delays_max(&d, 6 * W + 1), 0);
    worker_delays_deinit(&d);
}

/* A read's entries are shared by the streams it reads (16 shards took 16
 * reads' worth at once: 153 MB), at least READER_CHUNK_MIN each, never 0. */
Test(worker, read_max_is_shared_by_the_streams)
{
    cr_assert_eq(worker_read_max(200000), WORKER_READ_MAX);
    cr_assert_eq(worker_read_max(700), 700);
    cr_assert_eq(reader_per_stream(worker_read_max(200000), 1), WORKER_READ_MAX);
    cr_assert_eq(reader_per_stream(worker_read_max(200000), 16), WORKER_READ_MAX / 16);
    cr_assert_eq(reader_per_stream(worker_read_max(200000), 200), READER_CHUNK_MIN);
    cr_assert_eq(reader_per_stream(worker_read_max(700), 1), 700);
    cr_assert_eq(reader_per_stream(worker_read_max(700), 4), 175);
    cr_assert_eq(reader_per_stream(worker_read_max(700), 16), READER_CHUNK_MIN);
    cr_assert_eq(reader_per_stream(worker_read_max(1), 4), 1);
    cr_assert_eq(reader_per_stream(worker_read_max(50), 4), 50); /* small batches are tests */
}

/* A read into an open write takes what is left of the deltas bound, at the
 * write's deltas per entry so far; none without a write, never fewer than a
 * minimal piece. */
Test(worker, read_limit_near_the_deltas_bound)
{
    struct worker_write wr = {0};

    cr_assert_eq(worker_read_limit(&wr, lim(200000, 0, 500)), 0, "no write open");
    wr.entries = 10000;
    wr.deltas_bytes = 999999; /* 100 bytes per entry (99 + 1 for the rounding) */
    cr_assert_eq(worker_read_limit(&wr, lim(200000, 0, 500)), (DELTAS_MAX - 999999) / 100,
                 "far from it: 157,772, more than any read takes");
    wr.deltas_bytes = DELTAS_MAX - 500000; /* 16,277,216: 1,628 per entry */
    cr_assert_eq(worker_read_limit(&wr, lim(200000, 0, 500)), 307);
    cr_assert_eq(reader_per_stream(worker_read_limit(&wr, lim(200000, 0, 500)), 2), 153,
                 "shared by the streams");
    wr.deltas_bytes = DELTAS_MAX - 100;
    cr_assert_eq(worker_read_limit(&wr, lim(200000, 0, 500)), READER_CHUNK_MIN);
    wr.deltas_bytes = DELTAS_MAX + 100;
    cr_assert_eq(worker_read_limit(&wr, lim(200000, 0, 500)), READER_CHUNK_MIN, "past it");
}

/* worker w's shards, as "own|others" of shard indexes. */
static void streams_of(unsigned nstreams, unsigned nodes, unsigned per, unsigned w, char *out,
                       size_t outlen)
{
    unsigned idx[64], nown = 99, n = aggregator_worker_streams(nstreams, nodes, per, w, idx, &nown);
    size_t off = 0;
    cr_assert_leq(nown, n);
    for (unsigned i = 0; i < n; i++) {
        const char *sep = i == nown ? "|" : i > 0 ? "," : "";
        off += (size_t)snprintf(out + off, outlen - off, "%s%u", sep, idx[i]);
    }
    if (nown == n)
        snprintf(out + off, outlen - off, "|");
}

/* With a shard per worker or more on a node, each worker owns every per-th
 * of the node's shards and reads the others after them; with fewer, every
 * worker owns all of the node's. Shard i is on node i % nodes. */
Test(worker, own_shards_per_worker)
{
    static const struct {
        unsigned nstreams, nodes, per, w;
        const char *want;
    } cases[] = {
        {1, 1, 2, 0, "0|"}, /* one stream: both workers own it */
        {1, 1, 2, 1, "0|"},
        {2, 1, 2, 0, "0|1"},
        {2, 1, 2, 1, "1|0"},
        {5, 1, 2, 1, "1,3|0,2,4"},
        {4, 1, 1, 0, "0,1,2,3|"}, /* one worker owns every shard */
        /* 4 shards on 2 nodes: node 0 holds 0 and 2, node 1 holds 1 and 3. */
        {4, 2, 2, 0, "0|2"},
        {4, 2, 2, 1, "2|0"},
        {4, 2, 2, 2, "1|3"},
        {4, 2, 2, 3, "3|1"},
        /* 3 shards on 2 nodes: node 1 holds shard 1 alone, both its workers own it. */
        {3, 2, 2, 2, "1|"},
        {3, 2, 2, 3, "1|"},
        {3, 2, 2, 1, "2|0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char s[128];
        streams_of(cases[i].nstreams, cases[i].nodes, cases[i].per, cases[i].w, s, sizeof(s));
        cr_assert_str_eq(s, cases[i].want, "%u shards, %u nodes, %u per node, worker %u",
                         cases[i].nstreams, cases[i].nodes, cases[i].per, cases[i].w);
    }
}
