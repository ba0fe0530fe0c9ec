//! A message that has begun must arrive whole soon. A client that sends most
//! of a 1 MiB frame and then stalls would otherwise pin that memory until the
//! socket's idle timeout; the bytes below HTTP ([`Peer::bytes_read`]) show a
//! message in progress that the WebSocket codec does not.

use std::time::{Duration, Instant};

use crate::server::Peer;

/// How long a message may take from its first byte seen to its last: a
/// recorder's chunk is a few KiB, and even a 1 MiB chunk crosses a 1 Mbit/s
/// uplink in ~8 s.
pub const PARTIAL_MESSAGE_LIMIT: Duration = Duration::from_secs(15);
/// How often a socket checks.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct PartialMessageWatch {
    peer: Peer,
    bytes_at_last_message: u64,
    begun_at: Option<Instant>,
}

impl PartialMessageWatch {
    pub fn new(peer: Peer) -> Self {
        let bytes_at_last_message = peer.bytes_read();
        Self {
            peer,
            bytes_at_last_message,
            begun_at: None,
        }
    }

    /// A whole message arrived: nothing is in progress.
    pub fn message_received(&mut self) {
        self.bytes_at_last_message = self.peer.bytes_read();
        self.begun_at = None;
    }

    /// The server is not reading (backpressure): a stalled message is not the client's doing.
    pub fn paused(&mut self) {
        self.begun_at = None;
    }

    /// Has a message been arriving for longer than [`PARTIAL_MESSAGE_LIMIT`]?
    pub fn overdue(&mut self, now: Instant) -> bool {
        if self.peer.bytes_read() == self.bytes_at_last_message {
            self.begun_at = None;
            return false;
        }
        let begun_at = *self.begun_at.get_or_insert(now);
        now.saturating_duration_since(begun_at) > PARTIAL_MESSAGE_LIMIT
    }
}
