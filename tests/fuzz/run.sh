#!/usr/bin/env bash
# Builds a libFuzzer target with clang (ASan + UBSan) and runs it for a bounded
# time (ARV_FUZZ_SECONDS, default 30) from its seed corpus. A crash, leak or
# abort fails the test. Usage: run.sh WORK_DIR TARGET SOURCE...: TARGET is
# ingest (fuzz_ingest.c, the collector's bodies) or stream (fuzz_stream.c, the
# aggregator's stream entries); SOURCE... the sources besides it
# (tests/CMakeLists.txt lists them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: run.sh WORK_DIR TARGET SOURCE...}
target=${2:?usage: run.sh WORK_DIR TARGET SOURCE...}
shift 2
[ $# -gt 0 ] || { echo "usage: run.sh WORK_DIR TARGET SOURCE..." >&2; exit 2; }
mkdir -p "$work/corpus"
cp -n "$here/corpus-$target"/* "$work/corpus/" 2>/dev/null || true
libs="json-c zlib libpcre2-8 libmaxminddb yaml-0.1 libpq"
clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/common" -I"$root/collector" -I"$root/aggregator" $(pkg-config --cflags $libs) \
    "$here/fuzz_$target.c" "$@" $(pkg-config --libs $libs) -o "$work/fuzz_$target"
if [ "$target" = stream ]; then
    # GeoIP on, from the test database the integration tests use.
    perl "$root/tests/fixtures/make-geoip.pl" "$work/geo.mmdb" >/dev/null
    export ARV_FUZZ_GEOIP=$work/geo.mmdb
fi
# Findings go to WORK_DIR so a failure leaves the input that caused it.
"$work/fuzz_$target" -max_total_time="${ARV_FUZZ_SECONDS:-30}" -max_len=8192 -timeout=5 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus"
