//! Flags: reads, and the three flag writes (put, kill switch, delete) as changes for the write path
//! ([`super::write`]), with the SQL of a flag row.

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::write::{EnvWrite, Precondition, Scope, Tx, WriteLimits};
use super::{Actor, Saved, Store, StoreError, StoreResult, corrupt, environment_id, json_opt};
use crate::model::{FlagRecord, Page, now_millis, rfc3339};

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

impl Store {
    /// A page of an environment's flags, by key.
    pub async fn list_flags(&self, env: &str, q: &FlagQuery) -> StoreResult<Page<FlagRecord>> {
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        let mut items = Vec::new();
        let mut after = q.after.clone();
        let batch = (q.limit + 1).max(64);
        let start = q.prefix.clone();
        'scan: loop {
            let rows = sqlx::query(
                "SELECT f.key, f.state, f.definition, f.version, f.created_at, f.updated_at, \
                 s.schema FROM flags f LEFT JOIN flag_schemas s \
                 ON s.environment_id = f.environment_id AND s.key = f.key \
                 WHERE f.environment_id = $1 AND ($2 IS NULL OR f.state = $2) \
                 AND ($3 IS NULL OR f.key >= $3) AND ($4 IS NULL OR f.key > $4) \
                 ORDER BY f.key LIMIT $5",
            )
            .bind(id)
            .bind(q.state.clone())
            .bind(start.clone())
            .bind(after.clone())
            .bind(batch)
            .fetch_all(&mut *conn)
            .await?;
            let exhausted = (rows.len() as i64) < batch;
            for r in &rows {
                let flag = flag_with_schema(r)?;
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
        let mut conn = self.pool.acquire().await?;
        let id = environment_id(&mut conn, env).await?;
        sqlx::query(
            "SELECT f.key, f.state, f.definition, f.version, f.created_at, f.updated_at, s.schema \
             FROM flags f LEFT JOIN flag_schemas s \
             ON s.environment_id = f.environment_id AND s.key = f.key \
             WHERE f.environment_id = $1 AND f.key = $2",
        )
        .bind(id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(flag_with_schema)
        .transpose()?
        .ok_or_else(|| not_found(env, key))
    }

    /// Creates or replaces a flag. Replacing needs `If-Match`. Returns the record, whether it was
    /// created, and the environment's new revision.
    pub async fn put_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        definition: Value,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Saved<FlagRecord>> {
        let write = EnvWrite::new(env, Scope::Flag(key.into()), move |draft| {
            let current = draft.versions().flag(key);
            precondition.check(current, Some("flag"))?;
            draft.set.flags.insert(key.to_string(), definition.clone());
            Ok(if current.is_some() {
                "flag.update"
            } else {
                "flag.create"
            })
        });
        let written = self.write(actor, limits, write).await?;
        Ok(Saved {
            revision: written.environment.revision,
            created: written.created,
            record: written_flag(written.flag)?,
        })
    }

    /// The kill switch: sets a flag's `state`. Returns the record and the environment's new
    /// revision.
    pub async fn set_flag_state(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        state: &str,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<Saved<FlagRecord>> {
        check_state(state)?;
        let write = EnvWrite::new(env, Scope::Flag(key.into()), move |draft| {
            let current = draft.versions().flag(key);
            precondition.check(Some(current.ok_or_else(|| not_found(env, key))?), None)?;
            draft
                .set
                .flags
                .get_mut(key)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| corrupt("flags.definition"))?
                .insert("state".into(), Value::from(state));
            Ok("flag.state")
        });
        let written = self.write(actor, limits, write).await?;
        Ok(Saved {
            revision: written.environment.revision,
            created: false,
            record: written_flag(written.flag)?,
        })
    }

    /// Deletes a flag; returns the environment's new revision.
    pub async fn delete_flag(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        precondition: Precondition,
        limits: WriteLimits,
    ) -> StoreResult<i64> {
        let write = EnvWrite::new(env, Scope::Flag(key.into()), move |draft| {
            let current = draft.versions().flag(key);
            precondition.check(Some(current.ok_or_else(|| not_found(env, key))?), None)?;
            draft.set.flags.remove(key);
            Ok("flag.delete")
        });
        Ok(self.write(actor, limits, write).await?.environment.revision)
    }
}

/// A flag row read with its schema (`LEFT JOIN flag_schemas s`, column `schema`).
fn flag_with_schema(r: &AnyRow) -> StoreResult<FlagRecord> {
    Ok(FlagRecord {
        schema: json_opt(r.try_get("schema")?)?,
        ..flag_from_row(r)?
    })
}

fn flag_from_row(r: &AnyRow) -> StoreResult<FlagRecord> {
    Ok(FlagRecord {
        key: r.try_get("key")?,
        state: r.try_get("state")?,
        definition: json_opt(Some(r.try_get("definition")?))?.unwrap_or(Value::Null),
        schema: None,
        version: r.try_get("version")?,
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
    })
}

fn not_found(env: &str, key: &str) -> StoreError {
    StoreError::NotFound(format!("flag {key:?} in environment {env:?}"))
}

/// The flag row a flag write wrote.
fn written_flag(flag: Option<FlagRecord>) -> StoreResult<FlagRecord> {
    flag.ok_or_else(|| corrupt("the written flag"))
}

/// Writes flag `key`'s row with `definition` (already validated), at the version after `stored`.
pub(super) async fn upsert_row(
    tx: &mut Tx,
    env_id: i64,
    key: &str,
    definition: &Value,
    stored: Option<i64>,
) -> StoreResult<FlagRecord> {
    let state = definition
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt("flag state"))?;
    let now = now_millis();
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
    .bind(stored.map_or(1, |v| v + 1))
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    flag_from_row(&row)
}

/// Deletes flag `key`'s row.
pub(super) async fn delete_row(tx: &mut Tx, env_id: i64, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM flags WHERE environment_id = $1 AND key = $2")
        .bind(env_id)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
