/* GeoIP enrichment over libmaxminddb: open a MaxMind DB once, then look client
 * addresses up from any thread. */
#include "geoip.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <maxminddb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "strbuf.h"

static_assert(sizeof(((struct event *)0)->country) == GEOIP_COUNTRY_SIZE,
              "GEOIP_COUNTRY_SIZE must match struct event");
static_assert(sizeof(((struct event *)0)->city) == GEOIP_CITY_SIZE,
              "GEOIP_CITY_SIZE must match struct event");

struct geoip {
    MMDB_s db; /* memory-mapped; read-only after MMDB_open */
};

/* Writes "<path>: <reason>" into err[0..errlen), when `err` is wanted. */
static void __attribute__((format(printf, 4, 5)))
open_error(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!err || errlen == 0)
        return;
    n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

int geoip_open(const char *path, struct geoip **out, char *err, size_t errlen)
{
    struct geoip *g = NULL;
    struct stat st;
    bool found;
    int rc = 0, status = MMDB_SUCCESS;

    assert(path && out);
    *out = NULL;
    if (err && errlen > 0)
        err[0] = '\0';
    g = calloc(1, sizeof(*g));
    if (!g) {
        open_error(err, errlen, path, "%s", strerror(ENOMEM));
        return -ENOMEM;
    }
    errno = 0;
    status = MMDB_open(path, MMDB_MODE_MMAP, &g->db);
    switch (status) {
    case MMDB_SUCCESS:
        *out = g;
        return 0;
    case MMDB_FILE_OPEN_ERROR:
        rc = errno ? -errno : -EIO;
        open_error(err, errlen, path, "%s", strerror(-rc));
        break;
    case MMDB_IO_ERROR:
        /* mmap(2) refuses directories and empty files: say which. */
        found = stat(path, &st) == 0;
        if (found && S_ISDIR(st.st_mode)) {
            rc = -EISDIR;
            open_error(err, errlen, path, "%s", strerror(EISDIR));
        } else if (found && st.st_size == 0) {
            rc = -EINVAL;
            open_error(err, errlen, path, "not a valid MaxMind DB file (empty)");
        } else {
            rc = -EIO;
            open_error(err, errlen, path, "%s", MMDB_strerror(status));
        }
        break;
    case MMDB_OUT_OF_MEMORY_ERROR:
        rc = -ENOMEM;
        open_error(err, errlen, path, "%s", MMDB_strerror(status));
        break;
    default: /* invalid metadata, unknown format, corrupt tree or data */
        rc = -EINVAL;
        open_error(err, errlen, path, "not a valid MaxMind DB file (%s)", MMDB_strerror(status));
        break;
    }
    /* MMDB_open has already released what it took when it failed. */
    free(g);
    return rc;
}

void geoip_close(struct geoip *g)
{
    if (!g)
        return;
    MMDB_close(&g->db);
    free(g);
}

/* Parses a numeric address into a sockaddr; an IPv4-mapped IPv6 address becomes
 * IPv4, so it is found in IPv4-only databases and in ones without the alias. */
static bool to_sockaddr(const char *ip, struct sockaddr_storage *ss)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        struct in_addr a;

        memcpy(&a, &v6->sin6_addr.s6_addr[12], sizeof(a));
        memset(ss, 0, sizeof(*ss));
        v4->sin_family = AF_INET;
        v4->sin_addr = a;
        return true;
    }
    v6->sin6_family = AF_INET6;
    return true;
}

/* Finds the UTF-8 string at `path` (NULL-terminated key list) in `entry`.
 * Returns 1 with *s and *len set, 0 when absent or not a string, -EIO when the data
 * there is damaged. */
static int get_string(MMDB_entry_s *entry, const char *const *path, const char **s, size_t *len)
{
    MMDB_entry_data_s data;
    int status = MMDB_aget_value(entry, &data, path);

    if (status == MMDB_INVALID_DATA_ERROR || status == MMDB_CORRUPT_SEARCH_TREE_ERROR)
        return -EIO;
    /* A missing key is MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR: absent. */
    if (status != MMDB_SUCCESS || !data.has_data || data.type != MMDB_DATA_TYPE_UTF8_STRING)
        return 0;
    *s = data.utf8_string;
    *len = data.data_size;
    return 1;
}

/* Fills `out` with an ISO 3166-1 alpha-2 code from the map at `key`, if valid. */
static int take_country(MMDB_entry_s *entry, const char *key, char *out)
{
    const char *path[] = {key, "iso_code", NULL};
    const char *s = NULL;
    size_t len = 0;
    int rc = get_string(entry, path, &s, &len);

    if (rc <= 0)
        return rc;
    if (len != 2 || !isalpha((unsigned char)s[0]) || !isalpha((unsigned char)s[1]))
        return 0;
    out[0] = (char)toupper((unsigned char)s[0]);
    out[1] = (char)toupper((unsigned char)s[1]);
    out[2] = '\0';
    return 1;
}

/* Fills `out` with the English city name, if it is printable UTF-8. */
static int take_city(MMDB_entry_s *entry, char *out)
{
    static const char *const path[] = {"city", "names", "en", NULL};
    const char *s = NULL;
    size_t len = 0, n;
    int rc = get_string(entry, path, &s, &len);

    if (rc <= 0)
        return rc;
    /* event.city must hold what the event schema accepts from a client. */
    if (len == 0 || !strbuf_utf8_valid(s, len))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) /* NUL included */
            return 0;
    }
    n = strbuf_utf8_prefix(s, len, GEOIP_CITY_SIZE - 1);
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

int geoip_lookup(const struct geoip *g, const char *ip, struct geoip_result *out)
{
    struct sockaddr_storage ss;
    MMDB_lookup_result_s res;
    int mmdb_err = MMDB_SUCCESS, rc;

    assert(g && out);
    out->country[0] = '\0';
    out->city[0] = '\0';
    if (!ip || !to_sockaddr(ip, &ss))
        return -EINVAL;
    res = MMDB_lookup_sockaddr(&g->db, (const struct sockaddr *)&ss, &mmdb_err);
    if (mmdb_err == MMDB_IPV6_LOOKUP_IN_IPV4_DATABASE_ERROR)
        return -ENOENT;
    if (mmdb_err != MMDB_SUCCESS)
        return -EIO;
    if (!res.found_entry)
        return -ENOENT;
    rc = take_country(&res.entry, "country", out->country);
    if (rc == 0)
        rc = take_country(&res.entry, "registered_country", out->country);
    if (rc < 0 || (rc = take_city(&res.entry, out->city)) < 0) {
        out->country[0] = '\0';
        out->city[0] = '\0';
        return rc;
    }
    return out->country[0] || out->city[0] ? 0 : -ENOENT;
}

bool geoip_apply(const struct geoip_result *r, struct event *ev)
{
    bool filled = false;

    if (!ev->country[0] && r->country[0]) {
        memcpy(ev->country, r->country, sizeof(ev->country));
        filled = true;
    }
    /* Only a city of the event's country (sent or filled just above): one
     * without a known country could be anywhere. */
    if (!ev->city[0] && r->city[0] && r->country[0] && !strcmp(ev->country, r->country)) {
        memcpy(ev->city, r->city, sizeof(ev->city));
        filled = true;
    }
    return filled;
}
