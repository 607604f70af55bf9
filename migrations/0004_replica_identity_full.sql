-- walcast setup, step 4: full old rows for the content tables walcast attributes.
-- Applied to each content table {table} whose replica identity is not FULL yet. With the
-- default identity a DELETE carries only `id` and an UPDATE no old values, so walcast would
-- have to keep its own id → document index to tell which document a delete belongs to and
-- whether an update changed content. FULL makes every event self-describing, at the cost
-- of larger WAL records for updates and deletes of these tables.
ALTER TABLE {table} REPLICA IDENTITY FULL;
