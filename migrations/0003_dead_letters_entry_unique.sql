-- One dead letter per stream entry: the aggregator writes dead letters with
-- ON CONFLICT DO NOTHING, so a redelivered entry (crash between COMMIT and XACK,
-- or an entry claimed from a dead consumer) is not dead-lettered twice.
CREATE UNIQUE INDEX dead_letters_stream_entry_idx
    ON analytics.dead_letters (stream, entry_id);
