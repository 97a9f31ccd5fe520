-- Two sessions ensuring the same missing day partition at once (two workers
-- whose reads reach an old day, or the retention thread at midnight) both
-- found it missing, and the second CREATE failed (42P07 "already exists", or
-- 23505 on the catalog): its worker logged postgresql_unavailable, reported
-- itself not ready and backed off. A partition another session made
-- meanwhile now counts as made.
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
            BEGIN
                EXECUTE format(
                    'CREATE TABLE analytics.%I PARTITION OF analytics.ar_view_sessions '
                    'FOR VALUES FROM (%L) TO (%L)',
                    part, to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
                    to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
                created := created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL; -- made by another session since the check
            END;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;
