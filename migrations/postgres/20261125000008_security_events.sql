-- The security audit trail: one row per event (a sign-in, a credential change, an admin action),
-- written in the transaction of the change it records. `seq` orders the rows and is the cursor
-- of the listings; `id` is the event's public id (and a webhook's `webhook-id`). `user_id` and
-- `actor_id` have no foreign key: the trail outlives a deleted account until it is purged
-- (AUDIT_RETENTION_DAYS). `detail` is a small JSON object, never a secret.
CREATE TABLE security_events (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    at         BIGINT  NOT NULL,
    type       TEXT    NOT NULL,
    user_id    TEXT,
    actor_id   TEXT,
    session_id TEXT,
    ip         TEXT,
    user_agent TEXT,
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX security_events_user_idx ON security_events (user_id, seq);
CREATE INDEX security_events_type_idx ON security_events (type, seq);
CREATE INDEX security_events_at_idx ON security_events (at);
