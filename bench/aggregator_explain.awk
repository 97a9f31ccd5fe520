# Sums, over every batch, the time PostgreSQL spent on each statement of the
# aggregator's batch transactions (log_min_duration_statement lines, keyed by
# the statement's first words) and on each data-modifying CTE of its two
# statements with CTEs (auto_explain's text plans with actual times: a CTE's
# top node total). From the server log of bench/aggregator.sh with
# ARV_BENCH_EXPLAIN=1.
#
# awk -f aggregator_explain.awk postgres.log
function total(line,    t) {
    if (!match(line, /actual time=[0-9.]+\.\.[0-9.]+/)) return -1
    split(substr(line, RSTART + 12, RLENGTH - 12), t, "\\.\\.")
    return t[2] + 0
}
/duration: [0-9.]+ ms  statement: / {
    if ($0 ~ /bench_|CHECKPOINT|pg_current_wal|pg_stat|TO STDOUT/) next
    split($0, a, "  statement: ")
    match($0, /duration: [0-9.]+/)
    sum[substr(a[2], 1, 48)] += substr($0, RSTART + 10, RLENGTH - 10)
    next
}
/^ *CTE [a-z_]+$/ { name = $2; next }
name != "" && /actual time=/ { sum["  cte " name] += total($0); name = ""; next }
END {
    for (k in sum) printf "  %-50s %9.0f ms\n", k, sum[k]
}
