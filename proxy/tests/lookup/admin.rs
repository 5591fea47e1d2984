//! The admin endpoints through reqwest.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn get(h: &Harness, path: &str) -> (StatusCode, String) {
    let r = reqwest::get(h.admin_url(path)).await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_first_snapshot() {
    let h = Harness::start().await;
    assert_eq!(get(&h, "/healthz").await.0, StatusCode::OK);
    let (status, text) = get(&h, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.contains("no flag set loaded"), "{text}");
    let (status, text) = get(&h, "/debug/snapshot").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["sync_state"], "unloaded");
    let (status, text) = get(&h, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("vexil_proxy_snapshot_loaded 0"), "{text}");

    publish(&h.cell, 3, &fixture());
    let (status, text) = get(&h, "/readyz").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "ready\n"));
    assert_eq!(get(&h, "/healthz").await.0, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_snapshot_and_metrics() {
    let h = Harness::start().await;
    publish(&h.cell, 3, &fixture());
    let (status, text) = get(&h, "/debug/snapshot").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["environment"], "test-env");
    assert_eq!(body["revision"], 3);
    assert_eq!(
        body["source"],
        json!({"kind": "file", "location": "fixture.json"})
    );
    assert_eq!(body["sync_state"], "file");
    assert_eq!(body["flag_count"], 10);
    assert_eq!(body["flags"][0], "array-flag");
    assert!(body["loaded_at"].as_str().unwrap().contains('T'), "{body}");
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{body}");
    assert!(
        problems[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("flags.broken.targeting")
    );

    let r = reqwest::get(h.admin_url("/metrics")).await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    for line in [
        "vexil_proxy_snapshot_loaded 1",
        "vexil_proxy_snapshot_revision 3",
        "vexil_proxy_snapshot_flags 10",
        "vexil_proxy_sync_state{state=\"file\"} 1",
        "vexil_proxy_snapshot_age_seconds ",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }

    // A sync client plugs in its own state.
    h.metrics.set_sync_state(|| "stale".to_string());
    let (_, text) = get(&h, "/metrics").await;
    assert!(
        text.contains("vexil_proxy_sync_state{state=\"stale\"} 1"),
        "{text}"
    );
    let (_, text) = get(&h, "/debug/snapshot").await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["sync_state"],
        "stale"
    );
    h.shutdown().await;
}
