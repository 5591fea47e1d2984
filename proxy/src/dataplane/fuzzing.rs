//! Entry points into the data plane's request parsing for the fuzz targets of `vexil-fuzz` (and
//! their replay tests). Not a stable API: it wraps the crate-private injector and context mapping
//! so they can be driven without a pingora server.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;
use vexil_engine::{EvaluationContext, FlagSet};

use vexil_settings::{Problems, Settings as _};

use crate::dataplane::config::DataPlaneConfig;
use crate::dataplane::context::{ContextMapping, RequestView};
use crate::dataplane::inject::{Injector, Target};
use crate::dataplane::metrics::{DataPlaneMetrics, Listener};
use crate::snapshot::{Snapshot, SnapshotCell, Source};

/// The context extraction of a `[context]` mapping.
pub struct ContextExtractor(ContextMapping);

impl ContextExtractor {
    /// Compiles the mapping of `config` (which must validate).
    pub fn new(config: &DataPlaneConfig) -> Result<Self, Problems> {
        config.validate()?;
        ContextMapping::new(config).map(ContextExtractor)
    }

    /// The evaluation context the data plane builds for `req`, sent to `host` from `peer`.
    pub fn extract(
        &self,
        req: &RequestHeader,
        host: Option<&str>,
        peer: Option<IpAddr>,
    ) -> EvaluationContext {
        self.0.extract(&RequestView {
            headers: &req.headers,
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            host,
            scheme: "http",
            peer,
        })
    }
}

/// What one [`HeaderInjector::inject`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Bytes of header values added.
    pub bytes: usize,
    /// Decisions left out by the byte limit.
    pub dropped: u32,
    /// Flags evaluated.
    pub evaluated: u32,
}

/// The per-request header work of the data plane (incoming `vexil-flags` parsing, evaluation,
/// header writing) over a fixed flag set.
pub struct HeaderInjector(Injector);

impl HeaderInjector {
    /// An injector for `config` serving `flags` as environment `env` at `revision`.
    pub fn new(
        config: &DataPlaneConfig,
        env: &str,
        revision: i64,
        flags: FlagSet,
    ) -> Result<Self, Problems> {
        let cell = Arc::new(SnapshotCell::new());
        cell.publish(Snapshot::new(
            env,
            revision,
            flags,
            Source::File("fuzz".into()),
        ));
        Injector::new(config, cell, DataPlaneMetrics::unregistered()).map(HeaderInjector)
    }

    /// Decides `req`'s flags (for a request to `host`) and writes its headers, as the outbound
    /// listener does.
    pub fn inject(
        &self,
        req: &mut RequestHeader,
        host: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Injection {
        let target = Target {
            host,
            scheme: "http",
        };
        let out = self.0.inject(Listener::Outbound, req, &target, peer);
        Injection {
            bytes: out.bytes,
            dropped: out.dropped,
            evaluated: out.evaluated,
        }
    }

    /// Removes the `vexil-*` headers of an untrusted peer (inbound mode); true when any was there.
    pub fn strip(&self, req: &mut RequestHeader) -> bool {
        self.0
            .strip(crate::dataplane::metrics::Listener::Inbound, req)
    }
}

/// The fast path's verdict on the request head at the start of `data`: `Ok(Some(head length))`
/// served, `Ok(None)` left to pingora, `Err(reason)` refused.
pub fn fast_path_request(data: &[u8]) -> Result<Option<usize>, &'static str> {
    use crate::dataplane::framing::{MAX_HEADERS, Verdict, request};
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match request(data, &mut httparse::Request::new(&mut fields)) {
        Verdict::Serve(f) => Ok(Some(f.head_len)),
        Verdict::Fallback => Ok(None),
        Verdict::Refuse(reason) => Err(reason),
    }
}

/// The fast path's chunked decoder fed `data` in pieces of `step` bytes (at least 1): the bytes
/// it consumed, what it wrote upstream, and whether the body ended; or why it refused it.
pub fn fast_path_chunked(data: &[u8], step: usize) -> Result<(usize, Vec<u8>, bool), &'static str> {
    let mut decoder = crate::dataplane::framing::Chunked::default();
    let mut out = Vec::new();
    let mut used = 0;
    for piece in data.chunks(step.max(1)) {
        let n = decoder.feed(piece, &mut out)?;
        used += n;
        if n < piece.len() || decoder.done() {
            break;
        }
    }
    Ok((used, out, decoder.done()))
}

/// The fast path's rewrite of the upstream response head at the start of `data` for the client
/// (`Ok(None)`: incomplete).
pub fn fast_path_response(
    data: &[u8],
    head_request: bool,
) -> Result<Option<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    Ok(crate::dataplane::framing::response(data, head_request, false, &mut out)?.map(|_| out))
}
