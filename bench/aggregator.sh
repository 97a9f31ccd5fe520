#!/usr/bin/env bash
# Aggregator drain benchmark: preloads N events into the stream (redis-cli
# --pipe of XADDs in the collector's exact format), times arv-aggregator
# draining them (dedupe, raw rows, all rollups, COMMIT, XACK), and in the same
# run the reference: a plain `\copy` of the same rows into a table with the raw
# table's columns. Prints events/s of both, the ratio, and the aggregator's
# peak RSS (VmHWM) with the whole backlog waiting.
#
# Usage: bench/aggregator.sh [--events N] [--contents N] [--companies N]
#                            [--aggregators N] [--rss] (= --events 1000000) [--random-ids]
#                            [--distinct-cities] [--max-fields] [--unknown-content] [--keep]
#                            [--shards N]
# --shards N: the events in N stream shards on the one Redis node, each in the
# shard the collector routes its content to (default 2: a shard per worker,
# as recommended and as run-local.sh and compose/ run; 1: one stream).
# Environment: ARV_BENCH_BUILD_DIR (default build-bench-aggregator, a Release
# build made here), any ARV_* aggregator option (ARV_BATCH_SIZE, ...),
# ARV_BENCH_EXPLAIN=1: log every statement with its time and every plan with
# actual times (auto_explain, which slows the drain) and print the time per
# statement and per data-modifying CTE, summed over all batches.
# ARV_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p":
# runs the aggregator under that command (instruction counts, which this
# shared machine's load does not move; with ARV_WORKERS=1 and a small
# --events, since it runs some fifty times slower).
# Servers: private Redis (no persistence) and PostgreSQL 15 with the server's
# defaults (fsync on, synchronous_commit on, full_page_writes on, shared_buffers
# 128MB; ARV_PG_OPTIONS="-c name=value ..." changes them for the drain and the
# references alike), on free loopback ports, stopped at the end. Bounded: the
# drain is given at most 600 s.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages $ARV_BENCH_PACKAGES
. "$root/bench/aggregator_checks.sh"

events=500000 contents=1000 companies=50 keep="" naggs=1 random_ids=0 distinct_cities=0 max_fields=0
unknown_every=0 shards=2
while [ $# -gt 0 ]; do
    case $1 in
    --events) events=$2; shift ;;
    --contents) contents=$2; shift ;;
    --companies) companies=$2; shift ;;
    --aggregators) naggs=$2; shift ;;
    --rss) events=1000000 ;;
    --random-ids) random_ids=1 ;;
    --distinct-cities) distinct_cities=1 ;;
    --max-fields) max_fields=1 ;;
    --unknown-content) unknown_every=1 ;;
    --keep) keep=1 ;;
    --shards) shards=$2; shift ;;
    *) echo "usage: $0 [--events N] [--contents N] [--companies N] [--aggregators N] [--rss] [--random-ids] [--distinct-cities] [--max-fields] [--unknown-content] [--keep] [--shards N]" >&2; exit 2 ;;
    esac
    shift
done

build=${ARV_BENCH_BUILD_DIR:-$root/build-bench-aggregator}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_SANITIZE=OFF >/dev/null
cmake --build "$build" -j2 --target arv-aggregator arvctl >/dev/null

agg_pids=()
cleanup() {
    local p
    for p in "${agg_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    agg_bench_stop_servers
}
trap cleanup EXIT
agg_bench_servers "$build" agg
# Debug level: one batch_written line per batch, with the time of each step.
export ARV_STREAM=arv:bench ARV_STREAM_SHARDS=$shards ARV_ENV=production ARV_LOG_LEVEL=${ARV_LOG_LEVEL:-debug}
agg_sql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id)
         SELECT g, 'uid-' || g, 10000 + g % ($companies * 4), 100 + g % $companies
         FROM generate_series(1, $contents) g"
if [ "${ARV_BENCH_EXPLAIN:-0}" = 1 ]; then
    psql "$DATABASE_URL" -tAq -v ON_ERROR_STOP=1 -c "LOAD 'auto_explain'" \
        -c "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" \
        -c "ALTER SYSTEM SET auto_explain.log_analyze = on" -c "ALTER SYSTEM SET log_min_duration_statement = 0" \
        -c "SELECT pg_reload_conf()" >/dev/null
fi
# A server that has been running reuses its WAL files at each checkpoint; a
# new cluster creates and zero-fills each 16 MB file on first use
# (XLogFileInit: 8% of PostgreSQL's CPU in a 1M drain, and the reference
# COPYs, which run later, found recycled files). About max_wal_size of WAL
# and a checkpoint leave the drain recycled files too, as in production.
agg_sql "CREATE TABLE bench_wal AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 4000000) g"
agg_sql "DROP TABLE bench_wal"
agg_sql "CHECKPOINT"
echo "settings: $(agg_sql "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_wal_size', 'wal_buffers', 'wal_level')")"

# Preload: events over the last 6 hours, 1 in 50 a client retry, 1/4 by unique id.
t0=$(date +%s%N)
LC_ALL=C awk -v n="$events" -v stream="$ARV_STREAM" -v base_ms="$(date +%s%3N)" \
    -v spread_ms=21600000 -v contents="$contents" -v dup_every=50 -v uid_every=4 -v random_ids="$random_ids" \
    -v shards="$shards" -v distinct_cities="$distinct_cities" -v max_fields="$max_fields" -v unknown_every="$unknown_every" \
    -f "$root/bench/aggregator_events.awk" | redis-cli -p "$redis_port" --pipe >"$tmp/pipe.log"
t1=$(date +%s%N)
streams=("$ARV_STREAM")
[ "$shards" = 1 ] || { streams=(); for ((k = 0; k < shards; k++)); do streams+=("$ARV_STREAM:$k"); done; }
xlen=0
for s in "${streams[@]}"; do xlen=$((xlen + $(redis-cli -p "$redis_port" XLEN "$s"))); done
echo "preload: $xlen entries (${#streams[@]} stream(s), ARV_WORKERS ${ARV_WORKERS:-2}) in $(((t1 - t0) / 1000000)) ms, redis used_memory $(redis-cli -p "$redis_port" INFO memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')"

# cluster_cpu: "pid cpu_ms" (user + system) of Redis and of every PostgreSQL
# process (the postmaster and its children), read from /proc.
redis_pid=$(cat "$tmp/redis/redis.pid") postmaster=$(head -n 1 "$tmp/pg/data/postmaster.pid")
cluster_cpu() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v hz="$(getconf CLK_TCK)" -v pm="$postmaster" -v rp="$redis_pid" '{
        pid = $1; s = $0; sub(/^.*\) /, "", s); split(s, f, " ")
        if (pid == pm || f[2] == pm || pid == rp) print pid, int((f[12] + f[13]) * 1000 / hz) }'
}

# Drain: from the aggregators' start until the group has read and acknowledged all.
cluster_cpu >"$tmp/cpu0"
wal0=$(agg_sql "SELECT pg_current_wal_lsn()")
ckpt0=$(agg_sql "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
# The whole machine's CPU (every process and the kernel's own threads, such as
# the page cache's writeback) around the drain, from /proc/stat.
read -r _ stat0 </proc/stat
t0=$(date +%s%N)
for ((k = 0; k < naggs; k++)); do
    # shellcheck disable=SC2086 # ARV_BENCH_WRAP: a command and its words
    ${ARV_BENCH_WRAP:-} "$build/bin/arv-aggregator" --listen="127.0.0.1:$(arv_free_port)" --consumer="bench-$k" \
        2>"$tmp/aggregator-$k.log" &
    agg_pids+=("$!")
done
for s in "${streams[@]}"; do
    agg_wait_drained "$redis_port" "$s" 600 || { tail "$tmp"/aggregator-*.log; exit 1; }
done
t1=$(date +%s%N)
read -r _ stat1 </proc/stat
# CPU of the aggregators' PostgreSQL backends (user + system): on a shared
# machine, CPU per event is steadier than wall time.
pg_cpu_ms=$(agg_cpu_ms $(agg_sql "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'arv-aggregator%'"))
# What the drain cost Redis and the rest of PostgreSQL (WAL writer,
# checkpointer, autovacuum, ...): the CPU every process of theirs used since t0.
cluster_cpu >"$tmp/cpu1"
read -r redis_cpu_ms cluster_cpu_ms < <(awk -v rp="$redis_pid" 'NR == FNR { c0[$1] = $2; next }
    { d = $2 - c0[$1]; if ($1 == rp) r += d; else p += d } END { print r + 0, p + 0 }' "$tmp/cpu0" "$tmp/cpu1")
hwm=0 cpu_ms=0
for p in "${agg_pids[@]}"; do
    h=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status")
    [ "$h" -gt "$hwm" ] && hwm=$h
    cpu_ms=$((cpu_ms + $(agg_cpu_ms "$p")))
    kill -TERM "$p"
    wait "$p" || true
done
agg_pids=()
drain_ms=$(((t1 - t0) / 1000000))
rows=$(agg_sql "SELECT count(*) FROM analytics.ar_view_sessions")
views=$(agg_sql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_company_daily")
echo "WAL written:      $(agg_sql "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0'))
    || ' (' || round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0') / $xlen) || ' bytes/entry), '
    || (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) - $ckpt0 || ' checkpoint(s)'")"

[ "$rows" = "$views" ] || { echo "rollup views $views != raw rows $rows" >&2; exit 1; }

# Time per step, summed over batches (of all aggregators; a batch is one
# transaction of one or more reads): read = XREADGROUP + decode, ids = BEGIN +
# day locks + dead letters + event ids, raw = raw rows (and the rollup deltas
# computed meanwhile), deltas = the rollup deltas sent, merge = the rollup
# upserts, commit = COMMIT, ack = XACK.
cat "$tmp"/aggregator-*.log |
    agg_batch_fields - entries reads read_ms ids_ms raw_ms deltas_ms merge_ms commit_ms ack_ms |
    awk '{ for (k = 1; k <= NF; k++) t[k] += $k }
    END { if (NR) printf "steps:            %d batches (%.0f entries, %.1f reads each): read %d, ids %d, raw %d, deltas %d, merge %d, commit %d, ack %d ms\n",
        NR, t[1] / NR, t[2] / NR, t[3], t[4], t[5], t[6], t[7], t[8], t[9] }'

if [ "${ARV_BENCH_EXPLAIN:-0}" = 1 ]; then
    echo "PostgreSQL time per statement and per CTE (all batches; explain timing slows the drain):"
    awk -f "$root/bench/aggregator_explain.awk" "$tmp/pg/postgres.log" | sort -k1,1
fi

if [ "$rows" = 0 ]; then
    # Every event dead-lettered (--unknown-content): no rows to COPY.
    echo "aggregator drain: $xlen entries ($(agg_sql "SELECT count(*) FROM analytics.dead_letters") dead letters) in $drain_ms ms = $((xlen * 1000 / (drain_ms > 0 ? drain_ms : 1))) events/s"
    echo "aggregator RSS:   VmHWM $(awk -v h="$hwm" 'BEGIN { printf "%.1f", h / 1024 }') MB (largest process) with a $xlen-entry backlog"
    exit 0
fi

# Reference: plain COPY of the same rows into a table with the raw table's
# columns (no index, no partitions: the strictest reference).
agg_sql "CREATE TABLE bench_copy (LIKE analytics.ar_view_sessions)"
psql "$DATABASE_URL" -q -c "\\copy (SELECT * FROM analytics.ar_view_sessions) TO '$tmp/rows.copy'"
# timed_copy TABLE FILE: COPYs FILE into TABLE; sets copy_ms and copy_cpu_ms
# (the backend's CPU).
timed_copy() {
    agg_sql "CHECKPOINT"
    local t0 t1
    t0=$(date +%s%N)
    psql "$DATABASE_URL" -tAq -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT pg_backend_pid() \\g $tmp/copy.pid
\\copy $1 FROM '$2'
\\! awk -v hz="\$(getconf CLK_TCK)" '{print int((\$14 + \$15) * 1000 / hz)}' /proc/\$(tr -dc 0-9 <$tmp/copy.pid)/stat >$tmp/copy.cpu
SQL
    t1=$(date +%s%N)
    copy_ms=$(((t1 - t0) / 1000000))
    copy_cpu_ms=$(cat "$tmp/copy.cpu")
}
# A floor for any exactly-once design here: the dedupe keys alone COPYed into
# a table with event_ids' indexes (its primary key).
psql "$DATABASE_URL" -q -c "\\copy (SELECT company_id, event_id, received_at FROM analytics.event_ids) TO '$tmp/ids.copy'"
agg_sql "CREATE TABLE bench_ids (LIKE analytics.event_ids INCLUDING INDEXES)"
timed_copy bench_ids "$tmp/ids.copy"
ids_ms=$copy_ms ids_cpu_ms=$copy_cpu_ms
# The same rows into the raw table itself: its day partitions (the
# drain is done and checked; the copies are not counted anywhere).
timed_copy analytics.ar_view_sessions "$tmp/rows.copy"
raw_ms=$copy_ms raw_cpu_ms=$copy_cpu_ms
# The reference runs three times (emptied in between) and the median time,
# and apart from it the median CPU, count: on this shared machine one COPY's
# time varies by a third or more from run to run, which a single run would
# pass on to the ratio.
copy_runs=()
for k in 1 2 3; do
    agg_sql "TRUNCATE bench_copy"
    timed_copy bench_copy "$tmp/rows.copy"
    copy_runs+=("$copy_ms $copy_cpu_ms")
done
copy_ms=$(printf '%s\n' "${copy_runs[@]}" | sort -n | sed -n '2s/ .*//p')
copy_cpu_ms=$(printf '%s\n' "${copy_runs[@]}" | sort -n -k2 | sed -n '2s/.* //p')
copy_all=$(printf '%s\n' "${copy_runs[@]}" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $1 }')

awk -v n="$xlen" -v rows="$rows" -v dms="$drain_ms" -v cms="$copy_ms" -v call="$copy_all" -v hwm="$hwm" -v cpu="$cpu_ms" -v naggs="$naggs" \
    -v pgcpu="$pg_cpu_ms" -v copycpu="$copy_cpu_ms" -v ims="$ids_ms" -v icpu="$ids_cpu_ms" \
    -v rms="$raw_ms" -v rcpu="$raw_cpu_ms" -v rediscpu="$redis_cpu_ms" -v clustercpu="$cluster_cpu_ms" \
    -v cores="$(nproc)" -v stat0="$stat0" -v stat1="$stat1" 'BEGIN {
    d = n / (dms / 1000); c = rows / (cms / 1000)
    printf "aggregator drain: %d entries (%d new rows) in %d ms = %.0f events/s (%d aggregator(s), CPU %d ms)\n", n, rows, dms, d, naggs, cpu
    printf "plain COPY:       %d rows in %d ms = %.0f rows/s (the median of 3 runs: %s ms)\n", rows, cms, c, call
    printf "ratio:            %.2fx plain COPY (target >= 0.5x; >= 60000 events/s)\n", d / c
    printf "COPY, raw table:  %d rows in %d ms = %.0f rows/s (its day partitions); drain = %.2fx of it; %.1f us/row CPU\n", rows, rms, rows / (rms / 1000), d / (rows / (rms / 1000)), rcpu * 1000 / rows
    printf "PostgreSQL CPU:   %.1f us/event (aggregator backends) vs %.1f us/row (COPY backend) = %.2fx\n", pgcpu * 1000 / n, copycpu * 1000 / rows, (copycpu / rows) / (pgcpu / n)
    printf "dedupe keys only: %d rows in %d ms = %.0f rows/s = %.2fx plain COPY; %.1f us/row CPU (COPY into event_ids indexes)\n", rows, ims, rows / (ims / 1000), (rows / (ims / 1000)) / c, icpu * 1000 / rows
    f = rows / ((rms + ims) / 1000)
    printf "exactly-once floor: %.0f rows/s (the raw and dedupe-key COPYs above, one after the other, no rollups); drain = %.2fx of it\n", f, d / f
    # Whether 0.5x can be reached here at all: the CPU the whole pipeline used
    # per event against what 0.5x plain COPY leaves per event on all cores.
    t = cpu + clustercpu + rediscpu; b = cores * 1000000 / (0.5 * c)
    printf "pipeline CPU:     %.1f us/event (aggregator %.1f, its PostgreSQL backends %.1f, other PostgreSQL processes %.1f, Redis %.1f); %d cores %.0f%% busy with it\n", t * 1000 / n, cpu * 1000 / n, pgcpu * 1000 / n, (clustercpu - pgcpu) * 1000 / n, rediscpu * 1000 / n, cores, 100 * t / (cores * dms)
    # /proc/stat: user nice system idle iowait irq softirq steal ...
    split(stat0, s0, " "); split(stat1, s1, " "); tot = 0
    for (i = 1; i <= 8; i++) { dt[i] = s1[i] - s0[i]; tot += dt[i] }
    if (tot > 0)
        printf "machine CPU:      %.0f%% of %d cores busy during the drain (every process and the kernel), %.0f%% idle, %.0f%% iowait\n", 100 * (tot - dt[4] - dt[5]) / tot, cores, 100 * dt[4] / tot, 100 * dt[5] / tot
    printf "0.5x CPU budget:  %.1f us/event (%d cores at 100%% for 0.5x plain COPY); this drain needed %.2fx of it\n", b, cores, (t * 1000 / n) / b
    printf "aggregator RSS:   VmHWM %.1f MB (largest process) with a %d-entry backlog (target <= 100 MB)\n", hwm / 1024, n
}'
