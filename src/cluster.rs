//! What one node tells the others when several share a PostgreSQL database:
//! a session's newer connection took over (the older socket, wherever it
//! is, closes with 4499), a session was deleted (its socket closes), a
//! session was finalized (its socket gets `finalized`). Carried by
//! PostgreSQL `NOTIFY` on one channel and heard by one `LISTEN` connection
//! per node; on a single node, [`Cluster::single`] sends nothing.
//!
//! A notice is a hint, never the source of truth: the database decides
//! every chunk and state. A notice lost while a listener reconnects costs a
//! socket that closes late or a `finalized` the client then reads with
//! `GET /sessions/{id}`, never a chunk.
//!
//! Sending never waits on the database: notices queue for one task that
//! sends whatever has gathered in one statement, so a reconnect storm of
//! thousands of sockets costs a handful of round trips, not one each.

use std::sync::Arc;

use anyhow::Context;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connections::ConnectionRegistry;

/// The one channel every node listens on.
const CHANNEL: &str = "spool";
/// Notices waiting to be sent; past this, new ones are dropped (and logged).
const QUEUED_NOTICES: usize = 16_384;
/// Notices sent in one statement at most.
const NOTICES_PER_SEND: usize = 1_024;

/// What happened to a session, as sent between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A connection for the session opened on the sending node.
    Connected(i64),
    Deleted(i64),
    Finalized(i64),
}

impl Notice {
    fn encode(self, node: &str) -> String {
        let (kind, session) = match self {
            Self::Connected(session) => ("connected", session),
            Self::Deleted(session) => ("deleted", session),
            Self::Finalized(session) => ("finalized", session),
        };
        format!("{node} {kind} {session}")
    }

    /// The sending node and the notice; `None` for a payload that is not one.
    fn decode(payload: &str) -> Option<(&str, Self)> {
        let mut parts = payload.split(' ');
        let (node, kind, session) = (parts.next()?, parts.next()?, parts.next()?);
        let session = session.parse().ok()?;
        let notice = match kind {
            "connected" => Self::Connected(session),
            "deleted" => Self::Deleted(session),
            "finalized" => Self::Finalized(session),
            _ => return None,
        };
        parts.next().is_none().then_some((node, notice))
    }
}

/// This node's end of the notices; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    /// To the task that sends them ([`send_queued`]).
    queue: mpsc::Sender<Notice>,
}

/// Where notices from other nodes go.
pub struct Receivers {
    pub connections: ConnectionRegistry,
    pub finalized: broadcast::Sender<i64>,
}

impl Cluster {
    /// One node: nobody to tell.
    pub fn single() -> Self {
        Self { shared: None }
    }

    /// Starts listening for the other nodes' notices (until `stop`) and
    /// returns what sends this node's.
    pub async fn join(
        pool: PgPool,
        receivers: Receivers,
        stop: CancellationToken,
    ) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let node = hex::encode(random);
        let mut listener = PgListener::connect_with(&pool)
            .await
            .context("opening the LISTEN connection")?;
        listener
            .listen(CHANNEL)
            .await
            .context("listening for other nodes' notices")?;
        tracing::info!(node, "joined the other nodes on this database");
        let task = tokio::spawn(listen(listener, node.clone(), receivers, stop));
        let (queue, queued) = mpsc::channel(QUEUED_NOTICES);
        // Ends when the last `Cluster` is dropped, after sending what it holds.
        tokio::spawn(send_queued(pool, node, queued));
        Ok((
            Self {
                shared: Some(Arc::new(Shared { queue })),
            },
            task,
        ))
    }

    /// Queues a notice for the other nodes, without waiting; one that does
    /// not fit the queue is logged and dropped (notices are hints).
    pub fn send(&self, notice: Notice) {
        let Some(shared) = &self.shared else {
            return;
        };
        if let Err(e) = shared.queue.try_send(notice) {
            tracing::warn!(?notice, error = %e, "could not tell the other nodes");
        }
    }
}

/// Sends queued notices, all that have gathered in one statement (and so
/// one transaction: PostgreSQL delivers them together, in order).
async fn send_queued(pool: PgPool, node: String, mut queued: mpsc::Receiver<Notice>) {
    let mut batch = Vec::with_capacity(NOTICES_PER_SEND);
    while queued.recv_many(&mut batch, NOTICES_PER_SEND).await > 0 {
        let payloads: Vec<String> = batch.drain(..).map(|n| n.encode(&node)).collect();
        let sent = sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, notices = payloads.len(), "could not tell the other nodes");
        }
    }
}

async fn listen(
    mut listener: PgListener,
    node: String,
    receivers: Receivers,
    stop: CancellationToken,
) {
    loop {
        // `recv` reconnects by itself after a lost connection; what was
        // sent meanwhile is lost (see the module's note).
        let received = tokio::select! {
            received = listener.recv() => received,
            () = stop.cancelled() => break,
        };
        let notification = match received {
            Ok(notification) => notification,
            Err(e) => {
                tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        match Notice::decode(notification.payload()) {
            Some((from, _)) if from == node => {}
            Some((_, Notice::Connected(session))) => receivers.connections.supersede(session),
            Some((_, Notice::Deleted(session))) => receivers.connections.evict(session),
            Some((_, Notice::Finalized(session))) => {
                let _ = receivers.finalized.send(session); // nobody listening is fine
            }
            None => tracing::warn!(
                payload = notification.payload(),
                "ignoring a notice this version does not know"
            ),
        }
    }
    tracing::debug!("stopped listening to other nodes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_refused() {
        for notice in [
            Notice::Connected(7),
            Notice::Deleted(8),
            Notice::Finalized(9),
        ] {
            assert_eq!(
                Notice::decode(&notice.encode("ab12")),
                Some(("ab12", notice))
            );
        }
        for junk in [
            "",
            "ab12",
            "ab12 connected",
            "ab12 connected x",
            "ab12 moved 1",
            "a connected 1 2",
        ] {
            assert_eq!(Notice::decode(junk), None, "{junk:?}");
        }
    }
}
