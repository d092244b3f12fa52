-- "The credentials changed": every change of an account's email, password, active flag or
-- superuser flag adds one to its security stamp. Sessions and one-time tokens carry the stamp
-- they were made under, and are good only while it is still the account's (checked in the same
-- statement that reads or writes them), so a reset link, a verification link, or a login or
-- refresh that was in flight when the credentials changed, yields nothing afterwards.
ALTER TABLE users ADD COLUMN security_stamp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN user_stamp BIGINT NOT NULL DEFAULT 0;
ALTER TABLE one_time_tokens ADD COLUMN user_stamp BIGINT NOT NULL DEFAULT 0;

-- The name folded for case-insensitive search, by the server (Unicode lower case, NFC), so that
-- admin search matches the same way on SQLite and PostgreSQL. Filled by the server at start for
-- rows written before this column existed.
ALTER TABLE users ADD COLUMN name_search TEXT;

-- How many mails each account has caused in the current window (the per-account mail limit).
CREATE TABLE mail_quota (
    user_id      TEXT   PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    window_start BIGINT NOT NULL,
    sent         BIGINT NOT NULL
);
