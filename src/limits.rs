//! Limits on what clients may take from the server: WebSocket connections
//! open at once, and sessions created per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places for WebSocket connections; a connection holds one until it ends.
#[derive(Clone)]
pub struct SocketSlots {
    free: Arc<Semaphore>,
    limit: u32,
}

impl SocketSlots {
    pub fn new(limit: u32) -> Self {
        Self {
            free: Arc::new(Semaphore::new(limit as usize)),
            limit,
        }
    }

    /// A place, or `None` when every one is taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.free.clone().try_acquire_owned().ok()
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// Client keys remembered before forgetting those whose budget is full
/// again, at most once per [`TRIM_EVERY`] (a trim walks the whole map).
const MAX_TRACKED_CLIENTS: usize = 10_000;
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// How many sessions a client may create per minute (a burst of that many,
/// then one every `60 s / n`).
pub struct CreationLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trimmed_at: Mutex<Instant>,
}

impl CreationLimit {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            trimmed_at: Mutex::new(Instant::now()),
        })
    }

    /// Counts one creation by `client`; `Err` says how long until it may create another.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > MAX_TRACKED_CLIENTS {
            let mut trimmed_at = self.trimmed_at.lock().unwrap_or_else(|p| p.into_inner());
            if trimmed_at.elapsed() >= TRIM_EVERY {
                *trimmed_at = Instant::now();
                self.limiter.retain_recent();
            }
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_unaffected() {
        let limit = CreationLimit::new(3).unwrap();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!((0..3).all(|_| limit.check(a).is_ok()));
        let wait = limit.check(a).unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limit.check(b).is_ok());
        assert!(CreationLimit::new(0).is_none());
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = SocketSlots::new(2);
        let first = slots.try_take().unwrap();
        let _second = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(first);
        assert!(slots.try_take().is_some());
    }
}
