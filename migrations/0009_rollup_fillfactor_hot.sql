-- Every batch updates nearly every rollup row of the current hour and day, so
-- on a page of hot rows all of them get a new version at once; and while the
-- other writer's transaction is open, the previous versions cannot be pruned
-- yet. An update is HOT (no new index entries) only if its page has room, which
-- at fillfactor 70 was true of about half the breakdown updates: the rest added
-- index entries to every index, and the primary key's chains of dead entries
-- made each later ON CONFLICT check slower (bench/aggregator.sh: the merge took
-- 6.5 s for 200k events in 25k batches, 3.6 s at fillfactor 30, with 97% of
-- the updates HOT). The rollup tables are small beside the raw events, and
-- grow 2 to 3 times on disk. Applies to pages written from now on (rewrite an
-- existing table with VACUUM FULL or pg_repack to apply it to old pages).
ALTER TABLE analytics.rollup_content_daily SET (fillfactor = 30);
ALTER TABLE analytics.rollup_content_hourly SET (fillfactor = 30);
ALTER TABLE analytics.rollup_company_daily SET (fillfactor = 30);
ALTER TABLE analytics.rollup_company_hourly SET (fillfactor = 30);
ALTER TABLE analytics.rollup_breakdown_daily SET (fillfactor = 30);
