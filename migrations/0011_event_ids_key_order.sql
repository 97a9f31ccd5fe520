-- The dedupe key's primary key leads with event_id. Ids the collector assigns
-- are time-ordered (UUIDv7), so each read's keys, sorted in the key's order,
-- now continue at the B-tree's right edge, where PostgreSQL inserts without
-- descending the tree; led by company_id they went to one place per company.
-- A COPY of 1M such keys in reads of 10,000 from 50 companies used 1.35 to
-- 1.43 s of CPU against 2.00 to 2.31 s (three alternating runs). Clients'
-- random (v4) ids cost the same either way. Uniqueness is unchanged (the same
-- two columns); company_id is still in the key, as a Citus distribution
-- column must be.
--
-- Rebuilding the index locks event_ids, and so ingestion, until it is done:
-- on a large table, build the new index first with CREATE UNIQUE INDEX
-- CONCURRENTLY as event_ids_pkey_new (docs/operations.md, "Upgrades"), which
-- this then takes as the key at once; a key already in order is left alone.
DO $$
DECLARE
    key name;
    cols text[];
BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY k.n) INTO key, cols
    FROM pg_constraint c
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k (attnum, n)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = 'analytics.event_ids'::regclass AND c.contype = 'p'
    GROUP BY c.conname;
    IF cols = ARRAY['event_id', 'company_id'] THEN
        RETURN;
    END IF;
    IF key IS NOT NULL THEN
        EXECUTE format('ALTER TABLE analytics.event_ids DROP CONSTRAINT %I', key);
    END IF;
    IF EXISTS (SELECT FROM pg_index i
               WHERE i.indexrelid = to_regclass('analytics.event_ids_pkey_new')
                 AND i.indrelid = 'analytics.event_ids'::regclass AND i.indisvalid
                 AND i.indisunique
                 AND pg_get_indexdef(i.indexrelid) LIKE '%(event_id, company_id)') THEN
        ALTER TABLE analytics.event_ids
            ADD CONSTRAINT event_ids_pkey PRIMARY KEY USING INDEX event_ids_pkey_new;
    ELSE
        ALTER TABLE analytics.event_ids ADD PRIMARY KEY (event_id, company_id);
    END IF;
END$$;
