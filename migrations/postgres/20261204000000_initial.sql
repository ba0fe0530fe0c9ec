-- Spool on PostgreSQL: the same sessions and webhook outbox as SQLite, and
-- chunks keyed by (session, idx). Times are milliseconds since the epoch.

CREATE TABLE sessions (
    -- Session keys are never reused: chunk rows and files are keyed by them.
    seq                     BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id               TEXT    NOT NULL UNIQUE,
    token_hash              BYTEA   NOT NULL,
    state                   TEXT    NOT NULL DEFAULT 'recording'
                            CHECK (state IN ('recording', 'finishing', 'ready', 'failed', 'deleted')),
    mime_type               TEXT    NOT NULL,
    metadata                TEXT    NOT NULL DEFAULT '{}',
    expected_chunks         BIGINT,
    committed               BIGINT  NOT NULL DEFAULT 0,
    chunks_received         BIGINT  NOT NULL DEFAULT 0,
    bytes_received          BIGINT  NOT NULL DEFAULT 0,
    max_index               BIGINT,
    connections             BIGINT  NOT NULL DEFAULT 0,
    created_at              BIGINT  NOT NULL,
    updated_at              BIGINT  NOT NULL,
    last_seen_at            BIGINT  NOT NULL,
    finalize_claimed_at     BIGINT,
    finalize_attempts       BIGINT  NOT NULL DEFAULT 0,
    failure_reason          TEXT,
    recording_bytes         BIGINT,
    recording_sha256        TEXT,
    recording_source_bytes  BIGINT,
    recording_source_sha256 TEXT,
    recording_duration_ms   BIGINT,
    recording_complete      BOOLEAN,
    recording_missing       TEXT,
    recording_rewritten     BOOLEAN,
    last_client_addr        TEXT,
    last_user_agent         TEXT,
    ready_at                BIGINT,
    recording_expired_at    BIGINT
);

CREATE INDEX sessions_by_state ON sessions (state, last_seen_at);
CREATE INDEX sessions_by_state_seq ON sessions (state, seq);
CREATE INDEX sessions_by_created ON sessions (created_at DESC, seq DESC);
CREATE INDEX sessions_by_ready ON sessions (ready_at)
    WHERE state = 'ready' AND recording_expired_at IS NULL;

-- First write wins per (session, idx): a resend is dropped by the key.
CREATE TABLE chunks (
    session BIGINT  NOT NULL,
    idx     BIGINT  NOT NULL,
    crc     BIGINT  NOT NULL,
    flags   BIGINT  NOT NULL,
    payload BYTEA   NOT NULL,
    PRIMARY KEY (session, idx)
);
-- Audio does not compress, so never try; chunks of a few KB stay in the
-- row, larger ones go to TOAST.
ALTER TABLE chunks ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE chunks SET (toast_tuple_target = 8160);

CREATE TABLE webhook_events (
    id              TEXT    PRIMARY KEY,
    type            TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    body            TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE delivered_at IS NULL;

-- For operators, as in SQLite.
CREATE VIEW session_overview AS
SELECT
    public_id AS id,
    state,
    mime_type,
    to_timestamp(created_at / 1000.0) AS created_at,
    to_timestamp(updated_at / 1000.0) AS updated_at,
    to_timestamp(last_seen_at / 1000.0) AS last_seen_at,
    committed,
    chunks_received,
    bytes_received,
    expected_chunks,
    GREATEST(COALESCE(max_index, -1), COALESCE(expected_chunks - 1, -1)) + 1 - chunks_received
        AS missing_chunks,
    connections,
    recording_bytes,
    recording_duration_ms,
    recording_complete,
    failure_reason,
    last_client_addr,
    metadata
FROM sessions
WHERE state != 'deleted';
