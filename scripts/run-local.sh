#!/usr/bin/env bash
# Runs the whole pipeline on this machine: installs missing packages, builds,
# starts a private Redis and PostgreSQL with their data in .local/, applies the
# migrations, starts arv-collector, arv-aggregator and arv-reporter, prints where
# they listen, and stops everything cleanly on Ctrl-C. One run per data folder
# at a time; what a run killed without its cleanup left (servers, daemons) the
# next one takes up or stops. ARV_DATA_DIR, ARV_REDIS_PORT, ARV_PG_PORT and
# ARV_{COLLECTOR,AGGREGATOR,REPORTER}_LISTEN change where; ARV_BIN_DIR runs the
# binaries there instead of building.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"

data=$(realpath -m "${ARV_DATA_DIR:-$root/.local}")
redis_port=${ARV_REDIS_PORT:-16379}
pg_port=${ARV_PG_PORT:-15432}
collector=${ARV_COLLECTOR_LISTEN:-127.0.0.1:8081}
aggregator=${ARV_AGGREGATOR_LISTEN:-127.0.0.1:8082}
reporter=${ARV_REPORTER_LISTEN:-127.0.0.1:8083}

arv_install_packages
if [ -n "${ARV_BIN_DIR:-}" ]; then
    bin=$(realpath "$ARV_BIN_DIR")
else
    cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARV_SANITIZE=OFF >/dev/null
    cmake --build "$root/build" -j"$(nproc)" >/dev/null
    bin=$root/build/bin
fi

mkdir -p "$data/logs"
chmod 755 "$data"
# As root, PostgreSQL runs as the system user postgres (arv_pg_run), which
# must reach the data folder: not so under a private home such as /root.
# Under /var/lib, which only root may write to, nobody can have prepared the
# folder (a link in it, say) for root to follow.
if [ "$(id -u)" -eq 0 ] && ! arv_pg_run test -x "$data"; then
    if [ -n "${ARV_DATA_DIR:-}" ]; then
        arv_log "ARV_DATA_DIR=$data: the postgres user cannot reach it (a parent folder is private); choose another folder"
        exit 1
    fi
    data=/var/lib/arv-local/$(printf '%s' "$root" | sha256sum | cut -c1-12)
    arv_log "the postgres user cannot reach $root/.local (a parent folder is private): data in $data"
    mkdir -p "$data/logs"
    chmod 755 /var/lib/arv-local "$data"
fi
# One run per data folder: a second would use the first one's servers, and
# stop them when it ends. The lock goes with this shell (fd 9, closed for
# everything it starts); a run killed without its cleanup leaves it free.
exec 9>>"$data/.run-local.lock"
flock -n 9 || {
    arv_log "another scripts/run-local.sh runs with the data in $data: stop it first (Ctrl-C), or give this one ARV_DATA_DIR and other ports"
    exit 1
}
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export DATABASE_URL="postgresql://arv@127.0.0.1:$pg_port/arv"
export ARV_ENV=${ARV_ENV:-development}
# A stream shard per aggregator worker (docs/aggregator.md, "Shards and workers").
export ARV_STREAM_SHARDS=${ARV_STREAM_SHARDS:-2}

pids=()
stop_all() {
    # Everything is stopped whatever fails meanwhile: a log line written to a
    # terminal that is gone, or into a pipe whose reader Ctrl-C ended (tee).
    set +e
    trap '' PIPE
    # A second Ctrl-C while the daemons drain forces them out (they are in
    # sessions of their own: it no longer reaches them), and the servers
    # are still stopped.
    trap 'for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done' INT TERM
    trap - EXIT
    arv_log "stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # The servers' stops run to their end, whatever Ctrl-C comes meanwhile (a
    # pg_ctl interrupted halfway would leave PostgreSQL running).
    trap '' INT TERM
    arv_stop_postgres "$data/postgres"
    arv_stop_redis "$data/redis" "$redis_port"
    rm -f "$data/daemons.pid"
    arv_log "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

# The daemons of a run killed without its cleanup (in sessions of their own,
# they outlive it) hold the ports and use the servers: stopped first.
for pid in $(cat "$data/daemons.pid" 2>/dev/null); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
    arv-collector | arv-aggregator | arv-reporter)
        arv_log "stopping $(cat "/proc/$pid/comm") ($pid), left by an earlier run"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 110; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        ;;
    esac
done
rm -f "$data/daemons.pid"
for listen in "$collector" "$aggregator" "$reporter"; do
    if (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null; then
        arv_log "$listen is in use: stop what listens there, or set ARV_COLLECTOR_LISTEN, ARV_AGGREGATOR_LISTEN, ARV_REPORTER_LISTEN"
        exit 1
    fi
done

ARV_REDIS_AOF=yes arv_start_redis "$data/redis" "$redis_port" 9>&-
arv_start_postgres "$data/postgres" "$pg_port" 9>&-
"$bin/arvctl" migrate

# Each daemon in a session of its own: Ctrl-C reaches only this script, whose
# trap then sends one SIGTERM, and the daemons drain (a second signal would
# force them out). The aggregator's consumer name stays the same from run to
# run, so that a run reads what the one before left pending at once.
ARV_LISTEN=$collector setsid "$bin/arv-collector" 2>>"$data/logs/collector.log" 9>&- &
pids+=($!)
ARV_LISTEN=$aggregator ARV_CONSUMER=${ARV_CONSUMER:-local} \
    setsid "$bin/arv-aggregator" 2>>"$data/logs/aggregator.log" 9>&- &
pids+=($!)
ARV_LISTEN=$reporter setsid "$bin/arv-reporter" 2>>"$data/logs/reporter.log" 9>&- &
pids+=($!)
echo "${pids[*]}" >"$data/daemons.pid"
# ready NAME LISTEN PID: waits up to 15 s for its readiness; a daemon that
# exits meanwhile (a port taken since the check, a bad setting) is said at once.
ready() {
    arv_wait_http "http://$2/api/health/readiness" 200 15 "$3" && return 0
    arv_log "arv-$1 is not ready: see $data/logs/$1.log"
    tail -3 "$data/logs/$1.log" >&2
    return 1
}
ready collector "$collector" "${pids[0]}"
ready aggregator "$aggregator" "${pids[1]}"
ready reporter "$reporter" "${pids[2]}"

cat <<INFO
ARV Analytics is running (logs in $data/logs, data in $data):
  collector   http://$collector   POST /api/analytics/ar-session
  aggregator  http://$aggregator   /metrics, /api/health/readiness
  reporter    http://$reporter   GET /api/analytics/overview (Bearer key)
  dashboard   http://$reporter/dashboard   (paste a key)
  redis       $REDIS_URL   (streams: ARV_STREAM_SHARDS=$ARV_STREAM_SHARDS)
  postgresql  $DATABASE_URL
Register content and make a key with:
  $bin/arvctl content add --id 1 --project 1 --company 1
  $bin/arvctl keys create --admin
(with DATABASE_URL=$DATABASE_URL; arvctl dlq replay also needs
REDIS_URL=$REDIS_URL ARV_STREAM_SHARDS=$ARV_STREAM_SHARDS). Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
arv_log "a daemon exited; see $data/logs"
