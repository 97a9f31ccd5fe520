/* The rollup deltas of one batch write, computed in the aggregator from the
 * events it counts: per UTC hour and content (every measure) and per UTC day,
 * content, dimension and value (the daily breakdown), with HLL sketches of the
 * session ids. Written in COPY binary format for the store to merge. Pure. */
#ifndef ARV_AGGREGATOR_ROLLUP_H
#define ARV_AGGREGATOR_ROLLUP_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "rollup_sql.h"
#include "strbuf.h"

/* The per-content and per-company rollups, in the order their deltas are
 * written (company rows last: they are the rows every batch shares). The
 * numbers are the `kind` column the store's SQL selects by. */
enum rollup_kind {
    ROLLUP_CONTENT_HOURLY = 0,
    ROLLUP_CONTENT_DAILY = 1,
    ROLLUP_COMPANY_HOURLY = 2,
    ROLLUP_COMPANY_DAILY = 3,
    ROLLUP_KINDS
};

/* The columns of rollup_write_measures()'s rows, in order: `at` is the hour or the day
 * (as a UTC midnight); project_id and content_id are NULL in company rows. */
#define ROLLUP_MEASURE_ROW_COLUMNS                                                                 \
    "kind, at, company_id, project_id, content_id, views, sessions, video_plays, duration_sum,"    \
    " duration_count, tq_excellent, tq_good, tq_fair, tq_poor, tq_other"

/* The columns of rollup_write_breakdown()'s rows (day: days since the epoch). */
#define ROLLUP_BREAKDOWN_ROW_COLUMNS                                                               \
    "day, company_id, project_id, content_id, dimension, value, views, sessions"

/* One group's sums. */
struct rollup_group {
    int64_t company_id; /* key, with project_id, content_id, period (and dim, value) */
    int64_t project_id; /* 0 in company groups */
    int64_t content_id; /* 0 in company groups */
    int64_t period;     /* hours or days since the epoch */
    uint32_t dim;       /* breakdown: index into batch_dim_names */
    uint32_t value;     /* breakdown: interned value id */
    int64_t views;
    int64_t video_plays; /* not in the breakdown, like the rest */
    int64_t duration_sum;
    int64_t duration_count;
    int64_t tq[BATCH_TQ_OTHER + 1];
    size_t first, nhashes; /* its pairs in the table's `order` */
};

/* Groups of one kind and every (group, session hash) pair added to them.
 * An event adds `stride` pairs in a row with one hash, kept once: the
 * breakdown's six per event cost 6 x 4 + 8 bytes, not 6 x 12. */
struct rollup_table {
    struct rollup_group *groups;
    size_t n, cap;
    uint32_t *slots;          /* open addressing: 0 free, else group index + 1 */
    size_t nslots;            /* a power of two, or 0 */
    unsigned stride;          /* pairs per hash */
    uint32_t *member;         /* group of each added pair */
    uint64_t *hash;           /* hash of pairs [k * stride, (k + 1) * stride) */
    size_t nadded, added_cap; /* pairs */
    uint32_t *order;          /* the pairs ordered by group (rollup_write_*) */
    size_t order_cap;
    uint64_t *scratch; /* room for the largest group's hashes (put_sketch) */
    size_t scratch_cap;
};

/* The breakdown value standing for every value past the cap, written as
 * ROLLUP_OTHER_TEXT (see rollup_cap_breakdown). */
#define ROLLUP_OTHER_VALUE UINT32_MAX

/* One day, content and dimension of the breakdown, as the value cap knows it. */
struct rollup_bkey {
    int64_t company_id;
    int64_t content_id;
    int64_t period;    /* days since the epoch */
    uint32_t dim;      /* index into batch_dim_names */
    uint32_t upper;    /* distinct values stored at most: learnt, plus those written since */
    uint32_t distinct; /* values in the write being capped */
    uint32_t stamp;    /* the write it was last seen in */
    bool known;        /* `upper` counts from a learnt number */
    bool capped;       /* this write would pass the cap: values admitted one by one */
};

/* What the cap remembers across writes: one entry per key seen (at most
 * ROLLUP_CAP_KEYS, then forgotten all at once and learnt again). */
struct rollup_caps {
    struct rollup_bkey *keys;
    size_t n, cap;
    uint32_t *slots; /* open addressing: 0 free, else key index + 1 */
    size_t nslots;   /* a power of two, or 0 */
    uint32_t stamp;
    uint32_t *group_key;  /* scratch: each breakdown group's key index */
    uint8_t *state;       /* scratch: each group new, stored or folded */
    uint32_t *idx;        /* scratch: keys to ask about */
    uint32_t *write_keys; /* scratch: the keys of the write being capped */
    size_t scratch_cap;
    uint64_t *stored; /* scratch: (key index << 32 | value id) of the values stored */
    size_t nstored, stored_cap;
    bool oom; /* a mark could not be kept */
};
#define ROLLUP_CAP_KEYS (1 << 17) /* 56 bytes each, and their slots */

struct rollup {
    struct rollup_table hourly;    /* per hour and content, from the events */
    struct rollup_table breakdown; /* per day, content, dimension and value */
    struct rollup_table derived;   /* the other kinds, one at a time, from `hourly` */
    struct rollup_caps caps;       /* the breakdown value cap's memory */
};

/* Initialises empty deltas. */
void rollup_init(struct rollup *r);

/* Frees their memory. */
void rollup_deinit(struct rollup *r);

/* Empties them, keeping the allocations. */
void rollup_reset(struct rollup *r);

/* Allocates room for the pairs of `events` events at once, so that deltas of
 * up to that many never grow by copying (which holds the old and the new
 * arrays at once). Returns 0 or -ENOMEM. */
int rollup_reserve(struct rollup *r, size_t events);

/* Bytes the groups and their slots take, the derived ones included: the part
 * of the deltas that grows with distinct keys (the pairs are reserved by
 * rollup_reserve). In use, not allocated: allocations stay after a reset, up
 * to about twice what was in use. */
size_t rollup_group_bytes(const struct rollup *r);

/* Counts event entry `i` of batch `b` (content resolved, new, not a bot's),
 * interning its breakdown values in `b`. Returns 0 or -ENOMEM. */
int rollup_add(struct rollup *r, struct batch *b, size_t i);

/* How the cap learns what is stored (the store's PostgreSQL queries).
 * `count` sets keys[idx[i]].upper to the number of distinct values stored for
 * each of the `n` keys; `values` calls `mark(mark_arg, idx[i], value, len)`
 * for every value stored for each of them. Each returns 0 or < 0 (an error,
 * which rollup_cap_breakdown returns). */
typedef void (*rollup_mark_fn)(void *mark_arg, uint32_t key, const char *value, size_t len);
struct rollup_cap_source {
    int (*count)(void *arg, struct rollup_bkey *keys, const uint32_t *idx, size_t n);
    int (*values)(void *arg, const struct rollup_bkey *keys, const uint32_t *idx, size_t n,
                  rollup_mark_fn mark, void *mark_arg);
    void *arg;
};

/* Keeps the write's breakdown to at most `max_values` distinct values per
 * day, content and dimension, stored ones included (0: no cap): a value past
 * it joins its key's ROLLUP_OTHER_VALUE group (views and sessions). Keys
 * whose stored count is unknown, or might pass half the cap with this write,
 * are counted through `src`; only those that would pass it have their stored
 * values read, which keep their rows, and their new values are admitted in
 * the order the write first saw them. Call once per write, after the last
 * rollup_add and before rollup_write_breakdown. Returns 0, -ENOMEM or a
 * source's error. */
int rollup_cap_breakdown(struct rollup *r, const struct batch *b, unsigned max_values,
                         const struct rollup_cap_source *src);

/* What the writers below call whenever `out` holds ROLLUP_PIECE bytes or
 * more, to take them away (0), or to stop the writer (< 0, which it returns). */
typedef int (*rollup_drain_fn)(void *arg);
#define ROLLUP_PIECE (256 * 1024)

/* Appends one row (ROLLUP_MEASURE_ROW_COLUMNS) in COPY binary format, without
 * the stream's header and trailer, per group of every kind to `out`, calling
 * `drain(arg)` (if not NULL) as it fills. Returns 0, -ENOMEM or what drain
 * returned. */
int rollup_write_measures(struct rollup *r, struct strbuf *out, rollup_drain_fn drain, void *arg);

/* Appends one row (ROLLUP_BREAKDOWN_ROW_COLUMNS) per day, content, dimension
 * and value to `out`, as rollup_write_measures; values are batch `b`'s. */
int rollup_write_breakdown(struct rollup *r, const struct batch *b, struct strbuf *out,
                           rollup_drain_fn drain, void *arg);

#endif
