//! Both real binaries with JSON logs (`[telemetry] log_format`).

mod common;

use common::{control, shop, sidecar};
use serde_json::Value;
use vexil_testkit::TempDir;
use vexil_testkit::proxy::ProxyCmd;

/// Every line of `stdout` is a JSON object with a time, a level, a target and a message; returns
/// them.
fn json_lines(name: &str, stdout: &str) -> Vec<Value> {
    assert!(!stdout.trim().is_empty(), "{name} logged nothing");
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: a log line that is not JSON ({e}): {line}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(v[field].is_string(), "{name}: no {field} in {line}");
            }
            v
        })
        .collect()
}

/// `--log-format json` (control) and `VEXIL_LOG_FORMAT=json` (sidecar): every line either writes
/// is one JSON object, and the events' fields are fields of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_log_json_lines() {
    let dir = TempDir::new("vexil-telemetry-logs");
    let mut control = control(dir.path(), &["--log-format", "json"]).await;
    let token = shop(&control).await;
    let mut proxy = sidecar(
        ProxyCmd::new().env("VEXIL_LOG_FORMAT", "json"),
        &control,
        &token,
        dir.path(),
    );
    proxy.wait_ready().await;
    proxy.process.signal("TERM");
    assert!(
        proxy.process.wait(30).success(),
        "{}",
        proxy.process.tail(40)
    );
    control.process.signal("TERM");
    assert!(
        control.process.wait(30).success(),
        "{}",
        control.process.tail(40)
    );

    let lines = json_lines("vexil-control", &control.process.stdout());
    let listening = lines
        .iter()
        .find(|l| l["message"] == "admin API listening")
        .unwrap_or_else(|| panic!("no 'admin API listening' in {lines:#?}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["addr"], control.admin.to_string());
    assert!(
        lines.iter().any(|l| l["message"] == "stopped"),
        "{lines:#?}"
    );

    let lines = json_lines("vexil-proxy", &proxy.process.stdout());
    assert!(
        lines.iter().any(|l| l["message"] == "stopped"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["target"]
            .as_str()
            .unwrap()
            .starts_with("vexil_proxy::sync")),
        "no line of the sync client in {lines:#?}"
    );
}

/// A log format neither binary knows stops the start, naming the setting and the value.
#[test]
fn an_unknown_log_format_is_refused() {
    for (binary, first) in [("vexil-control", &["serve"][..]), ("vexil-proxy", &[][..])] {
        let out = std::process::Command::new(vexil_testkit::binary(binary))
            .args(first)
            .args(["--log-format", "yaml", "--print-config"])
            .env_clear()
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{binary}: {err}");
        assert!(
            err.contains("--log-format") && err.contains("\"yaml\""),
            "{binary}: {err}"
        );
    }
}
