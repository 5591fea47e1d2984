//! The HTTP/1.1 fast path against pingora's path, on the same raw requests: two data planes
//! (`[downstream] fast_path` on and off), each in front of its own raw TCP upstream that records
//! the exact bytes it receives and answers `200 ok` to every request it can frame. For every case
//! of the corpus the test compares what each upstream received and the statuses each client got.
//!
//! What legitimately differs, and is normalised before comparing:
//! - header field order and the case of field names (pingora and the fast path insert `Host`
//!   and the decisions at different places; names are compared lowercase, fields sorted);
//! - chunk boundaries: both re-frame a chunked body (sizes in lowercase hex, extensions and
//!   trailers dropped), so chunked bodies are compared decoded.
//!
//! Where pingora forwards something ambiguous (see [`STRICTER`]), the fast path must refuse it
//! with `400` and forward nothing; each such case says what pingora does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vexil_engine::FlagSet;
use vexil_proxy::dataplane::{self, DataPlaneConfig, DataPlaneHandle, Listeners};
use vexil_proxy::metrics::Metrics;
use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};
use vexil_testkit::free_addr;

const MAPPING: &str = r#"
[context]
targetingKey = ["header:x-user-id"]
"#;

/// The corpus: name and the writes of one client connection (`{up}` is the upstream's address;
/// a pause follows each write).
const CASES: &[(&str, &[&str])] = &[
    // Valid requests.
    (
        "get-absolute",
        &["GET http://{up}/a?b=1 HTTP/1.1\r\nHost: {up}\r\nX-User-Id: vip\r\n\r\n"],
    ),
    (
        "get-host-routed",
        &["GET /a HTTP/1.1\r\nHost: {up}\r\nAccept: */*\r\n\r\n"],
    ),
    (
        "absolute-form-host-differs",
        &["GET http://{up}/x HTTP/1.1\r\nHost: elsewhere.invalid\r\n\r\n"],
    ),
    (
        "post-content-length",
        &["POST /p HTTP/1.1\r\nHost: {up}\r\nContent-Length: 5\r\n\r\nhello"],
    ),
    (
        "post-body-later",
        &[
            "POST /p HTTP/1.1\r\nHost: {up}\r\nContent-Length: 11\r\n\r\nhello",
            " world",
        ],
    ),
    (
        "chunked-with-trailers",
        &[
            "POST /c HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nB\r\n, chunked!!\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ],
    ),
    (
        "chunked-in-pieces",
        &[
            "POST /c HTTP/1.1\r\nHost: {up}\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nab",
            "c\r\n0\r",
            "\n\r\n",
        ],
    ),
    (
        "pipelined",
        &[
            "GET /1 HTTP/1.1\r\nHost: {up}\r\n\r\nPOST /2 HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: {up}\r\n\r\n",
        ],
    ),
    (
        "keep-alive-reuse",
        &[
            "GET /1 HTTP/1.1\r\nHost: {up}\r\n\r\n",
            "GET /2 HTTP/1.1\r\nHost: {up}\r\nX-User-Id: vip\r\n\r\n",
        ],
    ),
    (
        "connection-close",
        &[
            "GET / HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\nHost: {up}\r\n\r\n",
        ],
    ),
    (
        "hop-by-hop",
        &[
            "GET / HTTP/1.1\r\nHost: {up}\r\nConnection: x-drop, keep-alive\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\nTE: trailers\r\nX-Keep: 2\r\n\r\n",
        ],
    ),
    (
        "decisions-forwarded",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nvexil-flags: checkout=?1\r\n\r\n"],
    ),
    (
        "http10-keep-alive",
        &[
            "GET / HTTP/1.0\r\nHost: {up}\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nHost: {up}\r\n\r\n",
        ],
    ),
    ("head-request", &["HEAD / HTTP/1.1\r\nHost: {up}\r\n\r\n"]),
    (
        "expect-continue",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"],
    ),
    (
        "head-over-64k",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nX-Big: {70k}\r\n\r\n"],
    ),
    (
        "head-over-1mib",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nX-Big: {1100k}\r\n\r\n"],
    ),
    // Smuggling and malformed framing.
    (
        "cl-and-te",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {up}\r\n\r\n",
        ],
    ),
    (
        "te-and-cl",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        ],
    ),
    (
        "two-content-lengths",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi"],
    ),
    (
        "two-different-content-lengths",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nhi"],
    ),
    (
        "content-length-list",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: 2, 2\r\n\r\nhi"],
    ),
    (
        "content-length-sign",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: +2\r\n\r\nhi"],
    ),
    (
        "content-length-spaces",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nContent-Length: 1 2\r\n\r\nhi"],
    ),
    (
        "chunked-not-last",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"],
    ),
    (
        "gzip-then-chunked",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"],
    ),
    (
        "xchunked",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"],
    ),
    (
        "two-te-lines",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ],
    ),
    (
        "obs-fold",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nX-A: 1\r\n X-B: 2\r\n\r\n"],
    ),
    ("bare-lf-lines", &["GET / HTTP/1.1\nHost: {up}\nX-A: 1\n\n"]),
    (
        "bare-lf-one-line",
        &["GET / HTTP/1.1\r\nHost: {up}\nX-A: 1\r\n\r\n"],
    ),
    ("bare-cr", &["GET / HTTP/1.1\r\nHost: {up}\rX-A: 1\r\n\r\n"]),
    (
        "nul-in-field",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nX-A: a\0b\r\n\r\n"],
    ),
    (
        "space-before-colon",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nContent-Length : 2\r\n\r\nhi"],
    ),
    (
        "two-spaces-in-request-line",
        &["GET  / HTTP/1.1\r\nHost: {up}\r\n\r\n"],
    ),
    (
        "chunk-size-not-hex",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n",
        ],
    ),
    (
        "chunk-size-overflow",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        ],
    ),
    (
        "chunk-data-too-long",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        ],
    ),
    (
        "chunk-missing-final-crlf",
        &["POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"],
    ),
    (
        "chunk-size-bare-lf",
        &[
            "POST / HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        ],
    ),
    ("no-host", &["GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"]),
    (
        "connection-nominates-host",
        &["GET / HTTP/1.1\r\nHost: {up}\r\nConnection: host\r\n\r\n"],
    ),
];

/// Cases where pingora forwards what the fast path refuses, and what pingora does with them.
const STRICTER: &[(&str, &str)] = &[
    (
        "cl-and-te",
        "pingora drops Content-Length, reads the body as chunked, closes after",
    ),
    (
        "te-and-cl",
        "pingora drops Content-Length, reads the body as chunked, closes after",
    ),
    (
        "two-content-lengths",
        "pingora takes identical Content-Length fields as one",
    ),
    (
        "content-length-list",
        "pingora forwards `Content-Length: 2, 2` as it came",
    ),
    (
        "gzip-then-chunked",
        "pingora forwards as chunked, the gzip coding lost",
    ),
    ("two-te-lines", "pingora forwards as chunked"),
    (
        "bare-lf-lines",
        "pingora (httparse) takes LF as a line ending",
    ),
    (
        "bare-lf-one-line",
        "pingora (httparse) takes LF as a line ending",
    ),
    // Both answer 400; pingora has sent the head upstream before it reads the bad chunk line,
    // the fast path checks the body bytes it already holds before it connects.
    (
        "chunk-size-not-hex",
        "pingora sends the head upstream first",
    ),
    (
        "chunk-size-overflow",
        "pingora sends the head upstream first",
    ),
    (
        "chunk-data-too-long",
        "pingora sends the head upstream first",
    ),
    (
        "chunk-size-bare-lf",
        "pingora sends the head upstream first",
    ),
];

/// Cases where the fast path serves what pingora's path does not, and why that is right.
const BETTER: &[(&str, &str)] = &[(
    "pipelined",
    "pingora serves pipelined requests only in a session that opts in (`set_pipelining_enabled`), \
     which the sidecar's does not: it answers the first and no more; the fast path answers each",
)];

/// A raw upstream: records every request as received, answers each it can frame, counts the
/// connections it accepted.
#[derive(Clone, Default)]
struct Recorder(
    Arc<Mutex<Vec<Vec<u8>>>>,
    Arc<std::sync::atomic::AtomicUsize>,
);

impl Recorder {
    async fn start(self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(self.clone().serve(s));
            }
        });
        addr
    }

    async fn serve(self, mut s: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match request_len(&buf) {
                Some(Ok(n)) => {
                    self.0.lock().unwrap().push(buf.drain(..n).collect());
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Some(Err(())) => break,
                None => {}
            }
            match s.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        if !buf.is_empty() {
            let mut rest = b"(unframed) ".to_vec();
            rest.extend_from_slice(&buf);
            self.0.lock().unwrap().push(rest);
        }
    }

    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The length of the request at the start of `buf` (`None`: incomplete, `Err`: unframeable).
fn request_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Err(())),
    };
    let field = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    if field("transfer-encoding").is_some() {
        let (body, complete) = dechunk(&buf[head..]);
        return complete.then_some(Ok(head + body));
    }
    let len: usize = match field("content-length") {
        Some(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => return Some(Err(())),
        },
        None => 0,
    };
    (buf.len() >= head + len).then_some(Ok(head + len))
}

/// A chunked body at the start of `b`: (bytes it spans, whether complete); [`decoded`] gives its
/// data.
fn dechunk(b: &[u8]) -> (usize, bool) {
    let mut i = 0;
    loop {
        let Some(eol) = find(&b[i..], b"\r\n") else {
            return (b.len(), false);
        };
        let line = String::from_utf8_lossy(&b[i..i + eol]);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16);
        let Ok(size) = size else {
            return (b.len(), false);
        };
        i += eol + 2;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                let Some(eol) = find(&b[i..], b"\r\n") else {
                    return (b.len(), false);
                };
                i += eol + 2;
                if eol == 0 {
                    return (i, true);
                }
            }
        }
        if b.len() < i + size + 2 {
            return (b.len(), false);
        }
        i += size + 2;
    }
}

/// The data of a (complete or not) chunked body.
fn decoded(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(eol) = find(&b[i..], b"\r\n") {
        let line = String::from_utf8_lossy(&b[i..i + eol]);
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        i += eol + 2;
        if size == 0 {
            break;
        }
        let end = (i + size).min(b.len());
        out.extend_from_slice(&b[i..end]);
        i = (end + 2).min(b.len());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A request as received, normalised: request line, sorted `name: value` lines (names
/// lowercase), and the body (decoded when chunked, marked so).
fn normalise(raw: &[u8]) -> String {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return String::from_utf8_lossy(raw).into_owned();
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_owned();
    let mut fields: Vec<String> = lines
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}: {}", n.to_ascii_lowercase(), v.trim()),
            None => l.to_owned(),
        })
        .collect();
    fields.sort();
    let chunked = fields.iter().any(|f| f.starts_with("transfer-encoding:"));
    let body = &raw[end + 4..];
    let body = if chunked {
        format!("(chunked) {}", String::from_utf8_lossy(&decoded(body)))
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    format!("{first}\n{}\n\n{body}", fields.join("\n"))
}

/// The statuses of the responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(end) = find(&bytes[i..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[i..i + end]).to_ascii_lowercase();
        out.push(
            head.split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        );
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        i += end + 4 + len;
        if i >= bytes.len() {
            break;
        }
    }
    out
}

/// A data plane in front of its recording upstream.
struct Side {
    _dp: DataPlaneHandle,
    proxy: SocketAddr,
    up: SocketAddr,
    recorder: Recorder,
}

impl Side {
    async fn start(fast: bool) -> Side {
        let recorder = Recorder::default();
        let up = recorder.clone().start().await;
        let cell = Arc::new(SnapshotCell::new());
        let flags = json!({"flags": {
            "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", null]}},
            "layout": {"state": "ENABLED", "variants": {"grid": "grid"}, "defaultVariant": "grid"}
        }});
        let set = FlagSet::from_json(&flags).unwrap();
        cell.publish(Snapshot::new("test", 1, set, Source::File("t".into())));
        let metrics = Arc::new(Metrics::new(cell.clone()));
        let config = format!("{MAPPING}\n[downstream]\nfast_path = {fast}\n");
        let config = DataPlaneConfig::from_toml_str(&config).unwrap();
        let listeners = Listeners {
            outbound: free_addr(),
            inbound: None,
        };
        let dp = tokio::task::spawn_blocking(move || {
            dataplane::start(config, listeners, 1, Duration::from_secs(1), cell, metrics)
        })
        .await
        .unwrap()
        .unwrap();
        Side {
            _dp: dp,
            proxy: listeners.outbound,
            up,
            recorder,
        }
    }

    /// Runs a case: (the statuses the client got, the requests the upstream received).
    async fn run(&self, writes: &[&str]) -> (Vec<u16>, Vec<String>) {
        let mut s = TcpStream::connect(self.proxy).await.unwrap();
        let mut got = Vec::new();
        for w in writes {
            let w = w
                .replace("{up}", &self.up.to_string())
                .replace("{70k}", &"b".repeat(70 << 10))
                .replace("{1100k}", &"b".repeat(1100 << 10));
            let _ = s.write_all(w.as_bytes()).await;
            // Whatever comes back until the connection is quiet for a while.
            let mut chunk = [0u8; 8192];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = self.recorder.take();
        (statuses(&got), seen.iter().map(|r| normalise(r)).collect())
    }
}

/// Every case of the corpus through both paths: the same upstream bytes (normalised) and the
/// same statuses, except where the fast path is stricter, which it must be exactly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_frames_like_pingora_or_stricter() {
    let (fast, slow) = tokio::join!(Side::start(true), Side::start(false));
    let mut report = String::new();
    let mut wrong = Vec::new();
    for (name, writes) in CASES {
        let ((f_status, f_seen), (s_status, s_seen)) =
            tokio::join!(fast.run(writes), slow.run(writes));
        let f_seen: Vec<String> = f_seen
            .iter()
            .map(|r| r.replace(&fast.up.to_string(), "{up}"))
            .collect();
        let s_seen: Vec<String> = s_seen
            .iter()
            .map(|r| r.replace(&slow.up.to_string(), "{up}"))
            .collect();
        let stricter = STRICTER.iter().find(|(n, _)| n == name);
        report.push_str(&format!(
            "{name}: fast {f_status:?} ({} forwarded), pingora {s_status:?} ({} forwarded)\n",
            f_seen.len(),
            s_seen.len()
        ));
        if let Some((_, why)) = BETTER.iter().find(|(n, _)| n == name) {
            let n = writes.concat().matches(" HTTP/1.1\r\n").count();
            if f_status != vec![200; n] || f_seen.len() != n || s_seen.first() != f_seen.first() {
                wrong.push(format!(
                    "{name}: ({why}) fast path {f_status:?} forwarded {f_seen:#?}"
                ));
            }
            continue;
        }
        match stricter {
            Some((_, why)) => {
                if f_status != [400] || !f_seen.is_empty() {
                    wrong.push(format!("{name}: the fast path must refuse it, got {f_status:?}, forwarded {f_seen:#?}"));
                }
                if s_status == f_status && s_seen == f_seen {
                    wrong.push(format!(
                        "{name}: listed as stricter ({why}) but pingora does the same"
                    ));
                }
            }
            None => {
                if f_status != s_status || f_seen != s_seen {
                    wrong.push(format!(
                        "{name}: fast path {f_status:?} forwarded {f_seen:#?}\npingora {s_status:?} forwarded {s_seen:#?}"
                    ));
                }
            }
        }
    }
    println!("{report}");
    assert!(wrong.is_empty(), "{}\n\n{report}", wrong.join("\n\n"));
}

/// The fast path keeps upstream connections: requests from several client connections, one
/// after the other, reach the upstream on one connection, with their decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_reuses_upstream_connections() {
    let side = Side::start(true).await;
    for user in ["a", "vip", "b"] {
        let request = format!("GET /r HTTP/1.1\r\nHost: {{up}}\r\nX-User-Id: {user}\r\n\r\n");
        let (status, seen) = side.run(&[&request]).await;
        assert_eq!(status, [200]);
        let expected = if user == "vip" {
            "checkout=?1"
        } else {
            "checkout=?0"
        };
        assert!(seen[0].contains(expected), "{seen:?}");
    }
    assert_eq!(
        side.recorder.1.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// What the client gets for `GET http://up/` sent through `proxy`, read until the connection
/// closes (within 5 s).
async fn get_to_close(proxy: SocketAddr, up: SocketAddr) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("GET http://{up}/ HTTP/1.1\r\nHost: {up}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// An upstream that answers each connection's first request with `answer` as soon as its head
/// arrived, then closes it (after `hold`).
async fn one_shot_upstream(answer: &'static str) -> SocketAddr {
    one_shot_upstream_holding(answer, Duration::ZERO).await
}

async fn one_shot_upstream_holding(answer: &'static str, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while find(&buf, b"\r\n\r\n").is_none() {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let _ = s.write_all(answer.as_bytes()).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    addr
}

/// Responses framed by chunks or by the upstream's close reach the client whole (chunks
/// re-framed, a close-delimited body closing the client's connection too); a pooled connection
/// the upstream closed is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_relays_chunked_and_close_delimited_responses() {
    let side = Side::start(true).await;
    let chunked = one_shot_upstream(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    )
    .await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(side.proxy).await.unwrap();
        let req = format!("GET http://{chunked}/ HTTP/1.1\r\nHost: {chunked}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8_lossy(&got[..n]);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("X-A: 1\r\n") && got.contains("transfer-encoding: chunked\r\n"));
        assert!(got.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{got}");
        // The upstream closed its connection meanwhile: the next request opens another.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closing = one_shot_upstream("HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\nuntil close").await;
    let got = get_to_close(side.proxy, closing).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        got.contains("connection: close\r\n") && got.ends_with("\r\n\r\nuntil close"),
        "{got}"
    );
}

/// An upstream that answers before the request body's end (a `413` for an upload it will not
/// read) is answered at once: the rest of the body is not sent, and the client's connection
/// closes (its body was not read to the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_ends_the_body_relay() {
    let side = Side::start(true).await;
    let up = one_shot_upstream_holding(
        "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let mut s = TcpStream::connect(side.proxy).await.unwrap();
    let head = format!(
        "POST http://{up}/upload HTTP/1.1\r\nHost: {up}\r\nContent-Length: 50000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; 256 << 10]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
        .await
        .expect("answered and closed well before the read timeout")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413 "), "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
}

/// An upstream answer whose framing is ambiguous is a `502` on the fast path, and none of its
/// bytes reach the client: a bare LF, two `Content-Length`s (even equal), `Content-Length` with
/// `Transfer-Encoding`, a coding other than one `chunked`, obs-fold, a bad chunk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_upstream_answer_is_a_502() {
    let side = Side::start(true).await;
    for answer in [
        "HTTP/1.1 200 OK\nContent-Length: 5\n\nsmugg",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nsmugg",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nsmugg\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nsmugg\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 5\r\n\r\nsmugg",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsmugg\r\n0\r\n\r\n",
    ] {
        let got = get_to_close(side.proxy, one_shot_upstream(answer).await).await;
        assert!(got.starts_with("HTTP/1.1 502 "), "{answer:?} -> {got}");
        assert!(!got.contains("smugg"), "{answer:?} -> {got}");
    }
}
