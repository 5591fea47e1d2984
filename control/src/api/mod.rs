//! The admin REST API (`/api/v1`), health endpoints, metrics and the OpenAPI document.
//!
//! Every route is registered through `utoipa-axum`, so a route cannot exist without its OpenAPI
//! entry. Handlers are thin: authorize, call the store, shape the answer. Errors are problem+json.

mod admin;
mod environments;
pub mod extract;
mod flags;
mod health;
mod problem;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use vexil_engine::{FlagSet, Limits};

pub use problem::Problem;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::store::Store;

/// API settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest request body, in bytes (design §9: 1 MiB).
    pub max_body_bytes: usize,
    /// Largest flag-set import, in bytes (design §9: 32 MiB).
    pub max_import_bytes: usize,
    /// Flag-set limits enforced on every write.
    pub limits: Limits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1 << 20,
            max_import_bytes: 32 << 20,
            limits: Limits::default(),
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
    pub metrics: Metrics,
    /// Compiled flag sets for `evaluate`, by environment, with their revision.
    compiled: Mutex<HashMap<String, (i64, Arc<FlagSet>)>>,
}

impl AppState {
    /// Shared state for the API.
    pub fn new(store: Store, auth: Authenticator, config: ApiConfig, metrics: Metrics) -> Self {
        AppState {
            store,
            auth,
            config,
            metrics,
            compiled: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Vexil control API", description = "Environments, flags, evaluators, tokens and audit log of Vexil, a flagd-compatible feature-flag system."),
    modifiers(&BearerAuth),
    tags(
        (name = "environments"), (name = "flags"), (name = "evaluators"), (name = "flagsets"),
        (name = "tokens"), (name = "audit"), (name = "sidecars"), (name = "operations")
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

/// The router and the OpenAPI document describing exactly its routes.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(environments::routes())
        .merge(flags::routes())
        .merge(admin::routes())
        .merge(health::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .with_state(state)
}

/// The OpenAPI document (for tests and tooling).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi())
        .merge(environments::routes())
        .merge(flags::routes())
        .merge(admin::routes())
        .merge(health::routes())
        .split_for_parts();
    doc
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

/// Records each request in the metrics and the trace.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
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

/// The compiled flag set of `env` at its current revision (cached per revision).
async fn compiled_set(state: &AppState, env: &str) -> Result<(i64, Arc<FlagSet>), Problem> {
    let (environment, doc) = state.store.export(env).await?;
    if let Some((rev, set)) = state.compiled.lock().expect("cache").get(env)
        && *rev == environment.revision
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
        .insert(env.to_string(), (environment.revision, set.clone()));
    Ok((environment.revision, set))
}

/// Clamps a requested page size.
fn page_limit(requested: Option<i64>) -> i64 {
    requested.unwrap_or(100).clamp(1, 1000)
}
