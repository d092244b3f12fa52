-- Two changes of what the session check reads that migration 11's triggers did not report, so
-- that every instance kept serving its cached checks until they expired (SESSION_CACHE_MS):
--
-- A TRUNCATE (an operator's "log everyone out": `TRUNCATE sessions CASCADE`, or `TRUNCATE
-- users CASCADE`) fires no row trigger: it notifies `*`, and every instance drops all its
-- cached checks (a flush).
CREATE FUNCTION auth_session_check_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('auth_session_check', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER users_session_check_truncated AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION auth_session_check_truncated();
CREATE TRIGGER sessions_session_check_truncated AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION auth_session_check_truncated();

-- A session's end (`refresh_expires_at`) moved earlier, by SQL (the server only ever moves it
-- later, at a refresh, which needs no notification: a cached check is never served past the
-- end it read). The check reads that column, and the cache serves up to the end it read.
CREATE TRIGGER sessions_session_check_shortened
    AFTER UPDATE OF refresh_expires_at ON sessions
    FOR EACH ROW WHEN (NEW.refresh_expires_at < OLD.refresh_expires_at)
    EXECUTE FUNCTION auth_session_check_changed();
