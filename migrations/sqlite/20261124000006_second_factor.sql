-- A second factor: TOTP, recovery codes, and the step between a password and a session.

-- One TOTP authenticator per account. The secret is sealed (XChaCha20-Poly1305 under
-- MFA_ENCRYPTION_KEY or a key derived from SECRET_KEY, the user id as associated data): the
-- database alone does not yield codes. `confirmed_at` is NULL while enrolment is under way.
CREATE TABLE mfa_totp (
    user_id            TEXT   PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed      TEXT   NOT NULL,
    created_at         BIGINT NOT NULL,
    confirmed_at       BIGINT,
    -- The last time step a code was accepted for: only later steps are accepted (no replay).
    last_step          BIGINT,
    -- A superuser's removal of the factor that waits for MFA_RESET_DELAY_HOURS.
    reset_due_at       BIGINT,
    reset_requested_by TEXT
);
CREATE INDEX mfa_totp_reset_due_idx ON mfa_totp (reset_due_at) WHERE reset_due_at IS NOT NULL;

-- Single-use recovery codes, only as keyed hashes.
CREATE TABLE mfa_recovery_codes (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- A login whose password was right, waiting for its second factor (the `mfa_token`, by hash).
CREATE TABLE mfa_challenges (
    token_hash TEXT   PRIMARY KEY NOT NULL,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Good only while the account's credentials are those the password was checked against.
    user_stamp BIGINT NOT NULL,
    -- When the password was checked: the session's auth_time.
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    used_at    BIGINT,
    user_agent TEXT,
    ip         TEXT
);
CREATE INDEX mfa_challenges_user_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires_idx ON mfa_challenges (expires_at);

-- How a session was authenticated (RFC 8176 `amr` values, space-separated), when (NULL:
-- `created_at`), and when it last passed the second factor (for step-up).
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
ALTER TABLE sessions ADD COLUMN auth_time BIGINT;
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;
