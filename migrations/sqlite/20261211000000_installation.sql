-- A random id for this database, made once. A server writes it into the
-- object-storage prefix its recordings go to (`spool-owner.json`), so that
-- a second database pointed at that prefix is refused at start instead of
-- sweeping the first one's recordings away as orphans.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id        TEXT NOT NULL
);
INSERT INTO installation (singleton, id) VALUES (1, lower(hex(randomblob(16))));
