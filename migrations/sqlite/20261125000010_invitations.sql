-- Invitations (REGISTRATION=invite): a superuser invites an address; the link mailed to it
-- registers one account for that address, once, before it expires. Only a SHA-256 of the token
-- is kept: the token itself is in the mail alone.
CREATE TABLE invitations (
    id               TEXT   PRIMARY KEY NOT NULL,
    -- Normalised as users.email is: the account's address must be exactly this.
    email            TEXT   NOT NULL,
    -- The name the invitation suggests (the register page fills it in); the invitee may change it.
    name             TEXT,
    token_hash       TEXT   NOT NULL UNIQUE,
    -- The superuser who invited (NULL once that account is deleted).
    invited_by       TEXT   REFERENCES users (id) ON DELETE SET NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    -- Set once, by the registration that used it (conditional on being NULL: single use).
    accepted_at      BIGINT,
    -- The account it made (NULL once that account is deleted).
    accepted_user_id TEXT   REFERENCES users (id) ON DELETE SET NULL,
    -- Set by DELETE /invitations/{id}, or when a newer invitation replaces it.
    revoked_at       BIGINT
);
-- The pending invitations of an address (a new one replaces them), and the list of pending ones.
CREATE INDEX invitations_email_idx ON invitations (email);
CREATE INDEX invitations_created_idx ON invitations (created_at);
