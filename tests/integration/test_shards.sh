#!/usr/bin/env bash
# Sharded streams over two Redis nodes: the collector spreads events over 4
# shards (shard i on node i mod 2; the node follows the event's session, the
# shard on that node its content), two aggregators (two workers per node each,
# every worker reading its node's two shards) drain a backlog that takes
# several pieces per read, one of them killed midway; in the end every event
# is counted once, nothing is pending on any shard, and both nodes had events.
. "$(dirname "$0")/lib.sh"
it_setup "${1:?usage: test_shards.sh BIN_DIR}"

N=${IT_EVENTS:-12000}
P2=$(arv_free_port)
arv_start_redis "$IT_TMP/redis2" "$P2" || it_fail "second redis did not start"
trap 'arv_stop_redis "$IT_TMP/redis2" "$P2"; it_cleanup' EXIT
export REDIS_URL="redis://127.0.0.1:$IT_REDIS_PORT/0,redis://127.0.0.1:$P2/0"
export ARV_STREAM_SHARDS=4
node_port() { if (($1 % 2 == 0)); then echo "$IT_REDIS_PORT"; else echo "$P2"; fi; }
rcli() { redis-cli -p "$(node_port "$1")" "${@:2}"; }

K=20 # contents: FNV-1a of "1" .. "20" mod 2 puts 10 on each shard of a node
for ((c = 1; c <= K; c++)); do
    "$IT_BIN/arvctl" content add --id "$c" --project 10 --company 100 >/dev/null
done
it_start collector arv-collector
C="http://127.0.0.1:$IT_PORT_collector"
arv_wait_http "$C/api/health/readiness" 200 10 || it_fail "collector not ready"

# The backlog first, in NDJSON batches of 500, one session per event and K
# contents in turn (the node follows the session, the shard on it the
# content).
it_post_batches "$C" "$N" 0 "$K"
added=0
for s in 0 1 2 3; do
    n=$(rcli "$s" XLEN "$ARV_STREAM:$s")
    ((n > 2000)) || it_fail "shard $s holds $n entries: the sessions and contents did not spread"
    added=$((added + n))
done
[ "$added" = "$N" ] || it_fail "the shards hold $added entries, not $N"
# One content's events on a node are in one shard (one aggregator worker
# writes its rollup rows): shards k and k + 2 hold no content in common, and
# every content is on both nodes (its sessions spread over them).
contents_of() { rcli "$1" XRANGE "$ARV_STREAM:$1" - + | grep -o '"ar_content_id":[0-9]*' | sort -u; }
for k in 0 1; do
    contents_of "$k" >"$IT_TMP/contents.$k"
    contents_of $((k + 2)) >"$IT_TMP/contents.$((k + 2))"
    both=$(comm -12 "$IT_TMP/contents.$k" "$IT_TMP/contents.$((k + 2))" | wc -l)
    [ "$both" = 0 ] || it_fail "$both contents in both shards $k and $((k + 2)) of node $k: routed by session"
    on_node=$(sort -u "$IT_TMP/contents.$k" "$IT_TMP/contents.$((k + 2))" | wc -l)
    [ "$on_node" = "$K" ] || it_fail "node $k holds $on_node of the $K contents"
done

# Reads of 2,500 entries per shard: a piece of 2,000 and one of 500, the
# second sent before the first is decoded. The first aggregator exits right
# after its first COMMIT (before XACK), leaving that write and every other
# worker's read pending; the second claims them after 2 s idle.
pending_all() {
    local s n=0
    for s in 0 1 2 3; do n=$((n + $(rcli "$s" XPENDING "$ARV_STREAM:$s" arv-aggregators | head -1))); done
    echo "$n"
}
raw_rows() { it_psql "SELECT count(*) FROM analytics.ar_view_sessions"; }
# die_after_commit NAME [VAR=VALUE...]: an aggregator that exits right after its
# first COMMIT, before XACK, leaving its entries pending.
die_after_commit() {
    local name=$1 pid i rc=0
    shift
    env ARV_LISTEN="127.0.0.1:$(arv_free_port)" ARV_CONSUMER="$name" "$@" \
        ARV_FAILPOINT=after_commit:1 "$IT_BIN/arv-aggregator" 2>>"$IT_TMP/$name.log" &
    pid=$!
    IT_PIDS+=("$pid")
    for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && it_fail "$name: ARV_FAILPOINT=after_commit:1, no exit within 60 s"
    wait "$pid" || rc=$?
    [ "$rc" = 137 ] || it_fail "$name with ARV_FAILPOINT=after_commit:1 exited $rc"
    (($(pending_all) > 0)) || it_fail "$name: nothing pending after the failpoint"
}
opts=(ARV_BATCH_SIZE=2500 ARV_CLAIM_IDLE_MS=2000)
# Events left in the stream of one shard (ARV_STREAM_SHARDS was 1 when they
# were written): nothing reads them now, and the first aggregator says so.
for k in 1 2 3; do rcli 0 XADD "$ARV_STREAM" '*' v 1 e x >/dev/null; done
die_after_commit agg1 "${opts[@]}"
grep -q "\"event\":\"stream_left_behind\",.*\"stream\":\"$ARV_STREAM\",\"entries\":3," "$IT_TMP/agg1.log" ||
    it_fail "3 entries left in $ARV_STREAM, not warned of: $(grep left_behind "$IT_TMP/agg1.log")"
rcli 0 DEL "$ARV_STREAM" >/dev/null
it_start agg2 arv-aggregator ARV_CONSUMER=agg2 "${opts[@]}"
for ((i = 0; i < 300; i++)); do
    rows=$(raw_rows)
    pending=$(pending_all)
    [ "$rows" = "$N" ] && [ "$pending" = 0 ] && break
    sleep 0.2
done
[ "$rows" = "$N" ] || it_fail "raw rows $rows after the drain, want $N"
[ "$pending" = 0 ] || it_fail "$pending entries still pending"
views=$(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily")
[ "$views" = "$N" ] || it_fail "rollup views $views, want $N"
ids=$(it_psql "SELECT count(DISTINCT event_id) FROM analytics.ar_view_sessions")
[ "$ids" = "$N" ] || it_fail "$ids distinct event ids, want $N"
dead=$(it_psql "SELECT count(*) FROM analytics.dead_letters")
[ "$dead" = 0 ] || it_fail "$dead dead letters"
grep -q '"entries_claimed"' "$IT_TMP/agg2.log" ||
    it_fail "the killed aggregator's entries were not claimed (it may have read nothing)"
! grep -q '"stream_left_behind' "$IT_TMP/agg2.log" || it_fail "warned of a stream left behind that is gone"
it_stop agg2
it_pass "shards: $N events of $K contents over 4 shards on 2 nodes (one shard per content and node), one aggregator exiting between COMMIT and XACK: counted once, nothing pending; entries left in the unsharded stream warned of"

# arvctl dlq replay routes as the collector: events of content nobody
# registered (dead letters, never counted), one named by id (999) and one by
# unique id ("nobody-2") per session, land on the session's node in two shards
# (FNV-1a mod 2 of the two keys differs); each, replayed from a dead letter
# under a new event id, goes to the shard the collector chose.
lens() { for s in 0 1 2 3; do rcli "$s" XLEN "$ARV_STREAM:$s"; done; }
routed=()
for j in 1 2 3 4; do
    sid=$(printf '0000d000-0000-4000-8000-%012x' "$j")
    shards=()
    for content in '"ar_content_id":999' '"ar_content_unique_id":"nobody-2"'; do
        mapfile -t before < <(lens)
        code=$(curl -s -o /dev/null -w '%{http_code}' -A "$IT_VIEWER_UA" -H 'Content-Type: application/json' \
            -d "{$content,\"session_id\":\"$sid\"}" "$C/api/analytics/ar-session")
        [ "$code" = 200 ] || it_fail "route: POST answered $code"
        mapfile -t after < <(lens)
        shard=
        for s in 0 1 2 3; do ((after[s] == before[s] + 1)) && shard=$s; done
        [ -n "$shard" ] || it_fail "route: no shard grew by one: ${before[*]} -> ${after[*]}"
        shards+=("$shard")
        json=$(rcli "$shard" XREVRANGE "$ARV_STREAM:$shard" + - COUNT 1 | sed -n 5p)
        [[ $json == *"$sid"* ]] || it_fail "route: the newest entry of shard $shard is not the event: $json"
        id=$(it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)
                      VALUES ('$ARV_STREAM:$shard', 'route-$j-$shard', 'unknown_content', 'test',
                              regexp_replace(\$p\$$json\$p\$, '\"event_id\":\"[^\"]*\"',
                                             '\"event_id\":\"' || gen_random_uuid() || '\"'))
                      RETURNING id")
        out=$("$IT_BIN/arvctl" dlq replay --id "$id" 2>&1) || it_fail "route: dlq replay --id $id: $out"
        grep -q "^replayed $id -> $ARV_STREAM:$shard " <<<"$out" ||
            it_fail "route: the collector wrote shard $shard, the replay: $out"
    done
    # The node follows the session, the shard on it the content.
    ((shards[0] % 2 == shards[1] % 2 && shards[0] != shards[1])) ||
        it_fail "route: session $j's two contents went to shards ${shards[*]}: not one node, two shards"
    routed+=("${shards[@]}")
done
[ "$(printf '%s\n' "${routed[@]}" | sort -u | wc -l)" = 4 ] || it_fail "route: shards reached: ${routed[*]}"
it_pass "dlq replay routes as the collector: 8 events over the 4 shards, by session to a node, by content to a shard"

# A clean stop in the middle of a backlog leaves nothing pending: while a
# backlog drains, each read is written with the next one sent ahead, and that
# one is read and written before the worker stops. Batches of one read of
# 500, committed as they go. With claims off, an entry left pending would
# never be counted.
N2=$((2 * N))
it_post_batches "$C" "$N2" $((N / 500)) "$K"
it_slow_statements ar_view_sessions INSERT 1 # each write of raw rows 1 s slower
it_start agg3 arv-aggregator ARV_CONSUMER=agg3 ARV_BATCH_SIZE=500 ARV_CLAIM_IDLE_MS=0
for ((i = 0; i < 300; i++)); do
    (($(raw_rows) > N)) && break
    sleep 0.05
done
(($(raw_rows) > N)) || it_fail "agg3 wrote nothing of the second backlog before the stop: nothing tested"
(($(pending_all) > 0)) || it_fail "nothing in flight at the stop: nothing tested"
it_stop agg3
it_slow_statements_off ar_view_sessions
rows=$(raw_rows)
((rows < N + N2)) || it_fail "the stop came after the backlog was drained: nothing tested"
pending=$(pending_all)
[ "$pending" = 0 ] || it_fail "a clean stop left $pending entries pending"
it_start agg4 arv-aggregator ARV_CONSUMER=agg4 ARV_CLAIM_IDLE_MS=0
for ((i = 0; i < 300; i++)); do
    [ "$(raw_rows)" = $((N + N2)) ] && break
    sleep 0.2
done
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily")" = $((N + N2)) ] ||
    it_fail "after the stop and a restart: rollup views $(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily"), want $((N + N2))"
it_stop agg4
it_pass "a clean stop mid-backlog at $rows of $((N + N2)) rows: nothing pending, the rest counted once after a restart"

# Claims run while a backlog drains (reads sent ahead do not hold them off):
# a consumer dies holding entries, then the next aggregator, with a backlog
# behind them, claims them long before that backlog is drained.
total=$((N + N2 + N2))
it_post_batches "$C" "$N2" $(((N + N2) / 500)) "$K"
die_after_commit agg5 ARV_BATCH_SIZE=500
rows0=$(raw_rows)
it_slow_statements ar_view_sessions INSERT 1 # each write of raw rows 1 s slower
it_start agg6 arv-aggregator ARV_CONSUMER=agg6 ARV_BATCH_SIZE=300 ARV_CLAIM_IDLE_MS=2000
for ((i = 0; i < 300; i++)); do
    grep -q '"entries_claimed"' "$IT_TMP/agg6.log" && break
    sleep 0.1
done
rows=$(raw_rows)
grep -q '"entries_claimed"' "$IT_TMP/agg6.log" || it_fail "no claim within 30 s of a backlog"
# The writes are slowed to at most 2,400 rows/s (4 workers, 600 entries a
# write), and a claim is due 1 s after the start: well before half the
# backlog is written (with claims held off by reads sent ahead: after about
# 70% of it).
((rows - rows0 < N2 / 2)) ||
    it_fail "claims waited for the backlog: $((rows - rows0)) of its $((total - rows0)) rows written first"
it_slow_statements_off ar_view_sessions
for ((i = 0; i < 300; i++)); do
    [ "$(raw_rows)" = "$total" ] && [ "$(pending_all)" = 0 ] && break
    sleep 0.2
done
[ "$(raw_rows)" = "$total" ] || it_fail "raw rows $(raw_rows) after claims, want $total"
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily")" = "$total" ] ||
    it_fail "rollup views after claims: $(it_psql "SELECT sum(views) FROM analytics.rollup_content_daily"), want $total"
it_stop agg6
it_pass "a dead consumer's entries claimed mid-backlog (after $((rows - rows0)) of $((total - rows0)) rows), all counted once"

# One busy content: its events take one shard per node, so that one worker
# of each node owns them all. The node's other worker, its own shard caught
# up, reads that shard too: every worker writes some of the backlog. Writes
# of raw rows are slowed by 1 s, so that the owner alone would still be busy
# with its first batches of 1,000 when the other one looks.
total=$((total + N))
it_post_batches "$C" "$N" $((total / 500)) 1
it_slow_statements ar_view_sessions INSERT 1
it_start agg7 arv-aggregator ARV_CONSUMER=agg7 ARV_BATCH_SIZE=1000 ARV_LOG_LEVEL=debug
for ((i = 0; i < 300; i++)); do
    [ "$(raw_rows)" = "$total" ] && [ "$(pending_all)" = 0 ] && break
    sleep 0.2
done
it_slow_statements_off ar_view_sessions
[ "$(raw_rows)" = "$total" ] || it_fail "one content: raw rows $(raw_rows), want $total"
it_stop agg7
for w in 0 1 2 3; do
    grep -q "\"event\":\"batch_written\",.*\"worker\":$w,\"entries\":[1-9]" "$IT_TMP/agg7.log" ||
        it_fail "one content: worker $w wrote no batch of its node's busy shard"
done
it_pass "one busy content in one shard per node: every worker of the node drains it"
it_stop collector

# A shard over ARV_STREAM_HIGH_WATER on a node that then goes down: its length
# is no longer known, so it no longer holds back the events bound for the
# node still up (those for the node down get 503 as Redis unavailable). The
# stale length refused every event as stream_backlog for the whole outage.
for ((k = 0; k < 150; k++)); do echo "XADD hw:1 * v 1 e x"; done | redis-cli -p "$P2" >/dev/null
it_start hw arv-collector ARV_STREAM=hw ARV_STREAM_HIGH_WATER=100
H="http://127.0.0.1:$IT_PORT_hw"
arv_wait_http "$H/api/health/readiness" 503 10 || it_fail "high water: shard hw:1 not seen over the mark"
hw_post() { curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"ar_content_id\":1,\"session_id\":\"$(cat /proc/sys/kernel/random/uuid)\"}" "$H/api/analytics/ar-session"; }
[ "$(hw_post)" = 503 ] || it_fail "high water: an event was taken while a shard is over the mark"
arv_stop_redis "$IT_TMP/redis2" "$P2"
ok=0
for ((i = 0; i < 50 && ok == 0; i++)); do
    sleep 0.1
    for k in 1 2 3 4 5 6 7 8; do [ "$(hw_post)" = 200 ] && ok=$((ok + 1)); done
done
((ok > 0)) || it_fail "high water: a node down kept its shard's old length, refusing every event"
it_stop hw
it_pass "a shard over the high-water mark on a node gone down no longer refuses the events of the node up"
