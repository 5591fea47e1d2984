//! Resolution rules: reasons, error codes, types, metadata merging, `$ref`, resolve-all.

use serde_json::{Value, json};
use vexil_engine::{ErrorCode, EvaluationContext, FlagSet, FractionalVersion, Reason};

fn set() -> FlagSet {
    FlagSet::from_json(&json!({
        "metadata": {"team": "payments", "version": 1},
        "$evaluators": {
            "is_staff": {"ends_with": [{"var": "email"}, "@vexil.dev"]},
            "staff_or_beta": {"or": [{"$ref": "is_staff"}, {"==": [{"var": "beta"}, true]}]}
        },
        "flags": {
            "static-bool": {"state": "ENABLED", "variants": {"on": true, "off": false},
                            "defaultVariant": "on", "metadata": {"version": 2, "owner": "ada"}},
            "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false},
                         "defaultVariant": "on"},
            "targeted": {"state": "ENABLED", "variants": {"blue": "#00f", "red": "#f00"},
                         "defaultVariant": "red",
                         "targeting": {"if": [{"$ref": "staff_or_beta"}, "blue"]}},
            "matches-default": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
                                "targeting": {"if": [true, "a"]}},
            "bad-variant": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                            "targeting": {"if": [true, "three"]}},
            "no-default": {"state": "ENABLED", "variants": {"a": 1.5, "b": 2.5},
                           "targeting": {"if": [{"var": "pick"}, "b"]}},
            "bool-result": {"state": "ENABLED", "variants": {"true": "yes", "false": "no"},
                            "defaultVariant": "false", "targeting": {"==": [{"var": "n"}, 1]}},
            "number-result": {"state": "ENABLED", "variants": {"1": "one", "2": "two"},
                              "defaultVariant": "1", "targeting": {"+": [{"var": "n"}, 1]}},
            "object": {"state": "ENABLED", "variants": {"x": {"size": 3}}, "defaultVariant": "x"},
            "key-aware": {"state": "ENABLED", "variants": {"mine": true, "other": false},
                          "defaultVariant": "other",
                          "targeting": {"if": [{"==": [{"var": "$flagd.flagKey"}, "key-aware"]}, "mine", "other"]}},
            "time-aware": {"state": "ENABLED", "variants": {"past": -1, "future": 1},
                           "defaultVariant": "future",
                           "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, {"var": "t"}]}, "past", "future"]}}
        }
    }))
    .unwrap()
}

fn ctx(v: Value) -> EvaluationContext {
    EvaluationContext::from_value(v).unwrap()
}

#[test]
fn static_flag_gives_the_default_variant() {
    let s = set();
    let c = EvaluationContext::new();
    let r = s.resolve_bool("static-bool", &c);
    assert_eq!(
        (r.value, r.variant, r.reason),
        (Some(true), Some("on"), Reason::Static)
    );
    assert!(r.error.is_none());
}

#[test]
fn disabled_is_not_missing() {
    let s = set();
    let c = EvaluationContext::new();
    let r = s.resolve_bool("disabled", &c);
    assert_eq!(
        (r.value, r.variant, r.reason),
        (None, None, Reason::Disabled)
    );
    assert!(r.error.is_none());
    let r = s.resolve_bool("nope", &c);
    assert_eq!(r.reason, Reason::Error);
    assert_eq!(r.error_code(), Some(ErrorCode::FlagNotFound));
    assert!(!r.clone().value_or(false));
}

#[test]
fn targeting_through_nested_refs() {
    let s = set();
    let staff = ctx(json!({"email": "ada@vexil.dev"}));
    let beta = ctx(json!({"email": "bob@example.com", "beta": true}));
    let other = ctx(json!({"email": "bob@example.com"}));
    let r = s.resolve_string("targeted", &staff);
    assert_eq!((r.value, r.reason), (Some("#00f"), Reason::TargetingMatch));
    assert_eq!(s.resolve_string("targeted", &beta).value, Some("#00f"));
    // The rule returns null (no else branch): default variant, reason DEFAULT.
    let r = s.resolve_string("targeted", &other);
    assert_eq!(
        (r.value, r.variant, r.reason),
        (Some("#f00"), Some("red"), Reason::Default)
    );
}

#[test]
fn a_rule_naming_the_default_variant_is_still_a_match() {
    let s = set();
    let r = s.resolve_int("matches-default", &EvaluationContext::new());
    assert_eq!((r.value, r.reason), (Some(1), Reason::TargetingMatch));
}

#[test]
fn unknown_variant_is_general() {
    let s = set();
    let r = s.resolve_int("bad-variant", &EvaluationContext::new());
    assert_eq!((r.value, r.reason), (None, Reason::Error));
    assert_eq!(r.error_code(), Some(ErrorCode::General));
    assert!(r.error.unwrap().message.contains("\"three\""));
}

#[test]
fn no_default_variant_falls_back_to_the_caller() {
    let s = set();
    let r = s.resolve_float("no-default", &EvaluationContext::new());
    assert_eq!(
        (r.value, r.variant, r.reason),
        (None, None, Reason::Default)
    );
    assert!(r.error.is_none());
    let r = s.resolve_float("no-default", &ctx(json!({"pick": true})));
    assert_eq!((r.value, r.reason), (Some(2.5), Reason::TargetingMatch));
}

#[test]
fn booleans_and_numbers_name_variants() {
    let s = set();
    assert_eq!(
        s.resolve_string("bool-result", &ctx(json!({"n": 1}))).value,
        Some("yes")
    );
    assert_eq!(
        s.resolve_string("bool-result", &ctx(json!({"n": 2}))).value,
        Some("no")
    );
    // Numbers from protobuf arrive as doubles: 1.0 + 1 names variant "2".
    assert_eq!(
        s.resolve_string("number-result", &ctx(json!({"n": 1.0})))
            .value,
        Some("two")
    );
}

#[test]
fn type_mismatch() {
    let s = set();
    let c = EvaluationContext::new();
    let r = s.resolve_int("static-bool", &c);
    assert_eq!((r.value, r.variant, r.reason), (None, None, Reason::Error));
    assert_eq!(r.error_code(), Some(ErrorCode::TypeMismatch));
    // An integer flag reads as a float; a float flag does not read as an integer.
    assert_eq!(s.resolve_float("matches-default", &c).value, Some(1.0));
    let r = s.resolve_int("no-default", &ctx(json!({"pick": true})));
    assert_eq!(r.error_code(), Some(ErrorCode::TypeMismatch));
    assert_eq!(
        s.resolve_object("object", &c).value,
        Some(&json!({"size": 3}))
    );
    assert_eq!(
        s.resolve_object("static-bool", &c).error_code(),
        Some(ErrorCode::TypeMismatch)
    );
    // Disabled flags are not type-checked: there is no value to check.
    assert!(s.resolve_int("disabled", &c).error.is_none());
}

#[test]
fn metadata_merges_flag_over_set() {
    let s = set();
    let c = EvaluationContext::new();
    let r = s.resolve_bool("static-bool", &c);
    assert_eq!(
        Value::Object(r.metadata.clone()),
        json!({"team": "payments", "version": 2, "owner": "ada"})
    );
    let r = s.resolve_bool("disabled", &c);
    assert_eq!(
        Value::Object(r.metadata.clone()),
        json!({"team": "payments", "version": 1})
    );
    // A missing flag reports the set's metadata.
    let r = s.resolve_bool("nope", &c);
    assert_eq!(
        Value::Object(r.metadata.clone()),
        json!({"team": "payments", "version": 1})
    );
}

#[test]
fn flagd_values_in_the_context() {
    let s = set();
    assert_eq!(
        s.resolve_bool("key-aware", &EvaluationContext::new()).value,
        Some(true)
    );
    assert_eq!(
        s.resolve_int("time-aware", &ctx(json!({"t": 1}))).value,
        Some(-1)
    );
    assert_eq!(
        s.resolve_int("time-aware", &ctx(json!({"t": 4133980802u64})))
            .value,
        Some(1)
    );
}

#[test]
fn resolve_all_covers_every_flag_in_key_order() {
    let s = set();
    let c = ctx(json!({"email": "ada@vexil.dev"}));
    let all: Vec<_> = s.resolve_all(&c).collect();
    assert_eq!(all.len(), s.len());
    let keys: Vec<&str> = all.iter().map(|(f, _)| f.key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let targeted = all.iter().find(|(f, _)| f.key() == "targeted").unwrap();
    assert_eq!(targeted.1.value, Some(&json!("#00f")));
    let disabled = all.iter().find(|(f, _)| f.key() == "disabled").unwrap();
    assert_eq!(disabled.1.reason, Reason::Disabled);
}

#[test]
fn the_document_round_trips() {
    let s = set();
    let doc = s.to_document();
    let again = FlagSet::from_json(&doc).unwrap();
    assert_eq!(again.to_document(), doc);
    assert_eq!(again.fractional_version(), FractionalVersion::V3);
    assert_eq!(again.evaluators().len(), 2);
    assert_eq!(
        again.get("targeted").unwrap().definition()["targeting"],
        json!({"if": [{"$ref": "staff_or_beta"}, "blue"]})
    );
}

/// A flag keeps its definition as compact JSON text (sorted keys, floats exact) that parses back
/// to the document's value, so equal definitions compare equal as text.
#[test]
fn definitions_are_kept_as_compact_text() {
    let def = json!({"state": "ENABLED", "variants": {"b": 0.1, "a": 1e300}, "defaultVariant": "a",
                     "targeting": {"if": [{"==": [{"var": "x"}, 3]}, "b"]}});
    let s = FlagSet::from_json(&json!({"flags": {"f": def.clone(), "g": def.clone()}})).unwrap();
    let (f, g) = (s.get("f").unwrap(), s.get("g").unwrap());
    assert_eq!(f.definition(), def);
    assert_eq!(f.definition_json(), serde_json::to_string(&def).unwrap());
    assert!(
        f.definition_json()
            .starts_with(r#"{"defaultVariant":"a","state":"#)
    );
    assert_eq!(f.definition_json(), g.definition_json());
}

#[test]
fn fractional_version_is_selected_by_set_metadata() {
    let doc = |v: &str| {
        json!({"metadata": {"vexil.fractional": v}, "flags": {"f": {
            "state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 50]]}}}})
    };
    let v2 = FlagSet::from_json(&doc("v2")).unwrap();
    let v3 = FlagSet::from_json(&doc("v3")).unwrap();
    assert_eq!(v2.fractional_version(), FractionalVersion::V2);
    assert_eq!(v3.fractional_version(), FractionalVersion::V3);
    // The two algorithms disagree for some keys (they hash different bytes).
    let differ = (0..200).any(|i| {
        let c = ctx(json!({"targetingKey": format!("user-{i}")}));
        v2.resolve_string("f", &c).value != v3.resolve_string("f", &c).value
    });
    assert!(differ);
}

/// A resolution says where its flag and the variant given are in the set (what the sidecar's
/// usage counters are indexed by): the same positions `flags()`, `variants()` and `variant_at`
/// use; no variant when the caller's default applies; nothing for a missing flag.
#[test]
fn resolutions_carry_the_flag_and_variant_positions() {
    let set = set();
    let ctx = EvaluationContext::new();
    let index = |key: &str| set.flags().position(|f| f.key() == key).unwrap();
    let r = set.resolve_bool("static-bool", &ctx);
    let p = r.position.unwrap();
    assert_eq!(p.flag, index("static-bool"));
    let flag = set.flags().nth(p.flag).unwrap();
    assert_eq!(flag.variants().nth(p.variant.unwrap()).unwrap().0, "on");
    assert_eq!(set.variant_at(p.flag, &ctx), p.variant);
    // Disabled, a type mismatch, no default: the flag, no variant.
    for (key, r) in [
        ("disabled", set.resolve("disabled", &ctx)),
        ("no-default", set.resolve("no-default", &ctx)),
    ] {
        let p = r.position.unwrap();
        assert_eq!((p.flag, p.variant), (index(key), None), "{key}");
    }
    let mismatch = set.resolve_string("static-bool", &ctx);
    assert_eq!(mismatch.position.unwrap().variant, None);
    assert_eq!(set.resolve("missing", &ctx).position, None);
    // resolve_all: each flag at its index.
    for (i, (flag, r)) in set.resolve_all(&ctx).enumerate() {
        let p = r.position.unwrap();
        assert_eq!(p.flag, i, "{}", flag.key());
        assert_eq!(p.variant, set.variant_at(i, &ctx), "{}", flag.key());
    }
}
