//! One WebSocket connection running protocol v1.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tracing::Instrument;

use super::close::CloseReason;
use super::overload::Shedding;
use super::session::Session;
use crate::api::{BaseUrl, Credential};
use crate::db::{self, sessions::ClientInfo};
use crate::domain::{SessionId, TokenHash};
use crate::log_safe::LogSafe;
use crate::server::Peer;
use crate::state::AppState;
use tokio::sync::OwnedSemaphorePermit;

/// Everything the upgrade request told us.
pub struct Connection {
    pub state: AppState,
    /// The raw `{id}` from the path; parsed after the upgrade.
    pub session: String,
    pub credential: Credential,
    pub base: BaseUrl,
    /// Who connected, recorded on the session for the admin view.
    pub client: ClientInfo,
    pub peer: Peer,
    /// This connection's place under `--max-connections`; `None`: refused as busy.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Runs the protocol on `socket` until it closes.
pub async fn handle_socket<S, E>(socket: S, connection: Connection)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    // Only a well-formed id is logged: the raw path segment is the client's text.
    let session = SessionId::parse(&connection.session)
        .map_or_else(|_| "(invalid id)".to_owned(), |id| id.to_string());
    let span = tracing::info_span!("ws", session = %session);
    run(socket, connection).instrument(span).await;
}

async fn run<S, E>(mut socket: S, connection: Connection)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let state = connection.state.clone();
    state.metrics.connection_opened();
    // `--max-writer-lag`, for the admission and for each chunk after it.
    let shedding = Shedding::new(state.config.max_writer_lag);
    let reason = match admit(&connection, shedding).await {
        Ok(session) => {
            Session::new(session, &connection, shedding)
                .serve(&mut socket)
                .await
        }
        Err(reason) => reason,
    };
    // The reason may quote the client's own text (a bad control message).
    tracing::info!(code = reason.log_code(), reason = %LogSafe(&reason.message()), "connection closed");
    close(&mut socket, &reason).await;
    state.metrics.connection_closed();
}

/// The session this connection may write to, or why not.
async fn admit(
    connection: &Connection,
    shedding: Option<Shedding>,
) -> Result<db::sessions::SessionRow, CloseReason> {
    if connection.slot.is_none() {
        return Err(CloseReason::Busy(connection.state.socket_slots.limit()));
    }
    if let Some(shedding) = shedding {
        shedding.admit(connection.state.writer.lag())?;
    }
    let id = SessionId::parse(&connection.session).map_err(|_| CloseReason::UnknownSession)?;
    let row = connection
        .state
        .db
        .find_session(&id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "looking up a session");
            CloseReason::Internal
        })?
        .ok_or(CloseReason::UnknownSession)?;
    connection
        .credential
        .authorize_owner(&row)
        .map_err(|_| CloseReason::Unauthorized)?;
    if TokenHash::from_stored(&row.token_hash).is_none() {
        return Err(CloseReason::Internal);
    }
    if !row.state.accepts_chunks() {
        return Err(CloseReason::NotAccepting(format!(
            "the session is {}",
            row.state
        )));
    }
    Ok(row)
}

/// A client that stops reading must not pin its task (nor delay shutdown):
/// a send that cannot complete in this time ends the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn send_text<S: Sink<Message> + Unpin>(
    socket: &mut S,
    text: String,
) -> Result<(), CloseReason> {
    send(socket, Message::Text(Utf8Bytes::from(text)))
        .await
        .map_err(|()| CloseReason::ClientGone)
}

async fn send<S: Sink<Message> + Unpin>(socket: &mut S, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// How long a closing socket's input is read (and dropped) while waiting
/// for the client's close frame. Dropping a connection with input unread
/// makes the kernel reset it, and a reset can destroy the `error` message
/// and close frame before the client reads them (a client sending chunks
/// when it is shed would see 1006 and no `retry_after_ms`).
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Sends the `error` message (if the reason has one) and the close frame,
/// then waits briefly for the client's close frame. Best effort: the peer
/// may be gone.
async fn close<S, E>(socket: &mut S, reason: &CloseReason)
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    if *reason == CloseReason::Dropped {
        return;
    }
    if let Some(error) = reason.error_message() {
        let _ = send(socket, Message::Text(Utf8Bytes::from(error))).await;
    }
    let frame = CloseFrame {
        code: reason.close_code(),
        reason: Utf8Bytes::from(reason.close_text()),
    };
    let _ = send(socket, Message::Close(Some(frame))).await;
    if *reason != CloseReason::ClientGone {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close()).await;
}
