/* Unit tests for aggregator/ip_anon.c: IPv4 /24, IPv6 /48, refusals. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>

#include "ip_anon.h"

/* The text form of *a, "" when it holds no address. */
static const char *text_of(const struct ip_addr *a)
{
    static char text[INET6_ADDRSTRLEN];

    text[0] = '\0';
    if (a->family)
        cr_assert_not_null(inet_ntop(a->family, a->bytes, text, sizeof(text)));
    return text;
}

static void expect(const char *in, const char *want)
{
    struct ip_addr a;

    cr_assert(ip_anon(in, &a), "%s refused", in);
    cr_assert_str_eq(text_of(&a), want, "%s -> %s, expected %s", in, text_of(&a), want);
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
    struct ip_addr a = {.family = AF_INET};

    cr_assert_not(ip_anon("example.com", &a));
    cr_assert_eq(a.family, 0);
    cr_assert_not(ip_anon("203.0.113", &a));
    cr_assert_not(ip_anon("", &a));
    cr_assert_not(ip_anon(NULL, &a));
    cr_assert_not(ip_anon("fe80::1%eth0", &a)); /* a zone is no numeric address */
    cr_assert_eq(a.family, 0);
}

/* Stored in full: the address as it is, an IPv4-mapped one as IPv4. */
Test(ip_anon, unmap_keeps_the_address)
{
    struct ip_addr a;

    cr_assert(ip_unmap("::ffff:198.51.100.23", &a));
    cr_assert_eq(a.family, AF_INET);
    cr_assert_str_eq(text_of(&a), "198.51.100.23");
    cr_assert(ip_unmap("203.0.113.7", &a));
    cr_assert_str_eq(text_of(&a), "203.0.113.7");
    cr_assert(ip_unmap("2001:DB8::0001", &a));
    cr_assert_eq(a.family, AF_INET6);
    cr_assert_str_eq(text_of(&a), "2001:db8::1");
    cr_assert_not(ip_unmap("example.com", &a));
    cr_assert_str_eq(text_of(&a), "");
}
