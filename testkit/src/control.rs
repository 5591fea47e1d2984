//! The real `vexil-control serve` as a child process.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::{free_addr, free_udp_port, http_status, http_status_blocking};
use crate::process::{Process, binary};

/// How to start `vexil-control serve`: on a free admin port and a free QUIC port, with a clean
/// environment (`VEXIL_LOG`, `NO_COLOR` and what [`ControlCmd::env`] adds), on one database.
///
/// ```ignore
/// let control = ControlCmd::new(&db.url()).dev_tls(&tls_dir).env("VEXIL_ADMIN_TOKEN", ADMIN).start().await;
/// ```
#[derive(Clone, Debug)]
pub struct ControlCmd {
    binary: Option<PathBuf>,
    name: String,
    database_url: String,
    tls_dir: Option<PathBuf>,
    sync_port: Option<u16>,
    grace_secs: u64,
    log: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    ready_path: String,
    ready_within: Duration,
}

impl ControlCmd {
    /// Control on `database_url` (`--database-url`).
    pub fn new(database_url: &str) -> ControlCmd {
        ControlCmd {
            binary: None,
            name: "vexil-control".into(),
            database_url: database_url.to_string(),
            tls_dir: None,
            sync_port: None,
            grace_secs: 5,
            log: "info".into(),
            args: Vec::new(),
            env: Vec::new(),
            ready_path: "/readyz".into(),
            ready_within: Duration::from_secs(60),
        }
    }

    /// The binary to run (default: [`binary`]`("vexil-control")`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The name messages use (default `vexil-control`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `--dev-tls --tls-dir DIR`: development TLS, generated into `dir` on the first start (and
    /// reused by the replicas started on it later).
    pub fn dev_tls(mut self, dir: &Path) -> Self {
        self.tls_dir = Some(dir.to_path_buf());
        self
    }

    /// The QUIC sync port (default: a free one).
    pub fn sync_port(mut self, port: u16) -> Self {
        self.sync_port = Some(port);
        self
    }

    /// `--shutdown-grace-secs` (default 5).
    pub fn grace_secs(mut self, secs: u64) -> Self {
        self.grace_secs = secs;
        self
    }

    /// `VEXIL_LOG` (default `info`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.to_string();
        self
    }

    /// One more argument of `serve`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments of `serve`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// What [`ControlCmd::start`] waits for: `GET path` answering 200 (default `/readyz`: the
    /// store answers; `/healthz`: the process serves).
    pub fn ready_on(mut self, path: &str) -> Self {
        self.ready_path = path.to_string();
        self
    }

    /// Starts it without waiting for anything.
    pub fn spawn(self) -> ControlProcess {
        let admin = free_addr();
        let sync_port = self.sync_port.unwrap_or_else(free_udp_port);
        let bin = self.binary.unwrap_or_else(|| binary("vexil-control"));
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--database-url", &self.database_url])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--sync-addr", &format!("127.0.0.1:{sync_port}")])
            .args(["--shutdown-grace-secs", &self.grace_secs.to_string()]);
        if let Some(dir) = &self.tls_dir {
            cmd.arg("--dev-tls").arg("--tls-dir").arg(dir);
        }
        cmd.args(&self.args)
            .env_clear()
            .env("VEXIL_LOG", &self.log)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        ControlProcess {
            process: Process::spawn(self.name, cmd),
            admin,
            base: format!("http://{admin}"),
            sync_url: format!("quic://127.0.0.1:{sync_port}"),
            tls_dir: self.tls_dir,
            ready_path: self.ready_path,
            ready_within: self.ready_within,
        }
    }

    /// Starts it and waits until it is ready (see [`ControlCmd::ready_on`]), at most 60 s.
    pub async fn start(self) -> ControlProcess {
        let mut control = self.spawn();
        control.wait_ready().await;
        control
    }

    /// [`ControlCmd::start`] for code outside an async runtime.
    pub fn start_blocking(self) -> ControlProcess {
        let mut control = self.spawn();
        control.wait_ready_blocking();
        control
    }
}

/// A running `vexil-control serve`.
pub struct ControlProcess {
    /// The process.
    pub process: Process,
    /// The admin API's address.
    pub admin: SocketAddr,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub base: String,
    /// `quic://127.0.0.1:PORT` of the sync endpoint.
    pub sync_url: String,
    /// The development TLS directory, if [`ControlCmd::dev_tls`] gave one (`ca.pem` for sidecars).
    pub tls_dir: Option<PathBuf>,
    ready_path: String,
    ready_within: Duration,
}

impl ControlProcess {
    /// Waits until its readiness path answers 200; returns how long that took. Panics, with the
    /// tail of its output, when it exits first or takes longer than 60 s.
    pub async fn wait_ready(&mut self) -> Duration {
        let (addr, path, started) = (self.admin, self.ready_path.clone(), Instant::now());
        let what = format!("ready ({path} answering 200)");
        self.process
            .wait_until(self.ready_within, &what, async |_| {
                (http_status(addr, &path).await == Some(200)).then_some(())
            })
            .await;
        started.elapsed()
    }

    /// [`ControlProcess::wait_ready`] for code outside an async runtime.
    pub fn wait_ready_blocking(&mut self) -> Duration {
        let (addr, path, started) = (self.admin, self.ready_path.clone(), Instant::now());
        let what = format!("ready ({path} answering 200)");
        self.process
            .wait_until_blocking(self.ready_within, &what, |_| {
                (http_status_blocking(addr, &path) == Some(200)).then_some(())
            });
        started.elapsed()
    }
}
