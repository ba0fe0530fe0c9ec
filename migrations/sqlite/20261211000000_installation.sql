-- A random id for this database, made once. A server with recordings in
-- object storage marks its prefix with it (`spool-database-<id>.json`), so
-- that where two databases share a prefix neither sweeps the other's
-- recordings away as orphans.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id        TEXT NOT NULL
);
INSERT INTO installation (singleton, id) VALUES (1, lower(hex(randomblob(16))));
