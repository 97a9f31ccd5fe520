/* Host name lookups on a thread of their own, answered on the loop through an
 * eventfd. The lookup and the loop share one struct; whoever is last frees it:
 * the loop once the answer is read, or the thread when the loop gave up. */
#include "resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

struct resolve {
    pthread_mutex_t lock;
    bool done;                 /* the thread has its answer, and signalled efd */
    bool abandoned;            /* the loop gave up: the thread frees all */
    int efd;                   /* eventfd, written once by the thread */
    struct event *ev;          /* efd readable, on the loop; freed by the loop */
    resolve_cb *cb;            /* called once from the loop */
    void *arg;                 /* passed to cb */
    struct resolve_result res; /* the answer, once done */
    char host[];               /* what is looked up */
};

bool resolve_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return !host || !*host || inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

static void destroy(struct resolve *r)
{
    if (r->efd >= 0)
        close(r->efd);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static void lookup(const char *host, struct resolve_result *res)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &list);

    memset(res, 0, sizeof(*res));
    if (rc != 0) {
        snprintf(res->errstr, sizeof(res->errstr), "cannot resolve %s: %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    for (const struct addrinfo *ai = list; ai && res->n < RESOLVE_ADDRS_MAX; ai = ai->ai_next) {
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr
                        : ai->ai_family == AF_INET6
                            ? (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : NULL;
        if (a && inet_ntop(ai->ai_family, a, res->addrs[res->n], RESOLVE_ADDR_LEN))
            res->n++;
    }
    freeaddrinfo(list);
    if (res->n == 0)
        snprintf(res->errstr, sizeof(res->errstr), "cannot resolve %s: no IP address", host);
}

static void *lookup_main(void *arg)
{
    struct resolve *r = arg;
    struct resolve_result res;
    uint64_t one = 1;

    lookup(r->host, &res);
    pthread_mutex_lock(&r->lock);
    if (r->abandoned) {
        pthread_mutex_unlock(&r->lock);
        destroy(r);
        return NULL;
    }
    r->res = res;
    r->done = true;
    /* An eventfd write of 1 cannot fail short of a bug; the loop would then
     * wait for an answer that never comes, as for a lookup that hangs. */
    (void)!write(r->efd, &one, sizeof(one));
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void on_answer(evutil_socket_t fd, short what, void *arg)
{
    struct resolve *r = arg;
    struct resolve_result res;
    resolve_cb *cb = r->cb;
    void *cbarg = r->arg;
    (void)fd;
    (void)what;

    /* The thread may still hold the lock it signalled under. */
    pthread_mutex_lock(&r->lock);
    res = r->res;
    pthread_mutex_unlock(&r->lock);
    event_free(r->ev);
    destroy(r);
    cb(cbarg, &res);
}

struct resolve *resolve_start(struct event_base *base, const char *host, resolve_cb *cb, void *arg)
{
    size_t len = strlen(host);
    struct resolve *r = calloc(1, sizeof(*r) + len + 1);
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_t tid;
    int rc;

    if (!r)
        return NULL;
    memcpy(r->host, host, len + 1);
    r->cb = cb;
    r->arg = arg;
    pthread_mutex_init(&r->lock, NULL);
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->efd < 0 || !(r->ev = event_new(base, r->efd, EV_READ, on_answer, r)) ||
        event_add(r->ev, NULL) < 0)
        goto fail;
    if (pthread_attr_init(&attr) != 0)
        goto fail;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    /* Signals stay with the daemon's own threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&tid, &attr, lookup_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        goto fail;
    return r;
fail:
    if (r->ev)
        event_free(r->ev);
    destroy(r);
    return NULL;
}

void resolve_cancel(struct resolve *r)
{
    bool done;

    if (!r)
        return;
    event_free(r->ev);
    r->ev = NULL;
    pthread_mutex_lock(&r->lock);
    done = r->done;
    r->abandoned = true;
    pthread_mutex_unlock(&r->lock);
    /* Done: the thread is past its last use of r. Else it frees r. */
    if (done)
        destroy(r);
}
