//! The sidecars connected to this replica: who they are, what they were sent, what they acked.
//!
//! Sessions register on Welcome and deregister when their connection ends. Counters a session
//! updates on every frame (sent, acked) are atomics inside its entry, so the hot path never takes
//! the registry's lock; the lock is held only to add, remove or list entries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{Millis, now_millis, rfc3339};

/// One connected sidecar, as the session serving it keeps it up to date.
#[derive(Debug)]
pub struct SidecarEntry {
    /// Unique per connection on this replica.
    pub session: u64,
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
    /// Records an acknowledgement; acks never move backwards.
    pub fn ack(&self, revision: i64) {
        self.acked.fetch_max(revision, Ordering::Relaxed);
    }

    /// Records the digest of an acknowledged document.
    pub fn acked_digest(&self, digest: AckedDigest) {
        *self.digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }

    /// Revisions the sidecar is behind this replica's view of its environment.
    pub fn lag(&self) -> i64 {
        (self.head.load(Ordering::Relaxed) - self.acked.load(Ordering::Relaxed)).max(0)
    }
}

/// What `GET /api/v1/sidecars` shows of a connected sidecar.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SidecarInfo {
    /// The sidecar's id (`client_id` of its subscription).
    pub id: String,
    /// This replica's number for the connection (distinguishes two connections of one id).
    pub session: u64,
    /// Environment it follows.
    pub environment: String,
    /// Latest revision it acknowledged (applied and persisted).
    pub acked_revision: i64,
    /// Latest revision sent to it.
    pub sent_revision: i64,
    /// The environment's current revision as this replica knows it.
    pub current_revision: i64,
    /// `current_revision - acked_revision`.
    pub lag: i64,
    /// Remote address.
    pub address: String,
    /// When it connected (RFC 3339).
    pub connected_since: String,
    /// Its software version.
    pub version: String,
    /// Digest (`sha256:<hex>`) of the document it last acknowledged with one, if any.
    pub digest: Option<String>,
    /// The revision that digest is of.
    pub digest_revision: Option<i64>,
    /// Whether that digest equals control's document at that revision: `false` is a sidecar
    /// holding the right revision number with the wrong content (it is sent a Full); absent when
    /// not checked.
    pub digest_matches: Option<bool>,
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
            client_id: client_id.to_string(),
            version: version.to_string(),
            environment: environment.to_string(),
            address,
            connected_since: now_millis(),
            sent: AtomicI64::new(0),
            acked: AtomicI64::new(0),
            head,
            digest: Mutex::new(None),
        });
        self.lock().insert(session, entry.clone());
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

    /// The connected sidecars the `filter` lets through, sorted by environment then id.
    pub fn list(&self, filter: impl Fn(&str) -> bool) -> Vec<SidecarInfo> {
        let entries: Vec<Arc<SidecarEntry>> = self
            .lock()
            .values()
            .filter(|e| filter(&e.environment))
            .cloned()
            .collect();
        let mut list: Vec<SidecarInfo> = entries.iter().map(|e| info(e)).collect();
        list.sort_by(|a, b| {
            (&a.environment, &a.id, a.session).cmp(&(&b.environment, &b.id, b.session))
        });
        list
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

fn info(e: &SidecarEntry) -> SidecarInfo {
    let digest = e.digest.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let acked = e.acked.load(Ordering::Relaxed);
    let current = e.head.load(Ordering::Relaxed).max(acked);
    SidecarInfo {
        id: e.client_id.clone(),
        session: e.session,
        environment: e.environment.clone(),
        acked_revision: acked,
        sent_revision: e.sent.load(Ordering::Relaxed),
        current_revision: current,
        lag: current - acked,
        address: e.address.to_string(),
        connected_since: rfc3339(e.connected_since),
        version: e.version.clone(),
        digest_revision: digest.as_ref().map(|d| d.revision),
        digest_matches: digest.as_ref().and_then(|d| d.matches),
        digest: digest.map(|d| d.digest),
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
        let list = reg.list(|_| true);
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].id, "a");
        assert_eq!((list[1].acked_revision, list[1].lag), (7, 3));
        assert_eq!(reg.list(|e| e == "dev").len(), 1);
        assert_eq!(reg.stats()["prod"].max_lag, 3);
        drop(a);
        assert_eq!(reg.len(), 1);
        drop(b);
        assert!(reg.is_empty());
    }
}
