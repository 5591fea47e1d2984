//! Flags, evaluators (segments), whole flag sets and evaluation previews of one environment.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vexil_engine::EvaluationContext;

use super::extract::{Caller, IfMatch, Json, LargeJson};
use super::{AppState, Problem, compiled_set, etag, page_limit};
use crate::auth::Permission;
use crate::model::{Environment, EvaluatorRecord, FlagRecord};
use crate::store::FlagQuery;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_flags))
        .routes(routes!(get_flag, put_flag, patch_flag, delete_flag))
        .routes(routes!(list_evaluators))
        .routes(routes!(get_evaluator, put_evaluator, delete_evaluator))
        .routes(routes!(get_flagset, put_flagset))
        .routes(routes!(evaluate))
}

/// Filters of `GET .../flags`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlagListQuery {
    /// `ENABLED` or `DISABLED`.
    state: Option<String>,
    /// Key prefix.
    prefix: Option<String>,
    /// `key:value`: flags whose metadata has this value under this key.
    metadata: Option<String>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    limit: Option<i64>,
}

/// Body of `PATCH .../flags/{key}`: the kill switch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatePatch {
    /// `ENABLED` or `DISABLED`.
    pub(super) state: String,
}

/// Body of `POST .../evaluate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// The evaluation context (attributes, `targetingKey`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(super) context: Value,
    /// Evaluate only this flag (default: all flags).
    pub(super) flag: Option<String>,
}

fn with_etag(version: i64, status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// A flag's key must be usable as a header dictionary key
/// (docs/adr/0012-vexil-flags-structured-field-dictionary.md).
pub(super) fn check_flag_key(key: &str) -> Result<(), Problem> {
    match vexil_engine::header_key_problem(key) {
        None => Ok(()),
        Some(problem) => Err(Problem::bad_request(format!("key: {problem}"))),
    }
}

/// An evaluator's name: 1 to 200 characters.
pub(super) fn check_evaluator_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() || key.len() > 200 {
        return Err(Problem::bad_request("key: 1 to 200 characters"));
    }
    Ok(())
}

/// List flags, filtered and paginated by key.
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags", tag = "flags",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key"), FlagListQuery),
    responses((status = 200, description = "`{items, next_cursor}`", body = Object),
               (status = 400, body = Problem), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_flags(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Query(q): Query<FlagListQuery>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let metadata = match q.metadata {
        None => None,
        Some(m) => match m.split_once(':') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => return Err(Problem::bad_request("metadata: expected key:value")),
        },
    };
    if let Some(s) = &q.state
        && !matches!(s.as_str(), "ENABLED" | "DISABLED")
    {
        return Err(Problem::bad_request("state: expected ENABLED or DISABLED"));
    }
    let page = state
        .store
        .list_flags(
            &env,
            &FlagQuery {
                state: q.state,
                prefix: q.prefix,
                metadata,
                after: q.cursor,
                limit: page_limit(q.limit),
            },
        )
        .await?;
    Ok(axum::Json(json!(page)))
}

/// One flag, with its `ETag`.
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, body = FlagRecord, headers(("ETag" = String))),
               (status = 404, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let flag = state.store.get_flag(&env, &key).await?;
    Ok(with_etag(flag.version, StatusCode::OK, flag))
}

/// Create or replace a flag with its flagd definition. Replacing requires `If-Match`.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced")),
    request_body(content = Object, description = "flagd flag definition"),
    responses((status = 201, body = FlagRecord), (status = 200, body = FlagRecord),
               (status = 400, description = "Invalid definition: every problem with its JSON path", body = Problem),
               (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
async fn put_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    Json(definition): Json<Value>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_flag_key(&key)?;
    let (flag, created) = state
        .store
        .put_flag(
            &caller.actor(),
            &env,
            &key,
            definition,
            precondition,
            state.config.limits,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(flag.version, status, flag))
}

/// The kill switch: set a flag's state in one call.
#[utoipa::path(patch, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag")),
    request_body = StatePatch,
    responses((status = 200, body = FlagRecord), (status = 400, body = Problem), (status = 404, body = Problem),
               (status = 412, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn patch_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    Json(body): Json<StatePatch>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let flag = state
        .store
        .set_flag_state(&caller.actor(), &env, &key, &body.state, precondition)
        .await?;
    Ok(with_etag(flag.version, StatusCode::OK, flag))
}

/// Delete a flag.
#[utoipa::path(delete, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
) -> Result<StatusCode, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    state
        .store
        .delete_flag(&caller.actor(), &env, &key, precondition)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced")),
    request_body(content = Object, description = "JsonLogic rule"),
    responses((status = 201, body = EvaluatorRecord), (status = 200, body = EvaluatorRecord),
               (status = 400, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 428, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn put_evaluator(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    Json(definition): Json<Value>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_evaluator_key(&key)?;
    let (e, created) = state
        .store
        .put_evaluator(
            &caller.actor(),
            &env,
            &key,
            definition,
            precondition,
            state.config.limits,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(e.version, status, e))
}

/// Delete an evaluator; refused (409) while a flag uses it, with the list of users.
#[utoipa::path(delete, path = "/api/v1/environments/{env}/evaluators/{key}", tag = "evaluators",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Evaluator name"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem),
               (status = 412, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_evaluator(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
) -> Result<StatusCode, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    state
        .store
        .delete_evaluator(&caller.actor(), &env, &key, precondition)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
            .replace_flagset(&caller.actor(), &env, doc, state.config.limits)
            .await?,
    ))
}

/// Preview: evaluate one flag or all flags for a context, with the engine's full details.
#[utoipa::path(post, path = "/api/v1/environments/{env}/evaluate", tag = "flags",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    request_body = EvaluateRequest,
    responses((status = 200, description = "`{environment, revision, results: [...]}`", body = Object),
               (status = 400, body = Problem), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn evaluate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Json(body): Json<EvaluateRequest>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let ctx = EvaluationContext::from_value(body.context)
        .map_err(|_| Problem::bad_request("context: must be a JSON object"))?;
    let (revision, set) = compiled_set(&state, &env).await?;
    let results: Vec<Value> = match &body.flag {
        Some(key) => vec![set.resolve(key, &ctx).to_json(key)],
        None => set
            .resolve_all(&ctx)
            .map(|(f, r)| r.to_json(f.key()))
            .collect(),
    };
    Ok(axum::Json(
        json!({"environment": env, "revision": revision, "results": results}),
    ))
}
