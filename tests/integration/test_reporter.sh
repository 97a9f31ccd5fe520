#!/usr/bin/env bash
# arv-reporter against known rollup rows (daily per content and per company, as
# the aggregator keeps them): the seed endpoints' numbers equal exact SQL
# over the same events; API-key scopes (401/403), bad ids, the dashboard page
# and its headers, revocation within the cache TTL, 503 + readiness while
# PostgreSQL is down or hung, a second reporter on its port refused, clean stop
# on SIGTERM and on SIGHUP.
. "$(dirname "$0")/lib.sh"
it_setup "${1:?usage: test_reporter.sh BIN_DIR}"

# --check-config reads ARV_ZONEINFO_DIR: without it every request would be a
# 400, even tz=UTC.
rc=0; out=$(ARV_ZONEINFO_DIR=/nonexistent "$IT_BIN/arv-reporter" --check-config 2>&1) || rc=$?
[ "$rc" = 1 ] && [[ $out == *"ARV_ZONEINFO_DIR: cannot read '/nonexistent/UTC'"* ]] ||
    it_fail "--check-config with no zoneinfo (exit $rc): $out"

# Registry: company 1 owns projects 10, 11 and 99; company 2 owns project 20;
# project 30 is shared. Events (offset = days before today, UTC) go into a
# scratch table; the rollup is built from it, and the expected answers are exact
# SQL over it.
it_psql "
INSERT INTO analytics.ar_content (id, project_id, company_id) VALUES
  (100, 10, 1), (101, 10, 1), (110, 11, 1), (200, 20, 2), (300, 30, 1), (301, 30, 2), (999, 99, 1);
CREATE TABLE public.it_events (ar_content_id bigint, off int, session text, duration int, video bool);
INSERT INTO public.it_events VALUES
  (100, 0, 's1', 10, true), (100, 0, 's2', 20, false), (100, 0, 's1', 30, true),
  (100, 5, 's3', 40, false), (100, 29, 's4', 50, true),
  (100, 30, 's5', 60, true), (100, -1, 's6', 70, true),
  (101, 1, 's1', 5, false), (101, 2, 's7', 7, false), (110, 3, 's8', 0, true),
  (200, 0, 's9', 100, true), (200, 10, 's10', 200, false), (200, 40, 's11', 300, true),
  (300, 0, 's12', 1, false), (301, 0, 's13', 2, true);
INSERT INTO analytics.rollup_content_daily (day, company_id, project_id, ar_content_id, views,
    sessions, video_plays, duration_sum, duration_count)
SELECT (now() AT TIME ZONE 'UTC')::date - e.off, c.company_id, c.project_id, e.ar_content_id,
       count(*), hll_add_agg(hll_hash_text(e.session), 12, 5), count(*) FILTER (WHERE e.video),
       sum(e.duration), count(e.duration)
FROM public.it_events e JOIN analytics.ar_content c ON c.id = e.ar_content_id GROUP BY 1, 2, 3, 4;
INSERT INTO analytics.rollup_content_daily (day, company_id, project_id, ar_content_id, views)
VALUES ((now() AT TIME ZONE 'UTC')::date - 4, 1, 99, 999, 0);
INSERT INTO analytics.rollup_company_daily (day, company_id, views, sessions, video_plays,
    duration_sum, duration_count)
SELECT day, company_id, sum(views), hll_union_agg(sessions), sum(video_plays), sum(duration_sum),
       sum(duration_count)
FROM analytics.rollup_content_daily GROUP BY 1, 2;
INSERT INTO analytics.stream_watermarks (stream, complete_until, updated_at) VALUES
  ('a', '2026-01-01T10:00:00.123456Z', now()), ('b', '2026-01-01T10:00:05Z', now()),
  ('dead', '2025-01-01T00:00:00Z', now() - interval '1 hour');" >/dev/null

# expected WHERE-CLAUSE: the exact answer over the window's events as one JSON object.
expected() {
    it_psql "SELECT json_build_object('views', count(*), 'unique_sessions', count(DISTINCT session),
        'video_plays', count(*) FILTER (WHERE video),
        'avg_duration_seconds', coalesce(round(avg(duration)::numeric, 2), 0),
        'active_content', count(DISTINCT e.ar_content_id))
      FROM public.it_events e JOIN analytics.ar_content c ON c.id = e.ar_content_id
      WHERE e.off BETWEEN 0 AND 29 AND ($1)"
}

admin=$("$IT_BIN/arvctl" keys create --admin --name it-admin 2>/dev/null)
k1=$("$IT_BIN/arvctl" keys create --company 1 --name it-c1 2>/dev/null)
k2=$("$IT_BIN/arvctl" keys create --company 2 2>/dev/null)
gone=$("$IT_BIN/arvctl" keys create --company 2 2>/dev/null)
for k in "$admin" "$k1" "$k2" "$gone"; do
    [[ $k =~ ^arv_[0-9A-Za-z]{40}$ ]] || it_fail "arvctl keys create printed '$k'"
done
gone_id=$(it_psql "SELECT max(id) FROM analytics.api_keys")
"$IT_BIN/arvctl" keys revoke "$gone_id" >/dev/null || it_fail "revoke"
[ "$(it_psql "SELECT count(*) FROM analytics.api_keys WHERE key_hash = encode(sha256('$admin'), 'hex')")" = 1 ] ||
    it_fail "the key's SHA-256 is not what is stored"

it_start reporter arv-reporter ARV_AUTH_CACHE_TTL=1 ARV_QUERY_TIMEOUT_MS=1000
R="http://127.0.0.1:$IT_PORT_reporter"
arv_wait_http "$R/api/health/readiness" 200 10 || it_fail "reporter not ready"

# A second reporter on its port does not share it (SO_REUSEPORT would let it):
# it exits 1 at once, saying the address is in use.
rc=0; out=$(ARV_LISTEN="127.0.0.1:$IT_PORT_reporter" timeout 10 "$IT_BIN/arv-reporter" 2>&1) || rc=$?
[ "$rc" = 1 ] && [ "$(wc -l <<<"$out")" = 1 ] && [[ $out == *'"listen_failed"'*'Address already in use'* ]] ||
    it_fail "a second reporter on the port (exit $rc): $out"
it_pass "a second reporter on a port in use exits 1: address in use"

get() { curl -s -H "Authorization: Bearer $1" "$R$2"; }
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$R$2"; }
# same FIELDS ACTUAL EXPECTED
same() {
    local f
    for f in $1; do
        [ "$(jq -c ".$f" <<<"$2")" = "$(jq -c ".$f" <<<"$3")" ] ||
            it_fail "$f: got $(jq -c ".$f" <<<"$2"), expected $(jq -c ".$f" <<<"$3") in $2"
    done
}
today=$(date -u +%F)
from=$(date -u -d "$today - 29 days" +%F)
E="views unique_sessions video_plays avg_duration_seconds"

ov=$(get "$admin" /api/analytics/overview)
ex=$(expected "true")
[ "$(jq -r .total_views <<<"$ov")" = "$(jq -r .views <<<"$ex")" ] || it_fail "overview: $ov vs $ex"
same "unique_sessions active_content" "$ov" "$ex"
[ "$(jq -r .period.from,.period.to,.period.tz <<<"$ov" | paste -sd' ')" = "$from $today UTC" ] ||
    it_fail "period: $ov"
[ "$(jq -r .data_complete_until <<<"$ov")" = "2026-01-01T10:00:00.123Z" ] ||
    it_fail "watermark: $ov"
[ "$(jq -r .unique_sessions_error <<<"$ov")" = 0.016 ] || it_fail "error bound: $ov"
# With no stream row kept in the last 10 minutes (every aggregator stopped),
# the floors of the streams last read still hold: they stop moving, they do
# not vanish; a row an hour older than those (a stream no longer read) stays
# out, and one within 10 minutes of the newest is in.
it_psql "UPDATE analytics.stream_watermarks SET updated_at = updated_at - interval '1 hour'" >/dev/null
ov=$(get "$admin" "/api/analytics/overview?period=7d")
[ "$(jq -r .data_complete_until <<<"$ov")" = "2026-01-01T10:00:00.123Z" ] ||
    it_fail "watermark with every row old: $ov"
it_psql "UPDATE analytics.stream_watermarks SET updated_at = now() - interval '69 minutes'
         WHERE stream = 'dead'" >/dev/null
ov=$(get "$admin" "/api/analytics/overview?period=90d")
[ "$(jq -r .data_complete_until <<<"$ov")" = "2025-01-01T00:00:00.000Z" ] ||
    it_fail "watermark with a row 9 minutes older than the newest: $ov"
it_psql "UPDATE analytics.stream_watermarks
         SET updated_at = CASE stream WHEN 'dead' THEN now() - interval '1 hour' ELSE now() END" >/dev/null

ov1=$(get "$k1" /api/analytics/overview)
ex=$(expected "c.company_id = 1")
[ "$(jq -r .total_views <<<"$ov1")" = "$(jq -r .views <<<"$ex")" ] || it_fail "c1 overview: $ov1"
same "unique_sessions active_content" "$ov1" "$ex"
[ "$(jq -r .company_id <<<"$ov1")" = 1 ] || it_fail "c1 overview scope: $ov1"

for spec in "admin companies 2 c.company_id=2" "k1 companies 1 c.company_id=1" \
    "admin projects 30 c.project_id=30" "k1 projects 10 c.project_id=10" \
    "k1 projects 99 c.project_id=99" "k2 ar-content 200 c.id=200" \
    "admin ar-content 100 c.id=100" "admin projects 4242 false"; do
    read -r who path id where <<<"$spec"
    ans=$(get "${!who}" "/api/analytics/$path/$id")
    same "$E" "$ans" "$(expected "$where")"
    field=$(jq -r 'keys_unsorted[0]' <<<"$ans")
    [ "$(jq -r ".$field" <<<"$ans")" = "$id" ] || it_fail "$path/$id id field: $ans"
done
[ "$(jq -r 'keys_unsorted[0]' <<<"$(get "$admin" /api/analytics/projects/10)")" = project_id ] ||
    it_fail "project answer must start with project_id"
it_pass "reporter numbers equal exact SQL over the same events"

# Closed days (before yesterday, UTC) read while the aggregators still owed
# some of them (every watermark here is in January, before their end) serve
# that one answer: once the backlog is written and the watermark has passed
# those days, the next answer over them shows it, dated by the new watermark.
# The part read then is complete, so it is kept: a later change to a closed
# day (direct SQL) waits for ARV_QUERY_CLOSED_TTL_MS (5 minutes here). From
# here on company 2's rollups are not it_events' any more.
closed_hits() {
    curl -s "$R/metrics" | awk '/^reporter_closed_cache_lookups_total\{result="hit"\}/ { print $2 }'
}
ans=$(get "$admin" "/api/analytics/companies/2?period=7d")
v=$(jq -r .views <<<"$ans")
[ "$(jq -r .data_complete_until <<<"$ans")" = 2026-01-01T10:00:00.123Z ] || it_fail "backlog: $ans"
it_psql "INSERT INTO analytics.rollup_company_daily (day, company_id, views)
         VALUES ((now() AT TIME ZONE 'UTC')::date - 3, 2, 1000);
         UPDATE analytics.stream_watermarks SET complete_until = now() WHERE stream IN ('a', 'b')" >/dev/null
h0=$(closed_hits)
# The same days asked as dates: another answer-cache entry, the same closed part.
ans=$(get "$admin" "/api/analytics/companies/2?from=$(date -u -d "$today - 6 days" +%F)&to=$today")
[ "$(jq -r .views <<<"$ans")" = $((v + 1000)) ] ||
    it_fail "closed days read during a backlog were reused once it was written: $ans (before: $v views)"
[[ "$(jq -r .data_complete_until <<<"$ans")" > "$(date -u -d "$today - 1 day" +%F)T00:00:00.000Z" ]] ||
    it_fail "the watermark past the closed days: $ans"
it_psql "UPDATE analytics.rollup_company_daily SET views = views + 100
         WHERE company_id = 2 AND day = (now() AT TIME ZONE 'UTC')::date - 3" >/dev/null
ans=$(get "$admin" "/api/analytics/timeseries?scope=company:2&interval=day&period=7d")
[ "$(jq -r .totals.views <<<"$ans")" = $((v + 1000)) ] ||
    it_fail "closed days read complete were not kept: $ans"
[ "$(closed_hits)" = $((h0 + 1)) ] || it_fail "closed-part hits: $h0, then $(closed_hits)"
it_pass "closed days read during a backlog are not reused: its rows show once the watermark passes them"

for spec in "k1 companies/2" "k1 projects/20" "k1 projects/30" "k1 projects/4242" \
    "k1 ar-content/200" "k1 ar-content/4242" "k2 companies/1" "k2 ar-content/100"; do
    read -r who path <<<"$spec"
    c=$(code "${!who}" "/api/analytics/$path")
    [ "$c" = 403 ] || it_fail "$who $path answered $c, expected 403"
done
[ "$(get "$k1" /api/analytics/companies/2 | jq -r .error)" = forbidden ] || it_fail "403 body"
it_pass "company keys see only their company (403 otherwise)"

hdr=$(curl -s -D - -o /dev/null "$R/api/analytics/overview")
grep -q "^HTTP/1.1 401" <<<"$hdr" || it_fail "no key: $hdr"
grep -qi '^WWW-Authenticate: Bearer' <<<"$hdr" || it_fail "401 without WWW-Authenticate: $hdr"
for k in "$gone" "arv_0000000000000000000000000000000000000000" "not-a-key"; do
    c=$(code "$k" /api/analytics/overview)
    [ "$c" = 401 ] || it_fail "key '$k' answered $c"
done
c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Basic YTpi" "$R/api/analytics/companies/1")
[ "$c" = 401 ] || it_fail "Basic auth answered $c"
body=$(get "$admin" /api/analytics/companies/abc)
[ "$(jq -r .error,.field <<<"$body" | paste -sd' ')" = "invalid_parameter id" ] ||
    it_fail "bad id: $body"
[ "$(code "$admin" /api/analytics/projects/1.5)" = 400 ] || it_fail "1.5 is not an id"
[ "$(code "$admin" /api/analytics/ar-content/-3)" = 400 ] || it_fail "-3 is not an id"
[ "$(code "$admin" /api/analytics/companies/1/x)" = 404 ] || it_fail "extra segment"
it_pass "401 / 400 / 404 as documented"

# The dashboard page: no key needed (it holds no data), the bytes of
# reporter/dashboard.html exactly, confined by its headers: its CSP names the
# SHA-256 of its one inline script and style (computed here with Perl), HEAD
# has the same headers and no body, and its requests are counted by route.
page="$IT_ROOT/reporter/dashboard.html"
hval() { # HEADERS NAME: the value of header NAME, without CR
    tr -d '\r' <<<"$1" | awk -v h="$(tr 'A-Z' 'a-z' <<<"$2"): " \
        'index(tolower($0), h) == 1 { print substr($0, length(h) + 1); exit }'
}
inline_text() { # TAG: the text of the page's TAG element
    perl -0777 -ne "/<$1>(.*?)<\/$1>/s and print \$1" "$page"
}
hdr=$(curl -s -D - -o "$IT_TMP/dashboard.html" "$R/dashboard")
grep -q "^HTTP/1.1 200" <<<"$hdr" || it_fail "GET /dashboard without a key: $hdr"
cmp "$IT_TMP/dashboard.html" "$page" || it_fail "GET /dashboard is not reporter/dashboard.html"
for want in "Content-Type: text/html; charset=utf-8" "X-Content-Type-Options: nosniff" \
    "Referrer-Policy: no-referrer" "Cache-Control: no-cache" "X-Frame-Options: DENY"; do
    [ "$(hval "$hdr" "${want%%: *}")" = "${want#*: }" ] || it_fail "/dashboard: no '$want' in $hdr"
done
[ -z "$(hval "$hdr" WWW-Authenticate)" ] || it_fail "/dashboard asks for a key: $hdr"
sha() { inline_text "$1" | perl -MDigest::SHA=sha256_base64 -0777 -ne 'print sha256_base64($_), "="'; }
csp="default-src 'none'; script-src 'sha256-$(sha script)'; style-src 'sha256-$(sha style)'; "
csp+="connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
[ "$(hval "$hdr" Content-Security-Policy)" = "$csp" ] ||
    it_fail "/dashboard CSP: $(hval "$hdr" Content-Security-Policy), expected $csp"
for want in "<title>ARV Analytics</title>" "'api/analytics/' + path" "api('timeseries'" \
    "api('top'" "api('breakdown'" "sessionStorage" "'Authorization': 'Bearer ' + key"; do
    grep -qF "$want" "$IT_TMP/dashboard.html" || it_fail "the dashboard page has no $want"
done
exec 3<>"/dev/tcp/127.0.0.1/$IT_PORT_reporter"
printf 'HEAD /dashboard HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n' >&3
cat <&3 >"$IT_TMP/dashboard.head"
exec 3<&-
head_hdr=$(cat "$IT_TMP/dashboard.head")
grep -q "^HTTP/1.1 200" <<<"$head_hdr" || it_fail "HEAD /dashboard: $head_hdr"
[ "$(sed -n '1,/^\r$/p' "$IT_TMP/dashboard.head" | wc -c)" = "$(wc -c <"$IT_TMP/dashboard.head")" ] ||
    it_fail "HEAD /dashboard sent a body"
[ "$(hval "$head_hdr" Content-Length)" = "$(wc -c <"$page")" ] || it_fail "HEAD Content-Length: $head_hdr"
diff <(tr -d '\r' <<<"$hdr" | grep -Ev '^(Date|Connection):' | sort) \
    <(tr -d '\r' <<<"$head_hdr" | grep -Ev '^(Date|Connection):' | sort) ||
    it_fail "HEAD /dashboard's headers differ from GET's"
c=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$R/dashboard")
[ "$c" = 405 ] || it_fail "POST /dashboard answered $c"
m=$(curl -s "$R/metrics")
for want in 'method="GET",status="200"} 1' 'method="HEAD",status="200"} 1' 'method="POST",status="405"} 1'; do
    grep -qF "http_requests_total{route=\"/dashboard\",$want" <<<"$m" ||
        it_fail "no http_requests_total{route=\"/dashboard\",$want"
done
# The inline script at least parses (only where node is installed: CI does not install it).
if command -v node >/dev/null; then
    inline_text script >"$IT_TMP/dashboard.js"
    node --check "$IT_TMP/dashboard.js" || it_fail "the dashboard's script does not parse"
    js="and its script parses"
else
    js="(node not installed: its script was not parsed)"
fi
it_pass "GET/HEAD /dashboard: the page without a key, its CSP and headers, $js"

# Revocation: a cached key stops working within the TTL (1 s here).
[ "$(code "$k2" /api/analytics/companies/2)" = 200 ] || it_fail "k2 before revocation"
"$IT_BIN/arvctl" keys revoke "$(it_psql "SELECT id FROM analytics.api_keys WHERE key_hash = encode(sha256('$k2'), 'hex')")" >/dev/null
sleep 1.2
[ "$(code "$k2" /api/analytics/companies/2)" = 401 ] || it_fail "revoked key still accepted after the TTL"
it_pass "revocation takes effect within ARV_AUTH_CACHE_TTL"

# Keys that are not cached cost a statement each, so a client sending random
# well-formed keys is limited per address (ARV_AUTH_LOOKUP_RPS/BURST): here 3
# lookups at once, then 429 without a statement; a cached key still passes,
# a client a trusted proxy forwards for has lookups of its own, and a second
# later one more lookup is allowed.
it_start lookups arv-reporter ARV_AUTH_LOOKUP_RPS=1 ARV_AUTH_LOOKUP_BURST=3 ARV_AUTH_CACHE_TTL=60 \
    ARV_TRUSTED_PROXIES=127.0.0.1
RL="http://127.0.0.1:$IT_PORT_lookups"
arv_wait_http "$RL/api/health/readiness" 200 10 || it_fail "lookups reporter not ready"
lcode() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$RL$2"; }
codes=$(lcode "$admin" /api/analytics/overview)
for i in 1 2 3 4 5; do codes+=" $(lcode "$(printf 'arv_%040d' "$i")" /api/analytics/overview)"; done
codes+=" $(lcode "$admin" /api/analytics/overview)"
[ "$codes" = "200 401 401 429 429 429 200" ] || it_fail "lookups per address: $codes"
hdr=$(curl -s -D - -o /dev/null -H "Authorization: Bearer arv_$(printf '%040d' 9)" "$RL/api/analytics/overview")
grep -q "^HTTP/1.1 429" <<<"$hdr" && grep -qi '^Retry-After: 1' <<<"$hdr" || it_fail "429 without Retry-After: $hdr"
misses=$(curl -s "$RL/metrics" | awk '/^reporter_auth_cache_lookups_total\{result="miss"\}/ {print $2}')
[ "$misses" = 3 ] || it_fail "lookups: $misses statements, expected 3"
c=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(printf 'arv_%040d' 7)" \
    -H "X-Forwarded-For: 198.51.100.7" "$RL/api/analytics/overview")
[ "$c" = 401 ] || it_fail "a client behind the trusted proxy shares the proxy's lookups: $c"
# Every X-Forwarded-For line counts, in order: a proxy that adds a line of its
# own after a client's forged one names the client, so rotating the forged
# line does not give a client fresh lookups (with the first line only, all 401).
xcodes=""
for i in 1 2 3 4 5; do
    xcodes+="$(curl -s -o /dev/null -w ' %{http_code}' -H "Authorization: Bearer $(printf 'arv_%039d%d' 8 "$i")" \
        -H "X-Forwarded-For: 10.8.8.$i" -H "X-Forwarded-For: 198.51.100.10" "$RL/api/analytics/overview")"
done
[ "$xcodes" = " 401 401 401 429 429" ] || it_fail "forged X-Forwarded-For lines: $xcodes"
sleep 1.1
[ "$(lcode "$(printf 'arv_%040d' 6)" /api/analytics/overview)" = 401 ] || it_fail "no lookup a second later"
it_stop lookups
it_pass "keys not cached: 3 looked up at once per client, then 429 without a statement ($codes); cached keys pass; X-Forwarded-For from a trusted proxy names the client"

# A query held by a lock: cancelled after ARV_QUERY_TIMEOUT_MS (1 s here) and
# answered 503, not left waiting for as long as the lock is held.
psql "$DATABASE_URL" -q -c "BEGIN; LOCK analytics.rollup_company_daily, analytics.rollup_company_hourly,
    analytics.rollup_content_daily, analytics.rollup_content_hourly IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(5); COMMIT" >/dev/null 2>&1 &
locker=$!
sleep 0.5
t=$(curl -s -o "$IT_TMP/locked.json" --max-time 6 -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $admin" "$R/api/analytics/timeseries?scope=all&period=90d&interval=week")
[ "${t% *}" = 503 ] || it_fail "a query held by a lock: $t $(cat "$IT_TMP/locked.json")"
awk -v s="${t#* }" 'BEGIN { exit !(s >= 0.9 && s < 3) }' || it_fail "locked query answered after ${t#* } s"
wait "$locker"
[ "$(code "$admin" "/api/analytics/timeseries?scope=all&period=90d&interval=week")" = 200 ] ||
    it_fail "the same query once the lock is gone"
# Answered 503 and retried by the client: a warning, not an error.
grep -q '"event":"reporter_query_failed".*"sqlstate":"57014"' "$IT_TMP/reporter.log" ||
    it_fail "the cancelled statement is not logged"
! grep -q '"level":"error".*"event":"reporter_query_failed".*"sqlstate":"57014"' "$IT_TMP/reporter.log" ||
    it_fail "a cancelled statement logged as an error"
it_pass "a query held by a lock is cancelled after ARV_QUERY_TIMEOUT_MS: 503 in ${t#* } s, a warning"

# PostgreSQL hung (every process SIGSTOPped: its kernel still acknowledges, so
# no TCP timeout fires, and statement_timeout, which the server runs, never
# does): a statement is given up ARV_QUERY_TIMEOUT_MS + 1 s (2 s here) after
# it started and answered 503; readiness is 503 until the server answers
# again, and everything works after SIGCONT.
unavailable() {
    curl -s "$R/metrics" | awk '/^reporter_queries_total\{endpoint="overview",outcome="db_unavailable"\}/ { print $2 }'
}
n0=$(unavailable)
it_pg_freeze
t=$(curl -s -o "$IT_TMP/hung.json" --max-time 8 -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $admin" "$R/api/analytics/overview?period=7d" || true)
[ "${t% *}" = 503 ] || it_fail "overview while PostgreSQL is hung: $t $(cat "$IT_TMP/hung.json" 2>/dev/null)"
awk -v s="${t#* }" 'BEGIN { exit !(s >= 1.9 && s < 3.5) }' || it_fail "hung: 503 after ${t#* } s"
jq -e '.error == "database_unavailable"' "$IT_TMP/hung.json" >/dev/null ||
    it_fail "hung: 503 body $(cat "$IT_TMP/hung.json")"
ready=$(curl -s -w ' %{http_code}' "$R/api/health/readiness")
[ "${ready##* }" = 503 ] || it_fail "readiness while PostgreSQL is hung: $ready"
jq -e '.failing | index("postgresql")' <<<"${ready% *}" >/dev/null ||
    it_fail "readiness does not name postgresql: $ready"
t2=$(curl -s -o /dev/null --max-time 8 -w '%{http_code} %{time_total}' \
    -H "Authorization: Bearer $admin" "$R/api/analytics/companies/1?period=7d" || true)
[ "${t2% *}" = 503 ] || it_fail "a second request while PostgreSQL is hung: $t2"
awk -v s="${t2#* }" 'BEGIN { exit !(s < 3.5) }' || it_fail "hung: second 503 after ${t2#* } s"
it_wait_log reporter '"level":"warning","event":"pg_query_timeout".*"elapsed_ms":[0-9]+' ||
    it_fail "no pg_query_timeout warning"
[ "$(unavailable)" = $((n0 + 1)) ] || it_fail "db_unavailable overviews: $n0, then $(unavailable)"
it_pg_thaw
arv_wait_http "$R/api/health/readiness" 200 15 || it_fail "readiness did not recover after SIGCONT"
[ "$(code "$admin" "/api/analytics/overview?period=7d")" = 200 ] || it_fail "overview after SIGCONT"
it_pass "PostgreSQL hung: 503 in ${t#* } s (next ${t2#* } s), readiness 503, recovery after SIGCONT"

# PostgreSQL down: 503 with Retry-After at once, readiness names postgresql;
# back by itself when it returns.
arv_stop_postgres "$IT_TMP/pg"
arv_wait_http "$R/api/health/readiness" 503 10 || it_fail "readiness stayed 200 without PostgreSQL"
jq -e '.failing | index("postgresql")' <<<"$(curl -s "$R/api/health/readiness")" >/dev/null ||
    it_fail "readiness does not name postgresql"
out=$(curl -s --max-time 3 -D - -H "Authorization: Bearer $admin" "$R/api/analytics/overview")
grep -q "^HTTP/1.1 503" <<<"$out" || it_fail "overview while PostgreSQL down: $out"
grep -qi "^Retry-After:" <<<"$out" || it_fail "503 without Retry-After: $out"
grep -q '"database_unavailable"' <<<"$out" || it_fail "503 body: $out"
arv_start_postgres "$IT_TMP/pg" "$IT_PG_PORT" || it_fail "postgres did not restart"
arv_wait_http "$R/api/health/readiness" 200 15 || it_fail "readiness did not recover"
[ "$(code "$admin" /api/analytics/overview)" = 200 ] || it_fail "overview after PostgreSQL returned"
it_pass "503 while PostgreSQL is down, recovery without restart"

# A stop while a request waits on a long statement (ARV_QUERY_TIMEOUT_MS 60 s,
# a lock held for 15 s): the request is answered 503 before the 10 s
# deadline and the reporter exits 0. Before, the deadline broke the loop with
# the request unanswered, and the reporter exited 1.
it_start slowstop arv-reporter ARV_QUERY_TIMEOUT_MS=60000
psql "$DATABASE_URL" -q -c "BEGIN; LOCK analytics.rollup_company_daily, analytics.rollup_company_hourly,
    analytics.rollup_content_daily, analytics.rollup_content_hourly IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(15); COMMIT" >/dev/null 2>&1 &
locker=$!
# waits_for WHAT SQL: up to 5 s for the query to answer t.
waits_for() {
    local i
    for ((i = 0; i < 50; i++)); do
        [ "$(psql "$DATABASE_URL" -tAqc "$2")" = t ] && return 0
        sleep 0.1
    done
    it_fail "a stop with a statement waiting: $1: $(psql "$DATABASE_URL" -tAqc "SELECT
        string_agg(coalesce(wait_event_type, '-') || ' ' || state || ' ' || left(query, 60), ' | ')
        FROM pg_stat_activity WHERE backend_type = 'client backend'")"
}
waits_for "the lock was never taken" "SELECT count(*) > 0 FROM pg_locks
    WHERE relation = 'analytics.rollup_company_daily'::regclass AND mode = 'AccessExclusiveLock' AND granted"
curl -s -o "$IT_TMP/slowstop.json" --max-time 14 -w '%{http_code}' -H "Authorization: Bearer $admin" \
    "http://127.0.0.1:$IT_PORT_slowstop/api/analytics/timeseries?scope=all&period=30d&interval=week" \
    >"$IT_TMP/slowstop.code" 2>/dev/null &
asker=$!
waits_for "the reporter's statement never waited on the lock" "SELECT count(*) > 0 FROM pg_stat_activity
    WHERE wait_event_type = 'Lock'"
it_stop slowstop
wait "$asker" || true
[ "$(cat "$IT_TMP/slowstop.code")" = 503 ] ||
    it_fail "a request in flight at a stop: $(cat "$IT_TMP/slowstop.code") $(cat "$IT_TMP/slowstop.json")"
jq -e '.error == "database_unavailable"' "$IT_TMP/slowstop.json" >/dev/null ||
    it_fail "a request in flight at a stop: body $(cat "$IT_TMP/slowstop.json")"
! grep -q '"shutdown_deadline_exceeded"' "$IT_TMP/slowstop.log" ||
    it_fail "a request in flight at a stop: the deadline passed"
wait "$locker" || true
it_pass "a stop with a statement that would outlast the 10 s deadline: answered 503, exit 0"

it_stop reporter
it_pass "reporter stops cleanly on SIGTERM"

# SIGHUP stops a daemon as SIGTERM does (the configuration comes from the
# environment at start: nothing to reload), not at once with status 129.
# Started with a soft descriptor limit below the hard one, it raises it (a
# low one failed zone-file opens as 400s); its routes are GETs, so a body over
# 16 KiB is refused rather than buffered (up to 1 MiB per connection before).
soft=$(ulimit -Sn)
ulimit -Sn 256
it_start reporter_hup arv-reporter
ulimit -Sn "$soft"
nofile=$(awk '/^Max open files/ {print $4}' "/proc/$IT_PID_reporter_hup/limits")
[ "$(ulimit -Hn)" -le 256 ] || [ "$nofile" = "$(ulimit -Hn)" ] ||
    it_fail "soft descriptor limit $nofile, hard $(ulimit -Hn)"
head -c 17000 /dev/zero | tr '\0' a >"$IT_TMP/body17k"
code=$(curl -s -o /dev/null -w '%{http_code}' -X GET --data-binary @"$IT_TMP/body17k" \
    "http://127.0.0.1:$IT_PORT_reporter_hup/api/health/status")
[ "$code" = 413 ] || it_fail "a 17 KB body to the reporter: $code"
it_stop reporter_hup HUP
grep -q '"event":"shutdown_started",.*"signal":"SIGHUP"' "$IT_TMP/reporter_hup.log" &&
    grep -q '"event":"shutdown_complete"' "$IT_TMP/reporter_hup.log" ||
    it_fail "no shutdown_started (SIGHUP) and shutdown_complete: $(cat "$IT_TMP/reporter_hup.log")"
it_pass "reporter raises its descriptor limit, refuses bodies over 16 KiB, stops cleanly on SIGHUP"
