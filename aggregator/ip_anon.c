/* IP address anonymisation before storage: zero what identifies a host. Pure. */
#include "ip_anon.h"

#include <arpa/inet.h>
#include <string.h>

bool ip_unmap(const char *ip, char *out, size_t outlen)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (outlen > 0)
        out[0] = '\0';
    if (!ip || outlen < IP_ANON_MAX)
        return false;
    if (inet_pton(AF_INET, ip, &v4) == 1)
        return inet_ntop(AF_INET, &v4, out, (socklen_t)outlen) != NULL;
    if (inet_pton(AF_INET6, ip, &v6) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
        memcpy(&v4.s_addr, &v6.s6_addr[12], 4);
        return inet_ntop(AF_INET, &v4, out, (socklen_t)outlen) != NULL;
    }
    return inet_ntop(AF_INET6, &v6, out, (socklen_t)outlen) != NULL;
}

bool ip_anon(const char *ip, char *out, size_t outlen)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (outlen > 0)
        out[0] = '\0';
    if (!ip || outlen < IP_ANON_MAX)
        return false;
    if (inet_pton(AF_INET, ip, &v4) == 1) {
        ((unsigned char *)&v4.s_addr)[3] = 0;
        return inet_ntop(AF_INET, &v4, out, (socklen_t)outlen) != NULL;
    }
    if (inet_pton(AF_INET6, ip, &v6) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
        /* ::ffff:a.b.c.d is an IPv4 client: keep its /24, stored as IPv4. */
        memcpy(&v4.s_addr, &v6.s6_addr[12], 4);
        ((unsigned char *)&v4.s_addr)[3] = 0;
        return inet_ntop(AF_INET, &v4, out, (socklen_t)outlen) != NULL;
    }
    /* A 6to4 address (2002:AABB:CCDD::/48) carries its client's IPv4 address
     * in the /48: keep only that address's /24. */
    if (v6.s6_addr[0] == 0x20 && v6.s6_addr[1] == 0x02)
        memset(&v6.s6_addr[5], 0, 11);
    else
        memset(&v6.s6_addr[6], 0, 10);
    return inet_ntop(AF_INET6, &v6, out, (socklen_t)outlen) != NULL;
}
