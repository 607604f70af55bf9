-- walcast teardown, step 1: drop the logical slot {slot} so it no longer pins WAL.
-- Refused while a walcast is consuming it (stop every walcast node first).
SELECT pg_drop_replication_slot('{slot}');
