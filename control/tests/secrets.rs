//! Token secrets: shown once at creation, never again: not in any later response (token list, audit
//! entries of token.create / token.revoke) and never in the logs, nor their SHA-256.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use vexil_control::auth::hash_secret;
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};

/// Creates, uses, lists and revokes tokens; returns every secret it saw and every response body
/// after the creations.
async fn exercise(app: &App) -> (Vec<String>, Vec<String>) {
    let admin = app.admin.clone();
    app.create_env("prod").await;
    let mut secrets = vec![admin.clone()];
    let mut bodies = Vec::new();
    for (name, role, envs) in [
        ("editor", "editor", json!([])),
        ("viewer", "viewer", json!(["prod"])),
        ("sidecar", "sidecar", json!(["prod"])),
    ] {
        let r = app
            .post_json(
                "/api/v1/tokens",
                &json!({"name": name, "role": role, "environments": envs}),
                &admin,
            )
            .await;
        let secret = r.expect(201)["token"].as_str().unwrap().to_string();
        // The creation answer holds the secret, never its hash.
        assert!(!r.text.contains(&hash_secret(&secret)));
        secrets.push(secret);
    }
    let editor = secrets[1].clone();
    let viewer = secrets[2].clone();
    // Use them, successfully and not.
    bodies.push(
        app.put_json(&flag_path("prod", "checkout"), &bool_flag(), &editor)
            .await
            .text,
    );
    bodies.push(app.get(&flag_path("prod", "checkout"), &viewer).await.text);
    bodies.push(
        app.put_json(&flag_path("prod", "x"), &bool_flag(), &viewer)
            .await
            .text,
    );
    bodies.push(app.get("/api/v1/tokens", &editor).await.text);
    bodies.push(
        app.get("/api/v1/environments", &format!("{editor}x"))
            .await
            .text,
    );
    // Revoke one, then try it.
    let list = app.get("/api/v1/tokens", &admin).await;
    let id = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "editor")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    bodies.push(list.text);
    bodies.push(
        app.delete(&format!("/api/v1/tokens/{id}"), &admin)
            .await
            .text,
    );
    bodies.push(app.get("/api/v1/environments", &editor).await.text);
    bodies.push(
        app.delete(&format!("/api/v1/tokens/{id}"), &admin)
            .await
            .text,
    );
    // Everything else an operator can read.
    bodies.push(app.get("/api/v1/tokens", &admin).await.text);
    let audit = app.get("/api/v1/audit?limit=1000", &admin).await;
    let actions: Vec<_> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.contains(&"token.create".to_string()), "{actions:?}");
    assert!(actions.contains(&"token.revoke".to_string()), "{actions:?}");
    bodies.push(audit.text);
    bodies.push(
        app.get("/api/v1/environments/prod/flagset", &admin)
            .await
            .text,
    );
    bodies.push(app.req("GET", "/metrics").send().await.text);
    (secrets, bodies)
}

/// Asserts none of `secrets`, nor their hashes, appear in `text`.
#[track_caller]
fn assert_no_secret(secrets: &[String], text: &str, where_: &str) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "a token secret appears in {where_}"
        );
        assert!(
            !text.contains(&hash_secret(s)),
            "a token hash appears in {where_}"
        );
        // Not even the random part without its prefix.
        let random = s.trim_start_matches("vxl_");
        assert!(
            !text.contains(random),
            "a token secret's body appears in {where_}"
        );
    }
}

both_backends!(
    secrets_never_come_back_in_responses,
    |app: App| async move {
        let (secrets, bodies) = exercise(&app).await;
        assert_eq!(secrets.len(), 4);
        for (i, body) in bodies.iter().enumerate() {
            assert_no_secret(&secrets, body, &format!("response #{i}: {body}"));
        }
    }
);

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs [`exercise`] on a server whose every log line (all levels) goes to a buffer, then checks the
/// buffer. The runtime is single-threaded so that every task, the server's included, runs on the
/// thread whose default subscriber is the capturing one.
fn secrets_are_never_logged(backend: Backend) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(
            backend,
            Options::default(),
            move |app: App| async move {
                let (secrets, _) = exercise(&app).await;
                out.lock().unwrap().extend(secrets);
            },
        ));
    let secrets = seen.lock().unwrap().clone();
    if secrets.is_empty() {
        return; // backend unavailable (outside CI), already said
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("store ready"), "the capture works: {text}");
    assert!(text.contains("request"), "requests are logged: {text}");
    assert_no_secret(&secrets, &text, "the logs");
}

#[test]
fn secrets_are_never_logged_sqlite() {
    secrets_are_never_logged(Backend::Sqlite);
}

#[test]
fn secrets_are_never_logged_postgres() {
    secrets_are_never_logged(Backend::Postgres);
}

// ------------------------------------------------------------------ the sidecar ----

/// A `vexil-proxy` following `app`'s `prod` with `token` (from `VEXIL_TOKEN` or a token file),
/// logging everything.
struct SidecarProcess {
    proxy: ProxyProcess,
}

impl SidecarProcess {
    fn start(app: &App, dir: &std::path::Path, token: &str, via_file: bool) -> SidecarProcess {
        let mut cmd = ProxyCmd::new()
            .args(["--control", &app.sync_url(), "--environment", "prod"])
            .arg("--ca-file")
            .arg(app.ca_file())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .grace_secs(1)
            .log("trace");
        if via_file {
            let file = dir.join("token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            cmd = cmd.env("VEXIL_TOKEN_FILE", file);
        } else {
            cmd = cmd.env("VEXIL_TOKEN", token);
        }
        SidecarProcess { proxy: cmd.start() }
    }

    fn logs(&self) -> String {
        self.proxy.process.output()
    }

    /// Waits until the logs contain `needle`.
    async fn wait_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.logs().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sidecar never logged {needle:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Everything the admin listener shows: health, readiness, metrics, the snapshot.
    async fn admin_pages(&self) -> String {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut out = String::new();
        for path in ["/healthz", "/readyz", "/metrics", "/debug/snapshot"] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Ok(r) = client
                    .get(format!("{}{path}", self.proxy.admin))
                    .send()
                    .await
                {
                    out.push_str(&r.text().await.unwrap_or_default());
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "no admin listener");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        out
    }

    /// Its command line, as `ps` shows it.
    fn cmdline(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/cmdline", self.proxy.process.pid()))
            .unwrap_or_default()
            .replace('\0', " ")
    }
}

/// The real sidecar binary, logging at `trace`, never shows its token: not in its logs, `/metrics`,
/// `/debug/snapshot`, health pages or command line, whether the token is refused as unknown,
/// accepted, or revoked while connected (the error paths print control's refusal, not the
/// token), and whether it came from `VEXIL_TOKEN` or a token file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_never_shows_its_token() {
    let options = Options {
        reauth_ms: Some(300),
        ..Options::default()
    };
    let Some(server) = start(Backend::Sqlite, options).await else {
        return;
    };
    let app = server.app.clone();
    app.create_env("prod").await;
    app.put_json(&flag_path("prod", "checkout"), &bool_flag(), &app.admin)
        .await;
    let (id, good) = app.token("sidecar", "sidecar", &["prod"]).await;
    let unknown = format!("vxl_{:032x}", rand::random::<u128>());
    let dir = TempDir::new("vexil-sidecar-secrets");
    let mut seen = String::new();

    // An unknown token: refused, and the refusal is logged without it.
    let refused = SidecarProcess::start(&app, &dir, &unknown, false);
    refused.wait_log("sync refused").await;
    seen += &refused.admin_pages().await;
    seen += &refused.cmdline();
    assert!(refused.logs().contains("Unauthenticated"));
    seen += &refused.logs();
    drop(refused);

    // A good token from a file: synced; then revoked while connected: cut off.
    let synced = SidecarProcess::start(&app, &dir, &good, true);
    synced.wait_log("subscribed to control").await;
    let pages = synced.admin_pages().await;
    assert!(pages.contains("checkout"), "the snapshot is shown: {pages}");
    seen += &pages;
    seen += &synced.cmdline();
    app.delete(&format!("/api/v1/tokens/{id}"), &app.admin)
        .await
        .expect(200);
    synced.wait_log("sync refused").await;
    seen += &synced.admin_pages().await;
    seen += &synced.logs();
    drop(synced);

    // The same token in VEXIL_TOKEN (revoked by now): refused, not shown.
    let env_token = SidecarProcess::start(&app, &dir, &good, false);
    env_token.wait_log("sync refused").await;
    seen += &env_token.admin_pages().await;
    seen += &env_token.cmdline();
    seen += &env_token.logs();
    drop(env_token);

    assert!(
        seen.contains("quinn") || seen.contains("TRACE"),
        "trace logs were captured"
    );
    assert_no_secret(&[good, unknown], &seen, "the sidecar's output");
    server.stop().await;
}
