//! `flagd.evaluation.v1` and `flagd.evaluation.v2` on one tonic server (default 127.0.0.1:8013):
//! what RPC-mode flagd providers call. One implementation, [`EvaluationService`], serves both.
//!
//! Answers follow flagd's protocol (docs/adr/0016-own-flagd-proto-files-and-protox.md):
//!
//! - Reasons `STATIC`, `TARGETING_MATCH`, `DEFAULT`, `DISABLED` as the engine decides them; the
//!   response's `metadata` is the flag's metadata overlaid on the flag set's.
//! - A disabled flag is not a missing flag: reason `DISABLED`, and in v2 `value` and `variant` are
//!   left unset so the client uses the caller's default. The same holds for `DEFAULT` when the flag
//!   has no default variant. v1 cannot leave them unset: it sends the type's zero value and an empty
//!   variant with the same reason.
//! - Errors are gRPC statuses, mapped as the clients map them back: `FLAG_NOT_FOUND` → `NOT_FOUND`,
//!   `TYPE_MISMATCH` → `INVALID_ARGUMENT`, `PARSE_ERROR` → `DATA_LOSS`, and `GENERAL` →
//!   `INTERNAL` (any other code means `GENERAL` to the client; `UNKNOWN` is avoided because the
//!   Python provider retries it). An object flag whose value is a JSON array cannot be carried in a
//!   `Struct` and is a `TYPE_MISMATCH`.
//! - Before any flag set is loaded every call answers `UNAVAILABLE` (which clients retry); an
//!   evaluation context over the attribute limit answers `RESOURCE_EXHAUSTED` (`GENERAL` to the
//!   client, with the limit in the message).
//! - `ResolveAll` (v1 only) returns the flags that have a value. Like flagd, it leaves out disabled
//!   flags and flags whose evaluation failed: `AnyFlag` can carry neither an error nor "no value".
//!   Object flags holding an array are left out too.
//! - After the init timeout with no flag set (state `ERROR`, [`crate::lifecycle`]) the sidecar
//!   serves without flags: every evaluation answers `NOT_FOUND` (`FLAG_NOT_FOUND`, what flagd
//!   answers before its first sync), so providers return the caller's default.
//! - `EventStream` sends `provider_ready` as soon as the sidecar serves (a flag set is loaded, or
//!   it serves without flags after the init timeout; at once when it does), as flagd does on every
//!   new stream; `configuration_change` with `data.flags.<key> = {"type": "write" | "update" |
//!   "delete"}` for every published snapshot that changed flags; and `keep_alive` every
//!   [`GrpcConfig::keep_alive`]. With a lifecycle ([`EvaluationService::with_lifecycle`]) it also
//!   sends each change of state: `provider_stale` (control lost for longer than the grace
//!   period), `provider_error` (serving without flags; `data.message` says why; sent right after
//!   the first `provider_ready` when a stream opens in that state) and `provider_ready` again on
//!   recovery. flagd itself sends none of the first two; the flagd providers ignore event types
//!   they do not know, and the others map them to the OpenFeature events of the same name. The
//!   stream ends when the server shuts down.
//!
//! The `flagd-selector` header is accepted and ignored: the sidecar serves one flag set.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use vexil_engine::{ErrorCode, EvaluationContext, FlagSet, Metadata, Resolution};
use vexil_proto::convert::{json_to_struct, struct_into_json};
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::prost_types::Struct;

use super::{Limits, NOT_READY, StreamShutdown, Update, Watcher, check_attribute_count};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Api, Metrics};
use crate::snapshot::{Snapshot, SnapshotCell};

/// Settings of the evaluation server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcConfig {
    /// Request size and context limits.
    pub limits: Limits,
    /// How often `EventStream` sends `keep_alive`.
    pub keep_alive: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            limits: Limits::default(),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// The flagd evaluation service (v1 and v2). Cheap to clone.
#[derive(Clone)]
pub struct EvaluationService {
    inner: Arc<Inner>,
}

struct Inner {
    cell: Arc<SnapshotCell>,
    metrics: Arc<Metrics>,
    config: GrpcConfig,
    shutdown: StreamShutdown,
    lifecycle: Option<watch::Receiver<Lifecycle>>,
}

/// The outcome of one typed evaluation, before it becomes a v1 or v2 response.
struct Typed<T> {
    value: Option<T>,
    variant: Option<String>,
    reason: &'static str,
    metadata: Struct,
}

/// One `EventStream` message, before it becomes a v1 or v2 response.
struct Event {
    kind: &'static str,
    data: Option<Struct>,
}

/// A boxed `EventStream` response stream.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl EvaluationService {
    /// A service answering from `cell`, counting evaluations in `metrics`.
    pub fn new(cell: Arc<SnapshotCell>, metrics: Arc<Metrics>, config: GrpcConfig) -> Self {
        EvaluationService {
            inner: Arc::new(Inner {
                cell,
                metrics,
                config,
                shutdown: StreamShutdown::new(),
                lifecycle: None,
            }),
        }
    }

    /// Announces the sidecar's lifecycle on `EventStream` (`provider_stale`, `provider_error`,
    /// `provider_ready`). Call it before the service is cloned or served.
    pub fn with_lifecycle(mut self, lifecycle: watch::Receiver<Lifecycle>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_lifecycle is called on a new service")
            .lifecycle = Some(lifecycle);
        self
    }

    /// The signal that ends this service's event streams ([`serve`] triggers it on shutdown).
    pub fn stream_shutdown(&self) -> &StreamShutdown {
        &self.inner.shutdown
    }

    /// Both services (`flagd.evaluation.v1.Service`, `flagd.evaluation.v2.Service`) with the request
    /// size limit applied, to serve alone ([`serve`]) or next to other services.
    pub fn routes(&self) -> Routes {
        let max = self.inner.config.limits.max_request_bytes;
        Routes::new(
            v1::service_server::ServiceServer::new(self.clone()).max_decoding_message_size(max),
        )
        .add_service(
            v2::service_server::ServiceServer::new(self.clone()).max_decoding_message_size(max),
        )
    }
}

/// Serves [`EvaluationService::routes`] on `listener` until `shutdown` resolves; then ends the event
/// streams and lets in-flight calls finish.
///
/// A connection must send its first bytes within [`Limits::read_timeout`] ([`super::incoming`]);
/// then the server pings every connection quiet that long and drops it when the ping is not
/// answered within that time, so dead or stalled peers do not hold connections (an idle client
/// that answers pings, as every HTTP/2 stack does, stays connected).
pub async fn serve(
    listener: TcpListener,
    service: EvaluationService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let signal = service.stream_shutdown().after(shutdown);
    let read_timeout = service.inner.config.limits.read_timeout;
    serve_routes(listener, service.routes(), read_timeout, signal).await
}

/// `routes` on `listener` with the deadlines of [`serve`].
async fn serve_routes(
    listener: TcpListener,
    routes: Routes,
    read_timeout: Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(read_timeout))
        .http2_keepalive_timeout(Some(read_timeout))
        .add_routes(routes)
        .serve_with_incoming_shutdown(super::incoming(listener, read_timeout), signal)
        .await
}

/// Serves flagd's evaluation services and `flagd.sync.v1` together on `listener` (both of the
/// sidecar's gRPC listeners do): a stock provider reaches whatever it asks for on either port. The
/// JavaScript flagd provider (0.16), for one, sends its RPC calls to `FLAGD_SYNC_PORT` when that
/// is set, and an in-process provider told only `FLAGD_PORT` syncs from there.
pub async fn serve_with_sync(
    listener: TcpListener,
    service: EvaluationService,
    sync: super::flagd_sync::SyncService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let signal = sync
        .stream_shutdown()
        .after(service.stream_shutdown().after(shutdown));
    let read_timeout = service.inner.config.limits.read_timeout;
    let routes = service.routes().add_service(sync.server());
    serve_routes(listener, routes, read_timeout, signal).await
}

impl Inner {
    fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        self.cell
            .load()
            .ok_or_else(|| Status::unavailable(NOT_READY))
    }

    fn context(&self, context: Option<Struct>) -> Result<EvaluationContext, Status> {
        let Some(context) = context else {
            return Ok(EvaluationContext::new());
        };
        check_attribute_count(context.fields.len(), &self.config.limits)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        Ok(EvaluationContext::from_map(struct_into_json(context)))
    }

    /// Evaluates `key` with `resolve`, types the value with `convert` and counts it.
    fn typed<'s, U, T>(
        &self,
        api: Api,
        snapshot: &'s Snapshot,
        key: &str,
        ctx: &EvaluationContext,
        resolve: impl FnOnce(&'s FlagSet) -> Resolution<'s, U>,
        convert: impl FnOnce(U) -> Result<T, Status>,
    ) -> Result<Typed<T>, Status> {
        let _span = crate::metrics::lookup_span(api, snapshot).entered();
        let r = resolve(&snapshot.flags);
        snapshot.decided(r.position, ctx);
        if let Some(error) = &r.error {
            if error.code == ErrorCode::FlagNotFound {
                self.metrics.flag_not_found(api);
                if !snapshot.is_flag_set() {
                    let why = snapshot.source.location();
                    return Err(Status::not_found(format!("{}: {why}", error.message)));
                }
            } else {
                self.metrics.evaluation(api, key, None, r.reason.as_str());
            }
            return Err(status_for(error.code, &error.message));
        }
        let value = r.value.map(convert).transpose()?;
        self.metrics
            .evaluation(api, key, r.variant, r.reason.as_str());
        Ok(Typed {
            value,
            variant: r.variant.map(str::to_owned),
            reason: r.reason.as_str(),
            metadata: metadata_struct(r.metadata),
        })
    }

    fn boolean(&self, api: Api, key: &str, ctx: Option<Struct>) -> Result<Typed<bool>, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        self.typed(api, &snapshot, key, &ctx, |f| f.resolve_bool(key, &ctx), Ok)
    }

    fn string(&self, api: Api, key: &str, ctx: Option<Struct>) -> Result<Typed<String>, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        let owned = |s: &str| Ok(s.to_owned());
        self.typed(
            api,
            &snapshot,
            key,
            &ctx,
            |f| f.resolve_string(key, &ctx),
            owned,
        )
    }

    fn int(&self, api: Api, key: &str, ctx: Option<Struct>) -> Result<Typed<i64>, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        self.typed(api, &snapshot, key, &ctx, |f| f.resolve_int(key, &ctx), Ok)
    }

    fn float(&self, api: Api, key: &str, ctx: Option<Struct>) -> Result<Typed<f64>, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        self.typed(
            api,
            &snapshot,
            key,
            &ctx,
            |f| f.resolve_float(key, &ctx),
            Ok,
        )
    }

    fn object(&self, api: Api, key: &str, ctx: Option<Struct>) -> Result<Typed<Struct>, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        let to_struct = |v: &Value| match v {
            Value::Object(map) => Ok(json_to_struct(map)),
            _ => Err(Status::invalid_argument(format!(
                "flag {} holds a JSON array, which flagd's object type (a Struct) cannot carry",
                Value::from(key)
            ))),
        };
        self.typed(
            api,
            &snapshot,
            key,
            &ctx,
            |f| f.resolve_object(key, &ctx),
            to_struct,
        )
    }

    fn resolve_all(&self, ctx: Option<Struct>) -> Result<v1::ResolveAllResponse, Status> {
        let (snapshot, ctx) = (self.snapshot()?, self.context(ctx)?);
        let _span = crate::metrics::lookup_span(Api::GrpcV1, &snapshot).entered();
        let mut flags = HashMap::with_capacity(snapshot.flags.len());
        for (flag, r) in snapshot.flags.resolve_all(&ctx) {
            let Some(value) = r.value.and_then(any_value) else {
                continue;
            };
            snapshot.decided(r.position, &ctx);
            self.metrics
                .evaluation(Api::GrpcV1, flag.key(), r.variant, r.reason.as_str());
            let any = v1::AnyFlag {
                reason: r.reason.as_str().to_owned(),
                variant: r.variant.unwrap_or_default().to_owned(),
                metadata: Some(metadata_struct(r.metadata)),
                value: Some(value),
            };
            flags.insert(flag.key().to_owned(), any);
        }
        Ok(v1::ResolveAllResponse {
            flags,
            metadata: Some(metadata_struct(snapshot.flags.metadata())),
        })
    }

    /// The provider events: `provider_ready`, then `configuration_change`s, with `keep_alive`s.
    fn events(&self) -> impl Stream<Item = Event> + Send + 'static {
        let period = self.config.keep_alive.max(Duration::from_millis(10));
        let mut keep_alive = tokio::time::interval_at(Instant::now() + period, period);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let state = EventState {
            watcher: Watcher::new(self.cell.clone()),
            lifecycle: self.lifecycle.clone(),
            loaded: false,
            reported: None,
            pending: VecDeque::new(),
            keep_alive,
            shutdown: Box::pin(self.shutdown.wait()),
        };
        stream::unfold(state, |mut state| async move {
            let event = state.next().await?;
            Some((event, state))
        })
    }
}

struct EventState {
    watcher: Watcher,
    /// The sidecar's state, when the service has one.
    lifecycle: Option<watch::Receiver<Lifecycle>>,
    /// The watcher has reported its first snapshot.
    loaded: bool,
    /// The last state announced on this stream.
    reported: Option<Lifecycle>,
    /// Events to send before waiting again.
    pending: VecDeque<Event>,
    keep_alive: Interval,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// What woke an event stream.
enum Woke {
    Shutdown,
    Lifecycle(bool),
    Update(Option<Update>),
    KeepAlive,
}

/// Resolves when the lifecycle changes (`false`: its sender is gone); never without one.
async fn lifecycle_changed(lifecycle: &mut Option<watch::Receiver<Lifecycle>>) -> bool {
    match lifecycle {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl EventState {
    /// The next event; `None` ends the stream (shutdown).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let woke = tokio::select! {
                biased;
                () = &mut self.shutdown => Woke::Shutdown,
                alive = lifecycle_changed(&mut self.lifecycle) => Woke::Lifecycle(alive),
                update = self.watcher.next() => Woke::Update(update),
                _ = self.keep_alive.tick() => Woke::KeepAlive,
            };
            match woke {
                Woke::Shutdown => return None,
                Woke::KeepAlive => {
                    return Some(Event {
                        kind: "keep_alive",
                        data: None,
                    });
                }
                Woke::Lifecycle(false) => self.lifecycle = None,
                Woke::Lifecycle(true) => self.report(),
                Woke::Update(None) => return None,
                Woke::Update(Some(Update::Ready(_))) => {
                    self.loaded = true;
                    self.report();
                }
                Woke::Update(Some(changed)) => self.pending.push_back(event_for(changed)),
            }
        }
    }

    /// The state to announce: the lifecycle's, or `READY` once a snapshot is loaded.
    fn current(&self) -> Lifecycle {
        let state = self
            .lifecycle
            .as_ref()
            .map_or(Lifecycle::NotReady, |rx| *rx.borrow());
        if state == Lifecycle::NotReady && self.loaded {
            Lifecycle::Ready
        } else {
            state
        }
    }

    /// Queues the events of a change of state: `provider_ready` first on a new stream (as flagd
    /// sends it), then the state's own event when it is another.
    fn report(&mut self) {
        let state = self.current();
        let Some(kind) = state.event() else {
            return;
        };
        if self.reported == Some(state) {
            return;
        }
        if self.reported.is_none() && state != Lifecycle::Ready {
            self.pending.push_back(Event {
                kind: "provider_ready",
                data: None,
            });
        }
        let data = (state == Lifecycle::Error).then(|| {
            let mut data = Map::new();
            data.insert(
                "message".into(),
                Value::from("no flag set loaded within the init timeout: serving without flags"),
            );
            json_to_struct(&data)
        });
        self.pending.push_back(Event { kind, data });
        self.reported = Some(state);
    }
}

/// `provider_ready` or `configuration_change` for an update (a `Ready` is reported through
/// [`EventState::report`]).
fn event_for(update: Update) -> Event {
    match update {
        Update::Ready(_) => Event {
            kind: "provider_ready",
            data: None,
        },
        Update::Changed {
            snapshot,
            previous,
            keys,
        } => {
            let flags: Map<String, Value> = keys
                .into_iter()
                .map(|key| {
                    let kind = match (previous.flags.get(&key), snapshot.flags.get(&key)) {
                        (_, None) => "delete",
                        (None, Some(_)) => "write",
                        (Some(_), Some(_)) => "update",
                    };
                    (key, json!({ "type": kind }))
                })
                .collect();
            let mut data = Map::new();
            data.insert("flags".into(), Value::Object(flags));
            Event {
                kind: "configuration_change",
                data: Some(json_to_struct(&data)),
            }
        }
    }
}

/// The status a client maps back to `code`.
fn status_for(code: ErrorCode, message: &str) -> Status {
    match code {
        ErrorCode::FlagNotFound => Status::not_found(message),
        ErrorCode::TypeMismatch => Status::invalid_argument(message),
        ErrorCode::ParseError => Status::data_loss(message),
        ErrorCode::General => Status::internal(message),
    }
}

fn metadata_struct(metadata: &Metadata) -> Struct {
    json_to_struct(metadata)
}

/// A value as `AnyFlag` carries it; `None` for arrays and null.
fn any_value(value: &Value) -> Option<v1::any_flag::Value> {
    use v1::any_flag::Value as Any;
    Some(match value {
        Value::Bool(b) => Any::BoolValue(*b),
        Value::String(s) => Any::StringValue(s.clone()),
        Value::Number(n) => Any::DoubleValue(n.as_f64()?),
        Value::Object(map) => Any::ObjectValue(json_to_struct(map)),
        Value::Array(_) | Value::Null => return None,
    })
}

/// Implements one typed unary method: `$inner` evaluates, `$response` builds the message.
macro_rules! unary {
    ($self:ident, $request:ident, $api:expr, $inner:ident, $build:expr) => {{
        let request = $request.into_inner();
        let typed = $self
            .inner
            .$inner($api, &request.flag_key, request.context)?;
        Ok(Response::new($build(typed)))
    }};
}

macro_rules! v1_response {
    ($ty:ident) => {
        |t: Typed<_>| v1::$ty {
            value: t.value.unwrap_or_default(),
            reason: t.reason.to_owned(),
            variant: t.variant.unwrap_or_default(),
            metadata: Some(t.metadata),
        }
    };
}

macro_rules! v2_response {
    ($ty:ident) => {
        |t: Typed<_>| v2::$ty {
            value: t.value,
            reason: t.reason.to_owned(),
            variant: t.variant,
            metadata: Some(t.metadata),
        }
    };
}

#[tonic::async_trait]
impl v1::service_server::Service for EvaluationService {
    async fn resolve_all(
        &self,
        request: Request<v1::ResolveAllRequest>,
    ) -> Result<Response<v1::ResolveAllResponse>, Status> {
        let response = self.inner.resolve_all(request.into_inner().context)?;
        Ok(Response::new(response))
    }

    async fn resolve_boolean(
        &self,
        request: Request<v1::ResolveBooleanRequest>,
    ) -> Result<Response<v1::ResolveBooleanResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV1,
            boolean,
            v1_response!(ResolveBooleanResponse)
        )
    }

    async fn resolve_string(
        &self,
        request: Request<v1::ResolveStringRequest>,
    ) -> Result<Response<v1::ResolveStringResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV1,
            string,
            v1_response!(ResolveStringResponse)
        )
    }

    async fn resolve_float(
        &self,
        request: Request<v1::ResolveFloatRequest>,
    ) -> Result<Response<v1::ResolveFloatResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV1,
            float,
            v1_response!(ResolveFloatResponse)
        )
    }

    async fn resolve_int(
        &self,
        request: Request<v1::ResolveIntRequest>,
    ) -> Result<Response<v1::ResolveIntResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV1,
            int,
            v1_response!(ResolveIntResponse)
        )
    }

    async fn resolve_object(
        &self,
        request: Request<v1::ResolveObjectRequest>,
    ) -> Result<Response<v1::ResolveObjectResponse>, Status> {
        let build = |t: Typed<Struct>| v1::ResolveObjectResponse {
            value: t.value,
            reason: t.reason.to_owned(),
            variant: t.variant.unwrap_or_default(),
            metadata: Some(t.metadata),
        };
        unary!(self, request, Api::GrpcV1, object, build)
    }

    type EventStreamStream = EventStream<v1::EventStreamResponse>;

    async fn event_stream(
        &self,
        _request: Request<v1::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let events = self.inner.events();
        let events = futures_util::StreamExt::map(events, |e| {
            Ok(v1::EventStreamResponse {
                r#type: e.kind.to_owned(),
                data: e.data,
            })
        });
        Ok(Response::new(Box::pin(events)))
    }
}

#[tonic::async_trait]
impl v2::service_server::Service for EvaluationService {
    async fn resolve_boolean(
        &self,
        request: Request<v2::ResolveBooleanRequest>,
    ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV2,
            boolean,
            v2_response!(ResolveBooleanResponse)
        )
    }

    async fn resolve_string(
        &self,
        request: Request<v2::ResolveStringRequest>,
    ) -> Result<Response<v2::ResolveStringResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV2,
            string,
            v2_response!(ResolveStringResponse)
        )
    }

    async fn resolve_float(
        &self,
        request: Request<v2::ResolveFloatRequest>,
    ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV2,
            float,
            v2_response!(ResolveFloatResponse)
        )
    }

    async fn resolve_int(
        &self,
        request: Request<v2::ResolveIntRequest>,
    ) -> Result<Response<v2::ResolveIntResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV2,
            int,
            v2_response!(ResolveIntResponse)
        )
    }

    async fn resolve_object(
        &self,
        request: Request<v2::ResolveObjectRequest>,
    ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
        unary!(
            self,
            request,
            Api::GrpcV2,
            object,
            v2_response!(ResolveObjectResponse)
        )
    }

    type EventStreamStream = EventStream<v2::EventStreamResponse>;

    async fn event_stream(
        &self,
        _request: Request<v2::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let events = self.inner.events();
        let events = futures_util::StreamExt::map(events, |e| {
            Ok(v2::EventStreamResponse {
                r#type: e.kind.to_owned(),
                data: e.data,
            })
        });
        Ok(Response::new(Box::pin(events)))
    }
}
