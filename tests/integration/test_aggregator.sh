#!/usr/bin/env bash
# The aggregator alone, fed straight into the stream: every rollup table equals
# what the raw rows say (sums per key, HLL against the raw sketch), duplicates
# and redelivered entries change nothing, unknown content and undecodable
# entries land in the dead letters, HLL uniques are within 3 sigma of exact.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../../bench/aggregator_checks.sh"
it_setup "${1:?usage: test_aggregator.sh BIN_DIR}"

# --check-config finds a GeoIP database or user-agent rules that are not
# there, which the aggregator would only find at start.
for var in ARV_GEOIP_DB ARV_UA_REGEXES; do
    rc=0; out=$(env "$var=/nonexistent/file" "$IT_BIN/arv-aggregator" --check-config 2>&1) || rc=$?
    [ "$rc" = 1 ] && [[ $out == *"$var: cannot read '/nonexistent/file'"* ]] ||
        it_fail "--check-config with $var missing (exit $rc): $out"
done

N=${IT_EVENTS:-6000}
GEN=$IT_ROOT/bench/aggregator_events.awk
now_ms=$(($(date +%s%3N)))
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id)
         SELECT g, 'uid-' || g, 1000 + g % 12, 100 + g % 5 FROM generate_series(1, 40) g"

# N entries over the last 2.5 days (several days and hours), 1 in 9 a client
# retry, 1 in 13 for unknown content, 1 in 50 undecodable, 1 in 4 by unique id;
# event ids in scattered order, as clients' random ones.
load() {
    LC_ALL=C awk -v n="$N" -v stream="$ARV_STREAM" -v base_ms="$now_ms" -v spread_ms=216000000 \
        -v contents=40 -v dup_every=9 -v unknown_every=13 -v invalid_every=50 -v uid_every=4 \
        -v sessions=$((N / 3)) -v random_ids=1 -v ids_file="$1" -v stats_file="$IT_TMP/stats" -f "$GEN" |
        redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
}
load "$IT_TMP/ids"
distinct=$(sort -u "$IT_TMP/ids" | wc -l)
unknown=$(awk '$1 == "unknown" {print $2}' "$IT_TMP/stats")
invalid=$(awk '$1 == "invalid" {print $2}' "$IT_TMP/stats")

it_start aggregator arv-aggregator ARV_BATCH_SIZE=700 ARV_BATCH_WAIT_MS=50
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "stream not drained"

raw=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
[ "$raw" = "$distinct" ] || it_fail "raw rows $raw, distinct accepted event ids $distinct"
bad=$(agg_check_rollups) || it_fail "rollup check failed to run"
[ "$bad" = 0 ] || it_fail "rollups differ from raw rows: $bad"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'")" = "$unknown" ] ||
    it_fail "unknown_content dead letters: expected $unknown"
# Their payloads were read back from the stream: each is its event's JSON.
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'
              AND (payload::json->>'event_id') ~ '^[0-9a-f-]{36}$'")" = "$unknown" ] ||
    it_fail "unknown_content dead letters without their event's payload"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'invalid_payload'")" = "$invalid" ] ||
    it_fail "invalid_payload dead letters: expected $invalid"
days=$(it_psql "SELECT count(DISTINCT day) FROM analytics.rollup_company_daily")
[ "$days" -ge 3 ] || it_fail "expected events on >= 3 days, got $days"
# Each read's dedupe keys go to event_ids in its primary key's order (event_id,
# then company_id), so that the B-tree inserts touch its pages in order: in the
# table's physical order, the keys descend only where a read (or a page of the
# other worker's) begins. The load's ids are scattered: unsorted reads would
# descend about every other row.
descents=$(it_psql "SELECT count(*) FILTER (WHERE event_id < pe OR (event_id = pe AND company_id < pc))
    FROM (SELECT company_id, event_id, lag(company_id) OVER w AS pc, lag(event_id) OVER w AS pe
          FROM analytics.event_ids WINDOW w AS (ORDER BY ctid)) k")
[ "$descents" -le $((N / 50)) ] || it_fail "event_ids not inserted in key order per read: $descents descents"
# IPs anonymised before storage: IPv4 /24, IPv6 /48 (the load has both).
[ "$(it_psql "SELECT count(DISTINCT family(ip_address)) FROM analytics.ar_view_sessions")" = 2 ] ||
    it_fail "expected IPv4 and IPv6 addresses"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE ip_address <>
      host(network(set_masklen(ip_address, CASE family(ip_address) WHEN 4 THEN 24 ELSE 48 END)))::inet")" = 0 ] ||
    it_fail "an IP address stored with more than its /24 or /48"
# Two worker threads (ARV_WORKERS=2, the default) share the node as consumers
# <name>-0 and <name>-1; the stream has its freshness floor row.
n=$(redis-cli -p "$IT_REDIS_PORT" XINFO CONSUMERS "$ARV_STREAM" arv-aggregators | grep -cE -- '-[01]$')
[ "$n" = 2 ] || it_fail "expected 2 consumers from one aggregator, got $n"
[ "$(it_psql "SELECT count(*) FROM analytics.stream_watermarks WHERE stream = '$ARV_STREAM'
              AND complete_until < now() AND updated_at > now() - interval '5 seconds'")" = 1 ] ||
    it_fail "expected the stream's floor row, current"
it_pass "aggregator: $N entries, $raw rows, every rollup equals the raw rows, IPs anonymised, 2 workers"

# Replaying the same entries (a redelivery of every batch) changes nothing.
before=$(agg_rollup_digest)
load /dev/null
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = "$raw" ] || it_fail "replay added rows"
[ "$(agg_rollup_digest)" = "$before" ] || it_fail "replay changed the rollups"
# Re-sent entries are new stream entries: each is dead-lettered once more.
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters")" = "$((2 * (unknown + invalid)))" ] ||
    it_fail "dead letters after the replay: expected one per entry"
it_pass "replaying every entry changes nothing"

# Each company's daily sketch within 3 sigma (4.9%) of the exact count.
off=$(agg_check_hll) || it_fail "HLL check failed to run"
[ "$off" = 0 ] || it_fail "$off company-days with HLL uniques off by more than 3 sigma"
it_pass "HLL uniques within 3 sigma of COUNT(DISTINCT)"

# Content registered after its first events: those are unknown_content dead
# letters; once registered it is counted at once (unknown keys are never
# cached), by id and by unique id, without restarting anything. Known content
# stays cached: the second round is answered by the cache.
# rows EVENT_ID: how many raw rows event EVENT_ID has (1: written once).
rows() { it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE event_id = '$1'"; }
# readiness NAME: daemon NAME's readiness body and status ("... 503").
readiness() {
    local port=IT_PORT_$1
    curl -s -w ' %{http_code}' "http://127.0.0.1:${!port}/api/health/readiness"
}
# refused NAME COMMAND: a Redis user NAME that may run every command but
# COMMAND (a category: @scripting); prints its REDIS_URL.
refused() {
    redis-cli -p "$IT_REDIS_PORT" ACL SETUSER "$1" on '>pw' '~*' '&*' +@all "-$2" >/dev/null
    echo "redis://$1:pw@127.0.0.1:$IT_REDIS_PORT/0"
}
late_event() { # event_id content_field
    local ts
    ts=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)
    redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e \
        "{\"event_id\":\"$1\",\"session_id\":\"0000b000-0000-4000-8000-000000000001\",$2,\"received_at\":\"$ts\"}" >/dev/null
}
dead0=$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'")
late_event 0000b000-0000-4000-8000-000000000010 '"ar_content_id":7001'
late_event 0000b000-0000-4000-8000-000000000011 '"ar_content_unique_id":"late-uid"'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "late events not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'")" = $((dead0 + 2)) ] ||
    it_fail "events for unregistered content were not dead-lettered"
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id) VALUES
         (7001, NULL, 1000, 100), (7002, 'late-uid', 1000, 100)"
late_event 0000b000-0000-4000-8000-000000000012 '"ar_content_id":7001'
late_event 0000b000-0000-4000-8000-000000000013 '"ar_content_unique_id":"late-uid"'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "late events not drained"
[ "$(it_psql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_content_daily WHERE ar_content_id IN (7001, 7002)")" = 2 ] ||
    it_fail "newly registered content not counted"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw rows after the late content"
hits=$(curl -fsS "http://127.0.0.1:$IT_PORT_aggregator/metrics" | awk '/^aggregator_content_lookups_total\{result="hit"\}/ {print $2}')
[ "${hits:-0}" -gt 0 ] || it_fail "content cache: no hits counted"
it_pass "content registered while running is counted at once (by id and unique id); cache hits $hits"

# Events received long ago or ahead, in one read with a current one: only
# the days that have events get a partition (before: every day back to the
# oldest, clamped at 400), and those outside the days written (400 back, 2
# ahead) become received_out_of_range dead letters at once (before: they
# failed the read, then went entry by entry as db_rejected). The old one is
# within the raw retention (90 days), which would drop its partition later.
parts() { it_psql "SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics.ar_view_sessions'::regclass"; }
parts0=$(parts)
now_s=$(date +%s)
range_event() { # event_id seconds_from_now
    printf 'XADD %s * v 1 e '"'"'{"event_id":"%s","session_id":"0000b000-0000-4000-8000-000000000001","ar_content_id":1,"received_at":"%s"}'"'"'\n' \
        "$ARV_STREAM" "$1" "$(date -u -d "@$((now_s + $2))" +%Y-%m-%dT%H:%M:%S.000Z)"
}
{
    echo MULTI
    range_event 0000b000-0000-4000-8000-000000000094 $((-500 * 86400))
    range_event 0000b000-0000-4000-8000-000000000095 $((-60 * 86400))
    range_event 0000b000-0000-4000-8000-000000000096 $((3 * 86400 + 3600))
    range_event 0000b000-0000-4000-8000-000000000097 0
    echo EXEC
} | redis-cli -p "$IT_REDIS_PORT" >/dev/null
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "out-of-range events not drained"
[ "$(parts)" = $((parts0 + 1)) ] || it_fail "partitions: $parts0 before, $(parts) after (expected one more)"
[ "$(it_psql "SELECT string_agg(right(event_id::text, 2), ' ' ORDER BY event_id) FROM analytics.ar_view_sessions
              WHERE right(event_id::text, 2) IN ('94', '95', '96', '97')
              AND event_id::text LIKE '0000b000-0000-4000-8000-%'")" = "95 97" ] ||
    it_fail "the events within the days written were not both stored"
got=$(it_psql "SELECT string_agg(reason || ' ' || (detail LIKE 'received_at % is outside the days written: 400 days before today (UTC) to 2 after')::text
                                 || ' ' || ((payload::json->>'e')::json->>'event_id'), ', ' ORDER BY id)
               FROM analytics.dead_letters WHERE reason = 'received_out_of_range'")
[ "$got" = "received_out_of_range true 0000b000-0000-4000-8000-000000000094, received_out_of_range true 0000b000-0000-4000-8000-000000000096" ] ||
    it_fail "out-of-range dead letters: $got"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw rows after the out-of-range events"
# Each has an outcome in aggregator_events_total (none had before).
[ "$(curl -fsS "http://127.0.0.1:$IT_PORT_aggregator/metrics" |
    awk '/^aggregator_events_total\{outcome="dead_lettered"\}/ {print $2}')" = 2 ] ||
    it_fail "out-of-range events: not 2 in aggregator_events_total{outcome=\"dead_lettered\"}"
it_pass "events 500 days back and 3 days ahead dead-lettered received_out_of_range; one partition made for the one 60 days back"

# A row PostgreSQL rejects (an operator's CHECK constraint refuses its city)
# makes its batch go one transaction per entry: that entry becomes a
# db_rejected dead letter whose payload is its e field byte for byte (read
# back from the stream: backslashes included); the event read after it is
# counted.
old_e='{"event_id":"0000b000-0000-4000-8000-000000000040","session_id":"0000b000-0000-4000-8000-000000000001","ar_content_id":1,"city":"Back \\ slash \" quote","received_at":"'$(date -u +%Y-%m-%dT%H:%M:%S.000Z)'"}'
it_psql "ALTER TABLE analytics.ar_view_sessions ADD CONSTRAINT it_reject CHECK (city IS DISTINCT FROM 'Back \\ slash \" quote')"
views0=$(it_psql "SELECT sum(views) FROM analytics.rollup_company_daily")
rejected=$(redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e "$old_e")
late_event 0000b000-0000-4000-8000-000000000041 '"ar_content_id":1'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "rejected entry not drained"
it_psql "ALTER TABLE analytics.ar_view_sessions DROP CONSTRAINT it_reject"
[ "$(it_psql "SELECT reason || ' ' || (payload = \$\$$old_e\$\$) FROM analytics.dead_letters WHERE entry_id = '$rejected'")" = \
    "db_rejected true" ] || it_fail "rejected row: $(it_psql "SELECT reason, detail, payload FROM analytics.dead_letters WHERE entry_id = '$rejected'")"
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_company_daily")" = $((views0 + 1)) ] ||
    it_fail "the rejected row's batch neighbour was not counted"
it_pass "a row PostgreSQL rejects: db_rejected dead letter with the exact payload, its neighbour counted"

# A day partition dropped by hand after the aggregator ensured it: the read
# its rows are refused in ("no partition ... found for row") is retried once
# with its days ensured again, not dead-lettered.
tomorrow=$(date -u -d tomorrow +%Y-%m-%d)
it_psql "DROP TABLE analytics.ar_view_sessions_p${tomorrow//-/}"
dead0=$(it_psql "SELECT count(*) FROM analytics.dead_letters")
redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e \
    "{\"event_id\":\"0000b000-0000-4000-8000-000000000045\",\"session_id\":\"0000b000-0000-4000-8000-000000000001\",\"ar_content_id\":1,\"received_at\":\"${tomorrow}T12:00:00.000Z\"}" >/dev/null
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "event of a dropped partition not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters")" = "$dead0" ] ||
    it_fail "event of a dropped partition dead-lettered: $(it_psql "SELECT reason, detail FROM analytics.dead_letters ORDER BY id DESC LIMIT 1")"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions_p${tomorrow//-/}")" = 1 ] ||
    it_fail "event of a dropped partition not in its recreated partition"
it_pass "a day partition dropped while running: made again, its event written, not dead-lettered"

# A worker told to stop while it writes a read entry by entry (after a rejected
# row) leaves the entries not yet written pending, and stops at once; started
# again under the same consumer name, it reads and writes them. The rejected
# entry comes first, so that the rest is an ordinary read the second time.
stop_e='{"event_id":"0000b000-0000-4000-8000-000000000042","session_id":"0000b000-0000-4000-8000-000000000001","ar_content_id":1,"city":"reject-me","received_at":"'$(date -u +%Y-%m-%dT%H:%M:%S.000Z)'"}'
it_psql "ALTER TABLE analytics.ar_view_sessions ADD CONSTRAINT it_reject CHECK (city IS DISTINCT FROM 'reject-me')"
redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM:each" '*' v 1 e "$stop_e" >/dev/null
LC_ALL=C awk -v n=3000 -v stream="$ARV_STREAM:each" -v base_ms="$now_ms" -v contents=40 -v seed=0000f000 \
    -f "$GEN" | redis-cli -p "$IT_REDIS_PORT" --pipe >/dev/null 2>&1 || it_fail "redis-cli --pipe"
rows0=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
it_start each arv-aggregator ARV_STREAM="$ARV_STREAM:each" ARV_WORKERS=1 ARV_CONSUMER=each \
    ARV_CLAIM_IDLE_MS=0 ARV_BATCH_WAIT_MS=50
it_wait_log each '"batch_rejected"' || it_fail "stop while writing entry by entry: no rejected batch"
sleep 0.3
t0=$(date +%s%N)
it_stop each
ms=$((($(date +%s%N) - t0) / 1000000))
left=$(redis-cli -p "$IT_REDIS_PORT" XPENDING "$ARV_STREAM:each" arv-aggregators | head -1)
((ms < 3000)) || it_fail "stop while writing entry by entry took $ms ms"
[ "$left" -gt 0 ] || it_fail "stop while writing entry by entry: nothing left pending (written on after the stop)"
it_start each arv-aggregator ARV_STREAM="$ARV_STREAM:each" ARV_WORKERS=1 ARV_CONSUMER=each \
    ARV_CLAIM_IDLE_MS=0 ARV_BATCH_WAIT_MS=50
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:each" 60 || it_fail "entries left pending at the stop not written"
it_stop each
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = $((rows0 + 3000)) ] ||
    it_fail "stop while writing entry by entry: not every event written once: $(it_psql "SELECT count(*) FROM analytics.ar_view_sessions") rows, expected $((rows0 + 3000)); dead letters: $(it_psql "SELECT string_agg(reason || ':' || left(coalesce(detail, ''), 80), '; ') FROM analytics.dead_letters WHERE stream LIKE '%:each'")"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'db_rejected'
              AND payload::json->>'event_id' = '0000b000-0000-4000-8000-000000000042'")" = 1 ] ||
    it_fail "stop while writing entry by entry: the rejected entry is not one db_rejected dead letter"
it_psql "ALTER TABLE analytics.ar_view_sessions DROP CONSTRAINT it_reject"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw rows after a stop mid-way"
it_pass "stop while writing entry by entry: out in $ms ms, $left entries left pending, written at the next start"

# A content registry whose query fails on a value (a view whose cast fails on
# one of its rows) is an error of the registry, not a rejected row: the
# events wait, pending, none is dead-lettered as unknown content, and they
# are counted once the view answers again.
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id) VALUES
         (7100, NULL, 1000, 100), (7101, NULL, 1000, 100)"
it_psql "CREATE VIEW analytics.content_poisoned AS SELECT id, unique_id,
         (CASE WHEN id = 7101 THEN 'not a number' ELSE project_id::text END)::bigint AS project_id,
         company_id FROM analytics.ar_content"
dead0=$(it_psql "SELECT coalesce(max(id), 0) FROM analytics.dead_letters")
it_start registry arv-aggregator ARV_STREAM="$ARV_STREAM:registry" \
    ARV_CONTENT_RELATION=analytics.content_poisoned ARV_BATCH_WAIT_MS=50
ARV_STREAM="$ARV_STREAM:registry" late_event 0000b000-0000-4000-8000-000000000060 '"ar_content_id":7100'
ARV_STREAM="$ARV_STREAM:registry" late_event 0000b000-0000-4000-8000-000000000061 '"ar_content_id":7101'
it_wait_log registry 22P02 || it_fail "failing registry: the view's error was never logged"
sleep 1
dead_since() { it_psql "SELECT coalesce(string_agg(reason, ','), '') FROM analytics.dead_letters WHERE id > $dead0"; }
[ -z "$(dead_since)" ] || it_fail "failing registry: events dead-lettered ($(dead_since))"
it_psql "CREATE OR REPLACE VIEW analytics.content_poisoned AS
         SELECT id, unique_id, project_id, company_id FROM analytics.ar_content"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:registry" 30 || it_fail "failing registry: events not written once it answered"
it_stop registry
[ "$(it_psql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_content_daily WHERE ar_content_id IN (7100, 7101)")" = 2 ] ||
    it_fail "failing registry: its events not counted once it answered"
[ -z "$(dead_since)" ] || it_fail "failing registry: events dead-lettered ($(dead_since))"
it_psql "DROP VIEW analytics.content_poisoned"
it_pass "a registry failing on a value: events wait, none dead-lettered, counted once it answers"

it_stop aggregator

# Poison entries: an entry a dead consumer left pending after 10 deliveries
# (ARV_MAX_DELIVERIES) is claimed into the dead letters, not written; one with
# fewer deliveries is claimed and written as usual.
poison_event() { # event_id
    redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e \
        "{\"event_id\":\"$1\",\"session_id\":\"0000b000-0000-4000-8000-000000000002\",\"ar_content_id\":1,\"received_at\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\"}"
}
poisoned=$(poison_event 0000b000-0000-4000-8000-000000000030)
retried=$(poison_event 0000b000-0000-4000-8000-000000000031)
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators ghost COUNT 2 STREAMS "$ARV_STREAM" '>' >/dev/null
redis-cli -p "$IT_REDIS_PORT" XCLAIM "$ARV_STREAM" arv-aggregators ghost 0 "$poisoned" RETRYCOUNT 10 JUSTID >/dev/null
redis-cli -p "$IT_REDIS_PORT" XCLAIM "$ARV_STREAM" arv-aggregators ghost 0 "$retried" RETRYCOUNT 9 JUSTID >/dev/null
it_start claimer arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=300
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "pending entries not claimed"
[ "$(it_psql "SELECT reason || ' ' || detail FROM analytics.dead_letters WHERE entry_id = '$poisoned'")" = \
    "max_deliveries delivered 10 times" ] || it_fail "entry delivered 10 times not dead-lettered"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE entry_id = '$retried'")" = 0 ] ||
    it_fail "entry delivered 9 times dead-lettered"
[ "$(it_psql "SELECT string_agg(event_id::text, ' ') FROM analytics.ar_view_sessions
              WHERE event_id::text LIKE '0000b000-0000-4000-8000-00000000003_'")" = \
    0000b000-0000-4000-8000-000000000031 ] || it_fail "claimed entries: wrong raw rows"
# Its payload is the entry's fields ({"v":"1","e":...}): `arvctl dlq replay`
# sends the event in e again, counted once however often it is replayed.
dl=$(it_psql "SELECT id FROM analytics.dead_letters WHERE entry_id = '$poisoned'")
for k in 1 2; do
    "$IT_BIN/arvctl" dlq replay --id "$dl" >>"$IT_TMP/replay.log" 2>&1 || it_fail "dlq replay --id $dl"
done
[ "$(grep -c "^1 replayed, 0 skipped" "$IT_TMP/replay.log")" = 2 ] ||
    it_fail "max_deliveries not replayed twice: $(cat "$IT_TMP/replay.log")"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "replayed entries not drained"
[ "$(rows 0000b000-0000-4000-8000-000000000030)" = 1 ] ||
    it_fail "the replayed max_deliveries event was not counted once"
it_stop claimer
it_pass "claimed entries: delivered 10 times -> max_deliveries dead letter (replayed: counted once), 9 times -> written"

# The same under a fixed consumer name: an aggregator restarted as the owner
# (ARV_CONSUMER) reads its own pending entries first, and dead-letters the one
# already delivered 10 times instead of reading it once more (claims off: no
# other path could).
poisoned=$(poison_event 0000b000-0000-4000-8000-000000000032)
retried=$(poison_event 0000b000-0000-4000-8000-000000000033)
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators owner COUNT 2 STREAMS "$ARV_STREAM" '>' >/dev/null
redis-cli -p "$IT_REDIS_PORT" XCLAIM "$ARV_STREAM" arv-aggregators owner 0 "$poisoned" RETRYCOUNT 10 JUSTID >/dev/null
redis-cli -p "$IT_REDIS_PORT" XCLAIM "$ARV_STREAM" arv-aggregators owner 0 "$retried" RETRYCOUNT 9 JUSTID >/dev/null
it_start owner arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=0 ARV_WORKERS=1 ARV_CONSUMER=owner
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "own pending entries not recovered"
[ "$(it_psql "SELECT reason || ' ' || detail FROM analytics.dead_letters WHERE entry_id = '$poisoned'")" = \
    "max_deliveries delivered 10 times" ] || it_fail "own entry delivered 10 times not dead-lettered"
[ "$(it_psql "SELECT string_agg(event_id::text, ' ') FROM analytics.ar_view_sessions
              WHERE event_id::text IN ('0000b000-0000-4000-8000-000000000032', '0000b000-0000-4000-8000-000000000033')")" = \
    0000b000-0000-4000-8000-000000000033 ] || it_fail "own pending entries: wrong raw rows"
it_stop owner
it_pass "own pending entries after a restart: delivered 10 times -> max_deliveries dead letter, 9 times -> written"

# An entry dead-lettered by a write that committed but never acknowledged
# (the process died in between) comes back to its owner. Dead letters go
# straight into their table; that one's unique violation sends the read the
# slow way, which keeps the dead letter already there and still writes the
# read's other dead letter and its new event.
late_event 0000b000-0000-4000-8000-000000000034 '"ar_content_id":999999999'
late_event 0000b000-0000-4000-8000-000000000035 '"ar_content_id":1'
late_event 0000b000-0000-4000-8000-000000000036 '"ar_content_id":999999999'
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators owner2 COUNT 3 STREAMS "$ARV_STREAM" '>' >/dev/null
pending=$(redis-cli -p "$IT_REDIS_PORT" XPENDING "$ARV_STREAM" arv-aggregators - + 3 owner2)
gone=$(sed -n 1p <<<"$pending") fresh=$(sed -n 9p <<<"$pending")
it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)
         VALUES ('$ARV_STREAM', '$gone', 'unknown_content', 'written before the crash', '{}')" >/dev/null
it_start owner2 arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=0 ARV_WORKERS=1 \
    ARV_CONSUMER=owner2 ARV_LOG_LEVEL=debug
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "redelivered dead letter not written"
m=$(curl -fsS "http://127.0.0.1:$IT_PORT_owner2/metrics")
it_stop owner2
[ "$(it_psql "SELECT count(*) || ' ' || min(detail) FROM analytics.dead_letters WHERE entry_id = '$gone'")" = \
    "1 written before the crash" ] || it_fail "a redelivered entry's dead letter written again"
[ "$(it_psql "SELECT count(*) || ' ' || min(reason) FROM analytics.dead_letters WHERE entry_id = '$fresh'")" = \
    "1 unknown_content" ] || it_fail "the other dead letter of the read not written once"
grep -q '^aggregator_dead_letters_total 1$' <<<"$m" &&
    grep -q '^aggregator_events_total{outcome="unknown_content"} 2$' <<<"$m" ||
    it_fail "metrics: $(grep -E '^aggregator_(dead_letters|events)_total' <<<"$m")"
[ "$(rows 0000b000-0000-4000-8000-000000000035)" = 1 ] || it_fail "the event read with it not written once"
grep -q '"batch_written".*"ids_slow":true' "$IT_TMP/owner2.log" ||
    it_fail "the write did not take the slow way: $(grep '"batch_written"' "$IT_TMP/owner2.log")"
grep -q '"write_abandoned"\|"batch_rejected"' "$IT_TMP/owner2.log" && it_fail "the write was abandoned"
it_pass "a dead-lettered entry redelivered after COMMIT: its dead letter kept once, the read's other dead letter and event written, counted once"

# Where transactions default to REPEATABLE READ (an ALTER DATABASE, or here
# PGOPTIONS), a write whose merge waited for a rollup row another
# transaction updated meanwhile still merges into it: the aggregator's
# sessions run READ COMMITTED. (Before, the merge failed to serialize, 40001,
# and the write was rolled back and retried: a 200,000-event drain ran at a
# third of its rate.)
late_event 0000b000-0000-4000-8000-000000000037 '"ar_content_id":1'
it_start rr arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_WORKERS=1 ARV_CONSUMER=rr \
    PGOPTIONS='-c default_transaction_isolation=repeatable\ read'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "REPEATABLE READ: first event not drained"
company1=$(it_psql "SELECT company_id FROM analytics.ar_content WHERE id = 1")
today_row="company_id = $company1 AND day = (now() AT TIME ZONE 'UTC')::date"
[ "$(it_psql "SELECT count(*) FROM analytics.rollup_company_daily WHERE $today_row")" = 1 ] ||
    it_fail "REPEATABLE READ: no company row for today"
psql "$DATABASE_URL" -tAq -c "BEGIN; UPDATE analytics.rollup_company_daily SET views = views WHERE $today_row;
    SELECT pg_sleep(2); COMMIT" >/dev/null &
holder=$!
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; UPDATE analytics.rollup_company_daily%'
                  AND state = 'active'")" = 1 ] && break
    sleep 0.1
done
[ "$i" -lt 50 ] || it_fail "REPEATABLE READ: the other transaction never held the row"
late_event 0000b000-0000-4000-8000-000000000038 '"ar_content_id":1'
wait "$holder"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "REPEATABLE READ: second event not drained"
it_stop rr
[ "$(rows 0000b000-0000-4000-8000-000000000038)" = 1 ] || it_fail "REPEATABLE READ: the event not written once"
grep -q '"sqlstate":"40001"' "$IT_TMP/rr.log" &&
    it_fail "REPEATABLE READ: a write failed to serialize: $(grep -m1 40001 "$IT_TMP/rr.log")"
[ "$(agg_check_rollups)" = 0 ] || it_fail "REPEATABLE READ: rollups differ from raw"
it_pass "transactions that default to REPEATABLE READ: a merge that waited for a row merges into it, nothing retried"

# Forgetting idle consumers (a script) is housekeeping: a Redis user that may
# not run scripts still gets its claimed entries written, with a warning.
url=$(refused noscript @scripting)
orphan=$(poison_event 0000b000-0000-4000-8000-000000000032)
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators ghost COUNT 1 STREAMS "$ARV_STREAM" '>' >/dev/null
it_start noscript arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=300 \
    REDIS_URL="$url"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "claimed entry not written without scripts"
it_stop noscript
[ "$(rows 0000b000-0000-4000-8000-000000000032)" = 1 ] ||
    it_fail "the entry claimed by a user without scripts was not written"
grep -q '"consumers_not_forgotten"' "$IT_TMP/noscript.log" || it_fail "no consumers_not_forgotten warning"
it_pass "claims without the right to run scripts: entry $orphan written, forgetting consumers only warned"

# A rollup row PostgreSQL can no longer merge into (its sketch set by hand to
# another log2m: hll_union refuses it, SQLSTATE class 22) rejects the write at
# its merge: the read is then written entry by entry, the event of that row
# becomes a db_rejected dead letter, the other is counted, and the stream
# drains. Retried as it was, the write failed for ever. (A database of its
# own: the row stays broken.)
it_psql "CREATE DATABASE arv_poison"
poison_url="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_poison"
DATABASE_URL=$poison_url "$IT_BIN/arvctl" migrate >>"$IT_TMP/migrate.log" 2>&1 || it_fail "migrate arv_poison"
psql "$poison_url" -q -c "INSERT INTO analytics.ar_content (id, project_id, company_id)
                          VALUES (1, 1000, 100), (2, 1000, 100)"
it_start poison arv-aggregator DATABASE_URL="$poison_url" ARV_STREAM="$ARV_STREAM:poison" \
    ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50
ARV_STREAM="$ARV_STREAM:poison" late_event 0000b000-0000-4000-8000-000000000080 '"ar_content_id":2'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:poison" 30 || it_fail "poisoned rollup row: first event not drained"
psql "$poison_url" -q -c "UPDATE analytics.rollup_content_daily SET sessions = hll_empty(11, 5)
                          WHERE ar_content_id = 2"
ARV_STREAM="$ARV_STREAM:poison" late_event 0000b000-0000-4000-8000-000000000081 '"ar_content_id":2'
ARV_STREAM="$ARV_STREAM:poison" late_event 0000b000-0000-4000-8000-000000000082 '"ar_content_id":1'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:poison" 30 ||
    it_fail "poisoned rollup row: the write it rejects is retried for ever"
it_stop poison
[ "$(psql "$poison_url" -tAq -c "SELECT string_agg(right(event_id::text, 2), ' ' ORDER BY event_id)
      FROM analytics.ar_view_sessions")" = "80 82" ] ||
    it_fail "poisoned rollup row: expected events 80 and 82 written"
[ "$(psql "$poison_url" -tAq -c "SELECT reason || ' ' || (payload::json->>'event_id')
      FROM analytics.dead_letters")" = "db_rejected 0000b000-0000-4000-8000-000000000081" ] ||
    it_fail "poisoned rollup row: expected event 81 as the one db_rejected dead letter"
grep -q '"batch_rejected"' "$IT_TMP/poison.log" || it_fail "poisoned rollup row: no batch_rejected logged"
it_pass "a write PostgreSQL rejects at its merge: entry by entry, one db_rejected dead letter, the rest counted"

# An error reply to a read other than NOGROUP (here NOPERM: a user that may
# not XREADGROUP) is the read's failure, not an outage: logged as
# stream_read_failed, the connection kept, Redis not reported unreachable;
# readiness 503 (nothing is consumed) until reads are allowed again.
url=$(refused noread xreadgroup)
it_start noread arv-aggregator ARV_STREAM="$ARV_STREAM:noread" ARV_BATCH_WAIT_MS=50 \
    REDIS_URL="$url"
it_wait_log noread '"stream_read_failed".*NOPERM' ||
    it_fail "a read refused (NOPERM): no stream_read_failed: $(tail -3 "$IT_TMP/noread.log")"
ready=$(readiness noread)
[[ $ready == *'reads refused'*' 503' ]] || it_fail "readiness while reads are refused: $ready"
# Still refused 2 s on: the reads of pending entries that XRANGE allows are no
# resumption, and the retries back off (100 ms doubling to 5 s, less up to
# half for jitter: a few per worker, not 10 a second).
sleep 2
[ "$(grep -c '"stream_reads_resumed"' "$IT_TMP/noread.log")" = 0 ] ||
    it_fail "reads refused: stream_reads_resumed logged $(grep -c '"stream_reads_resumed"' "$IT_TMP/noread.log") times while still refused"
[ "$(grep -c '"stream_read_failed"' "$IT_TMP/noread.log")" -le 24 ] ||
    it_fail "reads refused: $(grep -c '"stream_read_failed"' "$IT_TMP/noread.log") failed reads in 2 s: no backoff"
redis-cli -p "$IT_REDIS_PORT" ACL SETUSER noread +xreadgroup >/dev/null
it_wait_log noread '"stream_reads_resumed"' || it_fail "reads allowed again: not resumed"
# Each worker reads again after its own backoff (at most 5 s).
arv_wait_http "http://127.0.0.1:$IT_PORT_noread/api/health/readiness" 200 15 ||
    it_fail "readiness after reads resumed"
it_stop noread
! grep -q '"redis_unavailable"' "$IT_TMP/noread.log" ||
    it_fail "a read refused (NOPERM) was reported as Redis unreachable"
it_pass "a read refused by Redis (NOPERM): stream_read_failed and readiness 503, not an outage; 200 once allowed"

# XACK refused (a user that may not XACK): the write is committed, its
# entries stay pending, and the worker reads nothing more while it retries
# the acknowledgement (stream_ack_failed, readiness 503); allowed again, the
# entries are acknowledged at once, not claimed and written again minutes
# later. Before, the error was logged as Redis unreachable, the worker read
# and wrote on, and every entry stayed pending.
s="$ARV_STREAM:noack"
url=$(refused noack xack)
ARV_STREAM=$s late_event 0000b000-0000-4000-8000-000000000083 '"ar_content_id":1'
it_start noack arv-aggregator ARV_STREAM="$s" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_CLAIM_IDLE_MS=600000 REDIS_URL="$url"
it_wait_log noack '"stream_ack_failed".*NOPERM' ||
    it_fail "XACK refused: no stream_ack_failed: $(tail -3 "$IT_TMP/noack.log")"
[ "$(rows 0000b000-0000-4000-8000-000000000083)" = 1 ] || it_fail "XACK refused: the event not written"
ready=$(readiness noack)
[[ $ready == *'acknowledgements refused'*' 503' ]] || it_fail "readiness while XACK is refused: $ready"
ARV_STREAM=$s late_event 0000b000-0000-4000-8000-000000000084 '"ar_content_id":1'
sleep 1
[ "$(rows 0000b000-0000-4000-8000-000000000084)" = 0 ] ||
    it_fail "XACK refused: the worker read and wrote on"
[ "$(redis-cli -p "$IT_REDIS_PORT" XPENDING "$s" arv-aggregators | head -1)" = 1 ] ||
    it_fail "XACK refused: expected the one written entry pending"
redis-cli -p "$IT_REDIS_PORT" ACL SETUSER noack +xack >/dev/null
agg_wait_drained "$IT_REDIS_PORT" "$s" 15 || it_fail "XACK allowed again: the stream not drained"
[ "$(rows 0000b000-0000-4000-8000-000000000083)$(rows 0000b000-0000-4000-8000-000000000084)" = 11 ] ||
    it_fail "XACK allowed again: expected each event written once"
arv_wait_http "http://127.0.0.1:$IT_PORT_noack/api/health/readiness" 200 15 ||
    it_fail "readiness after XACK allowed again"
it_wait_log noack '"stream_acks_resumed"' || it_fail "XACK allowed again: no stream_acks_resumed"
it_stop noack
! grep -q '"redis_unavailable"' "$IT_TMP/noack.log" ||
    it_fail "XACK refused (NOPERM) was reported as Redis unreachable"
it_pass "XACK refused by Redis (NOPERM): stream_ack_failed, readiness 503, no further reads; acknowledged once allowed"

# XRANGE refused (a user that may not XRANGE), met when the worker reads its
# own pending entries again (after a failed read: ARV_FAILPOINT=read_error:1)
# by XPENDING and XRANGE: the read's failure, as for XREADGROUP above, the
# connection kept and the retries backing off. Before, the error closed the
# connection, and the worker reconnected (and reset its backoff) every 100
# to 200 ms without progress.
s="$ARV_STREAM:noxrange"
url=$(refused noxrange xrange)
ARV_STREAM=$s late_event 0000b000-0000-4000-8000-000000000085 '"ar_content_id":1'
ARV_STREAM=$s late_event 0000b000-0000-4000-8000-000000000086 '"ar_content_id":1'
it_start noxrange arv-aggregator ARV_STREAM="$s" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_FAILPOINT=read_error:1 REDIS_URL="$url"
it_wait_log noxrange '"stream_read_failed".*XRANGE.*NOPERM' ||
    it_fail "XRANGE refused: no stream_read_failed: $(tail -3 "$IT_TMP/noxrange.log")"
ready=$(readiness noxrange)
[[ $ready == *'reads refused'*' 503' ]] || it_fail "readiness while XRANGE is refused: $ready"
sleep 2
[ "$(grep -c '"redis_connected"' "$IT_TMP/noxrange.log")" = 1 ] ||
    it_fail "XRANGE refused: connected $(grep -c '"redis_connected"' "$IT_TMP/noxrange.log") times in 2 s"
[ "$(grep -c '"stream_read_failed"' "$IT_TMP/noxrange.log")" -le 12 ] ||
    it_fail "XRANGE refused: $(grep -c '"stream_read_failed"' "$IT_TMP/noxrange.log") failed reads in 2 s: no backoff"
redis-cli -p "$IT_REDIS_PORT" ACL SETUSER noxrange +xrange >/dev/null
agg_wait_drained "$IT_REDIS_PORT" "$s" 15 || it_fail "XRANGE allowed again: the stream not drained"
[ "$(rows 0000b000-0000-4000-8000-000000000085)$(rows 0000b000-0000-4000-8000-000000000086)" = 11 ] ||
    it_fail "XRANGE allowed again: expected each event written once"
it_stop noxrange
! grep -q '"redis_unavailable"' "$IT_TMP/noxrange.log" ||
    it_fail "XRANGE refused (NOPERM) was reported as Redis unreachable"
it_pass "XRANGE refused by Redis (NOPERM) in a read of own pending entries: stream_read_failed, backoff, the connection kept; written once allowed"

# The group destroyed and made again (XGROUP DESTROY, then another
# aggregator's NOGROUP recovery) between the trim's XINFO GROUPS and its
# XPENDING: the old group's last delivered id with the new group's empty
# pending list trimmed away the entries the old group had delivered and not
# acknowledged, before the new group read them (lost). Now XINFO's pending
# count with no pending entry to show skips that pass's trim and floor.
s="$ARV_STREAM:regroup"
redis-cli -p "$IT_REDIS_PORT" XGROUP CREATE "$s" arv-aggregators 0 MKSTREAM >/dev/null
for id in 46 47 48; do
    ARV_STREAM=$s late_event "0000b000-0000-4000-8000-0000000000$id" '"ar_content_id":1'
done
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators ghost COUNT 10 STREAMS "$s" '>' >/dev/null
it_start regroup arv-aggregator ARV_STREAM="$s" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_FAILPOINT=stats_pause:3000
it_wait_log regroup '"failpoint_pause"' || it_fail "regroup: no failpoint_pause"
redis-cli -p "$IT_REDIS_PORT" XGROUP DESTROY "$s" arv-aggregators >/dev/null
redis-cli -p "$IT_REDIS_PORT" XGROUP CREATE "$s" arv-aggregators 0 >/dev/null
for ((i = 0; i < 100; i++)); do
    [ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE event_id IN
          ('0000b000-0000-4000-8000-000000000046', '0000b000-0000-4000-8000-000000000047',
           '0000b000-0000-4000-8000-000000000048')")" = 3 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] ||
    it_fail "regroup: the old group's unacknowledged entries were not written (stream length $(redis-cli -p "$IT_REDIS_PORT" XLEN "$s"))"
it_stop regroup
it_pass "the group made again between a trim's XINFO and XPENDING: its pending entries kept, then written"

# The stream gauges' and trim's commands refused (a user without XINFO): a
# warning once and aggregator_redis_errors_total, reads go on. With PostgreSQL
# unreachable the gauges still follow the stream.
url=$(refused noinfo xinfo)
for k in 1 2 3; do redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM:nopg" '*' v 1 e '{}' >/dev/null; done
it_start noinfo arv-aggregator ARV_STREAM="$ARV_STREAM:noinfo" ARV_BATCH_WAIT_MS=50 \
    REDIS_URL="$url"
it_start nopg arv-aggregator ARV_STREAM="$ARV_STREAM:nopg" \
    DATABASE_URL="postgresql://arv@127.0.0.1:$(arv_free_port)/arv?connect_timeout=1"
it_wait_log noinfo '"stream_stats_failed".*NOPERM' ||
    it_fail "stats refused: no stream_stats_failed: $(tail -3 "$IT_TMP/noinfo.log")"
errors=$(curl -fsS "http://127.0.0.1:$IT_PORT_noinfo/metrics" | awk '/^aggregator_redis_errors_total / {print $2}')
[ "${errors:-0}" -ge 1 ] || it_fail "stats refused: aggregator_redis_errors_total ${errors:-none}"
arv_wait_http "http://127.0.0.1:$IT_PORT_noinfo/api/health/readiness" 200 15 ||
    it_fail "stats refused: reads go on, readiness should be 200"
length=""
for _ in $(seq 50); do
    length=$(curl -fsS "http://127.0.0.1:$IT_PORT_nopg/metrics" | awk '/^aggregator_stream_length\{/ {print $2}')
    [ "$length" = 3 ] && break
    sleep 0.1
done
[ "$length" = 3 ] || it_fail "PostgreSQL unreachable: stream length gauge '${length}', expected 3"
sleep 1.5 # more stats passes, all refused: still one warning
[ "$(grep -c '"stream_stats_failed"' "$IT_TMP/noinfo.log")" = 1 ] ||
    it_fail "stats refused: warned $(grep -c '"stream_stats_failed"' "$IT_TMP/noinfo.log") times, not once"
it_stop noinfo
it_stop nopg
it_pass "stream stats refused: warned once, counted; PostgreSQL unreachable: the gauges follow the stream"

# A server that answers but refuses writes (read-only, 25006): readiness says
# it answers with errors (before: "unreachable"); once writable again, the
# event is written.
it_start readonly arv-aggregator ARV_STREAM="$ARV_STREAM:ro" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50
arv_wait_http "http://127.0.0.1:$IT_PORT_readonly/api/health/readiness" 200 10 || it_fail "read-only: not ready"
it_psql "ALTER SYSTEM SET default_transaction_read_only = on" >/dev/null
it_psql "SELECT pg_reload_conf()" >/dev/null
sleep 0.2
ARV_STREAM="$ARV_STREAM:ro" late_event 0000b000-0000-4000-8000-000000000093 '"ar_content_id":1'
body=""
for ((i = 0; i < 100; i++)); do
    body=$(curl -sS "http://127.0.0.1:$IT_PORT_readonly/api/health/readiness")
    [[ $body == *'"postgresql":"answers with errors'* ]] && break
    sleep 0.1
done
PGOPTIONS="-c default_transaction_read_only=off" it_psql "ALTER SYSTEM RESET default_transaction_read_only" >/dev/null
it_psql "SELECT pg_reload_conf()" >/dev/null
[ "$i" -lt 100 ] || it_fail "read-only server: readiness $body"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:ro" 30 || it_fail "read-only server: not written once writable"
[ "$(rows 0000b000-0000-4000-8000-000000000093)" = 1 ] ||
    it_fail "read-only server: the event was not written once writable"
it_stop readonly
it_pass "a read-only server: readiness says it answers with errors; the event written once writable"

# A read that fails after its entries were delivered (as an error reply to a
# later piece would; here ARV_FAILPOINT=read_error:1) leaves them pending on
# this consumer: it reads them again at once, even with claims off.
LC_ALL=C awk -v n=300 -v stream="$ARV_STREAM:fp" -v base_ms="$now_ms" -v contents=40 -v seed=0000c000 \
    -f "$GEN" | redis-cli -p "$IT_REDIS_PORT" --pipe >/dev/null 2>&1 || it_fail "redis-cli --pipe"
rows0=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
it_start fp arv-aggregator ARV_STREAM="$ARV_STREAM:fp" ARV_WORKERS=1 ARV_CLAIM_IDLE_MS=0 \
    ARV_BATCH_WAIT_MS=50 ARV_FAILPOINT=read_error:1
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:fp" 20 || it_fail "the failed read's entries left pending"
grep -q '"stream_read_failed".*failpoint read_error' "$IT_TMP/fp.log" || it_fail "the failpoint did not fire"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = $((rows0 + 300)) ] ||
    it_fail "the failed read's 300 events not all written"
it_stop fp
it_pass "a read that failed after delivery: its entries read again and written"

# Memory per read is bounded in bytes too, for reads and claims alike: a
# backlog of 2 x N new entries plus N pending on a dead consumer (about 350
# bytes of raw row each, 2,000 per piece), with ARV_BATCH_MAX_BYTES=1 MiB: every
# read stops after its second piece (4,000 entries), and a write (one
# transaction of ARV_BATCH_SIZE=8000) takes two reads, each written as it comes.
# Claims (a write each) continue after the last id of the piece before. A row
# PostgreSQL rejects in the second read of a write (after the new entries)
# rolls the whole write back: its entries are read again as this consumer's
# pending entries, and the rejected one becomes a dead letter. (A write stays
# open at most half of ARV_CLAIM_IDLE_MS: 1 s here.)
rows0=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
load /dev/null
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators ghost COUNT "$N" STREAMS "$ARV_STREAM" '>' >/dev/null
load /dev/null
load /dev/null
it_psql "ALTER TABLE analytics.ar_view_sessions ADD CONSTRAINT it_reject CHECK (city IS DISTINCT FROM 'Back \\ slash \" quote')"
rejected=$(redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e "${old_e/00000040/00000042}")
it_start bytes arv-aggregator ARV_LOG_LEVEL=debug ARV_WORKERS=1 ARV_BATCH_SIZE=8000 \
    ARV_BATCH_MAX_BYTES=1048576 ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=2000
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "backlog not drained"
# "entries reads" of every write
writes=$(agg_batch_fields "$IT_TMP/bytes.log" entries reads)
awk '$1 > 4000 * $2 { bad++ } $2 >= 2 && $1 > 4000 { multi++ } END { exit !(NR > 0 && !bad && multi) }' <<<"$writes" ||
    it_fail "ARV_BATCH_MAX_BYTES: expected reads of at most 4,000 entries and a write of several; writes (entries reads): $(tr '\n' ';' <<<"$writes")"
grep -q '"write_abandoned"' "$IT_TMP/bytes.log" || it_fail "the write with a rejected row was not abandoned"
[ "$(it_psql "SELECT reason FROM analytics.dead_letters WHERE entry_id = '$rejected'")" = db_rejected ] ||
    it_fail "the rejected row of a write's second read is not a db_rejected dead letter"
claims=$(grep '"entries_claimed"' "$IT_TMP/bytes.log" | sed 's/.*"count":\([0-9]*\).*/\1/' | tr '\n' ' ')
[ "$(tr ' ' '\n' <<<"$claims" | awk '{s += $1} END {print s}')" = "$N" ] && grep -qw 4000 <<<"$claims" ||
    it_fail "claims in pieces: expected $N entries claimed, 4000 at a time; got: $claims"
it_stop bytes
it_psql "ALTER TABLE analytics.ar_view_sessions DROP CONSTRAINT it_reject"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = "$rows0" ] ||
    it_fail "the backlog (a replay) added rows"
it_pass "ARV_BATCH_MAX_BYTES: 3 x $N entries (a third claimed: $claims) in reads of at most 4,000; writes (entries reads): $(tr '\n' ';' <<<"$writes"); a rejected row abandons its write, then is dead-lettered"

# Every read of a write may hold event ids seen before (a client retry after
# the first try was committed): such a read takes the dedupe's slow way, which
# must judge that read's own ids only. The keys of a write's first read once
# stayed for its second read, whose entries at the same indexes were then
# skipped as duplicates: up to a whole read lost. Here 4 events are committed
# first, then 4 reads of 4,000 entries (2 writes of 2 reads, as above) each
# retry one of them among 3,999 new events: every new one must be counted.
gen() { # n first: events from index `first` on, ids apart from the loads above
    LC_ALL=C awk -v n="$1" -v first="$2" -v stream="$ARV_STREAM" -v base_ms="$now_ms" \
        -v spread_ms=216000000 -v contents=40 -v seed=0000d000 -f "$GEN"
}
slow_env=(ARV_LOG_LEVEL=debug ARV_WORKERS=1 ARV_BATCH_SIZE=8000 ARV_BATCH_MAX_BYTES=1048576
    ARV_BATCH_WAIT_MS=50)
gen 4 900000 | redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
it_start slow arv-aggregator "${slow_env[@]}"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "the first tries not drained"
it_stop slow
rows0=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
for k in 0 1 2 3; do
    gen 3999 $((910000 + 10000 * k))
    gen 1 $((900000 + k))
done | redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
it_start slow arv-aggregator "${slow_env[@]}"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "the retries not drained"
it_stop slow
slow=$(grep '"batch_written"' "$IT_TMP/slow.log" | grep -c '"reads":2,.*"ids_slow":true' || true)
[ "$slow" -ge 1 ] || it_fail "dedupe: no write of two reads took the slow way: $(grep -c batch_written "$IT_TMP/slow.log") writes"
added=$(($(it_psql "SELECT count(*) FROM analytics.ar_view_sessions") - rows0))
[ "$added" = $((4 * 3999)) ] || it_fail "dedupe: $added raw rows added, expected $((4 * 3999)) (the retries' reads lost events)"
[ "$(agg_check_rollups)" = 0 ] || it_fail "dedupe: rollups differ from raw rows"
it_pass "dedupe: reads each with a retry, $slow write(s) of two such reads: all $added new events counted, no retry"

# Clients choose breakdown values, so a write's rollup deltas (its groups and
# interned values) grow with their variety, not with its entries: 12,000
# events each naming a city of its own (128 bytes) are 12,000 values and as
# many breakdown groups. With ARV_BATCH_DELTAS_MAX_BYTES=1 MiB a write ends
# once its deltas take that (a few thousand such cities); without the bound
# the backlog was one write. Every event is counted, every city a row.
# drain_cities NAME SEED [awk -v ...]: those events, drained by aggregator NAME.
drain_cities() {
    local name=$1 seed=$2
    shift 2
    LC_ALL=C awk -v n=12000 -v stream="$ARV_STREAM" -v base_ms="$now_ms" -v spread_ms=216000000 \
        -v contents=40 -v seed="$seed" -v distinct_cities=1 "$@" -f "$GEN" |
        redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
    it_start "$name" arv-aggregator ARV_LOG_LEVEL=debug ARV_WORKERS=1 ARV_BATCH_MAX_BYTES=1048576 \
        ARV_BATCH_DELTAS_MAX_BYTES=1048576 ARV_BATCH_WAIT_MS=50
    agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "$name: not drained"
    it_stop "$name"
}
rows0=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
drain_cities cities 0000d100
writes=$(agg_batch_fields "$IT_TMP/cities.log" entries)
awk '$1 > 8000 { big++ } END { exit !(NR >= 3 && !big) }' <<<"$writes" ||
    it_fail "ARV_BATCH_DELTAS_MAX_BYTES: expected 3 writes or more, none over 8,000 entries; writes: $(tr '\n' ' ' <<<"$writes")"
[ $(($(it_psql "SELECT count(*) FROM analytics.ar_view_sessions") - rows0)) = 12000 ] ||
    it_fail "distinct cities: not all 12,000 events written"
[ "$(it_psql "SELECT count(*) || ' ' || sum(views) FROM analytics.rollup_breakdown_daily
              WHERE dimension = 'city' AND value LIKE 'city-0%'")" = "12000 12000" ] ||
    it_fail "distinct cities: expected 12,000 city rows of one view each"
[ "$(agg_check_rollups)" = 0 ] || it_fail "distinct cities: rollups differ from raw rows"
it_pass "ARV_BATCH_DELTAS_MAX_BYTES: 12,000 distinct cities in writes of $(tr '\n' ' ' <<<"$writes")entries, each city a row"

# The same cities in events of content nobody registered: dead letters, not
# counted, so their breakdown values are never interned and take no deltas
# (interned at decoding, they ended a write every few thousand events).
dead0=$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'")
drain_cities unknown_cities 0000d101 -v unknown_every=1
deltas=$(agg_batch_fields "$IT_TMP/unknown_cities.log" deltas_bytes | sort -u | tr '\n' ' ')
[ "$deltas" = "0 " ] || it_fail "unknown content: expected writes without deltas, deltas_bytes: $deltas"
[ $(($(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'") - dead0)) = 12000 ] ||
    it_fail "unknown content: expected 12,000 dead letters"
it_pass "unknown content: 12,000 distinct cities dead-lettered, no breakdown value interned"

# Steady traffic: a batch whose read caught up lingers (ARV_BATCH_LINGER_MS
# from its first read) and then reads what gathered, so that 10 events sent
# 50 ms apart are one batch of two reads, not ten batches.
it_start linger arv-aggregator ARV_LOG_LEVEL=debug ARV_WORKERS=1 ARV_BATCH_LINGER_MS=3000 \
    ARV_BATCH_WAIT_MS=50
for k in 0 1 2 3 4 5 6 7 8 9; do
    late_event "0000e000-0000-4000-8000-00000000000$k" '"ar_content_id":1'
    sleep 0.05
done
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "lingering batch not drained"
it_stop linger
writes=$(agg_batch_fields "$IT_TMP/linger.log" entries reads)
[ "$writes" = "10 2" ] || it_fail "linger: expected one write of 10 entries in 2 reads; writes (entries reads): $(tr '\n' ';' <<<"$writes")"
it_pass "linger: 10 events sent over 0.5 s written as one batch of two reads"

# A stop while a write lingers: the linger (8 s) ends at once and its last read
# waits for nothing, or with ARV_BATCH_WAIT_MS of 30 s it would outlast the
# 10 s stop deadline.
it_start stoplinger arv-aggregator ARV_WORKERS=1 ARV_BATCH_LINGER_MS=8000 ARV_BATCH_WAIT_MS=30000
pending() { redis-cli -p "$IT_REDIS_PORT" XPENDING "$ARV_STREAM" arv-aggregators | head -1; }
p0=$(pending)
late_event "0000e000-0000-4000-8000-0000000000aa" '"ar_content_id":1'
# Stop once the worker has read it (pending) and lingers (not yet written).
for ((i = 0; i < 100; i++)); do
    [ "$(pending)" = $((p0 + 1)) ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "stop during a lingering write: the event was never read"
[ "$(rows 0000e000-0000-4000-8000-0000000000aa)" = 0 ] ||
    it_fail "stop during a lingering write: written before the stop (no linger)"
t0=$(date +%s%N)
it_stop stoplinger
ms=$((($(date +%s%N) - t0) / 1000000))
((ms < 3000)) || it_fail "stop during a lingering write took $ms ms"
[ "$(rows 0000e000-0000-4000-8000-0000000000aa)" = 1 ] ||
    it_fail "stop during a lingering write: its event was not written"
# An idle worker is in a blocking read: it sees the stop within a second.
it_start stopidle arv-aggregator ARV_WORKERS=1 ARV_BATCH_WAIT_MS=30000
sleep 1
t0=$(date +%s%N)
it_stop stopidle
idle_ms=$((($(date +%s%N) - t0) / 1000000))
((idle_ms < 5000)) || it_fail "an idle aggregator took $idle_ms ms to stop"
it_pass "stop during a lingering write: written, out in $ms ms; an idle one out in $idle_ms ms"

# Enrichment: GeoIP fills country and city where the client sent none (before
# the IP is anonymised), the user agent fills device type, browser and OS;
# a bot's event is stored, marked, and kept out of every rollup.
perl "$IT_ROOT/tests/fixtures/make-geoip.pl" "$IT_TMP/geo.mmdb" >/dev/null || it_fail "make-geoip.pl"
it_start enrich arv-aggregator ARV_BATCH_WAIT_MS=50 ARV_GEOIP_DB="$IT_TMP/geo.mmdb"
views0=$(it_psql "SELECT sum(views) FROM analytics.rollup_company_daily")
android='Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36'
late_event 0000b000-0000-4000-8000-000000000020 "\"ar_content_id\":7001,\"ip\":\"81.2.69.160\",\"user_agent\":\"$android\""
late_event 0000b000-0000-4000-8000-000000000021 '"ar_content_id":7001,"ip":"81.2.69.160","country":"FR","user_agent":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "enrichment events not drained"
row=$(it_psql "SELECT country, city, device_type, browser, os, host(ip_address), is_bot
               FROM analytics.ar_view_sessions WHERE event_id = '0000b000-0000-4000-8000-000000000020'")
[ "$row" = "GB|London|mobile|Chrome Mobile|Android|81.2.69.0|f" ] || it_fail "enriched row: $row"
# The client's country wins over GeoIP (and London is not in FR).
row=$(it_psql "SELECT country, coalesce(city, '-'), is_bot FROM analytics.ar_view_sessions
               WHERE event_id = '0000b000-0000-4000-8000-000000000021'")
[ "$row" = "FR|-|t" ] || it_fail "bot row: $row"
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_company_daily")" = $((views0 + 1)) ] ||
    it_fail "expected only the person's event counted"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from the raw rows other than bots'"
m=$(curl -fsS "http://127.0.0.1:$IT_PORT_enrich/metrics")
grep -q '^aggregator_events_total{outcome="bot"} 1$' <<<"$m" || it_fail "bot not counted in metrics"
grep -q '^aggregator_ua_lookups_total{result="miss"} [1-9]' <<<"$m" || it_fail "no user-agent lookups counted"
it_stop enrich
rc=0
env ARV_LISTEN=127.0.0.1:0 ARV_GEOIP_DB=/nonexistent.mmdb "$IT_BIN/arv-aggregator" 2>"$IT_TMP/nogeo.log" || rc=$?
[ "$rc" != 0 ] && grep -q "ARV_GEOIP_DB: cannot read '/nonexistent.mmdb': No such file" "$IT_TMP/nogeo.log" ||
    it_fail "a missing ARV_GEOIP_DB must stop the start with a clear error (rc $rc): $(tail -2 "$IT_TMP/nogeo.log")"
it_pass "GeoIP and user-agent enrichment, bots stored but not counted, a bad GeoIP path refused"

# The freshness floor of each stream (analytics.stream_watermarks) stays below
# every entry not yet in PostgreSQL, whichever consumer holds it: here 5 of
# shard 0's entries were delivered to a consumer that died ("ghost") and the
# aggregator claims nothing (ARV_CLAIM_IDLE_MS=0). It also moves back by the
# delay seen from an event's received_at to its XADD: shard 1's events come
# from a collector whose clock is a minute behind Redis's, so a floor of
# Redis's "now" is published as a minute before it, where that collector's
# next events may still land.
ws=$ARV_STREAM:wm
floor_of() {
    it_psql "SELECT (extract(epoch FROM complete_until) * 1000)::bigint || ' ' ||
             (updated_at > now() - interval '3 seconds') FROM analytics.stream_watermarks WHERE stream = '$1'"
}
counted() { it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE event_id::text LIKE '$1%'"; }
t0=$(date +%s%3N)
LC_ALL=C awk -v n=200 -v stream="$ws:0" -v base_ms="$t0" -v contents=40 -v seed=0000f100 \
    -f "$GEN" | redis-cli -p "$IT_REDIS_PORT" --pipe >/dev/null 2>&1 || it_fail "redis-cli --pipe"
redis-cli -p "$IT_REDIS_PORT" XGROUP CREATE "$ws:0" arv-aggregators 0 >/dev/null
redis-cli -p "$IT_REDIS_PORT" XREADGROUP GROUP arv-aggregators ghost COUNT 5 STREAMS "$ws:0" '>' >/dev/null
LC_ALL=C awk -v n=10 -v stream="$ws:1" -v base_ms="$((t0 - 60000))" -v contents=40 -v seed=0000f200 \
    -f "$GEN" | redis-cli -p "$IT_REDIS_PORT" --pipe >/dev/null 2>&1 || it_fail "redis-cli --pipe"
it_start wm arv-aggregator ARV_STREAM="$ws" ARV_STREAM_SHARDS=2 ARV_WORKERS=1 ARV_CONSUMER=wm \
    ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=0
for ((i = 0; i < 100; i++)); do
    [ "$(counted 0000f100)" = 195 ] && [ "$(counted 0000f200)" = 10 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "floor: expected 195 and 10 events written: $(counted 0000f100), $(counted 0000f200)"
sleep 1.5 # the floors are read every second
f0=$(floor_of "$ws:0")
f1=$(floor_of "$ws:1")
[ -n "$f0" ] && [ "${f0% *}" -lt "$t0" ] && [ "${f0#* }" = true ] ||
    it_fail "floor: shard 0 at '$f0', past the dead consumer's events received at $t0"
now=$(date +%s%3N)
[ -n "$f1" ] && [ "${f1% *}" -le $((now - 60000)) ] && [ "${f1% *}" -gt $((now - 90000)) ] &&
    [ "${f1#* }" = true ] || it_fail "floor: shard 1 at '$f1', expected a minute before $now (t0 $t0)"
sleep 1.1
[ "$(floor_of "$ws:0")" = "${f0% *} true" ] || it_fail "floor: shard 0 moved or not kept current: $(floor_of "$ws:0")"
# The floor written is also a gauge, for alerting on a watermark that lags.
m=$(curl -fsS "http://127.0.0.1:$IT_PORT_wm/metrics")
g=$(sed -n "s/^aggregator_stream_complete_until_seconds{stream=\"$ws:0\"} //p" <<<"$m")
awk -v g="$g" -v f="${f0% *}" 'BEGIN { d = g * 1000 - f; exit !(g != "" && d < 2 && d > -2) }' ||
    it_fail "floor: gauge '$g' for shard 0, row at ${f0% *} ms"
# A second aggregator, which has seen no late event, writes the same rows
# every second too: the delay the first reported holds for both.
it_start wmb arv-aggregator ARV_STREAM="$ws" ARV_STREAM_SHARDS=2 ARV_WORKERS=1 ARV_CONSUMER=wmb \
    ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=0
for ((i = 0; i < 6; i++)); do
    sleep 0.5
    f1=$(floor_of "$ws:1")
    now=$(date +%s%3N)
    [ "${f1% *}" -le $((now - 60000)) ] ||
        it_fail "floor: shard 1 at '$f1' with a second aggregator, past a minute before $now"
done
it_stop wmb
it_stop wm
# Claimed, the dead consumer's entries are written and the floor moves past
# them (still a minute back: the delay is kept 10 minutes).
it_start wm2 arv-aggregator ARV_STREAM="$ws" ARV_STREAM_SHARDS=2 ARV_WORKERS=1 ARV_CONSUMER=wm \
    ARV_BATCH_WAIT_MS=50 ARV_CLAIM_IDLE_MS=1000
agg_wait_drained "$IT_REDIS_PORT" "$ws:0" 30 || it_fail "floor: the claimed entries not written"
[ "$(counted 0000f100)" = 200 ] || it_fail "floor: expected all 200 events: $(counted 0000f100)"
sleep 1.5
fa=$(it_psql "SELECT (extract(epoch FROM floor_at) * 1000)::bigint FROM analytics.stream_watermarks
              WHERE stream = '$ws:0'")
[ "$fa" -ge "$t0" ] || it_fail "floor: shard 0's floor still at $fa once everything is written"
it_stop wm2
# Streams past the first 64 of a node have rows too, and a stream whose floor
# is not known yet (its Redis away since the start) gets a row at the epoch,
# kept current.
it_start many arv-aggregator ARV_STREAM="$ws:m" ARV_STREAM_SHARDS=70 ARV_WORKERS=1 \
    ARV_CONSUMER=many ARV_BATCH_WAIT_MS=50
away=$(arv_free_port)
it_start away arv-aggregator REDIS_URL="redis://127.0.0.1:$away/0" ARV_STREAM="$ws:away" \
    ARV_WORKERS=1 ARV_CONSUMER=away
# A Redis user without TIME: the floor is unknown, said once.
url=$(refused notime time)
it_start notime arv-aggregator REDIS_URL="$url" \
    ARV_STREAM="$ws:nt" ARV_WORKERS=1 ARV_CONSUMER=notime ARV_BATCH_WAIT_MS=50
at_epoch() {
    [ "$(it_psql "SELECT complete_until = 'epoch' FROM analytics.stream_watermarks
                  WHERE stream = '$1' AND updated_at > now() - interval '3 seconds'")" = t ]
}
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM analytics.stream_watermarks WHERE stream LIKE '$ws:m:%'")" = 70 ] &&
        at_epoch "$ws:away" && at_epoch "$ws:nt" && break
    sleep 0.2
done
[ "$i" -lt 50 ] || it_fail "floor: 70 shards: $(it_psql "SELECT count(*) FROM analytics.stream_watermarks
    WHERE stream LIKE '$ws:m:%'") rows; Redis away, no TIME: '$(it_psql "SELECT stream, complete_until,
    updated_at FROM analytics.stream_watermarks WHERE stream IN ('$ws:away', '$ws:nt')")'"
sleep 1.2
[ "$(grep -c '"stream_floor_unknown"' "$IT_TMP/notime.log")" = 1 ] ||
    it_fail "floor: expected stream_floor_unknown once: $(grep -c stream_floor_unknown "$IT_TMP/notime.log")"
it_stop notime
it_stop away
it_stop many
it_pass "stream floors: held by a dead consumer's entries, a minute back for a collector a minute behind (for every aggregator), moved on once claimed; every shard has a row, an unknown floor one at the epoch"

# With its Redis away, a stream's floor row stays current without moving, so
# that what the stream still holds keeps the reporter's minimum back for as
# long as an aggregator runs, not only for the 10 minutes a row counts
# unrefreshed.
R3=$(arv_free_port)
arv_start_redis "$IT_TMP/r3" "$R3" || it_fail "touch: redis did not start"
it_start touch arv-aggregator REDIS_URL="redis://127.0.0.1:$R3/0" ARV_STREAM="$ws" ARV_WORKERS=1 \
    ARV_CONSUMER=touch ARV_BATCH_WAIT_MS=50
row() { it_psql "SELECT complete_until || ' ' || (updated_at > '$1') FROM analytics.stream_watermarks
                 WHERE stream = '$ws'"; }
for ((i = 0; i < 50; i++)); do
    [ -n "$(row now)" ] && break
    sleep 0.1
done
[ "$i" -lt 50 ] || it_fail "touch: no floor row"
arv_stop_redis "$IT_TMP/r3" "$R3"
sleep 1.5
t=$(it_psql "SELECT now()")
cu=$(row "$t")
# Refreshed with every reconnect attempt (at most 5 s apart, the backoff's cap).
for ((i = 0; i < 80; i++)); do
    [ "$(row "$t")" = "${cu% *} true" ] && break
    sleep 0.1
done
[ "$i" -lt 80 ] ||
    it_fail "touch: with Redis away, expected the row refreshed and unmoved: '$cu' then '$(row "$t")'"
it_stop touch
it_pass "Redis away: the stream's floor row stays current, unmoved"

# The merging statement upserts the rollup tables in the documented order
# (breakdown, content hourly, content daily, company hourly, company daily:
# the hottest rows last), whatever order PostgreSQL runs a statement's parts
# in: statement triggers note when each table's upsert starts.
it_psql "CREATE TABLE public.merge_order (n serial, tbl text)"
it_psql "CREATE FUNCTION public.note_merge() RETURNS trigger LANGUAGE plpgsql AS
         \$\$BEGIN INSERT INTO public.merge_order (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END\$\$"
for t in rollup_breakdown_daily rollup_content_hourly rollup_content_daily rollup_company_hourly rollup_company_daily; do
    it_psql "CREATE TRIGGER note_merge BEFORE INSERT ON analytics.$t FOR EACH STATEMENT EXECUTE FUNCTION public.note_merge()"
done
it_start order arv-aggregator ARV_STREAM="$ARV_STREAM:order" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50
ARV_STREAM="$ARV_STREAM:order" late_event 0000b000-0000-4000-8000-000000000070 '"ar_content_id":1'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:order" 30 || it_fail "merge order: event not drained"
it_stop order
order=$(it_psql "SELECT string_agg(tbl, ' ' ORDER BY n) FROM public.merge_order")
for t in rollup_breakdown_daily rollup_content_hourly rollup_content_daily rollup_company_hourly rollup_company_daily; do
    it_psql "DROP TRIGGER note_merge ON analytics.$t"
done
it_psql "DROP TABLE public.merge_order; DROP FUNCTION public.note_merge()"
[ "$order" = "rollup_breakdown_daily rollup_content_hourly rollup_content_daily rollup_company_hourly rollup_company_daily" ] ||
    it_fail "merge order: $order"
it_pass "the merge upserts breakdown, content hourly, content daily, company hourly, company daily, in that order"

# An aggregator started before `arvctl migrate` is not ready and waits; once
# the schema is there it sets its PostgreSQL session up again (a setup that
# failed once must not leave a connection without its temporary tables) and
# writes what came meanwhile: here a first read with no known content (a
# dead letter), then an event it counts.
it_psql "CREATE DATABASE arv_early"
early_url="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_early"
it_start early arv-aggregator DATABASE_URL="$early_url" ARV_STREAM="$ARV_STREAM:early" \
    ARV_BATCH_WAIT_MS=50
arv_wait_http "http://127.0.0.1:$IT_PORT_early/api/health/readiness" 503 10 ||
    it_fail "an aggregator without its schema must not be ready"
ARV_STREAM="$ARV_STREAM:early" late_event 0000b000-0000-4000-8000-000000000050 '"ar_content_id":1'
DATABASE_URL=$early_url "$IT_BIN/arvctl" migrate >>"$IT_TMP/migrate.log" 2>&1 || it_fail "migrate arv_early"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:early" 30 || it_fail "nothing written once migrated"
# (A company id beyond 32 bits, as snowflake ids are: its hash must not overflow.)
psql "$early_url" -q -c "INSERT INTO analytics.ar_content (id, project_id, company_id)
                         VALUES (1, 1000, 9000000000000000001)"
ARV_STREAM="$ARV_STREAM:early" late_event 0000b000-0000-4000-8000-000000000051 '"ar_content_id":1'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:early" 30 || it_fail "event not drained"
[ "$(psql "$early_url" -tAq -c "SELECT (SELECT string_agg(reason, ',') FROM analytics.dead_letters)
      || ' ' || (SELECT count(*) FROM analytics.ar_view_sessions)")" = "unknown_content 1" ] ||
    it_fail "expected the event sent before the migration dead-lettered and the later one written"
arv_wait_http "http://127.0.0.1:$IT_PORT_early/api/health/readiness" 200 10 ||
    it_fail "not ready once migrated"
it_stop early
it_pass "an aggregator started before the migration writes once it is done"

# A server that stops answering (here the worker's backend, stopped: its host
# still acknowledges every packet, so no TCP timeout ends the wait, and
# statement_timeout is enforced by the server itself). The call is given up
# ARV_STATEMENT_TIMEOUT_MS and a quarter after it began, as a lost connection,
# and the event is written on a new connection while the old backend is still
# stopped.
since=$(it_psql "SELECT now()")
it_start hang arv-aggregator ARV_STREAM="$ARV_STREAM:hang" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_STATEMENT_TIMEOUT_MS=1000
arv_wait_http "http://127.0.0.1:$IT_PORT_hang/api/health/readiness" 200 10 || it_fail "hang: not ready"
hung=$(it_psql "SELECT pid FROM pg_stat_activity WHERE application_name = 'arv-aggregator'
                AND backend_start > '$since'")
[ -n "$hung" ] && [ "$(wc -w <<<"$hung")" = 1 ] || it_fail "hang: expected one worker backend: $hung"
kill -STOP "$hung"
trap 'kill -CONT "$hung" 2>/dev/null; it_cleanup' EXIT
ARV_STREAM="$ARV_STREAM:hang" late_event 0000b000-0000-4000-8000-000000000090 '"ar_content_id":1'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:hang" 15 ||
    it_fail "hang: a call left unanswered was not given up: $(tail -2 "$IT_TMP/hang.log")"
waited=$(grep '"postgresql_not_answering"' "$IT_TMP/hang.log" | grep -o '"waited_ms":[0-9]*' | head -1)
[ "${waited#*:}" -gt 1250 ] 2>/dev/null ||
    it_fail "hang: expected postgresql_not_answering after 1,250 ms: '$waited'"
grep -q '"postgresql_unavailable".*no answer from PostgreSQL for' "$IT_TMP/hang.log" ||
    it_fail "hang: the worker's error does not say the server did not answer"
[ "$(rows 0000b000-0000-4000-8000-000000000090)" = 1 ] ||
    it_fail "hang: the event was not written once"
kill -CONT "$hung"
trap it_cleanup EXIT
it_stop hang
it_pass "a call PostgreSQL leaves unanswered is given up after ARV_STATEMENT_TIMEOUT_MS and a quarter"

# Stopped while the whole server does not answer (every PostgreSQL process
# stopped), at the default statement timeout (a call is given up after 75 s):
# the process still exits 0 before the stop's 10 s deadline, its workers'
# calls cut half the deadline after SIGTERM (before: forced out at 10 s,
# exit 1); the retention thread, idle, does not wait on the server to cancel
# nothing. A worker idle (its ping hung) and one inside a write alike.
for hang in idle write; do
    it_start "hangstop_$hang" arv-aggregator ARV_STREAM="$ARV_STREAM:hang$hang" ARV_WORKERS=1 \
        ARV_BATCH_WAIT_MS=50 ARV_BATCH_LINGER_MS=3000
    port_var=IT_PORT_hangstop_$hang pid_var=IT_PID_hangstop_$hang
    arv_wait_http "http://127.0.0.1:${!port_var}/api/health/readiness" 200 10 ||
        it_fail "hangstop $hang: not ready"
    [ "$hang" = write ] && ARV_STREAM="$ARV_STREAM:hang$hang" \
        late_event 0000b000-0000-4000-8000-000000000092 '"ar_content_id":1' && sleep 0.5
    it_pg_freeze
    sleep 0.5
    kill -TERM "${!pid_var}"
    t0=$(date +%s%N)
    for ((i = 0; i < 80; i++)); do
        kill -0 "${!pid_var}" 2>/dev/null || break
        sleep 0.1
    done
    stopped=1
    kill -0 "${!pid_var}" 2>/dev/null && stopped=0
    took=$((($(date +%s%N) - t0) / 1000000))
    it_pg_thaw
    [ "$stopped" = 1 ] || it_fail "hangstop $hang: not out 8 s after SIGTERM with PostgreSQL stopped"
    rc=0
    wait "${!pid_var}" || rc=$?
    [ "$rc" = 0 ] || it_fail "hangstop $hang: exited $rc after $took ms"
    it_pass "stopped while PostgreSQL answers nothing ($hang): exit 0 after $took ms"
done

# A worker that stops inside a write (a frozen VM; SIGSTOP here) would hold
# its transaction's row locks, on which every other aggregator's dedupe and
# merge wait: the server ends a session idle in a transaction for
# max(ARV_STATEMENT_TIMEOUT_MS, 15 s), and the worker, once it runs again,
# writes the entries again on a new connection.
since=$(it_psql "SELECT now()")
it_start frozen arv-aggregator ARV_STREAM="$ARV_STREAM:frozen" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_BATCH_LINGER_MS=3000 ARV_STATEMENT_TIMEOUT_MS=1000
arv_wait_http "http://127.0.0.1:$IT_PORT_frozen/api/health/readiness" 200 10 || it_fail "frozen: not ready"
ARV_STREAM="$ARV_STREAM:frozen" late_event 0000b000-0000-4000-8000-000000000091 '"ar_content_id":1'
backend() {
    it_psql "SELECT state FROM pg_stat_activity WHERE application_name = 'arv-aggregator'
             AND backend_start > '$since'"
}
for ((i = 0; i < 100; i++)); do
    [ "$(backend)" = "idle in transaction" ] && break
    sleep 0.05
done
[ "$i" -lt 100 ] || it_fail "frozen: the write never lingered in its transaction: '$(backend)'"
kill -STOP "$IT_PID_frozen"
t0=$SECONDS
for ((i = 0; i < 250; i++)); do
    [ -z "$(backend)" ] && break
    sleep 0.1
done
gone=$((SECONDS - t0))
kill -CONT "$IT_PID_frozen"
[ "$i" -lt 250 ] || it_fail "frozen: its session still open 25 s after the worker stopped"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:frozen" 30 || it_fail "frozen: not drained once running again"
[ "$(rows 0000b000-0000-4000-8000-000000000091)" = 1 ] ||
    it_fail "frozen: the event was not written once"
it_stop frozen
it_pass "a worker stopped inside a write: its session ended by the server after ${gone} s, the event written once"

# The check itself sees a difference in any table.
for t in rollup_content_hourly rollup_content_daily rollup_company_hourly rollup_company_daily \
    rollup_breakdown_daily; do
    it_psql "UPDATE analytics.$t SET views = views + 1 WHERE company_id = (SELECT min(company_id) FROM analytics.$t)"
    [ "$(agg_check_rollups 2>/dev/null)" != 0 ] || it_fail "the rollup check missed a change in $t"
    it_psql "UPDATE analytics.$t SET views = views - 1 WHERE company_id = (SELECT min(company_id) FROM analytics.$t)"
done
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ after undoing the changes"
it_pass "the rollup check detects a change in every table"

# ARV_BREAKDOWN_MAX_VALUES: clients choose breakdown values, so each content,
# UTC day and dimension keeps at most that many (50 here) and later ones are
# counted as (other). Two loads of 300 events, each naming a city of its own,
# for one content and day, each read by an aggregator of its own (the second
# learns the stored values from PostgreSQL): 50 city rows and (other), every
# view counted, the other dimensions as they were. Without the cap: 600 rows.
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id) VALUES (41, 'uid-41', 1041, 105)"
for part in 0 1; do
    LC_ALL=C awk -v n=300 -v first=$((part * 300)) -v stream="$ARV_STREAM:cap" -v base_ms="$now_ms" \
        -v contents=1 -v content_base=40 -v seed=0000d200 -v distinct_cities=1 -f "$GEN" |
        redis-cli -p "$IT_REDIS_PORT" --pipe >"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
    it_start "cap$part" arv-aggregator ARV_STREAM="$ARV_STREAM:cap" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
        ARV_BREAKDOWN_MAX_VALUES=50
    agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:cap" 30 || it_fail "cap: load $part not drained"
    it_stop "cap$part"
done
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE ar_content_id = 41")" = 600 ] ||
    it_fail "cap: not all 600 events written"
got=$(it_psql "SELECT count(*) || ' ' || sum(views) || ' ' || sum(views) FILTER (WHERE value = '(other)')
               FROM analytics.rollup_breakdown_daily WHERE ar_content_id = 41 AND dimension = 'city'")
[ "$got" = "51 600 550" ] || it_fail "cap: city rows, views, (other)'s views: $got, expected 51 600 550"
[ "$(it_psql "SELECT sum(views) FROM analytics.rollup_breakdown_daily WHERE ar_content_id = 41 AND dimension = 'os'")" = 600 ] ||
    it_fail "cap: another dimension's views"
it_pass "ARV_BREAKDOWN_MAX_VALUES=50: 600 distinct cities in two runs are 50 rows and (other), every view counted"

# A client's own "(other)" is the cap's (other) row, not one of the values
# kept: with a cap of 2, "(other)" and Aachen, then Bonn in a later batch,
# keep Aachen and Bonn (as a rebuild does). Counted among the stored values,
# it folded Bonn into itself.
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id) VALUES (43, 'uid-43', 1043, 105)"
it_start capo arv-aggregator ARV_STREAM="$ARV_STREAM:capo" ARV_WORKERS=1 ARV_BATCH_WAIT_MS=50 \
    ARV_BREAKDOWN_MAX_VALUES=2
ARV_STREAM="$ARV_STREAM:capo" late_event 0000b000-0000-4000-8000-000000000052 '"ar_content_id":43,"city":"(other)"'
ARV_STREAM="$ARV_STREAM:capo" late_event 0000b000-0000-4000-8000-000000000053 '"ar_content_id":43,"city":"Aachen"'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:capo" 30 || it_fail "cap (other): first events not drained"
ARV_STREAM="$ARV_STREAM:capo" late_event 0000b000-0000-4000-8000-000000000054 '"ar_content_id":43,"city":"Bonn"'
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:capo" 30 || it_fail "cap (other): Bonn not drained"
it_stop capo
got=$(it_psql "SELECT string_agg(value || ' ' || views, ', ' ORDER BY value) FROM analytics.rollup_breakdown_daily
               WHERE ar_content_id = 43 AND dimension = 'city'")
[ "$got" = "(other) 1, Aachen 1, Bonn 1" ] || it_fail "cap (other): city rows $got"
it_pass "a client's own (other) is not one of the values the cap keeps: Aachen and Bonn kept at a cap of 2"

# Two workers writing one key see each other's values: past half the cap a
# key is counted at every batch. 40 events, each a new city for one content,
# sent one by one to an aggregator of two workers that commit at once
# (ARV_BATCH_LINGER_MS=0), cap 10: usually 10 or 11 values (one batch in
# flight of the other worker), 12 seen once on a loaded machine, and at most
# the documented (W + 1) / 2 times the cap, 15 (below half the cap a worker
# counts again only every half cap); (other) holds the rest, every view
# counted. A first version, counting again only near the cap, gave 15 here.
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id) VALUES (42, 'uid-42', 1042, 105)"
it_start cap2 arv-aggregator ARV_STREAM="$ARV_STREAM:cap2" ARV_WORKERS=2 ARV_BATCH_WAIT_MS=50 \
    ARV_BATCH_LINGER_MS=0 ARV_BREAKDOWN_MAX_VALUES=10
for i in $(seq 10 49); do
    redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM:cap2" '*' v 1 e \
        "{\"event_id\":\"0000d300-0000-4000-8000-0000000000$i\",\"session_id\":\"0000d300-0000-4000-8000-000000000001\",\"ar_content_id\":42,\"city\":\"c$i\",\"received_at\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\"}" >/dev/null
    sleep 0.1
done
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM:cap2" 30 || it_fail "cap2: not drained"
it_stop cap2
got=$(it_psql "SELECT count(*) FILTER (WHERE value <> '(other)') || ' ' || sum(views)
               FROM analytics.rollup_breakdown_daily WHERE ar_content_id = 42 AND dimension = 'city'")
read -r nvalues nviews <<<"$got"
[ "$nviews" = 40 ] && [ "$nvalues" -ge 10 ] && [ "$nvalues" -le 15 ] ||
    it_fail "cap with two workers: $nvalues values and $nviews views, expected 10 to 15 values and 40 views"
it_pass "ARV_BREAKDOWN_MAX_VALUES=10 with two workers: $nvalues values and (other), 40 views"
