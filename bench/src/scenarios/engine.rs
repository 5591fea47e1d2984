//! `engine`: the criterion benchmarks of `vexil-engine` (`bench/benches/engine.rs`, Vexil beside
//! datalogic-rs on the same JsonLogic) summarised in the harness's format. Runs
//! `cargo bench -p vexil-bench --bench engine` (unless `--no-criterion` or `--smoke`), then reads
//! criterion's estimates from `<target>/criterion/<group>/<function>/new/`.

use std::path::Path;
use std::process::Command;

use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::Ctx;
use crate::report::{Report, Section, Table, ratio};
use crate::workloads;

/// criterion's figures for one group and function, in nanoseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// Group (the workload).
    pub group: String,
    /// Function (`vexil` or `datalogic-rs`).
    pub function: String,
    /// Median of the sample means.
    pub median_ns: f64,
    /// Lower bound of the median's confidence interval.
    pub median_low_ns: f64,
    /// Upper bound.
    pub median_high_ns: f64,
    /// Mean.
    pub mean_ns: f64,
}

/// The criterion arguments of a real run.
const ARGS: [&str; 4] = ["--warm-up-time", "1", "--measurement-time", "3"];

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("engine", ctx.smoke, &ctx.pinning);
    let criterion = ctx.target_dir.join("criterion");
    report.config = json!({
        "command": format!("cargo bench -p vexil-bench --bench engine -- {}", ARGS.join(" ")),
        "ran_criterion": ctx.run_criterion,
        "criterion_data": criterion.display().to_string(),
        "workloads": "bench/README.md (static, targeted, fractional-cat, fractional-shorthand, sem_ver, resolve-all-100)",
    });
    if ctx.run_criterion {
        run_criterion(&ctx.target_dir)?;
    } else {
        report.note("criterion was not run (smoke run or --no-criterion): these are the estimates it left from its last run, if any");
    }
    let estimates = read_estimates(&criterion);
    if estimates.is_empty() {
        report.note(format!(
            "no criterion data under {}: run `cargo bench -p vexil-bench --bench engine` first",
            criterion.display()
        ));
    }
    summarise(&mut report, &estimates);
    report.data = json!({ "estimates": estimates });
    Ok(report)
}

fn run_criterion(target_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the workspace");
    let status = Command::new(cargo)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["bench", "-p", "vexil-bench", "--bench", "engine", "--"])
        .args(ARGS)
        .status()?;
    anyhow::ensure!(status.success(), "cargo bench failed");
    Ok(())
}

/// Every `<group>/<function>/new/estimates.json` under `dir` that belongs to a known workload.
pub fn read_estimates(dir: &Path) -> Vec<Estimate> {
    let mut out = Vec::new();
    for w in workloads() {
        for function in ["vexil", "datalogic-rs"] {
            let path = dir.join(w.name).join(function).join("new/estimates.json");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let f = |stat: &str, field: &str| v[stat][field].as_f64().unwrap_or(f64::NAN);
            out.push(Estimate {
                group: w.name.into(),
                function: function.into(),
                median_ns: f("median", "point_estimate"),
                median_low_ns: v["median"]["confidence_interval"]["lower_bound"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                median_high_ns: v["median"]["confidence_interval"]["upper_bound"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                mean_ns: f("mean", "point_estimate"),
            });
        }
    }
    out
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn summarise(report: &mut Report, estimates: &[Estimate]) {
    let find = |g: &str, f: &str| estimates.iter().find(|e| e.group == g && e.function == f);
    let mut t = Table::new(&[
        "workload",
        "Vexil (median)",
        "[interval]",
        "datalogic-rs (baseline)",
        "Vexil / datalogic-rs",
        "budget",
        "verdict",
    ]);
    for w in workloads() {
        let Some(v) = find(w.name, "vexil") else {
            continue;
        };
        let d = find(w.name, "datalogic-rs");
        let verdict = match w.budget_ns {
            Some(b) if v.median_ns <= b as f64 => "met",
            Some(_) => "**missed**",
            None => "—",
        };
        t.row(vec![
            w.name.into(),
            fmt_ns(v.median_ns),
            format!("{}–{}", fmt_ns(v.median_low_ns), fmt_ns(v.median_high_ns)),
            d.map_or("—".into(), |d| fmt_ns(d.median_ns)),
            ratio(Some(v.median_ns), d.map(|d| d.median_ns)),
            w.budget_ns
                .map_or("—".into(), |b| format!("≤ {}", fmt_ns(b as f64))),
            verdict.into(),
        ]);
        if let Some(b) = w.budget_ns {
            report.budget(
                &format!("engine, {}", w.name),
                &format!("≤ {}", fmt_ns(b as f64)),
                fmt_ns(v.median_ns),
                Some(v.median_ns <= b as f64),
                "criterion median, one core",
            );
        }
    }
    report.budget(
        "engine, no heap allocation for a boolean evaluation",
        "0 allocations",
        "checked by engine/tests/no_alloc.rs, not measured here".into(),
        None,
        "a counting global allocator in the engine's tests",
    );
    report.sections.push(Section {
        title: "Figures".into(),
        text: vec![
            "criterion's median per iteration, with its confidence interval. datalogic-rs \
             evaluates the same JsonLogic (rule only, context pre-parsed): see bench/README.md \
             and results/engine-analysis.md for what each side includes, the profiles and the decision."
                .into(),
        ],
        table: Some(t),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_read_from_criterions_layout() {
        let dir = vexil_testkit::TempDir::new("vexil-criterion");
        let d = dir.join("targeted/vexil/new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("estimates.json"),
            json!({"median": {"point_estimate": 97.0, "confidence_interval": {"lower_bound": 95.0, "upper_bound": 99.0}},
                   "mean": {"point_estimate": 98.0}})
            .to_string(),
        )
        .unwrap();
        let e = read_estimates(&dir);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].median_ns, e[0].median_low_ns, e[0].median_high_ns),
            (97.0, 95.0, 99.0)
        );
    }
}
