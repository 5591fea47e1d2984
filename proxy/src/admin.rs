//! The admin endpoints (default 127.0.0.1:8014).
//!
//! - `GET /healthz`: `200 ok` while the process serves at all (liveness).
//! - `GET /readyz`: `200 ready` once a flag set is loaded, or once the init timeout passed without
//!   one (then it serves without flags, state `ERROR`, and says so); else `503` with a one-line
//!   reason (readiness: a starting sidecar must not receive traffic).
//! - `GET /metrics`: every metric of the [`Metrics`] registry, in the OpenMetrics text format.
//! - `GET /debug/snapshot`: the snapshot being served, as JSON: `environment`, `revision`,
//!   `source` (`kind`, `location`), `loaded_at` (RFC 3339), `sync_state`, `lifecycle` (`READY`,
//!   `STALE`, `ERROR`: [`crate::lifecycle`]), `flag_count`, `flags` (the keys) and `problems`
//!   (what lenient compilation tolerated, with JSON paths); serving without flags, `source.kind`
//!   is `none` and `lifecycle` `ERROR`. `503` with `{error, sync_state, lifecycle}` before
//!   anything is loaded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::lifecycle::Lifecycle;
use crate::lookup::NOT_READY;
use crate::metrics::{self, Metrics};
use crate::snapshot::{Snapshot, SnapshotCell};

/// What the admin handlers read. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    cell: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    read_timeout: Duration,
    lifecycle: Option<watch::Receiver<Lifecycle>>,
}

impl AdminState {
    /// Handlers reporting on `cell`, exposing `metrics` (whose sync state `/debug/snapshot` shows).
    pub fn new(cell: Arc<SnapshotCell>, metrics: Arc<Metrics>) -> Self {
        AdminState {
            cell,
            metrics,
            read_timeout: vexil_http::DEFAULT_HEADER_TIMEOUT,
            lifecycle: None,
        }
    }

    /// Reports this lifecycle state in `/debug/snapshot` (without it: `READY` once a snapshot is
    /// loaded, `NOT_READY` before).
    pub fn with_lifecycle(mut self, lifecycle: watch::Receiver<Lifecycle>) -> Self {
        self.lifecycle = Some(lifecycle);
        self
    }

    fn lifecycle(&self) -> Lifecycle {
        match &self.lifecycle {
            Some(rx) => *rx.borrow(),
            None if self.cell.is_loaded() => Lifecycle::Ready,
            None => Lifecycle::NotReady,
        }
    }

    /// Sets the time a client has to deliver a request head (default
    /// [`vexil_http::DEFAULT_HEADER_TIMEOUT`]).
    pub fn with_read_timeout(mut self, read_timeout: Duration) -> Self {
        self.read_timeout = read_timeout;
        self
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/debug/snapshot", get(debug_snapshot))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then lets in-flight requests finish.
/// A client that does not deliver a request head within the read timeout is disconnected.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = state.read_timeout;
    vexil_http::serve_http1(listener, router(state), header_timeout, shutdown).await;
    Ok(())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if let Some(snapshot) = state.cell.load() {
        if snapshot.is_flag_set() {
            (StatusCode::OK, "ready\n").into_response()
        } else {
            let text = format!(
                "ready, serving without flags: {}\n",
                snapshot.source.location()
            );
            (StatusCode::OK, text).into_response()
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{NOT_READY}\n")).into_response()
    }
}

async fn render_metrics(State(state): State<AdminState>) -> Response {
    let text = state.metrics.render();
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn debug_snapshot(State(state): State<AdminState>) -> Response {
    let sync_state = state.metrics.sync_state(&state.cell);
    let lifecycle = state.lifecycle().as_str();
    match state.cell.load() {
        Some(snapshot) => {
            let mut doc = describe(&snapshot, &sync_state);
            doc["lifecycle"] = Value::from(lifecycle);
            axum::Json(doc).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({ "error": NOT_READY, "sync_state": sync_state, "lifecycle": lifecycle }),
            ),
        )
            .into_response(),
    }
}

/// The `/debug/snapshot` document of `snapshot`.
pub fn describe(snapshot: &Snapshot, sync_state: &str) -> Value {
    let loaded_at = OffsetDateTime::from(snapshot.loaded_at)
        .format(&Rfc3339)
        .unwrap_or_default();
    let keys: Vec<&str> = snapshot.flags.flags().map(|f| f.key()).collect();
    json!({
        "environment": snapshot.environment,
        "revision": snapshot.revision,
        "source": {
            "kind": snapshot.source.kind(),
            "location": snapshot.source.location(),
        },
        "loaded_at": loaded_at,
        "sync_state": sync_state,
        "flag_count": keys.len(),
        "flags": keys,
        "problems": snapshot.flags.problems(),
        "shadows": {
            "proposals": snapshot.shadows.len(),
            "skipped": snapshot.shadows.skipped,
        },
    })
}
