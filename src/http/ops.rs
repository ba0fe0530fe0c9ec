//! Liveness and metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::api::ApiError;
use crate::db;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// 200 when the database answers.
async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    sqlx::query_scalar!("SELECT 1 AS one")
        .fetch_one(&state.pool)
        .await
        .map_err(|e| {
            ApiError::Internal(
                anyhow::Error::from(e).context("health check: database did not answer"),
            )
        })?;
    Ok((StatusCode::OK, Json(json!({ "status": "ok" }))))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let sessions = db::admin::sessions_by_state(&state.pool).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&sessions),
    ))
}
