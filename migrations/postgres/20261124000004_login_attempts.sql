-- Consecutive failed logins per address (whether or not an account has it, so that a lockout
-- tells nothing about which accounts exist), shared by every instance.
CREATE TABLE login_attempts (
    email        TEXT   PRIMARY KEY NOT NULL,
    failures     BIGINT NOT NULL,
    locked_until BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX login_attempts_updated_idx ON login_attempts (updated_at);
