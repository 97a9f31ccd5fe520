/* Reporter API keys: random generation, SHA-256 hex digest, constant-time compare. */
#include "api_key.h"

#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char api_key_alphabet[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#define API_KEY_ALPHABET_LEN 62
/* Bytes at or above this are rejected so every character is equally likely. */
#define API_KEY_BYTE_LIMIT (256 - 256 % API_KEY_ALPHABET_LEN)

static bool api_key_is_base62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

int api_key_generate(char *out, size_t outlen)
{
    unsigned char rnd[64];
    size_t n = 0;

    if (outlen < API_KEY_LEN + 1)
        return -ENOSPC;
    memcpy(out, API_KEY_SCHEME, API_KEY_SCHEME_LEN);
    while (n < API_KEY_RANDOM_LEN) {
        if (RAND_bytes(rnd, (int)sizeof(rnd)) != 1) {
            OPENSSL_cleanse(out, outlen);
            return -EIO;
        }
        for (size_t i = 0; i < sizeof(rnd) && n < API_KEY_RANDOM_LEN; i++) {
            if (rnd[i] < API_KEY_BYTE_LIMIT)
                out[API_KEY_SCHEME_LEN + n++] = api_key_alphabet[rnd[i] % API_KEY_ALPHABET_LEN];
        }
    }
    out[API_KEY_LEN] = '\0';
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return 0;
}

bool api_key_well_formed(const char *key, size_t len)
{
    if (len != API_KEY_LEN || memcmp(key, API_KEY_SCHEME, API_KEY_SCHEME_LEN) != 0)
        return false;
    for (size_t i = API_KEY_SCHEME_LEN; i < len; i++) {
        if (!api_key_is_base62(key[i]))
            return false;
    }
    return true;
}

int api_key_hash_hex(const char *key, size_t len, char out[API_KEY_HASH_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(key, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen * 2 != API_KEY_HASH_HEX_LEN)
        return -EIO;
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }
    out[API_KEY_HASH_HEX_LEN] = '\0';
    return 0;
}

int api_key_prefix(const char *key, char *out, size_t outlen)
{
    size_t n = strnlen(key, API_KEY_PREFIX_LEN);

    if (outlen < API_KEY_PREFIX_LEN + 1)
        return -ENOSPC;
    memcpy(out, key, n);
    out[n] = '\0';
    return 0;
}

bool api_key_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
