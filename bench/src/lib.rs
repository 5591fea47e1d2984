//! Vexil's benchmark harness.
//!
//! The binary `vexil-bench` runs the system scenarios ([`scenarios`]: `lookup`, `propagate`,
//! `footprint`, `engine`, `hop`) against the real binaries and writes
//! `bench/results/<scenario>.{json,md}`; see `bench/README.md`. Its parts: the load generator
//! ([`load`], open and closed loop), latency histograms ([`hist`]), the clients ([`grpc`],
//! [`http1`]), the processes and the machine ([`sys`], [`harness`]), and the report ([`report`]).
//!
//! This file also holds the workloads of the engine's criterion benchmarks (`benches/engine.rs`):
//! the flag-set documents, the deterministic generator of mixed flag sets, the evaluation context,
//! and the conversions that give datalogic-rs exactly the JsonLogic and the context Vexil evaluates
//! (`$ref` evaluators inlined, flagd's `$flagd.flagKey` injected). The scenarios reuse them.

pub mod grpc;
pub mod harness;
pub mod hist;
pub mod http1;
pub mod load;
pub mod report;
pub mod scenarios;
pub mod sys;
pub mod unleash;

use serde_json::{Map, Value, json};
use vexil_engine::EvaluationContext;

/// Seed of the generated flag set of the resolve-all workload.
pub const SEED: u64 = 0x5645_5849_4c21_2026;

/// Number of flags in the resolve-all workload.
pub const FLAG_COUNT: usize = 100;

/// Key of the flag in each single-flag workload's document.
pub const FLAG_KEY: &str = "bench-flag";

/// One benchmark workload: a flag set and what to resolve in it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Short name, used as the criterion group name.
    pub name: &'static str,
    /// The flagd flag-set document.
    pub document: Value,
    /// The flag to resolve; `None` resolves every flag of the set.
    pub flag_key: Option<&'static str>,
    /// The budget for one Vexil resolution (or one resolve-all), in nanoseconds, when there is one
    /// (docs/architecture.md#budgets).
    pub budget_ns: Option<u64>,
}

/// Every engine workload, in the order the benchmarks run them: a static flag, a targeted flag with
/// three conditions, `fractional` with four variants (explicit `cat` bucketing and the shorthand),
/// `sem_ver`, and resolve-all over [`FLAG_COUNT`] generated flags.
pub fn workloads() -> Vec<Workload> {
    let single = |name, document, budget_ns| Workload {
        name,
        document,
        flag_key: Some(FLAG_KEY),
        budget_ns,
    };
    vec![
        single("static", static_flag_set(), None),
        single("targeted", targeted_flag_set(), Some(100)),
        single("fractional-cat", fractional_flag_set(true), Some(250)),
        single(
            "fractional-shorthand",
            fractional_flag_set(false),
            Some(250),
        ),
        single("sem_ver", sem_ver_flag_set(), None),
        Workload {
            name: "resolve-all-100",
            document: generate_flag_set(FLAG_COUNT, SEED).document,
            flag_key: None,
            budget_ns: Some(10_000),
        },
    ]
}

/// The evaluation context of every workload: a targeting key and the attributes the rules read. It
/// satisfies every condition of [`targeted_rule`] and [`sem_ver_rule`], so they take their longest
/// path.
pub fn context() -> Value {
    json!({
        "targetingKey": "user-7f3a9c21",
        "country": "NL",
        "plan": "pro",
        "age": 34,
        "version": "2.3.1",
        "email": "ada@example.com",
    })
}

/// [`context`] as Vexil's [`EvaluationContext`].
pub fn evaluation_context() -> EvaluationContext {
    EvaluationContext::from_value(context()).expect("the context is a JSON object")
}

/// `context` as flagd hands it to JsonLogic when it evaluates flag `flag_key`: with
/// `{"$flagd": {"flagKey": flag_key}}` added, which is where a generic JsonLogic engine (and
/// datalogic-rs's `fractional` shorthand) reads the flag key. Vexil provides `$flagd.flagKey`
/// itself.
pub fn flagd_context(context: &Value, flag_key: &str) -> Value {
    let mut ctx = context.clone();
    if let Value::Object(m) = &mut ctx {
        m.insert("$flagd".into(), json!({ "flagKey": flag_key }));
    }
    ctx
}

/// A flag set holding one flag, [`FLAG_KEY`], with `variants`, `default_variant` and `targeting`
/// (none when `None`).
pub fn single_flag_set(variants: Value, default_variant: &str, targeting: Option<Value>) -> Value {
    let mut flag = json!({
        "state": "ENABLED",
        "variants": variants,
        "defaultVariant": default_variant,
    });
    if let Some(t) = targeting {
        flag["targeting"] = t;
    }
    json!({ "flags": { FLAG_KEY: flag } })
}

/// A boolean flag without targeting: the default variant, reason `STATIC`.
pub fn static_flag_set() -> Value {
    single_flag_set(on_off(), "off", None)
}

/// The three-condition rule: country, plan membership and a minimum age, all of which
/// [`context`] meets.
pub fn targeted_rule() -> Value {
    json!({"if": [
        {"and": [
            {"==": [{"var": "country"}, "NL"]},
            {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
            {">=": [{"var": "age"}, 18]},
        ]},
        "on",
        "off",
    ]})
}

/// A boolean flag targeted by [`targeted_rule`].
pub fn targeted_flag_set() -> Value {
    single_flag_set(on_off(), "off", Some(targeted_rule()))
}

/// `fractional` over four colours (25 % each): bucketing explicitly on
/// `{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}` when `explicit_cat`, otherwise
/// the shorthand (no bucketing argument), which buckets on the flag key and targeting key too.
pub fn fractional_rule(explicit_cat: bool) -> Value {
    let mut args = Vec::with_capacity(5);
    if explicit_cat {
        args.push(json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}));
    }
    args.extend(COLOURS.iter().map(|c| json!([c, 25])));
    json!({ "fractional": args })
}

/// A string flag with four variants chosen by [`fractional_rule`].
pub fn fractional_flag_set(explicit_cat: bool) -> Value {
    single_flag_set(
        colours(&COLOURS),
        "red",
        Some(fractional_rule(explicit_cat)),
    )
}

/// `version >= 2.1.0` with `sem_ver`, which [`context`] (2.3.1) meets.
pub fn sem_ver_rule() -> Value {
    json!({"if": [{"sem_ver": [{"var": "version"}, ">=", "2.1.0"]}, "new", "old"]})
}

/// A boolean flag targeted by [`sem_ver_rule`].
pub fn sem_ver_flag_set() -> Value {
    single_flag_set(new_old(), "old", Some(sem_ver_rule()))
}

/// The kinds of flag in a generated set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// No targeting; boolean, string, integer or object variants.
    Static,
    /// Three conditions like [`targeted_rule`], with random operands.
    Targeted,
    /// `fractional` over two to four variants, with explicit `cat` bucketing or the shorthand.
    Fractional,
    /// `sem_ver` with a random operator and version.
    SemVer,
    /// `starts_with` or `ends_with` on the e-mail address.
    StringMatch,
    /// Two `$ref` evaluators combined with `and`.
    Ref,
}

impl RuleKind {
    /// Every kind.
    pub const ALL: [RuleKind; 6] = [
        RuleKind::Static,
        RuleKind::Targeted,
        RuleKind::Fractional,
        RuleKind::SemVer,
        RuleKind::StringMatch,
        RuleKind::Ref,
    ];

    /// Lower-case name, used in flag keys.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Static => "static",
            RuleKind::Targeted => "targeted",
            RuleKind::Fractional => "fractional",
            RuleKind::SemVer => "sem_ver",
            RuleKind::StringMatch => "string",
            RuleKind::Ref => "ref",
        }
    }

    /// The kind's share of a generated set, in percent.
    fn weight(self) -> u64 {
        match self {
            RuleKind::Static => 20,
            RuleKind::Targeted => 25,
            RuleKind::Fractional => 20,
            RuleKind::SemVer => 15,
            RuleKind::StringMatch => 10,
            RuleKind::Ref => 10,
        }
    }
}

/// A generated flag set and the kind of each of its flags.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedSet {
    /// The flagd document, with `$evaluators` for the [`RuleKind::Ref`] flags.
    pub document: Value,
    /// Each flag's key and kind, in generation order.
    pub kinds: Vec<(String, RuleKind)>,
}

impl GeneratedSet {
    /// How many flags are of `kind`.
    pub fn count(&self, kind: RuleKind) -> usize {
        self.kinds.iter().filter(|(_, k)| *k == kind).count()
    }
}

/// Generates `count` flags of mixed kinds (about 20 % static, 25 % targeted, 20 % fractional, 15 %
/// sem_ver, 10 % starts_with/ends_with, 10 % `$ref`), deterministically from `seed`. Keys are
/// `flag-NNN-kind`. Rules draw their operands at random, so some match [`context`] and some do not.
pub fn generate_flag_set(count: usize, seed: u64) -> GeneratedSet {
    let mut rng = XorShift64::new(seed);
    let mut flags = Map::new();
    let mut kinds = Vec::with_capacity(count);
    for i in 0..count {
        let kind = pick_kind(&mut rng);
        let key = format!("flag-{i:03}-{}", kind.name());
        flags.insert(key.clone(), generate_flag(kind, &mut rng));
        kinds.push((key, kind));
    }
    let document = json!({
        "flags": flags,
        "$evaluators": evaluators(),
    });
    GeneratedSet { document, kinds }
}

/// The shared rules the [`RuleKind::Ref`] flags reference with `{"$ref": name}`.
pub fn evaluators() -> Value {
    json!({
        "is-eu": {"in": [{"var": "country"}, ["NL", "DE", "FR", "BE", "ES", "IT", "PL", "SE"]]},
        "is-paying": {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
        "is-adult": {">=": [{"var": "age"}, 18]},
        "is-staff": {"ends_with": [{"var": "email"}, "@example.com"]},
        "is-beta": {"sem_ver": [{"var": "version"}, ">=", "3.0.0"]},
    })
}

const COLOURS: [&str; 4] = ["red", "blue", "green", "yellow"];
const COUNTRIES: [&str; 6] = ["NL", "DE", "FR", "US", "GB", "JP"];
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];
const SEM_VER_OPS: [&str; 8] = ["=", "!=", "<", "<=", ">", ">=", "^", "~"];
const PREFIXES: [&str; 3] = ["ada", "bob", "admin"];
const SUFFIXES: [&str; 3] = ["@example.com", "@example.org", ".nl"];
const EVALUATORS: [&str; 5] = ["is-eu", "is-paying", "is-adult", "is-staff", "is-beta"];

fn pick_kind(rng: &mut XorShift64) -> RuleKind {
    let mut roll = rng.below(100);
    for kind in RuleKind::ALL {
        if roll < kind.weight() {
            return kind;
        }
        roll -= kind.weight();
    }
    unreachable!("the weights add up to 100")
}

fn generate_flag(kind: RuleKind, rng: &mut XorShift64) -> Value {
    let (variants, default, targeting) = match kind {
        RuleKind::Static => {
            let (variants, default) = match rng.below(4) {
                0 => (on_off(), "on"),
                1 => (colours(&COLOURS[..2]), "blue"),
                2 => (json!({"low": 10, "high": 100}), "high"),
                _ => (
                    json!({"compact": {"rows": 10}, "full": {"rows": 50, "dense": false}}),
                    "full",
                ),
            };
            (variants, default, None)
        }
        RuleKind::Targeted => {
            let plans = [rng.pick(&PLANS), rng.pick(&PLANS)];
            let rule = json!({"if": [
                {"and": [
                    {"==": [{"var": "country"}, rng.pick(&COUNTRIES)]},
                    {"in": [{"var": "plan"}, plans]},
                    {">=": [{"var": "age"}, 13 + rng.below(50)]},
                ]},
                "on",
                "off",
            ]});
            (on_off(), "off", Some(rule))
        }
        RuleKind::Fractional => {
            let names = &COLOURS[..2 + rng.below(3) as usize];
            let mut args: Vec<Value> = Vec::with_capacity(names.len() + 1);
            if rng.below(2) == 0 {
                args.push(json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}));
            }
            args.extend(names.iter().map(|n| json!([n, 1 + rng.below(50)])));
            (colours(names), "red", Some(json!({ "fractional": args })))
        }
        RuleKind::SemVer => {
            let version = format!("{}.{}.{}", 1 + rng.below(3), rng.below(5), rng.below(10));
            let op = rng.pick(&SEM_VER_OPS);
            let rule =
                json!({"if": [{"sem_ver": [{"var": "version"}, op, version]}, "new", "old"]});
            (new_old(), "old", Some(rule))
        }
        RuleKind::StringMatch => {
            let test = if rng.below(2) == 0 {
                json!({"starts_with": [{"var": "email"}, rng.pick(&PREFIXES)]})
            } else {
                json!({"ends_with": [{"var": "email"}, rng.pick(&SUFFIXES)]})
            };
            (on_off(), "off", Some(json!({"if": [test, "on", "off"]})))
        }
        RuleKind::Ref => {
            let first = rng.below(EVALUATORS.len() as u64) as usize;
            let second =
                (first + 1 + rng.below(EVALUATORS.len() as u64 - 1) as usize) % EVALUATORS.len();
            let rule = json!({"if": [
                {"and": [{"$ref": EVALUATORS[first]}, {"$ref": EVALUATORS[second]}]},
                "on",
                "off",
            ]});
            (on_off(), "off", Some(rule))
        }
    };
    let mut flag = json!({"state": "ENABLED", "variants": variants, "defaultVariant": default});
    if let Some(t) = targeting {
        flag["targeting"] = t;
    }
    flag
}

fn on_off() -> Value {
    json!({"on": true, "off": false})
}

fn new_old() -> Value {
    json!({"new": true, "old": false})
}

/// String variants named after their values.
fn colours(names: &[&str]) -> Value {
    Value::Object(names.iter().map(|n| (n.to_string(), json!(n))).collect())
}

/// One flag's targeting as plain JsonLogic, for a generic JsonLogic engine.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonLogicRule {
    /// The flag's key (which flagd exposes to the rule as `$flagd.flagKey`).
    pub flag_key: String,
    /// The targeting rule with every `{"$ref": name}` replaced by the evaluator it names.
    pub rule: Value,
}

/// The targeting rules of the enabled, targeted flags of a flag-set `document`, in key order, with
/// `$ref` evaluators inlined (flagd's own preprocessing, and what Vexil's compiler does). Flags
/// without targeting have no rule to evaluate and are left out.
pub fn jsonlogic_rules(document: &Value) -> Vec<JsonLogicRule> {
    let no_evaluators = Map::new();
    let evaluators = document
        .get("$evaluators")
        .and_then(Value::as_object)
        .unwrap_or(&no_evaluators);
    let Some(flags) = document.get("flags").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut rules: Vec<JsonLogicRule> = flags
        .iter()
        .filter(|(_, flag)| flag.get("state").and_then(Value::as_str) == Some("ENABLED"))
        .filter_map(|(key, flag)| match flag.get("targeting") {
            Some(Value::Object(t)) if !t.is_empty() => Some(JsonLogicRule {
                flag_key: key.clone(),
                rule: inline_refs(&flag["targeting"], evaluators),
            }),
            _ => None,
        })
        .collect();
    rules.sort_by(|a, b| a.flag_key.cmp(&b.flag_key));
    rules
}

/// `rule` with every `{"$ref": name}` replaced, recursively, by `evaluators[name]` (left as is when
/// there is no such evaluator).
pub fn inline_refs(rule: &Value, evaluators: &Map<String, Value>) -> Value {
    match rule {
        Value::Object(m) => {
            if let (1, Some(Value::String(name))) = (m.len(), m.get("$ref"))
                && let Some(evaluator) = evaluators.get(name)
            {
                return inline_refs(evaluator, evaluators);
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), inline_refs(v, evaluators)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline_refs(v, evaluators)).collect())
        }
        other => other.clone(),
    }
}

/// A small deterministic pseudo-random generator (Marsaglia's xorshift64), enough to vary generated
/// workloads reproducibly without a `rand` dependency.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator seeded with `seed` (a zero seed, which xorshift cannot leave, is replaced).
    pub fn new(seed: u64) -> Self {
        XorShift64(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One element of `items` (non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalogic_rs::bumpalo::Bump;
    use datalogic_rs::{Engine, ParsedData};
    use vexil_engine::{FRACTIONAL_VERSION_KEY, FlagSet, Reason};

    #[test]
    fn generated_set_compiles_and_resolves_every_flag() {
        let set = FlagSet::from_json(&generate_flag_set(FLAG_COUNT, SEED).document)
            .expect("the generated set compiles");
        assert_eq!(set.len(), FLAG_COUNT);
        let ctx = evaluation_context();
        let resolutions: Vec<_> = set.resolve_all(&ctx).collect();
        assert_eq!(resolutions.len(), FLAG_COUNT);
        for (flag, r) in &resolutions {
            assert!(r.error.is_none(), "{}: {:?}", flag.key(), r.error);
            assert_ne!(r.reason, Reason::Error, "{}", flag.key());
            assert!(r.value.is_some(), "{}", flag.key());
        }
        // The rules do not all agree with the context: both outcomes are exercised.
        let matched = resolutions
            .iter()
            .filter(|(f, r)| r.reason == Reason::TargetingMatch && r.variant != f.default_variant())
            .count();
        assert!(matched > 0 && matched < set.len());
    }

    #[test]
    fn generator_is_deterministic_and_mixed() {
        let a = generate_flag_set(FLAG_COUNT, SEED);
        assert_eq!(a, generate_flag_set(FLAG_COUNT, SEED));
        assert_ne!(a.document, generate_flag_set(FLAG_COUNT, SEED + 1).document);
        for kind in RuleKind::ALL {
            assert!(a.count(kind) > 0, "no {kind:?} flag");
        }
        assert_eq!(
            RuleKind::ALL.map(|k| a.count(k)).iter().sum::<usize>(),
            FLAG_COUNT
        );
    }

    #[test]
    fn single_flag_workloads_take_their_full_path() {
        let ctx = evaluation_context();
        for w in workloads() {
            let Some(key) = w.flag_key else { continue };
            let set = FlagSet::from_json(&w.document).expect(w.name);
            let r = set.resolve(key, &ctx);
            let expected = if w.name == "static" {
                Reason::Static
            } else {
                Reason::TargetingMatch
            };
            assert_eq!(r.reason, expected, "{}", w.name);
        }
    }

    #[test]
    fn refs_are_inlined() {
        let set = generate_flag_set(FLAG_COUNT, SEED);
        let rules = jsonlogic_rules(&set.document);
        assert_eq!(rules.len(), FLAG_COUNT - set.count(RuleKind::Static));
        assert!(set.document.to_string().contains("$ref"));
        assert!(rules.iter().all(|r| !r.rule.to_string().contains("$ref")));
    }

    /// datalogic-rs, given the same JsonLogic and context, picks the same variant as Vexil for every
    /// rule of every workload (with Vexil on flagd's v2 `fractional` hash, the one datalogic-rs
    /// implements).
    #[test]
    fn datalogic_agrees_with_vexil() {
        let engine = Engine::new();
        let ctx = evaluation_context();
        for w in workloads() {
            let mut doc = w.document.clone();
            doc["metadata"] = json!({ FRACTIONAL_VERSION_KEY: "v2" });
            let set = FlagSet::from_json(&doc).expect(w.name);
            for JsonLogicRule { flag_key, rule } in jsonlogic_rules(&doc) {
                let logic = engine
                    .compile(&rule.to_string())
                    .expect("datalogic compiles");
                let data = ParsedData::from_json(&flagd_context(&context(), &flag_key).to_string())
                    .expect("the context parses");
                let arena = Bump::new();
                let out = engine.evaluate(&logic, &data, &arena).expect(&flag_key);
                let r = set.resolve(&flag_key, &ctx);
                match out.as_str() {
                    Some(variant) => assert_eq!(r.variant, Some(variant), "{flag_key}"),
                    None => {
                        assert!(out.is_null(), "{flag_key}: {out:?}");
                        assert_eq!(r.reason, Reason::Default, "{flag_key}");
                    }
                }
            }
        }
    }
}
