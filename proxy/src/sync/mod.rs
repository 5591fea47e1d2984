//! The sync client: follows one environment on control over QUIC (`vexil-sync/1`) and
//! keeps the [`SnapshotCell`](crate::snapshot::SnapshotCell) current (docs/sync-protocol.md).
//!
//! - Connects, subscribes with the revision it holds, applies `Full` and `Delta` frames (a delta
//!   only on top of its `from`; anything out of step asks for a full snapshot), swaps each new
//!   compiled flag set in atomically, persists it, then acknowledges it.
//! - Reconnects with capped exponential backoff and jitter and resumes from the revision it holds.
//! - Loads the persisted snapshot at start, so it serves while control is away; without one, the
//!   bootstrap file if it has one (served until control delivers).
//! - Reports its state ([`SyncState`]): `STARTING`, `SYNCED`, or `STALE` (disconnected, still
//!   serving the last snapshot).
//!
//! Used by the sidecar binary and by the benchmark's simulated sidecars (many per process, sharing
//! one QUIC endpoint).

mod apply;
mod backoff;
mod client;
pub mod persist;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use apply::{ApplyError, Held, apply_delta, compile, compile_after, parse_full};
pub use backoff::Backoff;
pub use client::{SyncClient, SyncHandle};
pub use tls::client_config;

/// Where the sync client stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// Not yet connected since start (may already serve a persisted snapshot).
    Starting,
    /// Subscribed and caught up with control.
    Synced,
    /// Disconnected or behind; serving the last snapshot it has (if any).
    Stale,
}

impl SyncState {
    /// `STARTING`, `SYNCED` or `STALE`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Starting => "STARTING",
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
        }
    }
}

/// What the rest of the sidecar can see of the sync client.
#[derive(Clone, Debug)]
pub struct SyncStatus {
    /// The state.
    pub state: SyncState,
    /// Revision held (0: none).
    pub revision: i64,
    /// When the last frame from control arrived.
    pub last_contact: Option<SystemTime>,
    /// The control replica serving the stream (`Welcome.server_id`).
    pub server_id: Option<String>,
    /// Why the last connection failed or ended.
    pub last_error: Option<String>,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            state: SyncState::Starting,
            revision: 0,
            last_contact: None,
            server_id: None,
            last_error: None,
        }
    }
}

/// Called with each revision applied (after it is swapped in and persisted).
pub type OnApply = Arc<dyn Fn(i64) + Send + Sync>;

/// Called with the kind of each frame applied (`"full"` or `"delta"`) and the revision it brought
/// (metrics).
pub type OnFrame = Arc<dyn Fn(&'static str, i64) + Send + Sync>;

/// How often a sidecar reports its evaluation counts by default.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// How long a clean shutdown waits for its last usage report to reach control.
const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of the sync client.
#[derive(Clone)]
pub struct SyncConfig {
    /// Control's sync address: `quic://HOST:PORT` or `HOST:PORT`; several (control replicas)
    /// separated by commas, tried in turn: after a failed or ended connection the client moves on
    /// to the next one.
    pub control: String,
    /// TLS server name to verify (default: the host of `control`).
    pub server_name: Option<String>,
    /// Environment to follow.
    pub environment: String,
    /// Sidecar token (role `sidecar`, bound to the environment).
    pub token: String,
    /// CA certificate(s) control's certificate must chain to (PEM).
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM), when control requires mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// This sidecar's id in control's admin API (e.g. the pod name).
    pub client_id: String,
    /// Directory of the persisted snapshot (`None`: nothing persisted).
    pub state_dir: Option<PathBuf>,
    /// A flag set to serve at start when no snapshot is persisted (`--bootstrap-file`: a flagd
    /// document or a persisted-snapshot file), until control delivers.
    pub bootstrap_file: Option<PathBuf>,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout: a control silent this long is considered gone.
    pub idle_timeout: Duration,
    /// Time allowed to connect and get a `Welcome`.
    pub connect_timeout: Duration,
    /// Reconnection delays.
    pub backoff: Backoff,
    /// Reconnection delay after a refusal retrying cannot fix soon (bad token, unknown
    /// environment).
    pub refused_delay: Duration,
    /// Largest frame accepted from control (after decompression).
    pub max_frame: usize,
    /// Observer of applied revisions (benchmarks, tests).
    pub on_apply: Option<OnApply>,
    /// Observer of applied frames by kind (metrics).
    pub on_frame: Option<OnFrame>,
    /// How often the evaluation counts are reported to control (`UsageReport`), when control
    /// takes them (`Welcome.usage_max_entries` > 0); also once at a clean shutdown. `None`: never.
    pub usage_interval: Option<Duration>,
}

impl SyncConfig {
    /// Settings with the defaults: keep-alive 1 s, idle timeout 5 s (a dead control is noticed
    /// within about 5 s), backoff 100 ms to 10 s, 30 s after a refusal.
    pub fn new(control: &str, environment: &str, token: &str, ca_file: PathBuf) -> SyncConfig {
        SyncConfig {
            control: control.to_string(),
            server_name: None,
            environment: environment.to_string(),
            token: token.to_string(),
            ca_file,
            client_cert: None,
            client_id: default_client_id(),
            state_dir: None,
            bootstrap_file: None,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            refused_delay: Duration::from_secs(30),
            max_frame: vexil_proto::frame::DEFAULT_MAX_FRAME,
            on_apply: None,
            on_frame: None,
            usage_interval: Some(DEFAULT_USAGE_INTERVAL),
        }
    }

    /// `(host, port)` of each address in `control`, in order.
    pub fn addresses(&self) -> anyhow::Result<Vec<(String, u16)>> {
        parse_controls(&self.control)
    }
}

/// Parses a comma-separated list of control addresses (see [`parse_control`]); at least one.
pub fn parse_controls(list: &str) -> anyhow::Result<Vec<(String, u16)>> {
    let addresses = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(parse_control)
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !addresses.is_empty(),
        "control address {list:?}: expected quic://HOST:PORT"
    );
    Ok(addresses)
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("SyncConfig")
            .field("control", &self.control)
            .field("environment", &self.environment)
            .field("client_id", &self.client_id)
            .field("ca_file", &self.ca_file)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// `HOSTNAME` (the pod name in Kubernetes) or `sidecar`, plus the process id.
fn default_client_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sidecar".into());
    format!("{host}/{}", std::process::id())
}

/// Parses `quic://HOST:PORT`, `HOST:PORT` or `[IPv6]:PORT`.
pub fn parse_control(address: &str) -> anyhow::Result<(String, u16)> {
    let rest = address.strip_prefix("quic://").unwrap_or(address);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("control address {address:?}: expected quic://HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("control address {address:?}: bad port {port:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "control address {address:?}: empty host");
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_addresses_parse() {
        assert_eq!(
            parse_control("quic://control:7443").unwrap(),
            ("control".into(), 7443)
        );
        assert_eq!(
            parse_control("127.0.0.1:1").unwrap(),
            ("127.0.0.1".into(), 1)
        );
        assert_eq!(
            parse_control("quic://[::1]:7443").unwrap(),
            ("::1".into(), 7443)
        );
        assert!(parse_control("quic://control").is_err());
        assert!(parse_control("quic://:7443").is_err());
        assert!(parse_control("control:http").is_err());
        assert_eq!(
            parse_controls("quic://a:1, quic://b:2").unwrap(),
            [("a".to_string(), 1), ("b".to_string(), 2)]
        );
        assert!(parse_controls(" , ").is_err());
        assert!(parse_controls("quic://a:1,quic://b").is_err());
    }

    #[test]
    fn the_token_is_not_printed() {
        let c = SyncConfig::new("h:1", "prod", "vxl_secret", "ca.pem".into());
        assert!(!format!("{c:?}").contains("vxl_secret"));
    }
}
