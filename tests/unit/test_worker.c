/* Unit tests for aggregator/worker.c's pure part: the test-only failpoint spec, when a
 * write of several reads ends, a read's watermark. */
#include <criterion/criterion.h>

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
}

/* When a write of several reads ends: each bound alone ends it, and nothing
 * else does. */
Test(worker, write_ends_at_each_bound)
{
    struct worker_write wr = {.entries = 5000, .reads = 2, .new_entries = true, .started_ms = 1000};

    cr_assert_not(worker_write_ends(&wr, false, 8000, 0, 500, 1499));
    cr_assert(worker_write_ends(&wr, true, 8000, 0, 500, 1499), "a read caught up");
    cr_assert(worker_write_ends(&wr, false, 5000, 0, 500, 1499), "batch size reached");
    cr_assert(worker_write_ends(&wr, false, 8000, 0, 500, 1500), "open max_ms");
    wr.reads = WORKER_WRITE_READS_MAX;
    cr_assert(worker_write_ends(&wr, false, 8000, 0, 500, 1499), "savepoints");
    wr.reads = 2;
    wr.new_entries = false;
    cr_assert(worker_write_ends(&wr, false, 8000, 0, 500, 1499), "pending or claimed entries");
}

/* A read that caught up ends a small write only once it has lingered; the
 * other bounds do not wait for that. */
Test(worker, caught_up_write_lingers)
{
    struct worker_write wr = {.entries = 300, .reads = 1, .new_entries = true, .started_ms = 1000};

    cr_assert_not(worker_write_ends(&wr, true, 8000, 250, 10000, 1249), "lingering");
    cr_assert(worker_write_ends(&wr, true, 8000, 250, 10000, 1250), "lingered long enough");
    wr.entries = WORKER_LINGER_MAX;
    cr_assert(worker_write_ends(&wr, true, 80000, 250, 10000, 1001), "large enough not to linger");
    wr.entries = 300;
    cr_assert_not(worker_write_ends(&wr, false, 8000, 250, 10000, 5000), "not caught up");
    cr_assert(worker_write_ends(&wr, true, 300, 250, 10000, 1001), "batch size reached");
    cr_assert(worker_write_ends(&wr, true, 8000, 250, 100, 1100), "open max_ms");
    wr.new_entries = false;
    cr_assert(worker_write_ends(&wr, true, 8000, 250, 10000, 1001), "pending or claimed entries");
}

Test(worker, write_stays_open_less_than_the_claim_idle)
{
    cr_assert_eq(worker_write_max_ms(0), WORKER_WRITE_MAX_MS);
    cr_assert_eq(worker_write_max_ms(60000), WORKER_WRITE_MAX_MS);
    cr_assert_eq(worker_write_max_ms(2000), 1000);
    cr_assert_eq(worker_write_max_ms(1), 0);
}

/* A read's watermark: streams it caught up on are complete until the read;
 * one whose piece was full only until the newest event read from it. */
Test(worker, read_watermark_is_the_least_complete_stream)
{
    struct batch_entry entries[4] = {
        {.id = "900-0", .stream = 0, .received_ms = 1000},
        {.id = "2900-0", .stream = 0, .received_ms = 3000},
        {.id = "8900-0", .stream = 1, .received_ms = 9000},
        {.id = "9500-3", .stream = 1, .received_ms = 0}, /* a dead letter: no time */
    };
    struct batch b = {.entries = entries, .count = 4};
    bool all[2] = {true, true}, first_full[2] = {false, true}, both_full[2] = {false, false};

    cr_assert_eq(worker_read_watermark(&b, all, 2, 10000), 10000);
    /* Stream 1 caught up with events up to now, stream 0 still behind. */
    cr_assert_eq(worker_read_watermark(&b, first_full, 2, 10000), 3000);
    cr_assert_eq(worker_read_watermark(&b, both_full, 2, 10000), 3000);
    /* One stream: as before, the newest event when the read was full. */
    b.count = 2;
    cr_assert_eq(worker_read_watermark(&b, first_full, 1, 10000), 3000);
    cr_assert_eq(worker_read_watermark(&b, all, 1, 10000), 10000);
    /* A full stream without a decoded event: its entry ids' time. */
    entries[0].received_ms = entries[1].received_ms = 0;
    cr_assert_eq(worker_read_watermark(&b, first_full, 1, 10000), 2900);
    b.count = 4;
    cr_assert_eq(worker_read_watermark(&b, both_full, 2, 10000), 2900);
}
