#!/usr/bin/env bash
# scripts/lib/servers.sh against a server it did not start: arv_start_redis and
# arv_start_postgres on a port another Redis listens on fail (instead of the
# caller using that Redis), and arv_stop_redis / arv_stop_postgres for a folder
# whose server is not the one on the port leave that server running.
. "$(dirname "$0")/lib.sh"
: "${1:?usage: test_servers_lib.sh BIN_DIR}"
IT_TMP=$(mktemp -d /tmp/arv-it.XXXXXX)
chmod 755 "$IT_TMP"
PORT=$(arv_free_port)
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$IT_TMP" --save "" \
    --logfile "$IT_TMP/foreign.log" >/dev/null &
FOREIGN=$!
disown "$FOREIGN"
OTHER=
cleanup() {
    kill -KILL "$FOREIGN" $OTHER 2>/dev/null || true
    arv_stop_redis "$IT_TMP/ours" "$OURS_PORT" || true
    arv_stop_postgres "$IT_TMP/pg" || true
    [ -n "${IT_KEEP:-}" ] || rm -rf "$IT_TMP"
}
OURS_PORT=0
trap cleanup EXIT
arv_wait_port "$PORT" 10 || it_fail "the foreign redis did not start"

# foreign_alive WHAT: the foreign Redis still runs and answers on its port.
foreign_alive() {
    kill -0 "$FOREIGN" 2>/dev/null || it_fail "$1: the foreign redis is gone"
    local id
    id=$(redis-cli -p "$PORT" INFO server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
    [ "$id" = "$FOREIGN" ] || it_fail "$1: the redis on port $PORT is $id, not $FOREIGN"
}

rc=0; out=$(arv_start_redis "$IT_TMP/redis" "$PORT" 2>&1) || rc=$?
[ "$rc" != 0 ] && [[ $out == *"port $PORT is in use"* ]] ||
    it_fail "arv_start_redis on a port in use returned $rc: $out"
foreign_alive "after arv_start_redis"
arv_stop_redis "$IT_TMP/redis" "$PORT"
foreign_alive "after arv_stop_redis of a folder that started nothing"
# A pidfile naming a live process that is not a Redis (a pid reused).
sleep 60 >/dev/null 2>&1 &
OTHER=$!
disown "$OTHER"
mkdir -p "$IT_TMP/redis"
echo "$OTHER" >"$IT_TMP/redis/redis.pid"
arv_stop_redis "$IT_TMP/redis" "$PORT"
foreign_alive "after arv_stop_redis of a folder with a stale pidfile"
kill -0 "$OTHER" 2>/dev/null || it_fail "arv_stop_redis killed the process of a stale pidfile"
it_pass "arv_start_redis refuses a port in use; arv_stop_redis leaves another server alone"

# Ours, on a free port: started, answering, used again (not started twice),
# stopped; the foreign one untouched.
OURS_PORT=$(arv_free_port)
arv_start_redis "$IT_TMP/ours" "$OURS_PORT" || it_fail "arv_start_redis on a free port"
arv_redis_is_ours "$IT_TMP/ours" "$OURS_PORT" || it_fail "our redis is not the one on its port"
ours=$(cat "$IT_TMP/ours/redis.pid")
rc=0; out=$(arv_start_redis "$IT_TMP/ours" "$OURS_PORT" 2>&1) || rc=$?
[ "$rc" = 0 ] && [[ $out == *"the Redis started in $IT_TMP/ours before still runs; using it"* ]] ||
    it_fail "arv_start_redis where its own Redis runs returned $rc: $out"
[ "$(cat "$IT_TMP/ours/redis.pid")" = "$ours" ] || it_fail "its own Redis was started again"
arv_stop_redis "$IT_TMP/ours" "$OURS_PORT"
kill -0 "$ours" 2>/dev/null && it_fail "arv_stop_redis left its own server running"
foreign_alive "after stopping ours"
it_pass "arv_start_redis / arv_stop_redis on a free port"

# PostgreSQL on the foreign port: pg_ctl reports the failed bind, and stopping
# goes by the folder's postmaster.pid only.
rc=0; ARV_PG_FSYNC=off arv_start_postgres "$IT_TMP/pg" "$PORT" >"$IT_TMP/pg.out" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "Address already in use" "$IT_TMP/pg.out" ||
    it_fail "arv_start_postgres on a port in use returned $rc: $(cat "$IT_TMP/pg.out")"
arv_stop_postgres "$IT_TMP/pg"
foreign_alive "after arv_start_postgres and arv_stop_postgres"
it_pass "arv_start_postgres refuses a port in use; arv_stop_postgres leaves another server alone"

# it_cleanup also stops the other Redis servers a test started in its folder
# (a test that fails before stopping its extra node must leave none behind).
XPORT=$(arv_free_port)
bash -c '. "$1/tests/integration/lib.sh"; it_setup "$2"
         arv_start_redis "$IT_TMP/extra" "$3" || exit 3; cat "$IT_TMP/extra/redis.pid"' \
    _ "$IT_ROOT" "$1" "$XPORT" >"$IT_TMP/extra.pid" 2>"$IT_TMP/extra.log" ||
    it_fail "a test's extra Redis did not start: $(tail -3 "$IT_TMP/extra.log")"
xpid=$(cat "$IT_TMP/extra.pid")
[ -n "$xpid" ] || it_fail "no pid of the extra Redis"
for ((i = 0; i < 30; i++)); do
    kill -0 "$xpid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$xpid" 2>/dev/null && { kill -KILL "$xpid"; it_fail "it_cleanup left a test's extra Redis running"; }
it_pass "it_cleanup stops the other Redis servers a test started in its folder"

# A test killed before its cleanup (ctest's timeout sends SIGKILL: no trap
# runs) leaves its servers and daemons running; it_sweep, which
# scripts/test.sh runs after ctest, stops them and removes the folder.
bash -c '. "$1/tests/integration/lib.sh"; it_setup "$2"
         it_start orphan arv-reporter
         echo "$IT_TMP $IT_PID_orphan $(cat "$IT_TMP/redis/redis.pid")"; kill -KILL $$' \
    _ "$IT_ROOT" "$1" >"$IT_TMP/killed.out" 2>"$IT_TMP/killed.log" || true
read -r kdir kdaemon kredis <"$IT_TMP/killed.out" || it_fail "the killed test: $(tail -3 "$IT_TMP/killed.log")"
kill -0 "$kdaemon" 2>/dev/null && kill -0 "$kredis" 2>/dev/null && [ -f "$kdir/pg/data/postmaster.pid" ] ||
    it_fail "the killed test left nothing running: nothing to sweep"
it_sweep
for ((i = 0; i < 30; i++)); do
    kill -0 "$kdaemon" 2>/dev/null || kill -0 "$kredis" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$kdaemon" 2>/dev/null && it_fail "it_sweep left the killed test's daemon running"
kill -0 "$kredis" 2>/dev/null && it_fail "it_sweep left the killed test's Redis running"
[ ! -d "$kdir" ] || it_fail "it_sweep left $kdir (postmaster.pid: $(cat "$kdir/pg/data/postmaster.pid" 2>/dev/null | head -1))"
it_pass "it_sweep stops what a test killed before its cleanup left running"
