//! The data plane's configuration: the `proxy.toml` sections that say how a request becomes an
//! evaluation context, which flags each route injects, which headers carry them, whom inbound mode
//! trusts and how long upstreams may take.
//!
//! The sections are `[context]`, `[context_options]`, `[[routes]]`, `[headers]`, `[inbound]`,
//! `[upstream]` and `[downstream]`, declared here with `vexil-settings` (each key once, with its
//! default and documentation) and part of the sidecar's configuration
//! ([`crate::config::ProxyConfig`]). Every key has a default, so an empty file is a valid
//! configuration (inject every flag, context from nothing). Values are parsed into their types
//! where they enter: a context source is a [`ContextSource`], a trusted peer a [`Cidr`], a route's
//! host a [`HostPattern`], a timeout a `Duration`. Unknown keys are refused, and every problem is
//! reported with the key and where its value came from, e.g. `proxy.toml:12 [context]
//! targetingKey[1]: unknown source "hedaer:x-user"`.
//!
//! This module depends on nothing else of the data plane: context extraction and JWT verification
//! consume these types.
//!
//! See `config/proxy.toml` for an example with every option commented.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use serde_json::{Map, Value as Json};
use vexil_settings::{
    File, Layers, Millis, Problems, Resolver, Seconds, Secret, between, join_key, ms, nonzero, secs,
};

vexil_settings::settings! {
    /// The data plane's part of `proxy.toml`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct DataPlaneConfig {
        group "dataplane" {
            /// `[context]`: each evaluation-context attribute and its sources, the first present
            /// on the request giving the value (`targetingKey = ["header:x-user-id", "jwt:sub"]`).
            context: BTreeMap<String, Vec<ContextSource>>, key "context",
                default_doc "none (an empty context)";
            /// `[[routes]]`: which flags a request gets, by host and path (none: every flag). As
            /// a flag or variable, a JSON array of objects shaped like `[[routes]]` entries (e.g.
            /// `[{"host": "backend", "flags": ["a", "b"]}]`, from the `vexil.io/routes` pod
            /// annotation), replacing the file's.
            routes: Vec<RouteConfig>, flag "routes", env "VEXIL_ROUTES", key "routes",
                default_doc "none (every flag)";
        }
        /// `[context_options]`: limits and JWT verification for the context sources.
        section context_options in "context_options": ContextOptions;
        /// `[headers]`: which headers carry the decisions, and the byte limit.
        section headers in "headers": HeadersConfig;
        /// `[inbound]`: inbound mode's trusted peers.
        section inbound in "inbound": InboundConfig;
        /// `[upstream]`: timeouts and connection pooling towards upstreams.
        section upstream in "upstream": UpstreamConfig;
        /// `[downstream]`: the application's connections to the sidecar.
        section downstream in "downstream": DownstreamConfig;
        /// `[cache]`: the decision cache.
        section cache in "cache": CacheConfig;
    }
    validate check_dataplane;
}

vexil_settings::settings! {
    /// `[context_options]`: limits and JWT verification.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ContextOptions {
        group "context_options" {
            /// Most attributes `[context]` may define.
            max_attributes: usize = 64, key "max_attributes";
            /// A source value longer than this (bytes) counts as absent, so the next source is
            /// tried; at least 1.
            max_value_bytes: usize = 1024, key "max_value_bytes", check nonzero;
            /// Verify `jwt:` tokens. `false` decodes claims **without** checking the signature
            /// (anyone can pick their claims): only for development, or behind a gateway that
            /// already verified the token.
            jwt_verify: bool = true, key "jwt_verify";
            /// HS256 shared secret; not empty.
            jwt_hs256_secret: Option<Secret>, key "jwt_hs256_secret";
            /// The HS256 secret read from this file (without a final newline).
            jwt_hs256_secret_file: Option<PathBuf>, key "jwt_hs256_secret_file";
            /// RS256 public key: a PEM file with a `PUBLIC KEY` (SubjectPublicKeyInfo) or
            /// `RSA PUBLIC KEY` (PKCS#1) block.
            jwt_rs256_public_key: Option<PathBuf>, key "jwt_rs256_public_key";
            /// ES256 public key: a PEM file with a `PUBLIC KEY` block of an EC P-256 key.
            jwt_es256_public_key: Option<PathBuf>, key "jwt_es256_public_key";
            /// A JWKS file (`{"keys": [...]}`): RSA (RS256), EC P-256 (ES256) and `oct` (HS256)
            /// keys, chosen by `kid`; other keys are skipped.
            jwt_jwks_file: Option<PathBuf>, key "jwt_jwks_file";
            /// A JWKS URL (`https://`, or `http://` on a trusted network only: a warning is
            /// logged), fetched at start (the sidecar does not start when it fails) and then every
            /// `jwt_jwks_refresh_secs`; a failed refresh keeps the last good keys.
            jwt_jwks_url: Option<String>, key "jwt_jwks_url";
            /// How often `jwt_jwks_file` and `jwt_jwks_url` are read again (seconds; 0: only at
            /// start).
            jwt_jwks_refresh: Duration as Seconds = secs(300), key "jwt_jwks_refresh_secs";
            /// For an `https` `jwt_jwks_url`: trust only the CA certificates of this PEM file
            /// (default: the public web roots).
            jwt_jwks_ca_file: Option<PathBuf>, key "jwt_jwks_ca_file";
            /// Clock skew tolerated on `exp`, `nbf` and `iat` (seconds).
            jwt_leeway: Duration as Seconds = secs(30), key "jwt_leeway_secs";
            /// Ignore tokens without `exp`.
            jwt_require_exp: bool = true, key "jwt_require_exp";
            /// When not empty, a token's `aud` (a string or an array of strings) must name one of
            /// these.
            jwt_audiences: Vec<String>, key "jwt_audiences", default_doc "none (not checked)";
            /// When not empty, a token's `iss` must be one of these.
            jwt_issuers: Vec<String>, key "jwt_issuers", default_doc "none (not checked)";
            /// A longer bearer token (bytes) is ignored.
            jwt_max_bytes: usize = 8192, key "jwt_max_bytes";
        }
    }
}

vexil_settings::settings! {
    /// One `[[routes]]` entry. A request takes the first route whose `host` and `path_prefix` both
    /// match; when routes are configured and none matches, nothing is injected (add a route with
    /// neither to catch the rest).
    #[derive(Clone, Debug, PartialEq)]
    pub struct RouteConfig {
        group "route" {
            /// The request's host without port: exact (`api.internal`, or an IP address) or a
            /// suffix (`*.payments.internal`, which does not match `payments.internal` itself).
            host: Option<HostPattern>, key "host", default_doc "any";
            /// A path prefix; starts with `/`.
            path_prefix: Option<String>, key "path_prefix", default_doc "any",
                check path_prefix;
            /// Flag keys to inject, in this order; keys missing from the flag set are skipped.
            flags: Option<Vec<String>>, key "flags", default_doc "all";
            /// Instead of `flags`: every flag whose metadata (the set's overlaid with the flag's)
            /// has all these values, e.g. `{ team = "search" }`.
            metadata: Option<Map<String, Json>>, key "metadata";
            /// Replace decisions already present on the request (`vexil-flags`) instead of
            /// keeping them.
            override_existing: bool, key "override";
        }
    }
    validate check_route;
}

vexil_settings::settings! {
    /// `[headers]`: the headers that carry decisions.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct HeadersConfig {
        group "headers" {
            /// Byte limit of the `vexil-flags` value, 64 to 65536. Decisions that do not fit are
            /// left out whole and counted, never cut.
            max_bytes: usize = 8192, key "max_bytes", check between(64, 65_536);
            /// Also send one header per decision: `<per_flag_prefix><key>: <value>`.
            per_flag: bool, key "per_flag";
            /// Prefix of the per-flag headers: lowercase letters, digits, `-` and `_`.
            per_flag_prefix: String = "vexil-flag-".into(), key "per_flag_prefix",
                check header_prefix;
            /// Also add W3C `baggage` members `<baggage_prefix><key>=<value>`.
            baggage: bool, key "baggage";
            /// Prefix of the baggage member keys: an HTTP token.
            baggage_prefix: String = "vexil.".into(), key "baggage_prefix", check baggage_prefix;
            /// Send `vexil-revision: <environment>@<revision>`.
            revision: bool = true, key "revision";
            /// Sign the `vexil-flags` written with the environment's current key from control
            /// (`vexil-signature`), so sidecars in inbound mode keep these decisions from peers
            /// they do not trust by address. Needs control: nothing is signed with
            /// `--flags-file` or before control delivered the keys.
            sign: bool, key "sign";
        }
    }
}

/// `[inbound] signature_max_age_secs`: 1 s to a day.
fn signature_age(d: &Seconds) -> Result<(), String> {
    between(1, 86_400)(&d.0.as_secs())
}

vexil_settings::settings! {
    /// `[cache]`: finished decisions kept per worker thread, by snapshot, route and the values of
    /// exactly the context attributes the route's flags read.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct CacheConfig {
        group "cache" {
            /// Decisions kept per worker thread (least recently used first out); 0 turns the
            /// cache off. About 1 KiB each with 20 flags.
            max_entries: usize = 1024, key "max_entries", check between(0, 1_000_000);
        }
    }
}

vexil_settings::settings! {
    /// `[inbound]`: whose `vexil-*` headers inbound mode believes.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct InboundConfig {
        group "inbound" {
            /// Peers (`10.0.0.0/8`, `fd00::/8`, or single addresses) whose `vexil-*` headers
            /// inbound mode keeps; from anyone else they are stripped before injection.
            trusted_cidrs: Vec<Cidr>, key "trusted_cidrs", default_doc "`[]` (trust nobody)";
            /// Keep the `vexil-flags` of any peer whose `vexil-signature` verifies with a key of
            /// this sidecar's environment (the decisions still pass the rules of call-chain
            /// consistency); the rest of its `vexil-*` headers are stripped as from any untrusted
            /// peer.
            accept_signed: bool = true, key "accept_signed";
            /// A signature made longer ago than this (or this far in the future: clocks differ)
            /// is refused (seconds, 1 to 86400): it bounds how long a captured header can be
            /// replayed.
            signature_max_age: Duration as Seconds = secs(300), key "signature_max_age_secs",
                check signature_age;
        }
    }
}

vexil_settings::settings! {
    /// `[upstream]`: timeouts and pooling.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct UpstreamConfig {
        group "upstream" {
            /// Resolving and connecting to an upstream may take this long (milliseconds); then
            /// `504`.
            connect_timeout: Duration as Millis = ms(2_000), key "connect_timeout_ms",
                check nonzero;
            /// Longest wait for each read from an upstream (milliseconds); then `504`.
            read_timeout: Duration as Millis = ms(60_000), key "read_timeout_ms", check nonzero;
            /// A pooled idle upstream connection is closed after this long (milliseconds).
            idle_timeout: Duration as Millis = ms(60_000), key "idle_timeout_ms", check nonzero;
            /// Idle upstream connections kept for reuse (per process).
            pool_size: usize = 128, key "pool_size";
        }
    }
}

vexil_settings::settings! {
    /// `[downstream]`: the connections the application opens to the sidecar's listeners.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct DownstreamConfig {
        group "downstream" {
            /// An application's keep-alive connection with no request for this long is closed
            /// (milliseconds, rounded up to whole seconds). Each open connection holds about 30 KiB
            /// of buffers in the sidecar, so connections opened in a burst must not stay open for
            /// ever.
            idle_timeout: Duration as Millis = ms(60_000), key "idle_timeout_ms", check nonzero;
            /// Most connections open at once on each listener; a connection beyond it is closed
            /// at once (counted in `vexil_proxy_dataplane_connections_refused_total`).
            max_connections: usize = 4096, key "max_connections", check nonzero;
            /// A request head (request line and headers, HTTP/1) must arrive whole within this
            /// long of its first byte (milliseconds); a client sending it a byte at a time is
            /// closed.
            request_head_timeout: Duration as Millis = ms(10_000), key "request_head_timeout_ms",
                check nonzero;
            /// A `CONNECT` tunnel (or a connection left opaque) with no byte in either direction
            /// for this long is closed (milliseconds).
            tunnel_idle_timeout: Duration as Millis = ms(300_000), key "tunnel_idle_timeout_ms",
                check nonzero;
            /// Most HTTP/2 streams open at once on one connection (h2c: gRPC and HTTP/2 with
            /// prior knowledge).
            max_h2_streams: u32 = 128, key "max_h2_streams", check nonzero;
            /// Serve plain HTTP/1.1 requests (absolute-form or `Host`-routed, with a
            /// `Content-Length` or chunked body or none, no `Upgrade` or `Expect`) on the
            /// sidecar's own HTTP/1.1 path instead of pingora's proxy: the same routing and
            /// decisions at a lower cost per request, stricter framing (ambiguous framing is
            /// refused with `400`). Anything else still goes through pingora. `false` sends
            /// every request through pingora's proxy.
            fast_path: bool = true, key "fast_path";
        }
    }
}

impl DownstreamConfig {
    /// The idle timeout in whole seconds (at least 1), as pingora takes it.
    pub fn idle_timeout_secs(&self) -> u64 {
        let secs = self.idle_timeout.as_secs();
        (secs + u64::from(self.idle_timeout.subsec_nanos() > 0)).max(1)
    }
}

impl DataPlaneConfig {
    /// Parses a TOML document holding only data-plane sections (problems name it `proxy.toml`).
    pub fn from_toml_str(text: &str) -> Result<Self, Problems> {
        let file = File::parse("proxy.toml", text)?;
        vexil_settings::resolve(Layers::new().file(file)).map(|r| r.settings)
    }
}

/// What no single key can check: the number and names of the context attributes, and that `jwt:`
/// sources have a key to verify tokens with.
fn check_dataplane(config: &DataPlaneConfig, r: &mut Resolver<'_>, prefix: &str) {
    let opts = &config.context_options;
    if config.context.len() > opts.max_attributes {
        r.problem(
            prefix,
            "context",
            "",
            format!(
                "{} attributes; at most [context_options] max_attributes = {} are allowed",
                config.context.len(),
                opts.max_attributes
            ),
        );
    }
    let mut uses_jwt = false;
    for (attr, sources) in &config.context {
        if attr.is_empty() || attr.len() > 256 {
            r.problem(
                prefix,
                "context",
                &format!("{attr:?}"),
                "an attribute name has 1 to 256 bytes",
            );
        }
        if sources.is_empty() {
            r.problem(prefix, "context", attr, "lists no source");
        }
        uses_jwt |= sources.iter().any(ContextSource::is_jwt);
    }
    let has_key = opts.jwt_hs256_secret.is_some()
        || opts.jwt_hs256_secret_file.is_some()
        || opts.jwt_rs256_public_key.is_some()
        || opts.jwt_es256_public_key.is_some()
        || opts.jwt_jwks_file.is_some()
        || opts.jwt_jwks_url.is_some();
    if uses_jwt && opts.jwt_verify && !has_key {
        r.problem(
            &join_key(prefix, "context_options"),
            "jwt_verify",
            "",
            "jwt: sources need a key to verify tokens: set jwt_hs256_secret, \
             jwt_hs256_secret_file, jwt_rs256_public_key, jwt_es256_public_key, jwt_jwks_file \
             or jwt_jwks_url (or jwt_verify = false to read claims unverified)",
        );
    }
}

fn check_route(route: &RouteConfig, r: &mut Resolver<'_>, prefix: &str) {
    if route.flags.is_some() && route.metadata.is_some() {
        r.problem(
            prefix,
            "metadata",
            "",
            "set either flags or metadata, not both",
        );
    }
    for (i, key) in route.flags.iter().flatten().enumerate() {
        if let Some(problem) = vexil_engine::header_key_problem(key) {
            r.problem(prefix, "flags", &format!("[{i}]"), problem);
        }
    }
}

fn path_prefix(prefix: &Option<String>) -> Result<(), String> {
    match prefix {
        Some(p) if !p.starts_with('/') => Err(format!("{p:?} does not start with '/'")),
        _ => Ok(()),
    }
}

fn header_prefix(prefix: &str) -> Result<(), String> {
    let valid = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?}: lowercase letters, digits, '-' and '_' only (a header-name prefix)"
        ))
    }
}

fn baggage_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.is_empty() && prefix.bytes().all(is_tchar) {
        Ok(())
    } else {
        Err(format!(
            "{prefix:?} is not a non-empty HTTP token (a baggage key prefix)"
        ))
    }
}

/// Where a context attribute's value comes from: `kind:argument` in `[context]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// `header:NAME`: the first `NAME` header (UTF-8).
    Header(HeaderName),
    /// `cookie:NAME`: cookie `NAME`, quotes removed.
    Cookie(Box<str>),
    /// `query:NAME`: query parameter `NAME`, decoded.
    Query(Box<str>),
    /// `jwt:CLAIM`: a top-level claim of the `Authorization: Bearer` token.
    Jwt(Box<str>),
    /// `baggage:KEY`: W3C `baggage` member `KEY`.
    Baggage(Box<str>),
    /// `request:method`.
    Method,
    /// `request:path`.
    Path,
    /// `request:host`.
    Host,
    /// `request:scheme`.
    Scheme,
    /// `peer:ip`: the connecting peer's address.
    PeerIp,
    /// `static:VALUE`.
    Static(Box<str>),
}

impl ContextSource {
    /// Parses `kind:argument`.
    pub fn parse(s: &str) -> Result<ContextSource, String> {
        let unknown = || {
            format!(
                "unknown source {s:?} (expected header:NAME, cookie:NAME, query:NAME, jwt:CLAIM, \
                 baggage:KEY, request:method|path|host|scheme, peer:ip or static:VALUE)"
            )
        };
        let (kind, arg) = s.split_once(':').ok_or_else(unknown)?;
        let named = |what: &str| -> Result<Box<str>, String> {
            if arg.is_empty() {
                Err(format!("{s:?}: {what} must not be empty"))
            } else {
                Ok(arg.into())
            }
        };
        Ok(match kind {
            "header" => ContextSource::Header(
                HeaderName::from_bytes(arg.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{s:?}: {arg:?} is not a header name"))?,
            ),
            "cookie" => ContextSource::Cookie(named("the cookie name")?),
            "query" => ContextSource::Query(named("the parameter name")?),
            "jwt" => ContextSource::Jwt(named("the claim name")?),
            "baggage" => ContextSource::Baggage(named("the baggage key")?),
            "request" => match arg {
                "method" => ContextSource::Method,
                "path" => ContextSource::Path,
                "host" => ContextSource::Host,
                "scheme" => ContextSource::Scheme,
                _ => return Err(format!("{s:?}: expected request:method|path|host|scheme")),
            },
            "peer" if arg == "ip" => ContextSource::PeerIp,
            "peer" => return Err(format!("{s:?}: expected peer:ip")),
            "static" => ContextSource::Static(arg.into()),
            _ => return Err(unknown()),
        })
    }

    /// True for `jwt:` sources.
    pub fn is_jwt(&self) -> bool {
        matches!(self, ContextSource::Jwt(_))
    }
}

impl fmt::Display for ContextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextSource::Header(name) => write!(f, "header:{name}"),
            ContextSource::Cookie(name) => write!(f, "cookie:{name}"),
            ContextSource::Query(name) => write!(f, "query:{name}"),
            ContextSource::Jwt(claim) => write!(f, "jwt:{claim}"),
            ContextSource::Baggage(key) => write!(f, "baggage:{key}"),
            ContextSource::Method => f.write_str("request:method"),
            ContextSource::Path => f.write_str("request:path"),
            ContextSource::Host => f.write_str("request:host"),
            ContextSource::Scheme => f.write_str("request:scheme"),
            ContextSource::PeerIp => f.write_str("peer:ip"),
            ContextSource::Static(value) => write!(f, "static:{value}"),
        }
    }
}

/// The settings values written as text (`header:x-user-id`, `*.internal`, `10.0.0.0/8`).
macro_rules! text_value {
    ($($t:ty),*) => {$(
        impl vexil_settings::Value for $t {
            fn from_text(text: &str) -> Result<Self, Problems> {
                <$t>::parse(text).map_err(Problems::from)
            }

            fn show(&self) -> Option<toml::Value> {
                Some(toml::Value::String(self.to_string()))
            }
        }
    )*};
}

text_value!(ContextSource, HostPattern, Cidr);

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A route's host match: exact, or a `*.suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name (lowercased).
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

impl HostPattern {
    /// Parses `host` or `*.suffix` (lowercased).
    pub fn parse(s: &str) -> Result<Self, String> {
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
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h.as_ref() == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_ref()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
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

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
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
    use vexil_settings::Settings;

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
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.downstream.idle_timeout_secs(), 60);
    }

    #[test]
    fn full_example_parses_into_types() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/proxy.toml"))
                .unwrap();
        // The binary's own keys are not the data plane's: only the data plane's sections here.
        let table: toml::Table = text.parse().unwrap();
        let ours: toml::Table = table
            .into_iter()
            .filter(|(k, v)| v.is_table() && k != "telemetry")
            .collect();
        let c = DataPlaneConfig::from_toml_str(&toml::to_string(&ours).unwrap()).unwrap();
        assert_eq!(
            c.context["targetingKey"],
            [
                ContextSource::Header(HeaderName::from_static("x-user-id")),
                ContextSource::Cookie("uid".into()),
                ContextSource::Jwt("sub".into())
            ]
        );
        assert_eq!(c.context_options.jwt_leeway, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        assert_eq!(
            err("[context]\ncountry = [\"header:x-country\", \"hedaer:x\"]"),
            "proxy.toml:2 [context] country[1]: unknown source \"hedaer:x\" (expected header:NAME, \
             cookie:NAME, query:NAME, jwt:CLAIM, baggage:KEY, request:method|path|host|scheme, \
             peer:ip or static:VALUE)"
        );
        assert_eq!(
            err("[headers]\nmax_byte = 3"),
            "proxy.toml:2 [headers] max_byte: unknown key (did you mean \"max_bytes\"?)"
        );
        assert!(
            err("[headers]\nmax_bytes = \"big\"")
                .starts_with("proxy.toml:2 [headers] max_bytes: expected a whole number")
        );
        assert!(
            err("[inbound]\ntrusted_cidrs = [\"10.0.0.0/33\"]")
                .starts_with("proxy.toml:2 [inbound] trusted_cidrs[0]: ")
        );
        assert!(
            err("[[routes]]\nflags = [\"Bad\"]").starts_with("proxy.toml:2 routes[0].flags[0]: ")
        );
        assert!(err("[[routes]]\nhost = \"a b\"").starts_with("proxy.toml:2 routes[0].host: "));
        assert!(
            err("[[routes]]\nflags = [\"a\"]\nmetadata = {team = \"x\"}")
                .starts_with("proxy.toml:3 routes[0].metadata: set either")
        );
        assert!(
            err("[[routes]]\npath_prefix = \"x\"")
                .starts_with("proxy.toml:2 routes[0].path_prefix: ")
        );
        assert!(
            err("[context]\nsub = [\"jwt:sub\"]")
                .starts_with("[context_options] jwt_verify: jwt: sources need a key")
        );
        assert!(
            err("[context]\nx = [\"request:body\"]").starts_with("proxy.toml:2 [context] x[0]: ")
        );
        assert!(
            err("[context]\nx = [\"header:bad header\"]")
                .starts_with("proxy.toml:2 [context] x[0]: ")
        );
        assert_eq!(
            err("[context]\nx = []"),
            "proxy.toml:2 [context] x: lists no source"
        );
        assert!(
            err("[headers]\nper_flag_prefix = \"X-\"")
                .starts_with("proxy.toml:2 [headers] per_flag_prefix: ")
        );
        assert!(
            err("[headers]\nbaggage_prefix = \"a b\"")
                .starts_with("proxy.toml:2 [headers] baggage_prefix: ")
        );
        assert_eq!(
            err("[upstream]\nconnect_timeout_ms = 0"),
            "proxy.toml:2 [upstream] connect_timeout_ms: must be at least 1"
        );
        assert_eq!(
            err("[context_options]\njwt_hs256_secret = \"\""),
            "proxy.toml:2 [context_options] jwt_hs256_secret: must not be empty"
        );
    }

    #[test]
    fn every_problem_at_once() {
        let e =
            err("[headers]\nmax_bytes = 1\nper_flag_prefix = \"A\"\n[context]\nx = [\"nope\"]\n");
        assert_eq!(e.lines().count(), 3, "{e}");
    }

    #[test]
    fn unverified_jwt_must_be_explicit() {
        let ok = "[context]\nsub = [\"jwt:sub\"]\n[context_options]\njwt_verify = false";
        assert!(DataPlaneConfig::from_toml_str(ok).is_ok());
        let keyed = "[context]\nsub = [\"jwt:sub\"]\n[context_options]\njwt_hs256_secret = \"s\"";
        assert!(DataPlaneConfig::from_toml_str(keyed).is_ok());
        // Built in code, the same check.
        let mut c = DataPlaneConfig::default();
        c.context
            .insert("sub".into(), vec![ContextSource::Jwt("sub".into())]);
        assert!(c.validate().is_err());
        c.context_options.jwt_verify = false;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn too_many_attributes() {
        let mut text = String::from("[context]\n");
        for i in 0..65 {
            text.push_str(&format!("a{i} = [\"static:x\"]\n"));
        }
        assert!(
            err(&text).starts_with("proxy.toml:1 context: 65 attributes"),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn sources_read_back_as_written() {
        for s in [
            "header:x-user",
            "cookie:uid",
            "query:q",
            "jwt:sub",
            "baggage:k",
            "request:method",
            "request:path",
            "request:host",
            "request:scheme",
            "peer:ip",
            "static:a:b",
        ] {
            assert_eq!(ContextSource::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            HostPattern::parse("*.Internal").unwrap().to_string(),
            "*.internal"
        );
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
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
