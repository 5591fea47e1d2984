//! Evaluators (flagd's `$evaluators`, shared rules): reads, and the two evaluator writes (put,
//! delete) as changes for the write path ([`super::write`]), with the SQL of an evaluator row.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::write::{EnvWrite, Precondition, Scope, SetRows, Tx, WriteLimits};
use super::{Actor, Saved, Store, StoreError, StoreResult, corrupt, environment_id, json_opt};
use crate::model::{EvaluatorRecord, now_millis, rfc3339};

impl Store {
    /// Every evaluator of an environment, by key.
    pub async fn list_evaluators(&self, env: &str) -> StoreResult<Vec<EvaluatorRecord>> {
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        let rows = sqlx::query(
            "SELECT key, definition, version, created_at, updated_at FROM evaluators \
             WHERE environment_id = $1 ORDER BY key",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(evaluator_from_row).collect()
    }

    /// One evaluator.
    pub async fn get_evaluator(&self, env: &str, key: &str) -> StoreResult<EvaluatorRecord> {
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        sqlx::query(
            "SELECT key, definition, version, created_at, updated_at FROM evaluators \
             WHERE environment_id = $1 AND key = $2",
        )
        .bind(id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(evaluator_from_row)
        .transpose()?
        .ok_or_else(|| not_found(env, key))
    }

    /// Creates or replaces an evaluator; every flag of the environment must stay valid. Replacing
    /// needs `If-Match`. Returns the record, whether it was created, and the environment's new
    /// revision.
    pub async fn put_evaluator(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        definition: Value,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Saved<EvaluatorRecord>> {
        let write = EnvWrite::new(env, Scope::Evaluator(key.into()), move |draft| {
            let current = draft.versions().evaluator(key);
            precondition.check(current, Some("evaluator"))?;
            draft
                .set
                .evaluators
                .insert(key.to_string(), definition.clone());
            Ok(if current.is_some() {
                "evaluator.update"
            } else {
                "evaluator.create"
            })
        });
        let written = self.write(actor, limits, write).await?;
        let evaluator = written
            .evaluator
            .ok_or_else(|| corrupt("the written evaluator"))?;
        Ok(Saved {
            record: evaluator,
            created: written.created,
            revision: written.environment.revision,
        })
    }

    /// Deletes an evaluator; refused (`InUse`, with the problems the environment would have)
    /// while a flag or another evaluator references it. Returns the environment's new revision.
    pub async fn delete_evaluator(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<i64> {
        let write = EnvWrite::new(env, Scope::Evaluator(key.into()), move |draft| {
            let current = draft.versions().evaluator(key);
            precondition.check(Some(current.ok_or_else(|| not_found(env, key))?), None)?;
            draft.set.evaluators.remove(key);
            Ok("evaluator.delete")
        })
        .explain_refusal(move |set, errors| {
            // The set without the evaluator: who refers to it is unchanged.
            let users = references_to(key, set);
            if users.is_empty() {
                StoreError::Invalid(errors)
            } else {
                StoreError::InUse {
                    detail: format!(
                        "evaluator {key:?} is still referenced by: {}",
                        users.join(", ")
                    ),
                    errors,
                }
            }
        });
        Ok(self.write(actor, limits, write).await?.environment.revision)
    }
}

fn evaluator_from_row(r: &AnyRow) -> StoreResult<EvaluatorRecord> {
    Ok(EvaluatorRecord {
        key: r.try_get("key")?,
        definition: json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null),
        version: r.try_get("version")?,
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
    })
}

fn not_found(env: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!("evaluator {key:?} in environment {env:?}"))
}

/// The flags whose definitions reference evaluator `name` with `$ref`, then the other evaluators
/// that do, as `flag "key"` / `evaluator "key"`.
fn references_to(name: &str, set: &SetRows) -> Vec<String> {
    fn refers(v: &Value, name: &str) -> bool {
        match v {
            Value::Object(m) => {
                (m.len() == 1 && m.get("$ref").and_then(Value::as_str) == Some(name))
                    || m.values().any(|x| refers(x, name))
            }
            Value::Array(a) => a.iter().any(|x| refers(x, name)),
            _ => false,
        }
    }
    let flags = set
        .flags
        .iter()
        .filter(|(_, d)| refers(d, name))
        .map(|(k, _)| format!("flag {k:?}"));
    let evaluators = set
        .evaluators
        .iter()
        .filter(|(k, d)| *k != name && refers(d, name))
        .map(|(k, _)| format!("evaluator {k:?}"));
    flags.chain(evaluators).collect()
}

/// Writes evaluator `key`'s row with `definition` (already validated), at the version after
/// `stored`.
pub(super) async fn upsert_row(
    tx: &mut Tx,
    env_id: i64,
    key: &str,
    definition: &Value,
    stored: Option<i64>,
) -> StoreResult<EvaluatorRecord> {
    let now = now_millis();
    let row = sqlx::query(
        "INSERT INTO evaluators (environment_id, key, definition, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (environment_id, key) DO UPDATE SET definition = $3, version = $4, updated_at = $6 \
         RETURNING key, definition, version, created_at, updated_at",
    )
    .bind(env_id)
    .bind(key)
    .bind(definition.to_string())
    .bind(stored.map_or(1, |v| v + 1))
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    evaluator_from_row(&row)
}

/// Deletes evaluator `key`'s row.
pub(super) async fn delete_row(tx: &mut Tx, env_id: i64, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM evaluators WHERE environment_id = $1 AND key = $2")
        .bind(env_id)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
