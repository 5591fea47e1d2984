//! `propagate`: how fast a commit reaches the fleet. The real `vexil-control` binary (SQLite or
//! PostgreSQL, a fresh database per run, development TLS), pinned to one core; N simulated
//! sidecars in the harness on the other core, each the real sync client (`SyncClient`, its own
//! snapshot cell) sharing a few quinn endpoints. Each commit is one flag written through the admin
//! API; the figure is the time from the commit's HTTP response to the revision being applied
//! (compiled, swapped in: `SyncConfig::on_apply`) on each sidecar, over every sidecar and commit.
//! Control's RSS is read before the sidecars connect and after, to give its memory per connected
//! sidecar.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use vexil_control::sync::endpoint::{UDP_BUFFER_BYTES, bind_udp, endpoint_on};
use vexil_proto::sync::v1::{Delta, Entry};
use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};
use vexil_proxy::sync::{
    Backoff, Held, SyncClient, SyncConfig, SyncHandle, apply_delta, compile, compile_after,
};
use vexil_testkit::pg::PgDb;
use vexil_testkit::{free_tcp_port, free_udp_port, loopback};

use crate::harness::{Ctx, status};
use crate::hist::{Latencies, Summary, fmt_us};
use crate::report::{Report, Section, Table, fmt_kib, ratio};
use crate::sys::{Spawned, rss_kib};

/// Budget (docs/architecture.md#budgets): p99 commit → applied on 1,000 sidecars.
const BUDGET_P99_MS: f64 = 100.0;
/// Budget (docs/architecture.md#budgets): control memory per connected sidecar.
const BUDGET_KIB_PER_SIDECAR: f64 = 50.0;
/// Sidecars per quinn endpoint (UDP socket).
const PER_ENDPOINT: usize = 1000;
/// Sidecars connected at a time.
const CONNECT_BATCH: usize = 250;
/// The admin token control starts with.
pub(crate) const ADMIN: &str = "vxl_bench-admin-secret";
/// The environment.
pub(crate) const ENV: &str = "bench";
/// The stores control runs on, in the order they are measured (`--backends` picks some).
pub const BACKENDS: [&str; 2] = ["sqlite", "postgres"];
/// The flag every commit writes.
const TOGGLE: &str = "bench-toggle";

/// The outcome of one run (backend × flags × sidecars).
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Flags in the environment.
    pub flags: usize,
    /// Simulated sidecars.
    pub sidecars: usize,
    /// Commits measured.
    pub commits: usize,
    /// Commit's HTTP response → applied, over every (sidecar, commit).
    pub latency: Summary,
    /// Per commit: response → applied on the last sidecar.
    pub last_sidecar: Summary,
    /// The commit request itself (send → response).
    pub commit_request: Summary,
    /// Applications that happened before the HTTP response arrived (counted as 0).
    pub applied_before_response: u64,
    /// Seconds to connect every sidecar and give each its first snapshot.
    pub connect_seconds: f64,
    /// Control's RSS (KiB) with the environment loaded and no sidecar.
    pub control_rss_idle_kib: u64,
    /// Control's RSS (KiB) with every sidecar connected.
    pub control_rss_connected_kib: u64,
    /// (connected − idle) / sidecars.
    pub control_kib_per_sidecar: f64,
    /// The harness's RSS growth per simulated sidecar (KiB): a sidecar's own snapshot memory.
    pub harness_kib_per_sidecar: f64,
    /// What one sidecar spends on a one-flag delta (µs), measured in this process: apply it to the
    /// held document, compile the changed flag, publish the snapshot. The simulated sidecars pay
    /// it one after the other on the harness's core; a real sidecar pays it on its own.
    pub apply_us: f64,
}

/// A run that was not made, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// Backend.
    pub backend: &'static str,
    /// Flags.
    pub flags: usize,
    /// Sidecars.
    pub sidecars: usize,
    /// Why.
    pub reason: String,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("propagate", ctx.smoke, &ctx.pinning);
    let sidecar_counts = match &ctx.propagate_sidecars {
        Some(counts) => counts.clone(),
        None => ctx.pick(vec![100, 1_000, 10_000], vec![3]),
    };
    let flag_counts = match &ctx.propagate_flags {
        Some(counts) => counts.clone(),
        None => ctx.pick(vec![1, 1_000], vec![1, 20]),
    };
    let backends: Vec<&'static str> = BACKENDS
        .into_iter()
        .filter(|b| {
            ctx.propagate_backends
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == b))
        })
        .collect();
    report.config = json!({
        "control": "vexil-control serve --dev-tls --webhook-addr off (real binary), VEXIL_LOG=warn",
        "backends": backends,
        "database": format!("a fresh database per run: a new SQLite file, or CREATE DATABASE on {}", redact(&ctx.pg_url)),
        "sidecar_counts": sidecar_counts,
        "flag_counts": flag_counts,
        "commits_per_run": commits(ctx, 1000),
        "commits_per_run_10000_sidecars": commits(ctx, 10_000),
        "commit": format!("PUT /api/v1/environments/{ENV}/flags/{TOGGLE} (If-Match: *), toggling its default variant"),
        "gap_between_commits_ms": 100,
        "sidecars_per_quinn_endpoint": PER_ENDPOINT,
        "connect_batch": CONNECT_BATCH,
        "sync_client": "vexil_proxy::sync::SyncClient::with_endpoint, defaults (keep-alive 1 s, idle timeout 5 s), no state dir",
        "flag_sets": "n = 1: the toggle alone; n = 1000: vexil_bench::generate_flag_set(999, SEED) plus the toggle",
    });
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    // The harness's memory per simulated sidecar, by flag count: the largest measured under
    // any backend (a later run's RSS growth under-counts when it reuses memory an earlier
    // run freed, and the sidecars hold the same things whatever control stores them in).
    let mut harness_kib_per_sidecar: HashMap<usize, f64> = HashMap::new();
    for &backend in &backends {
        for &flags in &flag_counts {
            for &sidecars in &sidecar_counts {
                let per = harness_kib_per_sidecar.get(&flags).copied();
                if let Some(reason) = infeasible(sidecars, per) {
                    skipped.push(Skipped {
                        backend,
                        flags,
                        sidecars,
                        reason,
                    });
                    continue;
                }
                match run_one(ctx, backend, flags, sidecars).await {
                    Ok(r) => {
                        let per = harness_kib_per_sidecar.entry(flags).or_default();
                        *per = per.max(r.harness_kib_per_sidecar);
                        runs.push(r);
                    }
                    Err(e) => skipped.push(Skipped {
                        backend,
                        flags,
                        sidecars,
                        reason: format!("{e:#}"),
                    }),
                }
            }
        }
    }
    summarise(&mut report, &runs, &skipped);
    report.data = json!({ "runs": runs, "skipped": skipped });
    Ok(report)
}

fn commits(ctx: &Ctx, sidecars: usize) -> usize {
    match (ctx.smoke, sidecars) {
        (true, _) => 2,
        (false, n) if n >= 10_000 => 10,
        _ => 20,
    }
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.into(),
    }
}

/// Whether `sidecars` simulated sidecars would not fit in memory, from what one took before.
fn infeasible(sidecars: usize, kib_per_sidecar: Option<f64>) -> Option<String> {
    let per = kib_per_sidecar?;
    let available = mem_available_kib()? as f64;
    let needed = per * sidecars as f64;
    (needed > 0.6 * available).then(|| {
        format!(
            "not run: {sidecars} simulated sidecars would need about {} in the harness \
             ({} each, measured on the previous run: every sidecar holds its document and its \
             compiled flag set), more than 60 % of the {} available",
            fmt_kib(needed),
            fmt_kib(per),
            fmt_kib(available)
        )
    })
}

fn mem_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The flag set of an environment with `flags` flags (the toggle included).
fn flag_set(flags: usize) -> Value {
    let mut doc = if flags > 1 {
        crate::generate_flag_set(flags - 1, crate::SEED).document
    } else {
        json!({ "flags": {} })
    };
    doc["flags"][TOGGLE] = toggle(false);
    doc
}

fn toggle(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false},
           "defaultVariant": if on { "on" } else { "off" }})
}

/// A database for one run, removed afterwards.
pub(crate) struct Database {
    url: String,
    pg: Option<PgDb>,
}

impl Database {
    pub(crate) async fn create(ctx: &Ctx, backend: &str, id: &str) -> anyhow::Result<Database> {
        if backend == "sqlite" {
            let path = ctx.work.join(format!("propagate-{id}.db"));
            return Ok(Database {
                url: format!("sqlite://{}", path.display()),
                pg: None,
            });
        }
        let db = PgDb::create_on(&ctx.pg_url, &format!("vexil_bench_{id}"))
            .await
            .map_err(|e| anyhow::anyhow!("PostgreSQL at {}: {e}", redact(&ctx.pg_url)))?;
        Ok(Database {
            url: db.url(),
            pg: Some(db),
        })
    }

    pub(crate) async fn drop_it(self) {
        if let Some(db) = self.pg {
            db.destroy().await;
        }
    }
}

/// The control binary, running.
pub(crate) struct Control {
    pub(crate) process: Spawned,
    pub(crate) api: String,
    pub(crate) sync_url: String,
    pub(crate) ca: std::path::PathBuf,
    pub(crate) http: reqwest::Client,
}

impl Control {
    pub(crate) async fn start(ctx: &Ctx, db: &Database, id: &str) -> anyhow::Result<Control> {
        let admin = loopback(free_tcp_port());
        let sync = loopback(free_udp_port());
        let tls = ctx.work.join(format!("tls-{id}"));
        let mut cmd = ctx.pinning.server_command(&ctx.control_bin);
        cmd.arg("serve")
            .args(["--database-url", &db.url])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--sync-addr", &sync.to_string()])
            .args(["--webhook-addr", "off", "--dev-tls", "--tls-dir"])
            .arg(&tls)
            .env("VEXIL_ADMIN_TOKEN", ADMIN)
            .env("VEXIL_LOG", "warn");
        let mut process = Spawned::start(cmd, &format!("vexil-control-{id}"), &ctx.work)?;
        let started = Instant::now();
        while status(admin, "/readyz").await != Some(200) {
            if let Some(exit) = process.exited() {
                anyhow::bail!("{exit}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "control never ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Control {
            process,
            api: format!("http://{admin}"),
            sync_url: format!("quic://{sync}"),
            ca: tls.join("ca.pem"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()?,
        })
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(ADMIN)
            .header("if-match", "*")
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates the environment with `flags` flags and a sidecar token; returns the token.
    pub(crate) async fn prepare(&self, flags: usize) -> anyhow::Result<String> {
        use reqwest::Method;
        self.send(
            Method::POST,
            "/api/v1/environments",
            &json!({"key": ENV, "name": "Bench"}),
        )
        .await?;
        self.send(
            Method::PUT,
            &format!("/api/v1/environments/{ENV}/flagset"),
            &flag_set(flags),
        )
        .await?;
        let token = self
            .send(
                Method::POST,
                "/api/v1/tokens",
                &json!({"name": "bench-sidecars", "role": "sidecar", "environments": [ENV]}),
            )
            .await?;
        token["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("no token in {token}"))
    }

    pub(crate) async fn revision(&self) -> anyhow::Result<i64> {
        let r = self
            .http
            .get(format!("{}/api/v1/environments/{ENV}", self.api))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json::<Value>()
            .await?;
        r["revision"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no revision in {r}"))
    }

    /// Writes the toggle; returns when the request was sent and when its answer arrived.
    async fn commit(&self, on: bool) -> anyhow::Result<(Instant, Instant)> {
        let sent = Instant::now();
        let path = format!("/api/v1/environments/{ENV}/flags/{TOGGLE}");
        self.send(reqwest::Method::PUT, &path, &toggle(on)).await?;
        Ok((sent, Instant::now()))
    }
}

/// The simulated fleet: each sidecar's last applied revision and when it was applied.
struct Fleet {
    slots: Vec<Arc<Mutex<(i64, Instant)>>>,
    handles: Vec<SyncHandle>,
    endpoints: Vec<quinn::Endpoint>,
}

impl Fleet {
    /// Connects `n` sidecars in batches; returns once each holds `revision`, or fails when that
    /// takes longer than `limit` (saying how far it got).
    async fn connect(
        control: &Control,
        token: &str,
        n: usize,
        revision: i64,
        limit: Duration,
    ) -> anyhow::Result<Fleet> {
        let started = Instant::now();
        let mut fleet = Fleet {
            slots: Vec::with_capacity(n),
            handles: Vec::with_capacity(n),
            endpoints: Vec::new(),
        };
        for i in 0..n {
            if i % PER_ENDPOINT == 0 {
                // 1,000 connections share the socket: it needs control's buffers too.
                let socket = bind_udp("127.0.0.1:0".parse()?, UDP_BUFFER_BYTES)?;
                fleet.endpoints.push(endpoint_on(socket, None)?);
            }
            fleet.spawn(control, token, i)?;
            if (i + 1) % CONNECT_BATCH == 0 || i + 1 == n {
                let left = limit.saturating_sub(started.elapsed());
                if let Err(e) = fleet.wait(revision, left).await {
                    let synced = fleet.synced(revision);
                    anyhow::bail!(
                        "{synced} of {n} sidecars connected and synced in {:.0} s ({:.0}/s), then \
                         the time limit ran out ({e}); control's RSS was {}",
                        started.elapsed().as_secs_f64(),
                        synced as f64 / started.elapsed().as_secs_f64(),
                        fmt_kib(rss_kib(control.process.pid()).unwrap_or(0) as f64)
                    );
                }
            }
        }
        Ok(fleet)
    }

    fn spawn(&mut self, control: &Control, token: &str, i: usize) -> anyhow::Result<()> {
        let slot = Arc::new(Mutex::new((0i64, Instant::now())));
        let mut config = SyncConfig::new(&control.sync_url, ENV, token, control.ca.clone());
        config.client_id = format!("bench-sidecar-{i}");
        config.backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let s = slot.clone();
        config.on_apply = Some(Arc::new(move |rev| {
            *s.lock().expect("slot") = (rev, Instant::now());
        }));
        let endpoint = self.endpoints.last().expect("an endpoint").clone();
        let handle =
            SyncClient::with_endpoint(config, endpoint)?.spawn(Arc::new(SnapshotCell::new()));
        self.slots.push(slot);
        self.handles.push(handle);
        Ok(())
    }

    /// How many sidecars hold `revision` or later.
    fn synced(&self, revision: i64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().expect("slot").0 >= revision)
            .count()
    }

    /// Waits until every sidecar holds `revision` or later (polling every 5 ms: the times
    /// measured come from `on_apply`, not from this loop).
    async fn wait(&self, revision: i64, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let behind = self.slots.len() - self.synced(revision);
            if behind == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{behind} of {} sidecars never reached revision {revision} within {limit:?}",
                self.slots.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// When each sidecar applied its current revision.
    fn applied_at(&self) -> Vec<Instant> {
        self.slots
            .iter()
            .map(|s| s.lock().expect("slot").1)
            .collect()
    }

    async fn shutdown(self) {
        for h in self.handles {
            h.shutdown().await;
        }
        for e in self.endpoints {
            e.close(0u32.into(), b"done");
        }
    }
}

/// [`Run::apply_us`]: the mean over a few hundred one-flag deltas, as the sync client applies
/// them (`apply_delta`, `compile_after`, `SnapshotCell::publish`).
fn apply_us(flags: usize) -> anyhow::Result<f64> {
    let document = flag_set(flags);
    let (key, definition) = document["flags"]
        .as_object()
        .and_then(|f| f.iter().next())
        .map(|(k, v)| (k.clone(), v.to_string()))
        .ok_or_else(|| anyhow::anyhow!("an empty flag set"))?;
    let cell = SnapshotCell::new();
    let source = || Source::File("bench".into());
    cell.publish(Snapshot::new(ENV, 1, compile(&document)?, source()));
    let mut held = Held {
        revision: 1,
        incarnation: String::new(),
        document,
        signing: vexil_proxy::signing::SigningKeys::none(),
        proposals: vexil_proxy::shadow::Proposals::none(),
    };
    let rounds: u32 = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        let delta = Delta {
            from: held.revision,
            to: held.revision + 1,
            flag_upserts: vec![Entry {
                key: key.clone(),
                definition: definition.clone(),
            }],
            ..Delta::default()
        };
        apply_delta(&mut held, &delta)?;
        let base = cell.load();
        let set = compile_after(&delta, &held, base.as_deref().map(|s| &s.flags))?;
        cell.publish(Snapshot::new(ENV, held.revision, set, source()));
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}

async fn run_one(
    ctx: &Ctx,
    backend: &'static str,
    flags: usize,
    sidecars: usize,
) -> anyhow::Result<Run> {
    let id = format!("{:08x}", rand::random::<u32>());
    println!("vexil-bench: propagate {backend}, {flags} flags, {sidecars} sidecars");
    let db = Database::create(ctx, backend, &id).await?;
    let result = async {
        let control = Control::start(ctx, &db, &id).await?;
        let r = measure(ctx, &control, backend, flags, sidecars).await;
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
    flags: usize,
    sidecars: usize,
) -> anyhow::Result<Run> {
    let token = control.prepare(flags).await?;
    let mut revision = control.revision().await?;
    tokio::time::sleep(ctx.time(1_000, 100)).await;
    let pid = control.process.pid();
    let me = std::process::id();
    let control_idle = rss_kib(pid).unwrap_or(0);
    let harness_before = rss_kib(me).unwrap_or(0);
    let connecting = Instant::now();
    let limit = ctx.time(900_000, 60_000);
    let fleet = Fleet::connect(control, &token, sidecars, revision, limit).await?;
    let connect_seconds = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(ctx.time(2_000, 100)).await;
    let control_connected = rss_kib(pid).unwrap_or(0);
    let harness_after = rss_kib(me).unwrap_or(0);
    let mut latency = Latencies::default();
    let mut last = Latencies::default();
    let mut request = Latencies::default();
    let mut early = 0;
    let n_commits = commits(ctx, sidecars);
    for c in 0..n_commits {
        let (sent, answered) = control.commit(c % 2 == 0).await?;
        revision += 1;
        request.record(answered - sent);
        fleet.wait(revision, Duration::from_secs(120)).await?;
        let mut slowest = Duration::ZERO;
        for at in fleet.applied_at() {
            if at < answered {
                early += 1;
            }
            let d = at.saturating_duration_since(answered);
            slowest = slowest.max(d);
            latency.record(d);
        }
        last.record(slowest);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fleet.shutdown().await;
    Ok(Run {
        backend,
        flags,
        sidecars,
        commits: n_commits,
        latency: latency.summary(),
        last_sidecar: last.summary(),
        commit_request: request.summary(),
        applied_before_response: early,
        connect_seconds,
        control_rss_idle_kib: control_idle,
        control_rss_connected_kib: control_connected,
        control_kib_per_sidecar: control_connected.saturating_sub(control_idle) as f64
            / sidecars as f64,
        harness_kib_per_sidecar: harness_after.saturating_sub(harness_before) as f64
            / sidecars as f64,
        apply_us: apply_us(flags)?,
    })
}

fn summarise(report: &mut Report, runs: &[Run], skipped: &[Skipped]) {
    let mut t = Table::new(&[
        "backend",
        "flags",
        "sidecars",
        "commits",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "last sidecar p50",
        "last sidecar max",
        "p99 / budget",
        "commit request p50",
        "applied before response",
        "connect all",
        "control RSS idle → connected",
        "control per sidecar",
        "per sidecar / budget",
        "harness per sidecar",
        "delta apply per sidecar",
    ]);
    for r in runs {
        let [p50, p90, p99, p999, max] = r.latency.percentiles().map(fmt_us);
        t.row(vec![
            r.backend.into(),
            r.flags.to_string(),
            r.sidecars.to_string(),
            r.commits.to_string(),
            p50,
            p90,
            p99,
            p999,
            max,
            fmt_us(r.last_sidecar.p50_us),
            fmt_us(r.last_sidecar.max_us),
            ratio(Some(r.latency.p99_us / 1000.0), Some(BUDGET_P99_MS)),
            fmt_us(r.commit_request.p50_us),
            r.applied_before_response.to_string(),
            format!("{:.1} s", r.connect_seconds),
            format!(
                "{} → {}",
                fmt_kib(r.control_rss_idle_kib as f64),
                fmt_kib(r.control_rss_connected_kib as f64)
            ),
            format!("{:.1} KiB", r.control_kib_per_sidecar),
            ratio(
                Some(r.control_kib_per_sidecar),
                Some(BUDGET_KIB_PER_SIDECAR),
            ),
            format!("{:.1} KiB", r.harness_kib_per_sidecar),
            fmt_us(r.apply_us),
        ]);
    }
    report.sections.push(Section {
        title: "Figures".into(),
        text: vec![
            "Latency: from the commit's HTTP response (as the harness received it) to the \
             revision applied on a sidecar, over every sidecar and every commit; `last sidecar`: \
             per commit, until the last sidecar applied it. A sidecar that applied the revision \
             before the HTTP response arrived counts as 0. There is no peer baseline: the \
             budget is the reference (`p99 / budget`, `per sidecar / budget`)."
                .into(),
            "Simulated sidecars share the harness's single core: each applies every commit's \
             delta (`delta apply per sidecar`: apply, compile the changed flag, publish the \
             snapshot) one after the other, and decrypts and decodes its own copy of the frame, \
             so with many sidecars the tail measures the simulator's CPU (N × apply) as well as \
             control. Real sidecars do this in parallel on their own cores."
                .into(),
        ],
        table: Some(t),
    });
    if !skipped.is_empty() {
        let mut t = Table::new(&["backend", "flags", "sidecars", "why"]);
        for s in skipped {
            t.row(vec![
                s.backend.into(),
                s.flags.to_string(),
                s.sidecars.to_string(),
                s.reason.clone(),
            ]);
        }
        report.sections.push(Section {
            title: "Not run".into(),
            text: vec![],
            table: Some(t),
        });
    }
    budgets(report, runs);
}

fn budgets(report: &mut Report, runs: &[Run]) {
    for r in runs.iter().filter(|r| r.sidecars == 1_000) {
        report.budget(
            &format!("propagation, {} flags, {}", r.flags, r.backend),
            "commit → applied on 1,000 sidecars, p99 ≤ 100 ms",
            format!("p99 {}", fmt_us(r.latency.p99_us)),
            Some(r.latency.p99_us <= BUDGET_P99_MS * 1000.0),
            "1,000 simulated sidecars on one core",
        );
    }
    if let Some(worst) = runs.iter().filter(|r| r.sidecars >= 1_000).max_by(|a, b| {
        a.control_kib_per_sidecar
            .total_cmp(&b.control_kib_per_sidecar)
    }) {
        report.budget(
            "control memory per connected sidecar",
            "≤ 50 KiB",
            format!(
                "{:.1} KiB (worst run with ≥ 1,000 sidecars: {}, {} flags, {} sidecars)",
                worst.control_kib_per_sidecar, worst.backend, worst.flags, worst.sidecars
            ),
            Some(worst.control_kib_per_sidecar <= BUDGET_KIB_PER_SIDECAR),
            "RSS growth from no sidecar to all connected, divided by their number",
        );
    }
}
