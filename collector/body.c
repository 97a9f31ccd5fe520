/* Content-Type / Content-Encoding classification and capped inflation (zlib). */
#include "body.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

/* Length of the media type in `v` without parameters and trailing blanks. */
static size_t token_len(const char *v)
{
    size_t n = strcspn(v, ";");
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n;
}

static bool token_is(const char *v, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(v, word, n) == 0;
}

enum body_media body_media_of(const char *ct)
{
    if (!ct)
        return BODY_MEDIA_JSON;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = token_len(ct);
    if (n == 0 || token_is(ct, n, "application/json"))
        return BODY_MEDIA_JSON;
    if (token_is(ct, n, "text/plain"))
        return BODY_MEDIA_TEXT;
    if (token_is(ct, n, "application/x-ndjson") || token_is(ct, n, "application/jsonl") ||
        token_is(ct, n, "application/ndjson"))
        return BODY_MEDIA_NDJSON;
    return BODY_MEDIA_UNSUPPORTED;
}

enum body_encoding body_encoding_of(const char *ce)
{
    if (!ce)
        return BODY_ENC_IDENTITY;
    while (*ce == ' ' || *ce == '\t')
        ce++;
    size_t n = strlen(ce);
    while (n > 0 && (ce[n - 1] == ' ' || ce[n - 1] == '\t'))
        n--;
    if (n == 0 || token_is(ce, n, "identity"))
        return BODY_ENC_IDENTITY;
    if (token_is(ce, n, "gzip") || token_is(ce, n, "x-gzip"))
        return BODY_ENC_GZIP;
    if (token_is(ce, n, "deflate"))
        return BODY_ENC_DEFLATE;
    return BODY_ENC_UNSUPPORTED;
}

int body_inflate(enum body_encoding enc, const char *in, size_t len, size_t cap, struct strbuf *out)
{
    z_stream zs;
    int rc = -EINVAL;
    bool started = false;

    strbuf_reset(out);
    if (enc != BODY_ENC_GZIP && enc != BODY_ENC_DEFLATE)
        return -EINVAL;
    if (len > UINT_MAX)
        return -EFBIG;
    memset(&zs, 0, sizeof(zs));
    /* 16 + 15: gzip wrapper only; 15: zlib wrapper (what "deflate" means in HTTP). */
    if (inflateInit2(&zs, enc == BODY_ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS) != Z_OK) {
        rc = -ENOMEM;
        goto out;
    }
    started = true;
    zs.next_in = (Bytef *)(uintptr_t)in;
    zs.avail_in = (uInt)len;
    for (;;) {
        /* Never offer room past cap + 1: one byte over the cap proves the body
         * too large without inflating any further. */
        size_t left = cap + 1 - out->len;
        size_t step = out->len < 16384 ? 16384 : out->len;
        if (strbuf_reserve(out, step < left ? step : left) < 0) {
            rc = -ENOMEM;
            goto out;
        }
        size_t offer = out->cap - out->len - 1; /* keep room for the NUL */
        if (offer > left)
            offer = left;
        if (offer > UINT_MAX)
            offer = UINT_MAX;
        zs.next_out = (Bytef *)out->data + out->len;
        zs.avail_out = (uInt)offer;
        int z = inflate(&zs, Z_NO_FLUSH);
        out->len += offer - zs.avail_out;
        if (out->len > cap) {
            rc = -EFBIG;
            goto out;
        }
        if (z == Z_STREAM_END) {
            if (zs.avail_in == 0)
                break;
            /* gzip allows members one after another (`cat a.gz b.gz`): each
             * is inflated in turn. Anything else after the stream is
             * corrupt, never silently dropped. */
            if (enc != BODY_ENC_GZIP || zs.avail_in < 2 || zs.next_in[0] != 0x1f ||
                zs.next_in[1] != 0x8b || inflateReset(&zs) != Z_OK) {
                rc = -EINVAL;
                goto out;
            }
            continue;
        }
        if (z == Z_BUF_ERROR && zs.avail_in == 0) {
            rc = -EINVAL; /* truncated */
            goto out;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = z == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
            goto out;
        }
    }
    rc = 0;
    /* NUL-terminated like request bodies; reserve() left room for it. */
    out->data[out->len] = '\0';
out:
    if (started)
        inflateEnd(&zs);
    return rc;
}
