-- Nothing reads the raw table by content: the reporter reads rollups only, and
-- `arvctl rollups rebuild` and retention work on whole day partitions. The
-- index on ar_content_id only cost every ingested row one more B-tree insert
-- (and its WAL). (company_id, created_at) stays for ad-hoc per-company queries.
DROP INDEX IF EXISTS analytics.ar_view_sessions_content_idx;
