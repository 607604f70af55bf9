-- walcast setup, step 1: the publication over the tables walcast watches.
-- Applied when the publication {publication} does not exist yet. {tables} is the list of
-- Strapi tables walcast reads: content-type tables and the users-permissions, API-token,
-- session and admin-user tables its permission model is built from, plus the core store
-- (schema reloads). Creating a publication needs ownership of those tables (Strapi's
-- database user) or a superuser.
CREATE PUBLICATION {publication} FOR TABLE {tables};
