//! Configuration of `vexil-proxy`: built-in defaults, a TOML file (`--config`), `VEXIL_*`
//! environment variables and command-line flags, in rising order of precedence. Each setting is
//! declared once below (flag, variable, file key, default, documentation) and parsed into its type
//! where it enters; the data plane's sections (`[context]`, `[[routes]]`, `[headers]`, ...) are
//! [`DataPlaneConfig`]'s. `docs/configuration.md` renders its tables from these declarations.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use vexil_settings::{
    Layers, Millis, Problems, Resolver, Seconds, Secret, SecretFile, ms, nonzero, not_empty, secs,
};

use crate::dataplane::{DataPlaneConfig, Inbound, Listeners};

/// A port on 127.0.0.1: every listener is loopback-only unless configured otherwise.
const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

vexil_settings::settings! {
    /// The sidecar's configuration.
    #[derive(Clone, Debug)]
    pub struct ProxyConfig {
        group "proxy-source" {
            /// The TOML configuration file; variables and flags override it.
            config: Option<PathBuf>, flag "config", env "VEXIL_CONFIG";
            /// A `--config` file that does not exist is no error (one that exists must be valid).
            /// The injection webhook sets it when it mounts the namespace's optional ConfigMap.
            config_optional: bool, flag "config-optional", env "VEXIL_CONFIG_OPTIONAL";
            /// Control's QUIC sync address: `quic://HOST:PORT` (also `HOST:PORT`,
            /// `quic://[IPv6]:PORT`). `HOST` is also the name checked in control's certificate.
            /// Several replicas: separate them with commas (`quic://a:7443,quic://b:7443`); after
            /// a failed or ended connection the sidecar tries the next one.
            control: Option<ControlAddresses>, flag "control", env "VEXIL_CONTROL", key "control";
            /// QUIC keep-alive interval towards control (milliseconds); below the idle timeout.
            control_keepalive: Duration as Millis = ms(1000), flag "control-keepalive-ms",
                env "VEXIL_CONTROL_KEEPALIVE_MS", key "control_keepalive_ms", check nonzero;
            /// A control silent this long (milliseconds; crashed, paused, partitioned) is
            /// considered gone: the sidecar turns `STALE`, keeps serving and reconnects. The
            /// smaller of both peers' idle timeouts applies.
            control_idle_timeout: Duration as Millis = ms(5000), flag "control-idle-timeout-ms",
                env "VEXIL_CONTROL_IDLE_TIMEOUT_MS", key "control_idle_timeout_ms", check nonzero;
            /// The environment to follow; required with `--control`.
            environment: Option<String>, flag "environment", env "VEXIL_ENVIRONMENT",
                key "environment", check |e: &Option<String>| e.as_deref().map_or(Ok(()), not_empty);
            /// The sidecar token. Prefer `VEXIL_TOKEN` or `--token-file`: flags show in `ps`.
            /// Takes precedence over `--token-file`.
            token: Option<Secret>, flag "token", env "VEXIL_TOKEN";
            /// File whose content (trimmed) is the token, e.g. a mounted Secret. Read once at
            /// start.
            token_file: Option<SecretFile>, flag "token-file", env "VEXIL_TOKEN_FILE",
                key "token_file";
            /// CA certificate(s) (PEM) that control's certificate must chain to; required with
            /// `--control`.
            ca_file: Option<PathBuf>, flag "ca-file", env "VEXIL_CA_FILE", key "ca_file";
            /// Client certificate (PEM), when control requires mutual TLS; goes with
            /// `--client-key`.
            client_cert: Option<PathBuf>, flag "client-cert", env "VEXIL_CLIENT_CERT",
                key "client_cert";
            /// Its private key (PEM).
            client_key: Option<PathBuf>, flag "client-key", env "VEXIL_CLIENT_KEY",
                key "client_key";
            /// This sidecar's id in control's `/api/v1/sidecars`.
            client_id: Option<String>, flag "client-id", env "VEXIL_CLIENT_ID", key "client_id",
                default_doc "`$HOSTNAME/<pid>` (`sidecar/<pid>` without `HOSTNAME`)";
            /// Directory of the persisted snapshot (`snapshot-<environment>.json`); created when
            /// missing.
            state_dir: PathBuf = PathBuf::from("vexil-state"), flag "state-dir",
                env "VEXIL_STATE_DIR", key "state_dir";
            /// Offline mode: serve this flagd flag-set file instead of following control;
            /// reloaded when it changes.
            flags_file: Option<PathBuf>, flag "flags-file", env "VEXIL_FLAGS_FILE",
                key "flags_file";
            /// With `--control`: a flag set served at start when no snapshot is persisted, until
            /// control delivers its own: a flagd document, or a snapshot file as the sidecar
            /// persists it or control exports it (`GET /api/v1/environments/{env}/bootstrap`).
            bootstrap_file: Option<PathBuf>, flag "bootstrap-file", env "VEXIL_BOOTSTRAP_FILE",
                key "bootstrap_file";
            /// Seconds allowed to load a first flag set at start. When none is loaded by then the
            /// sidecar turns ready and serves without flags (state `ERROR`): requests are proxied
            /// without decisions and lookups answer "flag not found", so OpenFeature providers
            /// use the code defaults, until the first snapshot arrives (no restart needed). `0`
            /// waits for ever: not ready until flags are loaded.
            init_timeout: Duration as Seconds = secs(10), flag "init-timeout",
                env "VEXIL_INIT_TIMEOUT", key "init_timeout";
            /// Seconds control may be out of reach (since the last sync, or since start) before
            /// the flag set served is reported `STALE` (`/metrics`, `/debug/snapshot`, flagd
            /// `provider_stale`); it is served all the same.
            stale_grace: Duration as Seconds = secs(30), flag "stale-grace-secs",
                env "VEXIL_STALE_GRACE_SECS", key "stale_grace_secs";
            /// How often the sidecar reports to control how many times it decided each variant of
            /// each flag (seconds; also once at a clean shutdown), when control takes the reports.
            /// `0`: never.
            usage_interval: Duration as Seconds = crate::sync::DEFAULT_USAGE_INTERVAL,
                flag "usage-interval-secs", env "VEXIL_USAGE_INTERVAL_SECS",
                key "usage_interval_secs", default_doc "`60`";
        }
        group "proxy-listeners" {
            /// Outbound HTTP proxy: the application's `HTTP_PROXY`.
            outbound_addr: SocketAddr = loopback(15101), flag "outbound-addr",
                env "VEXIL_OUTBOUND_ADDR", key "outbound_addr";
            /// Inbound mode: a reverse proxy in front of the application (conventionally
            /// `127.0.0.1:15106`); needs `--inbound-upstream`.
            inbound_addr: Option<SocketAddr>, flag "inbound-addr", env "VEXIL_INBOUND_ADDR",
                key "inbound_addr", default_doc "off";
            /// The application's own address behind the inbound listener; needs
            /// `--inbound-addr`.
            inbound_upstream: Option<SocketAddr>, flag "inbound-upstream",
                env "VEXIL_INBOUND_UPSTREAM", key "inbound_upstream";
            /// gRPC `flagd.evaluation.v1` and `v2`.
            grpc_addr: SocketAddr = loopback(8013), flag "grpc-addr", env "VEXIL_GRPC_ADDR",
                key "grpc_addr";
            /// `/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`.
            admin_addr: SocketAddr = loopback(8014), flag "admin-addr", env "VEXIL_ADMIN_ADDR",
                key "admin_addr";
            /// gRPC `flagd.sync.v1` for in-process flagd providers (not control's QUIC address:
            /// that is `--control`).
            sync_addr: SocketAddr = loopback(8015), flag "sync-addr", env "VEXIL_SYNC_ADDR",
                key "sync_addr";
            /// OFREP.
            ofrep_addr: SocketAddr = loopback(8016), flag "ofrep-addr", env "VEXIL_OFREP_ADDR",
                key "ofrep_addr";
            /// Worker threads of the data plane (per listener); at least 1.
            threads: usize = available_cores(), flag "threads", env "VEXIL_THREADS",
                key "threads", default_doc "the cores available", check nonzero;
            /// On SIGTERM or Ctrl-C: seconds to drain open connections and requests.
            shutdown_grace: Duration as Seconds = secs(25), flag "shutdown-grace-secs",
                env "VEXIL_SHUTDOWN_GRACE_SECS", key "shutdown_grace_secs";
        }
        /// The data plane's sections.
        section dataplane in "": DataPlaneConfig;
        /// `[telemetry]`: logs and traces.
        section telemetry in "telemetry": vexil_telemetry::TelemetryConfig;
    }
    validate check_proxy;
}

/// Control's sync addresses as given (`quic://a:7443,quic://b:7443`), each checked where it
/// enters; the sync client takes the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlAddresses(pub String);

impl vexil_settings::Value for ControlAddresses {
    fn from_text(text: &str) -> Result<Self, Problems> {
        crate::sync::parse_controls(text).map_err(|e| Problems::from(e.to_string()))?;
        Ok(ControlAddresses(text.trim().to_string()))
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.0.clone()))
    }
}

/// What no single setting can check: one flag source, complete; pairs that go together.
fn check_proxy(c: &ProxyConfig, r: &mut Resolver<'_>, p: &str) {
    // A value given but refused is reported already: not missing as well.
    let missing = |r: &Resolver<'_>, names: &[&str]| !names.iter().any(|n| r.failed(p, n));
    if c.bootstrap_file.is_some() && c.control.is_none() && missing(r, &["control"]) {
        r.problem(
            p,
            "bootstrap_file",
            "",
            "goes with --control (it stands in for control's flag set at start)",
        );
    }
    match (&c.control, &c.flags_file) {
        (Some(_), Some(_)) => {
            let file = r.location(p, "flags_file");
            r.problem(
                p,
                "control",
                "",
                format!("give either --control or --flags-file ({file}), not both"),
            );
        }
        (None, None) if missing(r, &["control", "flags_file"]) => r.problem(
            p,
            "control",
            "",
            "no flag source: give --control quic://HOST:PORT (with --environment, --token and \
             --ca-file) or --flags-file PATH",
        ),
        (None, _) => {}
        (Some(_), None) => {
            let control = r.location(p, "control");
            if c.environment.is_none() && missing(r, &["environment"]) {
                r.problem(
                    p,
                    "environment",
                    "",
                    format!("required with control ({control})"),
                );
            }
            if c.token.is_none() && c.token_file.is_none() && missing(r, &["token", "token_file"]) {
                r.problem(
                    p,
                    "token",
                    "",
                    format!(
                        "control ({control}) needs a sidecar token: VEXIL_TOKEN, --token or \
                         --token-file"
                    ),
                );
            }
            if c.ca_file.is_none() && missing(r, &["ca_file"]) {
                r.problem(
                    p,
                    "ca_file",
                    "",
                    format!("required with control ({control}): the CA of control's certificate"),
                );
            }
        }
    }
    match (&c.client_cert, &c.client_key) {
        (Some(_), None) if missing(r, &["client_key"]) => {
            r.problem(p, "client_cert", "", "goes with --client-key")
        }
        (None, Some(_)) if missing(r, &["client_cert"]) => {
            r.problem(p, "client_key", "", "goes with --client-cert")
        }
        _ => {}
    }
    if c.control_keepalive >= c.control_idle_timeout {
        let idle = r.location(p, "control_idle_timeout");
        r.problem(
            p,
            "control_keepalive",
            "",
            format!(
                "{} ms must be below --control-idle-timeout-ms ({} ms, {idle})",
                c.control_keepalive.as_millis(),
                c.control_idle_timeout.as_millis()
            ),
        );
    }
    match (c.inbound_addr, c.inbound_upstream) {
        (Some(_), None) if missing(r, &["inbound_upstream"]) => r.problem(
            p,
            "inbound_addr",
            "",
            "needs --inbound-upstream (the application's address)",
        ),
        (None, Some(_)) if missing(r, &["inbound_addr"]) => {
            r.problem(p, "inbound_upstream", "", "needs --inbound-addr")
        }
        _ => {}
    }
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
    /// `quic://HOST:PORT`, comma-separated.
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
    /// Usage report interval (`None`: no reports).
    pub usage_interval: Option<Duration>,
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

impl ProxyConfig {
    /// Resolves the configuration from `layers` (the file its `config` setting names included):
    /// the configuration, or every problem found.
    pub fn resolve(layers: Layers) -> Result<ProxyConfig, Problems> {
        vexil_settings::resolve(layers).map(|r| r.settings)
    }

    /// Where flags come from: control with its companions, or a file. Fails only for a
    /// configuration built in code that resolution would have refused.
    pub fn source(&self) -> anyhow::Result<FlagSource> {
        let Some(control) = &self.control else {
            let file = self.flags_file.clone();
            return file
                .map(FlagSource::File)
                .ok_or_else(|| anyhow::anyhow!("no flag source: --control or --flags-file"));
        };
        let missing = |what: &str| anyhow::anyhow!("--control needs {what}");
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.expose(),
            (None, Some(file)) => file.secret.expose(),
            (None, None) => return Err(missing("a token")),
        };
        Ok(FlagSource::Control(ControlSource {
            url: control.0.clone(),
            environment: self
                .environment
                .clone()
                .ok_or_else(|| missing("--environment"))?,
            token: token.to_string(),
            ca_file: self.ca_file.clone().ok_or_else(|| missing("--ca-file"))?,
            client_cert: self.client_cert.clone().zip(self.client_key.clone()),
            client_id: self.client_id.clone(),
            keep_alive: self.control_keepalive,
            idle_timeout: self.control_idle_timeout,
            usage_interval: (!self.usage_interval.is_zero()).then_some(self.usage_interval),
        }))
    }

    /// The start policy: the init timeout (`0`: none, wait for ever) and the stale grace period.
    pub fn start_policy(&self) -> crate::lifecycle::StartPolicy {
        crate::lifecycle::StartPolicy {
            init_timeout: (!self.init_timeout.is_zero()).then_some(self.init_timeout),
            stale_grace: self.stale_grace,
        }
    }

    /// The data plane's listeners: outbound, and inbound mode when both of its addresses are set.
    pub fn listeners(&self) -> Listeners {
        Listeners {
            outbound: self.outbound_addr,
            inbound: self
                .inbound_addr
                .zip(self.inbound_upstream)
                .map(|(addr, upstream)| Inbound { addr, upstream }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vexil_settings::File;

    fn offline() -> Layers {
        Layers::new().flag("flags-file", "flags.json")
    }

    fn err(layers: Layers) -> String {
        ProxyConfig::resolve(layers).unwrap_err().to_string()
    }

    fn control_source(c: &ProxyConfig) -> ControlSource {
        match c.source().unwrap() {
            FlagSource::Control(source) => source,
            other => panic!("control mode: {other:?}"),
        }
    }

    #[test]
    fn defaults_bind_loopback() {
        let c = ProxyConfig::resolve(offline()).unwrap();
        let addrs = [
            c.outbound_addr,
            c.grpc_addr,
            c.admin_addr,
            c.sync_addr,
            c.ofrep_addr,
        ];
        for addr in addrs {
            assert!(addr.ip().is_loopback(), "{addr}");
        }
        assert_eq!(addrs.map(|a| a.port()), [15101, 8013, 8014, 8015, 8016]);
        assert!(c.listeners().inbound.is_none());
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert!(matches!(c.source().unwrap(), FlagSource::File(p) if p == Path::new("flags.json")));
        let policy = c.start_policy();
        assert_eq!(policy.init_timeout, Some(Duration::from_secs(10)));
        assert_eq!(policy.stale_grace, Duration::from_secs(30));
    }

    #[test]
    fn the_start_policy_and_the_bootstrap_file() {
        let c = ProxyConfig::resolve(offline().flag("init-timeout", "0")).unwrap();
        assert_eq!(c.start_policy().init_timeout, None, "0 waits for ever");
        let e = err(offline().flag("bootstrap-file", "b.json"));
        assert_eq!(
            e,
            "--bootstrap-file: goes with --control (it stands in for control's flag set at start)"
        );
        let c = ProxyConfig::resolve(
            Layers::new()
                .flag("control", "quic://c:7443")
                .flag("environment", "prod")
                .flag("token", "vxl_x")
                .flag("ca-file", "ca.pem")
                .flag("bootstrap-file", "b.json")
                .flag("stale-grace-secs", "5"),
        )
        .unwrap();
        assert_eq!(c.bootstrap_file.as_deref(), Some(Path::new("b.json")));
        assert_eq!(c.start_policy().stale_grace, Duration::from_secs(5));
    }

    #[test]
    fn the_source_must_be_complete_and_unique() {
        let both = offline().flag("control", "quic://c:7443");
        assert!(err(both).contains("not both"));
        assert!(err(Layers::new()).contains("no flag source"));
        let partial = || {
            Layers::new()
                .flag("control", "quic://c:7443")
                .flag("environment", "prod")
        };
        let e = err(partial());
        assert!(e.contains("token"), "{e}");
        assert!(
            e.contains("--ca-file: required with control (--control)"),
            "{e}"
        );
        let full = || partial().flag("token", "vxl_x").flag("ca-file", "ca.pem");
        let c = ProxyConfig::resolve(full()).unwrap();
        let source = control_source(&c);
        assert_eq!(source.keep_alive, Duration::from_secs(1));
        assert_eq!(source.idle_timeout, Duration::from_secs(5));
        assert_eq!(source.token, "vxl_x");
        assert!(
            !format!("{c:?} {source:?}").contains("vxl_x"),
            "the token is never printed"
        );
        // Several replicas; short keep-alive windows.
        let replicas = || {
            Layers::new()
                .flag("control", "quic://a:7443,quic://b:7443")
                .flag("environment", "prod")
                .flag("token", "vxl_x")
                .flag("ca-file", "ca.pem")
                .flag("control-idle-timeout-ms", "2000")
        };
        let c = ProxyConfig::resolve(replicas().flag("control-keepalive-ms", "250")).unwrap();
        assert_eq!(control_source(&c).idle_timeout, Duration::from_secs(2));
        let e = err(replicas().flag("control-keepalive-ms", "3000"));
        assert_eq!(
            e,
            "--control-keepalive-ms: 3000 ms must be below --control-idle-timeout-ms (2000 ms, \
             --control-idle-timeout-ms)"
        );
        let e = err(full().flag("control", "quic://a:7443,b"));
        assert!(e.starts_with("--control: "), "{e}");
    }

    #[test]
    fn the_token_file_is_read_where_it_enters() {
        let dir = std::env::temp_dir().join(format!("vexil-proxy-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "vxl_from_file\n").unwrap();
        let layers = |file: &Path| {
            Layers::new()
                .flag("control", "quic://c:7443")
                .flag("environment", "prod")
                .flag("ca-file", "ca.pem")
                .env({
                    let file = file.display().to_string();
                    move |name| (name == "VEXIL_TOKEN_FILE").then(|| file.clone())
                })
        };
        let c = ProxyConfig::resolve(layers(&token)).unwrap();
        assert_eq!(control_source(&c).token, "vxl_from_file");
        let e = err(layers(&dir.join("missing")));
        assert!(e.starts_with("VEXIL_TOKEN_FILE: reading "), "{e}");
        std::fs::write(&token, " \n").unwrap();
        let e = err(layers(&token));
        assert!(
            e.starts_with("VEXIL_TOKEN_FILE: the file ") && e.ends_with(" is empty"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "not also called missing: {e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_optional_config_file_may_be_missing_but_not_broken() {
        let missing = "/nonexistent/vexil/proxy.toml";
        let e = err(offline().flag("config", missing));
        assert!(e.contains("cannot read"), "{e}");
        let c = ProxyConfig::resolve(
            offline()
                .flag("config", missing)
                .flag("config-optional", "true"),
        )
        .unwrap();
        assert!(c.config_optional);
        let dir = vexil_testkit::TempDir::new("config-optional");
        let broken = dir.path().join("proxy.toml");
        std::fs::write(&broken, "outbound_addr = 12\n").unwrap();
        let e = err(offline()
            .flag("config", broken.display().to_string())
            .flag("config-optional", "true"));
        assert!(
            e.contains("proxy.toml:1") && e.contains("outbound_addr"),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/proxy.toml");
        let c = ProxyConfig::resolve(offline().flag("config", path.display().to_string())).unwrap();
        assert!(c.dataplane.context.contains_key("targetingKey"));
        assert_eq!(c.config.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn file_errors_name_the_key_and_routes_come_from_json() {
        let file = File::parse("proxy.toml", "grpc_adr = \"127.0.0.1:1\"\n").unwrap();
        let e = err(offline().file(file));
        assert_eq!(
            e,
            "proxy.toml:1 grpc_adr: unknown key (did you mean \"grpc_addr\"?)"
        );
        let c = ProxyConfig::resolve(
            offline().flag("routes", r#"[{"host": "backend", "flags": ["a", "b"]}]"#),
        )
        .unwrap();
        assert_eq!(c.dataplane.routes.len(), 1);
        assert!(err(offline().flag("routes", "[{")).starts_with("--routes: invalid JSON"));
        let e = err(offline().env(|n| (n == "VEXIL_ROUTES").then(|| "[{\"hots\": 1}]".into())));
        assert_eq!(
            e,
            "VEXIL_ROUTES [0].hots: unknown key (did you mean \"host\"?)"
        );
    }

    #[test]
    fn every_problem_at_once_each_with_its_origin() {
        let file = File::parse(
            "bad.toml",
            "threads = 0\n[context]\ntargetingKey = [\"header:x-user\", \"hedaer:x-user\"]\n",
        )
        .unwrap();
        let e = err(offline()
            .file(file)
            .flag("outbound-addr", "x")
            .env(|n| (n == "VEXIL_GRPC_ADDR").then(|| "127.0.0.1".into())));
        assert_eq!(
            e.lines().collect::<Vec<_>>(),
            [
                "--outbound-addr: invalid socket address \"x\" (expected IP:PORT, like \
                 127.0.0.1:8080)",
                "VEXIL_GRPC_ADDR: invalid socket address \"127.0.0.1\" (expected IP:PORT, like \
                 127.0.0.1:8080)",
                "bad.toml:1 threads: must be at least 1",
                "bad.toml:3 [context] targetingKey[1]: unknown source \"hedaer:x-user\" (expected \
                 header:NAME, cookie:NAME, query:NAME, jwt:CLAIM, baggage:KEY, \
                 request:method|path|host|scheme, peer:ip or static:VALUE)",
            ]
        );
    }

    #[test]
    fn print_config_redacts_the_token() {
        let r = vexil_settings::resolve::<ProxyConfig>(
            Layers::new()
                .flag("control", "quic://c:7443")
                .flag("environment", "prod")
                .flag("ca-file", "ca.pem")
                .env(|n| (n == "VEXIL_TOKEN").then(|| "vxl_very_secret".into())),
        )
        .unwrap();
        let text = vexil_settings::print_config(&r.effective, "vexil-proxy");
        assert!(!text.contains("vxl_very_secret"), "{text}");
        assert!(text.contains("\"<redacted>\"  # VEXIL_TOKEN"), "{text}");
        assert!(
            text.contains("control = \"quic://c:7443\"  # --control\n"),
            "{text}"
        );
        assert!(
            text.contains("outbound_addr = \"127.0.0.1:15101\"  # default\n"),
            "{text}"
        );
        assert!(
            text.contains("\n[headers]\nmax_bytes = 8192  # default\n"),
            "{text}"
        );
    }

    #[test]
    fn inbound_needs_its_upstream() {
        let e = err(offline().flag("inbound-addr", "127.0.0.1:15106"));
        assert_eq!(
            e,
            "--inbound-addr: needs --inbound-upstream (the application's address)"
        );
        let c = ProxyConfig::resolve(
            offline()
                .flag("inbound-addr", "127.0.0.1:15106")
                .flag("inbound-upstream", "127.0.0.1:8080"),
        )
        .unwrap();
        assert_eq!(c.listeners().inbound.unwrap().upstream.port(), 8080);
    }
}
