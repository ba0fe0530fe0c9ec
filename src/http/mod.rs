//! The HTTP surface, one module per feature; this file is the table of contents.

mod admin;
mod cors;
mod ops;
mod range;
mod recordings;
mod sessions;
mod web;

use axum::Router;
use axum::http::Request;
use tower_http::trace::TraceLayer;

pub use sessions::load_session;

use crate::api::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let cors = cors::layer(&state.config.allowed_origins);
    Router::new()
        .merge(sessions::router())
        .merge(admin::router())
        .merge(recordings::router())
        .merge(crate::ingest::router())
        .merge(ops::router())
        .merge(web::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The span names method and path only: the query may carry a token.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .layer(cors)
        .with_state(state)
}
