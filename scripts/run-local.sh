#!/usr/bin/env bash
# Runs the whole pipeline on this machine: installs missing packages, builds,
# starts a private Redis and PostgreSQL with their data in .local/, applies the
# migrations, starts arv-collector, arv-aggregator and arv-reporter, prints where
# they listen, and stops everything cleanly on Ctrl-C.
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
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DARV_SANITIZE=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)" >/dev/null
bin=$root/build/bin

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
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export DATABASE_URL="postgresql://arv@127.0.0.1:$pg_port/arv"
export ARV_ENV=${ARV_ENV:-development}

pids=()
stop_all() {
    # A second Ctrl-C while the daemons drain forces them out (they are in
    # sessions of their own: it no longer reaches them), and the servers
    # are still stopped.
    trap 'for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done' INT TERM
    trap - EXIT
    arv_log "stopping"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # The servers' stops run to their end, whatever Ctrl-C comes meanwhile (a
    # pg_ctl interrupted halfway would leave PostgreSQL running).
    trap '' INT TERM
    arv_stop_postgres "$data/postgres"
    arv_stop_redis "$data/redis" "$redis_port"
    arv_log "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

ARV_REDIS_AOF=yes arv_start_redis "$data/redis" "$redis_port"
arv_start_postgres "$data/postgres" "$pg_port"
"$bin/arvctl" migrate

# Each daemon in a session of its own: Ctrl-C reaches only this script, whose
# trap then sends one SIGTERM, and the daemons drain (a second signal would
# force them out). The aggregator's consumer name stays the same from run to
# run, so that a run reads what the one before left pending at once.
ARV_LISTEN=$collector setsid "$bin/arv-collector" 2>>"$data/logs/collector.log" &
pids+=($!)
ARV_LISTEN=$aggregator ARV_CONSUMER=${ARV_CONSUMER:-local} \
    setsid "$bin/arv-aggregator" 2>>"$data/logs/aggregator.log" &
pids+=($!)
ARV_LISTEN=$reporter setsid "$bin/arv-reporter" 2>>"$data/logs/reporter.log" &
pids+=($!)
arv_wait_http "http://$collector/api/health/readiness" 200 15
arv_wait_http "http://$aggregator/api/health/readiness" 200 15
arv_wait_http "http://$reporter/api/health/readiness" 200 15

cat <<INFO
ARV Analytics is running (logs in $data/logs, data in $data):
  collector   http://$collector   POST /api/analytics/ar-session
  aggregator  http://$aggregator   /metrics, /api/health/readiness
  reporter    http://$reporter   GET /api/analytics/overview (Bearer key)
  dashboard   http://$reporter/dashboard   (paste a key)
  redis       $REDIS_URL
  postgresql  $DATABASE_URL
Register content and make a key with:
  $bin/arvctl content add --id 1 --project 1 --company 1
  $bin/arvctl keys create --admin
(with DATABASE_URL=$DATABASE_URL). Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
arv_log "a daemon exited; see $data/logs"
