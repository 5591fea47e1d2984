//! The HTTP/1.1 serve loop of every plain-HTTP listener of Vexil: control's admin API and the
//! sidecar's OFREP and admin endpoints.
//!
//! `axum::serve` waits for a request head as long as the client likes, so a client that connects
//! and sends nothing, or half a request line, holds a socket and a task for ever. [`serve_http1`]
//! gives every request head a deadline (hyper's header read timeout), caps the connections served
//! at once ([`Bounds::max_connections`]: one more is answered `503` and closed, so a flood of slow
//! clients cannot take every socket and task), and drains the connections in flight on shutdown.
//! Bodies are bounded by the caller (extractors that read them within a deadline).

#![warn(missing_docs)]

use std::future::Future;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// The default time a client has to deliver a request head: long enough for any real client,
/// short enough that stalled connections do not pile up.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The default cap on connections served at once by one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How long a connection may take to send a request head, and how many connections are served at
/// once. A `Duration` converts into bounds with [`DEFAULT_MAX_CONNECTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Time a connection has to deliver each request head.
    pub header_timeout: Duration,
    /// Connections served at once; one more is answered `503 Service Unavailable` (with
    /// `Retry-After: 1`) and closed.
    pub max_connections: usize,
}

impl From<Duration> for Bounds {
    fn from(header_timeout: Duration) -> Self {
        Bounds {
            header_timeout,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` over HTTP/1.1 on a TCP `listener` (with `TCP_NODELAY`) until `shutdown`
/// completes, then waits for the connections in flight to finish their requests.
///
/// A connection must deliver each request head within `bounds.header_timeout`, timed from when the
/// server starts waiting for it: a client that connects and sends nothing, or part of a head, and
/// stalls is disconnected; so is a keep-alive connection idle that long. At most
/// `bounds.max_connections` are served at once.
pub async fn serve_http1(
    listener: TcpListener,
    app: axum::Router,
    bounds: impl Into<Bounds>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    serve_http1_on(listener, app, bounds, shutdown).await;
}

/// The answer to a connection over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 39\r\n\r\ntoo many connections; retry in a moment";

/// [`serve_http1`] on any axum [`Listener`], e.g. one that completes a TLS handshake first.
///
/// Every request carries the peer's address as an [`axum::extract::ConnectInfo`] extension (for
/// per-peer limits).
pub async fn serve_http1_on<L: Listener>(
    mut listener: L,
    app: axum::Router,
    bounds: impl Into<Bounds>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L::Addr: Clone + Sync + 'static,
{
    let bounds = bounds.into();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout);
    // Fires when shutdown starts: each connection then finishes its request in flight and closes
    // (hyper's graceful shutdown of the connection). Connections upgraded to another protocol
    // (WebSocket) are handed to their handler and leave this loop's count at the upgrade; their
    // handlers end them on shutdown themselves.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    // Connections refused over the cap, warned about at most every 10 s.
    let (mut refused, mut last_warning) = (0u64, None::<std::time::Instant>);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // `Listener::accept` retries failed accepts itself (with a pause on errors such as
        // running out of file descriptors).
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    max = bounds.max_connections,
                    refused,
                    "too many connections: answered 503 and closed"
                );
                last_warning = Some(std::time::Instant::now());
            }
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let mut io = io;
                // A client that does not read is not waited for.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    io.write_all(BUSY).await?;
                    io.shutdown().await
                })
                .await;
            });
            continue;
        };
        let service = app
            .clone()
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer.clone()));
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection has given its slot back: all of them have ended.
    let all = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    async fn start(timeout: Duration) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_http1(listener, app, timeout, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Reads until the server closes the connection; the bytes it sent.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .expect("the server should close the stalled connection")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn answers_a_request() {
        let (addr, _stop) = start(Duration::from_secs(5)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let out = String::from_utf8(read_to_close(&mut s).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("hi"), "{out}");
    }

    #[tokio::test]
    async fn a_silent_client_is_disconnected() {
        let (addr, _stop) = start(Duration::from_millis(200)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        read_to_close(&mut s).await;
    }

    #[tokio::test]
    async fn half_a_request_head_is_disconnected() {
        let (addr, _stop) = start(Duration::from_millis(200)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let out = String::from_utf8(read_to_close(&mut s).await).unwrap();
        // hyper answers 408 when it can, or just closes; never a 200.
        assert!(!out.contains("200"), "{out}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_a_503_and_the_rest_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let bounds = Bounds {
            header_timeout: Duration::from_millis(500),
            max_connections: 2,
        };
        tokio::spawn(serve_http1(listener, app, bounds, std::future::pending()));
        // Two silent clients take both slots.
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let out = String::from_utf8(read_to_close(&mut third).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        assert!(out.contains("retry-after: 1"), "{out}");
        assert!(
            out.ends_with("too many connections; retry in a moment"),
            "{out}"
        );
        // Once the silent ones are cut off (header timeout), there is room again.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let out = String::from_utf8(read_to_close(&mut s).await).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http1(listener, app, Duration::from_secs(5), async {
            let _ = stopped.await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        let out = String::from_utf8(read_to_close(&mut s).await).unwrap();
        assert!(out.ends_with("slow"), "{out}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server should return after draining")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }
}
