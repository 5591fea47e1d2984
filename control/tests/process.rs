//! The real `vexil-control serve` binary: the first admin token, and a graceful SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use vexil_testkit::control::ControlCmd;
use vexil_testkit::{Process, TempDir, free_addr};

const BANNER: &str = "vexil-control: created the first admin token; its secret is in ";

/// A running `vexil-control serve`, its output collected as it comes.
struct Proc {
    process: Process,
    addr: String,
}

impl Proc {
    /// Starts the binary on the SQLite database in `dir` with a clean environment (plus `env`) and
    /// waits until `/healthz` answers.
    fn start(dir: &Path, env: &[(&str, &str)]) -> Proc {
        // The QUIC endpoint needs a certificate: explicit files, outside any --tls-dir a test sets.
        let tls =
            vexil_control::tls::ensure_dev_tls(&dir.join("cert"), &[]).expect("test certificate");
        let mut cmd = ControlCmd::new(&format!("sqlite://{}", dir.join("vexil.db").display()))
            .binary(env!("CARGO_BIN_EXE_vexil-control"))
            .grace_secs(20)
            .env("VEXIL_TLS_CERT", &tls.cert)
            .env("VEXIL_TLS_KEY", &tls.key)
            .ready_on("/healthz");
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let control = cmd.start_blocking();
        Proc {
            addr: control.admin.to_string(),
            process: control.process,
        }
    }

    /// One HTTP/1.1 request on its own connection: status and body.
    fn try_http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(request_head(&self.addr, method, path, token, body.map(str::len)).as_bytes())?;
        if let Some(b) = body {
            s.write_all(b.as_bytes())?;
        }
        read_response(&mut s)
    }

    #[track_caller]
    fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> u16 {
        self.try_http(method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
            .0
    }

    /// SIGTERM, then the exit status (within `secs`) and everything it printed.
    fn stop(mut self, secs: u64) -> (ExitStatus, String) {
        self.process.signal("TERM");
        let status = self.process.wait(secs);
        (status, self.process.output())
    }
}

fn request_head(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body_len: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(n) = body_len {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {n}\r\n"
        ));
    }
    head.push_str("\r\n");
    head
}

/// Reads one response head (up to the blank line), byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The lines of `out` holding a token secret.
fn secret_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("vxl_"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The first start on an empty store writes a generated admin token to `admin-token` beside the
/// SQLite file, mode 0600, and prints (and logs) only that path: the secret is in no output.
#[test]
fn first_start_writes_the_admin_token_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let db = TempDir::new("vexil-process");
    let file = db.join("admin-token");
    let p = Proc::start(&db, &[]);
    let out = p.process.stdout();
    assert_eq!(out.matches(BANNER).count(), 1, "{}", p.process.output());
    assert!(
        out.contains(&format!("its secret is in {}", file.display())),
        "the path is printed: {out}"
    );
    assert!(
        out.contains(&format!("file={}", file.display())),
        "and logged: {out}"
    );
    let mode = std::fs::metadata(&file)
        .expect("the token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("vxl_") && token.len() == 47, "{token}");
    assert!(
        secret_lines(&p.process.output()).is_empty(),
        "{}",
        p.process.output()
    );
    assert_eq!(
        p.http("GET", "/api/v1/environments", Some(&token), None),
        200
    );
    assert_eq!(
        p.http("GET", "/api/v1/environments", Some("vxl_nope"), None),
        401
    );
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(!output.contains(&token), "nothing shows it: {output}");
    assert!(
        !output.contains(token.trim_start_matches("vxl_")),
        "{output}"
    );

    // A second start on the same store writes and prints nothing new; the token still works.
    std::fs::remove_file(&file).unwrap();
    let p = Proc::start(&db, &[]);
    assert_eq!(
        p.http("GET", "/api/v1/environments", Some(&token), None),
        200
    );
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(!output.contains(BANNER), "{output}");
    assert!(!file.exists(), "no new token file");
}

/// A generated token that cannot be written (no such directory) stops the start, naming the path
/// and the setting, and leaves no token behind: the next start with a writable path creates it.
#[test]
fn an_unwritable_admin_token_file_stops_the_first_start() {
    let db = TempDir::new("vexil-process");
    let bad = db.join("missing-dir").join("admin-token");
    let tls = vexil_control::tls::ensure_dev_tls(&db.join("cert"), &[]).expect("certificate");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vexil-control"))
        .env_clear()
        .env("NO_COLOR", "1")
        .args(["serve", "--database-url"])
        .arg(format!("sqlite://{}", db.join("vexil.db").display()))
        .arg("--admin-token-file")
        .arg(&bad)
        .args([
            "--admin-addr",
            &free_addr().to_string(),
            "--webhook-addr",
            "off",
        ])
        .env("VEXIL_TLS_CERT", &tls.cert)
        .env("VEXIL_TLS_KEY", &tls.key)
        .output()
        .expect("vexil-control runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "writing the first admin token to {}",
            bad.display()
        )) && stderr.contains("admin_token_file"),
        "{stderr}"
    );
    assert!(secret_lines(&String::from_utf8_lossy(&out.stdout)).is_empty());
    // No token was stored: the next start (default path) creates one.
    let p = Proc::start(&db, &[]);
    assert!(
        p.process.stdout().contains(BANNER),
        "{}",
        p.process.output()
    );
    assert!(db.join("admin-token").exists());
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
}

#[test]
fn admin_token_from_the_environment_on_an_empty_store() {
    let db = TempDir::new("vexil-process");
    let token = "vxl_from-the-environment-0123456789";
    let p = Proc::start(&db, &[("VEXIL_ADMIN_TOKEN", token)]);
    assert_eq!(p.http("GET", "/api/v1/tokens", Some(token), None), 200);
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(!output.contains(BANNER), "nothing printed: {output}");
    assert!(!output.contains(token), "nor logged: {output}");
    assert!(
        output.contains("VEXIL_ADMIN_TOKEN"),
        "the log says where it came from: {output}"
    );

    // Once the store has a token, the variable is ignored.
    let other = "vxl_another-one-from-the-environment";
    let p = Proc::start(&db, &[("VEXIL_ADMIN_TOKEN", other)]);
    assert_eq!(p.http("GET", "/api/v1/tokens", Some(other), None), 401);
    assert_eq!(p.http("GET", "/api/v1/tokens", Some(token), None), 200);
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let db = TempDir::new("vexil-process");
    let token = "vxl_sigterm-test-admin-token";
    let p = Proc::start(&db, &[("VEXIL_ADMIN_TOKEN", token)]);
    let env = r#"{"key":"prod","name":"Production"}"#;
    assert_eq!(
        p.http("POST", "/api/v1/environments", Some(token), Some(env)),
        201
    );

    // A request whose body is half sent when SIGTERM arrives. With `Expect: 100-continue` the server
    // answers `100 Continue` when the handler starts reading the body: the request is in flight.
    let body = r#"{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}"#;
    let path = "/api/v1/environments/prod/flags/checkout";
    let mut s = TcpStream::connect(&p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = request_head(&p.addr, "PUT", path, Some(token), Some(body.len()));
    let head = head.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let interim = read_head(&mut s);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    let (first, rest) = body.split_at(body.len() / 2);
    s.write_all(first.as_bytes()).unwrap();
    s.flush().unwrap();
    p.process.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    let mut p = p;
    assert!(
        p.process.try_wait().is_none(),
        "exited with a request in flight: {}",
        p.process.output()
    );
    s.write_all(rest.as_bytes()).unwrap();
    let (status, response) = read_response(&mut s).unwrap();
    assert_eq!(status, 201, "{response}");
    let exit = p.process.wait(15);
    assert!(exit.success(), "exit status {exit}: {}", p.process.output());
    let out = p.process.output();
    assert!(out.contains("shutting down"), "{out}");
    assert!(out.contains("stopped"), "{out}");

    // The write was committed.
    let p = Proc::start(&db, &[]);
    assert_eq!(p.http("GET", path, Some(token), None), 200);
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
}

/// `POST /inject` over TLS, trusting only the CA in `ca`: the status and the body.
fn post_review(addr: &str, ca: &std::path::Path, body: &[u8]) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(body).unwrap();
    let mut response = Vec::new();
    // A peer that closes without close_notify ends the read with UnexpectedEof: what came is whole.
    if let Err(e) = tls.read_to_end(&mut response) {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

#[test]
fn the_webhook_serves_https_with_dev_tls_and_can_be_switched_off() {
    let db = TempDir::new("vexil-process");
    let tls_dir = TempDir::new("vexil-process-tls");
    let webhook = free_addr().to_string();
    let dir = tls_dir.display().to_string();
    let p = Proc::start(
        &db,
        &[
            ("VEXIL_DEV_TLS", "true"),
            ("VEXIL_TLS_DIR", &dir),
            ("VEXIL_WEBHOOK_ADDR", &webhook),
            ("VEXIL_SIDECAR_DEFAULT_ENVIRONMENT", "production"),
        ],
    );
    let review = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/minimal.json"),
    )
    .unwrap();
    let (status, body) = post_review(&webhook, &tls_dir.join("ca.pem"), &review);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(output.contains("injection webhook listening"), "{output}");

    // `off`: nothing listens there.
    let p = Proc::start(&db, &[("VEXIL_WEBHOOK_ADDR", "off")]);
    assert!(
        TcpStream::connect(&webhook).is_err(),
        "{}",
        p.process.output()
    );
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(output.contains("injection webhook off"), "{output}");

    // The default address without any certificate: off, with a warning, not a failed start.
    let p = Proc::start(&db, &[]);
    let (status, output) = p.stop(20);
    assert!(status.success(), "{status}: {output}");
    assert!(
        output.contains("injection webhook off: no TLS certificate"),
        "{output}"
    );
}
