-- ensure_day_partitions wrote each partition's bounds as a timestamptz turned
-- into text (%L) in the session's DateStyle and TimeZone, which PostgreSQL
-- then read back. Under DateStyle 'Postgres' or 'SQL' with a zone whose
-- abbreviation means another zone too (Asia/Shanghai's CST is read as US
-- Central, Asia/Kolkata's IST as Israel's), the bounds moved by hours: rows
-- went to the day before's partition, and the next partition made with the
-- right bounds overlapped it (42P17), which stopped the aggregators. The bounds
-- are now ISO text with an explicit offset, the same under any setting (and
-- arvctl's sessions now run in UTC with DateStyle ISO).
CREATE OR REPLACE FUNCTION analytics.ensure_day_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date := first_day;
    created integer := 0;
    part text;
BEGIN
    WHILE d <= last_day LOOP
        part := format('ar_view_sessions_p%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(format('analytics.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE analytics.%I PARTITION OF analytics.ar_view_sessions '
                'FOR VALUES FROM (%L) TO (%L)',
                part, to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Partitions made so before are named, not moved (their rows would have to
-- be): see docs/operations.md, "Upgrades".
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bounds
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'analytics.ar_view_sessions'::regclass
          AND c.relname ~ '^ar_view_sessions_p[0-9]{8}$'
          AND substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$FROM \('([^']+)'\)$re$)::timestamptz
              IS DISTINCT FROM to_date(right(c.relname, 8), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC'
        ORDER BY 1
    LOOP
        RAISE WARNING 'partition analytics.% does not begin at 00:00 UTC of its day (%): see docs/operations.md, "Upgrades"',
            r.relname, r.bounds;
    END LOOP;
END;
$$;
