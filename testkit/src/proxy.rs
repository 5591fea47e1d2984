//! The real `vexil-proxy` (the sidecar) as a child process.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use crate::cmd::BinaryCmd;
use crate::net::{free_tcp_port, http_status, loopback};
use crate::process::Process;

/// How to start `vexil-proxy`: every listener on a free loopback port, a clean environment
/// (`VEXIL_LOG`, `NO_COLOR` and what [`BinaryCmd::env`] adds), and the arguments given (the flag
/// source: `--flags-file`, or `--control` with its options). The builder methods are
/// [`BinaryCmd`]'s.
pub type ProxyCmd = BinaryCmd<Proxy>;

/// What only the sidecar's command has (nothing yet).
#[derive(Clone, Debug, Default)]
pub struct Proxy {}

impl Default for ProxyCmd {
    fn default() -> Self {
        BinaryCmd::with("vexil-proxy", Proxy::default())
    }
}

impl ProxyCmd {
    /// The defaults: `--shutdown-grace-secs 5`, `VEXIL_LOG=info`.
    pub fn new() -> ProxyCmd {
        ProxyCmd::default()
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
        let listeners: Vec<OsString> = [
            ("--outbound-addr", ports.outbound),
            ("--grpc-addr", ports.grpc),
            ("--admin-addr", ports.admin),
            ("--sync-addr", ports.sync),
            ("--ofrep-addr", ports.ofrep),
        ]
        .into_iter()
        .flat_map(|(flag, port)| [flag.into(), addr(port).into()])
        .collect();
        let cmd = self.command(&listeners);
        ProxyProcess {
            process: Process::spawn(self.display_name(), cmd),
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
    /// An HTTP client that sends its requests through the sidecar's outbound listener, as an
    /// application with `http_proxy` set does.
    pub fn client(&self) -> reqwest::Client {
        let outbound = format!("http://127.0.0.1:{}", self.ports.outbound);
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(outbound).expect("a proxy URL"))
            .build()
            .expect("an HTTP client")
    }

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
