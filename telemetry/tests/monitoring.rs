//! The Grafana dashboard and the Prometheus alert rules of `k8s/components/monitoring/` name only
//! metrics the binaries export: real control and a real sidecar are started, made to produce every
//! family the files use (requests, a proxied request, a lookup, a refused sync session, a
//! rate-limited peer), and their `/metrics` scraped. A renamed metric fails this test.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{api, control_cmd, http, shop, sidecar};
use serde_json::json;
use vexil_testkit::echo::Echo;
use vexil_testkit::proxy::ProxyCmd;
use vexil_testkit::{TempDir, wait_for};

/// The files checked, relative to the repository's root.
const FILES: [&str; 2] = [
    "k8s/components/monitoring/vexil-dashboard.json",
    "k8s/components/monitoring/vexil.rules.yml",
];

/// Every metric name (`vexil_control_*`, `vexil_proxy_*`) anywhere in `text`: expressions,
/// template queries and prose alike (a bare prefix such as `vexil_proxy_*` is none).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["vexil_control_", "vexil_proxy_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let preceded = text.len() - rest.len() + at;
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let whole_word = text[..preceded]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if whole_word && !name.ends_with('_') {
                names.insert(name.clone());
            }
            rest = &rest[at + name.len()..];
        }
    }
    names
}

/// The sample names of an OpenMetrics text (`vexil_control_http_requests_total`, `..._bucket`).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

async fn scrape(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

#[test]
fn names_are_found_whole() {
    let found = metric_names(
        "sum(rate(vexil_control_sync_refused_total[5m])) / x_vexil_proxy_no \
         vexil_proxy_snapshot_flags) (vexil_control_*)",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [
            "vexil_control_sync_refused_total",
            "vexil_proxy_snapshot_flags"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut wanted = BTreeSet::new();
    for file in FILES {
        let text = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let names = metric_names(&text);
        assert!(names.len() >= 10, "{file}: only {names:?}");
        wanted.extend(names);
    }

    let dir = TempDir::new("vexil-telemetry-metrics");
    // Two failed authentications per peer, regained only after 10 minutes: the third is refused.
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        "auth_failure_burst = 2\nauth_failure_refill_ms = 600000\n",
    )
    .unwrap();
    let control = control_cmd(dir.path(), &[])
        .arg("--config")
        .arg(&config)
        .start()
        .await;
    let token = shop(&control).await;
    let mut proxy = sidecar(ProxyCmd::new(), &control, &token, dir.path());
    proxy.wait_ready().await;
    api(&control, "GET", "/sidecars", None).await;

    // The data plane (a proxied request) and a lookup (OFREP).
    let echo = Echo::new().start().await;
    let through = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{}", proxy.ports.outbound)).unwrap())
        .build()
        .unwrap();
    let r = through
        .get(format!("http://{}/hello", echo.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .post(format!("{}/ofrep/v1/evaluate/flags/checkout", proxy.ofrep))
        .json(&json!({"context": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A sidecar with a wrong token: its session is refused (one failed authentication).
    let state = TempDir::new("vexil-telemetry-refused");
    let mut refused = sidecar(
        ProxyCmd::new().name("refused sidecar"),
        &control,
        "vxl_not_a_token_of_this_control_0123456789",
        state.path(),
    );
    let metrics_url = format!("{}/metrics", control.base);
    wait_for(30, "control counts the refused session", async || {
        let text = scrape(&metrics_url).await;
        if text.contains("vexil_control_sync_refused_total{") {
            Ok(())
        } else {
            Err("no vexil_control_sync_refused_total yet".to_string())
        }
    })
    .await;
    refused.process.kill9();
    // Then wrong tokens on the API until the peer is rate-limited (429).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http()
            .get(format!("{}/api/v1/environments", control.base))
            .bearer_auth("vxl_wrong_token_0123456789abcdefghij")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // The sync gauges and the sidecar's contact age settle within a scrape or two.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut exported = sample_names(&scrape(&metrics_url).await);
    exported.extend(sample_names(
        &scrape(&format!("{}/metrics", proxy.admin)).await,
    ));
    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alert rules name metrics neither binary exports: {missing:?}\n\
         exported: {exported:#?}"
    );
}
