-- HLL sketches (log2m 12, regwidth 5) are up to 2.5 KB: an explicit sketch past
-- about 250 sessions, and every dense one, is larger than the ~2 KB TOAST
-- threshold. With the default storage (EXTENDED) every update of such a row
-- tries to compress the new sketch and, since register data compresses badly,
-- moves it out of line into the TOAST table: one more heap row and index entry
-- written (and one deleted) per rollup update. PLAIN keeps sketches inline and
-- uncompressed; a rollup row stays well below a page (about 2.7 KB at most).
-- Applies to values written from now on.
ALTER TABLE analytics.rollup_content_daily ALTER COLUMN sessions SET STORAGE PLAIN;
ALTER TABLE analytics.rollup_content_hourly ALTER COLUMN sessions SET STORAGE PLAIN;
ALTER TABLE analytics.rollup_company_daily ALTER COLUMN sessions SET STORAGE PLAIN;
ALTER TABLE analytics.rollup_company_hourly ALTER COLUMN sessions SET STORAGE PLAIN;
ALTER TABLE analytics.rollup_breakdown_daily ALTER COLUMN sessions SET STORAGE PLAIN;
