//! `soak`: traffic through a real sidecar for a long time while its flags keep changing (issue 8).
//!
//! The real `vexil-control` binary (SQLite, development TLS) and the real `vexil-proxy` binary
//! following it over QUIC, with its outbound data plane injecting one flag, `soak-seq`, into every
//! request to an echo upstream in the harness. Every 100 ms the harness commits `soak-seq` again
//! with its value set to the revision that commit creates (one writer, so each commit is the
//! previous revision + 1), so a decision names the snapshot it came from twice: in the flag's value
//! and in the sidecar's `vexil-revision` header. The upstream mirrors both headers back
//! (`serve_mirror`), and each answer is checked: status 200, a decision present, value ==
//! revision, and a revision that had been committed. Meanwhile the sidecar's RSS is sampled every
//! second.
//!
//! Pass (the budget: "zero failed requests, every response carries a decision consistent with a
//! revision the sidecar held, RSS flat"): no failed request, no inconsistent or missing decision,
//! the rate sustained, and the mean RSS of the last minute within 10 % of the mean of the first
//! minute after the warm-up.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::propagate::{Control, Database, ENV};
use crate::harness::{Ctx, Sidecar};
use crate::hist::{Latencies, Summary, fmt_us};
use crate::http1::{Pool, get, serve_mirror};
use crate::load::{Call, LoadResult, OpenLoop, open_loop};
use crate::report::{Report, Section, Table, fmt_kib, fmt_rate};
use crate::sys::rss_kib;

/// The flag whose value is the revision that wrote it.
const SEQ: &str = "soak-seq";
/// Requests per second through the sidecar.
const RATE: f64 = 2_000.0;
/// Smoke runs: requests per second.
const SMOKE_RATE: f64 = 200.0;
/// Time between flag commits.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Open loop: most requests in flight before the rate counts as not sustained.
const MAX_IN_FLIGHT: usize = 4096;
/// Connections the simulated application keeps to the sidecar at most (its HTTP client pool):
/// without a bound, every stall of the shared machine opened hundreds more, and the sidecar's
/// RSS measured the stall (about 33 KiB per open connection) instead of a leak.
const CONNECTIONS: usize = 64;
/// "Flat": the last window's mean RSS within this fraction of the first window's.
const FLAT_TOLERANCE: f64 = 0.10;
/// The request (absolute form, through the sidecar's outbound proxy).
const PATH: &str = "/soak";

/// The figures of one soak run.
#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    /// Seconds of traffic asked for.
    pub duration_seconds: f64,
    /// The load through the sidecar (errors: transport failures and non-200 answers).
    pub load: LoadResult,
    /// The decision checks.
    pub decisions: Decisions,
    /// The flag commits.
    pub commits: Commits,
    /// The sidecar's RSS, one sample a second.
    pub rss: Rss,
    /// Control's RSS at the start and the end (KiB).
    pub control_rss_kib: [u64; 2],
    /// The sidecar caught up with the last commit after the traffic stopped.
    pub final_revision_reached: bool,
    /// The sidecar exited during the run (its message), if it did.
    pub sidecar_exit: Option<String>,
}

/// What the answers' decisions showed.
#[derive(Clone, Debug, Serialize)]
pub struct Decisions {
    /// Answers checked (every 200).
    pub checked: u64,
    /// Answers without a `soak-seq` decision or a `vexil-revision`.
    pub missing: u64,
    /// Answers whose decision does not match their revision, or names a revision never committed.
    pub inconsistent: u64,
    /// The first few bad answers, as seen.
    pub examples: Vec<String>,
    /// Distinct revisions seen in answers.
    pub revisions_seen: u64,
    /// Lowest and highest revision seen.
    pub revision_range: [i64; 2],
    /// How long after the next revision's commit was answered an answer still carried the older
    /// one (0 for answers from the newest committed revision): the sidecar's propagation delay
    /// under load, as the traffic saw it.
    pub staleness: Summary,
}

/// The writer's side.
#[derive(Clone, Debug, Serialize)]
pub struct Commits {
    /// Commits answered 2xx.
    pub ok: u64,
    /// Commits that failed.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The commit request (send → answer).
    pub latency: Summary,
    /// Revision before the first commit and after the last.
    pub revisions: [i64; 2],
}

/// RSS samples and the flatness verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Rss {
    /// (seconds since the traffic started, KiB).
    pub samples: Vec<(f64, u64)>,
    /// Samples before this are warm-up.
    pub warmup_seconds: f64,
    /// Length of the compared windows.
    pub window_seconds: f64,
    /// Mean of the first window after the warm-up (KiB).
    pub first_window_mean_kib: f64,
    /// Mean of the last window (KiB).
    pub last_window_mean_kib: f64,
    /// last / first − 1.
    pub growth: f64,
    /// |growth| ≤ 10 %.
    pub flat: bool,
}

/// Shared between the writer and the checking requests.
struct Ledger {
    /// Revision before the first commit.
    base: i64,
    /// Highest revision a commit may have created (set before its request is sent).
    head: AtomicI64,
    /// When each commit's answer arrived, by revision − base.
    answered: Mutex<Vec<Option<Instant>>>,
    missing: AtomicU64,
    inconsistent: AtomicU64,
    checked: AtomicU64,
    examples: Mutex<Vec<String>>,
    seen: Mutex<std::collections::BTreeSet<i64>>,
    staleness: Mutex<Latencies>,
}

impl Ledger {
    fn new(base: i64) -> Ledger {
        Ledger {
            base,
            head: AtomicI64::new(base),
            answered: Mutex::new(Vec::new()),
            missing: AtomicU64::new(0),
            inconsistent: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
            seen: Mutex::new(Default::default()),
            staleness: Mutex::new(Latencies::default()),
        }
    }

    fn bad(&self, counter: &AtomicU64, example: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().expect("ledger");
        if examples.len() < 5 {
            examples.push(example);
        }
    }

    /// Checks one answer's mirrored `vexil-flags` and `vexil-revision`.
    fn check(&self, flags: Option<&str>, revision: Option<&str>, at: Instant) {
        self.checked.fetch_add(1, Ordering::Relaxed);
        let value = flags.and_then(seq_value);
        let rev = revision
            .and_then(|r| r.strip_prefix(&format!("{ENV}@")))
            .and_then(|r| r.parse::<i64>().ok());
        let (Some(value), Some(rev)) = (value, rev) else {
            self.bad(
                &self.missing,
                format!("no decision: vexil-flags {flags:?}, vexil-revision {revision:?}"),
            );
            return;
        };
        let head = self.head.load(Ordering::Acquire);
        if value != rev || rev < self.base || rev > head {
            self.bad(
                &self.inconsistent,
                format!(
                    "{SEQ}={value} with vexil-revision {ENV}@{rev} (committed: {}..={head})",
                    self.base
                ),
            );
            return;
        }
        self.seen.lock().expect("ledger").insert(rev);
        // Stale by how long ago the next revision's commit was answered, if it was.
        let next = usize::try_from(rev + 1 - self.base).unwrap_or(usize::MAX);
        let since = self
            .answered
            .lock()
            .expect("ledger")
            .get(next)
            .copied()
            .flatten();
        let stale = since.map_or(Duration::ZERO, |t| at.saturating_duration_since(t));
        self.staleness.lock().expect("ledger").record(stale);
    }

    fn decisions(&self) -> Decisions {
        let seen = self.seen.lock().expect("ledger");
        Decisions {
            checked: self.checked.load(Ordering::Relaxed),
            missing: self.missing.load(Ordering::Relaxed),
            inconsistent: self.inconsistent.load(Ordering::Relaxed),
            examples: self.examples.lock().expect("ledger").clone(),
            revisions_seen: seen.len() as u64,
            revision_range: [
                seen.first().copied().unwrap_or(0),
                seen.last().copied().unwrap_or(0),
            ],
            staleness: self.staleness.lock().expect("ledger").summary(),
        }
    }
}

/// The value of `soak-seq` in a `vexil-flags` dictionary (an integer member).
fn seq_value(flags: &str) -> Option<i64> {
    flags.split(',').find_map(|member| {
        let (key, value) = member.trim().split_once('=')?;
        (key == SEQ).then(|| value.trim().parse().ok()).flatten()
    })
}

/// One request through the sidecar, its decision checked against the ledger.
#[derive(Clone)]
struct SoakCall {
    pool: Arc<Pool>,
    request: Arc<[u8]>,
    ledger: Arc<Ledger>,
}

impl Call for SoakCall {
    async fn call(&self) -> anyhow::Result<()> {
        let answer = self
            .pool
            .exchange(&self.request, &["x-echo-flags", "x-echo-revision"])
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "status {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        self.ledger.check(
            answer.kept[0].as_deref(),
            answer.kept[1].as_deref(),
            Instant::now(),
        );
        Ok(())
    }
}

fn seq_flag(value: i64) -> Value {
    json!({"state": "ENABLED", "variants": {"v": value}, "defaultVariant": "v"})
}

/// The sidecar's data-plane configuration: one route injecting `soak-seq`.
fn proxy_toml() -> String {
    format!("[context]\ntargetingKey = [\"header:x-user-id\"]\n\n[[routes]]\nflags = [\"{SEQ}\"]\n")
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("soak", ctx.smoke, &ctx.pinning);
    let duration = ctx
        .soak_duration
        .unwrap_or_else(|| ctx.time(600_000, 3_000));
    let rate = ctx.pick(RATE, SMOKE_RATE);
    let warmup = ctx.time(60_000, 500).min(duration / 4);
    let window = Duration::from_secs(60).min((duration - warmup) / 2);
    report.config = json!({
        "control": "vexil-control serve --dev-tls --webhook-addr off (real binary, SQLite), VEXIL_LOG=warn",
        "sidecar": "vexil-proxy --control quic://… --environment bench --token-file … --ca-file … --state-dir … --config soak-proxy.toml --threads 1 (real binary), VEXIL_LOG=warn",
        "sidecar_config": proxy_toml(),
        "upstream": "in-process echo upstream on loopback that mirrors vexil-flags and vexil-revision back (x-echo-flags, x-echo-revision)",
        "request": format!("GET http://UPSTREAM{PATH} (absolute form) through --outbound-addr, keep-alive, at most {CONNECTIONS} connections, x-user-id: soak-user"),
        "rate_rps": rate,
        "duration_seconds": duration.as_secs_f64(),
        "commit": format!("PUT /api/v1/environments/{ENV}/flags/{SEQ} every {} ms (If-Match: *), value = the revision it creates", COMMIT_EVERY.as_millis()),
        "rss": format!("sidecar RSS every second; flat = mean of the last {:.0} s within {:.0} % of the mean of the first {:.0} s after a {:.1} s warm-up", window.as_secs_f64(), FLAT_TOLERANCE * 100.0, window.as_secs_f64(), warmup.as_secs_f64()),
        "checks": "each answer: status 200; vexil-flags has soak-seq; vexil-revision is bench@N; soak-seq == N; N between the revision before the first commit and the highest commit sent",
    });
    let id = format!("{:08x}", rand::random::<u32>());
    let db = Database::create(ctx, "sqlite", &id).await?;
    let result = async {
        let control = Control::start(ctx, &db, &id).await?;
        let r = soak(ctx, &control, duration, rate, warmup, window).await;
        drop(control.process);
        r
    }
    .await;
    db.drop_it().await;
    let soak = result?;
    summarise(&mut report, &soak);
    report.data = serde_json::to_value(&soak)?;
    Ok(report)
}

async fn soak(
    ctx: &Ctx,
    control: &Control,
    duration: Duration,
    rate: f64,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Soak> {
    let token = control.prepare(1).await?;
    let path = format!("/api/v1/environments/{ENV}/flags/{SEQ}");
    let base = control.revision().await? + 1;
    control
        .http_handle()
        .put(&path, &seq_flag(base), false)
        .await?;
    anyhow::ensure!(
        control.revision().await? == base,
        "the first {SEQ} commit did not create revision {base}"
    );

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let (_echo, _echo_task) = serve_mirror(listener);
    let mut sidecar = start_sidecar(ctx, control, &token).await?;
    let request = get(
        &upstream.to_string(),
        &format!("http://{upstream}{PATH}"),
        &[("x-user-id", "soak-user")],
    );
    let ledger = Arc::new(Ledger::new(base));
    let call = SoakCall {
        pool: Pool::with_limit(sidecar.outbound, CONNECTIONS),
        request: request.into(),
        ledger: ledger.clone(),
    };
    wait_for_revision(&call, base, Duration::from_secs(30)).await?;
    let control_pid = control.process.pid();
    let control_start = rss_kib(control_pid).unwrap_or(0);

    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = tokio::spawn(sample_rss(sidecar.pid(), started, done.clone()));
    let writer = tokio::spawn(write_flags(
        control.http_handle(),
        path.clone(),
        ledger.clone(),
        done.clone(),
    ));
    let spec = OpenLoop {
        rate,
        duration,
        max_in_flight: MAX_IN_FLIGHT,
    };
    let load = open_loop(&call, spec).await;
    done.store(true, Ordering::Release);
    let samples = sampler.await?;
    let commits = writer.await?;
    let last = commits.revisions[1];
    let final_revision_reached = wait_for_revision(&call, last, Duration::from_secs(30))
        .await
        .is_ok();
    let committed = control.revision().await?;
    let mut commits = commits;
    if committed != last && commits.first_error.is_none() {
        commits.first_error = Some(format!(
            "control is at revision {committed}, the writer counted {last}"
        ));
    }
    Ok(Soak {
        duration_seconds: duration.as_secs_f64(),
        load,
        decisions: ledger.decisions(),
        commits,
        rss: rss_verdict(samples, warmup, window),
        control_rss_kib: [control_start, rss_kib(control_pid).unwrap_or(0)],
        final_revision_reached,
        sidecar_exit: sidecar.process.exited(),
    })
}

async fn start_sidecar(ctx: &Ctx, control: &Control, token: &str) -> anyhow::Result<Sidecar> {
    let token_file = ctx.work.join("soak-token");
    std::fs::write(&token_file, token)?;
    let config = ctx.work.join("soak-proxy.toml");
    std::fs::write(&config, proxy_toml())?;
    let state = ctx.work.join("soak-state");
    let path = |p: &std::path::Path| p.display().to_string();
    let args = vec![
        "--control".to_string(),
        control.sync_url.clone(),
        "--environment".into(),
        ENV.into(),
        "--token-file".into(),
        path(&token_file),
        "--ca-file".into(),
        path(&control.ca),
        "--state-dir".into(),
        path(&state),
        "--config".into(),
        path(&config),
        "--threads".into(),
        "1".into(),
    ];
    let mut sidecar = Sidecar::start(ctx, &args, "vexil-proxy-soak")?;
    sidecar.wait_ready(Duration::from_secs(60)).await?;
    Ok(sidecar)
}

/// Sends requests until one carries `revision` (or later).
async fn wait_for_revision(call: &SoakCall, revision: i64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        if let Ok(a) = call
            .pool
            .exchange(&call.request, &["x-echo-flags", "x-echo-revision"])
            .await
        {
            let rev = a.kept[1]
                .as_deref()
                .and_then(|r| r.rsplit('@').next())
                .and_then(|r| r.parse::<i64>().ok());
            if rev.is_some_and(|r| r >= revision) {
                return Ok(());
            }
            last = a.kept[1].clone();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sidecar never served revision {revision} within {limit:?} (last: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The writer: every 100 ms, commits `soak-seq` with the revision the commit will create.
async fn write_flags(
    control: ControlHandle,
    path: String,
    ledger: Arc<Ledger>,
    done: Arc<AtomicBool>,
) -> Commits {
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latency = Latencies::default();
    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut revision = ledger.base;
    while !done.load(Ordering::Acquire) {
        tick.tick().await;
        let next = revision + 1;
        // Published before the request: the sidecar may serve it before the answer arrives.
        ledger.head.fetch_max(next, Ordering::AcqRel);
        let sent = Instant::now();
        match control.put(&path, &seq_flag(next), true).await {
            Ok(()) => {
                let answered = Instant::now();
                latency.record(answered - sent);
                ok += 1;
                revision = next;
                let mut times = ledger.answered.lock().expect("ledger");
                let slot = usize::try_from(next - ledger.base).unwrap_or(0);
                if times.len() <= slot {
                    times.resize(slot + 1, None);
                }
                times[slot] = Some(answered);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                // Whatever happened, continue from the revision control is at.
                if let Ok(r) = control.revision().await {
                    revision = r;
                }
            }
        }
    }
    Commits {
        ok,
        failed,
        first_error,
        latency: latency.summary(),
        revisions: [ledger.base, revision],
    }
}

/// What the writer task needs of [`Control`]: its API and the admin token.
#[derive(Clone)]
pub(crate) struct ControlHandle {
    /// `http://ADDR`.
    pub(crate) api: String,
    /// The client.
    pub(crate) http: reqwest::Client,
}

impl ControlHandle {
    /// `PUT path` (`If-Match: *` when `exists`: replace, never create).
    async fn put(&self, path: &str, body: &Value, exists: bool) -> anyhow::Result<()> {
        let mut req = self
            .http
            .put(format!("{}{path}", self.api))
            .bearer_auth(super::propagate::ADMIN)
            .json(body);
        if exists {
            req = req.header("if-match", "*");
        }
        let r = req.send().await?;
        let status = r.status();
        anyhow::ensure!(
            status.is_success(),
            "PUT {path}: {status}: {}",
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }

    async fn revision(&self) -> anyhow::Result<i64> {
        let r: Value = self
            .http
            .get(format!("{}/api/v1/environments/{ENV}", self.api))
            .bearer_auth(super::propagate::ADMIN)
            .send()
            .await?
            .json()
            .await?;
        r["revision"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no revision in {r}"))
    }
}

/// Samples `pid`'s RSS every second until `done`.
async fn sample_rss(pid: u32, started: Instant, done: Arc<AtomicBool>) -> Vec<(f64, u64)> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut samples = Vec::new();
    while !done.load(Ordering::Acquire) {
        tick.tick().await;
        if let Some(kib) = rss_kib(pid) {
            samples.push((started.elapsed().as_secs_f64(), kib));
        }
    }
    samples
}

fn mean(values: impl Iterator<Item = u64>) -> f64 {
    let (sum, n) = values.fold((0u64, 0u64), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

/// The first window after the warm-up against the last window.
fn rss_verdict(samples: Vec<(f64, u64)>, warmup: Duration, window: Duration) -> Rss {
    let (w, win) = (warmup.as_secs_f64(), window.as_secs_f64());
    let end = samples.last().map_or(0.0, |s| s.0);
    let first = mean(
        samples
            .iter()
            .filter(|s| s.0 >= w && s.0 < w + win)
            .map(|s| s.1),
    );
    let last = mean(samples.iter().filter(|s| s.0 > end - win).map(|s| s.1));
    let growth = if first > 0.0 { last / first - 1.0 } else { 0.0 };
    Rss {
        samples,
        warmup_seconds: w,
        window_seconds: win,
        first_window_mean_kib: first,
        last_window_mean_kib: last,
        growth,
        flat: first > 0.0 && growth.abs() <= FLAT_TOLERANCE,
    }
}

fn summarise(report: &mut Report, s: &Soak) {
    let d = &s.decisions;
    let mut t = Table::new(&["figure", "value"]);
    let rows: Vec<(&str, String)> = vec![
        (
            "requests",
            format!(
                "{} ok, {} failed, {} asked ({}), {}",
                s.load.ok,
                s.load.errors,
                fmt_rate(s.load.target_rps.unwrap_or(0.0)),
                fmt_rate(s.load.achieved_rps),
                if s.load.sustained {
                    "sustained"
                } else {
                    "NOT sustained"
                }
            ),
        ),
        (
            "first failure",
            s.load.first_error.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "latency p50 / p99 / p99.9 / max",
            format!(
                "{} / {} / {} / {}",
                fmt_us(s.load.latency.p50_us),
                fmt_us(s.load.latency.p99_us),
                fmt_us(s.load.latency.p999_us),
                fmt_us(s.load.latency.max_us)
            ),
        ),
        (
            "decisions checked",
            format!(
                "{}: {} missing, {} inconsistent",
                d.checked, d.missing, d.inconsistent
            ),
        ),
        (
            "revisions seen in answers",
            format!(
                "{} distinct, {}..={}",
                d.revisions_seen, d.revision_range[0], d.revision_range[1]
            ),
        ),
        (
            "staleness (next revision committed → answer still on the older one)",
            format!(
                "p50 {} / p99 {} / max {}",
                fmt_us(d.staleness.p50_us),
                fmt_us(d.staleness.p99_us),
                fmt_us(d.staleness.max_us)
            ),
        ),
        (
            "flag commits",
            format!(
                "{} ok, {} failed, revisions {}..={}, commit p50 {}",
                s.commits.ok,
                s.commits.failed,
                s.commits.revisions[0],
                s.commits.revisions[1],
                fmt_us(s.commits.latency.p50_us)
            ),
        ),
        (
            "sidecar RSS",
            format!(
                "first window {} → last window {} ({:+.1} %), {} samples",
                fmt_kib(s.rss.first_window_mean_kib),
                fmt_kib(s.rss.last_window_mean_kib),
                s.rss.growth * 100.0,
                s.rss.samples.len()
            ),
        ),
        (
            "control RSS",
            format!(
                "{} → {}",
                fmt_kib(s.control_rss_kib[0] as f64),
                fmt_kib(s.control_rss_kib[1] as f64)
            ),
        ),
        (
            "caught up with the last commit afterwards",
            s.final_revision_reached.to_string(),
        ),
        (
            "sidecar exited during the run",
            s.sidecar_exit.clone().unwrap_or_else(|| "no".into()),
        ),
    ];
    for (k, v) in rows {
        t.row(vec![k.into(), v]);
    }
    let mut text = vec![
        "Each answer's decision is checked: the flag's value is the revision that committed it, so \
         `soak-seq == N` in an answer carrying `vexil-revision: bench@N` means the decision came \
         from the snapshot the sidecar said it held; N must also be a revision that was committed."
            .into(),
    ];
    if !d.examples.is_empty() {
        text.push(format!(
            "Bad answers (first few): {}",
            d.examples.join("; ")
        ));
    }
    report.sections.push(Section {
        title: "Figures".into(),
        text,
        table: Some(t),
    });
    report.budget(
        "soak: failed requests",
        "0, rate sustained",
        format!(
            "{} failed of {}{}",
            s.load.errors,
            s.load.ok + s.load.errors,
            if s.load.sustained {
                ""
            } else {
                ", not sustained"
            }
        ),
        Some(s.load.errors == 0 && s.load.sustained && s.sidecar_exit.is_none()),
        "open loop through the outbound data plane",
    );
    report.budget(
        "soak: decisions consistent with a held revision",
        "every answer",
        format!(
            "{} missing, {} inconsistent of {}",
            d.missing, d.inconsistent, d.checked
        ),
        Some(d.checked > 0 && d.missing == 0 && d.inconsistent == 0 && s.final_revision_reached),
        "soak-seq == N for vexil-revision bench@N, N committed",
    );
    report.budget(
        "soak: sidecar RSS flat",
        "last minute within 10 % of the first minute after warm-up",
        format!("{:+.1} %", s.rss.growth * 100.0),
        Some(s.rss.flat),
        "RSS from /proc every second",
    );
}

impl Control {
    /// A cheap handle for a task of its own.
    pub(crate) fn http_handle(&self) -> ControlHandle {
        ControlHandle {
            api: self.api.clone(),
            http: self.http.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_the_dictionary() {
        assert_eq!(seq_value("soak-seq=42"), Some(42));
        assert_eq!(seq_value("a=?1, soak-seq=7, b=\"x\""), Some(7));
        assert_eq!(seq_value("soak-seq=\"7\""), None);
        assert_eq!(seq_value("other=7"), None);
    }

    #[test]
    fn answers_are_checked_against_the_ledger() {
        let ledger = Ledger::new(10);
        ledger.head.store(12, Ordering::Relaxed);
        let now = Instant::now();
        ledger.check(Some("soak-seq=11"), Some("bench@11"), now);
        ledger.check(Some("soak-seq=11"), Some("bench@12"), now);
        ledger.check(Some("soak-seq=13"), Some("bench@13"), now);
        ledger.check(None, Some("bench@11"), now);
        let d = ledger.decisions();
        assert_eq!((d.checked, d.missing, d.inconsistent), (4, 1, 2));
        assert_eq!(d.revisions_seen, 1);
    }

    #[test]
    fn rss_is_flat_within_ten_percent() {
        let samples: Vec<(f64, u64)> = (0..100).map(|i| (i as f64, 1000 + i)).collect();
        let r = rss_verdict(
            samples.clone(),
            Duration::from_secs(10),
            Duration::from_secs(20),
        );
        assert!(r.flat, "{r:?}");
        let growing: Vec<(f64, u64)> = (0..100).map(|i| (i as f64, 1000 + 10 * i)).collect();
        let r = rss_verdict(growing, Duration::from_secs(10), Duration::from_secs(20));
        assert!(!r.flat && r.growth > 0.1, "{r:?}");
    }
}
