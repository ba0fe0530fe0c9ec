//! Signed webhooks. When a session becomes `ready` or `failed`, the finalize
//! step adds an event to the outbox (`webhook_events`) in the same
//! transaction as the state change; the [`Dispatcher`] POSTs it to
//! `--webhook-url` until the receiver answers 2xx, backing off between
//! attempts, across restarts. Every delivery of one event carries the same
//! id and body, so receivers de-duplicate by `Spool-Event-Id`.

mod signature;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use signature::sign;

use crate::api::{AdminSessionView, BaseUrl, rfc3339};
use crate::db::webhooks::{EventFor, NewEvent};
use crate::db::{self, Database, sessions::SessionRow};
use crate::metrics::Metrics;

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    SessionReady,
    SessionFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionReady => "session.ready",
            Self::SessionFailed => "session.failed",
        }
    }
}

/// Writes events; held by the finalize job when webhooks are configured.
#[derive(Clone)]
pub struct Events {
    /// For the URLs in the session JSON (no request to take a Host from).
    base: BaseUrl,
    wakeup: Arc<Notify>,
}

impl Events {
    pub fn new(base: BaseUrl) -> Self {
        Self {
            base,
            wakeup: Arc::default(),
        }
    }

    /// Builds the `kind` event from the session's row as the changing
    /// transaction sees it; the database adds it in that transaction.
    pub fn event_for(&self, kind: EventKind, now: i64) -> Box<EventFor> {
        let base = self.base.clone();
        Box::new(move |row: &SessionRow| {
            let mut random = [0u8; 12];
            getrandom::fill(&mut random).expect("the operating system's random source failed");
            let id = format!("evt_{}", hex::encode(random));
            let body = json!({
                "id": id,
                "type": kind.as_str(),
                "created_at": rfc3339(now),
                "session": AdminSessionView::new(row, &base),
            })
            .to_string();
            NewEvent {
                id,
                kind: kind.as_str(),
                body,
            }
        })
    }

    /// Call after the transaction committed: the dispatcher looks at once.
    pub fn committed(&self) {
        self.wakeup.notify_one();
    }
}

/// How long a receiver may take to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often due retries are looked for when nothing wakes the dispatcher.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events sent per look.
const BATCH: i64 = 32;

/// How long a claimed event is left to its deliverer before another may
/// try it: past one delivery's timeout.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Delivers the outbox to `--webhook-url`.
pub struct Dispatcher {
    db: Arc<dyn Database>,
    url: String,
    secret: String,
    http: reqwest::Client,
    wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    pub fn new(
        db: Arc<dyn Database>,
        url: String,
        secret: String,
        events: &Events,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the webhook client")?;
        Ok(Self {
            db,
            url,
            secret,
            http,
            wakeup: events.wakeup.clone(),
            metrics,
        })
    }

    /// One step: claims due events and tries each once. Returns how many
    /// were tried. A claimed event is this node's until its lease runs out,
    /// so were this node to die mid-delivery, another retries it.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let now = db::now_ms();
        let due = self
            .db
            .claim_due_events(now, now + CLAIM_LEASE.as_millis() as i64, BATCH)
            .await
            .context("claiming due webhook events")?;
        for event in &due {
            match self.deliver(&event.body).await {
                Ok(()) => {
                    self.metrics.webhook_delivered();
                    self.db.event_delivered(&event.id, db::now_ms()).await?;
                }
                Err(error) => {
                    self.metrics.webhook_failed();
                    let delay = retry_delay(event.attempts);
                    tracing::warn!(event = %event.id, attempts = event.attempts + 1, retry_in = ?delay, error = %error, "webhook delivery failed");
                    let next = db::now_ms() + delay.as_millis() as i64;
                    self.db
                        .event_attempt_failed(&event.id, &error, next)
                        .await?;
                }
            }
        }
        Ok(due.len())
    }

    /// POSTs one event; `Err` says why it does not count as delivered.
    async fn deliver(&self, body: &str) -> Result<(), String> {
        let id = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Spool-Event-Id", id)
            .header("Spool-Signature", sign(&self.secret, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", response.status()))
        }
    }
}

/// 1 s after the first failure, doubling, at most an hour.
fn retry_delay(attempts_so_far: i64) -> Duration {
    let doublings = u32::try_from(attempts_so_far.clamp(0, 12)).unwrap_or(12);
    (Duration::from_secs(1) * 2u32.pow(doublings)).min(Duration::from_secs(3600))
}

/// Delivers until `stop`; an attempt in progress is finished first.
pub async fn run(dispatcher: Dispatcher, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let tried = match dispatcher.deliver_due().await {
            Ok(tried) => tried,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "webhook dispatcher failed; retrying");
                0
            }
        };
        if tried == 0 {
            tokio::select! {
                () = dispatcher.wakeup.notified() => {}
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(100), Duration::from_secs(3600));
    }
}
