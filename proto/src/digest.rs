//! The digest of a flag-set document, the same on both ends of the sync protocol: a sidecar
//! acknowledges the digest of the document it holds (`Ack.digest`) and control compares it with its
//! own document at that revision, so a sidecar holding the right revision number with the wrong
//! content shows.
//!
//! `sha256:` and the lowercase hex SHA-256 of the document's canonical JSON: object keys sorted,
//! no whitespace, and the top-level `$evaluators` and `metadata` left out when they are empty
//! objects (one side may omit what the other keeps empty). Values are written as `serde_json`
//! writes them; both sides parse the same definition texts, so numbers read alike.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The digest of `document`.
pub fn document_digest(document: &Value) -> String {
    let mut text = String::new();
    match document {
        Value::Object(top) => {
            let empty = Value::Object(serde_json::Map::new());
            let mut kept: std::collections::BTreeMap<&str, &Value> = top
                .iter()
                .filter(|(k, v)| {
                    !(matches!(k.as_str(), "$evaluators" | "metadata")
                        && v.as_object().is_some_and(|o| o.is_empty()))
                })
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            // No flags section is an empty one.
            kept.entry("flags").or_insert(&empty);
            text.push('{');
            for (i, (k, v)) in kept.into_iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                write_string(k, &mut text);
                text.push(':');
                canonical(v, &mut text);
            }
            text.push('}');
        }
        other => canonical(other, &mut text),
    }
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_string()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_content_has_the_same_digest_whatever_its_form() {
        let a = json!({"flags": {"b": {"state": "ENABLED", "variants": {"on": true}}, "a": {}},
                       "$evaluators": {}, "metadata": {}});
        let b: Value = serde_json::from_str(
            r#"{"flags":{"a":{},"b":{"variants":{"on":true},"state":"ENABLED"}}}"#,
        )
        .unwrap();
        assert_eq!(document_digest(&a), document_digest(&b));
        assert_eq!(
            document_digest(&json!({})),
            document_digest(&json!({"flags": {}}))
        );
        let d = document_digest(&a);
        assert!(d.starts_with("sha256:") && d.len() == 7 + 64, "{d}");
        // Any change of content changes it.
        for other in [
            json!({"flags": {"a": {}, "b": {"state": "DISABLED", "variants": {"on": true}}}}),
            json!({"flags": {"a": {}}}),
            json!({"flags": {"a": {}, "b": {"state": "ENABLED", "variants": {"on": true}}},
                   "metadata": {"v": 1}}),
            json!({"flags": {"a": {}, "b": {"state": "ENABLED", "variants": {"on": 1}}}}),
        ] {
            assert_ne!(document_digest(&other), d, "{other}");
        }
    }
}
