//! One live connection per session: a new one takes over, so a half-open
//! socket can never lock a reconnecting client out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a connection was told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// A newer connection for the same session.
    Superseded,
    /// The session was deleted.
    Deleted,
}

/// Session seq → (connection id, how to evict it).
type Live = HashMap<i64, (u64, oneshot::Sender<Eviction>)>;

#[derive(Clone, Default)]
pub struct ConnectionRegistry {
    live: Arc<Mutex<Live>>,
    next_id: Arc<AtomicU64>,
}

/// A connection's place in the registry; leaving it (drop) unregisters.
pub struct Registration {
    registry: ConnectionRegistry,
    session: i64,
    id: u64,
    /// Fires when this connection must close.
    pub evicted: oneshot::Receiver<Eviction>,
}

impl ConnectionRegistry {
    /// Registers a connection for `session`, evicting the one before it.
    pub fn register(&self, session: i64) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (notify, evicted) = oneshot::channel();
        let previous = self.lock().insert(session, (id, notify));
        if let Some((_, previous)) = previous {
            let _ = previous.send(Eviction::Superseded);
        }
        Registration {
            registry: self.clone(),
            session,
            id,
            evicted,
        }
    }

    /// Tells the session's connection here, if any, that a newer one (on
    /// another node) took over.
    pub fn supersede(&self, session: i64) {
        if let Some((_, notify)) = self.lock().remove(&session) {
            let _ = notify.send(Eviction::Superseded);
        }
    }

    /// Tells the session's connection, if any, that the session is gone.
    pub fn evict(&self, session: i64) {
        if let Some((_, notify)) = self.lock().remove(&session) {
            let _ = notify.send(Eviction::Deleted);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        // A panic while holding this lock leaves the map consistent; keep going.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.registry.lock();
        if live
            .get(&self.session)
            .is_some_and(|(id, _)| *id == self.id)
        {
            live.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_connection_evicts_older() {
        let registry = ConnectionRegistry::default();
        let mut first = registry.register(1);
        let mut second = registry.register(1);
        assert_eq!(first.evicted.try_recv(), Ok(Eviction::Superseded));
        drop(first); // must not unregister the newer one
        registry.evict(1);
        assert_eq!(second.evicted.try_recv(), Ok(Eviction::Deleted));
    }
}
