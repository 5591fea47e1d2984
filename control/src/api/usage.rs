//! Flag usage, from the counts sidecars report (docs/usage.md): per flag the share of each variant
//! over a window, and the flags to look at for removal: never evaluated in the window, or
//! targeted but serving one variant all along ("constant but still called").

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::Caller;
use super::{AppState, Problem, compiled_set};
use crate::auth::Permission;
use crate::model::{Millis, now_millis, rfc3339};
use crate::store::{FlagUsageRow, HOUR_MS, hour_of};

/// The longest window a report covers (days); the retention of the usage (`[retention]
/// usage_max_age_days`) may keep less.
pub const MAX_DAYS: u32 = 400;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(usage_report))
        .routes(routes!(stale_flags))
}

/// The window of a usage query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    /// The window: the last this many days (1 to 400; the hour in progress included). Default 7
    /// for the report, 30 for stale flags.
    days: Option<u32>,
}

impl WindowParams {
    fn days(&self, default: u32) -> Result<u32, Problem> {
        match self.days.unwrap_or(default) {
            d @ 1..=MAX_DAYS => Ok(d),
            d => Err(Problem::bad_request(format!(
                "days: 1 to {MAX_DAYS}, got {d}"
            ))),
        }
    }
}

/// The first hour of a window of `days` days ending now.
fn since(days: u32, now: Millis) -> Millis {
    hour_of(now - i64::from(days) * 24 * HOUR_MS)
}

/// One variant's part of a flag's evaluations.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct VariantShare {
    /// The variant; `null` for evaluations that gave no value (disabled, an error, no default
    /// variant: the application used its code default).
    variant: Option<String>,
    /// Evaluations in the window.
    evaluations: i64,
    /// Its share of the flag's evaluations (0 to 1).
    share: f64,
}

/// One flag's usage in the window.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct FlagUsage {
    /// The flag key.
    flag: String,
    /// The flag has a targeting rule.
    targeted: bool,
    /// Evaluations in the window, all variants.
    evaluations: i64,
    /// The start of the latest hour with evaluations in the window (RFC 3339); `null`: none.
    last_evaluated: Option<String>,
    /// By variant, most evaluated first.
    variants: Vec<VariantShare>,
}

/// `GET .../usage`.
#[derive(Serialize, ToSchema, Debug)]
pub struct UsageReport {
    /// The environment.
    environment: String,
    /// The window in days.
    days: u32,
    /// The first hour of the window (RFC 3339).
    since: String,
    /// Every flag of the environment, by key (flags never evaluated too, with no variants).
    flags: Vec<FlagUsage>,
}

/// A flag not evaluated in the window.
#[derive(Serialize, ToSchema, Debug)]
pub struct UnusedFlag {
    /// The flag key.
    flag: String,
    /// When the flag was created (RFC 3339): a flag younger than the window had less time to be
    /// called.
    created_at: Option<String>,
    /// The start of the latest hour it was evaluated in, before the window (as far back as the
    /// usage is kept); `null`: never.
    last_evaluated: Option<String>,
}

/// A targeted flag that served one variant only in the window.
#[derive(Serialize, ToSchema, Debug)]
pub struct ConstantFlag {
    /// The flag key.
    flag: String,
    /// The one variant served; `null`: no value all along.
    variant: Option<String>,
    /// Evaluations in the window.
    evaluations: i64,
}

/// `GET .../usage/stale`.
#[derive(Serialize, ToSchema, Debug)]
pub struct StaleFlags {
    /// The environment.
    environment: String,
    /// The window in days.
    days: u32,
    /// The first hour of the window (RFC 3339).
    since: String,
    /// Flags no sidecar evaluated in the window, by key (flags without any count included).
    unused: Vec<UnusedFlag>,
    /// Flags with a targeting rule whose every evaluation in the window gave the same variant, by
    /// key: candidates for removal (the rule decides nothing).
    constant: Vec<ConstantFlag>,
}

/// The window's rows by flag.
fn by_flag(rows: Vec<FlagUsageRow>) -> BTreeMap<String, Vec<FlagUsageRow>> {
    let mut flags: BTreeMap<String, Vec<FlagUsageRow>> = BTreeMap::new();
    for row in rows {
        flags.entry(row.flag.clone()).or_default().push(row);
    }
    flags
}

/// The usage report of an environment: per flag, the share of each variant over the window.
#[utoipa::path(get, path = "/api/v1/environments/{env}/usage", tag = "usage",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), WindowParams),
    responses((status = 200, body = UsageReport), (status = 400, body = Problem),
               (status = 404, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
async fn usage_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Query(p): Query<WindowParams>,
) -> Result<axum::Json<UsageReport>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let days = p.days(7)?;
    let since = since(days, now_millis());
    let (_, set) = compiled_set(&state, &env).await?;
    let mut rows = by_flag(state.store.usage(&env, since).await?);
    let flags = set
        .flags()
        .map(|flag| {
            let rows = rows.remove(flag.key()).unwrap_or_default();
            let evaluations: i64 = rows
                .iter()
                .map(|r| r.evaluations)
                .fold(0, i64::saturating_add);
            let last = rows.iter().map(|r| r.last_hour).max();
            let mut variants: Vec<VariantShare> = rows
                .into_iter()
                .map(|r| VariantShare {
                    share: if evaluations > 0 {
                        r.evaluations as f64 / evaluations as f64
                    } else {
                        0.0
                    },
                    variant: r.variant,
                    evaluations: r.evaluations,
                })
                .collect();
            variants.sort_by(|a, b| {
                b.evaluations
                    .cmp(&a.evaluations)
                    .then_with(|| a.variant.cmp(&b.variant))
            });
            FlagUsage {
                flag: flag.key().to_string(),
                targeted: flag.is_targeted(),
                evaluations,
                last_evaluated: last.map(rfc3339),
                variants,
            }
        })
        .collect();
    Ok(axum::Json(UsageReport {
        environment: env,
        days,
        since: rfc3339(since),
        flags,
    }))
}

/// Flags to look at for removal: not evaluated by any sidecar in the window, or targeted and
/// serving one variant all along.
#[utoipa::path(get, path = "/api/v1/environments/{env}/usage/stale", tag = "usage",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), WindowParams),
    responses((status = 200, body = StaleFlags), (status = 400, body = Problem),
               (status = 404, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
async fn stale_flags(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(env): Path<String>,
    Query(p): Query<WindowParams>,
) -> Result<axum::Json<StaleFlags>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let days = p.days(30)?;
    let since = since(days, now_millis());
    let (_, set) = compiled_set(&state, &env).await?;
    let rows = by_flag(state.store.usage(&env, since).await?);
    let last = state.store.last_usage(&env).await?;
    let created = state.store.flag_creation_times(&env).await?;
    let mut unused = Vec::new();
    let mut constant = Vec::new();
    for flag in set.flags() {
        let key = flag.key();
        let served: Vec<&FlagUsageRow> = rows
            .get(key)
            .map(|r| r.iter().filter(|r| r.evaluations > 0).collect())
            .unwrap_or_default();
        match served.as_slice() {
            [] => unused.push(UnusedFlag {
                flag: key.to_string(),
                created_at: created.get(key).copied().map(rfc3339),
                last_evaluated: last.get(key).copied().map(rfc3339),
            }),
            [one] if flag.is_targeted() => constant.push(ConstantFlag {
                flag: key.to_string(),
                variant: one.variant.clone(),
                evaluations: one.evaluations,
            }),
            _ => {}
        }
    }
    Ok(axum::Json(StaleFlags {
        environment: env,
        days,
        since: rfc3339(since),
        unused,
        constant,
    }))
}
