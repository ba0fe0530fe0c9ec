-- When a recording became ready, and when retention (`--keep-recordings`)
-- deleted its file: the session stays `ready`, so listings still explain it,
-- and downloads answer 410.
ALTER TABLE sessions ADD COLUMN ready_at INTEGER;
ALTER TABLE sessions ADD COLUMN recording_expired_at INTEGER;
UPDATE sessions SET ready_at = updated_at WHERE state = 'ready';
CREATE INDEX sessions_by_ready ON sessions (ready_at) WHERE state = 'ready' AND recording_expired_at IS NULL;
