/* Unit tests for aggregator/ip_anon.c: IPv4 /24, IPv6 /48, refusals. */
#include <criterion/criterion.h>
#include <string.h>

#include "ip_anon.h"

static void expect(const char *in, const char *want)
{
    char out[IP_ANON_MAX];

    cr_assert(ip_anon(in, out, sizeof(out)), "%s refused", in);
    cr_assert_str_eq(out, want, "%s -> %s, expected %s", in, out, want);
}

Test(ip_anon, ipv4_last_octet_zeroed)
{
    expect("203.0.113.7", "203.0.113.0");
    expect("10.1.2.255", "10.1.2.0");
    expect("192.168.0.0", "192.168.0.0");
}

Test(ip_anon, ipv6_keeps_48)
{
    expect("2001:db8:abcd:12::1", "2001:db8:abcd::");
    expect("2001:db8:abcd:ffff:1:2:3:4", "2001:db8:abcd::");
    expect("::1", "::");
    expect("::ffff:198.51.100.23", "198.51.100.0");
}

/* 2002:AABB:CCDD::/48 is the IPv4 address AA.BB.CC.DD: only its /24 stays. */
Test(ip_anon, sixtofour_keeps_the_ipv4_24)
{
    expect("2002:c000:0207::1", "2002:c000:200::");
    expect("2002:cb00:71ff:1:2:3:4:5", "2002:cb00:7100::");
    expect("2003:c000:0207::1", "2003:c000:207::"); /* not 6to4: the /48 */
}

Test(ip_anon, refuses_non_addresses)
{
    char out[IP_ANON_MAX] = "x";

    cr_assert_not(ip_anon("example.com", out, sizeof(out)));
    cr_assert_str_eq(out, "");
    cr_assert_not(ip_anon("203.0.113", out, sizeof(out)));
    cr_assert_not(ip_anon("", out, sizeof(out)));
    cr_assert_not(ip_anon(NULL, out, sizeof(out)));
    cr_assert_not(ip_anon("1.2.3.4", out, 8));
}

/* Stored in full: the address as it is, an IPv4-mapped one as IPv4. */
Test(ip_anon, unmap_keeps_the_address)
{
    char out[IP_ANON_MAX];

    cr_assert(ip_unmap("::ffff:198.51.100.23", out, sizeof(out)));
    cr_assert_str_eq(out, "198.51.100.23");
    cr_assert(ip_unmap("203.0.113.7", out, sizeof(out)));
    cr_assert_str_eq(out, "203.0.113.7");
    cr_assert(ip_unmap("2001:DB8::0001", out, sizeof(out)));
    cr_assert_str_eq(out, "2001:db8::1");
    cr_assert_not(ip_unmap("example.com", out, sizeof(out)));
    cr_assert_str_eq(out, "");
}
