#!/usr/bin/env bash
# Builds the libFuzzer target with clang (ASan + UBSan) and runs it for a bounded
# time (ARV_FUZZ_SECONDS, default 30) from the seed corpus. A crash, leak or
# abort fails the test. Usage: run.sh WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${1:?usage: run.sh WORK_DIR}
mkdir -p "$work/corpus"
cp -n "$here"/corpus/* "$work/corpus/" 2>/dev/null || true
clang -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/common" -I"$root/collector" $(pkg-config --cflags json-c zlib) \
    "$here/fuzz_ingest.c" "$root/common/event.c" "$root/common/strbuf.c" "$root/common/timeutil.c" \
    "$root/common/urlcode.c" \
    "$root/collector/ingest_batch.c" "$root/collector/body.c" \
    $(pkg-config --libs json-c zlib) -o "$work/fuzz_ingest"
# Findings go to WORK_DIR so a failure leaves the input that caused it.
"$work/fuzz_ingest" -max_total_time="${ARV_FUZZ_SECONDS:-30}" -max_len=8192 -timeout=5 \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus"
