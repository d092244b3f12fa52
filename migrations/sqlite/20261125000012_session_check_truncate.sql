-- PostgreSQL's migration 12 makes a TRUNCATE of `users` or `sessions` tell every instance to
-- drop its cached session checks. SQLite has no TRUNCATE and no channel: nothing to do here;
-- the histories keep the same numbers.
SELECT 1;
