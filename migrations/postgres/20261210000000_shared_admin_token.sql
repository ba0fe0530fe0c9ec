-- The admin token every node accepts, when none is configured: the first
-- node to start registers the SHA-256 of the token in its data directory
-- (or of one it makes), and every later node accepts that token. Only the
-- hash is stored.
CREATE TABLE shared_secrets (
    name       TEXT PRIMARY KEY,
    sha256     BYTEA NOT NULL CHECK (length(sha256) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
