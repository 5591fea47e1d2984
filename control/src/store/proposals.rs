//! Proposals and their shadow counts (`flag_proposals`, `shadow_counts`, migration 0010;
//! docs/shadow.md, ADR 0040).
//!
//! A proposal is a flag definition stored beside the live flag and not published: at most one per
//! environment and flag key. It keeps the live flag's variants (same names, same values), so every
//! decision it would make is one the live flag can make too, and a comparison is a matter of
//! "from variant A to variant B". Each write of a proposal (set, drop) is a revision of the
//! environment with a change-log row of kind `proposals` that holds no definition: the sync feed
//! answers it with the store's `Full`, which carries the environment's proposals. Publishing is a
//! flag write through [`Store::write`] (see [`super::write::EnvWrite::publishing`]).
//!
//! Sidecars evaluate a proposal on a sample of the flag's decisions and report how many times the
//! live rule chose one variant and the proposal another; each replica adds the reports up by
//! minute and writes them with [`Store::record_shadow`]. Counts are kept per proposal id, a random
//! id new for every proposal written, so a replaced proposal's counts are never read as its
//! successor's; a proposal's counts are deleted with it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;
use vexil_engine::{ValidationError, ValidationErrors};

use super::write::{EnvWrite, Precondition, Scope, SideChange, Tx, WriteLimits, bump_revision};
use super::{
    Actor, Saved, Store, StoreError, StoreResult, audit, corrupt, environment_id, json_opt,
};
use crate::model::{ChangeKind, FlagRecord, Millis, now_millis, rfc3339};

/// One minute in milliseconds: the grain of shadow counts.
pub const MINUTE_MS: Millis = 60_000;

/// The longest comparison window, in minutes (7 days). Shadow counts of older minutes can never
/// be read and are deleted by the retention task.
pub const MAX_COMPARISON_MINUTES: i64 = 7 * 24 * 60;

/// Proposals an environment may hold at once: shadow evaluation is for reviewing a change before
/// publishing it, and every proposal costs each sidecar counters.
pub const MAX_PROPOSALS: i64 = 100;

/// Variants a proposed flag may have: sidecars count each (live, proposed) pair, (n + 1)² counters.
pub const MAX_VARIANTS: usize = 32;

/// The sample ratio of a proposal written without one.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// Rows per `INSERT` statement (seven parameters each).
const ROWS_PER_STATEMENT: usize = 100;

/// The start of the minute (UTC) holding `at` (Unix milliseconds).
pub fn minute_of(at: Millis) -> Millis {
    at - at.rem_euclid(MINUTE_MS)
}

/// A stored proposal, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProposalRecord {
    /// The flag key.
    pub flag: String,
    /// The proposal's id (16 hex digits), new for every proposal written; sidecars report counts
    /// under it.
    pub id: String,
    /// The proposed flagd flag definition (the live flag's variants).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The share of the flag's decisions the sidecars evaluate it on, in (0, 1].
    pub sample_ratio: f64,
    /// The live flag's version it was proposed against: publishing is refused once the flag
    /// changed since (`409`), so a proposal never undoes a change it did not see.
    pub flag_version: i64,
    /// The environment revision its write made; the `ETag` is derived from it.
    pub revision: i64,
    /// Who proposed it (token name, or `jwt:<subject>`).
    pub proposed_by: String,
    /// When (RFC 3339).
    pub proposed_at: String,
}

/// What a proposal proposes.
#[derive(Clone, Debug)]
pub enum ProposedChange {
    /// A whole flag definition.
    Definition(Value),
    /// A new targeting rule for the live flag (`null` or `{}`: none), applied to the live
    /// definition inside the write, so it is based on the version it records.
    Targeting(Value),
}

/// A proposal read inside a write that publishes it.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// Its id.
    pub id: String,
    /// The proposed definition.
    pub definition: Value,
    /// The live flag's version it was proposed against.
    pub flag_version: i64,
    /// The revision its write made (its `ETag`).
    pub revision: i64,
}

/// Sampled decisions with one (live, proposed) pair of variants, as reports carry them and
/// [`Store::record_shadow`] adds them up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowRow {
    /// The environment key.
    pub environment: String,
    /// The flag key.
    pub flag: String,
    /// The proposal's id.
    pub proposal: String,
    /// The minute ([`minute_of`]).
    pub minute: Millis,
    /// The live variant (`None`: no value).
    pub from: Option<String>,
    /// The proposed variant (`None`: no value).
    pub to: Option<String>,
    /// How many; added to what the row holds.
    pub evaluations: i64,
}

/// Sampled decisions of one (live, proposed) pair over a window, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRow {
    /// The live variant (`None`: no value).
    pub from: Option<String>,
    /// The proposed variant (`None`: no value).
    pub to: Option<String>,
    /// Sampled decisions.
    pub evaluations: i64,
}

fn variant_column(variant: Option<&str>) -> String {
    variant.unwrap_or_default().to_string()
}

fn variant_of(column: String) -> Option<String> {
    (!column.is_empty()).then_some(column)
}

/// A new proposal id: 64 random bits, 16 lowercase hex digits.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Whether `id` has a proposal id's shape (what reports may name).
pub fn is_proposal_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a sample ratio: a number in (0, 1].
pub fn check_sample_ratio(ratio: f64) -> StoreResult<()> {
    if ratio.is_finite() && ratio > 0.0 && ratio <= 1.0 {
        Ok(())
    } else {
        Err(StoreError::BadRequest(format!(
            "sample_ratio: {ratio} is not in (0, 1] (0.01 evaluates the proposal on 1 % of the \
             flag's decisions)"
        )))
    }
}

/// What a proposal for a flag defined as `live` may not be, besides what the engine checks:
/// variants other than the live flag's (a proposal changes rules, not values), or more of them
/// than shadow evaluation counts.
fn variant_problems(key: &str, live: &Value, proposed: &Value) -> Vec<ValidationError> {
    let mut path = "flags".to_string();
    super::schemas::push_key(&mut path, key);
    super::schemas::push_key(&mut path, "variants");
    let (live, proposed) = (&live["variants"], &proposed["variants"]);
    let mut problems = Vec::new();
    if live != proposed {
        let names = |v: &Value| {
            v.as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
                .join(", ")
        };
        problems.push(ValidationError {
            path: path.clone(),
            message: format!(
                "a proposal keeps the live flag's variants, names and values (live: {}; \
                 proposed: {}); change the flag itself to change its variants",
                names(live),
                names(proposed)
            ),
        });
    }
    let n = proposed.as_object().map_or(0, |m| m.len());
    if n > MAX_VARIANTS {
        problems.push(ValidationError {
            path,
            message: format!(
                "{n} variants; shadow evaluation compares flags of at most {MAX_VARIANTS}"
            ),
        });
    }
    problems
}

fn proposal_from_row(key: String, r: &AnyRow) -> StoreResult<ProposalRecord> {
    Ok(ProposalRecord {
        flag: key,
        id: r.try_get("id")?,
        definition: json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null),
        sample_ratio: r.try_get("sample_ratio")?,
        flag_version: r.try_get("flag_version")?,
        revision: r.try_get("revision")?,
        proposed_by: r.try_get("proposed_by")?,
        proposed_at: rfc3339(r.try_get("proposed_at")?),
    })
}

/// What the audit log keeps of a proposal.
fn audited(p: &ProposalRecord) -> Value {
    json!({"id": p.id, "definition": p.definition, "sample_ratio": p.sample_ratio,
           "flag_version": p.flag_version})
}

fn not_found(env: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!(
        "a proposal for flag {key:?} in environment {env:?}"
    ))
}

/// The proposal of flag `key` of environment `env_id`, read inside a write that publishes it.
pub(super) async fn pending(
    tx: &mut Tx,
    env: &str,
    env_id: i64,
    key: &str,
) -> StoreResult<Pending> {
    let row = sqlx::query(
        "SELECT id, definition, flag_version, revision FROM flag_proposals \
         WHERE environment_id = $1 AND key = $2",
    )
    .bind(env_id)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| not_found(env, key))?;
    Ok(Pending {
        id: row.try_get("id")?,
        definition: json_opt(Some(row.try_get("definition")?))?.unwrap_or(Value::Null),
        flag_version: row.try_get("flag_version")?,
        revision: row.try_get("revision")?,
    })
}

/// Deletes proposal `id` of flag `key` and its shadow counts.
pub(super) async fn delete_row(tx: &mut Tx, env_id: i64, key: &str, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM flag_proposals WHERE environment_id = $1 AND key = $2")
        .bind(env_id)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM shadow_counts WHERE environment_id = $1 AND flag = $2 AND proposal = $3",
    )
    .bind(env_id)
    .bind(key)
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Drops the proposals that the set a write leaves (`after`) no longer fits: their flag is gone,
/// or its variants changed (a proposal keeps the live variants). Each is audited
/// (`flag.proposal.drop`, naming why). Flag `except`'s is left alone (it is being published).
/// Returns how many were dropped.
pub(super) async fn drop_unfit(
    tx: &mut Tx,
    actor: &Actor,
    env: &str,
    env_id: i64,
    after: &super::write::SetRows,
    except: Option<&str>,
) -> StoreResult<usize> {
    let rows = sqlx::query(
        "SELECT key, id, definition, sample_ratio, flag_version, revision, proposed_by, \
         proposed_at FROM flag_proposals WHERE environment_id = $1",
    )
    .bind(env_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut dropped = 0;
    for r in &rows {
        let proposal = proposal_from_row(r.try_get("key")?, r)?;
        if except == Some(proposal.flag.as_str()) {
            continue;
        }
        let why = match after.flags.get(&proposal.flag) {
            None => "its flag was deleted",
            Some(live) if live["variants"] != proposal.definition["variants"] => {
                "its flag's variants changed"
            }
            Some(_) => continue,
        };
        delete_row(tx, env_id, &proposal.flag, &proposal.id).await?;
        audit(
            tx,
            actor,
            "flag.proposal.drop",
            Some(env),
            Some(&proposal.flag),
            audited(&proposal),
            json!({"dropped": why}),
        )
        .await?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Reads the proposal of flag `key` of environment `env_id` on `conn`.
async fn find(
    conn: &mut sqlx::AnyConnection,
    env_id: i64,
    key: &str,
) -> StoreResult<Option<ProposalRecord>> {
    sqlx::query(
        "SELECT id, definition, sample_ratio, flag_version, revision, proposed_by, proposed_at \
         FROM flag_proposals WHERE environment_id = $1 AND key = $2",
    )
    .bind(env_id)
    .bind(key)
    .fetch_optional(conn)
    .await?
    .map(|r| proposal_from_row(key.to_string(), &r))
    .transpose()
}

impl Store {
    /// The proposal of flag `key` of `env`.
    pub async fn get_proposal(&self, env: &str, key: &str) -> StoreResult<ProposalRecord> {
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        find(&mut conn, id, key)
            .await?
            .ok_or_else(|| not_found(env, key))
    }

    /// Every proposal of `env`, by flag key (for the sync stream's `Full`).
    pub async fn proposals(&self, env: &str) -> StoreResult<Vec<ProposalRecord>> {
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        let rows = sqlx::query(
            "SELECT key, id, definition, sample_ratio, flag_version, revision, proposed_by, \
             proposed_at FROM flag_proposals WHERE environment_id = $1 ORDER BY key",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| proposal_from_row(r.try_get("key")?, r))
            .collect()
    }

    /// Proposes `definition` for flag `key` of `env`, evaluated by the sidecars on `sample_ratio`
    /// of its decisions; replaces the flag's proposal (replacing needs `If-Match` with its ETag,
    /// the revision of its write), which goes with its counts. Checked as the flag write
    /// publishing it would be (the engine's strict validation in the environment, its limits, the
    /// flag's JSON Schema), and against the live flag: same variants. One revision, a change-log
    /// row of kind `proposals`, an audit row `flag.proposal.set`.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_proposal(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        change: ProposedChange,
        sample_ratio: f64,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Saved<ProposalRecord>> {
        check_sample_ratio(sample_ratio)?;
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = find(&mut tx, env_id, key).await?;
        precondition.check(before.as_ref().map(|p| p.revision), Some("proposal"))?;
        let stored = super::write::load(&mut tx, env_id).await?;
        let Some(live) = stored.rows.flags.get(key).cloned() else {
            return Err(StoreError::NotFound(format!(
                "flag {key:?} in environment {env:?} (a proposal is for a live flag)"
            )));
        };
        let flag_version = stored.versions.flag(key).unwrap_or(0);
        let definition = match change {
            ProposedChange::Definition(definition) => definition,
            ProposedChange::Targeting(targeting) => {
                let mut definition = live.clone();
                let Some(fields) = definition.as_object_mut() else {
                    return Err(corrupt("flags.definition"));
                };
                match targeting {
                    Value::Null => fields.remove("targeting"),
                    rule => fields.insert("targeting".into(), rule),
                };
                definition
            }
        };
        if before.is_none() {
            let count: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM flag_proposals WHERE environment_id = $1")
                    .bind(env_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
            if count >= MAX_PROPOSALS {
                return Err(StoreError::Conflict(format!(
                    "environment {env:?} has {count} proposals, the most it may hold; publish or \
                     drop one first"
                )));
            }
        }
        let doc = stored.rows.into_document();
        super::write::check_flag_in(&doc, key, &definition, limits)?;
        // The flag's JSON Schema, read in the transaction (the pool may have no other connection).
        let schema =
            sqlx::query("SELECT schema FROM flag_schemas WHERE environment_id = $1 AND key = $2")
                .bind(env_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = schema
            && let Some(schema) = json_opt(row.try_get("schema")?)?
        {
            super::schemas::check_definition(key, &definition, &schema)?;
        }
        let mismatch = variant_problems(key, &live, &definition);
        if !mismatch.is_empty() {
            return Err(StoreError::Unprocessable {
                detail: format!("the proposal for flag {key:?} does not fit the live flag"),
                errors: ValidationErrors(mismatch),
            });
        }
        let now = now_millis();
        let record = ProposalRecord {
            flag: key.to_string(),
            id: new_id(),
            definition,
            sample_ratio,
            flag_version,
            revision,
            proposed_by: actor.name.clone(),
            proposed_at: rfc3339(now),
        };
        if let Some(old) = &before {
            delete_row(&mut tx, env_id, key, &old.id).await?;
        }
        sqlx::query(
            "INSERT INTO flag_proposals (environment_id, key, id, definition, sample_ratio, \
             flag_version, revision, proposed_by, proposed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(env_id)
        .bind(key)
        .bind(record.id.clone())
        .bind(record.definition.to_string())
        .bind(sample_ratio)
        .bind(flag_version)
        .bind(revision)
        .bind(actor.name.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let change = SideChange {
            kind: ChangeKind::Proposals,
            action: "flag.proposal.set",
            key: Some(key),
            before: before.as_ref().map_or(Value::Null, audited),
            after: audited(&record),
        };
        self.commit_side_change(tx, actor, (env, env_id, revision), change)
            .await?;
        Ok(Saved {
            created: before.is_none(),
            revision,
            record,
        })
    }

    /// Drops the proposal of flag `key` of `env` and its counts; returns the environment's new
    /// revision. `If-Match`, when given, names the proposal's ETag.
    pub async fn delete_proposal(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
    ) -> StoreResult<i64> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = find(&mut tx, env_id, key)
            .await?
            .ok_or_else(|| not_found(env, key))?;
        precondition.check(Some(before.revision), None)?;
        delete_row(&mut tx, env_id, key, &before.id).await?;
        let change = SideChange {
            kind: ChangeKind::Proposals,
            action: "flag.proposal.drop",
            key: Some(key),
            before: audited(&before),
            after: Value::Null,
        };
        self.commit_side_change(tx, actor, (env, env_id, revision), change)
            .await?;
        Ok(revision)
    }

    /// Publishes the proposal of flag `key` of `env`: one write through the write path that sets
    /// the flag's definition to the proposal's and deletes the proposal with its counts, audited
    /// as `flag.proposal.publish` (the flag before and after). `If-Match` is required and names the
    /// proposal's ETag (the proposal reviewed); a flag changed since the proposal was made is `409`.
    pub async fn publish_proposal(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Saved<FlagRecord>> {
        let write = EnvWrite::new(env, Scope::Flag(key.into()), move |draft| {
            let proposal = draft
                .proposal()
                .cloned()
                .ok_or_else(|| not_found(env, key))?;
            precondition.check(Some(proposal.revision), Some("proposal"))?;
            if precondition == Precondition::None {
                return Err(StoreError::PreconditionRequired("proposal"));
            }
            let current = draft.versions().flag(key);
            if current != Some(proposal.flag_version) {
                return Err(StoreError::Conflict(match current {
                    Some(v) => format!(
                        "flag {key:?} changed since the proposal was made (version {v}, the \
                         proposal was made against version {}); propose again against the \
                         current flag",
                        proposal.flag_version
                    ),
                    None => format!("flag {key:?} was deleted since the proposal was made"),
                }));
            }
            draft.set.flags.insert(key.to_string(), proposal.definition);
            Ok("flag.proposal.publish")
        })
        .publishing();
        let written = self.write(actor, limits, write).await?;
        Ok(Saved {
            revision: written.environment.revision,
            created: false,
            record: written.flag.ok_or_else(|| corrupt("the published flag"))?,
        })
    }

    /// Adds `rows` to the shadow counts in one transaction (rows naming the same environment,
    /// flag, proposal, minute and pair are added together first). Returns the rows written and
    /// the rows left out: those of a proposal that is not the flag's current one (replaced,
    /// dropped or published meanwhile, or never there).
    pub async fn record_shadow(&self, rows: &[ShadowRow]) -> StoreResult<(u64, u64)> {
        type Key<'r> = (&'r str, &'r str, &'r str, Millis, String, String);
        let mut merged: BTreeMap<Key<'_>, i64> = BTreeMap::new();
        for r in rows {
            let n = merged
                .entry((
                    &r.environment,
                    &r.flag,
                    &r.proposal,
                    r.minute,
                    variant_column(r.from.as_deref()),
                    variant_column(r.to.as_deref()),
                ))
                .or_default();
            *n = n.saturating_add(r.evaluations);
        }
        if merged.is_empty() {
            return Ok((0, 0));
        }
        let merged: Vec<_> = merged.into_iter().collect();
        let mut written = 0;
        let mut tx = self.begin_write().await?;
        for chunk in merged.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| {
                    let b = i * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            // The joins leave out rows of an unknown environment or of a proposal that is not the
            // flag's current one.
            let sql = format!(
                "INSERT INTO shadow_counts (environment_id, flag, proposal, minute, from_variant, \
                 to_variant, evaluations) \
                 SELECT p.environment_id, v.column2, v.column3, v.column4, v.column5, v.column6, \
                 v.column7 FROM (VALUES {values}) AS v \
                 JOIN environments e ON e.key = v.column1 \
                 JOIN flag_proposals p ON p.environment_id = e.id AND p.key = v.column2 \
                 AND p.id = v.column3 \
                 WHERE true \
                 ON CONFLICT (environment_id, flag, proposal, minute, from_variant, to_variant) \
                 DO UPDATE SET evaluations = shadow_counts.evaluations + excluded.evaluations"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((env, flag, proposal, minute, from, to), n) in chunk {
                query = query
                    .bind(env.to_string())
                    .bind(flag.to_string())
                    .bind(proposal.to_string())
                    .bind(*minute)
                    .bind(from.clone())
                    .bind(to.clone())
                    .bind(*n);
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok((
            written,
            merged.len() as u64 - written.min(merged.len() as u64),
        ))
    }

    /// The sampled decisions of proposal `proposal` of flag `key` of `env` since `since` (a
    /// minute, inclusive), by (live, proposed) pair, sorted by the pair.
    pub async fn shadow_transitions(
        &self,
        env: &str,
        key: &str,
        proposal: &str,
        since: Millis,
    ) -> StoreResult<Vec<TransitionRow>> {
        let env_id = environment_id(&mut *self.pool.acquire().await?, env).await?;
        let rows = sqlx::query(
            "SELECT from_variant, to_variant, CAST(SUM(evaluations) AS BIGINT) AS n \
             FROM shadow_counts WHERE environment_id = $1 AND flag = $2 AND proposal = $3 \
             AND minute >= $4 GROUP BY from_variant, to_variant \
             ORDER BY from_variant, to_variant",
        )
        .bind(env_id)
        .bind(key)
        .bind(proposal.to_string())
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TransitionRow {
                    from: variant_of(r.try_get("from_variant")?),
                    to: variant_of(r.try_get("to_variant")?),
                    evaluations: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// Deletes the shadow counts of minutes before `before`, a minute per statement.
    pub async fn prune_shadow(&self, before: Millis) -> StoreResult<u64> {
        self.prune_by_time("shadow_counts", "minute", before).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_ratios_and_minutes() {
        let id = new_id();
        assert!(is_proposal_id(&id), "{id}");
        assert!(!is_proposal_id("ABCDEF0123456789") && !is_proposal_id("abc"));
        for ok in [1.0, 0.01, 1e-6] {
            assert!(check_sample_ratio(ok).is_ok());
        }
        for bad in [0.0, -0.5, 1.0001, f64::NAN, f64::INFINITY] {
            assert!(check_sample_ratio(bad).is_err(), "{bad}");
        }
        assert_eq!(minute_of(MINUTE_MS * 3 + 59_999), MINUTE_MS * 3);
    }

    #[test]
    fn a_proposal_keeps_the_live_variants() {
        let live = json!({"variants": {"on": true, "off": false}});
        assert!(variant_problems("a", &live, &live).is_empty());
        let renamed = json!({"variants": {"yes": true, "off": false}});
        let p = variant_problems("a", &live, &renamed);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].path, "flags.a.variants");
        assert!(
            p[0].message.contains("live: off, on; proposed: off, yes"),
            "{}",
            p[0].message
        );
    }
}
