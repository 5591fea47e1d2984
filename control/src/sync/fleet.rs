//! The fleet: every sidecar session of every replica, as the store holds it
//! (docs/adr/0032-fleet-sessions-in-the-store.md).
//!
//! - [`run_recorder`]: this replica's recorder. It writes this replica's sessions (from the
//!   [registry](super::registry)) to `sidecar_sessions`: a new session, an acknowledgement, an end,
//!   a few milliseconds after it happens and batched in one transaction; `last_seen` of all of
//!   them every heartbeat. It runs apart from the sessions, which only wake it: a slow or
//!   unreachable database never holds a sync stream, and a failed write is logged, counted and
//!   tried again, never the end of a session.
//! - [`list`]: the fleet as `GET /api/v1/sidecars` shows it, from any replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::registry::{AckedDigest, SidecarEntry, Sidecars};
use crate::metrics::Metrics;
use crate::model::{Millis, now_millis, rfc3339};
use crate::store::{SessionCursor, SessionRow, SessionState, Store, StoreResult};

/// How long the recorder waits after a wake-up before writing, so a burst of acknowledgements (a
/// commit reaching many sidecars) is one transaction.
const COALESCE: Duration = Duration::from_millis(20);

/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The longest one write of the recorder may take before it counts as failed.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A row treated as connected whose replica has not vouched for it for this many heartbeats is
/// stale: read as disconnected.
pub const STALE_HEARTBEATS: u32 = 3;

/// What the recorder last wrote of a live session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    sent: i64,
    acked: i64,
    digest: Option<AckedDigest>,
}

/// The recorder's state between passes.
struct Recorder {
    store: Store,
    sidecars: Arc<Sidecars>,
    metrics: Arc<Metrics>,
    replica: String,
    written: HashMap<String, Written>,
    /// Ends taken from the registry and not yet written (bounded like the registry's list).
    ends: Vec<SessionRow>,
}

const MAX_PENDING_ENDS: usize = 100_000;

fn row(
    replica: &str,
    e: &SidecarEntry,
    w: &Written,
    now: Millis,
    ended: Option<Millis>,
) -> SessionRow {
    SessionRow {
        id: e.id.clone(),
        replica: replica.to_string(),
        session: i64::try_from(e.session).unwrap_or(i64::MAX),
        environment: e.environment.clone(),
        client_id: e.client_id.clone(),
        version: e.version.clone(),
        address: e.address.to_string(),
        sent_revision: w.sent,
        acked_revision: w.acked,
        digest: w.digest.as_ref().map(|d| d.digest.clone()),
        digest_revision: w.digest.as_ref().map(|d| d.revision),
        digest_matches: w.digest.as_ref().and_then(|d| d.matches),
        connected_since: e.connected_since,
        last_seen: ended.unwrap_or(now),
        disconnected_at: ended,
    }
}

fn state_of(e: &SidecarEntry) -> Written {
    Written {
        sent: e.sent.load(Ordering::Relaxed),
        acked: e.acked.load(Ordering::Relaxed),
        digest: e.digest(),
    }
}

impl Recorder {
    /// Writes what changed: new sessions, new acknowledgements or digests (and, with `all`, any
    /// session whose sent revision moved), and ends.
    async fn flush(&mut self, all: bool) -> StoreResult<()> {
        let now = now_millis();
        let mut rows = Vec::new();
        let mut live = Vec::new();
        for e in self.sidecars.entries() {
            let state = state_of(&e);
            let due = match self.written.get(&e.id) {
                None => true,
                Some(w) => {
                    w.acked != state.acked || w.digest != state.digest || (all && *w != state)
                }
            };
            if due {
                rows.push(row(&self.replica, &e, &state, now, None));
                live.push((e.id.clone(), state));
            }
        }
        for (e, at) in self.sidecars.take_ended() {
            if self.ends.len() >= MAX_PENDING_ENDS {
                self.ends.remove(0);
            }
            self.ends
                .push(row(&self.replica, &e, &state_of(&e), now, Some(at)));
        }
        rows.extend(self.ends.iter().cloned());
        if rows.is_empty() {
            return Ok(());
        }
        bounded(self.store.record_sessions(&rows)).await?;
        for (id, state) in live {
            self.written.insert(id, state);
        }
        for end in self.ends.drain(..) {
            self.written.remove(&end.id);
        }
        Ok(())
    }

    /// Refreshes `last_seen` of this replica's connected rows.
    async fn touch(&self) -> StoreResult<()> {
        bounded(self.store.touch_sessions(&self.replica, now_millis()))
            .await
            .map(drop)
    }

    fn failed(&self, what: &str, e: &crate::store::StoreError) {
        self.metrics.fleet_write_failed();
        tracing::warn!(error = %e, sessions = self.sidecars.len(), pending_ends = self.ends.len(),
            "could not {what} the fleet sessions in the store; trying again");
    }
}

/// A store call with the recorder's deadline.
async fn bounded<T>(call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    crate::store::within(WRITE_DEADLINE, call).await
}

/// Records this replica's sessions (`replica`: its server id) in the store until `cancel`; then
/// writes the ends and marks every session of the replica still open as disconnected.
pub async fn run_recorder(
    store: Store,
    sidecars: Arc<Sidecars>,
    metrics: Arc<Metrics>,
    replica: String,
    heartbeat: Duration,
    cancel: CancellationToken,
) {
    let changed = sidecars.changed().clone();
    let mut recorder = Recorder {
        store,
        sidecars,
        metrics,
        replica,
        written: HashMap::new(),
        ends: Vec::new(),
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat,
        heartbeat.max(COALESCE),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = false;
    loop {
        let mut beat = false;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = changed.notified() => tokio::time::sleep(COALESCE).await,
            _ = tick.tick() => beat = true,
            _ = tokio::time::sleep(RETRY), if retry => {}
        }
        retry = false;
        if let Err(e) = recorder.flush(beat).await {
            recorder.failed("write", &e);
            retry = true;
        }
        if beat && let Err(e) = recorder.touch().await {
            recorder.failed("refresh", &e);
            retry = true;
        }
    }
    // Shutting down: the sessions end with the hub; write what is known, then close the rest.
    if let Err(e) = recorder.flush(true).await {
        recorder.failed("write", &e);
    }
    match bounded(
        recorder
            .store
            .end_replica_sessions(&recorder.replica, now_millis()),
    )
    .await
    {
        Ok(n) if n > 0 => tracing::info!(
            sessions = n,
            "marked this replica's sidecar sessions disconnected"
        ),
        Ok(_) => {}
        Err(e) => recorder.failed("close", &e),
    }
}

/// What `GET /api/v1/sidecars` shows of a sidecar session, from any replica.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SidecarInfo {
    /// The sidecar's id (`client_id` of its subscription).
    pub id: String,
    /// The serving replica's number for the connection (distinguishes two connections of one id
    /// on one replica).
    pub session: i64,
    /// The session's id, unique across replicas.
    pub session_id: String,
    /// The control replica serving (or that served) it: its server id.
    pub replica: String,
    /// Environment it follows.
    pub environment: String,
    /// Latest revision it acknowledged (applied and persisted).
    pub acked_revision: i64,
    /// Latest revision sent to it (as last written by its replica).
    pub sent_revision: i64,
    /// The environment's current revision.
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
    /// Connected now: not disconnected, and its replica vouched for it within three heartbeats.
    pub connected: bool,
    /// Its replica stopped vouching for it (died, or lost the database) without marking it
    /// disconnected: read as disconnected since `last_seen`.
    pub stale: bool,
    /// When its replica last vouched for it (RFC 3339).
    pub last_seen: String,
    /// When it disconnected (RFC 3339); for a stale session, its `last_seen`; `null` while
    /// connected.
    pub disconnected_at: Option<String>,
}

impl SidecarInfo {
    /// The API's view of a stored session at `now`.
    pub fn of(s: &SessionState, now: Millis, stale_after: Duration) -> SidecarInfo {
        let r = &s.row;
        let stale = s.is_stale(now, stale_after);
        let current = s.current_revision.unwrap_or(0).max(r.acked_revision);
        SidecarInfo {
            id: r.client_id.clone(),
            session: r.session,
            session_id: r.id.clone(),
            replica: r.replica.clone(),
            environment: r.environment.clone(),
            acked_revision: r.acked_revision,
            sent_revision: r.sent_revision,
            current_revision: current,
            lag: current - r.acked_revision,
            address: r.address.clone(),
            connected_since: rfc3339(r.connected_since),
            version: r.version.clone(),
            digest: r.digest.clone(),
            digest_revision: r.digest_revision,
            digest_matches: r.digest_matches,
            connected: s.is_live(now, stale_after),
            stale,
            last_seen: rfc3339(r.last_seen),
            disconnected_at: r
                .disconnected_at
                .or(stale.then_some(r.last_seen))
                .map(rfc3339),
        }
    }
}

/// The fleet's sessions (of `environment` when given) that `allowed` lets through, connected and
/// disconnected (until retention deletes them).
pub async fn list(
    store: &Store,
    environment: Option<&str>,
    after: Option<&Cursor>,
    limit: i64,
    stale_after: Duration,
    allowed: impl Fn(&str) -> bool,
) -> StoreResult<Page> {
    let now = now_millis();
    let rows = store
        .sessions_page(environment, after.map(|c| &c.0), limit.saturating_add(1))
        .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit.max(0) as usize)];
    let next_cursor = match page.last() {
        Some(last) if more => Some(
            Cursor(SessionCursor {
                environment: last.row.environment.clone(),
                client_id: last.row.client_id.clone(),
                connected_since: last.row.connected_since,
                id: last.row.id.clone(),
            })
            .encode(),
        ),
        _ => None,
    };
    Ok(Page {
        items: page
            .iter()
            .filter(|s| allowed(&s.row.environment))
            .map(|s| SidecarInfo::of(s, now, stale_after))
            .collect(),
        next_cursor,
    })
}

/// A page of the fleet. A token limited to some environments gets fewer items than asked for
/// when the rows in between are other environments'; `next_cursor` is `None` on the last page.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The sidecars of this page.
    pub items: Vec<SidecarInfo>,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
}

/// The position after a page of the fleet: opaque to clients (base64url of JSON).
#[derive(Debug, Clone)]
pub struct Cursor(SessionCursor);

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.0).unwrap_or_default())
    }

    /// The cursor `text` encodes, or `None` when it is not one this API gave.
    pub fn parse(text: &str) -> Option<Cursor> {
        if text.len() > 4096 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok().map(Cursor)
    }
}

/// Where the fleet of an environment stands on a revision, in the answer of a write made with
/// `?wait=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SyncReport {
    /// Sidecars of the environment connected (to any replica, not stale) when the wait ended.
    pub connected: usize,
    /// How many of them acknowledged the revision (or a later one).
    pub acked: usize,
    /// Client ids of the connected sidecars that had not, sorted.
    pub lagging: Vec<String>,
    /// The wait ended at its deadline rather than with every connected sidecar acknowledged.
    pub timed_out: bool,
    /// Why the fleet was not waited for (too many writes waiting, the store unreadable); absent
    /// when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How often a waiting write reads the fleet's rows again.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Waits until every connected sidecar of `environment` (fleet-wide, from the store) has
/// acknowledged `revision`, or `limit` has passed; what was seen last either way.
pub async fn wait_for_acks(
    store: &Store,
    environment: &str,
    revision: i64,
    limit: Duration,
    stale_after: Duration,
) -> StoreResult<SyncReport> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = now_millis();
        let sessions = store.sessions(Some(environment)).await?;
        let live: Vec<&SessionState> = sessions
            .iter()
            .filter(|s| s.is_live(now, stale_after))
            .collect();
        let mut lagging: Vec<String> = live
            .iter()
            .filter(|s| s.row.acked_revision < revision)
            .map(|s| s.row.client_id.clone())
            .collect();
        lagging.sort();
        if lagging.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(SyncReport {
                connected: live.len(),
                acked: live.len() - lagging.len(),
                // Ended at the deadline exactly when someone still lags.
                timed_out: !lagging.is_empty(),
                lagging,
                error: None,
            });
        }
        tokio::time::sleep_until((tokio::time::Instant::now() + WAIT_POLL).min(deadline)).await;
    }
}
