-- Freshness kept per stream rather than per consumer. A consumer's row said
-- how far that consumer had written, which left out what a dead consumer
-- still owed (its row aged out of the reporter's minimum), what a new one
-- had not committed yet, and entries whose received_at lay below what was
-- already read (skewed collector clocks, an XADD executed late). A stream's
-- row is its floor, taken from Redis: every entry below its oldest pending
-- and its first undelivered entry is acknowledged, so committed; the row
-- holds that instant less the largest delay seen between an event's
-- received_at and its XADD (docs/aggregator.md, "Guarantees").
CREATE TABLE analytics.stream_watermarks (
    stream          text PRIMARY KEY,
    complete_until  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Aggregators from before this migration still write their consumer rows
-- until they are replaced; nothing reads them any more.
COMMENT ON TABLE analytics.ingest_watermarks IS
    'no longer read (see stream_watermarks); written by aggregators older than migration 0014';
