#!/usr/bin/env bash
# End to end: POST N events through the collector, the aggregator rolls them up,
# the reporter's totals equal N; collector readiness follows Redis; clean stops.
. "$(dirname "$0")/lib.sh"
it_setup "${1:?usage: test_pipeline.sh BIN_DIR}"

N=${IT_EVENTS:-300}
"$IT_BIN/arvctl" content add --id 1 --project 10 --company 100 >/dev/null
"$IT_BIN/arvctl" content add --id 2 --unique-id portrait-2 --project 20 --company 200 >/dev/null
key=$("$IT_BIN/arvctl" keys create --admin --name it)
[ -n "$key" ] || it_fail "no key printed"

# Two event loops, each with its own Redis connection (the readiness check must
# cover both).
it_start collector arv-collector ARV_THREADS=2
it_start aggregator arv-aggregator ARV_BATCH_WAIT_MS=50
it_start reporter arv-reporter
C="http://127.0.0.1:$IT_PORT_collector"
R="http://127.0.0.1:$IT_PORT_reporter"
arv_wait_http "$C/api/health/readiness" 200 10 || it_fail "collector not ready"
arv_wait_http "http://127.0.0.1:$IT_PORT_aggregator/api/health/readiness" 200 10 ||
    it_fail "aggregator not ready"

uuid() { cat /proc/sys/kernel/random/uuid; }

# Bad input: a clear 400 naming the field, and nothing reaches the stream.
body=$(curl -s -w ' %{http_code}' -H 'Content-Type: application/json' \
    -d '{"ar_content_id":1,"session_id":"nope"}' "$C/api/analytics/ar-session")
[ "${body##* }" = 400 ] || it_fail "bad session_id answered ${body##* }"
[ "$(jq -r .field <<<"${body% *}")" = session_id ] || it_fail "400 body: $body"
[ "$(jq -r .error <<<"${body% *}")" = invalid_field ] || it_fail "400 body: $body"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: image/png' -d '{}' \
    "$C/api/analytics/ar-session")
[ "$code" = 415 ] || it_fail "wrong content type answered $code"

# N good events: 2/3 for content 1 by id, 1/3 for content 2 by unique id, from
# N/2 distinct sessions; with video and durations.
sessions=()
for ((i = 0; i < N / 2; i++)); do sessions+=("$(uuid)"); done
expected_plays=0
{
    for ((i = 0; i < N; i++)); do
        sid=${sessions[$((i % (N / 2)))]}
        if ((i % 3 == 2)); then content='"ar_content_unique_id":"portrait-2"'; else content='"ar_content_id":1'; fi
        played=false
        ((i % 4 == 0)) && played=true
        printf 'url = "%s/api/analytics/ar-session"\nheader = "Content-Type: application/json"\n' "$C"
        # A viewer's browser: curl's own user agent is a bot's, stored but not counted.
        printf 'user-agent = "%s"\n' "$IT_VIEWER_UA"
        printf 'data = "{%s,\\"session_id\\":\\"%s\\",\\"duration_seconds\\":10,\\"video_played\\":%s,\\"tracking_quality\\":\\"good\\"}"\n' \
            "${content//\"/\\\"}" "$sid" "$played"
        printf 'output = /dev/null\nwrite-out = "%%{http_code}\\n"\n'
        ((i < N - 1)) && printf 'next\n'
    done
} >"$IT_TMP/curl.cfg"
for ((i = 0; i < N; i++)); do ((i % 4 == 0)) && expected_plays=$((expected_plays + 1)); done
codes=$(curl -s --no-progress-meter --parallel --parallel-max 16 -K "$IT_TMP/curl.cfg" | sort | uniq -c)
[ "$(echo "$codes" | awk '$2 == 200 {print $1}')" = "$N" ] || it_fail "POST answers: $codes"

# The reporter must show all N within a few seconds.
ok=""
for ((i = 0; i < 100; i++)); do
    overview=$(curl -s -H "Authorization: Bearer $key" "$R/api/analytics/overview")
    [ "$(jq -r .total_views <<<"$overview")" = "$N" ] && ok=1 && break
    sleep 0.1
done
[ -n "$ok" ] || it_fail "overview after 10 s: $overview"
uniq_sessions=$(jq -r .unique_sessions <<<"$overview")
# HLL: log2m 12 is about 1.6% standard error; allow 5%.
[ $((uniq_sessions * 100 >= (N / 2) * 95 && uniq_sessions * 100 <= (N / 2) * 105)) = 1 ] ||
    it_fail "unique_sessions $uniq_sessions, expected about $((N / 2))"
[ "$(jq -r .active_content <<<"$overview")" = 2 ] || it_fail "active_content: $overview"
[ "$(jq -r .data_complete_until <<<"$overview")" != null ] || it_fail "no watermark: $overview"

c100=$(curl -s -H "Authorization: Bearer $key" "$R/api/analytics/companies/100")
n1=$(( N - N / 3 ))
[ "$(jq -r .views <<<"$c100")" = "$n1" ] || it_fail "company 100: $c100 (expected $n1 views)"
c2=$(curl -s -H "Authorization: Bearer $key" "$R/api/analytics/ar-content/2")
[ "$(jq -r .views <<<"$c2")" = "$((N / 3))" ] || it_fail "content 2: $c2"
p10=$(curl -s -H "Authorization: Bearer $key" "$R/api/analytics/projects/10")
[ "$(jq -r .views <<<"$p10")" = "$n1" ] || it_fail "project 10: $p10"
[ "$(jq -r .avg_duration_seconds <<<"$p10")" = 10 ] || it_fail "project 10 duration: $p10"
plays=$(( $(jq -r .video_plays <<<"$c100") + $(jq -r .video_plays <<<"$c2") ))
[ "$plays" = "$expected_plays" ] || it_fail "video plays $plays, expected $expected_plays"
code=$(curl -s -o /dev/null -w '%{http_code}' "$R/api/analytics/overview")
[ "$code" = 401 ] || it_fail "overview without a key answered $code"

# Raw rows and rollups agree with what was posted.
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = "$N" ] || it_fail "raw rows"
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily")" = "$N" ] || it_fail "rollup"
[ "$(redis-cli -p "$IT_REDIS_PORT" XPENDING "$ARV_STREAM" arv-aggregators | head -1)" = 0 ] ||
    it_fail "entries left pending"
it_pass "pipeline: $N events posted, counted once each"

# Readiness follows Redis: 503 while it is down (and POSTs get 503 fast), back
# to 200 by itself once it returns.
arv_stop_redis "$IT_TMP/redis" "$IT_REDIS_PORT"
arv_wait_http "$C/api/health/readiness" 503 5 || it_fail "collector readiness stayed up"
ready=$(curl -s "$C/api/health/readiness")
jq -e '.failing | index("redis")' <<<"$ready" >/dev/null || it_fail "readiness body: $ready"
out=$(curl -s --max-time 2 -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"ar_content_id\":1,\"session_id\":\"$(uuid)\"}" "$C/api/analytics/ar-session")
grep -q "^HTTP/1.1 503" <<<"$out" || it_fail "POST while Redis down: $out"
grep -qi "^Retry-After:" <<<"$out" || it_fail "503 without Retry-After: $out"
arv_start_redis "$IT_TMP/redis" "$IT_REDIS_PORT"
arv_wait_http "$C/api/health/readiness" 200 10 || it_fail "collector readiness did not recover"
# Once readiness says 200, every loop must take events: 20 POSTs on fresh
# connections (spread over both loops by SO_REUSEPORT) all answer 200. Before
# readiness covered every loop, one loop could still be reconnecting.
for ((i = 0; i < 20; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"ar_content_id\":1,\"session_id\":\"$(uuid)\"}" "$C/api/analytics/ar-session")
    [ "$code" = 200 ] || it_fail "POST $i after Redis returned and readiness was 200 answered $code"
done
it_pass "collector readiness follows Redis"

it_stop collector
it_stop aggregator
it_stop reporter
it_pass "daemons stop cleanly on SIGTERM"
