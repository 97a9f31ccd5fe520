-- Rollups beyond the daily per-content one: hourly per content (time zones other
-- than UTC, hour intervals), daily and hourly per company (overviews merge one
-- sketch per company-day instead of one per content-day), and daily breakdowns
-- by a dimension's value. The aggregator increments all of them from the rows
-- that were new, in the batch's transaction. HLL parameters as in 0001
-- (log2m 12, regwidth 5).

CREATE TABLE analytics.rollup_content_hourly (
    hour            timestamptz NOT NULL, -- start of the UTC hour
    company_id      bigint NOT NULL,
    project_id      bigint NOT NULL,
    ar_content_id   bigint NOT NULL,
    views           bigint NOT NULL DEFAULT 0,
    sessions        hll NOT NULL DEFAULT hll_empty(12, 5),
    video_plays     bigint NOT NULL DEFAULT 0,
    duration_sum    bigint NOT NULL DEFAULT 0,
    duration_count  bigint NOT NULL DEFAULT 0,
    tq_excellent    bigint NOT NULL DEFAULT 0,
    tq_good         bigint NOT NULL DEFAULT 0,
    tq_fair         bigint NOT NULL DEFAULT 0,
    tq_poor         bigint NOT NULL DEFAULT 0,
    tq_other        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, ar_content_id, hour)
);
CREATE INDEX rollup_content_hourly_hour_idx ON analytics.rollup_content_hourly (hour);
CREATE INDEX rollup_content_hourly_project_idx
    ON analytics.rollup_content_hourly (project_id, hour);

CREATE TABLE analytics.rollup_company_daily (
    day             date NOT NULL,
    company_id      bigint NOT NULL,
    views           bigint NOT NULL DEFAULT 0,
    sessions        hll NOT NULL DEFAULT hll_empty(12, 5),
    video_plays     bigint NOT NULL DEFAULT 0,
    duration_sum    bigint NOT NULL DEFAULT 0,
    duration_count  bigint NOT NULL DEFAULT 0,
    tq_excellent    bigint NOT NULL DEFAULT 0,
    tq_good         bigint NOT NULL DEFAULT 0,
    tq_fair         bigint NOT NULL DEFAULT 0,
    tq_poor         bigint NOT NULL DEFAULT 0,
    tq_other        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, day)
);
CREATE INDEX rollup_company_daily_day_idx ON analytics.rollup_company_daily (day);

CREATE TABLE analytics.rollup_company_hourly (
    hour            timestamptz NOT NULL,
    company_id      bigint NOT NULL,
    views           bigint NOT NULL DEFAULT 0,
    sessions        hll NOT NULL DEFAULT hll_empty(12, 5),
    video_plays     bigint NOT NULL DEFAULT 0,
    duration_sum    bigint NOT NULL DEFAULT 0,
    duration_count  bigint NOT NULL DEFAULT 0,
    tq_excellent    bigint NOT NULL DEFAULT 0,
    tq_good         bigint NOT NULL DEFAULT 0,
    tq_fair         bigint NOT NULL DEFAULT 0,
    tq_poor         bigint NOT NULL DEFAULT 0,
    tq_other        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, hour)
);
CREATE INDEX rollup_company_hourly_hour_idx ON analytics.rollup_company_hourly (hour);

-- One row per content, UTC day, dimension and value. A missing value is stored
-- as 'unknown'. Values are the normalised event fields (country upper case,
-- tracking_quality lower case).
CREATE TABLE analytics.rollup_breakdown_daily (
    day             date NOT NULL,
    company_id      bigint NOT NULL,
    project_id      bigint NOT NULL,
    ar_content_id   bigint NOT NULL,
    dimension       text NOT NULL CHECK (dimension IN
                        ('device_type', 'browser', 'os', 'country', 'city', 'tracking_quality')),
    value           text NOT NULL,
    views           bigint NOT NULL DEFAULT 0,
    sessions        hll NOT NULL DEFAULT hll_empty(12, 5),
    PRIMARY KEY (company_id, ar_content_id, day, dimension, value)
);
CREATE INDEX rollup_breakdown_daily_day_idx
    ON analytics.rollup_breakdown_daily (dimension, day);
