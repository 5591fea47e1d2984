//! `lookup`: flag evaluations asked of the real `vexil-proxy` (offline, `--flags-file`,
//! `--threads 1`, pinned to one core) over gRPC (flagd evaluation v2 and v1) and OFREP, single
//! flag and resolve-all, with 5, 50 and 350 flags, at fixed rates (open loop) and at peak (closed
//! loop). Unleash Edge's frontend API, in offline mode with as many equivalent toggles, is the peer
//! baseline when its binary is given (`VEXIL_UNLEASH_EDGE`).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::grpc::{GrpcCall, GrpcKind};
use crate::harness::{Ctx, Sidecar, write_json};
use crate::hist::fmt_us;
use crate::http1::{HttpCall, Pool, post_json};
use crate::load::{Call, LoadResult, OpenLoop, closed_loop, open_loop};
use crate::report::{Report, Section, Table, fmt_rate, ratio};
use crate::sys::{CpuMeter, MachineMeter};
use crate::{RuleKind, context, generate_flag_set, unleash};

/// The budget (docs/architecture.md#budgets): single-flag evaluations per second on one core.
pub const BUDGET_RPS: f64 = 40_000.0;

/// Requests in flight at peak over gRPC (spread over [`GRPC_CONNECTIONS`]).
const GRPC_CONCURRENCY: usize = 64;
/// HTTP/2 connections of the gRPC load.
const GRPC_CONNECTIONS: usize = 4;
/// Keep-alive connections (one request in flight each) at peak over HTTP/1.1.
const HTTP_CONCURRENCY: usize = 32;
/// Open loop: most requests in flight before a rate counts as not sustained.
const MAX_IN_FLIGHT: usize = 4096;

/// One measured load point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Flags in the set.
    pub flags: usize,
    /// `vexil` or `unleash-edge`.
    pub target: &'static str,
    /// The API.
    pub api: &'static str,
    /// `single` or `all`.
    pub what: &'static str,
    /// The load and what it gave.
    pub load: LoadResult,
}

/// An API of a target, ready to be loaded.
enum Api {
    Grpc(GrpcCall),
    Http(HttpCall),
}

/// One API under test: its label, single or all, and how to call it.
struct Surface {
    api: &'static str,
    what: &'static str,
    call: Api,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("lookup", ctx.smoke, &ctx.pinning);
    let counts = ctx.pick(vec![5, 50, 350], vec![5]);
    let single_rates = ctx.pick(vec![1_000.0, 10_000.0, 20_000.0, 40_000.0], vec![200.0]);
    let all_rates = ctx.pick(vec![500.0, 2_000.0], vec![100.0]);
    report.config = json!({
        "sidecar": "vexil-proxy --flags-file FILE --threads 1 (offline), VEXIL_LOG=warn",
        "flag_counts": counts,
        "flag_sets": "vexil_bench::generate_flag_set(n, SEED): mixed static/targeted/fractional/sem_ver/string/$ref",
        "single_flag": "the first `targeted` flag of the set (boolean, 3 conditions, matches the context)",
        "context": context(),
        "open_loop_rates_single": single_rates,
        "open_loop_rates_all": all_rates,
        "open_loop_seconds": ctx.time(5_000, 300).as_secs_f64(),
        "open_loop_max_in_flight": MAX_IN_FLIGHT,
        "peak_seconds": ctx.time(5_000, 300).as_secs_f64(),
        "peak_concurrency_grpc": format!("{GRPC_CONCURRENCY} over {GRPC_CONNECTIONS} HTTP/2 connections"),
        "peak_concurrency_http1": format!("{HTTP_CONCURRENCY} keep-alive connections"),
        "warm_up_seconds": ctx.time(1_000, 100).as_secs_f64(),
        "client": "vexil-bench's own: tonic clients from vexil-proto (gRPC), a minimal keep-alive HTTP/1.1 client (OFREP, Unleash)",
    });
    let mut points = Vec::new();
    for &n in &counts {
        points.extend(measure_vexil(ctx, n, &single_rates, &all_rates).await?);
        match &ctx.unleash_edge {
            None => {}
            Some(bin) => match measure_unleash(ctx, bin, n, &single_rates, &all_rates).await {
                Ok(p) => points.extend(p),
                Err(e) => report.note(format!("Unleash Edge with {n} toggles failed: {e:#}")),
            },
        }
    }
    if ctx.unleash_edge.is_none() {
        report.note(
            "Unleash Edge: not available (set VEXIL_UNLEASH_EDGE to the path of an `unleash-edge` \
             binary, e.g. from `cargo install unleash-edge --locked`; the harness never downloads it)",
        );
    }
    report.note(
        "vexil-proxy's lookup servers run on a tokio runtime with 2 worker threads whatever \
         --threads says (--threads sizes the data plane); taskset confines all of them to one core.",
    );
    summarise(&mut report, &points);
    report.data = json!({ "points": points });
    Ok(report)
}

/// Every API of the sidecar with `n` flags.
async fn measure_vexil(
    ctx: &Ctx,
    n: usize,
    single_rates: &[f64],
    all_rates: &[f64],
) -> anyhow::Result<Vec<Point>> {
    let set = generate_flag_set(n, crate::SEED);
    let key = single_flag(&set);
    let file = write_json(&ctx.work, &format!("lookup-{n}.json"), &set.document)?;
    let args = vec![
        "--flags-file".to_string(),
        file.display().to_string(),
        "--threads".into(),
        "1".into(),
    ];
    let mut sidecar = Sidecar::start(ctx, &args, &format!("vexil-proxy-lookup-{n}"))?;
    sidecar.wait_ready(Duration::from_secs(30)).await?;
    let surfaces = vexil_surfaces(&sidecar, n, &key).await?;
    let mut points = Vec::new();
    for s in surfaces {
        let rates = if s.what == "single" {
            single_rates
        } else {
            all_rates
        };
        for load in measure(ctx, &s.call, sidecar.pid(), rates).await? {
            points.push(Point {
                flags: n,
                target: "vexil",
                api: s.api,
                what: s.what,
                load,
            });
        }
    }
    Ok(points)
}

/// The key of the single-flag workload: the first targeted flag.
pub fn single_flag(set: &crate::GeneratedSet) -> String {
    set.kinds
        .iter()
        .find(|(_, k)| *k == RuleKind::Targeted)
        .map(|(key, _)| key.clone())
        .expect("every generated set of 5 or more flags has a targeted flag")
}

async fn vexil_surfaces(sidecar: &Sidecar, n: usize, key: &str) -> anyhow::Result<Vec<Surface>> {
    let ctx_json = context();
    let grpc = |kind| GrpcCall::connect(sidecar.grpc, GRPC_CONNECTIONS, kind, key, &ctx_json, n);
    let ofrep = |path: String| {
        let body = json!({ "context": context() }).to_string();
        let host = sidecar.ofrep.to_string();
        HttpCall::new(
            Pool::new(sidecar.ofrep),
            post_json(&host, &path, &body),
            200,
        )
    };
    Ok(vec![
        Surface {
            api: "gRPC v2 ResolveBoolean",
            what: "single",
            call: Api::Grpc(grpc(GrpcKind::V2Boolean).await?),
        },
        Surface {
            api: "gRPC v1 ResolveBoolean",
            what: "single",
            call: Api::Grpc(grpc(GrpcKind::V1Boolean).await?),
        },
        Surface {
            api: "OFREP single",
            what: "single",
            call: Api::Http(ofrep(format!("/ofrep/v1/evaluate/flags/{key}"))),
        },
        Surface {
            api: "gRPC v1 ResolveAll",
            what: "all",
            call: Api::Grpc(grpc(GrpcKind::V1All).await?),
        },
        Surface {
            api: "OFREP bulk",
            what: "all",
            call: Api::Http(ofrep("/ofrep/v1/evaluate/flags".into())),
        },
    ])
}

/// The same loads against Unleash Edge's frontend API.
async fn measure_unleash(
    ctx: &Ctx,
    bin: &std::path::Path,
    n: usize,
    single_rates: &[f64],
    all_rates: &[f64],
) -> anyhow::Result<Vec<Point>> {
    let edge = unleash::Edge::start(ctx, bin, n).await?;
    let mut points = Vec::new();
    for (api, what, call) in [
        ("Unleash frontend single", "single", edge.single_call()),
        ("Unleash frontend all", "all", edge.all_call()),
    ] {
        let rates = if what == "single" {
            single_rates
        } else {
            all_rates
        };
        for load in measure(ctx, &Api::Http(call), edge.pid(), rates).await? {
            points.push(Point {
                flags: n,
                target: "unleash-edge",
                api,
                what,
                load,
            });
        }
    }
    edge.stop();
    Ok(points)
}

/// Checks one call, warms up, then runs each fixed rate and the peak, measuring `pid`'s CPU.
async fn measure(ctx: &Ctx, api: &Api, pid: u32, rates: &[f64]) -> anyhow::Result<Vec<LoadResult>> {
    match api {
        Api::Grpc(c) => measure_call(ctx, c, GRPC_CONCURRENCY, pid, rates).await,
        Api::Http(c) => measure_call(ctx, c, HTTP_CONCURRENCY, pid, rates).await,
    }
}

async fn measure_call<C: Call>(
    ctx: &Ctx,
    call: &C,
    concurrency: usize,
    pid: u32,
    rates: &[f64],
) -> anyhow::Result<Vec<LoadResult>> {
    call.call().await?;
    closed_loop(call, concurrency, ctx.time(1_000, 100)).await;
    let mut out = Vec::new();
    for &rate in rates {
        let meter = CpuMeter::start(pid);
        let machine = MachineMeter::start(Some(pid));
        let spec = OpenLoop {
            rate,
            duration: ctx.time(5_000, 300),
            max_in_flight: MAX_IN_FLIGHT,
        };
        let mut r = open_loop(call, spec).await;
        r.server_cores = Some(meter.cores_used());
        r.other_cores = Some(machine.other_cores());
        out.push(r);
    }
    let meter = CpuMeter::start(pid);
    let machine = MachineMeter::start(Some(pid));
    let mut peak = closed_loop(call, concurrency, ctx.time(5_000, 300)).await;
    peak.server_cores = Some(meter.cores_used());
    peak.other_cores = Some(machine.other_cores());
    out.push(peak);
    Ok(out)
}

fn load_label(r: &LoadResult) -> String {
    match (r.target_rps, r.concurrency) {
        (Some(rate), _) => format!(
            "{}{}",
            fmt_rate(rate),
            if r.sustained { "" } else { " (not sustained)" }
        ),
        (None, Some(c)) => format!("peak ({c} in flight)"),
        _ => "?".into(),
    }
}

/// The baseline point: the same API kind, flags and load against Unleash Edge.
fn baseline<'a>(points: &'a [Point], p: &Point) -> Option<&'a Point> {
    points.iter().find(|b| {
        b.target == "unleash-edge"
            && b.flags == p.flags
            && b.what == p.what
            && b.load.target_rps == p.load.target_rps
            && b.load.mode == p.load.mode
    })
}

fn summarise(report: &mut Report, points: &[Point]) {
    let mut t = Table::new(&[
        "flags",
        "target",
        "API",
        "load",
        "achieved",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "errors",
        "sidecar CPU",
        "per core",
        "other CPU",
        "Unleash Edge (same load)",
        "ratio (Vexil / Edge)",
    ]);
    for p in points {
        let l = &p.load;
        let base = if p.target == "vexil" {
            baseline(points, p)
        } else {
            None
        };
        let (base_text, base_ratio) = match (p.target, base) {
            ("vexil", Some(b)) if l.mode == "closed" => (
                fmt_rate(b.load.achieved_rps),
                ratio(Some(l.achieved_rps), Some(b.load.achieved_rps)),
            ),
            ("vexil", Some(b)) => (
                format!("p99 {}", fmt_us(b.load.latency.p99_us)),
                ratio(Some(l.latency.p99_us), Some(b.load.latency.p99_us)),
            ),
            ("vexil", None) => ("not available".into(), "—".into()),
            _ => ("—".into(), "—".into()),
        };
        let [p50, p90, p99, p999, max] = l.latency.percentiles().map(fmt_us);
        t.row(vec![
            p.flags.to_string(),
            p.target.into(),
            p.api.into(),
            load_label(l),
            fmt_rate(l.achieved_rps),
            p50,
            p90,
            p99,
            p999,
            max,
            l.errors.to_string(),
            l.server_cores
                .map_or("—".into(), |c| format!("{:.0} %", c * 100.0)),
            l.per_server_core().map_or("—".into(), fmt_rate),
            l.other_cores
                .map_or("—".into(), |c| format!("{c:.2} cores")),
            base_text,
            base_ratio,
        ]);
    }
    report.sections.push(Section {
        title: "Figures".into(),
        text: vec![
            "Open-loop latencies are measured from each request's intended send time \
             (coordinated omission corrected). `sidecar CPU` is the share of one core the sidecar \
             used during the run (from /proc); `per core` is the achieved rate divided by it, \
             the rate one fully used core would give at the measured cost per request; `other CPU` \
             is what the rest of the machine used beside the sidecar and the harness (noise). At peak \
             the ratio compares throughput, at fixed rates the p99."
                .into(),
        ],
        table: Some(t),
    });
    budget(report, points);
}

fn budget(report: &mut Report, points: &[Point]) {
    for api in [
        "gRPC v2 ResolveBoolean",
        "gRPC v1 ResolveBoolean",
        "OFREP single",
    ] {
        let peaks: Vec<&Point> = points
            .iter()
            .filter(|p| p.target == "vexil" && p.api == api && p.load.mode == "closed")
            .collect();
        let per_core = |p: &&&Point| p.load.per_server_core().unwrap_or(0.0);
        let Some(worst) = peaks
            .iter()
            .min_by(|a, b| per_core(a).total_cmp(&per_core(b)))
        else {
            continue;
        };
        let per_core = worst.load.per_server_core();
        let met = per_core.map(|c| c >= BUDGET_RPS);
        report.budget(
            &format!("lookup, {api}"),
            "≥ 40,000 single-flag evaluations/s on one core",
            format!(
                "{} per fully used core (sidecar CPU per request); {} achieved at {:.0} % of its core \
                 (lowest over {} flag counts: {} flags)",
                per_core.map_or("—".into(), fmt_rate),
                fmt_rate(worst.load.achieved_rps),
                worst.load.server_cores.unwrap_or(0.0) * 100.0,
                peaks.len(),
                worst.flags,
            ),
            met,
            "peak, closed loop; judged on the rate per fully used core, because the load \
             generator (one core, shared with other work on this machine) does not saturate the sidecar",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_count_has_a_targeted_flag() {
        for n in [5, 50, 350] {
            let set = generate_flag_set(n, crate::SEED);
            assert!(single_flag(&set).contains("targeted"));
        }
    }
}
