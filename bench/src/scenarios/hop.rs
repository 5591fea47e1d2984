//! `hop`: what the sidecar adds to the request it sits in front of. An echo upstream on loopback
//! (in the harness); requests sent straight to it, through `vexil-proxy`'s outbound HTTP proxy
//! (absolute-form requests, as from an `HTTP_PROXY` client) injecting 20 flag decisions computed
//! from a realistic context taken from request headers, and through nginx doing a plain
//! `proxy_pass` with one added header (the harness writes its configuration and starts it), through
//! haproxy doing the same, and through a bare pingora proxy (`bare-pingora`: routing and one
//! header), which shows pingora's own cost apart from vexil's. At fixed rates (open loop) and at
//! peak (closed loop): the latency each proxy adds per percentile, its peak throughput as a ratio
//! to nginx, and its CPU per request (user and system). Then gRPC unary over h2c, directly and
//! through the sidecar.
//!
//! The data plane is the sidecar's `--outbound-addr` listener with `[context]` and `[[routes]]`
//! in its `--config` file (docs/headers.md). A binary without it (it refuses those sections, or
//! nothing answers on the outbound port) is reported as "data plane not available".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::harness::{Ctx, Sidecar, write_json};
use crate::hist::fmt_us;
use crate::http1::{Conn, HttpCall, Pool, get, serve_echo};
use crate::load::{LoadResult, OpenLoop, closed_loop, open_loop};
use crate::report::{Report, Section, Table, fmt_rate, ratio};
use vexil_testkit::{free_tcp_port, loopback};

use crate::sys::{CpuMeter, MachineMeter, Spawned};

/// Flags injected per request (the budget's workload, docs/architecture.md#budgets).
pub const INJECTED: usize = 20;
/// Flags in the sidecar's set.
pub const SET_SIZE: usize = 50;
/// Connections of the closed-loop peak.
const PEAK_CONNECTIONS: usize = 64;
/// Open loop: most requests in flight.
const MAX_IN_FLIGHT: usize = 4096;
/// The budget at 5,000 req/s (docs/architecture.md#budgets).
const BUDGET_P50_US: f64 = 50.0;
const BUDGET_P99_US: f64 = 250.0;

/// The request's path and context headers (what the sidecar maps to the evaluation context).
const PATH: &str = "/api/orders/42";
const HEADERS: [(&str, &str); 6] = [
    ("x-user-id", "user-7f3a9c21"),
    ("x-country", "NL"),
    ("x-plan", "pro"),
    ("x-age", "34"),
    ("x-app-version", "2.3.1"),
    ("x-email", "ada@example.com"),
];

/// One target's figures at one load.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// `direct`, `vexil` or `nginx`.
    pub target: &'static str,
    /// The load and what it gave (`server_cores`: the proxy's CPU).
    pub load: LoadResult,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::new("hop", ctx.smoke, &ctx.pinning);
    let rates = ctx.pick(vec![1_000.0, 5_000.0, 10_000.0], vec![200.0]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let (echo, _echo_task) = serve_echo(listener);
    let set = crate::generate_flag_set(SET_SIZE, crate::SEED);
    let injected = injected_flags(&set);
    report.config = json!({
        "upstream": "in-process echo server on loopback (harness core), 200 `ok`",
        "request": format!("GET {PATH} with headers {HEADERS:?}; through a proxy in absolute form (GET http://UPSTREAM{PATH})"),
        "vexil": format!(
            "vexil-proxy --flags-file FILE ({SET_SIZE} flags, generate_flag_set) --config proxy.toml --threads 1: \
             [context] from the request headers, one [[routes]] injecting {INJECTED} flags (all rule kinds); \
             run twice: [downstream] fast_path = true (`vexil` rows) and false (`vexil via pingora`)"
        ),
        "pingora": "bench/src/bin/bare-pingora.rs: pingora's HttpProxy on one worker thread, every request to the upstream in origin form with one added header (vexil-flags: checkout=?1), pingora's defaults otherwise",
        "haproxy": "haproxy (Debian package), nbthread 1, mode http, http-reuse always, http-request set-header vexil-flags \"checkout=?1\"",
        "grpc": format!("flagd evaluation v2 ResolveBoolean over h2c, {GRPC_CONNECTIONS} connections, to an in-process gRPC server: direct, and through vexil-proxy's outbound listener with prior knowledge"),
        "nginx": "nginx (Debian package), master_process off, worker_processes 1, proxy_pass to the upstream (keepalive 64, keepalive_requests 1000000 on both sides so that no connection is closed mid-run, HTTP/1.1) with proxy_set_header vexil-flags \"checkout=?1\"",
        "rates": rates,
        "open_loop_seconds": ctx.time(5_000, 300).as_secs_f64(),
        "peak": format!("closed loop, {PEAK_CONNECTIONS} keep-alive connections, {} s", ctx.time(5_000, 300).as_secs_f64()),
        "injected_flags": injected,
    });
    let direct_call = HttpCall::new(Pool::new(upstream), request(upstream, false), 200);
    let mut points = measure(ctx, "direct", &direct_call, None, &rates).await?;
    // The sidecar twice: with its HTTP/1.1 fast path (`vexil` rows) and with every request on
    // pingora's proxy (`vexil via pingora`).
    for (fast, labels) in [
        (true, ("vexil", "vexil 10k users")),
        (false, ("vexil via pingora", "vexil via pingora 10k users")),
    ] {
        let rows = vexil_rows(ctx, &set, &injected, upstream, fast, labels, &rates).await;
        match rows {
            Ok((rows, notes)) => {
                points.extend(rows);
                for n in notes {
                    report.note(n);
                }
            }
            Err(e) => report.note(format!("{}: data plane not available: {e:#}", labels.0)),
        }
    }
    let bare = ctx.proxy_bin.with_file_name("bare-pingora");
    let args = [loopback(free_tcp_port()).to_string(), upstream.to_string()];
    match Server::start(ctx, &bare, &args, "bare-pingora").await {
        Ok(server) => {
            let call = HttpCall::new(Pool::new(server.addr), request(upstream, true), 200);
            points
                .extend(measure(ctx, "pingora", &call, Some(server.process.pid()), &rates).await?);
        }
        Err(e) => report.note(format!("bare pingora: could not start: {e:#}")),
    }
    match &ctx.haproxy {
        None => report.note("haproxy: not available (install Debian's haproxy)"),
        Some(bin) => {
            let addr = loopback(free_tcp_port());
            let conf = ctx.work.join("haproxy.cfg");
            std::fs::write(&conf, haproxy_conf(addr, upstream))?;
            let args = ["-f".to_string(), conf.display().to_string(), "-db".into()];
            match Server::start_on(ctx, bin, &args, "haproxy", addr).await {
                Ok(server) => {
                    let call = HttpCall::new(Pool::new(server.addr), request(upstream, true), 200);
                    points.extend(
                        measure(ctx, "haproxy", &call, Some(server.process.pid()), &rates).await?,
                    );
                }
                Err(e) => report.note(format!("haproxy: could not start: {e:#}")),
            }
        }
    }
    match &ctx.nginx {
        None => report.note("nginx: not available (install Debian's nginx-light or nginx)"),
        Some(bin) => match Nginx::start(ctx, bin, upstream).await {
            Ok(nginx) => {
                let call = HttpCall::new(Pool::new(nginx.addr), request(upstream, true), 200);
                points
                    .extend(measure(ctx, "nginx", &call, Some(nginx.process.pid()), &rates).await?);
            }
            Err(e) => report.note(format!("nginx: could not start: {e:#}")),
        },
    }
    report.note(format!(
        "the echo upstream answered {} requests, {} of them with a vexil-flags header",
        echo.requests.load(std::sync::atomic::Ordering::Relaxed),
        echo.with_flags.load(std::sync::atomic::Ordering::Relaxed)
    ));
    summarise(&mut report, &points);
    report.data = json!({ "points": points });
    Ok(report)
}

/// One sidecar's rows, named by `labels`: one user, and 10,000 users; with the fast path also the
/// gRPC rows (h2c never takes it, so once is enough). Notes for the report beside them.
async fn vexil_rows(
    ctx: &Ctx,
    set: &crate::GeneratedSet,
    injected: &[String],
    upstream: SocketAddr,
    fast: bool,
    (label, users_label): (&'static str, &'static str),
    rates: &[f64],
) -> anyhow::Result<(Vec<Point>, Vec<String>)> {
    let mut sidecar = start_vexil(ctx, &set.document, injected, fast).await?;
    let mut notes = Vec::new();
    let members = Verify::new(sidecar.outbound, upstream).members().await?;
    if members != INJECTED as u64 {
        notes.push(format!(
            "{label}: the upstream saw {members} members in vexil-flags, {INJECTED} expected"
        ));
    }
    let call = HttpCall::new(Pool::new(sidecar.outbound), request(upstream, true), 200);
    let pid = sidecar.pid();
    let mut points = measure(ctx, label, &call, Some(pid), rates).await?;
    // The decision cache mostly missing: a user of 10,000 per request.
    let users = HttpCall::rotating(
        Pool::new(sidecar.outbound),
        (0..USERS).map(|u| user_request(upstream, u)).collect(),
        200,
    );
    points.extend(measure(ctx, users_label, &users, Some(pid), rates).await?);
    if fast {
        match grpc_rows(ctx, set, sidecar.outbound, pid, rates).await {
            Ok(grpc) => points.extend(grpc),
            Err(e) => notes.push(format!("gRPC (h2c) rows: {e:#}")),
        }
    }
    if let Some(exit) = sidecar.process.exited() {
        notes.push(format!(
            "{label}: vexil-proxy exited during the run: {exit}"
        ));
    }
    Ok((points, notes))
}

/// HTTP/2 streams per connection of the gRPC load (its channels).
const GRPC_CONNECTIONS: usize = 4;

/// gRPC unary over h2c: `ResolveBoolean` (flagd evaluation v2) against an in-process gRPC server on
/// the harness core, directly (`grpc direct`) and through the sidecar's outbound listener with
/// prior knowledge, routed by `:authority` (`grpc vexil`, which adds the decisions as metadata).
async fn grpc_rows(
    ctx: &Ctx,
    set: &crate::GeneratedSet,
    sidecar: SocketAddr,
    pid: u32,
    rates: &[f64],
) -> anyhow::Result<Vec<Point>> {
    use std::sync::Arc;
    use vexil_proxy::lookup::grpc::{EvaluationService, GrpcConfig};
    use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};

    let flags = vexil_engine::FlagSet::from_json(&set.document)
        .map_err(|e| anyhow::anyhow!("the generated set: {e:?}"))?;
    let key = set.document["flags"]
        .as_object()
        .and_then(|f| {
            f.iter().find(|(_, d)| {
                d["variants"]
                    .as_object()
                    .is_some_and(|v| v.values().all(serde_json::Value::is_boolean))
            })
        })
        .map(|(k, _)| k.clone())
        .ok_or_else(|| anyhow::anyhow!("no boolean flag in the generated set"))?;
    let cell = Arc::new(SnapshotCell::new());
    cell.publish(Snapshot::new("hop", 1, flags, Source::File("hop".into())));
    let metrics = Arc::new(vexil_proxy::metrics::Metrics::new(cell.clone()));
    let service = EvaluationService::new(cell, metrics, GrpcConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let server = tokio::spawn(vexil_proxy::lookup::grpc::serve(
        listener,
        service,
        std::future::pending(),
    ));
    let context = crate::context();
    let kind = crate::grpc::GrpcKind::V2Boolean;
    let direct =
        crate::grpc::GrpcCall::connect(upstream, GRPC_CONNECTIONS, kind, &key, &context, 0).await?;
    let mut points = measure(ctx, "grpc direct", &direct, None, rates).await?;
    let through = crate::grpc::GrpcCall::connect_via(
        sidecar,
        Some(upstream),
        GRPC_CONNECTIONS,
        kind,
        &key,
        &context,
        0,
    )
    .await?;
    points.extend(measure(ctx, "grpc vexil", &through, Some(pid), rates).await?);
    server.abort();
    Ok(points)
}

/// Distinct users of the `vexil 10k users` row (more than the decision cache holds).
const USERS: usize = 10_000;

/// The request through a proxy with user `u` as `x-user-id`.
fn user_request(upstream: SocketAddr, u: usize) -> Vec<u8> {
    let user = format!("user-{u:08x}");
    let mut headers = HEADERS;
    headers[0].1 = &user;
    get(
        &upstream.to_string(),
        &format!("http://{upstream}{PATH}"),
        &headers,
    )
}

/// The request: to the upstream directly (origin form) or through a proxy (absolute form).
fn request(upstream: SocketAddr, via_proxy: bool) -> Vec<u8> {
    let target = if via_proxy {
        format!("http://{upstream}{PATH}")
    } else {
        PATH.to_string()
    };
    get(&upstream.to_string(), &target, &HEADERS)
}

/// The flags hop's route injects: the first [`INJECTED`] of `set`, one of every rule kind.
pub fn injected_flags(set: &crate::GeneratedSet) -> Vec<String> {
    set.kinds
        .iter()
        .take(INJECTED)
        .map(|(k, _)| k.clone())
        .collect()
}

/// The sidecar's data-plane configuration: context from headers, one route injecting `flags`.
pub fn proxy_toml(flags: &[String]) -> String {
    let mut toml = String::from("[context]\n");
    for (attribute, header) in [
        ("targetingKey", "x-user-id"),
        ("country", "x-country"),
        ("plan", "x-plan"),
        ("age", "x-age"),
        ("version", "x-app-version"),
        ("email", "x-email"),
    ] {
        toml.push_str(&format!("{attribute} = [\"header:{header}\"]\n"));
    }
    let keys: Vec<String> = flags.iter().map(|k| format!("\"{k}\"")).collect();
    toml.push_str(&format!("\n[[routes]]\nflags = [{}]\n", keys.join(", ")));
    toml
}

/// The sidecar of the `vexil` rows (`fast`: its HTTP/1.1 fast path on).
async fn start_vexil(
    ctx: &Ctx,
    doc: &serde_json::Value,
    injected: &[String],
    fast: bool,
) -> anyhow::Result<Sidecar> {
    let file = write_json(&ctx.work, "hop-flags.json", doc)?;
    let config = ctx.work.join("hop-proxy.toml");
    let toml = format!(
        "{}\n[downstream]\nfast_path = {fast}\n",
        proxy_toml(injected)
    );
    std::fs::write(&config, toml)?;
    let args = vec![
        "--flags-file".to_string(),
        file.display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--threads".into(),
        "1".into(),
    ];
    let mut sidecar = Sidecar::start(ctx, &args, "vexil-proxy-hop")?;
    sidecar.wait_ready(Duration::from_secs(30)).await?;
    Ok(sidecar)
}

/// One request through the proxy, to check that it answers and injects.
struct Verify {
    proxy: SocketAddr,
    upstream: SocketAddr,
}

impl Verify {
    fn new(proxy: SocketAddr, upstream: SocketAddr) -> Verify {
        Verify { proxy, upstream }
    }

    /// Members of `vexil-flags` the upstream saw.
    async fn members(&self) -> anyhow::Result<u64> {
        let attempt = async {
            let mut conn = Conn::connect(self.proxy).await.map_err(|e| {
                anyhow::anyhow!("nothing answers on --outbound-addr {} ({e})", self.proxy)
            })?;
            let a = conn
                .exchange(&request(self.upstream, true), &["x-echo-vexil-flags"])
                .await?;
            anyhow::ensure!(a.status == 200, "status {} through the proxy", a.status);
            Ok(a.kept[0]
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .map_err(|_| {
                anyhow::anyhow!("no answer on --outbound-addr {} within 5 s", self.proxy)
            })?
    }
}

/// nginx, started by the harness with its own configuration.
struct Nginx {
    process: Spawned,
    addr: SocketAddr,
}

impl Nginx {
    async fn start(ctx: &Ctx, bin: &Path, upstream: SocketAddr) -> anyhow::Result<Nginx> {
        let dir = ctx.work.join("nginx");
        std::fs::create_dir_all(dir.join("tmp"))?;
        let addr = loopback(free_tcp_port());
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir, addr, upstream))?;
        let mut cmd = ctx.pinning.server_command(bin);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"));
        let mut process = Spawned::start(cmd, "nginx", &ctx.work)?;
        let started = Instant::now();
        loop {
            if Conn::connect(addr).await.is_ok() {
                return Ok(Nginx { process, addr });
            }
            if let Some(exit) = process.exited() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                anyhow::bail!("{exit} {log}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "nginx never listened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A proxy the harness starts (bare pingora, haproxy) on a loopback port, pinned like the sidecar.
struct Server {
    process: Spawned,
    addr: SocketAddr,
}

impl Server {
    /// `program ARGS` whose first argument is the address it listens on.
    async fn start(
        ctx: &Ctx,
        program: &Path,
        args: &[String],
        name: &str,
    ) -> anyhow::Result<Server> {
        let addr: SocketAddr = args[0].parse()?;
        Self::start_on(ctx, program, args, name, addr).await
    }

    /// `program ARGS`, listening on `addr`.
    async fn start_on(
        ctx: &Ctx,
        program: &Path,
        args: &[String],
        name: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<Server> {
        anyhow::ensure!(program.exists(), "{} is not built", program.display());
        let mut cmd = ctx.pinning.server_command(program);
        cmd.args(args);
        let mut process = Spawned::start(cmd, name, &ctx.work)?;
        let started = Instant::now();
        loop {
            if Conn::connect(addr).await.is_ok() {
                return Ok(Server { process, addr });
            }
            if let Some(exit) = process.exited() {
                anyhow::bail!("{exit}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{name} never listened on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// haproxy's configuration: one thread, keep-alive to the upstream, one added header.
pub fn haproxy_conf(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 8000\n\ndefaults\n  mode http\n  timeout connect 5s\n  \
         timeout client 60s\n  timeout server 60s\n  http-reuse always\n\n\
         frontend hop\n  bind {listen}\n  http-request set-header vexil-flags \"checkout=?1\"\n  \
         default_backend echo\n\nbackend echo\n  server echo {upstream}\n"
    )
}

/// nginx's configuration: one process, a keep-alive upstream, one added header.
pub fn nginx_conf(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = |p: &str| -> PathBuf { dir.join(p) };
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n\
           fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
           upstream echo {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}\n\
           server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://echo;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
               proxy_set_header vexil-flags \"checkout=?1\";\n    }}\n  }}\n}}\n",
        pid = d("nginx.pid").display(),
        err = d("error.log").display(),
        t = d("tmp").display(),
    )
}

/// Warm-up, each rate, then the peak; the proxy's CPU measured when there is a proxy.
async fn measure<C: crate::load::Call>(
    ctx: &Ctx,
    target: &'static str,
    call: &C,
    pid: Option<u32>,
    rates: &[f64],
) -> anyhow::Result<Vec<Point>> {
    call.call().await?;
    closed_loop(call, PEAK_CONNECTIONS, ctx.time(1_000, 100)).await;
    let mut out = Vec::new();
    for &rate in rates {
        let meter = pid.map(CpuMeter::start);
        let machine = MachineMeter::start(pid);
        let spec = OpenLoop {
            rate,
            duration: ctx.time(5_000, 300),
            max_in_flight: MAX_IN_FLIGHT,
        };
        let mut load = open_loop(call, spec).await;
        load.server_cores = meter.as_ref().map(|m| m.cores_used());
        load.server_user_system = meter.map(|m| m.user_system());
        load.other_cores = Some(machine.other_cores());
        out.push(Point { target, load });
    }
    let meter = pid.map(CpuMeter::start);
    let machine = MachineMeter::start(pid);
    let mut load = closed_loop(call, PEAK_CONNECTIONS, ctx.time(5_000, 300)).await;
    load.server_cores = meter.as_ref().map(|m| m.cores_used());
    load.server_user_system = meter.map(|m| m.user_system());
    load.other_cores = Some(machine.other_cores());
    out.push(Point { target, load });
    Ok(out)
}

fn same_load<'a>(points: &'a [Point], target: &str, like: &LoadResult) -> Option<&'a Point> {
    points.iter().find(|p| {
        p.target == target && p.load.mode == like.mode && p.load.target_rps == like.target_rps
    })
}

/// `target`'s latency minus direct's, per percentile.
fn added(points: &[Point], target: &str, like: &LoadResult) -> Option<[f64; 5]> {
    added_to(points, target, "direct", like)
}

/// `target`'s latency minus `base`'s at the same load, per percentile.
fn added_to(points: &[Point], target: &str, base: &str, like: &LoadResult) -> Option<[f64; 5]> {
    let t = same_load(points, target, like)?.load.latency.percentiles();
    let d = same_load(points, base, like)?.load.latency.percentiles();
    Some(std::array::from_fn(|i| t[i] - d[i]))
}

fn summarise(report: &mut Report, points: &[Point]) {
    let loads: Vec<&LoadResult> = points
        .iter()
        .filter(|p| p.target == "direct")
        .map(|p| &p.load)
        .collect();
    let names = ["p50", "p90", "p99", "p99.9", "max"];
    let mut t = Table::new(&[
        "load",
        "percentile",
        "direct",
        "vexil added",
        "via pingora added",
        "pingora added",
        "haproxy added",
        "nginx added",
        "vexil / nginx",
    ]);
    let shown = |a: Option<[f64; 5]>, i: usize| a.map_or("not available".into(), |a| fmt_us(a[i]));
    for l in &loads {
        let direct = l.latency.percentiles();
        let v = added(points, "vexil", l);
        let vp = added(points, "vexil via pingora", l);
        let p = added(points, "pingora", l);
        let h = added(points, "haproxy", l);
        let n = added(points, "nginx", l);
        for (i, name) in names.iter().enumerate() {
            t.row(vec![
                load_label(l),
                (*name).into(),
                fmt_us(direct[i]),
                shown(v, i),
                shown(vp, i),
                shown(p, i),
                shown(h, i),
                shown(n, i),
                ratio(v.map(|v| v[i]), n.map(|n| n[i])),
            ]);
        }
    }
    report.sections.push(Section {
        title: "Added latency".into(),
        text: vec![
            "Each proxy's latency minus the direct latency at the same load and percentile \
             (open loop: from the intended send time). Negative values are noise."
                .into(),
        ],
        table: Some(t),
    });
    let mut t = Table::new(&[
        "target",
        "load",
        "achieved",
        "p50",
        "p99",
        "errors",
        "proxy CPU",
        "per proxy core",
        "other CPU",
        "ratio to nginx",
    ]);
    for p in points {
        let nginx = same_load(points, "nginx", &p.load);
        t.row(vec![
            p.target.into(),
            load_label(&p.load),
            fmt_rate(p.load.achieved_rps),
            fmt_us(p.load.latency.p50_us),
            fmt_us(p.load.latency.p99_us),
            p.load.errors.to_string(),
            p.load
                .server_cores
                .map_or("—".into(), |c| format!("{:.0} %", c * 100.0)),
            p.load.per_server_core().map_or("—".into(), fmt_rate),
            p.load
                .other_cores
                .map_or("—".into(), |c| format!("{c:.2} cores")),
            if p.load.mode == "closed" && p.target == "vexil" {
                ratio(
                    Some(p.load.achieved_rps),
                    nginx.map(|n| n.load.achieved_rps),
                )
            } else {
                "—".into()
            },
        ]);
    }
    report.sections.push(Section {
        title: "Throughput".into(),
        text: vec![
            "`per proxy core`: achieved rate divided by the proxy's CPU share, the rate one fully \
             used core would give at the measured cost per request (the load generator and the \
             upstream share the other core, so the peak may be theirs)."
                .into(),
        ],
        table: Some(t),
    });
    let grpc: Vec<&LoadResult> = points
        .iter()
        .filter(|p| p.target == "grpc direct")
        .map(|p| &p.load)
        .collect();
    if !grpc.is_empty() {
        let mut t = Table::new(&["load", "percentile", "direct", "vexil added"]);
        for l in &grpc {
            let direct = l.latency.percentiles();
            let v = added_to(points, "grpc vexil", "grpc direct", l);
            for (i, name) in names.iter().enumerate() {
                t.row(vec![
                    load_label(l),
                    (*name).into(),
                    fmt_us(direct[i]),
                    shown(v, i),
                ]);
            }
        }
        report.sections.push(Section {
            title: "gRPC unary over h2c".into(),
            text: vec![format!(
                "flagd evaluation v2 `ResolveBoolean` against an in-process gRPC server (harness \
                 core), {GRPC_CONNECTIONS} HTTP/2 connections: directly, and through vexil-proxy's \
                 outbound listener with prior knowledge (routed by `:authority`, decisions added \
                 as metadata)."
            )],
            table: Some(t),
        });
    }
    cpu_per_request(report, points);
    budgets(report, points);
}

/// The server's CPU per request (user and system), per target and load, and vexil's own cost:
/// vexil's total less bare pingora's at the same load.
fn cpu_per_request(report: &mut Report, points: &[Point]) {
    let mut t = Table::new(&[
        "target",
        "load",
        "achieved",
        "user µs/req",
        "system µs/req",
        "total µs/req",
        "vexil − pingora",
    ]);
    let total = |p: &Point| p.load.cpu_us_per_request().map(|(u, s)| u + s);
    for p in points
        .iter()
        .filter(|p| p.load.server_user_system.is_some())
    {
        let split = p.load.cpu_us_per_request();
        let own = if p.target.starts_with("vexil") {
            let bare = same_load(points, "pingora", &p.load).and_then(total);
            match (total(p), bare) {
                (Some(v), Some(b)) => format!("{:.1}", v - b),
                _ => "—".into(),
            }
        } else {
            "—".into()
        };
        t.row(vec![
            p.target.into(),
            load_label(&p.load),
            fmt_rate(p.load.achieved_rps),
            split.map_or("—".into(), |(u, _)| format!("{u:.1}")),
            split.map_or("—".into(), |(_, s)| format!("{s:.1}")),
            total(p).map_or("—".into(), |t| format!("{t:.1}")),
            own,
        ]);
    }
    report.sections.push(Section {
        title: "CPU per request".into(),
        text: vec![
            "The measured proxy's user and system CPU time (`/proc/PID/stat`) over the run divided \
             by the requests it answered. `pingora`: a bare pingora proxy (`bench/src/bin/\
             bare-pingora.rs`: routing and one added header, one worker thread); `vexil − pingora`: \
             what vexil-proxy adds above pingora's own request path at the same load. `vexil`: one \
             user, every request's decisions from the decision cache after the first; `vexil 10k \
             users`: a user of 10,000 in turn per request, more than the cache holds (it misses). \
             `vexil` rows: the sidecar's HTTP/1.1 fast path (`[downstream] fast_path = true`); \
             `vexil via pingora`: the same sidecar with every request on pingora's proxy."
                .into(),
        ],
        table: Some(t),
    });
}

fn load_label(l: &LoadResult) -> String {
    match (l.target_rps, l.concurrency) {
        (Some(r), _) => format!(
            "{}{}",
            fmt_rate(r),
            if l.sustained { "" } else { " (not sustained)" }
        ),
        (None, Some(c)) => format!("peak ({c} connections)"),
        _ => "?".into(),
    }
}

fn budgets(report: &mut Report, points: &[Point]) {
    let at_5k = points
        .iter()
        .find(|p| p.target == "direct" && p.load.target_rps == Some(5_000.0))
        .map(|p| p.load.clone());
    let vexil_added = at_5k.as_ref().and_then(|l| added(points, "vexil", l));
    let (figure, met) = match vexil_added {
        Some(a) => (
            format!("p50 +{}, p99 +{}", fmt_us(a[0]), fmt_us(a[2])),
            Some(a[0] <= BUDGET_P50_US && a[2] <= BUDGET_P99_US),
        ),
        None => ("data plane not available".into(), None),
    };
    report.budget(
        "hop, added latency at 5,000 req/s, 20 flags",
        "p50 ≤ 50 µs, p99 ≤ 250 µs",
        figure,
        met,
        "loopback, sidecar on one core",
    );
    let peak = |target| {
        points
            .iter()
            .find(|p| p.target == target && p.load.mode == "closed")
            .map(|p| p.load.achieved_rps)
    };
    let (figure, met) = match (peak("vexil"), peak("nginx")) {
        (Some(v), Some(n)) => (
            format!(
                "{} vs nginx {} ({})",
                fmt_rate(v),
                fmt_rate(n),
                ratio(Some(v), Some(n))
            ),
            Some(v >= n),
        ),
        (None, _) => ("data plane not available".into(), None),
        (Some(v), None) => (format!("{} (nginx not available)", fmt_rate(v)), None),
    };
    report.budget(
        "hop, peak throughput",
        "≥ nginx proxy_pass, same cores",
        figure,
        met,
        "closed loop, 64 connections",
    );
    // CPU per request at peak, against nginx's in the same run (issue 17).
    let cpu = |target| {
        points
            .iter()
            .find(|p| p.target == target && p.load.mode == "closed")
            .and_then(|p| p.load.cpu_us_per_request())
            .map(|(u, s)| u + s)
    };
    for (target, factor, budget, label) in [
        (
            "vexil",
            1.0,
            "≤ nginx's",
            "hop, CPU per request, one user (decision cache hits)",
        ),
        (
            "vexil 10k users",
            1.2,
            "≤ 1.2 × nginx's",
            "hop, CPU per request, 10,000 users (decision cache misses)",
        ),
    ] {
        let (figure, met) = match (cpu(target), cpu("nginx")) {
            (Some(v), Some(n)) => (
                format!("{v:.1} µs vs nginx {n:.1} µs ({:.2}×)", v / n),
                Some(v <= factor * n),
            ),
            (None, _) => ("data plane not available".into(), None),
            (Some(v), None) => (format!("{v:.1} µs (nginx not available)"), None),
        };
        report.budget(
            label,
            budget,
            figure,
            met,
            "closed loop, 64 connections, server CPU",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_config_maps_headers_and_injects_the_flags() {
        let toml = proxy_toml(&["a".into(), "b".into()]);
        assert!(
            toml.contains("targetingKey = [\"header:x-user-id\"]"),
            "{toml}"
        );
        assert!(toml.contains("flags = [\"a\", \"b\"]"), "{toml}");
    }

    #[test]
    fn haproxy_gets_one_thread_keep_alive_and_one_header() {
        let c = haproxy_conf(loopback(1), loopback(2));
        assert!(c.contains("nbthread 1"), "{c}");
        assert!(c.contains("http-reuse always"), "{c}");
        assert!(c.contains("set-header vexil-flags \"checkout=?1\""), "{c}");
        assert!(c.contains("server echo 127.0.0.1:2"), "{c}");
    }

    #[test]
    fn nginx_gets_one_process_and_one_header() {
        let c = nginx_conf(Path::new("/tmp/x"), loopback(1), loopback(2));
        assert!(c.contains("master_process off;"));
        assert!(c.contains("proxy_set_header vexil-flags"));
        assert!(c.contains("server 127.0.0.1:2; keepalive 64;"));
    }
}
