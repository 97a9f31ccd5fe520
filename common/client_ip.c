/* X-Forwarded-For behind trusted proxies: CIDR parsing, matching, and the
 * right-to-left walk that finds the first hop no trusted proxy vouches for. */
#include "client_ip.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http_server.h"
#include "strbuf.h"

bool client_ip_parse_addr(const char *s, size_t len, uint8_t out[16])
{
    char buf[CLIENT_IP_LEN];
    struct in_addr a4;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        return true;
    }
    return inet_pton(AF_INET6, buf, out) == 1;
}

static bool in_net(const struct client_ip_net *n, const uint8_t a[16])
{
    unsigned full = n->bits / 8;
    unsigned rest = n->bits % 8;
    if (memcmp(a, n->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == n->addr[full];
}

static bool is_v4_mapped(const uint8_t a[16])
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, prefix, sizeof(prefix)) == 0;
}

/* Parses one "addr[/bits]" entry s[0..len). */
static bool parse_net(const char *s, size_t len, struct client_ip_net *out)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    if (!client_ip_parse_addr(s, alen, out->addr))
        return false;
    bool v4 = is_v4_mapped(out->addr) && memchr(s, ':', alen) == NULL;
    unsigned max = v4 ? 32 : 128;
    unsigned bits = max;
    if (slash) {
        const char *d = slash + 1;
        size_t dlen = len - alen - 1;
        if (dlen == 0 || dlen > 3)
            return false;
        bits = 0;
        for (size_t i = 0; i < dlen; i++) {
            if (!isdigit((unsigned char)d[i]))
                return false;
            bits = bits * 10 + (unsigned)(d[i] - '0');
        }
        if (bits > max)
            return false;
    }
    out->bits = v4 ? bits + 96 : bits;
    /* Clear host bits so matching compares networks. */
    for (unsigned i = 0; i < 16; i++) {
        unsigned lo = i * 8;
        if (lo >= out->bits)
            out->addr[i] = 0;
        else if (lo + 8 > out->bits)
            out->addr[i] &= (uint8_t)(0xff << (lo + 8 - out->bits));
    }
    return true;
}

const char *client_ip_limit_key(const char *ip, char *out, size_t outlen)
{
    static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t a[16];
    char text[CLIENT_IP_LEN];

    if (!client_ip_parse_addr(ip, strlen(ip), a)) {
        snprintf(out, outlen, "%s", ip);
        return out;
    }
    if (memcmp(a, v4_mapped, 12) == 0) {
        /* One IPv4 client however it is written (::ffff:a.b.c.d, ::ffff:XXXX:XXXX). */
        inet_ntop(AF_INET, a + 12, text, sizeof(text));
        snprintf(out, outlen, "%s", text);
        return out;
    }
    memset(a + 8, 0, 8);
    inet_ntop(AF_INET6, a, text, sizeof(text)); /* cannot fail: `text` holds any address */
    snprintf(out, outlen, "%s/64", text);
    return out;
}

bool client_ip_parse_trust(const char *list, struct client_ip_trust *out, char *err, size_t errlen)
{
    const char *q;
    size_t n;

    out->n = 0;
    for (const char *p = list; config_list_next(&p, &q, &n);) {
        if (n) {
            if (out->n == CLIENT_IP_MAX_NETS) {
                snprintf(err, errlen, "ARV_TRUSTED_PROXIES: more than %d networks",
                         CLIENT_IP_MAX_NETS);
                return false;
            }
            if (!parse_net(q, n, &out->nets[out->n])) {
                snprintf(err, errlen, "ARV_TRUSTED_PROXIES: invalid CIDR '%.*s'",
                         (int)(n > 64 ? 64 : n), q);
                return false;
            }
            out->n++;
        }
    }
    return true;
}

static bool trusted_bytes(const struct client_ip_trust *t, const uint8_t a[16])
{
    for (size_t i = 0; i < t->n; i++) {
        if (in_net(&t->nets[i], a))
            return true;
    }
    return false;
}

bool client_ip_is_trusted(const struct client_ip_trust *t, const char *addr)
{
    uint8_t a[16];
    return t->n && addr && client_ip_parse_addr(addr, strlen(addr), a) && trusted_bytes(t, a);
}

static void copy_addr(char *out, const char *s, size_t n)
{
    if (n >= CLIENT_IP_LEN)
        n = CLIENT_IP_LEN - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

void client_ip_resolve(const struct client_ip_trust *t, const char *peer, const char *xff,
                       char *out)
{
    copy_addr(out, peer ? peer : "", peer ? strlen(peer) : 0);
    if (!xff || !client_ip_is_trusted(t, peer))
        return;
    const char *end = xff + strlen(xff);
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *a = start, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        uint8_t bytes[16];
        if (b > a) {
            /* "[v6]" and "v4:port" forms are not standard XFF: malformed. */
            if (!client_ip_parse_addr(a, (size_t)(b - a), bytes))
                return;
            copy_addr(out, a, (size_t)(b - a));
            if (!trusted_bytes(t, bytes))
                return;
        }
        end = start > xff ? start - 1 : xff;
    }
}

bool client_ip_of_request(const struct client_ip_trust *t, const struct http_request *req,
                          struct strbuf *scratch, char *out)
{
    const char *xff = t->n ? http_request_header_list(req, "X-Forwarded-For", scratch) : NULL;

    if (t->n && scratch->oom)
        return false;
    client_ip_resolve(t, http_request_peer(req), xff, out);
    return true;
}
