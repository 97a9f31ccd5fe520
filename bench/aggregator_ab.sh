#!/usr/bin/env bash
# A/B of the aggregator's drain against another revision: runs
# bench/aggregator.sh alternately from this tree and from a git worktree of
# REV, N rounds, and prints each run's figures and, per tree, their medians.
# One run's ratio moves by a fifth or more on this shared machine; alternating
# spreads the machine's other load over both trees, and each round swaps
# which tree goes first (A B, B A, ...), so that neither always runs on the
# machine as the other's run left it.
#
# Usage: bench/aggregator_ab.sh REV [--rounds N] [-- bench/aggregator.sh args]
#        (default: 3 rounds of --rss). Any ARV_* variable reaches both runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: $0 REV [--rounds N] [-- bench/aggregator.sh args]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
rev=$1
shift
rounds=3
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
done
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--rss)

work=$(mktemp -d /tmp/arv-ab.XXXXXX)
cleanup() {
    git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$root" worktree add --detach "$work/base" "$rev" >/dev/null 2>&1 ||
    { echo "cannot check out $rev" >&2; exit 2; }
head_label="this tree ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo ', changed'))"
base_label="$rev ($(git -C "$work/base" rev-parse --short HEAD))"

echo "A/B: ${args[*]}, $rounds round(s), alternating"
for ((i = 1; i <= rounds; i++)); do
    order="head base"
    [ $((i % 2)) = 1 ] || order="base head"
    for side in $order; do
        if [ "$side" = head ]; then tree=$root label=$head_label; else tree=$work/base label=$base_label; fi
        bash "$tree/bench/aggregator.sh" "${args[@]}" >"$work/run.txt" 2>&1 ||
            { cat "$work/run.txt" >&2; exit 1; }
        # side events/s ratio pg_us pipeline_us vmhwm_mb aggregator_us
        awk -v side="$side" '
            /^aggregator drain:/ { for (k = 1; k < NF; k++) if ($(k + 1) == "events/s") d = $k }
            /^ratio:/ { r = $2; sub(/x$/, "", r) }
            /^PostgreSQL CPU:/ { pg = $3 }
            /^pipeline CPU:/ { p = $3; a = $6; sub(/,$/, "", a) }
            /^aggregator RSS:/ { m = $4 }
            END { print side, d, r, pg, p, m, a }' "$work/run.txt" >>"$work/runs"
        tail -n 1 "$work/runs" | awk -v l="$label" -v i="$i" \
            '{ printf "round %d, %s: %s events/s, %sx plain COPY, PostgreSQL %s us/event, pipeline %s us/event (aggregator %s), VmHWM %s MB\n", i, l, $2, $3, $4, $5, $7, $6 }'
    done
done

# Medians per tree, figure by figure.
for side in head base; do
    if [ "$side" = head ]; then label=$head_label; else label=$base_label; fi
    med=()
    for col in 2 3 4 5 7 6; do
        med+=("$(awk -v s="$side" -v c="$col" '$1 == s { print $c }' "$work/runs" | sort -g |
            awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')")
    done
    printf 'median, %s: %s events/s, %sx plain COPY, PostgreSQL %s us/event, pipeline %s us/event (aggregator %s), VmHWM %s MB\n' \
        "$label" "${med[@]}"
done
