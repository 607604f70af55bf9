-- walcast setup, step 2: keep the publication's table list in step with the Strapi schema.
-- Applied when {publication} exists but covers other tables (a content type was added or
-- removed in Strapi since the last setup).
ALTER PUBLICATION {publication} SET TABLE {tables};
