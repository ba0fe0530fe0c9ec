-- Webhook events, written in the same transaction as the state change they
-- announce and deleted never (a delivered event keeps its delivery time), so
-- a crash can neither lose one nor send one that did not happen. `body` is
-- the exact JSON sent: every delivery of an event is byte-identical.
CREATE TABLE webhook_events (
    id              TEXT    PRIMARY KEY,
    type            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT
);

CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE delivered_at IS NULL;
