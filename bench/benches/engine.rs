//! Engine micro-benchmarks: Vexil and datalogic-rs side by side on the same JsonLogic.
//!
//! Each workload of [`vexil_bench::workloads`] becomes a criterion group with two functions:
//! `vexil` resolves the flag (or every flag) through the public API, flag lookup by key and variant
//! typing included; `datalogic-rs` evaluates the same targeting rules (`$ref` inlined) with its
//! fastest API, `Engine::evaluate` on a pre-compiled `Logic` and a pre-parsed `ParsedData` context,
//! into an arena reset after each iteration. A flag without targeting has no rule, so the static
//! workload has no datalogic-rs function. Run and results: `bench/README.md`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use datalogic_rs::bumpalo::Bump;
use datalogic_rs::{Engine, Logic, ParsedData};
use serde_json::Value;
use vexil_bench::{
    Workload, context, evaluation_context, flagd_context, jsonlogic_rules, workloads,
};
use vexil_engine::FlagSet;

/// The datalogic-rs side of a workload: each targeting rule of the flag set compiled once, with its
/// context parsed once (including the `$flagd.flagKey` flagd injects for that flag).
struct Datalogic {
    engine: Engine,
    rules: Vec<(Logic, ParsedData)>,
}

impl Datalogic {
    fn new(document: &Value) -> Self {
        let engine = Engine::new();
        let ctx = context();
        let rules = jsonlogic_rules(document)
            .into_iter()
            .map(|r| {
                let logic = engine
                    .compile(&r.rule.to_string())
                    .unwrap_or_else(|e| panic!("datalogic-rs compiles {}: {e}", r.flag_key));
                let data = ParsedData::from_json(&flagd_context(&ctx, &r.flag_key).to_string())
                    .expect("the context parses");
                (logic, data)
            })
            .collect();
        Datalogic { engine, rules }
    }

    /// Evaluates every rule once, then resets the arena.
    fn evaluate_all(&self, arena: &mut Bump) {
        for (logic, data) in &self.rules {
            let out = self.engine.evaluate(logic, data, arena);
            black_box(out.expect("datalogic-rs evaluates"));
        }
        arena.reset();
    }
}

/// Registers one workload: its `vexil` function and, when the flag set has rules, its
/// `datalogic-rs` function.
fn bench_workload(c: &mut Criterion, workload: &Workload) {
    let set = FlagSet::from_json(&workload.document).expect("the workload compiles");
    let ctx = evaluation_context();
    let datalogic = Datalogic::new(&workload.document);

    let mut group = c.benchmark_group(workload.name);
    match workload.flag_key {
        Some(key) => group.bench_function("vexil", |b| {
            b.iter(|| set.resolve(black_box(key), black_box(&ctx)))
        }),
        None => group.bench_function("vexil", |b| {
            b.iter(|| {
                for resolution in set.resolve_all(black_box(&ctx)) {
                    black_box(resolution);
                }
            })
        }),
    };
    if !datalogic.rules.is_empty() {
        group.bench_function("datalogic-rs", |b| {
            let mut arena = Bump::new();
            b.iter(|| datalogic.evaluate_all(&mut arena))
        });
    }
    group.finish();
}

fn engine(c: &mut Criterion) {
    for workload in workloads() {
        bench_workload(c, &workload);
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
