/* The client address of a request: the socket peer, or the right-most untrusted
 * address of X-Forwarded-For when the peer is a trusted proxy (ARV_TRUSTED_PROXIES,
 * a list of IPv4/IPv6 CIDRs). Parsing and matching are pure;
 * client_ip_of_request() reads them off a request. */
#ifndef ARV_CLIENT_IP_H
#define ARV_CLIENT_IP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLIENT_IP_MAX_NETS 64
#define CLIENT_IP_LEN      46 /* INET6_ADDRSTRLEN */

/* One network; IPv4 is kept as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96). */
struct client_ip_net {
    uint8_t addr[16]; /* network address, host bits cleared */
    unsigned bits;    /* prefix length 0..128 */
};

struct client_ip_trust {
    struct client_ip_net nets[CLIENT_IP_MAX_NETS]; /* trusted proxy networks */
    size_t n;                                      /* used entries */
};

/* Parses a comma-separated CIDR list ("10.0.0.0/8, ::1, 192.168.1.7"; a bare
 * address is a /32 or /128; "" is an empty list) into `out`. Returns false with
 * a one-line message in `err` on a malformed entry or too many entries. */
bool client_ip_parse_trust(const char *list, struct client_ip_trust *out, char *err, size_t errlen);

/* Parses a numeric IPv4 or IPv6 address (IPv4 mapped into IPv6) into `out`. */
bool client_ip_parse_addr(const char *s, size_t len, uint8_t out[16]);

/* The key a client's rate limit is kept under, into `out` (CLIENT_IP_KEY_LEN
 * bytes): an IPv6 address's /64 ("2001:db8:1:2::/64": one subscriber's
 * network, whose 2^64 addresses would otherwise each get a full bucket), an
 * IPv4 one (mapped into IPv6 or not) in dotted form, else the text as it is.
 * Returns `out`. */
#define CLIENT_IP_KEY_LEN (CLIENT_IP_LEN + 4)
const char *client_ip_limit_key(const char *ip, char *out, size_t outlen);

/* True when the numeric address `addr` lies inside one of the trusted networks. */
bool client_ip_is_trusted(const struct client_ip_trust *t, const char *addr);

/* Writes the client address into `out` (CLIENT_IP_LEN bytes): `peer` unless it
 * is trusted and `xff` (the X-Forwarded-For value, may be NULL) names hops; then
 * the right-most address of `xff` that is not trusted (all trusted: the
 * left-most). A malformed entry ends the walk at the last valid address seen. */
void client_ip_resolve(const struct client_ip_trust *t, const char *peer, const char *xff,
                       char *out);

struct http_request;
struct strbuf;

/* client_ip_resolve() for request `req`: its peer and every X-Forwarded-For
 * line, in order (a proxy may add a line of its own after one a client
 * forged), joined in `scratch` when there are several; the header is read
 * only when some proxy is trusted. False (out of memory) leaves `out` unset. */
bool client_ip_of_request(const struct client_ip_trust *t, const struct http_request *req,
                          struct strbuf *scratch, char *out);

#endif
