#!/usr/bin/env bash
# Crash test: a load with client event_ids (some sent twice, some for unknown
# content), two aggregators in one group, each killed with SIGKILL again and
# again, some exactly between COMMIT and XACK (ARV_FAILPOINT=after_commit:N),
# and PostgreSQL restarted during the load. In the end: raw rows == distinct
# accepted event_ids, every rollup equals the raw rows, nothing pending,
# unknown content in the dead letters, HLL within 3 sigma.
# IT_EVENTS (default 200000) scales it.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../../bench/aggregator_checks.sh"
it_setup "${1:?usage: test_aggregator_crash.sh BIN_DIR}"

N=${IT_EVENTS:-200000}
PARTS=4
GEN=$IT_ROOT/bench/aggregator_events.awk
now_ms=$(date +%s%3N)
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id)
         SELECT g, 'uid-' || g, 1000 + g % 30, 100 + g % 10 FROM generate_series(1, 200) g"

# Part k of the load: N / PARTS entries, the same generator, consecutive indexes.
load_part() {
    LC_ALL=C awk -v n=$((N / PARTS)) -v first=$(($1 * (N / PARTS))) -v stream="$ARV_STREAM" \
        -v base_ms="$now_ms" -v spread_ms=7200000 -v contents=200 -v dup_every=20 \
        -v unknown_every=101 -v uid_every=5 -v sessions=$((N / 4)) \
        -v ids_file="$IT_TMP/ids.$1" -v stats_file="$IT_TMP/stats.$1" -f "$GEN" |
        redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.$1.log" 2>&1 || it_fail "redis-cli --pipe"
}

declare -A PID
# start_agg NAME [VAR=VALUE...]: (re)starts aggregator NAME (consumer crash-NAME).
# Each restart re-reads what the killed process held, which Redis counts as a
# delivery: ~15 kills per aggregator take an entry past ARV_MAX_DELIVERIES' 10,
# and a claim would then dead-letter it (while the restarted owner may be
# writing it too). These crashes are the test's, not the entries' fault, so the
# limit is raised here; test_aggregator covers it. Aggregator a writes one
# read of 1,500 entries per transaction; b several reads of at most 4,000
# (ARV_BATCH_MAX_BYTES) per transaction of up to 12,000, so that kills also
# land between the reads of one write (its writes stay open up to half of its
# ARV_CLAIM_IDLE_MS).
start_agg() {
    local name=$1 batch=(ARV_BATCH_SIZE=1500 ARV_CLAIM_IDLE_MS=2000)
    shift
    [ "$name" = a ] ||
        batch=(ARV_BATCH_SIZE=12000 ARV_BATCH_MAX_BYTES=1048576 ARV_CLAIM_IDLE_MS=6000 ARV_LOG_LEVEL=debug)
    env ARV_LISTEN="127.0.0.1:$(arv_free_port)" ARV_CONSUMER="crash-$name" "${batch[@]}" \
        ARV_BATCH_WAIT_MS=50 ARV_MAX_DELIVERIES=1000 "$@" "$IT_BIN/arv-aggregator" \
        2>>"$IT_TMP/agg-$name.log" &
    PID[$name]=$!
    IT_PIDS+=("$!")
}
# alive NAME: true while aggregator NAME runs (reaps it once it exited).
alive() {
    local st
    st=$(ps -o stat= -p "${PID[$1]}" 2>/dev/null) || return 1
    [[ $st != Z* ]]
}
kills=0
# chaos SECONDS: for that long, kill one aggregator every ~0.7 s and restart it,
# every third time with the failpoint set to exit after its next commit(s).
chaos() {
    local until=$(($(date +%s) + $1)) name
    while [ "$(date +%s)" -lt "$until" ]; do
        sleep 0.$((RANDOM % 6 + 4))
        for name in a b; do
            if ! alive "$name"; then
                wait "${PID[$name]}" 2>/dev/null || true
                start_agg "$name"
            fi
        done
        name=$([ $((RANDOM % 2)) = 0 ] && echo a || echo b)
        kill -KILL "${PID[$name]}" 2>/dev/null && kills=$((kills + 1))
        wait "${PID[$name]}" 2>/dev/null || true
        if [ $((kills % 3)) = 0 ]; then
            start_agg "$name" ARV_FAILPOINT=after_commit:$((RANDOM % 3 + 1))
        else
            start_agg "$name"
        fi
    done
}

load_part 0
start_agg a
start_agg b
chaos 6
load_part 1
chaos 6
# PostgreSQL restarted during the load: batches wait and retry, nothing lost.
arv_stop_postgres "$IT_TMP/pg"
load_part 2
sleep 2
ARV_PG_FSYNC=off arv_start_postgres "$IT_TMP/pg" "$IT_PG_PORT" || it_fail "postgres did not restart"
chaos 6
load_part 3
# Deterministic crash between COMMIT and XACK: one aggregator alone, with part 3
# still unread, must reach the failpoint (chaos alone may kill it first when the
# machine is slow).
for name in a b; do
    kill -KILL "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
done
exits=$(grep -c failpoint_exit "$IT_TMP/agg-a.log" || true)
start_agg a ARV_FAILPOINT=after_commit:1
for ((i = 0; i < 600 && $(alive a && echo 1 || echo 0) == 1; i++)); do sleep 0.1; done
alive a && it_fail "aggregator with ARV_FAILPOINT=after_commit:1 did not exit within 60 s"
rc=0
wait "${PID[a]}" 2>/dev/null || rc=$?
[ "$rc" = 137 ] && [ "$(grep -c failpoint_exit "$IT_TMP/agg-a.log")" = $((exits + 1)) ] ||
    it_fail "aggregator with ARV_FAILPOINT=after_commit:1 exited $rc, not at the failpoint"
start_agg a
start_agg b
chaos 6

# Calm: both run without failpoints until everything is read and acknowledged.
for name in a b; do
    kill -KILL "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
    start_agg "$name"
done
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 150 || it_fail "stream not drained"
failpoints=$(cat "$IT_TMP"/agg-*.log | grep -c failpoint_exit || true)
[ "$kills" -ge 10 ] || it_fail "only $kills kills"
[ "$failpoints" -ge 1 ] || it_fail "no aggregator exited at the failpoint"
multi=$(agg_batch_fields "$IT_TMP/agg-b.log" reads | awk '$1 >= 2 { n++ } END { print n + 0 }')
[ "$multi" -ge 1 ] || it_fail "aggregator b wrote no transaction of several reads"

distinct=$(cat "$IT_TMP"/ids.* | sort -u | wc -l)
raw=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
if [ "$raw" != "$distinct" ]; then
    # Where the missing events went: dead letters by reason, and whether the
    # stream still holds the entries of a few of them.
    cat "$IT_TMP"/ids.* | sort -u >"$IT_TMP/ids.sorted"
    it_psql "SELECT event_id FROM analytics.ar_view_sessions" | sort -u >"$IT_TMP/raw.sorted"
    comm -23 "$IT_TMP/ids.sorted" "$IT_TMP/raw.sorted" >"$IT_TMP/missing"
    echo "dead letters: $(it_psql "SELECT string_agg(reason || ' ' || n, ', ') FROM
        (SELECT reason, count(*) AS n FROM analytics.dead_letters GROUP BY 1) d")" >&2
    echo "stream: $(redis-cli -p "$IT_REDIS_PORT" XLEN "$ARV_STREAM") entries; first missing: $(head -3 "$IT_TMP/missing" | tr '\n' ' ')" >&2
    grep -h '"write_abandoned"\|"batch_rejected"\|"failpoint_exit"\|"entries_claimed"' "$IT_TMP"/agg-*.log | tail -20 >&2
    it_fail "raw rows $raw, distinct accepted event ids $distinct ($(wc -l <"$IT_TMP/missing") missing)"
fi
[ "$(it_psql "SELECT count(*) FROM (SELECT company_id, event_id FROM analytics.ar_view_sessions
      GROUP BY 1, 2 HAVING count(*) > 1) d")" = 0 ] || it_fail "an event_id stored twice"
bad=$(agg_check_rollups) || it_fail "rollup check failed to run"
[ "$bad" = 0 ] || it_fail "rollups differ from raw rows: $bad"
pending=$(redis-cli -p "$IT_REDIS_PORT" XPENDING "$ARV_STREAM" arv-aggregators | head -1)
[ "$pending" = 0 ] || it_fail "$pending entries pending"
unknown=$(cat "$IT_TMP"/stats.* | awk '$1 == "unknown" {s += $2} END {print s}')
# Every dead letter is an unknown_content one, once per entry.
got=$(it_psql "SELECT count(*) FILTER (WHERE reason = 'unknown_content') || ' ' || count(*) FROM analytics.dead_letters")
[ "$got" = "$unknown $unknown" ] || it_fail "dead letters: expected $unknown, all unknown_content; by reason: $(
    it_psql "SELECT string_agg(reason || ' ' || n || ' (' || details || ')', ', ') FROM (SELECT reason,
             count(*) AS n, string_agg(DISTINCT coalesce(detail, '-'), '; ') AS details
             FROM analytics.dead_letters GROUP BY 1) d")"
off=$(agg_check_hll) || it_fail "HLL check failed to run"
[ "$off" = 0 ] || it_fail "$off company-days with HLL uniques off by more than 3 sigma (1.6% each)"
it_pass "crash: $N entries, $kills SIGKILLs, $failpoints exits between COMMIT and XACK, $multi writes of several reads, PostgreSQL restarted: $raw rows == distinct event ids, rollups == raw, nothing pending, $unknown unknown_content dead letters"

for name in a b; do
    kill -TERM "${PID[$name]}"
    wait "${PID[$name]}" || it_fail "aggregator $name did not stop cleanly"
done
