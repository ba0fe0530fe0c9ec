//! A token bucket: how many chunks a connection may send per second.

use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimit {
    /// `per_second == 0` means no limit. Bursts of twice the rate pass.
    pub fn new(per_second: u32, now: Instant) -> Option<Self> {
        (per_second > 0).then(|| {
            let capacity = f64::from(per_second) * 2.0;
            Self {
                per_second: f64::from(per_second),
                capacity,
                tokens: capacity,
                refilled_at: now,
            }
        })
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limit = RateLimit::new(10, start).unwrap();
        assert!((0..20).all(|_| limit.take(start)));
        assert!(!limit.take(start));
        assert!(limit.take(start + Duration::from_millis(100)));
        assert!(!limit.take(start + Duration::from_millis(100)));
        assert!(RateLimit::new(0, start).is_none());
    }
}
