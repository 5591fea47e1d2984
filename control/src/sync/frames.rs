//! Turning the change log into `vexil.sync.v1` server frames.

use serde_json::Value;
use vexil_proto::sync::v1::{
    Delta, Entry, Full, Guarded, ServerFrame, ShadowProposal, Shadows, SigningKey, SigningKeys,
    server_frame::Kind,
};

use crate::model::{Change, ChangeKind};
use crate::store::{ProposalRecord, SigningKey as StoredKey};

/// What a `Full` read from the store carries beside the flag set; a whole-set `Full` restated
/// from the change log carries none of it (the sidecar keeps what it holds).
#[derive(Clone, Copy, Debug)]
pub struct Attached<'a> {
    /// The environment's signing keys.
    pub keys: &'a [StoredKey],
    /// Its guarded flags.
    pub guarded: &'a [String],
    /// Its flags' proposals (shadow evaluation).
    pub proposals: &'a [ProposalRecord],
}

/// A `Full` frame: the whole flag set at `revision` of incarnation `incarnation`, with the
/// environment's signing keys, guarded flags and proposals when `attached` is given (else the
/// sidecar keeps those it holds).
pub fn full(
    revision: i64,
    incarnation: &str,
    document: &Value,
    attached: Option<Attached<'_>>,
) -> ServerFrame {
    let keys = attached.map(|a| a.keys);
    ServerFrame {
        kind: Some(Kind::Full(Full {
            revision,
            flag_set: document.to_string(),
            incarnation: incarnation.to_string(),
            signing_keys: keys.map(|keys| SigningKeys {
                keys: keys
                    .iter()
                    .map(|k| SigningKey {
                        id: k.id.clone(),
                        secret: k.secret_bytes(),
                        created_at_ms: k.created_at,
                    })
                    .collect(),
            }),
            guarded: attached.map(|a| Guarded {
                flags: a.guarded.to_vec(),
            }),
            shadows: attached.map(|a| Shadows {
                proposals: a
                    .proposals
                    .iter()
                    .map(|p| ShadowProposal {
                        flag: p.flag.clone(),
                        id: p.id.clone(),
                        definition: p.definition.to_string(),
                        sample_ratio: p.sample_ratio,
                    })
                    .collect(),
            }),
        })),
    }
}

/// The frame that takes a sidecar from `from` to `change.revision`: a `Delta` for a flag or
/// evaluator change, a `Full` for a whole-set change (import, promotion, metadata). `None` for a
/// change that needs the environment's current `Full` from the store (a signing-key rotation:
/// the change log holds no secret; a guard set or removed, a proposal set, dropped or published:
/// the `Full` carries the guarded flags and the proposals).
pub fn for_change(from: i64, incarnation: &str, change: &Change) -> Option<ServerFrame> {
    let key = change.key.clone().unwrap_or_default();
    let upsert = change.definition.as_ref().map(|d| Entry {
        key: key.clone(),
        definition: d.to_string(),
    });
    let mut delta = Delta {
        from,
        to: change.revision,
        ..Delta::default()
    };
    match change.kind {
        ChangeKind::FlagSet => {
            let empty = Value::Object(Default::default());
            return Some(full(
                change.revision,
                incarnation,
                change.definition.as_ref().unwrap_or(&empty),
                None,
            ));
        }
        ChangeKind::SigningKeys | ChangeKind::Guards | ChangeKind::Proposals => return None,
        ChangeKind::Flag => match upsert {
            Some(e) => delta.flag_upserts.push(e),
            None => delta.flag_removals.push(key),
        },
        ChangeKind::Evaluator => match upsert {
            Some(e) => delta.evaluator_upserts.push(e),
            None => delta.evaluator_removals.push(key),
        },
    }
    Some(ServerFrame {
        kind: Some(Kind::Delta(delta)),
    })
}

/// True for a `Full` frame.
pub fn is_full(frame: &ServerFrame) -> bool {
    matches!(frame.kind, Some(Kind::Full(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: ChangeKind, key: Option<&str>, definition: Option<Value>) -> Change {
        Change {
            revision: 8,
            kind,
            key: key.map(String::from),
            definition,
        }
    }

    #[test]
    fn flag_and_evaluator_changes_are_deltas() {
        let f = for_change(
            7,
            "i1",
            &change(ChangeKind::Flag, Some("a"), Some(json!({"x": 1}))),
        )
        .unwrap();
        let Some(Kind::Delta(d)) = f.kind else {
            panic!("{f:?}")
        };
        assert_eq!((d.from, d.to), (7, 8));
        assert_eq!(d.flag_upserts[0].definition, r#"{"x":1}"#);
        let f = for_change(7, "i1", &change(ChangeKind::Evaluator, Some("seg"), None)).unwrap();
        let Some(Kind::Delta(d)) = f.kind else {
            panic!("{f:?}")
        };
        assert_eq!(d.evaluator_removals, ["seg"]);
        assert!(d.flag_upserts.is_empty() && d.metadata.is_none());
    }

    #[test]
    fn a_whole_set_change_is_a_full_snapshot() {
        let doc = json!({"flags": {}});
        let f = for_change(7, "i1", &change(ChangeKind::FlagSet, None, Some(doc))).unwrap();
        let Some(Kind::Full(full)) = f.kind else {
            panic!("{f:?}")
        };
        assert_eq!(
            (full.revision, full.flag_set.as_str()),
            (8, r#"{"flags":{}}"#)
        );
        assert_eq!(full.incarnation, "i1");
        // From the change log: no keys, no proposals: the sidecar keeps those it holds.
        assert!(full.signing_keys.is_none() && full.shadows.is_none());
    }

    #[test]
    fn a_key_rotation_needs_the_stores_full() {
        assert!(for_change(7, "i1", &change(ChangeKind::SigningKeys, None, None)).is_none());
        assert!(for_change(7, "i1", &change(ChangeKind::Proposals, Some("a"), None)).is_none());
    }
}
