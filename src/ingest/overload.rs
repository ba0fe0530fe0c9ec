//! Shedding load instead of queueing it. When chunks arrive faster than the
//! disk commits them, a queue only turns into latency for everyone. So the
//! writer's lag (how long its latest batch's oldest chunk waited, see
//! [`crate::writer::Lag`]) decides: at `--max-writer-lag` new connections
//! are told to come back later; above one and a half times it connections already
//! admitted are closed a few at a time, each with a chance that grows with
//! the lag. Both close with 4429 and a `retry_after_ms` hint. Nothing is
//! lost: a chunk is refused before it is submitted, and the client keeps
//! every unacknowledged chunk and resends it.

use std::time::Duration;

use super::close::CloseReason;

/// When to shed, from `--max-writer-lag`.
#[derive(Debug, Clone, Copy)]
pub struct Shedding {
    /// A writer lag at or above this refuses new connections.
    admit_below: Duration,
}

impl Shedding {
    /// `None` for a zero limit: never shed.
    pub fn new(max_writer_lag: Duration) -> Option<Self> {
        (!max_writer_lag.is_zero()).then_some(Self {
            admit_below: max_writer_lag,
        })
    }

    /// Above this lag, connections already admitted are closed, some at each chunk.
    fn shed_above(&self) -> Duration {
        self.admit_below.saturating_mul(3) / 2
    }

    /// Whether a new connection may start now.
    pub fn admit(&self, lag: Duration) -> Result<(), CloseReason> {
        if lag >= self.admit_below {
            return Err(overloaded(lag));
        }
        Ok(())
    }

    /// Whether the connection of session `seq` should go before submitting
    /// chunk `index`: below [`Self::shed_above`] never; beyond it with a chance
    /// per chunk that grows from 0.2 % to 3 % as the lag reaches four times it.
    /// (Gently: a connection shed takes all its later chunks away for a while,
    /// and shedding many at once only makes them all come back together.)
    pub fn shed(&self, lag: Duration, seq: i64, index: u32) -> Result<(), CloseReason> {
        let shed_above = self.shed_above();
        if lag <= shed_above {
            return Ok(());
        }
        let over = (lag.as_secs_f64() / shed_above.as_secs_f64() - 1.0).min(3.0);
        let chance = 0.002 + over / 3.0 * 0.028;
        // Spread over connections and chunks without a random source: a hash of both.
        let roll = (seq as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(index).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        let roll = (roll ^ (roll >> 29)) % 10_000;
        if (roll as f64) < chance * 10_000.0 {
            return Err(overloaded(lag));
        }
        Ok(())
    }
}

/// A hint that spreads returns: longer the further behind the writer is.
fn overloaded(lag: Duration) -> CloseReason {
    let retry_after = (lag * 8).clamp(Duration::from_secs(1), Duration::from_secs(15));
    CloseReason::Overloaded { lag, retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_until_the_writer_lags_then_sheds_more_the_further_behind_it_is() {
        let limit = Duration::from_millis(100);
        let shedding = Shedding::new(limit).unwrap();
        assert!(shedding.admit(Duration::from_millis(20)).is_ok());
        assert!(shedding.admit(limit).is_err());
        let shed_share = |lag_ms: u64| {
            let lag = Duration::from_millis(lag_ms);
            (0..10_000u32)
                .filter(|&i| shedding.shed(lag, i64::from(i % 97), i).is_err())
                .count()
        };
        assert_eq!(shed_share(140), 0);
        let (a_little, a_lot) = (shed_share(200), shed_share(1_000));
        assert!((10..100).contains(&a_little), "{a_little}");
        assert!((200..400).contains(&a_lot), "{a_lot}");
        let Err(CloseReason::Overloaded { retry_after, .. }) =
            shedding.admit(Duration::from_millis(500))
        else {
            panic!("refused")
        };
        assert_eq!(retry_after, Duration::from_secs(4));
    }

    #[test]
    fn a_zero_limit_never_sheds() {
        assert!(Shedding::new(Duration::ZERO).is_none());
    }
}
