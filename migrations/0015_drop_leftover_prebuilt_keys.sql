-- Migrations 0011 and 0012 take a key built beforehand under the name
-- <table>_pkey_new (docs/operations.md, "Upgrades"); when none can be taken,
-- they build the key themselves. 0011 then left such an index in place: one
-- that CREATE UNIQUE INDEX CONCURRENTLY failed to build stays invalid but is
-- still updated (and checked) at every insert into event_ids, which is every
-- dedupe; one built on other columns, or after the migration ran, too. No key
-- is ever named so (a constraint takes its index under its own name): any
-- such index left over goes.
DO $$
DECLARE
    idx regclass;
BEGIN
    FOR idx IN
        SELECT i.indexrelid::regclass
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'analytics'::regnamespace
          AND c.relname IN ('event_ids_pkey_new', 'rollup_content_hourly_pkey_new',
                            'rollup_content_daily_pkey_new', 'rollup_breakdown_daily_pkey_new')
          AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
    LOOP
        RAISE WARNING 'dropping index %, left over from an upgrade (%): every insert updated it',
            idx, CASE WHEN (SELECT indisvalid FROM pg_index WHERE indexrelid = idx)
                      THEN 'not taken as the key' ELSE 'invalid: its build failed' END;
        EXECUTE format('DROP INDEX %s', idx);
    END LOOP;
END$$;
