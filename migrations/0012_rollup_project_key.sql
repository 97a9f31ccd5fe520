-- The per-content rollups are kept per project too. Content moved to another
-- project (arvctl content add, or the platform's own registry) counts in the
-- new project from then on, in rows of its own, as its raw rows do. Before,
-- the hour's or day's row kept the project of its first event for the rest
-- of that hour or day, and a rebuild took the smallest project instead.
-- project_id becomes the last column of each primary key: queries by company,
-- content and time use the keys as before.
--
-- Rebuilding a key locks its table, and so ingestion, until it is done: on
-- large tables, build each new key first with CREATE UNIQUE INDEX
-- CONCURRENTLY as <table>_pkey_new (docs/operations.md, "Upgrades"), which
-- this then takes as the key at once. Aggregators of an earlier release
-- cannot merge into the new keys: stop them before migrating.
CREATE FUNCTION pg_temp.replace_key(tbl regclass, cols text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key name;
    cur text[];
    prebuilt regclass := to_regclass(tbl::text || '_pkey_new');
BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY k.n) INTO key, cur
    FROM pg_constraint c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k (attnum, n)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = tbl AND c.contype = 'p'
    GROUP BY c.conname;
    IF cur = cols THEN
        RETURN;
    END IF;
    IF key IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, key);
    END IF;
    IF prebuilt IS NOT NULL AND EXISTS (
        SELECT FROM pg_index i
        WHERE i.indexrelid = prebuilt AND i.indrelid = tbl AND i.indisvalid AND i.indisunique
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND (SELECT array_agg(a.attname::text ORDER BY k.n)
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, n)
               JOIN pg_attribute a ON a.attrelid = tbl AND a.attnum = k.attnum) = cols) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I', tbl,
                       coalesce(key, (SELECT relname FROM pg_class WHERE oid = tbl) || '_pkey'),
                       (SELECT relname FROM pg_class WHERE oid = prebuilt));
    ELSE
        -- One that is not the key (a CREATE INDEX CONCURRENTLY that failed
        -- leaves an invalid index) goes: the name is the migration's.
        IF prebuilt IS NOT NULL THEN
            EXECUTE format('DROP INDEX %s', prebuilt);
        END IF;
        EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s)', tbl,
                       (SELECT string_agg(quote_ident(c), ', ') FROM unnest(cols) AS c));
    END IF;
END$$;

SELECT pg_temp.replace_key('analytics.rollup_content_hourly',
                           ARRAY['company_id', 'ar_content_id', 'hour', 'project_id']);
SELECT pg_temp.replace_key('analytics.rollup_content_daily',
                           ARRAY['company_id', 'ar_content_id', 'day', 'project_id']);
SELECT pg_temp.replace_key('analytics.rollup_breakdown_daily',
                           ARRAY['company_id', 'ar_content_id', 'day', 'dimension', 'value',
                                 'project_id']);

DROP FUNCTION pg_temp.replace_key(regclass, text[]);
