-- Webhooks: endpoints that superusers register, and one delivery per (event, endpoint), written
-- in the transaction of the event it carries (service::audit::record_in) and sent by a worker.
--
-- `event_types` is ',user.created,user.signed_in,' (every type between commas, so that one LIKE
-- matches a type on both backends) or '*' for every type. `secret` is the signing key, sealed
-- (auth::seal, the endpoint id as associated data): the database alone does not give it.
CREATE TABLE webhook_endpoints (
    id          TEXT    PRIMARY KEY NOT NULL,
    url         TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    event_types TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    created_by  TEXT    REFERENCES users (id) ON DELETE SET NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- One event for one endpoint. `event_id` is the event's id (security_events.id), sent as
-- `webhook-id`: the same on every attempt and redelivery. `id` orders the delivery log and is
-- its cursor. `attempts` counts the attempts begun (a claim counts one); `locked_until` is a
-- worker's claim, so that instances never send one delivery at once; `delivered_at` (a 2xx) or
-- `failed_at` (gave up) ends it. `last_error` is short and holds no secret.
CREATE TABLE webhook_deliveries (
    id              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    locked_until    BIGINT,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    last_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);
