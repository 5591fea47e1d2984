//! The scenarios, in the order `all` runs them.

pub mod engine;
pub mod footprint;
pub mod hop;
pub mod lookup;
pub mod propagate;
pub mod soak;
pub mod usage;

use crate::harness::Ctx;
use crate::report::Report;

/// Every scenario's name, in the order `all` runs them.
pub const ALL: [&str; 7] = [
    "lookup",
    "propagate",
    "footprint",
    "engine",
    "hop",
    "soak",
    "usage",
];

/// Runs the scenario `name`.
pub async fn run(name: &str, ctx: &Ctx) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let mut report = match name {
        "lookup" => lookup::run(ctx).await?,
        "propagate" => propagate::run(ctx).await?,
        "footprint" => footprint::run(ctx).await?,
        "engine" => engine::run(ctx).await?,
        "hop" => hop::run(ctx).await?,
        "soak" => soak::run(ctx).await?,
        "usage" => usage::run(ctx).await?,
        other => anyhow::bail!("unknown scenario {other:?} (expected one of {ALL:?} or all)"),
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
