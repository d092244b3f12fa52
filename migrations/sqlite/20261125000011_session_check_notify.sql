-- PostgreSQL's migration 11 adds the triggers that tell other instances about changes of what
-- the session check reads (LISTEN/NOTIFY). SQLite has no such channel: another process's
-- change is seen when the cached check expires (SESSION_CACHE_MS). Nothing to do here; the
-- histories keep the same numbers.
SELECT 1;
