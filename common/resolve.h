/* Host name lookups that never block an event loop: getaddrinfo() (so
 * /etc/hosts, /etc/resolv.conf and nsswitch.conf as for any program) runs on a
 * short-lived thread of its own, and the answer comes back to the loop. A
 * connect that resolved its host on the loop stalled every request on that
 * loop for as long as DNS did not answer (glibc: 5 s per try, 2 tries). */
#ifndef ARV_RESOLVE_H
#define ARV_RESOLVE_H

#include <stdbool.h>

struct event_base;
struct resolve;

#define RESOLVE_ADDRS_MAX 8
#define RESOLVE_ADDR_LEN  46 /* INET6_ADDRSTRLEN */

/* A lookup's outcome: `n` addresses (numeric text, in getaddrinfo's order of
 * preference), or none and `errstr` saying why. */
struct resolve_result {
    unsigned n;
    char addrs[RESOLVE_ADDRS_MAX][RESOLVE_ADDR_LEN];
    char errstr[160];
};

/* Called exactly once, from the loop, never from within resolve_start(); the
 * lookup is freed after it returns. */
typedef void resolve_cb(void *arg, const struct resolve_result *res);

/* True when `host` needs no lookup: an IPv4 or IPv6 address, or empty. */
bool resolve_is_numeric(const char *host);

/* Starts looking up `host` (copied) for a TCP connect on `base`. NULL when
 * out of memory or out of threads (then `cb` is never called). */
struct resolve *resolve_start(struct event_base *base, const char *host, resolve_cb *cb, void *arg);

/* Forgets a lookup still running: `cb` will not be called. A getaddrinfo()
 * call cannot be interrupted, so its thread ends by itself. NULL is fine. */
void resolve_cancel(struct resolve *r);

#endif
