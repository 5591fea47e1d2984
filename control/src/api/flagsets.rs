//! `/api/v1/environments/{env}/flagset`: the whole environment as one flagd document (export,
//! import); `/api/v1/environments/{env}/bootstrap`: the same as a sidecar's persisted-snapshot
//! file, for its `--bootstrap-file`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, IfMatch, LargeJson};
use super::wait::{Wait, answer};
use super::{AppState, Problem, with_etag};
use crate::auth::Permission;
use crate::model::Environment;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(get_flagset, put_flagset))
        .routes(routes!(get_bootstrap))
}

/// Export the environment as one flagd flag-set document (`ETag`: the revision).
#[utoipa::path(get, path = "/api/v1/environments/{env}/flagset", tag = "flagsets",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, description = "flagd document", body = Object, headers(("ETag" = String), ("Vexil-Revision" = i64))),
               (status = 404, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_flagset(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let (environment, doc) = state.store.export(&env).await?;
    let mut response = with_etag(environment.revision, StatusCode::OK, doc);
    response
        .headers_mut()
        .insert("vexil-revision", HeaderValue::from(environment.revision));
    Ok(response)
}

/// Export the environment as a sidecar bootstrap file: the persisted-snapshot format
/// (`vexil-snapshot/1`: a JSON header line with the environment, revision and SHA-256 of the body,
/// then the flagd document), for `vexil-proxy --bootstrap-file`.
#[utoipa::path(get, path = "/api/v1/environments/{env}/bootstrap", tag = "flagsets",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, description = "Persisted-snapshot file (vexil-snapshot/1)", content_type = "application/octet-stream", body = String,
                headers(("ETag" = String), ("Vexil-Revision" = i64))),
               (status = 404, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_bootstrap(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let (environment, doc) = state.store.export(&env).await?;
    let revision = environment.revision;
    let body = vexil_proto::snapshot_file::encode_incarnation(
        &env,
        &environment.incarnation,
        revision,
        &doc.to_string(),
        vexil_proto::snapshot_file::now_ms(),
    );
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"snapshot-{env}.json\"")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&super::etag(revision)) {
        headers.insert(axum::http::header::ETAG, v);
    }
    headers.insert("vexil-revision", HeaderValue::from(revision));
    Ok(response)
}

/// Replace the environment's whole flag set atomically: all valid or nothing changes. With
/// `If-Match` (the `ETag` of `GET .../flagset`: the revision), only if the environment is still at
/// that revision.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flagset", tag = "flagsets",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag of the flag set (its revision) being replaced"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    request_body(content = Object, description = "flagd flag-set document"),
    responses((status = 200, description = "The environment at its new revision", body = Environment, headers(("ETag" = String))),
               (status = 400, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 413, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn put_flagset(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    LargeJson(doc): LargeJson<Value>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let environment = state
        .store
        .replace_flagset(
            &caller.actor(),
            &env,
            doc,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let revision = environment.revision;
    answer(
        &state,
        wait,
        &env,
        revision,
        StatusCode::OK,
        Some(revision),
        environment,
    )
    .await
}
