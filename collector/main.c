/* arv-collector: accepts AR session events over HTTP and appends them to the
 * Redis stream, answering 200 only once Redis holds them. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "collector.h"
#include "config.h"
#include "log.h"
#include "redis_conn.h"
#include "service.h"

static const struct config_option options[] = {
    CONFIG_COMMON_OPTIONS(struct collector_config, "0.0.0.0:8081"),
    {"max-body-bytes", "ARV_MAX_BODY_BYTES", CONFIG_INT,
     offsetof(struct collector_config, max_body_bytes), "1048576", NULL, 1024, 64 << 20,
     "largest request body accepted (413 past it)"},
    {"max-clock-skew", "ARV_MAX_CLOCK_SKEW_S", CONFIG_INT,
     offsetof(struct collector_config, max_skew_s), "86400", NULL, 1, 30 * 86400,
     "occurred_at further than this from the server clock is refused (seconds)"},
};

static bool validate(const void *arg, char *err, size_t errlen)
{
    const struct collector_config *cfg = arg;
    struct redis_url urls[64];
    if (redis_url_parse_list(cfg->common.redis_url, urls, 64) <= 0) {
        snprintf(err, errlen, "REDIS_URL: invalid value '%s' (expected redis://host:port/db)",
                 cfg->common.redis_url);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    struct collector_config cfg = {0};
    struct service svc;
    struct collector *c = NULL;
    char err[256];
    int rc = 1;

    config_load_or_exit("arv-collector", "Accepts AR session events and appends them to Redis.",
                        options, sizeof(options) / sizeof(options[0]), &cfg, &cfg.common, validate,
                        argc, argv);
    struct http_server_limits limits = http_server_default_limits;
    limits.max_body_bytes = (size_t)cfg.max_body_bytes;

    /* Order: frame (loop, metrics, HTTP, health), then the collector's routes. */
    if (service_init(&svc, "arv-collector", &cfg.common, &limits) < 0)
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
