-- Migration 11's row triggers do not fire for TRUNCATE (an operator's "log everyone out":
-- `TRUNCATE sessions CASCADE`, or `TRUNCATE users CASCADE`): without this, every instance
-- kept serving its cached checks of the sessions truncated away until they expired. A TRUNCATE
-- of either table notifies `*`, and every instance drops all its cached checks (a flush).
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
