//! JSON Schemas of flags used as configuration (docs/adr/0036-json-schemas-beside-flags.md).
//!
//! A flag whose variants are values (objects, strings, numbers) can have a JSON Schema that every
//! variant must match. It is kept beside the flag, one per environment and flag key
//! (`flag_schemas`), not in the flag's definition: sidecars and the flagd export never see it.
//!
//! - Setting a schema ([`Store::put_flag_schema`]) checks the schema itself (size, depth, its
//!   meta-schema; no `$ref` outside the document) and the flag's current variants against it.
//! - Every write of the environment's set ([`check_variants`], called by the write path for a flag
//!   write and a whole-set write; an evaluator write does not change variants) checks the variants
//!   it leaves against the schemas of their keys.
//!
//! A problem is a [`ValidationError`] whose path is in the flag-set document
//! (`flags.config.variants.dark.colors[0]`) or in the schema (`schema.properties.colors.type`),
//! written as the engine writes its paths.

use std::collections::HashMap;

use jsonschema::{PatternOptions, Validator};
use serde_json::Value;
use sqlx::Row;
use vexil_engine::{ValidationError, ValidationErrors};

use super::write::{SetRows, Tx};
use super::{Actor, Backend, Store, StoreError, StoreResult, audit, corrupt, json_opt};
use crate::model::now_millis;

/// Largest schema, in bytes of compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Deepest nesting of a schema's objects and arrays.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Problems listed per variant, at most (a variant far off its schema says enough with these).
const MAX_PROBLEMS_PER_VARIANT: usize = 10;

/// Keys written bare in a path (as the engine writes them): letters, digits, `_`, `-` and `$`.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
}

/// Appends object key `key` to `path`.
pub(super) fn push_key(path: &mut String, key: &str) {
    if is_plain_key(key) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::from(key).to_string());
        path.push(']');
    }
}

/// `base` followed by the JSON pointer `pointer` into `value` (an array's members as `[i]`).
fn path_of(base: &str, value: &Value, pointer: &str) -> String {
    let mut path = base.to_string();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) if seg.parse::<usize>().is_ok() => {
                let i: usize = seg.parse().unwrap_or(0);
                path.push_str(&format!("[{i}]"));
                at = items.get(i);
            }
            Some(Value::Object(members)) => {
                push_key(&mut path, &seg);
                at = members.get(&seg);
            }
            _ => {
                push_key(&mut path, &seg);
                at = None;
            }
        }
    }
    path
}

/// The nesting depth of `v` (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn problem(path: String, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path,
        message: message.into(),
    }
}

/// Checks `schema` (an object or a boolean, within the size and depth limits, valid against its
/// meta-schema, no reference outside itself) and compiles it; or every problem, with paths under
/// `schema`. Patterns are compiled with the `regex` crate: linear time, whatever the variant.
pub(crate) fn compile(schema: &Value) -> Result<Validator, Vec<ValidationError>> {
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err(vec![problem(
            "schema".into(),
            "a JSON Schema is an object (or true or false)",
        )]);
    }
    let mut problems = Vec::new();
    let size = schema.to_string().len();
    if size > MAX_SCHEMA_BYTES {
        problems.push(problem(
            "schema".into(),
            format!("{size} bytes of JSON, more than the limit of {MAX_SCHEMA_BYTES}"),
        ));
    }
    let deep = depth(schema);
    if deep > MAX_SCHEMA_DEPTH {
        problems.push(problem(
            "schema".into(),
            format!("nested {deep} levels deep, more than the limit of {MAX_SCHEMA_DEPTH}"),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    jsonschema::options()
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .map_err(|e| {
            vec![problem(
                path_of("schema", schema, e.instance_path().as_str()),
                e.to_string(),
            )]
        })
}

/// The problems of flag `key`'s variants (in `definition`) against `validator`: each with its path
/// in the flag-set document and the schema's keyword that refused it.
fn variant_problems(key: &str, definition: &Value, validator: &Validator) -> Vec<ValidationError> {
    let mut base = String::from("flags");
    push_key(&mut base, key);
    base.push_str(".variants");
    let Some(variants) = definition.get("variants").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (name, value) in variants {
        let mut at = base.clone();
        push_key(&mut at, name);
        for e in validator.iter_errors(value).take(MAX_PROBLEMS_PER_VARIANT) {
            problems.push(problem(
                path_of(&at, value, e.instance_path().as_str()),
                format!(
                    "does not match the flag's schema at {}: {e}",
                    path_of("schema", &Value::Null, e.schema_path().as_str())
                ),
            ));
        }
    }
    problems
}

/// The refusal of a write whose variants do not match their schemas: `detail` names the flags and
/// variants.
fn violation(problems: Vec<ValidationError>) -> StoreError {
    let mut named: Vec<String> = Vec::new();
    for p in &problems {
        // flags.<key>.variants.<name>: the first four segments name the flag and the variant.
        let mut head = String::new();
        let mut depth = 0;
        for (i, c) in p.path.char_indices() {
            if (c == '.' || c == '[') && i > 0 {
                depth += 1;
                if depth == 4 {
                    break;
                }
            }
            head.push(c);
        }
        if !named.contains(&head) {
            named.push(head);
        }
    }
    StoreError::SchemaViolation {
        detail: format!(
            "variants do not match their flag's JSON Schema: {}",
            named.join(", ")
        ),
        errors: ValidationErrors(problems),
    }
}

/// The schemas of environment `env_id`'s flags `keys` (all of them when `None`), as stored.
async fn load(
    conn: &mut sqlx::AnyConnection,
    env_id: i64,
    keys: Option<&str>,
) -> StoreResult<HashMap<String, Value>> {
    let rows = sqlx::query(
        "SELECT key, schema FROM flag_schemas WHERE environment_id = $1 AND ($2 IS NULL OR key = $2)",
    )
    .bind(env_id)
    .bind(keys.map(str::to_string))
    .fetch_all(conn)
    .await?;
    let mut schemas = HashMap::new();
    for r in rows {
        let schema = json_opt(Some(r.try_get("schema")?))?.ok_or_else(|| corrupt("flag schema"))?;
        schemas.insert(r.try_get("key")?, schema);
    }
    Ok(schemas)
}

/// Checks one flag definition's variants against `schema` (the check of [`check_variants`] for a
/// definition not written yet: the editor's validation).
pub(crate) fn check_definition(key: &str, definition: &Value, schema: &Value) -> StoreResult<()> {
    let validator = compile(schema).map_err(|_| corrupt("flag schema"))?;
    let mut problems = variant_problems(key, definition, &validator);
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Err(violation(problems))
}

/// Checks the variants `after` leaves against their schemas, inside the write's transaction: of
/// flag `key` only, or of every flag when `None` (a whole-set write). Returns the schemas read
/// (the written flag's record shows its own).
pub(crate) async fn check_variants(
    tx: &mut Tx,
    env_id: i64,
    key: Option<&str>,
    after: &SetRows,
) -> StoreResult<HashMap<String, Value>> {
    let schemas = load(tx, env_id, key).await?;
    let mut problems = Vec::new();
    for (key, schema) in &schemas {
        let Some(definition) = after.flags.get(key) else {
            continue;
        };
        let validator = compile(schema).map_err(|_| corrupt("flag schema"))?;
        problems.extend(variant_problems(key, definition, &validator));
    }
    if problems.is_empty() {
        Ok(schemas)
    } else {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Err(violation(problems))
    }
}

impl Store {
    /// Flag `key`'s schema in `env` (`None`: it has none).
    pub async fn flag_schema(&self, env: &str, key: &str) -> StoreResult<Option<Value>> {
        let mut conn = self.pool.acquire().await?;
        let id = super::environment_id(&mut conn, env).await?;
        Ok(load(&mut conn, id, Some(key)).await?.remove(key))
    }

    /// Sets (`Some`) or removes (`None`) flag `key`'s schema in `env`, and audits it. A schema is
    /// checked ([`compile`]) and, when the flag exists, its variants against it, with the
    /// environment locked so no flag write slips between. No revision: sidecars hold nothing of it.
    pub async fn set_flag_schema(
        &self,
        actor: &Actor,
        env: &str,
        key: &str,
        schema: Option<Value>,
    ) -> StoreResult<()> {
        let validator = match &schema {
            Some(schema) => {
                Some(
                    compile(schema).map_err(|errors| StoreError::SchemaViolation {
                        detail: format!("the JSON Schema of flag {key:?} is invalid"),
                        errors: ValidationErrors(errors),
                    })?,
                )
            }
            None => None,
        };
        let mut tx = self.begin_write().await?;
        // The environment's row, locked as a flag write locks it (on SQLite the transaction holds
        // the database's write lock already).
        let lock = match self.backend {
            Backend::Postgres => "SELECT id FROM environments WHERE key = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT id FROM environments WHERE key = $1",
        };
        let env_id: i64 = sqlx::query(lock)
            .bind(env)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| super::not_found_env(env))?
            .try_get("id")?;
        let before = load(&mut tx, env_id, Some(key)).await?.remove(key);
        if schema.is_none() && before.is_none() {
            return Err(StoreError::NotFound(format!(
                "a JSON Schema of flag {key:?} in environment {env:?}"
            )));
        }
        if let Some(validator) = &validator {
            let definition: Option<String> =
                sqlx::query("SELECT definition FROM flags WHERE environment_id = $1 AND key = $2")
                    .bind(env_id)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("definition"))
                    .transpose()?;
            if let Some(definition) = json_opt(definition)? {
                let problems = variant_problems(key, &definition, validator);
                if !problems.is_empty() {
                    return Err(violation(problems));
                }
            }
        }
        match &schema {
            Some(schema) => {
                sqlx::query(
                    "INSERT INTO flag_schemas (environment_id, key, schema, updated_at) \
                     VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (environment_id, key) DO UPDATE SET schema = $3, updated_at = $4",
                )
                .bind(env_id)
                .bind(key)
                .bind(schema.to_string())
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM flag_schemas WHERE environment_id = $1 AND key = $2")
                    .bind(env_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let action = if schema.is_some() {
            "flag.schema.put"
        } else {
            "flag.schema.delete"
        };
        audit(
            &mut tx,
            actor,
            action,
            Some(env),
            Some(key),
            before.unwrap_or(Value::Null),
            schema.unwrap_or(Value::Null),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_written_like_the_engine_writes_them() {
        let value = json!({"colors": ["red", 5], "a b": {"c": 1}});
        assert_eq!(path_of("flags.x", &value, "/colors/1"), "flags.x.colors[1]");
        assert_eq!(path_of("flags.x", &value, "/a b/c"), "flags.x[\"a b\"].c");
        assert_eq!(path_of("flags.x", &value, ""), "flags.x");
    }

    #[test]
    fn variants_are_checked_with_their_paths() {
        let schema = json!({"type": "object", "required": ["size"],
            "properties": {"size": {"type": "integer", "maximum": 100},
                           "colors": {"type": "array", "items": {"type": "string"}}}});
        let v = compile(&schema).unwrap();
        let def = json!({"variants": {"ok": {"size": 10}, "bad": {"size": 500, "colors": ["red", 5]}},
                         "state": "ENABLED", "defaultVariant": "ok"});
        let problems = variant_problems("config", &def, &v);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "flags.config.variants.bad.colors[1]",
                "flags.config.variants.bad.size"
            ]
        );
        assert!(
            problems[0]
                .message
                .contains("schema.properties.colors.items.type"),
            "{problems:?}"
        );
        let StoreError::SchemaViolation { detail, .. } = violation(problems) else {
            unreachable!()
        };
        assert!(detail.ends_with("flags.config.variants.bad"), "{detail}");
    }

    #[test]
    fn bad_schemas_are_refused_with_their_path() {
        let e = compile(&json!({"properties": {"size": {"type": "integr"}}})).unwrap_err();
        assert_eq!(e[0].path, "schema.properties.size.type", "{e:?}");
        let e = compile(&json!("string")).unwrap_err();
        assert_eq!(e[0].path, "schema");
        let e = compile(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(e[0].message.contains("example.com"), "{e:?}");
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"items": deep});
        }
        let e = compile(&deep).unwrap_err();
        assert!(e[0].message.contains("levels deep"), "{e:?}");
        let big = json!({"enum": (0..20_000).collect::<Vec<_>>()});
        let e = compile(&big).unwrap_err();
        assert!(e[0].message.contains("bytes of JSON"), "{e:?}");
    }
}
