-- Password-reset and email-verification tokens: only a SHA-256 of each token is kept.
CREATE TABLE one_time_tokens (
    token_hash TEXT    PRIMARY KEY NOT NULL,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 'password_reset' or 'verify_email'
    purpose    TEXT    NOT NULL,
    -- The address the token was mailed to: a verification holds only while it is still the account's.
    email      TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT
);
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id, purpose);

-- Mail waiting to be sent, written in the same transaction as the token it carries.
CREATE TABLE mail_outbox (
    id              TEXT   PRIMARY KEY NOT NULL,
    recipient       TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    -- Cleared once the mail is sent or has failed for good: it may hold a token.
    body_text       TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- A worker's claim on the row, so that several instances never send one mail twice at once.
    locked_until    BIGINT,
    sent_at         BIGINT,
    failed_at       BIGINT,
    last_error      TEXT
);
CREATE INDEX mail_outbox_due_idx ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;

-- When a mail of each kind last went to each address, to limit how often one can be sent.
CREATE TABLE mail_throttle (
    throttle_key TEXT   PRIMARY KEY NOT NULL,
    last_sent_at BIGINT NOT NULL
);
