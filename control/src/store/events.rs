//! The change log as events for the change stream (`GET /api/v1/environments/{env}/events`):
//! each change with its audit entry (who, when, which keys), read from the store so that every
//! replica streams every commit, whichever replica made it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sqlx::Row;

use super::{Store, StoreResult, corrupt, json_opt};
use crate::model::{ChangeKind, Millis};

/// One committed change, as the change stream shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    /// The revision it made.
    pub revision: i64,
    /// What it touched.
    pub kind: ChangeKind,
    /// The audit action (`flag.update`, `flagset.replace`, `environment.promote`...); `None` when
    /// its audit entry is gone (pruned) or predates the link.
    pub action: Option<String>,
    /// The flags it changed: the flag of a flag change; for a whole-set change, every flag added,
    /// removed or changed (when its audit entry is still there).
    pub keys: Vec<String>,
    /// The evaluators it changed, likewise.
    pub evaluators: Vec<String>,
    /// Who made it (token name, `jwt:<sub>`); `None` when its audit entry is gone.
    pub actor: Option<String>,
    /// When it was committed.
    pub at: Millis,
}

impl Store {
    /// The changes of `environment` (of incarnation `incarnation`) after `revision`, oldest
    /// first, at most `limit`, with their audit entries.
    pub async fn change_events(
        &self,
        environment: &str,
        incarnation: &str,
        revision: i64,
        limit: i64,
    ) -> StoreResult<Vec<ChangeEvent>> {
        // The audit entries' documents are read one change at a time below, and only for
        // whole-set changes: a batch of whole flag sets (before and after) could be gigabytes.
        let rows = sqlx::query(
            "SELECT c.revision, c.kind, c.key, c.created_at, c.audit_id, a.actor, a.action \
             FROM changes c JOIN environments e ON e.id = c.environment_id \
             LEFT JOIN audit a ON a.id = c.audit_id \
             WHERE e.key = $1 AND e.incarnation = $2 AND c.revision > $3 \
             ORDER BY c.revision LIMIT $4",
        )
        .bind(environment)
        .bind(incarnation)
        .bind(revision)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            let kind = ChangeKind::parse(&kind).ok_or_else(|| corrupt("changes.kind"))?;
            let key: Option<String> = r.try_get("key")?;
            let action: Option<String> = r.try_get("action")?;
            let (mut keys, mut evaluators) = (Vec::new(), Vec::new());
            match (kind, key) {
                (ChangeKind::Flag, Some(key)) => keys.push(key),
                (ChangeKind::Evaluator, Some(key)) => evaluators.push(key),
                // A proposal set or dropped: the flag's page changes (its live definition does
                // not; a publish also changes it, and its audit entry says how).
                (ChangeKind::Proposals, Some(key)) => keys.push(key),
                // A key rotation changes no flag (its audit entry holds key ids).
                (ChangeKind::SigningKeys, _) => {}
                _ if action.is_some() => {
                    let audit_id: Option<i64> = r.try_get("audit_id")?;
                    let docs = sqlx::query("SELECT before, after FROM audit WHERE id = $1")
                        .bind(audit_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    if let Some(docs) = docs {
                        let before = json_opt(docs.try_get("before")?)?.unwrap_or(Value::Null);
                        let after = json_opt(docs.try_get("after")?)?.unwrap_or(Value::Null);
                        keys = changed(&before, &after, "flags");
                        evaluators = changed(&before, &after, "$evaluators");
                    }
                }
                _ => {}
            }
            events.push(ChangeEvent {
                revision: r.try_get("revision")?,
                kind,
                action,
                keys,
                evaluators,
                actor: r.try_get("actor")?,
                at: r.try_get("created_at")?,
            });
        }
        Ok(events)
    }

    /// The revision of the oldest change of `environment` still in the change log, if any.
    pub async fn oldest_change(&self, environment: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query(
            "SELECT MIN(c.revision) AS r FROM changes c \
             JOIN environments e ON e.id = c.environment_id WHERE e.key = $1",
        )
        .bind(environment)
        .fetch_one(&self.pool)
        .await?
        .try_get("r")?)
    }
}

/// The items of `section` (`flags`, `$evaluators`) of two flagd documents that differ: added,
/// removed or changed, sorted.
fn changed(before: &Value, after: &Value, section: &str) -> Vec<String> {
    let empty = Map::new();
    let a = before[section].as_object().unwrap_or(&empty);
    let b = after[section].as_object().unwrap_or(&empty);
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::changed;

    #[test]
    fn a_whole_set_change_names_what_differs() {
        let before = json!({"flags": {"a": 1, "b": 2, "c": 3}, "$evaluators": {"x": 1}});
        let after = json!({"flags": {"a": 1, "b": 5, "d": 4}});
        assert_eq!(changed(&before, &after, "flags"), ["b", "c", "d"]);
        assert_eq!(changed(&before, &after, "$evaluators"), ["x"]);
        assert!(changed(&json!(null), &json!(null), "flags").is_empty());
    }
}
