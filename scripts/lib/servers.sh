# Shell helpers shared by scripts/run-local.sh, the integration tests and bench/:
# install packages, find free ports, start and stop private Redis and PostgreSQL
# servers in a data folder. Source it; every function is prefixed arv_.

ARV_PG_BIN=${ARV_PG_BIN:-/usr/lib/postgresql/15/bin}

# Debian packages the build, the servers and the tests need.
ARV_PACKAGES="build-essential cmake pkg-config clang-format libevent-dev libhiredis-dev
libpq-dev libjson-c-dev libcriterion-dev libssl-dev zlib1g-dev node-llhttp
redis-server postgresql-15 postgresql-15-hll curl jq procps iproute2
clang libclang-rt-14-dev libmaxminddb-dev libmaxmind-db-writer-perl
uap-core libyaml-dev libpcre2-dev dnsmasq-base"
# What bench/ needs on top: the load generator and the nginx reference.
ARV_BENCH_PACKAGES="wrk nginx-light"

arv_log() { printf '[arv] %s\n' "$*" >&2; }

# Installs whatever of ARV_PACKAGES (and the packages named as arguments) is
# missing (needs root, or sudo).
arv_install_packages() {
    local missing=() p
    for p in $ARV_PACKAGES "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    arv_log "installing: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            arv_log "installing packages needs root: run this as root, or install sudo (missing: ${missing[*]})"
            return 1
        }
        sudo=sudo
    fi
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
}

# Prints a TCP port on 127.0.0.1 that no socket uses. Ports come from below the
# kernel's ephemeral range, so an outgoing connection cannot take the port
# between this check and the server's bind.
arv_free_port() {
    local low port
    low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 12000 ] || low=32768
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        [ -z "$(ss -Htan "( sport = :$port )" 2>/dev/null)" ] || continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
}

# Waits until 127.0.0.1:$1 accepts connections, at most $2 seconds (default 10).
arv_wait_port() {
    local port=$1 limit=${2:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    arv_log "nothing listens on port $port after ${limit}s"
    return 1
}

# Waits until URL $1 answers HTTP status $2 (default 200), at most $3 s (default
# 10), and no longer than process $4 (if given) lives.
arv_wait_http() {
    local url=$1 want=${2:-200} limit=${3:-10} pid=${4:-} i code
    for ((i = 0; i < limit * 10; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [ "$code" = "$want" ] && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            arv_log "$url: the process serving it ($pid) exited"
            return 1
        fi
        sleep 0.1
    done
    arv_log "$url answered $code, not $want, after ${limit}s"
    return 1
}

# Prints the pid in folder $1's redis.pid if that process is a Redis running
# in $1, the server started there; false if not (none started, or a pidfile
# left by one killed, its pid maybe another process's now).
arv_redis_pid() {
    local dir=$1 pid
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] &&
        [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(cd "$dir" && pwd -P)" ] || return 1
    echo "$pid"
}

# True when the Redis answering on 127.0.0.1:$2 is the one started in folder
# $1: its process_id is arv_redis_pid's. (One that does not answer within
# 2 s, or asks for a password, is not.)
arv_redis_is_ours() {
    local dir=$1 port=$2 pid theirs
    pid=$(arv_redis_pid "$dir") || return 1
    theirs=$(timeout 2 redis-cli -h 127.0.0.1 -p "$port" INFO server 2>/dev/null |
        tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }') || true
    [ "$pid" = "$theirs" ]
}

# Starts redis-server on port $2 with its files in folder $1 (created). Fails
# on a port where something else listens already (redis-server --daemonize
# returns before it binds, and the caller would use, and arv_stop_redis stop,
# the other server); the Redis started in $1 before is used again.
arv_start_redis() {
    local dir=$1 port=$2 i
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        # The one started in this folder before (a run killed without its
        # cleanup) is taken up again, with its data.
        if arv_redis_is_ours "$dir" "$port"; then
            arv_log "port $port: the Redis started in $dir before still runs; using it"
            return 0
        fi
        arv_log "port $port is in use (another Redis?): not starting Redis there"
        return 1
    fi
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" \
        --appendonly "${ARV_REDIS_AOF:-no}" >/dev/null
    # Something may have taken the port between the check and the bind.
    for ((i = 0; i < 100; i++)); do
        arv_redis_is_ours "$dir" "$port" && return 0
        sleep 0.1
    done
    arv_log "the Redis started in $dir does not answer on port $port after 10s (see $dir/redis.log)"
    return 1
}

# Stops the Redis started in folder $1 on port $2, and only that one: another
# server on the port (where the caller's could not start) is left alone.
arv_stop_redis() {
    local dir=$1 port=$2 pid i
    pid=$(arv_redis_pid "$dir") || return 0
    if arv_redis_is_ours "$dir" "$port"; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    # Still there after 5 s (a SHUTDOWN refused or stuck behind a long
    # command, or a server stopped with SIGSTOP): never leave a server running
    # after the caller's folder is gone.
    kill -KILL "$pid" 2>/dev/null || true
}

# Runs a PostgreSQL server command as the owner of the data folder: PostgreSQL
# refuses to run as root, so root runs it as the system user postgres, from /
# (the caller's folder may be private to root). Paths must be absolute.
arv_pg_run() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Starts PostgreSQL on 127.0.0.1:$2 with its cluster in folder $1 (initialised on
# first use, superuser arv, trust auth on loopback) and creates database arv;
# the server started in $1 before (a run killed without its cleanup) is used
# again if it runs on that port. TCP only: no Unix socket (its path would have
# to fit in 107 bytes). ARV_PG_FSYNC (default on) sets fsync; ARV_PG_OPTIONS
# adds server settings (for example "-c max_wal_size=8GB", as compose/ runs
# PostgreSQL).
arv_start_postgres() {
    local dir=$1 port=$2 running=""
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    if [ -f "$dir/data/postmaster.pid" ] &&
        arv_pg_run "$ARV_PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        # postmaster.pid's fourth line is the port.
        running=$(sed -n 4p "$dir/data/postmaster.pid")
        if [ "$running" != "$port" ]; then
            arv_log "the PostgreSQL started in $dir before still runs, on port $running, not $port: stop it (pg_ctl -D $dir/data stop) or use port $running"
            return 1
        fi
        arv_log "port $port: the PostgreSQL started in $dir before still runs; using it"
    elif [ ! -f "$dir/data/PG_VERSION" ]; then
        arv_pg_run "$ARV_PG_BIN/initdb" -D "$dir/data" -U arv -A trust -E UTF8 \
            --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
    fi
    if [ -z "$running" ]; then
        arv_pg_run "$ARV_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
            -o "-p $port -k '' -c listen_addresses=127.0.0.1 -c fsync=${ARV_PG_FSYNC:-on} ${ARV_PG_OPTIONS:-}" \
            start >/dev/null || {
            tail -20 "$dir/postgres.log" >&2
            return 1
        }
    fi
    psql -h 127.0.0.1 -p "$port" -U arv -d postgres -tAq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'arv'" | grep -q 1 ||
        psql -h 127.0.0.1 -p "$port" -U arv -d postgres -q -c "CREATE DATABASE arv" >/dev/null
}

arv_stop_postgres() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    arv_pg_run "$ARV_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}
