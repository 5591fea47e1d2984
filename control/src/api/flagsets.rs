//! `/api/v1/environments/{env}/flagset`: the whole environment as one flagd document (export,
//! import).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, LargeJson};
use super::{AppState, Problem, with_etag};
use crate::auth::Permission;
use crate::model::Environment;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(get_flagset, put_flagset))
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

/// Replace the environment's whole flag set atomically: all valid or nothing changes.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flagset", tag = "flagsets",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    request_body(content = Object, description = "flagd flag-set document"),
    responses((status = 200, description = "The environment at its new revision", body = Environment),
               (status = 400, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn put_flagset(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    LargeJson(doc): LargeJson<Value>,
) -> Result<axum::Json<Environment>, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    Ok(axum::Json(
        state
            .store
            .replace_flagset(&caller.actor(), &env, doc, state.config.write_limits())
            .await?,
    ))
}
