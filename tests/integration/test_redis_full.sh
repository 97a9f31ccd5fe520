#!/usr/bin/env bash
# Redis full (over maxmemory, noeviction): the collector answers 503 with
# Retry-After and stores nothing; an aggregator started then still connects
# (Redis refuses even XGROUP CREATE of an existing group) and drains the
# stream, each event counted once; its trimming frees the memory and the
# collector accepts again. Then a policy that may evict the stream
# (allkeys-lru) is warned of by both daemons when they connect.
. "$(dirname "$0")/lib.sh"
it_setup "${1:?usage: test_redis_full.sh BIN_DIR}"

N=3000
rcli() { redis-cli -p "$IT_REDIS_PORT" "$@"; }
used_memory() { rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\)\r$/\1/p'; }
"$IT_BIN/arvctl" content add --id 1 --project 10 --company 100 >/dev/null
it_start collector arv-collector
C="http://127.0.0.1:$IT_PORT_collector"
arv_wait_http "$C/api/health/readiness" 200 10 || it_fail "collector not ready"
# The aggregators ran before (the group exists), and are away while the
# backlog fills Redis.
it_start agg arv-aggregator ARV_CONSUMER=agg
arv_wait_http "http://127.0.0.1:$IT_PORT_agg/api/health/readiness" 200 10 || it_fail "aggregator not ready"
it_stop agg

it_post_batches "$C" "$N" 0
[ "$(rcli XLEN "$ARV_STREAM")" = "$N" ] || it_fail "the stream does not hold $N entries"

# Full: maxmemory below what Redis uses now, by less than the stream takes.
rcli CONFIG SET maxmemory $(($(used_memory) - 200000)) >/dev/null
post_one() { # SESSION_HEX: the status; headers and body in $IT_TMP/one.*
    curl -s -A "$IT_VIEWER_UA" -H 'Content-Type: application/json' -D "$IT_TMP/one.headers" \
        -o "$IT_TMP/one.body" -w '%{http_code}' \
        -d "{\"ar_content_id\":1,\"session_id\":\"7f1c2f3a-5b7e-4c2a-9d3e-$1\"}" \
        "$C/api/analytics/ar-session"
}
code=$(post_one 000000000001)
[ "$code" = 503 ] || it_fail "POST to a full Redis: $code $(cat "$IT_TMP/one.body")"
grep -qi '^Retry-After: 1' "$IT_TMP/one.headers" || it_fail "503 without Retry-After"
[ "$(jq -r .error "$IT_TMP/one.body")" = unavailable ] || it_fail "body: $(cat "$IT_TMP/one.body")"
grep -q '"event":"xadd_failed".*OOM' "$IT_TMP/collector.log" || it_fail "no xadd_failed with OOM logged"
[ "$(rcli XLEN "$ARV_STREAM")" = "$N" ] || it_fail "a refused event is in the stream"

# An aggregator started now drains the stream.
it_start agg arv-aggregator ARV_CONSUMER=agg
for ((i = 0; i < 300; i++)); do
    rows=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
    [ "$rows" = "$N" ] && break
    sleep 0.1
done
[ "$rows" = "$N" ] || it_fail "raw rows $rows != $N: the aggregator did not drain a full Redis"
views=$(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily")
[ "$views" = "$N" ] || it_fail "rollup views $views != $N"
# Its trimming (every 10 s) frees the memory: the collector accepts again.
for ((i = 0; i < 250; i++)); do
    [ "$(rcli XLEN "$ARV_STREAM")" = 0 ] && break
    sleep 0.1
done
[ "$(rcli XLEN "$ARV_STREAM")" = 0 ] || it_fail "the stream was not trimmed within 25 s"
code=$(post_one 000000000002)
[ "$code" = 200 ] || it_fail "POST after the trim: $code $(cat "$IT_TMP/one.body")"
rcli CONFIG SET maxmemory 0 >/dev/null

# A policy that may evict the stream: each daemon warns at its next connect.
rcli CONFIG SET maxmemory-policy allkeys-lru >/dev/null
grep -q redis_eviction_policy_unsafe "$IT_TMP/collector.log" "$IT_TMP/agg.log" &&
    it_fail "a warning under noeviction"
rcli CLIENT KILL TYPE normal >/dev/null
warned='"event":"redis_eviction_policy_unsafe".*"policy":"allkeys-lru"'
it_wait_log collector "$warned" || it_fail "the collector did not warn of allkeys-lru"
# (the aggregator's reads block up to 1 s before it sees the connection gone)
it_wait_log agg "$warned" || it_fail "the aggregator did not warn of allkeys-lru"
rcli CONFIG SET maxmemory-policy noeviction >/dev/null

it_stop agg
it_stop collector
it_pass "full Redis: 503 with Retry-After, drained by an aggregator started then, accepting again after the trim; allkeys-lru warned of"
