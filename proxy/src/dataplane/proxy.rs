//! The pingora side: the HTTP proxy ([`Sidecar`], a [`ProxyHttp`]) and the connection front
//! ([`Front`], a [`ServerApp`]) that counts connections and takes `CONNECT` tunnels before pingora
//! sees them (pingora answers `CONNECT` with 405 and has no tunnel mode).
//!
//! Outbound, a request is routed by its target: an absolute-form target (`GET http://host/path`,
//! from `HTTP_PROXY` clients) is forwarded in origin-form with `Host` set to its authority; an
//! origin-form request goes to the connection's original destination when iptables redirected it
//! (transparent mode), else to its `Host`. Inbound, every request goes to the configured upstream
//! (the application). Names are resolved asynchronously (`tokio::net::lookup_host`, cached for a few
//! seconds) and peers are built from socket addresses, so a failed lookup is a 502, never a panic.
//! pingora pools upstream connections by address and strips the standard hop-by-hop request
//! headers (RFC 9110 §7.6.1: `Connection` and the fields it lists, `Keep-Alive`,
//! `Proxy-Connection`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`
//! except for WebSocket); responses lose the fields their `Connection` lists, `Keep-Alive` and
//! `Proxy-Connection`. Failures answer a short plain-text reason: 502 (cannot resolve, connect or
//! talk to the upstream) or 504 (connect or read timeout).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::apps::ServerApp;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{ALPN, GetSocketDigest, SocketDigest, Stream};
use pingora::proxy::{FailToProxy, HttpProxy, ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dataplane::inject::{Injector, Target};
use crate::dataplane::metrics::Listener;
use crate::usage::Attributed;
use vexil_proto::outcomes;

/// How long a new connection may stay silent before its first request.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `CONNECT` request head accepted.
const MAX_CONNECT_HEAD: usize = 8192;
/// How long a resolved name is reused.
const DNS_TTL: Duration = Duration::from_secs(5);
/// Most names kept in the resolver's cache.
const DNS_CACHE_MAX: usize = 1024;

/// Upstream timeouts and pooling.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
    /// `[downstream] idle_timeout_ms`, in whole seconds.
    pub downstream_idle_secs: u64,
}

impl Timeouts {
    /// The downstream idle timeout as a duration.
    pub fn downstream_idle(&self) -> Duration {
        Duration::from_secs(self.downstream_idle_secs)
    }
}

/// Why a request could not be forwarded: a status and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: String,
}

impl Refusal {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// Resolved names: host → (address, when resolved). Keyed by host alone so a lookup borrows the
/// request's `&str`.
type DnsCache = HashMap<Box<str>, (IpAddr, Instant)>;

/// Asynchronous name resolution with a small copy-on-write cache (reads take no lock).
#[derive(Default)]
pub(crate) struct Resolver {
    cache: ArcSwap<DnsCache>,
}

impl Resolver {
    /// The address of `host:port` (`host` may be an IP literal, IPv6 with or without brackets).
    pub(crate) async fn resolve(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<SocketAddr, Refusal> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Some((ip, at)) = self.cache.load().get(bare)
            && at.elapsed() < DNS_TTL
        {
            return Ok(SocketAddr::new(*ip, port));
        }
        let lookup = tokio::net::lookup_host((bare, port));
        let addr = match tokio::time::timeout(timeout, lookup).await {
            Err(_) => return Err(Refusal::new(504, format!("resolving {bare} timed out"))),
            Ok(Err(_)) => None,
            Ok(Ok(mut addrs)) => addrs.next(),
        };
        let addr = addr.ok_or_else(|| Refusal::new(502, format!("cannot resolve {bare}")))?;
        self.cache.rcu(|cache| {
            let mut next = if cache.len() >= DNS_CACHE_MAX {
                HashMap::new()
            } else {
                HashMap::clone(cache)
            };
            next.insert(bare.into(), (addr.ip(), Instant::now()));
            next
        });
        Ok(addr)
    }
}

/// Open client connections of a data plane (graceful shutdown waits for them).
#[derive(Debug, Default)]
pub(crate) struct Connections(AtomicUsize);

impl Connections {
    /// How many connections are open.
    pub(crate) fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(self: &Arc<Self>) -> ConnectionGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }
}

struct ConnectionGuard(Arc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a listener sends requests.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// Outbound proxy: by absolute-form target, original destination or `Host`.
    Outbound,
    /// Inbound mode: everything to the application.
    Inbound { upstream: SocketAddr },
}

/// The pingora proxy of one listener.
#[derive(Clone)]
pub(crate) struct Sidecar {
    pub listener: Listener,
    pub mode: Mode,
    /// The listener's own address (requests routed back to it are refused).
    pub own_addr: SocketAddr,
    pub injector: Arc<Injector>,
    pub resolver: Arc<Resolver>,
    pub timeouts: Timeouts,
}

/// Per-request state.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    /// The upstream's address.
    pub(crate) dest: Option<SocketAddr>,
    /// Lowercase host without port (routing, `request:host`).
    host: Option<String>,
    /// The authority of an absolute-form target (becomes `Host`).
    authority: Option<String>,
    /// When the request was sent upstream.
    sent_at: Option<Instant>,
    /// The guarded decisions the request carried, counted with its outcome (ADR 0035).
    attributed: Option<Attributed>,
    /// The upstream's answer: its status and how long it took from the request.
    answered: Option<(u16, Duration)>,
}

/// The target of an outbound request before resolution.
#[derive(Debug, PartialEq, Eq)]
struct Destination {
    host: String,
    port: u16,
    /// Set for absolute-form targets.
    authority: Option<String>,
}

impl Sidecar {
    /// Decides where the request goes and resolves it.
    async fn destination(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Refusal> {
        let original = || original_destination(session, self.own_addr);
        self.route(session.req_header(), original, ctx).await
    }

    /// Where `req` goes (`original`: the connection's pre-NAT destination, transparent mode),
    /// resolved; or the answer that refuses it.
    pub(crate) async fn route(
        &self,
        req: &RequestHeader,
        original: impl FnOnce() -> Option<SocketAddr>,
        ctx: &mut Ctx,
    ) -> Result<(), Refusal> {
        match self.mode {
            Mode::Inbound { upstream } => {
                ctx.host = host_header(req).map(|(h, _)| h);
                ctx.dest = Some(upstream);
                Ok(())
            }
            Mode::Outbound => {
                let dest = match absolute_target(req.raw_path())? {
                    Some(d) => d,
                    None => {
                        if let Some(addr) = original() {
                            ctx.host = host_header(req).map(|(h, _)| h);
                            ctx.dest = Some(addr);
                            return Ok(());
                        }
                        let (host, port) = host_header(req).ok_or_else(|| {
                            Refusal::new(
                                400,
                                "no target: send an absolute-form request (HTTP_PROXY) or a Host header",
                            )
                        })?;
                        Destination {
                            host,
                            port: port.unwrap_or(80),
                            authority: None,
                        }
                    }
                };
                let addr = self
                    .resolver
                    .resolve(&dest.host, dest.port, self.timeouts.connect)
                    .await?;
                if is_self(addr, self.own_addr) {
                    return Err(Refusal::new(508, "the target is this proxy"));
                }
                ctx.dest = Some(addr);
                ctx.host = Some(dest.host);
                ctx.authority = dest.authority;
                Ok(())
            }
        }
    }

    /// Inbound, from an untrusted peer: strips its `vexil-*` headers (counted).
    pub(crate) fn strip_untrusted(&self, req: &mut RequestHeader, peer: Option<IpAddr>) {
        if matches!(self.mode, Mode::Inbound { .. })
            && !self.injector.trusts(peer)
            && self.injector.strip(self.listener, req)
        {
            self.injector.metrics().stripped(self.listener);
        }
    }

    /// The request as it goes upstream: an absolute-form target in origin-form with `Host` set
    /// to its authority, then the decisions.
    pub(crate) fn prepare(
        &self,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
        peer: Option<IpAddr>,
    ) -> pingora::Result<()> {
        if let Some(authority) = &ctx.authority {
            let origin = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let uri = http::Uri::try_from(origin)
                .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "target path", e))?;
            req.set_uri(uri);
            req.insert_header(header::HOST, authority.as_str())?;
        }
        let target = Target {
            host: ctx.host.as_deref(),
            scheme: "http",
        };
        let (_, attributed) = self
            .injector
            .inject_attributed(self.listener, req, &target, peer);
        ctx.attributed = attributed;
        ctx.sent_at = Some(Instant::now());
        Ok(())
    }

    /// The upstream answered `status`: its latency, and the outcome of guarded decisions.
    pub(crate) fn answered(&self, status: u16, ctx: &mut Ctx) {
        if let Some(at) = ctx.sent_at.take() {
            let elapsed = at.elapsed();
            self.injector
                .metrics()
                .upstream_latency(self.listener, elapsed);
            if ctx.attributed.is_some() {
                ctx.answered = Some((status, elapsed));
            }
        }
    }

    /// The request is over, the client answered `status` (0: nothing): counted, and the
    /// guarded decisions' outcome recorded.
    pub(crate) fn finish(&self, status: u16, ctx: &mut Ctx) {
        self.injector.metrics().request(self.listener, status);
        // The outcome of the guarded decisions: the upstream's answer (not an answer of the
        // sidecar's own, such as a 502 for an unreachable upstream: that is "no answer").
        if let Some(attributed) = ctx.attributed.take() {
            let (class, latency) = match ctx.answered {
                Some((status, elapsed)) => (
                    outcomes::status_class(Some(status)),
                    Some(outcomes::latency_bucket(elapsed)),
                ),
                None => (outcomes::NO_ANSWER, None),
            };
            attributed.record(class, latency);
        }
    }

    fn peer_ip(session: &Session) -> Option<IpAddr> {
        session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }
}

#[async_trait]
impl ProxyHttp for Sidecar {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        // pingora keeps an HTTP/1.1 keep-alive connection open for ever between requests
        // (`Some(0)`); bound it. Connections that must close (`Connection: close`, HTTP/1.0) stay
        // as they are.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(self.timeouts.downstream_idle_secs));
        }
        // Untrusted inbound peers lose their `vexil-*` headers here, before pingora removes the
        // hop-by-hop ones (a `Connection: vexil-flags` nomination is stripped and counted too).
        let peer = Self::peer_ip(session);
        self.strip_untrusted(session.req_header_mut(), peer);
        match self.destination(session, ctx).await {
            Ok(()) => Ok(false),
            Err(refusal) => {
                answer(session, refusal.status, &refusal.reason).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let addr = ctx
            .dest
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no destination"))?;
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect);
        o.read_timeout = Some(self.timeouts.read);
        o.idle_timeout = Some(self.timeouts.idle);
        if session.is_http2() {
            // h2c to the upstream (gRPC): prior knowledge, as the client spoke to us.
            o.alpn = ALPN::H2;
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.prepare(req, ctx, Self::peer_ip(session))
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        self.answered(resp.status.as_u16(), ctx);
        if resp.status != 101 {
            strip_response_hop_by_hop(resp);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let (status, reason) = failure(e);
        if status > 0 {
            answer(session, status, reason).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // A client that went away (closed, reset, or cancelled a gRPC call at its deadline) is
        // not the sidecar's failure: debug, not pingora's ERROR line for each.
        let gone = client_went_away(e);
        if gone {
            tracing::debug!("client went away: {e}");
        }
        gone
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.finish(status, ctx);
    }
}

/// Whether `e` is the downstream client leaving: its connection closed or reset, or an HTTP/2
/// stream it cancelled.
fn client_went_away(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Downstream)
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed
                | ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::H2Error
        )
}

/// Status and reason for a proxying error (0: the client is gone, answer nothing).
pub(crate) fn failure(e: &Error) -> (u16, &'static str) {
    match e.etype() {
        ErrorType::HTTPStatus(code) => (*code, "error"),
        ErrorType::ConnectTimedout => (504, "upstream connect timed out"),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => (504, "upstream timed out"),
        ErrorType::ConnectRefused => (502, "upstream refused the connection"),
        ErrorType::ConnectNoRoute => (502, "no route to upstream"),
        _ => match e.esource() {
            ErrorSource::Upstream => (502, "upstream failed"),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, "")
                }
                _ => (400, "bad request"),
            },
            ErrorSource::Internal | ErrorSource::Unset => (502, "proxy error"),
        },
    }
}

/// Answers `status` with a one-line plain-text body.
async fn answer(session: &mut Session, status: u16, reason: &str) {
    let body = Bytes::from(format!("vexil-proxy: {reason}\n"));
    let Ok(mut resp) = ResponseHeader::build(status, Some(4)) else {
        return;
    };
    let _ = resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len());
    let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
    if let Err(e) = session
        .as_downstream_mut()
        .write_error_response(resp, body)
        .await
    {
        tracing::debug!("could not answer {status}: {e}");
    }
}

/// The front's own answer `status` with a one-line plain-text reason, closing the connection.
pub(crate) fn refusal_response(status: u16, reason: &str) -> Vec<u8> {
    let body = format!("vexil-proxy: {reason}\n");
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Most options one `Connection` field may nominate.
const MAX_NOMINATIONS: usize = 9;

/// Removes a request's hop-by-hop fields before it goes upstream, as pingora does for the
/// requests it serves (RFC 9110 §7.6.1): those its `Connection` nominates (a few tokens; `Host`
/// and `X-Forwarded-*` cannot be), then `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`
/// and `HTTP2-Settings`. Used by the fast path; an error is a `400`.
pub(crate) fn strip_request_hop_by_hop(req: &mut RequestHeader) -> Result<(), &'static str> {
    let mut nominated: [Option<http::HeaderName>; MAX_NOMINATIONS] = Default::default();
    let tokens = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (i, token) in tokens.enumerate() {
        let slot = nominated.get_mut(i).ok_or("too many Connection options")?;
        // A token, checked here: `HeaderName` takes some bytes a token does not (`"`).
        if !token
            .iter()
            .all(|&b| crate::dataplane::framing::is_tchar(b))
        {
            return Err("invalid Connection option");
        }
        let name = http::HeaderName::from_bytes(token).map_err(|_| "invalid Connection option")?;
        if matches!(
            name.as_str(),
            "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        ) {
            return Err("a protected field nominated by Connection");
        }
        *slot = Some(name);
    }
    for name in nominated.into_iter().flatten() {
        req.remove_header(&name);
    }
    for name in [
        header::CONNECTION,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("http2-settings"),
    ] {
        req.remove_header(&name);
    }
    Ok(())
}

/// Removes the fields a response's `Connection` lists, `Keep-Alive` and `Proxy-Connection`
/// (pingora writes its own `Connection`).
fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    let listed: Vec<String> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
        .collect();
    for name in listed {
        resp.remove_header(&name);
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// The target of an absolute-form request (`http://authority/path`), `None` for origin-form.
fn absolute_target(raw: &[u8]) -> Result<Option<Destination>, Refusal> {
    if raw.first() == Some(&b'/') || raw == b"*" {
        return Ok(None);
    }
    let bad = || Refusal::new(400, "malformed request target");
    let uri = http::Uri::try_from(raw).map_err(|_| bad())?;
    let Some(authority) = uri.authority() else {
        return Ok(None);
    };
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(Refusal::new(
                400,
                "https targets go through CONNECT (the proxy does not originate TLS)",
            ));
        }
        _ => return Err(bad()),
    }
    if authority.as_str().contains('@') {
        return Err(bad());
    }
    Ok(Some(Destination {
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16().unwrap_or(80),
        authority: Some(authority.as_str().to_owned()),
    }))
}

/// The request's `Host` (HTTP/2: its `:authority`): lowercase host without port, and the port.
fn host_header(req: &RequestHeader) -> Option<(String, Option<u16>)> {
    let authority = match req.headers.get(header::HOST) {
        Some(value) => http::uri::Authority::try_from(value.to_str().ok()?).ok()?,
        None => req.uri.authority()?.clone(),
    };
    let host = authority.host();
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), authority.port_u16()))
}

/// The connection's pre-NAT destination when iptables redirected it here.
fn original_destination(session: &Session, own: SocketAddr) -> Option<SocketAddr> {
    original_destination_of(session.digest()?.socket_digest.as_ref()?, own)
}

/// [`original_destination`] from a connection's socket digest.
pub(crate) fn original_destination_of(
    digest: &SocketDigest,
    own: SocketAddr,
) -> Option<SocketAddr> {
    let dst = *digest.original_dst()?.as_inet()?;
    let local = digest.local_addr().and_then(|a| a.as_inet()).copied();
    (Some(dst) != local && !is_self(dst, own)).then_some(dst)
}

/// True when `addr` is the proxy's own listener.
fn is_self(addr: SocketAddr, own: SocketAddr) -> bool {
    addr.port() == own.port()
        && (addr.ip() == own.ip()
            || (own.ip().is_unspecified()
                && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
}

/// The connection front, one per listener: bounds open connections, reads the start of each
/// request itself (so that a head must arrive whole within `[downstream] request_head_timeout_ms`),
/// serves `CONNECT` tunnels, and hands HTTP/1 to the HTTP proxy and connections opening with the
/// HTTP/2 preface (h2c with prior knowledge: plaintext gRPC) to its HTTP/2 twin.
///
/// Inside a tunnel the first bytes decide: the HTTP/2 preface or an HTTP/1 request line are
/// proxied like any request, with decisions, to the tunnel's target (set as the connection's
/// original destination); a TLS ClientHello, anything else, or an upstream that speaks first is
/// an untouched byte tunnel.
pub(crate) struct Front {
    /// HTTP/1 (pingora's h2c detection would wait for 24 bytes, longer than a short request).
    pub http: Arc<HttpProxy<Sidecar>>,
    /// The same proxy with h2c on, for connections that open with the HTTP/2 preface.
    pub h2c: Arc<HttpProxy<Sidecar>>,
    /// Tunnels allowed (outbound only).
    pub connect: bool,
    /// Every listener's open connections (graceful shutdown waits for them).
    pub connections: Arc<Connections>,
    /// This listener's.
    pub open: Arc<Connections>,
    pub limits: FrontLimits,
    pub resolver: Arc<Resolver>,
    pub injector: Arc<Injector>,
    pub listener: Listener,
    pub own_addr: SocketAddr,
    pub connect_timeout: Duration,
    /// `[downstream] fast_path`: plain HTTP/1.1 requests are served by [`Front::serve_fast`].
    pub fast: bool,
    /// The proxy's request work, for the fast path.
    pub sidecar: Sidecar,
    /// Idle upstream connections the fast path keeps per worker thread.
    pub pool_size: usize,
}

/// The `[downstream]` limits the front enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrontLimits {
    pub max_connections: usize,
    /// How long a connection may wait for its (next) request's first byte.
    pub first_byte: Duration,
    /// From a request's first byte to the end of its head.
    pub head: Duration,
    /// A tunnel with no byte either way for this long is closed.
    pub tunnel_idle: Duration,
}

/// What a connection (or a tunnel) starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// A whole HTTP/1 request head (not `CONNECT`), or inside a tunnel a request line's method.
    Http1,
    /// A whole `CONNECT` request head.
    Connect,
    /// The HTTP/2 connection preface.
    H2,
    /// Inside a tunnel: anything else (TLS, another protocol).
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The request methods that make a tunnel's bytes HTTP/1.
const METHODS: [&[u8]; 8] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH",
];
/// How long a tunnel's client may stay silent after the upstream spoke before the tunnel is
/// taken as opaque.
const SNIFF_GRACE: Duration = Duration::from_millis(300);
/// A head longer than this is handed to pingora as it is (which answers it as too large, over
/// 1 MiB); the fast path serves no longer head.
pub(crate) const MAX_HEAD_READ: usize = 65_536;

/// What a connection's first bytes are, once they tell (`None`: not yet).
fn connection_start(b: &[u8]) -> Option<Start> {
    let n = b.len().min(H2_PREFACE.len());
    if n > 0 && b[..n] == H2_PREFACE[..n] {
        return (b.len() >= H2_PREFACE.len()).then_some(Start::H2);
    }
    let complete = b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return None;
    }
    if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"CONNECT ") {
        Some(Start::Connect)
    } else {
        Some(Start::Http1)
    }
}

/// What a tunnel carries, once its first bytes tell (`None`: not yet).
fn tunnel_start(b: &[u8]) -> Option<Start> {
    if b.is_empty() {
        return None;
    }
    let n = b.len().min(H2_PREFACE.len());
    if b[..n] == H2_PREFACE[..n] {
        return (b.len() >= H2_PREFACE.len()).then_some(Start::H2);
    }
    match b.iter().position(|&c| c == b' ') {
        Some(i) if METHODS.contains(&&b[..i]) => Some(Start::Http1),
        Some(_) => Some(Start::Opaque),
        None if b.len() < 8 && b.iter().all(u8::is_ascii_uppercase) => None,
        None => Some(Start::Opaque),
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.connections.enter();
        let _mine = self.open.enter();
        if self.open.open() > self.limits.max_connections {
            self.injector
                .metrics()
                .closed(self.listener, "max_connections");
            return None;
        }
        // Only pingora's own TCP streams can be read ahead and put back; nothing else reaches a
        // plain TCP listener.
        if !stream.as_any().is::<L4Stream>() {
            return self.http.process_new(stream, shutdown).await;
        }
        let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
        if self.fast {
            let mut buf = Vec::with_capacity(4096);
            let start = self.read_head(&mut l4, &mut buf, shutdown).await?;
            if start == Start::Http1 {
                return self.serve_fast(l4, buf, shutdown).await;
            }
            l4.rewind(&buf);
            return self.dispatch(start, l4, shutdown).await;
        }
        let start = self.read_start(&mut l4, shutdown).await?;
        self.dispatch(start, l4, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.http).await;
        ServerApp::cleanup(&*self.h2c).await;
    }
}

impl Front {
    /// Hands a connection whose start was read (and put back) to what serves it.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        start: Start,
        l4: Box<L4Stream>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match start {
            Start::Connect if self.connect => self.tunnel(l4, shutdown).await,
            Start::H2 => self.h2c.process_new(l4, shutdown).await,
            _ => self.http.process_new(l4, shutdown).await,
        }
    }

    /// Reads the start of the connection's next request and puts it back: its first byte within
    /// [`FrontLimits::first_byte`], then the whole head (or the HTTP/2 preface) within
    /// [`FrontLimits::head`] (else `408` and the connection closed). `None`: nothing to serve.
    async fn read_start(&self, l4: &mut L4Stream, shutdown: &ShutdownWatch) -> Option<Start> {
        let mut buf = Vec::new();
        let start = self.read_head(l4, &mut buf, shutdown).await?;
        l4.rewind(&buf);
        Some(start)
    }

    /// [`Front::read_start`] into `buf` (which may already hold the start of the request), not
    /// put back.
    pub(crate) async fn read_head(
        &self,
        l4: &mut L4Stream,
        buf: &mut Vec<u8>,
        shutdown: &ShutdownWatch,
    ) -> Option<Start> {
        if buf.is_empty() {
            let mut stop = shutdown.clone();
            buf.reserve(2048);
            let first = tokio::select! {
                r = tokio::time::timeout(self.limits.first_byte, l4.read_buf(buf)) => r,
                _ = stop.wait_for(|s| *s) => return None,
            };
            match first {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
        let deadline = tokio::time::Instant::now() + self.limits.head;
        loop {
            if let Some(start) = connection_start(buf) {
                return Some(start);
            }
            if buf.len() > MAX_HEAD_READ {
                return Some(Start::Http1);
            }
            buf.reserve(2048);
            match tokio::time::timeout_at(deadline, l4.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return None,
                Err(_) => {
                    self.injector
                        .metrics()
                        .closed(self.listener, "request_head_timeout");
                    let _ = l4
                        .write_all(
                            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = l4.flush().await;
                    return None;
                }
            }
        }
    }

    /// Serves one `CONNECT`: resolve, connect, answer 200, then look at what the client sends.
    async fn tunnel(
        self: &Arc<Self>,
        mut client: Box<L4Stream>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let refusal = match self.open_tunnel(&mut client).await {
            Ok((upstream, addr, leftover)) => {
                self.injector.metrics().request(self.listener, 200);
                return self.carry(client, upstream, addr, leftover, shutdown).await;
            }
            Err(refusal) if refusal.status == 0 => return None, // the client is gone
            Err(refusal) => refusal,
        };
        let _ = client
            .write_all(&refusal_response(refusal.status, &refusal.reason))
            .await;
        let _ = client.flush().await;
        self.injector
            .metrics()
            .request(self.listener, refusal.status);
        None
    }

    /// What an open tunnel carries: HTTP goes through the proxy with decisions, to `addr`;
    /// anything else is copied byte for byte.
    async fn carry(
        self: &Arc<Self>,
        mut client: Box<L4Stream>,
        upstream: TcpStream,
        addr: SocketAddr,
        mut prefix: Vec<u8>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut chunk = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + self.limits.tunnel_idle;
        // When the upstream speaks first, the client has a short grace to speak too: an HTTP/2
        // server sends its SETTINGS at once, while the client of a server-first protocol (SMTP,
        // a database) waits for the greeting, which must not wait long.
        let mut upstream_spoke = None;
        let start = loop {
            if let Some(start) = tunnel_start(&prefix) {
                break start;
            }
            let until = upstream_spoke.map_or(deadline, |at| at + SNIFF_GRACE);
            tokio::select! {
                r = tokio::time::timeout_at(until, client.read(&mut chunk)) => match r {
                    Ok(Ok(n)) if n > 0 => prefix.extend_from_slice(&chunk[..n]),
                    Ok(_) => return None,
                    Err(_) if upstream_spoke.is_some() => break Start::Opaque,
                    Err(_) => return None,
                },
                _ = upstream.readable(), if upstream_spoke.is_none() => {
                    upstream_spoke = Some(tokio::time::Instant::now());
                }
            }
        };
        let metrics = self.injector.metrics();
        if start == Start::Opaque {
            metrics.tunnel(self.listener, "opaque");
            if splice(client, upstream, prefix, self.limits.tunnel_idle).await {
                metrics.closed(self.listener, "tunnel_idle_timeout");
            }
            return None;
        }
        // pingora opens (and pools) its own connection to the target.
        drop(upstream);
        client.rewind(&prefix);
        let digest = SocketDigest::from_raw_fd(client.as_raw_fd());
        let _ = digest
            .original_dst
            .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(addr)));
        client.set_socket_digest(digest);
        if start == Start::H2 {
            metrics.tunnel(self.listener, "h2c");
            self.h2c.process_new(client, shutdown).await
        } else {
            metrics.tunnel(self.listener, "http1");
            // Back through the front: the head deadline applies, then the HTTP proxy routes to
            // the original destination, the tunnel's target.
            Some(client)
        }
    }

    async fn open_tunnel(
        &self,
        client: &mut L4Stream,
    ) -> Result<(TcpStream, SocketAddr, Vec<u8>), Refusal> {
        let (head, leftover) = read_head(client).await?;
        let (host, port) = connect_authority(&head)?;
        let addr = self
            .resolver
            .resolve(&host, port, self.connect_timeout)
            .await?;
        if is_self(addr, self.own_addr) {
            return Err(Refusal::new(508, "the target is this proxy"));
        }
        let upstream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => return Err(Refusal::new(504, "upstream connect timed out")),
                Ok(Err(e)) => {
                    return Err(Refusal::new(
                        502,
                        format!("cannot connect to upstream: {e}"),
                    ));
                }
                Ok(Ok(s)) => s,
            };
        let _ = upstream.set_nodelay(true);
        // pingora's streams are write-buffered: the 200 must be flushed before tunnelling.
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .and(client.flush().await)
            .map_err(|_| Refusal::new(0, "client gone"))?;
        Ok((upstream, addr, leftover))
    }
}

/// A stream that notes when bytes last moved through it.
struct Watched<'a, T> {
    inner: T,
    last: &'a std::sync::atomic::AtomicU64,
    epoch: Instant,
}

impl<T> Watched<'_, T> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies bytes both ways until either side closes, or nothing moves for `idle` (then returns
/// true).
async fn splice(
    client: Box<L4Stream>,
    upstream: TcpStream,
    prefix: Vec<u8>,
    idle: Duration,
) -> bool {
    let epoch = Instant::now();
    let last = std::sync::atomic::AtomicU64::new(0);
    let mut client = Watched {
        inner: client,
        last: &last,
        epoch,
    };
    let mut upstream = Watched {
        inner: upstream,
        last: &last,
        epoch,
    };
    if !prefix.is_empty() && upstream.inner.write_all(&prefix).await.is_err() {
        return false;
    }
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = epoch.elapsed().saturating_sub(since);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                tracing::debug!("tunnel closed: {e}");
            }
            false
        }
        () = watchdog => true,
    }
}

/// Reads a request head up to its blank line: (head, bytes after it).
async fn read_head(client: &mut L4Stream) -> Result<(String, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let leftover = buf.split_off(end + 4);
            let head =
                String::from_utf8(buf).map_err(|_| Refusal::new(400, "malformed CONNECT"))?;
            return Ok((head, leftover));
        }
        if buf.len() > MAX_CONNECT_HEAD {
            return Err(Refusal::new(431, "CONNECT request head too large"));
        }
        let read = tokio::time::timeout(FIRST_BYTES_TIMEOUT, client.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(Refusal::new(0, "client gone")),
        }
    }
}

/// The `host` and `port` of `CONNECT host:port HTTP/1.1`.
fn connect_authority(head: &str) -> Result<(String, u16), Refusal> {
    let bad = || Refusal::new(400, "malformed CONNECT target (expected host:port)");
    let line = head.lines().next().ok_or_else(bad)?;
    let mut parts = line.split(' ');
    let (_method, target, version) = (parts.next(), parts.next().ok_or_else(bad)?, parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad());
    }
    let authority = http::uri::Authority::try_from(target).map_err(|_| bad())?;
    let port = authority.port_u16().ok_or_else(bad)?;
    if authority.host().is_empty() || target.contains('@') {
        return Err(bad());
    }
    Ok((authority.host().to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets() {
        let d = absolute_target(b"http://Example.com:8080/a?b=1")
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            Destination {
                host: "example.com".into(),
                port: 8080,
                authority: Some("Example.com:8080".into())
            }
        );
        let d = absolute_target(b"http://[::1]/").unwrap().unwrap();
        assert_eq!((d.host.as_str(), d.port), ("[::1]", 80));
        assert_eq!(absolute_target(b"/path").unwrap(), None);
        assert_eq!(absolute_target(b"https://x/").unwrap_err().status, 400);
        assert_eq!(absolute_target(b"http://u@x/").unwrap_err().status, 400);
        assert_eq!(absolute_target(b"ftp://x/").unwrap_err().status, 400);
    }

    #[test]
    fn connect_targets() {
        assert_eq!(
            connect_authority("CONNECT Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap(),
            ("example.com".into(), 443)
        );
        assert_eq!(
            connect_authority("CONNECT [::1]:8443 HTTP/1.1\r\n").unwrap(),
            ("[::1]".into(), 8443)
        );
        assert!(connect_authority("CONNECT example.com HTTP/1.1\r\n").is_err());
        assert!(connect_authority("CONNECT a:1 SPDY\r\n").is_err());
    }

    #[test]
    fn request_hop_by_hop_fields_are_stripped() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("Connection", "X-Drop, keep-alive"),
            ("X-Drop", "1"),
            ("Keep-Alive", "5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "x"),
            ("X-Keep", "2"),
        ] {
            req.append_header(k.to_owned(), v).unwrap();
        }
        strip_request_hop_by_hop(&mut req).unwrap();
        let names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-keep"]);
        for bad in [
            "host",
            "X-Forwarded-For",
            "a, b, c, d, e, f, g, h, i, j",
            "a b",
            "\"x-a\"",
        ] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.append_header("connection", bad).unwrap();
            assert!(strip_request_hop_by_hop(&mut req).is_err(), "{bad}");
        }
    }

    #[test]
    fn self_targets() {
        let own: SocketAddr = "127.0.0.1:15101".parse().unwrap();
        assert!(is_self(own, own));
        assert!(!is_self("127.0.0.1:80".parse().unwrap(), own));
        let any: SocketAddr = "0.0.0.0:15101".parse().unwrap();
        assert!(is_self("127.0.0.1:15101".parse().unwrap(), any));
    }

    #[tokio::test]
    async fn resolution() {
        let r = Resolver::default();
        let t = Duration::from_secs(2);
        assert_eq!(
            r.resolve("127.0.0.1", 80, t).await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            r.resolve("[::1]", 81, t).await.unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert!(
            r.resolve("localhost", 82, t)
                .await
                .unwrap()
                .ip()
                .is_loopback()
        );
        let e = r.resolve("no-such-host.invalid", 80, t).await.unwrap_err();
        assert_eq!(e.status, 502);
    }

    #[test]
    fn a_client_going_away_is_not_an_error_to_log() {
        let gone = Error::explain(ErrorType::H2Error, "Client closed H2").into_down();
        assert!(client_went_away(&gone));
        let closed = Error::new(ErrorType::ConnectionClosed).into_down();
        assert!(client_went_away(&closed));
        // The upstream failing is.
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        assert!(!client_went_away(&refused));
        let h2_upstream = Error::new(ErrorType::H2Error).into_up();
        assert!(!client_went_away(&h2_upstream));
    }

    #[test]
    fn failures_map_to_statuses() {
        let e = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(failure(&e).0, 504);
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(failure(&e).0, 502);
    }
}
