//! flagd conformance: every pure-evaluation example of the flagd testbed, table-driven.
//!
//! The testbed is third-party data we may read but not ship, so it is read in place from
//! `../shared/conformance/` (or `$VEXIL_CONFORMANCE_DIR`). Under `CI=true` a missing folder fails the
//! test; elsewhere (a user's clone) the test is skipped with a notice.
//!
//! Examples tagged `@fractional-v1` expect a bucketing algorithm flagd no longer uses and are not run;
//! `@fractional-v2` ones run with v2 selected through the flag-set metadata key `vexil.fractional`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use vexil_engine::{
    CompileOptions, ErrorCode, EvaluationContext, FRACTIONAL_VERSION_KEY, FlagSet, Mode, Reason,
    Resolution,
};

fn conformance_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("VEXIL_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    if dir.join("flagd-testbed/testbed-cases.jsonl").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "conformance data missing at {} (required under CI=true)",
        dir.display()
    );
    eprintln!(
        "NOTICE: flagd conformance data not found at {}; skipping (set VEXIL_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The provider suite's merged set: every `flags/*.json` not named `selector-*`, in file-name order.
fn merged_provider_flags(testbed: &Path) -> Value {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testbed.join("flags"))
        .expect("flags dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.starts_with("selector-")
        })
        .collect();
    files.sort();
    let (mut flags, mut evaluators, mut metadata) = (Map::new(), Map::new(), Map::new());
    for f in files {
        let doc = read_json(&f);
        for (section, into) in [
            ("flags", &mut flags),
            ("$evaluators", &mut evaluators),
            ("metadata", &mut metadata),
        ] {
            if let Some(Value::Object(m)) = doc.get(section) {
                into.extend(m.clone());
            }
        }
    }
    json!({"flags": flags, "$evaluators": evaluators, "metadata": metadata})
}

fn load_set(testbed: &Path, source: &str, v2: bool) -> FlagSet {
    let mut doc = if source == "ALL" {
        merged_provider_flags(testbed)
    } else {
        read_json(&testbed.join(source))
    };
    if v2 {
        let meta = doc
            .as_object_mut()
            .unwrap()
            .entry("metadata")
            .or_insert_with(|| json!({}));
        meta.as_object_mut()
            .unwrap()
            .insert(FRACTIONAL_VERSION_KEY.into(), json!("v2"));
    }
    let options = CompileOptions {
        mode: Mode::Lenient,
        ..Default::default()
    };
    FlagSet::compile(&doc, &options).unwrap_or_else(|e| panic!("{source}: {e}"))
}

/// A resolution with its value made untyped, so one checker serves every type.
struct Outcome {
    value: Value,
    variant: Option<String>,
    reason: Reason,
    error: Option<ErrorCode>,
    metadata: Map<String, Value>,
}

fn untyped<T>(r: Resolution<'_, T>, default: &Value, to_json: impl Fn(T) -> Value) -> Outcome {
    Outcome {
        variant: r.variant.map(str::to_string),
        reason: r.reason,
        error: r.error.as_ref().map(|e| e.code),
        metadata: r.metadata.clone(),
        value: r.value.map_or_else(|| default.clone(), to_json),
    }
}

fn resolve(set: &FlagSet, row: &Value, ctx: &EvaluationContext) -> Outcome {
    let key = row["flag_key"].as_str().unwrap();
    let default = &row["default_value"];
    match row["flag_type"].as_str().unwrap() {
        "Boolean" => untyped(set.resolve_bool(key, ctx), default, Value::from),
        "String" => untyped(set.resolve_string(key, ctx), default, Value::from),
        "Integer" => untyped(set.resolve_int(key, ctx), default, Value::from),
        "Float" => untyped(set.resolve_float(key, ctx), default, Value::from),
        "Object" => untyped(set.resolve_object(key, ctx), default, Value::clone),
        other => panic!("unknown flag type {other}"),
    }
}

fn context_of(row: &Value) -> EvaluationContext {
    let mut ctx = EvaluationContext::new();
    for section in ["static_context", "context"] {
        if let Some(Value::Object(m)) = row.get(section) {
            for (k, v) in m {
                ctx.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::String(tk)) = row.get("targeting_key") {
        ctx.set_targeting_key(tk.clone());
    }
    ctx
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Every mismatch between `expect` and `got`.
fn check(expect: &Map<String, Value>, got: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, want) in expect {
        let ok = match what.as_str() {
            "value" => numbers_equal(want, &got.value),
            "reason" => want.as_str() == Some(got.reason.as_str()),
            "error_code" => match want.as_str() {
                None | Some("") => got.error.is_none(),
                Some(code) => got.error.map(ErrorCode::as_str) == Some(code),
            },
            "variant" => want.as_str() == got.variant.as_deref(),
            "metadata" => {
                let want = want.as_object().unwrap();
                want.len() == got.metadata.len()
                    && want
                        .iter()
                        .all(|(k, v)| got.metadata.get(k).is_some_and(|g| numbers_equal(v, g)))
            }
            "metadata_empty" => got.metadata.is_empty(),
            other => panic!("unknown expectation {other}"),
        };
        if !ok {
            problems.push(format!(
                "{what}: want {want}, got value={} variant={:?} reason={} error={:?} metadata={:?}",
                got.value,
                got.variant,
                got.reason.as_str(),
                got.error.map(ErrorCode::as_str),
                got.metadata
            ));
        }
    }
    problems
}

#[test]
fn flagd_testbed_examples() {
    let Some(dir) = conformance_dir() else {
        return;
    };
    let testbed = dir.join("flagd-testbed");
    let text = std::fs::read_to_string(testbed.join("testbed-cases.jsonl")).unwrap();
    let mut sets: BTreeMap<(String, bool), FlagSet> = BTreeMap::new();
    let (mut passed, mut skipped, mut failures) = (0usize, 0usize, Vec::new());
    let mut by_tag: BTreeMap<String, usize> = BTreeMap::new();

    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).expect("jsonl row");
        let tags: Vec<&str> = row["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if tags.contains(&"@fractional-v1") {
            skipped += 1;
            continue;
        }
        let v2 = tags.contains(&"@fractional-v2");
        let source = row["flag_source"].as_str().unwrap().to_string();
        let set = sets
            .entry((source.clone(), v2))
            .or_insert_with(|| load_set(&testbed, &source, v2));
        let got = resolve(set, &row, &context_of(&row));
        let problems = check(row["expect"].as_object().unwrap(), &got);
        if problems.is_empty() {
            passed += 1;
            for t in tags {
                *by_tag.entry(t.to_string()).or_default() += 1;
            }
        } else {
            failures.push(format!(
                "{} [{}]: {}",
                row["id"],
                tags.join(" "),
                problems.join("; ")
            ));
        }
    }
    println!("flagd conformance: {passed} examples passed, {skipped} skipped (@fractional-v1)");
    println!("  passing by tag: {by_tag:?}");
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n{}",
        failures.len(),
        passed + failures.len(),
        failures.join("\n")
    );
    assert!(
        passed >= 397,
        "expected every non-v1 example to run, ran {passed}"
    );
}
