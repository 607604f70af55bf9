-- walcast teardown, step 2: drop the publication {publication}.
DROP PUBLICATION IF EXISTS {publication};
