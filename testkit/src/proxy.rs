//! The real `vexil-proxy` (the sidecar) as a child process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::{free_tcp_port, http_status, loopback};
use crate::process::{Process, binary};

/// How to start `vexil-proxy`: every listener on a free loopback port, a clean environment
/// (`VEXIL_LOG`, `NO_COLOR` and what [`ProxyCmd::env`] adds), and the arguments given (the flag
/// source: `--flags-file`, or `--control` with its options).
#[derive(Clone, Debug)]
pub struct ProxyCmd {
    binary: Option<PathBuf>,
    name: String,
    grace_secs: u64,
    log: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Default for ProxyCmd {
    fn default() -> Self {
        ProxyCmd {
            binary: None,
            name: "vexil-proxy".into(),
            grace_secs: 5,
            log: "info".into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

impl ProxyCmd {
    /// The defaults: `--shutdown-grace-secs 5`, `VEXIL_LOG=info`.
    pub fn new() -> ProxyCmd {
        ProxyCmd::default()
    }

    /// The binary to run (default: [`binary`]`("vexil-proxy")`).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The name messages use (default `vexil-proxy`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
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

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts it without waiting for anything.
    pub fn start(self) -> ProxyProcess {
        let ports = Ports {
            outbound: free_tcp_port(),
            grpc: free_tcp_port(),
            admin: free_tcp_port(),
            sync: free_tcp_port(),
            ofrep: free_tcp_port(),
        };
        let addr = |port: u16| loopback(port).to_string();
        let bin = self.binary.unwrap_or_else(|| binary("vexil-proxy"));
        let mut cmd = Command::new(bin);
        cmd.args(&self.args)
            .args(["--outbound-addr", &addr(ports.outbound)])
            .args(["--grpc-addr", &addr(ports.grpc)])
            .args(["--admin-addr", &addr(ports.admin)])
            .args(["--sync-addr", &addr(ports.sync)])
            .args(["--ofrep-addr", &addr(ports.ofrep)])
            .args(["--shutdown-grace-secs", &self.grace_secs.to_string()])
            .env_clear()
            .env("VEXIL_LOG", &self.log)
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        ProxyProcess {
            process: Process::spawn(self.name, cmd),
            admin: format!("http://{}", addr(ports.admin)),
            ofrep: format!("http://{}", addr(ports.ofrep)),
            ports,
        }
    }
}

/// The loopback ports of a sidecar's listeners.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The outbound HTTP proxy (the data plane).
    pub outbound: u16,
    /// gRPC flagd evaluation.
    pub grpc: u16,
    /// Admin: `/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`.
    pub admin: u16,
    /// flagd sync (gRPC).
    pub sync: u16,
    /// OFREP.
    pub ofrep: u16,
}

/// A running `vexil-proxy`.
pub struct ProxyProcess {
    /// The process.
    pub process: Process,
    /// Its listeners' ports.
    pub ports: Ports,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of OFREP.
    pub ofrep: String,
}

impl ProxyProcess {
    /// `vexil-proxy ARGS` with the defaults of [`ProxyCmd`], not waited for.
    pub fn start(args: &[&str]) -> ProxyProcess {
        ProxyCmd::new().args(args).start()
    }

    /// Waits until `GET path` on the admin listener answers 200; how long that took.
    async fn wait_admin(&mut self, path: &str, what: &str) -> Duration {
        let (addr, started) = (loopback(self.ports.admin), Instant::now());
        self.process
            .wait_until(Duration::from_secs(60), what, async |_| {
                (http_status(addr, path).await == Some(200)).then_some(())
            })
            .await;
        started.elapsed()
    }

    /// Waits until `/healthz` answers 200 (alive and serving; its flags may not be loaded yet);
    /// returns how long that took. Panics, with the tail of its output, when it exits first or
    /// takes longer than 60 s.
    pub async fn wait_healthy(&mut self) -> Duration {
        self.wait_admin("/healthz", "healthy (/healthz answering 200)")
            .await
    }

    /// Waits until `/readyz` answers 200 (a flag set is loaded), like [`Self::wait_healthy`].
    pub async fn wait_ready(&mut self) -> Duration {
        self.wait_admin("/readyz", "ready (/readyz answering 200)")
            .await
    }

    /// The status `/readyz` answers now (panics, with the tail of its output, when nothing does).
    pub async fn ready(&self) -> u16 {
        match http_status(loopback(self.ports.admin), "/readyz").await {
            Some(status) => status,
            None => panic!(
                "{}: /readyz does not answer; its last output lines:\n{}",
                self.process.name(),
                self.process.tail(80)
            ),
        }
    }
}
