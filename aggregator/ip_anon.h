/* IP address anonymisation before storage (pure): IPv4 keeps its /24, IPv6
 * its /48; the rest is zeroed. */
#ifndef ARV_AGGREGATOR_IP_ANON_H
#define ARV_AGGREGATOR_IP_ANON_H

#include <stdbool.h>
#include <stddef.h>

#define IP_ANON_MAX 46 /* INET6_ADDRSTRLEN */

/* Writes the anonymised form of the numeric address `ip` ("203.0.113.7" ->
 * "203.0.113.0", "2001:db8:abcd:12::1" -> "2001:db8:abcd::") into `out`
 * (`outlen` >= IP_ANON_MAX). An IPv4-mapped IPv6 address keeps its /24 as
 * IPv4; a 6to4 address (2002::/16) keeps its /40, the /24 of the IPv4
 * address it carries. Returns false (and writes "") when `ip` is not a numeric address. */
bool ip_anon(const char *ip, char *out, size_t outlen);

/* Writes the numeric address `ip` as stored in full (ARV_STORE_FULL_IP): an
 * IPv4-mapped IPv6 address as the IPv4 address it is, as the collector's own
 * peer addresses and ip_anon() store it, so that one client has one form.
 * Same arguments and result as ip_anon(). */
bool ip_unmap(const char *ip, char *out, size_t outlen);

#endif
