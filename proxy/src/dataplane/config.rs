//! The data plane's configuration: the `proxy.toml` sections that say how a request becomes an
//! evaluation context, which flags each route injects, which headers carry them, whom inbound mode
//! trusts and how long upstreams may take.
//!
//! The sections are `[context]`, `[context_options]`, `[[routes]]`, `[headers]`, `[inbound]` and
//! `[upstream]` ([`SECTIONS`]). Every field has a default, so an empty file is a valid
//! configuration (inject every flag, context from nothing). Unknown keys are refused, and every
//! problem is reported with the field it concerns, e.g. `context.country[1]: unknown source
//! "hedaer:x"`.
//!
//! The binary owns the rest of `proxy.toml`. [`DataPlaneConfig::take_from_table`] removes the data
//! plane's sections from a parsed file and deserializes them strictly, so the binary can then
//! deserialize what is left with its own `deny_unknown_fields` (serde cannot combine `flatten` with
//! `deny_unknown_fields`).
//!
//! See `config/proxy.toml` for an example with every option commented.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The top-level `proxy.toml` keys the data plane owns.
pub const SECTIONS: &[&str] = &[
    "context",
    "context_options",
    "routes",
    "headers",
    "inbound",
    "upstream",
    "downstream",
];

/// The data plane's part of `proxy.toml`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataPlaneConfig {
    /// `[context]`: evaluation-context attribute → its sources, first present wins
    /// (`targetingKey = ["header:x-user-id", "cookie:uid", "jwt:sub"]`).
    pub context: BTreeMap<String, Vec<String>>,
    /// `[context_options]`: limits and JWT verification for the context sources.
    pub context_options: ContextOptions,
    /// `[[routes]]`: which flags a request gets, by host and path; none means every flag.
    pub routes: Vec<RouteConfig>,
    /// `[headers]`: which headers carry the decisions, and the byte limit.
    pub headers: HeadersConfig,
    /// `[inbound]`: inbound mode's trusted peers.
    pub inbound: InboundConfig,
    /// `[upstream]`: timeouts and connection pooling towards upstreams.
    pub upstream: UpstreamConfig,
    /// `[downstream]`: the application's connections to the sidecar.
    pub downstream: DownstreamConfig,
}

/// `[context_options]`: limits and JWT verification.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ContextOptions {
    /// Most attributes `[context]` may define (default 64).
    pub max_attributes: usize,
    /// A source value longer than this (bytes) is treated as absent, so the next source is tried.
    pub max_value_bytes: usize,
    /// Verify `jwt:` claims (default). With `false`, bearer tokens are decoded **without** checking
    /// their signature: anyone can then choose their own claims. Only for development, or behind a
    /// gateway that already verified the token.
    pub jwt_verify: bool,
    /// HS256 shared secret.
    pub jwt_hs256_secret: Option<String>,
    /// RS256 public key, a PEM file with a `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY`
    /// (PKCS#1) block.
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`): RSA (RS256), EC P-256 (ES256) and `oct` (HS256) keys,
    /// chosen by `kid`.
    pub jwt_jwks_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
    pub jwt_leeway_secs: u64,
    /// A bearer token longer than this (bytes) is ignored.
    pub jwt_max_bytes: usize,
    // vexil-jwt options (docs/configuration.md, `[context_options]`)
    /// A file holding the HS256 secret.
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// ES256 public key, a PEM file with a `PUBLIC KEY` block (EC P-256).
    pub jwt_es256_public_key: Option<PathBuf>,
    /// A JWKS URL (`http://` or `https://`), fetched at start and every `jwt_jwks_refresh_secs`.
    pub jwt_jwks_url: Option<String>,
    /// Reload interval of `jwt_jwks_file` / `jwt_jwks_url` (seconds; 0: only at start).
    pub jwt_jwks_refresh_secs: u64,
    /// CA certificates (PEM) trusted for an `https` `jwt_jwks_url` instead of the public roots.
    pub jwt_jwks_ca_file: Option<PathBuf>,
    /// Refuse tokens without `exp`.
    pub jwt_require_exp: bool,
    /// When not empty, `aud` must name one of these.
    pub jwt_audiences: Vec<String>,
    /// When not empty, `iss` must be one of these.
    pub jwt_issuers: Vec<String>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            max_attributes: 64,
            max_value_bytes: 1024,
            jwt_verify: true,
            jwt_hs256_secret: None,
            jwt_rs256_public_key: None,
            jwt_jwks_file: None,
            jwt_leeway_secs: 30,
            jwt_max_bytes: 8192,
            jwt_hs256_secret_file: None,
            jwt_es256_public_key: None,
            jwt_jwks_url: None,
            jwt_jwks_refresh_secs: 300,
            jwt_jwks_ca_file: None,
            jwt_require_exp: true,
            jwt_audiences: Vec::new(),
            jwt_issuers: Vec::new(),
        }
    }
}

/// One `[[routes]]` entry. A request takes the first route whose `host` and `path_prefix` both
/// match; when routes are configured and none matches, nothing is injected (add a route with
/// neither to catch the rest).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// The request's host (without port), exact (`api.internal`) or a suffix (`*.internal`);
    /// absent matches any host.
    pub host: Option<String>,
    /// A path prefix (`/checkout`); absent matches any path.
    pub path_prefix: Option<String>,
    /// The flag keys to inject, in this order. Keys missing from the current flag set are skipped.
    pub flags: Option<Vec<String>>,
    /// Every flag whose metadata (the set's, overlaid with the flag's) has all these values.
    pub metadata: Option<Map<String, Value>>,
    /// Replace decisions already present on the request (`vexil-flags`) instead of keeping them.
    #[serde(rename = "override")]
    pub override_existing: bool,
}

/// `[headers]`: the headers that carry decisions.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    /// Byte limit of the `vexil-flags` value (default 8 KiB). Members that do not fit are left
    /// out whole and counted, never cut.
    pub max_bytes: usize,
    /// Also send one header per decision: `<per_flag_prefix><key>: <value>`.
    pub per_flag: bool,
    /// Prefix of the per-flag headers.
    pub per_flag_prefix: String,
    /// Also add W3C `baggage` members `<baggage_prefix><key>=<value>`.
    pub baggage: bool,
    /// Prefix of the baggage member keys.
    pub baggage_prefix: String,
    /// Send `vexil-revision: <environment>@<revision>`.
    pub revision: bool,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            max_bytes: 8192,
            per_flag: false,
            per_flag_prefix: "vexil-flag-".into(),
            baggage: false,
            baggage_prefix: "vexil.".into(),
            revision: true,
        }
    }
}

/// `[inbound]`: whose `vexil-*` headers inbound mode believes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// Peers (CIDRs such as `10.0.0.0/8`, or single addresses) whose `vexil-*` headers are kept;
    /// from everyone else they are stripped before injection. Empty (default): trust nobody.
    pub trusted_cidrs: Vec<String>,
}

/// `[upstream]`: timeouts and pooling.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Connecting (including name resolution) may take this long; then 504 (milliseconds).
    pub connect_timeout_ms: u64,
    /// Longest wait for each read from an upstream; then 504 (milliseconds).
    pub read_timeout_ms: u64,
    /// A pooled idle upstream connection is closed after this long (milliseconds).
    pub idle_timeout_ms: u64,
    /// Idle upstream connections kept for reuse (per process).
    pub pool_size: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 2_000,
            read_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            pool_size: 128,
        }
    }
}

/// `[downstream]`: the connections the application opens to the sidecar's listeners.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamConfig {
    /// A keep-alive connection with no request for this long is closed (milliseconds, rounded
    /// up to whole seconds). Each open connection holds tens of KiB of buffers in the sidecar, so
    /// connections an application opened in a burst must not stay open for ever.
    pub idle_timeout_ms: u64,
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        DownstreamConfig {
            idle_timeout_ms: 60_000,
        }
    }
}

impl DownstreamConfig {
    /// The idle timeout in whole seconds (at least 1), as pingora takes it.
    pub fn idle_timeout_secs(&self) -> u64 {
        self.idle_timeout_ms.div_ceil(1000).max(1)
    }
}

/// Every problem found in a configuration, each naming its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// `field: message` lines.
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(field: impl fmt::Display, message: impl fmt::Display) -> Self {
        ConfigError {
            problems: vec![format!("{field}: {message}")],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while validating.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{field}: {message}"));
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}

impl DataPlaneConfig {
    /// Parses a TOML document holding only data-plane sections, then validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::one("proxy.toml", e.message()))?;
        Self::from_table(table)
    }

    /// Removes the data plane's [`SECTIONS`] from a parsed `proxy.toml` and deserializes them
    /// (strictly, then validated); what remains in `table` is the binary's.
    pub fn take_from_table(table: &mut toml::Table) -> Result<Self, ConfigError> {
        let mut ours = toml::Table::new();
        for section in SECTIONS {
            if let Some(v) = table.remove(*section) {
                ours.insert((*section).to_string(), v);
            }
        }
        Self::from_table(ours)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: DataPlaneConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "proxy.toml".into()
            } else {
                path
            };
            ConfigError::one(field, e.into_inner().message())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field (sources, routes, header options, CIDRs, limits) without reading key
    /// files; [`crate::dataplane::start`] also loads the JWT keys and reports unreadable ones.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.check_context(&mut p);
        for (i, route) in self.routes.iter().enumerate() {
            check_route(&format!("routes[{i}]"), route, &mut p);
        }
        self.check_headers(&mut p);
        for (i, cidr) in self.inbound.trusted_cidrs.iter().enumerate() {
            if let Err(e) = Cidr::parse(cidr) {
                p.add(format_args!("inbound.trusted_cidrs[{i}]"), e);
            }
        }
        self.check_upstream(&mut p);
        p.finish(())
    }

    fn check_context(&self, p: &mut Problems) {
        let opts = &self.context_options;
        if self.context.len() > opts.max_attributes {
            p.add(
                "context",
                format_args!(
                    "{} attributes; at most context_options.max_attributes = {} are allowed",
                    self.context.len(),
                    opts.max_attributes
                ),
            );
        }
        if opts.max_value_bytes == 0 {
            p.add("context_options.max_value_bytes", "must be at least 1");
        }
        let mut uses_jwt = false;
        for (attr, sources) in &self.context {
            if attr.is_empty() || attr.len() > 256 {
                p.add(
                    format_args!("context.{attr:?}"),
                    "an attribute name has 1 to 256 bytes",
                );
            }
            if sources.is_empty() {
                p.add(format_args!("context.{attr}"), "lists no source");
            }
            for (i, source) in sources.iter().enumerate() {
                match crate::dataplane::context::Source::parse(source) {
                    Ok(s) => uses_jwt |= s.is_jwt(),
                    Err(e) => p.add(format_args!("context.{attr}[{i}]"), e),
                }
            }
        }
        let has_key = opts.jwt_hs256_secret.is_some()
            || opts.jwt_rs256_public_key.is_some()
            || opts.jwt_jwks_file.is_some()
            || opts.jwt_hs256_secret_file.is_some()
            || opts.jwt_es256_public_key.is_some()
            || opts.jwt_jwks_url.is_some();
        if uses_jwt && opts.jwt_verify && !has_key {
            p.add(
                "context_options.jwt_verify",
                "jwt: sources need a key to verify tokens: set jwt_hs256_secret, \
                 jwt_hs256_secret_file, jwt_rs256_public_key, jwt_es256_public_key, jwt_jwks_file \
                 or jwt_jwks_url (or jwt_verify = false to read claims unverified)",
            );
        }
        if opts.jwt_hs256_secret.as_ref().is_some_and(String::is_empty) {
            p.add("context_options.jwt_hs256_secret", "must not be empty");
        }
    }

    fn check_headers(&self, p: &mut Problems) {
        let h = &self.headers;
        if !(64..=65_536).contains(&h.max_bytes) {
            p.add("headers.max_bytes", "must be between 64 and 65536");
        }
        if h.per_flag_prefix.is_empty()
            || !h
                .per_flag_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            p.add(
                "headers.per_flag_prefix",
                "lowercase letters, digits, '-' and '_' only (a header-name prefix)",
            );
        }
        if h.baggage_prefix.is_empty() || !h.baggage_prefix.bytes().all(is_tchar) {
            p.add(
                "headers.baggage_prefix",
                "must be a non-empty HTTP token (a baggage key prefix)",
            );
        }
    }

    fn check_upstream(&self, p: &mut Problems) {
        let u = &self.upstream;
        for (name, v) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.read_timeout_ms", u.read_timeout_ms),
            ("upstream.idle_timeout_ms", u.idle_timeout_ms),
            (
                "downstream.idle_timeout_ms",
                self.downstream.idle_timeout_ms,
            ),
        ] {
            if v == 0 {
                p.add(name, "must be at least 1");
            }
        }
    }
}

fn check_route(field: &str, route: &RouteConfig, p: &mut Problems) {
    if let Some(host) = &route.host
        && let Err(e) = HostPattern::parse(host)
    {
        p.add(format_args!("{field}.host"), e);
    }
    if let Some(prefix) = &route.path_prefix
        && !prefix.starts_with('/')
    {
        p.add(format_args!("{field}.path_prefix"), "must start with '/'");
    }
    if route.flags.is_some() && route.metadata.is_some() {
        p.add(field, "set either flags or metadata, not both");
    }
    for (i, key) in route.flags.iter().flatten().enumerate() {
        if let Some(problem) = vexil_engine::header_key_problem(key) {
            p.add(format_args!("{field}.flags[{i}]"), problem);
        }
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A route's host match: exact, or a `*.suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

impl HostPattern {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        match lower.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostPattern::Suffix(format!(".{rest}").into())),
            None if valid(&lower) || lower.parse::<IpAddr>().is_ok() => {
                Ok(HostPattern::Exact(lower.into()))
            }
            _ => Err(format!(
                "{s:?} is not a host name (without port) or a \"*.suffix\" pattern"
            )),
        }
    }

    /// `host` is lowercase, without port.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.as_ref() == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_ref()),
        }
    }
}

/// An address range (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a single address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a CIDR (like 10.0.0.0/8 or fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }

    /// True when `ip` is inside the range (an IPv4-mapped IPv6 peer counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(n)), 32, self.prefix)
                    == masked(u128::from(u32::from(a)), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let host_bits = width - u32::from(prefix);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        DataPlaneConfig::from_toml_str(text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = DataPlaneConfig::from_toml_str("").unwrap();
        assert_eq!(c, DataPlaneConfig::default());
        assert_eq!(c.headers.max_bytes, 8192);
        assert_eq!(c.context_options.max_attributes, 64);
        assert!(c.context_options.jwt_verify);
    }

    #[test]
    fn full_example_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/proxy.toml"))
                .unwrap();
        let mut table: toml::Table = text.parse().unwrap();
        let c = DataPlaneConfig::take_from_table(&mut table).unwrap();
        assert!(c.context.contains_key("targetingKey"));
        for s in SECTIONS {
            assert!(!table.contains_key(*s), "{s} left behind");
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err("[context]\ncountry = [\"header:x-country\", \"hedaer:x\"]"),
            "context.country[1]: unknown source \"hedaer:x\" (expected header:NAME, cookie:NAME, \
             query:NAME, jwt:CLAIM, baggage:KEY, request:method|path|host|scheme, peer:ip or \
             static:VALUE)"
        );
        assert!(
            err("[headers]\nmax_byte = 3")
                .starts_with("headers.max_byte: unknown field `max_byte`")
        );
        assert!(
            err("[headers]\nmax_bytes = \"big\"").starts_with("headers.max_bytes: invalid type")
        );
        assert!(
            err("[inbound]\ntrusted_cidrs = [\"10.0.0.0/33\"]")
                .starts_with("inbound.trusted_cidrs[0]: ")
        );
        assert!(err("[[routes]]\nflags = [\"Bad\"]").starts_with("routes[0].flags[0]: "));
        assert!(err("[[routes]]\nhost = \"a b\"").starts_with("routes[0].host: "));
        assert!(
            err("[[routes]]\nflags = [\"a\"]\nmetadata = {team = \"x\"}")
                .starts_with("routes[0]: set either")
        );
        assert!(err("[context]\nsub = [\"jwt:sub\"]").starts_with("context_options.jwt_verify: "));
        assert!(err("[context]\nx = [\"request:body\"]").starts_with("context.x[0]: "));
        assert!(err("[context]\nx = [\"header:bad header\"]").starts_with("context.x[0]: "));
    }

    #[test]
    fn unverified_jwt_must_be_explicit() {
        let ok = "[context]\nsub = [\"jwt:sub\"]\n[context_options]\njwt_verify = false";
        assert!(DataPlaneConfig::from_toml_str(ok).is_ok());
        let keyed = "[context]\nsub = [\"jwt:sub\"]\n[context_options]\njwt_hs256_secret = \"s\"";
        assert!(DataPlaneConfig::from_toml_str(keyed).is_ok());
    }

    #[test]
    fn too_many_attributes() {
        let mut text = String::from("[context]\n");
        for i in 0..65 {
            text.push_str(&format!("a{i} = [\"static:x\"]\n"));
        }
        assert!(err(&text).starts_with("context: 65 attributes"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/129").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.internal").unwrap();
        assert!(exact.matches("api.internal"));
        assert!(!exact.matches("x.api.internal"));
        let suffix = HostPattern::parse("*.internal").unwrap();
        assert!(suffix.matches("api.internal"));
        assert!(!suffix.matches("internal"));
        assert!(HostPattern::parse("127.0.0.1").is_ok());
        assert!(HostPattern::parse("a:80").is_err());
    }
}
