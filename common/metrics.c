/* Prometheus metrics registry: families and their labelled children created under
 * a lock, values updated lock-free with C11 atomics, text exposition 0.0.4. */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"

const double metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_latency_buckets_len =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric {
    struct metric_family *family; /* owner */
    char **values;                /* label values, family->nlabels of them */
    _Atomic uint64_t bits;        /* counter/gauge value as double bits */
    _Atomic uint64_t sum_bits;    /* histogram: sum of observations as double bits */
    _Atomic uint64_t *counts;     /* histogram: per-bucket (not cumulative), +Inf last */
    struct metric *next;          /* creation order, for rendering */
    struct metric *hnext;         /* hash chain */
    uint64_t hash;                /* hash of the label values */
};

struct metric_family {
    struct metrics *registry;   /* owner; its lock guards the children lists */
    enum metric_type type;      /* counter, gauge or histogram */
    const char *name;           /* borrowed */
    const char *help;           /* borrowed */
    char **labels;              /* label names */
    size_t nlabels;             /* count of labels */
    double *buckets;            /* histogram upper bounds, without +Inf */
    size_t nbuckets;            /* count of buckets */
    struct metric *children;    /* creation order */
    struct metric **tail;       /* where the next child is linked */
    struct metric **table;      /* hash table of children */
    size_t table_cap;           /* slots in table (power of two) */
    size_t nchildren;           /* count of children */
    struct metric *single;      /* unlabelled families: the only child */
    struct metric_family *next; /* registration order */
};

struct metrics_collector {
    metrics_collect_cb *cb; /* refreshes on-demand gauges */
    void *arg;              /* passed to cb */
};

struct metrics {
    pthread_mutex_t lock;                 /* guards families, children, collectors */
    struct metric_family *families;       /* registration order */
    struct metric_family **tail;          /* where the next family is linked */
    struct metrics_collector *collectors; /* called before each render */
    size_t ncollectors;                   /* used slots */
    size_t collectors_cap;                /* allocated slots */
};

/* Names the registry renders itself; a family may not take one of them. */
static const char *const process_names[] = {"process_cpu_seconds_total",
                                            "process_resident_memory_bytes",
                                            "process_virtual_memory_bytes",
                                            "process_open_fds",
                                            "process_max_fds",
                                            "process_start_time_seconds"};

static uint64_t dbl_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

static double bits_dbl(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof(v));
    return v;
}

static void atomic_add_dbl(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbl_bits(bits_dbl(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static bool valid_metric_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool valid_label_name(const char *s, size_t n)
{
    if (n == 0 || (n >= 2 && s[0] == '_' && s[1] == '_'))
        return false; /* "__" names are reserved for Prometheus itself */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void metric_free(struct metric *c, size_t nlabels)
{
    if (!c)
        return;
    free_strv(c->values, nlabels);
    free(c->counts);
    free(c);
}

static void family_free(struct metric_family *f)
{
    if (!f)
        return;
    struct metric *c = f->children;
    while (c) {
        struct metric *next = c->next;
        metric_free(c, f->nlabels);
        c = next;
    }
    free(f->table);
    free_strv(f->labels, f->nlabels);
    free(f->buckets);
    free(f);
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->tail = &m->families;
    return m;
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    struct metric_family *f = m->families;
    while (f) {
        struct metric_family *next = f->next;
        family_free(f);
        f = next;
    }
    free(m->collectors);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Splits "a,b" into validated label names. Returns false on a bad or repeated
 * name, or out of memory. */
static bool parse_labels(const char *labels, bool histogram, char ***out, size_t *nout)
{
    char **v = NULL;
    size_t n = 0;
    bool ok = false;

    *out = NULL;
    *nout = 0;
    if (!labels || !*labels)
        return true;
    size_t max = 1;
    for (const char *p = labels; *p; p++)
        max += *p == ',';
    v = calloc(max, sizeof(*v));
    if (!v)
        goto out;
    for (const char *p = labels;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (!valid_label_name(p, len))
            goto out;
        if (histogram && len == 2 && memcmp(p, "le", 2) == 0)
            goto out;
        for (size_t i = 0; i < n; i++) {
            if (strlen(v[i]) == len && memcmp(v[i], p, len) == 0)
                goto out;
        }
        v[n] = strndup(p, len);
        if (!v[n])
            goto out;
        n++;
        if (!end)
            break;
        p = end + 1;
    }
    *out = v;
    *nout = n;
    v = NULL;
    ok = true;
out:
    free_strv(v, n);
    return ok;
}

static bool same_shape(const struct metric_family *a, const struct metric_family *b)
{
    if (a->type != b->type || a->nlabels != b->nlabels || a->nbuckets != b->nbuckets)
        return false;
    for (size_t i = 0; i < a->nlabels; i++) {
        if (strcmp(a->labels[i], b->labels[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < a->nbuckets; i++) {
        if (a->buckets[i] != b->buckets[i])
            return false;
    }
    return true;
}

/* True when `name` is `base` followed by a histogram's series suffix. */
static bool histogram_series_of(const char *name, const char *base)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(base);

    if (strncmp(name, base, n) != 0)
        return false;
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (strcmp(name + n, suffixes[i]) == 0)
            return true;
    }
    return false;
}

/* True when a family `name` of `type` would render a series another family
 * renders too: the same name (*f is then that family, unless it is one of the
 * process metrics), or a histogram's <name>_bucket, _sum or _count. */
static bool name_taken(const struct metrics *m, const char *name, enum metric_type type,
                       struct metric_family **f)
{
    *f = NULL;
    for (size_t i = 0; i < sizeof(process_names) / sizeof(process_names[0]); i++) {
        if (strcmp(name, process_names[i]) == 0)
            return true;
    }
    for (struct metric_family *x = m->families; x; x = x->next) {
        if (strcmp(x->name, name) == 0) {
            *f = x;
            return true;
        }
        if ((x->type == METRIC_HISTOGRAM && histogram_series_of(name, x->name)) ||
            (type == METRIC_HISTOGRAM && histogram_series_of(x->name, name)))
            return true;
    }
    return false;
}

static struct metric *child_new(struct metric_family *f, const char *const *values, uint64_t hash)
{
    struct metric *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->family = f;
    c->hash = hash;
    if (f->nlabels) {
        c->values = calloc(f->nlabels, sizeof(*c->values));
        if (!c->values)
            goto fail;
        for (size_t i = 0; i < f->nlabels; i++) {
            c->values[i] = strdup(values[i] ? values[i] : "");
            if (!c->values[i])
                goto fail;
        }
    }
    if (f->type == METRIC_HISTOGRAM) {
        c->counts = calloc(f->nbuckets + 1, sizeof(*c->counts));
        if (!c->counts)
            goto fail;
    }
    return c;
fail:
    metric_free(c, f->nlabels);
    return NULL;
}

static struct metric_family *family_register(struct metrics *m, enum metric_type type,
                                             const char *name, const char *help, const char *labels,
                                             const double *buckets, size_t nbuckets)
{
    struct metric_family *f = NULL;
    struct metric_family *ret = NULL;
    struct metric_family *existing = NULL;
    bool locked = false;

    if (!m || !valid_metric_name(name) || !help || (nbuckets && !buckets)) {
        log_error("metrics_invalid_family", LF_STR("name", name));
        goto out;
    }
    f = calloc(1, sizeof(*f));
    if (!f)
        goto out;
    f->registry = m;
    f->type = type;
    f->name = name;
    f->help = help;
    f->tail = &f->children;
    if (!parse_labels(labels, type == METRIC_HISTOGRAM, &f->labels, &f->nlabels)) {
        log_error("metrics_invalid_labels", LF_STR("name", name), LF_STR("labels", labels));
        goto out;
    }
    if (type == METRIC_HISTOGRAM) {
        /* An explicit trailing +Inf is implicit anyway; drop it. */
        if (nbuckets && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
            nbuckets--;
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
                log_error("metrics_invalid_buckets", LF_STR("name", name));
                goto out;
            }
        }
        if (nbuckets) {
            f->buckets = malloc(nbuckets * sizeof(*f->buckets));
            if (!f->buckets)
                goto out;
            memcpy(f->buckets, buckets, nbuckets * sizeof(*f->buckets));
        }
        f->nbuckets = nbuckets;
    }
    if (f->nlabels == 0) {
        f->single = child_new(f, NULL, 0);
        if (!f->single)
            goto out;
        f->children = f->single;
        f->tail = &f->single->next;
        f->nchildren = 1;
    }

    pthread_mutex_lock(&m->lock);
    locked = true;
    if (name_taken(m, name, type, &existing)) {
        /* Registering the same family twice (two servers sharing a registry) is
         * harmless and returns the first; a clash of shapes is a bug. */
        if (existing && same_shape(existing, f)) {
            ret = existing;
        } else {
            log_error("metrics_duplicate_family", LF_STR("name", name));
        }
        goto out;
    }
    *m->tail = f;
    m->tail = &f->next;
    ret = f;
    f = NULL;
out:
    if (locked)
        pthread_mutex_unlock(&m->lock);
    family_free(f);
    return ret;
}

struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      const char *labels)
{
    return family_register(m, METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    const char *labels)
{
    return family_register(m, METRIC_GAUGE, name, help, labels, NULL, 0);
}

struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        const char *labels, const double *buckets, size_t nbuckets)
{
    return family_register(m, METRIC_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

static uint64_t values_hash(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const char *p = values[i] ? values[i] : ""; *p; p++) {
            h ^= (unsigned char)*p;
            h *= 1099511628211ULL;
        }
        h ^= 0xff; /* separator: ("a","bc") != ("ab","c") */
        h *= 1099511628211ULL;
    }
    return h;
}

static bool values_equal(const struct metric *c, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(c->values[i], values[i] ? values[i] : "") != 0)
            return false;
    }
    return true;
}

/* Doubles the hash table. Called with the registry lock held. */
static int table_grow(struct metric_family *f)
{
    size_t cap = f->table_cap ? f->table_cap * 2 : 16;
    struct metric **t = calloc(cap, sizeof(*t));
    if (!t)
        return -1;
    for (struct metric *c = f->children; c; c = c->next) {
        size_t slot = c->hash & (cap - 1);
        c->hnext = t[slot];
        t[slot] = c;
    }
    free(f->table);
    f->table = t;
    f->table_cap = cap;
    return 0;
}

struct metric *metric_family_child(struct metric_family *f, const char *const *values)
{
    struct metric *c = NULL;

    if (!f)
        return NULL;
    if (f->nlabels == 0)
        return f->single;
    if (!values)
        return NULL;

    uint64_t h = values_hash(values, f->nlabels);
    pthread_mutex_lock(&f->registry->lock);
    if (f->table_cap) {
        for (c = f->table[h & (f->table_cap - 1)]; c; c = c->hnext) {
            if (c->hash == h && values_equal(c, values, f->nlabels))
                goto out;
        }
    }
    if (f->nchildren + 1 > f->table_cap && table_grow(f) < 0)
        goto out;
    c = child_new(f, values, h);
    if (!c)
        goto out;
    *f->tail = c;
    f->tail = &c->next;
    size_t slot = h & (f->table_cap - 1);
    c->hnext = f->table[slot];
    f->table[slot] = c;
    f->nchildren++;
out:
    pthread_mutex_unlock(&f->registry->lock);
    return c;
}

struct metric *metric_family_single(struct metric_family *f)
{
    return f ? f->single : NULL;
}

void metric_inc(struct metric *c)
{
    metric_add(c, 1.0);
}

void metric_add(struct metric *c, double v)
{
    if (!c || c->family->type == METRIC_HISTOGRAM)
        return;
    if (c->family->type == METRIC_COUNTER && !(v >= 0))
        return; /* counters only go up (also drops NaN) */
    atomic_add_dbl(&c->bits, v);
}

void metric_set(struct metric *c, double v)
{
    if (!c || c->family->type != METRIC_GAUGE)
        return;
    atomic_store_explicit(&c->bits, dbl_bits(v), memory_order_relaxed);
}

void metric_observe(struct metric *c, double v)
{
    if (!c || c->family->type != METRIC_HISTOGRAM || isnan(v))
        return;
    const struct metric_family *f = c->family;
    size_t i = 0;
    while (i < f->nbuckets && v > f->buckets[i])
        i++;
    atomic_fetch_add_explicit(&c->counts[i], 1, memory_order_relaxed);
    atomic_add_dbl(&c->sum_bits, v);
}

void metrics_on_collect(struct metrics *m, metrics_collect_cb *cb, void *arg)
{
    if (!m || !cb)
        return;
    pthread_mutex_lock(&m->lock);
    if (m->ncollectors == m->collectors_cap) {
        size_t cap = m->collectors_cap ? m->collectors_cap * 2 : 4;
        struct metrics_collector *v = realloc(m->collectors, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&m->lock);
            log_error("metrics_out_of_memory", LF_STR("what", "collector"));
            return;
        }
        m->collectors = v;
        m->collectors_cap = cap;
    }
    m->collectors[m->ncollectors++] = (struct metrics_collector){.cb = cb, .arg = arg};
    pthread_mutex_unlock(&m->lock);
}

/* Shortest text that parses back to `v` (Go's ParseFloat accepts all of it). */
static void put_double(struct strbuf *out, double v)
{
    if (isnan(v)) {
        strbuf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    strbuf_puts(out, buf);
}

static void put_escaped(struct strbuf *out, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            strbuf_puts(out, "\\\\");
        else if (*s == '\n')
            strbuf_puts(out, "\\n");
        else if (quote && *s == '"')
            strbuf_puts(out, "\\\"");
        else
            strbuf_putc(out, *s);
    }
}

static void put_header(struct strbuf *out, const char *name, const char *help, const char *type)
{
    strbuf_printf(out, "# HELP %s ", name);
    put_escaped(out, help, false);
    strbuf_printf(out, "\n# TYPE %s %s\n", name, type);
}

/* Writes `{a="x",b="y"` plus an optional le pair, then `}`; nothing if empty. */
static void put_labels(struct strbuf *out, const struct metric *c, const double *le)
{
    const struct metric_family *f = c->family;
    if (f->nlabels == 0 && !le)
        return;
    strbuf_putc(out, '{');
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i)
            strbuf_putc(out, ',');
        strbuf_printf(out, "%s=\"", f->labels[i]);
        put_escaped(out, c->values[i], true);
        strbuf_putc(out, '"');
    }
    if (le) {
        if (f->nlabels)
            strbuf_putc(out, ',');
        strbuf_puts(out, "le=\"");
        put_double(out, *le);
        strbuf_putc(out, '"');
    }
    strbuf_putc(out, '}');
}

static void render_histogram(struct strbuf *out, const struct metric *c)
{
    const struct metric_family *f = c->family;
    uint64_t cumulative = 0;
    double inf = INFINITY;

    for (size_t i = 0; i <= f->nbuckets; i++) {
        cumulative += atomic_load_explicit(&c->counts[i], memory_order_relaxed);
        strbuf_printf(out, "%s_bucket", f->name);
        put_labels(out, c, i < f->nbuckets ? &f->buckets[i] : &inf);
        strbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
    }
    strbuf_printf(out, "%s_sum", f->name);
    put_labels(out, c, NULL);
    strbuf_putc(out, ' ');
    put_double(out, bits_dbl(atomic_load_explicit(&c->sum_bits, memory_order_relaxed)));
    /* _count is the +Inf bucket so the two always agree, even mid-update. */
    strbuf_printf(out, "\n%s_count", f->name);
    put_labels(out, c, NULL);
    strbuf_printf(out, " %llu\n", (unsigned long long)cumulative);
}

static void render_family(struct strbuf *out, const struct metric_family *f)
{
    if (!f->children)
        return; /* a labelled family with no children yet has no samples */
    put_header(out, f->name, f->help, type_names[f->type]);
    for (const struct metric *c = f->children; c; c = c->next) {
        if (f->type == METRIC_HISTOGRAM) {
            render_histogram(out, c);
            continue;
        }
        strbuf_puts(out, f->name);
        put_labels(out, c, NULL);
        strbuf_putc(out, ' ');
        put_double(out, bits_dbl(atomic_load_explicit(&c->bits, memory_order_relaxed)));
        strbuf_putc(out, '\n');
    }
}

static void render_value(struct strbuf *out, const char *name, const char *help, const char *type,
                         double v)
{
    put_header(out, name, help, type);
    strbuf_puts(out, name);
    strbuf_putc(out, ' ');
    put_double(out, v);
    strbuf_putc(out, '\n');
}

/* Reads the boot time (seconds since the epoch) from /proc/stat; 0 if unknown. */
static double boot_time(void)
{
    char line[256];
    double bt = 0;
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return 0;
    while (fgets(line, sizeof(line), fp)) {
        unsigned long long v;
        if (sscanf(line, "btime %llu", &v) == 1) {
            bt = (double)v;
            break;
        }
    }
    fclose(fp);
    return bt;
}

static int count_open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory stream's own fd */
}

/* Appends the process_* metrics read from /proc/self; skips what it cannot read. */
static void render_process(struct strbuf *out)
{
    char buf[1024];
    size_t len = 0;
    FILE *fp = fopen("/proc/self/stat", "re");
    if (fp) {
        len = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
    }
    buf[len] = '\0';

    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    /* The command name may hold spaces and parentheses: fields follow the last ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long utime, stime, vsize;
    unsigned long long start;
    long rss;
    if (p && ticks > 0 && page > 0 &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
               "%llu %lu %ld",
               &utime, &stime, &start, &vsize, &rss) == 5) {
        render_value(out, "process_cpu_seconds_total",
                     "Total user and system CPU time spent in seconds.", "counter",
                     (double)(utime + stime) / (double)ticks);
        render_value(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
                     "gauge", (double)rss * (double)page);
        render_value(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
                     (double)vsize);
        double bt = boot_time();
        if (bt > 0)
            render_value(out, "process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.", "gauge",
                         bt + (double)start / (double)ticks);
    }
    int fds = count_open_fds();
    if (fds >= 0)
        render_value(out, "process_open_fds", "Number of open file descriptors.", "gauge", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        render_value(out, "process_max_fds", "Maximum number of open file descriptors.", "gauge",
                     rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

void metrics_render(struct metrics *m, struct strbuf *out)
{
    if (!m)
        return;
    /* Collectors may create children, which takes the lock: call them unlocked. */
    for (size_t i = 0;; i++) {
        pthread_mutex_lock(&m->lock);
        if (i >= m->ncollectors) {
            pthread_mutex_unlock(&m->lock);
            break;
        }
        struct metrics_collector col = m->collectors[i];
        pthread_mutex_unlock(&m->lock);
        col.cb(col.arg);
    }

    pthread_mutex_lock(&m->lock);
    for (const struct metric_family *f = m->families; f; f = f->next)
        render_family(out, f);
    pthread_mutex_unlock(&m->lock);
    render_process(out);
}
