//! A small HTTP/1.1 client and echo server for the load: keep-alive connections that write a
//! prepared request and read the answer (`Content-Length` or chunked), with as little work per
//! request as possible, so the generator's own cost stays small next to what it measures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::Call;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// Header values the caller asked to keep (lower-case names), in request order.
    pub kept: Vec<Option<String>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
        })
    }

    /// Writes `request` (a complete HTTP/1.1 request) and reads the answer, keeping the values of
    /// the headers named in `keep`.
    pub async fn exchange(&mut self, request: &[u8], keep: &[&str]) -> anyhow::Result<Answer> {
        self.stream.write_all(request).await?;
        self.read_answer(keep).await
    }

    async fn read_answer(&mut self, keep: &[&str]) -> anyhow::Result<Answer> {
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&self.buf)? {
                let status = response.code.unwrap_or(0);
                let framing = Framing::of(response.headers)?;
                let kept = keep
                    .iter()
                    .map(|name| header(response.headers, name))
                    .collect();
                let body = self.read_body(head_len, framing).await?;
                return Ok(Answer { status, body, kept });
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes into the buffer; an error at the end of the stream.
    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed by the server");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_body(&mut self, head_len: usize, framing: Framing) -> anyhow::Result<Vec<u8>> {
        match framing {
            Framing::Length(len) => {
                while self.buf.len() < head_len + len {
                    self.fill().await?;
                }
                Ok(self.buf[head_len..head_len + len].to_vec())
            }
            Framing::Chunked => self.read_chunked(head_len).await,
        }
    }

    async fn read_chunked(&mut self, mut at: usize) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find_crlf(&self.buf[at..]) {
                    break at + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[at..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            at = line_end + 2;
            // chunk data plus its CRLF (the last chunk: just the final CRLF, no trailers expected)
            while self.buf.len() < at + size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn header(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
}

enum Framing {
    Length(usize),
    Chunked,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> anyhow::Result<Framing> {
        if header(headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            return Ok(Framing::Chunked);
        }
        Ok(Framing::Length(match header(headers, "content-length") {
            Some(v) => v.trim().parse()?,
            None => 0,
        }))
    }
}

/// Keep-alive connections to one address, opened as needed and reused.
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    /// At most this many connections at once, when set: further requests wait for one.
    limit: Option<Arc<tokio::sync::Semaphore>>,
}

impl Pool {
    /// An empty pool for `addr`, opening as many connections as requests in flight.
    pub fn new(addr: SocketAddr) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            limit: None,
        })
    }

    /// An empty pool for `addr` that opens at most `max` connections, as an application's HTTP
    /// client pool does; a request waits for a free connection (an open-loop caller still charges
    /// that wait to the request's latency).
    pub fn with_limit(addr: SocketAddr, max: usize) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            limit: Some(Arc::new(tokio::sync::Semaphore::new(max))),
        })
    }

    /// Sends `request` on an idle connection (or a new one) and puts it back after a full answer.
    ///
    /// Like any HTTP client's pool, it sends again once on a new connection when a pooled one
    /// fails: the server may have closed it while it sat idle (the sidecar closes keep-alive
    /// connections idle for 60 s). A failure on a new connection is the answer.
    pub async fn exchange(&self, request: &[u8], keep: &[&str]) -> anyhow::Result<Answer> {
        let _permit = match &self.limit {
            Some(limit) => Some(limit.acquire().await?),
            None => None,
        };
        let idle = self.idle.lock().expect("pool").pop();
        if let Some(mut conn) = idle
            && let Ok(answer) = conn.exchange(request, keep).await
        {
            self.idle.lock().expect("pool").push(conn);
            return Ok(answer);
        }
        let mut conn = Conn::connect(self.addr).await?;
        let answer = conn.exchange(request, keep).await?;
        self.idle.lock().expect("pool").push(conn);
        Ok(answer)
    }
}

/// A prepared request sent through a [`Pool`], answered with an expected status.
#[derive(Clone)]
pub struct HttpCall {
    pool: Arc<Pool>,
    /// The requests sent in turn (one, usually).
    requests: Arc<[Arc<[u8]>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    expect: u16,
}

impl HttpCall {
    /// `request` (complete bytes) to `pool`, expecting `expect`.
    pub fn new(pool: Arc<Pool>, request: Vec<u8>, expect: u16) -> HttpCall {
        Self::rotating(pool, vec![request], expect)
    }

    /// Each of `requests` in turn, over and over (e.g. as many users), expecting `expect`.
    pub fn rotating(pool: Arc<Pool>, requests: Vec<Vec<u8>>, expect: u16) -> HttpCall {
        assert!(!requests.is_empty(), "no request to send");
        HttpCall {
            pool,
            requests: requests.into_iter().map(Arc::from).collect(),
            next: Arc::default(),
            expect,
        }
    }
}

impl Call for HttpCall {
    async fn call(&self) -> anyhow::Result<()> {
        let i = if self.requests.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.requests.len()
        };
        let answer = self.pool.exchange(&self.requests[i], &[]).await?;
        anyhow::ensure!(
            answer.status == self.expect,
            "status {} (expected {}): {}",
            answer.status,
            self.expect,
            String::from_utf8_lossy(&answer.body)
        );
        Ok(())
    }
}

/// `POST path` with a JSON body, keep-alive.
pub fn post_json(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `GET target` with extra header lines (each `name: value`), keep-alive.
pub fn get(host: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// What the echo upstream has seen.
#[derive(Default, Debug)]
pub struct EchoStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests that carried a `vexil-flags` header.
    pub with_flags: AtomicU64,
    /// Members of the last `vexil-flags` header seen.
    pub last_members: AtomicU64,
}

/// Serves every request on `listener` with `200 ok` and `x-echo-vexil-flags: <members>` (the
/// number of members of the request's `vexil-flags` header, 0 without one).
pub fn serve_echo(listener: TcpListener) -> (Arc<EchoStats>, tokio::task::JoinHandle<()>) {
    serve(listener, false)
}

/// Like [`serve_echo`], and also mirrors the decisions the request carried back to the caller:
/// `x-echo-flags` with the request's `vexil-flags` value and `x-echo-revision` with its
/// `vexil-revision` (each absent when the request had none).
pub fn serve_mirror(listener: TcpListener) -> (Arc<EchoStats>, tokio::task::JoinHandle<()>) {
    serve(listener, true)
}

fn serve(listener: TcpListener, mirror: bool) -> (Arc<EchoStats>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(EchoStats::default());
    let s = stats.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(echo_connection(stream, s.clone(), mirror));
        }
    });
    (stats, task)
}

async fn echo_connection(mut stream: TcpStream, stats: Arc<EchoStats>, mirror: bool) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // Answer every complete request in the buffer.
        while let Some(request) = parse_request(&buf, mirror) {
            buf.drain(..request.len);
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = request.members {
                stats.with_flags.fetch_add(1, Ordering::Relaxed);
                stats.last_members.store(m, Ordering::Relaxed);
            }
            let mut response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-echo-vexil-flags: {}\r\n",
                request.members.unwrap_or(0)
            );
            for (name, value) in [
                ("x-echo-flags", request.flags),
                ("x-echo-revision", request.revision),
            ] {
                if let Some(v) = value {
                    response.push_str(&format!("{name}: {v}\r\n"));
                }
            }
            response.push_str("\r\nok");
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A complete request at the start of a buffer.
struct Request {
    /// Its length, head and body.
    len: usize,
    /// Members of its `vexil-flags` header.
    members: Option<u64>,
    /// Mirror mode: the `vexil-flags` value.
    flags: Option<String>,
    /// Mirror mode: the `vexil-revision` value.
    revision: Option<String>,
}

/// The complete request at the start of `buf`, if there is one.
fn parse_request(buf: &[u8], mirror: bool) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(buf).ok()? else {
        return None;
    };
    let body: usize = header(request.headers, "content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if buf.len() < head + body {
        return None;
    }
    let flags = header(request.headers, "vexil-flags");
    let members = flags.as_ref().map(|v| v.split(',').count() as u64);
    let (flags, revision) = if mirror {
        (flags, header(request.headers, "vexil-revision"))
    } else {
        (None, None)
    };
    Some(Request {
        len: head + body,
        members,
        flags,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_client_talks_to_the_echo_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stats, _task) = serve_echo(listener);
        let pool = Pool::new(addr);
        let plain = get("x", "/a", &[]);
        let flagged = get("x", "/b", &[("vexil-flags", "a=?1, b=2, c=\"x\"")]);
        for _ in 0..3 {
            let a = pool
                .exchange(&plain, &["x-echo-vexil-flags"])
                .await
                .unwrap();
            assert_eq!((a.status, a.body.as_slice()), (200, b"ok".as_slice()));
            assert_eq!(a.kept, [Some("0".to_string())]);
        }
        let a = pool
            .exchange(&flagged, &["x-echo-vexil-flags"])
            .await
            .unwrap();
        assert_eq!(a.kept, [Some("3".to_string())]);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 4);
        assert_eq!(stats.with_flags.load(Ordering::Relaxed), 1);
        // one connection, reused
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_mirror_echoes_the_decisions_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stats, _task) = serve_mirror(listener);
        let pool = Pool::new(addr);
        let keep = ["x-echo-flags", "x-echo-revision"];
        let a = pool.exchange(&get("x", "/", &[]), &keep).await.unwrap();
        assert_eq!(a.kept, [None, None]);
        let flagged = get(
            "x",
            "/",
            &[("vexil-flags", "seq=7, on=?1"), ("vexil-revision", "e@7")],
        );
        let a = pool.exchange(&flagged, &keep).await.unwrap();
        assert_eq!(
            a.kept,
            [Some("seq=7, on=?1".to_string()), Some("e@7".to_string())]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chunked_answers_are_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let mut c = Conn::connect(addr).await.unwrap();
        let a = c.exchange(&get("x", "/", &[]), &[]).await.unwrap();
        assert_eq!(a.body, b"abcde");
    }
}
