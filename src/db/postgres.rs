//! PostgreSQL, for several nodes on one database. The same operations as
//! SQLite; queries are built at run time (sqlx checks one database per
//! crate) and each is covered by the integration tests run against
//! PostgreSQL. Claims take rows with `FOR UPDATE SKIP LOCKED`, so nodes
//! never wait on each other's work nor take the same item.

use std::time::Duration;

use anyhow::Context;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row};

use super::admin::{ListFilter, Totals};
use super::batch::{Committed, Write};
use super::chunks::{RowRef, StoredChunk, slice_end};
use super::finalize::Claim;
use super::sessions::{ChunkHolder, FileOwner, NewSession, SessionRow};
use super::webhooks::{EventFor, NewEvent, PendingEvent};
use super::{Backend, ChunkWriter, Database};
use crate::domain::{SessionId, SessionState, TokenHash};

/// Connections per node for everything but the writer.
const POOL_CONNECTIONS: u32 = 16;

/// What a claim returns: [`Claim`]'s fields.
macro_rules! claim_columns {
    () => {
        "seq, public_id, mime_type, expected_chunks, committed, max_index, chunks_received,
         bytes_received, finalize_attempts, finalize_claimed_at AS claimed_at"
    };
}

pub struct PostgresDatabase {
    pool: PgPool,
    options: PgConnectOptions,
}

impl PostgresDatabase {
    /// Connects to `url` and brings the schema up to date (migrations take
    /// an advisory lock, so nodes starting together run them once).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .parse()
            .context("--database-url is not a PostgreSQL URL")?;
        let options = options
            .application_name("spool")
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("running database migrations")?;
        Ok(Self { pool, options })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection of its own (the writer's, the listener's).
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        self.options
            .connect()
            .await
            .context("connecting to PostgreSQL")
    }

    /// The connection options, for a `LISTEN` connection.
    pub fn options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// Registers `proposed` as the admin token's hash unless one is
    /// registered already; returns the one that holds (the first wins).
    pub async fn share_admin_token(&self, proposed: &TokenHash) -> anyhow::Result<TokenHash> {
        sqlx::query(
            "INSERT INTO shared_secrets (name, sha256) VALUES ('admin_token', $1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(proposed.as_bytes())
        .execute(&self.pool)
        .await
        .context("registering the admin token's hash")?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT sha256 FROM shared_secrets WHERE name = 'admin_token'")
                .fetch_one(&self.pool)
                .await
                .context("reading the admin token's hash")?;
        TokenHash::from_stored(&stored).context("the stored admin token hash is not 32 bytes")
    }

    /// Registers `token` as the admin token every node accepts, in place of
    /// any other; returns the one it replaced.
    pub async fn register_admin_token(
        &self,
        token: &TokenHash,
    ) -> anyhow::Result<Option<TokenHash>> {
        let previous: Option<Vec<u8>> = sqlx::query_scalar(
            "WITH previous AS (SELECT sha256 FROM shared_secrets WHERE name = 'admin_token')
             INSERT INTO shared_secrets (name, sha256) VALUES ('admin_token', $1)
             ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, created_at = now()
             RETURNING (SELECT sha256 FROM previous)",
        )
        .bind(token.as_bytes())
        .fetch_one(&self.pool)
        .await
        .context("registering the admin token's hash")?;
        previous
            .map(|stored| {
                TokenHash::from_stored(&stored)
                    .context("the stored admin token hash is not 32 bytes")
            })
            .transpose()
    }
}

/// The writer's own connection. A batch that fails drops it, and the next
/// batch connects again: a database restart or a failover costs the
/// batches in between (their submitters get an error and resend), never the
/// writer.
struct PostgresWriter {
    conn: Option<PgConnection>,
    options: PgConnectOptions,
}

#[async_trait::async_trait]
impl ChunkWriter for PostgresWriter {
    async fn commit_batch(&mut self, writes: &[Write<'_>]) -> anyhow::Result<Committed> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                self.options
                    .connect()
                    .await
                    .context("connecting the writer to PostgreSQL")?,
            ),
        };
        let committed = super::postgres_batch::commit_batch(conn, writes).await;
        if committed.is_err() {
            self.conn = None;
        }
        committed
    }

    async fn close(self: Box<Self>) {
        if let Some(conn) = self.conn
            && let Err(err) = conn.close().await
        {
            tracing::warn!(error = %err, "closing the writer's connection");
        }
    }
}

/// Adds the event `event` builds from the session's row, in `conn`'s transaction.
pub(super) async fn enqueue_for(
    conn: &mut PgConnection,
    seq: i64,
    event: &EventFor,
) -> sqlx::Result<()> {
    let row: Option<SessionRow> =
        sqlx::query_as("SELECT * FROM sessions WHERE seq = $1 AND state != 'deleted'")
            .bind(seq)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let NewEvent { id, kind, body } = event(&row);
    sqlx::query(
        "INSERT INTO webhook_events (id, type, created_at, body, next_attempt_at)
         VALUES ($1, $2, $3, $4, $3)",
    )
    .bind(id)
    .bind(kind)
    .bind(super::now_ms())
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Database for PostgresDatabase {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(drop)
    }

    async fn installation_id(&self) -> sqlx::Result<String> {
        sqlx::query_scalar("SELECT id FROM installation")
            .fetch_one(&self.pool)
            .await
    }

    async fn chunk_writer(&self) -> anyhow::Result<Box<dyn ChunkWriter>> {
        Ok(Box::new(PostgresWriter {
            conn: Some(self.connect().await?),
            options: self.options.clone(),
        }))
    }

    async fn insert_session(&self, new: NewSession<'_>, now: i64) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO sessions (public_id, token_hash, mime_type, metadata, created_at, updated_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $5, $5)",
        )
        .bind(new.id.as_str())
        .bind(new.token_hash.as_bytes())
        .bind(new.mime_type.as_str())
        .bind(new.metadata_json)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    async fn find_session(&self, id: &SessionId) -> sqlx::Result<Option<SessionRow>> {
        sqlx::query_as("SELECT * FROM sessions WHERE public_id = $1 AND state != 'deleted'")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
    }

    async fn mark_deleted(&self, seq: i64, now: i64) -> sqlx::Result<bool> {
        let marked = sqlx::query(
            "UPDATE sessions SET state = 'deleted', updated_at = $2, finalize_claimed_at = NULL
             WHERE seq = $1 AND state != 'deleted'",
        )
        .bind(seq)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    async fn remove_deleted(&self, seq: i64) -> sqlx::Result<()> {
        sqlx::query(
            "DELETE FROM sessions WHERE seq = $1 AND state = 'deleted'
               AND NOT EXISTS (SELECT 1 FROM chunks WHERE session = $1)",
        )
        .bind(seq)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    async fn deleted_sessions(&self, after: i64, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT seq, public_id FROM sessions WHERE state = 'deleted' AND seq > $1
             ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn chunk_holder(&self, seq: i64) -> sqlx::Result<Option<ChunkHolder>> {
        sqlx::query_as("SELECT state, committed FROM sessions WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
    }

    async fn state_by_public_id(&self, public_id: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT state FROM sessions WHERE public_id = $1")
            .bind(public_id)
            .fetch_optional(&self.pool)
            .await
    }

    async fn file_owner(&self, public_id: &str) -> sqlx::Result<Option<FileOwner>> {
        sqlx::query_as(
            "SELECT state, recording_expired_at IS NOT NULL AS expired
             FROM sessions WHERE public_id = $1",
        )
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await
    }

    async fn recordings_to_expire(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT seq, public_id FROM sessions
             WHERE state = 'ready' AND recording_expired_at IS NULL AND ready_at < $1
             ORDER BY ready_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn mark_expired(&self, seq: i64, now: i64) -> sqlx::Result<bool> {
        // The per-row claim: one node marks it (a row another node is
        // marking is skipped, not waited for), then removes the file.
        let marked = sqlx::query(
            "UPDATE sessions SET recording_expired_at = $2
             WHERE seq IN (SELECT seq FROM sessions
                           WHERE seq = $1 AND state = 'ready' AND recording_expired_at IS NULL
                           FOR UPDATE SKIP LOCKED)",
        )
        .bind(seq)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(marked.rows_affected() == 1)
    }

    async fn list_sessions(&self, filter: &ListFilter) -> sqlx::Result<Vec<SessionRow>> {
        let mut query =
            QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM sessions WHERE state != 'deleted'");
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(since) = filter.since_ms {
            query.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until_ms {
            query.push(" AND created_at <= ").push_bind(until);
        }
        if let Some(complete) = filter.complete {
            query
                .push(" AND state = 'ready' AND recording_complete = ")
                .push_bind(complete);
        }
        for (key, value) in &filter.meta {
            // As in SQLite: a string matches its text, a number or boolean as written.
            query
                .push(" AND (metadata::jsonb ->> ")
                .push_bind(key.clone())
                .push(") = ")
                .push_bind(value.clone());
        }
        if let Some(before) = filter.before_seq {
            query.push(" AND seq < ").push_bind(before);
        }
        query
            .push(" ORDER BY seq DESC LIMIT ")
            .push_bind(filter.limit);
        query
            .build_query_as::<SessionRow>()
            .fetch_all(&self.pool)
            .await
    }

    async fn sessions_by_state(&self) -> sqlx::Result<Vec<(SessionState, i64)>> {
        sqlx::query_as(
            "SELECT state, COUNT(*) FROM sessions WHERE state != 'deleted' GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await
    }

    async fn totals(&self) -> sqlx::Result<Totals> {
        sqlx::query_as(
            "SELECT COALESCE(SUM(chunks_received), 0)::bigint AS chunks_received,
                    COALESCE(SUM(bytes_received), 0)::bigint AS bytes_received,
                    COALESCE(SUM(recording_bytes), 0)::bigint AS recordings_bytes
             FROM sessions WHERE state != 'deleted'",
        )
        .fetch_one(&self.pool)
        .await
    }

    async fn stored_indexes(&self, seq: i64) -> sqlx::Result<Vec<i64>> {
        sqlx::query_scalar("SELECT idx FROM chunks WHERE session = $1 ORDER BY idx")
            .bind(seq)
            .fetch_all(&self.pool)
            .await
    }

    fn stream_prefix(&self, seq: i64, count: i64) -> BoxStream<'_, sqlx::Result<StoredChunk>> {
        let pool = &self.pool;
        // First the keys and sizes (small), then the payloads a slice at a
        // time, so memory stays flat however long the recording.
        futures_util::stream::try_unfold(
            None,
            move |read: Option<(Vec<RowRef>, usize)>| async move {
                let (rows, at) = match read {
                    Some(read) => read,
                    None => (prefix_keys(pool, seq, count).await?, 0),
                };
                if at == rows.len() {
                    return Ok::<_, sqlx::Error>(None);
                }
                let end = slice_end(&rows, at);
                let chunks: Vec<StoredChunk> = sqlx::query(
                    "SELECT idx, flags, payload FROM chunks
                 WHERE session = $1 AND idx >= $2 AND idx <= $3 ORDER BY idx",
                )
                .bind(seq)
                .bind(rows[at].idx)
                .bind(rows[end - 1].idx)
                .try_map(|row: sqlx::postgres::PgRow| {
                    Ok(StoredChunk {
                        idx: row.try_get("idx")?,
                        flags: row.try_get("flags")?,
                        payload: row.try_get("payload")?,
                    })
                })
                .fetch_all(pool)
                .await?;
                let chunks =
                    futures_util::stream::iter(chunks.into_iter().map(Ok::<_, sqlx::Error>));
                Ok(Some((chunks, Some((rows, end)))))
            },
        )
        .try_flatten()
        .boxed()
    }

    async fn next_session_with_chunks(&self, after: i64) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT session FROM chunks WHERE session > $1 ORDER BY session LIMIT 1")
            .bind(after)
            .fetch_optional(&self.pool)
            .await
    }

    async fn claim_due(
        &self,
        now: i64,
        idle_cutoff: i64,
        lease_ms: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<Claim>> {
        sqlx::query_as(concat!(
            "UPDATE sessions SET finalize_claimed_at = $1, state = 'finishing', updated_at = $1
             WHERE seq IN (
                 SELECT seq FROM sessions
                 WHERE state IN ('recording', 'finishing')
                   AND (finalize_claimed_at IS NULL OR finalize_claimed_at < $2)
                   AND (finalize_claimed_at IS NOT NULL
                        OR (expected_chunks IS NOT NULL AND committed >= expected_chunks)
                        OR last_seen_at < $3)
                 ORDER BY last_seen_at LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            claim_columns!()
        ))
        .bind(now)
        .bind(now - lease_ms)
        .bind(idle_cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn claim_session(
        &self,
        seq: i64,
        now: i64,
        lease_ms: i64,
    ) -> sqlx::Result<Option<Claim>> {
        sqlx::query_as(concat!(
            "UPDATE sessions SET finalize_claimed_at = $2, state = 'finishing', updated_at = $2
             WHERE seq = $1 AND state IN ('recording', 'finishing')
               AND (finalize_claimed_at IS NULL OR finalize_claimed_at < $3)
             RETURNING ",
            claim_columns!()
        ))
        .bind(seq)
        .bind(now)
        .bind(now - lease_ms)
        .fetch_optional(&self.pool)
        .await
    }

    async fn renew_claim(&self, seq: i64, claimed_at: i64, now: i64) -> sqlx::Result<Option<i64>> {
        let renewed = sqlx::query(
            "UPDATE sessions SET finalize_claimed_at = $3
             WHERE seq = $1 AND finalize_claimed_at = $2 AND state = 'finishing'",
        )
        .bind(seq)
        .bind(claimed_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((renewed.rows_affected() == 1).then_some(now))
    }

    async fn release_all_claims(&self) -> sqlx::Result<u64> {
        // Other nodes may be running steps: leases expire instead.
        Ok(0)
    }

    async fn mark_failed(
        &self,
        seq: i64,
        reason: &str,
        now: i64,
        event: Option<&EventFor>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query(
            "UPDATE sessions SET state = 'failed', failure_reason = $2, updated_at = $3,
                    finalize_claimed_at = NULL
             WHERE seq = $1 AND state = 'finishing'",
        )
        .bind(seq)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if marked && let Some(event) = event {
            enqueue_for(&mut tx, seq, event).await?;
        }
        tx.commit().await?;
        Ok(marked)
    }

    async fn record_attempt_failed(
        &self,
        seq: i64,
        claimed_at: i64,
        reason: &str,
        claimable_at: i64,
    ) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(
            "UPDATE sessions SET finalize_attempts = finalize_attempts + 1,
                    finalize_claimed_at = $2, failure_reason = $3
             WHERE seq = $1 AND state IN ('recording', 'finishing') AND finalize_claimed_at = $4
             RETURNING finalize_attempts",
        )
        .bind(seq)
        .bind(claimable_at)
        .bind(reason)
        .bind(claimed_at)
        .fetch_optional(&self.pool)
        .await
    }

    async fn claim_due_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<PendingEvent>> {
        sqlx::query_as(
            "UPDATE webhook_events SET next_attempt_at = $2
             WHERE id IN (SELECT id FROM webhook_events
                          WHERE delivered_at IS NULL AND next_attempt_at <= $1
                          ORDER BY next_attempt_at LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, body, attempts",
        )
        .bind(now)
        .bind(lease_until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    async fn event_delivered(&self, id: &str, now: i64) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE webhook_events SET delivered_at = $2, attempts = attempts + 1, last_error = NULL
             WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    async fn event_attempt_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE webhook_events SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(next_attempt_at)
        .execute(&self.pool)
        .await
        .map(drop)
    }
}

/// Indexes and payload sizes of chunks `0..count`, in order.
async fn prefix_keys(pool: &PgPool, seq: i64, count: i64) -> sqlx::Result<Vec<RowRef>> {
    sqlx::query(
        "SELECT idx, octet_length(payload)::bigint AS bytes FROM chunks
         WHERE session = $1 AND idx < $2 ORDER BY idx",
    )
    .bind(seq)
    .bind(count)
    .try_map(|row: sqlx::postgres::PgRow| {
        let idx: i64 = row.try_get("idx")?;
        Ok(RowRef {
            row: idx,
            idx,
            bytes: row.try_get("bytes")?,
        })
    })
    .fetch_all(pool)
    .await
}

/// What became of a session `spool migrate-to` copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Copied; its key here.
    New(i64),
    /// A session with this id is here already (an earlier, interrupted run).
    AlreadyThere,
}

/// Chunks inserted per statement when importing.
const IMPORT_SLICE: usize = 256;

impl PostgresDatabase {
    /// Copies a session and its chunks in one transaction, unclaimed (no
    /// finalize step runs here yet). Returns its key and the SHA-256 of its
    /// chunks as [`ChunkDigest`] computes it.
    pub async fn import_session(
        &self,
        session: &super::export::ExportedSession,
        mut chunks: BoxStream<'_, sqlx::Result<StoredChunk>>,
    ) -> anyhow::Result<(Imported, String)> {
        let mut tx = self.pool.begin().await?;
        let present: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sessions WHERE public_id = $1")
                .bind(&session.public_id)
                .fetch_optional(&mut *tx)
                .await?;
        if present.is_some() {
            return Ok((Imported::AlreadyThere, String::new()));
        }
        let s = session;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO sessions (public_id, token_hash, state, mime_type, metadata, expected_chunks,
                 committed, chunks_received, bytes_received, max_index, connections, created_at,
                 updated_at, last_seen_at, finalize_attempts, failure_reason, recording_bytes,
                 recording_sha256, recording_source_bytes, recording_source_sha256,
                 recording_duration_ms, recording_complete, recording_missing, recording_rewritten,
                 last_client_addr, last_user_agent, ready_at, recording_expired_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
             RETURNING seq",
        )
        .bind(&s.public_id)
        .bind(&s.token_hash)
        .bind(&s.state)
        .bind(&s.mime_type)
        .bind(&s.metadata)
        .bind(s.expected_chunks)
        .bind(s.committed)
        .bind(s.chunks_received)
        .bind(s.bytes_received)
        .bind(s.max_index)
        .bind(s.connections)
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.last_seen_at)
        .bind(s.finalize_attempts)
        .bind(&s.failure_reason)
        .bind(s.recording_bytes)
        .bind(&s.recording_sha256)
        .bind(s.recording_source_bytes)
        .bind(&s.recording_source_sha256)
        .bind(s.recording_duration_ms)
        .bind(s.recording_complete)
        .bind(&s.recording_missing)
        .bind(s.recording_rewritten)
        .bind(&s.last_client_addr)
        .bind(&s.last_user_agent)
        .bind(s.ready_at)
        .bind(s.recording_expired_at)
        .fetch_one(&mut *tx)
        .await?;
        let mut digest = ChunkDigest::default();
        let mut slice = Vec::with_capacity(IMPORT_SLICE);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            digest.add(&chunk);
            slice.push(chunk);
            if slice.len() == IMPORT_SLICE {
                insert_imported(&mut tx, seq, &slice).await?;
                slice.clear();
            }
        }
        insert_imported(&mut tx, seq, &slice).await?;
        tx.commit().await?;
        Ok((Imported::New(seq), digest.finish()))
    }

    /// Whether a session with this public id is here, deleted or not.
    pub async fn has_session(&self, public_id: &str) -> sqlx::Result<bool> {
        let present: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sessions WHERE public_id = $1")
                .bind(public_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(present.is_some())
    }

    /// Copies an undelivered webhook event (nothing if it is here already).
    pub async fn import_event(&self, event: &super::export::ExportedEvent) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO webhook_events (id, type, created_at, body, attempts, next_attempt_at, last_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(event.created_at)
        .bind(&event.body)
        .bind(event.attempts)
        .bind(event.next_attempt_at)
        .bind(&event.last_error)
        .execute(&self.pool)
        .await
        .map(drop)
    }
}

async fn insert_imported(
    conn: &mut PgConnection,
    seq: i64,
    chunks: &[StoredChunk],
) -> sqlx::Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let indexes: Vec<i64> = chunks.iter().map(|c| c.idx).collect();
    let crcs: Vec<i64> = chunks
        .iter()
        .map(|c| i64::from(crc32c::crc32c(&c.payload)))
        .collect();
    let flags: Vec<i64> = chunks.iter().map(|c| c.flags).collect();
    let payloads: Vec<&[u8]> = chunks.iter().map(|c| &c.payload[..]).collect();
    sqlx::query(
        "INSERT INTO chunks (session, idx, crc, flags, payload)
         SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])",
    )
    .bind(seq)
    .bind(&indexes)
    .bind(&crcs)
    .bind(&flags)
    .bind(&payloads)
    .execute(conn)
    .await
    .map(drop)
}

/// The SHA-256 of a session's chunks (index, flags and bytes of each, in
/// order): what a copy of them is checked against.
#[derive(Default)]
pub struct ChunkDigest(sha2::Sha256);

impl ChunkDigest {
    pub fn add(&mut self, chunk: &StoredChunk) {
        use sha2::Digest;
        self.0.update(chunk.idx.to_le_bytes());
        self.0.update(chunk.flags.to_le_bytes());
        self.0.update((chunk.payload.len() as u64).to_le_bytes());
        self.0.update(&chunk.payload);
    }

    pub fn finish(self) -> String {
        use sha2::Digest;
        hex::encode(self.0.finalize())
    }
}
