#!/usr/bin/env bash
# User-agent parsing benchmark (aggregator/ua.c): builds a Release
# aggregator_lib and bench/ua_bench.c, makes a corpus of distinct user agents
# (the modern browsers, headsets and bots of tests/unit/test_ua.c plus uap-core's
# own test strings) and a skewed mix of lookups over it (Zipf, s = 1.1: a few
# browsers dominate, a long tail of rare strings, as in real traffic), then
# prints in one run:
#   - ua_db_open time (YAML + PCRE2 compile + JIT of every rule);
#   - uncached parses/s over the distinct strings (every lookup runs the regexes);
#   - cached lookups/s over the mix, with the hit rate, for each cache capacity;
#   - the reference, on the same strings: uap-python (Debian python3-ua-parser,
#     the uap-core project's Python parser over the same regexes.yaml), uncached
#     (its _Parse* functions) and through its own Parse() cache; and the ratios.
# Usage: bench/ua.sh [--lookups N] [--distinct N] [--capacity N ...]
# Environment: ARV_BENCH_BUILD_DIR (default build-bench-ua), ARV_UA_REGEXES.
# Bounded: each timed part stops after a few seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"
arv_install_packages python3-ua-parser

lookups=200000 distinct=5000 capacities=()
while [ $# -gt 0 ]; do
    case $1 in
    --lookups) lookups=$2; shift ;;
    --distinct) distinct=$2; shift ;;
    --capacity) capacities+=("$2"); shift ;;
    *) echo "usage: $0 [--lookups N] [--distinct N] [--capacity N ...]" >&2; exit 2 ;;
    esac
    shift
done
[ ${#capacities[@]} -gt 0 ] || capacities=(10000 1000)
regexes=${ARV_UA_REGEXES:-/usr/share/uap-core/regexes.yaml}
build=${ARV_BENCH_BUILD_DIR:-$root/build-bench-ua}
tmp=$(mktemp -d /tmp/arv-bench-ua.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

arv_log "building (Release) in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DARV_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target aggregator_lib >/dev/null
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -I"$root/aggregator" -I"$root/common" "$root/bench/ua_bench.c" \
    "$build/libaggregator_lib.a" "$build/libarvcommon.a" \
    $(pkg-config --libs yaml-0.1 libpcre2-8) -o "$tmp/ua_bench"

# The corpus: the hand-picked strings of the unit test first (the most
# frequent in the mix), then uap-core's test strings, deduplicated.
/usr/bin/python3 - "$root/tests/unit/test_ua.c" "$distinct" "$lookups" "$tmp" <<'EOF'
import random, re, sys, yaml
src, ndistinct, nlookups, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
text = open(src, encoding="utf-8").read()
table = text[text.index("static const struct ua_case cases[]"):]
table = table[:table.index("};")]
seen, uas = set(), []
for entry in re.findall(r'\{((?:\s*"(?:[^"\\]|\\.)*")+)\s*,', table):
    s = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', entry)).encode().decode("unicode_escape")
    if s and s not in seen and "\\x" not in s and all(32 <= ord(ch) < 127 for ch in s):
        seen.add(s); uas.append(s)
for f in ("test_ua.yaml", "test_os.yaml", "test_device.yaml"):
    with open("/usr/share/uap-core/tests/" + f, encoding="utf-8") as fp:
        for case in yaml.safe_load(fp)["test_cases"]:
            s = case["user_agent_string"]
            if s and "\n" not in s and s not in seen:
                seen.add(s); uas.append(s)
uas = uas[:ndistinct]
with open(out + "/distinct.txt", "w", encoding="utf-8") as fp:
    fp.write("".join(s + "\n" for s in uas))
rng = random.Random(42)
weights = [1.0 / (i + 1) ** 1.1 for i in range(len(uas))]
mix = rng.choices(uas, weights=weights, k=nlookups)
with open(out + "/mix.txt", "w", encoding="utf-8") as fp:
    fp.write("".join(s + "\n" for s in mix))
print(f"corpus: {len(uas)} distinct user agents, {nlookups} lookups, "
      f"{len(set(mix))} distinct in the mix", file=sys.stderr)
EOF

"$tmp/ua_bench" "$regexes" "$tmp/distinct.txt" "$tmp/mix.txt" "${capacities[@]}" 2>/dev/null |
    tee "$tmp/c.txt"

# Reference: uap-python over the same regexes and strings, same time bounds.
UA_PARSER_YAML=$regexes /usr/bin/python3 - "$tmp" <<'EOF' | tee "$tmp/py.txt"
import sys, time
from ua_parser import user_agent_parser as p
tmp = sys.argv[1]
distinct = open(tmp + "/distinct.txt", encoding="utf-8").read().splitlines()
mix = open(tmp + "/mix.txt", encoding="utf-8").read().splitlines()
def bounded(strings, fn, limit=5.0):
    t0, n = time.monotonic(), 0
    while True:
        for s in strings:
            fn(s)
            n += 1
            if n % 256 == 0 and time.monotonic() - t0 > limit:
                return n, time.monotonic() - t0
        if time.monotonic() - t0 > limit / 2:
            return n, time.monotonic() - t0
def uncached(s):
    p._ParseUserAgent(s, {}); p._ParseOS(s, {}); p._ParseDevice(s, {})
n, secs = bounded(distinct, uncached)
print(f"py uncached: {n} parses in {secs:.2f} s: {n / secs:.0f} parses/s ({secs / n * 1e6:.1f} us each)")
n, secs = bounded(mix, p.Parse)
print(f"py cached (its Parse cache, {p.MAX_CACHE_SIZE} entries): {n} lookups in {secs:.2f} s: "
      f"{n / secs:.0f} lookups/s")
EOF

awk '/^c  uncached/ { for (i = 1; i <= NF; i++) if ($i == "parses/s") c = $(i - 1) }
     /^c  cached/ && !cc { for (i = 1; i <= NF; i++) if ($i == "lookups/s,") cc = $(i - 1) }
     /^py uncached/ { for (i = 1; i <= NF; i++) if ($i == "parses/s") p = $(i - 1) }
     /^py cached/ { for (i = 1; i <= NF; i++) if ($i == "lookups/s") pc = $(i - 1) }
     END {
        printf "ratio uncached: %.1fx uap-python\n", c / p
        printf "ratio cached (first capacity vs uap-python Parse): %.1fx\n", cc / pc
     }' "$tmp/c.txt" "$tmp/py.txt"
