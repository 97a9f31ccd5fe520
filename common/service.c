/* The daemon frame: loop, metrics, HTTP server with health routes, and a
 * signal-driven drain with a 10 s deadline. */
#include "service.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "health.h"
#include "log.h"
#include "metrics.h"

static const char *service_signal_name(evutil_socket_t sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    }
    return "?";
}

static void service_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct service *svc = arg;
    (void)fd;
    (void)what;
    log_error("shutdown_deadline_exceeded", LF_INT("seconds", SERVICE_STOP_DEADLINE_S),
              LF_INT("http_inflight", (long long)http_server_inflight(svc->http)));
    event_base_loopbreak(svc->base);
}

/* Waits for the HTTP server's in-flight requests before ending the loop. */
static void service_exit_when_idle(evutil_socket_t fd, short what, void *arg)
{
    struct service *svc = arg;
    (void)fd;
    (void)what;
    if (http_server_inflight(svc->http) == 0) {
        event_base_loopexit(svc->base, NULL);
        return;
    }
    struct timeval tv = {0, 10 * 1000};
    event_base_once(svc->base, -1, EV_TIMEOUT, service_exit_when_idle, svc, &tv);
}

static void service_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct service *svc = arg;
    (void)what;
    if (svc->stopping) {
        log_warn("shutdown_forced", LF_STR("signal", service_signal_name(sig)));
        event_base_loopbreak(svc->base);
        return;
    }
    svc->stopping = true;
    log_info("shutdown_started", LF_STR("signal", service_signal_name(sig)));
    health_set_draining(svc->health);
    http_server_stop_accepting(svc->http);
    struct timeval tv = {SERVICE_STOP_DEADLINE_S, 0};
    svc->deadline = evtimer_new(svc->base, service_deadline_cb, svc);
    if (svc->deadline)
        evtimer_add(svc->deadline, &tv);
    if (svc->on_stop)
        svc->on_stop(svc->on_stop_arg);
    else
        service_stopped(svc);
}

/* Raises the soft RLIMIT_NOFILE to the hard limit. */
static void service_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
}

/* Says so when the open-files limit is below the connections the daemon may
 * accept plus a reserve: past it, accept(2) fails, and so does every
 * descriptor the daemon opens itself (a Redis or PostgreSQL reconnect, the
 * reporter's zone files). */
static void service_check_nofile(size_t connections)
{
    struct rlimit rl;
    if (connections && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)connections + 256)
        log_warn("nofile_limit_low", LF_INT("nofile", (long long)rl.rlim_cur),
                 LF_INT("max_connections", (long long)connections));
}

void service_expect_connections(struct service *svc, size_t n)
{
    svc->connections = n;
}

/* Blocks or unblocks (`how`) the stop signals in the calling thread. */
static void service_signals(int how)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(how, &set, NULL);
}

void service_hold_signals(void)
{
    service_signals(SIG_BLOCK);
}

int service_init(struct service *svc, const char *name, const struct common_config *common,
                 const struct http_server_limits *limits)
{
    int rc = -ENOMEM;
    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    signal(SIGPIPE, SIG_IGN);
    service_raise_nofile();
    svc->connections = (limits ? limits : &http_server_default_limits)->max_connections;

    /* Order: loop, metrics (the HTTP server records into it), server, routes,
     * then the listening socket, then signals. */
    svc->base = event_base_new();
    if (!svc->base)
        goto out;
    svc->metrics = metrics_new();
    if (!svc->metrics)
        goto out;
    svc->http = http_server_new(svc->base, limits, svc->metrics);
    if (!svc->http)
        goto out;
    svc->health = health_new(svc->http, svc->metrics, name, common->env);
    if (!svc->health)
        goto out;
    rc = http_server_listen(svc->http, common->listen.host, common->listen.port);
    if (rc < 0) {
        log_error("listen_failed", LF_STR("host", common->listen.host),
                  LF_INT("port", common->listen.port), LF_STR("error", strerror(-rc)));
        goto out;
    }
    rc = -ENOMEM;
    /* SIGHUP stops the daemon as SIGTERM does: the configuration comes from
     * the environment at start, so there is nothing to reload, and its default
     * action would end the daemon at once, with no drain and no log line. */
    svc->sig_term = evsignal_new(svc->base, SIGTERM, service_signal_cb, svc);
    svc->sig_int = evsignal_new(svc->base, SIGINT, service_signal_cb, svc);
    svc->sig_hup = evsignal_new(svc->base, SIGHUP, service_signal_cb, svc);
    if (!svc->sig_term || !svc->sig_int || !svc->sig_hup || evsignal_add(svc->sig_term, NULL) < 0 ||
        evsignal_add(svc->sig_int, NULL) < 0 || evsignal_add(svc->sig_hup, NULL) < 0)
        goto out;
    service_signals(SIG_UNBLOCK); /* one held meanwhile is now the loop's */
    log_info("service_listening", LF_STR("host", common->listen.host),
             LF_INT("port", http_server_port(svc->http)), LF_STR("version", ARV_VERSION),
             LF_STR("environment", common->env));
    rc = 0;
out:
    return rc;
}

void service_on_stop(struct service *svc, service_stop_cb *cb, void *arg)
{
    svc->on_stop = cb;
    svc->on_stop_arg = arg;
}

int service_run(struct service *svc)
{
    service_check_nofile(svc->connections);
    event_base_dispatch(svc->base);
    if (event_base_got_break(svc->base))
        return -ETIMEDOUT;
    log_info("shutdown_complete");
    return 0;
}

void service_stopped(struct service *svc)
{
    service_exit_when_idle(-1, 0, svc);
}

void service_deinit(struct service *svc)
{
    if (svc->deadline)
        event_free(svc->deadline);
    if (svc->sig_term)
        event_free(svc->sig_term);
    if (svc->sig_int)
        event_free(svc->sig_int);
    if (svc->sig_hup)
        event_free(svc->sig_hup);
    http_server_free(svc->http);
    health_free(svc->health);
    metrics_free(svc->metrics);
    if (svc->base)
        event_base_free(svc->base);
    memset(svc, 0, sizeof(*svc));
}
