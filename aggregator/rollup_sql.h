/* The rollup aggregates in SQL, for `arvctl rollups rebuild` (from a day of raw
 * rows). The aggregator computes the same in C from a batch's new rows
 * (rollup.c); tests/integration compare both with the raw rows. Each fragment expects a CTE
 * `new_rows` with content_id, project_id, company_id, received_at, session_hash (hll_hash_bytea of
 * the session id), video_played, duration_seconds, tracking_quality, device_type, browser, os,
 * country and city. */
#ifndef ARV_ROLLUP_SQL_H
#define ARV_ROLLUP_SQL_H

/* The measures every per-content and per-company rollup has. */
#define ROLLUP_MEASURES_COLUMNS                                                                    \
    "views, sessions, video_plays, duration_sum, duration_count, tq_excellent, tq_good,"           \
    " tq_fair, tq_poor, tq_other"

/* Sums of the measures over rows of the per-hour-and-content aggregate ch. */
#define ROLLUP_MEASURES_SUMS                                                                       \
    "sum(views), hll_union_agg(sessions), sum(video_plays), sum(duration_sum),"                    \
    " sum(duration_count), sum(tq_excellent), sum(tq_good), sum(tq_fair), sum(tq_poor),"           \
    " sum(tq_other)"

/* CTE ch: new rows aggregated per UTC hour, content and project; every other per-content
 * and per-company rollup is summed from it. */
#define ROLLUP_SQL_HOURLY_CTE                                                                      \
    " ch AS ("                                                                                     \
    " SELECT date_trunc('hour', received_at, 'UTC') AS hour, company_id,"                          \
    " project_id, content_id, count(*) AS views,"                                                  \
    " hll_add_agg(session_hash, 12, 5) AS sessions,"                                               \
    " count(*) FILTER (WHERE video_played) AS video_plays,"                                        \
    " coalesce(sum(duration_seconds), 0) AS duration_sum,"                                         \
    " count(duration_seconds) AS duration_count,"                                                  \
    " count(*) FILTER (WHERE tracking_quality = 'excellent') AS tq_excellent,"                     \
    " count(*) FILTER (WHERE tracking_quality = 'good') AS tq_good,"                               \
    " count(*) FILTER (WHERE tracking_quality = 'fair') AS tq_fair,"                               \
    " count(*) FILTER (WHERE tracking_quality = 'poor') AS tq_poor,"                               \
    " count(*) FILTER (WHERE tracking_quality IS NULL OR tracking_quality NOT IN"                  \
    " ('excellent', 'good', 'fair', 'poor')) AS tq_other"                                          \
    " FROM new_rows GROUP BY 1, company_id, project_id, content_id),"

/* SELECT of the daily breakdown rows (day, company_id, project_id,
 * ar_content_id, dimension, value, views, sessions) from new_rows; a missing
 * value counts as 'unknown'. */
/* The breakdown value of the values past ARV_BREAKDOWN_MAX_VALUES. */
#define ROLLUP_OTHER_TEXT "(other)"

#define ROLLUP_SQL_BREAKDOWN_SELECT                                                                \
    " SELECT (n.received_at AT TIME ZONE 'UTC')::date, n.company_id, n.project_id,"                \
    " n.content_id, d.dimension, d.value, count(*), hll_add_agg(n.session_hash, 12, 5)"            \
    " FROM new_rows n CROSS JOIN LATERAL (VALUES"                                                  \
    " ('device_type', coalesce(n.device_type, 'unknown')),"                                        \
    " ('browser', coalesce(n.browser, 'unknown')),"                                                \
    " ('os', coalesce(n.os, 'unknown')),"                                                          \
    " ('country', coalesce(n.country, 'unknown')),"                                                \
    " ('city', coalesce(n.city, 'unknown')),"                                                      \
    " ('tracking_quality', coalesce(n.tracking_quality, 'unknown'))) d (dimension, value)"         \
    " GROUP BY 1, n.company_id, n.project_id, n.content_id, d.dimension, d.value"

#endif
