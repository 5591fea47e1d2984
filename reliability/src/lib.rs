//! A process harness for Vexil's fault-injection tests (`tests/faults.rs`).
//!
//! Everything here runs the REAL binaries as child processes, on loopback, with temp dirs and
//! free ports: control replicas (`vexil-control serve`), sidecars (`vexil-proxy`), a private
//! `redis-server`, a fresh PostgreSQL database per test, and a TCP [`FaultProxy`] that can stand
//! between control and PostgreSQL and be cut and restored. The binaries are taken from the target
//! directory beside the test executable (`cargo build -p vexil-control -p vexil-proxy`, or the
//! workspace test run, builds them).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The admin token every control started here is bootstrapped with (`VEXIL_ADMIN_TOKEN`).
pub const ADMIN: &str = "vxl_reliability-test-admin-secret";

/// Where PostgreSQL test databases are created from, unless `VEXIL_TEST_PG_URL` says otherwise.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether this runs under CI (`CI=true`): missing services then fail the tests.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true" | "TRUE" | "True" | "1" | "yes")
    )
}

/// The path of binary `name` in the target directory that holds the running test executable.
///
/// Panics with what to build when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/debug/deps/faults-HASH -> target/debug/
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .collect();
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "{name} not found beside the test executable (looked at {candidates:?}); build the \
         binaries first: cargo build -p vexil-control -p vexil-proxy (the workspace test run, \
         scripts/test.sh, builds them)"
    );
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port()
}

/// A free UDP port on loopback (for a QUIC endpoint that must come back on the same port).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// A fresh temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A temporary directory removed (with its content) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh one named after `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        TempDir(temp_dir(prefix))
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// A fresh subdirectory `name`.
    pub fn sub(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).expect("temp subdirectory");
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `probe` every 50 ms until it returns `Ok`, for at most `secs`; panics with `what` and
/// the last `Err` (what it observed) otherwise.
pub async fn wait_for<T>(
    secs: u64,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match probe().await {
            Ok(t) => return t,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------------------------ processes ----

/// A child process whose standard output and error are collected as they come. Killed on drop.
pub struct Process {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut out = into.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str(&line);
            out.push('\n');
        }
    });
}

impl Process {
    /// Spawns `cmd` (its output piped and collected) under `name` (for messages).
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("stdout"), output.clone());
        collect(child.stderr.take().expect("stderr"), output.clone());
        Process {
            name: name.to_string(),
            child,
            output,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far (standard output and error, interleaved by line).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Panics (with its output) if it has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited ({status}); output:\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} ({}) failed", self.pid(), self.name);
    }

    /// `kill -9`, then reaps it.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `secs`) for it to exit; returns the exit code.
    pub fn terminate(&mut self, secs: u64) -> Option<i32> {
        // A stopped process would not see the SIGTERM.
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .status();
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running {secs} s after SIGTERM; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid().to_string()])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------ HTTP ----

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body text.
    pub text: String,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

/// An HTTP client that never goes through a proxy, with a per-request timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// Sends `req` and reads the whole answer; `Err` on a transport failure or timeout.
pub async fn send(req: reqwest::RequestBuilder) -> Result<Resp, String> {
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.map_err(|e| format!("{e:?}"))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Resp {
        status,
        content_type,
        text,
        json,
    })
}

/// The value of the first metric line starting with `prefix` (`name{labels}`) in `text`.
pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ------------------------------------------------------------------ PostgreSQL ----

fn pg_admin_url() -> String {
    std::env::var("VEXIL_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_string())
}

/// A fresh PostgreSQL database, dropped (with its connections) when this is dropped.
pub struct PgDb {
    /// Its name.
    pub name: String,
    admin_url: String,
}

impl PgDb {
    /// Creates one; `None` (with a notice) when PostgreSQL is unreachable, outside CI.
    pub async fn create() -> Option<PgDb> {
        use sqlx::Connection as _;
        let admin_url = pg_admin_url();
        let connect = sqlx::PgConnection::connect(&admin_url);
        let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(c)) => c,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                assert!(
                    !is_ci(),
                    "PostgreSQL is required under CI=true but {admin_url} is unreachable: {why}"
                );
                eprintln!("NOTICE: skipping: PostgreSQL at {admin_url} is unreachable ({why})");
                return None;
            }
        };
        let name = format!("vexil_faults_{:016x}", rand::random::<u64>());
        let mut last = None;
        for _ in 0..10 {
            let sql = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
            match sqlx::raw_sql(sql).execute(&mut conn).await {
                Ok(_) => {
                    last = None;
                    break;
                }
                // Concurrent CREATE DATABASE can collide on template1; retry.
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if let Some(e) = last {
            panic!("CREATE DATABASE {name}: {e}");
        }
        let _ = conn.close().await;
        Some(PgDb { name, admin_url })
    }

    /// Its URL on the real server.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// Its URL through `proxy` (same server, same database, another port).
    pub fn url_via(&self, proxy: &FaultProxy) -> String {
        let url = self.url();
        url.replace(&pg_host_port(&url), &proxy.addr().to_string())
    }

    /// `host:port` of the server.
    pub fn server_addr(&self) -> String {
        pg_host_port(&self.url())
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
    format!("{root}/{name}")
}

/// `host:port` of a `postgres://[user@]host[:port]/db` URL (default port 5432).
fn pg_host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Its own thread and runtime: this may run inside (or outside) any runtime.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(Ok(mut conn)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    sqlx::PgConnection::connect(&admin_url),
                )
                .await
                {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

// ------------------------------------------------------------------ fault proxy ----

/// A TCP proxy on loopback in front of `upstream` that can be cut (every open connection closed,
/// new ones accepted and closed at once), frozen (connections stay open but nothing passes: a
/// silent partition) and restored. Runs on its own thread.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: Arc<tokio::sync::watch::Sender<Link>>,
    stop: Arc<tokio::sync::Notify>,
}

/// What a [`FaultProxy`] does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Forward,
    Cut,
    Frozen,
}

impl FaultProxy {
    /// Starts one forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (state, _) = tokio::sync::watch::channel(Link::Forward);
        let state = Arc::new(state);
        let stop = Arc::new(tokio::sync::Notify::new());
        let upstream = upstream.to_string();
        let (state2, stop2) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (client, _) = tokio::select! {
                        _ = stop2.notified() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let mut rx = state2.subscribe();
                    let link = *rx.borrow();
                    match link {
                        Link::Cut => drop(client),
                        // Accepted, never answered, closed when the freeze ends.
                        Link::Frozen => {
                            tokio::spawn(async move {
                                let _ = rx.wait_for(|s| *s != Link::Frozen).await;
                                drop(client);
                            });
                        }
                        Link::Forward => {
                            let upstream = upstream.clone();
                            tokio::spawn(forward(client, upstream, rx));
                        }
                    }
                }
            });
        });
        FaultProxy { addr, state, stop }
    }

    /// Where clients connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones (accepted and closed at once).
    pub fn cut(&self) {
        self.state.send_replace(Link::Cut);
    }

    /// Lets nothing through, closing nothing: open connections hang, new ones are accepted and
    /// never answered. [`FaultProxy::restore`] then closes them all.
    pub fn freeze(&self) {
        self.state.send_replace(Link::Frozen);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.send_replace(Link::Forward);
    }
}

/// Forwards one connection until the link leaves `Forward` (then holds it while frozen) or
/// either side closes.
async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: String,
    mut rx: tokio::sync::watch::Receiver<Link>,
) {
    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = rx.wait_for(|s| *s != Link::Forward) => {}
    }
    if *rx.borrow() == Link::Frozen {
        let _ = rx.wait_for(|s| *s != Link::Frozen).await;
    }
    // Both sockets close here.
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.send_replace(Link::Cut);
        self.stop.notify_one();
    }
}

// ------------------------------------------------------------------ Redis ----

/// A private `redis-server` on a free port, so a test can kill it and start it again.
pub struct Redis {
    port: u16,
    process: Option<Process>,
}

impl Redis {
    /// Starts one; `None` (with a notice) when `redis-server` is not installed, outside CI.
    pub fn start() -> Option<Redis> {
        let mut redis = Redis {
            port: free_tcp_port(),
            process: None,
        };
        if !redis.restart() {
            assert!(!is_ci(), "redis-server is required under CI=true");
            eprintln!("NOTICE: skipping: redis-server is not installed");
            return None;
        }
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and waits until it accepts connections; `false` when
    /// `redis-server` cannot be run.
    pub fn restart(&mut self) -> bool {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return false;
        }
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        self.process = Some(Process::spawn("redis-server", cmd));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {}",
                self.process
                    .as_ref()
                    .map(Process::output)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> Result<i64, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n)
    }
}

// ------------------------------------------------------------------ control ----

/// How to start a control replica.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// `--database-url`.
    pub database_url: String,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--tls-dir` (with `--dev-tls`: the first replica writes the CA and certificate, the
    /// others reuse them).
    pub tls_dir: PathBuf,
    /// `--sync-poll-ms`.
    pub sync_poll_ms: Option<u64>,
    /// The QUIC sync port (default: a free one).
    pub sync_port: Option<u16>,
}

/// A running `vexil-control serve`.
pub struct Control {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub base: String,
    /// `quic://127.0.0.1:PORT` of the sync endpoint.
    pub sync_url: String,
    /// The TLS directory (`ca.pem` for sidecars).
    pub tls_dir: PathBuf,
    client: reqwest::Client,
}

impl Control {
    /// Starts a replica and waits until `/readyz` answers 200 (its store answers).
    pub async fn start(options: &ControlOptions) -> Control {
        let admin_port = free_tcp_port();
        let sync_port = options.sync_port.unwrap_or_else(free_udp_port);
        let mut cmd = Command::new(binary("vexil-control"));
        cmd.arg("serve")
            .args(["--database-url", &options.database_url])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--sync-addr", &format!("127.0.0.1:{sync_port}")])
            .args(["--webhook-addr", "off", "--dev-tls"])
            .arg("--tls-dir")
            .arg(&options.tls_dir)
            .args(["--shutdown-grace-secs", "5"])
            .env_clear()
            .env("VEXIL_ADMIN_TOKEN", ADMIN)
            .env("VEXIL_LOG", "info")
            .env("NO_COLOR", "1");
        if let Some(url) = &options.redis_url {
            cmd.args(["--redis-url", url]);
        }
        if let Some(ms) = options.sync_poll_ms {
            cmd.args(["--sync-poll-ms", &ms.to_string()]);
        }
        let process = Process::spawn("vexil-control", cmd);
        let mut control = Control {
            process,
            base: format!("http://127.0.0.1:{admin_port}"),
            sync_url: format!("quic://127.0.0.1:{sync_port}"),
            tls_dir: options.tls_dir.clone(),
            client: http_client(Duration::from_secs(30)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            control.process.assert_running();
            if let Ok(r) = send(control.client.get(format!("{}/readyz", control.base))).await
                && r.status == 200
            {
                return control;
            }
            assert!(
                Instant::now() < deadline,
                "control not ready in 60 s; output:\n{}",
                control.process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CA sidecars trust.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// A request to `path` with the admin token.
    pub fn req(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
    }

    /// `GET path` as admin.
    pub async fn get(&self, path: &str) -> Result<Resp, String> {
        send(self.req("GET", path)).await
    }

    /// Creates environment `key`.
    pub async fn create_env(&self, key: &str) {
        let r = send(
            self.req("POST", "/api/v1/environments")
                .json(&json!({"key": key, "name": key})),
        )
        .await
        .expect("create environment");
        assert_eq!(r.status, 201, "create environment: {}", r.text);
    }

    /// Creates or replaces flag `key` of `env` (`If-Match: *` when it exists); the status.
    pub async fn put_flag(&self, env: &str, key: &str, definition: &Value) -> Result<Resp, String> {
        let path = flag_path(env, key);
        let exists = self.get(&path).await?.status == 200;
        let mut req = self.req("PUT", &path).json(definition);
        if exists {
            req = req.header("if-match", "*");
        }
        send(req).await
    }

    /// A `sidecar` token for `env`; its secret.
    pub async fn sidecar_token(&self, env: &str) -> String {
        let body =
            json!({"name": format!("sidecar-{env}"), "role": "sidecar", "environments": [env]});
        let r = send(self.req("POST", "/api/v1/tokens").json(&body))
            .await
            .expect("create token");
        assert_eq!(r.status, 201, "create token: {}", r.text);
        r.json["token"].as_str().expect("token").to_string()
    }

    /// The revision of `env`.
    pub async fn revision(&self, env: &str) -> i64 {
        let r = self
            .get(&format!("/api/v1/environments/{env}"))
            .await
            .expect("get environment");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["revision"].as_i64().expect("revision")
    }

    /// The exported flag set of `env` (`GET .../flagset`).
    pub async fn flagset(&self, env: &str) -> Value {
        let r = self
            .get(&format!("/api/v1/environments/{env}/flagset"))
            .await
            .expect("export");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    /// Client ids of the sidecars connected to this replica.
    pub async fn sidecar_ids(&self) -> Result<Vec<String>, String> {
        let r = self.get("/api/v1/sidecars").await?;
        if r.status != 200 {
            return Err(r.text);
        }
        Ok(r.json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect())
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|r| r.text)
            .unwrap_or_default()
    }
}

/// `/api/v1/environments/{env}/flags/{key}`.
pub fn flag_path(env: &str, key: &str) -> String {
    format!("/api/v1/environments/{env}/flags/{key}")
}

/// A string flag whose only variant (and default) is `value`.
pub fn string_flag(value: &str) -> Value {
    json!({"state": "ENABLED", "variants": {"v": value}, "defaultVariant": "v"})
}

// ------------------------------------------------------------------ sidecar ----

/// How to start a sidecar.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Control sync URLs (`quic://...`), tried in turn.
    pub controls: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Sidecar token.
    pub token: String,
    /// CA file.
    pub ca_file: PathBuf,
    /// State directory (the persisted snapshot).
    pub state_dir: PathBuf,
    /// `--client-id`.
    pub client_id: String,
    /// `--control-keepalive-ms` and `--control-idle-timeout-ms`.
    pub keepalive: Option<(u64, u64)>,
}

/// A running `vexil-proxy` following control.
pub struct Sidecar {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of its admin listener.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of OFREP.
    pub ofrep: String,
    client: reqwest::Client,
}

impl Sidecar {
    /// Starts one on free ports and waits until `/healthz` answers (not until it is ready).
    pub async fn start(options: &SidecarOptions) -> Sidecar {
        let ports: Vec<u16> = (0..5).map(|_| free_tcp_port()).collect();
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let mut cmd = Command::new(binary("vexil-proxy"));
        cmd.args(["--control", &options.controls.join(",")])
            .args(["--environment", &options.environment])
            .arg("--ca-file")
            .arg(&options.ca_file)
            .arg("--state-dir")
            .arg(&options.state_dir)
            .args(["--client-id", &options.client_id])
            .args(["--outbound-addr", &addr(0), "--grpc-addr", &addr(1)])
            .args(["--admin-addr", &addr(2), "--sync-addr", &addr(3)])
            .args(["--ofrep-addr", &addr(4), "--shutdown-grace-secs", "5"])
            .args(["--threads", "1"])
            .env_clear()
            .env("VEXIL_TOKEN", &options.token)
            .env("VEXIL_LOG", "info")
            .env("NO_COLOR", "1");
        if let Some((keepalive, idle)) = options.keepalive {
            cmd.args(["--control-keepalive-ms", &keepalive.to_string()])
                .args(["--control-idle-timeout-ms", &idle.to_string()]);
        }
        let process = Process::spawn(&format!("vexil-proxy {}", options.client_id), cmd);
        let mut sidecar = Sidecar {
            process,
            admin: format!("http://{}", addr(2)),
            ofrep: format!("http://{}", addr(4)),
            client: http_client(Duration::from_secs(10)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            sidecar.process.assert_running();
            if let Ok(r) = send(sidecar.client.get(format!("{}/healthz", sidecar.admin))).await
                && r.status == 200
            {
                return sidecar;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar not alive in 60 s; output:\n{}",
                sidecar.process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/readyz` status.
    pub async fn ready(&self) -> Result<u16, String> {
        send(self.client.get(format!("{}/readyz", self.admin)))
            .await
            .map(|r| r.status)
    }

    /// `/debug/snapshot`: `revision`, `sync_state`, `source`, `flags`, ... (503 before a flag set
    /// is loaded).
    pub async fn snapshot(&self) -> Result<Resp, String> {
        send(self.client.get(format!("{}/debug/snapshot", self.admin))).await
    }

    /// The revision served and the sync state (`synced`, `stale`, `starting`); revision 0 when
    /// nothing is loaded.
    pub async fn state(&self) -> Result<(i64, String), String> {
        let r = self.snapshot().await?;
        Ok((
            r.json["revision"].as_i64().unwrap_or(0),
            r.json["sync_state"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        send(self.client.get(format!("{}/metrics", self.admin)))
            .await
            .map(|r| r.text)
    }

    /// Frames applied from control so far: `(full, delta)`.
    pub async fn frames_applied(&self) -> Result<(u64, u64), String> {
        let text = self.metrics().await?;
        let n = |kind: &str| {
            metric_value(
                &text,
                &format!("vexil_proxy_sync_frames_applied_total{{kind=\"{kind}\"}}"),
            )
            .unwrap_or(0.0) as u64
        };
        Ok((n("full"), n("delta")))
    }

    /// OFREP bulk evaluation with an empty context: `flag key -> value` (`Err` with the status
    /// and body when it does not answer 200).
    pub async fn values(&self) -> Result<std::collections::BTreeMap<String, Value>, String> {
        let r = send(
            self.client
                .post(format!("{}/ofrep/v1/evaluate/flags", self.ofrep))
                .json(&json!({"context": {}})),
        )
        .await?;
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, r.text));
        }
        Ok(r.json["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["key"].as_str()?.to_string(), f["value"].clone())))
            .collect())
    }

    /// OFREP evaluation of one flag: status and body.
    pub async fn evaluate(&self, key: &str) -> Result<Resp, String> {
        send(
            self.client
                .post(format!("{}/ofrep/v1/evaluate/flags/{key}", self.ofrep))
                .json(&json!({"context": {}})),
        )
        .await
    }

    /// Waits until it serves `revision` (at least) in state `synced`.
    pub async fn wait_synced_at(&self, revision: i64, secs: u64) {
        wait_for(
            secs,
            &format!("sidecar synced at revision {revision}"),
            async || match self.state().await {
                Ok((r, s)) if r >= revision && s == "synced" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
}

/// `flag key -> value of its default variant` of an exported flagd document (what an OFREP
/// evaluation with an empty context answers for the string flags used here).
pub fn default_values(flagset: &Value) -> std::collections::BTreeMap<String, Value> {
    flagset["flags"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, f)| {
            let variant = f["defaultVariant"].as_str()?;
            Some((k.clone(), f["variants"][variant].clone()))
        })
        .collect()
}
