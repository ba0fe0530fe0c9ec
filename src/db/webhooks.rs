//! The webhook outbox: events are added inside the transaction that changes
//! a session's state, and delivered (and retried) from here.

use sqlx::{SqliteConnection, SqlitePool};

/// An event waiting for (another) delivery.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: String,
    pub body: String,
    pub attempts: i64,
}

pub async fn enqueue(
    conn: &mut SqliteConnection,
    id: &str,
    kind: &str,
    body: &str,
    now: i64,
) -> sqlx::Result<()> {
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

/// Undelivered events whose next attempt is due, oldest first.
pub async fn due(pool: &SqlitePool, now: i64, limit: i64) -> sqlx::Result<Vec<PendingEvent>> {
    sqlx::query_as!(
        PendingEvent,
        r#"SELECT id AS "id!", body, attempts FROM webhook_events
           WHERE delivered_at IS NULL AND next_attempt_at <= ?1
           ORDER BY next_attempt_at LIMIT ?2"#,
        now,
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
