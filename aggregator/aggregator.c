/* arv-aggregator's application: workers per Redis node, readiness, metrics and
 * the drain: stop after the batch in flight, join, then end the loop. */
#include "aggregator.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "redis_conn.h"
#include "retention.h"
#include "geoip.h"
#include "service.h"
#include "store.h"
#include "timeutil.h"
#include "ua.h"
#include "worker.h"

#define AGGREGATOR_MAX_NODES 64
#define CONSUMER_MAX         200
#define WATCH_EVERY_MS       250 /* aggregator_watch() */

const struct config_option aggregator_options[] = {
    CONFIG_COMMON_OPTIONS(struct aggregator_config, "0.0.0.0:8082"),
    {"batch-size", "ARV_BATCH_SIZE", CONFIG_INT, offsetof(struct aggregator_config, batch_size),
     "200000", NULL, 1, 320000,
     "stream entries per batch and worker, summed over its streams: one transaction, made of"
     " reads of up to 10000 entries shared by the streams read (at least 100 each;"
     " XREADGROUP pieces of 2000), each written as it comes"},
    {"batch-max-bytes", "ARV_BATCH_MAX_BYTES", CONFIG_INT,
     offsetof(struct aggregator_config, batch_max_bytes), "33554432", NULL, 1048576, 1073741824,
     "a read stops once its rows take this many bytes (memory per worker)"},
    {"batch-deltas-max-bytes", "ARV_BATCH_DELTAS_MAX_BYTES", CONFIG_INT,
     offsetof(struct aggregator_config, batch_deltas_max_bytes), "16777216", NULL, 1048576,
     1073741824,
     "a write (transaction) ends once its rollup deltas take this many bytes: their groups and"
     " the breakdown values they name, which clients choose (memory per worker)"},
    {"breakdown-max-values", "ARV_BREAKDOWN_MAX_VALUES", CONFIG_INT,
     offsetof(struct aggregator_config, breakdown_max_values), CONFIG_BREAKDOWN_MAX_VALUES_DEFAULT,
     NULL, 0, 1000000,
     "distinct values kept per content, UTC day and breakdown dimension; later ones are counted"
     " as (other) (0: no cap)"},
    {"workers", "ARV_WORKERS", CONFIG_INT, offsetof(struct aggregator_config, workers), "2", NULL,
     1, 16,
     "worker threads per Redis node, each its own consumer and PostgreSQL connection (one"
     " transaction at a time each)"},
    {"batch-wait-ms", "ARV_BATCH_WAIT_MS", CONFIG_INT,
     offsetof(struct aggregator_config, batch_wait_ms), "200", NULL, 1, 60000,
     "longest wait for new entries before a read returns (XREADGROUP BLOCK, at most 1 s at a "
     "time, so that a stop is seen at once)"},
    {"batch-linger-ms", "ARV_BATCH_LINGER_MS", CONFIG_INT,
     offsetof(struct aggregator_config, batch_linger_ms), "250", NULL, 0, 60000,
     "a write (transaction) of fewer than 10000 entries whose read caught up stays open this"
     " long for more, so that steady traffic merges into the rollups in fewer, larger batches"
     " (0: commit at once)"},
    {"consumer", "ARV_CONSUMER", CONFIG_STRING, offsetof(struct aggregator_config, consumer), NULL,
     NULL, 0, 0, "consumer name in the group arv-aggregators [default: hostname-pid]"},
    {"content-relation", "ARV_CONTENT_RELATION", CONFIG_STRING,
     offsetof(struct aggregator_config, content_relation), "analytics.ar_content", NULL, 0, 0,
     "table or view resolving content (id, unique_id, project_id, company_id)"},
    {"content-cache-size", "ARV_CONTENT_CACHE_SIZE", CONFIG_INT,
     offsetof(struct aggregator_config, content_cache_size), "100000", NULL, 1, 10000000,
     "content registry entries cached per worker (least recently used go first)"},
    {"content-cache-ttl-s", "ARV_CONTENT_CACHE_TTL_S", CONFIG_INT,
     offsetof(struct aggregator_config, content_cache_ttl_s), "60", NULL, 1, 86400,
     "seconds a cached content entry is used before it is read again (unknown: every batch)"},
    {"claim-idle-ms", "ARV_CLAIM_IDLE_MS", CONFIG_INT,
     offsetof(struct aggregator_config, claim_idle_ms), "60000", NULL, 0, 86400000,
     "claim entries another consumer left pending this long (0: never)"},
    {"statement-timeout-ms", "ARV_STATEMENT_TIMEOUT_MS", CONFIG_INT,
     offsetof(struct aggregator_config, statement_timeout_ms), "60000", NULL, 100, 3600000,
     "statement_timeout of the workers' PostgreSQL sessions; a call the server leaves"
     " unanswered a quarter longer (at most 15 s more: a server that stopped) is given up as a"
     " lost connection"},
    {"max-deliveries", "ARV_MAX_DELIVERIES", CONFIG_INT,
     offsetof(struct aggregator_config, max_deliveries), "10", NULL, 1, 1000000,
     "dead-letter an entry already delivered this many times (claimed, or read again by its"
     " owner after a restart)"},
    {"store-full-ip", "ARV_STORE_FULL_IP", CONFIG_BOOL,
     offsetof(struct aggregator_config, store_full_ip), "0", NULL, 0, 0,
     "store client IPs as received (default: IPv4 /24, IPv6 /48)"},
    /* Enrichment (geoip.c, ua.c). */
    {"geoip-db", "ARV_GEOIP_DB", CONFIG_STRING_OFF, offsetof(struct aggregator_config, geoip_db),
     "", NULL, 0, 0,
     "MaxMind DB (GeoIP2/GeoLite2 City) filling country and city where the client sent none;"
     " empty: off"},
    {"ua-regexes", "ARV_UA_REGEXES", CONFIG_STRING_OFF,
     offsetof(struct aggregator_config, ua_regexes), UA_DEFAULT_REGEXES, NULL, 0, 0,
     "uap-core regexes.yaml: device type, browser and OS from the user agent, and bots;"
     " empty: off"},
    {"ua-cache-size", "ARV_UA_CACHE_SIZE", CONFIG_INT,
     offsetof(struct aggregator_config, ua_cache_size), "10000", NULL, 1, 10000000,
     "parsed user agents cached per worker (least recently used go first)"},
    /* Retention (retention.c). */
    {"raw-retention-days", "ARV_RAW_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct aggregator_config, raw_retention_days), CONFIG_RAW_RETENTION_DAYS_DEFAULT,
     NULL, 1, 100000, "drop raw day partitions older than this many days"},
    {"dedupe-retention-days", "ARV_DEDUPE_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct aggregator_config, dedupe_retention_days),
     CONFIG_DEDUPE_RETENTION_DAYS_DEFAULT, NULL, 0, 100000,
     "delete dedupe ids (analytics.event_ids) older than this many days, at least 1: an event"
     " id seen again within it is not counted twice (0: ARV_RAW_RETENTION_DAYS)"},
    {"dead-letter-retention-days", "ARV_DEAD_LETTER_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct aggregator_config, dead_letter_retention_days), "0", NULL, 0, 100000,
     "delete dead letters (analytics.dead_letters) written more than this many days ago"
     " (0: ARV_RAW_RETENTION_DAYS, past which arvctl dlq replay skips their events)"},
    {"hourly-retention-days", "ARV_HOURLY_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct aggregator_config, hourly_retention_days),
     CONFIG_HOURLY_RETENTION_DAYS_DEFAULT, NULL, 1, 100000,
     "delete hourly rollup rows older than this many days (daily rollups are kept)"},
    {"retention-interval-s", "ARV_RETENTION_INTERVAL_S", CONFIG_INT,
     offsetof(struct aggregator_config, retention_interval_s), "3600", NULL, 1, 86400,
     "seconds between retention runs (partitions ahead, drops); the first runs at start"},
    {"retention-slice-pages", "ARV_RETENTION_SLICE_PAGES", CONFIG_INT,
     offsetof(struct aggregator_config, retention_slice_pages), "16384", NULL, 1, 1048576,
     "pages of analytics.event_ids (8 KB each) per retention DELETE: dedupe ids are deleted once"
     " a day, in statements over that many pages each"},
};
const size_t aggregator_options_len = sizeof(aggregator_options) / sizeof(aggregator_options[0]);

/* Streams another ARV_STREAM_SHARDS writes that the first worker of each node
 * checks at start: see create_workers. */
#define LEFT_BEHIND 2

struct aggregator {
    struct service *svc;                 /* borrowed */
    const struct aggregator_config *cfg; /* borrowed */
    struct worker *workers;              /* one per Redis node with shards */
    unsigned nworkers;
    char **streams; /* every shard's stream name */
    unsigned nstreams;
    char *left_behind[LEFT_BEHIND]; /* streams of another ARV_STREAM_SHARDS (warn_left_behind) */
    char consumer[CONSUMER_MAX + 1];
    int notify[2];               /* workers write a byte to [1] when they end */
    struct event *notify_ev;     /* reads [0] on the loop */
    struct event *watch_ev;      /* the workers' calls to PostgreSQL watched (worker_watch) */
    struct retention *retention; /* partitions ahead and retention, own thread */
    struct geoip *geoip;         /* ARV_GEOIP_DB opened, NULL when off; read by workers */
    struct ua_db *ua;            /* ARV_UA_REGEXES compiled, NULL when off; read by workers */
    struct worker_delays delays; /* XADD delays the workers saw, for the floors */
    bool stopping;               /* the drain began */
    uint64_t stop_cut_ms;        /* then: calls to PostgreSQL still going at this time are cut */
};

bool aggregator_config_validate(const void *p, char *err, size_t errlen)
{
    const struct aggregator_config *cfg = p;

    if (!config_check_urls(&cfg->common, true, AGGREGATOR_MAX_NODES, true, err, errlen))
        return false;
    if (!config_relation_valid(cfg->content_relation)) {
        snprintf(err, errlen,
                 "ARV_CONTENT_RELATION: invalid '%s' (expected name or schema.name, letters, "
                 "digits and _)",
                 cfg->content_relation);
        return false;
    }
    if (cfg->consumer && (!*cfg->consumer || strlen(cfg->consumer) > CONSUMER_MAX - 8)) {
        snprintf(err, errlen, "ARV_CONSUMER: must be 1..%d characters", CONSUMER_MAX - 8);
        return false;
    }
    return config_check_readable("ARV_GEOIP_DB", cfg->geoip_db, err, errlen) &&
           config_check_readable("ARV_UA_REGEXES", cfg->ua_regexes, err, errlen);
}

static const char *dep_detail(enum worker_dep d)
{
    switch (d) {
    case WORKER_DEP_CONNECTING:
        return "connecting";
    case WORKER_DEP_DOWN:
        return "unreachable";
    case WORKER_DEP_SCHEMA:
        return "relation missing: run arvctl migrate, check ARV_CONTENT_RELATION";
    case WORKER_DEP_REFUSED:
        return "reads refused: see stream_read_failed in the log";
    case WORKER_DEP_ACKS_REFUSED:
        return "acknowledgements refused: see stream_ack_failed in the log";
    case WORKER_DEP_ERRORS:
        return "answers with errors: see postgresql_unavailable in the log";
    case WORKER_DEP_UP:
        break;
    }
    return "ok";
}

static bool check_redis(void *arg, const char **detail)
{
    struct aggregator *a = arg;

    for (unsigned i = 0; i < a->nworkers; i++) {
        enum worker_dep d = worker_redis_state(&a->workers[i]);
        if (d != WORKER_DEP_UP) {
            *detail = dep_detail(d);
            return false;
        }
    }
    return true;
}

static bool check_postgresql(void *arg, const char **detail)
{
    struct aggregator *a = arg;

    for (unsigned i = 0; i < a->nworkers; i++) {
        enum worker_dep d = worker_pg_state(&a->workers[i]);
        if (d != WORKER_DEP_UP) {
            *detail = dep_detail(d);
            return false;
        }
    }
    return true;
}

bool aggregator_stopped(const struct aggregator *a)
{
    for (unsigned i = 0; i < a->nworkers; i++) {
        if (a->workers[i].started && !worker_finished(&a->workers[i]))
            return false;
    }
    return true;
}

/* A worker ended: once all have, the drain is complete. */
static void aggregator_notified(evutil_socket_t fd, short what, void *arg)
{
    struct aggregator *a = arg;
    char buf[64];

    (void)what;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    if (!aggregator_stopped(a))
        return;
    for (unsigned i = 0; i < a->nworkers; i++)
        worker_join(&a->workers[i]);
    event_del(a->notify_ev);
    event_del(a->watch_ev);
    if (!a->stopping) {
        /* Workers only return when told to; this is a bug, not an outage. */
        log_error("workers_ended_unexpectedly");
    }
    service_stopped(a->svc);
}

/* Every WATCH_EVERY_MS: gives up the workers' calls PostgreSQL has left
 * unanswered too long (a server stopped or hung: no TCP timeout ends the wait,
 * and the worker would stay blocked, its gauges and readiness with it), and,
 * once stopping, those still going half the stop deadline later: a worker
 * would otherwise wait out the limit, and the deadline end the process. */
static void aggregator_watch(evutil_socket_t fd, short what, void *arg)
{
    struct aggregator *a = arg;
    uint64_t now = timeutil_mono_ms();

    (void)fd;
    (void)what;
    for (unsigned i = 0; i < a->nworkers; i++) {
        uint64_t ms = worker_watch(&a->workers[i], now, a->stop_cut_ms);
        if (ms)
            log_warn("postgresql_not_answering", LF_INT("worker", i), LF_INT("waited_ms", ms),
                     LF_STR("action",
                            a->stopping ? "connection given up to stop" : "connection given up"));
    }
}

static void aggregator_on_stop(void *arg)
{
    struct aggregator *a = arg;

    a->stopping = true;
    a->stop_cut_ms = timeutil_mono_ms() + SERVICE_STOP_DEADLINE_S * 1000 / 2;
    log_info("aggregator_draining", LF_INT("workers", a->nworkers));
    retention_stop(a->retention);
    for (unsigned i = 0; i < a->nworkers; i++)
        worker_stop(&a->workers[i]);
    if (aggregator_stopped(a))
        aggregator_notified(a->notify[0], EV_READ, a);
}

/* A counter family `name` with result="hit" and result="miss" children. */
static void hit_miss_counter(struct metrics *reg, const char *name, const char *help,
                             struct metric **hit, struct metric **miss)
{
    struct metric_family *f = metrics_counter(reg, name, help, "result");
    *hit = metric_family_child(f, (const char *const[]){"hit"});
    *miss = metric_family_child(f, (const char *const[]){"miss"});
}

static int register_metrics(struct aggregator *a, struct worker_metrics *m)
{
    static const double batch_buckets[] = {1,    10,   50,   100,   250,  500,
                                           1000, 2500, 5000, 10000, 25000};
    struct metrics *reg = a->svc->metrics;
    struct metric_family *events = metrics_counter(
        reg, "aggregator_events_total", "Stream entries processed, by outcome", "outcome");

    memset(m, 0, sizeof(*m));
    if (!events)
        return -ENOMEM;
    m->inserted = metric_family_child(events, (const char *const[]){"inserted"});
    m->duplicate = metric_family_child(events, (const char *const[]){"duplicate"});
    m->bot = metric_family_child(events, (const char *const[]){"bot"});
    m->unknown = metric_family_child(events, (const char *const[]){"unknown_content"});
    m->invalid = metric_family_child(events, (const char *const[]){"invalid"});
    m->dead_lettered = metric_family_child(events, (const char *const[]){"dead_lettered"});
    m->batch_size = metric_family_single(
        metrics_histogram(reg, "aggregator_batch_size", "Stream entries per written batch", NULL,
                          batch_buckets, sizeof(batch_buckets) / sizeof(batch_buckets[0])));
    m->flush_duration = metric_family_single(
        metrics_histogram(reg, "aggregator_flush_duration_seconds",
                          "Time to write one batch to PostgreSQL (COPY, statement, COMMIT)", NULL,
                          metrics_latency_buckets, metrics_latency_buckets_len));
    m->db_errors = metric_family_single(
        metrics_counter(reg, "aggregator_db_errors_total", "PostgreSQL failures", NULL));
    m->redis_errors = metric_family_single(
        metrics_counter(reg, "aggregator_redis_errors_total", "Redis failures", NULL));
    m->dead_letters = metric_family_single(metrics_counter(
        reg, "aggregator_dead_letters_total", "Rows written to analytics.dead_letters", NULL));
    hit_miss_counter(
        reg, "aggregator_content_lookups_total",
        "Content keys of written batches: answered by the cache (hit) or read from the registry",
        &m->content_hit, &m->content_miss);
    hit_miss_counter(reg, "aggregator_ua_lookups_total",
                     "User agents parsed: answered by the cache (hit) or by the uap-core regexes"
                     " (miss)",
                     &m->ua_hit, &m->ua_miss);
    m->stream_length =
        metrics_gauge(reg, "aggregator_stream_length", "Entries in the stream (XLEN)", "stream");
    m->consumer_lag = metrics_gauge(
        reg, "aggregator_consumer_lag",
        "Entries of the stream not yet committed to PostgreSQL (undelivered + pending)", "stream");
    m->pending = metrics_gauge(reg, "aggregator_pending_entries",
                               "Entries delivered to the group and not yet acknowledged", "stream");
    m->watermark = metrics_gauge(
        reg, "aggregator_stream_complete_until_seconds",
        "The stream's freshness floor last written (Unix time): every event received before it "
        "is in the rollups",
        "stream");
    if (!m->inserted || !m->duplicate || !m->bot || !m->unknown || !m->invalid ||
        !m->dead_lettered || !m->batch_size || !m->flush_duration || !m->db_errors ||
        !m->redis_errors || !m->dead_letters || !m->stream_length || !m->consumer_lag ||
        !m->pending || !m->watermark || !m->content_hit || !m->content_miss || !m->ua_hit ||
        !m->ua_miss)
        return -ENOMEM;
    return 0;
}

/* hostname-pid, the default consumer name: unique per process. */
static void default_consumer(char *out, size_t outlen)
{
    char host[128] = "";

    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "aggregator");
    host[sizeof(host) - 1] = '\0';
    snprintf(out, outlen, "%s-%ld", host, (long)getpid());
}

/* Whether worker j of `per` owns the node's pos-th of its `on_node` shards. */
static bool shard_owned(unsigned on_node, unsigned per, unsigned pos, unsigned j)
{
    return on_node < per || pos % per == j;
}

unsigned aggregator_worker_streams(unsigned nstreams, unsigned nodes, unsigned per, unsigned w,
                                   unsigned *idx, unsigned *nown)
{
    unsigned k = w / per, j = w % per, n = 0;
    /* Shard i lives on node i % nodes: node k holds on_node of them. */
    unsigned on_node = (nstreams - k + nodes - 1) / nodes;

    for (unsigned i = k, pos = 0; i < nstreams; i += nodes, pos++) {
        if (shard_owned(on_node, per, pos, j))
            idx[n++] = i;
    }
    *nown = n;
    for (unsigned i = k, pos = 0; i < nstreams; i += nodes, pos++) {
        if (!shard_owned(on_node, per, pos, j))
            idx[n++] = i;
    }
    return n;
}

static int create_workers(struct aggregator *a, const struct worker_metrics *m)
{
    const struct aggregator_config *cfg = a->cfg;
    struct redis_url urls[AGGREGATOR_MAX_NODES];
    int nurls = redis_url_parse_list(cfg->common.redis_url, urls, AGGREGATOR_MAX_NODES);
    const char **mine = NULL;
    unsigned *idx = NULL;
    unsigned nodes, per;
    int rc = -ENOMEM;

    if (nurls <= 0)
        return -EINVAL;
    /* Shard i lives on node i % nodes (as the collector routes); one stream
     * unsharded lives on the first node. */
    a->nstreams = (unsigned)cfg->common.stream_shards;
    a->streams = calloc(a->nstreams, sizeof(*a->streams));
    mine = calloc(a->nstreams, sizeof(*mine));
    idx = calloc(a->nstreams, sizeof(*idx));
    if (!a->streams || !mine || !idx)
        goto out;
    for (unsigned i = 0; i < a->nstreams; i++) {
        size_t len = strlen(cfg->common.stream) + 16;
        if (!(a->streams[i] = malloc(len)))
            goto out;
        if (a->nstreams == 1)
            snprintf(a->streams[i], len, "%s", cfg->common.stream);
        else
            snprintf(a->streams[i], len, "%s:%u", cfg->common.stream, i);
    }
    /* What another ARV_STREAM_SHARDS wrote, which nothing reads now: the
     * plain name when sharded (and the shard past the last), the first two
     * shards when not. The first worker of each node warns of those on it
     * that still hold entries. */
    for (unsigned i = 0; i < LEFT_BEHIND; i++) {
        size_t len = strlen(cfg->common.stream) + 16;
        if (!(a->left_behind[i] = malloc(len)))
            goto out;
        if (a->nstreams > 1 && i == 0)
            snprintf(a->left_behind[i], len, "%s", cfg->common.stream);
        else
            snprintf(a->left_behind[i], len, "%s:%u", cfg->common.stream,
                     a->nstreams > 1 ? a->nstreams : i);
    }
    /* Per node, ARV_WORKERS threads read the node's streams as consumers
     * "<consumer>-<j>" (just "<consumer>" with one): while one waits for its
     * COMMIT the other reads and writes its own batch. */
    nodes = (unsigned)nurls < a->nstreams ? (unsigned)nurls : a->nstreams;
    per = (unsigned)cfg->workers;
    a->nworkers = nodes * per;
    a->workers = calloc(a->nworkers, sizeof(*a->workers));
    if (!a->workers)
        goto out;
    for (unsigned w = 0; w < a->nworkers; w++) {
        unsigned k = w / per, j = w % per, n, nown;
        char name[CONSUMER_MAX + 16];
        n = aggregator_worker_streams(a->nstreams, nodes, per, w, idx, &nown);
        for (unsigned i = 0; i < n; i++)
            mine[i] = a->streams[idx[i]];
        if (per == 1)
            snprintf(name, sizeof(name), "%s", a->consumer);
        else
            snprintf(name, sizeof(name), "%s-%u", a->consumer, j);
        struct worker_config wc = {
            .redis = &urls[k],
            .streams = mine,
            .nstreams = n,
            .nown = nown,
            .consumer = name,
            .stream_upkeep = j == 0,
            .left_behind = (const char *const *)a->left_behind,
            .nleft_behind = LEFT_BEHIND,
            .delays = &a->delays,
            .database_url = cfg->common.database_url,
            .content_relation = cfg->content_relation,
            .statement_timeout_ms = cfg->statement_timeout_ms,
            .batch_size = cfg->batch_size,
            .batch_max_bytes = cfg->batch_max_bytes,
            .batch_deltas_max_bytes = cfg->batch_deltas_max_bytes,
            .breakdown_max_values = cfg->breakdown_max_values,
            .batch_wait_ms = cfg->batch_wait_ms,
            .batch_linger_ms = cfg->batch_linger_ms,
            .claim_idle_ms = cfg->claim_idle_ms,
            .max_deliveries = cfg->max_deliveries,
            .store_full_ip = cfg->store_full_ip,
            .content_cache_size = cfg->content_cache_size,
            .content_cache_ttl_s = cfg->content_cache_ttl_s,
            .geoip = a->geoip,
            .ua = a->ua,
            .ua_cache_size = cfg->ua_cache_size,
        };
        if ((rc = worker_init(&a->workers[w], w, &wc, m, a->notify[1])) < 0)
            goto out;
    }
    rc = 0;
out:
    free(mine);
    free(idx);
    return rc;
}

/* Opens the GeoIP database and compiles the user-agent rules when configured;
 * a configured file that does not open is an error, never silently skipped. */
static int open_enrichment(struct aggregator *a)
{
    char err[256];
    int rc;

    if (a->cfg->geoip_db && a->cfg->geoip_db[0]) {
        if ((rc = geoip_open(a->cfg->geoip_db, &a->geoip, err, sizeof(err))) < 0) {
            log_error("geoip_open_failed", LF_STR("path", a->cfg->geoip_db), LF_STR("error", err));
            return rc;
        }
        log_info("geoip_opened", LF_STR("path", a->cfg->geoip_db));
    }
    if (a->cfg->ua_regexes && a->cfg->ua_regexes[0]) {
        if ((rc = ua_db_open(a->cfg->ua_regexes, &a->ua, err, sizeof(err))) < 0) {
            log_error("ua_regexes_failed", LF_STR("path", a->cfg->ua_regexes),
                      LF_STR("error", err));
            return rc;
        }
        log_info("ua_regexes_loaded", LF_STR("path", a->cfg->ua_regexes),
                 LF_INT("rules", (long long)ua_db_rule_count(a->ua)),
                 LF_BOOL("jit", ua_db_jit(a->ua)));
    }
    return 0;
}

struct aggregator *aggregator_new(struct service *svc, const struct aggregator_config *cfg)
{
    struct aggregator *a = calloc(1, sizeof(*a));
    struct worker_metrics m;
    int rc = -ENOMEM;

    if (!a)
        goto out;
    a->svc = svc;
    a->cfg = cfg;
    a->notify[0] = a->notify[1] = -1;
    worker_delays_init(&a->delays); /* first: aggregator_free() destroys it */
    if (cfg->consumer)
        snprintf(a->consumer, sizeof(a->consumer), "%s", cfg->consumer);
    else
        default_consumer(a->consumer, sizeof(a->consumer));

    /* Order: metrics, the wake-up pipe, workers (they need both), readiness
     * checks (they read the workers), then the drain hook. */
    if ((rc = register_metrics(a, &m)) < 0)
        goto out;
    if (pipe(a->notify) < 0) {
        rc = -errno;
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        if (fcntl(a->notify[i], F_SETFL, O_NONBLOCK) < 0 ||
            fcntl(a->notify[i], F_SETFD, FD_CLOEXEC) < 0) {
            rc = -errno;
            goto out;
        }
    }
    a->notify_ev = event_new(svc->base, a->notify[0], EV_READ | EV_PERSIST, aggregator_notified, a);
    if (!a->notify_ev || event_add(a->notify_ev, NULL) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = open_enrichment(a)) < 0 || (rc = create_workers(a, &m)) < 0)
        goto out;
    {
        const struct timeval every = timeutil_tv(WATCH_EVERY_MS);
        a->watch_ev = event_new(svc->base, -1, EV_PERSIST, aggregator_watch, a);
        if (!a->watch_ev || event_add(a->watch_ev, &every) < 0) {
            rc = -ENOMEM;
            goto out;
        }
    }
    /* Retention: its own thread and connection, joined in aggregator_free(). */
    {
        const struct retention_config rc_cfg = {
            .database_url = cfg->common.database_url,
            .raw_days = cfg->raw_retention_days,
            .dedupe_days =
                cfg->dedupe_retention_days ? cfg->dedupe_retention_days : cfg->raw_retention_days,
            .hourly_days = cfg->hourly_retention_days,
            .dead_letter_days = cfg->dead_letter_retention_days ? cfg->dead_letter_retention_days
                                                                : cfg->raw_retention_days,
            .interval_s = cfg->retention_interval_s,
            .slice_pages = cfg->retention_slice_pages,
        };
        if (!(a->retention = retention_new(&rc_cfg, svc->metrics))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    if ((rc = health_add_check(svc->health, "redis", check_redis, a)) < 0 ||
        (rc = health_add_check(svc->health, "postgresql", check_postgresql, a)) < 0)
        goto out;
    service_on_stop(svc, aggregator_on_stop, a);
    log_info("aggregator_configured", LF_STR("consumer", a->consumer),
             LF_INT("workers", a->nworkers), LF_INT("streams", a->nstreams),
             LF_STR("stream", a->streams[0]), LF_INT("batch_size", cfg->batch_size),
             LF_INT("batch_wait_ms", cfg->batch_wait_ms),
             LF_INT("batch_linger_ms", cfg->batch_linger_ms),
             LF_STR("content_relation", cfg->content_relation));
    rc = 0;
out:
    if (rc < 0) {
        log_error("aggregator_init_failed", LF_STR("error", strerror(-rc)));
        aggregator_free(a);
        a = NULL;
    }
    return a;
}

int aggregator_start(struct aggregator *a)
{
    for (unsigned i = 0; i < a->nworkers; i++) {
        int rc = worker_start(&a->workers[i]);
        if (rc < 0) {
            log_error("worker_start_failed", LF_INT("worker", i), LF_STR("error", strerror(-rc)));
            return rc;
        }
    }
    return retention_start(a->retention);
}

void aggregator_free(struct aggregator *a)
{
    if (!a)
        return;
    if (a->watch_ev)
        event_free(a->watch_ev);
    retention_free(a->retention);
    for (unsigned i = 0; a->workers && i < a->nworkers; i++)
        worker_deinit(&a->workers[i]);
    free(a->workers);
    worker_delays_deinit(&a->delays);
    geoip_close(a->geoip);
    ua_db_close(a->ua);
    for (unsigned i = 0; a->streams && i < a->nstreams; i++)
        free(a->streams[i]);
    free(a->streams);
    for (unsigned i = 0; i < LEFT_BEHIND; i++)
        free(a->left_behind[i]);
    if (a->notify_ev)
        event_free(a->notify_ev);
    if (a->notify[0] >= 0)
        close(a->notify[0]);
    if (a->notify[1] >= 0)
        close(a->notify[1]);
    free(a);
}
