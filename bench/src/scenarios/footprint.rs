//! `footprint` (not written yet).

use crate::harness::Ctx;
use crate::report::Report;

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    Ok(Report::new("footprint", ctx.smoke, &ctx.pinning))
}
