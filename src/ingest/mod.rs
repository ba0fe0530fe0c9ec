//! WebSocket ingest: `GET /v1/sessions/{id}/ws`.
//!
//! The upgrade handler is thin and always completes the upgrade, so a
//! browser can read why it is refused; [`socket::handle_socket`] runs the
//! protocol over any `Sink`/`Stream` of messages.

mod close;
mod overload;
mod rate;
mod session;
mod slow_message;
mod socket;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use close::CloseReason;
pub use socket::{Connection, handle_socket};

use crate::api::{ApiError, BaseUrl, Credential};
use crate::db::sessions::ClientInfo;
use crate::domain::HEADER_LEN;
use crate::server::Peer;
use crate::state::AppState;

/// Socket buffers: chunks are a few KiB, so small buffers (which grow for a
/// large message) keep an idle socket cheap; tungstenite's defaults are 128 KiB each.
const READ_BUFFER_BYTES: usize = 8 * 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Outgoing bytes a socket may hold before sends fail: server messages are small.
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// The WebSocket of protocol v1 (chunks in, acks out). The upgrade always
/// completes, so a refusal arrives as an `error` message and a close code.
#[utoipa::path(get, path = "/v1/sessions/{id}/ws", tag = "sessions",
    params(("id" = String, Path, description = "The session id"),
        ("token" = String, Query, description = "the session token")),
    responses((status = 101, description = "switching to WebSocket"),
        (status = 400, description = "not a WebSocket upgrade", body = crate::api::ErrorBody)),
    security(("session_token" = [])))]
async fn upgrade(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    Path(session): Path<String>,
    credential: Credential,
    peer: Peer,
    base: BaseUrl,
    headers: HeaderMap,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::bad_request(
                "websocket_required",
                format!("this endpoint speaks WebSocket: {rejection}"),
            )
            .into_response();
        }
    };
    // Frames a little over the chunk limit still reach the parser, which
    // answers them with 4413; far larger ones are cut off by the codec.
    let max_chunk = state.config.max_chunk_bytes as usize;
    let message_limit = HEADER_LEN + max_chunk + (max_chunk / 4).max(64 * 1024);
    // Over the limit, the upgrade still completes so the client can read
    // that it should retry later.
    let slot = state.socket_slots.try_take();
    let user_agent = headers.get(USER_AGENT).and_then(|ua| ua.to_str().ok());
    let connection = Connection {
        state: state.clone(),
        session,
        credential,
        base,
        client: ClientInfo::new(peer.addr, user_agent),
        peer,
        slot,
    };
    // Counted from now, not from when the upgrade completes, so shutdown
    // also waits for a socket that is still upgrading.
    let tracked = state.tasks.token();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(message_limit)
        .max_frame_size(message_limit)
        .on_upgrade(move |socket| async move {
            handle_socket(socket, connection).await;
            drop(tracked);
        })
}
