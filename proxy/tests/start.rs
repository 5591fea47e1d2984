//! The start policy against the real binaries (docs/operations.md#start-policy): a fresh sidecar
//! with control down turns ready after `--init-timeout` and serves without flags (state `ERROR`),
//! then takes control's flags when it answers, without a restart; a never-written environment
//! (revision 0) makes a sidecar ready; a `--bootstrap-file` is served until control delivers; a
//! persisted snapshot of a since deleted and re-created environment gives way to the new one.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use vexil_proto::flagd::evaluation::v2;
use vexil_proto::tonic;
use vexil_testkit::control::{ControlCmd, ControlProcess};
use vexil_testkit::echo::Echo;
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};
use vexil_testkit::{TempDir, free_udp_port, wait_for};

const ADMIN: &str = "vxl_start_policy_admin_token_0123456789";

/// Control on a SQLite file in `dir`, development TLS in `dir/tls`, on a fixed QUIC port (the same
/// after a restart).
fn control_cmd(dir: &Path, sync_port: u16) -> ControlCmd {
    ControlCmd::new(&format!("sqlite://{}", dir.join("vexil.db").display()))
        .dev_tls(&dir.join("tls"))
        .sync_port(sync_port)
        .args(["--webhook-addr", "off"])
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An admin API call; the JSON answer (`Null` when there is none).
async fn api(control: &ControlProcess, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}/api/v1{path}", control.base);
    let mut req = http()
        .request(method.parse().unwrap(), url)
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn checkout(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false},
           "defaultVariant": if on { "on" } else { "off" }})
}

/// Creates `env` and a sidecar token for it; returns the token.
async fn env_and_token(control: &ControlProcess, env: &str) -> String {
    api(
        control,
        "POST",
        "/environments",
        Some(json!({"key": env, "name": env})),
    )
    .await;
    let token = api(
        control,
        "POST",
        "/tokens",
        Some(json!({"name": format!("{env}-sidecars"), "role": "sidecar", "environments": [env]})),
    )
    .await;
    token["token"].as_str().unwrap().to_string()
}

/// A sidecar following `env` on `control_url`, its state in `state`, plus `extra` arguments.
fn sidecar(
    control_url: &str,
    env: &str,
    token: &str,
    tls: &Path,
    state: &Path,
    extra: &[&str],
) -> ProxyProcess {
    ProxyCmd::new()
        .args([
            "--control",
            control_url,
            "--environment",
            env,
            "--token",
            token,
        ])
        .arg("--ca-file")
        .arg(tls.join("ca.pem"))
        .arg("--state-dir")
        .arg(state)
        .args(["--threads", "1"])
        .args(extra.iter().copied())
        .start()
}

async fn get_text(url: String) -> (u16, String) {
    let r = http().get(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn debug_snapshot(proxy: &ProxyProcess) -> Value {
    let (_, text) = get_text(format!("{}/debug/snapshot", proxy.admin)).await;
    serde_json::from_str(&text).unwrap()
}

async fn metrics(proxy: &ProxyProcess) -> String {
    get_text(format!("{}/metrics", proxy.admin)).await.1
}

/// OFREP single-flag evaluation: status and body.
async fn ofrep(proxy: &ProxyProcess, key: &str) -> (u16, Value) {
    let r = http()
        .post(format!("{}/ofrep/v1/evaluate/flags/{key}", proxy.ofrep))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The headers the upstream saw for one request through the sidecar's outbound proxy.
async fn proxied_headers(proxy: &ProxyProcess, upstream: std::net::SocketAddr) -> Value {
    let via = proxy.client();
    let echoed: Value = via
        .get(format!("http://{upstream}/hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    echoed["headers"].clone()
}

async fn grpc(
    proxy: &ProxyProcess,
) -> v2::service_client::ServiceClient<tonic::transport::Channel> {
    v2::service_client::ServiceClient::connect(format!("http://127.0.0.1:{}", proxy.ports.grpc))
        .await
        .unwrap()
}

/// The next `EventStream` event other than `keep_alive`, within 30 s.
async fn next_event(stream: &mut tonic::Streaming<v2::EventStreamResponse>) -> String {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event in time")
            .expect("the stream stays open")
            .expect("a valid event");
        if event.r#type != "keep_alive" {
            return event.r#type;
        }
    }
}

/// Skips `configuration_change` events until the next other one, which must be `kind`.
async fn expect_state_event(stream: &mut tonic::Streaming<v2::EventStreamResponse>, kind: &str) {
    loop {
        match next_event(stream).await.as_str() {
            "configuration_change" => continue,
            other => {
                assert_eq!(other, kind);
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_control_down_a_fresh_sidecar_serves_without_flags_until_control_answers() {
    let dir = TempDir::new("vexil-start-down");
    let sync_port = free_udp_port();
    // Control once, to create the environment, its flag and the sidecar token; then down.
    let mut control = control_cmd(&dir, sync_port).start().await;
    let token = env_and_token(&control, "prod").await;
    api(
        &control,
        "PUT",
        "/environments/prod/flagset",
        Some(json!({"flags": {"checkout": checkout(true)}})),
    )
    .await;
    let control_url = control.sync_url.clone();
    assert_eq!(control.process.terminate(20), Some(0));

    // A fresh sidecar (no persisted snapshot), control unreachable: ready after the init timeout.
    let state = dir.join("state");
    let started = Instant::now();
    let mut proxy = sidecar(
        &control_url,
        "prod",
        &token,
        &dir.join("tls"),
        &state,
        &["--init-timeout", "1", "--stale-grace-secs", "1"],
    );
    proxy.wait_healthy().await;
    assert_eq!(
        proxy.ready().await,
        503,
        "not ready during the init timeout"
    );
    let mut grpc_client = grpc(&proxy).await;
    let mut events = grpc_client
        .event_stream(v2::EventStreamRequest {})
        .await
        .unwrap()
        .into_inner();
    proxy.wait_ready().await;
    let ready_after = started.elapsed();
    assert!(
        ready_after >= Duration::from_secs(1) && ready_after < Duration::from_secs(10),
        "ready {ready_after:?} after start, with --init-timeout 1"
    );
    let (status, text) = get_text(format!("{}/readyz", proxy.admin)).await;
    assert_eq!(status, 200);
    assert!(text.contains("serving without flags"), "{text}");
    // The flagd event stream: ready (as flagd announces every stream), then the error state.
    assert_eq!(next_event(&mut events).await, "provider_ready");
    assert_eq!(next_event(&mut events).await, "provider_error");

    // /debug/snapshot and /metrics say so.
    let snap = debug_snapshot(&proxy).await;
    assert_eq!(snap["source"]["kind"], "none", "{snap}");
    assert_eq!(snap["lifecycle"], "ERROR", "{snap}");
    assert_eq!(snap["flag_count"], 0, "{snap}");
    let text = metrics(&proxy).await;
    for line in [
        "vexil_proxy_lifecycle_state{state=\"ERROR\"} 1",
        "vexil_proxy_lifecycle_state{state=\"READY\"} 0",
        "vexil_proxy_snapshot_loaded 0",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }

    // A proxied request goes out without decisions.
    let upstream = Echo::new().start().await;
    let headers = proxied_headers(&proxy, upstream.addr()).await;
    assert!(headers.get("vexil-flags").is_none(), "{headers}");
    assert!(headers.get("vexil-revision").is_none(), "{headers}");

    // Lookups answer "flag not found", so providers use the code defaults.
    let (status, body) = ofrep(&proxy, "checkout").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errorCode"], "FLAG_NOT_FOUND", "{body}");
    let r = http()
        .post(format!("{}/ofrep/v1/evaluate/flags", proxy.ofrep))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bulk: Value = r.json().await.unwrap();
    assert_eq!(bulk["flags"], json!([]), "{bulk}");
    let e = grpc_client
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "checkout".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("serving without flags"), "{e:?}");

    // Control comes back: its flags are served without a restart.
    let mut control = control_cmd(&dir, sync_port).start().await;
    wait_for(30, "the sidecar serves control's flags", async || {
        let (status, body) = ofrep(&proxy, "checkout").await;
        if status == 200 && body["value"] == true {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    expect_state_event(&mut events, "provider_ready").await;
    let snap = debug_snapshot(&proxy).await;
    assert_eq!(snap["source"]["kind"], "control", "{snap}");
    assert_eq!(snap["lifecycle"], "READY", "{snap}");
    let headers = proxied_headers(&proxy, upstream.addr()).await;
    assert_eq!(headers["vexil-flags"], "checkout=?1", "{headers}");
    assert_eq!(headers["vexil-revision"], "prod@1", "{headers}");
    assert!(
        metrics(&proxy)
            .await
            .contains("vexil_proxy_lifecycle_state{state=\"READY\"} 1")
    );

    // Control lost for longer than the grace period: STALE, still serving.
    assert_eq!(control.process.terminate(20), Some(0));
    expect_state_event(&mut events, "provider_stale").await;
    assert_eq!(debug_snapshot(&proxy).await["lifecycle"], "STALE");
    assert_eq!(ofrep(&proxy, "checkout").await.1["value"], true);
    assert_eq!(proxy.process.terminate(15), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_written_environment_makes_a_sidecar_ready() {
    let dir = TempDir::new("vexil-start-rev0");
    let mut control = control_cmd(&dir, free_udp_port()).start().await;
    let token = env_and_token(&control, "empty").await;
    // No init timeout: ready only because control's revision 0 is a flag set.
    let mut proxy = sidecar(
        &control.sync_url,
        "empty",
        &token,
        &dir.join("tls"),
        &dir.join("state"),
        &["--init-timeout", "0"],
    );
    proxy.wait_ready().await;
    let snap = debug_snapshot(&proxy).await;
    assert_eq!(snap["source"]["kind"], "control", "{snap}");
    assert_eq!(snap["revision"], 0, "{snap}");
    assert_eq!(snap["flag_count"], 0, "{snap}");
    assert_eq!(snap["lifecycle"], "READY", "{snap}");
    assert!(
        metrics(&proxy)
            .await
            .contains("vexil_proxy_snapshot_loaded 1")
    );
    // The first write arrives as usual.
    api(
        &control,
        "PUT",
        "/environments/empty/flags/checkout",
        Some(checkout(false)),
    )
    .await;
    wait_for(30, "revision 1", async || {
        match ofrep(&proxy, "checkout").await {
            (200, body) if body["value"] == false => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(proxy.process.terminate(15), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_file_is_served_until_control_delivers() {
    let dir = TempDir::new("vexil-start-bootstrap");
    let sync_port = free_udp_port();
    let mut control = control_cmd(&dir, sync_port).start().await;
    let token = env_and_token(&control, "prod").await;
    api(
        &control,
        "PUT",
        "/environments/prod/flags/checkout",
        Some(checkout(true)),
    )
    .await;
    // Control's export at revision 1 (checkout on) is the bootstrap file; then revision 2 turns
    // it off, and control goes down.
    let export = http()
        .get(format!(
            "{}/api/v1/environments/prod/bootstrap",
            control.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let bootstrap = dir.join("bootstrap.json");
    std::fs::write(&bootstrap, export.bytes().await.unwrap()).unwrap();
    let flag = "/environments/prod/flags/checkout";
    let client = http();
    let r = client
        .put(format!("{}/api/v1{flag}", control.base))
        .bearer_auth(ADMIN)
        .header("if-match", "*")
        .json(&checkout(false))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let control_url = control.sync_url.clone();
    assert_eq!(control.process.terminate(20), Some(0));

    // Control down, nothing persisted: the bootstrap file is served at once.
    let state = dir.join("state");
    let mut proxy = sidecar(
        &control_url,
        "prod",
        &token,
        &dir.join("tls"),
        &state,
        &[
            "--init-timeout",
            "0",
            "--bootstrap-file",
            bootstrap.to_str().unwrap(),
        ],
    );
    proxy.wait_ready().await;
    let snap = debug_snapshot(&proxy).await;
    assert_eq!(snap["source"]["kind"], "bootstrap", "{snap}");
    assert_eq!(snap["revision"], 1, "{snap}");
    assert_eq!(ofrep(&proxy, "checkout").await.1["value"], true);
    assert!(
        !vexil_proxy::sync::persist::path(&state, "prod").exists(),
        "a bootstrap file is not persisted as control's snapshot"
    );

    // Control answers: its revision 2 replaces the bootstrap file.
    let mut control = control_cmd(&dir, sync_port).start().await;
    wait_for(30, "control's revision 2", async || {
        let snap = debug_snapshot(&proxy).await;
        if snap["source"]["kind"] == "control" && snap["revision"] == 2 {
            Ok(())
        } else {
            Err(snap.to_string())
        }
    })
    .await;
    assert_eq!(ofrep(&proxy, "checkout").await.1["value"], false);
    // The snapshot is installed first, then written to the state directory.
    let persisted = vexil_proxy::sync::persist::path(&state, "prod");
    wait_for(10, "control's snapshot persisted", async || {
        persisted.exists().then_some(()).ok_or("absent".to_string())
    })
    .await;
    assert_eq!(proxy.process.terminate(15), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));
}

/// A sidecar restarted after its environment was deleted and created again under the same key,
/// and written back up to the very revision it holds, serves the new environment's flags, not the
/// deleted ones it persisted: its snapshot names the old incarnation, so control sends a Full.
/// Control then shows its acknowledged digest as matching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_restarted_after_its_environment_was_created_again_serves_the_new_one() {
    let dir = TempDir::new("vexil-start-recreated");
    let mut control = control_cmd(&dir, free_udp_port()).start().await;
    let token = env_and_token(&control, "prod").await;
    for key in ["old-a", "old-b", "old-c"] {
        api(
            &control,
            "PUT",
            &format!("/environments/prod/flags/{key}"),
            Some(checkout(true)),
        )
        .await;
    }
    let state = dir.join("state");
    let tls = dir.join("tls");
    let mut proxy = sidecar(&control.sync_url, "prod", &token, &tls, &state, &[]);
    proxy.wait_ready().await;
    wait_for(
        30,
        "revision 3 of the first environment",
        async || match ofrep(&proxy, "old-c").await {
            (200, body) if body["value"] == true => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(proxy.process.terminate(15), Some(0));

    api(&control, "DELETE", "/environments/prod?force=true", None).await;
    let token = env_and_token(&control, "prod").await;
    for key in ["new-x", "new-y", "new-z"] {
        api(
            &control,
            "PUT",
            &format!("/environments/prod/flags/{key}"),
            Some(checkout(false)),
        )
        .await;
    }
    let env = api(&control, "GET", "/environments/prod", None).await;
    assert_eq!(env["revision"], 3, "the revision the sidecar holds: {env}");

    let mut proxy = sidecar(&control.sync_url, "prod", &token, &tls, &state, &[]);
    proxy.wait_ready().await;
    wait_for(30, "the new environment's flags", async || {
        match (ofrep(&proxy, "new-x").await, ofrep(&proxy, "old-a").await) {
            ((200, new), (404, _)) if new["value"] == false => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let snap = debug_snapshot(&proxy).await;
    assert_eq!(snap["revision"], 3, "{snap}");
    assert_eq!(snap["flag_count"], 3, "{snap}");
    wait_for(30, "a matching digest in /sidecars", async || {
        let list = api(&control, "GET", "/sidecars", None).await;
        let connected: Vec<&Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["connected"] == true)
            .collect();
        match connected.as_slice() {
            [one] if one["digest_matches"] == true && one["digest_revision"] == 3 => Ok(()),
            _ => Err(list.to_string()),
        }
    })
    .await;
    assert_eq!(proxy.process.terminate(15), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));
}

/// The restore procedure of docs/operations.md, with the real binaries: control's SQLite file is
/// restored from a backup taken at revision 2 while the sidecar had gone on to revision 4; new
/// writes reuse revisions 3 and 4 with other flags. After `POST .../incarnation`, the sidecar,
/// restarted on its state directory (revision 4 of the old incarnation), serves the restored flags
/// plus the new ones, never the lost ones; its token, from before the backup, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_and_a_new_incarnation_the_sidecar_serves_the_restored_history() {
    let dir = TempDir::new("vexil-start-restore");
    let sync_port = free_udp_port();
    let put = async |control: &ControlProcess, key: &str| {
        let path = format!("/environments/prod/flags/{key}");
        api(control, "PUT", &path, Some(checkout(true))).await;
    };
    let mut control = control_cmd(&dir, sync_port).start().await;
    let token = env_and_token(&control, "prod").await;
    put(&control, "kept-a").await;
    put(&control, "kept-b").await;
    assert_eq!(control.process.terminate(20), Some(0));
    let db = dir.join("vexil.db");
    let backup = dir.join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    assert!(
        !dir.join("vexil.db-wal").exists()
            || std::fs::metadata(dir.join("vexil.db-wal")).unwrap().len() == 0
    );

    let mut control = control_cmd(&dir, sync_port).start().await;
    put(&control, "lost-c").await;
    put(&control, "lost-d").await;
    let (tls, state) = (dir.join("tls"), dir.join("state"));
    let mut proxy = sidecar(&control.sync_url, "prod", &token, &tls, &state, &[]);
    proxy.wait_ready().await;
    wait_for(30, "revision 4 before the restore", async || {
        match ofrep(&proxy, "lost-d").await {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(proxy.process.terminate(15), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));

    // Restore, start, rotate, write again up to revision 4.
    for stale in ["vexil.db-wal", "vexil.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    std::fs::copy(&backup, &db).unwrap();
    let mut control = control_cmd(&dir, sync_port).start().await;
    let before = api(&control, "GET", "/environments/prod", None).await;
    assert_eq!(before["revision"], 2, "{before}");
    let rotated = api(&control, "POST", "/environments/prod/incarnation", None).await;
    assert_ne!(rotated["incarnation"], before["incarnation"]);
    put(&control, "new-e").await;
    put(&control, "new-f").await;

    let mut proxy = sidecar(&control.sync_url, "prod", &token, &tls, &state, &[]);
    proxy.wait_ready().await;
    wait_for(30, "the restored history", async || {
        let got = [
            ofrep(&proxy, "kept-a").await.0,
            ofrep(&proxy, "new-f").await.0,
            ofrep(&proxy, "lost-c").await.0,
            ofrep(&proxy, "lost-d").await.0,
        ];
        if got == [200, 200, 404, 404] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert_eq!(debug_snapshot(&proxy).await["revision"], 4);
    assert_eq!(proxy.process.terminate(15), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));
}
