/* The allowed-origins list of the ingest API. */
#include "cors.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"

bool cors_parse(const char *list, struct cors *out, char *err, size_t errlen)
{
    const char *q;
    size_t n;

    memset(out, 0, sizeof(*out));
    for (const char *p = list; config_list_next(&p, &q, &n);) {
        while (n && (isspace((unsigned char)q[n - 1]) || q[n - 1] == '/'))
            n--;
        if (n == 1 && *q == '*') {
            out->any = true;
        } else if (n) {
            if (out->n == CORS_MAX_ORIGINS || n >= sizeof(out->origins[0])) {
                snprintf(err, errlen, "ARV_CORS_ORIGINS: too many or too long origins");
                return false;
            }
            for (size_t i = 0; i < n; i++)
                out->origins[out->n][i] = (char)tolower((unsigned char)q[i]);
            out->origins[out->n][n] = '\0';
            out->n++;
        }
    }
    return true;
}

bool cors_allows(const struct cors *c, const char *origin)
{
    if (!origin || !*origin)
        return false;
    if (c->any)
        return true;
    for (size_t i = 0; i < c->n; i++) {
        if (strcasecmp(c->origins[i], origin) == 0)
            return true;
    }
    return false;
}
