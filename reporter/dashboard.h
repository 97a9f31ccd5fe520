/* arv-reporter's dashboard: one self-contained HTML page (reporter/dashboard.html,
 * embedded at build time) served at GET /dashboard, confined by its headers. */
#ifndef ARV_REPORTER_DASHBOARD_H
#define ARV_REPORTER_DASHBOARD_H

#include <stdbool.h>
#include <stddef.h>

struct http_request;

/* reporter/dashboard.html's bytes as they were at build time, followed by a NUL
 * that dashboard_html_len does not count. Defined in a file that
 * cmake/embed.cmake generates in the build folder. */
extern const unsigned char dashboard_html[];
extern const size_t dashboard_html_len;

#define DASHBOARD_CSP_MAX 512

/* The page as served. */
struct dashboard {
    const char *page;            /* borrowed: dashboard_html */
    size_t len;                  /* its bytes */
    char csp[DASHBOARD_CSP_MAX]; /* its Content-Security-Policy */
};

/* Writes into `out` (size `outlen`) the Content-Security-Policy of `page` (`len`
 * bytes, borrowed): nothing by default; its own inline script and style only,
 * named by the SHA-256 of their text ('sha256-<base64>'); connections to its
 * own origin; images from data: URLs; no <base>, form submission or framing.
 * The page must hold exactly one element of each, started by a bare "<script>"
 * and "<style>" and closed. Returns false when it does not, or when `out` is
 * too small. */
bool dashboard_csp(const char *page, size_t len, char *out, size_t outlen);

/* Sets `d` up for the embedded page. Returns 0, or -EINVAL when the page's CSP
 * cannot be built (a page edited against dashboard_csp()'s rules). */
int dashboard_init(struct dashboard *d);

/* The http_handler of GET (and HEAD) /dashboard: 200 with the page and its
 * security headers, whatever the query string and without an API key (the page
 * holds no data). `arg` is a struct dashboard (borrowed). Never blocks. */
void dashboard_handle(struct http_request *req, void *arg);

#endif
