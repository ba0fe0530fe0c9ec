-- Chunk rows are indexed by arrival block, not by session.
--
-- With the old key (session, idx), thousands of recordings writing at once
-- put each commit's rows on as many different index pages, and WAL writes
-- whole pages: 2,000 recordings x 10 chunks/s wrote ~15 KB to disk per 2 KB
-- chunk and fell from ~60 k to ~20 k rows/s as the index grew. Keyed by
-- (block, session, idx), where a block is ~16 k consecutive arrivals, a
-- commit touches only the few index pages of the current block: ~5 KB
-- written per chunk and a rate that stays flat (measured ~85 k rows/s).
--
-- A session's rows lie in blocks first_block..=last_block (NULL: it holds no
-- chunk); reads seek each block of that span. Keys (session, idx) stay
-- unique: the writer, the only inserter, checks before it stores, and the
-- index enforces it within a block. Rows of the old layout form block 0.
ALTER TABLE sessions ADD COLUMN first_block INTEGER;
ALTER TABLE sessions ADD COLUMN last_block INTEGER;

CREATE TABLE chunks_new (
    block   INTEGER NOT NULL,
    session INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    crc     INTEGER NOT NULL,
    flags   INTEGER NOT NULL,
    payload BLOB    NOT NULL
);

-- Chunks whose session row is gone are garbage an early version could leave
-- behind (a delete that removed the row first): they are not carried over.
INSERT INTO chunks_new (block, session, idx, crc, flags, payload)
SELECT 0, session, idx, crc, flags, payload FROM chunks
WHERE session IN (SELECT seq FROM sessions)
ORDER BY session, idx;

DROP TABLE chunks;
ALTER TABLE chunks_new RENAME TO chunks;
CREATE UNIQUE INDEX chunks_by_block ON chunks (block, session, idx);

UPDATE sessions SET first_block = 0, last_block = 0
WHERE seq IN (SELECT DISTINCT session FROM chunks);

-- The sweep walks the sessions that still hold chunks.
CREATE INDEX sessions_holding_chunks ON sessions (seq) WHERE first_block IS NOT NULL;
