/* CORS for the ingest routes: which browser origins may POST events
 * (ARV_CORS_ORIGINS: "*" or a comma-separated list of exact origins). Pure. */
#ifndef ARV_CORS_H
#define ARV_CORS_H

#include <stdbool.h>
#include <stddef.h>

#define CORS_MAX_ORIGINS 64

struct cors {
    bool any;                            /* "*": every origin */
    char origins[CORS_MAX_ORIGINS][256]; /* exact origins, lower-cased */
    size_t n;                            /* used entries */
};

/* Parses the list ("" or NULL: no origin allowed). Returns false with a message
 * in `err` on an entry that is too long or too many entries. */
bool cors_parse(const char *list, struct cors *out, char *err, size_t errlen);

/* True when a request with Origin `origin` (may be NULL) gets CORS headers. */
bool cors_allows(const struct cors *c, const char *origin);

#endif
