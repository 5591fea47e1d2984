//! Tokens, the audit log and the fleet of sidecars.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, Json};
use super::{AppState, Problem, page_limit};
use crate::auth::{Environments, Permission, generate_secret, hash_secret};
use crate::model::{Role, TokenRecord};
use crate::store::AuditQuery;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(query_audit))
        .routes(routes!(list_sidecars))
        .routes(routes!(whoami))
}

/// Who the caller is: the name the audit log records, the role, the environments it may act on
/// (`null`: every one) and what the role allows (`read`, `write_flags`, `admin`), so a client (the
/// console) offers only what will not be refused. Any role but `sidecar`.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, description = "`{name, role, environments, permissions}`", body = Object),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn whoami(caller: Caller) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, None)?;
    let p = &caller.principal;
    let environments = match &p.environments {
        Environments::All => Value::Null,
        Environments::Only(list) => json!(list),
    };
    let permissions: Vec<&str> = [
        (Permission::Read, "read"),
        (Permission::WriteFlags, "write_flags"),
        (Permission::Admin, "admin"),
    ]
    .into_iter()
    .filter(|(perm, _)| p.role.grants(*perm))
    .map(|(_, name)| name)
    .collect();
    Ok(axum::Json(json!({
        "name": p.name,
        "role": p.role.as_str(),
        "environments": environments,
        "permissions": permissions,
    })))
}

/// Body of `POST /tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who or what the token is for (shown in the audit log).
    name: String,
    /// `admin`, `editor`, `viewer` or `sidecar`.
    role: Role,
    /// Environments the token is limited to; empty or absent means all (a sidecar token needs at
    /// least one).
    #[serde(default)]
    environments: Vec<String>,
}

impl NewToken {
    /// The checks that need no store: a name, and environments for a sidecar token.
    pub(super) fn check(&self) -> Result<(), Problem> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(Problem::bad_request("name: 1 to 200 characters, not blank"));
        }
        if self.role == Role::Sidecar && self.environments.is_empty() {
            return Err(Problem::bad_request(
                "environments: a sidecar token must name the environments it may sync",
            ));
        }
        Ok(())
    }
}

/// Create a token. The answer carries the secret as `token`: it is shown this once, never again.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])),
    request_body = NewToken,
    responses((status = 201, description = "The token record plus its secret as `token`", body = Object),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(Permission::Admin, None)?;
    body.check()?;
    for env in &body.environments {
        state.store.get_environment(env).await.map_err(|_| {
            Problem::bad_request(format!("environments: unknown environment {env:?}"))
        })?;
    }
    let secret = generate_secret();
    let record = state
        .store
        .create_token(
            Some(&caller.actor()),
            &body.name,
            body.role,
            &body.environments,
            &hash_secret(&secret),
        )
        .await?;
    let mut out = json!(record);
    out["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// List tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, description = "`{items, next_cursor}`", body = Vec<TokenRecord>),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Admin, None)?;
    let items = state.store.list_tokens().await?;
    Ok(axum::Json(json!({"items": items, "next_cursor": null})))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Token id")),
    responses((status = 200, body = TokenRecord), (status = 404, body = Problem),
               (status = 409, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<axum::Json<TokenRecord>, Problem> {
    caller.require(Permission::Admin, None)?;
    Ok(axum::Json(
        state.store.revoke_token(&caller.actor(), id).await?,
    ))
}

/// Filters of `GET /audit`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Environment key.
    environment: Option<String>,
    /// Flag (or evaluator, token) name.
    flag: Option<String>,
    /// Actor (token name, or `jwt:<sub>`).
    actor: Option<String>,
    /// The `x-request-id` of the request that made the change.
    request_id: Option<String>,
    /// RFC 3339 time: entries at or after it.
    since: Option<String>,
    /// RFC 3339 time: entries at or before it.
    until: Option<String>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    limit: Option<i64>,
}

fn parse_time(field: &str, text: &str) -> Result<i64, Problem> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            Problem::bad_request(format!("{field}: expected an RFC 3339 time, got {text:?}"))
        })
}

/// Query the audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "`{items, next_cursor}`", body = Object),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn query_audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> Result<axum::Json<Value>, Problem> {
    caller.require(Permission::Read, p.environment.as_deref())?;
    if p.environment.is_none() && caller.principal.is_limited() {
        return Err(Problem::forbidden(
            "this token is limited to some environments: pass ?environment=",
        ));
    }
    let before_id = match &p.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| Problem::bad_request("cursor: not a cursor from this API"))?,
        ),
    };
    let page = state
        .store
        .audit(&AuditQuery {
            environment: p.environment,
            target: p.flag,
            actor: p.actor,
            request_id: p.request_id,
            since: p
                .since
                .as_deref()
                .map(|t| parse_time("since", t))
                .transpose()?,
            until: p
                .until
                .as_deref()
                .map(|t| parse_time("until", t))
                .transpose()?,
            before_id,
            limit: page_limit(p.limit),
            max_bytes: Some(state.config.max_audit_page_bytes),
        })
        .await?;
    Ok(axum::Json(json!(page)))
}

/// Filters of `GET /sidecars`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SidecarParams {
    /// Only the sidecars of this environment.
    environment: Option<String>,
    /// From a previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size (1 to 1000, default 100).
    limit: Option<i64>,
}

/// The fleet: every sidecar session on every replica, connected and recently disconnected (with
/// `disconnected_at`): id, environment, acked revision, lag, address, connected since.
#[utoipa::path(get, path = "/api/v1/sidecars", tag = "sidecars", security(("bearer" = [])),
    params(SidecarParams),
    responses((status = 200, description = "`{items, next_cursor}`", body = Object),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_sidecars(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(p): Query<SidecarParams>,
) -> Result<axum::Json<Value>, Problem> {
    if let Some(env) = &p.environment
        && !crate::model::is_valid_environment_key(env)
    {
        return Err(Problem::bad_request(format!(
            "environment: {env:?} is not a valid environment key"
        )));
    }
    caller.require(Permission::Read, p.environment.as_deref())?;
    let after = match &p.cursor {
        None => None,
        Some(c) => Some(
            crate::sync::fleet::Cursor::parse(c)
                .ok_or_else(|| Problem::bad_request("cursor: not a cursor this API gave"))?,
        ),
    };
    // A token scoped to environments sees only their sidecars.
    let page = crate::sync::fleet::list(
        &state.store,
        p.environment.as_deref(),
        after.as_ref(),
        page_limit(p.limit),
        state.config.fleet_stale_after,
        |env| caller.principal.allows_environment(env),
    )
    .await?;
    Ok(axum::Json(json!(page)))
}
