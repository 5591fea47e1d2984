//! `usage`: whether control keeps up with the fleet's usage reports (issue 22, ADR 0034). The real
//! `vexil-control` binary (SQLite or PostgreSQL, a fresh database per run, default settings: reports
//! added up in memory and written every 5 s), pinned to one core; N simulated sidecars in the
//! harness on the other core, each the real sync client (`SyncClient`, its own snapshot cell)
//! reporting every `interval`, as `propagate` simulates them. Every second the harness counts one
//! decision of every variant of every flag in each sidecar's snapshot (through the snapshot's own
//! usage counters, as the data plane and lookups do), so each report carries every (flag,
//! variant) of the environment. After the run the sidecars stop (each sends its last report), and
//! the evaluations the store holds must equal those counted: nothing lost, nothing twice.
//!
//! Control keeps up when no report is refused, its pending entries stay bounded, every write of
//! the sums finishes well within the write interval, and the totals match.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use vexil_control::sync::endpoint::{UDP_BUFFER_BYTES, bind_udp, endpoint_on};
use vexil_proxy::snapshot::SnapshotCell;
use vexil_proxy::sync::{Backoff, SyncClient, SyncConfig, SyncHandle};

use super::propagate::{BACKENDS, Control, Database, ENV};
use crate::harness::Ctx;
use crate::report::{Report, Section, Table, fmt_kib};
use crate::sys::{CpuMeter, rss_kib};

/// Sidecars per quinn endpoint (UDP socket).
const PER_ENDPOINT: usize = 1000;
/// Sidecars connected at a time.
const CONNECT_BATCH: usize = 250;
/// Flags in the environment.
const FLAGS: usize = 20;
/// Control's write interval (its default, `[sync] usage_flush_interval_ms`).
const FLUSH: Duration = Duration::from_secs(5);

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Simulated sidecars.
    pub sidecars: usize,
    /// Seconds between two reports of a sidecar.
    pub interval_secs: u64,
    /// (flag, variant) entries per report.
    pub entries_per_report: usize,
    /// Seconds to connect and sync every sidecar.
    pub connect_seconds: f64,
    /// Seconds the fleet reported.
    pub seconds: f64,
    /// Reports control accepted, per second, over the run.
    pub reports_per_second: f64,
    /// Entries control accepted, per second.
    pub entries_per_second: f64,
    /// Reports control refused (any reason).
    pub refused: u64,
    /// Writes of the sums to the store, and those that failed.
    pub writes: u64,
    /// Failed writes.
    pub write_failures: u64,
    /// Mean time of one write (ms).
    pub write_mean_ms: f64,
    /// Upper bound of the slowest write (ms): the histogram bucket it fell in.
    pub write_max_ms: f64,
    /// Rows written per write, on average.
    pub rows_per_write: f64,
    /// The most entries waiting in control's memory at a sample (every second).
    pub pending_max: i64,
    /// Cores control used over the run (1.0: one core all the time).
    pub control_cores: f64,
    /// Control's RSS at the end of the run (KiB).
    pub control_rss_kib: u64,
    /// Evaluations counted by the harness.
    pub counted: u64,
    /// Evaluations the store holds after the last reports.
    pub stored: u64,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("usage", ctx.smoke, &ctx.pinning);
    let sidecars = match &ctx.propagate_sidecars {
        Some(counts) => counts.clone(),
        None => ctx.pick(vec![10_000], vec![20]),
    };
    let backends: Vec<&'static str> = BACKENDS
        .into_iter()
        .filter(|b| {
            ctx.propagate_backends
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == b))
        })
        .collect();
    let interval = ctx.time(10_000, 1_000);
    let duration = ctx
        .soak_duration
        .unwrap_or_else(|| ctx.time(120_000, 4_000));
    report.config = json!({
        "control": "vexil-control serve --dev-tls --webhook-addr off (real binary), VEXIL_LOG=warn, default [sync] usage settings (writes every 5 s)",
        "backends": backends,
        "sidecar_counts": sidecars,
        "flags": FLAGS,
        "flag_set": "vexil_bench::generate_flag_set(19, SEED) plus one boolean flag",
        "report_interval_ms": interval.as_millis() as u64,
        "reporting_seconds": duration.as_secs_f64(),
        "connect_batch": CONNECT_BATCH,
        "decisions": "every second, one decision of every variant of every flag per sidecar (UsageTable::count on the sidecar's current snapshot)",
        "sync_client": "vexil_proxy::sync::SyncClient::with_endpoint, usage_interval as above, 1,000 per quinn endpoint",
    });
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for &backend in &backends {
        for &n in &sidecars {
            match run_one(ctx, backend, n, interval, duration).await {
                Ok(r) => runs.push(r),
                Err(e) => failed
                    .push(json!({"backend": backend, "sidecars": n, "error": format!("{e:#}")})),
            }
        }
    }
    summarise(&mut report, &runs, &failed);
    report.data = json!({ "runs": runs, "failed": failed });
    Ok(report)
}

/// The value of the first metric line starting with `prefix` (then a space).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The upper bound of the highest non-empty bucket of a histogram (seconds).
fn histogram_max(text: &str, name: &str) -> f64 {
    let mut previous = 0.0;
    let mut max = 0.0;
    for line in text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
    {
        let Some((labels, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let count: f64 = count.trim().parse().unwrap_or(0.0);
        let le = labels
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("+Inf");
        if count > previous {
            max = le.parse().unwrap_or(f64::INFINITY);
        }
        previous = count;
    }
    max
}

async fn scrape(control: &Control) -> anyhow::Result<String> {
    Ok(control
        .http
        .get(format!("{}/metrics", control.api))
        .send()
        .await?
        .text()
        .await?)
}

async fn run_one(
    ctx: &Ctx,
    backend: &'static str,
    sidecars: usize,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<Run> {
    let id = format!("{:08x}", rand::random::<u32>());
    println!("vexil-bench: usage {backend}, {sidecars} sidecars every {interval:?}");
    let db = Database::create(ctx, backend, &id).await?;
    let result = async {
        let control = Control::start(ctx, &db, &id).await?;
        let r = measure(ctx, &control, backend, sidecars, interval, duration).await;
        drop(control.process);
        r
    }
    .await;
    db.drop_it().await;
    result
}

async fn measure(
    ctx: &Ctx,
    control: &Control,
    backend: &'static str,
    n: usize,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<Run> {
    let token = control.prepare(FLAGS).await?;
    let revision = control.revision().await?;
    // The fleet, connected in batches (as `propagate` does: thousands of handshakes at once on
    // the harness's one core time out and retry).
    let mut endpoints = Vec::new();
    let mut cells = Vec::with_capacity(n);
    let mut handles: Vec<SyncHandle> = Vec::with_capacity(n);
    let connecting = Instant::now();
    let limit = ctx.time(900_000, 60_000);
    for i in 0..n {
        if i % PER_ENDPOINT == 0 {
            let socket = bind_udp("127.0.0.1:0".parse()?, UDP_BUFFER_BYTES)?;
            endpoints.push(endpoint_on(socket, None)?);
        }
        let mut config = SyncConfig::new(&control.sync_url, ENV, &token, control.ca.clone());
        config.client_id = format!("bench-usage-{i}");
        config.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        config.usage_interval = Some(interval);
        let cell = Arc::new(SnapshotCell::new());
        let endpoint = endpoints.last().expect("an endpoint").clone();
        handles.push(SyncClient::with_endpoint(config, endpoint)?.spawn(cell.clone()));
        cells.push(cell);
        if (i + 1) % CONNECT_BATCH == 0 || i + 1 == n {
            loop {
                let synced = cells
                    .iter()
                    .filter(|c| c.load().is_some_and(|s| s.revision >= revision))
                    .count();
                if synced == cells.len() {
                    break;
                }
                anyhow::ensure!(
                    connecting.elapsed() < limit,
                    "{synced} of {n} sidecars synced in {:?}",
                    connecting.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let entries_per_report = cells[0]
        .load()
        .map_or(0, |s| s.flags.flags().map(|f| f.variants().len()).sum());
    let before = scrape(control).await?;
    let cpu = CpuMeter::start(control.process.pid());
    let started = Instant::now();
    let mut counted = 0u64;
    let mut pending_max = 0i64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        tick.tick().await;
        for cell in &cells {
            let Some(s) = cell.load() else { continue };
            for (f, flag) in s.flags.flags().enumerate() {
                for v in 0..flag.variants().len() {
                    s.usage.count(f, Some(v));
                    counted += 1;
                }
            }
        }
        let text = scrape(control).await?;
        pending_max = pending_max.max(metric(&text, "vexil_control_usage_pending_entries") as i64);
    }
    let seconds = started.elapsed().as_secs_f64();
    let control_cores = cpu.cores_used();
    let during = scrape(control).await?;
    // Stop the fleet: each sidecar sends what it counted since its last report.
    for h in handles {
        h.shutdown().await;
    }
    for e in endpoints {
        e.close(0u32.into(), b"done");
    }
    tokio::time::sleep(FLUSH + Duration::from_secs(2)).await;
    let after = scrape(control).await?;
    let usage = control
        .http
        .get(format!(
            "{}/api/v1/environments/{ENV}/usage?days=1",
            control.api
        ))
        .bearer_auth(super::propagate::ADMIN)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let stored: u64 = usage["flags"]
        .as_array()
        .map(|flags| {
            flags
                .iter()
                .map(|f| f["evaluations"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let delta = |text: &str, name: &str| metric(text, name) - metric(&before, name);
    let accepted = delta(
        &during,
        "vexil_control_usage_reports_total{result=\"accepted\"}",
    );
    let entries = delta(&during, "vexil_control_usage_entries_total");
    let refused: f64 = [
        "too_many_entries",
        "invalid",
        "absurd_count",
        "rate_limited",
        "overloaded",
    ]
    .iter()
    .map(|r| {
        metric(
            &after,
            &format!("vexil_control_usage_reports_total{{result=\"{r}\"}}"),
        )
    })
    .sum();
    let writes = metric(&after, "vexil_control_usage_flush_duration_seconds_count");
    let write_seconds = metric(&after, "vexil_control_usage_flush_duration_seconds_sum");
    let rows = metric(&after, "vexil_control_usage_rows_written_total");
    Ok(Run {
        backend,
        sidecars: n,
        interval_secs: interval.as_secs(),
        entries_per_report,
        connect_seconds,
        seconds,
        reports_per_second: accepted / seconds,
        entries_per_second: entries / seconds,
        refused: refused as u64,
        writes: writes as u64,
        write_failures: metric(&after, "vexil_control_usage_flush_failures_total") as u64,
        write_mean_ms: if writes > 0.0 {
            write_seconds / writes * 1e3
        } else {
            0.0
        },
        write_max_ms: histogram_max(&after, "vexil_control_usage_flush_duration_seconds") * 1e3,
        rows_per_write: if writes > 0.0 { rows / writes } else { 0.0 },
        pending_max,
        control_cores,
        control_rss_kib: rss_kib(control.process.pid()).unwrap_or(0),
        counted,
        stored,
    })
}

fn summarise(report: &mut Report, runs: &[Run], failed: &[Value]) {
    let mut t = Table::new(&[
        "backend",
        "sidecars",
        "every",
        "entries per report",
        "connect all",
        "reports/s",
        "entries/s",
        "refused",
        "writes (failed)",
        "write mean",
        "write max (bucket)",
        "rows per write",
        "pending max",
        "control cores",
        "control RSS",
        "counted = stored",
    ]);
    for r in runs {
        t.row(vec![
            r.backend.into(),
            r.sidecars.to_string(),
            format!("{} s", r.interval_secs),
            r.entries_per_report.to_string(),
            format!("{:.1} s", r.connect_seconds),
            format!("{:.0}", r.reports_per_second),
            format!("{:.0}", r.entries_per_second),
            r.refused.to_string(),
            format!("{} ({})", r.writes, r.write_failures),
            format!("{:.1} ms", r.write_mean_ms),
            format!("≤ {:.0} ms", r.write_max_ms),
            format!("{:.0}", r.rows_per_write),
            r.pending_max.to_string(),
            format!("{:.2}", r.control_cores),
            fmt_kib(r.control_rss_kib as f64),
            format!(
                "{} {} {}",
                r.counted,
                if r.counted == r.stored { "=" } else { "≠" },
                r.stored
            ),
        ]);
    }
    report.sections.push(Section {
        title: "Figures".into(),
        text: vec![
            "Reports and entries per second: accepted by control while the fleet reported. \
             Writes: control's writes of the sums to the store (one transaction each, every 5 s, \
             rows added to what is there); `write max` is the upper bound of the histogram \
             bucket of the slowest. Pending: the entries waiting in control's memory, sampled \
             every second. `counted = stored`: the evaluations the harness counted against the \
             evaluations the store holds after every sidecar stopped and sent its last report."
                .into(),
            "The simulated sidecars connect within a few seconds of each other, so their reports \
             come in bursts every interval rather than evenly: a harder load than a real fleet's."
                .into(),
        ],
        table: Some(t),
    });
    if !failed.is_empty() {
        report.note(format!(
            "runs that failed: {}",
            Value::from(failed.to_vec())
        ));
    }
    for r in runs {
        let kept_up = r.refused == 0
            && r.write_failures == 0
            && r.counted == r.stored
            && r.write_max_ms < FLUSH.as_secs_f64() * 1e3;
        report.budget(
            &format!("usage reports, {}", r.backend),
            "control keeps up with 10,000 sidecars reporting every 10 s",
            format!(
                "{} sidecars every {} s: {:.0} reports/s, writes ≤ {:.0} ms every 5 s, {} refused, \
                 counted {} stored {}",
                r.sidecars,
                r.interval_secs,
                r.reports_per_second,
                r.write_max_ms,
                r.refused,
                r.counted,
                r.stored
            ),
            (r.sidecars >= 10_000 && r.interval_secs <= 10).then_some(kept_up),
            "kept up: nothing refused, no failed write, every write within the interval, totals equal",
        );
    }
}
