/* Request bodies of the ingest API: which Content-Type and Content-Encoding are
 * accepted, and gzip/deflate decoding with a cap on the decoded size (a
 * compression bomb stops at the cap, never inflating past it). Pure. */
#ifndef ARV_BODY_H
#define ARV_BODY_H

#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

enum body_media {
    BODY_MEDIA_JSON,        /* application/json, or no Content-Type */
    BODY_MEDIA_TEXT,        /* text/plain (navigator.sendBeacon) */
    BODY_MEDIA_NDJSON,      /* application/x-ndjson, application/jsonl */
    BODY_MEDIA_UNSUPPORTED, /* anything else: 415 */
};

enum body_encoding {
    BODY_ENC_IDENTITY,    /* none, or "identity" */
    BODY_ENC_GZIP,        /* gzip, x-gzip */
    BODY_ENC_DEFLATE,     /* deflate (zlib stream) */
    BODY_ENC_UNSUPPORTED, /* anything else (including lists): 415 */
};

/* Classifies a Content-Type header value (NULL: absent); parameters such as
 * "; charset=utf-8" are ignored. */
enum body_media body_media_of(const char *content_type);

/* Classifies a Content-Encoding header value (NULL: absent). */
enum body_encoding body_encoding_of(const char *content_encoding);

/* Decodes `len` bytes of `enc`-encoded `in` into `out` (reset first), writing at
 * most `cap` bytes. Returns 0, -EFBIG once the decoded size would pass `cap`,
 * -EINVAL for a corrupt or truncated stream, -ENOMEM. */
int body_inflate(enum body_encoding enc, const char *in, size_t len, size_t cap,
                 struct strbuf *out);

#endif
