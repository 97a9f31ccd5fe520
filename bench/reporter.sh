#!/usr/bin/env bash
# Reporter query benchmark (see BENCHMARKS.md): a private PostgreSQL holding
# rollups equivalent to 10M raw events (5,000 contents in 50 companies, 90 days,
# breakdowns included) and to 10k events, generated directly with SQL
# generate_series + hll functions; the seed's reference (COUNT and COUNT(DISTINCT
# session_id) over the indexed raw table of the same 10M events, one company, 30
# days) in the same run. wrk offers a fixed rate of about 1,000 req/s: 20
# connections each pausing 20 ms between requests (bench/reporter.lua), so the
# offered rate is <= 1,000/s and the achieved rate is printed. Prints p50/p99 of
# the 30-day company overview and of a 90-day daily timeseries, with the answer
# cache off (every request runs SQL) and on (default 1 s TTL), and the ratios.
# Closed days' rollups are reused as the reporter does by default
# (ARV_QUERY_CLOSED_TTL_MS); the "closed=0" runs read every day of the window
# on every request (the design before that reuse), as an in-run reference.
# Loopback only; about 8 minutes, most of it generating the 10M-event data.
# Usage: bench/reporter.sh
#   env: ARV_BENCH_BUILD_DIR, BENCH_SECONDS (10), BENCH_PG_PORT, BENCH_RAW_PER_DAY
#        (raw events per content-day for the reference, 22 = 9.9M; 2 = 0.9M),
#        BENCH_BREAKDOWNS (1), BENCH_CONTENTS (5000; fewer for a quick try),
#        BENCH_KEEP (keep the data folder), BENCH_DATA (a folder kept by
#        BENCH_KEEP the same UTC day: reuse its data instead of generating it),
#        BENCH_RUNS (an extended regex: only the runs whose label matches,
#        e.g. 'big series'; the summary needs them all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages $ARV_BENCH_PACKAGES

build=${ARV_BENCH_BUILD_DIR:-$root/build-bench}
secs=${BENCH_SECONDS:-10}
raw_per_day=${BENCH_RAW_PER_DAY:-22}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_SANITIZE=OFF -DARV_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target arv-reporter arvctl >/dev/null

reuse=${BENCH_DATA:-}
if [ -n "$reuse" ]; then
    tmp=$reuse
    [ -f "$tmp/pg/data/PG_VERSION" ] || { echo "BENCH_DATA=$tmp holds no kept cluster" >&2; exit 1; }
else
    tmp=$(mktemp -d /tmp/arv-bench-rep.XXXXXX)
fi
chmod 755 "$tmp"
pg_port=${BENCH_PG_PORT:-$(arv_free_port)}
rep_pid=""
cleanup() {
    [ -n "$rep_pid" ] && kill -TERM "$rep_pid" 2>/dev/null && wait "$rep_pid" 2>/dev/null
    arv_stop_postgres "$tmp/pg" || true
    [ -n "${BENCH_KEEP:-}" ] || [ -n "$reuse" ] || rm -rf "$tmp"
}
trap cleanup EXIT

ARV_PG_FSYNC=off arv_start_postgres "$tmp/pg" "$pg_port"
[ -n "$reuse" ] ||
    psql "postgresql://arv@127.0.0.1:$pg_port/postgres" -q -c "CREATE DATABASE arv_small" >/dev/null
url_big="postgresql://arv@127.0.0.1:$pg_port/arv"
url_small="postgresql://arv@127.0.0.1:$pg_port/arv_small"
sql() { psql "$1" -tAq -v ON_ERROR_STOP=1 -c "$2"; }

# gen URL CONTENTS COMPANIES EVENTS_PER_CONTENT_DAY BREAKDOWNS: registry and
# rollups for 90 UTC days ending today. Every event has its own session, so
# company-day sketches are dense HLLs, as in production. Per-content hourly rows
# are not generated: the benchmarked queries (UTC) read the per-company tables.
gen() {
    local url=$1 n=$2 nc=$3 e=$4 bd=$5
    DATABASE_URL=$url "$build/bin/arvctl" migrate >"$tmp/migrate.log" 2>&1
    sql "$url" "
SET synchronous_commit = off;
INSERT INTO analytics.ar_content (id, project_id, company_id)
SELECT i, (i - 1) / 10 + 1, (i - 1) % $nc + 1 FROM generate_series(1, $n) i;
CREATE TEMP TABLE days AS
SELECT d::date AS day, row_number() OVER (ORDER BY d) AS dn
FROM generate_series((now() AT TIME ZONE 'UTC')::date - 89, (now() AT TIME ZONE 'UTC')::date, interval '1 day') d;
INSERT INTO analytics.rollup_content_daily (day, company_id, project_id, ar_content_id, views,
    sessions, video_plays, duration_sum, duration_count, tq_good)
SELECT d.day, c.company_id, c.project_id, c.id, $e,
       (SELECT hll_add_agg(hll_hash_bigint((c.id * 1000 + d.dn) * 1000 + s), 12, 5)
        FROM generate_series(1, $e) s),
       $e / 3, $e * 37, $e, $e
FROM analytics.ar_content c, days d;
INSERT INTO analytics.rollup_company_daily (day, company_id, views, sessions, video_plays,
    duration_sum, duration_count, tq_good)
SELECT day, company_id, sum(views), hll_union_agg(sessions), sum(video_plays), sum(duration_sum),
       sum(duration_count), sum(tq_good)
FROM analytics.rollup_content_daily GROUP BY 1, 2;
INSERT INTO analytics.rollup_company_hourly (hour, company_id, views, sessions, video_plays,
    duration_sum, duration_count, tq_good)
SELECT h.hour, co.company_id, co.v, (SELECT hll_add_agg(hll_hash_bigint(
           (co.company_id * 100000 + extract(epoch FROM h.hour)::bigint / 3600) * 10000 + s), 12, 5)
        FROM generate_series(1, co.v) s), co.v / 3, co.v * 37, co.v, co.v
FROM (SELECT company_id, greatest(1, count(*)::int * $e / 24) AS v FROM analytics.ar_content GROUP BY 1) co,
     (SELECT generate_series(min(day)::timestamp, max(day)::timestamp + interval '23 hours',
             interval '1 hour') AT TIME ZONE 'UTC' AS hour FROM days) h;
ANALYZE analytics.rollup_content_daily;
ANALYZE analytics.rollup_company_daily;
ANALYZE analytics.rollup_company_hourly;
ANALYZE analytics.ar_content;" >/dev/null
    if [ "$bd" = 1 ]; then
        sql "$url" "
SET synchronous_commit = off;
INSERT INTO analytics.rollup_breakdown_daily (day, company_id, project_id, ar_content_id, dimension,
    value, views, sessions)
SELECT r.day, r.company_id, r.project_id, r.ar_content_id, v.dim, v.val, r.views / v.n, r.sessions
FROM analytics.rollup_content_daily r, (VALUES
    ('device_type', 'mobile', 3), ('device_type', 'desktop', 3), ('device_type', 'tablet', 3),
    ('browser', 'Safari', 2), ('browser', 'Chrome', 2), ('os', 'iOS', 2), ('os', 'Android', 2),
    ('country', 'DE', 3), ('country', 'US', 3), ('country', 'FR', 3),
    ('city', 'Berlin', 2), ('city', 'Paris', 2),
    ('tracking_quality', 'good', 2), ('tracking_quality', 'fair', 2)) v(dim, val, n);
ANALYZE analytics.rollup_breakdown_daily;" >/dev/null
    fi
}

t0=$(date +%s)
if [ -z "$reuse" ]; then
    gen "$url_small" 50 5 2 1
    gen "$url_big" "${BENCH_CONTENTS:-5000}" 50 22 "${BENCH_BREAKDOWNS:-1}"
fi
t1=$(date +%s)
for url in "$url_small" "$url_big"; do
    sql "$url" "SELECT current_database() || ': ' || (SELECT sum(views) FROM analytics.rollup_content_daily)
        || ' events in the rollups; rows: content_daily ' || (SELECT count(*) FROM analytics.rollup_content_daily)
        || ', company_daily ' || (SELECT count(*) FROM analytics.rollup_company_daily)
        || ', company_hourly ' || (SELECT count(*) FROM analytics.rollup_company_hourly)
        || ', breakdown_daily ' || (SELECT count(*) FROM analytics.rollup_breakdown_daily)
        || '; size ' || pg_size_pretty(pg_database_size(current_database()))"
done
if [ -n "$reuse" ]; then echo "rollups reused from $reuse"; else echo "rollups generated in $((t1 - t0)) s"; fi

# The seed's reference: the same events as raw rows, with the (company_id,
# created_at) index of 0001 that the reference query uses (built after the load).
[ -n "$reuse" ] || sql "$url_big" "
SET synchronous_commit = off;
SET maintenance_work_mem = '512MB';
SELECT analytics.ensure_day_partitions((now() AT TIME ZONE 'UTC')::date - 89, (now() AT TIME ZONE 'UTC')::date);
DROP INDEX IF EXISTS analytics.ar_view_sessions_company_created_idx;
INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id, company_id, session_id,
    device_type, browser, os, country, city, duration_seconds, tracking_quality, video_played,
    created_at, received_at)
SELECT md5('e' || c.id || '-' || d || '-' || s)::uuid, c.id, c.project_id, c.company_id,
       md5(c.id || '-' || d || '-' || s)::uuid, 'mobile', 'Safari', 'iOS', 'DE', 'Berlin', 37,
       'good', s % 3 = 0, t, t
FROM analytics.ar_content c, generate_series(0, 89) d, generate_series(1, $raw_per_day) s,
     LATERAL (SELECT ((now() AT TIME ZONE 'UTC')::date - d)::timestamp AT TIME ZONE 'UTC'
                     + (s * 3917 + c.id) % 86400 * interval '1 second' AS t) x;
CREATE INDEX ar_view_sessions_company_created_idx ON analytics.ar_view_sessions (company_id, created_at);" >/dev/null
[ -n "$reuse" ] || sql "$url_big" "VACUUM ANALYZE analytics.ar_view_sessions" >/dev/null
t2=$(date +%s)
raw_rows=$(sql "$url_big" "SELECT count(*) FROM analytics.ar_view_sessions")
if [ -n "$reuse" ]; then echo "raw table: $raw_rows rows (reused)"; else
    echo "raw table: $raw_rows rows, loaded and indexed in $((t2 - t1)) s"; fi

# Raw reference: median of 7 runs over 7 companies, warm cache, as psql \timing shows.
raw_ms=$(for c in 3 9 17 21 33 41 47; do
    psql "$url_big" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL 2>/dev/null || true
SELECT count(*), count(DISTINCT session_id) FROM analytics.ar_view_sessions
WHERE company_id = $c AND created_at >= now() - interval '30 days';
SQL
    psql "$url_big" -q -v ON_ERROR_STOP=1 <<SQL | grep '^Time:' | tail -1 | awk '{print $2}'
\timing on
SELECT count(*), count(DISTINCT session_id) FROM analytics.ar_view_sessions
WHERE company_id = $c AND created_at >= now() - interval '30 days';
SQL
done | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
echo "raw reference (COUNT + COUNT DISTINCT, one company, 30 days, $raw_rows raw rows): median ${raw_ms} ms"

admin_big=$(DATABASE_URL=$url_big "$build/bin/arvctl" keys create --admin 2>/dev/null)
admin_small=$(DATABASE_URL=$url_small "$build/bin/arvctl" keys create --admin 2>/dev/null)

# wrk_ms OUTPUT PCT: the percentile line of wrk --latency, in ms.
wrk_ms() {
    awk -v p="$2%" '$1 == p { v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
        m = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v; printf "%.2f", m }' <<<"$1"
}

# run LABEL URL KEY COMPANIES CACHE_TTL_MS PATH [CLOSED_TTL_MS]
run() {
    local label=$1 url=$2 key=$3 ncomp=$4 ttl=$5 path=$6 closed=${7:-300000} port out
    rm -f "$tmp/last"
    if [ -n "${BENCH_RUNS:-}" ] && ! [[ $label =~ $BENCH_RUNS ]]; then return 0; fi
    port=$(arv_free_port)
    DATABASE_URL=$url ARV_LISTEN="127.0.0.1:$port" ARV_ENV=production ARV_LOG_LEVEL=warn \
        ARV_REPORTER_RATE_LIMIT_RPS=0 ARV_QUERY_CACHE_TTL_MS=$ttl ARV_DB_POOL_SIZE=4 \
        ARV_QUERY_CLOSED_TTL_MS=$closed "$build/bin/arv-reporter" 2>>"$tmp/reporter.log" &
    rep_pid=$!
    arv_wait_http "http://127.0.0.1:$port/api/health/readiness" 200 15
    # Warm-up: the auth cache, the pool's connections, PostgreSQL's buffers.
    BENCH_KEY=$key BENCH_PATH=$path BENCH_COMPANIES=$ncomp BENCH_DELAY_MS=20 \
        wrk -t2 -c20 -d2s -s "$root/bench/reporter.lua" "http://127.0.0.1:$port" >/dev/null
    out=$(BENCH_KEY=$key BENCH_PATH=$path BENCH_COMPANIES=$ncomp BENCH_DELAY_MS=20 \
        wrk -t2 -c20 -d"${secs}s" --latency -s "$root/bench/reporter.lua" "http://127.0.0.1:$port")
    kill -TERM "$rep_pid"
    wait "$rep_pid" || true
    rep_pid=""
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    p50=$(wrk_ms "$out" 50)
    p99=$(wrk_ms "$out" 99)
    errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '%-44s %6s req/s  p50 %6s ms  p99 %6s ms  non-2xx %s\n' "$label" "$rps" "$p50" "$p99" "${errs:-0}"
    echo "$p50 $p99" >"$tmp/last"
}

overview='/api/analytics/companies/%d?period=30d'
series='/api/analytics/timeseries?scope=company:%d&interval=day&period=90d'
echo
echo "wrk -t2 -c20, each connection pausing 20 ms (offered <= 1,000 req/s), ${secs} s, 50 companies in turn"
declare -A res
for scale in small big; do
    if [ $scale = small ]; then url=$url_small key=$admin_small nc=5; else url=$url_big key=$admin_big nc=50; fi
    for q in overview series; do
        for ttl in 0 1000; do
            run "$scale $q cache=${ttl}ms" "$url" "$key" "$nc" "$ttl" "${!q}"
            res[$scale.$q.$ttl]=$(cat "$tmp/last" 2>/dev/null || true)
        done
    done
done
for q in overview series; do
    run "big $q cache=0ms closed=0" "$url_big" "$admin_big" 50 0 "${!q}" 0
    res[big.$q.closed0]=$(cat "$tmp/last" 2>/dev/null || true)
done
for k in "${!res[@]}"; do [ -n "${res[$k]}" ] || exit 0; done

echo
echo "summary (answer cache off: every request runs its SQL; closed days reused unless closed=0):"
for q in overview series; do
    read -r s50 s99 <<<"${res[small.$q.0]}"
    read -r b50 b99 <<<"${res[big.$q.0]}"
    printf '  %-8s 10k-event rollups p50 %s / p99 %s ms; 10M-event rollups p50 %s / p99 %s ms (p99 ratio 10M/10k %.2f); target p99 <= 10 ms\n' \
        "$q" "$s50" "$s99" "$b50" "$b99" "$(awk -v a="$b99" -v b="$s99" 'BEGIN {print a / b}')"
done
for q in overview series; do
    read -r c50 c99 <<<"${res[big.$q.closed0]}"
    read -r b50 b99 <<<"${res[big.$q.0]}"
    printf '  %-8s 10M-event rollups, every day read per request (closed=0): p50 %s / p99 %s ms (p99 ratio closed=0 / closed days reused %.2f)\n' \
        "$q" "$c50" "$c99" "$(awk -v a="$c99" -v b="$b99" 'BEGIN {print a / b}')"
done
read -r b50 b99 <<<"${res[big.overview.0]}"
printf '  raw COUNT reference %s ms vs reporter 30-day company overview p50 %s ms: the reporter is %.0fx faster (p99: %.0fx)\n' \
    "$raw_ms" "$b50" "$(awk -v r="$raw_ms" -v a="$b50" 'BEGIN {print r / a}')" "$(awk -v r="$raw_ms" -v a="$b99" 'BEGIN {print r / a}')"
