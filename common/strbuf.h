/* A growable byte buffer for building text: log lines, JSON answers, COPY rows,
 * metrics exposition. Always NUL-terminated; never fails silently. */
#ifndef ARV_STRBUF_H
#define ARV_STRBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct strbuf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    bool oom;   /* an allocation failed: contents are truncated */
};

/* Embedded use: strbuf_init() then strbuf_deinit(). */
void strbuf_init(struct strbuf *sb);
void strbuf_deinit(struct strbuf *sb);

/* Empties the buffer, keeping its allocation. */
void strbuf_reset(struct strbuf *sb);

/* Ensures room for `extra` more bytes plus the NUL. Returns 0 or -ENOMEM. */
int strbuf_reserve(struct strbuf *sb, size_t extra);

/* Appends n bytes (inline: a row is dozens of small appends, most of a
 * constant size the compiler copies without a call). */
static inline void strbuf_append(struct strbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap && strbuf_reserve(sb, n) < 0)
        return;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_putc(struct strbuf *sb, char c);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends `s` (n bytes) as a JSON string literal with quotes, escaping quotes,
 * backslashes and control characters. Invalid UTF-8 bytes become U+FFFD. */
void strbuf_json_string(struct strbuf *sb, const char *s, size_t n);

/* Same, for a NUL-terminated string; NULL is written as null. */
void strbuf_json_str(struct strbuf *sb, const char *s);

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF). */
bool strbuf_utf8_valid(const char *s, size_t n);

/* FNV-1a (32-bit) of n bytes: cheap, and the same on every build and machine
 * (the collector's shard choice depends on it). */
uint32_t strbuf_fnv1a(const char *s, size_t n);

/* A hash of n bytes for in-process hash tables, 8 bytes at a step (FNV-1a
 * takes one): every input bit reaches every output bit. Not stable across
 * versions: never store it or send it. `seed` varies it (0: none). */
uint64_t strbuf_hash64(const char *s, size_t n, uint64_t seed);

/* A random seed for strbuf_hash64 (getrandom; else the clock, the pid and
 * `salt`), for a table whose keys others choose: nobody can then pick keys
 * that collide. */
uint64_t strbuf_hash_seed(const void *salt);

/* MurmurHash3's 64-bit finalizer: every input bit reaches every output bit
 * (also a good hash of a 64-bit key). */
static inline uint64_t strbuf_mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* Copies the well-formed UTF-8 sequences of s[0..n) to dst, dropping every
 * byte that does not start one (a sequence cut at either end, stray bytes),
 * as many whole sequences as fit in `max` bytes. Returns the bytes written;
 * dst is not NUL-terminated. */
size_t strbuf_utf8_copy_valid(char *dst, size_t max, const char *s, size_t n);

/* Length of the longest prefix of s[0..len) that is at most `max` bytes and
 * ends on a UTF-8 character boundary (does not cut a sequence): len when
 * len <= max; else max, moved back past continuation bytes. */
size_t strbuf_utf8_prefix(const char *s, size_t len, size_t max);

/* Returns the contents and hands ownership to the caller (free()); the buffer is
 * left empty. Never NULL unless out of memory. */
char *strbuf_steal(struct strbuf *sb);

#endif
