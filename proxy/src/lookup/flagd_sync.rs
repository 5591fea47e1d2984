//! `flagd.sync.v1` (default 127.0.0.1:8015): the whole flag set for in-process flagd providers,
//! which then evaluate inside the application.
//!
//! - `SyncFlags` sends the whole flagd document ([`Snapshot::document`]) as soon as a flag set is
//!   loaded (at once when one is), then again after every published snapshot; a client that fell
//!   behind gets the current document, never a stale one. Every message carries a non-empty
//!   `sync_context` (see [`sync_context`]): the Python provider falls back to `GetMetadata` when it
//!   is missing and fails when that is empty.
//!   After the init timeout with no flag set, the document sent is the empty flag set
//!   `{"flags": {}}` (`vexil.source` `none`): what flagd sends before its first sync, so in-process
//!   providers initialise and evaluate to "flag not found" (code defaults) instead of failing their
//!   init deadline; the first real snapshot follows as soon as it arrives.
//! - `FetchAllFlags` returns the current document; `UNAVAILABLE` before any flag set is loaded.
//! - `GetMetadata` returns the same context as `sync_context`, loaded or not.
//!
//! `provider_id` and `selector` (and the `flagd-selector` header) are accepted and ignored: the
//! sidecar serves one flag set. The document of a snapshot is serialized once and shared by every
//! stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, stream};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use vexil_proto::convert::json_to_struct;
use vexil_proto::flagd::sync::v1;
use vexil_proto::flagd::sync::v1::flag_sync_service_server::{
    FlagSyncService, FlagSyncServiceServer,
};
use vexil_proto::prost_types::Struct;

use super::{NOT_READY, StreamShutdown, Watcher};
use crate::snapshot::{Snapshot, SnapshotCell};

/// The flagd sync service. Cheap to clone.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

struct Inner {
    cell: Arc<SnapshotCell>,
    shutdown: StreamShutdown,
    /// The last snapshot's document, serialized once.
    document: Mutex<Option<(Arc<Snapshot>, Arc<str>)>>,
}

/// A boxed `SyncFlags` response stream.
pub type SyncStream = Pin<Box<dyn Stream<Item = Result<v1::SyncFlagsResponse, Status>> + Send>>;

impl SyncService {
    /// A service serving the flag set of `cell`.
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        SyncService {
            inner: Arc::new(Inner {
                cell,
                shutdown: StreamShutdown::new(),
                document: Mutex::new(None),
            }),
        }
    }

    /// The signal that ends this service's `SyncFlags` streams ([`serve`] triggers it on
    /// shutdown).
    pub fn stream_shutdown(&self) -> &StreamShutdown {
        &self.inner.shutdown
    }

    /// The `flagd.sync.v1.FlagSyncService` service, to serve alone ([`serve`]) or with others.
    pub fn routes(&self) -> Routes {
        Routes::new(self.server())
    }

    /// The tonic server of `flagd.sync.v1.FlagSyncService`.
    pub fn server(&self) -> FlagSyncServiceServer<SyncService> {
        FlagSyncServiceServer::new(self.clone())
    }
}

/// Serves [`SyncService::routes`] on `listener` until `shutdown` resolves; then ends the sync
/// streams and lets in-flight calls finish.
pub async fn serve(
    listener: TcpListener,
    service: SyncService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let signal = service.stream_shutdown().after(shutdown);
    let read_timeout = vexil_http::DEFAULT_HEADER_TIMEOUT;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(read_timeout))
        .http2_keepalive_timeout(Some(read_timeout))
        .add_routes(service.routes())
        .serve_with_incoming_shutdown(super::incoming(listener, read_timeout), signal)
        .await
}

/// The static context sent as `sync_context` and by `GetMetadata`: `vexil.source` (the source kind,
/// or `unloaded`), and once loaded `vexil.environment` and `vexil.revision` (of the snapshot the
/// message carries).
///
/// In-process providers merge it into every evaluation context. The keys contain a dot on
/// purpose: flagd's `var` reads a dotted name as a nested path, so no targeting rule can address
/// them, and in-process evaluations cannot diverge from the sidecar's own (which do not see them).
pub fn sync_context(snapshot: Option<&Snapshot>) -> Struct {
    let mut context = Map::new();
    let source = snapshot.map_or("unloaded", |s| s.source.kind());
    context.insert("vexil.source".into(), Value::from(source));
    if let Some(s) = snapshot {
        context.insert(
            "vexil.environment".into(),
            Value::from(s.environment.as_str()),
        );
        context.insert("vexil.revision".into(), Value::from(s.revision));
    }
    json_to_struct(&context)
}

impl Inner {
    /// The serialized document of `snapshot`, computed once per snapshot.
    fn document(&self, snapshot: &Arc<Snapshot>) -> Arc<str> {
        let mut cached = self.document.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, doc)) = &*cached
            && Arc::ptr_eq(s, snapshot)
        {
            return doc.clone();
        }
        let doc: Arc<str> = snapshot.document().to_string().into();
        *cached = Some((snapshot.clone(), doc.clone()));
        doc
    }

    fn message(&self, snapshot: &Arc<Snapshot>) -> v1::SyncFlagsResponse {
        v1::SyncFlagsResponse {
            flag_configuration: self.document(snapshot).to_string(),
            sync_context: Some(sync_context(Some(snapshot))),
        }
    }
}

struct SyncState {
    inner: Arc<Inner>,
    watcher: Watcher,
    last_sent: Option<Arc<Snapshot>>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl SyncState {
    /// The next document to send; `None` ends the stream.
    async fn next(&mut self) -> Option<v1::SyncFlagsResponse> {
        loop {
            tokio::select! {
                biased;
                () = &mut self.shutdown => return None,
                update = self.watcher.next() => update?,
            };
            // Always the current snapshot: a slow client skips straight to it.
            let current = self.inner.cell.load()?;
            if self
                .last_sent
                .as_ref()
                .is_some_and(|last| Arc::ptr_eq(last, &current))
            {
                continue;
            }
            self.last_sent = Some(current.clone());
            return Some(self.inner.message(&current));
        }
    }
}

#[tonic::async_trait]
impl FlagSyncService for SyncService {
    type SyncFlagsStream = SyncStream;

    async fn sync_flags(
        &self,
        request: Request<v1::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        let provider = request.into_inner().provider_id;
        tracing::debug!(provider, "flagd sync stream opened");
        let state = SyncState {
            inner: self.inner.clone(),
            watcher: Watcher::new(self.inner.cell.clone()),
            last_sent: None,
            shutdown: Box::pin(self.inner.shutdown.wait()),
        };
        let messages = stream::unfold(state, |mut state| async move {
            let message = state.next().await?;
            Some((Ok(message), state))
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn fetch_all_flags(
        &self,
        _request: Request<v1::FetchAllFlagsRequest>,
    ) -> Result<Response<v1::FetchAllFlagsResponse>, Status> {
        let snapshot = self
            .inner
            .cell
            .load()
            .ok_or_else(|| Status::unavailable(NOT_READY))?;
        Ok(Response::new(v1::FetchAllFlagsResponse {
            flag_configuration: self.inner.document(&snapshot).to_string(),
        }))
    }

    async fn get_metadata(
        &self,
        _request: Request<v1::GetMetadataRequest>,
    ) -> Result<Response<v1::GetMetadataResponse>, Status> {
        let snapshot = self.inner.cell.load();
        Ok(Response::new(v1::GetMetadataResponse {
            metadata: Some(sync_context(snapshot.as_deref())),
        }))
    }
}
