//! The webhook outbox: events are added inside the transaction that changes
//! a session's state, and delivered (and retried) from here.

use sqlx::{SqliteConnection, SqlitePool};

use super::sessions::SessionRow;

/// An event to add to the outbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub kind: &'static str,
    pub body: String,
}

/// Builds the event of a state change from the session's row as changed
/// (see `webhooks::Events::event_for`); runs inside the changing transaction.
pub type EventFor = dyn Fn(&SessionRow) -> NewEvent + Send + Sync;

/// An event waiting for (another) delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingEvent {
    pub id: String,
    pub body: String,
    pub attempts: i64,
}

/// Adds the event `event` builds from the session's row, inside the
/// caller's transaction; nothing if the session is gone.
pub async fn enqueue_for(
    conn: &mut SqliteConnection,
    seq: i64,
    event: &EventFor,
) -> sqlx::Result<()> {
    let Some(row) = super::sessions::find_by_seq(&mut *conn, seq).await? else {
        return Ok(());
    };
    let NewEvent { id, kind, body } = event(&row);
    let now = super::now_ms();
    sqlx::query!(
        "INSERT INTO webhook_events (id, type, created_at, body, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?3)",
        id,
        kind,
        now,
        body
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims undelivered events whose next attempt is due, oldest first: each
/// is not due again until `lease_until`, so one deliverer at a time tries it
/// and, should it die, another retries after the lease.
pub async fn claim_due(
    pool: &SqlitePool,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> sqlx::Result<Vec<PendingEvent>> {
    sqlx::query_as!(
        PendingEvent,
        r#"UPDATE webhook_events SET next_attempt_at = ?2
           WHERE id IN (SELECT id FROM webhook_events
                        WHERE delivered_at IS NULL AND next_attempt_at <= ?1
                        ORDER BY next_attempt_at LIMIT ?3)
           RETURNING id AS "id!", body, attempts"#,
        now,
        lease_until,
        limit
    )
    .fetch_all(pool)
    .await
}

pub async fn delivered(pool: &SqlitePool, id: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_events SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
        id,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn attempt_failed(
    pool: &SqlitePool,
    id: &str,
    error: &str,
    next_attempt_at: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_events SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
        id,
        error,
        next_attempt_at
    )
    .execute(pool)
    .await?;
    Ok(())
}
