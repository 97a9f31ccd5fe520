/* PostgreSQL advisory-lock keys shared by the aggregator's batches and arvctl.
 * A batch takes pg_advisory_xact_lock_shared(ARV_LOCK_ROLLUP_DAY, day) for every
 * UTC day it writes (days since 1970-01-01, ascending); `arvctl rollups rebuild`
 * takes the same key exclusively per day, so a rebuild never races a batch. */
#ifndef ARV_AGGREGATOR_LOCKS_H
#define ARV_AGGREGATOR_LOCKS_H

/* First key of the two-int advisory lock space: "arvR". */
#define ARV_LOCK_ROLLUP_DAY 0x61727652

/* Single-key lock for retention and partition upkeep: one aggregator at a time. */
#define ARV_LOCK_MAINTENANCE 0x6172764d

/* Single-key lock held by `arvctl dlq replay` while it replays ("arvD"). */
#define ARV_LOCK_DLQ_REPLAY 0x61727644

#endif
