//! Token secrets: shown once at creation, never again: not in any later response (token list, audit
//! entries of token.create / token.revoke) and never in the logs, nor their SHA-256.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use vexil_control::auth::hash_secret;

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
