-- Accounts and login sessions. Times are Unix epoch milliseconds (UTC).
CREATE TABLE users (
    id            TEXT    PRIMARY KEY NOT NULL,
    -- Stored trimmed and lower-cased, so the unique index compares case-insensitively.
    email         TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    is_verified   BOOLEAN NOT NULL DEFAULT FALSE,
    is_superuser  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);

-- One row per login: the state of its refresh-token chain.
CREATE TABLE sessions (
    id                 TEXT    PRIMARY KEY NOT NULL,
    user_id            TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The live refresh token is generation `refresh_generation`; only a hash of its id is kept.
    refresh_generation BIGINT  NOT NULL,
    refresh_jti_hash   TEXT    NOT NULL,
    -- The token spent most recently, for the reuse window.
    previous_jti_hash  TEXT,
    -- When the live refresh token was issued (= when the previous one was spent) and when it expires.
    refreshed_at       BIGINT  NOT NULL,
    refresh_expires_at BIGINT  NOT NULL,
    created_at         BIGINT  NOT NULL,
    last_used_at       BIGINT  NOT NULL,
    -- The absolute end of the session, however often it is refreshed.
    expires_at         BIGINT  NOT NULL,
    revoked_at         BIGINT,
    user_agent         TEXT,
    ip                 TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id, created_at);
