//! Flags, evaluators and whole flag sets: reads, and the transactional writes that move an
//! environment's revision.

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use vexil_engine::{FlagSet, Limits, ValidationError, ValidationErrors, header_key_problem};

use super::{
    Actor, Store, StoreError, StoreResult, audit, bump_revision, corrupt, json_opt, not_found_env,
    record_change,
};
use crate::model::{
    ChangeKind, Environment, EvaluatorRecord, FlagRecord, Page, now_millis, rfc3339,
};

/// What `If-Match` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`.
    None,
    /// `If-Match: *`: any current version.
    Any,
    /// `If-Match: "<version>"`.
    Version(i64),
}

impl Precondition {
    /// Checks the precondition against the current version (`None` when the item does not exist);
    /// `what` names the item for the "required" error.
    fn check(self, current: Option<i64>, required: Option<&'static str>) -> StoreResult<()> {
        match (self, current) {
            (Precondition::None, Some(_)) => match required {
                Some(what) => Err(StoreError::PreconditionRequired(what)),
                None => Ok(()),
            },
            (Precondition::None, None) => Ok(()),
            (Precondition::Any, Some(_)) => Ok(()),
            (Precondition::Version(v), Some(c)) if v == c => Ok(()),
            (Precondition::Version(_) | Precondition::Any, c) => {
                Err(StoreError::PreconditionFailed {
                    current: c.unwrap_or(0),
                })
            }
        }
    }
}

/// Filters and page of a flag list.
#[derive(Clone, Debug, Default)]
pub struct FlagQuery {
    /// Only flags in this state (`ENABLED` / `DISABLED`).
    pub state: Option<String>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only flags whose metadata has this key with this value (compared as text).
    pub metadata: Option<(String, String)>,
    /// Keys after this one (the cursor).
    pub after: Option<String>,
    /// Page size.
    pub limit: i64,
}

fn flag_from_row(r: &AnyRow) -> StoreResult<FlagRecord> {
    Ok(FlagRecord {
        key: r.try_get("key")?,
        state: r.try_get("state")?,
        definition: json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null),
        version: r.try_get("version")?,
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
    })
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

/// An environment's whole flag set as stored.
struct SetRows {
    flags: Map<String, Value>,
    versions: Map<String, Value>,
    evaluators: Map<String, Value>,
    metadata: Value,
}

impl SetRows {
    fn document(&self) -> Value {
        let mut doc = json!({"flags": self.flags});
        if !self.evaluators.is_empty() {
            doc["$evaluators"] = Value::Object(self.evaluators.clone());
        }
        if self.metadata.as_object().is_some_and(|m| !m.is_empty()) {
            doc["metadata"] = self.metadata.clone();
        }
        doc
    }
}

async fn load_set(conn: &mut sqlx::AnyConnection, environment_id: i64) -> StoreResult<SetRows> {
    let mut set = SetRows {
        flags: Map::new(),
        versions: Map::new(),
        evaluators: Map::new(),
        metadata: Value::Null,
    };
    for r in sqlx::query("SELECT key, definition, version FROM flags WHERE environment_id = $1")
        .bind(environment_id)
        .fetch_all(&mut *conn)
        .await?
    {
        let key: String = r.try_get("key")?;
        let def = json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null);
        set.versions
            .insert(key.clone(), Value::from(r.try_get::<i64, _>("version")?));
        set.flags.insert(key, def);
    }
    for r in sqlx::query("SELECT key, definition FROM evaluators WHERE environment_id = $1")
        .bind(environment_id)
        .fetch_all(&mut *conn)
        .await?
    {
        let def = json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null);
        set.evaluators.insert(r.try_get("key")?, def);
    }
    let meta: String = sqlx::query("SELECT metadata FROM environments WHERE id = $1")
        .bind(environment_id)
        .fetch_one(&mut *conn)
        .await?
        .try_get("metadata")?;
    set.metadata = json_opt(Some(meta))?.unwrap_or(Value::Null);
    Ok(set)
}

/// Validates a whole document strictly, plus the header-key rule for every flag key.
pub(crate) fn validate_document(doc: &Value, limits: Limits) -> StoreResult<()> {
    let mut errors = FlagSet::validate(doc, limits).0;
    if let Some(flags) = doc.get("flags").and_then(Value::as_object) {
        for key in flags.keys() {
            if let Some(problem) = header_key_problem(key) {
                errors.push(ValidationError {
                    path: format!("flags[{}]", Value::from(key.as_str())),
                    message: problem,
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid(ValidationErrors(errors)))
    }
}

/// A flag state the kill switch accepts: `ENABLED` or `DISABLED`.
pub(crate) fn check_state(state: &str) -> StoreResult<()> {
    if matches!(state, "ENABLED" | "DISABLED") {
        Ok(())
    } else {
        Err(StoreError::BadRequest(
            "state: must be \"ENABLED\" or \"DISABLED\"".into(),
        ))
    }
}

/// Flags whose definitions reference evaluator `name` with `$ref`, and evaluators that do.
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

impl Store {
    async fn environment_id(&self, env: &str) -> StoreResult<i64> {
        sqlx::query("SELECT id FROM environments WHERE key = $1")
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found_env(env))?
            .try_get("id")
            .map_err(Into::into)
    }

    /// A page of an environment's flags, by key.
    pub async fn list_flags(&self, env: &str, q: &FlagQuery) -> StoreResult<Page<FlagRecord>> {
        let id = self.environment_id(env).await?;
        let mut items = Vec::new();
        let mut after = q.after.clone();
        let batch = (q.limit + 1).max(64);
        let start = q.prefix.clone();
        'scan: loop {
            let rows = sqlx::query(
                "SELECT key, state, definition, version, created_at, updated_at FROM flags \
                 WHERE environment_id = $1 AND ($2 IS NULL OR state = $2) \
                 AND ($3 IS NULL OR key >= $3) AND ($4 IS NULL OR key > $4) \
                 ORDER BY key LIMIT $5",
            )
            .bind(id)
            .bind(q.state.clone())
            .bind(start.clone())
            .bind(after.clone())
            .bind(batch)
            .fetch_all(&self.pool)
            .await?;
            let exhausted = (rows.len() as i64) < batch;
            for r in &rows {
                let flag = flag_from_row(r)?;
                after = Some(flag.key.clone());
                if let Some(p) = &q.prefix
                    && !flag.key.starts_with(p.as_str())
                {
                    break 'scan;
                }
                if let Some((k, v)) = &q.metadata {
                    let found = flag.definition.get("metadata").and_then(|m| m.get(k));
                    let matches = match found {
                        Some(Value::String(s)) => s == v,
                        Some(other) => {
                            *other == serde_json::from_str::<Value>(v).unwrap_or(Value::Null)
                        }
                        None => false,
                    };
                    if !matches {
                        continue;
                    }
                }
                items.push(flag);
                if items.len() as i64 > q.limit {
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
        }
        let next_cursor = if items.len() as i64 > q.limit {
            items.truncate(q.limit as usize);
            items.last().map(|f| f.key.clone())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// One flag.
    pub async fn get_flag(&self, env: &str, key: &str) -> StoreResult<FlagRecord> {
        let id = self.environment_id(env).await?;
        current_flag(&mut *self.pool.acquire().await?, id, key)
            .await?
            .ok_or_else(|| not_found_flag(env, key))
    }

    /// Creates or replaces a flag. Replacing needs `If-Match`. Returns the record and whether it
    /// was created.
    pub async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        definition: Value,
        precondition: Precondition,
        limits: Limits,
    ) -> StoreResult<(FlagRecord, bool)> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = current_flag(&mut tx, env_id, key).await?;
        precondition.check(before.as_ref().map(|f| f.version), Some("flag"))?;
        let set = load_set(&mut tx, env_id).await?;
        let mut doc = json!({"flags": {key: definition}, "$evaluators": set.evaluators});
        if set.metadata.as_object().is_some_and(|m| !m.is_empty()) {
            doc["metadata"] = set.metadata.clone();
        }
        validate_document(&doc, limits)?;
        let record = upsert_flag(&mut tx, env_id, key, &definition, before.as_ref()).await?;
        record_change(
            &mut tx,
            env_id,
            revision,
            ChangeKind::Flag,
            Some(key),
            Some(&definition),
        )
        .await?;
        let action = if before.is_some() {
            "flag.update"
        } else {
            "flag.create"
        };
        audit(
            &mut tx,
            actor,
            action,
            Some(env),
            Some(key),
            before
                .as_ref()
                .map_or(Value::Null, |f| f.definition.clone()),
            definition,
        )
        .await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok((record, before.is_none()))
    }

    /// The kill switch: sets a flag's `state`.
    pub async fn set_flag_state(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        state: &str,
        precondition: Precondition,
    ) -> StoreResult<FlagRecord> {
        check_state(state)?;
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = current_flag(&mut tx, env_id, key)
            .await?
            .ok_or_else(|| not_found_flag(env, key))?;
        precondition.check(Some(before.version), None)?;
        let mut definition = before.definition.clone();
        definition["state"] = Value::from(state);
        let record = upsert_flag(&mut tx, env_id, key, &definition, Some(&before)).await?;
        record_change(
            &mut tx,
            env_id,
            revision,
            ChangeKind::Flag,
            Some(key),
            Some(&definition),
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "flag.state",
            Some(env),
            Some(key),
            before.definition,
            definition,
        )
        .await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(record)
    }

    /// Deletes a flag.
    pub async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = current_flag(&mut tx, env_id, key)
            .await?
            .ok_or_else(|| not_found_flag(env, key))?;
        precondition.check(Some(before.version), None)?;
        sqlx::query("DELETE FROM flags WHERE environment_id = $1 AND key = $2")
            .bind(env_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        record_change(&mut tx, env_id, revision, ChangeKind::Flag, Some(key), None).await?;
        audit(
            &mut tx,
            actor,
            "flag.delete",
            Some(env),
            Some(key),
            before.definition,
            Value::Null,
        )
        .await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(())
    }

    // ---- evaluators ----

    /// Every evaluator of an environment, by key.
    pub async fn list_evaluators(&self, env: &str) -> StoreResult<Vec<EvaluatorRecord>> {
        let id = self.environment_id(env).await?;
        let rows = sqlx::query(
            "SELECT key, definition, version, created_at, updated_at FROM evaluators \
             WHERE environment_id = $1 ORDER BY key",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(evaluator_from_row).collect()
    }

    /// One evaluator.
    pub async fn get_evaluator(&self, env: &str, key: &str) -> StoreResult<EvaluatorRecord> {
        let id = self.environment_id(env).await?;
        current_evaluator(&mut *self.pool.acquire().await?, id, key)
            .await?
            .ok_or_else(|| not_found_evaluator(env, key))
    }

    /// Creates or replaces an evaluator; every flag of the environment must stay valid.
    pub async fn put_evaluator(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        definition: Value,
        precondition: Precondition,
        limits: Limits,
    ) -> StoreResult<(EvaluatorRecord, bool)> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = current_evaluator(&mut tx, env_id, key).await?;
        precondition.check(before.as_ref().map(|e| e.version), Some("evaluator"))?;
        let mut set = load_set(&mut tx, env_id).await?;
        set.evaluators.insert(key.to_string(), definition.clone());
        validate_document(&set.document(), limits)?;
        let now = now_millis();
        let version = before.as_ref().map_or(1, |e| e.version + 1);
        let row = sqlx::query(
            "INSERT INTO evaluators (environment_id, key, definition, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (environment_id, key) DO UPDATE SET definition = $3, version = $4, updated_at = $6 \
             RETURNING key, definition, version, created_at, updated_at",
        )
        .bind(env_id)
        .bind(key)
        .bind(definition.to_string())
        .bind(version)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let record = evaluator_from_row(&row)?;
        record_change(
            &mut tx,
            env_id,
            revision,
            ChangeKind::Evaluator,
            Some(key),
            Some(&definition),
        )
        .await?;
        let action = if before.is_some() {
            "evaluator.update"
        } else {
            "evaluator.create"
        };
        audit(
            &mut tx,
            actor,
            action,
            Some(env),
            Some(key),
            before
                .as_ref()
                .map_or(Value::Null, |e| e.definition.clone()),
            definition,
        )
        .await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok((record, before.is_none()))
    }

    /// Deletes an evaluator; refused while a flag or evaluator references it.
    pub async fn delete_evaluator(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = current_evaluator(&mut tx, env_id, key)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("evaluator {key:?} in environment {env:?}"))
            })?;
        precondition.check(Some(before.version), None)?;
        let set = load_set(&mut tx, env_id).await?;
        let users = references_to(key, &set);
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "evaluator {key:?} is still referenced by: {}",
                users.join(", ")
            )));
        }
        sqlx::query("DELETE FROM evaluators WHERE environment_id = $1 AND key = $2")
            .bind(env_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        record_change(
            &mut tx,
            env_id,
            revision,
            ChangeKind::Evaluator,
            Some(key),
            None,
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "evaluator.delete",
            Some(env),
            Some(key),
            before.definition,
            Value::Null,
        )
        .await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(())
    }

    // ---- whole flag sets ----

    /// The environment and its flag set as one flagd document.
    pub async fn export(&self, env: &str) -> StoreResult<(Environment, Value)> {
        // One transaction so the document and the revision agree.
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, key, name, revision, metadata, created_at, updated_at \
             FROM environments WHERE key = $1",
        )
        .bind(env)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found_env(env))?;
        let id: i64 = row.try_get("id")?;
        let environment = super::environment_from_row(&row)?;
        let set = load_set(&mut tx, id).await?;
        tx.commit().await?;
        Ok((environment, set.document()))
    }

    /// Replaces an environment's whole flag set (flags, evaluators, metadata) with `doc`: all valid
    /// or nothing changes; one revision, one audit entry.
    pub async fn replace_flagset(
        &self,
        actor: &Actor,
        env: &str,
        doc: Value,
        limits: Limits,
    ) -> StoreResult<Environment> {
        validate_document(&doc, limits)?;
        let mut tx = self.begin_write().await?;
        let (env_id, revision) = bump_revision(&mut tx, env).await?;
        let before = load_set(&mut tx, env_id).await?;
        write_set(&mut tx, env_id, &doc, &before).await?;
        let after = load_set(&mut tx, env_id).await?.document();
        record_change(
            &mut tx,
            env_id,
            revision,
            ChangeKind::FlagSet,
            None,
            Some(&after),
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "flagset.replace",
            Some(env),
            None,
            before.document(),
            after,
        )
        .await?;
        let environment = super::find_environment(&mut tx, env).await?;
        tx.commit().await?;
        self.announce(env, revision);
        Ok(environment)
    }

    /// Copies environment `from`'s flag set onto `to`, atomically, as one change of `to`.
    pub async fn promote(&self, actor: &Actor, from: &str, to: &str) -> StoreResult<Environment> {
        if from == to {
            return Err(StoreError::BadRequest(
                "cannot promote an environment onto itself".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let (to_id, revision) = bump_revision(&mut tx, to).await?;
        let from_id: i64 = sqlx::query("SELECT id FROM environments WHERE key = $1")
            .bind(from)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found_env(from))?
            .try_get("id")?;
        let source = load_set(&mut tx, from_id).await?.document();
        let before = load_set(&mut tx, to_id).await?;
        write_set(&mut tx, to_id, &source, &before).await?;
        let after = load_set(&mut tx, to_id).await?.document();
        record_change(
            &mut tx,
            to_id,
            revision,
            ChangeKind::FlagSet,
            None,
            Some(&after),
        )
        .await?;
        audit(
            &mut tx,
            actor,
            "environment.promote",
            Some(to),
            Some(from),
            before.document(),
            after,
        )
        .await?;
        let environment = super::find_environment(&mut tx, to).await?;
        tx.commit().await?;
        self.announce(to, revision);
        Ok(environment)
    }
}

fn not_found_flag(env: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!("flag {key:?} in environment {env:?}"))
}

fn not_found_evaluator(env: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!("evaluator {key:?} in environment {env:?}"))
}

/// Flag `key` of environment `env_id`, read on `conn` (a pool connection or a write transaction).
async fn current_flag(
    conn: &mut sqlx::AnyConnection,
    env_id: i64,
    key: &str,
) -> StoreResult<Option<FlagRecord>> {
    sqlx::query(
        "SELECT key, state, definition, version, created_at, updated_at FROM flags \
         WHERE environment_id = $1 AND key = $2",
    )
    .bind(env_id)
    .bind(key)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(flag_from_row)
    .transpose()
}

/// Evaluator `key` of environment `env_id`, read on `conn`.
async fn current_evaluator(
    conn: &mut sqlx::AnyConnection,
    env_id: i64,
    key: &str,
) -> StoreResult<Option<EvaluatorRecord>> {
    sqlx::query(
        "SELECT key, definition, version, created_at, updated_at FROM evaluators \
         WHERE environment_id = $1 AND key = $2",
    )
    .bind(env_id)
    .bind(key)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(evaluator_from_row)
    .transpose()
}

async fn upsert_flag(
    tx: &mut Transaction<'_, Any>,
    env_id: i64,
    key: &str,
    definition: &Value,
    before: Option<&FlagRecord>,
) -> StoreResult<FlagRecord> {
    let state = definition
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt("flag state"))?;
    let now = now_millis();
    let version = before.map_or(1, |f| f.version + 1);
    let row = sqlx::query(
        "INSERT INTO flags (environment_id, key, state, definition, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (environment_id, key) DO UPDATE SET state = $3, definition = $4, version = $5, updated_at = $7 \
         RETURNING key, state, definition, version, created_at, updated_at",
    )
    .bind(env_id)
    .bind(key)
    .bind(state.to_string())
    .bind(definition.to_string())
    .bind(version)
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    flag_from_row(&row)
}

/// Replaces an environment's rows with `doc` (already validated); flags keep counting versions.
async fn write_set(
    tx: &mut Transaction<'_, Any>,
    env_id: i64,
    doc: &Value,
    before: &SetRows,
) -> StoreResult<()> {
    for sql in [
        "DELETE FROM flags WHERE environment_id = $1",
        "DELETE FROM evaluators WHERE environment_id = $1",
    ] {
        sqlx::query(sql).bind(env_id).execute(&mut **tx).await?;
    }
    let empty = Map::new();
    let now = now_millis();
    for (key, def) in doc
        .get("flags")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        let version = before
            .versions
            .get(key)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
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
        .bind(version)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    for (key, def) in doc
        .get("$evaluators")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        sqlx::query(
            "INSERT INTO evaluators (environment_id, key, definition, version, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5)",
        )
        .bind(env_id)
        .bind(key.clone())
        .bind(def.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let metadata = doc.get("metadata").cloned().unwrap_or_else(|| json!({}));
    sqlx::query("UPDATE environments SET metadata = $1 WHERE id = $2")
        .bind(metadata.to_string())
        .bind(env_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
