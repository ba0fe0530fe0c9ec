//! An admitted connection: chunks in, acks out, finish, finalized.

use std::time::{Duration, Instant};

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::broadcast;

use super::close::CloseReason;
use super::overload::Shedding;
use super::rate::RateLimit;
use super::slow_message::{self, PartialMessageWatch};
use super::socket::{Connection, send_text};
use crate::api::{BaseUrl, RecordingView, ServerMessage};
use crate::cluster::Notice;
use crate::connections::Eviction;
use crate::db;
use crate::db::sessions::ClientInfo;
use crate::domain::{ChunkFrame, ClientMessage, FrameError, SessionId, SessionState, finish_count};
use crate::state::AppState;
use crate::writer::{ChunkOutcome, FinishOutcome, PendingChunk, WriteError};

/// Chunks one connection may have submitted but not yet committed; past it,
/// the socket is not read (TCP pushes back on the client).
const MAX_IN_FLIGHT: usize = 256;
/// How often, at most, an open connection marks its session as seen (which
/// keeps the idle finalizer away); a quarter of the idle limit when that is shorter.
const TOUCH_EVERY: Duration = Duration::from_secs(10);

/// An admitted connection's state.
pub(super) struct Session {
    app: AppState,
    base: BaseUrl,
    seq: i64,
    id: SessionId,
    client: ClientInfo,
    max_chunk_bytes: usize,
    acked: i64,
    in_flight: FuturesOrdered<PendingChunk>,
    rate: Option<RateLimit>,
    shedding: Option<Shedding>,
    /// When a chunk of this connection last committed (which updates `last_seen_at`).
    committed_at: Instant,
    /// Subscribed once `finish` is accepted: tells when the recording is ready.
    finalized: Option<broadcast::Receiver<i64>>,
    partial: PartialMessageWatch,
}

impl Session {
    pub(super) fn new(
        row: db::sessions::SessionRow,
        connection: &Connection,
        shedding: Option<Shedding>,
    ) -> Self {
        let app = connection.state.clone();
        Self {
            max_chunk_bytes: app.config.max_chunk_bytes as usize,
            rate: RateLimit::new(app.config.max_chunks_per_second, Instant::now()),
            shedding,
            committed_at: Instant::now(),
            app,
            base: connection.base.clone(),
            seq: row.seq,
            id: row.public_id,
            client: connection.client.clone(),
            acked: row.committed,
            in_flight: FuturesOrdered::new(),
            finalized: None,
            partial: PartialMessageWatch::new(connection.peer.clone()),
        }
    }

    pub(super) async fn serve<S, E>(mut self, socket: &mut S) -> CloseReason
    where
        S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut registration = self.app.connections.register(self.seq);
        // An older socket of this session on another node closes with 4499.
        self.app.cluster.send(Notice::Connected(self.seq));
        let ready = match self.greet().await {
            Ok(ready) => ready,
            Err(reason) => return reason,
        };
        if send_text(socket, ready).await.is_err() {
            return CloseReason::ClientGone;
        }
        let idle_timeout = self.app.config.socket_idle_timeout;
        let mut idle_deadline = tokio::time::Instant::now() + idle_timeout;
        let mut touched_at = Instant::now();
        let touch_every = TOUCH_EVERY.min(self.app.config.idle_finalize_after / 4);
        let shutdown = self.app.shutdown.clone();
        let mut check_partial = tokio::time::interval(slow_message::CHECK_EVERY);
        check_partial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.partial.message_received();
        loop {
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => return self.drain(socket, CloseReason::GoingAway).await,
                eviction = &mut registration.evicted => return match eviction {
                    Ok(Eviction::Superseded) | Err(_) => CloseReason::Superseded,
                    Ok(Eviction::Deleted) => CloseReason::NotAccepting("the session was deleted".into()),
                },
                Some(result) = self.in_flight.next() => self.on_committed(socket, result).await,
                seq = recv_finalized(&mut self.finalized) => self.on_finalized(socket, seq).await,
                message = socket.next(), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    idle_deadline = tokio::time::Instant::now() + idle_timeout;
                    self.partial.message_received();
                    match message {
                        Some(Ok(message)) => self.on_message(socket, message).await,
                        Some(Err(e)) => Err(read_error(&e.to_string())),
                        None => return CloseReason::ClientGone,
                    }
                }
                () = tokio::time::sleep_until(idle_deadline) => Err(CloseReason::Idle),
                _ = check_partial.tick() => self.check_partial(),
            };
            if let Err(reason) = outcome {
                return reason;
            }
            // A committed chunk already marks the session as seen; touch only
            // a connection that is open but quiet (a paused recorder pinging).
            if self.committed_at.max(touched_at).elapsed() >= touch_every {
                touched_at = Instant::now();
                self.app.writer.touch(self.seq);
            }
        }
    }

    /// Closes a socket whose message in progress is overdue.
    fn check_partial(&mut self) -> Result<(), CloseReason> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.partial.paused();
            Ok(())
        } else if self.partial.overdue(Instant::now()) {
            Err(CloseReason::SlowMessage)
        } else {
            Ok(())
        }
    }

    /// Counts the connection and builds the `ready` message.
    async fn greet(&self) -> Result<String, CloseReason> {
        let internal = |e: sqlx::Error| {
            tracing::error!(error = %e, "greeting a connection");
            CloseReason::Internal
        };
        self.app.writer.connected(self.seq, self.client.clone());
        let row = self
            .app
            .db
            .find_session(&self.id)
            .await
            .map_err(internal)?
            .ok_or(CloseReason::UnknownSession)?;
        tracing::info!(committed = row.committed, "connection ready");
        Ok(ServerMessage::Ready {
            session: &row.public_id,
            state: row.state,
            committed: row.committed,
            max_chunk_bytes: self.max_chunk_bytes,
        }
        .to_json())
    }

    async fn on_message<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        message: Message,
    ) -> Result<(), CloseReason> {
        match message {
            Message::Binary(frame) => self.on_chunk(frame).await,
            Message::Text(text) => {
                match ClientMessage::parse(text.as_str()).map_err(CloseReason::Malformed)? {
                    ClientMessage::Ping => send_text(socket, ServerMessage::Pong.to_json()).await,
                    ClientMessage::Finish { chunks } => self.on_finish(socket, chunks).await,
                }
            }
            Message::Close(_) => Err(CloseReason::ClientGone),
            Message::Ping(_) | Message::Pong(_) => Ok(()), // the codec answers pings itself
        }
    }

    async fn on_chunk(&mut self, frame: Bytes) -> Result<(), CloseReason> {
        let chunk = ChunkFrame::parse(frame, self.max_chunk_bytes).map_err(|e| match e {
            FrameError::TooLarge { .. } => CloseReason::TooLarge(e.to_string()),
            other => CloseReason::Malformed(other.to_string()),
        })?;
        if let Some(rate) = &mut self.rate
            && !rate.take(Instant::now())
        {
            let limit = self.app.config.max_chunks_per_second;
            return Err(CloseReason::TooFast(format!(
                "over {limit} chunks per second; back off and reconnect"
            )));
        }
        if let Some(shedding) = &self.shedding {
            shedding.shed(self.app.writer.lag(), self.seq, chunk.index)?;
        }
        let pending = self
            .app
            .writer
            .submit_chunk(self.seq, chunk)
            .await
            .map_err(write_error)?;
        self.in_flight.push_back(pending);
        Ok(())
    }

    /// A submitted chunk's batch committed: ack what is now durable.
    async fn on_committed<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        result: Result<Result<ChunkOutcome, WriteError>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<(), CloseReason> {
        let outcome = result
            .map_err(|_| CloseReason::GoingAway)?
            .map_err(write_error)?;
        let committed = match outcome {
            ChunkOutcome::Stored { committed } | ChunkOutcome::Duplicate { committed } => committed,
            ChunkOutcome::Conflict { index } => return Err(CloseReason::Conflict(index)),
            ChunkOutcome::NotAccepting { state } => {
                return Err(CloseReason::NotAccepting(format!(
                    "the session is {} and takes no more chunks",
                    state.as_str()
                )));
            }
            ChunkOutcome::BeyondFinish { expected } => {
                return Err(CloseReason::Malformed(format!(
                    "finish declared {expected} chunks; this index is past it"
                )));
            }
            ChunkOutcome::UnknownSession => {
                return Err(CloseReason::NotAccepting("the session was deleted".into()));
            }
        };
        self.committed_at = Instant::now();
        // Acks coalesce naturally: a batch resolves many chunks with one value.
        if committed > self.acked {
            self.acked = committed;
            send_text(socket, ServerMessage::Ack { committed }.to_json()).await?;
        }
        Ok(())
    }

    async fn on_finish<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        chunks: u64,
    ) -> Result<(), CloseReason> {
        let chunks =
            finish_count(chunks).map_err(|m| CloseReason::Malformed(format!("bad finish: {m}")))?;
        // Subscribe before the finish commits, so a quick finalize is not missed.
        let finalized = self.app.finalized.subscribe();
        let committed = match self
            .app
            .writer
            .finish(self.seq, chunks)
            .await
            .map_err(write_error)?
        {
            FinishOutcome::Accepted { committed, .. } => committed,
            FinishOutcome::CountMismatch { expected } => {
                return Err(CloseReason::Malformed(format!(
                    "bad finish: already declared {expected} chunks"
                )));
            }
            FinishOutcome::BelowReceived { max_index } => {
                return Err(CloseReason::Malformed(format!(
                    "bad finish: chunk {max_index} was already received"
                )));
            }
            FinishOutcome::NotAccepting { state } => {
                return Err(CloseReason::NotAccepting(format!(
                    "the session is {}",
                    state.as_str()
                )));
            }
            FinishOutcome::UnknownSession => {
                return Err(CloseReason::NotAccepting("the session was deleted".into()));
            }
        };
        self.finalized = Some(finalized);
        send_text(
            socket,
            ServerMessage::Finishing { committed, chunks }.to_json(),
        )
        .await?;
        // It may already be ready (a repeated finish).
        self.on_finalized(socket, Some(self.seq)).await
    }

    /// The finalize job finished some session; if it is ours, report and close.
    async fn on_finalized<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        seq: Option<i64>,
    ) -> Result<(), CloseReason> {
        if seq.is_some_and(|seq| seq != self.seq) {
            return Ok(());
        }
        let row = match self.app.db.find_session(&self.id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(CloseReason::NotAccepting("the session was deleted".into())),
            Err(e) => {
                tracing::error!(error = %e, "reading a finalized session");
                return Err(CloseReason::Internal);
            }
        };
        match row.state {
            SessionState::Ready => {
                let recording =
                    RecordingView::new(&row, &self.base).ok_or(CloseReason::Internal)?;
                let finalized = ServerMessage::Finalized {
                    recording: &recording,
                };
                send_text(socket, finalized.to_json()).await?;
                Err(CloseReason::Finished)
            }
            SessionState::Failed => Err(CloseReason::NotAccepting(format!(
                "finalizing failed: {}",
                row.failure_reason.as_deref().unwrap_or("unknown reason")
            ))),
            _ => Ok(()),
        }
    }

    /// Shutting down: stop reading, let the writer commit what this
    /// connection submitted, ack it, then close.
    async fn drain<S: Sink<Message> + Unpin>(
        &mut self,
        socket: &mut S,
        reason: CloseReason,
    ) -> CloseReason {
        while let Some(result) = self.in_flight.next().await {
            if let Err(other) = self.on_committed(socket, result).await {
                return other;
            }
        }
        reason
    }
}

/// Waits for the next finalize event, or forever when not subscribed.
/// `None` means events were missed (lagged): the caller re-checks.
async fn recv_finalized(receiver: &mut Option<broadcast::Receiver<i64>>) -> Option<i64> {
    let Some(receiver) = receiver else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(seq) => Some(seq),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

fn write_error(err: WriteError) -> CloseReason {
    match err {
        WriteError::Stopped => CloseReason::GoingAway,
        WriteError::Storage(_) => CloseReason::Internal,
    }
}

/// A read failed: the connection dropped, a frame over the size limit, or
/// a protocol-level fault. The socket's error type is only `Display`, so
/// tungstenite's messages are told apart by their text.
fn read_error(message: &str) -> CloseReason {
    const DROPPED: [&str; 4] = [
        "Connection reset without closing handshake",
        "IO error",
        "Connection closed normally",
        "Trying to work with closed connection",
    ];
    if DROPPED.iter().any(|dropped| message.contains(dropped)) {
        CloseReason::Dropped
    } else if message.contains("Message too long") || message.contains("Space limit exceeded") {
        CloseReason::TooLarge(format!("frame over the size limit: {message}"))
    } else {
        CloseReason::Malformed(format!("unreadable WebSocket frame: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_dropped_not_malformed() {
        for dropped in [
            "WebSocket protocol error: Connection reset without closing handshake",
            "IO error: Connection reset by peer (os error 104)",
        ] {
            assert_eq!(read_error(dropped), CloseReason::Dropped, "{dropped}");
        }
        assert!(matches!(
            read_error("Space limit exceeded: Message too long: 2000000 > 1000000"),
            CloseReason::TooLarge(_)
        ));
        assert!(matches!(
            read_error("WebSocket protocol error: Reserved bits are non-zero"),
            CloseReason::Malformed(_)
        ));
    }
}
