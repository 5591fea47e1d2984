//! The admin REST API (`/api/v1`), health endpoints, metrics and the OpenAPI document.
//!
//! Every route is registered through `utoipa-axum`, so a route cannot exist without its OpenAPI
//! entry. Handlers are thin: authorize, call the store, shape the answer. Errors are problem+json.

mod admin;
mod environments;
mod evaluators;
pub mod events;
pub mod extract;
mod flags;
mod flagsets;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guards;
mod health;
mod problem;
mod proposals;
mod ui;
mod usage;
pub mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tracing::Instrument as _;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use vexil_engine::{FlagSet, Limits};

pub use problem::Problem;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::store::{Store, WriteLimits};
use crate::sync::Sidecars;

/// API settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body, in bytes (1 MiB: a flag, an evaluator or any other single item is far
    /// smaller; more is a client's mistake or abuse, refused before it is read).
    pub max_body_bytes: usize,
    /// Largest flag-set import body, in bytes (32 MiB: a whole environment's document, with room
    /// for whitespace).
    pub max_import_bytes: usize,
    /// Largest flag set an environment may hold after any write, as compact JSON (16 MiB): every
    /// sidecar receives it as one snapshot frame, whose limit is 64 MiB; a write that would cross
    /// it is refused (`422`) instead of leaving an environment no new sidecar can load.
    pub max_environment_bytes: usize,
    /// Largest page of `GET /audit`, in bytes of entries (4 MiB): an entry can hold two whole flag
    /// sets, so a page of rows alone has no useful bound.
    pub max_audit_page_bytes: usize,
    /// Flag-set limits (rule depth, flag count) enforced on every write.
    pub limits: Limits,
    /// How long a client may take to send a request's head, and separately its body: a client that
    /// sends part of a request and stalls is disconnected (head) or answered `408` (body) after it.
    pub read_timeout: std::time::Duration,
    /// Connections served at once (by the admin API, and by the webhook); one more is answered
    /// `503` and closed.
    pub max_connections: usize,
    /// A sidecar session whose replica has not vouched for it this long is read as disconnected
    /// (three sync heartbeats).
    pub fleet_stale_after: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_import_bytes: 32 << 20,
            max_environment_bytes: 16 << 20,
            max_audit_page_bytes: 4 << 20,
            limits: Limits::default(),
            read_timeout: std::time::Duration::from_secs(30),
            max_connections: vexil_http::DEFAULT_MAX_CONNECTIONS,
            fleet_stale_after: std::time::Duration::from_secs(15),
        }
    }
}

impl ApiConfig {
    /// The bounds of the listener serving the API: request-head deadline, connection cap.
    pub fn http_bounds(&self) -> vexil_http::Bounds {
        vexil_http::Bounds {
            header_timeout: self.read_timeout,
            max_connections: self.max_connections,
        }
    }

    /// The limits the store checks every write against.
    pub fn write_limits(&self) -> WriteLimits {
        WriteLimits {
            engine: self.limits,
            max_document_bytes: self.max_environment_bytes,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Token and JWT checks.
    pub auth: Authenticator,
    /// Settings.
    pub config: ApiConfig,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Sidecars connected to this replica's sync hub.
    pub sidecars: Arc<Sidecars>,
    /// Compiled flag sets for `evaluate`, by environment, with the revision and document they were
    /// compiled from.
    compiled: Mutex<HashMap<String, CompiledSet>>,
    /// Writes waiting for the fleet (`?wait=`), at most [`wait::MAX_WAITERS`].
    waiters: tokio::sync::Semaphore,
    /// Open change streams, at most [`events::MAX_STREAMS`].
    streams: Arc<tokio::sync::Semaphore>,
    /// The change streams' pollers, one per environment followed.
    pollers: events::Pollers,
    /// Fires when the replica shuts down: change streams close (the HTTP server's drain does not
    /// wait for connections upgraded to WebSocket).
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Shared state for the API.
    pub fn new(store: Store, auth: Authenticator, config: ApiConfig, metrics: Metrics) -> Self {
        AppState {
            store,
            auth,
            config,
            metrics: Arc::new(metrics),
            sidecars: Arc::new(Sidecars::new()),
            compiled: Mutex::new(HashMap::new()),
            waiters: tokio::sync::Semaphore::new(wait::MAX_WAITERS),
            streams: Arc::new(tokio::sync::Semaphore::new(events::MAX_STREAMS)),
            pollers: events::Pollers::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Vexil control API", description = "Environments, flags, evaluators, tokens and audit log of Vexil, a flagd-compatible feature-flag system."),
    modifiers(&BearerAuth),
    tags(
        (name = "environments"), (name = "flags"), (name = "evaluators"), (name = "flagsets"),
        (name = "tokens"), (name = "audit"), (name = "sidecars"), (name = "events"), (name = "usage"), (name = "guards"),
        (name = "operations")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route (each one is registered with its OpenAPI entry).
fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(environments::routes())
        .merge(flags::routes())
        .merge(proposals::routes())
        .merge(evaluators::routes())
        .merge(flagsets::routes())
        .merge(guards::routes())
        .merge(events::routes())
        .merge(usage::routes())
        .merge(admin::routes())
        .merge(health::routes())
}

/// The router: the documented routes (`/openapi.json` among them), problem+json for every error.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = documented_routes().split_for_parts();
    router
        .merge(ui::routes())
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(axum::middleware::from_fn(problem_everywhere))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .with_state(state)
}

/// The OpenAPI document describing exactly the router's routes (served as `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    OPENAPI
        .get_or_init(|| documented_routes().split_for_parts().1)
        .clone()
}

/// The document, built once.
static OPENAPI: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();

/// Turns an error response that is not problem+json yet (axum's own: 405, unparsable path or query
/// parameters) into one, keeping its status, its text as `detail`, and its headers (`Allow`).
async fn problem_everywhere(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut problem = Problem::new(status, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    problem
}

/// Request ids for requests that come without one.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id: u128 = rand::random();
        HeaderValue::from_str(&format!("{id:032x}"))
            .ok()
            .map(RequestId::new)
    }
}

/// The backstop of every request on PostgreSQL: its body's read timeout plus twice the statement
/// timeout (a read and a write), else `503`. Writes have their own deadline; this bounds the reads
/// (authentication's token lookup included) on a link that goes silent in the middle of a query,
/// which the server's own timeout cannot end and TCP would end only after many minutes.
async fn deadline(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(store) = state.store.statement_deadline() else {
        return next.run(req).await;
    };
    let limit = state.config.read_timeout + store * 2;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(
                ?limit,
                "a request did not finish in time: the database is not answering"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store did not answer within {limit:?}"),
            )
            .into_response()
        }
    }
}

/// Records each request in the metrics and the trace.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    // The request's span: the root of its trace (the write transaction is a child).
    let span = tracing::info_span!("http.request", otel.name = %format!("{method} {route}"),
        otel.kind = "server", http.request.method = %method, http.route = %route,
        http.response.status_code = tracing::field::Empty);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(&route, &method, status, elapsed.as_secs_f64());
    if status == 503 || status == 500 {
        state.metrics.store_error();
    }
    tracing::debug!(%route, %method, status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "request");
    response
}

/// The `ETag` of a version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// A JSON answer with `status` and the `ETag` of `version`.
fn with_etag(version: i64, status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// A cached compilation: revision, document, compiled set.
type CompiledSet = (i64, serde_json::Value, Arc<FlagSet>);

/// The compiled flag set of `env` at its current revision (cached). The cache is checked against the
/// document, not only the revision: an environment deleted and created again counts from 0 again.
async fn compiled_set(state: &AppState, env: &str) -> Result<(i64, Arc<FlagSet>), Problem> {
    let (environment, doc) = state.store.export(env).await?;
    if let Some((rev, cached_doc, set)) = state.compiled.lock().expect("cache").get(env)
        && *rev == environment.revision
        && *cached_doc == doc
    {
        return Ok((*rev, set.clone()));
    }
    let set = FlagSet::compile(
        &doc,
        &vexil_engine::CompileOptions {
            limits: state.config.limits,
            mode: vexil_engine::Mode::Lenient,
        },
    )
    .map_err(|e| Problem::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let set = Arc::new(set);
    state
        .compiled
        .lock()
        .expect("cache")
        .insert(env.to_string(), (environment.revision, doc, set.clone()));
    Ok((environment.revision, set))
}

/// Clamps a requested page size.
fn page_limit(requested: Option<i64>) -> i64 {
    requested.unwrap_or(100).clamp(1, 1000)
}
