/* arv-collector: accepts AR session events over HTTP and appends them to the
 * Redis stream, answering 200 only once Redis holds them. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "client_ip.h"
#include "collector.h"
#include "config.h"
#include "cors.h"
#include "log.h"
#include "service.h"
#include "stream_writer.h"

static const struct config_option options[] = {
    CONFIG_BASE_OPTIONS(struct collector_config, "0.0.0.0:8081"),
    CONFIG_REDIS_OPTIONS(struct collector_config),
    {"max-body-bytes", "ARV_MAX_BODY_BYTES", CONFIG_INT,
     offsetof(struct collector_config, max_body_bytes), "1048576", NULL, 1024, 64 << 20,
     "largest request body accepted (413 past it)"},
    {"max-buffered-bytes", "ARV_MAX_BUFFERED_BYTES", CONFIG_INT,
     offsetof(struct collector_config, max_buffered_bytes), "268435456", NULL, 1 << 20, 1L << 40,
     "request bodies buffered by all connections together; a request growing past 64 KiB"
     " beyond it gets 503"},
    {"max-clock-skew", "ARV_MAX_CLOCK_SKEW_S", CONFIG_INT,
     offsetof(struct collector_config, max_skew_s), "86400", NULL, 1, 30 * 86400,
     "occurred_at further than this from the server clock is refused (seconds)"},
    {"threads", "ARV_THREADS", CONFIG_INT, offsetof(struct collector_config, threads), "0", NULL, 0,
     64, "event-loop threads sharing the port (0: one per CPU the process may run on)"},
    {"max-batch", "ARV_MAX_BATCH", CONFIG_INT, offsetof(struct collector_config, max_batch), "500",
     NULL, 1, 100000, "most events in one batch request (413 past it)"},
    {"cors-origins", "ARV_CORS_ORIGINS", CONFIG_STRING,
     offsetof(struct collector_config, cors_origins), "", NULL, 0, 0,
     "browser origins allowed to post events: * or a comma-separated list"},
    CONFIG_TRUSTED_PROXIES_OPTION(struct collector_config),
    {"stream-high-water", "ARV_STREAM_HIGH_WATER", CONFIG_INT,
     offsetof(struct collector_config, stream_high_water), "1000000", NULL, 0, 1000000000,
     "stream entries (per shard) past which POSTs get 503 (0: no limit)"},
    {"rate-limit-rps", "ARV_RATE_LIMIT_RPS", CONFIG_INT,
     offsetof(struct collector_config, rate_limit_rps), "0", NULL, 0, 1000000,
     "requests per second per client IP (0: no limit)"},
    {"rate-limit-burst", "ARV_RATE_LIMIT_BURST", CONFIG_INT,
     offsetof(struct collector_config, rate_limit_burst), "0", NULL, 0, 1000000,
     "burst size of the per-IP rate limit (0: same as the rate)"},
    {"redis-timeout-ms", "ARV_REDIS_TIMEOUT_MS", CONFIG_INT,
     offsetof(struct collector_config, redis_timeout_ms), "500", NULL, 10, 60000,
     "an XADD unanswered this long (ms) gets 503; a Redis that answered nothing meanwhile is "
     "taken as hung and its connection reopened"},
    {"redis-max-pending", "ARV_REDIS_MAX_PENDING", CONFIG_INT,
     offsetof(struct collector_config, redis_max_pending), "50000", NULL, 1, 10000000,
     "XADDs awaiting Redis per connection past which events get 503 at once (a slow Redis "
     "must not fill memory)"},
};

static bool validate(const void *arg, char *err, size_t errlen)
{
    const struct collector_config *cfg = arg;
    struct client_ip_trust trust;
    struct cors cors;
    if (!client_ip_parse_trust(cfg->trusted_proxies, &trust, err, errlen) ||
        !cors_parse(cfg->cors_origins, &cors, err, errlen))
        return false;
    if (strlen(cfg->common.stream) > STREAM_WRITER_NAME_MAX) {
        snprintf(err, errlen, "ARV_STREAM: longer than %d bytes", STREAM_WRITER_NAME_MAX);
        return false;
    }
    return config_check_urls(&cfg->common, true, STREAM_WRITER_MAX_NODES, false, err, errlen);
}

int main(int argc, char **argv)
{
    struct collector_config cfg = {0};
    struct service svc;
    struct collector *c = NULL;
    char err[256];
    int rc = 1;

    service_hold_signals(); /* a stop while starting is still a stop */
    config_load_or_exit("arv-collector", "Accepts AR session events and appends them to Redis.",
                        options, sizeof(options) / sizeof(options[0]), &cfg, &cfg.common, validate,
                        1, argc, argv);
    cfg.limits = http_server_default_limits;
    /* A compressed body is at most as large as its decoded form (bombs aside,
     * which the decoder caps separately). */
    cfg.limits.max_body_bytes = (size_t)cfg.max_body_bytes;
    cfg.limits.max_buffered_bytes = (size_t)cfg.max_buffered_bytes;

    /* Order: thread support (before any loop exists), frame (loop, metrics, HTTP,
     * health), then the collector's threads and routes. */
    if (evthread_use_pthreads() < 0) {
        log_error("startup_failed", LF_STR("error", "no libevent thread support"));
        goto out;
    }
    if (service_init(&svc, "arv-collector", &cfg.common, &cfg.limits) < 0)
        goto out;
    c = collector_new(&svc, &cfg, err, sizeof(err));
    if (!c) {
        log_error("startup_failed", LF_STR("error", err));
        goto out;
    }
    service_on_stop(&svc, collector_stop, c);
    rc = service_run(&svc) == 0 ? 0 : 1;
out:
    collector_free(c);
    service_deinit(&svc);
    return rc;
}
