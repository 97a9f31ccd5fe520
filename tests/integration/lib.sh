# Shared by the integration tests: a private Redis + PostgreSQL on free ports in a
# temporary folder, the daemons started on free ports, cleanup on exit.
# Usage: . lib.sh; it_setup BIN_DIR; ... ; it_pass
set -euo pipefail
IT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$IT_ROOT/scripts/lib/servers.sh"

IT_PIDS=()
IT_PG_FROZEN=
it_fail() {
    echo "FAIL: $*" >&2
    for f in "$IT_TMP"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

# it_kill_redis_in DIR: the Redis servers a test started in DIR's folders
# (one that failed before stopping them): only those arv_redis_pid knows as
# started there.
it_kill_redis_in() {
    local dir pid
    for dir in "$1"/*/; do
        pid=$(arv_redis_pid "${dir%/}") && kill -KILL "$pid" 2>/dev/null || true
    done
}

it_cleanup() {
    local pid
    for pid in "${IT_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # A stopped server would never stop: never leave one behind.
    [ -z "$IT_PG_FROZEN" ] || it_pg_thaw || true
    arv_stop_postgres "$IT_TMP/pg" || true
    arv_stop_redis "$IT_TMP/redis" "$IT_REDIS_PORT" || true
    it_kill_redis_in "$IT_TMP"
    if [ -n "${IT_KEEP:-}" ]; then
        rm -f "$IT_TMP/owner" # kept: not for it_sweep
    else
        rm -rf "$IT_TMP"
    fi
}

# it_sweep: what tests killed before their cleanup left (ctest SIGKILLs a test
# past its timeout, and no trap runs): for every folder of it_setup's whose
# test is gone, stops its daemons (found by the stream name it_setup exported
# to them), its PostgreSQL and its Redis servers, and removes it.
it_sweep() {
    local dir owner pid
    for dir in /tmp/arv-it.*/; do
        dir=${dir%/}
        # Only this user's, and only when its test is gone (kill -0 would
        # also fail on another user's live process).
        [ -O "$dir" ] || continue
        owner=$(cat "$dir/owner" 2>/dev/null) || continue
        [ -n "$owner" ] && [ ! -e "/proc/$owner" ] || continue
        for pid in $(grep -lzE "^ARV_STREAM=arv:it:$owner(:.*)?$" /proc/[0-9]*/environ 2>/dev/null |
            cut -d/ -f3); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        # A server the test froze (it_pg_freeze) would never stop.
        if pid=$(head -n 1 "$dir/pg/data/postmaster.pid" 2>/dev/null) && [ -n "$pid" ]; then
            kill -CONT "$pid" $(pgrep -P "$pid") 2>/dev/null || true
        fi
        arv_stop_postgres "$dir/pg" || true
        it_kill_redis_in "$dir"
        rm -rf "$dir" || true
    done
}

# it_setup BIN_DIR: servers up, migrated, environment exported.
it_setup() {
    IT_BIN=$1
    IT_TMP=$(mktemp -d /tmp/arv-it.XXXXXX)
    chmod 755 "$IT_TMP"
    echo "$$" >"$IT_TMP/owner" # for it_sweep
    trap it_cleanup EXIT
    IT_REDIS_PORT=$(arv_free_port)
    IT_PG_PORT=$(arv_free_port)
    arv_start_redis "$IT_TMP/redis" "$IT_REDIS_PORT" || it_fail "redis did not start"
    ARV_PG_FSYNC=off arv_start_postgres "$IT_TMP/pg" "$IT_PG_PORT" || it_fail "postgres did not start"
    export REDIS_URL="redis://127.0.0.1:$IT_REDIS_PORT/0"
    export DATABASE_URL="postgresql://arv@127.0.0.1:$IT_PG_PORT/arv"
    export ARV_ENV=production ARV_LOG_LEVEL=${ARV_LOG_LEVEL:-info}
    export ARV_STREAM="arv:it:$$"
    "$IT_BIN/arvctl" migrate >"$IT_TMP/migrate.log" 2>&1 || it_fail "arvctl migrate failed"
}

# it_start NAME BINARY [VAR=VALUE...]: starts a daemon on a free port; sets
# IT_PORT_<NAME> and IT_PID_<NAME>; waits for its status route.
it_start() {
    local name=$1 binary=$2
    shift 2
    local port
    port=$(arv_free_port)
    env ARV_LISTEN="127.0.0.1:$port" "$@" "$IT_BIN/$binary" 2>>"$IT_TMP/$name.log" &
    local pid=$!
    IT_PIDS+=("$pid")
    printf -v "IT_PORT_$name" '%s' "$port"
    printf -v "IT_PID_$name" '%s' "$pid"
    arv_wait_http "http://127.0.0.1:$port/api/health/status" 200 15 || it_fail "$name did not start"
}

# it_stop NAME [SIGNAL]: SIGTERM (or SIGNAL: HUP, INT), and the daemon must
# exit 0 within 10 s.
it_stop() {
    local name=$1 sig=${2:-TERM} pidvar="IT_PID_$1" rc=0
    local pid=${!pidvar}
    kill -"$sig" "$pid"
    local i
    for ((i = 0; i < 110; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && it_fail "$name did not stop within 11 s of SIG$sig"
    wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || it_fail "$name exited $rc after SIG$sig"
}

# it_wait_log NAME REGEX: waits up to 5 s for a line of daemon NAME's log to
# match (grep -E); false if none did.
it_wait_log() {
    local i
    for ((i = 0; i < 100; i++)); do
        grep -qE "$2" "$IT_TMP/$1.log" && return 0
        sleep 0.05
    done
    return 1
}

# A viewer's browser: events with curl's own user agent are a bot's, not counted.
IT_VIEWER_UA='Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1'

# it_post_batches COLLECTOR_URL COUNT FIRST [CONTENTS]: COUNT events in NDJSON
# batches of 500 (numbered from FIRST), one session per event, event i of a
# batch naming content 1 + i mod CONTENTS (default 1: content 1 only), each
# batch accepted whole.
it_post_batches() {
    local b
    for ((b = $3; b < $3 + $2 / 500; b++)); do
        awk -v b="$b" -v contents="${4:-1}" 'BEGIN { for (i = 0; i < 500; i++)
            printf "{\"ar_content_id\":%d,\"session_id\":\"%08x-0000-4000-8000-%012x\",\"duration_seconds\":5}\n", 1 + i % contents, 1000 + b, i }' \
            >"$IT_TMP/batch.ndjson"
        out=$(curl -s -A "$IT_VIEWER_UA" -H 'Content-Type: application/x-ndjson' \
            --data-binary @"$IT_TMP/batch.ndjson" "$1/api/analytics/ar-sessions")
        [ "$(jq -r .accepted <<<"$out")" = 500 ] || it_fail "batch $b: $out"
    done
}

it_psql() {
    psql "$DATABASE_URL" -tAq -v ON_ERROR_STOP=1 -c "$1"
}

# it_pg_freeze / it_pg_thaw: SIGSTOP / SIGCONT to the test's PostgreSQL, the
# postmaster first (stopped, it forks nothing new), then its children: a hung
# server, its sockets open and its kernel acknowledging, nothing answering.
# it_cleanup thaws a server left frozen.
it_pg_signal() {
    local pm child
    pm=$(head -n 1 "$IT_TMP/pg/data/postmaster.pid")
    kill "-$1" "$pm"
    for child in $(pgrep -P "$pm"); do kill "-$1" "$child" 2>/dev/null || true; done
}
it_pg_freeze() {
    IT_PG_FROZEN=1
    it_pg_signal STOP
}
it_pg_thaw() {
    it_pg_signal CONT
    IT_PG_FROZEN=
}

it_pass() {
    echo "PASS: $*"
}

# it_slow_statements TABLE OPERATION SECONDS: a test trigger makes every
# OPERATION (INSERT, DELETE, ...) statement on analytics.TABLE sleep SECONDS
# first, so that a check lands while it runs; it_slow_statements_off TABLE
# removes it.
it_slow_statements() {
    it_psql "CREATE FUNCTION analytics.test_slow() RETURNS trigger LANGUAGE plpgsql AS
               \$\$BEGIN PERFORM pg_sleep($3); RETURN NULL; END\$\$;
             CREATE TRIGGER test_slow BEFORE $2 ON analytics.$1
               FOR EACH STATEMENT EXECUTE FUNCTION analytics.test_slow()"
}

it_slow_statements_off() {
    it_psql "DROP TRIGGER test_slow ON analytics.$1; DROP FUNCTION analytics.test_slow()"
}
