//! Liveness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// Liveness: 200 when the database answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "{\"status\": \"ok\"}"), (status = 500, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.db.ping().await.map_err(|e| {
        ApiError::Internal(anyhow::Error::from(e).context("health check: database did not answer"))
    })?;
    Ok((StatusCode::OK, Json(json!({ "status": "ok" }))))
}

/// Prometheus (OpenMetrics) text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let sessions = state.db.sessions_by_state().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&sessions),
    ))
}
