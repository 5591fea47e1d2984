//! Configuration of `vexil-proxy`: a TOML file (`--config`), `VEXIL_*` environment variables and
//! command-line flags, in rising order of precedence. The file also holds what has no flag: the
//! data plane's sections (`[context]`, `[[routes]]`, `[headers]`, ... see
//! [`DataPlaneConfig`]), taken out of the file first; the rest is checked strictly here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::dataplane::DataPlaneConfig;

/// Flags of the sidecar (the default command); each also reads a `VEXIL_*` variable.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Configuration file (TOML); flags and variables override it.
    #[arg(long, env = "VEXIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Control's QUIC sync address, `quic://HOST:PORT` (with --environment, --token, --ca-file);
    /// several replicas separated by commas, tried in turn.
    #[arg(long, env = "VEXIL_CONTROL")]
    pub control: Option<String>,
    /// QUIC keep-alive interval towards control (milliseconds; default 1000).
    #[arg(long, env = "VEXIL_CONTROL_KEEPALIVE_MS")]
    pub control_keepalive_ms: Option<u64>,
    /// QUIC idle timeout towards control (milliseconds; default 5000): a control silent this long
    /// (paused, partitioned) is considered gone, the sidecar turns STALE and reconnects.
    #[arg(long, env = "VEXIL_CONTROL_IDLE_TIMEOUT_MS")]
    pub control_idle_timeout_ms: Option<u64>,
    /// Environment to follow.
    #[arg(long, env = "VEXIL_ENVIRONMENT")]
    pub environment: Option<String>,
    /// Sidecar token (prefer VEXIL_TOKEN or --token-file: flags show in `ps`).
    #[arg(long, env = "VEXIL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the sidecar token (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "VEXIL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) control's certificate must chain to.
    #[arg(long, env = "VEXIL_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) when control requires mutual TLS.
    #[arg(long, env = "VEXIL_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "VEXIL_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// This sidecar's id in control's admin API (default: HOSTNAME/pid).
    #[arg(long, env = "VEXIL_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Offline mode: serve this flagd flag-set file, reloaded when it changes.
    #[arg(long, env = "VEXIL_FLAGS_FILE")]
    pub flags_file: Option<PathBuf>,
    /// Directory of the persisted snapshot.
    #[arg(long, env = "VEXIL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Outbound HTTP proxy listener (HTTP_PROXY target).
    #[arg(long, env = "VEXIL_OUTBOUND_ADDR")]
    pub outbound_addr: Option<SocketAddr>,
    /// Inbound reverse-proxy listener (off unless set).
    #[arg(long, env = "VEXIL_INBOUND_ADDR")]
    pub inbound_addr: Option<SocketAddr>,
    /// The application's own address, behind the inbound listener.
    #[arg(long, env = "VEXIL_INBOUND_UPSTREAM")]
    pub inbound_upstream: Option<SocketAddr>,
    /// gRPC flagd.evaluation v1+v2 listener.
    #[arg(long, env = "VEXIL_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// gRPC flagd.sync.v1 listener.
    #[arg(long, env = "VEXIL_SYNC_ADDR")]
    pub sync_addr: Option<SocketAddr>,
    /// OFREP listener.
    #[arg(long, env = "VEXIL_OFREP_ADDR")]
    pub ofrep_addr: Option<SocketAddr>,
    /// Admin listener (/healthz, /readyz, /metrics, /debug/snapshot).
    #[arg(long, env = "VEXIL_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Worker threads of the data plane (default: the cores available).
    #[arg(long, env = "VEXIL_THREADS")]
    pub threads: Option<usize>,
    /// Seconds to drain in-flight requests on SIGTERM.
    #[arg(long, env = "VEXIL_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Routes as a JSON array, in the shape of the config file's `[[routes]]` (e.g. from the
    /// `vexil.io/routes` pod annotation); replaces the file's routes.
    #[arg(long, env = "VEXIL_ROUTES")]
    pub routes: Option<String>,
}

/// The file's shape.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    control: Option<String>,
    control_keepalive_ms: Option<u64>,
    control_idle_timeout_ms: Option<u64>,
    environment: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    client_id: Option<String>,
    flags_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    outbound_addr: Option<SocketAddr>,
    inbound_addr: Option<SocketAddr>,
    inbound_upstream: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    sync_addr: Option<SocketAddr>,
    ofrep_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    threads: Option<usize>,
    shutdown_grace_secs: Option<u64>,
}

/// Where flags come from.
#[derive(Clone, Debug)]
pub enum FlagSource {
    /// Control over QUIC.
    Control(ControlSource),
    /// A flagd file (offline mode).
    File(PathBuf),
}

/// Settings of the QUIC sync source.
#[derive(Clone)]
pub struct ControlSource {
    /// `quic://HOST:PORT`.
    pub url: String,
    /// Environment.
    pub environment: String,
    /// Token (never printed).
    pub token: String,
    /// CA file.
    pub ca_file: PathBuf,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Client id override.
    pub client_id: Option<String>,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for ControlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSource")
            .field("url", &self.url)
            .field("environment", &self.environment)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Listener addresses.
#[derive(Clone, Debug)]
pub struct Addresses {
    /// Outbound proxy.
    pub outbound: SocketAddr,
    /// Inbound listener and the application behind it.
    pub inbound: Option<(SocketAddr, SocketAddr)>,
    /// gRPC evaluation.
    pub grpc: SocketAddr,
    /// flagd sync.
    pub sync: SocketAddr,
    /// OFREP.
    pub ofrep: SocketAddr,
    /// Admin.
    pub admin: SocketAddr,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where flags come from.
    pub source: FlagSource,
    /// Persisted snapshot directory (control mode).
    pub state_dir: PathBuf,
    /// Listeners.
    pub addresses: Addresses,
    /// Data-plane worker threads.
    pub threads: usize,
    /// Drain time on SIGTERM.
    pub shutdown_grace: Duration,
    /// The data plane's sections.
    pub dataplane: DataPlaneConfig,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid default address")
}

impl ProxyConfig {
    /// Resolves flags over variables over the file over defaults, and checks the combination.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ProxyConfig> {
        let (file, mut dataplane) = match &args.config {
            Some(path) => read_file(path)?,
            None => (FileConfig::default(), DataPlaneConfig::default()),
        };
        if let Some(text) = &args.routes {
            dataplane.routes = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("--routes (VEXIL_ROUTES): {e}"))?;
            dataplane
                .validate()
                .map_err(|e| anyhow::anyhow!("--routes (VEXIL_ROUTES): {e}"))?;
        }
        let source = source(args, &file)?;
        let inbound = match (
            args.inbound_addr.or(file.inbound_addr),
            args.inbound_upstream.or(file.inbound_upstream),
        ) {
            (None, None) => None,
            (Some(listen), Some(upstream)) => Some((listen, upstream)),
            (Some(_), None) => {
                anyhow::bail!("--inbound-addr needs --inbound-upstream (the app's address)")
            }
            (None, Some(_)) => anyhow::bail!("--inbound-upstream needs --inbound-addr"),
        };
        let threads = args
            .threads
            .or(file.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        Ok(ProxyConfig {
            source,
            state_dir: args
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("vexil-state")),
            addresses: Addresses {
                outbound: args
                    .outbound_addr
                    .or(file.outbound_addr)
                    .unwrap_or_else(|| addr("127.0.0.1:15001")),
                inbound,
                grpc: args
                    .grpc_addr
                    .or(file.grpc_addr)
                    .unwrap_or_else(|| addr("127.0.0.1:8013")),
                admin: args
                    .admin_addr
                    .or(file.admin_addr)
                    .unwrap_or_else(|| addr("127.0.0.1:8014")),
                sync: args
                    .sync_addr
                    .or(file.sync_addr)
                    .unwrap_or_else(|| addr("127.0.0.1:8015")),
                ofrep: args
                    .ofrep_addr
                    .or(file.ofrep_addr)
                    .unwrap_or_else(|| addr("127.0.0.1:8016")),
            },
            threads,
            dataplane,
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(25),
            ),
        })
    }
}

/// `--control` (with its companions) or `--flags-file`, exactly one.
fn source(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<FlagSource> {
    let control = args.control.clone().or(file.control.clone());
    let flags_file = args.flags_file.clone().or(file.flags_file.clone());
    match (control, flags_file) {
        (Some(_), Some(_)) => anyhow::bail!("give either --control or --flags-file, not both"),
        (None, None) => anyhow::bail!(
            "no flag source: give --control quic://HOST:PORT (with --environment, --token and \
             --ca-file) or --flags-file PATH"
        ),
        (None, Some(path)) => Ok(FlagSource::File(path)),
        (Some(url), None) => {
            vexil_sync_address(&url)?;
            let environment = args
                .environment
                .clone()
                .or(file.environment.clone())
                .ok_or_else(|| anyhow::anyhow!("--control needs --environment"))?;
            let token = token(args, file)?;
            let ca_file = args
                .ca_file
                .clone()
                .or(file.ca_file.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("--control needs --ca-file (the CA of control's certificate)")
                })?;
            let client_cert = match (
                args.client_cert.clone().or(file.client_cert.clone()),
                args.client_key.clone().or(file.client_key.clone()),
            ) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => anyhow::bail!("--client-cert and --client-key go together"),
            };
            let keep_alive = Duration::from_millis(
                args.control_keepalive_ms
                    .or(file.control_keepalive_ms)
                    .unwrap_or(1000),
            );
            let idle_timeout = Duration::from_millis(
                args.control_idle_timeout_ms
                    .or(file.control_idle_timeout_ms)
                    .unwrap_or(5000),
            );
            anyhow::ensure!(
                !keep_alive.is_zero() && keep_alive < idle_timeout,
                "--control-keepalive-ms ({}) must be above 0 and below --control-idle-timeout-ms ({})",
                keep_alive.as_millis(),
                idle_timeout.as_millis()
            );
            Ok(FlagSource::Control(ControlSource {
                url,
                environment,
                token,
                ca_file,
                client_cert,
                client_id: args.client_id.clone().or(file.client_id.clone()),
                keep_alive,
                idle_timeout,
            }))
        }
    }
}

fn vexil_sync_address(url: &str) -> anyhow::Result<()> {
    crate::sync::parse_controls(url).map(|_| ())
}

/// The token: `--token`/`VEXIL_TOKEN`, else the first line of `--token-file`.
fn token(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<String> {
    if let Some(t) = args.token.as_ref().filter(|t| !t.trim().is_empty()) {
        return Ok(t.trim().to_string());
    }
    let path = args
        .token_file
        .clone()
        .or(file.token_file.clone())
        .ok_or_else(|| {
            anyhow::anyhow!("--control needs a sidecar token: VEXIL_TOKEN, --token or --token-file")
        })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token.to_string())
}

/// The file: the data plane's sections, then the rest, strictly.
fn read_file(path: &Path) -> anyhow::Result<(FileConfig, DataPlaneConfig)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let dataplane = DataPlaneConfig::take_from_table(&mut table)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let file =
        FileConfig::deserialize(table).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((file, dataplane))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            flags_file: Some("flags.json".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults_bind_loopback() {
        let c = ProxyConfig::resolve(&args()).unwrap();
        let a = &c.addresses;
        for addr in [a.outbound, a.grpc, a.sync, a.ofrep, a.admin] {
            assert!(addr.ip().is_loopback(), "{addr}");
        }
        assert_eq!(
            [
                a.outbound.port(),
                a.grpc.port(),
                a.admin.port(),
                a.sync.port(),
                a.ofrep.port()
            ],
            [15001, 8013, 8014, 8015, 8016]
        );
        assert!(a.inbound.is_none());
    }

    #[test]
    fn the_source_must_be_complete_and_unique() {
        let both = ServeArgs {
            control: Some("quic://c:7443".into()),
            ..args()
        };
        assert!(
            ProxyConfig::resolve(&both)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let none = ServeArgs::default();
        assert!(
            ProxyConfig::resolve(&none)
                .unwrap_err()
                .to_string()
                .contains("no flag source")
        );
        let partial = ServeArgs {
            control: Some("quic://c:7443".into()),
            environment: Some("prod".into()),
            ..ServeArgs::default()
        };
        let e = ProxyConfig::resolve(&partial).unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        let full = ServeArgs {
            token: Some("vxl_x".into()),
            ca_file: Some("ca.pem".into()),
            ..partial
        };
        let c = ProxyConfig::resolve(&full).unwrap();
        let FlagSource::Control(source) = &c.source else {
            panic!("control mode: {c:?}");
        };
        assert_eq!(source.keep_alive, Duration::from_secs(1));
        assert_eq!(source.idle_timeout, Duration::from_secs(5));
        assert!(
            !format!("{c:?}").contains("vxl_x"),
            "the token is never printed"
        );
        // Several replicas; short keep-alive windows.
        let replicas = ServeArgs {
            control: Some("quic://a:7443,quic://b:7443".into()),
            control_keepalive_ms: Some(250),
            control_idle_timeout_ms: Some(2000),
            ..full.clone()
        };
        let c = ProxyConfig::resolve(&replicas).unwrap();
        let FlagSource::Control(source) = &c.source else {
            panic!("control mode: {c:?}");
        };
        assert_eq!(source.idle_timeout, Duration::from_secs(2));
        let bad = ServeArgs {
            control_keepalive_ms: Some(3000),
            ..replicas
        };
        let e = ProxyConfig::resolve(&bad).unwrap_err().to_string();
        assert!(e.contains("--control-keepalive-ms"), "{e}");
        let bad = ServeArgs {
            control: Some("quic://a:7443,b".into()),
            ..full
        };
        assert!(ProxyConfig::resolve(&bad).is_err());
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/proxy.toml");
        let c = ProxyConfig::resolve(&ServeArgs {
            config: Some(path),
            ..args()
        })
        .unwrap();
        assert!(c.dataplane.context.contains_key("targetingKey"));
    }

    #[test]
    fn file_errors_name_the_key_and_routes_come_from_json() {
        let dir = std::env::temp_dir().join(format!("vexil-proxy-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(&path, "grpc_adr = \"127.0.0.1:1\"\n").unwrap();
        let e = ProxyConfig::resolve(&ServeArgs {
            config: Some(path.clone()),
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("grpc_adr"), "{e}");
        let c = ProxyConfig::resolve(&ServeArgs {
            routes: Some(r#"[{"host": "backend", "flags": ["a", "b"]}]"#.into()),
            ..args()
        })
        .unwrap();
        assert_eq!(c.dataplane.routes.len(), 1);
        let e = ProxyConfig::resolve(&ServeArgs {
            routes: Some("[{".into()),
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("VEXIL_ROUTES"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn inbound_needs_its_upstream() {
        let a = ServeArgs {
            inbound_addr: Some(addr("127.0.0.1:15006")),
            ..args()
        };
        assert!(ProxyConfig::resolve(&a).is_err());
    }
}
