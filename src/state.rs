//! The state every handler shares, passed through axum's `State`.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::connections::ConnectionRegistry;
use crate::db::Database;
use crate::domain::Secret;
use crate::finalize::FinalizeNow;
use crate::limits::{CreationLimit, SocketSlots};
use crate::metrics::Metrics;
use crate::storage::Recordings;
use crate::sweep::Sweeper;
use crate::writer::WriterHandle;

#[derive(Clone)]
pub struct AppState {
    pub db: Arc<dyn Database>,
    pub writer: WriterHandle,
    pub recordings: Recordings,
    /// Removes deleted sessions' data.
    pub sweeper: Sweeper,
    pub config: Arc<Config>,
    pub api_key: Option<Secret>,
    /// `--admin-token`, or the one in `<data dir>/admin-token` (with PostgreSQL,
    /// the one the nodes share): admin is never open.
    pub admin_token: Secret,
    pub metrics: Arc<Metrics>,
    /// `--max-connections`: places for WebSockets.
    pub socket_slots: SocketSlots,
    /// `--max-sessions-per-minute` per client, for creations without the API key.
    pub creation_limit: Option<Arc<CreationLimit>>,
    /// The live WebSocket of each session, for takeover and eviction.
    pub connections: ConnectionRegistry,
    /// Tells other nodes (sharing PostgreSQL) of takeovers, deletes and finalizes.
    pub cluster: Cluster,
    /// Session seqs the finalize job has just finished (ready or failed).
    pub finalized: broadcast::Sender<i64>,
    /// Hands a session to the finalize job out of turn.
    pub finalize_now: FinalizeNow,
    /// Cancelled when the server starts shutting down: sockets drain and close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket tasks and deletes in progress, which axum's graceful
    /// shutdown does not wait for.
    pub tasks: TaskTracker,
}
