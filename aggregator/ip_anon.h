/* IP address anonymisation before storage (pure): IPv4 keeps its /24, IPv6
 * its /48; the rest is zeroed. */
#ifndef ARV_AGGREGATOR_IP_ANON_H
#define ARV_AGGREGATOR_IP_ANON_H

#include <stdbool.h>

/* A numeric address in binary, as a COPY writes an inet: `family` AF_INET
 * (the first 4 bytes) or AF_INET6 (16); 0 for none. */
struct ip_addr {
    int family;
    unsigned char bytes[16];
};

/* Sets *out to the anonymised form of the numeric address `ip`
 * ("203.0.113.7" -> 203.0.113.0, "2001:db8:abcd:12::1" -> 2001:db8:abcd::).
 * An IPv4-mapped IPv6 address keeps its /24 as IPv4; a 6to4 address
 * (2002::/16) keeps its /40, the /24 of the IPv4 address it carries. Returns
 * false (family 0) when `ip` is not a numeric address. */
bool ip_anon(const char *ip, struct ip_addr *out);

/* Sets *out to the numeric address `ip` as stored in full
 * (ARV_STORE_FULL_IP): an IPv4-mapped IPv6 address as the IPv4 address it is,
 * as the collector's own peer addresses and ip_anon() store it, so that one
 * client has one form. Same result as ip_anon(). */
bool ip_unmap(const char *ip, struct ip_addr *out);

#endif
