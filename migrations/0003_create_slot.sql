-- walcast setup, step 3: the durable logical replication slot walcast consumes.
-- Applied when the slot {slot} does not exist in this database. The slot keeps WAL until
-- walcast confirms it; remove it with `walcast teardown` (or pg_drop_replication_slot) when
-- walcast is retired, or it pins WAL forever. Bound it with max_slot_wal_keep_size.
SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
