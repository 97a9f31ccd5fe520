-- First schema: content registry, raw events partitioned by day, event-id dedupe,
-- daily per-content rollup with HLL uniques, dead letters, ingest watermarks.
CREATE EXTENSION IF NOT EXISTS hll;

-- The content registry. The aggregator resolves content -> project/company here
-- (or in ARV_CONTENT_RELATION, a table or view with the same columns).
CREATE TABLE analytics.ar_content (
    id          bigint PRIMARY KEY,
    unique_id   text UNIQUE,
    project_id  bigint NOT NULL,
    company_id  bigint NOT NULL,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Raw events, one row per accepted view session, partitioned by day of created_at
-- (UTC). created_at is the time the collector received the event; the client's own
-- clock, when sent, is kept in occurred_at.
CREATE TABLE analytics.ar_view_sessions (
    event_id          uuid NOT NULL,
    ar_content_id     bigint NOT NULL,
    project_id        bigint NOT NULL,
    company_id        bigint NOT NULL,
    session_id        uuid NOT NULL,
    user_agent        text,
    device_type       text,
    browser           text,
    os                text,
    ip_address        inet,
    country           text,
    city              text,
    duration_seconds  integer,
    tracking_quality  text,
    video_played      boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    occurred_at       timestamptz,
    received_at       timestamptz NOT NULL
) PARTITION BY RANGE (created_at);

CREATE INDEX ar_view_sessions_company_created_idx
    ON analytics.ar_view_sessions (company_id, created_at);
CREATE INDEX ar_view_sessions_content_idx
    ON analytics.ar_view_sessions (ar_content_id);

-- Creates the daily partitions of ar_view_sessions for [first_day, last_day]
-- that do not exist yet; returns how many it created. Idempotent.
CREATE FUNCTION analytics.ensure_day_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date := first_day;
    created integer := 0;
    part text;
BEGIN
    WHILE d <= last_day LOOP
        part := format('ar_view_sessions_p%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(format('analytics.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE analytics.%I PARTITION OF analytics.ar_view_sessions '
                'FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

SELECT analytics.ensure_day_partitions((now() AT TIME ZONE 'UTC')::date - 1,
                                       (now() AT TIME ZONE 'UTC')::date + 7);

-- Event ids seen, for exactly-once across day partitions: an event is new only if
-- its (company_id, event_id) is inserted here. Keyed on company_id to stay
-- co-located with the raw and rollup tables under Citus.
CREATE TABLE analytics.event_ids (
    company_id   bigint NOT NULL,
    event_id     uuid NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (company_id, event_id)
);
CREATE INDEX event_ids_received_idx ON analytics.event_ids (received_at);

-- Daily per-content rollup (UTC days). sessions is an HLL sketch of session_id
-- (log2m 12, regwidth 5: relative error about 1.6%).
CREATE TABLE analytics.rollup_content_daily (
    day             date NOT NULL,
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
    PRIMARY KEY (company_id, ar_content_id, day)
);
CREATE INDEX rollup_content_daily_day_idx ON analytics.rollup_content_daily (day);
CREATE INDEX rollup_content_daily_project_idx
    ON analytics.rollup_content_daily (project_id, day);

-- Entries the aggregator could not count, with why, and the payload as received.
CREATE TABLE analytics.dead_letters (
    id           bigserial PRIMARY KEY,
    stream       text NOT NULL,
    entry_id     text NOT NULL,
    reason       text NOT NULL,
    detail       text,
    payload      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
CREATE INDEX dead_letters_reason_idx ON analytics.dead_letters (reason, created_at);

-- Each aggregator's watermark: every event received before complete_until is in
-- the rollups. The reporter publishes the minimum over live aggregators.
CREATE TABLE analytics.ingest_watermarks (
    consumer        text PRIMARY KEY,
    complete_until  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
