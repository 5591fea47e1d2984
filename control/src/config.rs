//! Configuration of `vexil-control serve`: built-in defaults, a TOML file (`--config`), `VEXIL_*`
//! environment variables and command-line flags, in rising order of precedence. Each setting is
//! declared once below (flag, variable, file key, default, documentation) and parsed into its type
//! where it enters; what the API, the authenticator and the injection webhook take
//! ([`ApiConfig`], [`JwtConfig`], [`InjectConfig`]) is built from it. `docs/configuration.md`
//! renders its tables from these declarations.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use vexil_settings::{
    Layers, Millis, Problems, Seconds, Secret, SecretUrl, Value, ms, nonzero, not_empty, secs,
};

use crate::api::ApiConfig;
use crate::auth::JwtConfig;
use crate::store::StoreOptions;
use crate::webhook::InjectConfig;

/// A port on 127.0.0.1: every listener is loopback-only unless configured otherwise.
const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

vexil_settings::settings! {
    /// The control plane's configuration.
    #[derive(Clone, Debug)]
    pub struct ControlConfig {
        group "control-listeners" {
            /// The TOML configuration file; variables and flags override it.
            config: Option<PathBuf>, flag "config", env "VEXIL_CONFIG";
            /// Admin REST API, `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (plain HTTP).
            admin_addr: SocketAddr = loopback(8080), flag "admin-addr", env "VEXIL_ADMIN_ADDR",
                key "admin_addr";
            /// QUIC sync endpoint (UDP, ALPN `vexil-sync/1`).
            sync_addr: SocketAddr = loopback(7443), flag "sync-addr", env "VEXIL_SYNC_ADDR",
                key "sync_addr";
            /// Kubernetes injection webhook (HTTPS, `/inject`); `off` (or empty) disables it.
            /// Without a certificate (see `[webhook]`) it stays off with a warning.
            webhook_addr: Listen = Listen::On(loopback(9443)), flag "webhook-addr",
                env "VEXIL_WEBHOOK_ADDR", key "webhook_addr";
            /// `sqlite://FILE` (created when missing) or `postgres://USER:PASSWORD@HOST:PORT/DB`
            /// (also `postgresql://`). Migrations run at start.
            database_url: SecretUrl = SecretUrl::from("sqlite://vexil.db"), flag "database-url",
                env "VEXIL_DATABASE_URL", key "database_url", check database_url;
            /// Redis for fan-out between control replicas (`redis://HOST:PORT`). Without it,
            /// replicas learn of each other's commits by polling the store.
            redis_url: Option<SecretUrl>, flag "redis-url", env "VEXIL_REDIS_URL",
                key "redis_url", check redis_url;
            /// On SIGTERM or Ctrl-C: seconds to drain in-flight API requests before exiting
            /// anyway.
            shutdown_grace: Duration as Seconds = secs(25), flag "shutdown-grace-secs",
                env "VEXIL_SHUTDOWN_GRACE_SECS", key "shutdown_grace_secs";
        }
        group "control-tls" {
            /// Generate a development CA (`ca.pem`, `ca.key`) and a server certificate
            /// (`server.pem`, `server.key`, valid for `localhost`, `127.0.0.1`, `::1` and
            /// `--dev-tls-names`) into `--tls-dir`; existing files are reused. The flag can only
            /// switch it on: with `dev_tls = true` in the file, `--dev-tls` absent does not switch
            /// it off.
            dev_tls: bool, flag "dev-tls", env "VEXIL_DEV_TLS", key "dev_tls";
            /// Extra DNS names or IP addresses of the generated server certificate; used only when
            /// it is first generated.
            dev_tls_names: Vec<String>, flag "dev-tls-names", env "VEXIL_DEV_TLS_NAMES",
                key "dev_tls_names", default_doc "none";
            /// Directory of TLS material (relative paths are relative to the working directory).
            tls_dir: PathBuf = PathBuf::from("tls"), flag "tls-dir", env "VEXIL_TLS_DIR",
                key "tls_dir";
            /// Server certificate chain (PEM) of the QUIC endpoint. Control does not start without
            /// one.
            tls_cert: Option<PathBuf>, flag "tls-cert", env "VEXIL_TLS_CERT", key "tls_cert",
                default_doc "`<tls_dir>/server.pem`";
            /// Its private key (PEM).
            tls_key: Option<PathBuf>, flag "tls-key", env "VEXIL_TLS_KEY", key "tls_key",
                default_doc "`<tls_dir>/server.key`";
            /// Require sidecars to present a client certificate signed by this CA (PEM): mutual
            /// TLS.
            tls_client_ca: Option<PathBuf>, flag "tls-client-ca", env "VEXIL_TLS_CLIENT_CA",
                key "tls_client_ca";
        }
        group "control-auth" {
            /// On the first start (no token in the store), the secret of the first admin token:
            /// `vxl_` followed by base64url characters (`A-Z a-z 0-9 - _`), like the tokens control
            /// generates; any other value stops the start. Without it a random one is written to
            /// `admin_token_file`. Ignored once any token exists.
            admin_token: Option<Secret>, env "VEXIL_ADMIN_TOKEN";
            /// Where a generated first admin token is written (a new file, mode 0600; its path is
            /// printed and logged, the secret nowhere). A start that cannot write it fails and
            /// creates no token.
            admin_token_file: Option<PathBuf>, flag "admin-token-file",
                env "VEXIL_ADMIN_TOKEN_FILE", key "admin_token_file",
                default_doc "`admin-token` beside the SQLite database file; in the working directory with PostgreSQL";
            /// Failed authentications (a token or JWT presented and refused) one peer (an IP
            /// address; an IPv6 /64) may make in a burst, on the admin API and QUIC `Subscribe`
            /// together; then its requests answer `429` with `Retry-After`, and its `Subscribe`s
            /// `UNAUTHENTICATED`, until it regains some. `0` switches the limit off. Behind a
            /// proxy that hides client addresses, every client counts as the proxy.
            auth_failure_burst: u32 = crate::auth::DEFAULT_FAILURE_BURST,
                key "auth_failure_burst";
            /// A peer regains one failed authentication this often (milliseconds).
            auth_failure_refill: Duration as Millis = crate::auth::DEFAULT_FAILURE_REFILL,
                key "auth_failure_refill_ms", check nonzero;
        }
        /// `[jwt]`: JWT bearer tokens.
        section jwt in "jwt": JwtSettings;
        /// `[sync]`: the sync hub's timers and limits.
        section sync in "sync": SyncConfig;
        /// `[limits]`: the admin API's limits.
        section limits in "limits": LimitsConfig;
        /// `[retention]`: how much of the change log and the audit log is kept.
        section retention in "retention": RetentionConfig;
        /// `[database]`: timeouts and retries of the store's database.
        section database in "database": DatabaseConfig;
        /// `[webhook]`: what the injection webhook gives every injected pod.
        section webhook in "webhook": WebhookSettings;
        /// `[telemetry]`: logs and traces.
        section telemetry in "telemetry": vexil_telemetry::TelemetryConfig;
    }
    validate check_control;
}

/// What no single setting can check: a `VEXIL_ADMIN_TOKEN` that could never authenticate.
fn check_control(c: &ControlConfig, r: &mut vexil_settings::Resolver<'_>, p: &str) {
    if let Some(token) = &c.admin_token
        && let Err(reason) =
            crate::auth::check_admin_secret(token.expose(), c.jwt_config().is_some())
    {
        r.problem(p, "admin_token", "", reason);
    }
}

vexil_settings::settings! {
    /// `[jwt]`: JWT bearer tokens, accepted when a key is configured.
    #[derive(Clone, Debug)]
    pub struct JwtSettings {
        group "control-auth" {
            /// Accept JWT bearer tokens signed with HS256 and this secret.
            hs256_secret: Option<Secret>, flag "jwt-hs256-secret", env "VEXIL_JWT_HS256_SECRET",
                key "hs256_secret";
            /// A file holding the HS256 secret (e.g. a mounted Kubernetes Secret).
            hs256_secret_file: Option<PathBuf>, key "hs256_secret_file";
            /// Accept JWT bearer tokens signed with RS256 by this key (a PEM file with a
            /// `PUBLIC KEY` or `RSA PUBLIC KEY` block).
            rs256_public_key: Option<PublicKeyFile>, flag "jwt-rs256-public-key",
                env "VEXIL_JWT_RS256_PUBLIC_KEY", key "rs256_public_key", check rs256_key;
            /// Accept JWT bearer tokens signed with ES256 by this key (a PEM file with an EC P-256
            /// `PUBLIC KEY` block).
            es256_public_key: Option<PublicKeyFile>, key "es256_public_key", check es256_key;
            /// A JWKS document (file); tokens choose their key by `kid`.
            jwks_file: Option<PathBuf>, key "jwks_file";
            /// A JWKS document fetched at start (`https://`, or `http://` with a warning) and
            /// refreshed every `jwks_refresh_secs`; a failed refresh keeps the last good keys.
            jwks_url: Option<String>, env "VEXIL_JWT_JWKS_URL", key "jwks_url";
            /// How often the JWKS file or URL is read again (seconds; 0: only at start).
            jwks_refresh: Duration as Seconds = secs(300), key "jwks_refresh_secs";
            /// CA certificates (PEM) trusted for an `https` JWKS URL instead of the public roots.
            jwks_ca_file: Option<PathBuf>, key "jwks_ca_file";
            /// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
            leeway: Duration as Seconds = secs(30), key "leeway_secs";
            /// Refuse tokens without `exp` (a token that never expires cannot be taken back).
            require_exp: bool = true, key "require_exp";
            /// When not empty, a token's `aud` must name one of these.
            audiences: Vec<String>, key "audiences", default_doc "none (not checked)";
            /// When not empty, a token's `iss` must be one of these.
            issuers: Vec<String>, key "issuers", default_doc "none (not checked)";
            /// The claim holding the role: `admin`, `editor`, `viewer` or `sidecar`.
            role_claim: String = "vexil_role".into(), flag "jwt-role-claim",
                env "VEXIL_JWT_ROLE_CLAIM", key "role_claim", check not_empty;
            /// The claim holding the list of environments the token is limited to: absent means
            /// every environment, a string a list of one, an empty list none; any other type
            /// refuses the token.
            environments_claim: String = "vexil_environments".into(), key "environments_claim",
                check not_empty;
        }
    }
}

vexil_settings::settings! {
    /// `[sync]`: timers and limits of the sync hub.
    #[derive(Clone, Debug)]
    pub struct SyncConfig {
        group "control-sync" {
            /// How often each environment's feed checks the store for commits it was not told
            /// about (milliseconds); with Redis down (or absent), the bound on propagation between
            /// replicas.
            poll_interval: Duration as Millis = ms(1000), flag "sync-poll-ms",
                env "VEXIL_SYNC_POLL_MS", key "poll_interval_ms", check nonzero;
            /// A `Ping` frame goes out on a stream idle this long (milliseconds; sent to sidecars
            /// in `Welcome.heartbeat_ms`).
            heartbeat: Duration as Millis = ms(5000), key "heartbeat_ms", check nonzero;
            /// QUIC idle timeout of the endpoint (milliseconds; the smaller of both peers' values
            /// applies; sidecars use 5 s unless `--control-idle-timeout-ms` says otherwise).
            idle_timeout: Duration as Millis = ms(10_000), key "idle_timeout_ms", check nonzero;
            /// Connected sidecars' tokens are checked again this often (seconds); a revoked
            /// token's stream is ended.
            reauth_interval: Duration as Seconds = secs(60), key "reauth_interval_secs",
                check nonzero;
            /// A sidecar further behind than this many revisions gets one full snapshot instead of
            /// the deltas.
            max_catch_up: i64 = 1000, key "max_catch_up",
                check |n: &i64| if *n > 0 { Ok(()) } else { Err("must be at least 1".into()) };
            /// An environment's key for signing decisions is rotated when it is this old (days;
            /// the key before it is still accepted until the next rotation). 0: only when an
            /// operator rotates it (`POST /api/v1/environments/{env}/signing-keys/rotate`).
            signing_key_max_age_days: u64 = 30, key "signing_key_max_age_days";
            /// Entries (flag, variant, count) a sidecar's usage report may hold (sent to sidecars
            /// in `Welcome.usage_max_entries`; a sidecar splits larger reports). 0: control takes no
            /// usage reports and sidecars send none.
            usage_max_entries: u32 = crate::sync::usage::UsageSettings::default().max_entries,
                key "usage_max_entries", default_doc "`5000`";
            /// The sidecars' usage reports are added up in memory and written to the store this
            /// often (milliseconds), in one transaction.
            usage_flush_interval: Duration as Millis =
                crate::sync::usage::UsageSettings::default().flush_interval,
                key "usage_flush_interval_ms", default_doc "`5000`", check nonzero;
            /// Usage entries (environment, flag, variant, hour) a replica holds in memory at most
            /// while they wait for the store; a report that would add more is refused
            /// (`overloaded`).
            usage_max_pending: usize = crate::sync::usage::UsageSettings::default().max_pending,
                key "usage_max_pending", default_doc "`1000000`", check nonzero;
            /// Usage entries one sidecar may send per minute; a report past it is refused
            /// (`rate_limited`).
            usage_max_entries_per_minute: u64 =
                crate::sync::usage::UsageSettings::default().max_entries_per_minute,
                key "usage_max_entries_per_minute", default_doc "`100000`";
        }
    }
}

vexil_settings::settings! {
    /// `[limits]`: the admin API's limits.
    #[derive(Clone, Debug)]
    pub struct LimitsConfig {
        group "control-limits" {
            /// Largest request body (bytes); larger is `413`.
            max_body_bytes: usize = ApiConfig::default().max_body_bytes, key "max_body_bytes",
                default_doc "`1048576` (1 MiB)", check nonzero;
            /// Largest body of `PUT .../flagset` (bytes).
            max_import_bytes: usize = ApiConfig::default().max_import_bytes,
                key "max_import_bytes", default_doc "`33554432` (32 MiB)", check nonzero;
            /// Largest flag set an environment may hold after any write (bytes of compact JSON,
            /// the export document). Every sidecar receives it as one snapshot frame, so it must
            /// stay below the sync frame limit (64 MiB); a write that would cross it is `422`.
            max_environment_bytes: usize = ApiConfig::default().max_environment_bytes,
                key "max_environment_bytes", default_doc "`16777216` (16 MiB)",
                check below_frame_limit;
            /// Largest page of `GET /audit` (bytes of entries): a page stops before the entry that
            /// would take it past this (it holds at least one) and gives a `next_cursor`.
            max_audit_page_bytes: usize = ApiConfig::default().max_audit_page_bytes,
                key "max_audit_page_bytes", default_doc "`4194304` (4 MiB)", check nonzero;
            /// Flags per environment (after any write; more is `422`).
            max_flags: usize = ApiConfig::default().limits.max_flags, key "max_flags",
                check nonzero;
            /// JsonLogic nesting depth of a rule, `$ref` evaluators included.
            max_rule_depth: usize = ApiConfig::default().limits.max_depth, key "max_rule_depth",
                check nonzero;
            /// Time a client has to send a request head (milliseconds; else the connection is
            /// closed; also closes idle keep-alive connections), and separately its body (else
            /// `408`).
            read_timeout: Duration as Millis = ApiConfig::default().read_timeout,
                key "read_timeout_ms", check nonzero;
            /// Connections the admin API serves at once (and, separately, the webhook); one more
            /// is answered `503` with `Retry-After: 1` and closed.
            max_connections: usize = ApiConfig::default().max_connections,
                key "max_connections", check nonzero;
        }
    }
}

vexil_settings::settings! {
    /// `[retention]`: how much of the change log and the audit log is kept (0: no bound of that
    /// kind). A background task prunes every `interval_secs`.
    #[derive(Clone, Debug)]
    pub struct RetentionConfig {
        group "control-retention" {
            /// Change-log entries older than this are pruned (days; the newest change of each
            /// environment is always kept). A sidecar whose revision is older than the oldest
            /// change kept gets one full snapshot instead of the deltas. 0: no age bound.
            changes_max_age_days: u64 = 30, key "changes_max_age_days";
            /// Change-log entries kept per environment, at most (the newest). 0: no count bound.
            changes_max_count: u64 = 10_000, key "changes_max_count";
            /// Audit entries older than this are pruned (days). 0: no age bound.
            audit_max_age_days: u64 = 400, key "audit_max_age_days";
            /// Audit entries kept, at most (the newest). 0: no count bound.
            audit_max_count: u64 = 1_000_000, key "audit_max_count";
            /// Sidecar sessions (`GET /api/v1/sidecars`) disconnected, or stale (their replica
            /// stopped vouching for them), longer than this are deleted (hours). 0: kept.
            sessions_max_age_hours: u64 = 24, key "sessions_max_age_hours";
            /// Flag usage (evaluation counts per flag, variant and hour, reported by sidecars) of
            /// hours older than this is deleted (days). It bounds the windows of the usage reports
            /// (`GET /api/v1/environments/{env}/usage`). 0: kept.
            usage_max_age_days: u64 = 90, key "usage_max_age_days";
            /// How often both logs are pruned (seconds).
            interval: Duration as Seconds = secs(3600), key "interval_secs", check nonzero;
        }
    }
}

vexil_settings::settings! {
    /// `[database]`: timeouts and retries of the store's database.
    #[derive(Clone, Debug)]
    pub struct DatabaseConfig {
        group "control-database" {
            /// PostgreSQL: `statement_timeout` of every connection (milliseconds), and the
            /// deadline of a whole write on control's side: a database that stops answering
            /// mid-transaction makes the write answer `503` after it.
            statement_timeout: Duration as Millis = StoreOptions::default().statement_timeout,
                key "statement_timeout_ms", check nonzero;
            /// PostgreSQL: `idle_in_transaction_session_timeout` of every connection
            /// (milliseconds): the server ends a transaction whose client went silent.
            idle_in_transaction_timeout: Duration as Millis =
                StoreOptions::default().idle_in_transaction_timeout,
                key "idle_in_transaction_timeout_ms", check nonzero;
            /// PostgreSQL: TCP keepalive of the server's end of every connection
            /// (`tcp_keepalives_idle`, seconds; then 3 probes `idle / 3` apart).
            keepalive_idle: Duration as Seconds = StoreOptions::default().keepalive_idle,
                key "keepalive_idle_secs", check nonzero;
            /// A write refused for a serialization failure (`40001`) or a deadlock (`40P01`) is
            /// tried again this many times.
            write_retries: u32 = StoreOptions::default().write_retries, key "write_retries";
        }
    }
}

impl DatabaseConfig {
    /// The store's options.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            statement_timeout: self.statement_timeout,
            idle_in_transaction_timeout: self.idle_in_transaction_timeout,
            keepalive_idle: self.keepalive_idle,
            write_retries: self.write_retries,
        }
    }
}

impl RetentionConfig {
    /// What the store keeps.
    pub fn retention(&self) -> crate::store::Retention {
        let days = |d: u64| (d > 0).then(|| Duration::from_secs(d.saturating_mul(86_400)));
        let count = |n: u64| (n > 0).then(|| i64::try_from(n).unwrap_or(i64::MAX));
        crate::store::Retention {
            changes_max_age: days(self.changes_max_age_days),
            changes_max_count: count(self.changes_max_count),
            audit_max_age: days(self.audit_max_age_days),
            audit_max_count: count(self.audit_max_count),
            sessions_max_age: (self.sessions_max_age_hours > 0)
                .then(|| Duration::from_secs(self.sessions_max_age_hours.saturating_mul(3600))),
            usage_max_age: days(self.usage_max_age_days),
        }
    }
}

vexil_settings::settings! {
    /// `[webhook]`: the injection webhook's certificate and what every injected pod gets.
    #[derive(Clone, Debug)]
    pub struct WebhookSettings {
        group "control-webhook" {
            /// The webhook's certificate chain (PEM), re-read when the file changes.
            tls_cert: Option<PathBuf>, flag "webhook-tls-cert", env "VEXIL_WEBHOOK_TLS_CERT",
                key "tls_cert", default_doc "`<tls_dir>/server.pem`";
            /// Its private key (PEM).
            tls_key: Option<PathBuf>, flag "webhook-tls-key", env "VEXIL_WEBHOOK_TLS_KEY",
                key "tls_key", default_doc "`<tls_dir>/server.key`";
            /// Image of the injected sidecar.
            sidecar_image: String = InjectConfig::default().sidecar_image, flag "sidecar-image",
                env "VEXIL_SIDECAR_IMAGE", key "sidecar_image",
                default_doc "`vexil/vexil-proxy:<version of vexil-control>`", check not_empty;
            /// Control's QUIC address given to injected sidecars; must start with `quic://`.
            control_url: String = InjectConfig::default().control_url,
                flag "sidecar-control-url", env "VEXIL_SIDECAR_CONTROL_URL", key "control_url",
                check quic_url;
            /// Secret in the pod's namespace holding the sidecar token under the key `token`.
            token_secret: String = InjectConfig::default().token_secret,
                flag "sidecar-token-secret", env "VEXIL_SIDECAR_TOKEN_SECRET",
                key "token_secret", check not_empty;
            /// Secret in the pod's namespace holding control's CA under the key `ca.pem`.
            ca_secret: String = InjectConfig::default().ca_secret, flag "sidecar-ca-secret",
                env "VEXIL_SIDECAR_CA_SECRET", key "ca_secret", check not_empty;
            /// `NO_PROXY` entries added to `localhost,127.0.0.1,::1` on app containers.
            no_proxy: Vec<String> = InjectConfig::default().no_proxy, flag "sidecar-no-proxy",
                env "VEXIL_SIDECAR_NO_PROXY", key "no_proxy";
            /// Environment of a pod without a `vexil.io/environment` annotation; must be a valid
            /// environment key.
            default_environment: Option<String>, flag "sidecar-default-environment",
                env "VEXIL_SIDECAR_DEFAULT_ENVIRONMENT", key "default_environment",
                default_doc "the pod's namespace", check environment_key;
            /// ConfigMap whose key `proxy.toml` configures the sidecars of a namespace's pods
            /// that have no `vexil.io/config` annotation; mounted as optional (a namespace
            /// without it gives its sidecars no file).
            namespace_config: String = InjectConfig::default().namespace_config,
                flag "sidecar-namespace-config", env "VEXIL_SIDECAR_NAMESPACE_CONFIG",
                key "namespace_config", check kubernetes_name;
        }
    }
}

/// The largest `[limits] max_environment_bytes`: the sync frame limit less room for the `Full`
/// frame's envelope (revision, field tags), which is a few bytes.
pub const MAX_ENVIRONMENT_BYTES_CEILING: usize = vexil_proto::frame::DEFAULT_MAX_FRAME - (1 << 20);

fn below_frame_limit(n: &usize) -> Result<(), String> {
    match *n {
        0 => Err("must be at least 1".into()),
        n if n > MAX_ENVIRONMENT_BYTES_CEILING => Err(format!(
            "{n} is more than {MAX_ENVIRONMENT_BYTES_CEILING} bytes: every sidecar receives the \
             whole flag set as one sync frame, at most {} bytes",
            vexil_proto::frame::DEFAULT_MAX_FRAME
        )),
        _ => Ok(()),
    }
}

fn kubernetes_name(name: &str) -> Result<(), String> {
    crate::webhook::inject::check_dns_subdomain(name)
}

fn database_url(url: &SecretUrl) -> Result<(), String> {
    let known = ["sqlite://", "postgres://", "postgresql://"];
    if known.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(())
    } else {
        Err(format!(
            "{url}: expected sqlite://FILE or postgres://USER:PASSWORD@HOST:PORT/DB"
        ))
    }
}

fn redis_url(url: &Option<SecretUrl>) -> Result<(), String> {
    match url {
        Some(url) if !url.starts_with("redis://") && !url.starts_with("rediss://") => {
            Err(format!("{url}: expected redis://HOST:PORT (or rediss://)"))
        }
        _ => Ok(()),
    }
}

fn quic_url(url: &str) -> Result<(), String> {
    if url.starts_with("quic://") {
        Ok(())
    } else {
        Err(format!("{url:?} must be quic://HOST:PORT"))
    }
}

fn environment_key(env: &Option<String>) -> Result<(), String> {
    match env {
        Some(env) if !crate::model::is_valid_environment_key(env) => {
            Err(format!("{env:?} is not a valid environment key"))
        }
        _ => Ok(()),
    }
}

/// A public key file (PEM), read and parsed where the setting enters; shown as its path. The
/// verifier reads it again when control opens (`vexil_jwt`), so a file replaced in between is
/// still checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyFile {
    /// The PEM file.
    pub path: PathBuf,
    /// The algorithm its key verifies.
    pub algorithm: vexil_jwt::Algorithm,
}

impl Value for PublicKeyFile {
    fn from_text(text: &str) -> Result<Self, Problems> {
        let path = PathBuf::from_text(text)?;
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let key = vexil_jwt::Key::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(PublicKeyFile {
            path,
            algorithm: key.algorithm(),
        })
    }

    fn show(&self) -> Option<toml::Value> {
        self.path.show()
    }
}

fn rs256_key(key: &Option<PublicKeyFile>) -> Result<(), String> {
    key_of(key, vexil_jwt::Algorithm::RS256)
}

fn es256_key(key: &Option<PublicKeyFile>) -> Result<(), String> {
    key_of(key, vexil_jwt::Algorithm::ES256)
}

fn key_of(key: &Option<PublicKeyFile>, algorithm: vexil_jwt::Algorithm) -> Result<(), String> {
    let Some(key) = key else { return Ok(()) };
    if key.algorithm == algorithm {
        Ok(())
    } else {
        Err(format!(
            "{} holds a key for {}, not {}",
            key.path.display(),
            key.algorithm.as_str(),
            algorithm.as_str()
        ))
    }
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

impl Value for Listen {
    fn from_text(text: &str) -> Result<Self, Problems> {
        text.parse().map_err(Problems::from)
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

/// The injection webhook's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Whether the certificate or key was configured explicitly. When not, and no certificate is at
    /// the default place (`<tls_dir>/server.pem`, written by `--dev-tls`), the webhook stays off
    /// with a warning instead of failing the start.
    pub configured: bool,
}

impl ControlConfig {
    /// Resolves the configuration from `layers` (the file its `config` setting names included):
    /// the configuration, or every problem found.
    pub fn resolve(layers: Layers) -> Result<ControlConfig, Problems> {
        vexil_settings::resolve(layers).map(|r| r.settings)
    }

    /// Where a generated first admin token goes: `admin_token_file`, else `admin-token` beside the
    /// SQLite database file, else (PostgreSQL, in-memory SQLite) in the working directory.
    pub fn admin_token_path(&self) -> PathBuf {
        if let Some(path) = &self.admin_token_file {
            return path.clone();
        }
        let url: &str = &self.database_url;
        let file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(""))
            .filter(|f| !f.is_empty() && !f.starts_with(':'));
        match file.and_then(|f| std::path::Path::new(f).parent()) {
            Some(dir) => dir.join("admin-token"),
            None => PathBuf::from("admin-token"),
        }
    }

    /// JWT verification, when a key is configured.
    pub fn jwt_config(&self) -> Option<JwtConfig> {
        let jwt = &self.jwt;
        let config = JwtConfig {
            hs256_secret: jwt.hs256_secret.as_ref().map(|s| s.expose().to_string()),
            hs256_secret_file: jwt.hs256_secret_file.clone(),
            rs256_public_key: jwt.rs256_public_key.as_ref().map(|k| k.path.clone()),
            es256_public_key: jwt.es256_public_key.as_ref().map(|k| k.path.clone()),
            jwks_file: jwt.jwks_file.clone(),
            jwks_url: jwt.jwks_url.clone(),
            jwks_refresh_secs: jwt.jwks_refresh.as_secs(),
            jwks_ca_file: jwt.jwks_ca_file.clone(),
            leeway_secs: jwt.leeway.as_secs(),
            require_exp: jwt.require_exp,
            audiences: jwt.audiences.clone(),
            issuers: jwt.issuers.clone(),
            role_claim: jwt.role_claim.clone(),
            environments_claim: jwt.environments_claim.clone(),
        };
        config.has_key().then_some(config)
    }

    /// The admin API's settings.
    pub fn api_config(&self) -> ApiConfig {
        let l = &self.limits;
        ApiConfig {
            max_body_bytes: l.max_body_bytes,
            max_import_bytes: l.max_import_bytes,
            max_environment_bytes: l.max_environment_bytes,
            max_audit_page_bytes: l.max_audit_page_bytes,
            limits: vexil_engine::Limits {
                max_flags: l.max_flags,
                max_depth: l.max_rule_depth,
            },
            read_timeout: l.read_timeout,
            max_connections: l.max_connections,
            fleet_stale_after: self.sync.heartbeat * crate::sync::fleet::STALE_HEARTBEATS,
        }
    }

    /// What injected pods get.
    pub fn inject_config(&self) -> InjectConfig {
        let w = &self.webhook;
        InjectConfig {
            sidecar_image: w.sidecar_image.clone(),
            control_url: w.control_url.clone(),
            token_secret: w.token_secret.clone(),
            ca_secret: w.ca_secret.clone(),
            no_proxy: w.no_proxy.clone(),
            default_environment: w.default_environment.clone(),
            namespace_config: w.namespace_config.clone(),
        }
    }

    /// The webhook's certificate and key: the configured ones, else `<tls_dir>/server.pem` and
    /// `<tls_dir>/server.key`.
    pub fn webhook_tls(&self) -> WebhookTls {
        let w = &self.webhook;
        WebhookTls {
            cert: w
                .tls_cert
                .clone()
                .unwrap_or_else(|| self.tls_dir.join("server.pem")),
            key: w
                .tls_key
                .clone()
                .unwrap_or_else(|| self.tls_dir.join("server.key")),
            configured: w.tls_cert.is_some() || w.tls_key.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vexil_settings::File;

    fn config_file(path: &Path) -> Layers {
        Layers::new().flag("config", path.display().to_string())
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vexil-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.toml");
        let c = ControlConfig::resolve(config_file(&path)).unwrap();
        assert_eq!(c.admin_addr.port(), 8080);
        assert_eq!(c.api_config().limits.max_depth, 64);
        assert!(c.jwt_config().is_none());
        assert_eq!(c.webhook_addr.addr().map(|a| a.port()), Some(9443));
        assert_eq!(c.inject_config(), InjectConfig::default());
        assert_eq!(c.sync.poll_interval, Duration::from_secs(1));
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.auth_failure_burst, 20);
        assert_eq!(c.auth_failure_refill, Duration::from_secs(6));
        assert_eq!(c.admin_token_path(), Path::new("admin-token"));
    }

    #[test]
    fn the_generated_admin_token_goes_beside_the_sqlite_file() {
        let path = |url: &str, file: Option<&str>| {
            let mut layers = Layers::new().flag("database-url", url);
            if let Some(f) = file {
                layers = layers.flag("admin-token-file", f);
            }
            ControlConfig::resolve(layers).unwrap().admin_token_path()
        };
        assert_eq!(
            path("sqlite:///var/lib/vexil/vexil.db?mode=rwc", None),
            Path::new("/var/lib/vexil/admin-token")
        );
        assert_eq!(
            path("sqlite://data/v.db", None),
            Path::new("data/admin-token")
        );
        assert_eq!(path("postgres://db/vexil", None), Path::new("admin-token"));
        assert_eq!(
            path("postgres://db/vexil", Some("/run/vexil/token")),
            Path::new("/run/vexil/token")
        );
    }

    #[test]
    fn jwt_options_of_the_file() {
        let path = temp_file(
            "jwt",
            "[jwt]\njwks_url = \"https://idp.example/jwks\"\njwks_refresh_secs = 60\n\
             jwks_ca_file = \"/ca.pem\"\nhs256_secret_file = \"/secret\"\n\
             jwks_file = \"/jwks.json\"\nleeway_secs = 5\nrequire_exp = false\n\
             audiences = [\"vexil\"]\nissuers = [\"https://idp.example\"]\n",
        );
        let c = ControlConfig::resolve(config_file(&path)).unwrap();
        let jwt = c.jwt_config().unwrap();
        assert_eq!(jwt.jwks_url.as_deref(), Some("https://idp.example/jwks"));
        assert_eq!(jwt.jwks_refresh_secs, 60);
        assert_eq!(jwt.jwks_ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(jwt.hs256_secret_file, Some(PathBuf::from("/secret")));
        assert_eq!(jwt.jwks_file, Some(PathBuf::from("/jwks.json")));
        assert_eq!((jwt.leeway_secs, jwt.require_exp), (5, false));
        assert_eq!(jwt.audiences, ["vexil"]);
        assert_eq!(jwt.issuers, ["https://idp.example"]);
        assert_eq!(jwt.role_claim, "vexil_role");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn flags_win_over_variables_over_the_file() {
        let path = temp_file(
            "flags",
            "admin_addr = \"127.0.0.1:9000\"\ndatabase_url = \"sqlite://a.db\"\n[limits]\nmax_flags = 10\n\
             [sync]\npoll_interval_ms = 50\n",
        );
        let c = ControlConfig::resolve(
            config_file(&path)
                .flag("database-url", "sqlite://b.db")
                .env(|n| (n == "VEXIL_SYNC_POLL_MS").then(|| "20".into())),
        )
        .unwrap();
        assert_eq!(c.admin_addr.port(), 9000);
        assert_eq!(&*c.database_url, "sqlite://b.db");
        assert_eq!(c.api_config().limits.max_flags, 10);
        assert_eq!(c.sync_addr.port(), 7443);
        assert_eq!(c.sync.poll_interval, Duration::from_millis(20));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn webhook_settings_come_from_flags_over_the_file() {
        let path = temp_file(
            "webhook",
            "webhook_addr = \"off\"\ntls_dir = \"/etc/vexil/tls\"\n[webhook]\n\
             sidecar_image = \"registry.example/vexil-proxy:9\"\nno_proxy = [\".svc\", \".corp\"]\n\
             token_secret = \"token-from-file\"\n",
        );
        let c = ControlConfig::resolve(config_file(&path)).unwrap();
        assert_eq!(c.webhook_addr.addr(), None, "off in the file");
        let tls = c.webhook_tls();
        assert_eq!(tls.cert, Path::new("/etc/vexil/tls/server.pem"));
        assert_eq!(tls.key, Path::new("/etc/vexil/tls/server.key"));
        assert!(!tls.configured);
        let inject = c.inject_config();
        assert_eq!(inject.sidecar_image, "registry.example/vexil-proxy:9");
        assert_eq!(inject.no_proxy, vec![".svc".to_string(), ".corp".into()]);
        assert_eq!(inject.token_secret, "token-from-file");
        assert_eq!(inject.ca_secret, "vexil-sidecar", "the default");
        assert_eq!(inject.control_url, "quic://vexil-control.vexil.svc:7443");

        let flags = || {
            config_file(&path)
                .flag("webhook-addr", "0.0.0.0:9443")
                .flag("sidecar-token-secret", "token-from-flag")
                .flag("webhook-tls-cert", "/run/tls/tls.crt")
                .flag("sidecar-no-proxy", ".cluster.local")
        };
        let c = ControlConfig::resolve(flags()).unwrap();
        assert_eq!(c.webhook_addr.addr(), Some("0.0.0.0:9443".parse().unwrap()));
        assert_eq!(c.webhook_tls().cert, Path::new("/run/tls/tls.crt"));
        assert!(c.webhook_tls().configured);
        assert_eq!(c.inject_config().token_secret, "token-from-flag");
        assert_eq!(
            c.inject_config().no_proxy,
            vec![".cluster.local".to_string()]
        );

        let err =
            ControlConfig::resolve(flags().flag("sidecar-control-url", "http://control:7443"))
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "--sidecar-control-url: \"http://control:7443\" must be quic://HOST:PORT"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
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
        let file = File::parse("configmap control.toml", &kubernetes_control_toml()).unwrap();
        let c = ControlConfig::resolve(Layers::new().file(file)).unwrap();
        assert_eq!(c.admin_addr, "0.0.0.0:8080".parse().unwrap());
        // Off for `serve`: the webhook has its own Deployment, which switches it on by flag.
        assert_eq!(c.webhook_addr.addr(), None);
        let webhook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/base/webhook.yaml");
        let webhook = std::fs::read_to_string(webhook).unwrap();
        assert!(webhook.contains(
            r#"args: ["webhook", "--config", "/etc/vexil/control.toml", "--webhook-addr", "0.0.0.0:9443"]"#
        ));
        assert_eq!(c.webhook_tls().cert, Path::new("/etc/vexil/tls/tls.crt"));
        assert!(c.webhook_tls().configured);
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
            c.inject_config().control_url,
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
        let file = File::parse("control.toml", "admin_adr = \"127.0.0.1:9000\"\n").unwrap();
        let err = ControlConfig::resolve(Layers::new().file(file))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "control.toml:1 admin_adr: unknown key (did you mean \"admin_addr\"?)"
        );
    }

    #[test]
    fn every_problem_at_once_each_with_its_origin() {
        let file = File::parse(
            "control.toml",
            "database_url = \"mysql://db\"\n[limits]\nread_timeout_ms = 0\n[jwt]\n\
             rs256_public_key = \"/nonexistent/key.pem\"\n[webhook]\ndefault_environment = \"Bad Env\"\n",
        )
        .unwrap();
        let e = ControlConfig::resolve(
            Layers::new()
                .file(file)
                .flag("webhook-addr", "nine")
                .env(|n| (n == "VEXIL_REDIS_URL").then(|| "http://r".into())),
        )
        .unwrap_err();
        let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 6, "{e}");
        assert!(lines[0].starts_with("--webhook-addr: \"nine\""), "{e}");
        assert_eq!(
            lines[1],
            "control.toml:1 database_url: mysql://db: expected sqlite://FILE or \
             postgres://USER:PASSWORD@HOST:PORT/DB"
        );
        assert_eq!(
            lines[2],
            "VEXIL_REDIS_URL: http://r: expected redis://HOST:PORT (or rediss://)"
        );
        assert!(
            lines[3].starts_with(
                "control.toml:5 [jwt] rs256_public_key: reading /nonexistent/key.pem: "
            ),
            "{e}"
        );
        assert_eq!(
            lines[4],
            "control.toml:3 [limits] read_timeout_ms: must be at least 1"
        );
        assert_eq!(
            lines[5],
            "control.toml:7 [webhook] default_environment: \"Bad Env\" is not a valid environment key"
        );
    }

    #[test]
    fn print_config_redacts_secrets() {
        let r = vexil_settings::resolve::<ControlConfig>(
            Layers::new()
                .flag("database-url", "postgres://vexil:hunter2@db:5432/vexil")
                .flag("jwt-hs256-secret", "jwt-secret-value")
                .env(|n| (n == "VEXIL_ADMIN_TOKEN").then(|| "vxl_admin_secret".into())),
        )
        .unwrap();
        let text = vexil_settings::print_config(&r.effective, "vexil-control");
        for secret in ["hunter2", "jwt-secret-value", "vxl_admin_secret"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains(
                "database_url = \"postgres://vexil:<redacted>@db:5432/vexil\"  # --database-url"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n[jwt]\nhs256_secret = \"<redacted>\"  # --jwt-hs256-secret\n"),
            "{text}"
        );
        assert!(
            text.contains("\"<redacted>\"  # VEXIL_ADMIN_TOKEN (no file key)"),
            "{text}"
        );
        let jwt = r.settings.jwt_config().unwrap();
        assert_eq!(jwt.hs256_secret.as_deref(), Some("jwt-secret-value"));
        assert_eq!(jwt.role_claim, "vexil_role");
    }
}
