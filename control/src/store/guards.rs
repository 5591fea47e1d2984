//! Guards of flags (ADR 0035, docs/guards.md): their definitions and states (`guards`), the
//! outcomes counted per arm since each was armed (`guard_counts`, migration 0009), the looks of
//! the sequential test, and the trip, carried out through the one write path ([`super::write`]).
//!
//! - Arming or removing a guard changes which flags the sidecars attribute outcomes to: it is a
//!   revision with a change-log row of kind `guards`, answered with a `Full` that carries the
//!   guarded flags (like a signing-key rotation).
//! - The outcome counts are added by every replica ([`Store::record_outcomes`], after each usage
//!   write), then the replica looks at the guards it added to ([`Store::look_at_guard`]). A look is
//!   claimed with a condition on the number of looks made, and a trip with a condition on the
//!   state, so each look happens once and exactly one replica trips a guard.
//! - A tripped guard stays tripped until a person resets it (which clears its counts).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::write::{Claim, EnvWrite, Scope, SideChange, Tx, WriteLimits, bump_revision};
use super::{Actor, Store, StoreError, StoreResult, audit, corrupt, json_opt};
use crate::guards::{self, ArmFigures, BUCKETS, Counts, GuardSpec, Look};
use crate::model::{ChangeKind, Millis, now_millis, rfc3339};

/// A guard with its state and figures, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct GuardRecord {
    /// The guarded flag.
    pub flag: String,
    /// The definition.
    pub guard: GuardSpec,
    /// `armed` (watching) or `tripped` (acted; stays so until reset).
    pub state: String,
    /// When it was armed or last reset (RFC 3339).
    pub armed_at: String,
    /// Who armed or reset it.
    pub armed_by: String,
    /// When it tripped (RFC 3339).
    pub tripped_at: Option<String>,
    /// Looks of the sequential test made so far.
    pub looks: u32,
    /// The rollout arm's counts since it was armed.
    pub rollout: ArmFigures,
    /// The baseline arm's counts since it was armed.
    pub baseline: ArmFigures,
    /// The latest look.
    pub last_look: Option<Look>,
    /// The figures of the trip (and an `error` when its action could not be carried out).
    #[schema(value_type = Option<Object>)]
    pub trip: Option<Value>,
}

/// Outcomes of the requests that carried one variant of one flag, as a replica writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRow {
    /// The environment key.
    pub environment: String,
    /// The flag key.
    pub flag: String,
    /// The variant (`None`: no value; never a guard's arm).
    pub variant: Option<String>,
    /// The status classes, then the latency buckets.
    pub counts: Counts,
}

/// A guard as stored.
struct Stored {
    id: i64,
    environment: String,
    flag: String,
    spec: GuardSpec,
    state: String,
    looks: u32,
    last_look: Option<Look>,
    trip: Option<Value>,
    armed_at: Millis,
    armed_by: String,
    tripped_at: Option<Millis>,
}

const COLUMNS: &str = "g.id, e.key AS environment, g.flag, g.spec, g.state, g.looks, \
     g.last_look, g.trip, g.armed_at, g.armed_by, g.tripped_at";

fn stored(r: &AnyRow) -> StoreResult<Stored> {
    let text: String = r.try_get("spec")?;
    Ok(Stored {
        id: r.try_get("id")?,
        environment: r.try_get("environment")?,
        flag: r.try_get("flag")?,
        spec: serde_json::from_str(&text).map_err(|_| corrupt("guards.spec"))?,
        state: r.try_get("state")?,
        looks: u32::try_from(r.try_get::<i64, _>("looks")?).unwrap_or(u32::MAX),
        last_look: json_opt(r.try_get("last_look")?)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| corrupt("guards.last_look"))?,
        trip: json_opt(r.try_get("trip")?)?,
        armed_at: r.try_get("armed_at")?,
        armed_by: r.try_get("armed_by")?,
        tripped_at: r.try_get("tripped_at")?,
    })
}

fn not_found(env: &str, flag: &str) -> StoreError {
    StoreError::NotFound(format!("guard of flag {flag:?} in environment {env:?}"))
}

/// The counts of guard `id` by arm (0: rollout, 1: baseline).
async fn counts(conn: &mut sqlx::AnyConnection, id: i64) -> StoreResult<[Counts; 2]> {
    let rows = sqlx::query("SELECT arm, bucket, count FROM guard_counts WHERE guard_id = $1")
        .bind(id)
        .fetch_all(conn)
        .await?;
    let mut arms = [[0u64; BUCKETS]; 2];
    for r in &rows {
        add_count(&mut arms, r)?;
    }
    Ok(arms)
}

/// Puts a `guard_counts` row (`arm`, `bucket`, `count`) into its guard's arms.
fn add_count(arms: &mut [Counts; 2], r: &AnyRow) -> StoreResult<()> {
    let arm = r.try_get::<i16, _>("arm")? as usize;
    let bucket = r.try_get::<i16, _>("bucket")? as usize;
    let n: i64 = r.try_get("count")?;
    if let Some(slot) = arms.get_mut(arm).and_then(|a| a.get_mut(bucket)) {
        *slot = u64::try_from(n).unwrap_or(0);
    }
    Ok(())
}

impl Stored {
    fn record(self, [rollout, baseline]: [Counts; 2]) -> GuardRecord {
        GuardRecord {
            flag: self.flag,
            guard: self.spec,
            state: self.state,
            armed_at: rfc3339(self.armed_at),
            armed_by: self.armed_by,
            tripped_at: self.tripped_at.map(rfc3339),
            looks: self.looks,
            rollout: ArmFigures::of(&rollout),
            baseline: ArmFigures::of(&baseline),
            last_look: self.last_look,
            trip: self.trip,
        }
    }

    /// What the audit log keeps of a guard: its definition and state, not its counts.
    fn audited(&self) -> Value {
        json!({ "guard": self.spec, "state": self.state, "looks": self.looks, "trip": self.trip })
    }
}

/// Guard `flag` of environment `env`, read on `conn`.
async fn find(
    conn: &mut sqlx::AnyConnection,
    env: &str,
    flag: &str,
) -> StoreResult<Option<Stored>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM guards g JOIN environments e ON e.id = g.environment_id \
         WHERE e.key = $1 AND g.flag = $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(env)
        .bind(flag)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(stored)
        .transpose()
}

/// Marks guard `claim.guard` tripped inside the write that carries out its action; refused when
/// it is no longer armed (another replica tripped it, or a person changed it meanwhile).
pub(super) async fn claim(tx: &mut Tx, claim: &Claim) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE guards SET state = 'tripped', tripped_at = $1, trip = $2 \
         WHERE id = $3 AND state = 'armed'",
    )
    .bind(now_millis())
    .bind(claim.figures.to_string())
    .bind(claim.guard)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(StoreError::Conflict(
            "the guard is no longer armed (tripped, reset or removed meanwhile)".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Arms a guard on flag `flag` of `env` (replacing any guard it had, whose counts go with it).
    /// The definition is checked against the flag. A revision (kind `guards`): the sidecars learn
    /// to attribute the flag's outcomes.
    pub async fn put_guard(
        &self,
        actor: &Actor,
        env: &str,
        flag: &str,
        spec: GuardSpec,
    ) -> StoreResult<GuardRecord> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let definition: String =
            sqlx::query("SELECT definition FROM flags WHERE environment_id = $1 AND key = $2")
                .bind(env_id)
                .bind(flag)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("flag {flag:?} in environment {env:?}"))
                })?
                .try_get("definition")?;
        let definition: Value =
            serde_json::from_str(&definition).map_err(|_| corrupt("flags.definition"))?;
        spec.check(flag, &definition)
            .map_err(StoreError::BadRequest)?;
        let old = find(&mut tx, env, flag).await?;
        sqlx::query("DELETE FROM guards WHERE environment_id = $1 AND flag = $2")
            .bind(env_id)
            .bind(flag)
            .execute(&mut *tx)
            .await?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO guards (environment_id, flag, spec, state, looks, armed_at, armed_by) \
             VALUES ($1, $2, $3, 'armed', 0, $4, $5)",
        )
        .bind(env_id)
        .bind(flag)
        .bind(json!(spec).to_string())
        .bind(now)
        .bind(actor.name.clone())
        .execute(&mut *tx)
        .await?;
        let new = find(&mut tx, env, flag)
            .await?
            .ok_or_else(|| corrupt("guards"))?;
        let change = SideChange {
            kind: ChangeKind::Guards,
            action: "flag.guard.put",
            key: Some(flag),
            before: old.as_ref().map_or(Value::Null, Stored::audited),
            after: new.audited(),
        };
        self.commit_side_change(tx, actor, (env, env_id, revision), change)
            .await?;
        Ok(new.record([[0; BUCKETS]; 2]))
    }

    /// Removes the guard of flag `flag` of `env`. A revision (kind `guards`).
    pub async fn delete_guard(&self, actor: &Actor, env: &str, flag: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let old = find(&mut tx, env, flag)
            .await?
            .ok_or_else(|| not_found(env, flag))?;
        sqlx::query("DELETE FROM guards WHERE id = $1")
            .bind(old.id)
            .execute(&mut *tx)
            .await?;
        let change = SideChange {
            kind: ChangeKind::Guards,
            action: "flag.guard.delete",
            key: Some(flag),
            before: old.audited(),
            after: Value::Null,
        };
        self.commit_side_change(tx, actor, (env, env_id, revision), change)
            .await?;
        Ok(())
    }

    /// Arms a tripped guard again, from zero: its counts and looks are cleared. The flag is left
    /// as the trip left it (a person resumes the rollout by changing the flag). Audited; no
    /// revision (the guarded flags do not change).
    pub async fn reset_guard(
        &self,
        actor: &Actor,
        env: &str,
        flag: &str,
    ) -> StoreResult<GuardRecord> {
        let mut tx = self.begin_write().await?;
        let old = find(&mut tx, env, flag)
            .await?
            .ok_or_else(|| not_found(env, flag))?;
        sqlx::query("DELETE FROM guard_counts WHERE guard_id = $1")
            .bind(old.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE guards SET state = 'armed', looks = 0, last_look = NULL, trip = NULL, \
             tripped_at = NULL, armed_at = $1, armed_by = $2 WHERE id = $3",
        )
        .bind(now_millis())
        .bind(actor.name.clone())
        .bind(old.id)
        .execute(&mut *tx)
        .await?;
        let new = find(&mut tx, env, flag)
            .await?
            .ok_or_else(|| corrupt("guards"))?;
        audit(
            &mut tx,
            actor,
            "flag.guard.reset",
            Some(env),
            Some(flag),
            old.audited(),
            new.audited(),
        )
        .await?;
        tx.commit().await?;
        Ok(new.record([[0; BUCKETS]; 2]))
    }

    /// The guard of flag `flag` of `env`, with its figures.
    pub async fn guard(&self, env: &str, flag: &str) -> StoreResult<GuardRecord> {
        let mut conn = self.pool.acquire().await?;
        super::environment_id(&mut conn, env).await?;
        let g = find(&mut conn, env, flag)
            .await?
            .ok_or_else(|| not_found(env, flag))?;
        let counts = counts(&mut conn, g.id).await?;
        Ok(g.record(counts))
    }

    /// Every guard of `env`, by flag key.
    pub async fn guards(&self, env: &str) -> StoreResult<Vec<GuardRecord>> {
        let mut conn = self.pool.acquire().await?;
        super::environment_id(&mut conn, env).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM guards g JOIN environments e ON e.id = g.environment_id \
             WHERE e.key = $1 ORDER BY g.flag"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(env)
            .fetch_all(&mut *conn)
            .await?;
        // Every guard's counts in one query, not one per guard.
        let counted = sqlx::query(
            "SELECT c.guard_id, c.arm, c.bucket, c.count FROM guard_counts c \
             JOIN guards g ON g.id = c.guard_id JOIN environments e ON e.id = g.environment_id \
             WHERE e.key = $1",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_guard: HashMap<i64, [Counts; 2]> = HashMap::new();
        for r in &counted {
            let id: i64 = r.try_get("guard_id")?;
            add_count(by_guard.entry(id).or_insert([[0; BUCKETS]; 2]), r)?;
        }
        rows.iter()
            .map(|r| {
                let g = stored(r)?;
                let counts = by_guard.remove(&g.id).unwrap_or([[0; BUCKETS]; 2]);
                Ok(g.record(counts))
            })
            .collect()
    }

    /// The flags of `env` with a guard (armed or tripped): the sidecars report their outcomes.
    pub async fn guarded_flags(&self, env: &str) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT g.flag FROM guards g JOIN environments e ON e.id = g.environment_id \
             WHERE e.key = $1 ORDER BY g.flag",
        )
        .bind(env)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("flag").map_err(Into::into))
            .collect()
    }

    /// Adds `rows` to the counts of the armed guards whose arms they are, in one transaction;
    /// returns the ids of the guards added to. Outcomes of unguarded flags and of other
    /// variants are not kept.
    pub async fn record_outcomes(&self, rows: &[OutcomeRow]) -> StoreResult<Vec<i64>> {
        let mut environments: Vec<&str> = rows.iter().map(|r| r.environment.as_str()).collect();
        environments.sort_unstable();
        environments.dedup();
        // (environment, flag) -> (guard, rollout variant, baseline variant)
        let mut armed: HashMap<(String, String), (i64, String, String)> = HashMap::new();
        for env in environments {
            let sql = format!(
                "SELECT {COLUMNS} FROM guards g JOIN environments e ON e.id = g.environment_id \
                 WHERE e.key = $1 AND g.state = 'armed'"
            );
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(env)
                .fetch_all(&self.pool)
                .await?
            {
                let g = stored(&r)?;
                armed.insert(
                    (g.environment, g.flag),
                    (g.id, g.spec.rollout, g.spec.baseline),
                );
            }
        }
        let mut sums: BTreeMap<(i64, i16), Counts> = BTreeMap::new();
        for r in rows {
            let Some((id, rollout, baseline)) = armed.get(&(r.environment.clone(), r.flag.clone()))
            else {
                continue;
            };
            let arm = match r.variant.as_deref() {
                Some(v) if v == rollout => 0,
                Some(v) if v == baseline => 1,
                _ => continue,
            };
            let sum = sums.entry((*id, arm)).or_insert([0; BUCKETS]);
            for (s, n) in sum.iter_mut().zip(r.counts) {
                *s = s.saturating_add(n);
            }
        }
        if sums.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        for (&(id, arm), counts) in &sums {
            for (bucket, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                // Only while the guard is still armed (it may have been removed, re-armed or
                // tripped since it was read).
                sqlx::query(
                    "INSERT INTO guard_counts (guard_id, arm, bucket, count) \
                     SELECT id, $2, $3, $4 FROM guards WHERE id = $1 AND state = 'armed' \
                     ON CONFLICT (guard_id, arm, bucket) \
                     DO UPDATE SET count = guard_counts.count + excluded.count",
                )
                .bind(id)
                .bind(arm)
                .bind(bucket as i16)
                .bind(i64::try_from(n).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        let mut ids: Vec<i64> = sums.keys().map(|&(id, _)| id).collect();
        ids.dedup();
        Ok(ids)
    }

    /// Makes the look of guard `id` that its counts have reached, if one is due and no replica
    /// made it first; when it trips, carries out the guard's action as a write by the actor
    /// `guard` whose audit entry holds the figures. Returns the look made.
    pub async fn look_at_guard(&self, id: i64, limits: WriteLimits) -> StoreResult<Option<Look>> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM guards g JOIN environments e ON e.id = g.environment_id \
             WHERE g.id = $1 AND g.state = 'armed'"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let g = stored(&row)?;
        let [rollout, baseline] = counts(&mut conn, id).await?;
        drop(conn);
        let Some(look) = guards::look(&g.spec, g.looks, &rollout, &baseline) else {
            return Ok(None);
        };
        let made = sqlx::query(
            "UPDATE guards SET looks = $1, last_look = $2 \
             WHERE id = $3 AND looks = $4 AND state = 'armed'",
        )
        .bind(i64::from(look.k) + 1)
        .bind(json!(look).to_string())
        .bind(id)
        .bind(i64::from(g.looks))
        .execute(&self.pool)
        .await?
        .rows_affected();
        if made == 0 {
            return Ok(None);
        }
        if look.trips {
            self.trip(&g, &look, limits).await?;
        }
        Ok(Some(look))
    }

    /// Carries out a tripped guard's action. When the flag cannot be written (deleted, or the
    /// result refused), the guard is still marked tripped, with the error in its figures.
    async fn trip(&self, g: &Stored, look: &Look, limits: WriteLimits) -> StoreResult<()> {
        let figures = json!({
            "guard": g.spec,
            "look": look,
            "armed_at": rfc3339(g.armed_at),
        });
        let actor = Actor {
            name: guards::ACTOR.to_string(),
            request_id: None,
        };
        let (flag, spec) = (g.flag.as_str(), &g.spec);
        let write = EnvWrite::new(&g.environment, Scope::Flag(flag.into()), move |draft| {
            let definition = draft
                .set
                .flags
                .get_mut(flag)
                .ok_or_else(|| StoreError::NotFound(format!("flag {flag:?}")))?;
            spec.act(definition);
            Ok("flag.guard.trip")
        })
        .claiming(Claim {
            guard: g.id,
            figures: figures.clone(),
        });
        match self.write(&actor, limits, write).await {
            Ok(written) => {
                tracing::warn!(environment = %g.environment, flag = %g.flag,
                    revision = written.environment.revision, z = look.z, level = look.level,
                    "guard tripped: the flag was switched to its safe state");
                Ok(())
            }
            // Another replica tripped it first.
            Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => {
                tracing::error!(environment = %g.environment, flag = %g.flag, error = %e,
                    "guard tripped but its action could not be carried out");
                let mut failed = figures;
                failed["error"] = Value::from(e.to_string());
                let mut tx = self.begin_write().await?;
                claim(
                    &mut tx,
                    &Claim {
                        guard: g.id,
                        figures: failed.clone(),
                    },
                )
                .await?;
                audit(
                    &mut tx,
                    &actor,
                    "flag.guard.trip_failed",
                    Some(&g.environment),
                    Some(flag),
                    g.audited(),
                    failed,
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }
}
