//! Validation: every problem of a document is reported, each at its JSON path, in one pass.

use serde_json::{Value, json};
use vexil_engine::{CompileOptions, FlagSet, Limits, Mode, ValidationErrors};

/// The `path: message` lines of a strict compile that must fail.
fn errors(doc: Value) -> Vec<String> {
    match FlagSet::from_json(&doc) {
        Ok(_) => panic!("document unexpectedly valid: {doc}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn assert_has(errors: &[String], wanted: &str) {
    assert!(
        errors.iter().any(|e| e == wanted),
        "missing error {wanted:?}; got:\n{}",
        errors.join("\n")
    );
}

fn flag(def: Value) -> Value {
    json!({"flags": {"x": def}})
}

fn valid_flag() -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"})
}

#[test]
fn a_valid_document_compiles() {
    let set = FlagSet::from_json(&flag(valid_flag())).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.problems().is_empty());
}

#[test]
fn empty_variants() {
    let e = errors(flag(json!({"state": "ENABLED", "variants": {}})));
    assert_has(&e, "flags.x.variants: empty");
}

#[test]
fn unknown_operator_names_its_place() {
    let mut def = valid_flag();
    def["targeting"] = json!({"if": [{"==": [1, 1]}, {"iff": [true, "on"]}, "off"]});
    let e = errors(flag(def));
    assert_eq!(
        e,
        vec![r#"flags.x.targeting.if[1]: unknown operator "iff""#]
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let doc = json!({
        "flags": {
            "a": {"state": "ON", "variants": {"on": true}, "defaultVariant": "on"},
            "b": {"state": "ENABLED", "variants": {"x": 1, "y": "two"}, "defaultVariant": "z"},
            "c": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                  "targeting": {"or": [{"nope": []}, {"$ref": "missing"}]}}
        }
    });
    let e = errors(doc);
    assert_has(&e, r#"flags.a.state: must be "ENABLED" or "DISABLED""#);
    assert_has(
        &e,
        r#"flags.b.variants: variants of mixed types: "x" is integer, "y" is string"#,
    );
    assert_has(
        &e,
        r#"flags.b.defaultVariant: "z" is not a variant (variants: "x", "y")"#,
    );
    assert_has(&e, r#"flags.c.targeting.or[0]: unknown operator "nope""#);
    assert_has(
        &e,
        r#"flags.c.targeting.or[1].$ref: unknown evaluator "missing" (not in $evaluators)"#,
    );
    assert_eq!(e.len(), 5, "{e:#?}");
}

#[test]
fn missing_and_mistyped_fields() {
    let e = errors(flag(
        json!({"variants": {"a": 1}, "defaultVariant": 3, "metadata": {"k": [1]}, "colour": "red"}),
    ));
    assert_has(
        &e,
        r#"flags.x: missing field "state" ("ENABLED" or "DISABLED")"#,
    );
    assert_has(
        &e,
        "flags.x.defaultVariant: must be a variant name (a string) or null, found a number",
    );
    assert_has(
        &e,
        "flags.x.metadata.k: metadata values must be strings, numbers or booleans, found an array",
    );
    assert_has(
        &e,
        "flags.x.colour: unknown field; expected one of state, variants, defaultVariant, targeting, metadata",
    );
    let e = errors(flag(json!({"state": "ENABLED"})));
    assert_has(&e, r#"flags.x: missing field "variants""#);
    let e = errors(flag(json!("on")));
    assert_has(&e, "flags.x: a flag must be an object, found a string");
    let e = errors(flag(json!({"state": "ENABLED", "variants": {"a": null}})));
    assert_has(&e, "flags.x.variants.a: a variant value must not be null");
}

#[test]
fn integers_and_floats_are_one_number_type() {
    let set = FlagSet::from_json(&flag(json!({
        "state": "ENABLED", "variants": {"a": 1, "b": 2.5}, "defaultVariant": "a"
    })))
    .unwrap();
    assert_eq!(
        set.get("x").unwrap().kind(),
        Some(vexil_engine::ValueKind::Float)
    );
}

#[test]
fn targeting_must_be_an_object() {
    let mut def = valid_flag();
    def["targeting"] = json!("on");
    let e = errors(flag(def));
    assert_has(
        &e,
        "flags.x.targeting: must be a JsonLogic rule (an object), found a string",
    );
}

#[test]
fn ref_cycles_are_rejected() {
    let doc = json!({
        "$evaluators": {
            "a": {"or": [{"$ref": "b"}, false]},
            "b": {"and": [{"$ref": "a"}, true]}
        },
        "flags": {"x": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                        "targeting": {"if": [{"$ref": "a"}, "on"]}}}
    });
    let e = errors(doc);
    assert!(
        e.iter().any(|m| m.starts_with("$evaluators.a.or[0].$ref: ")
            && m.contains(r#"$ref cycle: "a" -> "b" -> "a""#)),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("$evaluators.b.and[0].$ref: ")
                && m.contains(r#"$ref cycle: "b" -> "a" -> "b""#)),
        "{e:#?}"
    );
}

#[test]
fn ref_cycle_messages_name_the_cycle() {
    let doc = json!({
        "$evaluators": {"a": {"$ref": "b"}, "b": {"$ref": "a"}},
        "flags": {"x": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                        "targeting": {"$ref": "a"}}}
    });
    let e = errors(doc);
    assert!(
        e.iter().any(|m| m.starts_with("$evaluators.a.$ref: ")
            && m.contains(r#"$ref cycle: "a" -> "b" -> "a""#)),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("flags.x.targeting.$ref: ")
            && m.contains(r#"evaluator "a" is invalid"#)),
        "{e:#?}"
    );
}

#[test]
fn invalid_evaluators_are_reported_once_at_their_own_path() {
    let doc = json!({
        "$evaluators": {"bad": {"frobnicate": [1]}},
        "flags": {}
    });
    assert_eq!(
        errors(doc),
        vec![r#"$evaluators.bad: unknown operator "frobnicate""#]
    );
}

#[test]
fn depth_over_the_limit_is_rejected() {
    let mut rule = json!({"var": "x"});
    for _ in 0..70 {
        rule = json!({"!": [rule]});
    }
    let mut def = valid_flag();
    def["targeting"] = rule;
    let e = errors(flag(def));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].ends_with("rule nested deeper than 64 levels"),
        "{e:#?}"
    );
    assert!(
        e[0].starts_with(r#"flags.x.targeting["!"][0]["!"][0]"#),
        "{e:#?}"
    );
}

#[test]
fn depth_counts_through_refs() {
    let mut rule = json!({"var": "x"});
    for _ in 0..40 {
        rule = json!({"!": [rule]});
    }
    let mut targeting = json!({"$ref": "deep"});
    for _ in 0..40 {
        targeting = json!({"!": [targeting]});
    }
    let doc = json!({
        "$evaluators": {"deep": rule},
        "flags": {"x": {"state": "ENABLED", "variants": {"true": true, "false": false},
                        "defaultVariant": "false", "targeting": targeting}}
    });
    let e = errors(doc);
    assert!(
        e.iter()
            .any(|m| m.contains(r#"evaluator "deep" is invalid"#) && m.contains("deeper than 64")),
        "{e:#?}"
    );
}

#[test]
fn exponential_ref_expansion_is_bounded() {
    // e0 is used twice by e1, e1 twice by e2, ...: 2^30 nodes if inlined naively.
    let mut evaluators = serde_json::Map::new();
    evaluators.insert("e0".into(), json!({"var": "x"}));
    for i in 1..30 {
        let prev = format!("e{}", i - 1);
        evaluators.insert(
            format!("e{i}"),
            json!({"or": [{"$ref": prev}, {"$ref": prev}]}),
        );
    }
    let doc = json!({
        "$evaluators": evaluators,
        "flags": {"x": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                        "targeting": {"if": [{"$ref": "e29"}, "on"]}}}
    });
    let e = errors(doc);
    assert!(
        e.iter().any(|m| m.contains("more than 100000 nodes")),
        "{e:#?}"
    );
}

#[test]
fn flag_count_limit() {
    let flags: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("f{i}"), valid_flag())).collect();
    let doc = json!({"flags": flags});
    let options = CompileOptions {
        limits: Limits {
            max_flags: 10,
            ..Limits::default()
        },
        mode: Mode::Strict,
    };
    let e = FlagSet::compile(&doc, &options).unwrap_err();
    assert_eq!(e.to_string(), "flags: 11 flags, more than the limit of 10");
}

#[test]
fn document_level_problems() {
    assert_eq!(
        FlagSet::from_json(&json!([1])).unwrap_err().to_string(),
        "(document): a flag set must be a JSON object"
    );
    assert_eq!(
        FlagSet::from_json(&json!({"flags": []}))
            .unwrap_err()
            .to_string(),
        "(document): flags: must be an object of flag definitions by key"
    );
    let e = errors(json!({"flags": {}, "flgs": {}, "metadata": {"vexil.fractional": "v9"}}));
    assert_has(
        &e,
        "flgs: unknown field; expected one of $schema, flags, $evaluators, metadata",
    );
    assert_has(&e, r#"metadata["vexil.fractional"]: must be "v2" or "v3""#);
    let e = errors(json!({"flags": {}, "$evaluators": [1]}));
    assert_has(&e, "$evaluators: must be an object, found an array");
}

#[test]
fn json_syntax_errors_give_line_and_column() {
    let e = FlagSet::from_json_str("{\"flags\": {\n  \"x\": }\n}").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("invalid JSON at line 2 column"), "{msg}");
}

#[test]
fn validate_lists_problems_without_compiling() {
    let doc = flag(json!({"state": "ENABLED", "variants": {}}));
    let problems: ValidationErrors = FlagSet::validate(&doc, Limits::default());
    assert_eq!(problems.len(), 1);
    assert!(FlagSet::validate(&flag(valid_flag()), Limits::default()).is_empty());
}

#[test]
fn lenient_mode_keeps_good_flags_and_breaks_bad_ones() {
    let doc = json!({"flags": {
        "good": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "bad": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                "targeting": {"iff": []}}
    }});
    let options = CompileOptions {
        mode: Mode::Lenient,
        ..Default::default()
    };
    let set = FlagSet::compile(&doc, &options).unwrap();
    assert_eq!(set.problems().len(), 1);
    assert!(set.get("bad").unwrap().is_broken());
    assert!(!set.get("good").unwrap().is_broken());
    // And strict mode refuses the same document.
    assert!(FlagSet::from_json(&doc).is_err());
}

#[test]
fn error_paths_quote_keys_that_are_not_identifiers() {
    let e = errors(json!({"flags": {"my flag.v2": {"state": "ENABLED", "variants": {}}}}));
    assert_has(&e, r#"flags["my flag.v2"].variants: empty"#);
}

#[test]
fn errors_serialize_as_path_and_message() {
    let e = FlagSet::from_json(&flag(json!({"state": "ENABLED", "variants": {}}))).unwrap_err();
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!([{"path": "flags.x.variants", "message": "empty"}])
    );
}

/// Nesting is bounded before any recursion can exhaust the stack: JSON text nested 100,000 levels
/// deep is refused by the parser (serde_json's 128-level limit, so no deeper value ever reaches the
/// engine), and the deepest rule the parser lets through (120 nested operators) is refused by the
/// compiler at the rule depth limit (64) before it is walked any further.
#[test]
fn deep_nesting_is_refused_before_recursion() {
    let doc = |targeting: &str| {
        format!(
            r#"{{"flags": {{"x": {{"state": "ENABLED", "variants": {{"on": true}}, "defaultVariant": "on", "targeting": {targeting}}}}}}}"#
        )
    };
    let too_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = FlagSet::from_json_str(&doc(&too_deep)).unwrap_err();
    assert!(e.to_string().contains("recursion limit"), "{e}");

    let rule = format!(
        "{}{{\"var\": \"x\"}}{}",
        "{\"!\": ".repeat(120),
        "}".repeat(120)
    );
    let e = FlagSet::from_json_str(&doc(&rule)).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.0[0].message.contains("rule nested deeper than 64 levels"),
        "{e}"
    );
}
