#!/usr/bin/env bash
# arv-collector against a real Redis: every error status with its JSON body,
# batches, gzip and sendBeacon bodies, CORS, X-Forwarded-For behind trusted and
# untrusted peers, rate limiting, backpressure, slow clients, Redis crashing in
# the middle of a load (2xx answers == stream entries), and SIGTERM under load.
. "$(dirname "$0")/lib.sh"
it_setup "${1:?usage: test_collector.sh BIN_DIR}"

uuid() { cat /proc/sys/kernel/random/uuid; }
J='Content-Type: application/json'
ev() { printf '{"ar_content_id":1,"session_id":"%s"}' "${1:-$(uuid)}"; }
# post URL [curl args...]: prints "BODY STATUS".
post() {
    local url=$1
    shift
    curl -s -w ' %{http_code}' "$@" "$url"
}
status_of() { echo "${1##* }"; }
body_of() { echo "${1% *}"; }
expect() { # expect NAME RESULT STATUS ERROR
    [ "$(status_of "$2")" = "$3" ] || it_fail "$1: status $(status_of "$2"), want $3: $2"
    [ -z "${4:-}" ] || [ "$(jq -r .error <<<"$(body_of "$2")")" = "$4" ] ||
        it_fail "$1: error code, want $4: $2"
}

# --check-config refuses a stream name the collector would refuse at start.
long_stream=$(printf 's%.0s' $(seq 240))
rc=0; out=$(ARV_STREAM=$long_stream "$IT_BIN/arv-collector" --check-config 2>&1) || rc=$?
[ "$rc" = 1 ] && [[ $out == *"ARV_STREAM: longer than 239 bytes"* ]] ||
    it_fail "--check-config with a 240-byte ARV_STREAM (exit $rc): $out"
ARV_STREAM=${long_stream:1} "$IT_BIN/arv-collector" --check-config >/dev/null 2>&1 ||
    it_fail "--check-config refused a 239-byte ARV_STREAM"

# The open-files limit against the connections of every thread's server
# (10,000 each, plus 256): 12,000 is enough for one thread, not for two.
# Before, only one thread's were counted.
# nofile_warns THREADS: the nofile_limit_low lines of a collector started
# under that limit, counted once its loop runs (its Redis connected).
nofile_warns() {
    local log=$IT_TMP/nofile$1.log pid i
    (ulimit -n 12000 && exec env ARV_THREADS="$1" ARV_LISTEN="127.0.0.1:$(arv_free_port)" \
        "$IT_BIN/arv-collector") 2>"$log" &
    pid=$!
    for ((i = 0; i < 150; i++)); do
        grep -q '"redis_connected"' "$log" && break
        sleep 0.1
    done
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -q '"redis_connected"' "$log" || it_fail "nofile $1: the collector did not come up: $(tail -2 "$log")"
    grep -c nofile_limit_low "$log" || true
}
if [ "$(id -u)" = 0 ] || [ "$(ulimit -Hn)" -ge 12000 ]; then
    [ "$(nofile_warns 1)" = 0 ] || it_fail "nofile 12000, one thread: nofile_limit_low logged"
    [ "$(nofile_warns 2)" = 1 ] || it_fail "nofile 12000, two threads: no nofile_limit_low"
fi

it_start main arv-collector ARV_THREADS=2 ARV_MAX_BATCH=10 ARV_MAX_BODY_BYTES=4096 \
    ARV_CORS_ORIGINS=https://viewer.example ARV_TRUSTED_PROXIES=127.0.0.0/8,::1
it_start strict arv-collector ARV_THREADS=1 ARV_RATE_LIMIT_RPS=2 ARV_RATE_LIMIT_BURST=3 \
    ARV_STREAM="$ARV_STREAM:strict"
C="http://127.0.0.1:$IT_PORT_main/api/analytics"
S="http://127.0.0.1:$IT_PORT_strict/api/analytics"
arv_wait_http "http://127.0.0.1:$IT_PORT_main/api/health/readiness" 200 10 || it_fail "not ready"
xlen() { redis-cli -p "$IT_REDIS_PORT" XLEN "${1:-$ARV_STREAM}"; }
last_entry() { redis-cli -p "$IT_REDIS_PORT" XREVRANGE "${1:-$ARV_STREAM}" + - COUNT 1 | sed -n 5p; }

# ---- error statuses, each with its JSON body; nothing reaches the stream.
n0=$(xlen)
r=$(post "$C/ar-session" -H "$J" -d '{"ar_content_id":1,"session_id":"nope"}')
expect "bad field" "$r" 400 invalid_field
[ "$(jq -r .field <<<"$(body_of "$r")")" = session_id ] || it_fail "400 field: $r"
expect "bad json" "$(post "$C/ar-session" -H "$J" -d '{"ar_content_id":')" 400 invalid_json
expect "null body" "$(post "$C/ar-session" -H "$J" -d ' null ')" 400 invalid_json
objects=$(printf '{"ar_content_id":1,"session_id":"%s","x":[{}%s]}' "$(uuid)" "$(printf ',{}%.0s' $(seq 20))")
r=$(post "$C/ar-session" -H "$J" -d "$objects")
expect "objects in an unread field" "$r" 400 invalid_json
grep -q "more than 16 objects and arrays" <<<"$r" || it_fail "objects in an unread field: $r"
big=$(printf '{"ar_content_id":1,"session_id":"%s","city":"%s"}' "$(uuid)" "$(head -c 5000 /dev/zero | tr '\0' x)")
expect "too large" "$(post "$C/ar-session" -H "$J" -d "$big")" 413 payload_too_large
bomb=$(head -c 3000000 /dev/zero | gzip -9 | base64 -w0)
r=$(base64 -d <<<"$bomb" | post "$C/ar-session" -H "$J" -H 'Content-Encoding: gzip' --data-binary @-)
expect "gzip bomb" "$r" 413 payload_too_large
expect "content type" "$(post "$C/ar-session" -H 'Content-Type: image/png' -d "$(ev)")" 415 \
    unsupported_media_type
expect "form" "$(post "$C/ar-session" -d "$(ev)")" 415 unsupported_media_type
expect "encoding" "$(post "$C/ar-session" -H "$J" -H 'Content-Encoding: br' -d "$(ev)")" 415 \
    unsupported_media_type
# Two lines are a list (RFC 9110, 5.3), refused as "gzip, br" is: not the first line alone.
r=$(ev | gzip | post "$C/ar-session" -H "$J" -H 'Content-Encoding: gzip' -H 'Content-Encoding: br' --data-binary @-)
expect "two encoding lines" "$r" 415 unsupported_media_type
expect "two type lines" "$(post "$C/ar-session" -H "$J" -H 'Content-Type: image/png' -d "$(ev)")" 415 \
    unsupported_media_type
r=$(echo garbage | post "$C/ar-session" -H "$J" -H 'Content-Encoding: gzip' --data-binary @-)
expect "corrupt gzip" "$r" 400 invalid_encoding
batch=$(for i in $(seq 11); do ev; done | jq -sc .)
expect "batch over ARV_MAX_BATCH" "$(post "$C/ar-sessions" -H "$J" -d "$batch")" 413 payload_too_large
expect "not a batch" "$(post "$C/ar-sessions" -H "$J" -d "$(ev)")" 400 invalid_json
expect "empty batch" "$(post "$C/ar-sessions" -H "$J" -d '[]')" 400 invalid_json
[ "$(xlen)" = "$n0" ] || it_fail "refused requests reached the stream"
it_pass "error statuses with JSON bodies"

# ---- gzip and sendBeacon bodies; a batch with good and bad events.
r=$(ev | gzip | post "$C/ar-session" -H "$J" -H 'Content-Encoding: gzip' --data-binary @-)
expect "gzip" "$r" 200
r=$(post "$C/ar-session" -H 'Content-Type: text/plain;charset=UTF-8' -d "$(ev)")
expect "sendBeacon" "$r" 200
[ "$(jq -r .status <<<"$(body_of "$r")")" = tracked ] || it_fail "sendBeacon body: $r"
n1=$(xlen)
batch="[$(ev),{\"ar_content_id\":1,\"session_id\":\"x\"},$(ev),{\"session_id\":\"$(uuid)\"}]"
r=$(post "$C/ar-sessions" -H "$J" -d "$batch")
expect "mixed batch" "$r" 200
b=$(body_of "$r")
[ "$(jq -c '[.accepted, .rejected, .unavailable]' <<<"$b")" = '[2,2,0]' ] || it_fail "batch counts: $b"
[ "$(jq -r '[.results[].status] | join(",")' <<<"$b")" = tracked,rejected,tracked,rejected ] ||
    it_fail "batch statuses: $b"
[ "$(jq -r '.results[1].field' <<<"$b")" = session_id ] || it_fail "batch field: $b"
[ "$(jq -r '.results[3].field' <<<"$b")" = ar_content_id ] || it_fail "batch field: $b"
[ "$(jq -r '.results[0].event_id | length' <<<"$b")" = 36 ] || it_fail "batch event_id: $b"
nd=$(printf '%s\n\n%s\n' "$(ev)" "$(ev)" | gzip | post "$C/ar-sessions" \
    -H 'Content-Type: application/x-ndjson' -H 'Content-Encoding: gzip' --data-binary @-)
expect "gzip ndjson" "$nd" 200
[ "$(jq -r .accepted <<<"$(body_of "$nd")")" = 2 ] || it_fail "ndjson: $nd"
r=$(post "$C/ar-sessions" -H "$J" -d '[{"session_id":"x"}]')
expect "all-bad batch" "$r" 400 invalid_batch
[ "$(xlen)" = "$((n1 + 4))" ] || it_fail "stream holds $(xlen), want $((n1 + 4))"
it_pass "gzip, sendBeacon, JSON-array and NDJSON batches with per-event results"

# ---- CORS.
h=$(curl -s -D - -o /dev/null -X OPTIONS -H 'Origin: https://viewer.example' \
    -H 'Access-Control-Request-Method: POST' "$C/ar-session" | tr -d '\r')
grep -q '^HTTP/1.1 204' <<<"$h" || it_fail "preflight: $h"
grep -qi '^Access-Control-Allow-Origin: https://viewer.example$' <<<"$h" || it_fail "preflight: $h"
grep -qi '^Access-Control-Allow-Methods: .*POST' <<<"$h" || it_fail "preflight: $h"
grep -qi '^Access-Control-Allow-Headers: .*Content-Type' <<<"$h" || it_fail "preflight: $h"
grep -qi '^Access-Control-Max-Age: [0-9]' <<<"$h" || it_fail "preflight: $h"
code=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS -H 'Origin: https://evil.example' "$C/ar-session")
[ "$code" = 403 ] || it_fail "preflight from a foreign origin answered $code"
h=$(curl -s -D - -o /dev/null -H 'Origin: https://viewer.example' -H "$J" -d "$(ev)" "$C/ar-session")
grep -qi '^Access-Control-Allow-Origin: https://viewer.example' <<<"$h" || it_fail "POST CORS: $h"
# The HTTP server's own errors too (here 413: over ARV_MAX_BODY_BYTES), so that a browser can read them.
h=$(head -c 5000 /dev/zero | tr '\0' ' ' | curl -s -D - -o /dev/null -H 'Origin: https://viewer.example' \
    -H "$J" --data-binary @- "$C/ar-session" | tr -d '\r')
grep -q '^HTTP/1.1 413' <<<"$h" && grep -qi '^Access-Control-Allow-Origin: https://viewer.example$' <<<"$h" ||
    it_fail "413 of the HTTP server without CORS: $h"
h=$(curl -s -D - -o /dev/null -H 'Origin: https://evil.example' -H "$J" -d "$(ev)" "$C/ar-session")
grep -q '^HTTP/1.1 200' <<<"$h" || it_fail "POST from a foreign origin not answered 200: $h"
grep -qi '^Access-Control-Allow-Origin' <<<"$h" && it_fail "foreign origin got CORS: $h"
it_pass "CORS preflight and POST headers"

# ---- X-Forwarded-For: believed from a trusted peer (right-most untrusted hop),
# ignored from an untrusted one.
post "$C/ar-session" -H "$J" -H 'X-Forwarded-For: 6.6.6.6, 198.51.100.7, 127.0.0.9' -d "$(ev)" >/dev/null
[ "$(jq -r .ip <<<"$(last_entry)")" = 198.51.100.7 ] || it_fail "trusted XFF: $(last_entry)"
# A proxy that adds a header line of its own (as HAProxy does) after the one
# the client forged: the lines are one list, in order (RFC 9110, 5.3).
post "$C/ar-session" -H "$J" -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Forwarded-For: 198.51.100.8' \
    -d "$(ev)" >/dev/null
[ "$(jq -r .ip <<<"$(last_entry)")" = 198.51.100.8 ] ||
    it_fail "two X-Forwarded-For lines: the first (the client's) was believed: $(last_entry)"
post "$S/ar-session" -H "$J" -H 'X-Forwarded-For: 198.51.100.7' -d "$(ev)" >/dev/null
[ "$(jq -r .ip <<<"$(last_entry "$ARV_STREAM:strict")")" = 127.0.0.1 ] ||
    it_fail "untrusted XFF was believed: $(last_entry "$ARV_STREAM:strict")"
it_pass "X-Forwarded-For only behind trusted proxies"

# ---- rate limit: burst 3 at 2/s; the next answers 429 with Retry-After.
# Six requests from one curl over one connection, within milliseconds (one
# process each took long enough on a loaded machine for a token to refill).
sleep 2
codes=$(curl -s -D "$IT_TMP/rl.h" -o /dev/null -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
    -o "$IT_TMP/rl.body" -w '%{http_code} ' -H "$J" -d "$(ev)" \
    "$S/ar-session" "$S/ar-session" "$S/ar-session" "$S/ar-session" "$S/ar-session" "$S/ar-session")
[ "$codes" = "200 200 200 429 429 429 " ] || it_fail "rate limit codes: $codes"
h=$(tr -d '\r' <"$IT_TMP/rl.h" | awk '/^HTTP\// { last = "" } { last = last $0 "\n" } END { printf "%s", last }')
grep -qi '^Retry-After: [1-9]' <<<"$h" || it_fail "429 without Retry-After: $h"
grep -q '"error":"rate_limited"' "$IT_TMP/rl.body" || it_fail "429 body: $(cat "$IT_TMP/rl.body")"
sleep 1.1
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$J" -d "$(ev)" "$S/ar-session")
[ "$code" = 200 ] || it_fail "rate limit did not refill: $code"
# IPv6 clients share a bucket per /64: one subscriber's 2^64 addresses are
# one client (before, each address had a full bucket of its own).
it_start strict6 arv-collector ARV_THREADS=1 ARV_RATE_LIMIT_RPS=2 ARV_RATE_LIMIT_BURST=3 \
    ARV_TRUSTED_PROXIES=127.0.0.0/8 ARV_STREAM="$ARV_STREAM:strict"
codes=""
for a in 2001:db8:1:2::1 2001:db8:1:2::2 2001:db8:1:2:ffff::3 2001:db8:1:2::4 2001:db8:1:3::1; do
    codes+=$(curl -s -o /dev/null -w '%{http_code} ' -H "$J" -H "X-Forwarded-For: $a" -d "$(ev)" \
        "http://127.0.0.1:$IT_PORT_strict6/api/analytics/ar-session")
done
[ "$codes" = "200 200 200 429 200 " ] || it_fail "IPv6 rate limit per /64: $codes"
it_stop strict6
it_pass "per-IP rate limit with 429 and Retry-After, per /64 for IPv6"

# ---- ARV_THREADS=0: one event loop per CPU the process may run on (its
# affinity), not per CPU of the machine (a container's cpuset on a large host).
all=$(taskset -pc "$$" | sed 's/.*: //')
taskset -pc 0 "$$" >/dev/null
it_start pinned arv-collector ARV_STREAM="$ARV_STREAM:pinned"
taskset -pc "$all" "$$" >/dev/null
grep -q '"event":"collector_started",.*"threads":1,' "$IT_TMP/pinned.log" ||
    it_fail "pinned to one CPU: $(grep collector_started "$IT_TMP/pinned.log")"
it_stop pinned
it_pass "ARV_THREADS=0 follows the CPU affinity"

# ---- ARV_MAX_BUFFERED_BYTES: request bodies are bounded for the process. One
# connection holding 600 KB of a body takes the whole 1 MiB; a 100 KB batch
# then gets 503 with Retry-After, a single event still 200, and once the
# first connection is gone the batch is taken (200 or 207 per event).
it_start buffered arv-collector ARV_THREADS=1 ARV_MAX_BUFFERED_BYTES=1048576 \
    ARV_MAX_BODY_BYTES=1048576 ARV_MAX_BATCH=100000 ARV_STREAM="$ARV_STREAM:buffered"
exec {hold}<>"/dev/tcp/127.0.0.1/$IT_PORT_buffered" || it_fail "connect"
printf 'POST /api/analytics/ar-sessions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n[' >&"$hold"
head -c 600000 /dev/zero | tr '\0' ' ' >&"$hold"
sleep 0.3
big=$(printf '[%s' "$(ev)"; for _ in $(seq 1 1500); do printf ',%s' "$(ev 7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f)"; done; printf ']')
[ "${#big}" -gt 70000 ] || it_fail "the batch is only ${#big} bytes"
hdr=$(curl -s -D - -o /dev/null -H "$J" --data-binary "$big" "http://127.0.0.1:$IT_PORT_buffered/api/analytics/ar-sessions")
grep -q '^HTTP/1.1 503' <<<"$hdr" && grep -qi '^Retry-After: 1' <<<"$hdr" ||
    it_fail "a large body past ARV_MAX_BUFFERED_BYTES: $hdr"
r=$(post "http://127.0.0.1:$IT_PORT_buffered/api/analytics/ar-session" -H "$J" -d "$(ev)")
expect "a small request under the budget" "$r" 200
exec {hold}>&-
sleep 0.3
c=$(curl -s -o /dev/null -w '%{http_code}' -H "$J" --data-binary "$big" "http://127.0.0.1:$IT_PORT_buffered/api/analytics/ar-sessions")
[ "$c" = 200 ] || [ "$c" = 207 ] || it_fail "the batch once the buffer is free: $c"
it_stop buffered
it_pass "ARV_MAX_BUFFERED_BYTES: a large body past it 503 + Retry-After, small requests served, taken once memory is free"

# ---- backpressure: past ARV_STREAM_HIGH_WATER, 503 + Retry-After and readiness
# names stream_backlog; it recovers by itself once the stream shrinks.
it_start bp arv-collector ARV_THREADS=2 ARV_STREAM_HIGH_WATER=5 ARV_STREAM="$ARV_STREAM:bp"
B="http://127.0.0.1:$IT_PORT_bp"
for i in 1 2 3 4 5 6; do post "$B/api/analytics/ar-session" -H "$J" -d "$(ev)" >/dev/null; done
arv_wait_http "$B/api/health/readiness" 503 5 || it_fail "readiness ignored the backlog"
jq -e '.failing | index("stream_backlog")' <<<"$(curl -s "$B/api/health/readiness")" >/dev/null ||
    it_fail "readiness body: $(curl -s "$B/api/health/readiness")"
for i in 1 2 3 4; do # every thread is over the mark
    h=$(curl -s -D - -H "$J" -d "$(ev)" "$B/api/analytics/ar-session" | tr -d '\r')
    grep -q '^HTTP/1.1 503' <<<"$h" || it_fail "POST over the high-water mark: $h"
    grep -qi '^Retry-After:' <<<"$h" || it_fail "503 without Retry-After: $h"
done
redis-cli -p "$IT_REDIS_PORT" XTRIM "$ARV_STREAM:bp" MAXLEN 0 >/dev/null
arv_wait_http "$B/api/health/readiness" 200 5 || it_fail "backlog did not recover"
expect "after backlog" "$(post "$B/api/analytics/ar-session" -H "$J" -d "$(ev)")" 200
it_stop bp
it_pass "backpressure: 503 over ARV_STREAM_HIGH_WATER, recovers"

# ---- slow clients: 300 connections trickling headers do not starve others.
fds=()
for i in $(seq 300); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$IT_PORT_main" || it_fail "connect $i"
    printf 'POST /api/analytics/ar-session HTTP/1.1\r\nHost: x\r\n' >&"$fd"
    fds+=("$fd")
done
for i in 1 2 3 4 5; do
    r=$(post "$C/ar-session" --max-time 2 -H "$J" -d "$(ev)")
    expect "request beside slow clients" "$r" 200
    for fd in "${fds[@]}"; do printf 'X-Slow: %s\r\n' "$i" >&"$fd" 2>/dev/null || true; done
done
for fd in "${fds[@]}"; do exec {fd}>&-; done
it_pass "300 trickling connections, normal requests still answered"

# ---- Redis crashing in the middle of a load: every 2xx is in the stream and
# nothing else is. The crash is DEBUG SEGFAULT on an AOF (appendfsync always)
# server: it dies between event-loop turns, so no write is half-acknowledged.
R2=$(arv_free_port)
# SIGCONT first: a test that fails while the server is stopped must not hang here.
trap 'kill -CONT "$(cat "$IT_TMP/r2.pid" 2>/dev/null)" 2>/dev/null || true
      redis-cli -p "$R2" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; it_cleanup' EXIT
r2_start() {
    redis-server --port "$R2" --bind 127.0.0.1 --dir "$IT_TMP" --daemonize yes \
        --pidfile "$IT_TMP/r2.pid" --logfile "$IT_TMP/r2.log" --save "" --appendonly yes \
        --appendfsync always --enable-debug-command local --crash-memcheck-enabled no >/dev/null
    arv_wait_port "$R2" 10
}
r2_start
it_start crash arv-collector ARV_THREADS=2 REDIS_URL="redis://127.0.0.1:$R2/0" ARV_STREAM=crash
K="http://127.0.0.1:$IT_PORT_crash/api/analytics/ar-session"
arv_wait_http "http://127.0.0.1:$IT_PORT_crash/api/health/readiness" 200 10 || it_fail "crash: not ready"
load() { # load N URL OUT: N single-event POSTs, 16 in parallel; "code error" lines to OUT
    awk -v n="$1" -v url="$2" 'BEGIN {
        for (i = 0; i < n; i++) {
            printf "url = \"%s\"\nheader = \"Content-Type: application/json\"\n", url
            printf "data = \"{\\\"ar_content_id\\\":1,\\\"session_id\\\":"
            printf "\\\"00000000-0000-4000-8000-%012d\\\"}\"\n", i
            printf "output = /dev/null\nwrite-out = \"%%{http_code} %%{errormsg}\\n\"\n"
            if (i < n - 1) print "next"
        }
    }' >"$IT_TMP/load.cfg"
    curl -s --no-progress-meter --parallel --parallel-max 16 -K "$IT_TMP/load.cfg" >"$3" || true
}
load 6000 "$K" "$IT_TMP/codes1" &
lpid=$!
sleep 0.4
redis-cli -p "$R2" DEBUG SEGFAULT >/dev/null 2>&1 || true
sleep 0.3
r2_start
wait "$lpid"
ok=$(grep -c '^200 ' "$IT_TMP/codes1" || true)
unavail=$(grep -c '^503 ' "$IT_TMP/codes1" || true)
n=$(redis-cli -p "$R2" XLEN crash)
echo "crash run: $ok x 200, $unavail x 503, stream $n"
[ "$ok" -gt 0 ] && [ "$unavail" -gt 0 ] || it_fail "the crash did not land mid-load ($ok ok, $unavail 503)"
[ "$((ok + unavail))" = 6000 ] || it_fail "answers other than 200/503: $(sort "$IT_TMP/codes1" | uniq -c | head)"
[ "$n" = "$ok" ] || it_fail "2xx answers $ok != stream entries $n"
it_pass "Redis crash mid-load: $ok 2xx == $n stream entries"

# ---- Redis down: 503 fast, never a hang.
redis-cli -p "$R2" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
arv_wait_http "http://127.0.0.1:$IT_PORT_crash/api/health/readiness" 503 5 || it_fail "readiness up"
t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H "$J" -d "$(ev)" "$K")
[ "${t% *}" = 503 ] || it_fail "POST while Redis is down: $t"
awk -v s="${t#* }" 'BEGIN { exit !(s < 0.25) }' || it_fail "503 took ${t#* } s"
r2_start
arv_wait_http "http://127.0.0.1:$IT_PORT_crash/api/health/readiness" 200 10 || it_fail "no recovery"
it_pass "Redis down: 503 in ${t#* } s, recovery by itself"

# ---- Redis hung (SIGSTOP: the socket stays open, nothing answers): XADDs in
# flight get 503 within ARV_REDIS_TIMEOUT_MS (500) plus its grace, long before
# the 2 s ping would notice; readiness turns 503; all recovers after SIGCONT.
r2pid=$(cat "$IT_TMP/r2.pid")
kill -STOP "$r2pid"
t=$(curl -s -o "$IT_TMP/hung1.json" -w '%{http_code} %{time_total}' -H "$J" -d "$(ev)" "$K")
[ "${t% *}" = 503 ] || it_fail "POST while Redis is hung: $t $(cat "$IT_TMP/hung1.json")"
awk -v s="${t#* }" 'BEGIN { exit !(s >= 0.4 && s < 1.2) }' || it_fail "hung: 503 after ${t#* } s"
# The XADD may still run once Redis does: the answer names the event id (made
# by the collector here, the client sent none) for the retry.
jq -e '.error == "unavailable" and (.event_id | test("^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-"))' \
    "$IT_TMP/hung1.json" >/dev/null || it_fail "hung: $(cat "$IT_TMP/hung1.json")"
hung_id=$(jq -r .event_id "$IT_TMP/hung1.json")
tb=$(curl -s -o "$IT_TMP/hung2.json" -w '%{http_code} %{time_total}' -H "$J" \
    -d "[$(ev),$(ev),{\"session_id\":\"bad\"}]" "http://127.0.0.1:$IT_PORT_crash/api/analytics/ar-sessions")
[ "${tb% *}" = 503 ] || it_fail "batch while Redis is hung: $tb $(cat "$IT_TMP/hung2.json")"
awk -v s="${tb#* }" 'BEGIN { exit !(s < 1.2) }' || it_fail "hung batch: 503 after ${tb#* } s"
jq -e '.unavailable == 2 and .rejected == 1 and .results[0].status == "unavailable"' \
    "$IT_TMP/hung2.json" >/dev/null || it_fail "hung batch: $(cat "$IT_TMP/hung2.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$IT_PORT_crash/api/health/readiness")
[ "$code" = 503 ] || it_fail "readiness $code while Redis is hung"
kill -CONT "$r2pid"
arv_wait_http "http://127.0.0.1:$IT_PORT_crash/api/health/readiness" 200 15 || it_fail "no recovery after SIGCONT"
r=$(post "$K" -H "$J" -d "$(ev)")
[ "$(status_of "$r")" = 200 ] || it_fail "POST after SIGCONT: $r"
retry=$(curl -s -H "$J" -d "{\"event_id\":\"$hung_id\",\"ar_content_id\":1,\"session_id\":\"$(uuid)\"}" "$K")
[ "$(jq -r .event_id <<<"$retry")" = "$hung_id" ] || it_fail "retry with the 503's event_id: $retry"
it_pass "Redis hung: 503 in ${t#* } s (batch ${tb#* } s) naming the event_id, readiness 503, recovery after SIGCONT"

# ARV_REDIS_MAX_PENDING: a collector with at most 3 XADDs awaiting Redis
# answers the next event 503 at once, instead of queueing it behind them.
# The collector's XLEN poll (every 500 ms) is in flight too by the time the
# batch comes, and is not an XADD: it must not take one of the 3 places. (A
# 3 s timeout: the XLEN must not time out and drop the connection first.)
it_start capped arv-collector ARV_THREADS=1 REDIS_URL="redis://127.0.0.1:$R2/0" ARV_STREAM=crash \
    ARV_REDIS_MAX_PENDING=3 ARV_REDIS_TIMEOUT_MS=3000
arv_wait_http "http://127.0.0.1:$IT_PORT_capped/api/health/readiness" 200 10 || it_fail "capped: not ready"
KC="http://127.0.0.1:$IT_PORT_capped/api/analytics"
kill -STOP "$r2pid"
sleep 0.6
curl -s -o "$IT_TMP/capped.json" -H "$J" -d "[$(ev),$(ev),$(ev),$(ev),$(ev)]" "$KC/ar-sessions" &
cpid=$!
sleep 0.15
t=$(curl -s -o "$IT_TMP/capped1.json" -w '%{http_code} %{time_total}' -H "$J" -d "$(ev)" "$KC/ar-session")
[ "${t% *}" = 503 ] || it_fail "capped: POST behind 3 XADDs: $t $(cat "$IT_TMP/capped1.json")"
awk -v s="${t#* }" 'BEGIN { exit !(s < 0.25) }' || it_fail "capped: 503 after ${t#* } s, not at once"
wait "$cpid"
jq -e '.unavailable == 5' "$IT_TMP/capped.json" >/dev/null || it_fail "capped batch: $(cat "$IT_TMP/capped.json")"
sent=$(curl -s "http://127.0.0.1:$IT_PORT_capped/metrics" | awk '/^collector_xadd_total/ { n += $2 } END { print n + 0 }')
[ "$sent" = 3 ] || it_fail "capped: $sent XADDs sent, not 3"
it_stop capped
kill -CONT "$r2pid"
arv_wait_http "http://127.0.0.1:$IT_PORT_crash/api/health/readiness" 200 15 || it_fail "no recovery after the capped test"
it_pass "ARV_REDIS_MAX_PENDING: past 3 XADDs awaiting a hung Redis, 503 in ${t#* } s"

# ---- SIGTERM under load: exit 0 in time, and every 2xx is in the stream.
n0=$(redis-cli -p "$R2" XLEN crash)
load 4000 "$K" "$IT_TMP/codes2" &
lpid=$!
sleep 0.5
it_stop crash
wait "$lpid"
ok=$(grep -c '^200 ' "$IT_TMP/codes2" || true)
n=$(($(redis-cli -p "$R2" XLEN crash) - n0))
[ "$ok" -gt 0 ] || it_fail "no 2xx before SIGTERM"
[ "$n" = "$ok" ] || it_fail "after SIGTERM: 2xx $ok != new stream entries $n"
redis-cli -p "$R2" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
it_pass "SIGTERM under load: exit 0, $ok 2xx == $n entries"

# ---- every reconnect is counted, however quick: the connections of both
# collectors dropped by Redis come back within a backoff (about 0.1 s), which
# a 0.5 s sampling of the connection state missed.
reconnects() {
    curl -s "http://127.0.0.1:$IT_PORT_main/metrics" |
        awk '$1 == "collector_redis_reconnects_total" { print $2 + 0 }'
}
m0=$(reconnects)
for ((k = 0; k < 3; k++)); do
    redis-cli -p "$IT_REDIS_PORT" CLIENT KILL TYPE normal >/dev/null
    arv_wait_http "http://127.0.0.1:$IT_PORT_main/api/health/readiness" 200 10 || it_fail "no reconnect"
    sleep 0.7
done
m1=$(reconnects)
# main runs two threads, each with its own connection: 6 reconnects.
[ "$((m1 - m0))" = 6 ] || it_fail "collector_redis_reconnects_total went from $m0 to $m1, not by 6"
it_pass "3 x 2 quick reconnects counted"

# A node demoted to a replica (a failover behind one name: REPLICAOF here)
# answers XADD with READONLY and still answers pings. The collector drops the
# connection and connects again, to reach a new primary: not ready meanwhile
# (the error named), and it writes again once the node is a primary.
RO=$(arv_free_port)
arv_start_redis "$IT_TMP/ro" "$RO" || it_fail "ro: redis did not start"
it_start ro arv-collector ARV_THREADS=1 REDIS_URL="redis://127.0.0.1:$RO/0" ARV_STREAM=ro
R="http://127.0.0.1:$IT_PORT_ro"
expect "ro: before" "$(post "$R/api/analytics/ar-session" -H "$J" -d "$(ev)")" 200
redis-cli -p "$RO" REPLICAOF 127.0.0.1 "$IT_REDIS_PORT" >/dev/null
expect "ro: a replica" "$(post "$R/api/analytics/ar-session" -H "$J" -d "$(ev)")" 503
# Each READONLY drops the connection; the connects in between (after a
# backoff that grows) may be up for a moment, so readiness is sampled with
# every further write.
for ((i = 0; i < 50; i++)); do
    ready=$(curl -s -w ' %{http_code}' "$R/api/health/readiness")
    [[ $ready == *READONLY*' 503' ]] && break
    post "$R/api/analytics/ar-session" -H "$J" -d "$(ev)" >/dev/null
    sleep 0.1
done
[ "$i" -lt 50 ] || it_fail "ro: readiness while the node refuses writes: $ready"
grep -q '"redis_disconnected".*READONLY' "$IT_TMP/ro.log" || it_fail "ro: no redis_disconnected naming READONLY"
redis-cli -p "$RO" REPLICAOF NO ONE >/dev/null
for ((i = 0; i < 100; i++)); do
    [ "$(status_of "$(post "$R/api/analytics/ar-session" -H "$J" -d "$(ev)")")" = 200 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "ro: not writing 10 s after the node became a primary again"
# (Counted every 0.5 s.)
for ((i = 0; i < 20; i++)); do
    [ "$(curl -s "$R/metrics" | awk '$1 == "collector_redis_reconnects_total" { print $2 + 0 }')" -ge 1 ] &&
        break
    sleep 0.1
done
[ "$i" -lt 20 ] || it_fail "ro: no reconnect counted"
it_stop ro
it_pass "a node answering READONLY: dropped, not ready, connected again; writes once a primary"

# Redis URLs past ARV_STREAM_SHARDS hold no shard: the collector does not
# connect to them, and their outage does not make it not ready.
it_start extra arv-collector ARV_THREADS=1 ARV_STREAM=extra \
    REDIS_URL="redis://127.0.0.1:$IT_REDIS_PORT/0,redis://127.0.0.1:$RO/0"
grep -q '"redis_urls_unused"' "$IT_TMP/extra.log" || it_fail "extra: no redis_urls_unused warning"
arv_stop_redis "$IT_TMP/ro" "$RO"
sleep 2.5
arv_wait_http "http://127.0.0.1:$IT_PORT_extra/api/health/readiness" 200 2 ||
    it_fail "extra: not ready once a node holding no shard stopped"
expect "extra: write" "$(post "http://127.0.0.1:$IT_PORT_extra/api/analytics/ar-session" -H "$J" -d "$(ev)")" 200
it_stop extra
it_pass "a Redis URL past ARV_STREAM_SHARDS is not used, its outage harmless"

it_stop main
it_stop strict
it_pass "collectors stop cleanly"
