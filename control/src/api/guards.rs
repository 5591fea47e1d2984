//! Guards of flags (docs/guards.md, ADR 0035): `/api/v1/environments/{env}/guards` and
//! `/api/v1/environments/{env}/flags/{key}/guard`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, Json};
use super::{AppState, Problem};
use crate::auth::Permission;
use crate::guards::GuardSpec;
use crate::store::GuardRecord;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_guards))
        .routes(routes!(get_guard, put_guard, delete_guard))
        .routes(routes!(reset_guard))
}

/// Every guard of an environment, with its state and figures.
#[utoipa::path(get, path = "/api/v1/environments/{env}/guards", tag = "guards",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key")),
    responses((status = 200, body = Vec<GuardRecord>), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_guards(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
) -> Result<axum::Json<Vec<GuardRecord>>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    Ok(axum::Json(state.store.guards(&env).await?))
}

/// A flag's guard: its definition, state (`armed` or `tripped`), each arm's counts since it was
/// armed, the latest look of its test, and the figures of its trip.
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags/{key}/guard", tag = "guards",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, body = GuardRecord),
               (status = 404, description = "No such environment, or the flag has no guard", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_guard(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<axum::Json<GuardRecord>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    Ok(axum::Json(state.store.guard(&env, &key).await?))
}

/// Arm a guard on a flag, or replace its guard (counted again from zero). The definition is
/// checked against the flag: its variants exist, the threshold, percentile, sample and alpha are
/// in range. The environment's sidecars start reporting the outcomes of the flag's decisions.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flags/{key}/guard", tag = "guards",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    request_body = GuardSpec,
    responses((status = 200, description = "The guard, armed", body = GuardRecord),
               (status = 400, description = "The definition does not fit the flag: the field and why", body = Problem),
               (status = 404, description = "No such environment or flag", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn put_guard(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    Json(spec): Json<GuardSpec>,
) -> Result<axum::Json<GuardRecord>, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    Ok(axum::Json(
        state
            .store
            .put_guard(&caller.actor(), &env, &key, spec)
            .await?,
    ))
}

/// Remove a flag's guard (`204`); its sidecars stop reporting the flag's outcomes.
#[utoipa::path(delete, path = "/api/v1/environments/{env}/flags/{key}/guard", tag = "guards",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 204), (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_guard(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    state
        .store
        .delete_guard(&caller.actor(), &env, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Arm a tripped guard again, from zero (its counts and looks are cleared). The flag stays as the
/// trip left it: change the flag to resume the rollout.
#[utoipa::path(post, path = "/api/v1/environments/{env}/flags/{key}/guard/reset", tag = "guards",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, description = "The guard, armed", body = GuardRecord),
               (status = 404, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn reset_guard(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<axum::Json<GuardRecord>, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    Ok(axum::Json(
        state.store.reset_guard(&caller.actor(), &env, &key).await?,
    ))
}
