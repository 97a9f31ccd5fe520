/* HyperLogLog sketches of session ids computed client-side (pure), written in
 * postgresql-hll's storage format so PostgreSQL can hll_union them into rollups. */
#ifndef ARV_AGGREGATOR_HLL_H
#define ARV_AGGREGATOR_HLL_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

/* The sketch parameters of the rollup `sessions` columns: hll(12, 5), with the
 * default expthresh (-1, auto: 320 explicit values) and sparseon (1). */
#define HLL_LOG2M    12
#define HLL_REGWIDTH 5

/* postgresql-hll's hll_hash_bytea() of `len` bytes (MurmurHash3 x64 128, seed 0,
 * its first 64 bits), as unsigned. hll_hash_bytea(uuid_send(u)) of a uuid u is
 * hll_hash(the 16 bytes of u, 16). `data` is borrowed; may be NULL when len is 0. */
uint64_t hll_hash(const void *data, size_t len);

/* Sorts hashes[0..n) and removes duplicates in place; returns the distinct count.
 * The order is postgresql-hll's: ascending as signed 64-bit integers. */
size_t hll_sort_unique(uint64_t *hashes, size_t n);

/* Readies hashes[0..n) for hll_write_sketch() and returns the count to give
 * it: when at most 320 of them are distinct (an EXPLICIT sketch), sorts them
 * and removes duplicates as hll_sort_unique() does; when more are, leaves them
 * as they are and returns n, since a FULL sketch's registers depend neither on
 * their order nor on repeats. */
size_t hll_prepare(uint64_t *hashes, size_t n);

/* Bytes of the sketch hll_write_sketch() writes for n distinct hashes (or
 * more than 320, distinct or not: see hll_prepare). */
size_t hll_sketch_size(size_t n);

/* Appends to `out` the hll(12,5) sketch of the n hashes as hll_prepare()
 * leaves them, as postgresql-hll stores it: the bytes of its
 * binary I/O (hll_send, hll_recv), which its text form shows as '\x<hex>';
 * hll_sketch_size(n) of them. n == 0 writes the EMPTY sketch. Up to 320 hashes
 * give the EXPLICIT form hll_add_agg(h, 12, 5) writes, byte for byte; more give
 * the FULL form, with the same registers (and so the same cardinality) as
 * PostgreSQL's, which may store them SPARSE instead. `hashes` is borrowed.
 * Allocation failure sets out->oom and appends nothing. */
void hll_write_sketch(const uint64_t *hashes, size_t n, struct strbuf *out);

#endif
