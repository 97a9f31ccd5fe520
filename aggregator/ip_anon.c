/* IP address anonymisation before storage: zero what identifies a host. Pure. */
#include "ip_anon.h"

#include <arpa/inet.h>
#include <string.h>

/* Parses the numeric address `ip` into *v4 (an IPv4-mapped IPv6 address too)
 * or *v6, after emptying `out`; returns AF_INET, AF_INET6, or 0 when `ip` is
 * no address or `outlen` too small. */
static int ip_parse(const char *ip, char *out, size_t outlen, struct in_addr *v4,
                    struct in6_addr *v6)
{
    if (outlen > 0)
        out[0] = '\0';
    if (!ip || outlen < IP_ANON_MAX)
        return 0;
    if (inet_pton(AF_INET, ip, v4) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, ip, v6) != 1)
        return 0;
    if (IN6_IS_ADDR_V4MAPPED(v6)) {
        memcpy(&v4->s_addr, &v6->s6_addr[12], 4);
        return AF_INET;
    }
    return AF_INET6;
}

bool ip_unmap(const char *ip, char *out, size_t outlen)
{
    struct in_addr v4;
    struct in6_addr v6;
    int family = ip_parse(ip, out, outlen, &v4, &v6);

    return family && inet_ntop(family, family == AF_INET ? (const void *)&v4 : (const void *)&v6,
                               out, (socklen_t)outlen) != NULL;
}

bool ip_anon(const char *ip, char *out, size_t outlen)
{
    struct in_addr v4;
    struct in6_addr v6;
    int family = ip_parse(ip, out, outlen, &v4, &v6);

    if (family == AF_INET) {
        /* IPv4 (an IPv4-mapped client too, stored as IPv4): keep its /24. */
        ((unsigned char *)&v4.s_addr)[3] = 0;
        return inet_ntop(AF_INET, &v4, out, (socklen_t)outlen) != NULL;
    }
    if (family != AF_INET6)
        return false;
    /* A 6to4 address (2002:AABB:CCDD::/48) carries its client's IPv4 address
     * in the /48: keep only that address's /24. */
    if (v6.s6_addr[0] == 0x20 && v6.s6_addr[1] == 0x02)
        memset(&v6.s6_addr[5], 0, 11);
    else
        memset(&v6.s6_addr[6], 0, 10);
    return inet_ntop(AF_INET6, &v6, out, (socklen_t)outlen) != NULL;
}
