//! `/api/v1/environments/{env}/flags` and the evaluation preview of one environment.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vexil_engine::EvaluationContext;

use super::extract::{Caller, IfMatch, Json};
use super::wait::{Wait, answer};
use super::{AppState, Problem, compiled_set, page_limit, with_etag};
use crate::auth::Permission;
use crate::model::FlagRecord;
use crate::store::FlagQuery;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_flags))
        .routes(routes!(get_flag, put_flag, patch_flag, delete_flag))
        .routes(routes!(get_schema, put_schema, delete_schema))
        .routes(routes!(evaluate))
        .routes(routes!(validate_flag))
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

/// A flag's key must be usable as a key of the `vexil-flags` header, an RFC 9651 structured-field
/// dictionary (docs/adr/0012-vexil-flags-structured-field-dictionary.md): a lowercase letter or `*` first, then lowercase letters, digits, `_`, `-`, `.`, `*`.
pub(super) fn check_flag_key(key: &str) -> Result<(), Problem> {
    match vexil_engine::header_key_problem(key) {
        None => Ok(()),
        Some(problem) => Err(Problem::bad_request(format!("key: {problem}"))),
    }
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
           ("If-Match" = Option<String>, Header, description = "ETag of the version being replaced"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    request_body(content = Object, description = "flagd flag definition"),
    responses((status = 201, body = FlagRecord), (status = 200, body = FlagRecord),
               (status = 400, description = "Invalid definition, or a limit the environment would exceed: every problem with its JSON path", body = Problem),
               (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
async fn put_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    Json(definition): Json<Value>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_flag_key(&key)?;
    let saved = state
        .store
        .put_flag(
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

/// The kill switch: set a flag's state in one call.
#[utoipa::path(patch, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    request_body = StatePatch,
    responses((status = 200, body = FlagRecord), (status = 400, body = Problem), (status = 404, body = Problem),
               (status = 412, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn patch_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    Json(body): Json<StatePatch>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let saved = state
        .store
        .set_flag_state(
            &caller.actor(),
            &env,
            &key,
            &body.state,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let version = saved.record.version;
    answer(
        &state,
        wait,
        &env,
        saved.revision,
        StatusCode::OK,
        Some(version),
        saved.record,
    )
    .await
}

/// Delete a flag (`204`; with `?wait=`, `200` and `{revision, sync}`).
#[utoipa::path(delete, path = "/api/v1/environments/{env}/flags/{key}", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    responses((status = 204), (status = 200, description = "With `?wait=`: `{revision, sync}`", body = Object),
               (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let revision = state
        .store
        .delete_flag(
            &caller.actor(),
            &env,
            &key,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let body = json!({"revision": revision});
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

/// Check a flag definition without writing it: `200 {"valid": true}` when `PUT .../flags/{key}`
/// with this body would be accepted now (`If-Match` aside), else the problem that write would get,
/// every error with its JSON path. For editors that validate as the user types.
#[utoipa::path(post, path = "/api/v1/environments/{env}/flags/{key}/validate", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    request_body(content = Object, description = "flagd flag definition"),
    responses((status = 200, description = "`{\"valid\": true}`", body = Object),
               (status = 400, description = "Invalid definition: every problem with its JSON path", body = Problem),
               (status = 422, description = "A limit the environment would exceed", body = Problem),
               (status = 404, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 413, body = Problem)))]
async fn validate_flag(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    Json(definition): Json<Value>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    check_flag_key(&key)?;
    state
        .store
        .check_flag(&env, &key, definition, state.config.write_limits())
        .await?;
    Ok(axum::Json(json!({"valid": true})))
}

/// A flag's JSON Schema (docs/adr/0036-json-schemas-beside-flags.md).
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags/{key}/schema", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "The JSON Schema", body = Object),
               (status = 404, description = "No such environment, or the flag has no schema", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    match state.store.flag_schema(&env, &key).await? {
        Some(schema) => Ok(axum::Json(schema)),
        None => Err(Problem::not_found(format!(
            "a JSON Schema of flag {key:?} in environment {env:?} not found"
        ))),
    }
}

/// Give a flag a JSON Schema that every variant must match, or replace it: from then on every write
/// that leaves the flag with a variant that does not match is refused (`422`). The schema is
/// checked (its meta-schema, at most 64 KiB and 32 levels deep, no `$ref` outside itself), and so
/// are the flag's current variants against it. The flag need not exist yet.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flags/{key}/schema", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    request_body(content = Object, description = "A JSON Schema (draft 2020-12 unless `$schema` names another draft)"),
    responses((status = 200, description = "The JSON Schema as stored", body = Object),
               (status = 400, body = Problem), (status = 404, body = Problem),
               (status = 422, description = "The schema is invalid, or a variant of the flag does not match it: every problem with its JSON path", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
async fn put_schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    Json(schema): Json<Value>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_flag_key(&key)?;
    state
        .store
        .set_flag_schema(&caller.actor(), &env, &key, Some(schema.clone()))
        .await?;
    Ok(axum::Json(schema))
}

/// Remove a flag's JSON Schema (`204`).
#[utoipa::path(delete, path = "/api/v1/environments/{env}/flags/{key}/schema", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 204), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    state
        .store
        .set_flag_schema(&caller.actor(), &env, &key, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
