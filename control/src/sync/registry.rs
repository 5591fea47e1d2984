//! The sidecars connected to this replica: who they are, what they were sent, what they acked.
//!
//! Sessions register on Welcome and deregister when their connection ends. Counters a session
//! updates on every frame (sent, acked) are atomics inside its entry, so the hot path never takes
//! the registry's lock; the lock is held only to add, remove or list entries.
//!
//! This is this replica's live view, for its metrics (sidecars and lag per environment) and for
//! the fleet recorder (`fleet.rs`), which writes every session to the store: the store's rows, not
//! this registry, are what `GET /api/v1/sidecars` lists, from any replica. A change the recorder
//! must write (a new session, an acknowledgement, an end) wakes it through [`Sidecars::changed`];
//! ended sessions wait in a bounded list until it has written them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::{Millis, now_millis};

/// Ended sessions kept for the recorder at most; beyond, the oldest are dropped (their rows then
/// turn stale in the store instead of disconnected).
const MAX_ENDED: usize = 100_000;

/// One connected sidecar, as the session serving it keeps it up to date.
#[derive(Debug)]
pub struct SidecarEntry {
    /// Unique per connection on this replica.
    pub session: u64,
    /// Unique across replicas and restarts (random): the session's row in the store.
    pub id: String,
    /// The sidecar's own id (`Subscribe.client_id`).
    pub client_id: String,
    /// The software version it reported.
    pub version: String,
    /// Environment it follows.
    pub environment: String,
    /// Remote address of the QUIC connection.
    pub address: SocketAddr,
    /// When the subscription was accepted.
    pub connected_since: Millis,
    /// Latest revision sent on the stream.
    pub sent: AtomicI64,
    /// Latest revision the sidecar acknowledged.
    pub acked: AtomicI64,
    /// The environment's latest revision known to this replica (shared with its feed).
    pub head: Arc<AtomicI64>,
    /// The digest of the latest acknowledged document that carried one: its revision, the digest,
    /// and whether it matched control's document at that revision (`None`: not checked, e.g. the
    /// environment moved on before it could be).
    pub digest: Mutex<Option<AckedDigest>>,
    /// Wakes the fleet recorder.
    changed: Arc<Notify>,
}

/// A digest a sidecar acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedDigest {
    /// The revision acknowledged.
    pub revision: i64,
    /// `sha256:<hex>` of the document it holds.
    pub digest: String,
    /// Whether it equals control's digest of that revision.
    pub matches: Option<bool>,
}

impl SidecarEntry {
    /// Records an acknowledgement; acks never move backwards. A new one wakes the recorder.
    pub fn ack(&self, revision: i64) {
        if self.acked.fetch_max(revision, Ordering::Relaxed) < revision {
            self.changed.notify_one();
        }
    }

    /// Records the digest of an acknowledged document.
    pub fn acked_digest(&self, digest: AckedDigest) {
        *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        self.changed.notify_one();
    }

    /// The digest last acknowledged.
    pub fn digest(&self) -> Option<AckedDigest> {
        self.digest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Revisions the sidecar is behind this replica's view of its environment.
    pub fn lag(&self) -> i64 {
        (self.head.load(Ordering::Relaxed) - self.acked.load(Ordering::Relaxed)).max(0)
    }
}

/// Per-environment aggregates for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvironmentStats {
    /// Connected sidecars.
    pub sidecars: i64,
    /// The largest lag among them.
    pub max_lag: i64,
}

/// The registry of connected sidecars.
#[derive(Debug, Default)]
pub struct Sidecars {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<SidecarEntry>>>,
    /// Sessions that ended, and when, not yet taken by the recorder.
    ended: Mutex<VecDeque<(Arc<SidecarEntry>, Millis)>>,
    changed: Arc<Notify>,
}

impl Sidecars {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sidecar; the returned guard removes it when dropped.
    pub fn register(
        self: &Arc<Self>,
        client_id: &str,
        version: &str,
        environment: &str,
        address: SocketAddr,
        head: Arc<AtomicI64>,
    ) -> Registration {
        let session = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(SidecarEntry {
            session,
            id: format!("{:032x}", rand::random::<u128>()),
            client_id: client_id.to_string(),
            version: version.to_string(),
            environment: environment.to_string(),
            address,
            connected_since: now_millis(),
            sent: AtomicI64::new(0),
            acked: AtomicI64::new(0),
            head,
            digest: Mutex::new(None),
            changed: self.changed.clone(),
        });
        self.lock().insert(session, entry.clone());
        self.changed.notify_one();
        Registration {
            registry: self.clone(),
            entry,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SidecarEntry>>> {
        // A panic while holding the lock cannot leave the map half-updated (single insert/remove).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of connected sidecars.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every connected sidecar.
    pub fn entries(&self) -> Vec<Arc<SidecarEntry>> {
        self.lock().values().cloned().collect()
    }

    /// The sessions that ended since the last call, with when.
    pub fn take_ended(&self) -> Vec<(Arc<SidecarEntry>, Millis)> {
        self.ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Fires when a sidecar connects, acknowledges or leaves.
    pub fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }

    /// Sidecars and largest lag per environment.
    pub fn stats(&self) -> HashMap<String, EnvironmentStats> {
        let mut stats: HashMap<String, EnvironmentStats> = HashMap::new();
        for e in self.lock().values() {
            let s = stats.entry(e.environment.clone()).or_default();
            s.sidecars += 1;
            s.max_lag = s.max_lag.max(e.lag());
        }
        stats
    }
}

/// A sidecar's place in the registry; dropping it deregisters the sidecar.
pub struct Registration {
    registry: Arc<Sidecars>,
    entry: Arc<SidecarEntry>,
}

impl Registration {
    /// The entry to update.
    pub fn entry(&self) -> &SidecarEntry {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.session);
        let mut ended = self
            .registry
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ended.len() >= MAX_ENDED {
            ended.pop_front();
        }
        ended.push_back((self.entry.clone(), now_millis()));
        drop(ended);
        self.registry.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_and_go_with_their_registration() {
        let reg = Arc::new(Sidecars::new());
        let head = Arc::new(AtomicI64::new(10));
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = reg.register("a", "0.1.0", "prod", addr, head.clone());
        let b = reg.register("b", "0.1.0", "dev", addr, Arc::new(AtomicI64::new(3)));
        a.entry().ack(7);
        a.entry().ack(5); // never backwards
        b.entry().ack(3);
        assert_eq!(reg.entries().len(), 2);
        assert_eq!(a.entry().acked.load(Ordering::Relaxed), 7);
        assert_eq!(a.entry().lag(), 3);
        assert_ne!(a.entry().id, b.entry().id);
        assert_eq!(reg.stats()["prod"].max_lag, 3);
        let id = a.entry().id.clone();
        drop(a);
        assert_eq!(reg.len(), 1);
        let ended = reg.take_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0.id, id);
        assert!(reg.take_ended().is_empty());
        drop(b);
        assert!(reg.is_empty());
    }
}
