-- Indexes that every ingested event paid for, and little read them.
--
-- event_ids.received_at is read only by the daily retention DELETE. A B-tree on
-- it took a new entry per event, always on its rightmost page, for which the
-- writers contended. Event ids are appended in about received order, so a BRIN
-- index (one summary per 128 pages) serves the same DELETE for a fraction of
-- the cost. Ranges refilled after a retention run widen their summaries, so
-- the DELETE reads more of the table over time; it runs once a day.
DROP INDEX IF EXISTS analytics.event_ids_received_idx;
CREATE INDEX IF NOT EXISTS event_ids_received_brin ON analytics.event_ids
    USING brin (received_at) WITH (autosummarize = on);

-- Nothing reads the raw table by company either: the reporter reads rollups
-- only, and `arvctl rollups rebuild` and retention work on whole day
-- partitions. For ad-hoc queries by company, create an index on the day
-- partitions concerned (docs/operations.md).
DROP INDEX IF EXISTS analytics.ar_view_sessions_company_created_idx;
