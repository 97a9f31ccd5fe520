#!/usr/bin/env bash
# Host names in REDIS_URL and DATABASE_URL are looked up off the event loops of
# the collector and the reporter. With a name server that never answers, both
# still answer at once: status 200, readiness and POSTs and queries 503
# (before, each loop hung in getaddrinfo for the resolver's whole timeout, then
# again at every reconnect). Once DNS answers (dnsmasq), both connect and
# serve. The daemons run in a mount namespace whose /etc/resolv.conf names a
# private name server on 127.0.0.77 (unshare and mount --bind: root).
. "$(dirname "$0")/lib.sh"
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: test_dns.sh needs root (a mount namespace, a name server on port 53)"
    exit 0
fi
it_setup "${1:?usage: test_dns.sh BIN_DIR}"
unshare -m true || it_fail "unshare -m failed"

DNS=127.0.0.77
cat >"$IT_TMP/resolv.conf" <<EOF
nameserver $DNS
options timeout:2 attempts:2
EOF
# /etc/hosts as it is, and a name with an IPv6 address first (as localhost has
# in most hosts files) while Redis listens on 127.0.0.1 only.
{ cat /etc/hosts; printf '::1 dual.arv.test\n127.0.0.1 dual.arv.test\n'; } >"$IT_TMP/hosts"
# A name server that takes every query and answers none.
perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "'$DNS':53", Proto => "udp") or die "bind: $!";
    print "ready\n"; $| = 1; my $b; 1 while defined $s->recv($b, 4096);' >"$IT_TMP/sink.out" 2>&1 &
sink=$!
IT_PIDS+=("$sink")
for ((i = 0; i < 50; i++)); do grep -q ready "$IT_TMP/sink.out" && break; sleep 0.1; done
grep -q ready "$IT_TMP/sink.out" || it_fail "DNS sink: $(cat "$IT_TMP/sink.out")"

# ns_start NAME BINARY [VAR=VALUE...]: as it_start, inside the namespace, and
# without waiting for the daemon.
ns_start() {
    local name=$1 binary=$2 port
    shift 2
    port=$(arv_free_port)
    env ARV_LISTEN="127.0.0.1:$port" "$@" unshare -m sh -c \
        'mount --bind "$0/resolv.conf" /etc/resolv.conf && mount --bind "$0/hosts" /etc/hosts &&
         exec "$1"' "$IT_TMP" "$IT_BIN/$binary" 2>>"$IT_TMP/$name.log" &
    IT_PIDS+=("$!")
    printf -v "IT_PORT_$name" '%s' "$port"
    printf -v "IT_PID_$name" '%s' "$!"
}
# answers URL CODE: the route answers CODE within 1 s (curl's own limit).
answers() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "${@:3}" "$1") || true
    [ "$code" = "$2" ]
}

"$IT_BIN/arvctl" content add --id 1 --project 10 --company 100 >/dev/null
admin=$("$IT_BIN/arvctl" keys create --admin --name it-dns 2>/dev/null)
ns_start collector arv-collector REDIS_URL="redis://redis.arv.test:$IT_REDIS_PORT/0"
ns_start reporter arv-reporter DATABASE_URL="postgresql://arv@pg.arv.test:$IT_PG_PORT/arv"
C="http://127.0.0.1:$IT_PORT_collector" R="http://127.0.0.1:$IT_PORT_reporter"
arv_wait_http "$C/api/health/status" 200 10 || it_fail "collector did not start"
arv_wait_http "$R/api/health/status" 200 10 || it_fail "reporter did not start"
EVENT='{"ar_content_id":1,"session_id":"0b6f2a3c-1d2e-4f50-8a9b-0c1d2e3f4a5b","duration_seconds":3}'
POST=(-X POST -H 'Content-Type: application/json' --data "$EVENT")
QUERY=(-H "Authorization: Bearer $admin")

# ---- DNS silent: every route answers at once, for 6 s (lookups keep timing out)
for ((i = 0; i < 6; i++)); do
    answers "$C/api/health/status" 200 || it_fail "collector status hung (round $i)"
    answers "$C/api/health/readiness" 503 || it_fail "collector readiness hung or ready (round $i)"
    answers "$C/api/analytics/ar-session" 503 "${POST[@]}" || it_fail "POST hung or accepted (round $i)"
    answers "$R/api/health/status" 200 || it_fail "reporter status hung (round $i)"
    answers "$R/api/health/readiness" 503 || it_fail "reporter readiness hung or ready (round $i)"
    answers "$R/api/analytics/overview" 503 "${QUERY[@]}" || it_fail "query hung or answered (round $i)"
    sleep 1
done
grep -q 'cannot resolve redis.arv.test' "$IT_TMP/collector.log" ||
    it_fail "the collector's log does not say that redis.arv.test did not resolve"
grep -q 'cannot resolve pg.arv.test' "$IT_TMP/reporter.log" ||
    it_fail "the reporter's log does not say that pg.arv.test did not resolve"
it_pass "DNS silent: collector and reporter answer at once (503 where Redis or PostgreSQL is needed)"

# ---- DNS answers: both connect (within the reconnect backoff) and serve
kill -KILL "$sink"
wait "$sink" 2>/dev/null || true
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
    --listen-address="$DNS" --port=53 --user=root --pid-file="$IT_TMP/dnsmasq.pid" \
    --address=/redis.arv.test/127.0.0.1 --address=/pg.arv.test/127.0.0.1 2>"$IT_TMP/dnsmasq.log" &
IT_PIDS+=("$!")
arv_wait_http "$C/api/health/readiness" 200 20 || it_fail "collector not ready once DNS answered"
arv_wait_http "$R/api/health/readiness" 200 20 || it_fail "reporter not ready once DNS answered"
answers "$C/api/analytics/ar-session" 200 "${POST[@]}" || it_fail "POST not accepted once DNS answered"
[ "$(redis-cli -p "$IT_REDIS_PORT" XLEN "$ARV_STREAM")" = 1 ] || it_fail "the event is not in the stream"
out=$(curl -s --max-time 5 "${QUERY[@]}" "$R/api/analytics/overview")
jq -e 'has("total_views")' <<<"$out" >/dev/null || it_fail "overview once DNS answered: $out"
it_pass "DNS answers: both connect to the names' addresses and serve"

# ---- a name with an IPv6 and an IPv4 address: the collector takes the IPv4
# one, as hiredis does (Redis listens on 127.0.0.1 only)
ns_start dual arv-collector REDIS_URL="redis://dual.arv.test:$IT_REDIS_PORT/0"
arv_wait_http "http://127.0.0.1:$IT_PORT_dual/api/health/readiness" 200 10 ||
    it_fail "collector not ready with a name that is ::1 first: $(tail -3 "$IT_TMP/dual.log")"
answers "http://127.0.0.1:$IT_PORT_dual/api/analytics/ar-session" 200 "${POST[@]}" ||
    it_fail "POST through dual.arv.test not accepted"
it_stop dual
it_pass "a name that is IPv6 first: the IPv4 address is connected to"

it_stop collector
it_stop reporter
it_pass "test_dns"
