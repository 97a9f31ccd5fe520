-- Rollup rows are updated in place by every batch (views += n, hll_union):
-- leaving free space on each page lets PostgreSQL make those HOT updates (no
-- new index entries, since no indexed column changes), which roughly halves
-- the cost of a rollup upsert. Applies to pages written from now on.
ALTER TABLE analytics.rollup_content_daily SET (fillfactor = 70);
ALTER TABLE analytics.rollup_content_hourly SET (fillfactor = 70);
ALTER TABLE analytics.rollup_company_daily SET (fillfactor = 50);
ALTER TABLE analytics.rollup_company_hourly SET (fillfactor = 50);
ALTER TABLE analytics.rollup_breakdown_daily SET (fillfactor = 70);
