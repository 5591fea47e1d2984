//! What the tests of both binaries share: control on SQLite with development TLS, an environment
//! `shop` with a flag and a sidecar token, a sidecar following it.

#![allow(dead_code)] // each test file uses its part

use std::path::Path;

use serde_json::{Value, json};
use vexil_testkit::control::{ControlCmd, ControlProcess};
use vexil_testkit::proxy::{ProxyCmd, ProxyProcess};

pub const ADMIN: &str = "vxl_telemetry_admin_token_0123456789abcdef";

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An admin API call that must succeed; its JSON answer (`Null` when there is none).
pub async fn api(control: &ControlProcess, method: &str, path: &str, body: Option<Value>) -> Value {
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

/// Control on SQLite in `dir` (development TLS in `dir/tls`), with `args`.
pub async fn control(dir: &Path, args: &[&str]) -> ControlProcess {
    control_cmd(dir, args).start().await
}

/// The command of [`control`].
pub fn control_cmd(dir: &Path, args: &[&str]) -> ControlCmd {
    ControlCmd::new(&format!("sqlite://{}", dir.join("vexil.db").display()))
        .dev_tls(&dir.join("tls"))
        .args(["--webhook-addr", "off"])
        .args(args.iter().copied())
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
}

/// The environment `shop` with one flag, and a sidecar token for it.
pub async fn shop(control: &ControlProcess) -> String {
    api(
        control,
        "POST",
        "/environments",
        Some(json!({"key": "shop", "name": "shop"})),
    )
    .await;
    api(
        control,
        "PUT",
        "/environments/shop/flags/checkout",
        Some(
            json!({"state": "ENABLED", "variants": {"on": true, "off": false},
                    "defaultVariant": "on"}),
        ),
    )
    .await;
    let token = api(
        control,
        "POST",
        "/tokens",
        Some(json!({"name": "shop-sidecars", "role": "sidecar", "environments": ["shop"]})),
    )
    .await;
    token["token"].as_str().unwrap().to_string()
}

/// A sidecar following `shop` on `control`, with `cmd`'s settings.
pub fn sidecar(cmd: ProxyCmd, control: &ControlProcess, token: &str, dir: &Path) -> ProxyProcess {
    cmd.args([
        "--control",
        &control.sync_url,
        "--environment",
        "shop",
        "--token",
        token,
    ])
    .arg("--ca-file")
    .arg(control.tls_dir.as_ref().unwrap().join("ca.pem"))
    .arg("--state-dir")
    .arg(dir.join("state"))
    .args(["--threads", "1"])
    .start()
}
