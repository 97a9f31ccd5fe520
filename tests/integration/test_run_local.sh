#!/usr/bin/env bash
# scripts/run-local.sh, the README's command that runs the whole pipeline (here
# with the binaries under test, a data folder and ports of its own): it comes
# up; a second run with the same data folder refuses to start and leaves the
# first one's servers alone; a stop whose log lines cannot be written (stderr
# a pipe whose reader is gone, as after Ctrl-C on `... | tee`) still stops
# everything; and a run killed without its cleanup is taken up by the next.
. "$(dirname "$0")/lib.sh"
BIN=${1:?usage: test_run_local.sh BIN_DIR}
IT_TMP=$(mktemp -d /tmp/arv-it.XXXXXX)
chmod 755 "$IT_TMP"
D=$IT_TMP/local
RUN_PIDS=()
cleanup() {
    local pid
    for pid in "${RUN_PIDS[@]}" $(daemon_pids); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    arv_stop_postgres "$D/postgres" || true
    arv_stop_redis "$D/redis" "$REDIS_PORT" || true
    [ -n "${IT_KEEP:-}" ] || rm -rf "$IT_TMP"
}
trap cleanup EXIT
REDIS_PORT=$(arv_free_port)
export ARV_BIN_DIR=$BIN ARV_DATA_DIR=$D ARV_REDIS_PORT=$REDIS_PORT ARV_PG_PORT=$(arv_free_port) \
    ARV_PG_FSYNC=off ARV_COLLECTOR_LISTEN=127.0.0.1:$(arv_free_port) \
    ARV_AGGREGATOR_LISTEN=127.0.0.1:$(arv_free_port) ARV_REPORTER_LISTEN=127.0.0.1:$(arv_free_port)

# run NAME [stderr]: starts scripts/run-local.sh in the background (stderr to
# $IT_TMP/NAME.err unless given); RUN is its pid.
run() {
    bash "$IT_ROOT/scripts/run-local.sh" >"$IT_TMP/$1.out" 2>"${2:-$IT_TMP/$1.err}" &
    RUN=$!
    RUN_PIDS+=("$RUN")
}
# up NAME: waits up to 60 s for its banner.
up() {
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q "is running" "$IT_TMP/$1.out" 2>/dev/null && return 0
        kill -0 "$RUN" 2>/dev/null || break
        sleep 0.1
    done
    it_fail "$1: not up: $(tail -5 "$IT_TMP/$1.err" 2>/dev/null)"
}
# gone PID SECONDS: true once PID has exited.
gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}
# daemon_pids: the processes listening on the three daemons' ports.
daemon_pids() {
    local l
    for l in "$ARV_COLLECTOR_LISTEN" "$ARV_AGGREGATOR_LISTEN" "$ARV_REPORTER_LISTEN"; do
        ss -Htlnp "( sport = :${l##*:} )" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
    done
}
servers_up() {
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG &&
        psql "postgresql://arv@127.0.0.1:$ARV_PG_PORT/arv" -tAqc "SELECT 1" 2>/dev/null | grep -q 1
}
# all_stopped WHAT DAEMON_PIDS...: no server of the data folder, no daemon.
all_stopped() {
    local what=$1 pid
    shift
    ! arv_redis_pid "$D/redis" >/dev/null || it_fail "$what: Redis still runs"
    [ ! -f "$D/postgres/data/postmaster.pid" ] || it_fail "$what: PostgreSQL still runs"
    for pid in "$@"; do
        gone "$pid" 5 || it_fail "$what: daemon $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) still runs"
    done
}

run first
first=$RUN
up first
servers_up || it_fail "first run: its servers do not answer"
curl -fsS "http://$ARV_REPORTER_LISTEN/api/health/readiness" >/dev/null || it_fail "first run: reporter not ready"
daemons=($(daemon_pids))
[ "${#daemons[@]}" = 3 ] || it_fail "first run: daemons ${daemons[*]}"
it_pass "scripts/run-local.sh brings the pipeline up"

# A second run with the same data folder: refused at once; the first run and
# its servers untouched. Before, it stopped the first run's servers on its way out.
run second
gone "$RUN" 20 || it_fail "second run: still running"
wait "$RUN" && it_fail "second run: exit 0"
grep -q "another scripts/run-local.sh runs" "$IT_TMP/second.err" ||
    it_fail "second run: $(cat "$IT_TMP/second.err")"
kill -0 "$first" 2>/dev/null || it_fail "second run: the first run is gone"
servers_up || it_fail "second run: the first run's servers were stopped"
it_pass "a second run with the same data folder refuses to start, the first one's servers untouched"

# A stop whose log lines fail (its stderr a pipe whose reader is gone):
# everything stops all the same. Before, the first log line ended the cleanup.
kill -TERM "$first"
gone "$first" 30 || it_fail "first run: still running 30 s after SIGTERM"
all_stopped "first run stopped" "${daemons[@]}"
mkfifo "$IT_TMP/err.fifo"
cat "$IT_TMP/err.fifo" >"$IT_TMP/third.err" &
reader=$!
run third "$IT_TMP/err.fifo"
third=$RUN
up third
daemons=($(daemon_pids))
kill "$reader"
wait "$reader" 2>/dev/null || true
kill -TERM "$third"
gone "$third" 30 || it_fail "third run: still running 30 s after SIGTERM"
all_stopped "a stop with stderr a pipe nobody reads" "${daemons[@]}"
it_pass "a stop whose log lines cannot be written still stops the daemons and both servers"

# A run killed without its cleanup: its daemons and servers outlive it. The
# next run stops the daemons, takes up the servers, and comes up. Before,
# PostgreSQL's second start failed and the run stopped, leaving the daemons.
run fourth
up fourth
daemons=($(daemon_pids))
kill -KILL "$RUN"
gone "$RUN" 5 || it_fail "fourth run: not killed"
servers_up || it_fail "fourth run killed: its servers are gone"
run fifth
fifth=$RUN
up fifth
for pid in "${daemons[@]}"; do
    gone "$pid" 1 || it_fail "fifth run: the killed run's daemon $pid still runs"
done
grep -q "the PostgreSQL started in .* before still runs; using it" "$IT_TMP/fifth.err" ||
    it_fail "fifth run: $(cat "$IT_TMP/fifth.err")"
curl -fsS "http://$ARV_COLLECTOR_LISTEN/api/health/readiness" >/dev/null || it_fail "fifth run: collector not ready"
daemons=($(daemon_pids))
kill -TERM "$fifth"
gone "$fifth" 30 || it_fail "fifth run: still running 30 s after SIGTERM"
all_stopped "fifth run stopped" "${daemons[@]}"
it_pass "a run killed without its cleanup: the next stops its daemons, takes up its servers, comes up"
