//! The real `vexil-proxy` binary: offline mode, readiness with and without a persisted snapshot
//! while control is unreachable, and a clean exit on SIGTERM.

use serde_json::{Value, json};
use vexil_testkit::echo::Echo;
use vexil_testkit::proxy::ProxyProcess;
use vexil_testkit::{TempDir, free_tcp_port};

#[tokio::test]
async fn offline_mode_serves_a_flags_file_and_exits_cleanly_on_sigterm() {
    let dir = TempDir::new("vexil-offline");
    let file = dir.join("flags.json");
    let doc = json!({"flags": {"checkout": {"state": "ENABLED",
        "variants": {"on": true, "off": false}, "defaultVariant": "on"}}});
    std::fs::write(&file, doc.to_string()).unwrap();
    let mut proxy = ProxyProcess::start(&["--flags-file", file.to_str().unwrap()]);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    proxy.wait_healthy().await;
    // Healthy implies the data plane accepts: the admin listener is served after it.
    tokio::net::TcpStream::connect(("127.0.0.1", proxy.ports.outbound))
        .await
        .expect("the outbound listener accepts once /healthz answers");
    assert_eq!(proxy.ready().await, 200);
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
    let upstream = Echo::new().header_as_body("vexil-flags").start().await;
    let upstream_addr = upstream.addr();
    let via = proxy.client();
    let seen = via
        .get(format!("http://{upstream_addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "checkout=?1");
    assert_eq!(proxy.process.terminate(15), Some(0));
}

#[tokio::test]
async fn with_control_down_readiness_follows_the_persisted_snapshot() {
    let dir = TempDir::new("vexil-cold");
    // A CA that nothing presents, and a port where nothing listens: control is unreachable.
    let ca = dir.join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&ca, cert.pem()).unwrap();
    let control = format!("quic://127.0.0.1:{}", free_tcp_port());
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
    let c = reqwest::Client::builder().no_proxy().build().unwrap();

    // Nothing persisted: alive, not ready.
    let empty = dir.join("empty");
    let a = args(empty.to_str().unwrap());
    let mut proxy = ProxyProcess::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.wait_healthy().await;
    assert_eq!(proxy.ready().await, 503);
    assert_eq!(proxy.process.terminate(15), Some(0));

    // A persisted snapshot: ready from it, before control ever answers.
    let state = dir.join("state");
    let doc = json!({"flags": {"checkout": {"state": "ENABLED",
        "variants": {"on": true, "off": false}, "defaultVariant": "off"}}});
    vexil_proxy::sync::persist::save(&state, "prod", 41, &doc.to_string()).unwrap();
    let a = args(state.to_str().unwrap());
    let mut proxy = ProxyProcess::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    proxy.wait_healthy().await;
    assert_eq!(proxy.ready().await, 200);
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
    assert_eq!(proxy.process.terminate(15), Some(0));
}

/// The listening TCP sockets of `pid`'s network namespace: (address as in /proc, port).
fn listening(pid: u32) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1 (ADDR:PORT, hex), the state column 3 (0A = LISTEN).
            if cols.len() > 3 && cols[3] == "0A" {
                let (addr, port) = cols[1].split_once(':').unwrap();
                out.push((addr.to_string(), u16::from_str_radix(port, 16).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// With no address given, every listener (outbound data plane, gRPC, admin, flagd sync, OFREP)
/// binds to 127.0.0.1 on its documented port, and the inbound listener is off. The binary runs
/// in a network namespace of its own (`unshare --net`), so the fixed default ports cannot clash
/// with anything else on the machine, and its sockets are read from `/proc/PID/net/tcp{,6}`.
#[tokio::test]
async fn every_listener_binds_to_loopback_by_default() {
    let dir = TempDir::new("vexil-defaults");
    let file = dir.join("flags.json");
    std::fs::write(&file, r#"{"flags": {}}"#).unwrap();
    let probe = std::process::Command::new("unshare")
        .args(["--net", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        vexil_testkit::skip(
            "cannot create a network namespace here (unshare --net: root, util-linux)",
        );
        return;
    }
    let mut child = std::process::Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up 2>/dev/null; exec \"$0\" \"$@\"",
        ])
        .arg(env!("CARGO_BIN_EXE_vexil-proxy"))
        .arg("--flags-file")
        .arg(&file)
        .env_clear()
        .env("VEXIL_LOG", "warn")
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let expected: Vec<(String, u16)> = [8013u16, 8014, 8015, 8016, 15101]
        .into_iter()
        .map(|p| ("0100007F".to_string(), p))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = listening(pid);
    while seen != expected {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("vexil-proxy exited ({status}); listening: {seen:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listening sockets {seen:?}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = listening(pid);
    }
    // Still exactly those once everything is up (nothing on 0.0.0.0 or :: comes later).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(listening(pid), expected);
    let _ = child.kill();
    let _ = child.wait();
}
