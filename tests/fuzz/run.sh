#!/usr/bin/env bash
# Builds the libFuzzer target with clang (ASan + UBSan) and runs it for a bounded
# time (ARV_FUZZ_SECONDS, default 30) from the seed corpus. A crash, leak or
# abort fails the test. Usage: run.sh WORK_DIR SOURCE... (the sources besides
# fuzz_ingest.c: tests/CMakeLists.txt lists them, ARV_FUZZ_SOURCES).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: run.sh WORK_DIR SOURCE...}
shift
[ $# -gt 0 ] || { echo "usage: run.sh WORK_DIR SOURCE..." >&2; exit 2; }
mkdir -p "$work/corpus"
cp -n "$here"/corpus/* "$work/corpus/" 2>/dev/null || true
clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/common" -I"$root/collector" $(pkg-config --cflags json-c zlib) \
    "$here/fuzz_ingest.c" "$@" $(pkg-config --libs json-c zlib) -o "$work/fuzz_ingest"
# Findings go to WORK_DIR so a failure leaves the input that caused it.
"$work/fuzz_ingest" -max_total_time="${ARV_FUZZ_SECONDS:-30}" -max_len=8192 -timeout=5 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus"
