//! Configuration: a TOML file (`--config`), `VEXIL_*` environment variables and command-line flags,
//! in rising order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::api::ApiConfig;
use crate::auth::JwtConfig;

/// `vexil-control serve` flags; each also reads a `VEXIL_*` variable.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Configuration file (TOML); flags and variables override it.
    #[arg(long, env = "VEXIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Admin REST API listen address.
    #[arg(long, env = "VEXIL_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// QUIC sync listen address (UDP).
    #[arg(long, env = "VEXIL_SYNC_ADDR")]
    pub sync_addr: Option<SocketAddr>,
    /// Kubernetes injection webhook listen address (HTTPS).
    #[arg(long, env = "VEXIL_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// `sqlite://FILE` (embedded, the default `sqlite://vexil.db`) or `postgres://...`.
    #[arg(long, env = "VEXIL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for fan-out between control replicas.
    #[arg(long, env = "VEXIL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Generate development TLS certificates into `--tls-dir`.
    #[arg(long, env = "VEXIL_DEV_TLS")]
    pub dev_tls: bool,
    /// Directory of TLS material (`ca.pem`, server certificate and key).
    #[arg(long, env = "VEXIL_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Server certificate chain (PEM) of the QUIC sync endpoint (default: `TLS_DIR/server.pem`).
    #[arg(long, env = "VEXIL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM) (default: `TLS_DIR/server.key`).
    #[arg(long, env = "VEXIL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require sidecars to present a client certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "VEXIL_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often each environment's feed checks the store for commits it was not told about
    /// (milliseconds; the bound on propagation when Redis is down).
    #[arg(long, env = "VEXIL_SYNC_POLL_MS")]
    pub sync_poll_ms: Option<u64>,
    /// HS256 secret to accept JWT bearer tokens.
    #[arg(long, env = "VEXIL_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// RS256 public key (PEM `PUBLIC KEY`) to accept JWT bearer tokens.
    #[arg(long, env = "VEXIL_JWT_RS256_PUBLIC_KEY")]
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// JWT claim holding the role.
    #[arg(long, env = "VEXIL_JWT_ROLE_CLAIM")]
    pub jwt_role_claim: Option<String>,
    /// Seconds to drain in-flight requests on SIGTERM.
    #[arg(long, env = "VEXIL_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
}

/// The configuration file's shape: every key optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    admin_addr: Option<SocketAddr>,
    sync_addr: Option<SocketAddr>,
    webhook_addr: Option<SocketAddr>,
    database_url: Option<String>,
    redis_url: Option<String>,
    dev_tls: Option<bool>,
    tls_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    sync: FileSync,
    #[serde(default)]
    jwt: FileJwt,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    hs256_secret: Option<String>,
    rs256_public_key: Option<PathBuf>,
    role_claim: Option<String>,
    environments_claim: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileSync {
    poll_interval_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    reauth_interval_secs: Option<u64>,
    max_catch_up: Option<i64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_import_bytes: Option<usize>,
    max_flags: Option<usize>,
    max_rule_depth: Option<usize>,
}

/// Timers and limits of the sync hub.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Store poll interval of each feed.
    pub poll_interval: Duration,
    /// Ping interval on idle streams.
    pub heartbeat: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Token re-check interval of connected sidecars.
    pub reauth_interval: Duration,
    /// Most deltas sent to catch a sidecar up before a full snapshot is sent instead.
    pub max_catch_up: i64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            poll_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            reauth_interval: Duration::from_secs(60),
            max_catch_up: 1000,
        }
    }
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Admin API address.
    pub admin_addr: SocketAddr,
    /// QUIC sync address.
    pub sync_addr: SocketAddr,
    /// Webhook address.
    pub webhook_addr: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Redis URL, when replicas fan out through Redis.
    pub redis_url: Option<String>,
    /// Generate development certificates.
    pub dev_tls: bool,
    /// TLS directory.
    pub tls_dir: PathBuf,
    /// QUIC server certificate, when given explicitly.
    pub tls_cert: Option<PathBuf>,
    /// QUIC server key, when given explicitly.
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates (mutual TLS), when required.
    pub tls_client_ca: Option<PathBuf>,
    /// Sync hub timers and limits.
    pub sync: SyncConfig,
    /// JWT verification, when configured.
    pub jwt: Option<JwtConfig>,
    /// API limits.
    pub api: ApiConfig,
    /// Drain time on SIGTERM.
    pub shutdown_grace: std::time::Duration,
}

impl ControlConfig {
    /// Resolves flags over variables over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ControlConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let default_addr = |s: &str| s.parse::<SocketAddr>().expect("valid default address");
        let jwt_secret = args.jwt_hs256_secret.clone().or(file.jwt.hs256_secret);
        let jwt_key = match args
            .jwt_rs256_public_key
            .clone()
            .or(file.jwt.rs256_public_key)
        {
            None => None,
            Some(path) => {
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                Some(
                    crate::auth::rsa_public_key_from_pem(&pem)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                )
            }
        };
        let jwt = (jwt_secret.is_some() || jwt_key.is_some()).then(|| JwtConfig {
            hs256_secret: jwt_secret,
            rs256_public_key: jwt_key,
            role_claim: args
                .jwt_role_claim
                .clone()
                .or(file.jwt.role_claim)
                .unwrap_or_else(|| "vexil_role".into()),
            environments_claim: file
                .jwt
                .environments_claim
                .unwrap_or_else(|| "vexil_environments".into()),
        });
        let mut api = ApiConfig::default();
        if let Some(v) = file.limits.max_body_bytes {
            api.max_body_bytes = v;
        }
        if let Some(v) = file.limits.max_import_bytes {
            api.max_import_bytes = v;
        }
        if let Some(v) = file.limits.max_flags {
            api.limits.max_flags = v;
        }
        if let Some(v) = file.limits.max_rule_depth {
            api.limits.max_depth = v;
        }
        Ok(ControlConfig {
            admin_addr: args
                .admin_addr
                .or(file.admin_addr)
                .unwrap_or_else(|| default_addr("127.0.0.1:8080")),
            sync_addr: args
                .sync_addr
                .or(file.sync_addr)
                .unwrap_or_else(|| default_addr("127.0.0.1:7443")),
            webhook_addr: args
                .webhook_addr
                .or(file.webhook_addr)
                .unwrap_or_else(|| default_addr("127.0.0.1:9443")),
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://vexil.db".into()),
            redis_url: args.redis_url.clone().or(file.redis_url),
            dev_tls: args.dev_tls || file.dev_tls.unwrap_or(false),
            tls_dir: args
                .tls_dir
                .clone()
                .or(file.tls_dir)
                .unwrap_or_else(|| PathBuf::from("tls")),
            tls_cert: args.tls_cert.clone().or(file.tls_cert),
            tls_key: args.tls_key.clone().or(file.tls_key),
            tls_client_ca: args.tls_client_ca.clone().or(file.tls_client_ca),
            sync: sync_config(args, &file.sync),
            jwt,
            api,
            shutdown_grace: std::time::Duration::from_secs(
                args.shutdown_grace_secs
                    .or(file.shutdown_grace_secs)
                    .unwrap_or(25),
            ),
        })
    }
}

fn sync_config(args: &ServeArgs, file: &FileSync) -> SyncConfig {
    let d = SyncConfig::default();
    let ms = Duration::from_millis;
    SyncConfig {
        poll_interval: args
            .sync_poll_ms
            .or(file.poll_interval_ms)
            .map_or(d.poll_interval, ms),
        heartbeat: file.heartbeat_ms.map_or(d.heartbeat, ms),
        idle_timeout: file.idle_timeout_ms.map_or(d.idle_timeout, ms),
        reauth_interval: file
            .reauth_interval_secs
            .map_or(d.reauth_interval, Duration::from_secs),
        max_catch_up: file.max_catch_up.unwrap_or(d.max_catch_up),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.toml");
        let c = ControlConfig::resolve(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.admin_addr.port(), 8080);
        assert_eq!(c.api.limits.max_depth, 64);
        assert!(c.jwt.is_none());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("vexil-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(
            &path,
            "admin_addr = \"127.0.0.1:9000\"\ndatabase_url = \"sqlite://a.db\"\n[limits]\nmax_flags = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            database_url: Some("sqlite://b.db".into()),
            ..ServeArgs::default()
        };
        let c = ControlConfig::resolve(&args).unwrap();
        assert_eq!(c.admin_addr.port(), 9000);
        assert_eq!(c.database_url, "sqlite://b.db");
        assert_eq!(c.api.limits.max_flags, 10);
        assert_eq!(c.sync_addr.port(), 7443);
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = std::env::temp_dir().join(format!("vexil-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(&path, "admin_adr = \"127.0.0.1:9000\"\n").unwrap();
        let err = ControlConfig::resolve(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin_adr"), "{err}");
    }
}
