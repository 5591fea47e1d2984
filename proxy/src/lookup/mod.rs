//! The sidecar's lookup surfaces: what OpenFeature clients in the application call.
//!
//! - [`grpc`]: `flagd.evaluation.v1` and `flagd.evaluation.v2` on one tonic server (127.0.0.1:8013),
//!   RPC-mode flagd providers.
//! - [`ofrep`]: the OpenFeature Remote Evaluation Protocol over HTTP (127.0.0.1:8016).
//! - [`flagd_sync`]: `flagd.sync.v1` (127.0.0.1:8015), the whole flag set for in-process flagd
//!   providers.
//!
//! Every request loads the current [`Snapshot`] once ([`SnapshotCell::load`]) and evaluates against
//! it without a lock. Streams follow the cell's broadcast through a [`Watcher`], and end when their
//! server shuts down ([`StreamShutdown`]), so a graceful shutdown never waits on an idle stream.

pub mod flagd_sync;
pub mod grpc;
pub mod ofrep;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use vexil_engine::EvaluationContext;

use crate::snapshot::{Snapshot, SnapshotCell};

/// Request limits shared by the lookup surfaces (docs/architecture.md#limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request accepted: an OFREP body, or a decoded gRPC message (bytes).
    pub max_request_bytes: usize,
    /// Most top-level attributes an evaluation context may have.
    pub max_context_attributes: usize,
    /// Time a client has to deliver an OFREP request head, then its body; also the gRPC
    /// server's HTTP/2 keep-alive: a peer that does not answer a ping within it is dropped.
    pub read_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1024 * 1024,
            max_context_attributes: 64,
            read_timeout: vexil_http::DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The message every surface answers while no flag set is loaded.
pub const NOT_READY: &str = "no flag set loaded yet: the sidecar is not ready";

/// Why an evaluation context was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// More attributes than [`Limits::max_context_attributes`].
    TooManyAttributes {
        /// How many the request had.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The context is not a JSON object.
    NotAnObject(&'static str),
}

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextError::TooManyAttributes { count, limit } => write!(
                f,
                "the evaluation context has {count} attributes; at most {limit} are accepted"
            ),
            ContextError::NotAnObject(kind) => {
                write!(
                    f,
                    "the evaluation context must be a JSON object, not {kind}"
                )
            }
        }
    }
}

impl std::error::Error for ContextError {}

/// Builds an evaluation context from a JSON value (`null` or absent is the empty context),
/// enforcing the attribute limit.
pub fn context_from_json(
    value: Option<Value>,
    limits: &Limits,
) -> Result<EvaluationContext, ContextError> {
    match value {
        None | Some(Value::Null) => Ok(EvaluationContext::new()),
        Some(Value::Object(map)) => context_from_map(map, limits),
        Some(other) => Err(ContextError::NotAnObject(json_kind(&other))),
    }
}

/// Builds an evaluation context from attributes, enforcing the attribute limit.
pub fn context_from_map(
    map: Map<String, Value>,
    limits: &Limits,
) -> Result<EvaluationContext, ContextError> {
    check_attribute_count(map.len(), limits)?;
    Ok(EvaluationContext::from_map(map))
}

/// Fails when `count` attributes exceed the limit.
pub fn check_attribute_count(count: usize, limits: &Limits) -> Result<(), ContextError> {
    if count > limits.max_context_attributes {
        return Err(ContextError::TooManyAttributes {
            count,
            limit: limits.max_context_attributes,
        });
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The connections of a gRPC listener, each handed to the server only once it has sent its first
/// bytes, within `deadline`; with `TCP_NODELAY`.
///
/// hyper waits for the HTTP/2 preface without a time limit and pings only established
/// connections, so a client that connects and stays silent would hold its connection (and a task)
/// for ever. Every accepted connection waits on its own task, so a silent one never delays
/// others. The accept loop ends when the server drops the stream.
pub fn incoming(
    mut listener: tokio::net::TcpListener,
    deadline: std::time::Duration,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<tokio::net::TcpStream>>(64);
    tokio::spawn(async move {
        loop {
            // axum's `Listener::accept` retries failed accepts (out of file descriptors and the
            // like) with a pause, as the HTTP/1.1 listeners do.
            let (stream, _) = tokio::select! {
                accepted = axum::serve::Listener::accept(&mut listener) => accepted,
                () = tx.closed() => return,
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                // `peek`, not `readable()`: readiness can be reported before any byte arrived.
                let mut first = [0u8; 1];
                match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
                    Ok(Ok(0)) => {} // closed before sending anything
                    Ok(Ok(_)) => {
                        let _ = stream.set_nodelay(true);
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "gRPC connection failed before its first bytes")
                    }
                    Err(_) => tracing::debug!(
                        ?deadline,
                        "gRPC connection silent after connecting: closed"
                    ),
                }
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        let next = rx.recv().await?;
        Some((next, rx))
    })
}

/// Ends the streams of one server (gRPC `EventStream`, `SyncFlags`) when it shuts down.
///
/// Cheap to clone; every clone sees the same signal.
#[derive(Clone, Debug)]
pub struct StreamShutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for StreamShutdown {
    fn default() -> Self {
        StreamShutdown {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl StreamShutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every open stream (and every stream opened from now on, at once).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once triggered.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone, which cannot happen while `self` lives; either
            // way the stream should end.
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// A future that awaits `shutdown`, then triggers this signal: what `serve` functions hand to
    /// their server as its shutdown signal.
    pub fn after(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            shutdown.await;
            this.trigger();
        }
    }
}

/// What a [`Watcher`] reports.
#[derive(Debug)]
pub enum Update {
    /// The first snapshot this watcher sees (loaded on start, or the first one published).
    Ready(Arc<Snapshot>),
    /// A later snapshot and the keys that changed since the previous one reported (added, changed
    /// or removed); never empty.
    Changed {
        /// The snapshot.
        snapshot: Arc<Snapshot>,
        /// The snapshot reported before it.
        previous: Arc<Snapshot>,
        /// The changed flag keys, sorted.
        keys: Vec<String>,
    },
}

/// Follows a [`SnapshotCell`]: one [`Update::Ready`], then an [`Update::Changed`] per published
/// snapshot that changed flags.
///
/// It subscribes before it loads the current snapshot, so no publication is missed. When it falls
/// behind the broadcast (lag), it reports every key of the current set plus the keys removed since
/// the last snapshot it reported, so a client cache never keeps a stale entry.
pub struct Watcher {
    cell: Arc<SnapshotCell>,
    rx: broadcast::Receiver<Arc<Snapshot>>,
    last: Option<Arc<Snapshot>>,
    started: bool,
}

impl Watcher {
    /// A watcher of `cell`.
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        let rx = cell.subscribe();
        Watcher {
            cell,
            rx,
            last: None,
            started: false,
        }
    }

    /// The next update; `None` when the cell's broadcast is gone.
    pub async fn next(&mut self) -> Option<Update> {
        if !self.started {
            self.started = true;
            if let Some(current) = self.cell.load() {
                self.last = Some(current.clone());
                return Some(Update::Ready(current));
            }
        }
        loop {
            let received = match self.rx.recv().await {
                Ok(snapshot) => Some(snapshot),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "snapshot watcher lagged behind");
                    // Drop the stale backlog: the current snapshot is compared with the last one
                    // reported instead. Resubscribing before loading it misses nothing.
                    self.rx = self.rx.resubscribe();
                    None
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if let Some(update) = self.update(received) {
                return Some(update);
            }
        }
    }

    /// Turns a received snapshot (`None` after a lag) into an update, or nothing to report.
    fn update(&mut self, received: Option<Arc<Snapshot>>) -> Option<Update> {
        let Some(last) = self.last.clone() else {
            let first = self.cell.load().or(received)?;
            self.last = Some(first.clone());
            return Some(Update::Ready(first));
        };
        let (snapshot, keys) = match received {
            Some(s) if Arc::ptr_eq(&s, &last) => return None,
            Some(s) => {
                let keys = s.changed.clone();
                (s, keys)
            }
            None => {
                let current = self.cell.load()?;
                if Arc::ptr_eq(&current, &last) {
                    return None;
                }
                let keys = keys_after_lag(&last, &current);
                (current, keys)
            }
        };
        self.last = Some(snapshot.clone());
        (!keys.is_empty()).then_some(Update::Changed {
            snapshot,
            previous: last,
            keys,
        })
    }
}

/// Every key of `current` plus the keys of `last` that `current` no longer has, sorted.
fn keys_after_lag(last: &Snapshot, current: &Snapshot) -> Vec<String> {
    let mut keys: BTreeSet<&str> = current.flags.flags().map(|f| f.key()).collect();
    keys.extend(
        last.flags
            .flags()
            .map(|f| f.key())
            .filter(|k| current.flags.get(k).is_none()),
    );
    keys.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Source;
    use serde_json::json;
    use vexil_engine::FlagSet;

    fn snapshot(revision: i64, flags: Value) -> Snapshot {
        let set = FlagSet::from_json(&json!({ "flags": flags })).unwrap();
        Snapshot::new("test", revision, set, Source::File("t.json".into()))
    }

    fn flag(default: &str) -> Value {
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": default})
    }

    #[tokio::test]
    async fn watcher_reports_ready_then_changes() {
        let cell = Arc::new(SnapshotCell::new());
        let mut w = Watcher::new(cell.clone());
        cell.publish(snapshot(1, json!({"a": flag("on")})));
        assert!(matches!(w.next().await, Some(Update::Ready(s)) if s.revision == 1));
        cell.publish(snapshot(2, json!({"a": flag("off"), "b": flag("on")})));
        match w.next().await {
            Some(Update::Changed { snapshot, keys, .. }) => {
                assert_eq!(snapshot.revision, 2);
                assert_eq!(keys, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn watcher_started_after_load_skips_the_loaded_snapshot() {
        let cell = Arc::new(SnapshotCell::new());
        cell.publish(snapshot(1, json!({"a": flag("on")})));
        let mut w = Watcher::new(cell.clone());
        assert!(matches!(w.next().await, Some(Update::Ready(s)) if s.revision == 1));
        // Same definitions: nothing to report; then a real change.
        cell.publish(snapshot(2, json!({"a": flag("on")})));
        cell.publish(snapshot(3, json!({"b": flag("on")})));
        match w.next().await {
            Some(Update::Changed { snapshot, keys, .. }) => {
                assert_eq!(snapshot.revision, 3);
                assert_eq!(keys, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn lagging_watcher_reports_all_keys_and_removals() {
        let cell = Arc::new(SnapshotCell::new());
        cell.publish(snapshot(0, json!({"gone": flag("on"), "kept": flag("on")})));
        let mut w = Watcher::new(cell.clone());
        assert!(matches!(w.next().await, Some(Update::Ready(_))));
        for rev in 1..=100 {
            cell.publish(snapshot(
                rev,
                json!({"kept": flag("on"), "new": flag("on")}),
            ));
        }
        match w.next().await {
            Some(Update::Changed { snapshot, keys, .. }) => {
                assert_eq!(snapshot.revision, 100);
                assert_eq!(keys, ["gone", "kept", "new"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn context_limits() {
        let limits = Limits {
            max_context_attributes: 2,
            ..Limits::default()
        };
        assert!(context_from_json(None, &limits).unwrap().is_empty());
        assert!(context_from_json(Some(json!({"a": 1, "b": 2})), &limits).is_ok());
        assert_eq!(
            context_from_json(Some(json!({"a": 1, "b": 2, "c": 3})), &limits).unwrap_err(),
            ContextError::TooManyAttributes { count: 3, limit: 2 }
        );
        assert_eq!(
            context_from_json(Some(json!([1])), &limits).unwrap_err(),
            ContextError::NotAnObject("an array")
        );
    }
}
