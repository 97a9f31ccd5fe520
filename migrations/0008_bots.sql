-- Bots (the aggregator's user-agent parser says so) are kept as raw rows,
-- marked, and left out of every rollup. A constant default: no table rewrite.
ALTER TABLE analytics.ar_view_sessions ADD COLUMN IF NOT EXISTS is_bot boolean NOT NULL DEFAULT false;
