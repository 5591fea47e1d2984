//! `/api/v1/environments`: list, create, get, rename, delete, promote, incarnation, signing keys.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, IfMatch, Json};
use super::wait::{Wait, answer};
use super::{AppState, Problem, with_etag};
use crate::auth::Permission;
use crate::model::Environment;
use crate::store::{Rotate, SigningKeyInfo};

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_environments, create_environment))
        .routes(routes!(
            get_environment,
            update_environment,
            delete_environment
        ))
        .routes(routes!(promote))
        .routes(routes!(rotate_incarnation))
        .routes(routes!(list_signing_keys))
        .routes(routes!(rotate_signing_key))
}

/// Body of `POST /environments`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    /// Lowercase letters, digits, `-` and `_`; starts with a letter or digit; at most 63 characters.
    pub key: String,
    /// Display name.
    pub name: String,
}

/// Body of `PATCH /environments/{env}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentUpdate {
    /// New display name.
    pub name: String,
}

/// Body of `POST /environments/{env}/promote`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The environment whose flag set is replaced by this one's.
    pub to: String,
}

/// Query of `DELETE /environments/{env}`.
#[derive(Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Delete even when the environment still has flags.
    #[serde(default)]
    pub force: bool,
}

/// Checks an environment key.
pub(super) fn check_key(key: &str) -> Result<(), Problem> {
    if crate::model::is_valid_environment_key(key) {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "key: {key:?} is not a valid environment key (lowercase letters, digits, '-', '_'; \
             starting with a letter or digit; at most 63 characters)"
        )))
    }
}

pub(super) fn check_name(name: &str) -> Result<(), Problem> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Problem::bad_request(
            "name: must be 1 to 200 characters and not blank",
        ));
    }
    Ok(())
}

/// List the environments the caller may see.
#[utoipa::path(get, path = "/api/v1/environments", tag = "environments",
    security(("bearer" = [])),
    responses((status = 200, description = "Environments, by key", body = Vec<Environment>),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_environments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, Problem> {
    caller.require(Permission::Read, None)?;
    let items: Vec<Environment> = state
        .store
        .list_environments()
        .await?
        .into_iter()
        .filter(|e| caller.principal.allows_environment(&e.key))
        .collect();
    Ok(axum::Json(
        serde_json::json!({"items": items, "next_cursor": null}),
    ))
}

/// Create an environment (revision 0, no flags).
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments",
    security(("bearer" = [])), request_body = NewEnvironment,
    responses((status = 201, body = Environment), (status = 400, body = Problem),
               (status = 409, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 415, body = Problem)))]
async fn create_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<NewEnvironment>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(Permission::Admin, None)?;
    check_key(&body.key)?;
    check_name(&body.name)?;
    let env = state
        .store
        .create_environment(&caller.actor(), &body.key, &body.name)
        .await?;
    let location = format!("/api/v1/environments/{}", env.key);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(env),
    ))
}

/// One environment (`ETag`: its revision, as for its flag set).
#[utoipa::path(get, path = "/api/v1/environments/{env}", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, body = Environment, headers(("ETag" = String))), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let environment = state.store.get_environment(&env).await?;
    Ok(with_etag(environment.revision, StatusCode::OK, environment))
}

/// Rename an environment.
#[utoipa::path(patch, path = "/api/v1/environments/{env}", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    request_body = EnvironmentUpdate,
    responses((status = 200, body = Environment), (status = 400, body = Problem),
               (status = 404, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
async fn update_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Json(body): Json<EnvironmentUpdate>,
) -> Result<axum::Json<Environment>, Problem> {
    caller.require(Permission::Admin, Some(&env))?;
    check_name(&body.name)?;
    Ok(axum::Json(
        state
            .store
            .update_environment(&caller.actor(), &env, &body.name)
            .await?,
    ))
}

/// Delete an environment; refused (409) while it has flags unless `?force=true`.
#[utoipa::path(delete, path = "/api/v1/environments/{env}", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key"), DeleteQuery),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, Problem> {
    caller.require(Permission::Admin, Some(&env))?;
    state
        .store
        .delete_environment(&caller.actor(), &env, q.force)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give the environment a new incarnation (after a restore from a backup or a database failover):
/// revision, flags and history stay; every sidecar takes a Full on its next (re)connection or at
/// once if connected, since the incarnation it holds no longer matches. Tokens limited to the
/// environment keep working.
#[utoipa::path(post, path = "/api/v1/environments/{env}/incarnation", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, description = "The environment with its new incarnation", body = Environment),
               (status = 404, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
async fn rotate_incarnation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<axum::Json<Environment>, Problem> {
    caller.require(Permission::Admin, Some(&env))?;
    Ok(axum::Json(
        state
            .store
            .rotate_incarnation(&caller.actor(), &env)
            .await?,
    ))
}

/// Copy this environment's whole flag set onto another, atomically (one revision of the target).
/// With `If-Match` (the target's `ETag`: its revision, from `GET /environments/{to}` or
/// `GET /environments/{to}/flagset`), only if the target is still at that revision.
#[utoipa::path(post, path = "/api/v1/environments/{env}/promote", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Source environment key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag (revision) of the target environment being replaced"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the target environment acknowledged this write; the body then has `sync`")),
    request_body = Promotion,
    responses((status = 200, description = "The target environment", body = Environment, headers(("ETag" = String))),
               (status = 400, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn promote(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    Json(body): Json<Promotion>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    caller.require(Permission::WriteFlags, Some(&body.to))?;
    let target = state
        .store
        .promote(
            &caller.actor(),
            &env,
            &body.to,
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let revision = target.revision;
    answer(
        &state,
        wait,
        &body.to,
        revision,
        StatusCode::OK,
        Some(revision),
        target,
    )
    .await
}

/// An environment's keys for signing decisions: ids and ages, never the secrets.
#[derive(Serialize, ToSchema)]
pub struct SigningKeys {
    /// The environment key.
    pub environment: String,
    /// The environment's revision (a rotation is a revision).
    pub revision: i64,
    /// Newest first: sidecars sign with the current key and accept signatures by either.
    pub keys: Vec<SigningKeyInfo>,
}

/// The environment's keys for signing decisions (`vexil-signature`): ids and creation times.
#[utoipa::path(get, path = "/api/v1/environments/{env}/signing-keys", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, body = SigningKeys), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_signing_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<axum::Json<SigningKeys>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let environment = state.store.get_environment(&env).await?;
    let keys = state.store.signing_key_infos(&env).await?;
    Ok(axum::Json(SigningKeys {
        environment: env,
        revision: environment.revision,
        keys,
    }))
}

/// Rotate the environment's key for signing decisions: a new key signs from now on, the previous
/// one is still accepted, older ones no longer are. One revision; every sidecar receives the keys
/// in a full snapshot.
#[utoipa::path(post, path = "/api/v1/environments/{env}/signing-keys/rotate", tag = "environments",
    security(("bearer" = [])), params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, description = "The keys after the rotation", body = SigningKeys),
               (status = 404, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
async fn rotate_signing_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<axum::Json<SigningKeys>, Problem> {
    caller.require(Permission::Admin, Some(&env))?;
    let (environment, keys) = state
        .store
        .rotate_signing_key(&caller.actor(), &env, Rotate::Always)
        .await?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the rotation did not happen",
            )
        })?;
    Ok(axum::Json(SigningKeys {
        environment: env,
        revision: environment.revision,
        keys,
    }))
}
