/* Reporter API keys: generation from the OpenSSL CSPRNG, the SHA-256 form that is
 * the only thing stored, and constant-time comparison. Shared by arvctl and arv-reporter. */
#ifndef ARV_API_KEY_H
#define ARV_API_KEY_H

#include <stdbool.h>
#include <stddef.h>

/* A key is "arv_" followed by 40 base62 characters (about 238 bits of entropy). */
#define API_KEY_SCHEME     "arv_"
#define API_KEY_SCHEME_LEN 4
#define API_KEY_RANDOM_LEN 40
#define API_KEY_LEN        (API_KEY_SCHEME_LEN + API_KEY_RANDOM_LEN)
/* Leading characters kept in clear (scheme + 8) so an operator can tell keys apart. */
#define API_KEY_PREFIX_LEN   (API_KEY_SCHEME_LEN + 8)
#define API_KEY_HASH_HEX_LEN 64

/* Writes a new random key (NUL-terminated) into `out`, which must hold at least
 * API_KEY_LEN + 1 bytes. Returns 0, -ENOSPC when `outlen` is too small, or -EIO
 * when the CSPRNG failed. Never blocks for long (RAND_bytes). */
int api_key_generate(char *out, size_t outlen);

/* True when `key` (`len` bytes, not necessarily NUL-terminated) has the shape of
 * a key this code generates: the scheme then API_KEY_RANDOM_LEN base62 characters.
 * Lets the reporter reject garbage without a database round trip. */
bool api_key_well_formed(const char *key, size_t len);

/* Writes the lowercase hex SHA-256 of `key` (`len` bytes) into `out`, which must
 * hold API_KEY_HASH_HEX_LEN + 1 bytes. This is the value stored in
 * analytics.api_keys.key_hash. Returns 0, or -EIO if libcrypto failed. */
int api_key_hash_hex(const char *key, size_t len, char out[API_KEY_HASH_HEX_LEN + 1]);

/* Copies the first API_KEY_PREFIX_LEN characters of `key` (the listing prefix)
 * into `out` (size `outlen`, at least API_KEY_PREFIX_LEN + 1). Returns 0 or -ENOSPC. */
int api_key_prefix(const char *key, char *out, size_t outlen);

/* Compares `n` bytes of `a` and `b` in time independent of their contents
 * (CRYPTO_memcmp). Returns true when equal. */
bool api_key_equal(const void *a, const void *b, size_t n);

#endif
