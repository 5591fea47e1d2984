//! Integration tests of the HTTP data plane: real pingora on loopback ports, an echo upstream
//! (axum) that answers with the request it saw, reqwest as an `HTTP_PROXY` client, raw sockets for
//! Host-routed requests and `CONNECT`, and a TLS echo server (tokio-rustls, rcgen certificates)
//! behind a tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use vexil_engine::FlagSet;
use vexil_proxy::dataplane::{self, DataPlaneConfig, DataPlaneHandle, Inbound, Listeners};
use vexil_proxy::metrics::Metrics;
use vexil_proxy::snapshot::{Snapshot, SnapshotCell, Source};
use vexil_testkit::echo::{Echo, EchoServer};
use vexil_testkit::free_addr;

const SECRET: &str = "test-secret";

const MAPPING: &str = r#"
[context]
targetingKey = ["header:x-user-id", "cookie:uid", "jwt:sub"]
country = ["header:x-country", "baggage:country"]
tier = ["jwt:tier"]
[context_options]
jwt_hs256_secret = "test-secret"
"#;

/// Every flag evaluated with an empty context.
const DEFAULTS: &str = "checkout=?0, country-banner=\"none\", layout=grid, limit=20, ratio=0.5";

fn flags() -> Value {
    json!({"flags": {
        "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "targetingKey"}, "vip"]}, "on", null]}},
        "country-banner": {"state": "ENABLED", "variants": {"eu": "eu-banner", "none": "none"},
            "defaultVariant": "none",
            "targeting": {"if": [{"in": [{"var": "country"}, ["de", "fr"]]}, "eu", null]}},
        "limit": {"state": "ENABLED", "variants": {"low": 20, "high": 100}, "defaultVariant": "low",
            "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "high", null]}},
        "ratio": {"state": "ENABLED", "variants": {"half": 0.5}, "defaultVariant": "half"},
        "layout": {"state": "ENABLED", "variants": {"grid": {"cols": 3}, "list": {"cols": 1}},
            "defaultVariant": "grid"},
        "disabled": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
    }})
}

/// A running data plane with its echo upstream.
struct Env {
    dp: Option<DataPlaneHandle>,
    /// One client for every request, so connections are kept alive on both sides.
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    echo: SocketAddr,
    /// How many `/slow` requests reached the upstream.
    slow_arrivals: Arc<AtomicUsize>,
    /// The echo upstream (stopped on drop).
    _upstream: EchoServer,
    proxy: SocketAddr,
    inbound: Option<SocketAddr>,
}

impl Env {
    async fn start(config: &str) -> Env {
        Self::start_with(config, false).await
    }

    async fn start_with(config: &str, inbound: bool) -> Env {
        Self::start_inbound_to(config, inbound, None).await
    }

    /// With inbound mode (when `inbound`) in front of `app` (default: the echo upstream).
    async fn start_inbound_to(config: &str, inbound: bool, app: Option<SocketAddr>) -> Env {
        // `/slow` requests are counted on arrival, then answered after 800 ms.
        let upstream = Echo::new()
            .slow("/slow", Duration::from_millis(800))
            .start()
            .await;
        let (echo, slow_arrivals) = (upstream.addr(), upstream.slow_arrivals());
        let cell = Arc::new(SnapshotCell::new());
        let set = FlagSet::from_json(&flags()).unwrap();
        cell.publish(Snapshot::new("test", 1, set, Source::File("t".into())));
        let metrics = Arc::new(Metrics::new(cell.clone()));
        let config = DataPlaneConfig::from_toml_str(config).unwrap();
        let listeners = Listeners {
            outbound: free_addr(),
            inbound: inbound.then(|| Inbound {
                addr: free_addr(),
                upstream: app.unwrap_or(echo),
            }),
        };
        let m = metrics.clone();
        let dp = tokio::task::spawn_blocking(move || {
            dataplane::start(config, listeners, 1, Duration::from_secs(5), cell, m)
        })
        .await
        .unwrap()
        .unwrap();
        Env {
            dp: Some(dp),
            client: reqwest::Client::builder()
                .proxy(reqwest::Proxy::http(format!("http://{}", listeners.outbound)).unwrap())
                .build()
                .unwrap(),
            metrics,
            echo,
            slow_arrivals,
            _upstream: upstream,
            proxy: listeners.outbound,
            inbound: listeners.inbound.map(|i| i.addr),
        }
    }

    /// The reqwest client using the sidecar as its HTTP proxy.
    fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// What the upstream saw for `GET /path` with `headers`, through the proxy.
    async fn seen(&self, headers: &[(&str, &str)]) -> Value {
        let mut req = self.client().get(format!("http://{}/path?q=1", self.echo));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn flags_seen(&self, headers: &[(&str, &str)]) -> String {
        let seen = self.seen(headers).await;
        seen["headers"]["vexil-flags"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits (up to 2 s) until the metrics contain `line`: requests are counted after their
    /// response went out, so the client can be faster than the count.
    async fn metric(&self, line: &str) {
        for _ in 0..200 {
            if self.metrics.render().contains(line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("missing {line} in\n{}", self.metrics.render());
    }

    async fn shutdown(&mut self) -> bool {
        let dp = self.dp.take().unwrap();
        tokio::task::spawn_blocking(move || dp.shutdown())
            .await
            .unwrap()
    }
}

/// Sends raw bytes to `addr` and returns (status, head, body) of the response.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("a response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn jwt(secret: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_from_header_cookie_jwt_and_baggage() {
    let env = Env::start(MAPPING).await;
    assert_eq!(env.flags_seen(&[]).await, DEFAULTS);
    let vip = "checkout=?1, country-banner=\"none\", layout=grid, limit=20, ratio=0.5";
    assert_eq!(env.flags_seen(&[("x-user-id", "vip")]).await, vip);
    assert_eq!(env.flags_seen(&[("cookie", "a=b; uid=vip")]).await, vip);
    // `exp` is required ([context_options] jwt_require_exp).
    let exp = 4_000_000_000u64;
    let token = jwt(SECRET, &json!({"sub": "vip", "tier": "gold", "exp": exp}));
    assert_eq!(
        env.flags_seen(&[("authorization", &format!("Bearer {token}"))])
            .await,
        "checkout=?1, country-banner=\"none\", layout=grid, limit=100, ratio=0.5"
    );
    let forged = jwt(
        "not-the-secret",
        &json!({"sub": "vip", "tier": "gold", "exp": exp}),
    );
    assert_eq!(
        env.flags_seen(&[("authorization", &format!("Bearer {forged}"))])
            .await,
        DEFAULTS
    );
    assert_eq!(
        env.flags_seen(&[("baggage", "session=1,country=de")]).await,
        "checkout=?0, country-banner=\"eu-banner\", layout=grid, limit=20, ratio=0.5"
    );
    // The header wins over baggage (first present source).
    assert_eq!(
        env.flags_seen(&[("x-country", "us"), ("baggage", "country=de")])
            .await,
        DEFAULTS
    );

    let seen = env.seen(&[]).await;
    assert_eq!(seen["headers"]["vexil-revision"], "test@1");
    assert_eq!(seen["uri"], "/path?q=1", "origin-form upstream");
    assert_eq!(seen["headers"]["host"], env.echo.to_string());

    env.metric("vexil_proxy_dataplane_requests_total{listener=\"outbound\",status=\"200\"} 8")
        .await;
    let text = env.metrics.render();
    assert!(text.contains(
        "vexil_proxy_dataplane_evaluations_total{listener=\"outbound\",flag=\"checkout\",variant=\"on\"} 3"
    ));
    assert!(
        text.contains(
            "vexil_proxy_dataplane_upstream_latency_seconds_count{listener=\"outbound\"} 8"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_decisions_are_kept_or_overridden() {
    let env = Env::start(MAPPING).await;
    assert_eq!(
        env.flags_seen(&[
            ("x-user-id", "vip"),
            ("vexil-flags", "checkout=?0, limit=100")
        ])
        .await,
        "checkout=?0, limit=100, country-banner=\"none\", layout=grid, ratio=0.5"
    );
    // An invalid incoming header is replaced (and counted).
    assert_eq!(
        env.flags_seen(&[("vexil-flags", "Not A Dictionary")]).await,
        DEFAULTS
    );
    assert!(
        env.metrics
            .render()
            .contains("vexil_proxy_dataplane_invalid_incoming_total{listener=\"outbound\"} 1")
    );

    // The route's flags are evaluated again; the other decisions are kept.
    let env = Env::start(&format!(
        "{MAPPING}\n[[routes]]\npath_prefix = \"/\"\nflags = [\"checkout\"]\noverride = true\n"
    ))
    .await;
    assert_eq!(
        env.flags_seen(&[
            ("x-user-id", "vip"),
            ("vexil-flags", "checkout=?0, limit=100")
        ])
        .await,
        "limit=100, checkout=?1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_select_flags() {
    let config = format!(
        "{MAPPING}\n[[routes]]\npath_prefix = \"/path\"\nflags = [\"limit\", \"checkout\"]\n"
    );
    let env = Env::start(&config).await;
    assert_eq!(env.flags_seen(&[]).await, "limit=20, checkout=?0");
    let resp = env
        .client()
        .get(format!("http://{}/other", env.echo))
        .send()
        .await
        .unwrap();
    let seen: Value = resp.json().await.unwrap();
    assert!(seen["headers"].get("vexil-flags").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_limit_holds_and_drops_are_counted() {
    let env = Env::start(&format!(
        "{MAPPING}\n[headers]\nmax_bytes = 64\nper_flag = true\n"
    ))
    .await;
    let seen = env.seen(&[]).await;
    let flags = seen["headers"]["vexil-flags"].as_str().unwrap();
    assert!(flags.len() <= 64, "{flags}");
    // Whole members only: what is there parses, and the largest ones that did not fit are gone.
    assert_eq!(
        flags,
        "checkout=?0, country-banner=\"none\", layout=grid, limit=20"
    );
    assert_eq!(seen["headers"]["vexil-flag-limit"], "20");
    assert!(seen["headers"].get("vexil-flag-ratio").is_none());
    let text = env.metrics.render();
    assert!(
        text.contains("vexil_proxy_dataplane_dropped_decisions_total{listener=\"outbound\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_and_host_routed_requests() {
    let env = Env::start(MAPPING).await;
    let echo = env.echo;
    // Absolute-form (what HTTP_PROXY clients send), with hop-by-hop headers that must not pass.
    let (status, _, body) = raw(
        env.proxy,
        &format!(
            "GET http://{echo}/abs?x=1 HTTP/1.1\r\nHost: {echo}\r\nProxy-Connection: keep-alive\r\n\
             Proxy-Authorization: Basic Zm9vOmJhcg==\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\nX-User-Id: vip\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["uri"], "/abs?x=1");
    let headers = seen["headers"].as_object().unwrap();
    for hop in [
        "proxy-connection",
        "proxy-authorization",
        "x-hop",
        "keep-alive",
    ] {
        assert!(!headers.contains_key(hop), "{hop} forwarded: {seen}");
    }
    assert!(
        headers["vexil-flags"]
            .as_str()
            .unwrap()
            .starts_with("checkout=?1")
    );

    // Host-routed (transparent mode): origin-form with only a Host.
    let (status, _, body) = raw(
        env.proxy,
        &format!("GET /routed HTTP/1.1\r\nHost: {echo}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["uri"], "/routed");
    assert_eq!(seen["headers"]["vexil-flags"], DEFAULTS);

    // A Host naming the proxy itself is refused, not looped.
    let (status, _, _) = raw(
        env.proxy,
        &format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            env.proxy
        ),
    )
    .await;
    assert_eq!(status, 508);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstreams_answer_502() {
    let env = Env::start(MAPPING).await;
    let closed = free_addr();
    let resp = env
        .client()
        .get(format!("http://{closed}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(resp.text().await.unwrap().starts_with("vexil-proxy: "));

    let resp = env
        .client()
        .get("http://no-such-host.invalid/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.text().await.unwrap(),
        "vexil-proxy: cannot resolve no-such-host.invalid\n"
    );

    let (status, _, body) = raw(
        env.proxy,
        &format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let (status, _, _) = raw(
        env.proxy,
        "CONNECT no-such-host.invalid:443 HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502);

    // The proxy is still serving.
    assert_eq!(env.flags_seen(&[]).await, DEFAULTS);
    env.metric("vexil_proxy_dataplane_requests_total{listener=\"outbound\",status=\"502\"} 4")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_answers_504() {
    let env = Env::start(&format!("{MAPPING}\n[upstream]\nread_timeout_ms = 200\n")).await;
    let resp = env
        .client()
        .get(format!("http://{}/slow", env.echo))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
}

/// Reads one whole response (head, then `content-length` bytes of body) and returns its head.
async fn read_response(s: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed mid-response");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                return head.to_owned();
            }
        }
    }
}

/// An application's keep-alive connection is closed after `[downstream] idle_timeout_ms` without
/// a request (pingora alone would keep it, and its buffers, for ever); a busy one stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_downstream_connections_are_closed() {
    let env = Env::start(&format!(
        "{MAPPING}\n[downstream]\nidle_timeout_ms = 1000\n"
    ))
    .await;
    let request = format!(
        "GET http://{0}/x HTTP/1.1\r\nhost: {0}\r\nx-user-id: u\r\n\r\n",
        env.echo
    );
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    // Three requests 600 ms apart on one connection: each within the timeout of the previous.
    for _ in 0..3 {
        s.write_all(request.as_bytes()).await.unwrap();
        let head = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Then silence: closed about 1 s after the last answer.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the sidecar closes the idle connection")
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A TLS echo server for `localhost` and the PEM of the CA that issued its certificate.
async fn tls_echo_server() -> (SocketAddr, String) {
    let (ca_pem, config) = vexil_testkit::tls::server_config(&["localhost"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("echo: {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, ca_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_tls_end_to_end() {
    let env = Env::start(MAPPING).await;
    let (tls_addr, ca_pem) = tls_echo_server().await;
    let target = format!("localhost:{}", tls_addr.port());

    let mut tcp = TcpStream::connect(env.proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (r, mut w) = tokio::io::split(tls);
    let mut lines = BufReader::new(r).lines();
    for msg in ["hello", "through the tunnel"] {
        w.write_all(format!("{msg}\n").as_bytes()).await.unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            format!("echo: {msg}")
        );
    }
    env.metric("vexil_proxy_dataplane_requests_total{listener=\"outbound\",status=\"200\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_mode_strips_spoofed_headers_from_untrusted_peers() {
    let spoofed = [
        ("vexil-flags", "checkout=?1, limit=100"),
        ("vexil-flag-checkout", "?1"),
        ("vexil-revision", "forged@999"),
    ];
    async fn through_inbound(env: &Env, headers: &[(&str, &str)]) -> Value {
        let mut req = reqwest::Client::new().get(format!("http://{}/in", env.inbound.unwrap()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    let untrusted = Env::start_with(
        &format!("{MAPPING}\n[inbound]\ntrusted_cidrs = [\"10.0.0.0/8\"]\n"),
        true,
    )
    .await;
    let seen = through_inbound(&untrusted, &spoofed).await;
    assert_eq!(seen["uri"], "/in");
    assert_eq!(seen["headers"]["vexil-flags"], DEFAULTS);
    assert_eq!(seen["headers"]["vexil-revision"], "test@1");
    assert!(
        seen["headers"].get("vexil-flag-checkout").is_none(),
        "{seen}"
    );
    assert!(
        untrusted
            .metrics
            .render()
            .contains("vexil_proxy_dataplane_stripped_total{listener=\"inbound\"} 1")
    );

    // By default (no `[inbound] trusted_cidrs`) no peer is trusted, loopback included: every
    // `vexil-*` header is dropped, whatever its name, and the sidecar's own decisions go upstream.
    let default = Env::start_with(MAPPING, true).await;
    let mut any_vexil = spoofed.to_vec();
    any_vexil.push(("vexil-debug", "on"));
    let seen = through_inbound(&default, &any_vexil).await;
    assert_eq!(seen["headers"]["vexil-flags"], DEFAULTS);
    assert_eq!(seen["headers"]["vexil-revision"], "test@1");
    for name in ["vexil-flag-checkout", "vexil-debug"] {
        assert!(seen["headers"].get(name).is_none(), "{name}: {seen}");
    }

    // A trusted peer's decisions are kept (they are variant values), and the per-flag headers
    // follow them.
    let trusted = Env::start_with(
        &format!(
            "{MAPPING}\n[headers]\nper_flag = true\n[inbound]\ntrusted_cidrs = [\"127.0.0.0/8\"]\n"
        ),
        true,
    )
    .await;
    let seen = through_inbound(&trusted, &spoofed).await;
    assert_eq!(
        seen["headers"]["vexil-flags"],
        "checkout=?1, limit=100, country-banner=\"none\", layout=grid, ratio=0.5"
    );
    assert_eq!(seen["headers"]["vexil-flag-checkout"], "?1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_completes_in_flight_requests() {
    let mut env = Env::start(MAPPING).await;
    let client = env.client();
    let url = format!("http://{}/slow", env.echo);
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Wait until the request went through the proxy to the upstream (an open connection alone
    // could be another process's stray connect to this port).
    for _ in 0..200 {
        if env.slow_arrivals.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.slow_arrivals.load(Ordering::SeqCst), 1);
    assert!(env.dp.as_ref().unwrap().open_connections() > 0);
    let started = std::time::Instant::now();
    let drained = env.shutdown().await;
    assert!(drained, "in-flight request not drained");
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["headers"]["vexil-flags"], DEFAULTS);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drained in {:?}",
        started.elapsed()
    );
    // No longer accepting.
    let refused = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(env.proxy)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reports_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cell = Arc::new(SnapshotCell::new());
    let metrics = Arc::new(Metrics::new(cell.clone()));
    let listeners = Listeners {
        outbound: busy.local_addr().unwrap(),
        inbound: None,
    };
    let err = tokio::task::spawn_blocking(move || {
        dataplane::start(
            DataPlaneConfig::default(),
            listeners,
            1,
            Duration::from_secs(1),
            cell,
            metrics,
        )
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(err.to_string().contains("outbound listener"), "{err}");
}

/// Oversized headers have a defined outcome and never break the proxy: an incoming `vexil-flags`
/// larger than the injection limit (8 KiB) whose member is no flag of the snapshot is dropped
/// (counted) and the sidecar's own decisions are sent; an invalid one that large is replaced; a context header or bearer token over its
/// limit counts as absent (the next source, or the flag default, applies); a request head over
/// pingora's 1 MiB limit is refused without a response reaching the upstream, and the proxy serves
/// the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_have_a_clear_outcome() {
    let env = Env::start(MAPPING).await;
    let big_value = "x".repeat(32 << 10);
    let incoming = format!("other=\"{big_value}\"");
    let seen = env.seen(&[("vexil-flags", &incoming)]).await;
    assert_eq!(seen["headers"]["vexil-flags"], DEFAULTS);
    env.metric(
        "vexil_proxy_dataplane_incoming_decisions_dropped_total{listener=\"outbound\",reason=\"unknown_flag\"} 1",
    )
    .await;
    // A forged value of a known flag that large: not a variant, dropped too.
    let forged = format!("country-banner=\"{big_value}\"");
    assert_eq!(env.flags_seen(&[("vexil-flags", &forged)]).await, DEFAULTS);

    let garbage = format!("NOT A DICT {big_value}");
    assert_eq!(env.flags_seen(&[("vexil-flags", &garbage)]).await, DEFAULTS);

    // A 32 KiB user id is over max_value_bytes (1 KiB): absent, so the default variant.
    let huge_user = format!("vip{big_value}");
    assert_eq!(env.flags_seen(&[("x-user-id", &huge_user)]).await, DEFAULTS);
    // A bearer token over jwt_max_bytes (8 KiB) is not read.
    let token = format!("Bearer {}.{}.sig", URL_SAFE_NO_PAD.encode("{}"), big_value);
    assert_eq!(env.flags_seen(&[("authorization", &token)]).await, DEFAULTS);

    // Over pingora's request-head limit: refused, never forwarded (the proxy may close the
    // connection while the head is still being written).
    let echo = env.echo;
    let mut s = TcpStream::connect(env.proxy).await.unwrap();
    let head = format!(
        "GET /huge HTTP/1.1\r\nHost: {echo}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(1100 << 10)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers or closes within 10 s");
    let answer = String::from_utf8_lossy(&out);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        env.flags_seen(&[("x-user-id", "vip")]).await,
        DEFAULTS.replace("checkout=?0", "checkout=?1")
    );
}

/// The flags of [`flags`] plus a decimal flag a caller would like to choose itself.
fn flags_with_discount() -> Value {
    let mut doc = flags();
    doc["flags"]["discount-rate"] = json!({"state": "ENABLED",
        "variants": {"none": 0.0, "ten": 0.1}, "defaultVariant": "none"});
    doc
}

/// [`DEFAULTS`] with `discount-rate`.
const DISCOUNT_DEFAULTS: &str =
    "checkout=?0, country-banner=\"none\", discount-rate=0.0, layout=grid, limit=20, ratio=0.5";

/// The real `vexil-proxy` serving [`flags_with_discount`] with `proxy_toml`, with an inbound
/// listener in front of `upstream`.
async fn trust_proxy(
    dir: &vexil_testkit::TempDir,
    name: &str,
    proxy_toml: &str,
    upstream: SocketAddr,
) -> (vexil_testkit::proxy::ProxyProcess, SocketAddr) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, flags_with_discount().to_string()).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, proxy_toml).unwrap();
    let inbound = free_addr();
    let mut proxy = vexil_testkit::proxy::ProxyCmd::new()
        .arg("--flags-file")
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .arg("--inbound-addr")
        .arg(inbound.to_string())
        .arg("--inbound-upstream")
        .arg(upstream.to_string())
        .start();
    proxy.wait_ready().await;
    (proxy, inbound)
}

/// What the upstream saw of `request` (raw bytes, `Connection: close`) sent to `addr`.
async fn raw_seen(addr: SocketAddr, request: &str) -> Value {
    let (status, _, body) = raw(addr, request).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// No flag value a caller can forge reaches the upstream (issue 18, ADR 0024), against the real
/// binary: outbound, an incoming `vexil-flags` member is kept only when it is one of the flag's
/// variant values of the right type in the sidecar's snapshot, anything else is dropped, counted
/// by reason and evaluated anew; per-flag headers, `vexil.` baggage members and `vexil-revision`
/// are only ever the sidecar's; header names match in any case and repeated lines are one
/// dictionary; a `Connection` nomination cannot smuggle a header past the rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_decisions_never_reach_the_upstream() {
    let upstream = Echo::new().start().await;
    let echo = upstream.addr();
    let dir = vexil_testkit::TempDir::new("vexil-trust");
    let (proxy, _) = trust_proxy(
        &dir,
        "outbound",
        "[headers]\nper_flag = true\nbaggage = true\n",
        echo,
    )
    .await;
    let via = proxy.client();
    let seen = async |headers: &[(&str, &str)]| -> Value {
        let mut req = via.get(format!("http://{echo}/trust"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    };
    let flags_of = |seen: &Value| seen["headers"]["vexil-flags"].as_str().unwrap().to_owned();

    // A forged value is replaced by the evaluated one, in every header that carries it.
    let s = seen(&[
        ("vexil-flags", "discount-rate=99.0"),
        ("vexil-flag-discount-rate", "99.0"),
        ("vexil-revision", "forged@999"),
        ("baggage", "userId=alice,vexil.discount-rate=99.0"),
    ])
    .await;
    assert_eq!(flags_of(&s), DISCOUNT_DEFAULTS);
    assert_eq!(s["headers"]["vexil-flag-discount-rate"], "0.0");
    assert_eq!(s["headers"]["vexil-revision"], "outbound.json@1");
    let baggage = s["headers"]["baggage"].as_str().unwrap();
    assert!(baggage.starts_with("userId=alice,"), "{baggage}");
    assert!(baggage.contains("vexil.discount-rate=0.0"), "{baggage}");
    assert!(!baggage.contains("99"), "{baggage}");

    // A variant value of the right type is kept (call-chain consistency), and mirrored.
    let s = seen(&[("vexil-flags", "discount-rate=0.1")]).await;
    assert_eq!(
        flags_of(&s),
        "discount-rate=0.1, checkout=?0, country-banner=\"none\", layout=grid, limit=20, ratio=0.5"
    );
    assert_eq!(s["headers"]["vexil-flag-discount-rate"], "0.1");
    assert!(
        s["headers"]["baggage"]
            .as_str()
            .unwrap()
            .starts_with("vexil.discount-rate=0.1,")
    );

    // Wrong types (a string for a decimal, an integer for a boolean) and unknown flags: dropped.
    let s = seen(&[(
        "vexil-flags",
        "discount-rate=\"0.1\", checkout=1, admin-mode=?1",
    )])
    .await;
    assert_eq!(flags_of(&s), DISCOUNT_DEFAULTS);
    assert!(s["headers"].get("vexil-flag-admin-mode").is_none());

    // Mixed-case names and repeated lines are one dictionary, and leave as one header.
    let s = raw_seen(
        proxy_addr(&proxy),
        &format!(
            "GET http://{echo}/raw HTTP/1.1\r\nHost: {echo}\r\nVEXIL-FLAGS: discount-rate=99.0\r\n\
             Vexil-Flags: limit=100\r\nvexil-flags: ratio=0.5;src=me\r\n\
             BAGGAGE: VEXIL.limit=1\r\nbaggage: k=v\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(
        flags_of(&s),
        "limit=100, checkout=?0, country-banner=\"none\", discount-rate=0.0, layout=grid, ratio=0.5"
    );
    let baggage = s["headers"]["baggage"].as_str().unwrap();
    assert!(baggage.starts_with("k=v,vexil.limit=100,"), "{baggage}");
    assert!(!baggage.contains("limit=1,"), "{baggage}");

    // `Connection: vexil-flags` makes the incoming header hop-by-hop: it does not pass (nor
    // does the nomination), and the sidecar's own decisions go upstream.
    let s = raw_seen(
        proxy_addr(&proxy),
        &format!(
            "GET http://{echo}/raw HTTP/1.1\r\nHost: {echo}\r\nvexil-flags: limit=100\r\n\
             Connection: close, VEXIL-FLAGS\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(flags_of(&s), DISCOUNT_DEFAULTS);
    assert!(
        s["headers"]
            .get("connection")
            .is_none_or(|c| { !c.as_str().unwrap().to_ascii_lowercase().contains("vexil") })
    );

    // Each drop counted by reason.
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, count) in [
        ("not_a_variant", 2),
        ("wrong_type", 2),
        ("unknown_flag", 1),
        ("malformed", 1),
        ("duplicate", 0),
    ] {
        let line = format!(
            "vexil_proxy_dataplane_incoming_decisions_dropped_total{{listener=\"outbound\",reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

fn proxy_addr(proxy: &vexil_testkit::proxy::ProxyProcess) -> SocketAddr {
    vexil_testkit::loopback(proxy.ports.outbound)
}

/// Inbound mode, untrusted peer (the default: nobody is trusted), against the real binary: every
/// `vexil-*` header goes, even a valid decision and even one nominated in `Connection`; the
/// `vexil.` baggage members go, in any spelling, and the other baggage members stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_inbound_peers_lose_vexil_headers_and_baggage_members() {
    let upstream = Echo::new().start().await;
    let dir = vexil_testkit::TempDir::new("vexil-trust-in");
    let (proxy, inbound) = trust_proxy(&dir, "inbound", "", upstream.addr()).await;
    let s = raw_seen(
        inbound,
        "GET /in HTTP/1.1\r\nHost: app\r\nvexil-flags: discount-rate=0.1\r\n\
         Vexil-Flag-Discount-Rate: 99.0\r\nVEXIL-REVISION: forged@1\r\n\
         baggage: userId=alice, vexil.discount-rate=99.0\r\n\
         Baggage: VEXIL.admin-mode=true;p=1, vexil%2Echeckout=true, country=de\r\n\
         x-other: kept\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(s["headers"]["vexil-flags"], DISCOUNT_DEFAULTS);
    assert_eq!(s["headers"]["vexil-revision"], "inbound.json@1");
    assert!(
        s["headers"].get("vexil-flag-discount-rate").is_none(),
        "{s}"
    );
    assert_eq!(s["headers"]["baggage"], "userId=alice,country=de");
    assert_eq!(s["headers"]["x-other"], "kept");

    // A nomination alone is stripped too (and counted).
    let s = raw_seen(
        inbound,
        "GET /in HTTP/1.1\r\nHost: app\r\nvexil-debug: 1\r\nConnection: close, vexil-debug\r\n\r\n",
    )
    .await;
    assert!(s["headers"].get("vexil-debug").is_none(), "{s}");
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vexil_proxy_dataplane_stripped_total{listener=\"inbound\"} 2"),
        "{metrics}"
    );
}

// ------------------------------------------------------------- protocols ----

/// Reads one response (head and a `content-length` body) from `s`.
async fn read_head_and_body(s: &mut TcpStream) -> (String, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return (head.to_owned(), body.to_owned());
            }
        }
    }
}

/// Opens a `CONNECT` tunnel to `target` through `proxy`; panics unless it is answered 200.
async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_inside_a_connect_tunnel_gets_decisions_on_every_request() {
    let env = Env::start(MAPPING).await;
    let mut tcp = tunnel(env.proxy, &env.echo.to_string()).await;
    for path in ["/first", "/second"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nvexil-flags: checkout=?1, forged=?1\r\n\r\n",
            env.echo
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_head_and_body(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["uri"], path, "{seen:#}");
        // checkout=?1 is one of checkout's values: kept (call-chain consistency); forged is not.
        assert_eq!(
            seen["headers"]["vexil-flags"],
            DEFAULTS.replace("checkout=?0", "checkout=?1"),
            "{seen:#}"
        );
    }
    env.metric("vexil_proxy_dataplane_tunnels_total{listener=\"outbound\",protocol=\"http1\"} 1")
        .await;
}

/// `tests/clients/grpc_through_proxy.py ARGS`, with `envs`; its JSON lines (panics unless it
/// exits 0).
fn grpc_script(python: &std::path::Path, args: &[&str], envs: &[(&str, String)]) -> Vec<Value> {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/grpc_through_proxy.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every call of the script passed through unchanged (payloads, streams, status, trailers,
/// deadline), and the server saw `flags` in each call's metadata.
fn assert_grpc(lines: &[Value], flags: &str) {
    let by = |name: &str| {
        lines
            .iter()
            .find(|l| l["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
            .clone()
    };
    for name in [
        "unary",
        "server_stream_0",
        "server_stream_1",
        "server_stream_2",
        "client_stream",
        "bidi_0",
        "bidi_1",
    ] {
        let md = &by(name)["metadata"];
        assert_eq!(md["vexil-flags"], flags, "{name}: {md:#}");
        assert_eq!(md["x-user-id"], "alice", "{name}: {md:#}");
    }
    assert_eq!(by("unary")["request"], "hello");
    assert_eq!(by("client_stream")["parts"], json!(["a", "b", "c"]));
    assert_eq!(by("bidi_1")["echo"], "two");
    let status = by("status");
    assert_eq!(status["code"], "FAILED_PRECONDITION", "{status}");
    assert_eq!(status["details"], "refused on purpose", "{status}");
    assert_eq!(status["trailers"]["why"], "told-to", "{status}");
    assert_eq!(by("deadline")["code"], "DEADLINE_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_through_http_proxy_tunnels_h2c_with_decisions_in_its_metadata() {
    let Some(python) = vexil_testkit::tools::python() else {
        return;
    };
    let env = Env::start(MAPPING).await;
    let proxy = format!("http://{}", env.proxy);
    let lines =
        tokio::task::spawn_blocking(move || grpc_script(&python, &[], &[("http_proxy", proxy)]))
            .await
            .unwrap();
    assert_grpc(&lines, DEFAULTS);
    env.metric("vexil_proxy_dataplane_tunnels_total{listener=\"outbound\",protocol=\"h2c\"} 1")
        .await;
}

/// A `grpc_through_proxy.py serve` process: its port; killed on drop.
struct GrpcServer {
    child: std::process::Child,
    port: u16,
}

impl GrpcServer {
    fn start(python: &std::path::Path) -> GrpcServer {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients/grpc_through_proxy.py");
        let mut child = std::process::Command::new(python)
            .arg(&script)
            .arg("serve")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        GrpcServer { child, port }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_proxied_outbound_and_inbound() {
    let Some(python) = vexil_testkit::tools::python() else {
        return;
    };
    let server = GrpcServer::start(&python);
    let app = SocketAddr::from(([127, 0, 0, 1], server.port));
    let env = Env::start_inbound_to(MAPPING, true, Some(app)).await;
    // Outbound without CONNECT (redirected traffic): routed by :authority.
    let (proxy, authority) = (env.proxy.to_string(), app.to_string());
    let py = python.clone();
    let lines =
        tokio::task::spawn_blocking(move || grpc_script(&py, &["call", &proxy, &authority], &[]))
            .await
            .unwrap();
    assert_grpc(&lines, DEFAULTS);
    // Inbound, in front of the gRPC server: the untrusted caller's vexil-flags are stripped and
    // the sidecar's own decisions sent instead.
    let inbound = env.inbound.unwrap().to_string();
    let lines = tokio::task::spawn_blocking(move || grpc_script(&python, &["call", &inbound], &[]))
        .await
        .unwrap();
    assert_grpc(&lines, DEFAULTS);
    env.metric("vexil_proxy_dataplane_stripped_total{listener=\"inbound\"}")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_per_connection_are_bounded() {
    let env = Env::start(&format!("{MAPPING}\n[downstream]\nmax_h2_streams = 7\n")).await;
    let mut tcp = TcpStream::connect(env.proxy).await.unwrap();
    // The preface and an empty SETTINGS frame; the server's SETTINGS frame comes first.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "a SETTINGS frame first");
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(max_streams, Some(7), "SETTINGS_MAX_CONCURRENT_STREAMS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off() {
    let env = Env::start(&format!(
        "{MAPPING}\n[downstream]\nrequest_head_timeout_ms = 600\n"
    ))
    .await;
    let mut slow = TcpStream::connect(env.proxy).await.unwrap();
    let request = format!("GET http://{0}/x HTTP/1.1\r\nhost: {0}\r\n\r\n", env.echo);
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for b in request.bytes() {
        if slow.write_all(&[b]).await.is_err() {
            break;
        }
        // Meanwhile, a normal request is served.
        if b == b'h' {
            assert_eq!(env.flags_seen(&[]).await, DEFAULTS);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("closed")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    env.metric(
        "vexil_proxy_dataplane_connections_closed_total{listener=\"outbound\",reason=\"request_head_timeout\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_and_others_still_served() {
    let env = Env::start(&format!("{MAPPING}\n[downstream]\nmax_connections = 3\n")).await;
    // Three connections that have sent nothing hold the three places.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(env.proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(env.proxy).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut rest))
        .await
        .expect("the fourth connection is closed at once")
        .ok();
    assert!(rest.is_empty());
    env.metric(
        "vexil_proxy_dataplane_connections_closed_total{listener=\"outbound\",reason=\"max_connections\"} 1",
    )
    .await;
    // One place freed: a request goes through again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(env.flags_seen(&[]).await, DEFAULTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_opaque_tunnel_is_closed() {
    let env = Env::start(&format!(
        "{MAPPING}\n[downstream]\ntunnel_idle_timeout_ms = 500\n"
    ))
    .await;
    // A server that reads and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _accepting = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            kept.push(s);
        }
    });
    let mut tcp = tunnel(env.proxy, &addr.to_string()).await;
    // A TLS record header: not HTTP, so the tunnel is opaque.
    tcp.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel is closed")
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    env.metric("vexil_proxy_dataplane_tunnels_total{listener=\"outbound\",protocol=\"opaque\"} 1")
        .await;
    env.metric(
        "vexil_proxy_dataplane_connections_closed_total{listener=\"outbound\",reason=\"tunnel_idle_timeout\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_to_a_server_that_speaks_first_is_opaque() {
    let env = Env::start(MAPPING).await;
    // An SMTP-like server: greets, then echoes lines.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (r, mut w) = tokio::io::split(s);
        w.write_all(b"220 ready\r\n").await.unwrap();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            w.write_all(format!("250 {line}\r\n").as_bytes())
                .await
                .unwrap();
        }
    });
    let tcp = tunnel(env.proxy, &addr.to_string()).await;
    let (r, mut w) = tokio::io::split(tcp);
    let mut lines = BufReader::new(r).lines();
    let greeting = tokio::time::timeout(Duration::from_secs(3), lines.next_line())
        .await
        .expect("the greeting within the sniffing grace")
        .unwrap();
    assert_eq!(greeting.as_deref(), Some("220 ready"));
    w.write_all(b"HELO x\r\n").await.unwrap();
    assert_eq!(
        lines.next_line().await.unwrap().as_deref(),
        Some("250 HELO x")
    );
    env.metric("vexil_proxy_dataplane_tunnels_total{listener=\"outbound\",protocol=\"opaque\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_carries_decisions_and_the_upgraded_connection_passes_through() {
    let env = Env::start(MAPPING).await;
    // A WebSocket-like server: answers the upgrade with the decisions it saw, then echoes bytes.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = server.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let flags = head
            .lines()
            .find_map(|l| l.strip_prefix("vexil-flags: "))
            .unwrap_or("none")
            .to_string();
        s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nx-seen-flags: {flags}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let mut tcp = TcpStream::connect(env.proxy).await.unwrap();
    let request = format!(
        "GET http://{addr}/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains(&format!("x-seen-flags: {DEFAULTS}")),
        "{head}"
    );
    for msg in [&b"ping"[..], &b"\x81\x05hello"[..]] {
        tcp.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(3), tcp.read_exact(&mut back))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_forced_to_tunnel_plain_http_still_gets_decisions() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        vexil_testkit::skip("curl (apt-get install curl)");
        return;
    }
    let env = Env::start(MAPPING).await;
    let (proxy, url) = (
        format!("http://{}", env.proxy),
        format!("http://{}/tunnelled", env.echo),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--proxytunnel",
                "--proxy",
                &proxy,
            ])
            .args(["-H", "x-user-id: u-1", &url])
            .env_clear()
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["uri"], "/tunnelled", "{seen:#}");
    assert!(
        seen["headers"]["vexil-flags"]
            .as_str()
            .is_some_and(|f| f.starts_with("checkout=")),
        "{seen:#}"
    );
    env.metric("vexil_proxy_dataplane_tunnels_total{listener=\"outbound\",protocol=\"http1\"} 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_sidecar_gives_grpcio_through_http_proxy_its_decisions() {
    let Some(python) = vexil_testkit::tools::python() else {
        return;
    };
    let flags =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/flags.json");
    let mut sidecar =
        vexil_testkit::proxy::ProxyProcess::start(&["--flags-file", &flags.display().to_string()]);
    sidecar.wait_ready().await;
    let proxy = format!("http://127.0.0.1:{}", sidecar.ports.outbound);
    let lines =
        tokio::task::spawn_blocking(move || grpc_script(&python, &[], &[("http_proxy", proxy)]))
            .await
            .unwrap();
    // The caller's bool-static=?0 is one of the flag's values (kept); forged is no flag (dropped).
    assert_grpc(
        &lines,
        "bool-static=?0, float-flag=1.0, int-flag=10, object-flag=a, string-targeted=\"#f00\"",
    );
    sidecar.process.assert_running();
}
