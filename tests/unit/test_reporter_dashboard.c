/* Unit tests for reporter/dashboard.c: the embedded page is reporter/dashboard.html
 * byte for byte, its Content-Security-Policy names the SHA-256 of its one inline
 * script and style, and it loads nothing from elsewhere. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"

/* The whole file at `path` (caller frees), or NULL. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = '\0';
            *len = (size_t)n;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static bool csp(const char *page, char *out, size_t outlen)
{
    return dashboard_csp(page, strlen(page), out, outlen);
}

Test(dashboard, embedded_bytes_are_the_file)
{
    size_t len = 0;
    char *file = read_file(ARV_SOURCE_DIR "/reporter/dashboard.html", &len);

    cr_assert_not_null(file);
    cr_assert_eq(dashboard_html_len, len);
    cr_assert(memcmp(dashboard_html, file, len) == 0, "rebuild: the embedded page is stale");
    cr_assert_eq(dashboard_html[len], 0);
    free(file);
}

Test(dashboard, csp_names_the_hashes_of_script_and_style)
{
    char out[DASHBOARD_CSP_MAX];

    /* Hashes as browsers compute them (SHA-256 of the element's text, base64). */
    cr_assert(
        csp("<html><style>b{}</style><p>x</p><script>alert(1)</script></html>", out, sizeof(out)));
    cr_assert_str_eq(out, "default-src 'none'; "
                          "script-src 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='; "
                          "style-src 'sha256-7yqHVAesot11p6HczDsgKRipvI5UPgs97z80zNXlans='; "
                          "connect-src 'self'; img-src data:; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'");
    /* The text between the tags exactly, newlines included. */
    cr_assert(csp("<script>\nx\n</script><style>b{}</style>", out, sizeof(out)));
    cr_assert(strstr(out, "script-src 'sha256-0j+bQHb1Xx5lDFk/gPRR8glNxZzORwwGPrIq6mPkyzk=';"));
}

Test(dashboard, csp_refuses_a_page_it_cannot_confine)
{
    char out[DASHBOARD_CSP_MAX];
    const char *bad[] = {
        "<style>b{}</style>",                                     /* no script */
        "<script>a</script>",                                     /* no style */
        "<style>b{}</style><script>a</script><script>b</script>", /* a second script */
        "<style>b{}</style><script src=\"x.js\"></script>",       /* attributes */
        "<style>b{}</style><script type=module>a</script>",       /* attributes */
        "<style>b{}</style><script>a",                            /* not closed */
        "<style>b{}</style></script><script>a",                   /* closed before */
        "<style>b{}</style><style>c{}</style><script>a</script>", /* a second style */
        "<style media=\"print\">b{}</style><script>a</script>",   /* attributes */
        "<style>b{}</style><!-- <script> --><script>a</script>",  /* a second start */
        "<style>b{}</style><script",                              /* cut */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not(csp(bad[i], out, sizeof(out)), "accepted: %s", bad[i]);
    cr_assert_not(dashboard_csp(NULL, 0, out, sizeof(out)));
    /* Too small a buffer is a failure, not a cut policy. */
    cr_assert_not(csp("<style>b{}</style><script>a</script>", out, 100));
}

Test(dashboard, page_is_self_contained)
{
    struct dashboard d;
    const char *page = (const char *)dashboard_html;

    cr_assert_eq(dashboard_init(&d), 0);
    cr_assert_eq(d.page, page);
    cr_assert_eq(d.len, dashboard_html_len);
    cr_assert(strstr(d.csp, "default-src 'none'; script-src 'sha256-"));
    cr_assert(strstr(d.csp, "connect-src 'self';"));
    cr_assert_eq(strlen(page), d.len, "a NUL inside the page");
    /* Browsers hash the text after turning CRLF into LF: keep LF only. */
    cr_assert_null(strchr(page, '\r'));
    cr_assert(strstr(page, "<title>ARV Analytics</title>"));
    cr_assert(strstr(page, "<meta charset=\"utf-8\">"));
    /* Nothing loaded from elsewhere: the only URL is the SVG namespace's name. */
    cr_assert_eq(count(page, "//"), count(page, "http://www.w3.org/2000/svg"));
    cr_assert_eq(count(page, " src="), 0);
    cr_assert_eq(count(page, "url("), 0);
    cr_assert_eq(count(page, "@import"), 0);
    /* Data from the API is set as text, never parsed as markup. */
    const char *never[] = {"innerHTML",      "outerHTML", "insertAdjacentHTML",
                           "document.write", "eval(",     "localStorage",
                           "style="};
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        cr_assert_null(strstr(page, never[i]), "the page uses %s", never[i]);
    cr_assert(strstr(page, "sessionStorage"));
    cr_assert(strstr(page, "'Authorization': 'Bearer ' + key"));
}
