-- Every instance keeps the session checks it made for a moment (SESSION_CACHE_MS) and drops an
-- account's when told: a change of a column the check reads notifies `auth_session_check`
-- with the account's id, in the change's transaction (delivered at its commit, never for a
-- rollback), whoever makes it: an instance, the command line, an operator's SQL.
CREATE FUNCTION auth_session_check_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('auth_session_check', OLD.id);
    ELSE
        PERFORM pg_notify('auth_session_check', OLD.user_id);
    END IF;
    RETURN NULL;
END
$$;

-- Any real change of an account (a no-op update that only locks the row says nothing).
CREATE TRIGGER users_session_check AFTER UPDATE ON users
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION auth_session_check_changed();
CREATE TRIGGER users_session_check_deleted AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION auth_session_check_changed();

-- What the check reads of a session (a refresh's rotation touches none of these).
CREATE TRIGGER sessions_session_check
    AFTER UPDATE OF revoked_at, user_stamp, amr, mfa_at, passkey_at, user_id ON sessions
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)
    EXECUTE FUNCTION auth_session_check_changed();
-- A session deleted while not revoked (the purge deletes only ended ones, which no instance
-- serves; an account's deletion notifies through `users`).
CREATE TRIGGER sessions_session_check_deleted AFTER DELETE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
    EXECUTE FUNCTION auth_session_check_changed();
