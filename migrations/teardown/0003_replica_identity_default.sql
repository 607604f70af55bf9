-- walcast teardown, step 3: back to Strapi's default replica identity on each content table
-- {table} that walcast setup made FULL (smaller WAL records for updates and deletes).
ALTER TABLE {table} REPLICA IDENTITY DEFAULT;
