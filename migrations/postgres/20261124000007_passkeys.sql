-- Passkeys (WebAuthn): the credentials, the ceremonies under way, and when a session last
-- proved a passkey.

-- One row per registered credential. `credential` is the library's binary encoding of what
-- never changes (the public key and its extensions), base64; the counter, the backup flags and
-- user verification at registration are columns of their own. The WebAuthn user handle is the
-- 16 bytes of the account's UUID: no column.
CREATE TABLE passkeys (
    id                   TEXT    PRIMARY KEY NOT NULL,
    user_id              TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- base64url without padding, unique across every account.
    credential_id        TEXT    NOT NULL UNIQUE,
    credential           TEXT    NOT NULL,
    sign_count           BIGINT  NOT NULL,
    backup_eligible      BOOLEAN NOT NULL,
    backed_up            BOOLEAN NOT NULL,
    user_verified        BOOLEAN NOT NULL,
    -- A JSON array of transport names.
    transports           TEXT    NOT NULL DEFAULT '[]',
    aaguid               TEXT,
    name                 TEXT    NOT NULL,
    created_at           BIGINT  NOT NULL,
    last_used_at         BIGINT,
    -- When an assertion's signature counter did not grow (a possibly cloned authenticator).
    counter_regressed_at BIGINT
);
CREATE INDEX passkeys_user_idx ON passkeys (user_id);

-- A ceremony waiting for its answer, by the SHA-256 of its challenge; taken (deleted) when the
-- answer comes, whether or not the answer is good. `binding` ties it to what started it: the
-- session (register, step_up), the mfa_token's hash (mfa), nothing (login). `user_id` is the
-- account it is for, and no foreign key: an email-first login for an address without an account
-- stores a marker that is no account's id (so that an answer is refused as for another account).
CREATE TABLE webauthn_ceremonies (
    challenge_hash TEXT   PRIMARY KEY NOT NULL,
    purpose        TEXT   NOT NULL,
    user_id        TEXT,
    binding        TEXT,
    user_stamp     BIGINT,
    state          TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_expires_idx ON webauthn_ceremonies (expires_at);

-- When the session last proved a passkey (a sign-in with user verification, or a step-up).
ALTER TABLE sessions ADD COLUMN passkey_at BIGINT;
