-- Session keys are never reused: `AUTOINCREMENT` hands out keys above every
-- key ever used, so a chunk row can only belong to the session that wrote
-- it, and a stale reference (a socket, a finalize step, an interrupted
-- delete) can only ever touch its own, deleted, session.
--
-- Deleting becomes a state: the row stays, marked `deleted`, until its
-- chunks and recording file are gone, so a delete cut short by a crash is
-- found and finished by the start-up sweep.
CREATE TABLE sessions_v2 (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id           TEXT    NOT NULL UNIQUE,
    token_hash          BLOB    NOT NULL,
    state               TEXT    NOT NULL DEFAULT 'recording'
                        CHECK (state IN ('recording', 'finishing', 'ready', 'failed', 'deleted')),
    mime_type           TEXT    NOT NULL,
    metadata            TEXT    NOT NULL DEFAULT '{}',
    expected_chunks     INTEGER,
    committed           INTEGER NOT NULL DEFAULT 0,
    chunks_received     INTEGER NOT NULL DEFAULT 0,
    bytes_received      INTEGER NOT NULL DEFAULT 0,
    max_index           INTEGER,
    connections         INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    finalize_claimed_at INTEGER,
    finalize_attempts   INTEGER NOT NULL DEFAULT 0,
    failure_reason      TEXT,
    recording_bytes         INTEGER,
    recording_sha256        TEXT,
    recording_source_bytes  INTEGER,
    recording_source_sha256 TEXT,
    recording_duration_ms   INTEGER,
    recording_complete      INTEGER,
    recording_missing       TEXT
);

INSERT INTO sessions_v2 (
    seq, public_id, token_hash, state, mime_type, metadata, expected_chunks, committed,
    chunks_received, bytes_received, max_index, connections, created_at, updated_at,
    last_seen_at, finalize_claimed_at, finalize_attempts, failure_reason, recording_bytes,
    recording_sha256, recording_source_bytes, recording_source_sha256, recording_duration_ms,
    recording_complete, recording_missing)
SELECT
    seq, public_id, token_hash, state, mime_type, metadata, expected_chunks, committed,
    chunks_received, bytes_received, max_index, connections, created_at, updated_at,
    last_seen_at, finalize_claimed_at, finalize_attempts, failure_reason, recording_bytes,
    recording_sha256, recording_source_bytes, recording_source_sha256, recording_duration_ms,
    recording_complete, recording_missing
FROM sessions;

DROP TABLE sessions;
ALTER TABLE sessions_v2 RENAME TO sessions;

CREATE INDEX sessions_by_created ON sessions (created_at DESC, seq DESC);
CREATE INDEX sessions_by_state ON sessions (state, last_seen_at);

-- An interrupted delete of the old schema removed the row before the chunks:
-- keep new keys above those orphans too (the sweep deletes them).
INSERT INTO sqlite_sequence (name, seq)
SELECT 'sessions', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'sessions');
UPDATE sqlite_sequence
SET seq = MAX(seq, (SELECT COALESCE(MAX(session), 0) FROM chunks))
WHERE name = 'sessions';

-- An early version ended a session `failed` after a few failed finalize
-- attempts while it still held acknowledged chunks. Put those back in the
-- queue (claimable at once): they become recordings, never garbage.
UPDATE sessions
SET state = 'finishing', finalize_claimed_at = 0, finalize_attempts = 0
WHERE state = 'failed' AND committed > 0;
