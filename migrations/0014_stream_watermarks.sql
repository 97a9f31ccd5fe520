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
    -- what the reporter publishes: floor_at less the delay (at least 1 s),
    -- never past the writer's now() less 1 s; the epoch until a floor is known
    complete_until  timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- the floor in Redis's clock: every entry below it is acknowledged
    floor_at        timestamptz,
    -- the largest delay from an event's received_at to its XADD that any
    -- aggregator reported, last at delay_at: kept 10 minutes, so that an
    -- aggregator that has not seen it yet does not publish past it
    delay_ms        bigint NOT NULL DEFAULT 0,
    delay_at        timestamptz NOT NULL DEFAULT now()
);

-- Aggregators from before this migration still write their consumer rows
-- until they are replaced; nothing reads them any more.
COMMENT ON TABLE analytics.ingest_watermarks IS
    'no longer read (see stream_watermarks); written by aggregators older than migration 0014';
