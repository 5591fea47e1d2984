//! Shared harness of the control plane's integration tests.
//!
//! Every test gets its own database (a temp SQLite file, or a fresh PostgreSQL database on
//! 127.0.0.1:5432 that is dropped afterwards, both from `vexil-testkit`) and its own in-process API
//! server on a free port.
//! [`both_backends!`] turns one test body into a SQLite test and a PostgreSQL test. Without a
//! reachable PostgreSQL the PostgreSQL half prints a notice and passes, except under `CI=true` where it
//! fails.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vexil_control::auth::hash_secret;
use vexil_control::config::ControlConfig;
use vexil_control::model::Role;
use vexil_control::server::Control;
use vexil_control::store::{AuditQuery, Store};
use vexil_settings::{Secret, SecretUrl};
pub use vexil_testkit::TempDir;
use vexil_testkit::pg::PgDb;

/// The secret of the admin token every test server starts with.
pub const ADMIN: &str = "vxl_integration-test-admin-secret";

/// Generates `$name::sqlite` and `$name::postgres` from one async test body taking an [`App`],
/// optionally with server [`Options`].
///
/// ```ignore
/// both_backends!(creates_flags, |app: App| async move { ... });
/// both_backends!(jwt, options = Options { jwt_secret: Some("k".into()) }, |app: App| async move { ... });
/// ```
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        $crate::both_backends!($name, options = Default::default(), $body);
    };
    ($name:ident, options = $options:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $crate::common::run($crate::common::Backend::Sqlite, $options, $body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $crate::common::run($crate::common::Backend::Postgres, $options, $body).await;
            }
        }
    };
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temp SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Server settings a test may change.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `jwt_hs256_secret`.
    pub jwt_secret: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// Feed poll interval (ms).
    pub sync_poll_ms: Option<u64>,
    /// Bind the QUIC endpoint here (default: a free port).
    pub sync_addr: Option<std::net::SocketAddr>,
    /// Most deltas in a catch-up.
    pub max_catch_up: Option<i64>,
    /// Token re-check interval of connected sidecars (ms).
    pub reauth_ms: Option<u64>,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// The API's read timeout for request heads and bodies (ms).
    pub read_timeout_ms: Option<u64>,
    /// The per-peer limit of failed authentications: burst and refill. Off unless set: every
    /// test talks from 127.0.0.1, and many try bad tokens on purpose.
    pub auth_failures: Option<(u32, Duration)>,
    /// Any other change of the configuration, applied last.
    pub configure: Option<fn(&mut ControlConfig)>,
}

/// One test's database.
pub struct Db {
    /// The URL the server uses.
    pub url: String,
    pg: Option<PgDb>,
    sqlite_dir: Option<TempDir>,
}

impl Db {
    /// A new empty database; `None` (with a notice) when PostgreSQL is unreachable outside CI.
    pub async fn create(backend: Backend) -> Option<Db> {
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new("vexil-test-db");
                Some(Db {
                    url: format!("sqlite://{}", dir.join("vexil.db").display()),
                    pg: None,
                    sqlite_dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let db = PgDb::create("vexil_t").await?;
                Some(Db {
                    url: db.url(),
                    pg: Some(db),
                    sqlite_dir: None,
                })
            }
        }
    }

    /// Removes the database (best effort).
    pub async fn destroy(self) {
        if let Some(db) = self.pg {
            db.destroy().await;
        }
        drop(self.sqlite_dir);
    }
}

/// A running test server and what a test needs to talk to it.
#[derive(Clone)]
pub struct App {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The admin token's secret.
    pub admin: String,
    /// A second handle on the server's database, to look behind the API.
    pub store: Store,
    /// Which database.
    pub backend: Backend,
    /// The server's own state (its store, metrics).
    pub state: std::sync::Arc<vexil_control::api::AppState>,
    /// The database URL.
    pub db_url: String,
    /// The QUIC sync endpoint.
    pub sync_addr: std::net::SocketAddr,
    /// The server's parts (to serve more of them, e.g. the webhook).
    pub control: Control,
    /// The development TLS directory (`ca.pem` for sidecars).
    pub tls_dir: PathBuf,
}

impl App {
    /// The CA sidecars must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// `quic://127.0.0.1:PORT`.
    pub fn sync_url(&self) -> String {
        format!("quic://{}", self.sync_addr)
    }
}

/// One control replica (API + QUIC sync) on an existing database.
pub struct Replica {
    /// The handle tests use.
    pub app: App,
    /// The replica's parts.
    pub control: Control,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<()>>,
    sync: JoinHandle<()>,
}

/// Starts a replica on `db_url` with development TLS in `tls_dir`.
pub async fn start_replica(
    db_url: &str,
    backend: Backend,
    tls_dir: &std::path::Path,
    options: &Options,
) -> Replica {
    let mut config = ControlConfig {
        database_url: db_url.into(),
        redis_url: options.redis_url.as_deref().map(SecretUrl::from),
        dev_tls: true,
        tls_dir: tls_dir.to_path_buf(),
        tls_client_ca: options.client_ca.clone(),
        sync_addr: options
            .sync_addr
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("address")),
        ..ControlConfig::default()
    };
    config.jwt.hs256_secret = options.jwt_secret.as_deref().map(Secret::from);
    if let Some(ms) = options.sync_poll_ms {
        config.sync.poll_interval = Duration::from_millis(ms);
    }
    if let Some(n) = options.max_catch_up {
        config.sync.max_catch_up = n;
    }
    if let Some(ms) = options.reauth_ms {
        config.sync.reauth_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = options.read_timeout_ms {
        config.limits.read_timeout = Duration::from_millis(ms);
    }
    (config.auth_failure_burst, config.auth_failure_refill) = options
        .auth_failures
        .unwrap_or((0, config.auth_failure_refill));
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    let control = Control::open(&config).await.expect("control opens");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let sync = control.bind_sync(&config).expect("sync endpoint binds");
    let sync_addr = sync.local_addr().expect("sync address");
    let sync = tokio::spawn(sync.serve(Duration::from_secs(1)));
    let (tx, rx) = oneshot::channel::<()>();
    let serving = control.clone();
    let handle = tokio::spawn(async move {
        serving
            .serve_api(listener, async move {
                let _ = rx.await;
            })
            .await
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let store = Store::connect(db_url).await.expect("test store");
    Replica {
        app: App {
            base: format!("http://{addr}"),
            client,
            admin: ADMIN.to_string(),
            store,
            backend,
            state: control.state.clone(),
            db_url: db_url.to_string(),
            sync_addr,
            control: control.clone(),
            tls_dir: tls_dir.to_path_buf(),
        },
        control,
        shutdown: tx,
        handle,
        sync,
    }
}

impl Replica {
    /// Stops the replica: API, hub, QUIC endpoint; closes its store handles.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.control.shutdown();
        match tokio::time::timeout(Duration::from_secs(10), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("server failed: {e}"),
            Ok(Err(e)) => panic!("server task: {e}"),
            Err(_) => panic!("server did not stop within 10 s of shutdown"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.sync).await;
        self.control.finish().await;
        self.control.state.store.close().await;
        self.app.store.close().await;
    }
}

/// A running server, owned by [`run`].
pub struct Server {
    /// The handle tests use.
    pub app: App,
    replica: Replica,
    db: Db,
    tls_dir: TempDir,
}

/// Creates the admin token every test server starts with, before the server opens the store (so
/// bootstrap, which reads the process-wide VEXIL_ADMIN_TOKEN, creates nothing).
pub async fn seed_admin(db_url: &str) {
    let store = Store::connect(db_url).await.expect("test store");
    store
        .create_token(None, "admin", Role::Admin, &[], &hash_secret(ADMIN))
        .await
        .expect("admin token");
    store.close().await;
}

/// Starts a server on a new database; `None` when the backend is unavailable (outside CI).
pub async fn start(backend: Backend, options: Options) -> Option<Server> {
    let db = Db::create(backend).await?;
    seed_admin(&db.url).await;
    let tls_dir = TempDir::new("vexil-tls");
    let replica = start_replica(&db.url, backend, &tls_dir, &options).await;
    Some(Server {
        app: replica.app.clone(),
        replica,
        db,
        tls_dir,
    })
}

impl Server {
    /// Stops the server and removes its database.
    pub async fn stop(self) {
        self.replica.stop().await;
        self.db.destroy().await;
        drop(self.tls_dir);
    }
}

/// Runs `body` against a fresh server on `backend`, then stops it and drops its database, also when
/// `body` panics (the panic is then re-raised).
pub async fn run<F, Fut>(backend: Backend, options: Options, body: F)
where
    F: FnOnce(App) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = start(backend, options).await else {
        return;
    };
    let outcome = tokio::spawn(body(server.app.clone())).await;
    server.stop().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test body: {e}"),
        }
    }
}

// ------------------------------------------------------------------ client ----

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub text: String,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag` header (panics without one).
    pub fn etag(&self) -> String {
        self.header("etag")
            .unwrap_or_else(|| panic!("no ETag in {self:?}"))
            .to_string()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        &self.json
    }
}

/// A request being built.
pub struct Req<'a> {
    app: &'a App,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<(Option<String>, Vec<u8>)>,
}

impl<'a> Req<'a> {
    /// `Authorization: Bearer <token>`.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Any header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.raw(Some("application/json"), body.to_string().into_bytes())
    }

    /// A body with this content type (`None`: no `Content-Type`).
    pub fn raw(mut self, content_type: Option<&str>, body: Vec<u8>) -> Self {
        self.body = Some((content_type.map(String::from), body));
        self
    }

    /// Sends it and reads the whole answer.
    pub async fn send(self) -> Resp {
        let url = format!("{}{}", self.app.base, self.path);
        let mut rb = self.app.client.request(self.method.clone(), &url);
        if let Some(t) = &self.token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some((ct, bytes)) = self.body {
            if let Some(ct) = ct {
                rb = rb.header("content-type", ct);
            }
            rb = rb.body(bytes);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }
}

impl App {
    /// A request.
    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            app: self,
            method: reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            path: path.to_string(),
            token: None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// `GET path` with `token`.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.req("GET", path).token(token).send().await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value, token: &str) -> Resp {
        self.req("POST", path).token(token).json(body).send().await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value, token: &str) -> Resp {
        self.req("PUT", path).token(token).json(body).send().await
    }

    /// `PUT path` with a JSON body and `If-Match`.
    pub async fn put_json_if(&self, path: &str, body: &Value, token: &str, etag: &str) -> Resp {
        self.req("PUT", path)
            .token(token)
            .header("if-match", etag)
            .json(body)
            .send()
            .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &Value, token: &str) -> Resp {
        self.req("PATCH", path).token(token).json(body).send().await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.req("DELETE", path).token(token).send().await
    }

    // ---- fixtures (as admin) ----

    /// Creates environment `key`.
    pub async fn create_env(&self, key: &str) -> Value {
        let r = self
            .post_json(
                "/api/v1/environments",
                &json!({"key": key, "name": format!("Env {key}")}),
                &self.admin,
            )
            .await;
        r.expect(201).clone()
    }

    /// Creates flag `key` in `env` with `definition`.
    pub async fn create_flag(&self, env: &str, key: &str, definition: &Value) -> Resp {
        let r = self
            .put_json(&flag_path(env, key), definition, &self.admin)
            .await;
        r.expect(201);
        r
    }

    /// Creates a token through the API; returns its id and secret.
    pub async fn token(&self, name: &str, role: &str, environments: &[&str]) -> (i64, String) {
        let r = self
            .post_json(
                "/api/v1/tokens",
                &json!({"name": name, "role": role, "environments": environments}),
                &self.admin,
            )
            .await;
        let body = r.expect(201);
        (
            body["id"].as_i64().expect("token id"),
            body["token"].as_str().expect("token secret").to_string(),
        )
    }

    /// What a failed write must leave unchanged: the environment's revision, change log and flag
    /// set, and the whole audit log.
    pub async fn snapshot(&self, env: &str) -> Snapshot {
        let environment = self.store.get_environment(env).await.expect("environment");
        let changes = self
            .store
            .changes_since(env, 0, 1_000_000)
            .await
            .expect("changes")
            .len();
        let (_, flagset) = self.store.export(env).await.expect("export");
        Snapshot {
            revision: environment.revision,
            changes,
            flagset,
            audit: self.audit_ids().await,
        }
    }

    /// Every audit entry id, newest first.
    pub async fn audit_ids(&self) -> Vec<i64> {
        self.store
            .audit(&AuditQuery {
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .expect("audit")
            .items
            .iter()
            .map(|e| e.id)
            .collect()
    }

    /// Asserts that nothing of `env` nor the audit log moved since `before`.
    #[track_caller]
    pub fn assert_unchanged(&self, before: &Snapshot, after: &Snapshot, what: &str) {
        assert_eq!(
            before.revision, after.revision,
            "{what}: the revision moved"
        );
        assert_eq!(before.changes, after.changes, "{what}: the change log grew");
        assert_eq!(before.audit, after.audit, "{what}: the audit log changed");
        assert_eq!(
            before.flagset, after.flagset,
            "{what}: the flag set changed"
        );
    }
}

/// See [`App::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Environment revision.
    pub revision: i64,
    /// Change-log length.
    pub changes: usize,
    /// The exported document.
    pub flagset: Value,
    /// Audit entry ids.
    pub audit: Vec<i64>,
}

/// `/api/v1/environments/{env}/flags/{key}`.
pub fn flag_path(env: &str, key: &str) -> String {
    format!("/api/v1/environments/{env}/flags/{key}")
}

/// A valid boolean flag, on by default.
pub fn bool_flag() -> Value {
    json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "on"
    })
}

/// A valid string flag with `metadata`.
pub fn string_flag(default: &str, metadata: Value) -> Value {
    json!({
        "state": "ENABLED",
        "variants": {"a": "alpha", "b": "beta"},
        "defaultVariant": default,
        "metadata": metadata
    })
}

/// Asserts an RFC 9457 problem with `status` and returns its body.
#[track_caller]
pub fn assert_problem(resp: &Resp, status: u16) -> &Value {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.text
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "a {status} must be problem+json; body: {}",
        resp.text
    );
    let p = &resp.json;
    assert_eq!(p["status"], json!(status), "problem.status: {p}");
    assert!(p["title"].is_string(), "problem.title: {p}");
    assert!(p["type"].is_string(), "problem.type: {p}");
    assert!(
        p["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "problem.detail: {p}"
    );
    p
}

/// A TLS connection to the webhook at `addr`, verified against `ca`, speaking HTTP/1.1.
pub async fn connect_tls(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What the Kubernetes API server (Go's HTTP client) offers: the server must pick HTTP/1.1, the
    // only protocol it speaks.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
}

/// `POST /inject` over TLS, verified against `ca`; returns the status and the body.
pub async fn post_inject(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    body: &[u8],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = connect_tls(addr, ca).await;
    let head = format!(
        "POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

// ------------------------------------------------------------------- sync ----

/// Server frames as they arrive on a raw sync stream.
pub type ServerFrames = tokio_util::codec::FramedRead<
    quinn::RecvStream,
    vexil_proto::frame::MessageCodec<vexil_proto::sync::v1::ServerFrame>,
>;

/// A raw sync stream to `app` (QUIC, the development CA, keep-alive every second) that has sent a
/// `Subscribe` for `env` with `token`, holding `last_revision` of the environment's current
/// incarnation (none when `last_revision` is 0). Nothing is read until the test reads `frames`.
pub async fn subscribe_stream(
    app: &App,
    env: &str,
    token: &str,
    last_revision: i64,
) -> (quinn::Connection, quinn::SendStream, ServerFrames) {
    use vexil_proto::frame::FrameCodec;
    use vexil_proto::sync::v1::{ClientFrame, Subscribe, client_frame::Kind};
    let incarnation = if last_revision > 0 {
        app.store
            .get_environment(env)
            .await
            .expect("the environment")
            .incarnation
    } else {
        String::new()
    };
    let config = vexil_proxy::sync::client_config(
        &app.ca_file(),
        None,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .expect("client config");
    let endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    let conn = endpoint
        .connect_with(config, app.sync_addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut send, recv) = conn.open_bi().await.expect("a stream");
    let subscribe = ClientFrame {
        kind: Some(Kind::Subscribe(Subscribe {
            token: token.into(),
            environment: env.into(),
            last_revision,
            client_id: "raw-test".into(),
            version: "0.0.0".into(),
            incarnation,
        })),
    };
    send.write_all(
        &FrameCodec::default()
            .encode_frame(&subscribe)
            .expect("encode"),
    )
    .await
    .expect("send Subscribe");
    let frames =
        tokio_util::codec::FramedRead::new(recv, vexil_proto::frame::MessageCodec::default());
    (conn, send, frames)
}

/// The next server frame's message within 20 s; `None` when the stream ended.
pub async fn next_frame(
    frames: &mut ServerFrames,
) -> Option<vexil_proto::sync::v1::server_frame::Kind> {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(20), frames.next())
        .await
        .expect("a frame within 20 s")
        .map(|f| f.expect("a valid frame").kind.expect("a message"))
}
