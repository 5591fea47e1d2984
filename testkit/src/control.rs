//! The real `vexil-control serve` as a child process.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::BinaryCmd;
use crate::net::{free_addr, free_udp_port, http_status, http_status_blocking};
use crate::process::Process;

/// How to start `vexil-control serve`: on a free admin port and a free QUIC port, with a clean
/// environment (`VEXIL_LOG`, `NO_COLOR` and what [`BinaryCmd::env`] adds), on one database. The
/// builder methods every binary has (`binary`, `name`, `grace_secs`, `log`, `arg`, `args`, `env`)
/// are [`BinaryCmd`]'s.
///
/// ```ignore
/// let control = ControlCmd::new(&db.url()).dev_tls(&tls_dir).env("VEXIL_ADMIN_TOKEN", ADMIN).start().await;
/// ```
pub type ControlCmd = BinaryCmd<Control>;

/// What only control's command has.
#[derive(Clone, Debug)]
pub struct Control {
    database_url: String,
    tls_dir: Option<PathBuf>,
    sync_port: Option<u16>,
    sync_ip: IpAddr,
    ready_path: String,
}

impl ControlCmd {
    /// Control on `database_url` (`--database-url`).
    pub fn new(database_url: &str) -> ControlCmd {
        BinaryCmd::with(
            "vexil-control",
            Control {
                database_url: database_url.to_string(),
                tls_dir: None,
                sync_port: None,
                sync_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ready_path: "/readyz".into(),
            },
        )
    }

    /// `--dev-tls --tls-dir DIR`: development TLS, generated into `dir` on the first start (and
    /// reused by the replicas started on it later).
    pub fn dev_tls(mut self, dir: &Path) -> Self {
        self.own.tls_dir = Some(dir.to_path_buf());
        self
    }

    /// The QUIC sync port (default: a free one).
    pub fn sync_port(mut self, port: u16) -> Self {
        self.own.sync_port = Some(port);
        self
    }

    /// The address the QUIC sync endpoint binds (default 127.0.0.1), e.g. the host's end of a test
    /// pod's veth pair. The development certificate (`dev_tls`) must then name it too
    /// (`--dev-tls-names`).
    pub fn sync_ip(mut self, ip: IpAddr) -> Self {
        self.own.sync_ip = ip;
        self
    }

    /// What [`ControlCmd::start`] waits for: `GET path` answering 200 (default `/readyz`: the
    /// store answers; `/healthz`: the process serves).
    pub fn ready_on(mut self, path: &str) -> Self {
        self.own.ready_path = path.to_string();
        self
    }

    /// Starts it without waiting for anything.
    pub fn spawn(self) -> ControlProcess {
        let admin = free_addr();
        let sync_port = self.own.sync_port.unwrap_or_else(free_udp_port);
        let mut first: Vec<OsString> = ["serve", "--database-url", &self.own.database_url]
            .into_iter()
            .map(Into::into)
            .collect();
        first.extend(["--admin-addr".into(), admin.to_string().into()]);
        first.extend([
            "--sync-addr".into(),
            SocketAddr::new(self.own.sync_ip, sync_port)
                .to_string()
                .into(),
        ]);
        if let Some(dir) = &self.own.tls_dir {
            first.extend(["--dev-tls".into(), "--tls-dir".into(), dir.into()]);
        }
        let cmd = self.command(&first);
        ControlProcess {
            process: Process::spawn(self.display_name(), cmd),
            admin,
            base: format!("http://{admin}"),
            sync_url: format!("quic://{}", SocketAddr::new(self.own.sync_ip, sync_port)),
            tls_dir: self.own.tls_dir,
            ready_path: self.own.ready_path,
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
    /// `quic://IP:PORT` of the sync endpoint (127.0.0.1 unless [`ControlCmd::sync_ip`] said).
    pub sync_url: String,
    /// The development TLS directory, if [`ControlCmd::dev_tls`] gave one (`ca.pem` for sidecars).
    pub tls_dir: Option<PathBuf>,
    ready_path: String,
}

/// How long [`ControlProcess::wait_ready`] waits.
const READY_WITHIN: Duration = Duration::from_secs(60);

impl ControlProcess {
    /// Waits until its readiness path answers 200; returns how long that took. Panics, with the
    /// tail of its output, when it exits first or takes longer than 60 s.
    pub async fn wait_ready(&mut self) -> Duration {
        let (addr, path, started) = (self.admin, self.ready_path.clone(), Instant::now());
        let what = format!("ready ({path} answering 200)");
        self.process
            .wait_until(READY_WITHIN, &what, async |_| {
                (http_status(addr, &path).await == Some(200)).then_some(())
            })
            .await;
        started.elapsed()
    }

    /// [`ControlProcess::wait_ready`] for code outside an async runtime.
    pub fn wait_ready_blocking(&mut self) -> Duration {
        let (addr, path, started) = (self.admin, self.ready_path.clone(), Instant::now());
        let what = format!("ready ({path} answering 200)");
        self.process.wait_until_blocking(READY_WITHIN, &what, |_| {
            (http_status_blocking(addr, &path) == Some(200)).then_some(())
        });
        started.elapsed()
    }
}
