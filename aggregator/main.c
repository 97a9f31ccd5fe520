/* arv-aggregator: Redis stream -> PostgreSQL raw events and rollups, with
 * health, readiness and metrics over HTTP. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "aggregator.h"
#include "config.h"
#include "http_server.h"
#include "log.h"
#include "service.h"

int main(int argc, char **argv)
{
    struct aggregator_config cfg = {0};
    struct service svc;
    struct aggregator *agg = NULL;
    int rc = 1;

    service_hold_signals(); /* a stop while starting is still a stop */
    config_load_or_exit("arv-aggregator",
                        "Reads AR session events from the Redis stream (consumer group "
                        "arv-aggregators) and writes raw rows and rollups to PostgreSQL.",
                        aggregator_options, aggregator_options_len, &cfg, &cfg.common,
                        aggregator_config_validate, 1, argc, argv);

    /* Order: the service frame (loop, metrics, HTTP), then the aggregator on it. */
    if (service_init(&svc, "arv-aggregator", &cfg.common, &http_server_get_limits) < 0)
        goto out;
    if (!(agg = aggregator_new(&svc, &cfg)) || aggregator_start(agg) < 0)
        goto out;
    int run = service_run(&svc);
    if (run == -ETIMEDOUT && !aggregator_stopped(agg)) {
        /* A worker is stuck in a blocking call past the deadline: joining it
         * could hang, and nothing it holds is acknowledged, so leave now. */
        log_error("aggregator_exit_forced");
        _exit(1);
    }
    /* Past the deadline, even with the workers just done: 1, like every daemon. */
    rc = run == 0 ? 0 : 1;
out:
    aggregator_free(agg);
    service_deinit(&svc);
    return rc;
}
