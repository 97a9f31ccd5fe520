/* HyperLogLog sketches in postgresql-hll's storage format (its STORAGE.markdown,
 * schema version 1): hashing, EXPLICIT and FULL encodings. Pure. */
#include "hll.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>

#define HLL_NREGS      (1u << HLL_LOG2M)
#define HLL_REG_MAX    ((1u << HLL_REGWIDTH) - 1)
#define HLL_FULL_BYTES ((HLL_NREGS * HLL_REGWIDTH + 7) / 8)
/* expthresh -1 (auto) stays EXPLICIT while the values take no more room than
 * the FULL registers would: 2560 bytes / 8 = 320 values. */
#define HLL_EXPLICIT_MAX (HLL_FULL_BYTES / 8)

/* Header byte 0: schema version 1 in the high nibble, the type in the low one. */
enum hll_type {
    HLL_TYPE_EMPTY = 1,
    HLL_TYPE_EXPLICIT = 2,
    HLL_TYPE_FULL = 4,
};
/* Byte 1: (regwidth - 1) << 5 | log2m. */
#define HLL_PARAM_BYTE ((HLL_REGWIDTH - 1) << 5 | HLL_LOG2M)
/* Byte 2: sparseon (1) << 6 | expthresh code (63 means -1, auto). Must equal what
 * hll_add_agg(h, 12, 5) writes: hll_union refuses sketches whose
 * expthresh or sparseon differ. */
#define HLL_CUTOFF_BYTE (1 << 6 | 63)

static uint64_t rotl64(uint64_t x, unsigned r)
{
    return x << r | x >> (64 - r);
}

/* Little-endian 64-bit load, as MurmurHash3 reads blocks on x86-64. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint64_t hll_hash(const void *data, size_t len)
{
    static const uint64_t c1 = 0x87c37b91114253d5ULL;
    static const uint64_t c2 = 0x4cf5ad432745937fULL;
    const unsigned char *p = data;
    uint64_t h1 = 0, h2 = 0; /* seed 0, as hll_hash_bytea's default */
    size_t nblocks = len / 16;

    for (size_t i = 0; i < nblocks; i++, p += 16) {
        uint64_t k1 = load_le64(p), k2 = load_le64(p + 8);

        h1 ^= rotl64(k1 * c1, 31) * c2;
        h1 = (rotl64(h1, 27) + h2) * 5 + 0x52dce729;
        h2 ^= rotl64(k2 * c2, 33) * c1;
        h2 = (rotl64(h2, 31) + h1) * 5 + 0x38495ab5;
    }

    /* The 0..15 trailing bytes, little-endian: bytes 8.. into k2, 0..7 into k1. */
    size_t tail = len & 15;
    uint64_t k1 = 0, k2 = 0;
    for (size_t i = tail; i > 8; i--)
        k2 = k2 << 8 | p[i - 1];
    for (size_t i = tail < 8 ? tail : 8; i > 0; i--)
        k1 = k1 << 8 | p[i - 1];
    if (tail > 8)
        h2 ^= rotl64(k2 * c2, 33) * c1;
    if (tail > 0)
        h1 ^= rotl64(k1 * c1, 31) * c2;

    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = strbuf_mix64(h1);
    h2 = strbuf_mix64(h2);
    h1 += h2;
    return h1;
}

static bool less_signed(uint64_t a, uint64_t b)
{
    return (int64_t)a < (int64_t)b;
}

static void swap(uint64_t *a, uint64_t *b)
{
    uint64_t t = *a;

    *a = *b;
    *b = t;
}

/* Sorts h[0..n) as signed: a quicksort (median of three, the smaller side
 * first) down to runs of 16, finished by insertion. qsort's call per
 * comparison was a tenth of the aggregator's CPU. Hashes are uniform, so the
 * depth stays logarithmic. */
static void sort_signed(uint64_t *h, size_t n)
{
    while (n > 16) {
        size_t mid = n / 2, i = 0, j = n - 1;
        uint64_t pivot;
        if (less_signed(h[mid], h[0]))
            swap(&h[mid], &h[0]);
        if (less_signed(h[n - 1], h[0]))
            swap(&h[n - 1], &h[0]);
        if (less_signed(h[n - 1], h[mid]))
            swap(&h[n - 1], &h[mid]);
        pivot = h[mid];
        for (;;) { /* Hoare: h[0] <= pivot <= h[n - 1] bound both scans */
            while (less_signed(h[i], pivot))
                i++;
            while (less_signed(pivot, h[j]))
                j--;
            if (i >= j)
                break;
            swap(&h[i], &h[j]);
            i++;
            j--;
        }
        /* [0, j] <= pivot <= [j + 1, n) */
        if (j + 1 < n - j - 1) {
            sort_signed(h, j + 1);
            h += j + 1;
            n -= j + 1;
        } else {
            sort_signed(h + j + 1, n - j - 1);
            n = j + 1;
        }
    }
    for (size_t i = 1; i < n; i++) {
        uint64_t v = h[i];
        size_t k = i;
        for (; k > 0 && less_signed(v, h[k - 1]); k--)
            h[k] = h[k - 1];
        h[k] = v;
    }
}

size_t hll_sort_unique(uint64_t *hashes, size_t n)
{
    size_t m = 0;

    if (n == 0)
        return 0;
    sort_signed(hashes, n);
    for (size_t i = 1; i < n; i++) {
        if (hashes[i] != hashes[m])
            hashes[++m] = hashes[i];
    }
    return m + 1;
}

/* Whether more than `limit` (below HLL_SEEN_SLOTS / 2) of h[0..n) are
 * distinct: an open-addressing set of those seen, stopping once it holds more
 * than `limit`. Hashes are uniform, so their low bits place them. */
#define HLL_SEEN_SLOTS 1024
static bool more_distinct_than(const uint64_t *h, size_t n, size_t limit)
{
    uint64_t seen[HLL_SEEN_SLOTS] = {0}; /* 0: free (the hash 0 is noted apart) */
    bool zero = false;
    size_t distinct = 0;

    assert(limit < HLL_SEEN_SLOTS / 2);
    for (size_t i = 0; i < n; i++) {
        size_t k = (size_t)h[i] & (HLL_SEEN_SLOTS - 1);

        if (h[i] == 0) {
            if (zero)
                continue;
            zero = true;
        } else {
            while (seen[k] != 0 && seen[k] != h[i])
                k = (k + 1) & (HLL_SEEN_SLOTS - 1);
            if (seen[k] != 0)
                continue;
            seen[k] = h[i];
        }
        if (++distinct > limit)
            return true;
    }
    return false;
}

size_t hll_prepare(uint64_t *hashes, size_t n)
{
    if (n > HLL_EXPLICIT_MAX && more_distinct_than(hashes, n, HLL_EXPLICIT_MAX))
        return n;
    return hll_sort_unique(hashes, n);
}

/* Register of one hash as postgresql-hll computes it: the low log2m bits pick
 * the register; the value is 1 + the index of the lowest set bit of the rest,
 * at most 2^regwidth - 1; a zero rest gives 0 (the register is left as is). */
static void full_add(uint8_t *regs, uint64_t h)
{
    unsigned idx = (unsigned)(h & (HLL_NREGS - 1));
    uint64_t rest = h >> HLL_LOG2M;
    unsigned v;

    if (rest == 0)
        return;
    v = (unsigned)__builtin_ctzll(rest) + 1;
    if (v > HLL_REG_MAX)
        v = HLL_REG_MAX;
    if (regs[idx] < v)
        regs[idx] = (uint8_t)v;
}

size_t hll_sketch_size(size_t n)
{
    return 3 + (n == 0 ? 0 : n <= HLL_EXPLICIT_MAX ? 8 * n : HLL_FULL_BYTES);
}

void hll_write_sketch(const uint64_t *hashes, size_t n, struct strbuf *out)
{
    enum hll_type type = n == 0                  ? HLL_TYPE_EMPTY
                         : n <= HLL_EXPLICIT_MAX ? HLL_TYPE_EXPLICIT
                                                 : HLL_TYPE_FULL;
    size_t size = hll_sketch_size(n);
    unsigned char *w;

    if (strbuf_reserve(out, size) < 0)
        return;
    w = (unsigned char *)out->data + out->len;
    *w++ = (unsigned char)(1u << 4 | type);
    *w++ = HLL_PARAM_BYTE;
    *w++ = HLL_CUTOFF_BYTE;
    if (type == HLL_TYPE_EXPLICIT) {
        /* Big-endian values; postgresql-hll expects them sorted and distinct. */
        for (size_t i = 0; i < n; i++) {
            assert(i == 0 || (int64_t)hashes[i - 1] < (int64_t)hashes[i]);
            for (int shift = 56; shift >= 0; shift -= 8)
                *w++ = (unsigned char)(hashes[i] >> shift);
        }
    } else if (type == HLL_TYPE_FULL) {
        uint8_t regs[HLL_NREGS] = {0};
        uint32_t acc = 0;  /* pending bits, the oldest highest */
        unsigned nacc = 0; /* how many */

        for (size_t i = 0; i < n; i++)
            full_add(regs, hashes[i]);
        /* Registers in index order as one big-endian bit stream. */
        for (unsigned i = 0; i < HLL_NREGS; i++) {
            acc = acc << HLL_REGWIDTH | regs[i];
            nacc += HLL_REGWIDTH;
            while (nacc >= 8) {
                nacc -= 8;
                *w++ = (unsigned char)(acc >> nacc);
            }
        }
        if (nacc > 0)
            *w++ = (unsigned char)(acc << (8 - nacc));
    }
    assert((size_t)((char *)w - out->data) == out->len + size);
    out->len += size;
    out->data[out->len] = '\0';
}
