/* arv-reporter: the analytics query API (reads rollups only). Thin main: config,
 * service frame, reporter application, run, free. */
#include <stdlib.h>

#include "config.h"
#include "http_server.h"
#include "reporter.h"
#include "service.h"

int main(int argc, char **argv)
{
    static struct reporter_config cfg;
    struct service svc;
    struct reporter *rep = NULL;
    int status = 1;

    service_hold_signals(); /* a stop while starting is still a stop */
    config_load_or_exit("arv-reporter",
                        "ARV analytics query API over the rollups, behind API keys: overview,"
                        " company, project and content totals, time series, top, breakdowns,"
                        " CSV export; and a dashboard page at /dashboard.",
                        reporter_options, reporter_options_len, &cfg, &cfg.common,
                        reporter_config_validate, 1, argc, argv);
    if (service_init(&svc, "arv-reporter", &cfg.common, &http_server_get_limits) < 0)
        goto out;
    rep = reporter_new(&svc, &cfg);
    if (!rep)
        goto out;
    status = service_run(&svc) == 0 ? 0 : 1;
out:
    reporter_free(rep);
    service_deinit(&svc);
    return status;
}
