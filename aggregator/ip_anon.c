/* IP address anonymisation before storage: zero what identifies a host. Pure. */
#include "ip_anon.h"

#include <arpa/inet.h>
#include <string.h>

bool ip_unmap(const char *ip, struct ip_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (!ip)
        return false;
    if (inet_pton(AF_INET, ip, out->bytes) == 1) {
        out->family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, out->bytes) == 1) {
        out->family = AF_INET6;
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)out->bytes)) {
            memmove(out->bytes, out->bytes + 12, 4);
            memset(out->bytes + 4, 0, 12);
            out->family = AF_INET;
        }
    }
    return out->family != 0;
}

bool ip_anon(const char *ip, struct ip_addr *out)
{
    if (!ip_unmap(ip, out))
        return false;
    if (out->family == AF_INET) {
        /* IPv4 (an IPv4-mapped client too, stored as IPv4): keep its /24. */
        out->bytes[3] = 0;
    } else if (out->bytes[0] == 0x20 && out->bytes[1] == 0x02) {
        /* A 6to4 address (2002:AABB:CCDD::/48) carries its client's IPv4
         * address in the /48: keep only that address's /24. */
        memset(out->bytes + 5, 0, 11);
    } else {
        memset(out->bytes + 6, 0, 10);
    }
    return true;
}
