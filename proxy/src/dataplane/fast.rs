//! The HTTP/1.1 fast path (`[downstream] fast_path`): the front serves plain keep-alive requests
//! itself instead of handing them to pingora's proxy. The framing rules are [`framing`]'s; this is
//! the I/O around them. A request goes through the same steps as in [`Sidecar`]'s hooks (inbound
//! stripping, routing and its refusals, hop-by-hop stripping, the absolute-form rewrite, the
//! decisions, latency, metrics and guarded outcomes), calling the same functions; only the
//! parsing, the body relay and the upstream connections are the fast path's own.
//!
//! Buffers belong to the connection and are reused by each of its requests. Idle upstream
//! connections are kept per worker thread ([`POOL`]): no lock, and no task watching each one (a
//! connection is checked for a close or stray bytes when it is taken).
//!
//! The request's head still becomes a pingora [`RequestHeader`] (the injection works on one),
//! whose fields pingora writes into the connection's buffer.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::apps::ServerApp;
use pingora::http::RequestHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dataplane::framing::{self, Body, Chunked, Framing, ResponseBody, Verdict};
use crate::dataplane::proxy::{
    Ctx, Front, Start, failure, original_destination_of, refusal_response, strip_request_hop_by_hop,
};

/// A response head longer than this from an upstream is a `502`.
const MAX_RESPONSE_HEAD: usize = 65_536;
/// Bytes read at a time.
const READ_SIZE: usize = 16_384;

thread_local! {
    /// This worker thread's idle upstream connections: address, connection, idle since.
    static POOL: RefCell<Vec<(SocketAddr, TcpStream, Instant)>> = const { RefCell::new(Vec::new()) };
}

/// An idle connection to `addr` of this thread that is still open and silent.
fn checkout(addr: SocketAddr, idle: Duration) -> Option<TcpStream> {
    POOL.with_borrow_mut(|pool| {
        let now = Instant::now();
        pool.retain(|(_, _, since)| now.duration_since(*since) < idle);
        while let Some(i) = pool.iter().rposition(|(a, _, _)| *a == addr) {
            let (_, stream, _) = pool.swap_remove(i);
            let mut probe = [MaybeUninit::<u8>::uninit(); 1];
            // Would block: open, and nothing unasked for arrived. Else closed, or stray bytes.
            if socket2::SockRef::from(&stream)
                .peek(&mut probe)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock)
            {
                return Some(stream);
            }
        }
        None
    })
}

/// Keeps `stream` for the thread's next request to `addr` (up to `max` idle connections).
fn checkin(addr: SocketAddr, stream: TcpStream, max: usize) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() >= max {
            if max == 0 {
                return;
            }
            pool.remove(0);
        }
        pool.push((addr, stream, Instant::now()));
    });
}

/// A request head as the fast path takes it.
// Built and moved once per request: a box would be one more allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Serve(Framing, RequestHeader),
    Fallback,
    Refuse(&'static str),
}

/// Classifies the head at the start of `buf` and, when the fast path serves it, builds its
/// [`RequestHeader`] (field names keep their case).
fn parse(buf: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let framing = match framing::request(buf, &mut req) {
        Verdict::Serve(f) => f,
        Verdict::Fallback => return Parsed::Fallback,
        Verdict::Refuse(reason) => return Parsed::Refuse(reason),
    };
    let built = RequestHeader::build(
        req.method.unwrap_or("GET"),
        req.path.unwrap_or("/").as_bytes(),
        Some(req.headers.len()),
    );
    let Ok(mut header) = built else {
        return Parsed::Fallback;
    };
    // One copy of the head; names and values are slices of it.
    let head = Bytes::copy_from_slice(&buf[..framing.head_len]);
    let slice = |part: &[u8]| {
        let at = part.as_ptr() as usize - buf.as_ptr() as usize;
        head.slice(at..at + part.len())
    };
    for h in req.headers.iter() {
        let Ok(value) = http::HeaderValue::from_maybe_shared(slice(h.value)) else {
            return Parsed::Refuse("invalid field value");
        };
        if header
            .append_header(slice(h.name.as_bytes()), value)
            .is_err()
        {
            return Parsed::Refuse("invalid field name");
        }
    }
    Parsed::Serve(framing, header)
}

/// Why a request could not be relayed.
enum Failed {
    /// The client went away or sent a bad body: close, answer nothing more.
    Client(Option<&'static str>),
    /// The upstream failed (`true`: before it sent a byte of its answer).
    Upstream(ErrorType, bool),
}

/// The connection's buffers, reused by each of its requests.
#[derive(Default)]
struct Buffers {
    /// Bytes for the upstream: the head, then body parts.
    up: Vec<u8>,
    /// Bytes read from the upstream.
    from_up: Vec<u8>,
    /// Bytes for the client.
    down: Vec<u8>,
}

/// How long a closing connection's unread request bytes are read and dropped, at most.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The most unread request bytes dropped before a close.
const LINGER_BYTES: usize = 16 << 20;

/// Closes a connection that may still have request bytes on the way (an answer before the body's
/// end, a refusal): our side is shut down first, then what the client still sends is read and
/// dropped for a while, so that closing does not reset the connection (a reset can discard the
/// answer before the client reads it; nginx's lingering close).
async fn linger(client: &mut L4Stream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.shutdown().await;
    let mut sink = [0u8; 16 << 10];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while dropped < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

impl Front {
    /// Serves the connection's requests on the fast path for as long as they qualify; `buf`
    /// holds the start of the first, whose head is complete. The first request the fast path
    /// does not take goes to pingora with the bytes read put back.
    pub(crate) async fn serve_fast(
        self: &Arc<Self>,
        mut client: Box<L4Stream>,
        mut buf: Vec<u8>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut io = Buffers::default();
        loop {
            let (framing, req) = match parse(&buf) {
                Parsed::Serve(f, req) => (f, req),
                Parsed::Fallback => {
                    client.rewind(&buf);
                    return self.http.process_new(client, shutdown).await;
                }
                Parsed::Refuse(reason) => {
                    self.refuse(&mut client, &mut Ctx::default(), 400, reason)
                        .await;
                    linger(&mut client).await;
                    return None;
                }
            };
            buf.drain(..framing.head_len);
            let again = self
                .exchange(&mut client, &mut buf, &mut io, req, framing)
                .await;
            if !again {
                linger(&mut client).await;
                return None;
            }
            if *shutdown.borrow() {
                return None;
            }
            match self.read_head(&mut client, &mut buf, shutdown).await? {
                Start::Http1 => {}
                start => {
                    client.rewind(&buf);
                    return self.dispatch(start, client, shutdown).await;
                }
            }
        }
    }

    /// Answers `status` with `reason` and closes; the request is counted.
    async fn refuse(&self, client: &mut L4Stream, ctx: &mut Ctx, status: u16, reason: &str) {
        let _ = client.write_all(&refusal_response(status, reason)).await;
        let _ = client.flush().await;
        self.sidecar.finish(status, ctx);
    }

    /// One request whose head was read: routed, decided, sent, answered. True when the
    /// connection may serve another.
    async fn exchange(
        &self,
        client: &mut L4Stream,
        buf: &mut Vec<u8>,
        io: &mut Buffers,
        mut req: RequestHeader,
        framing: Framing,
    ) -> bool {
        let sc = &self.sidecar;
        let mut ctx = Ctx::default();
        let digest = client.get_socket_digest();
        let peer: Option<IpAddr> = digest
            .as_deref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // As the hooks do it: request_filter, pingora's hop-by-hop stripping, then
        // upstream_request_filter.
        sc.strip_untrusted(&mut req, peer);
        let original = || {
            digest
                .as_deref()
                .and_then(|d| original_destination_of(d, sc.own_addr))
        };
        if let Err(r) = sc.route(&req, original, &mut ctx).await {
            self.refuse(client, &mut ctx, r.status, &r.reason).await;
            return false;
        }
        if let Err(reason) = strip_request_hop_by_hop(&mut req) {
            self.refuse(client, &mut ctx, 400, reason).await;
            return false;
        }
        if sc.prepare(&mut req, &mut ctx, peer).is_err() {
            self.refuse(client, &mut ctx, 400, "malformed request target")
                .await;
            return false;
        }
        if framing.body == Body::Chunked {
            let _ = req.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
        // A target from httparse or a rewritten URI has none of these; checked all the same.
        if req
            .raw_path()
            .iter()
            .any(|&b| matches!(b, 0 | b'\r' | b'\n' | b' '))
        {
            self.refuse(client, &mut ctx, 400, "malformed request target")
                .await;
            return false;
        }
        let Some(addr) = ctx.dest else {
            self.refuse(client, &mut ctx, 502, "proxy error").await;
            return false;
        };
        // The body's start, re-framed, goes with the head; a bad chunk in it is refused before
        // anything is sent.
        // The head as pingora writes it (field names in their case), into the connection's
        // buffer.
        io.up.clear();
        io.up.extend_from_slice(req.method.as_str().as_bytes());
        io.up.push(b' ');
        io.up.extend_from_slice(req.raw_path());
        io.up.extend_from_slice(b" HTTP/1.1\r\n");
        req.header_to_h1_wire(&mut io.up);
        io.up.extend_from_slice(b"\r\n");
        let mut chunked = Chunked::default();
        let mut left = match framing.body {
            Body::Empty => 0,
            Body::Length(n) => {
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                io.up.extend_from_slice(&buf[..take]);
                buf.drain(..take);
                n - take as u64
            }
            Body::Chunked => match chunked.feed(buf, &mut io.up) {
                Ok(used) => {
                    buf.drain(..used);
                    0
                }
                Err(reason) => {
                    self.refuse(client, &mut ctx, 400, reason).await;
                    return false;
                }
            },
        };
        let head_request = req.method == http::Method::HEAD;
        let mut retried = false;
        // `whole`: the request went whole (else the upstream answered before the body's end,
        // and neither connection can carry another request).
        let (mut up, resp, whole) = loop {
            let (mut up, reused) = match checkout(addr, sc.timeouts.idle) {
                Some(s) => (s, true),
                None => match connect(addr, sc.timeouts.connect).await {
                    Ok(s) => (s, false),
                    Err(e) => return self.failed(client, &mut ctx, e).await,
                },
            };
            let sent = async {
                if !write_up(&mut up, &io.up, sc.timeouts.read).await? {
                    return Ok(false);
                }
                self.relay_body(
                    client,
                    &mut up,
                    buf,
                    io,
                    framing.body,
                    &mut chunked,
                    &mut left,
                )
                .await
            };
            let result = match sent.await {
                Ok(whole) => self
                    .response_head(&mut up, io, head_request, framing.close || !whole)
                    .await
                    .map(|resp| (resp, whole)),
                Err(e) => Err(e),
            };
            match result {
                Ok((resp, whole)) => break (up, resp, whole),
                // A pooled connection the upstream closed meanwhile: once more on a new one,
                // when nothing of the request is lost (no body read from the client).
                Err(Failed::Upstream(_, true))
                    if reused && !retried && framing.body == Body::Empty =>
                {
                    retried = true;
                }
                Err(Failed::Client(Some(reason))) => {
                    self.refuse(client, &mut ctx, 400, reason).await;
                    return false;
                }
                Err(Failed::Client(None)) => {
                    sc.finish(0, &mut ctx);
                    return false;
                }
                Err(Failed::Upstream(e, _)) => return self.failed(client, &mut ctx, e).await,
            }
        };
        sc.answered(resp.status, &mut ctx);
        let relayed = self.relay_response(client, &mut up, io, resp.body).await;
        if let Err(Failed::Upstream(e, true)) = relayed {
            // Nothing of the answer reached the client (a bad first chunk, say): a `502` instead.
            return self.failed(client, &mut ctx, e).await;
        }
        let _ = client.flush().await;
        sc.finish(resp.status, &mut ctx);
        match relayed {
            Ok(clean) => {
                if clean && whole && !resp.upstream_close {
                    checkin(addr, up, self.pool_size);
                }
                whole && !resp.client_close && !framing.close
            }
            Err(_) => false,
        }
    }

    /// Answers an upstream failure (or nothing when the client is gone); the connection closes.
    async fn failed(&self, client: &mut L4Stream, ctx: &mut Ctx, e: ErrorType) -> bool {
        let (status, reason) = failure(&Error::new(e).into_up());
        self.refuse(client, ctx, status, reason).await;
        false
    }

    /// Sends the rest of the request body: `left` bytes of a `Content-Length` body, or chunks
    /// until the last one. `Ok(false)`: the upstream answered before the body's end (a `413`,
    /// say); the rest is not sent.
    #[allow(clippy::too_many_arguments)]
    async fn relay_body(
        &self,
        client: &mut L4Stream,
        up: &mut TcpStream,
        buf: &mut Vec<u8>,
        io: &mut Buffers,
        body: Body,
        chunked: &mut Chunked,
        left: &mut u64,
    ) -> Result<bool, Failed> {
        let read_timeout = self.sidecar.timeouts.read;
        loop {
            let more = match body {
                Body::Empty => false,
                Body::Length(_) => *left > 0,
                Body::Chunked => !chunked.done(),
            };
            if !more {
                return Ok(true);
            }
            buf.reserve(READ_SIZE);
            let mut probe = [0u8; 1];
            let read = tokio::select! {
                biased;
                r = tokio::time::timeout(self.limits.first_byte, client.read_buf(buf)) => r,
                p = up.peek(&mut probe) => return answering(p),
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(Failed::Client(None)),
            }
            io.up.clear();
            if body == Body::Chunked {
                let used = chunked
                    .feed(buf, &mut io.up)
                    .map_err(|r| Failed::Client(Some(r)))?;
                buf.drain(..used);
            } else {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                io.up.extend_from_slice(&buf[..take]);
                buf.drain(..take);
                *left -= take as u64;
            }
            if !write_up(up, &io.up, read_timeout).await? {
                return Ok(false);
            }
        }
    }

    /// Reads the upstream's response head (relaying informational ones) and writes it for the
    /// client into `io.down`, with the body's start after it in `io.from_up`.
    async fn response_head(
        &self,
        up: &mut TcpStream,
        io: &mut Buffers,
        head_request: bool,
        client_close: bool,
    ) -> Result<framing::ResponseHead, Failed> {
        io.from_up.clear();
        io.down.clear();
        let mut answered = false;
        loop {
            let parsed = framing::response(&io.from_up, head_request, client_close, &mut io.down)
                .map_err(|_| Failed::Upstream(ErrorType::InvalidHTTPHeader, false))?;
            match parsed {
                Some(head) if (100..200).contains(&head.status) => {
                    // Informational: goes to the client with the final head.
                    io.from_up.drain(..head.head_len);
                    answered = true;
                }
                Some(head) => {
                    io.from_up.drain(..head.head_len);
                    return Ok(head);
                }
                None if io.from_up.len() > MAX_RESPONSE_HEAD => {
                    return Err(Failed::Upstream(ErrorType::InvalidHTTPHeader, false));
                }
                None => {
                    read_up(up, &mut io.from_up, self.sidecar.timeouts.read)
                        .await
                        .map_err(|e| Failed::Upstream(e, !answered && io.from_up.is_empty()))?;
                }
            }
        }
    }

    /// Relays the response body to the client after the head in `io.down`. `Ok(true)`: the
    /// upstream connection ended cleanly at the body's end and may be reused. An upstream failure
    /// says whether the client has had nothing yet (the head goes out with the body's start).
    async fn relay_response(
        &self,
        client: &mut L4Stream,
        up: &mut TcpStream,
        io: &mut Buffers,
        body: ResponseBody,
    ) -> Result<bool, Failed> {
        let timeout = self.sidecar.timeouts.read;
        let mut chunked = Chunked::default();
        let mut left = match body {
            ResponseBody::Length(n) => n,
            _ => 0,
        };
        let mut wrote = false;
        loop {
            // What was read goes out: all of it, or up to the body's end.
            let used = match body {
                ResponseBody::Empty => 0,
                ResponseBody::Length(_) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(io.from_up.len());
                    io.down.extend_from_slice(&io.from_up[..take]);
                    left -= take as u64;
                    take
                }
                ResponseBody::Chunked => chunked
                    .feed(&io.from_up, &mut io.down)
                    .map_err(|_| Failed::Upstream(ErrorType::InvalidHTTPHeader, !wrote))?,
                ResponseBody::UntilClose => {
                    io.down.extend_from_slice(&io.from_up);
                    io.from_up.len()
                }
            };
            io.from_up.drain(..used);
            if !io.down.is_empty() {
                wrote = true;
                client
                    .write_all(&io.down)
                    .await
                    .map_err(|_| Failed::Client(None))?;
                io.down.clear();
            }
            let done = match body {
                ResponseBody::Empty => true,
                ResponseBody::Length(_) => left == 0,
                ResponseBody::Chunked => chunked.done(),
                ResponseBody::UntilClose => false,
            };
            if done {
                return Ok(io.from_up.is_empty());
            }
            match read_up(up, &mut io.from_up, timeout).await {
                Ok(()) => {}
                Err(ErrorType::ConnectionClosed) if body == ResponseBody::UntilClose => {
                    return Ok(false);
                }
                Err(e) => return Err(Failed::Upstream(e, !wrote)),
            }
        }
    }
}

/// A new connection to `addr`.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ErrorType> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ErrorType::ConnectTimedout),
        Ok(Err(e)) => Err(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
            std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                ErrorType::ConnectNoRoute
            }
            _ => ErrorType::ConnectError,
        }),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Writes `bytes` to the upstream within `timeout`; `Ok(false)` when the upstream starts
/// answering first (the rest is not written).
async fn write_up(up: &mut TcpStream, bytes: &[u8], timeout: Duration) -> Result<bool, Failed> {
    let (mut reader, mut writer) = up.split();
    let mut probe = [0u8; 1];
    tokio::select! {
        biased;
        w = tokio::time::timeout(timeout, writer.write_all(bytes)) => match w {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => Err(Failed::Upstream(ErrorType::WriteError, true)),
            Err(_) => Err(Failed::Upstream(ErrorType::WriteTimedout, false)),
        },
        p = reader.peek(&mut probe) => answering(p),
    }
}

/// What a peek at the upstream while sending means: it answers (`Ok(false)`), or it closed or
/// failed before answering.
fn answering(peeked: std::io::Result<usize>) -> Result<bool, Failed> {
    match peeked {
        Ok(n) if n > 0 => Ok(false),
        _ => Err(Failed::Upstream(ErrorType::ConnectionClosed, true)),
    }
}

/// Reads more of the upstream's answer into `buf` within `timeout`.
async fn read_up(
    up: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), ErrorType> {
    buf.reserve(READ_SIZE);
    match tokio::time::timeout(timeout, up.read_buf(buf)).await {
        Ok(Ok(0)) => Err(ErrorType::ConnectionClosed),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(ErrorType::ReadError),
        Err(_) => Err(ErrorType::ReadTimedout),
    }
}
