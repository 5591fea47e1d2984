//! `/api/v1/environments/{env}/flags/{key}/proposal`: shadow evaluation (docs/shadow.md, ADR 0040).
//! A proposed definition of a flag, stored beside it and not published; the sidecars evaluate it
//! on a sample of the flag's decisions without changing any, and the comparison says how many
//! decisions it would change and from which variant to which; publishing it is one write.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Caller, IfMatch, Json};
use super::flags::check_flag_key;
use super::wait::{Wait, answer};
use super::{AppState, Problem, with_etag};
use crate::auth::Permission;
use crate::model::{now_millis, rfc3339};
use crate::store::{
    DEFAULT_SAMPLE_RATIO, MAX_COMPARISON_MINUTES, MINUTE_MS, ProposalRecord, ProposedChange,
    minute_of,
};

/// The comparison's window when none is asked for, in minutes.
const DEFAULT_MINUTES: i64 = 60;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(get_proposal, put_proposal, delete_proposal))
        .routes(routes!(comparison))
        .routes(routes!(publish))
}

/// Body of `PUT .../proposal`: the proposed definition, whole or as a new targeting rule of the
/// live flag (exactly one of `definition` and `targeting`), and the sample ratio.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalBody {
    /// The whole proposed flagd definition (`state`, `variants`, `defaultVariant`, `targeting`,
    /// `metadata`); its variants must be the live flag's, names and values.
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
    /// Only a new targeting rule: the proposal is the live flag's definition with this
    /// `targeting` (`{}` or `null`: no rule, the default variant for everyone).
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "present")]
    pub targeting: Option<Value>,
    /// The share of the flag's decisions the sidecars evaluate the proposal on, in (0, 1];
    /// default 0.01.
    pub sample_ratio: Option<f64>,
}

/// `Some(null)` for a `targeting` given as `null` (as opposed to absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The window of a comparison.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ComparisonParams {
    /// The last this many minutes (1 to 10080, the minute in progress included); default 60.
    minutes: Option<i64>,
}

/// One (live, proposed) pair of variants in a comparison.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct Transition {
    /// The variant the live rule chose (what the application got); `null`: no value.
    pub from: Option<String>,
    /// The variant the proposal would have chosen; `null`: no value.
    pub to: Option<String>,
    /// `from` differs from `to`: the proposal would change these decisions.
    pub changed: bool,
    /// Sampled decisions with this pair.
    pub evaluations: i64,
    /// Their share of the sampled decisions (0 to 1).
    pub share: f64,
}

/// `GET .../proposal/comparison`: what the current proposal would have changed.
#[derive(Serialize, ToSchema, Debug)]
pub struct Comparison {
    /// The environment.
    pub environment: String,
    /// The flag.
    pub flag: String,
    /// The proposal compared (counts of earlier proposals never count).
    pub proposal: String,
    /// The proposal's sample ratio: about `samples / sample_ratio` decisions were made.
    pub sample_ratio: f64,
    /// The window in minutes.
    pub minutes: i64,
    /// The first minute of the window (RFC 3339).
    pub since: String,
    /// Decisions on which the sidecars evaluated the proposal too, in the window.
    pub samples: i64,
    /// Of those, decisions the proposal would have changed.
    pub changed: i64,
    /// `changed / samples` (0 to 1); `null` without samples.
    pub share_changed: Option<f64>,
    /// Every (live, proposed) pair seen, changed ones first, most frequent first.
    pub transitions: Vec<Transition>,
    /// The comparison in one sentence, e.g. "would change 30.2 % of decisions in the last 60
    /// minutes (1,000 sampled): off → on 30.2 %".
    pub summary: String,
}

/// The comparison of `rows` (pairs and counts) as the API shows it.
fn compare(
    environment: &str,
    proposal: &ProposalRecord,
    minutes: i64,
    since: i64,
    rows: Vec<crate::store::TransitionRow>,
) -> Comparison {
    let samples: i64 = rows.iter().map(|r| r.evaluations).sum();
    let share = |n: i64| {
        if samples > 0 {
            n as f64 / samples as f64
        } else {
            0.0
        }
    };
    let mut transitions: Vec<Transition> = rows
        .into_iter()
        .map(|r| Transition {
            changed: r.from != r.to,
            share: share(r.evaluations),
            from: r.from,
            to: r.to,
            evaluations: r.evaluations,
        })
        .collect();
    transitions.sort_by(|a, b| {
        b.changed
            .cmp(&a.changed)
            .then(b.evaluations.cmp(&a.evaluations))
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    let changed: i64 = transitions
        .iter()
        .filter(|t| t.changed)
        .map(|t| t.evaluations)
        .sum();
    let name = |v: &Option<String>| v.as_deref().unwrap_or("(no value)").to_string();
    let summary = if samples == 0 {
        format!(
            "no decision sampled in the last {minutes} minutes yet (the sidecars report every \
             minute; sample ratio {})",
            proposal.sample_ratio
        )
    } else {
        let moves: Vec<String> = transitions
            .iter()
            .filter(|t| t.changed)
            .map(|t| format!("{} → {} {}", name(&t.from), name(&t.to), percent(t.share)))
            .collect();
        format!(
            "would change {} of decisions in the last {minutes} minutes ({samples} sampled){}",
            percent(share(changed)),
            if moves.is_empty() {
                String::new()
            } else {
                format!(": {}", moves.join(", "))
            }
        )
    };
    Comparison {
        environment: environment.to_string(),
        flag: proposal.flag.clone(),
        proposal: proposal.id.clone(),
        sample_ratio: proposal.sample_ratio,
        minutes,
        since: rfc3339(since),
        samples,
        changed,
        share_changed: (samples > 0).then(|| share(changed)),
        transitions,
        summary,
    }
}

/// A share as a percentage with one decimal.
fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// A flag's proposal, with its `ETag`.
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags/{key}/proposal", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key")),
    responses((status = 200, body = ProposalRecord, headers(("ETag" = String))),
               (status = 404, description = "No such environment, or the flag has no proposal", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_proposal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<Response, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let proposal = state.store.get_proposal(&env, &key).await?;
    Ok(with_etag(proposal.revision, StatusCode::OK, proposal))
}

/// Propose a definition for a live flag, or replace its proposal (replacing requires `If-Match`
/// with the proposal's `ETag`). Each write is a new proposal (a new `id`): its comparison starts
/// from zero. The proposal is checked as the flag write publishing it would be (`400` with every
/// problem and its JSON path, `422` for a limit or the flag's JSON Schema) and must keep the live
/// flag's variants (`422`). Sidecars receive it with the next revision and evaluate it on
/// `sample_ratio` of the flag's decisions; no decision changes.
#[utoipa::path(put, path = "/api/v1/environments/{env}/flags/{key}/proposal", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "ETag of the proposal being replaced"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    request_body = ProposalBody,
    responses((status = 201, body = ProposalRecord), (status = 200, body = ProposalRecord),
               (status = 400, description = "Invalid definition (every problem with its JSON path), or an invalid field", body = Problem),
               (status = 404, description = "No such environment or flag", body = Problem),
               (status = 409, description = "The environment holds as many proposals as it may", body = Problem),
               (status = 412, body = Problem), (status = 428, body = Problem),
               (status = 422, description = "Variants other than the live flag's, a limit, or the flag's JSON Schema: every problem with its JSON path", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem)))]
async fn put_proposal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
    Json(body): Json<ProposalBody>,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    check_flag_key(&key)?;
    let change = match (body.definition, body.targeting) {
        (Some(definition), None) => ProposedChange::Definition(definition),
        (None, Some(targeting)) => ProposedChange::Targeting(targeting),
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "give either definition (the whole proposed flag) or targeting (a new rule for \
                 the live flag), not both",
            ));
        }
        (None, None) => {
            return Err(Problem::bad_request(
                "definition or targeting: the proposal is missing",
            ));
        }
    };
    let saved = state
        .store
        .put_proposal(
            &caller.actor(),
            &env,
            &key,
            change,
            body.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO),
            precondition,
            state.config.write_limits(),
        )
        .await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let version = saved.record.revision;
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

/// Drop a flag's proposal and its counts (`204`; with `?wait=`, `200` and `{revision, sync}`).
#[utoipa::path(delete, path = "/api/v1/environments/{env}/flags/{key}/proposal", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = Option<String>, Header, description = "Optional ETag of the proposal"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    responses((status = 204), (status = 200, description = "With `?wait=`: `{revision, sync}`", body = Object),
               (status = 404, body = Problem), (status = 412, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn delete_proposal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let revision = state
        .store
        .delete_proposal(&caller.actor(), &env, &key, precondition)
        .await?;
    answer(
        &state,
        wait,
        &env,
        revision,
        StatusCode::NO_CONTENT,
        None,
        json!({"revision": revision}),
    )
    .await
}

/// What the current proposal would change: over the last `minutes`, the decisions the sidecars
/// sampled, how many the proposal would have changed, and each (live → proposed) pair with its
/// count and share. Only the current proposal's counts count; they arrive within the sidecars'
/// report interval plus control's write interval (about 65 s by default).
#[utoipa::path(get, path = "/api/v1/environments/{env}/flags/{key}/proposal/comparison", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ComparisonParams),
    responses((status = 200, body = Comparison),
               (status = 400, body = Problem),
               (status = 404, description = "No such environment, or the flag has no proposal", body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn comparison(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    Query(q): Query<ComparisonParams>,
) -> Result<axum::Json<Comparison>, Problem> {
    caller.require(Permission::Read, Some(&env))?;
    let minutes = q.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_COMPARISON_MINUTES).contains(&minutes) {
        return Err(Problem::bad_request(format!(
            "minutes: 1 to {MAX_COMPARISON_MINUTES}, got {minutes}"
        )));
    }
    let proposal = state.store.get_proposal(&env, &key).await?;
    let since = minute_of(now_millis()) - (minutes - 1) * MINUTE_MS;
    let rows = state
        .store
        .shadow_transitions(&env, &key, &proposal.id, since)
        .await?;
    Ok(axum::Json(compare(&env, &proposal, minutes, since, rows)))
}

/// Publish a flag's proposal: one audited write (`flag.proposal.publish`) that sets the flag's
/// definition to the proposal's and drops the proposal with its counts. Requires `If-Match` with
/// the proposal's `ETag` (the proposal reviewed); a flag changed since the proposal was made is
/// `409` (the proposal would undo that change: propose again). Answers the flag as written.
#[utoipa::path(post, path = "/api/v1/environments/{env}/flags/{key}/proposal/publish", tag = "flags",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "Environment key"), ("key" = String, Path, description = "Flag key"),
           ("If-Match" = String, Header, description = "ETag of the proposal being published"),
           ("wait" = Option<String>, Query, description = "Wait, at most this long (5s, 500ms, 1m; at most 60s), until every connected sidecar of the environment acknowledged this write; the body then has `sync`")),
    responses((status = 200, description = "The flag as published", body = crate::model::FlagRecord, headers(("ETag" = String))),
               (status = 400, description = "The environment no longer accepts the definition: every problem with its JSON path", body = Problem),
               (status = 404, description = "No such environment, or the flag has no proposal", body = Problem),
               (status = 409, description = "The flag changed since the proposal was made", body = Problem),
               (status = 412, body = Problem), (status = 428, body = Problem), (status = 422, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn publish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    IfMatch(precondition): IfMatch,
    wait: Wait,
) -> Result<Response, Problem> {
    caller.require(Permission::WriteFlags, Some(&env))?;
    let saved = state
        .store
        .publish_proposal(
            &caller.actor(),
            &env,
            &key,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TransitionRow;

    fn row(from: &str, to: &str, n: i64) -> TransitionRow {
        TransitionRow {
            from: Some(from.into()),
            to: Some(to.into()),
            evaluations: n,
        }
    }

    #[test]
    fn the_comparison_says_what_would_change() {
        let proposal = ProposalRecord {
            flag: "checkout".into(),
            id: "0123456789abcdef".into(),
            definition: Value::Null,
            sample_ratio: 1.0,
            flag_version: 1,
            revision: 3,
            proposed_by: "t".into(),
            proposed_at: String::new(),
        };
        let c = compare(
            "prod",
            &proposal,
            60,
            0,
            vec![row("off", "off", 700), row("off", "on", 300)],
        );
        assert_eq!((c.samples, c.changed), (1000, 300));
        assert_eq!(c.share_changed, Some(0.3));
        assert!(c.transitions[0].changed && c.transitions[0].to.as_deref() == Some("on"));
        assert_eq!(
            c.summary,
            "would change 30.0 % of decisions in the last 60 minutes (1000 sampled): off → on 30.0 %"
        );
        let none = compare("prod", &proposal, 5, 0, vec![]);
        assert_eq!((none.samples, none.share_changed), (0, None));
        assert!(
            none.summary.starts_with("no decision sampled"),
            "{}",
            none.summary
        );
    }
}
