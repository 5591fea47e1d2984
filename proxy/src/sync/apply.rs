//! Applying server frames to the document a sidecar holds.
//!
//! The sidecar keeps the flagd document of its current revision. A `Full` replaces it; a `Delta`
//! edits it in place, only when its `from` is the held revision. Either way the result is
//! compiled into a new [`FlagSet`] that is swapped in whole.

use std::sync::Arc;

use serde_json::{Map, Value};
use vexil_engine::{CompileOptions, FlagSet, Mode};
use vexil_proto::sync::v1::{Delta, Entry};

use crate::shadow::Proposals;
use crate::signing::SigningKeys;

/// The document at one revision.
#[derive(Debug, Clone)]
pub struct Held {
    /// The revision.
    pub revision: i64,
    /// The environment's incarnation the revision belongs to (empty: unknown).
    pub incarnation: String,
    /// The flagd document (`flags`, `$evaluators`, `metadata`), always a JSON object.
    pub document: Value,
    /// The environment's signing keys (the last `Full` that carried them).
    pub signing: Arc<SigningKeys>,
    /// The environment's proposals, for shadow evaluation (the last `Full` that carried them).
    pub proposals: Arc<Proposals>,
}

/// Why a frame could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// The delta does not start at the held revision.
    #[error("delta from {from} does not apply on top of revision {held}")]
    OutOfStep {
        /// The delta's `from`.
        from: i64,
        /// The revision held (0: nothing).
        held: i64,
    },
    /// The frame's content is not valid.
    #[error("invalid frame content: {0}")]
    Invalid(String),
}

/// Parses a `Full.flag_set`.
pub fn parse_full(flag_set: &str) -> Result<Value, ApplyError> {
    match serde_json::from_str(flag_set) {
        Ok(doc @ Value::Object(_)) => Ok(doc),
        Ok(_) => Err(ApplyError::Invalid(
            "Full.flag_set is not a JSON object".into(),
        )),
        Err(e) => Err(ApplyError::Invalid(format!("Full.flag_set: {e}"))),
    }
}

/// Applies `delta` to `held` in place. On error `held` is unchanged.
pub fn apply_delta(held: &mut Held, delta: &Delta) -> Result<(), ApplyError> {
    if delta.from != held.revision {
        return Err(ApplyError::OutOfStep {
            from: delta.from,
            held: held.revision,
        });
    }
    if delta.to <= delta.from {
        return Err(ApplyError::Invalid(format!(
            "Delta.to {} is not after Delta.from {}",
            delta.to, delta.from
        )));
    }
    // Parse everything first, so a bad entry leaves the document untouched.
    let flags = parse_entries("flag_upserts", &delta.flag_upserts)?;
    let evaluators = parse_entries("evaluator_upserts", &delta.evaluator_upserts)?;
    let metadata = match &delta.metadata {
        None => None,
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Some(m),
            _ => {
                return Err(ApplyError::Invalid(
                    "Delta.metadata is not a JSON object".into(),
                ));
            }
        },
    };
    let doc = held
        .document
        .as_object_mut()
        .ok_or_else(|| ApplyError::Invalid("the held document is not an object".into()))?;
    edit(doc, "flags", flags, &delta.flag_removals);
    edit(doc, "$evaluators", evaluators, &delta.evaluator_removals);
    if let Some(m) = metadata {
        doc.insert("metadata".into(), Value::Object(m));
    }
    held.revision = delta.to;
    Ok(())
}

fn parse_entries(field: &str, entries: &[Entry]) -> Result<Vec<(String, Value)>, ApplyError> {
    entries
        .iter()
        .map(|e| {
            serde_json::from_str(&e.definition)
                .map(|v| (e.key.clone(), v))
                .map_err(|err| ApplyError::Invalid(format!("Delta.{field}[{:?}]: {err}", e.key)))
        })
        .collect()
}

fn edit(
    doc: &mut Map<String, Value>,
    section: &str,
    upserts: Vec<(String, Value)>,
    removals: &[String],
) {
    if upserts.is_empty() && removals.is_empty() {
        return;
    }
    let entry = doc
        .entry(section.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let map = entry.as_object_mut().expect("made an object above");
    for key in removals {
        map.remove(key);
    }
    for (key, value) in upserts {
        map.insert(key, value);
    }
    if section == "$evaluators" && map.is_empty() {
        doc.remove(section);
    }
}

/// Compiles `held` just after `delta` was applied to it. When the delta touched only flags (not
/// `$evaluators`, not metadata) and `base` is the set compiled at the delta's `from`, only the
/// upserted flags are compiled and the others are shared with `base` ([`FlagSet::with_changes`]):
/// a one-flag change to a set of thousands then costs one flag's compilation. Otherwise the whole
/// document is compiled.
pub fn compile_after(
    delta: &Delta,
    held: &Held,
    base: Option<&FlagSet>,
) -> Result<FlagSet, ApplyError> {
    let flags_only = delta.evaluator_upserts.is_empty()
        && delta.evaluator_removals.is_empty()
        && delta.metadata.is_none();
    let defs = held.document.get("flags").and_then(Value::as_object);
    match (base, defs) {
        (Some(base), Some(defs)) if flags_only => {
            let upserts = delta
                .flag_upserts
                .iter()
                .filter_map(|e| defs.get_key_value(&e.key))
                .map(|(k, v)| (k.as_str(), v));
            let removals = delta.flag_removals.iter().map(String::as_str);
            base.with_changes(upserts, removals, &lenient())
                .map_err(|e| ApplyError::Invalid(e.to_string()))
        }
        _ => compile(&held.document),
    }
}

fn lenient() -> CompileOptions {
    CompileOptions {
        mode: Mode::Lenient,
        ..CompileOptions::default()
    }
}

/// Compiles a held document. Lenient: a flag that does not compile (say, an operator this
/// sidecar does not know yet) answers `PARSE_ERROR` while every other flag is served.
pub fn compile(document: &Value) -> Result<FlagSet, ApplyError> {
    FlagSet::compile(document, &lenient()).map_err(|e| ApplyError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn held() -> Held {
        Held {
            signing: SigningKeys::none(),
            proposals: Proposals::none(),
            revision: 3,
            incarnation: String::new(),
            document: parse_full(
                r#"{"flags":{"a":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}"#,
            )
            .unwrap(),
        }
    }

    fn entry(key: &str, v: Value) -> Entry {
        Entry {
            key: key.into(),
            definition: v.to_string(),
        }
    }

    #[test]
    fn deltas_apply_only_on_their_base() {
        let mut h = held();
        let d = Delta {
            from: 2,
            to: 4,
            ..Delta::default()
        };
        assert_eq!(
            apply_delta(&mut h, &d),
            Err(ApplyError::OutOfStep { from: 2, held: 3 })
        );
        let flag = json!({"state":"ENABLED","variants":{"x":"y"},"defaultVariant":"x"});
        let d = Delta {
            from: 3,
            to: 4,
            flag_upserts: vec![entry("b", flag.clone())],
            flag_removals: vec!["a".into()],
            evaluator_upserts: vec![entry("seg", json!({"in": [1, [1]]}))],
            metadata: Some(r#"{"team":"x"}"#.into()),
            ..Delta::default()
        };
        apply_delta(&mut h, &d).unwrap();
        assert_eq!(h.revision, 4);
        assert_eq!(
            h.document,
            json!({"flags": {"b": flag}, "$evaluators": {"seg": {"in": [1, [1]]}}, "metadata": {"team": "x"}})
        );
        let set = compile(&h.document).unwrap();
        assert!(set.get("b").is_some() && set.get("a").is_none());
    }

    #[test]
    fn a_bad_entry_changes_nothing() {
        let mut h = held();
        let before = h.document.clone();
        let d = Delta {
            from: 3,
            to: 4,
            flag_removals: vec!["a".into()],
            flag_upserts: vec![Entry {
                key: "b".into(),
                definition: "{not json".into(),
            }],
            ..Delta::default()
        };
        assert!(matches!(
            apply_delta(&mut h, &d),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!((h.revision, h.document), (3, before));
    }

    /// A flags-only delta compiles only its flags and shares the rest with the base set; a delta
    /// that touches `$evaluators` or metadata compiles the whole document. Either way the result
    /// is what compiling the held document gives.
    #[test]
    fn flags_only_deltas_compile_only_their_flags() {
        let flag = |v: &str| json!({"state":"ENABLED","variants":{"v":v},"defaultVariant":"v"});
        let mut h = Held {
            signing: SigningKeys::none(),
            proposals: Proposals::none(),
            revision: 3,
            incarnation: String::new(),
            document: json!({"flags": {"a": flag("a"), "b": flag("b")}}),
        };
        let base = compile(&h.document).unwrap();
        let d = Delta {
            from: 3,
            to: 4,
            flag_upserts: vec![entry("c", flag("c")), entry("b", flag("b2"))],
            flag_removals: vec!["a".into()],
            ..Delta::default()
        };
        apply_delta(&mut h, &d).unwrap();
        let patched = compile_after(&d, &h, Some(&base)).unwrap();
        assert_eq!(
            patched.to_document(),
            compile(&h.document).unwrap().to_document()
        );

        let d = Delta {
            from: 4,
            to: 5,
            flag_upserts: vec![entry("d", flag("d"))],
            ..Delta::default()
        };
        apply_delta(&mut h, &d).unwrap();
        let next = compile_after(&d, &h, Some(&patched)).unwrap();
        assert!(std::ptr::eq(
            patched.get("c").unwrap(),
            next.get("c").unwrap()
        ));

        let d = Delta {
            from: 5,
            to: 6,
            evaluator_upserts: vec![entry("seg", json!({"in": [1, [1]]}))],
            ..Delta::default()
        };
        apply_delta(&mut h, &d).unwrap();
        let whole = compile_after(&d, &h, Some(&next)).unwrap();
        assert!(!std::ptr::eq(
            next.get("c").unwrap(),
            whole.get("c").unwrap()
        ));
        assert_eq!(whole.evaluators().len(), 1);
    }
}
