#!/usr/bin/env bash
# End-to-end freshness benchmark: single-event POSTs to arv-collector at a fixed
# rate (open loop, bench/freshness_gen.c), arv-aggregator draining the stream,
# and the time from each 200 answer until the event is counted in
# analytics.rollup_content_hourly (polled every 25 ms on one connection).
# Event k in order of answers is visible at the first poll after its answer
# whose sum(views) reaches k. Target (issue 4): p99 <= 2 s at 10,000 events/s.
# Same-run reference: the freshness floor, the same pipeline at a low rate
# (200 events/s), where only ARV_BATCH_WAIT_MS and one batch's write count.
#
# Usage: bench/freshness.sh [--rate N] [--seconds S] [--conns N] [--aggregators N] [--keep]
# (--aggregators: that many arv-aggregator processes in the consumer group, the
# documented way to scale out; default 1)
# Environment: ARV_BENCH_BUILD_DIR (default build-bench-freshness, a Release
# build made here), any ARV_* aggregator option (ARV_BATCH_SIZE, ...).
# Servers: private Redis and PostgreSQL 15 (server defaults, fsync on) on free
# loopback ports, stopped at the end with the daemons. Bounded: about
# 5 + S seconds of load plus at most 60 s waiting for visibility per run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages $ARV_BENCH_PACKAGES
. "$root/bench/aggregator_checks.sh"

rate=10000 secs=20 conns=256 keep="" naggs=1
floor_rate=200 floor_secs=5 contents=50 company=100
while [ $# -gt 0 ]; do
    case $1 in
    --rate) rate=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --conns) conns=$2; shift ;;
    --aggregators) naggs=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--rate N] [--seconds S] [--conns N] [--aggregators N] [--keep]" >&2; exit 2 ;;
    esac
    shift
done

build=${ARV_BENCH_BUILD_DIR:-$root/build-bench-freshness}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_SANITIZE=OFF -DARV_TESTS=OFF >/dev/null
if ! out=$(cmake --build "$build" -j2 --target arv-collector arv-aggregator arvctl 2>&1); then
    echo "$out" >&2
    exit 1
fi
# The load generator is a bench tool, not part of the product build.
cc -std=gnu11 -O2 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
    -Wvla -Wcast-qual $(pkg-config --cflags libpq) "$root/bench/freshness_gen.c" \
    $(pkg-config --libs libpq) -o "$build/freshness_gen"

coll_pid="" agg_pid=""
cleanup() {
    local p
    for p in $coll_pid $agg_pid; do
        kill -TERM "$p" 2>/dev/null && { wait "$p" 2>/dev/null || true; }
    done
    agg_bench_stop_servers
}
trap cleanup EXIT
agg_bench_servers "$build" fresh
export ARV_STREAM=arv:bench ARV_ENV=production ARV_LOG_LEVEL=${ARV_LOG_LEVEL:-warn}
agg_sql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id)
         SELECT g, 'uid-' || g, 1000, $company FROM generate_series(1, $contents) g"

# Debug level: one batch_written line per batch, with the time of each step.
for ((k = 0; k < naggs; k++)); do
    agg_port=$(arv_free_port)
    ARV_LOG_LEVEL=debug "$build/bin/arv-aggregator" --listen="127.0.0.1:$agg_port" --consumer="bench-$k" \
        2>>"$tmp/aggregator.log" &
    agg_pid="$agg_pid $!"
    arv_wait_http "http://127.0.0.1:$agg_port/api/health/readiness" 200 20
done
coll_port=$(arv_free_port)
ARV_LISTEN="127.0.0.1:$coll_port" "$build/bin/arv-collector" 2>"$tmp/collector.log" &
coll_pid=$!
arv_wait_http "http://127.0.0.1:$coll_port/api/health/readiness" 200 10

echo "aggregator: $naggs process(es), ARV_BATCH_SIZE=${ARV_BATCH_SIZE:-200000} ARV_BATCH_WAIT_MS=${ARV_BATCH_WAIT_MS:-200} (a read returns as soon as entries are there; at most BATCH_WAIT_MS when idle)"
echo "collector:  ARV_THREADS=${ARV_THREADS:-0} (0: one per CPU), $(nproc) CPUs shared with the load generator, Redis and PostgreSQL"

# gen LABEL RATE SECONDS: one run; prints its lines and sets F_<key> from RESULT.
gen() {
    local out line
    out=$("$build/freshness_gen" --port "$coll_port" --dsn "$DATABASE_URL" \
        --sql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_content_hourly WHERE company_id = $company" \
        --rate "$2" --seconds "$3" --conns "$conns" --contents "$contents" --label "$1" \
        --poll-ms 25 --drain-s 60)
    grep -v '^RESULT' <<<"$out"
    line=$(grep '^RESULT' <<<"$out")
    eval "$(sed 's/^RESULT //; s/\([a-z0-9_]*\)=/F_\1=/g' <<<"$line")"
}

pg_pids() {
    local pm
    pm=$(head -1 "$tmp/pg/data/postmaster.pid")
    echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}
redis_pid=$(cat "$tmp/redis/redis.pid")

gen floor "$floor_rate" "$floor_secs"
floor_p99=$F_p99_ms
echo "machine load average before the main run: $(cut -d' ' -f1-3 /proc/loadavg)"
c_agg=$(agg_cpu_ms $agg_pid) c_coll=$(agg_cpu_ms "$coll_pid") c_redis=$(agg_cpu_ms "$redis_pid")
c_pg=$(agg_cpu_ms $(pg_pids)) t0=$(date +%s%3N) log0=$(wc -l <"$tmp/aggregator.log")
gen main "$rate" "$secs"
t1=$(date +%s%3N)
# Backends that ended during the run are missing from the PostgreSQL sum (the
# aggregator and the probe keep theirs, so little is).
awk -v ms=$((t1 - t0)) -v cpus="$(nproc)" -v a=$(($(agg_cpu_ms $agg_pid) - c_agg)) -v c=$(($(agg_cpu_ms "$coll_pid") - c_coll)) \
    -v r=$(($(agg_cpu_ms "$redis_pid") - c_redis)) -v p=$(($(agg_cpu_ms $(pg_pids)) - c_pg)) 'BEGIN {
    printf "[main] CPU over the run (%.1f s; %d CPUs = %d%%): aggregator %.0f%%, PostgreSQL %.0f%%, collector %.0f%%, Redis %.0f%%\n",
        ms / 1000, cpus, 100 * cpus, 100 * a / ms, 100 * p / ms, 100 * c / ms, 100 * r / ms
}'

# The aggregator's batches during the main run: how big, and where the time went
# (the steps of bench/aggregator.sh).
tail -n +$((log0 + 1)) "$tmp/aggregator.log" |
    agg_batch_fields - entries ms read_ms ids_ms raw_ms deltas_ms merge_ms commit_ms ack_ms |
    awk '{ for (k = 1; k <= NF; k++) t[k] += $k; if ($1 > emax) emax = $1; if ($2 > wmax) wmax = $2 }
    END { if (NR) printf "[main] aggregator: %d batches, %.0f entries each (largest %d), longest write %d ms; summed: read %d, ids %d, raw %d, deltas %d, merge %d, commit %d, ack %d ms\n",
        NR, t[1] / NR, emax, wmax, t[3], t[4], t[5], t[6], t[7], t[8], t[9] }'
views=$(agg_sql "SELECT sum(views) FROM analytics.rollup_content_hourly WHERE company_id = $company")
rows=$(agg_sql "SELECT count(*) FROM analytics.ar_view_sessions")
echo "check: raw rows $rows, rollup views $views"
awk -v p99="$F_p99_ms" -v fp99="$floor_p99" -v got="$F_rate" -v want="$rate" -v inv="$F_invisible" \
    -v err="$F_errors" 'BEGIN {
    printf "freshness p99 %d ms at %.0f events/s vs floor p99 %d ms at '"$floor_rate"' events/s: %.1fx the floor\n",
        p99, got, fp99, (fp99 > 0 ? p99 / fp99 : 0)
    ok = p99 <= 2000 && got >= 0.98 * want && inv == 0 && err == 0
    printf "target p99 <= 2000 ms at %d events/s: %s\n", want, ok ? "MET" : "NOT MET"
}'
if grep -qE '"level":"(warning|error)"' "$tmp/aggregator.log" || [ -s "$tmp/collector.log" ]; then
    echo "daemon warnings/errors (last lines):"
    grep -hE '"level":"(warning|error)"' "$tmp/aggregator.log" | tail -n 3
    tail -n 3 "$tmp/collector.log"
fi
