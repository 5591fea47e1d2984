//! Property tests: random documents and contexts never panic, compile → evaluate is deterministic,
//! and `fractional` splits traffic as its weights say.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vexil_engine::{CompileOptions, EvaluationContext, FlagSet, Mode};

/// Operator names the generator draws from: every supported one, plus a few that are not.
const OPERATORS: &[&str] = &[
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    "<",
    "<=",
    ">",
    ">=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "in",
    "cat",
    "substr",
    "merge",
    "missing",
    "missing_some",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "starts_with",
    "ends_with",
    "sem_ver",
    "fractional",
    "var",
    "$ref",
    "iff",
    "log",
];

const CONTEXT_KEYS: &[&str] = &[
    "targetingKey",
    "email",
    "age",
    "tags",
    "user",
    "user.name",
    "version",
    "$flagd.flagKey",
    "$flagd.timestamp",
    "",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(vec![
            "", "a", "on", "off", "1.2.3", "v2", "=", ">=", "^", "~", "beta", "x@y.z"
        ])
        .prop_map(Value::from),
        "[a-z0-9.@ -]{0,12}".prop_map(Value::from),
    ]
}

/// Any JSON value (for the "documents" that are not flag sets at all, and for contexts).
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JsonLogic rule over the operators above.
fn rule() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        scalar(),
        prop::sample::select(CONTEXT_KEYS).prop_map(|k| json!({"var": k})),
        prop::sample::select(vec!["seg", "missing-seg"]).prop_map(|r| json!({"$ref": r})),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            (
                prop::sample::select(OPERATORS),
                prop::collection::vec(inner.clone(), 0..4)
            )
                .prop_map(|(op, args)| json!({op: args})),
            (prop::sample::select(OPERATORS), inner.clone()).prop_map(|(op, arg)| json!({op: arg})),
            prop::collection::vec(inner, 0..3).prop_map(Value::Array),
        ]
    })
}

fn flag_def() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["ENABLED", "DISABLED", "BROKEN"]),
        prop::collection::btree_map("[a-c]{1,2}|true|false", scalar(), 0..4),
        prop::option::of(prop::sample::select(vec!["a", "b", "true", "zz"])),
        prop::option::of(rule()),
    )
        .prop_map(|(state, variants, default, targeting)| {
            let mut def =
                json!({"state": state, "variants": variants.into_iter().collect::<Map<_, _>>()});
            if let Some(d) = default {
                def["defaultVariant"] = json!(d);
            }
            if let Some(t) = targeting {
                def["targeting"] = t;
            }
            def
        })
}

fn document() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("[a-e]{1,3}", flag_def(), 0..6),
        prop::option::of(rule()),
        prop::sample::select(vec!["v2", "v3"]),
    )
        .prop_map(|(flags, seg, version)| {
            let mut doc = json!({
                "flags": flags.into_iter().collect::<Map<_, _>>(),
                "metadata": {"vexil.fractional": version}
            });
            if let Some(seg) = seg {
                doc["$evaluators"] = json!({"seg": seg});
            }
            doc
        })
}

fn context() -> impl Strategy<Value = EvaluationContext> {
    (
        prop::collection::btree_map(prop::sample::select(CONTEXT_KEYS), json_value(), 0..6),
        prop::option::of("[a-z0-9-]{0,10}"),
    )
        .prop_map(|(attrs, tk)| {
            let mut ctx = EvaluationContext::from_map(
                attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            );
            if let Some(tk) = tk {
                ctx.set_targeting_key(tk);
            }
            ctx
        })
}

/// Every flag's resolution as comparable text.
fn snapshot(set: &FlagSet, ctx: &EvaluationContext) -> Vec<String> {
    set.resolve_all(ctx)
        .map(|(flag, r)| {
            format!(
                "{} {:?} {:?} {:?} {:?}",
                flag.key(),
                r.value,
                r.variant,
                r.reason,
                r.error.map(|e| e.code)
            )
        })
        .collect()
}

const LENIENT: CompileOptions = CompileOptions {
    limits: vexil_engine::Limits {
        max_depth: 64,
        max_flags: 100_000,
    },
    mode: Mode::Lenient,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(doc in json_value()) {
        let _ = FlagSet::from_json(&doc);
        let _ = FlagSet::compile(&doc, &LENIENT);
    }

    #[test]
    fn random_flag_sets_compile_and_evaluate_without_panicking(doc in document(), ctx in context()) {
        let strict = FlagSet::from_json(&doc);
        let lenient = FlagSet::compile(&doc, &LENIENT).expect("a flag-set shaped document compiles leniently");
        match strict {
            Ok(set) => prop_assert!(set.problems().is_empty()),
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert_eq!(lenient.problems(), &errors);
            }
        }
        for flag in lenient.flags() {
            let key = flag.key();
            let _ = lenient.resolve_bool(key, &ctx);
            let _ = lenient.resolve_string(key, &ctx);
            let _ = lenient.resolve_int(key, &ctx);
            let _ = lenient.resolve_float(key, &ctx);
            let _ = lenient.resolve_object(key, &ctx);
        }
    }

    /// `variant_at` (the data plane's planned evaluation) chooses what `resolve` chooses, for
    /// every flag, named by position.
    #[test]
    fn variant_at_agrees_with_resolve(doc in document(), ctx in context()) {
        let set = FlagSet::compile(&doc, &LENIENT).unwrap();
        for (i, flag) in set.flags().enumerate() {
            let by_key = set.resolve(flag.key(), &ctx).variant;
            let by_index = set
                .variant_at(i, &ctx)
                .map(|v| flag.variants().nth(v).unwrap().0);
            prop_assert_eq!(by_key, by_index, "{}", flag.key());
        }
        prop_assert_eq!(set.variant_at(set.len(), &ctx), None);
    }

    /// A flag whose context reads are known decides the same on the context cut down to them
    /// (and on that context with other attributes added): what the sidecar's decision cache
    /// relies on.
    #[test]
    fn a_flag_decides_on_the_attributes_it_reads_alone(
        doc in document(), ctx in context(), other in context()
    ) {
        let set = FlagSet::compile(&doc, &LENIENT).unwrap();
        for (i, flag) in set.flags().enumerate() {
            let Some(reads) = flag.context_reads() else { continue };
            let only = |from: &EvaluationContext, base: &EvaluationContext| {
                let mut m = base.attributes().clone();
                m.retain(|k, _| !reads.contains(&k.as_str()));
                for k in &reads {
                    match from.attributes().get(*k) {
                        Some(v) => { m.insert(k.to_string(), v.clone()); }
                        None => { m.remove(*k); }
                    }
                }
                EvaluationContext::from_map(m)
            };
            let want = set.variant_at(i, &ctx);
            prop_assert_eq!(want, set.variant_at(i, &only(&ctx, &EvaluationContext::new())), "{}", flag.key());
            prop_assert_eq!(want, set.variant_at(i, &only(&ctx, &other)), "{}", flag.key());
        }
    }

    #[test]
    fn compile_then_evaluate_is_deterministic(doc in document(), ctx in context()) {
        let a = FlagSet::compile(&doc, &LENIENT).unwrap();
        let b = FlagSet::compile(&doc, &LENIENT).unwrap();
        let first = snapshot(&a, &ctx);
        prop_assert_eq!(&first, &snapshot(&a, &ctx));
        prop_assert_eq!(&first, &snapshot(&b, &ctx));
    }
}

/// Share of 100,000 random targeting keys landing in each variant.
fn shares(set: &FlagSet, variants: usize, seed: u64) -> Vec<f64> {
    let mut counts = vec![0usize; variants];
    let mut state = seed | 1;
    let mut ctx = EvaluationContext::new();
    const KEYS: usize = 100_000;
    for _ in 0..KEYS {
        // xorshift64*: cheap, deterministic per seed.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let key = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ctx.set_targeting_key(format!("user-{key:x}"));
        let r = set.resolve_int("split", &ctx);
        counts[r.value.expect("every key lands in a bucket") as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / KEYS as f64).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn fractional_follows_its_weights(
        weights in prop::collection::vec(1u32..100, 2..5),
        version in prop::sample::select(vec!["v2", "v3"]),
        bucket_by_rule in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let variants: Map<String, Value> = (0..weights.len()).map(|i| (format!("v{i}"), json!(i))).collect();
        let mut args: Vec<Value> = weights.iter().enumerate().map(|(i, w)| json!([format!("v{i}"), w])).collect();
        if bucket_by_rule {
            args.insert(0, json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}));
        }
        let set = FlagSet::from_json(&json!({
            "metadata": {"vexil.fractional": version},
            "flags": {"split": {"state": "ENABLED", "variants": variants, "defaultVariant": "v0",
                                "targeting": {"fractional": args}}}
        })).unwrap();
        let total: u32 = weights.iter().sum();
        for (i, share) in shares(&set, weights.len(), seed).into_iter().enumerate() {
            let expected = f64::from(weights[i]) / f64::from(total);
            prop_assert!((share - expected).abs() <= 0.01,
                "variant {} got {:.4}, weight says {:.4} ({:?}, {})", i, share, expected, weights, version);
        }
    }
}

/// The document `doc` with `upserts` put in and `removals` taken out of its `flags`.
fn changed(doc: &Value, upserts: &[(String, Value)], removals: &[String]) -> Value {
    let mut doc = doc.clone();
    let flags = doc["flags"].as_object_mut().expect("flags");
    for key in removals {
        flags.remove(key);
    }
    for (key, def) in upserts {
        flags.insert(key.clone(), def.clone());
    }
    doc
}

fn sorted_problems(set: &FlagSet) -> Vec<String> {
    let mut p: Vec<String> = set.problems().iter().map(|e| e.to_string()).collect();
    p.sort();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `with_changes` (what a sidecar does with a delta) gives the same set as compiling the
    /// changed document whole: same flags, same resolutions, same problems, strict and lenient.
    #[test]
    fn with_changes_equals_compiling_the_changed_document(
        doc in document(),
        upserts in prop::collection::btree_map("[a-e]{1,3}", flag_def(), 0..4),
        removals in prop::collection::vec("[a-e]{1,3}", 0..3),
        ctx in context(),
    ) {
        let upserts: Vec<(String, Value)> = upserts.into_iter().collect();
        let after = changed(&doc, &upserts, &removals);
        let pairs = || upserts.iter().map(|(k, v)| (k.as_str(), v));
        let keys = || removals.iter().map(String::as_str);

        let base = FlagSet::compile(&doc, &LENIENT).unwrap();
        let patched = base.with_changes(pairs(), keys(), &LENIENT).unwrap();
        let whole = FlagSet::compile(&after, &LENIENT).unwrap();
        prop_assert_eq!(patched.to_document(), whole.to_document());
        prop_assert_eq!(snapshot(&patched, &ctx), snapshot(&whole, &ctx));
        prop_assert_eq!(sorted_problems(&patched), sorted_problems(&whole));

        if let Ok(strict_base) = FlagSet::from_json(&doc) {
            let strict = strict_base.with_changes(pairs(), keys(), &CompileOptions::default());
            match (strict, FlagSet::from_json(&after)) {
                (Ok(p), Ok(w)) => prop_assert_eq!(snapshot(&p, &ctx), snapshot(&w, &ctx)),
                (Err(p), Err(w)) => {
                    let (mut p, mut w) = (p.0, w.0);
                    p.sort_by_key(|e| e.to_string());
                    w.sort_by_key(|e| e.to_string());
                    prop_assert_eq!(p, w);
                }
                (p, w) => prop_assert!(false, "strict: patched {:?} but whole {:?}", p.is_ok(), w.is_ok()),
            }
        }
    }
}

/// The usual delta (replace existing flags, remove none) keeps the set's order and index: every
/// other flag is the same compiled flag, and lookups find the replaced ones.
#[test]
fn a_replacing_delta_shares_the_other_flags_and_finds_the_new_ones() {
    let flag = |on: bool| json!({"state": "ENABLED", "variants": {"on": on, "off": !on}, "defaultVariant": "on"});
    let doc = json!({"flags": {"a": flag(true), "b": flag(true), "c": flag(true)}});
    let base = FlagSet::compile(&doc, &LENIENT).unwrap();
    let replaced = flag(false);
    let patched = base
        .with_changes([("b", &replaced)], std::iter::empty(), &LENIENT)
        .unwrap();
    let keys: Vec<&str> = patched.flags().map(|f| f.key()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    for key in ["a", "c"] {
        assert!(
            std::ptr::eq(base.get(key).unwrap(), patched.get(key).unwrap()),
            "{key}"
        );
    }
    let ctx = EvaluationContext::new();
    assert_eq!(patched.resolve_bool("b", &ctx).value, Some(false));
    assert_eq!(patched.resolve_bool("a", &ctx).value, Some(true));
    assert_eq!(base.resolve_bool("b", &ctx).value, Some(true));
}
