/* arv-reporter's dashboard page: the embedded reporter/dashboard.html, served with
 * a Content-Security-Policy that lets only its own inline script and style run. */
#define _GNU_SOURCE /* memmem */
#include "dashboard.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "http_server.h"

/* Times `needle` occurs in the `len` bytes at `hay`. */
static size_t dashboard_count(const char *hay, size_t len, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);
    const char *p = hay, *end = hay + len;

    while ((p = memmem(p, (size_t)(end - p), needle, nlen))) {
        n++;
        p += nlen;
    }
    return n;
}

/* Writes the CSP source of the text of the page's one `tag` element,
 * 'sha256-<base64>', into `out`: the text between its start and end tags, as
 * browsers hash it. False without exactly one such element, or when `out` is
 * too small. */
static bool dashboard_hash(const char *page, size_t len, const char *tag, char *out, size_t outlen)
{
    char open[16], close[16];
    const char *start, *stop;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];

    snprintf(open, sizeof(open), "<%s", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    /* One element, so that no second one can go unhashed, and no attributes. */
    if (dashboard_count(page, len, open) != 1 || dashboard_count(page, len, close) != 1)
        return false;
    start = memmem(page, len, open, strlen(open));
    start += strlen(open);
    if (start >= page + len || *start != '>')
        return false;
    start++;
    stop = memmem(start, (size_t)(page + len - start), close, strlen(close));
    if (!stop || EVP_Digest(start, (size_t)(stop - start), md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32)
        return false;
    EVP_EncodeBlock(b64, md, (int)mdlen);
    return snprintf(out, outlen, "'sha256-%s'", (const char *)b64) < (int)outlen;
}

bool dashboard_csp(const char *page, size_t len, char *out, size_t outlen)
{
    char script[64], style[64];

    if (!page || !dashboard_hash(page, len, "script", script, sizeof(script)) ||
        !dashboard_hash(page, len, "style", style, sizeof(style)))
        return false;
    int n = snprintf(out, outlen,
                     "default-src 'none'; script-src %s; style-src %s; connect-src 'self'; "
                     "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                     script, style);
    return n > 0 && (size_t)n < outlen;
}

int dashboard_init(struct dashboard *d)
{
    d->page = (const char *)dashboard_html;
    d->len = dashboard_html_len;
    return dashboard_csp(d->page, d->len, d->csp, sizeof(d->csp)) ? 0 : -EINVAL;
}

void dashboard_handle(struct http_request *req, void *arg)
{
    const struct dashboard *d = arg;

    http_request_add_header(req, "Content-Security-Policy", d->csp);
    http_request_add_header(req, "X-Content-Type-Options", "nosniff");
    http_request_add_header(req, "X-Frame-Options", "DENY");
    http_request_add_header(req, "Referrer-Policy", "no-referrer");
    /* Revalidated on every visit: a new reporter's page is seen at once. */
    http_request_add_header(req, "Cache-Control", "no-cache");
    http_respond(req, 200, "text/html; charset=utf-8", d->page, d->len);
}
