//! An HTTP/1 upstream that answers with what it received.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// How an [`EchoServer`] answers. By default every request gets `200` with the JSON
/// `{"method": ..., "uri": ..., "headers": {name: value}}` of the request it received (a header
/// sent several times as one value, joined with `", "`; a value that is not text as `<binary>`).
///
/// ```ignore
/// let upstream = Echo::new().slow("/slow", Duration::from_millis(800)).start().await;
/// let flags_only = Echo::new().header_as_body("vexil-flags").start().await;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Echo {
    slow: Option<(String, Duration)>,
    header_as_body: Option<String>,
    ip: Option<IpAddr>,
}

impl Echo {
    /// The JSON echo.
    pub fn new() -> Echo {
        Echo::default()
    }

    /// Requests to `path` are counted when they arrive ([`EchoServer::slow_arrivals`]), then
    /// answered after `delay`.
    pub fn slow(mut self, path: &str, delay: Duration) -> Echo {
        self.slow = Some((path.to_string(), delay));
        self
    }

    /// Answers with the value of the request's header `name` alone, as text (empty without one),
    /// instead of the JSON.
    pub fn header_as_body(mut self, name: &str) -> Echo {
        self.header_as_body = Some(name.to_string());
        self
    }

    /// Listens on `ip` (e.g. the host's end of a test pod's veth pair) instead of 127.0.0.1.
    pub fn bind(mut self, ip: IpAddr) -> Echo {
        self.ip = Some(ip);
        self
    }

    /// Serves on a free loopback port (or one of [`Echo::bind`]'s address), on the current runtime, until the server is dropped.
    pub async fn start(self) -> EchoServer {
        let ip = self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("binding the echo upstream");
        let addr = listener.local_addr().expect("the echo upstream's address");
        let slow_arrivals = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(Shared {
            echo: self,
            slow_arrivals: slow_arrivals.clone(),
        });
        let app = axum::Router::new().fallback(answer).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the echo upstream serves");
        });
        EchoServer {
            addr,
            slow_arrivals,
            task,
        }
    }
}

struct Shared {
    echo: Echo,
    slow_arrivals: Arc<AtomicUsize>,
}

async fn answer(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if let Some((path, delay)) = &shared.echo.slow
        && req.uri().path() == path
    {
        shared.slow_arrivals.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(*delay).await;
    }
    if let Some(name) = &shared.echo.header_as_body {
        return req
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
            .into_response();
    }
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = value.to_str().unwrap_or("<binary>");
        match headers.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(value);
            }
            _ => {
                headers.insert(name.as_str().into(), value.into());
            }
        }
    }
    axum::Json(json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    }))
    .into_response()
}

/// A running [`Echo`]; stopped on drop.
pub struct EchoServer {
    addr: SocketAddr,
    slow_arrivals: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests to the slow path ([`Echo::slow`]) have arrived.
    pub fn slow_arrivals(&self) -> Arc<AtomicUsize> {
        self.slow_arrivals.clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
