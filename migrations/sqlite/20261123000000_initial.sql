-- Sessions: one row per recording. `seq` is the compact integer key the
-- chunk rows use; `public_id` is what clients see.
CREATE TABLE sessions (
    seq                 INTEGER PRIMARY KEY,
    public_id           TEXT    NOT NULL UNIQUE,
    token_hash          BLOB    NOT NULL,
    state               TEXT    NOT NULL DEFAULT 'recording'
                        CHECK (state IN ('recording', 'finishing', 'ready', 'failed')),
    mime_type           TEXT    NOT NULL,
    metadata            TEXT    NOT NULL DEFAULT '{}',
    -- Declared by `finish`; NULL until then.
    expected_chunks     INTEGER,
    -- Every index below `committed` is durable (the contiguous prefix).
    committed           INTEGER NOT NULL DEFAULT 0,
    chunks_received     INTEGER NOT NULL DEFAULT 0,
    bytes_received      INTEGER NOT NULL DEFAULT 0,
    max_index           INTEGER,
    connections         INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,  -- unix milliseconds, like every *_at
    updated_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    -- Set when the finalize job takes the session; from then on no chunk is
    -- accepted, so what the job read is what the recording holds.
    finalize_claimed_at INTEGER,
    finalize_attempts   INTEGER NOT NULL DEFAULT 0,
    failure_reason      TEXT,
    recording_bytes         INTEGER,
    recording_sha256        TEXT,
    recording_source_bytes  INTEGER,
    recording_source_sha256 TEXT,
    recording_duration_ms   INTEGER,
    recording_complete      INTEGER,
    recording_missing       TEXT  -- JSON array of [from, to] inclusive ranges
);

CREATE INDEX sessions_by_created ON sessions (created_at DESC, seq DESC);
CREATE INDEX sessions_by_state ON sessions (state, last_seen_at);

-- Chunks: one row per (session, index); first write wins.
CREATE TABLE chunks (
    session INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    crc     INTEGER NOT NULL,
    flags   INTEGER NOT NULL,
    payload BLOB    NOT NULL,
    PRIMARY KEY (session, idx)
);
