#!/usr/bin/env bash
# Collector memory under slow large bodies: N connections (default 400) each
# send the headers of a 1,048,000-byte batch and 1,000,000 bytes of it, then
# wait. Runs a collector (one event loop, 1 MiB bodies, no Redis needed: the
# bodies are buffered before anything else) once without a bound on request
# buffers and once with ARV_MAX_BUFFERED_BYTES (default 256 MiB), and prints
# each one's VmHWM and how many connections got 503 busy.
#
# Usage: bench/collector_memory.sh [--connections N] [--limit BYTES]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages $ARV_BENCH_PACKAGES

conns=400 limit=268435456
while [ $# -gt 0 ]; do
    case $1 in
    --connections) conns=$2; shift ;;
    --limit) limit=$2; shift ;;
    *) echo "usage: $0 [--connections N] [--limit BYTES]" >&2; exit 2 ;;
    esac
    shift
done
build=${ARV_BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_SANITIZE=OFF -DARV_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target arv-collector >/dev/null

pid=""
trap '[ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true' EXIT
for lim in 1099511627776 "$limit"; do
    port=$(arv_free_port)
    ARV_LISTEN=127.0.0.1:$port REDIS_URL=redis://127.0.0.1:1/0 ARV_THREADS=1 \
        ARV_MAX_BUFFERED_BYTES=$lim ARV_LOG_LEVEL=error "$build/bin/arv-collector" 2>/dev/null &
    pid=$!
    arv_wait_http "http://127.0.0.1:$port/api/health/status" 200 10
    busy=$(perl -MIO::Socket::INET -e '
        my ($port, $n) = @ARGV; my @s; my $body = " " x 1000000;
        for my $i (1 .. $n) {
            my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port) or die "connect: $!";
            print $c "POST /api/analytics/ar-sessions HTTP/1.1\r\nHost: t\r\n",
                "Content-Type: application/json\r\nContent-Length: 1048000\r\n\r\n[", $body;
            push @s, $c;
        }
        sleep 3;
        my $busy = 0;
        for my $c (@s) { $c->blocking(0); my $b = ""; sysread($c, $b, 4096); $busy++ if $b =~ m{^HTTP/1.1 503}; }
        print $busy;' "$port" "$conns")
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
    if [ "$lim" = 1099511627776 ]; then what="no bound"; else what="ARV_MAX_BUFFERED_BYTES=$lim"; fi
    printf '%-36s %d connections: VmHWM %.1f MB, %d answered 503 busy\n' "$what" "$conns" "$((hwm))e-3" "$busy"
done
