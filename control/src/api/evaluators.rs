//! `/api/v1/environments/{env}/evaluators`: flagd's `$evaluators`, shared rules (segments).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, IfMatch, Json};
use super::wait::{Wait, answer};
use super::{AppState, Problem, with_etag};
use crate::auth::Permission;
use crate::model::EvaluatorRecord;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_evaluators))
        .routes(routes!(get_evaluator, put_evaluator, delete_evaluator))
}

/// An evaluator's name: 1 to 200 characters.
pub(super) fn check_evaluator_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > 200 {
        return Err(Problem::bad_request("key: 1 to 200 characters"));
    }
    Ok(())
}

/// List evaluators (segments).
#[utoipa::path(get, path = "/api/v1/environments/{env}/evaluators", tag = "evaluators",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, description = "`{items, next_cursor}`", body = Object),
               (status = 404, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_evaluators(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let items = state.store.list_evaluators(&env).await?;
    Ok(axum::Json(json!({"items": items, "next_cursor": null})))
}

/// One evaluator, with its `ETag`.
#[utoipa::path(get, path = "/api/v1/environments/{env}/evaluators/{key}", tag = "evaluators",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Evaluator name")),
    responses((status = 200, body = EvaluatorRecord), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_evaluator(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let e = state.store.get_evaluator(&env, &key).await?;
    Ok(with_etag(e.version, StatusCode::OK, e))
}

/// Create or replace an evaluator (a JsonLogic rule). Every flag must stay valid.
#[utoipa::path(put, path = "/api/v1/environments/{env}/evaluators/{key}", tag = "evaluators",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Evaluator name"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    request_body(content = Object, description = "JsonLogic rule"),
    responses((status = 201, body = EvaluatorRecord), (status = 200, body = EvaluatorRecord),
               (status = 400, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 428, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn put_evaluator(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    Json(definition): Json<Value>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_evaluator_key(&key)?;
    let saved = state
        .store
        .put_evaluator(
            &caller.actor(),
            &env,
            &key,
            definition,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let version = saved.record.version;
    answer(
        &state,
        wait,
        &env,
        saved.revision,
        status,
        Some(version),
        saved.record,
    )
    .await
}

/// Delete an evaluator; refused (409) while a flag uses it, with the list of users.
#[utoipa::path(delete, path = "/api/v1/environments/{env}/evaluators/{key}", tag = "evaluators",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Evaluator name"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    responses((status = 204), (status = 200, description = "With `?wait=`: `{revision, sync}`", body = Object),
               (status = 404, body = Problem),
               (status = 409, description = "Still referenced: `detail` names the users, `errors` what would break", body = Problem),
               (status = 412, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_evaluator(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let revision = state
        .store
        .delete_evaluator(
            &caller.actor(),
            &env,
            &key,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let body = serde_json::json!({"revision": revision});
    answer(
        &state,
        wait,
        &env,
        revision,
        StatusCode::NO_CONTENT,
        None,
        body,
    )
    .await
}
