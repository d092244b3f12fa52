-- PostgreSQL's migration 12 makes a TRUNCATE of `users` or `sessions`, and a session's end
-- moved earlier, tell every instance to drop its cached session checks. SQLite has no TRUNCATE
-- and no channel: nothing to do here; the histories keep the same numbers.
SELECT 1;
