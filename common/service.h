/* The frame every daemon runs in: event loop, metrics registry, HTTP server with
 * the health/readiness/metrics routes, SIGTERM/SIGINT/SIGHUP handling with a
 * drain phase and a 10 s deadline. A daemon's main() is: load config,
 * service_init(), create its modules on svc.base, service_run(), free modules,
 * service_deinit(). */
#ifndef ARV_SERVICE_H
#define ARV_SERVICE_H

#include <stdbool.h>

#include "config.h"
#include "http_server.h"

/* A stop (SIGTERM, SIGINT, SIGHUP) that has not finished after this long
 * ends the process (exit 1). */
#define SERVICE_STOP_DEADLINE_S 10

struct event;
struct event_base;
struct health;
struct metrics;

/* Called once, on the loop, when SIGTERM, SIGINT or SIGHUP arrives: the daemon
 * stops taking work, finishes what is in flight, then calls service_stopped(). */
typedef void service_stop_cb(void *arg);

struct service {
    const char *name;         /* "arv-collector"; borrowed */
    struct event_base *base;  /* the daemon's loop */
    struct metrics *metrics;  /* registry rendered at GET /metrics */
    struct http_server *http; /* listening on common.listen */
    struct health *health;    /* status/readiness/metrics routes */
    struct event *sig_term;   /* SIGTERM watcher */
    struct event *sig_int;    /* SIGINT watcher */
    struct event *sig_hup;    /* SIGHUP watcher: a stop too */
    struct event *deadline;   /* forced exit 10 s after the stop signal */
    service_stop_cb *on_stop; /* daemon's drain hook, may be NULL */
    void *on_stop_arg;
    bool stopping;      /* a stop signal arrived */
    size_t connections; /* HTTP connections the daemon may hold, all loops together
                         * (service_expect_connections) */
};

/* Blocks SIGTERM, SIGINT and SIGHUP until service_init() watches them: called
 * first in a daemon's main(), so that a stop signal that arrives while it
 * starts (the configuration loading, say) is kept and then handled as a stop,
 * not by the default action (killed, exit 143). */
void service_hold_signals(void);

/* Creates the loop, registry, HTTP server (bound to common->listen with `limits`,
 * NULL for defaults) and health routes; ignores SIGPIPE; watches SIGTERM, SIGINT
 * and SIGHUP (and lets through those service_hold_signals() held). `name` and
 * `common` are borrowed and must outlive the service. Returns 0, or a negative
 * errno after logging the reason (the caller exits 1). On failure
 * service_deinit() is still safe. */
int service_init(struct service *svc, const char *name, const struct common_config *common,
                 const struct http_server_limits *limits);

/* Says the daemon serves `n` HTTP connections at most, all its event loops
 * together (by default its one server's limit): service_run() logs
 * nofile_limit_low when the open-files limit is below that plus a reserve. */
void service_expect_connections(struct service *svc, size_t n);

/* Sets the drain hook. Without one, a stop signal ends the loop at once after
 * in-flight HTTP requests are answered. */
void service_on_stop(struct service *svc, service_stop_cb *cb, void *arg);

/* Runs the loop until the daemon has stopped. Returns 0 on a clean stop, or
 * -ETIMEDOUT when the 10 s deadline forced the exit. */
int service_run(struct service *svc);

/* Called by the daemon when its drain is complete: the loop exits once the HTTP
 * server has answered its in-flight requests. */
void service_stopped(struct service *svc);

/* Frees what service_init() created. Safe on a partly initialised service. */
void service_deinit(struct service *svc);

#endif
