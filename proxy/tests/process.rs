//! The real `vexil-proxy` binary: offline mode, readiness with and without a persisted snapshot
//! while control is unreachable, and a clean exit on SIGTERM.

mod common;

use common::{Proxy, client, free_port, temp_dir};
use serde_json::{Value, json};

#[tokio::test]
async fn offline_mode_serves_a_flags_file_and_exits_cleanly_on_sigterm() {
    let dir = temp_dir("vexil-offline");
    let file = dir.join("flags.json");
    let doc = json!({"flags": {"checkout": {"state": "ENABLED",
        "variants": {"on": true, "off": false}, "defaultVariant": "on"}}});
    std::fs::write(&file, doc.to_string()).unwrap();
    let proxy = Proxy::start(&["--flags-file", file.to_str().unwrap()]);
    let c = client();
    proxy.wait_healthy(&c).await;
    assert_eq!(proxy.ready(&c).await, 200);
    let r: Value = c
        .post(format!("{}/ofrep/v1/evaluate/flags/checkout", proxy.ofrep))
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"], true);
    let metrics = c
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("file"), "{metrics}");

    // Through the data plane: the upstream sees the decision as a header.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
            headers
                .get("vexil-flags")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        });
        axum::serve(upstream, app).await.unwrap();
    });
    let via = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{}", proxy.ports[0])).unwrap())
        .build()
        .unwrap();
    let seen = via
        .get(format!("http://{upstream_addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "checkout=?1");
    assert_eq!(proxy.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_control_down_readiness_follows_the_persisted_snapshot() {
    let dir = temp_dir("vexil-cold");
    // A CA that nothing presents, and a port where nothing listens: control is unreachable.
    let ca = dir.join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&ca, cert.pem()).unwrap();
    let control = format!("quic://127.0.0.1:{}", free_port());
    let args = |state: &str| {
        vec![
            "--control".to_string(),
            control.clone(),
            "--environment".into(),
            "prod".into(),
            "--token".into(),
            "vxl_unused".into(),
            "--ca-file".into(),
            ca.display().to_string(),
            "--state-dir".into(),
            state.to_string(),
        ]
    };
    let c = client();

    // Nothing persisted: alive, not ready.
    let empty = dir.join("empty");
    let a = args(empty.to_str().unwrap());
    let proxy = Proxy::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.wait_healthy(&c).await;
    assert_eq!(proxy.ready(&c).await, 503);
    assert_eq!(proxy.terminate(), Some(0));

    // A persisted snapshot: ready from it, before control ever answers.
    let state = dir.join("state");
    let doc = json!({"flags": {"checkout": {"state": "ENABLED",
        "variants": {"on": true, "off": false}, "defaultVariant": "off"}}});
    vexil_proxy::sync::persist::save(&state, "prod", 41, &doc.to_string()).unwrap();
    let a = args(state.to_str().unwrap());
    let proxy = Proxy::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.wait_healthy(&c).await;
    assert_eq!(proxy.ready(&c).await, 200);
    let snap: Value = c
        .get(format!("{}/debug/snapshot", proxy.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snap["revision"], 41, "{snap}");
    let metrics = c
        .get(format!("{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vexil_proxy_sync_last_contact_age_seconds -1"),
        "{metrics}"
    );
    let r: Value = c
        .post(format!("{}/ofrep/v1/evaluate/flags/checkout", proxy.ofrep))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"], false);
    assert_eq!(proxy.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
