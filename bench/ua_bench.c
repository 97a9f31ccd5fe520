/* User-agent parsing benchmark (built and run by bench/ua.sh): ua_db_open time,
 * uncached parses/s over distinct strings, cached lookups/s over a skewed mix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ua.h"

struct lines {
    char **v;    /* NUL-terminated lines, malloc'd */
    size_t *len; /* their lengths */
    size_t n;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void read_lines(const char *path, struct lines *out)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t got;

    if (!f) {
        perror(path);
        exit(1);
    }
    memset(out, 0, sizeof(*out));
    while ((got = getline(&line, &cap, f)) >= 0) {
        if (got > 0 && line[got - 1] == '\n')
            line[--got] = '\0';
        if (out->n == alloc) {
            alloc = alloc ? 2 * alloc : 1024;
            out->v = realloc(out->v, alloc * sizeof(*out->v));
            out->len = realloc(out->len, alloc * sizeof(*out->len));
            if (!out->v || !out->len)
                exit(1);
        }
        out->v[out->n] = strdup(line);
        out->len[out->n++] = (size_t)got;
    }
    free(line);
    fclose(f);
}

static void free_lines(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    free(l->len);
}

int main(int argc, char **argv)
{
    struct ua_db *db = NULL;
    struct ua_cache *c;
    struct ua_cache_stats st;
    struct ua_result r;
    struct lines distinct, mix;
    char err[256];
    double t0, t, secs;
    size_t capacity, done, bots = 0;
    int rc;

    if (argc < 5) {
        fprintf(stderr, "usage: %s REGEXES DISTINCT_FILE MIX_FILE CAPACITY...\n", argv[0]);
        return 2;
    }
    read_lines(argv[2], &distinct);
    read_lines(argv[3], &mix);

    t0 = now_s();
    rc = ua_db_open(argv[1], &db, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "ua_db_open: %s\n", err);
        return 1;
    }
    printf("c  ua_db_open: %.0f ms (%zu rules, JIT %s)\n", (now_s() - t0) * 1e3,
           ua_db_rule_count(db), ua_db_jit(db) ? "yes" : "no");

    /* Uncached: every distinct string parsed, as many passes as fit in ~3 s. */
    c = ua_cache_new(db, 0);
    t0 = now_s();
    done = 0;
    do {
        for (size_t i = 0; i < distinct.n; i++) {
            ua_cache_lookup(c, distinct.v[i], distinct.len[i], &r);
            bots += r.is_bot;
        }
        done += distinct.n;
        t = now_s();
    } while (t - t0 < 3.0);
    secs = t - t0;
    printf("c  uncached: %zu parses of %zu distinct strings in %.2f s: %.0f parses/s "
           "(%.1f us each)\n",
           done, distinct.n, secs, (double)done / secs, secs / (double)done * 1e6);
    ua_cache_free(c);

    /* Cached: the skewed mix through a cache of each capacity. */
    for (int a = 4; a < argc; a++) {
        capacity = strtoul(argv[a], NULL, 10);
        c = ua_cache_new(db, capacity);
        t0 = now_s();
        for (size_t i = 0; i < mix.n; i++) {
            ua_cache_lookup(c, mix.v[i], mix.len[i], &r);
            bots += r.is_bot;
        }
        secs = now_s() - t0;
        ua_cache_stats(c, &st);
        printf("c  cached (capacity %zu): %zu lookups in %.2f s: %.0f lookups/s, hit rate "
               "%.1f%%, %zu evictions\n",
               capacity, mix.n, secs, (double)mix.n / secs,
               100.0 * (double)st.hits / (double)(st.hits + st.misses), (size_t)st.evictions);
        ua_cache_free(c);
    }
    ua_db_close(db);
    free_lines(&distinct);
    free_lines(&mix);
    fprintf(stderr, "(%zu bots seen)\n", bots);
    return 0;
}
