/* Prometheus metrics: a registry of counter, gauge and histogram families with
 * labels, updated lock-free from any thread, rendered in the text exposition
 * format (with process_* metrics) for GET /metrics. */
#ifndef ARV_METRICS_H
#define ARV_METRICS_H

#include <stddef.h>

#include "strbuf.h"

struct metrics;
struct metric_family;
struct metric;

/* Latency buckets in seconds, 0.5 ms .. 10 s; for histograms of durations. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_len;

/* Creates an empty registry. Caller frees with metrics_free(). */
struct metrics *metrics_new(void);

/* Frees the registry, its families and their children. NULL is fine. */
void metrics_free(struct metrics *m);

/* Registers a family. `name` and `help` are borrowed (string literals);
 * `labels` is a comma-separated list of label names ("route,status") or NULL.
 * `buckets` (histograms only) are upper bounds in increasing order, borrowed;
 * +Inf is implicit. Returns a family owned by the registry; NULL on bad input or
 * out of memory. Not for hot paths (takes a lock). */
struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      const char *labels);
struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    const char *labels);
struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        const char *labels, const double *buckets, size_t nbuckets);

/* Returns the child for the given label values (copied), creating it on first
 * use; the same pointer on every later call. Pass exactly as many values as the
 * family has labels (none for an unlabelled family). The child is owned by the
 * registry and lives as long as it. Takes a lock: callers on hot paths keep the
 * pointer. Returns NULL only if out of memory (metric_* accept NULL). */
struct metric *metric_family_child(struct metric_family *f, const char *const *values);

/* Shorthand for an unlabelled family's only child. */
struct metric *metric_family_single(struct metric_family *f);

/* Updates: atomic, any thread, never block. NULL `c` is ignored. */
void metric_inc(struct metric *c);
void metric_add(struct metric *c, double v);     /* counters: v >= 0 */
void metric_set(struct metric *c, double v);     /* gauges */
void metric_observe(struct metric *c, double v); /* histograms */

/* Called at the start of each render, on the rendering thread, to refresh gauges
 * whose value is read on demand (stream length, queue depth). */
typedef void metrics_collect_cb(void *arg);
void metrics_on_collect(struct metrics *m, metrics_collect_cb *cb, void *arg);

/* Appends the text exposition (version 0.0.4) of every family, then the
 * process_* metrics (cpu, resident memory, open fds, start time), to `out`. */
void metrics_render(struct metrics *m, struct strbuf *out);

#endif
