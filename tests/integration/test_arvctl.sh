#!/usr/bin/env bash
# arvctl dlq list/replay, arvctl rollups rebuild and the aggregator's retention,
# against real Redis + PostgreSQL: a replayed unknown_content dead letter is
# counted once registered, and only once however often it is replayed; a
# corrupted rollup is repaired by a rebuild run while events are ingested, and
# a rebuild on a database never migrated is refused with the migrate hint; old
# raw partitions, hourly rollups and dedupe ids are removed, daily rollups kept.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../../bench/aggregator_checks.sh"
it_setup "${1:?usage: test_arvctl.sh BIN_DIR}"
ARVCTL=$IT_BIN/arvctl

# --check-config answers 0 or 1, as every binary's does (a bad value given to
# a command stays a usage error, 2). Before, it exited 2.
rc=0; out=$(ARV_LOG_LEVEL=loud "$ARVCTL" --check-config 2>&1) || rc=$?
[ "$rc" = 1 ] && [[ $out == *"ARV_LOG_LEVEL: invalid value"* ]] ||
    it_fail "--check-config with a bad ARV_LOG_LEVEL (exit $rc): $out"
rc=0; ARV_LOG_LEVEL=loud "$ARVCTL" migrate >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || it_fail "migrate with a bad ARV_LOG_LEVEL: exit $rc"
"$ARVCTL" --check-config >/dev/null || it_fail "--check-config of a good configuration"
it_pass "arvctl --check-config exits 1 on a bad value (a command, 2)"

GEN=$IT_ROOT/bench/aggregator_events.awk
now_ms=$(($(date +%s%3N)))
it_psql "INSERT INTO analytics.ar_content (id, unique_id, project_id, company_id)
         SELECT g, 'uid-' || g, 1000 + g % 3, 100 + g % 2 FROM generate_series(1, 10) g"
# load N SEED: N entries over the last 2.5 days, 1 in 7 for unknown content
# (999999999), 1 in 5 a client retry, 1 in 40 undecodable.
load() {
    LC_ALL=C awk -v n="$1" -v seed="$2" -v stream="$ARV_STREAM" -v base_ms="$now_ms" \
        -v spread_ms=216000000 -v contents=10 -v dup_every=5 -v unknown_every=7 \
        -v invalid_every=40 -v sessions=$(($1 / 3)) -f "$GEN" |
        redis-cli -p "$IT_REDIS_PORT" --pipe >>"$IT_TMP/pipe.log" 2>&1 || it_fail "redis-cli --pipe"
}
load 3000 0000a001
it_start aggregator arv-aggregator ARV_BATCH_SIZE=500 ARV_BATCH_WAIT_MS=50 ARV_CONTENT_CACHE_TTL_S=1
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "stream not drained"
raw=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")

# --- dlq list
unknown=$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'")
invalid=$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'invalid_payload'")
[ "$unknown" -gt 0 ] && [ "$invalid" -gt 0 ] || it_fail "expected both kinds of dead letters"
[ "$("$ARVCTL" dlq list --reason unknown_content --limit 100000 --json | jq length)" = "$unknown" ] ||
    it_fail "dlq list --json: expected $unknown unknown_content"
"$ARVCTL" dlq list --reason unknown_content --limit 100000 --json |
    jq -e 'all(.[]; (.payload | fromjson | .ar_content_id) == 999999999 and .replayed_at == null)' \
        >/dev/null || it_fail "dlq list --json: whole payloads, not replayed"
out=$("$ARVCTL" dlq list --limit 3)
[ "$(wc -l <<<"$out")" = 4 ] || it_fail "dlq list --limit 3: $out"
grep -q '^ID  *CREATED_AT  *REASON' <<<"$out" || it_fail "dlq list header: $out"
grep -q '\.\.\.$' <<<"$out" || it_fail "dlq list: payload not cut: $out"
rc=0; "$ARVCTL" dlq list --limit 0 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "dlq list --limit 0 exited $rc, expected 2"
it_pass "dlq list: $unknown unknown_content, $invalid invalid_payload, table and JSON"

# --- dlq replay: register the content, replay, counted once.
rc=0; "$ARVCTL" dlq replay 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "dlq replay without --id/--reason exited $rc, expected 2"
rc=0; "$ARVCTL" dlq replay --id 99999999 2>/dev/null || rc=$?
[ "$rc" = 1 ] || it_fail "dlq replay of a missing id exited $rc, expected 1"
rc=0; out=$(REDIS_URL=rediss://:pw@127.0.0.1:6380/0 "$ARVCTL" dlq replay --id 1 2>&1) || rc=$?
[ "$rc" = 2 ] && grep -q 'rediss:// (TLS) is not supported' <<<"$out" ||
    it_fail "dlq replay with a rediss:// URL: exit $rc, $out"
"$ARVCTL" content add --id 999999999 --project 1001 --company 101 >/dev/null ||
    it_fail "content add"
# A unique id the collector would refuse (a CR from a CRLF file) could never be
# named by an event: refused here too.
rc=0; "$ARVCTL" content add --id 5 --unique-id $'p-5\r' --project 1001 --company 101 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "content add with a control character in --unique-id exited $rc, expected 2"
out=$("$ARVCTL" dlq replay --reason unknown_content) || it_fail "dlq replay --reason failed: $out"
grep -q "^$unknown replayed, 0 skipped, 0 failed$" <<<"$out" || it_fail "dlq replay: $out"
out=$("$ARVCTL" dlq replay --reason invalid_payload 2>"$IT_TMP/skip.err") ||
    it_fail "dlq replay of invalid payloads failed: $out"
grep -q "^0 replayed, $invalid skipped, 0 failed$" <<<"$out" || it_fail "invalid replay: $out"
grep -q "not an event" "$IT_TMP/skip.err" || it_fail "no skip message"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "replay not drained"
distinct_unknown=$(it_psql "SELECT count(DISTINCT payload::json->>'event_id')
                            FROM analytics.dead_letters WHERE reason = 'unknown_content'")
got=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE ar_content_id = 999999999")
[ "$got" = "$distinct_unknown" ] || it_fail "replayed events counted $got, expected $distinct_unknown"
raw2=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
[ "$raw2" = $((raw + distinct_unknown)) ] || it_fail "raw rows $raw2, expected $((raw + distinct_unknown))"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters
              WHERE reason = 'unknown_content' AND replayed_at IS NULL")" = 0 ] ||
    it_fail "replayed_at not set"
# Again: --reason skips what was replayed, --id replays one more time; nothing changes.
out=$("$ARVCTL" dlq replay --reason unknown_content)
grep -q "^0 replayed" <<<"$out" || it_fail "second --reason replay: $out"
first=$(it_psql "SELECT min(id) FROM analytics.dead_letters WHERE reason = 'unknown_content'")
for k in 1 2; do
    out=$("$ARVCTL" dlq replay --id "$first") || it_fail "dlq replay --id (run $k)"
    grep -q "^1 replayed, 0 skipped" <<<"$out" || it_fail "dlq replay --id (run $k): $out"
done
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "second replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = "$raw2" ] ||
    it_fail "replaying twice counted again"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the replays"
it_pass "dlq replay: $distinct_unknown events counted once, replays again change nothing"

# A reason no dead letter has, and not the aggregator's, is refused (a typo;
# before: "0 replayed", exit 0). A stream no
# aggregator reads (no arv-aggregators group) is refused before any XADD, and
# the letter is not marked (before: marked replayed, its event never counted).
# A replay waits for one already running (before: both sent the same letters).
# Output cut short (`| true`) no longer kills arvctl mid-way (SIGPIPE).
rc=0; err=$("$ARVCTL" dlq replay --reason unknown-content 2>&1) || rc=$?
[ "$rc" = 2 ] && [[ $err == *"no dead letter has reason 'unknown-content' (the aggregator writes invalid_payload,"* ]] ||
    it_fail "mistyped reason: exit $rc: $err"
marked() { it_psql "SELECT replayed_at FROM analytics.dead_letters WHERE id = $first"; }
was=$(marked)
rc=0; err=$("$ARVCTL" dlq replay --id "$first" --stream arv:nobody 2>&1) || rc=$?
[ "$rc" = 1 ] && [[ $err == *"stream 'arv:nobody' has no consumer group arv-aggregators"* ]] ||
    it_fail "a stream no aggregator reads: exit $rc: $err"
[ "$(redis-cli -p "$IT_REDIS_PORT" EXISTS arv:nobody)" = 0 ] && [ "$(marked)" = "$was" ] ||
    it_fail "a stream no aggregator reads: appended to or marked"
it_psql "SELECT pg_advisory_lock(1634891332), pg_sleep(2)" >/dev/null &
holder=$!
sleep 0.5
err=$("$ARVCTL" dlq replay --reason unknown_content 2>&1 >/dev/null) || it_fail "replay behind another: $err"
[[ $err == *"waiting for another replay to finish"* ]] || it_fail "replay behind another did not wait: $err"
wait "$holder"
(
    sleep 0.3
    rc=0
    "$ARVCTL" keys create --admin --name piped 2>"$IT_TMP/piped.err" || rc=$?
    echo "$rc" >"$IT_TMP/piped.rc"
) | true
[ "$(cat "$IT_TMP/piped.rc")" = 1 ] && grep -q "could not print it; revoke it" "$IT_TMP/piped.err" ||
    it_fail "keys create into a closed pipe: exit $(cat "$IT_TMP/piped.rc"): $(cat "$IT_TMP/piped.err")"
it_pass "dlq replay: a mistyped reason and a stream no aggregator reads refused, one replay at a time; a closed pipe reported"

# Events received before the dedupe window: skipped unless --force (a counted
# one would be counted again); before the raw retention: always skipped.
ts_sql() { echo "to_char((now() - interval '$1') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"; }
old_dead() { # ENTRY_ID AGE: a copy of an unknown_content dead letter, a new event id, received AGE ago
    it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)
             SELECT 'test', '$1', reason, detail,
                    regexp_replace(regexp_replace(payload, '\"event_id\":\"[^\"]*\"',
                        '\"event_id\":\"' || gen_random_uuid() || '\"'),
                        '\"received_at\":\"[^\"]*\"', '\"received_at\":\"' || $(ts_sql "$2") || '\"')
             FROM analytics.dead_letters WHERE id = $first RETURNING id"
}
day_old=$(old_dead old-1 '1 day')
long_old=$(old_dead old-2 '100 days')
out=$(ARV_DEDUPE_RETENTION_DAYS=1 "$ARVCTL" dlq replay --id "$day_old" 2>"$IT_TMP/skip.err") ||
    it_fail "replay past the dedupe window failed: $out"
grep -q "^0 replayed, 1 skipped, 0 failed$" <<<"$out" || it_fail "past the dedupe window: $out"
grep -q "^skipped $day_old: received $(date -u -d '-1 day' +%F), past the 1-day dedupe window" \
    "$IT_TMP/skip.err" || it_fail "no dedupe window message: $(cat "$IT_TMP/skip.err")"
out=$("$ARVCTL" dlq replay --id "$long_old" --force 2>"$IT_TMP/skip.err") ||
    it_fail "replay past the raw retention failed: $out"
grep -q "^0 replayed, 1 skipped, 0 failed$" <<<"$out" || it_fail "past the raw retention: $out"
grep -q "past ARV_RAW_RETENTION_DAYS (90)" "$IT_TMP/skip.err" ||
    it_fail "no raw retention message: $(cat "$IT_TMP/skip.err")"
out=$(ARV_DEDUPE_RETENTION_DAYS=1 "$ARVCTL" dlq replay --id "$day_old" --force) ||
    it_fail "forced replay failed: $out"
grep -q "^1 replayed, 0 skipped, 0 failed$" <<<"$out" || it_fail "forced replay: $out"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "forced replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions s JOIN analytics.dead_letters d
              ON s.event_id = (d.payload::json->>'event_id')::uuid WHERE d.id = $day_old")" = 1 ] ||
    it_fail "the forced replay was not counted once"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the forced replay"
it_pass "dlq replay: events past the dedupe window skipped unless --force, past the raw retention always"

# A replay reads the dead letters a page (1,000) at a time: 2,345 of one
# reason, a skipped one among them, each replayed once, none missed at the
# pages' edges.
raw3=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)
         SELECT 'test', 'paged-' || g, 'paged', detail, CASE WHEN g = 1000 THEN 'not json' ELSE
                regexp_replace(payload, '\"event_id\":\"[^\"]*\"', '\"event_id\":\"' || gen_random_uuid() || '\"') END
         FROM analytics.dead_letters, generate_series(1, 2345) g WHERE id = $first" >/dev/null
out=$("$ARVCTL" dlq replay --reason paged 2>"$IT_TMP/skip.err") || it_fail "paged replay failed: $out"
grep -q "^2344 replayed, 1 skipped, 0 failed$" <<<"$out" || it_fail "paged replay: $(tail -n 1 <<<"$out")"
[ "$(grep -c '^replayed ' <<<"$out")" = 2344 ] || it_fail "paged replay: not one line per dead letter"
[ "$(grep '^replayed ' <<<"$out" | cut -d' ' -f2 | sort -u | wc -l)" = 2344 ] ||
    it_fail "paged replay: a dead letter replayed twice"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "paged replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = $((raw3 + 2344)) ] ||
    it_fail "paged replay: raw rows $(it_psql "SELECT count(*) FROM analytics.ar_view_sessions"), expected $((raw3 + 2344))"
[ "$(it_psql "SELECT count(*) FILTER (WHERE replayed_at IS NULL) || ' ' || count(*)
              FROM analytics.dead_letters WHERE reason = 'paged'")" = "1 2345" ] ||
    it_fail "paged replay: only the skipped one should be left unreplayed"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the paged replay"
it_pass "dlq replay: 2,345 dead letters replayed a page at a time, each once"

# Pages are bounded in bytes too (16 MiB of payloads past a page's first):
# 40 dead letters of 1 MB each go in pages of 17, each replayed once (before:
# 1,000 at a time whatever their size, 1.1 GB for 1,100 such letters). No
# collector writes such an event (an event takes at most 64 KiB): the
# aggregator makes each an invalid_payload dead letter, its payload cut.
raw4=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")
dead4=$(it_psql "SELECT coalesce(max(id), 0) FROM analytics.dead_letters")
it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, payload)
         SELECT 'test', 'big-' || g, 'big', '{\"event_id\":\"' || gen_random_uuid() || '\",\"session_id\":\"'
                || gen_random_uuid() || '\",\"ar_content_id\":1,\"received_at\":\"'
                || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || '\",\"pad\":\"'
                || repeat('x', 1000000) || '\"}'
         FROM generate_series(1, 40) g" >/dev/null
out=$("$ARVCTL" dlq replay --reason big 2>&1) || it_fail "replay of large dead letters: $out"
grep -q "^40 replayed, 0 skipped, 0 failed$" <<<"$out" || it_fail "replay of large dead letters: $(tail -n 1 <<<"$out")"
[ "$(grep '^replayed ' <<<"$out" | cut -d' ' -f2 | sort -u | wc -l)" = 40 ] ||
    it_fail "replay of large dead letters: not each once"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "large replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions")" = "$raw4" ] ||
    it_fail "large replay: events over 64 KiB counted"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters
              WHERE id > $dead4 AND reason = 'invalid_payload' AND length(payload) BETWEEN 65536 AND 66000
                AND detail LIKE 'field e is 10001__ bytes: an event takes at most 65536;%'")" = 40 ] ||
    it_fail "large replay: expected 40 invalid_payload dead letters of 64 KiB: $(it_psql "SELECT reason, left(detail, 120) FROM analytics.dead_letters WHERE id > $dead4 LIMIT 2")"
it_psql "DELETE FROM analytics.dead_letters WHERE reason = 'big' OR id > $dead4"
it_pass "dlq replay: 40 dead letters of 1 MB in pages bounded in bytes, each once (each then invalid: over 64 KiB)"

# Replayed events whose content is still unknown become dead letters again:
# a replay takes the dead letters there were when it started, and ends.
it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, detail, payload)
         SELECT 'test', 'unknown-' || g, reason, detail,
                regexp_replace(regexp_replace(payload, '\"event_id\":\"[^\"]*\"', '\"event_id\":\"' || gen_random_uuid() || '\"'),
                               '\"ar_content_id\":999999999', '\"ar_content_id\":999999998')
         FROM analytics.dead_letters, generate_series(1, 1500) g WHERE id = $first" >/dev/null
# (The one skipped: $long_old, past the raw retention.)
rc=0; out=$(timeout 60 "$ARVCTL" dlq replay --reason unknown_content 2>&1) || rc=$?
[ "$rc" = 0 ] && grep -q "^1500 replayed, 1 skipped, 0 failed$" <<<"$out" ||
    it_fail "replay of still-unknown content (exit $rc): $(tail -n 1 <<<"$out")"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "still-unknown replay not drained"
[ "$(it_psql "SELECT count(*) FROM analytics.dead_letters WHERE reason = 'unknown_content'
              AND replayed_at IS NULL AND payload LIKE '%999999998%'")" = 1500 ] ||
    it_fail "still-unknown replay: expected 1500 new dead letters"
it_pass "dlq replay of content still unknown: the 1,500 dead letters there were, once each, then it ends"

# Content moved to another project counts there from then on, in rows of its
# own, as its raw rows do (content 3: project 1000, company 101); a rebuild of
# the day gives the same rows.
move_event() { # event_id
    redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e \
        "{\"event_id\":\"$1\",\"session_id\":\"0000c000-0000-4000-8000-00000000000${1: -1}\",\"ar_content_id\":3,\"received_at\":\"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\"}" >/dev/null
}
move_rows() {
    it_psql "SELECT string_agg(project_id || ':' || views, ' ' ORDER BY project_id)
             FROM analytics.rollup_content_daily WHERE ar_content_id = 3 AND day = (now() AT TIME ZONE 'UTC')::date"
}
move_event 0000c000-0000-4000-8000-000000000001
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "move: not drained"
before=$(it_psql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_content_daily
                  WHERE ar_content_id = 3 AND day = (now() AT TIME ZONE 'UTC')::date")
"$ARVCTL" content add --id 3 --project 1005 --company 101 >/dev/null || it_fail "content add (move)"
sleep 1.5 # the aggregator's cache: ARV_CONTENT_CACHE_TTL_S=1
move_event 0000c000-0000-4000-8000-000000000002
move_event 0000c000-0000-4000-8000-000000000003
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "move: not drained"
[ "$(move_rows)" = "1000:$before 1005:2" ] || it_fail "moved content's daily rows: $(move_rows), expected 1000:$before 1005:2"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the move"
today=$(date -u +%F)
"$ARVCTL" rollups rebuild --from "$today" --to "$today" >/dev/null 2>&1 || it_fail "rebuild after the move"
[ "$(move_rows)" = "1000:$before 1005:2" ] || it_fail "moved content's daily rows after a rebuild: $(move_rows)"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the move's rebuild"
it_pass "content moved to another project: counted there in rows of its own, the same after a rebuild"

# --- rollups rebuild, while a second load is ingested.
for t in rollup_content_hourly rollup_content_daily rollup_company_hourly rollup_company_daily \
    rollup_breakdown_daily; do
    it_psql "UPDATE analytics.$t SET views = views + 5"
done
[ "$(agg_check_rollups 2>/dev/null)" != 0 ] || it_fail "the corruption was not seen"
load 6000 0000a002 &
loader=$!
# The load spans 2.5 days back from now_ms: the rebuild starts the day before
# its oldest event's day, which has no raw partition.
oldest=$(date -u -d "@$((now_ms / 1000 - 216000))" +%F)
from=$(date -u -d "$oldest -1 day" +%F)
to=$(date -u +%F)
ndays=$((($(date -u -d "$to" +%s) - $(date -u -d "$from" +%s)) / 86400 + 1))
"$ARVCTL" rollups rebuild --from "$from" --to "$to" >"$IT_TMP/rebuild.out" 2>"$IT_TMP/rebuild.err" ||
    it_fail "rollups rebuild failed: $(cat "$IT_TMP/rebuild.err")"
wait "$loader"
grep -q "^skipped $from (1/$ndays): no raw partition$" "$IT_TMP/rebuild.err" ||
    it_fail "day without partition not skipped: $(cat "$IT_TMP/rebuild.err")"
grep -q "^rebuilt $oldest (2/$ndays): [1-9][0-9]* events, [0-9.]* s$" "$IT_TMP/rebuild.err" ||
    it_fail "no progress line: $(cat "$IT_TMP/rebuild.err")"
grep -q "^rebuilt $to ($ndays/$ndays)" "$IT_TMP/rebuild.err" || it_fail "no last progress line"
grep -q "^rebuilt $((ndays - 1)) days from $from to $to (1 skipped): " "$IT_TMP/rebuild.out" ||
    it_fail "summary: $(cat "$IT_TMP/rebuild.out")"
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 60 || it_fail "second load not drained"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the rebuild"
# A rebuild of a quiet state is a no-op on the numbers.
before=$(agg_rollup_digest)
"$ARVCTL" rollups rebuild --from "$from" --to "$to" 2>/dev/null >/dev/null || it_fail "second rebuild"
[ "$(agg_rollup_digest)" = "$before" ] || it_fail "a rebuild changed correct rollups"
# A rebuild follows ARV_BREAKDOWN_MAX_VALUES as the aggregators do: with 2,
# each content, day and dimension keeps the 2 values with the most views (ties:
# the lower value) and sums the rest as (other), every view still counted. A
# rebuild at the default (1,000) gives every value back.
raw_n=$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions
                 WHERE created_at >= DATE '$to' AND created_at < DATE '$to' + 1 AND NOT is_bot")
ARV_BREAKDOWN_MAX_VALUES=2 "$ARVCTL" rollups rebuild --from "$to" --to "$to" >/dev/null 2>&1 ||
    it_fail "rebuild with ARV_BREAKDOWN_MAX_VALUES=2"
got=$(it_psql "SELECT max(n) || ' ' || sum(v) FROM (SELECT count(DISTINCT value) n, sum(views) v
               FROM analytics.rollup_breakdown_daily WHERE day = '$to' AND dimension = 'city'
               GROUP BY company_id, ar_content_id) x")
[ "$got" = "3 $raw_n" ] || it_fail "capped rebuild: most values per content, views: $got, expected 3 $raw_n"
wrong=$(it_psql "WITH raw AS (SELECT company_id, ar_content_id, coalesce(city, 'unknown') v, count(*) n
                   FROM analytics.ar_view_sessions
                   WHERE created_at >= DATE '$to' AND created_at < DATE '$to' + 1 AND NOT is_bot
                   GROUP BY 1, 2, 3),
                 top AS (SELECT company_id, ar_content_id, v FROM (SELECT *, dense_rank() OVER
                   (PARTITION BY company_id, ar_content_id ORDER BY n DESC, v) r FROM raw) x WHERE r <= 2),
                 kept AS (SELECT DISTINCT company_id, ar_content_id, value v FROM analytics.rollup_breakdown_daily
                   WHERE day = '$to' AND dimension = 'city' AND value <> '(other)')
                 SELECT count(*) FROM ((SELECT * FROM top EXCEPT SELECT * FROM kept)
                   UNION ALL (SELECT * FROM kept EXCEPT SELECT * FROM top)) d")
[ "$wrong" = 0 ] || it_fail "capped rebuild: $wrong (content, value) pairs kept or dropped wrongly"
"$ARVCTL" rollups rebuild --from "$to" --to "$to" >/dev/null 2>&1 || it_fail "rebuild at the default cap"
[ "$(agg_rollup_digest)" = "$before" ] || it_fail "a rebuild at the default cap did not give every value back"
it_pass "rebuild: ARV_BREAKDOWN_MAX_VALUES=2 keeps the 2 values with the most views and (other), all views counted"
# A client's own "(other)" is not one of the values kept: with (other) x4,
# A x3 and B x2 and a cap of 2, A and B keep their rows (before: B was folded
# into (other), which took a place).
it_psql "INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id, company_id,
             session_id, city, created_at, received_at)
         SELECT gen_random_uuid(), 77, 1077, 555, gen_random_uuid(), c, TIMESTAMPTZ '$to 12:00Z',
                TIMESTAMPTZ '$to 12:00Z'
         FROM unnest(ARRAY['(other)', '(other)', '(other)', '(other)', 'A', 'A', 'A', 'B', 'B']) c"
ARV_BREAKDOWN_MAX_VALUES=2 "$ARVCTL" rollups rebuild --from "$to" --to "$to" >/dev/null 2>&1 ||
    it_fail "rebuild with a client's (other)"
got=$(it_psql "SELECT string_agg(value || ' ' || views, ', ' ORDER BY value) FROM analytics.rollup_breakdown_daily
               WHERE day = '$to' AND ar_content_id = 77 AND dimension = 'city'")
[ "$got" = "(other) 4, A 3, B 2" ] || it_fail "capped rebuild with a client's (other): $got"
# A detached partition is not the day's: its rollups are kept, not rebuilt
# from nothing (before: every rollup of the day deleted).
digest=$(agg_rollup_digest)
part=analytics.ar_view_sessions_p$(date -u -d "$to" +%Y%m%d)
it_psql "ALTER TABLE analytics.ar_view_sessions DETACH PARTITION $part"
out=$("$ARVCTL" rollups rebuild --from "$to" --to "$to" 2>&1) || it_fail "rebuild of a detached day: $out"
it_psql "ALTER TABLE analytics.ar_view_sessions ATTACH PARTITION $part
         FOR VALUES FROM ('$to 00:00Z') TO (TIMESTAMPTZ '$to 00:00Z' + interval '1 day')"
[ "$(agg_rollup_digest)" = "$digest" ] || it_fail "a rebuild of a detached day changed its rollups: $out"
it_psql "DELETE FROM analytics.ar_view_sessions WHERE company_id = 555"
"$ARVCTL" rollups rebuild --from "$to" --to "$to" >/dev/null 2>&1 || it_fail "rebuild after the (other) rows"
it_pass "capped rebuild: a client's (other) takes no place; a detached day's rollups kept"

# An arvctl stopped (Ctrl-Z) while it holds a day's rebuild lock: its session
# ends 15 s after it went idle in its transaction, and the lock with it
# (before: held for as long as arvctl stayed stopped, every aggregator's
# writes of that day waiting). A trigger makes the rebuild's statement last 2 s.
it_psql "CREATE FUNCTION public.arv_test_slow() RETURNS trigger LANGUAGE plpgsql AS
             \$\$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END \$\$;
         CREATE TRIGGER arv_test_slow AFTER INSERT ON analytics.rollup_company_daily
             FOR EACH STATEMENT EXECUTE FUNCTION public.arv_test_slow()"
"$ARVCTL" rollups rebuild --from "$to" --to "$to" >/dev/null 2>"$IT_TMP/stopped.err" &
stopped_pid=$!
sleep 1
kill -STOP "$stopped_pid"
t0=$SECONDS
for ((i = 0; i < 300; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'arvctl'")" = 0 ] && break
    sleep 0.1
done
took=$((SECONDS - t0))
free=$(it_psql "SELECT pg_try_advisory_xact_lock(1634891346, $(($(date -u -d "$to" +%s) / 86400)))")
kill -CONT "$stopped_pid"
rc=0; wait "$stopped_pid" || rc=$?
it_psql "DROP TRIGGER arv_test_slow ON analytics.rollup_company_daily; DROP FUNCTION public.arv_test_slow()"
[ "$i" -lt 300 ] && [ "$free" = t ] || it_fail "a stopped rebuild's session still held the day after 30 s"
[ "$rc" = 1 ] || it_fail "the stopped rebuild exited $rc once continued: $(cat "$IT_TMP/stopped.err")"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after the stopped rebuild"
it_pass "a rebuild stopped while holding its day: the session ended after about ${took} s, the day free, exit 1"
rc=0; "$ARVCTL" rollups rebuild --from 2026-13-01 --to "$to" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "bad date exited $rc, expected 2"
rc=0; "$ARVCTL" --breakdown-max-values abc rollups rebuild --from "$to" --to "$to" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "a bad global option value exited $rc, expected 2"
rc=0; "$ARVCTL" rollups rebuild --from "$to" --to "$from" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || it_fail "reversed range exited $rc, expected 2"
# A day past the raw retention whose partition a replayed old event recreated
# holds that event only: a rebuild must keep its daily rollups, not recompute
# them from it.
old_day=$(date -u -d '-100 days' +%F)
it_psql "SELECT analytics.ensure_day_partitions(DATE '$old_day', DATE '$old_day')" >/dev/null
it_psql "INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id, company_id,
           session_id, created_at, received_at)
         VALUES (gen_random_uuid(), 1, 1001, 101, gen_random_uuid(), DATE '$old_day' + interval '1 hour',
                 DATE '$old_day' + interval '1 hour');
         INSERT INTO analytics.rollup_company_daily (day, company_id, views) VALUES ('$old_day', 101, 5)"
"$ARVCTL" rollups rebuild --from "$old_day" --to "$old_day" >"$IT_TMP/rebuild.out" 2>"$IT_TMP/rebuild.err" ||
    it_fail "rebuild of an old day: $(cat "$IT_TMP/rebuild.err")"
grep -q "^skipped $old_day (1/1): older than ARV_RAW_RETENTION_DAYS (90)$" "$IT_TMP/rebuild.err" ||
    it_fail "a day past the raw retention was not skipped: $(cat "$IT_TMP/rebuild.err")"
[ "$(it_psql "SELECT views FROM analytics.rollup_company_daily WHERE day = '$old_day'")" = 5 ] ||
    it_fail "the old day's daily rollups were recomputed from a recreated partition"
it_psql "DROP TABLE analytics.ar_view_sessions_p$(date -u -d '-100 days' +%Y%m%d);
         DELETE FROM analytics.rollup_company_daily WHERE day = '$old_day'"
it_pass "rollups rebuild repairs corrupted rollups while ingesting, progress per day; days past the raw retention kept"

# A rebuild where transactions default to SERIALIZABLE (here PGOPTIONS; an
# ALTER DATABASE or ALTER ROLE does the same): it reads the day once the
# writers it waited for committed, as under READ COMMITTED. (Before, its
# snapshot was taken by the statement that found the day locked, and its
# DELETE of the rows a writer had updated since failed to serialize.)
day_to=$(($(date -u -d "$to" +%s) / 86400))
[ "$(it_psql "SELECT count(*) FROM analytics.rollup_company_daily WHERE day = '$to'")" -gt 0 ] ||
    it_fail "no company rollup rows on $to for the writer to update"
psql "$DATABASE_URL" -tAq -c "BEGIN; SELECT pg_advisory_xact_lock_shared($((0x61727652)), $day_to);
    UPDATE analytics.rollup_company_daily SET views = views + 1 WHERE day = '$to'; SELECT pg_sleep(2); COMMIT" >/dev/null &
writer=$!
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $day_to AND granted")" = 1 ] && break
    sleep 0.1
done
[ "$i" -lt 50 ] || it_fail "the writer never held the day"
rc=0; PGOPTIONS="-c default_transaction_isolation=serializable" "$ARVCTL" rollups rebuild --from "$to" --to "$to" \
    >/dev/null 2>"$IT_TMP/serializable.err" || rc=$?
wait "$writer"
[ "$rc" = 0 ] || it_fail "a rebuild under SERIALIZABLE exited $rc: $(cat "$IT_TMP/serializable.err")"
grep -q "waiting for $to" "$IT_TMP/serializable.err" || it_fail "the rebuild did not wait for the writer: $(cat "$IT_TMP/serializable.err")"
[ "$(agg_check_rollups)" = 0 ] || it_fail "rollups differ from raw after a rebuild under SERIALIZABLE"
it_pass "a rebuild where transactions default to SERIALIZABLE waits for the day's writers and reads what they committed"

# A database never migrated has no raw partition for any day, nor their
# parent: the error and hint of every other subcommand, exit 1, not each day
# skipped as dropped by retention and exit 0.
it_psql "CREATE DATABASE arv_bare"
rc=0; DATABASE_URL="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_bare" "$ARVCTL" rollups rebuild \
    --from "$to" --to "$to" >"$IT_TMP/bare.out" 2>"$IT_TMP/bare.err" || rc=$?
[ "$rc" = 1 ] && [ ! -s "$IT_TMP/bare.out" ] &&
    [ "$(cat "$IT_TMP/bare.err")" = 'arvctl: cannot read the raw rows: relation "analytics.ar_view_sessions" does not exist (run `arvctl migrate` first)' ] ||
    it_fail "rollups rebuild on a database never migrated (exit $rc): $(cat "$IT_TMP/bare.out" "$IT_TMP/bare.err")"
it_pass "rollups rebuild on a database never migrated: exit 1, run arvctl migrate first"
it_stop aggregator

# --- retention: old partitions, hourly rows, dedupe ids and dead letters go;
# daily rollups stay.
it_psql "INSERT INTO analytics.dead_letters (stream, entry_id, reason, payload, created_at)
         VALUES ('old', '1-1', 'unknown_content', '{}', now() - interval '100 days'),
                ('old', '1-2', 'unknown_content', '{}', now() - interval '89 days')" >/dev/null
it_psql "SELECT analytics.ensure_day_partitions(current_date - 200, current_date - 195)" >/dev/null
it_psql "INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id, company_id,
           session_id, created_at, received_at)
         VALUES (gen_random_uuid(), 1, 1001, 101, gen_random_uuid(), now() - interval '198 days',
                 now() - interval '198 days')"
it_psql "INSERT INTO analytics.event_ids VALUES (101, gen_random_uuid(), now() - interval '198 days'),
           (101, gen_random_uuid(), now() - interval '89 days')"
for t in rollup_content_hourly rollup_company_hourly; do
    cols="hour, company_id"
    vals="date_trunc('hour', now() - interval '%s days'), 101"
    [ "$t" = rollup_content_hourly ] && cols="$cols, project_id, ar_content_id" && vals="$vals, 1001, 1"
    it_psql "INSERT INTO analytics.$t ($cols, views) VALUES ($(printf "$vals" 500), 1), ($(printf "$vals" 450), 1),
               ($(printf "$vals" 420), 1), ($(printf "$vals" 399), 1)"
done
it_psql "INSERT INTO analytics.rollup_company_daily (day, company_id, views)
         VALUES (current_date - 500, 101, 1)"
old_ids=$(it_psql "SELECT count(*) FROM analytics.event_ids")
parts="SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics.ar_view_sessions'::regclass"
[ "$(it_psql "$parts AND inhrelid::regclass::text < 'analytics.ar_view_sessions_p$(date -u -d '-90 days' +%Y%m%d)'")" = 6 ] ||
    it_fail "expected 6 old partitions"
# A rebuild of the 198-day-old day holds that day's lock (here a session that
# holds it 5 s): retention must not drop the partition under it, and the
# steps after that drop still run meanwhile (the other partitions, the hourly
# rows, the dedupe ids).
day198=$(it_psql "SELECT (current_date - 198) - DATE '1970-01-01'")
psql "$DATABASE_URL" -tAq -c "SELECT pg_advisory_lock($((0x61727652)), $day198), pg_sleep(5)" >/dev/null &
holder=$!
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $day198")" = 1 ] && break
    sleep 0.1
done
# The aggregators above made today's pass over event_ids before these old ids
# were written: without its row, the next run makes a new one.
it_psql "DELETE FROM analytics.retention_passes" >/dev/null
it_start aggregator arv-aggregator ARV_RETENTION_INTERVAL_S=1
held="SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $day198 AND granted"
for ((i = 0; i < 30; i++)); do
    [ "$(it_psql "SELECT (SELECT count(*) FROM analytics.rollup_company_hourly WHERE hour < now() - interval '400 days')
          + (SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '91 days')
          + ($parts AND inhrelid::regclass::text < 'analytics.ar_view_sessions_p$(date -u -d '-90 days' +%Y%m%d)')")" = 1 ] &&
        break
    sleep 0.1
done
[ "$i" -lt 30 ] || it_fail "retention: one partition it could not drop kept the other steps from running"
[ "$(it_psql "$held")" = 1 ] || it_fail "retention: the day's lock was released too early for this test"
[ "$(it_psql "SELECT to_regclass('analytics.ar_view_sessions_p$(date -u -d '-198 days' +%Y%m%d)') IS NOT NULL")" = t ] ||
    it_fail "retention dropped a partition whose day a rebuild holds"
wait "$holder"
for ((i = 0; i < 150; i++)); do
    [ "$(it_psql "$parts AND inhrelid::regclass::text < 'analytics.ar_view_sessions_p$(date -u -d '-90 days' +%Y%m%d)'")" = 0 ] && break
    sleep 0.1
done
[ "$i" -lt 150 ] || it_fail "old partitions not dropped"
sleep 0.5
[ "$(it_psql "SELECT count(*) FROM analytics.ar_view_sessions WHERE created_at < now() - interval '90 days'")" = 0 ] ||
    it_fail "old raw rows left"
[ "$(it_psql "SELECT to_regclass('analytics.ar_view_sessions_p$(date -u -d '+7 days' +%Y%m%d)') IS NOT NULL")" = t ] ||
    it_fail "partitions not created 7 days ahead"
for t in rollup_content_hourly rollup_company_hourly; do
    [ "$(it_psql "SELECT count(*) FROM analytics.$t WHERE hour < now() - interval '400 days'")" = 0 ] ||
        it_fail "$t: rows older than 400 days left"
    [ "$(it_psql "SELECT count(*) FROM analytics.$t WHERE hour < now() - interval '398 days'")" = 1 ] ||
        it_fail "$t: the 399-day row was deleted"
done
[ "$(it_psql "SELECT count(*) FROM analytics.rollup_company_daily WHERE day = current_date - 500")" = 1 ] ||
    it_fail "a daily rollup was deleted"
# One day per statement: three old days in each of the two tables.
grep -q '"hourly_rows_deleted":6,"hourly_slices":6' "$IT_TMP/aggregator.log" ||
    it_fail "hourly rows not deleted a day at a time: $(grep retention_run "$IT_TMP/aggregator.log" | head -3)"
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '91 days'")" = 0 ] ||
    it_fail "old dedupe ids left"
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids")" = $((old_ids - 1)) ] ||
    it_fail "recent dedupe ids deleted"
# Dead letters, by default as long as the raw rows (ARV_RAW_RETENTION_DAYS).
[ "$(it_psql "SELECT string_agg(entry_id, ',') FROM analytics.dead_letters WHERE stream = 'old'")" = 1-2 ] ||
    it_fail "dead letters past the retention: $(it_psql "SELECT entry_id FROM analytics.dead_letters WHERE stream = 'old'")"
port=$IT_PORT_aggregator
# Read whole first: `curl | grep -q` fails under pipefail when grep stops
# reading before curl has written it all (curl exits 23).
m=$(curl -s "http://127.0.0.1:$port/metrics")
grep -q 'aggregator_retention_dropped_total{what="dead_letters"} 1' <<<"$m" ||
    it_fail "dead letters retention metric: $(grep retention <<<"$m")"
grep -q 'aggregator_retention_dropped_total{what="raw_partitions"} 6' <<<"$m" ||
    it_fail "retention metric: $(grep retention <<<"$m")"
grep -q retention_partition_dropped "$IT_TMP/aggregator.log" || it_fail "no retention log"
it_stop aggregator
# A shorter dedupe window (ARV_DEDUPE_RETENTION_DAYS): the 89-day-old id goes,
# one 10 days old stays.
it_psql "INSERT INTO analytics.event_ids VALUES (101, gen_random_uuid(), now() - interval '10 days')"
ids_89=$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '88 days'")
[ "$ids_89" = 1 ] || it_fail "expected the 89-day-old dedupe id, got $ids_89"
it_start aggregator arv-aggregator ARV_RETENTION_INTERVAL_S=1 ARV_DEDUPE_RETENTION_DAYS=30
for ((i = 0; i < 100; i++)); do
    [ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '31 days'")" = 0 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "ARV_DEDUPE_RETENTION_DAYS=30: dedupe ids older than 30 days left"
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at BETWEEN now() - interval '11 days' AND now() - interval '9 days'")" = 1 ] ||
    it_fail "ARV_DEDUPE_RETENTION_DAYS=30: the 10-day-old dedupe id was deleted"
it_stop aggregator
it_pass "retention: 6 old partitions dropped, hourly rows, dedupe ids and dead letters past retention deleted, daily kept; ARV_DEDUPE_RETENTION_DAYS keeps dedupe ids shorter"

# Dedupe ids go in slices of event_ids' pages (here 1 page per DELETE), in
# one pass a day shared by every aggregator: 3,000 old ids spread over the
# table's pages all go, in as many slices as it had pages, the recent ones
# stay, and the runs after the pass read nothing until the next day, nor does
# another aggregator process. (A run across UTC midnight would start the next
# day's pass.)
it_psql "INSERT INTO analytics.event_ids
         SELECT 101, gen_random_uuid(), now() - CASE WHEN g % 2 = 0 THEN interval '40 days'
                                                     ELSE interval '1 day' END
         FROM generate_series(1, 6000) g"
pages=$(it_psql "SELECT pg_relation_size('analytics.event_ids') / current_setting('block_size')::int")
[ "$pages" -ge 10 ] || it_fail "expected event_ids to span 10 pages or more, got $pages"
recent=$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at >= now() - interval '30 days'")
# slices_of NAME: the event_ids_slices of NAME's retention runs, one per line,
# after waiting for at least 3 runs.
slices_of() {
    for ((i = 0; i < 100; i++)); do
        [ "$(grep -c '"retention_run".*"ok":true' "$IT_TMP/$1.log")" -ge 3 ] && break
        sleep 0.1
    done
    [ "$i" -lt 100 ] || it_fail "$1: fewer than 3 retention runs"
    grep '"retention_run"' "$IT_TMP/$1.log" | sed -n 's/.*"event_ids_slices":\([0-9]*\).*/\1/p'
}
retention_env=(ARV_RETENTION_INTERVAL_S=1 ARV_DEDUPE_RETENTION_DAYS=30 ARV_RETENTION_SLICE_PAGES=1)
it_psql "DELETE FROM analytics.retention_passes" >/dev/null # the run above made today's pass
it_start slices arv-aggregator "${retention_env[@]}"
slices=$(slices_of slices)
it_stop slices
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '31 days'")" = 0 ] ||
    it_fail "sliced retention left old dedupe ids"
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids")" = "$recent" ] || it_fail "sliced retention deleted recent ids"
[ "$(echo "$slices" | head -n 1)" = "$pages" ] || it_fail "first pass: $(echo "$slices" | head -n 1) slices for $pages pages"
[ "$(echo "$slices" | sed -n '2,$p' | sort -u)" = 0 ] || it_fail "runs after the pass read event_ids again: $slices"
deleted=$(grep '"retention_run"' "$IT_TMP/slices.log" | head -n 1 | sed -n 's/.*"event_ids_deleted":\([0-9]*\).*/\1/p')
[ "$deleted" = 3000 ] || it_fail "first pass deleted $deleted ids, expected 3000"
it_start slices2 arv-aggregator "${retention_env[@]}"
slices=$(slices_of slices2)
it_stop slices2
[ "$(echo "$slices" | sort -u)" = 0 ] || it_fail "another aggregator read event_ids again: $slices"
# A pass interrupted at page h resumes there: a new process deletes the old
# ids from page h on, and only those.
it_psql "INSERT INTO analytics.event_ids
         SELECT 101, gen_random_uuid(), now() - interval '40 days' FROM generate_series(1, 1000)" >/dev/null
pages=$(it_psql "SELECT pg_relation_size('analytics.event_ids') / current_setting('block_size')::int")
h=$((pages / 2))
it_psql "UPDATE analytics.retention_passes SET next_page = $h, end_page = $pages WHERE relation = 'event_ids'" >/dev/null
left=$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '31 days'
                AND (ctid::text::point)[0] < $h")
it_start slices3 arv-aggregator "${retention_env[@]}"
slices=$(slices_of slices3)
it_stop slices3
[ "$(echo "$slices" | head -n 1)" = $((pages - h)) ] || it_fail "resumed pass: $(echo "$slices" | head -n 1) slices, expected $((pages - h))"
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE received_at < now() - interval '31 days'")" = "$left" ] ||
    it_fail "resumed pass: expected the $left old ids below page $h to stay until the next day's pass"
it_pass "dedupe ids deleted in $pages one-page slices, once a day for every aggregator, resumed where a pass stopped"

# An old backlog's dedupe ids are kept the window from their write: an event
# received 40 days ago (past ARV_DEDUPE_RETENTION_DAYS=30), written only now,
# keeps its id through the next pass, so a redelivery or client retry of it
# still counts once. (Its id was stamped with the event's receipt, which the
# pass took as expired at once.)
backlog_event() {
    redis-cli -p "$IT_REDIS_PORT" XADD "$ARV_STREAM" '*' v 1 e \
        "{\"event_id\":\"0000c100-0000-4000-8000-000000000001\",\"session_id\":\"0000c100-0000-4000-8000-000000000002\",\"ar_content_id\":1,\"received_at\":\"$(date -u -d '-40 days' +%Y-%m-%dT%H:%M:%S.000Z)\"}" >/dev/null
}
backlog_views() {
    it_psql "SELECT coalesce(sum(views), 0) FROM analytics.rollup_content_daily
             WHERE ar_content_id = 1 AND day = (now() AT TIME ZONE 'UTC')::date - 40"
}
# new_ids_pass NAME: makes the next retention run of aggregator NAME a new
# pass over event_ids and waits up to 10 s for it; false if none came.
new_ids_pass() {
    local runs i
    runs=$(grep -c '"retention_run"' "$IT_TMP/$1.log")
    it_psql "DELETE FROM analytics.retention_passes" >/dev/null
    for ((i = 0; i < 100; i++)); do
        grep '"retention_run"' "$IT_TMP/$1.log" | sed -n "$((runs + 1)),\$p" |
            grep -q '"event_ids_slices":[1-9]' && return 0
        sleep 0.1
    done
    return 1
}
views0=$(backlog_views)
it_start backlog arv-aggregator "${retention_env[@]}"
backlog_event
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "backlog event not drained"
[ "$(backlog_views)" = $((views0 + 1)) ] || it_fail "backlog event not counted: $(backlog_views)"
new_ids_pass backlog || it_fail "no new retention pass over event_ids" # over the page it went to
[ "$(it_psql "SELECT count(*) FROM analytics.event_ids WHERE event_id = '0000c100-0000-4000-8000-000000000001'")" = 1 ] ||
    it_fail "the backlog event's dedupe id was deleted as soon as it was written"
backlog_event # a client retry, or the entry again after a crash between COMMIT and XACK
agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "backlog retry not drained"
[ "$(backlog_views)" = $((views0 + 1)) ] || it_fail "backlog event counted twice: $(backlog_views)"
# The same for a forced replay of a dead letter received 40 days ago, sent
# again after its mark was lost (a failed UPDATE, arvctl killed): counted
# once, also after a pass over event_ids in between.
forced=$(old_dead forced-1 '40 days')
forced_rows="SELECT count(*) FROM analytics.ar_view_sessions s JOIN analytics.dead_letters d
             ON s.event_id = (d.payload::json->>'event_id')::uuid WHERE d.id = $forced"
for round in 1 2; do
    out=$(ARV_DEDUPE_RETENTION_DAYS=30 "$ARVCTL" dlq replay --id "$forced" --force) ||
        it_fail "forced replay $round failed: $out"
    grep -q "^1 replayed, 0 skipped, 0 failed$" <<<"$out" || it_fail "forced replay $round: $out"
    agg_wait_drained "$IT_REDIS_PORT" "$ARV_STREAM" 30 || it_fail "forced replay $round not drained"
    [ "$(it_psql "$forced_rows")" = 1 ] || it_fail "forced replay $round: $(it_psql "$forced_rows") raw rows"
    it_psql "UPDATE analytics.dead_letters SET replayed_at = NULL WHERE id = $forced" >/dev/null
    new_ids_pass backlog || it_fail "no new retention pass after forced replay $round"
done
it_stop backlog
it_pass "an old backlog's dedupe ids stay the dedupe window from their write: its retry, and a forced replay sent twice, count once"

# Stopping while retention is in a long statement (here a test trigger makes
# its event_ids DELETE sleep 60 s; statement_timeout is 600 s): the statement
# is cancelled and the process exits 0 within its deadline.
it_slow_statements event_ids DELETE 60
it_start slowret arv-aggregator
for ((i = 0; i < 100; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'arv-aggregator-retention'
                  AND query LIKE '%DELETE FROM analytics.event_ids%'")" = 1 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "retention never reached its event_ids DELETE"
it_stop slowret
# The server ends the statement too: its client is gone.
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'arv-aggregator-retention'")" = 0 ] && break
    sleep 0.1
done
[ "$i" -lt 50 ] || it_fail "the retention statement still runs 5 s after the aggregator stopped"
it_slow_statements_off event_ids
it_pass "stopping during a long retention statement: ended, exit 0 within the deadline"

# Partitions past the retention while batches hold the raw table (here a
# session that holds it as a COPY does, 4 s): a DROP waits for it at most 1 s
# with every new batch queued behind it, so a run tries one DROP and leaves
# the others to the next run, not one second of queued batches per
# partition. Once the table is free, they all go.
for d in 200 201 202; do
    it_psql "SELECT analytics.ensure_day_partitions(DATE '$(date -u -d "-$d days" +%F)', DATE '$(date -u -d "-$d days" +%F)')" >/dev/null
done
old_parts="$parts AND inhrelid::regclass::text < 'analytics.ar_view_sessions_p$(date -u -d '-90 days' +%Y%m%d)'"
[ "$(it_psql "$old_parts")" = 3 ] || it_fail "expected 3 partitions past the retention"
psql "$DATABASE_URL" -tAq -c "BEGIN; LOCK TABLE analytics.ar_view_sessions IN ROW EXCLUSIVE MODE;
    SELECT pg_sleep(4); COMMIT" >/dev/null &
holder=$!
for ((i = 0; i < 50; i++)); do
    [ "$(it_psql "SELECT count(*) FROM pg_locks WHERE relation = 'analytics.ar_view_sessions'::regclass
                  AND mode = 'RowExclusiveLock' AND granted")" -ge 1 ] && break
    sleep 0.1
done
it_start dropwait arv-aggregator ARV_RETENTION_INTERVAL_S=1
it_wait_log dropwait retention_run || it_fail "no retention run"
first_run=$(sed -n '1,/"retention_run"/p' "$IT_TMP/dropwait.log" | grep -c '"retention_failed".*"drop_partition"')
[ "$first_run" = 1 ] || it_fail "a run tried $first_run DROPs while batches held the raw table, expected 1"
wait "$holder"
for ((i = 0; i < 100; i++)); do
    [ "$(it_psql "$old_parts")" = 0 ] && break
    sleep 0.1
done
[ "$i" -lt 100 ] || it_fail "partitions past the retention not dropped once the raw table was free"
it_stop dropwait
it_pass "a DROP that waited for batches ends the run's drops: one queue of batches per run, the rest dropped later"

# A migration file of comments only (a placeholder) is applied and recorded,
# not refused with an empty message.
it_psql "CREATE DATABASE arv_mig"
mkdir "$IT_TMP/migrations"
cp "$IT_ROOT"/migrations/*.sql "$IT_TMP/migrations/"
printf -- '-- placeholder: nothing to change\n' >"$IT_TMP/migrations/9999_placeholder.sql"
DATABASE_URL="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig" "$ARVCTL" migrate \
    --migrations-dir "$IT_TMP/migrations" >"$IT_TMP/mig.out" 2>&1 || it_fail "migrate with a placeholder: $(cat "$IT_TMP/mig.out")"
[ "$(psql "postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig" -tAq -c "SELECT count(*) FROM analytics.schema_migrations WHERE version = '9999_placeholder'")" = 1 ] ||
    it_fail "the placeholder migration was not recorded"
it_pass "a migration of comments only is applied and recorded"

# A renamed migration (versions are file names) is refused, not run again; a
# failing statement of a migration file is reported without arvctl's hint to
# run the migrations (which is what is running).
# mig_run: arvctl migrate of $IT_TMP/migrations into arv_mig; output in
# mig.out, exit status in rc.
mig_run() {
    rc=0
    DATABASE_URL="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig" "$ARVCTL" migrate \
        --migrations-dir "$IT_TMP/migrations" >"$IT_TMP/mig.out" 2>&1 || rc=$?
}
mv "$IT_TMP/migrations/9999_placeholder.sql" "$IT_TMP/migrations/9999_placeholder_renamed.sql"
mig_run
[ "$rc" = 1 ] && grep -q "9999_placeholder_renamed.sql is 9999_placeholder.sql renamed" "$IT_TMP/mig.out" ||
    it_fail "renamed migration (exit $rc): $(cat "$IT_TMP/mig.out")"
rm "$IT_TMP/migrations/9999_placeholder_renamed.sql"
printf 'UPDATE analytics.no_such_table SET x = 1;\n' >"$IT_TMP/migrations/9998_broken.sql"
mig_run
[ "$rc" = 1 ] && grep -q 'migration 9998_broken.sql failed at line 1: relation "analytics.no_such_table" does not exist$' "$IT_TMP/mig.out" ||
    it_fail "failing migration (exit $rc): $(cat "$IT_TMP/mig.out")"
rm "$IT_TMP/migrations/9998_broken.sql"
[ "$(psql "postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig" -tAq -c "SELECT count(*) FROM analytics.schema_migrations WHERE version LIKE '999%'")" = 1 ] ||
    it_fail "a refused migration was recorded"
it_pass "a renamed migration is refused, a failing one reported as it is"

# Two revokes of one key at the same time: one revokes, the other says it
# was revoked already, and the first time stays. (A transaction holding the
# row makes both wait, then go one after the other.)
kid=$(it_psql "INSERT INTO analytics.api_keys (prefix, key_hash, name, is_admin)
               VALUES ('arv_race', encode(sha256('race'), 'hex'), 'race', true) RETURNING id")
psql "$DATABASE_URL" -tAq -c "BEGIN" -c "SELECT 1 FROM analytics.api_keys WHERE id = $kid FOR UPDATE" \
    -c "SELECT pg_sleep(1)" -c "COMMIT" >/dev/null &
holder=$!
sleep 0.3
"$ARVCTL" keys revoke "$kid" >"$IT_TMP/revoke1.out" 2>&1 &
r1=$!
"$ARVCTL" keys revoke "$kid" >"$IT_TMP/revoke2.out" 2>&1 &
r2=$!
wait "$holder" "$r1" "$r2" || it_fail "revoke: $(cat "$IT_TMP"/revoke[12].out)"
at=$(it_psql "SELECT to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM analytics.api_keys WHERE id = $kid")
[ "$(cat "$IT_TMP"/revoke[12].out | grep -c '^revoked key')" = 1 ] &&
    [ "$(cat "$IT_TMP"/revoke[12].out | grep -c "was already revoked at $at\$")" = 1 ] &&
    grep -q "at $at;" "$IT_TMP"/revoke[12].out || it_fail "two revokes at once: $(cat "$IT_TMP"/revoke[12].out), revoked_at $at"
rc=0; "$ARVCTL" keys revoke --help >"$IT_TMP/revoke.help" 2>&1 || rc=$?
[ "$rc" = 0 ] && grep -q "^Usage: arvctl keys" "$IT_TMP/revoke.help" || it_fail "keys revoke --help (exit $rc): $(cat "$IT_TMP/revoke.help")"
rc=0; "$ARVCTL" --bogus migrate >"$IT_TMP/bogus.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "unknown option '--bogus'" "$IT_TMP/bogus.out" || it_fail "arvctl --bogus (exit $rc): $(cat "$IT_TMP/bogus.out")"
it_pass "two revokes at once: one revocation, the first time kept; --help and unknown options"

# Migration 0011 (event_ids' key led by event_id) takes an index built
# beforehand without blocking (docs/operations.md, "Upgrades") as the key,
# leaving one index, the key, in the new order.
# migrate_before URL N [SQL...]: a new database URL (named after it), set up by
# the SQL statements given, migrated up to, not including, migration 00N.
migrate_before() {
    local url=$1 before=$2 sql f
    shift 2
    it_psql "CREATE DATABASE ${url##*/}"
    for sql in "$@"; do it_psql "$sql"; done
    rm -rf "$IT_TMP/mig_old"
    mkdir "$IT_TMP/mig_old"
    cp "$IT_ROOT"/migrations/00[0-9][0-9]_*.sql "$IT_TMP/mig_old/"
    for f in "$IT_TMP"/mig_old/*.sql; do
        [ "$((10#$(basename "$f" | cut -c1-4)))" -lt "$before" ] || rm -f "$f"
    done
    DATABASE_URL="$url" "$ARVCTL" migrate --migrations-dir "$IT_TMP/mig_old" >"$IT_TMP/mig_old.out" 2>&1 ||
        it_fail "migrate before $before: $(cat "$IT_TMP/mig_old.out")"
}
mig2="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig2"
migrate_before "$mig2" 11
psql "$mig2" -tAq -v ON_ERROR_STOP=1 -c "INSERT INTO analytics.event_ids VALUES (1, gen_random_uuid(), now())" \
    -c "CREATE UNIQUE INDEX CONCURRENTLY event_ids_pkey_new ON analytics.event_ids (event_id, company_id)" ||
    it_fail "building the index beforehand"
DATABASE_URL="$mig2" "$ARVCTL" migrate >"$IT_TMP/mig2.out" 2>&1 || it_fail "migrate 0011: $(cat "$IT_TMP/mig2.out")"
[ "$(psql "$mig2" -tAq -c "SELECT string_agg(pg_get_indexdef(indexrelid), '; ') FROM pg_index
                            WHERE indrelid = 'analytics.event_ids'::regclass")" = \
    "CREATE UNIQUE INDEX event_ids_pkey ON analytics.event_ids USING btree (event_id, company_id)" ] ||
    it_fail "event_ids' indexes after 0011: $(psql "$mig2" -tAq -c "SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'analytics.event_ids'::regclass")"
it_pass "migration 0011 takes the key built beforehand: one index, (event_id, company_id)"

# A key built beforehand that 0011 could not take stays behind it: one whose
# CREATE UNIQUE INDEX CONCURRENTLY failed is invalid yet updated at every
# insert into event_ids (every dedupe). Migration 0015 drops it, with a warning.
mig5="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig5"
migrate_before "$mig5" 11
psql "$mig5" -tAq -v ON_ERROR_STOP=1 -c "INSERT INTO analytics.event_ids VALUES
    (1, '0000c000-0000-4000-8000-000000000001', now()), (2, '0000c000-0000-4000-8000-000000000001', now())" ||
    it_fail "0015: event ids"
! psql "$mig5" -tAq -c "CREATE UNIQUE INDEX CONCURRENTLY event_ids_pkey_new ON analytics.event_ids (event_id)" \
    2>/dev/null || it_fail "0015: the build meant to fail did not"
[ "$(psql "$mig5" -tAq -c "SELECT indisvalid FROM pg_index WHERE indexrelid = 'analytics.event_ids_pkey_new'::regclass")" = f ] ||
    it_fail "0015: no invalid index left by the failed build"
DATABASE_URL="$mig5" "$ARVCTL" migrate >"$IT_TMP/mig5.out" 2>&1 || it_fail "migrate 0011-0015: $(cat "$IT_TMP/mig5.out")"
grep -q 'dropping index analytics.event_ids_pkey_new, left over from an upgrade (invalid: its build failed)' \
    "$IT_TMP/mig5.out" || it_fail "0015: no warning: $(cat "$IT_TMP/mig5.out")"
[ "$(psql "$mig5" -tAq -c "SELECT string_agg(pg_get_indexdef(indexrelid), '; ') FROM pg_index
                            WHERE indrelid = 'analytics.event_ids'::regclass")" = \
    "CREATE UNIQUE INDEX event_ids_pkey ON analytics.event_ids USING btree (event_id, company_id)" ] ||
    it_fail "0015: event_ids' indexes: $(psql "$mig5" -tAq -c "SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'analytics.event_ids'::regclass")"
it_pass "migration 0015 drops the invalid index a failed build beforehand left: event_ids keeps its key alone"

# Migration 0012 (project_id last in the per-content rollups' keys) takes a key
# built beforehand, and builds the others; rows already there stay.
mig3="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig3"
migrate_before "$mig3" 12
psql "$mig3" -tAq -v ON_ERROR_STOP=1 \
    -c "INSERT INTO analytics.rollup_content_hourly (hour, company_id, project_id, ar_content_id, views)
        VALUES ('2026-01-01 10:00+00', 1, 2, 3, 4)" \
    -c "CREATE UNIQUE INDEX CONCURRENTLY rollup_content_hourly_pkey_new
        ON analytics.rollup_content_hourly (company_id, ar_content_id, hour, project_id)" \
    -c "CREATE INDEX rollup_content_daily_pkey_new ON analytics.rollup_content_daily (company_id)" ||
    it_fail "building the index beforehand"
DATABASE_URL="$mig3" "$ARVCTL" migrate >"$IT_TMP/mig3.out" 2>&1 || it_fail "migrate 0012: $(cat "$IT_TMP/mig3.out")"
keys=$(psql "$mig3" -tAq -c "SELECT string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indrelid::regclass::text)
                             FROM pg_index WHERE indisprimary AND indrelid::regclass::text IN
                             ('analytics.rollup_content_hourly', 'analytics.rollup_content_daily', 'analytics.rollup_breakdown_daily')")
[ "$keys" = "CREATE UNIQUE INDEX rollup_breakdown_daily_pkey ON analytics.rollup_breakdown_daily USING btree (company_id, ar_content_id, day, dimension, value, project_id); CREATE UNIQUE INDEX rollup_content_daily_pkey ON analytics.rollup_content_daily USING btree (company_id, ar_content_id, day, project_id); CREATE UNIQUE INDEX rollup_content_hourly_pkey ON analytics.rollup_content_hourly USING btree (company_id, ar_content_id, hour, project_id)" ] ||
    it_fail "rollup keys after 0012: $keys"
[ "$(psql "$mig3" -tAq -c "SELECT count(*) FROM pg_index WHERE indrelid = 'analytics.rollup_content_hourly'::regclass")" = 3 ] ||
    it_fail "rollup_content_hourly: the index built beforehand was not taken as the key"
[ "$(psql "$mig3" -tAq -c "SELECT count(*) FROM pg_index WHERE indrelid = 'analytics.rollup_content_daily'::regclass")" = 3 ] ||
    it_fail "rollup_content_daily: an index under the key's name that is not the key was left"
[ "$(psql "$mig3" -tAq -c "SELECT views FROM analytics.rollup_content_hourly")" = 4 ] || it_fail "row lost by 0012"
it_pass "migration 0012 takes a key built beforehand, drops one that is not the key, builds the others: project_id last"


# Partition bounds whatever the database's DateStyle and TimeZone (migration
# 0013): written as timestamptz text under DateStyle Postgres in Asia/Shanghai
# ("... CST", read back as US Central), they moved 14 hours.
mig4="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_mig4"
migrate_before "$mig4" 13 "ALTER DATABASE arv_mig4 SET timezone = 'Asia/Shanghai'" \
    "ALTER DATABASE arv_mig4 SET datestyle = 'Postgres, MDY'"
# The function before 0013, run in the database's own settings.
psql "$mig4" -tAq -v ON_ERROR_STOP=1 -c "SELECT analytics.ensure_day_partitions(DATE '2020-01-01', DATE '2020-01-01')" \
    >/dev/null || it_fail "ensure_day_partitions before 0013"
DATABASE_URL="$mig4" "$ARVCTL" migrate >"$IT_TMP/mig4.out" 2>&1 || it_fail "migrate 0013: $(cat "$IT_TMP/mig4.out")"
# Only that one is named: arvctl's own partitions (0001's) begin at midnight UTC.
[ "$(grep -c 'does not begin at 00:00 UTC' "$IT_TMP/mig4.out")" = 1 ] &&
    grep -q 'ar_view_sessions_p20200101 does not begin at 00:00 UTC' "$IT_TMP/mig4.out" ||
    it_fail "0013's warnings: $(cat "$IT_TMP/mig4.out")"
psql "$mig4" -tAq -v ON_ERROR_STOP=1 -c "SELECT analytics.ensure_day_partitions(DATE '2020-02-01', DATE '2020-02-01')" \
    >/dev/null || it_fail "ensure_day_partitions after 0013"
bounds=$(PGTZ=UTC PGDATESTYLE=ISO psql "$mig4" -tAq -c "SELECT pg_get_expr(relpartbound, oid) FROM pg_class
                                                       WHERE relname = 'ar_view_sessions_p20200201'")
[ "$bounds" = "FOR VALUES FROM ('2020-02-01 00:00:00+00') TO ('2020-02-02 00:00:00+00')" ] ||
    it_fail "bounds made in Asia/Shanghai with DateStyle Postgres: $bounds"
# The mend docs/operations.md ("Upgrades") gives: the row moves to its day's partition.
psql "$mig4" -tAq -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || it_fail "the mend of a misaligned partition"
INSERT INTO analytics.ar_view_sessions (event_id, ar_content_id, project_id, company_id, session_id,
                                        created_at, received_at)
VALUES (gen_random_uuid(), 1, 1, 1, gen_random_uuid(), '2020-01-02 10:00+00', '2020-01-02 10:00+00');
BEGIN;
ALTER TABLE analytics.ar_view_sessions DETACH PARTITION analytics.ar_view_sessions_p20200101;
ALTER TABLE analytics.ar_view_sessions_p20200101 RENAME TO misaligned_p20200101;
SELECT analytics.ensure_day_partitions(DATE '2020-01-01', DATE '2020-01-02');
INSERT INTO analytics.ar_view_sessions SELECT * FROM analytics.misaligned_p20200101;
DROP TABLE analytics.misaligned_p20200101;
COMMIT;
SQL
[ "$(psql "$mig4" -tAq -c "SELECT count(*) FROM analytics.ar_view_sessions_p20200102")" = 1 ] ||
    it_fail "the mended row is not in its day's partition"
it_pass "day partitions begin at 00:00 UTC whatever the database's DateStyle and TimeZone; 0013 names those that do not, and the documented mend works"

# Sessions ensuring the same missing partitions at once (workers whose reads
# reach one old day): none fails with 42P07 "already exists" (or 23505 on the
# catalog), as 7 or 8 of these 8 pairs did before migration 0016.
parts="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv_parts"
it_psql "CREATE DATABASE arv_parts"
DATABASE_URL="$parts" "$ARVCTL" migrate >"$IT_TMP/parts.out" 2>&1 || it_fail "migrate arv_parts: $(cat "$IT_TMP/parts.out")"
failed=0
for ((r = 0; r < 8; r++)); do
    first="DATE '2001-01-01' + $((r * 7))"
    for k in 1 2; do
        psql "$parts" -tAq -v ON_ERROR_STOP=1 \
            -c "SELECT analytics.ensure_day_partitions($first, $first + 6)" >"$IT_TMP/parts.$k" 2>&1 &
    done
    for k in 1 2; do wait -n || failed=$((failed + 1)); done
done
[ "$failed" = 0 ] || it_fail "concurrent ensure_day_partitions: $failed of 16 calls failed: $(cat "$IT_TMP"/parts.[12])"
[ "$(psql "$parts" -tAq -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'analytics.ar_view_sessions'::regclass
      AND inhrelid::regclass::text LIKE 'analytics.ar_view_sessions_p2001%'")" = 56 ] ||
    it_fail "concurrent ensure_day_partitions: not 56 partitions of 2001"
it_pass "sessions ensuring the same partitions at once: 16 calls, none failed, 56 partitions"
