//! WebSocket ingest: `GET /v1/sessions/{id}/ws`.
//!
//! The upgrade handler is thin and always completes the upgrade, so a
//! browser can read why it is refused; [`socket::handle_socket`] runs the
//! protocol over any `Sink`/`Stream` of messages.

mod close;
mod rate;
mod registry;
mod session;
mod socket;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use close::CloseReason;
pub use registry::{ConnectionRegistry, Eviction};
pub use socket::{Connection, handle_socket};

use crate::domain::HEADER_LEN;
use crate::http::{ApiError, BaseUrl, Credential};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/ws", get(upgrade))
}

async fn upgrade(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    Path(session): Path<String>,
    credential: Credential,
    base: BaseUrl,
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
    let connection = Connection {
        state: state.clone(),
        session,
        credential,
        base,
    };
    // Counted from now, not from when the upgrade completes, so shutdown
    // also waits for a socket that is still upgrading.
    let tracked = state.tasks.token();
    upgrade
        .max_message_size(message_limit)
        .max_frame_size(message_limit)
        .on_upgrade(move |socket| async move {
            handle_socket(socket, connection).await;
            drop(tracked);
        })
}
