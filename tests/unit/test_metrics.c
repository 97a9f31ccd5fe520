/* Unit tests for the metrics registry: exact exposition text, label escaping,
 * histograms, child reuse, concurrent updates, name validation, promtool. */
#include <criterion/criterion.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "strbuf.h"

/* Renders `m` and returns the part before the process_* metrics (caller frees). */
static char *render_families(struct metrics *m)
{
    struct strbuf sb;
    strbuf_init(&sb);
    metrics_render(m, &sb);
    cr_assert_not_null(sb.data);
    char *p = strstr(sb.data, "# HELP process_cpu_seconds_total ");
    cr_assert_not_null(p, "process metrics missing:\n%s", sb.data);
    *p = '\0';
    char *s = strdup(sb.data);
    strbuf_deinit(&sb);
    return s;
}

static void assert_render(struct metrics *m, const char *want)
{
    char *got = render_families(m);
    cr_assert_str_eq(got, want);
    free(got);
}

Test(metrics, counter_without_labels)
{
    struct metrics *m = metrics_new();
    struct metric_family *f = metrics_counter(m, "arv_things_total", "Things seen.", NULL);
    cr_assert_not_null(f);
    struct metric *c = metric_family_single(f);
    cr_assert_not_null(c);
    assert_render(m, "# HELP arv_things_total Things seen.\n"
                     "# TYPE arv_things_total counter\n"
                     "arv_things_total 0\n");
    metric_inc(c);
    metric_inc(c);
    metric_add(c, 0.5);
    metric_add(c, -3); /* counters never go down */
    assert_render(m, "# HELP arv_things_total Things seen.\n"
                     "# TYPE arv_things_total counter\n"
                     "arv_things_total 2.5\n");
    metrics_free(m);
}

Test(metrics, counter_with_labels)
{
    struct metrics *m = metrics_new();
    struct metric_family *f =
        metrics_counter(m, "arv_http_requests_total", "Requests.", "route,status");
    cr_assert_not_null(f);
    cr_assert_null(metric_family_single(f));
    /* A labelled family with no children has no samples and is not rendered. */
    assert_render(m, "");
    metric_inc(metric_family_child(f, (const char *[]){"/a", "200"}));
    metric_add(metric_family_child(f, (const char *[]){"/b", "503"}), 4);
    metric_inc(metric_family_child(f, (const char *[]){"/a", "200"}));
    assert_render(m, "# HELP arv_http_requests_total Requests.\n"
                     "# TYPE arv_http_requests_total counter\n"
                     "arv_http_requests_total{route=\"/a\",status=\"200\"} 2\n"
                     "arv_http_requests_total{route=\"/b\",status=\"503\"} 4\n");
    metrics_free(m);
}

Test(metrics, escaping)
{
    struct metrics *m = metrics_new();
    struct metric_family *f =
        metrics_counter(m, "arv_esc_total", "Back\\slash and\nnewline \"quoted\".", "v");
    cr_assert_not_null(f);
    metric_inc(metric_family_child(f, (const char *[]){"a\\b\"c\nd"}));
    assert_render(m, "# HELP arv_esc_total Back\\\\slash and\\nnewline \"quoted\".\n"
                     "# TYPE arv_esc_total counter\n"
                     "arv_esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
    metrics_free(m);
}

Test(metrics, gauge_set_and_values)
{
    struct metrics *m = metrics_new();
    struct metric_family *f = metrics_gauge(m, "arv_depth", "Depth.", "q");
    struct metric *a = metric_family_child(f, (const char *[]){"a"});
    struct metric *b = metric_family_child(f, (const char *[]){"b"});
    struct metric *c = metric_family_child(f, (const char *[]){"c"});
    struct metric *d = metric_family_child(f, (const char *[]){"d"});
    metric_set(a, 2.5);
    metric_set(a, -1.25);
    metric_add(a, -1);
    metric_set(b, 0.1);
    metric_set(c, INFINITY);
    metric_set(d, 1e-7);
    metric_observe(a, 100); /* not a histogram: ignored */
    assert_render(m, "# HELP arv_depth Depth.\n"
                     "# TYPE arv_depth gauge\n"
                     "arv_depth{q=\"a\"} -2.25\n"
                     "arv_depth{q=\"b\"} 0.1\n"
                     "arv_depth{q=\"c\"} +Inf\n"
                     "arv_depth{q=\"d\"} 1e-07\n");
    metrics_free(m);
}

Test(metrics, histogram_cumulative)
{
    struct metrics *m = metrics_new();
    static const double b[] = {0.1, 1, 10};
    struct metric_family *f = metrics_histogram(m, "arv_flush_seconds", "Flush.", "", b, 3);
    cr_assert_not_null(f);
    struct metric *h = metric_family_single(f);
    metric_observe(h, 0.25);
    metric_observe(h, 0.5);
    metric_observe(h, 1); /* on the bound: le="1" */
    metric_observe(h, 2);
    metric_observe(h, 64);
    metric_observe(h, NAN); /* ignored */
    metric_inc(h);          /* not a counter: ignored */
    assert_render(m, "# HELP arv_flush_seconds Flush.\n"
                     "# TYPE arv_flush_seconds histogram\n"
                     "arv_flush_seconds_bucket{le=\"0.1\"} 0\n"
                     "arv_flush_seconds_bucket{le=\"1\"} 3\n"
                     "arv_flush_seconds_bucket{le=\"10\"} 4\n"
                     "arv_flush_seconds_bucket{le=\"+Inf\"} 5\n"
                     "arv_flush_seconds_sum 67.75\n"
                     "arv_flush_seconds_count 5\n");
    metrics_free(m);
}

Test(metrics, histogram_with_labels)
{
    struct metrics *m = metrics_new();
    static const double b[] = {0.5, INFINITY}; /* explicit +Inf is dropped */
    struct metric_family *f = metrics_histogram(m, "arv_lat_seconds", "Latency.", "route", b, 2);
    cr_assert_not_null(f);
    metric_observe(metric_family_child(f, (const char *[]){"/x"}), 0.5);
    metric_observe(metric_family_child(f, (const char *[]){"/x"}), 3);
    assert_render(m, "# HELP arv_lat_seconds Latency.\n"
                     "# TYPE arv_lat_seconds histogram\n"
                     "arv_lat_seconds_bucket{route=\"/x\",le=\"0.5\"} 1\n"
                     "arv_lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 2\n"
                     "arv_lat_seconds_sum{route=\"/x\"} 3.5\n"
                     "arv_lat_seconds_count{route=\"/x\"} 2\n");
    metrics_free(m);
}

Test(metrics, children_reused)
{
    struct metrics *m = metrics_new();
    struct metric_family *f = metrics_counter(m, "arv_c_total", "C.", "a,b");
    struct metric *x = metric_family_child(f, (const char *[]){"1", "2"});
    cr_assert_not_null(x);
    cr_assert_eq(metric_family_child(f, (const char *[]){"1", "2"}), x);
    cr_assert_neq(metric_family_child(f, (const char *[]){"12", ""}), x);
    cr_assert_neq(metric_family_child(f, (const char *[]){"2", "1"}), x);
    /* Enough children to grow the hash table several times. */
    struct metric *kids[200];
    char buf[16];
    for (int i = 0; i < 200; i++) {
        snprintf(buf, sizeof(buf), "%d", i);
        kids[i] = metric_family_child(f, (const char *[]){buf, "k"});
        cr_assert_not_null(kids[i]);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(buf, sizeof(buf), "%d", i);
        cr_assert_eq(metric_family_child(f, (const char *[]){buf, "k"}), kids[i]);
    }
    cr_assert_eq(metric_family_child(f, (const char *[]){"1", "2"}), x);
    cr_assert_null(metric_family_child(f, NULL));
    metrics_free(m);
}

struct worker {
    struct metric *counter;
    struct metric *hist;
    struct metric_family *fam;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100000; i++) {
        metric_inc(w->counter);
        metric_observe(w->hist, 0.001);
        if (i % 1000 == 0)
            metric_inc(metric_family_child(w->fam, (const char *[]){i % 2000 ? "odd" : "even"}));
    }
    return NULL;
}

Test(metrics, concurrent_updates)
{
    struct metrics *m = metrics_new();
    struct worker w = {
        .counter = metric_family_single(metrics_counter(m, "arv_n_total", "N.", NULL)),
        .hist = metric_family_single(metrics_histogram(
            m, "arv_h_seconds", "H.", NULL, metrics_latency_buckets, metrics_latency_buckets_len)),
        .fam = metrics_counter(m, "arv_l_total", "L.", "k"),
    };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, worker_run, &w), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *got = render_families(m);
    cr_assert_not_null(strstr(got, "\narv_n_total 400000\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\narv_h_seconds_count 400000\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\narv_h_seconds_bucket{le=\"0.001\"} 400000\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\narv_h_seconds_bucket{le=\"0.0005\"} 0\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\narv_l_total{k=\"even\"} 200\n"), "%s", got);
    cr_assert_not_null(strstr(got, "\narv_l_total{k=\"odd\"} 200\n"), "%s", got);
    free(got);
    metrics_free(m);
}

Test(metrics, invalid_names_rejected)
{
    struct metrics *m = metrics_new();
    static const double bad[] = {1, 0.5};
    static const double nan_b[] = {NAN};
    cr_assert_null(metrics_counter(m, "1abc", "x", NULL));
    cr_assert_null(metrics_counter(m, "a-b", "x", NULL));
    cr_assert_null(metrics_counter(m, "", "x", NULL));
    cr_assert_null(metrics_counter(m, NULL, "x", NULL));
    cr_assert_null(metrics_counter(m, "ok_total", NULL, NULL));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "a,,b"));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "a,"));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "a:b"));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "__name"));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "a,a"));
    cr_assert_null(metrics_counter(m, "ok_total", "x", "1a"));
    cr_assert_null(metrics_histogram(m, "ok_seconds", "x", "le", metrics_latency_buckets, 3));
    cr_assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, bad, 2));
    cr_assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, nan_b, 1));
    cr_assert_null(metrics_histogram(m, "ok_seconds", "x", NULL, NULL, 2));
    cr_assert_null(metrics_gauge(m, "process_open_fds", "x", NULL));
    cr_assert_not_null(metrics_counter(m, "ns:sub_total", "x", "a_1,B"));
    assert_render(m, "");
    metrics_free(m);
}

Test(metrics, duplicate_families)
{
    struct metrics *m = metrics_new();
    struct metric_family *f = metrics_counter(m, "arv_dup_total", "D.", "a");
    cr_assert_not_null(f);
    /* Same shape: the existing family. */
    cr_assert_eq(metrics_counter(m, "arv_dup_total", "D.", "a"), f);
    /* Another type or other labels: refused. */
    cr_assert_null(metrics_gauge(m, "arv_dup_total", "D.", "a"));
    cr_assert_null(metrics_counter(m, "arv_dup_total", "D.", "b"));
    cr_assert_null(metrics_counter(m, "arv_dup_total", "D.", NULL));
    metrics_free(m);
}

/* A histogram's series are <name>_bucket, _sum and _count: another family of
 * one of those names would give a page with a series twice, which Prometheus
 * refuses whole. */
Test(metrics, histogram_series_names_are_taken)
{
    struct metrics *m = metrics_new();
    static const double b[] = {1};
    cr_assert_not_null(metrics_histogram(m, "arv_h", "H.", NULL, b, 1));
    cr_assert_null(metrics_counter(m, "arv_h_count", "C.", NULL));
    cr_assert_null(metrics_gauge(m, "arv_h_sum", "S.", NULL));
    cr_assert_null(metrics_gauge(m, "arv_h_bucket", "B.", NULL));
    cr_assert_not_null(metrics_gauge(m, "arv_h_other", "O.", NULL));
    cr_assert_not_null(metrics_counter(m, "arv_g_count", "C.", NULL));
    cr_assert_null(metrics_histogram(m, "arv_g", "H.", NULL, b, 1));
    metrics_free(m);
}

static void collect(void *arg)
{
    struct metric_family *f = arg;
    metric_set(metric_family_child(f, (const char *[]){"s0"}), 42);
}

Test(metrics, collect_callback)
{
    struct metrics *m = metrics_new();
    struct metric_family *f = metrics_gauge(m, "arv_stream_length", "Len.", "stream");
    metrics_on_collect(m, collect, f);
    assert_render(m, "# HELP arv_stream_length Len.\n"
                     "# TYPE arv_stream_length gauge\n"
                     "arv_stream_length{stream=\"s0\"} 42\n");
    metrics_free(m);
}

Test(metrics, process_metrics)
{
    struct metrics *m = metrics_new();
    struct strbuf sb;
    strbuf_init(&sb);
    metrics_render(m, &sb);
    static const char *const names[] = {"process_cpu_seconds_total",
                                        "process_resident_memory_bytes",
                                        "process_virtual_memory_bytes",
                                        "process_open_fds",
                                        "process_max_fds",
                                        "process_start_time_seconds"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), "\n%s ", names[i]);
        char *p = strstr(sb.data, want);
        cr_assert_not_null(p, "%s missing:\n%s", names[i], sb.data);
        double v = strtod(p + strlen(want), NULL);
        cr_assert(v > 0, "%s = %g", names[i], v);
    }
    double start = strtod(strstr(sb.data, "\nprocess_start_time_seconds ") + 28, NULL);
    double now = (double)time(NULL);
    cr_assert(start > now - 3600 && start <= now + 1, "start %f now %f", start, now);
    strbuf_deinit(&sb);
    metrics_free(m);
}

Test(metrics, latency_buckets)
{
    cr_assert_geq(metrics_latency_buckets_len, 10);
    cr_assert_float_eq(metrics_latency_buckets[0], 0.0005, 1e-12);
    cr_assert_float_eq(metrics_latency_buckets[metrics_latency_buckets_len - 1], 10, 1e-12);
    for (size_t i = 1; i < metrics_latency_buckets_len; i++)
        cr_assert_gt(metrics_latency_buckets[i], metrics_latency_buckets[i - 1]);
}

/* Pipes an exposition through `promtool check metrics` when promtool is found
 * (PROMTOOL or PATH); skipped otherwise. */
Test(metrics, promtool_accepts)
{
    const char *tool = getenv("PROMTOOL");
    if (!tool || !*tool)
        tool = system("command -v promtool >/dev/null 2>&1") == 0 ? "promtool" : NULL;
    if (!tool)
        cr_skip_test("promtool not found");

    struct metrics *m = metrics_new();
    struct metric_family *c = metrics_counter(m, "arv_http_requests_total",
                                              "HTTP \"requests\"\\ by route.", "route,status");
    metric_inc(metric_family_child(c, (const char *[]){"/api/x\"y\\z\nw", "200"}));
    metric_set(metric_family_single(metrics_gauge(m, "arv_queue_depth", "Queue depth.", NULL)),
               -3.5);
    struct metric_family *h =
        metrics_histogram(m, "arv_http_request_duration_seconds", "Request latency.", "route",
                          metrics_latency_buckets, metrics_latency_buckets_len);
    for (int i = 0; i < 100; i++)
        metric_observe(metric_family_child(h, (const char *[]){"/a"}), i * 0.013);
    struct strbuf sb;
    strbuf_init(&sb);
    metrics_render(m, &sb);

    char path[] = "/tmp/arv-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, sb.data, sb.len), (ssize_t)sb.len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s check metrics < %s", tool, path);
    int rc = system(cmd);
    unlink(path);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "promtool rejected:\n%s", sb.data);
    strbuf_deinit(&sb);
    metrics_free(m);
}
