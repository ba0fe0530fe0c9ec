//! Queries behind the admin API: listing with filters, stored indexes for
//! the missing ranges, and totals.

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::sessions::SessionRow;
use crate::domain::SessionState;

/// Which sessions to list, newest (highest key) first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<SessionState>,
    /// Created at or after, in unix milliseconds.
    pub since_ms: Option<i64>,
    /// Created at or before, in unix milliseconds.
    pub until_ms: Option<i64>,
    /// Ready sessions whose recording is (or is not) complete.
    pub complete: Option<bool>,
    /// Exact matches on top-level metadata keys (keys are checked by the caller).
    pub meta: Vec<(String, String)>,
    /// Keys below this one only: the keyset cursor.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// Sessions matching `filter`. Built at run time because every filter is
/// optional; `SessionRow: FromRow` maps `*`, and the admin tests cover it.
pub async fn list_sessions(
    pool: &SqlitePool,
    filter: &ListFilter,
) -> sqlx::Result<Vec<SessionRow>> {
    let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM sessions WHERE state != 'deleted'");
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
        // `->` gives the value as JSON text: a string matches quoted, a
        // number or boolean as written.
        query
            .push(" AND (metadata -> ")
            .push_bind(format!("$.\"{key}\""))
            .push(") IN (json_quote(")
            .push_bind(value.clone())
            .push("), ")
            .push_bind(value.clone())
            .push(")");
    }
    if let Some(before) = filter.before_seq {
        query.push(" AND seq < ").push_bind(before);
    }
    query
        .push(" ORDER BY seq DESC LIMIT ")
        .push_bind(filter.limit);
    query.build_query_as::<SessionRow>().fetch_all(pool).await
}

/// Sessions per state (deleted ones left out).
pub async fn sessions_by_state(pool: &SqlitePool) -> sqlx::Result<Vec<(SessionState, i64)>> {
    let rows = sqlx::query!(
        r#"SELECT state AS "state: SessionState", COUNT(*) AS "sessions!: i64" FROM sessions
           WHERE state != 'deleted' GROUP BY state"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.sessions)).collect())
}

/// Byte and chunk totals over sessions that are not deleted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Totals {
    pub chunks_received: i64,
    pub bytes_received: i64,
    pub recordings_bytes: i64,
}

pub async fn totals(pool: &SqlitePool) -> sqlx::Result<Totals> {
    sqlx::query_as!(
        Totals,
        r#"SELECT COALESCE(SUM(chunks_received), 0) AS "chunks_received!: i64",
                  COALESCE(SUM(bytes_received), 0) AS "bytes_received!: i64",
                  COALESCE(SUM(recording_bytes), 0) AS "recordings_bytes!: i64"
           FROM sessions WHERE state != 'deleted'"#
    )
    .fetch_one(pool)
    .await
}
