//! Accepting connections: HTTP/1.1 through hyper with a header-read timeout
//! (hyper applies it between requests too, so an idle keep-alive connection
//! closes as well), WebSocket upgrades, each request told its [`Peer`], and a
//! stop that is bounded whatever clients do.

mod peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use peer::{CountingStream, Peer};

/// A client must send a request's headers within this time of connecting or
/// of the previous response; a silent or idle connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose bytes stop moving both ways this long in the middle of
/// a request is closed: a client that stops sending a body or stops reading
/// a download does not hold a task and a descriptor for ever.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP connections served at once (an upgraded WebSocket leaves this count
/// for `--max-connections`'); more wait in the listen backlog.
const MAX_HTTP_CONNECTIONS: usize = 2048;
/// Largest request head (and read buffer) per connection.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `stop`; then stops accepting, lets
/// requests in progress finish for at most `grace`, and closes what is left.
/// Upgraded WebSockets are not this function's: they run on their own tasks.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let mut connections = JoinSet::new();
    while let Some((stream, addr, slot)) = accept(&listener, &slots, &stop).await {
        while connections.try_join_next().is_some() {}
        let connection = serve_connection(http.clone(), router.clone(), stream, addr, stop.clone());
        connections.spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace = ?grace,
            "closing HTTP connections still busy after the grace period"
        );
        connections.abort_all();
    }
}

/// The next connection, once there is room for it; `None` once `stop` is cancelled.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.ok()?,
            () = stop.cancelled() => return None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return None,
        };
        match accepted {
            Ok((stream, addr)) => return Some((stream, addr, slot)),
            Err(e) => {
                // Out of descriptors, usually: wait for some to be released
                // rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    http: Arc<http1::Builder>,
    router: Router,
    stream: TcpStream,
    addr: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let peer = Peer::new(addr);
    let io = TokioIo::new(peer.wrap(stream));
    let watched = peer.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        router.clone().oneshot(request)
    });
    let connection = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stalled(&watched) => {
            tracing::debug!("closing an HTTP connection whose transfer stalled");
            return;
        }
        () = stop.cancelled() => {
            // Finish the request in progress, if any, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Resolves once no byte has moved either way for [`STALL_TIMEOUT`].
async fn stalled(peer: &Peer) {
    loop {
        let still = peer.still_for();
        if still >= STALL_TIMEOUT {
            return;
        }
        tokio::time::sleep(STALL_TIMEOUT - still).await;
    }
}

/// Raises the soft limit on open files to the hard limit (every socket is
/// one), returning the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
