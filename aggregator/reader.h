/* The aggregator's Redis side: one blocking hiredis connection (used only by the
 * worker thread) that reads a node's stream shards with XREADGROUP, recovers
 * its own pending entries after a restart, claims entries a dead consumer left
 * pending, acknowledges, and reads stream statistics and trims what is done. */
#ifndef ARV_AGGREGATOR_READER_H
#define ARV_AGGREGATOR_READER_H

#include <stdbool.h>
#include <stdint.h>

#include "batch.h"
#include "redis_conn.h"
#include "reply_arena.h"

#define READER_GROUP "arv-aggregators"
/* Entries per XREADGROUP: a batch is read in pieces of this many, shared by
 * the streams read (but at least READER_CHUNK_MIN per stream), so only one
 * piece's reply is in memory at a time. Claims take this many per stream. */
#define READER_CHUNK     2000
#define READER_CHUNK_MIN 100

/* A read of new entries asks for fewer per piece when the last piece's
 * largest entry was large (someone else's XADD with big fields: the
 * collector's are a few KB), so that a piece's reply, all streams together,
 * stays near this size. The first piece of such entries, and the one sent
 * ahead with it, still take READER_CHUNK entries of that size; so do claims
 * and the read of a consumer's own pending entries at its start. */
#define READER_PIECE_BYTES ((size_t)16 << 20)

struct redisContext;

/* What a read returned. */
enum reader_kind {
    READER_NEW,     /* new entries (XREADGROUP >) */
    READER_PENDING, /* this consumer's own pending entries, after a (re)start */
    READER_CLAIMED  /* entries claimed from another consumer that went idle */
};

/* An XREADGROUP of new entries sent before the read that takes it (see
 * reader_prefetch): Redis serves it while the worker writes to PostgreSQL. */
enum reader_ahead {
    READER_AHEAD_NONE,
    READER_AHEAD_SENT, /* sent, reply not received yet */
    READER_AHEAD_KEPT  /* reply received (another command came first) and kept */
};

/* One stream's state as Redis reports it. */
struct reader_stats {
    long long length;  /* XLEN */
    long long pending; /* delivered to the group, not acknowledged */
    long long lag;     /* not yet delivered to the group; -1 when Redis cannot tell */
    long long trimmed; /* entries the XTRIM removed */
    bool trim_failed;  /* the trim was refused (errstr says why); the rest is good */
    int64_t floor_ms;  /* reader_floor_ms(); 0 when unknown (a command refused) */
};

struct reader {
    struct redisContext *ctx;   /* NULL while disconnected */
    struct redis_url url;       /* the node */
    const char *const *streams; /* stream names, borrowed */
    unsigned nstreams;
    /* Reads of new entries read streams[0..nown) only (this reader's own
     * shards) until a read catches up on them, then every stream until one
     * of its own has more again (`wide`). 0 (the default) or nstreams: every
     * stream always. Set after reader_init(); claims, recovery and stream
     * statistics cover every stream either way. */
    unsigned nown;
    bool wide;
    char *consumer;   /* consumer name in the group, owned */
    long count;       /* entries per read, shared by the streams read (reader_per_stream) */
    long limit;       /* if > 0 and smaller, the next read of new entries' `count` */
    size_t max_bytes; /* a batch's rows stop reading at this size */
    size_t entry_max; /* bytes of the largest entry of the last piece of new entries */
    long block_ms;    /* BLOCK of a read of new entries (<= 1 s) */
    bool recovering;  /* still reading own pending entries */
    bool restarted;   /* the first recovery since reader_init() is not done: it counts a delivery */
    bool restart_counted; /* a read of that recovery has counted its deliveries */
    char (*recover_from)[BATCH_ENTRY_ID_MAX]; /* per stream: last pending id read; "" done */
    char errstr[256];                         /* last error, one line */
    const char **xargv;                       /* an XREADGROUP's words (10 + 2 per stream) */
    const char **xids;                        /* per stream: the id a read reads from */
    size_t *xgot;                             /* per stream: entries a piece returned */
    char xcount[24], xblock[24];              /* its COUNT and BLOCK */
    struct reply_arena arena;                 /* every reply of ctx is built here */
    enum reader_ahead ahead;                  /* a read of new entries sent ahead */
    struct redisReply *ahead_reply;           /* READER_AHEAD_KEPT: its reply */
    long ahead_count;                         /* its COUNT per stream */
    unsigned ahead_n;                         /* it reads streams[0..ahead_n) */
    struct reply_arena ahead_arena;           /* its replies: one kept does not pin `arena` */
    bool no_ahead;       /* the worker stops: send nothing ahead, and block on no read */
    unsigned claim_next; /* the stream the next claim begins with (one that ended full) */
    long stats_pause_ms; /* test failpoint: the next reader_stats() waits this long
                          * between XINFO GROUPS and XPENDING (then 0) */
    /* Own pending entries read again at the first recovery (after a restart
     * under the same consumer name) that were delivered this often before go
     * to the dead letters (max_deliveries), as claimed ones do; 0: never. Set
     * after reader_init(). */
    long max_deliveries;
};

/* Prepares a reader of `nstreams` streams (names borrowed, must outlive it) on
 * the node `url` (copied) as `consumer` (copied), reading batches of up to
 * `count` entries (shared by the streams read) that stop growing once their rows take
 * `max_bytes` (0: no limit), each read waiting up to `block_ms` for entries
 * (at most 1 s, so that a stop is seen). Does not connect. Returns 0 or
 * -ENOMEM. */
int reader_init(struct reader *r, const struct redis_url *url, const char *const *streams,
                unsigned nstreams, const char *consumer, long count, size_t max_bytes,
                long block_ms);

/* The COUNT per stream of a read of `total` entries from `n` streams: an
 * equal share, but at least READER_CHUNK_MIN (or `total` if smaller). */
long reader_per_stream(long total, unsigned n);

/* How many streams (the first ones) the next read of new entries reads. */
unsigned reader_read_streams(const struct reader *r);

/* Disconnects and frees. Safe on a zeroed reader. */
void reader_deinit(struct reader *r);

/* Connects (blocking, 2 s timeout), authenticates, selects the db and creates
 * the consumer group on every stream (from the stream's start, creating the
 * stream if needed; an existing group is kept). Starts recovery of this
 * consumer's pending entries. Returns 0, or -1 with `errstr` set. */
int reader_connect(struct reader *r);

/* Closes the connection if open; the next reader_connect() starts over. */
void reader_disconnect(struct reader *r);

/* True while a connection is open (it may still fail on the next command). */
bool reader_connected(const struct reader *r);

/* Reads the next entries into `b`: own pending entries while recovering,
 * else new ones (blocking up to block_ms unless `no_ahead`). `*caught_up` is
 * true when a read of new entries returned fewer than COUNT from every
 * stream. Returns 0 (the batch may be empty) or -1 with `errstr` set; on a
 * connection failure the reader is disconnected. A read of new entries sends
 * each next piece before it decodes the one it holds, and may leave the piece
 * after its last one sent ahead (when the batch's byte budget ends the read),
 * for the next read. */
int reader_read(struct reader *r, struct batch *b, enum reader_kind *kind, bool *caught_up);

/* Sends the first piece of the next read of new entries now, unless one is
 * already ahead, the reader is recovering or `no_ahead` is set: Redis
 * prepares it while the caller writes the entries it holds, and the next
 * reader_read() takes it. Its entries are delivered (pending on this
 * consumer) from now on: a worker that stops reads and writes them first; one
 * that fails leaves them to be read again as pending entries, or claimed.
 * Returns 0, or -1 with `errstr` set (then disconnected). */
int reader_prefetch(struct reader *r);

/* Reads back from the streams the payload (field `e`) of the entries idx[0..n)
 * of `b`, pipelined, and keeps it in the batch (batch_set_payload); an entry no
 * longer in its stream becomes BATCH_ACK_ONLY (logged). Returns 0, or -1 with
 * `errstr` set (disconnected, unless Redis answered with an error: NOPERM,
 * say). */
int reader_fetch_payloads(struct reader *r, struct batch *b, const size_t *idx, size_t n);

/* Claims up to COUNT entries per stream that have been pending for more than
 * `min_idle_ms` with any consumer, no further stream once the batch's rows
 * take the byte budget (the next claim begins with that stream). Entries
 * already delivered `max_deliveries` times or more go into `b` as dead
 * letters (reason max_deliveries) instead of events. Also removes consumers
 * that hold nothing and have been idle for a day (only logged if that fails
 * while connected). Returns 0, 1 when a stream may hold more such entries
 * than one claim takes, or one was left for the budget (claim again at
 * once), or -1 with `errstr` set. */
int reader_claim(struct reader *r, struct batch *b, long min_idle_ms, long max_deliveries);

/* The value of `key` in a flat [key, value, ...] reply array (an entry's
 * fields, a group of XINFO GROUPS), matched by length too (a field named
 * "e\0x" is not "e"); NULL if absent. */
const struct redisReply *reader_map_get(const struct redisReply *map, const char *key);

/* Stream entries to acknowledge once the transaction that wrote them has
 * committed: a batch's reads are written as they come and acknowledged
 * together. Per entry: its stream index (2 bytes, host order), its id and a
 * NUL, in `ids`. */
struct reader_acks {
    struct strbuf ids;
};

void reader_acks_init(struct reader_acks *a);
void reader_acks_deinit(struct reader_acks *a);
void reader_acks_reset(struct reader_acks *a);

/* Adds every entry of `b` but those marked keep_pending. Returns 0 or -ENOMEM. */
int reader_acks_add(struct reader_acks *a, const struct batch *b);

/* Acknowledges the entries of `a`. Returns 0 or -1 with `errstr` set. */
int reader_ack(struct reader *r, const struct reader_acks *a);

/* Starts reading this consumer's pending entries again from the start of
 * every stream (as after a reconnect): after a transaction that held entries
 * no longer in memory was rolled back. A read sent ahead is dropped: its
 * entries are pending too. */
void reader_recover(struct reader *r);

/* Reads stream `i`'s length, pending count, lag and freshness floor (with
 * `time_ms`, Redis's clock read before: 0 when unknown, which leaves the
 * floor unknown); when `trim` is set and this group is the stream's only
 * one, trims the entries every consumer has acknowledged (XTRIM MINID ~).
 * Returns 0 (a refused trim sets out->trim_failed and `errstr`; a refused
 * floor command leaves out->floor_ms 0), or -1 with `errstr` set. */
int reader_stats(struct reader *r, unsigned i, bool trim, int64_t time_ms,
                 struct reader_stats *out);

/* Entries of `stream` (any stream of this reader's node, not only its own)
 * that the group has not acknowledged: pending + lag (XLEN when Redis cannot
 * tell the lag, or the group does not exist there); 0 when the stream does
 * not exist. Returns -1 with `errstr` set on failure. */
long long reader_unacked(struct reader *r, const char *stream);

/* Redis's clock (TIME) in ms into *out; false if refused or malformed (or
 * the connection failed). */
bool reader_time_ms(struct reader *r, int64_t *out);

/* A stream's freshness floor, in Redis's clock (ms since the epoch): every
 * entry whose id's time is below it is acknowledged by the group, so in
 * PostgreSQL. The time part of the smaller of its oldest pending entry
 * `pending_min` and its first entry after the group's last delivered one
 * `first_new` ("" or NULL: none), or `time_ms` (Redis's clock read before
 * both: an entry added later gets an id at or after it) if smaller. 0 for an
 * id that does not parse. Pure. */
int64_t reader_floor_ms(int64_t time_ms, const char *pending_min, const char *first_new);

/* Parses a stream id "ms-seq" (or "ms"). Pure. */
bool reader_parse_id(const char *s, uint64_t *ms, uint64_t *seq);

#endif
