-- Who connected last, for the admin detail view. Client text: shown escaped,
-- bounded when stored.
ALTER TABLE sessions ADD COLUMN last_client_addr TEXT;
ALTER TABLE sessions ADD COLUMN last_user_agent TEXT;

-- The admin list filters by state, newest (highest key) first.
CREATE INDEX sessions_by_state_seq ON sessions (state, seq);

-- For admins at the `sqlite3` shell of a live server (read-only use):
-- one row per session, times as RFC 3339 text, sizes in bytes.
-- `missing_chunks` counts the indexes below the highest one known (received
-- or declared by finish) that never arrived.
CREATE VIEW session_overview AS
SELECT
    public_id AS id,
    state,
    mime_type,
    strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch') AS created_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', updated_at / 1000.0, 'unixepoch') AS updated_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', last_seen_at / 1000.0, 'unixepoch') AS last_seen_at,
    committed,
    chunks_received,
    bytes_received,
    expected_chunks,
    MAX(COALESCE(max_index, -1), COALESCE(expected_chunks - 1, -1)) + 1 - chunks_received
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

-- Sessions and bytes by state.
CREATE VIEW state_totals AS
SELECT
    state,
    COUNT(*) AS sessions,
    SUM(chunks_received) AS chunks_received,
    SUM(bytes_received) AS bytes_received,
    SUM(COALESCE(recording_bytes, 0)) AS recording_bytes
FROM sessions
WHERE state != 'deleted'
GROUP BY state;
