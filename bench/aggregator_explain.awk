# Sums, over every batch, the time PostgreSQL spent in each step of the
# aggregator's batch statements, from auto_explain's text plans in the server
# log (bench/aggregator.sh with ARV_BENCH_EXPLAIN=1). A step is a CTE of the
# batch statement (its node's actual total time; a CTE read by another one is
# charged to the first reader) or the day-lock statement.
#
# awk -f aggregator_explain.awk postgres.log
function total(line,    t) {
    if (!match(line, /actual time=[0-9.]+\.\.[0-9.]+/)) return -1
    split(substr(line, RSTART + 12, RLENGTH - 12), t, "\\.\\.")
    return t[2] + 0
}
/duration: [0-9.]+ ms  plan:/ { top = 1; next }
top && /Query Text:/ { if ($0 !~ /arv_staging/) top = 0; next }
top && /actual time=/ {
    top = 0
    if ($0 ~ /Aggregate/) sum["day locks"] += total($0); else sum["statement"] += total($0)
    next
}
/^ *CTE [a-z_]+$/ { name = $2; next }
name != "" && /actual time=/ { sum["  cte " name] += total($0); name = ""; next }
END {
    for (k in sum) printf "  %-16s %9.0f ms\n", k, sum[k]
}
