/* The aggregator's worker thread: owns one Redis node's reader and its own
 * PostgreSQL connection, and loops read -> write one transaction -> XACK,
 * riding out outages of either with backoff. Keeps dependency states and
 * metrics current for the loop thread. */
#ifndef ARV_AGGREGATOR_WORKER_H
#define ARV_AGGREGATOR_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "batch.h"
#include "content_cache.h"
#include "ua.h"
#include "reader.h"
#include "store.h"

struct metric;
struct metric_family;
struct geoip;

/* Metrics shared by every worker (owned by the registry). */
struct worker_metrics {
    struct metric *inserted;             /* aggregator_events_total{outcome="inserted"} */
    struct metric *duplicate;            /* ... outcome="duplicate" */
    struct metric *unknown;              /* ... outcome="unknown_content" */
    struct metric *invalid;              /* ... outcome="invalid" */
    struct metric *dead_lettered;        /* ... outcome="dead_lettered" (another reason) */
    struct metric *batch_size;           /* aggregator_batch_size */
    struct metric *flush_duration;       /* aggregator_flush_duration_seconds */
    struct metric *db_errors;            /* aggregator_db_errors_total */
    struct metric *redis_errors;         /* aggregator_redis_errors_total */
    struct metric *dead_letters;         /* aggregator_dead_letters_total */
    struct metric *bot;                  /* aggregator_events_total{outcome="bot"} */
    struct metric *content_hit;          /* aggregator_content_lookups_total{result="hit"} */
    struct metric *content_miss;         /* ... result="miss" */
    struct metric *ua_hit;               /* aggregator_ua_lookups_total{result="hit"} */
    struct metric *ua_miss;              /* ... result="miss" */
    struct metric_family *stream_length; /* aggregator_stream_length{stream} */
    struct metric_family *consumer_lag;  /* aggregator_consumer_lag{stream} */
    struct metric_family *pending;       /* aggregator_pending_entries{stream} */
    struct metric_family *watermark;     /* aggregator_stream_complete_until_seconds{stream} */
};

/* The largest delay seen between an event's received_at (the collector's
 * clock) and its stream entry's id (Redis's clock at the XADD) over the last
 * one or two windows of WORKER_DELAYS_WINDOW_MS, shared by a process's
 * workers: an entry not yet read may be as late, so a stream's floor (Redis's
 * clock) is moved back by it to give data_complete_until (the collectors'). */
struct worker_delays {
    pthread_mutex_t mu;
    int64_t cur, prev; /* the largest in the current and the previous window; 0: none */
    int64_t cur_start; /* monotonic start of the current window */
    bool primed;       /* a read was noted: until then the delays are unknown */
};

#define WORKER_DELAYS_WINDOW_MS (5 * 60 * 1000)

void worker_delays_init(struct worker_delays *d);
void worker_delays_deinit(struct worker_delays *d);

/* Notes a read whose largest delay was `delay_ms` (<= 0: none) at monotonic
 * `now_ms`. */
void worker_delays_note(struct worker_delays *d, int64_t delay_ms, int64_t now_ms);

/* The largest delay noted in the current and the previous window; -1 before
 * the first read was noted (a process that has read nothing yet knows of no
 * delay, and publishes no floor). */
int64_t worker_delays_max(struct worker_delays *d, int64_t now_ms);

/* What the worker is told; strings are copied. */
struct worker_config {
    const struct redis_url *redis; /* the node */
    const char *const *streams;    /* its node's stream shards, its own ones first */
    unsigned nstreams;
    unsigned nown;        /* streams[0..nown) are its own: it reads the others only while its
                             own are caught up (reader.nown); 0: all are */
    const char *consumer; /* name in the consumer group */
    bool stream_upkeep;   /* this worker updates the stream gauges and floors, and trims (one per
                             node) */
    const char *const *left_behind; /* with stream_upkeep: streams of another shard count to
                                       warn of if they hold entries (borrowed: outlive it) */
    unsigned nleft_behind;
    struct worker_delays *delays; /* the process's, shared */
    const char *database_url;
    const char *content_relation;
    long statement_timeout_ms; /* the PostgreSQL session's; a call unanswered longer is given up */
    long batch_size;           /* entries per write (transaction), read WORKER_READ_MAX at a time */
    long batch_max_bytes;      /* stop reading a batch once its rows take this much */
    long batch_deltas_max_bytes; /* end a write once its rollup deltas take this much */
    long breakdown_max_values;   /* distinct values per content, day and dimension; 0: any */
    long batch_wait_ms;          /* BLOCK per read */
    long batch_linger_ms;        /* a write that caught up stays open this long for more */
    long claim_idle_ms;          /* claim entries idle this long; 0: never */
    long max_deliveries;         /* dead-letter entries delivered this often */
    bool store_full_ip;          /* keep client IPs as received */
    long content_cache_size;     /* entries */
    long content_cache_ttl_s;    /* known entries trusted this long */
    const struct geoip *geoip;   /* shared, read-only; NULL: no GeoIP */
    const struct ua_db *ua;      /* shared, read-only; NULL: no user-agent parsing */
    long ua_cache_size;          /* parsed user agents cached */
};

/* Entries per read, shared by the worker's streams (worker_read_max): a write of up to
 * batch_size entries is made of several reads, each written as it comes and
 * then dropped, so memory holds one read whatever the batch size. */
#define WORKER_READ_MAX 10000

/* Reads per write at most: each takes a savepoint (a subtransaction id), and
 * PostgreSQL caches 64 of them per transaction. */
#define WORKER_WRITE_READS_MAX 32

/* A write open this long ends with its next read (and in half of
 * ARV_CLAIM_IDLE_MS when that is shorter): its entries stay pending until
 * COMMIT, and another aggregator would claim those idle for ARV_CLAIM_IDLE_MS. */
#define WORKER_WRITE_MAX_MS 10000

/* The write (one transaction) being made of one or more reads. */
struct worker_write {
    size_t entries;      /* of its reads */
    unsigned reads;      /* written into it so far */
    bool new_entries;    /* its reads are of new entries (not pending or claimed ones) */
    int64_t started_ms;  /* monotonic time of its first read */
    int64_t read_ms;     /* its reads' time: XREADGROUP + decode */
    int64_t pg_ms;       /* its time in PostgreSQL */
    size_t deltas_bytes; /* its rollup deltas' groups and breakdown values (see below) */
    struct store_counts counts;
};

/* When a write ends (see worker_write_ends). */
struct worker_write_limits {
    long batch_size;         /* entries */
    size_t deltas_max_bytes; /* rollup_group_bytes() + batch_value_bytes() */
    int64_t linger_ms;       /* a write that caught up stays open this long for more */
    int64_t max_ms;          /* longest a write stays open */
};

/* Day partitions of the raw table known to exist: the days [lo, hi] (ensured
 * at connect and every hour; none while lo > hi) and up to
 * WORKER_PARTITIONS_EXTRA other days that reads needed. */
#define WORKER_PARTITIONS_EXTRA 32
struct worker_partitions {
    int64_t lo, hi;
    int64_t extra[WORKER_PARTITIONS_EXTRA];
    unsigned nextra;
};

/* The UTC days of the batch's events (BATCH_EVENT entries: within
 * BATCH_DAYS_BACK/AHEAD of the read's day) whose partitions `known` does not
 * hold, distinct and ascending, into out[0..max); returns how many (at most
 * max). Pure. */
size_t worker_partition_days(const struct batch *b, const struct worker_partitions *known,
                             int64_t *out, size_t max);

/* Sets [lo, hi] to the days ensured at connect and every hour: today - 1 to
 * today + 2, whatever it held (days before it are no longer known from it:
 * retention may drop them; the extra days are kept). Pure. */
void worker_partitions_window(struct worker_partitions *known, int64_t today);

/* Notes days[0..n) as ensured (the oldest extra days are forgotten first). */
void worker_partitions_add(struct worker_partitions *known, const int64_t *days, size_t n);

/* A dependency as the worker last saw it. */
enum worker_dep {
    WORKER_DEP_CONNECTING, /* not tried yet */
    WORKER_DEP_UP,
    WORKER_DEP_DOWN,         /* unreachable or failing */
    WORKER_DEP_SCHEMA,       /* PostgreSQL answers but the schema is missing */
    WORKER_DEP_REFUSED,      /* Redis answers reads with errors (NOPERM, READONLY, ...) */
    WORKER_DEP_ACKS_REFUSED, /* Redis answers XACK with errors: committed entries held */
    WORKER_DEP_ERRORS        /* PostgreSQL answers with errors (disk full, read-only, ...) */
};

struct worker {
    unsigned index; /* for logs */
    unsigned seed;  /* backoff jitter */
    char **streams; /* stream names, owned */
    unsigned nstreams;
    struct worker_metrics m; /* copied; children owned by the registry */
    struct metric **length;  /* per stream children, owned array */
    struct metric **lag;
    struct metric **pending;
    struct metric **watermark;
    int64_t *floor_ms;            /* per stream: its floor at the last gauges (owned); 0: unknown */
    int64_t *until_ms;            /* per stream: its complete_until as last written (owned) */
    bool floor_failing;           /* the last floors were refused (TIME, XPENDING or XRANGE) */
    bool floors_due;              /* read since last written */
    struct worker_delays *delays; /* shared */
    long claim_idle_ms;
    long max_deliveries;
    bool stream_upkeep;             /* gauges, floors and trimming are this worker's to do */
    const char *const *left_behind; /* warn_left_behind's streams, borrowed */
    unsigned nleft_behind;
    bool left_behind_checked;
    bool stats_failing;                       /* the last gauges' commands were refused */
    bool trim_failing;                        /* the last trim was refused */
    struct reader reader;                     /* used only by the thread */
    struct store store;                       /* used only by the thread */
    struct content_cache *contents;           /* the registry cache; thread only */
    struct content_cache_stats contents_seen; /* stats already counted in metrics */
    struct ua_cache *ua;                      /* parsed user agents; thread only; NULL: off */
    struct ua_cache_stats ua_seen;            /* stats already counted in metrics */
    struct batch batch;                       /* the read in flight, kept until written */
    struct worker_write wr;                   /* the open write (store_in_write) */
    struct worker_write_limits limits;        /* when it ends */
    struct reader_acks acks;                  /* its entries, acknowledged after COMMIT */
    struct reader_acks unacked;               /* committed, their XACK refused: retried */
    size_t *idx;                              /* entry indexes, for fetch_payloads */
    size_t idx_cap;
    atomic_int redis_state; /* enum worker_dep */
    atomic_int pg_state;    /* enum worker_dep */
    atomic_bool stop;       /* asked to stop after the current batch */
    atomic_bool finished;   /* the thread has returned */
    pthread_mutex_t mu;     /* guards the sleep below */
    pthread_cond_t wake;    /* signalled by worker_stop() */
    int notify_fd;          /* one byte written here when the thread ends */
    pthread_t thread;
    bool started;    /* thread created */
    bool sync_ready; /* mu and wake initialised */
};

/* Prepares a worker (copies `cfg`; `m` copied, its pointers borrowed from the
 * registry). `notify_fd` (borrowed) gets one byte when the thread ends. Does
 * not connect. Returns 0 or a negative errno. */
int worker_init(struct worker *w, unsigned index, const struct worker_config *cfg,
                const struct worker_metrics *m, int notify_fd);

/* Starts the thread. Returns 0 or a negative errno. */
int worker_start(struct worker *w);

/* Asks the thread to stop once the batch in flight is written and
 * acknowledged (or at once while a dependency is down). Does not block. */
void worker_stop(struct worker *w);

/* True once the thread has returned (then worker_join() does not block). */
bool worker_finished(struct worker *w);

/* Waits for the thread. Blocks until it returns. */
void worker_join(struct worker *w);

/* Stops and joins the thread if running, then frees. Safe on a zeroed worker. */
void worker_deinit(struct worker *w);

/* A write that caught up with this many entries or more does not linger: it
 * amortises its merge already (the end of a backlog, say). */
#define WORKER_LINGER_MAX WORKER_READ_MAX

/* Whether the open write `wr` ends after its latest read: that read was of
 * pending or claimed entries (`new_entries` false), or it caught up and the
 * write has been open `linger_ms` or holds WORKER_LINGER_MAX entries, or the
 * write holds `batch_size` entries, WORKER_WRITE_READS_MAX reads or
 * `deltas_max_bytes` of rollup deltas (clients' distinct breakdown values
 * would otherwise grow them without bound), or has been open `max_ms` by
 * `now_ms`. A read that finds nothing new ends it too (the caller's). Pure. */
bool worker_write_ends(const struct worker_write *wr, const struct worker_write_limits *lim,
                       bool caught_up, int64_t now_ms);

/* The longest a write stays open with claims after `claim_idle_ms` (0: no
 * claims): WORKER_WRITE_MAX_MS, or half the claim idle if shorter. Pure. */
int64_t worker_write_max_ms(long claim_idle_ms);

/* Entries a read takes: WORKER_READ_MAX, or `batch_size` if smaller, shared
 * by the streams it reads (reader_per_stream), so that a read's memory does
 * not grow with the shards. Pure. */
long worker_read_max(long batch_size);

/* The entries (reader.limit) of the next read of new entries into
 * the open write `wr`, so that the read ends near `deltas_max_bytes` rather
 * than up to a whole read past it: what is left of that bound, over the
 * write's deltas per entry so far (usually more than an entry adds, as
 * groups and values repeat; not when new values follow repeated ones),
 * at least READER_CHUNK_MIN. 0 (no limit) when no write is open. Pure. */
long worker_read_limit(const struct worker_write *wr, const struct worker_write_limits *lim);

/* Test-only failure injection (ARV_FAILPOINT); 0: off. */
struct worker_failpoint {
    long after_commit;   /* "after_commit:N": _exit() after the Nth COMMIT, before XACK */
    long read_error;     /* "read_error:N": the Nth read of entries fails once they
                          * were delivered, none of them kept in the batch (as a
                          * failure past a piece's delivery would) */
    long stats_pause_ms; /* "stats_pause:MS": each worker's first stream gauges
                          * wait MS between XINFO GROUPS and XPENDING */
};

/* Parses the failpoint spec: NULL or "" -> all off, "after_commit:N",
 * "read_error:N" or "stats_pause:MS" (N, MS >= 1) -> that one. Returns false
 * on anything else. Pure. */
bool worker_failpoint_parse(const char *spec, struct worker_failpoint *fp);

/* From any thread: gives up the worker's call to PostgreSQL if it has gone
 * unanswered too long, or is still going at `stop_cut_ms` (store_watch).
 * Returns how long it had lasted if so, else 0. */
uint64_t worker_watch(struct worker *w, uint64_t now_ms, uint64_t stop_cut_ms);

/* Dependency states, readable from any thread. */
enum worker_dep worker_redis_state(struct worker *w);
enum worker_dep worker_pg_state(struct worker *w);

#endif
