//! Configuration: a TOML file (`--config`), `VEXIL_*` environment variables and command-line flags,
//! in rising order of precedence.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::api::ApiConfig;
use crate::auth::JwtConfig;
use crate::webhook::InjectConfig;

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
    /// Kubernetes injection webhook listen address (HTTPS); `off` disables the webhook.
    #[arg(long, env = "VEXIL_WEBHOOK_ADDR")]
    pub webhook_addr: Option<Listen>,
    /// `sqlite://FILE` (embedded, the default `sqlite://vexil.db`) or `postgres://...`.
    #[arg(long, env = "VEXIL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for fan-out between control replicas.
    #[arg(long, env = "VEXIL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Generate development TLS certificates into `--tls-dir`.
    #[arg(long, env = "VEXIL_DEV_TLS")]
    pub dev_tls: bool,
    /// Extra DNS names or IP addresses for the development server certificate (comma-separated;
    /// used when the certificate is first generated).
    #[arg(long, env = "VEXIL_DEV_TLS_NAMES", value_delimiter = ',')]
    pub dev_tls_names: Vec<String>,
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
    /// The injection webhook's settings.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// The injection webhook's flags (`[webhook]` in the file).
#[derive(Args, Debug, Default, Clone)]
pub struct WebhookArgs {
    /// Webhook TLS certificate chain (PEM); default `<tls-dir>/server.pem`.
    #[arg(long, env = "VEXIL_WEBHOOK_TLS_CERT")]
    pub webhook_tls_cert: Option<PathBuf>,
    /// Webhook TLS private key (PEM); default `<tls-dir>/server.key`.
    #[arg(long, env = "VEXIL_WEBHOOK_TLS_KEY")]
    pub webhook_tls_key: Option<PathBuf>,
    /// Image of the injected `vexil-proxy` sidecar.
    #[arg(long, env = "VEXIL_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    /// Control plane QUIC address given to injected sidecars (`quic://HOST:PORT`).
    #[arg(long, env = "VEXIL_SIDECAR_CONTROL_URL")]
    pub sidecar_control_url: Option<String>,
    /// Secret (in the pod's namespace) holding the sidecar token under the key `token`.
    #[arg(long, env = "VEXIL_SIDECAR_TOKEN_SECRET")]
    pub sidecar_token_secret: Option<String>,
    /// Secret (in the pod's namespace) holding the control plane's CA under the key `ca.pem`.
    #[arg(long, env = "VEXIL_SIDECAR_CA_SECRET")]
    pub sidecar_ca_secret: Option<String>,
    /// `NO_PROXY` entries added to loopback on app containers (comma-separated).
    #[arg(long, env = "VEXIL_SIDECAR_NO_PROXY", value_delimiter = ',')]
    pub sidecar_no_proxy: Option<Vec<String>>,
    /// Environment of a pod without a `vexil.io/environment` annotation (default: its namespace).
    #[arg(long, env = "VEXIL_SIDECAR_DEFAULT_ENVIRONMENT")]
    pub sidecar_default_environment: Option<String>,
}

/// A listen address that can be switched off: `off` (or an empty string) disables the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Not listening.
    Off,
    /// Listening on this address.
    On(SocketAddr),
}

impl Listen {
    /// The address, unless switched off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::On(addr) => Some(addr),
        }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" => Ok(Listen::Off),
            addr => addr
                .parse()
                .map(Listen::On)
                .map_err(|e| format!("{addr:?}: {e} (expected HOST:PORT or `off`)")),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::On(addr) => addr.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The configuration file's shape: every key optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    admin_addr: Option<SocketAddr>,
    sync_addr: Option<SocketAddr>,
    webhook_addr: Option<Listen>,
    database_url: Option<String>,
    redis_url: Option<String>,
    dev_tls: Option<bool>,
    dev_tls_names: Option<Vec<String>>,
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
    #[serde(default)]
    webhook: FileWebhook,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    sidecar_image: Option<String>,
    control_url: Option<String>,
    token_secret: Option<String>,
    ca_secret: Option<String>,
    no_proxy: Option<Vec<String>>,
    default_environment: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileJwt {
    hs256_secret: Option<String>,
    rs256_public_key: Option<PathBuf>,
    role_claim: Option<String>,
    environments_claim: Option<String>,
    // vexil-jwt options (docs/configuration.md, "Authentication")
    hs256_secret_file: Option<PathBuf>,
    es256_public_key: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_refresh_secs: Option<u64>,
    jwks_ca_file: Option<PathBuf>,
    leeway_secs: Option<u64>,
    require_exp: Option<bool>,
    audiences: Option<Vec<String>>,
    issuers: Option<Vec<String>>,
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
    read_timeout_ms: Option<u64>,
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

/// The injection webhook's resolved settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Listen address; `None` when switched off.
    pub addr: Option<SocketAddr>,
    /// TLS certificate chain (PEM).
    pub tls_cert: PathBuf,
    /// TLS private key (PEM).
    pub tls_key: PathBuf,
    /// Whether the certificate or key was configured explicitly. When not, and no certificate is at
    /// the default place (`<tls_dir>/server.pem`, written by `--dev-tls`), the webhook stays off
    /// with a warning instead of failing the start.
    pub tls_configured: bool,
    /// What injected pods get.
    pub inject: InjectConfig,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Admin API address.
    pub admin_addr: SocketAddr,
    /// QUIC sync address.
    pub sync_addr: SocketAddr,
    /// The injection webhook.
    pub webhook: WebhookConfig,
    /// Database URL.
    pub database_url: String,
    /// Redis URL, when replicas fan out through Redis.
    pub redis_url: Option<String>,
    /// Generate development certificates.
    pub dev_tls: bool,
    /// Extra names of the development server certificate.
    pub dev_tls_names: Vec<String>,
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
        let d = JwtConfig::default();
        let jwt = JwtConfig {
            hs256_secret: args.jwt_hs256_secret.clone().or(file.jwt.hs256_secret),
            rs256_public_key: args
                .jwt_rs256_public_key
                .clone()
                .or(file.jwt.rs256_public_key),
            role_claim: args
                .jwt_role_claim
                .clone()
                .or(file.jwt.role_claim)
                .unwrap_or(d.role_claim),
            environments_claim: file.jwt.environments_claim.unwrap_or(d.environments_claim),
            hs256_secret_file: file.jwt.hs256_secret_file,
            es256_public_key: file.jwt.es256_public_key,
            jwks_file: file.jwt.jwks_file,
            jwks_url: file.jwt.jwks_url,
            jwks_refresh_secs: file.jwt.jwks_refresh_secs.unwrap_or(d.jwks_refresh_secs),
            jwks_ca_file: file.jwt.jwks_ca_file,
            leeway_secs: file.jwt.leeway_secs.unwrap_or(d.leeway_secs),
            require_exp: file.jwt.require_exp.unwrap_or(d.require_exp),
            audiences: file.jwt.audiences.unwrap_or_default(),
            issuers: file.jwt.issuers.unwrap_or_default(),
        };
        let jwt = jwt.has_key().then_some(jwt);
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
        if let Some(v) = file.limits.read_timeout_ms {
            if v == 0 {
                anyhow::bail!("limits.read_timeout_ms must be at least 1");
            }
            api.read_timeout = Duration::from_millis(v);
        }
        let tls_dir = args
            .tls_dir
            .clone()
            .or(file.tls_dir)
            .unwrap_or_else(|| PathBuf::from("tls"));
        let webhook_addr = args
            .webhook_addr
            .or(file.webhook_addr)
            .unwrap_or_else(|| Listen::On(default_addr("127.0.0.1:9443")));
        Ok(ControlConfig {
            admin_addr: args
                .admin_addr
                .or(file.admin_addr)
                .unwrap_or_else(|| default_addr("127.0.0.1:8080")),
            sync_addr: args
                .sync_addr
                .or(file.sync_addr)
                .unwrap_or_else(|| default_addr("127.0.0.1:7443")),
            webhook: resolve_webhook(args, &tls_dir, webhook_addr, file.webhook)?,
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://vexil.db".into()),
            redis_url: args.redis_url.clone().or(file.redis_url),
            dev_tls: args.dev_tls || file.dev_tls.unwrap_or(false),
            dev_tls_names: if args.dev_tls_names.is_empty() {
                file.dev_tls_names.unwrap_or_default()
            } else {
                args.dev_tls_names.clone()
            },
            tls_dir,
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

/// The webhook's settings: flags over the file's `[webhook]` table over defaults.
fn resolve_webhook(
    args: &ServeArgs,
    tls_dir: &Path,
    addr: Listen,
    file: FileWebhook,
) -> anyhow::Result<WebhookConfig> {
    let w = &args.webhook;
    let defaults = InjectConfig::default();
    let inject = InjectConfig {
        sidecar_image: pick(&w.sidecar_image, file.sidecar_image, defaults.sidecar_image),
        control_url: pick(
            &w.sidecar_control_url,
            file.control_url,
            defaults.control_url,
        ),
        token_secret: pick(
            &w.sidecar_token_secret,
            file.token_secret,
            defaults.token_secret,
        ),
        ca_secret: pick(&w.sidecar_ca_secret, file.ca_secret, defaults.ca_secret),
        no_proxy: pick(&w.sidecar_no_proxy, file.no_proxy, defaults.no_proxy),
        default_environment: w
            .sidecar_default_environment
            .clone()
            .or(file.default_environment),
    };
    inject.validate()?;
    let tls_configured = w.webhook_tls_cert.is_some()
        || w.webhook_tls_key.is_some()
        || file.tls_cert.is_some()
        || file.tls_key.is_some();
    Ok(WebhookConfig {
        tls_configured,
        addr: addr.addr(),
        tls_cert: w
            .webhook_tls_cert
            .clone()
            .or(file.tls_cert)
            .unwrap_or_else(|| tls_dir.join("server.pem")),
        tls_key: w
            .webhook_tls_key
            .clone()
            .or(file.tls_key)
            .unwrap_or_else(|| tls_dir.join("server.key")),
        inject,
    })
}

/// The flag's value, else the file's, else the default.
fn pick<T: Clone>(flag: &Option<T>, file: Option<T>, default: T) -> T {
    flag.clone().or(file).unwrap_or(default)
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
        assert_eq!(c.webhook.addr.map(|a| a.port()), Some(9443));
        assert_eq!(c.webhook.inject, InjectConfig::default());
    }

    #[test]
    fn jwt_options_of_the_file() {
        let dir = std::env::temp_dir().join(format!("vexil-config-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(
            &path,
            "[jwt]\njwks_url = \"https://idp.example/jwks\"\njwks_refresh_secs = 60\n\
             jwks_ca_file = \"/ca.pem\"\nes256_public_key = \"/ec.pem\"\n\
             hs256_secret_file = \"/secret\"\njwks_file = \"/jwks.json\"\nleeway_secs = 5\n\
             require_exp = false\naudiences = [\"vexil\"]\nissuers = [\"https://idp.example\"]\n",
        )
        .unwrap();
        let c = ControlConfig::resolve(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        let jwt = c.jwt.unwrap();
        assert_eq!(jwt.jwks_url.as_deref(), Some("https://idp.example/jwks"));
        assert_eq!(jwt.jwks_refresh_secs, 60);
        assert_eq!(jwt.jwks_ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(jwt.es256_public_key, Some(PathBuf::from("/ec.pem")));
        assert_eq!(jwt.hs256_secret_file, Some(PathBuf::from("/secret")));
        assert_eq!(jwt.jwks_file, Some(PathBuf::from("/jwks.json")));
        assert_eq!((jwt.leeway_secs, jwt.require_exp), (5, false));
        assert_eq!(jwt.audiences, ["vexil"]);
        assert_eq!(jwt.issuers, ["https://idp.example"]);
        assert_eq!(jwt.role_claim, "vexil_role");
        let _ = std::fs::remove_dir_all(&dir);
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
    fn webhook_settings_come_from_flags_over_the_file() {
        let dir = std::env::temp_dir().join(format!("vexil-config-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(
            &path,
            "webhook_addr = \"off\"\ntls_dir = \"/etc/vexil/tls\"\n[webhook]\n\
             sidecar_image = \"registry.example/vexil-proxy:9\"\nno_proxy = [\".svc\", \".corp\"]\n\
             token_secret = \"token-from-file\"\n",
        )
        .unwrap();
        let mut args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = ControlConfig::resolve(&args).unwrap();
        assert_eq!(c.webhook.addr, None, "off in the file");
        assert_eq!(c.webhook.tls_cert, Path::new("/etc/vexil/tls/server.pem"));
        assert_eq!(c.webhook.tls_key, Path::new("/etc/vexil/tls/server.key"));
        assert!(!c.webhook.tls_configured);
        let inject = &c.webhook.inject;
        assert_eq!(inject.sidecar_image, "registry.example/vexil-proxy:9");
        assert_eq!(inject.no_proxy, vec![".svc".to_string(), ".corp".into()]);
        assert_eq!(inject.token_secret, "token-from-file");
        assert_eq!(inject.ca_secret, "vexil-sidecar", "the default");
        assert_eq!(inject.control_url, "quic://vexil-control.vexil.svc:7443");

        args.webhook_addr = Some("0.0.0.0:9443".parse().unwrap());
        args.webhook.sidecar_token_secret = Some("token-from-flag".into());
        args.webhook.webhook_tls_cert = Some("/run/tls/tls.crt".into());
        args.webhook.sidecar_no_proxy = Some(vec![".cluster.local".into()]);
        let c = ControlConfig::resolve(&args).unwrap();
        assert_eq!(c.webhook.addr, Some("0.0.0.0:9443".parse().unwrap()));
        assert_eq!(c.webhook.tls_cert, Path::new("/run/tls/tls.crt"));
        assert!(c.webhook.tls_configured);
        assert_eq!(c.webhook.inject.token_secret, "token-from-flag");
        assert_eq!(
            c.webhook.inject.no_proxy,
            vec![".cluster.local".to_string()]
        );

        args.webhook.sidecar_control_url = Some("http://control:7443".into());
        let err = ControlConfig::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("quic://"), "{err}");
    }

    /// The `control.toml` embedded in the Kubernetes ConfigMap: the block under `control.toml: |`.
    fn kubernetes_control_toml() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/base/configmap.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let block = text
            .split_once("control.toml: |\n")
            .expect("a control.toml block")
            .1;
        block
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_kubernetes_config_parses() {
        let dir = std::env::temp_dir().join(format!("vexil-config-k8s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(&path, kubernetes_control_toml()).unwrap();
        let c = ControlConfig::resolve(&ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(c.admin_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.webhook.addr, Some("0.0.0.0:9443".parse().unwrap()));
        assert_eq!(c.webhook.tls_cert, Path::new("/etc/vexil/tls/tls.crt"));
        assert!(c.webhook.tls_configured);
        // The QUIC endpoint has a certificate too (there is no server.pem in the Secret).
        assert_eq!(
            c.tls_cert.as_deref(),
            Some(Path::new("/etc/vexil/tls/tls.crt"))
        );
        assert_eq!(
            c.tls_key.as_deref(),
            Some(Path::new("/etc/vexil/tls/tls.key"))
        );
        assert_eq!(
            c.webhook.inject.control_url,
            "quic://vexil-control.vexil.svc:7443"
        );
    }

    #[test]
    fn listen_addresses_parse_or_switch_off() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!("".parse::<Listen>(), Ok(Listen::Off));
        let on: Listen = "127.0.0.1:9443".parse().unwrap();
        assert_eq!(on.to_string(), "127.0.0.1:9443");
        assert!("nine".parse::<Listen>().unwrap_err().contains("`off`"));
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
