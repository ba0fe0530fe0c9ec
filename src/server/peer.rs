//! Who is on the other end of a connection: its address, how many bytes it
//! has sent so far, and when bytes last moved either way — counted below
//! HTTP, so the count carries on through a WebSocket upgrade (a socket's
//! partial frame is visible nowhere else) and a stalled transfer shows.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Put into every request's extensions by [`super::serve`].
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    io: Arc<IoCounters>,
}

#[derive(Debug, Default)]
struct IoCounters {
    bytes_read: AtomicU64,
    /// Milliseconds since [`EPOCH`] when bytes last moved.
    moved_at_ms: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl IoCounters {
    fn moved(&self) {
        self.moved_at_ms.store(now_ms(), Ordering::Relaxed);
    }
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let io = IoCounters::default();
        io.moved();
        Self {
            addr,
            io: Arc::new(io),
        }
    }

    /// How long since a byte was last read or written.
    pub fn still_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.io.moved_at_ms.load(Ordering::Relaxed)))
    }

    /// Bytes received on this connection so far.
    pub fn bytes_read(&self) -> u64 {
        self.io.bytes_read.load(Ordering::Relaxed)
    }

    /// The stream, counting its traffic into this peer.
    pub fn wrap(&self, stream: TcpStream) -> CountingStream {
        CountingStream {
            inner: stream,
            io: self.io.clone(),
        }
    }

    /// The key a per-client limit counts against: the IPv4 address, or the
    /// IPv6 /64 (one subscriber's usual allocation, so it cannot be sprayed).
    pub fn client_key(&self) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(bits.into())
                }
            },
            v4 => v4,
        }
    }
}

/// Requests that did not come through [`super::serve`] (none in the server
/// itself) get an unspecified peer rather than an error.
impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Peer>()
            .cloned()
            .unwrap_or_else(|| Peer::new(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))))
    }
}

/// A TCP stream that counts the bytes it reads and notes when bytes move.
pub struct CountingStream {
    inner: TcpStream,
    io: Arc<IoCounters>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.io.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
            self.io.moved();
        }
        polled
    }
}

impl CountingStream {
    fn note_written(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(written)) if *written > 0) {
            self.io.moved();
        }
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let a = Peer::new("[2001:db8:1:2:aaaa::1]:5000".parse().unwrap());
        let b = Peer::new("[2001:db8:1:2:bbbb::9]:6000".parse().unwrap());
        let c = Peer::new("[2001:db8:1:3::1]:6000".parse().unwrap());
        assert_eq!(a.client_key(), b.client_key());
        assert_ne!(a.client_key(), c.client_key());
        let mapped = Peer::new("[::ffff:192.0.2.7]:1".parse().unwrap());
        assert_eq!(mapped.client_key(), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
