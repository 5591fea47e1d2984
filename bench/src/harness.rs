//! What every scenario shares: the run's settings ([`Ctx`]), the binaries under test, and the real
//! `vexil-proxy` sidecar started on free ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::http1::{Conn, get};
use vexil_testkit::{free_tcp_port, loopback};

use crate::sys::{Pinning, Spawned};

/// Settings of one harness run.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Tiny loads, a few seconds in all.
    pub smoke: bool,
    /// Who runs on which core.
    pub pinning: Pinning,
    /// The `vexil-proxy` binary.
    pub proxy_bin: PathBuf,
    /// The `vexil-control` binary.
    pub control_bin: PathBuf,
    /// Scratch space of this run.
    pub work: PathBuf,
    /// The Unleash Edge binary (`VEXIL_UNLEASH_EDGE`), when given.
    pub unleash_edge: Option<PathBuf>,
    /// The nginx binary, when installed.
    pub nginx: Option<PathBuf>,
    /// The haproxy binary, when installed.
    pub haproxy: Option<PathBuf>,
    /// Cargo's target directory (criterion's data is under `criterion/`).
    pub target_dir: PathBuf,
    /// Run the criterion benches (otherwise only read what they left).
    pub run_criterion: bool,
    /// PostgreSQL server to create databases on (an existing database's URL, trust auth).
    pub pg_url: String,
    /// `soak`: how long the traffic runs (default: 600 s, 3 s in a smoke run).
    pub soak_duration: Option<Duration>,
    /// `propagate`: only these sidecar counts (`--sidecars`).
    pub propagate_sidecars: Option<Vec<usize>>,
    /// `propagate`: only these flag counts (`--flags`).
    pub propagate_flags: Option<Vec<usize>>,
    /// `propagate`: only these backends (`--backends`: `sqlite`, `postgres`).
    pub propagate_backends: Option<Vec<String>>,
}

impl Ctx {
    /// `full` in a real run, `smoke` in a smoke run.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }

    /// A duration: `full_ms` in a real run, `smoke_ms` in a smoke run.
    pub fn time(&self, full_ms: u64, smoke_ms: u64) -> Duration {
        Duration::from_millis(self.pick(full_ms, smoke_ms))
    }
}

/// A running `vexil-proxy` on free loopback ports.
pub struct Sidecar {
    /// The process.
    pub process: Spawned,
    /// gRPC evaluation (v1 and v2).
    pub grpc: SocketAddr,
    /// OFREP.
    pub ofrep: SocketAddr,
    /// Admin (`/readyz`).
    pub admin: SocketAddr,
    /// Outbound HTTP proxy (the data plane).
    pub outbound: SocketAddr,
    /// When it was started.
    pub started: Instant,
}

impl Sidecar {
    /// Starts the binary, pinned to the server core, with `args` (the flag source and options)
    /// and every listener on a free port.
    pub fn start(ctx: &Ctx, args: &[String], name: &str) -> anyhow::Result<Sidecar> {
        let [outbound, grpc, admin, sync, ofrep] = [(); 5].map(|()| loopback(free_tcp_port()));
        let mut cmd = ctx.pinning.server_command(&ctx.proxy_bin);
        cmd.args(args)
            .arg("--outbound-addr")
            .arg(outbound.to_string())
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--sync-addr")
            .arg(sync.to_string())
            .arg("--ofrep-addr")
            .arg(ofrep.to_string())
            .arg("--shutdown-grace-secs")
            .arg("1")
            .env_clear()
            .env("VEXIL_LOG", "warn");
        let started = Instant::now();
        let process = Spawned::start(cmd, name, &ctx.work)?;
        Ok(Sidecar {
            process,
            grpc,
            ofrep,
            admin,
            outbound,
            started,
        })
    }

    /// Waits until `/readyz` answers 200 (polling every 0.5 ms); returns the time since start.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        loop {
            if status(self.admin, "/readyz").await == Some(200) {
                return Ok(self.started.elapsed());
            }
            if let Some(exit) = self.process.exited() {
                anyhow::bail!("{exit}");
            }
            anyhow::ensure!(
                self.started.elapsed() < limit,
                "{} not ready within {limit:?}: {}",
                self.process.name,
                self.process.stderr_tail(5)
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// The status of `GET path` on `addr`, `None` when nothing answers.
pub async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut conn = Conn::connect(addr).await.ok()?;
    let answer = conn
        .exchange(
            &get(&addr.to_string(), path, &[("connection", "close")]),
            &[],
        )
        .await
        .ok()?;
    Some(answer.status)
}

/// Writes `value` as JSON to `dir/name`; returns the path.
pub fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string())?;
    Ok(path)
}
