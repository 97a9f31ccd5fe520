/* Tests of collector/client_ip: CIDR parsing and matching (IPv4, IPv6) and the
 * X-Forwarded-For walk behind trusted proxies. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "client_ip.h"

static struct client_ip_trust trust(const char *list)
{
    struct client_ip_trust t;
    char err[128] = "";
    cr_assert(client_ip_parse_trust(list, &t, err, sizeof(err)), "%s: %s", list, err);
    return t;
}

Test(client_ip, parses_lists_and_refuses_garbage)
{
    struct client_ip_trust t;
    char err[128];
    cr_assert_eq(trust("").n, 0);
    cr_assert_eq(trust(" 10.0.0.0/8 , ::1, 192.168.1.7,fd00::/8 ").n, 4);
    const char *bad[] = {"10.0.0.0/33",  "::/129",      "10.0.0/8",   "10.0.0.0/",
                         "host.example", "10.0.0.0/8x", "1.2.3.4/-1", "[::1]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_expect_not(client_ip_parse_trust(bad[i], &t, err, sizeof(err)), "%s", bad[i]);
        cr_expect(strstr(err, "ARV_TRUSTED_PROXIES") != NULL, "%s: %s", bad[i], err);
    }
}

Test(client_ip, matches_ipv4_and_ipv6_networks)
{
    struct client_ip_trust t = trust("10.0.0.0/8,192.168.1.7,2001:db8::/32,172.16.0.0/12");
    cr_expect(client_ip_is_trusted(&t, "10.255.1.2"));
    cr_expect_not(client_ip_is_trusted(&t, "11.0.0.1"));
    cr_expect(client_ip_is_trusted(&t, "192.168.1.7"));
    cr_expect_not(client_ip_is_trusted(&t, "192.168.1.8"));
    cr_expect(client_ip_is_trusted(&t, "172.31.255.255"));
    cr_expect_not(client_ip_is_trusted(&t, "172.32.0.0"));
    cr_expect(client_ip_is_trusted(&t, "2001:db8:ffff::1"));
    cr_expect_not(client_ip_is_trusted(&t, "2001:db9::1"));
    /* An IPv4 rule does not match an IPv6 address that merely shares bytes. */
    cr_expect_not(client_ip_is_trusted(&t, "::a00:1"));
    cr_expect_not(client_ip_is_trusted(&t, "not-an-ip"));
    cr_expect_not(client_ip_is_trusted(&t, ""));
    /* Host bits in a rule are ignored: 10.1.2.3/8 is 10.0.0.0/8. */
    struct client_ip_trust h = trust("10.1.2.3/8,::/0");
    cr_expect(client_ip_is_trusted(&h, "10.9.9.9"));
    cr_expect(client_ip_is_trusted(&h, "fe80::1"));
}

Test(client_ip, untrusted_peer_keeps_its_address)
{
    struct client_ip_trust t = trust("10.0.0.0/8");
    char out[CLIENT_IP_LEN];
    client_ip_resolve(&t, "203.0.113.5", "1.2.3.4", out);
    cr_expect_str_eq(out, "203.0.113.5");
    struct client_ip_trust none = trust("");
    client_ip_resolve(&none, "10.0.0.1", "1.2.3.4", out);
    cr_expect_str_eq(out, "10.0.0.1");
    client_ip_resolve(&t, "10.0.0.1", NULL, out);
    cr_expect_str_eq(out, "10.0.0.1");
}

Test(client_ip, takes_the_right_most_untrusted_hop)
{
    struct client_ip_trust t = trust("10.0.0.0/8,2001:db8::/32");
    char out[CLIENT_IP_LEN];
    /* A client forging the left part cannot choose its address. */
    client_ip_resolve(&t, "10.0.0.1", "6.6.6.6, 198.51.100.7, 10.2.3.4", out);
    cr_expect_str_eq(out, "198.51.100.7");
    client_ip_resolve(&t, "10.0.0.1", "198.51.100.7", out);
    cr_expect_str_eq(out, "198.51.100.7");
    client_ip_resolve(&t, "10.0.0.1", " 2001:db9::5 ,2001:db8::1", out);
    cr_expect_str_eq(out, "2001:db9::5");
    /* All hops trusted: the left-most. */
    client_ip_resolve(&t, "10.0.0.1", "10.9.9.9, 10.8.8.8", out);
    cr_expect_str_eq(out, "10.9.9.9");
    /* Garbage stops the walk at the last valid (trusted) hop. */
    client_ip_resolve(&t, "10.0.0.1", "1.1.1.1, garbage, 10.8.8.8", out);
    cr_expect_str_eq(out, "10.8.8.8");
    client_ip_resolve(&t, "10.0.0.1", "unknown", out);
    cr_expect_str_eq(out, "10.0.0.1");
    /* Empty entries are skipped. */
    client_ip_resolve(&t, "10.0.0.1", "5.5.5.5,,", out);
    cr_expect_str_eq(out, "5.5.5.5");
}

/* A bare host trusts that host alone; partial-byte prefixes match their
 * whole network; /32 and /128 are hosts; more than 64 rules are refused. */
Test(client_ip, prefix_edges)
{
    struct client_ip_trust h = trust("192.168.1.7,2001:db8::1");
    cr_expect(client_ip_is_trusted(&h, "192.168.1.7"));
    cr_expect_not(client_ip_is_trusted(&h, "192.168.1.6"));
    cr_expect(client_ip_is_trusted(&h, "2001:db8::1"));
    cr_expect_not(client_ip_is_trusted(&h, "2001:db8::"));
    struct client_ip_trust p = trust("10.20.0.0/12,10.0.0.5/30,10.0.0.1/31");
    cr_expect(client_ip_is_trusted(&p, "10.16.0.1"));
    cr_expect(client_ip_is_trusted(&p, "10.31.255.255"));
    cr_expect_not(client_ip_is_trusted(&p, "10.32.0.0"));
    cr_expect(client_ip_is_trusted(&p, "10.0.0.4"));
    cr_expect(client_ip_is_trusted(&p, "10.0.0.7"));
    cr_expect(client_ip_is_trusted(&p, "10.0.0.0"));
    cr_expect_not(client_ip_is_trusted(&p, "10.0.0.8"));
    struct client_ip_trust full = trust("10.0.0.1/32, 2001:db8::/112, ::1/128");
    cr_expect(client_ip_is_trusted(&full, "10.0.0.1"));
    cr_expect_not(client_ip_is_trusted(&full, "10.0.0.2"));
    cr_expect(client_ip_is_trusted(&full, "2001:db8::ffff"));
    cr_expect_not(client_ip_is_trusted(&full, "2001:db8::1:0"));
    cr_expect(client_ip_is_trusted(&full, "::1"));

    char list[65 * 16] = "", err[128] = "";
    struct client_ip_trust t;
    for (int i = 0; i < 65; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s10.0.%d.0/24", i ? "," : "",
                 i);
    cr_expect_not(client_ip_parse_trust(list, &t, err, sizeof(err)), "65 rules accepted");
    cr_expect(strstr(err, "ARV_TRUSTED_PROXIES") != NULL, "%s", err);
}

/* A hop too long to be an address is garbage, never a client address. */
/* IPv6 clients are limited per /64 (one subscriber's network), IPv4 ones per
 * address, whatever the address's spelling. */
Test(client_ip, limit_key_is_the_ipv6_64)
{
    char k[CLIENT_IP_KEY_LEN], k2[CLIENT_IP_KEY_LEN];

    client_ip_limit_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", k, sizeof(k));
    cr_assert_str_eq(k, "2001:db8:1:2::/64");
    client_ip_limit_key("2001:0db8:0001:0002::1", k2, sizeof(k2));
    cr_assert_str_eq(k2, k, "the same network, another address and spelling");
    client_ip_limit_key("2001:db8:1:3::1", k2, sizeof(k2));
    cr_assert_str_neq(k2, k, "the next /64 is another client");
    client_ip_limit_key("203.0.113.7", k, sizeof(k));
    cr_assert_str_eq(k, "203.0.113.7");
    /* An IPv4 address mapped into IPv6, in any spelling, is that address: one
     * bucket, not one per spelling of a forwarded address. */
    client_ip_limit_key("::ffff:203.0.113.7", k, sizeof(k));
    cr_assert_str_eq(k, "203.0.113.7", "IPv4-mapped: its address");
    client_ip_limit_key("::FFFF:cb00:7107", k, sizeof(k));
    cr_assert_str_eq(k, "203.0.113.7");
    client_ip_limit_key("unknown", k, sizeof(k));
    cr_assert_str_eq(k, "unknown");
}

Test(client_ip, overlong_hop_is_garbage)
{
    struct client_ip_trust t = trust("10.0.0.0/8");
    char out[CLIENT_IP_LEN], xff[128];
    memset(xff, 'a', 52);
    snprintf(xff + 52, sizeof(xff) - 52, ", 10.2.3.4");
    client_ip_resolve(&t, "10.0.0.1", xff, out);
    cr_expect_str_eq(out, "10.2.3.4");
}
