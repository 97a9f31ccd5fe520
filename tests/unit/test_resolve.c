/* Tests for resolve: host name lookups answered on the loop, off it. */
#include <criterion/criterion.h>

#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "resolve.h"

static struct event_base *base;

static void setup(void)
{
    base = event_base_new();
}

static void teardown(void)
{
    event_base_free(base);
}

TestSuite(resolve, .init = setup, .fini = teardown, .timeout = 30);

struct answer {
    int calls;
    struct resolve_result res;
};

static void on_answer(void *arg, const struct resolve_result *res)
{
    struct answer *a = arg;
    a->calls++;
    a->res = *res;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(resolve, numeric)
{
    cr_assert(resolve_is_numeric("127.0.0.1"));
    cr_assert(resolve_is_numeric("::1"));
    cr_assert(resolve_is_numeric("2001:db8::5"));
    cr_assert(resolve_is_numeric(""));
    cr_assert(resolve_is_numeric(NULL));
    cr_assert_not(resolve_is_numeric("localhost"));
    cr_assert_not(resolve_is_numeric("redis"));
    cr_assert_not(resolve_is_numeric("10.0.0"));
    cr_assert_not(resolve_is_numeric("[::1]"));
}

/* /etc/hosts' localhost, answered on the loop: never from within the start. */
Test(resolve, localhost)
{
    struct answer a = {0};
    struct resolve *r = resolve_start(base, "localhost", on_answer, &a);
    cr_assert_not_null(r);
    cr_assert_eq(a.calls, 0);
    double end = now_s() + 10;
    while (a.calls == 0 && now_s() < end)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_eq(a.calls, 1);
    cr_assert_gt(a.res.n, 0, "%s", a.res.errstr);
    bool loopback = false;
    for (unsigned i = 0; i < a.res.n; i++)
        loopback |= strcmp(a.res.addrs[i], "127.0.0.1") == 0 || strcmp(a.res.addrs[i], "::1") == 0;
    cr_assert(loopback, "localhost is %s", a.res.addrs[0]);
    cr_assert_str_eq(a.res.errstr, "");
    /* Nothing is left on the loop. */
    cr_assert_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1);
}

/* Cancelled before or after the thread answered: no callback, nothing left
 * (ASan's leak check covers the memory). */
Test(resolve, cancel)
{
    struct answer a = {0};
    for (int i = 0; i < 20; i++) {
        struct resolve *r = resolve_start(base, "localhost", on_answer, &a);
        cr_assert_not_null(r);
        if (i % 2) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        resolve_cancel(r);
    }
    resolve_cancel(NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert_eq(a.calls, 0);
    cr_assert_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1);
    /* Let abandoned threads end before the leak check. */
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
}
