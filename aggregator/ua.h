/* User-agent enrichment: uap-core's regexes (YAML, compiled with PCRE2) turn a
 * User-Agent string into browser, OS and device families, a device type and a
 * bot flag; a per-thread LRU cache keeps the results of recent strings. */
#ifndef ARV_AGGREGATOR_UA_H
#define ARV_AGGREGATOR_UA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;

/* Where Debian's uap-core package installs the regexes (ARV_UA_REGEXES overrides). */
#define UA_DEFAULT_REGEXES "/usr/share/uap-core/regexes.yaml"

/* Only the first UA_MAX_LEN bytes of a user agent are parsed (and cached), cut
 * back to a UTF-8 character boundary: no legitimate browser sends more, and it
 * bounds what a hostile string can cost in regex time. */
#define UA_MAX_LEN 512

/* Size of every text field of struct ua_result: that of struct event's browser
 * and os, so results copy into an event without truncation. */
#define UA_FIELD_SIZE 65

/* The device_type vocabulary (static strings; compare with strcmp or by pointer). */
#define UA_TYPE_MOBILE  "mobile"  /* phones, and what says "Mobi" */
#define UA_TYPE_TABLET  "tablet"  /* iPad (old UAs), Android without "Mobile", Kindle, ... */
#define UA_TYPE_DESKTOP "desktop" /* Windows, macOS, Linux, ChromeOS, BSD browsers */
#define UA_TYPE_HEADSET "headset" /* AR/VR: Quest, Pico, visionOS apps, HoloLens, Magic Leap */
#define UA_TYPE_BOT     "bot"     /* crawlers, monitors, HTTP libraries, headless browsers */
#define UA_TYPE_OTHER   "other"   /* TVs, consoles, unknown or empty */

/* What a user agent says. Text fields are NUL-terminated UTF-8 (when the input
 * was), truncated at a character boundary to fit. */
struct ua_result {
    char browser[UA_FIELD_SIZE]; /* uap user-agent family: "Chrome Mobile"; "Other" */
    char os[UA_FIELD_SIZE];      /* uap OS family: "Android", "iOS", "Mac OS X"; "Other" */
    char device[UA_FIELD_SIZE];  /* uap device family: "iPhone", "Spider"; "Other" */
    char brand[UA_FIELD_SIZE];   /* device brand: "Apple"; "" when unknown */
    char model[UA_FIELD_SIZE];   /* device model: "iPhone"; "" when unknown */
    const char *device_type;     /* one of UA_TYPE_*: static, never NULL */
    bool is_bot;                 /* not a person: keep out of the rollups */
};

/* Counters of one cache, kept by the thread that uses it. */
struct ua_cache_stats {
    uint64_t hits;         /* lookups answered from the cache */
    uint64_t misses;       /* lookups that ran the regexes */
    uint64_t evictions;    /* least recently used entries dropped for new ones */
    uint64_t limit_errors; /* regex matches stopped by PCRE2's limits (rule skipped) */
    size_t entries;        /* strings cached now */
    size_t capacity;       /* at most this many */
};

/* The compiled regexes. Read-only once open: any number of threads may use one
 * struct ua_db at the same time, each through its own struct ua_cache. */
struct ua_db;

/* A per-thread parser state (PCRE2 match data, JIT stack) and LRU cache. Not
 * thread-safe: one thread uses it. */
struct ua_cache;

/* Loads the uap-core regexes file at `path` (borrowed; UA_DEFAULT_REGEXES is
 * Debian's) with libyaml and compiles every rule with PCRE2 (JIT when the
 * platform has it). Built-in rules for AR/VR headsets are tried before uap-core's.
 * Returns 0 with *out set (caller frees with ua_db_close()), or -errno with *out
 * NULL: the open(2) error (-ENOENT, -EACCES, ...) for a file that cannot be read,
 * -EINVAL for a file that is not valid YAML, not a uap-core regexes file, or has a
 * regex PCRE2 refuses, -ENOMEM. On failure, when `err` is not NULL, writes a
 * one-line reason naming the file (and line) into err[0..errlen). Blocks on file
 * I/O and takes ~0.1 s of CPU (compiling ~1,200 regexes): call at start-up, not
 * on an event loop. */
int ua_db_open(const char *path, struct ua_db **out, char *err, size_t errlen);

/* Frees `db`. NULL is fine. Every cache made from it must be freed first. */
void ua_db_close(struct ua_db *db);

/* Number of rules loaded (user agent + OS + device, built-in ones included). */
size_t ua_db_rule_count(const struct ua_db *db);

/* True when the regexes run as JIT-compiled machine code. */
bool ua_db_jit(const struct ua_db *db);

/* Makes a cache over `db` (borrowed: must outlive the cache) holding at most
 * `capacity` results; 0 means no caching (every lookup parses). Memory: about
 * 400 bytes per entry plus its key (at most UA_MAX_LEN). Returns NULL when out
 * of memory; the caller frees it with ua_cache_free(). */
struct ua_cache *ua_cache_new(const struct ua_db *db, size_t capacity);

/* Frees `c` and its entries. NULL is fine. */
void ua_cache_free(struct ua_cache *c);

/* Parses the user agent ua[0..len) (borrowed; need not be NUL-terminated; NULL
 * with len 0 is the empty string) and copies the result into *out, which belongs
 * to the caller and stays valid whatever the cache does next. Answers from the
 * cache when the same first UA_MAX_LEN bytes were seen recently (O(1)); else
 * runs the regexes (tens of microseconds) and caches the result,
 * evicting the least recently used entry when full. Never fails: an unknown or
 * empty user agent gives "Other" families, device type "other", not a bot.
 * CPU only, never blocks. */
void ua_cache_lookup(struct ua_cache *c, const char *ua, size_t len, struct ua_result *out);

/* The aggregator's enrichment step for one decoded event: looks up
 * ev->user_agent (when not empty) and fills ev->device_type, ev->browser and
 * ev->os, each only when the client sent none ("" in the event). An "Other"
 * browser or OS is left empty (the rollups count it as 'unknown'). Returns true
 * when the user agent is a bot, whatever the client sent: the caller keeps the
 * event out of the rollups (and counts it). CPU only, never blocks. */
bool ua_enrich_event(struct ua_cache *c, struct event *ev);

/* Copies the counters of `c` into *out. Only from the thread that uses `c`. */
void ua_cache_stats(const struct ua_cache *c, struct ua_cache_stats *out);

#endif
