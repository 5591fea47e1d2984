//! Whole flag sets: the export, and the two writes that replace an environment's whole set (an
//! import, a promotion) as changes for the write path ([`super::write`]), with the SQL that replaces
//! every row.

use serde_json::Value;
use sqlx::Row;

use super::write::{
    EnvWrite, Precondition, Scope, SetRows, Tx, Versions, WriteLimits, load, validate_document,
};
use super::{Actor, Store, StoreError, StoreResult, environment_from_row, not_found_env};
use crate::model::{Environment, now_millis};

impl Store {
    /// The environment and its flag set as one flagd document.
    pub async fn export(&self, env: &str) -> StoreResult<(Environment, Value)> {
        // One transaction so the document and the revision agree.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, key, name, revision, incarnation, metadata, created_at, updated_at \
             FROM environments WHERE key = $1",
        )
        .bind(env)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found_env(env))?;
        let id: i64 = row.try_get("id")?;
        let environment = environment_from_row(&row)?;
        let set = load(&mut tx, id).await?;
        tx.commit().await?;
        Ok((environment, set.rows.into_document()))
    }

    /// Replaces an environment's whole flag set (flags, evaluators, metadata) with `doc`: all valid
    /// or nothing changes; one revision, one audit entry. `precondition` is checked against the
    /// environment's revision (the flag set's ETag) inside the write; absent, it replaces whatever
    /// is there.
    pub async fn replace_flagset(
        &self,
        actor: &Actor,
        env: &str,
        doc: Value,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Environment> {
        let rows = match SetRows::from_document(doc) {
            Ok(rows) => rows,
            Err(doc) => {
                // Not shaped like a flag set: the engine says where (no lock taken for that).
                validate_document(&doc, limits.engine)?;
                return Err(StoreError::BadRequest(
                    "the body is not a flagd flag-set document".into(),
                ));
            }
        };
        let write = EnvWrite::new(env, Scope::FlagSet, move |draft| {
            precondition.check(Some(draft.previous_revision()), None)?;
            draft.set = rows.clone();
            Ok("flagset.replace")
        });
        Ok(self.write(actor, limits, write).await?.environment)
    }

    /// Copies environment `from`'s flag set onto `to`, atomically, as one change of `to`.
    /// `precondition` is checked against `to`'s revision (its flag set's ETag) inside the write.
    pub async fn promote(
        &self,
        actor: &Actor,
        from: &str,
        to: &str,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Environment> {
        if from == to {
            return Err(StoreError::BadRequest(
                "cannot promote an environment onto itself".into(),
            ));
        }
        let write = EnvWrite::new(to, Scope::FlagSet, move |draft| {
            precondition.check(Some(draft.previous_revision()), None)?;
            draft.set = draft.take_source();
            Ok("environment.promote")
        })
        .copying(from);
        Ok(self.write(actor, limits, write).await?.environment)
    }
}

/// Replaces every row of environment `env_id` with `set` (already validated). Flags keep counting
/// their versions from `stored`; evaluators start again at 1.
pub(super) async fn replace_rows(
    tx: &mut Tx,
    env_id: i64,
    set: &SetRows,
    stored: &Versions,
) -> StoreResult<()> {
    for sql in [
        "DELETE FROM flags WHERE environment_id = $1",
        "DELETE FROM evaluators WHERE environment_id = $1",
    ] {
        sqlx::query(sql).bind(env_id).execute(&mut **tx).await?;
    }
    let now = now_millis();
    for (key, def) in &set.flags {
        let state = def
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("ENABLED");
        sqlx::query(
            "INSERT INTO flags (environment_id, key, state, definition, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(env_id)
        .bind(key.clone())
        .bind(state.to_string())
        .bind(def.to_string())
        .bind(stored.flag(key).unwrap_or(0) + 1)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    for (key, def) in &set.evaluators {
        sqlx::query(
            "INSERT INTO evaluators (environment_id, key, definition, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(env_id)
        .bind(key.clone())
        .bind(def.to_string())
        // Versions only grow, as for flags: an ETag never names two contents.
        .bind(stored.evaluator(key).unwrap_or(0) + 1)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("UPDATE environments SET metadata = $1 WHERE id = $2")
        .bind(Value::Object(set.metadata.clone()).to_string())
        .bind(env_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
