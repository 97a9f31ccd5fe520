/* The routes every daemon mounts: GET /api/health/status, /api/health/readiness
 * and /metrics. Readiness reads dependency states that the connection wrappers
 * keep current in the background, so a probe never blocks the loop. */
#ifndef ARV_HEALTH_H
#define ARV_HEALTH_H

#include <stdbool.h>

struct http_server;
struct metrics;
struct health;

/* Returns whether a dependency answers right now, without blocking. May set
 * *detail (borrowed, static or owned by `arg`) to say why not. */
typedef bool health_check_fn(void *arg, const char **detail);

/* Mounts the three routes on `s`. `service`, `environment` are borrowed (must
 * outlive the server); `m` is borrowed. Caller frees with health_free() after
 * the server. Returns NULL if out of memory. */
struct health *health_new(struct http_server *s, struct metrics *m, const char *service,
                          const char *environment);

/* Adds a named dependency (`name` borrowed) to readiness. Returns 0 or -ENOMEM. */
int health_add_check(struct health *h, const char *name, health_check_fn *fn, void *arg);

/* While draining at shutdown, readiness answers 503 {"failing":["shutting_down"]}. */
void health_set_draining(struct health *h);

void health_free(struct health *h);

#endif
