# Checks shared by the aggregator's integration tests and bench/aggregator.sh
# (source it; needs DATABASE_URL, psql, redis-cli). Functions prefixed agg_.

# agg_bench_servers BUILD_DIR NAME (benchmarks): a temp folder $tmp
# (/tmp/arv-bench-NAME.*), private Redis and PostgreSQL (fsync on) on free
# loopback ports ($redis_port, $pg_port), REDIS_URL and DATABASE_URL exported,
# the schema migrated with BUILD_DIR's arvctl. Needs scripts/lib/servers.sh.
agg_bench_servers() {
    tmp=$(mktemp -d "/tmp/arv-bench-$2.XXXXXX")
    chmod 755 "$tmp"
    redis_port=$(arv_free_port)
    pg_port=$(arv_free_port)
    arv_start_redis "$tmp/redis" "$redis_port"
    ARV_PG_FSYNC=on arv_start_postgres "$tmp/pg" "$pg_port"
    export REDIS_URL="redis://127.0.0.1:$redis_port/0"
    export DATABASE_URL="postgresql://arv@127.0.0.1:$pg_port/arv"
    "$1/bin/arvctl" migrate >/dev/null
}

# agg_bench_stop_servers: stops what agg_bench_servers started and removes
# $tmp unless $keep is set; safe to call from an EXIT trap at any point.
agg_bench_stop_servers() {
    [ -n "${tmp:-}" ] || return 0
    arv_stop_postgres "$tmp/pg" || true
    [ -z "${redis_port:-}" ] || arv_stop_redis "$tmp/redis" "$redis_port" || true
    [ -n "${keep:-}" ] || rm -rf "$tmp"
}

# agg_cpu_ms PID...: CPU time (user + system) the processes have used, in ms
# (processes already gone count 0).
agg_cpu_ms() {
    local p t=0 hz
    hz=$(getconf CLK_TCK)
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$((t + $(awk -v hz="$hz" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# agg_sql SQL: runs one statement, prints the unaligned result.
agg_sql() {
    psql "$DATABASE_URL" -tAq -v ON_ERROR_STOP=1 -c "$1"
}

# agg_wait_drained PORT STREAM SECONDS: waits until the group arv-aggregators
# has read everything (lag 0) and acknowledged it (pending 0). One redis-cli
# asks every 0.1 s and the shell reads its answers with builtins: a redis-cli,
# sed and subshells per poll took about a sixth of this 2-core machine's CPU
# from the drain a benchmark times.
agg_wait_drained() {
    local port=$1 stream=$2 limit=$3 line prev="" group="" pending="" state="" rc=1
    while IFS= read -r line; do
        case $prev in
        name) group=$line ;;
        pending) pending=$line ;;
        lag)
            if [ "$group" = arv-aggregators ]; then
                [ "$line" = 0 ] && [ "$pending" = 0 ] && { rc=0; break; }
                state="lag $line, pending $pending"
            fi
            ;;
        esac
        prev=$line
    done < <(
        end=$((SECONDS + limit))
        while [ "$SECONDS" -lt "$end" ]; do
            # Ends by SIGPIPE (141) once the loop above has its answer; asks
            # again after an error (Redis restarting, a refused connection).
            st=0
            timeout "$((end - SECONDS))" redis-cli -p "$port" -r -1 -i 0.1 XINFO GROUPS "$stream" 2>&1 || st=$?
            [ "$st" != 141 ] || break
            sleep 0.1
        done
    )
    [ "$rc" = 0 ] || echo "not drained after ${limit}s: $state" >&2
    return $rc
}

# agg_batch_fields LOG FIELD...: for each batch_written line of an
# aggregator's debug log (- : standard input), the values of the numeric
# FIELDs, space-separated.
agg_batch_fields() {
    local log=$1
    shift
    awk -F'[:,}]' -v fields="$*" 'BEGIN { n = split(fields, want, " ") }
        /"batch_written"/ {
            split("", v)
            for (i = 1; i < NF; i++) { k = $i; gsub(/[" ]/, "", k); v[k] = $(i + 1) }
            line = ""
            for (j = 1; j <= n; j++) line = line (j > 1 ? " " : "") v[want[j]] + 0
            print line
        }' "$log"
}

# The measures of the per-content and per-company rollups, from raw rows.
AGG_RAW_MEASURES="count(*), count(*) FILTER (WHERE video_played),
    coalesce(sum(duration_seconds), 0), count(duration_seconds),
    count(*) FILTER (WHERE tracking_quality = 'excellent'),
    count(*) FILTER (WHERE tracking_quality = 'good'),
    count(*) FILTER (WHERE tracking_quality = 'fair'),
    count(*) FILTER (WHERE tracking_quality = 'poor'),
    count(*) FILTER (WHERE tracking_quality IS NULL OR tracking_quality NOT IN ('excellent', 'good', 'fair', 'poor')),
    hll_cardinality(hll_add_agg(hll_hash_bytea(uuid_send(session_id)), 12, 5))"
AGG_ROLLUP_MEASURES="views, video_plays, duration_sum, duration_count, tq_excellent, tq_good,
    tq_fair, tq_poor, tq_other, hll_cardinality(sessions)"
AGG_DIMENSIONS="(VALUES ('device_type', coalesce(device_type, 'unknown')), ('browser', coalesce(browser, 'unknown')),
    ('os', coalesce(os, 'unknown')), ('country', coalesce(country, 'unknown')),
    ('city', coalesce(city, 'unknown')), ('tracking_quality', coalesce(tracking_quality, 'unknown'))) d (dimension, value)"

# agg_check_rollups [WHERE]: prints how many rollup rows (all five tables)
# differ from the same aggregate computed over the raw rows other than bots'
# (0 = all equal);
# WHERE (optional) restricts the raw rows and must name only created_at.
agg_check_rollups() {
    local where=${1:-true} total=0 n spec table tcol texpr keys
    for spec in \
        "rollup_content_hourly|hour|date_trunc('hour', created_at, 'UTC')|company_id, project_id, ar_content_id" \
        "rollup_content_daily|day|(created_at AT TIME ZONE 'UTC')::date|company_id, project_id, ar_content_id" \
        "rollup_company_hourly|hour|date_trunc('hour', created_at, 'UTC')|company_id" \
        "rollup_company_daily|day|(created_at AT TIME ZONE 'UTC')::date|company_id"; do
        IFS='|' read -r table tcol texpr keys <<<"$spec"
        n=$(agg_sql "WITH a AS (SELECT $texpr, $keys, $AGG_RAW_MEASURES
                       FROM analytics.ar_view_sessions WHERE NOT is_bot AND ($where) GROUP BY 1, $keys),
                     b AS (SELECT $tcol, $keys, $AGG_ROLLUP_MEASURES FROM analytics.$table
                       WHERE $tcol IN (SELECT DISTINCT $texpr FROM analytics.ar_view_sessions WHERE $where))
                     SELECT (SELECT count(*) FROM (TABLE a EXCEPT ALL TABLE b) x)
                          + (SELECT count(*) FROM (TABLE b EXCEPT ALL TABLE a) y)") || return 1
        [ "$n" = 0 ] || echo "$table: $n rows differ" >&2
        total=$((total + n))
    done
    n=$(agg_sql "WITH a AS (SELECT (created_at AT TIME ZONE 'UTC')::date, company_id, project_id,
                   ar_content_id, dimension, value, count(*),
                   hll_cardinality(hll_add_agg(hll_hash_bytea(uuid_send(session_id)), 12, 5))
                   FROM analytics.ar_view_sessions CROSS JOIN LATERAL $AGG_DIMENSIONS
                   WHERE NOT is_bot AND ($where) GROUP BY 1, 2, 3, 4, 5, 6),
                 b AS (SELECT day, company_id, project_id, ar_content_id, dimension, value, views,
                   hll_cardinality(sessions) FROM analytics.rollup_breakdown_daily
                   WHERE day IN (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date
                                 FROM analytics.ar_view_sessions WHERE $where))
                 SELECT (SELECT count(*) FROM (TABLE a EXCEPT ALL TABLE b) x)
                      + (SELECT count(*) FROM (TABLE b EXCEPT ALL TABLE a) y)") || return 1
    [ "$n" = 0 ] || echo "rollup_breakdown_daily: $n rows differ" >&2
    echo $((total + n))
}

# agg_check_hll: prints how many company-days have HLL uniques further than
# 3 sigma from the exact COUNT(DISTINCT session_id) of the raw rows other than
# bots'. log2m 12: relative standard error 1.04/sqrt(4096) = 1.6%, 3 sigma 4.9%.
agg_check_hll() {
    agg_sql "SELECT count(*) FROM (SELECT r.company_id, r.day, hll_cardinality(r.sessions) AS est,
               (SELECT count(DISTINCT session_id) FROM analytics.ar_view_sessions v
                 WHERE v.company_id = r.company_id AND NOT v.is_bot
                   AND (v.created_at AT TIME ZONE 'UTC')::date = r.day) AS exact
               FROM analytics.rollup_company_daily r) x WHERE abs(est - exact) > 0.049 * exact"
}

# agg_rollup_digest: one md5 over every rollup table's rows, in key order.
agg_rollup_digest() {
    agg_sql "SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
        (SELECT 'ch' || r::text AS t FROM analytics.rollup_content_hourly r ORDER BY company_id, ar_content_id, hour)
        UNION ALL (SELECT 'cd' || r::text FROM analytics.rollup_content_daily r ORDER BY company_id, ar_content_id, day)
        UNION ALL (SELECT 'kh' || r::text FROM analytics.rollup_company_hourly r ORDER BY company_id, hour)
        UNION ALL (SELECT 'kd' || r::text FROM analytics.rollup_company_daily r ORDER BY company_id, day)
        UNION ALL (SELECT 'bd' || r::text FROM analytics.rollup_breakdown_daily r
                   ORDER BY company_id, ar_content_id, day, dimension, value)) x"
}
