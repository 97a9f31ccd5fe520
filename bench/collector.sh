#!/usr/bin/env bash
# Collector ingest benchmark against same-run references (see BENCHMARKS.md):
#   1. single-event POSTs: collector vs nginx `return 204`, same wrk settings;
#   2. p99 at about half the collector's max rate;
#   3. batches of 100 events vs redis-benchmark pipelined XADD of the same event.
# Loopback only, bounded in time (about two minutes). Prints numbers and ratios.
# Usage: bench/collector.sh   (env: ARV_BENCH_BUILD_DIR, ARV_THREADS, BENCH_SECONDS, ROUNDS)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages $ARV_BENCH_PACKAGES

build=${ARV_BENCH_BUILD_DIR:-$root/build-bench}
secs=${BENCH_SECONDS:-8}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_SANITIZE=OFF -DARV_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target arv-collector >/dev/null

tmp=$(mktemp -d /tmp/arv-bench.XXXXXX)
chmod 755 "$tmp"
redis_port=$(arv_free_port)
nginx_port=$(arv_free_port)
coll_port=$(arv_free_port)
coll_pid=""
cleanup() {
    [ -n "$coll_pid" ] && kill -TERM "$coll_pid" 2>/dev/null && wait "$coll_pid" 2>/dev/null
    [ -f "$tmp/nginx.pid" ] && kill -QUIT "$(cat "$tmp/nginx.pid")" 2>/dev/null
    arv_stop_redis "$tmp/redis" "$redis_port" || true
    sleep 0.2
    rm -rf "$tmp"
}
trap cleanup EXIT

arv_start_redis "$tmp/redis" "$redis_port"
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp;
    server {
        listen 127.0.0.1:$nginx_port;
        location / { return 204; }
    }
}
NGINX
nginx -c "$tmp/nginx.conf" -p "$tmp" 2>/dev/null
arv_wait_port "$nginx_port"

stream="arv:bench"
env ARV_LISTEN="127.0.0.1:$coll_port" REDIS_URL="redis://127.0.0.1:$redis_port/0" \
    ARV_STREAM="$stream" ARV_ENV=production ARV_LOG_LEVEL=warning ARV_STREAM_HIGH_WATER=0 \
    ${ARV_THREADS:+ARV_THREADS=$ARV_THREADS} \
    "$build/bin/arv-collector" 2>"$tmp/collector.log" &
coll_pid=$!
arv_wait_http "http://127.0.0.1:$coll_port/api/health/readiness" 200 10

# wrk_run CONNS URL [VAR=VALUE...]: runs wrk and sets R_rps, R_okrps (2xx answers
# only: throughput figures use it), R_p50, R_p99, R_ok, R_non2xx.
wrk_run() {
    local conns=$1 url=$2 out
    shift 2
    out=$(env "$@" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$root/bench/post.lua" "$url")
    local line
    line=$(grep "^WRK_RESULT" <<<"$out") || { echo "$out" >&2; return 1; }
    eval "$(sed 's/^WRK_RESULT //; s/\([a-z0-9_]*\)=/R_\1=/g' <<<"$line")"
}
xlen() { redis-cli -p "$redis_port" XLEN "$stream"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# Noise on a shared machine comes in bursts: the reference and the collector
# take turns, ROUNDS times (default 3), and the median of the per-round ratios
# is the result.
rounds=${ROUNDS:-3}
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "== single-event POSTs: wrk -t1 -c64 -d${secs}s --latency -s bench/post.lua URL, $rounds rounds"
ratios="" coll_rps=0
for ((round = 1; round <= rounds; round++)); do
    wrk_run 64 "http://127.0.0.1:$nginx_port/api/analytics/ar-session"
    nginx_rps=$R_okrps
    printf 'round %s nginx-204  : %8s req/s (2xx)  p50 %s ms  p99 %s ms\n' "$round" "$R_okrps" "$R_p50" "$R_p99"
    redis-cli -p "$redis_port" DEL "$stream" >/dev/null
    wrk_run 64 "http://127.0.0.1:$coll_port/api/analytics/ar-session"
    r=$(ratio "$R_okrps" "$nginx_rps")
    ratios="$ratios $r"
    coll_rps=$(awk -v a="$coll_rps" -v b="$R_okrps" 'BEGIN { print (b > a ? b : a) }')
    printf 'round %s collector  : %8s req/s (2xx)  p50 %s ms  p99 %s ms  non-2xx %s  socket errors %s  ratio %s\n' \
        "$round" "$R_okrps" "$R_p50" "$R_p99" "$R_non2xx" "$R_sockerr" "$r"
    # wrk does not count answers still in flight when it stops (at most one per
    # connection), so the stream may hold up to 64 more entries than wrk saw 2xx.
    n=$(xlen)
    printf '        stream entries %s, 2xx answers seen by wrk %s: %s\n' "$n" "$R_ok" \
        "$(((n >= R_ok && n <= R_ok + 64)) && echo "consistent (difference <= 64 in flight)" || echo MISMATCH)"
done
printf 'ratio collector/nginx: median %s of%s   (target >= 0.60)\n' "$(median <<<"$ratios")" "$ratios"

# wrk is closed-loop and has no rate option: use the smallest connection count
# whose throughput reaches half the maximum (2 s probes), then measure p99 there.
half=$(awk -v r="$coll_rps" 'BEGIN { printf "%d", r / 2 }')
conns=1
for c in 1 2 3 4 6 8 12 16; do
    conns=$c
    secs_save=$secs
    secs=2
    wrk_run "$c" "http://127.0.0.1:$coll_port/api/analytics/ar-session"
    secs=$secs_save
    awk -v r="$R_okrps" -v h="$half" 'BEGIN { exit !(r >= h) }' && break
done
wrk_run "$conns" "http://127.0.0.1:$coll_port/api/analytics/ar-session"
printf 'collector at ~half max (wrk -t1 -c%s, closed loop): %s req/s  p50 %s ms  p99 %s ms  non-2xx %s  (target p99 <= 5 ms)\n' \
    "$conns" "$R_okrps" "$R_p50" "$R_p99" "$R_non2xx"

echo "== batches of 100 events vs redis-benchmark -P 32 XADD"
event='{"ar_content_id":7,"session_id":"7f1c2f3a-5b7e-4c2a-9d3e-1a2b3c4d5e6f","duration_seconds":37,"tracking_quality":"good","video_played":true,"device_type":"mobile","browser":"Safari","os":"iOS","country":"DE","city":"Berlin","user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}'
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "[$event]" "http://127.0.0.1:$coll_port/api/analytics/ar-sessions")
if [ "$code" = 200 ]; then
    ratios=""
    for ((round = 1; round <= rounds; round++)); do
        rb=$(redis-benchmark -p "$redis_port" -n 1000000 -c 50 -P 32 -q XADD s '*' e "$event" 2>&1 |
            tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
        redis-cli -p "$redis_port" DEL s >/dev/null
        printf 'round %s redis-benchmark XADD -P 32: %s events/s\n' "$round" "$rb"
        redis-cli -p "$redis_port" DEL "$stream" >/dev/null
        wrk_run 64 "http://127.0.0.1:$coll_port/api/analytics/ar-sessions" BATCH=100
        ev=$(awk -v r="$R_okrps" 'BEGIN { printf "%d", r * 100 }')
        r=$(ratio "$ev" "$rb")
        ratios="$ratios $r"
        printf 'round %s collector batches of 100 (wrk -t1 -c64): %s req/s (2xx) = %s events/s  p99 %s ms  non-2xx %s  ratio %s\n' \
            "$round" "$R_okrps" "$ev" "$R_p99" "$R_non2xx" "$r"
        n=$(xlen)
        printf '        stream entries %s, events in 2xx answers seen by wrk %s: %s\n' "$n" "$((R_ok * 100))" \
            "$(((n >= R_ok * 100 && n <= (R_ok + 64) * 100)) && echo consistent || echo MISMATCH)"
    done
    printf 'ratio collector/redis-benchmark: median %s of%s   (target >= 0.60)\n' "$(median <<<"$ratios")" "$ratios"
else
    echo "batch endpoint not available (answered $code): skipped"
fi
