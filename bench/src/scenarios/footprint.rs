//! `footprint`: the sidecar's memory and cold start. The real `vexil-proxy` (offline,
//! `--flags-file`, `--threads 1`, pinned to one core) with 100, 1,000 and 10,000 flags: RSS idle,
//! then its peak while under lookup load (gRPC v2 single flag, then OFREP bulk, closed loop).
//! Cold start: the sidecar in control mode with control down and a persisted snapshot written by
//! `vexil_proxy::sync::persist::save`, timed from process start to `/readyz` answering 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::grpc::{GrpcCall, GrpcKind};
use crate::harness::{Ctx, Sidecar, write_json};
use crate::hist::{Latencies, Summary, fmt_us};
use crate::http1::{HttpCall, Pool, post_json};
use crate::load::closed_loop;
use crate::report::{Report, Section, Table, fmt_kib, fmt_rate, ratio};
use crate::scenarios::lookup::single_flag;
use vexil_testkit::free_udp_port;

use crate::sys::{hwm_kib, rss_kib};
use crate::{context, generate_flag_set};

/// Budget (docs/architecture.md#budgets): sidecar RSS with 1,000 flags.
const BUDGET_RSS_KIB: f64 = 20.0 * 1024.0;
/// Budget (docs/architecture.md#budgets): cold start with a persisted snapshot and control down.
const BUDGET_READY_MS: f64 = 50.0;

/// Memory with `flags` flags.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    /// Flags in the set.
    pub flags: usize,
    /// Size of the flag-set file (bytes).
    pub file_bytes: usize,
    /// RSS once ready and idle (KiB).
    pub idle_kib: u64,
    /// Highest RSS sampled under load (KiB).
    pub load_kib: u64,
    /// `VmHWM` at the end (KiB).
    pub peak_kib: u64,
    /// Requests per second of the load (gRPC v2 single, OFREP bulk).
    pub load_rps: Vec<f64>,
}

/// Cold start with `flags` flags persisted.
#[derive(Clone, Debug, Serialize)]
pub struct ColdStart {
    /// Flags in the persisted snapshot.
    pub flags: usize,
    /// Process start → `/readyz` 200, over the repetitions.
    pub ready: Summary,
    /// Repetitions.
    pub runs: usize,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("footprint", ctx.smoke, &ctx.pinning);
    let counts = ctx.pick(vec![100, 1_000, 10_000], vec![100]);
    let repeats = ctx.pick(10, 2);
    report.config = json!({
        "sidecar": "vexil-proxy --flags-file FILE --threads 1 (offline), VEXIL_LOG=warn, jemalloc",
        "flag_counts": counts,
        "flag_sets": "vexil_bench::generate_flag_set(n, SEED)",
        "idle": format!("RSS (VmRSS) {} s after /readyz", ctx.time(2_000, 200).as_secs_f64()),
        "load": format!(
            "closed loop, {} s each: gRPC v2 ResolveBoolean (64 in flight, 4 connections), then OFREP bulk (32 connections); RSS sampled every 50 ms",
            ctx.time(5_000, 300).as_secs_f64()
        ),
        "cold_start": format!(
            "vexil-proxy --control quic://127.0.0.1:<nothing listening> --state-dir DIR (snapshot from persist::save), \
             process start → first /readyz 200 (polled every 0.5 ms), {repeats} runs per flag count"
        ),
    });
    let mut memory = Vec::new();
    let mut cold = Vec::new();
    for &n in &counts {
        memory.push(measure_memory(ctx, n).await?);
        cold.push(measure_cold_start(ctx, n, repeats).await?);
    }
    summarise(&mut report, &memory, &cold);
    report.data = json!({ "memory": memory, "cold_start": cold });
    Ok(report)
}

async fn measure_memory(ctx: &Ctx, n: usize) -> anyhow::Result<Memory> {
    let set = generate_flag_set(n, crate::SEED);
    let text = set.document.to_string();
    let file = write_json(&ctx.work, &format!("footprint-{n}.json"), &set.document)?;
    let args = vec![
        "--flags-file".to_string(),
        file.display().to_string(),
        "--threads".into(),
        "1".into(),
    ];
    let mut sidecar = Sidecar::start(ctx, &args, &format!("vexil-proxy-footprint-{n}"))?;
    sidecar.wait_ready(Duration::from_secs(60)).await?;
    tokio::time::sleep(ctx.time(2_000, 200)).await;
    let pid = sidecar.pid();
    let idle_kib = rss_kib(pid).unwrap_or(0);
    let sampled = Arc::new(AtomicU64::new(idle_kib));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(pid, sampled.clone(), running.clone()));
    let key = single_flag(&set);
    let grpc = GrpcCall::connect(sidecar.grpc, 4, GrpcKind::V2Boolean, &key, &context(), n).await?;
    let body = json!({ "context": context() }).to_string();
    let ofrep = HttpCall::new(
        Pool::new(sidecar.ofrep),
        post_json(
            &sidecar.ofrep.to_string(),
            "/ofrep/v1/evaluate/flags",
            &body,
        ),
        200,
    );
    let duration = ctx.time(5_000, 300);
    let load_rps = vec![
        checked(closed_loop(&grpc, 64, duration).await)?,
        checked(closed_loop(&ofrep, 32, duration).await)?,
    ];
    running.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    Ok(Memory {
        flags: n,
        file_bytes: text.len(),
        idle_kib,
        load_kib: sampled.load(Ordering::Relaxed),
        peak_kib: hwm_kib(pid).unwrap_or(0),
        load_rps,
    })
}

fn checked(r: crate::load::LoadResult) -> anyhow::Result<f64> {
    anyhow::ensure!(r.ok > 0, "the load got no answer: {:?}", r.first_error);
    Ok(r.achieved_rps)
}

async fn sample_rss(pid: u32, max: Arc<AtomicU64>, running: Arc<AtomicBool>) {
    while running.load(Ordering::Relaxed) {
        if let Some(kib) = rss_kib(pid) {
            max.fetch_max(kib, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn measure_cold_start(ctx: &Ctx, n: usize, repeats: usize) -> anyhow::Result<ColdStart> {
    let dir = ctx.work.join(format!("cold-{n}"));
    let tls = vexil_control::tls::ensure_dev_tls(&dir.join("tls"), &[])?;
    let state = dir.join("state");
    let doc = generate_flag_set(n, crate::SEED).document;
    vexil_proxy::sync::persist::save(&state, "bench", 7, &doc.to_string())?;
    let args = vec![
        "--control".to_string(),
        format!("quic://127.0.0.1:{}", free_udp_port()),
        "--environment".into(),
        "bench".into(),
        "--token".into(),
        "vxl_unused".into(),
        "--ca-file".into(),
        tls.ca_cert.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--threads".into(),
        "1".into(),
    ];
    let mut ready = Latencies::default();
    for i in 0..repeats {
        let mut sidecar = Sidecar::start(ctx, &args, &format!("vexil-proxy-cold-{n}-{i}"))?;
        ready.record(sidecar.wait_ready(Duration::from_secs(30)).await?);
    }
    Ok(ColdStart {
        flags: n,
        ready: ready.summary(),
        runs: repeats,
    })
}

fn summarise(report: &mut Report, memory: &[Memory], cold: &[ColdStart]) {
    let mut t = Table::new(&[
        "flags",
        "file",
        "RSS idle",
        "RSS under load (max sampled)",
        "VmHWM",
        "load (gRPC v2, OFREP bulk)",
        "idle / budget",
        "under load / budget",
    ]);
    for m in memory {
        t.row(vec![
            m.flags.to_string(),
            fmt_kib(m.file_bytes as f64 / 1024.0),
            fmt_kib(m.idle_kib as f64),
            fmt_kib(m.load_kib as f64),
            fmt_kib(m.peak_kib as f64),
            m.load_rps
                .iter()
                .map(|r| fmt_rate(*r))
                .collect::<Vec<_>>()
                .join(", "),
            ratio(Some(m.idle_kib as f64), Some(BUDGET_RSS_KIB)),
            ratio(Some(m.load_kib as f64), Some(BUDGET_RSS_KIB)),
        ]);
    }
    report.sections.push(Section {
        title: "Memory".into(),
        text: vec!["No peer baseline: the budget (20 MiB, set for 1,000 flags) is the reference at every size.".into()],
        table: Some(t),
    });
    let mut t = Table::new(&["flags", "runs", "p50", "p90", "max", "p50 / budget"]);
    for c in cold {
        t.row(vec![
            c.flags.to_string(),
            c.runs.to_string(),
            fmt_us(c.ready.p50_us),
            fmt_us(c.ready.p90_us),
            fmt_us(c.ready.max_us),
            ratio(Some(c.ready.p50_us / 1000.0), Some(BUDGET_READY_MS)),
        ]);
    }
    report.sections.push(Section {
        title: "Cold start (persisted snapshot, control down)".into(),
        text: vec![
            "From spawning the process (through taskset) to the first `/readyz` 200.".into(),
        ],
        table: Some(t),
    });
    if let Some(m) = memory.iter().find(|m| m.flags == 1_000) {
        let worst = m.load_kib.max(m.idle_kib) as f64;
        report.budget(
            "sidecar RSS, 1,000 flags",
            "≤ 20 MiB",
            format!(
                "{} idle, {} under load",
                fmt_kib(m.idle_kib as f64),
                fmt_kib(m.load_kib as f64)
            ),
            Some(worst <= BUDGET_RSS_KIB),
            "judged on the larger of the two",
        );
    }
    if let Some(c) = cold.iter().find(|c| c.flags == 1_000) {
        report.budget(
            "cold start, persisted snapshot (1,000 flags), control down",
            "ready ≤ 50 ms after start",
            format!(
                "p50 {}, max {} over {} runs",
                fmt_us(c.ready.p50_us),
                fmt_us(c.ready.max_us),
                c.runs
            ),
            Some(c.ready.p50_us <= BUDGET_READY_MS * 1000.0),
            "judged on the median",
        );
    }
}
