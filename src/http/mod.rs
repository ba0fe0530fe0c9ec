//! The HTTP surface, one module per feature; this file is the table of contents.

mod admin;
mod cors;
mod openapi;
mod ops;
mod range;
mod recordings;
mod sessions;
mod web;

use axum::Router;
use axum::http::Request;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use sessions::load_session;

use crate::api::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let cors = cors::layer(&state.config.allowed_origins);
    let (api, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(sessions::router())
        .merge(admin::router())
        .merge(recordings::router())
        .merge(crate::ingest::router())
        .merge(ops::router())
        .split_for_parts();
    openapi::add_pages(&mut doc, web::pages());
    api.merge(web::router())
        .merge(openapi::router(doc))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // The span names method and path only: the query may carry a token.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .layer(cors)
        .with_state(state)
}
