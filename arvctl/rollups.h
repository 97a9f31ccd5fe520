/* arvctl rollups rebuild: recomputes every rollup table from the raw rows, one
 * UTC day per transaction, safe while the aggregator ingests. */
#ifndef ARV_ARVCTL_ROLLUPS_H
#define ARV_ARVCTL_ROLLUPS_H

#include <stdint.h>

#include "strbuf.h"

/* Appends the statements that delete day `day`'s rows (days since the epoch,
 * UTC) from every rollup table (the hourly ones: that day's 24 hours). Pure. */
void rollups_build_delete_sql(struct strbuf *out, int64_t day);

/* Appends the one statement that recomputes day `day`'s rows of every rollup
 * table from analytics.ar_view_sessions, the same aggregates as the
 * aggregator's batch statement (store.c); its one result: the raw rows read.
 * The breakdown keeps at most `max_values` values per content and dimension
 * (0: all), those with the most views (ties: the lower value), the rest
 * counted as ROLLUP_OTHER_TEXT. Pure. */
void rollups_build_rebuild_sql(struct strbuf *out, int64_t day, long max_values);

/* The aggregators' settings a rebuild follows. */
struct rollups_options {
    long raw_retention_days;   /* older days are skipped */
    long breakdown_max_values; /* ARV_BREAKDOWN_MAX_VALUES */
};

/* Runs `arvctl rollups ...` (argv[0] is "rollups") against `database_url`
 * (borrowed). Blocking. Returns the exit status (CLI_EXIT_*). */
int rollups_command(const char *database_url, const struct rollups_options *opts, int argc,
                    char **argv);

#endif
