//! OFREP through reqwest.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn post(h: &Harness, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(h.ofrep_url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flag_success_bodies() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/bool-static", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "bool-static", "value": true, "reason": "STATIC", "variant": "on",
               "metadata": {"owner": "alice", "team": "core", "version": 3}})
    );
    let (status, body) = post(
        &h,
        "/ofrep/v1/evaluate/flags/string-targeted",
        json!({"context": {"targetingKey": "u1", "country": "fr"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["value"], &body["reason"], &body["variant"]),
        (&json!("#00f"), &json!("TARGETING_MATCH"), &json!("blue"))
    );
    let (_, body) = post(
        &h,
        "/ofrep/v1/evaluate/flags/object-flag",
        json!({"context": {}}),
    )
    .await;
    assert_eq!(body["value"], json!({"size": 1, "tags": ["x", "y"]}));

    // A float stays a float on the wire (1.0, not 1): clients type-check it.
    let text = reqwest::Client::new()
        .post(h.ofrep_url("/ofrep/v1/evaluate/flags/float-flag"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""value":1.0"#), "{text}");
    // An empty body is the empty context.
    let r = reqwest::Client::new()
        .post(h.ofrep_url("/ofrep/v1/evaluate/flags/int-flag"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (&body["value"], &body["reason"]),
        (&json!(10), &json!("DEFAULT"))
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_flag_defers_to_the_code_default() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/disabled-flag", json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a disabled flag is not a missing flag"
    );
    assert_eq!(
        body,
        json!({"key": "disabled-flag", "reason": "DISABLED", "variant": null,
               "metadata": {"owner": "bob", "team": "core", "version": 3}})
    );
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/no-default", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body.get("value"), &body["reason"]),
        (None, &json!("DEFAULT"))
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_and_statuses() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/nope", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        (&body["key"], &body["errorCode"]),
        (&json!("nope"), &json!("FLAG_NOT_FOUND"))
    );
    assert!(body["errorDetails"].as_str().unwrap().contains("nope"));

    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/broken", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (&body["key"], &body["errorCode"]),
        (&json!("broken"), &json!("PARSE_ERROR"))
    );
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("no-such-operator"),
        "{body}"
    );

    let (status, body) = post(
        &h,
        "/ofrep/v1/evaluate/flags/bad-variant",
        json!({"context": {"pick": "missing"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errorCode"], "GENERAL");

    let (status, body) = post(
        &h,
        "/ofrep/v1/evaluate/flags/bool-static",
        json!({"context": [1]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (&body["key"], &body["errorCode"]),
        (&json!("bool-static"), &json!("INVALID_CONTEXT"))
    );
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("JSON object"),
        "{body}"
    );

    let (status, body) = post(
        &h,
        "/ofrep/v1/evaluate/flags/bool-static",
        json!({"context": wide_context(65)}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("at most 64"),
        "{body}"
    );

    let r = reqwest::Client::new()
        .post(h.ofrep_url("/ofrep/v1/evaluate/flags/bool-static"))
        .header("content-type", "application/json")
        .body("{\"context\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    // Bulk: a bad request has no key.
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags", json!({"context": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body.get("key"), None);
    assert_eq!(body["errorCode"], "INVALID_CONTEXT");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_and_not_ready() {
    let h = Harness::start().await;
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/bool-static", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["errorDetails"].as_str().unwrap().contains("not ready"),
        "{body}"
    );
    let r = reqwest::Client::new()
        .post(h.ofrep_url("/ofrep/v1/evaluate/flags"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");

    publish(&h.cell, 1, &fixture());
    let big = json!({"context": {"blob": "x".repeat(1024 * 1024)}});
    let (status, body) = post(&h, "/ofrep/v1/evaluate/flags/bool-static", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        body["errorDetails"]
            .as_str()
            .unwrap()
            .contains("1048576 bytes"),
        "{body}"
    );
    h.shutdown().await;
}

async fn bulk(h: &Harness, context: Value, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(h.ofrep_url("/ofrep/v1/evaluate/flags"))
        .json(&json!({ "context": context }));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_evaluation_with_etag() {
    let h = Harness::start().await;
    publish(&h.cell, 1, &fixture());
    let context = json!({"targetingKey": "u1", "country": "de"});
    let r = bulk(&h, context.clone(), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(tag.starts_with("\"1-") && tag.ends_with('"'), "{tag}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["metadata"], json!({"team": "core", "version": 3}));
    let flags = body["flags"].as_array().unwrap();
    assert_eq!(
        flags.len(),
        10,
        "every flag, disabled and failing ones included"
    );
    let by_key = |k: &str| flags.iter().find(|f| f["key"] == k).unwrap().clone();
    assert_eq!(by_key("string-targeted")["value"], "#00f");
    assert_eq!(by_key("string-targeted")["reason"], "TARGETING_MATCH");
    let disabled = by_key("disabled-flag");
    assert_eq!(
        (disabled.get("value"), &disabled["reason"]),
        (None, &json!("DISABLED"))
    );
    assert_eq!(by_key("broken")["errorCode"], "PARSE_ERROR");
    assert_eq!(by_key("array-flag")["value"], json!([1, 2]));

    // Same revision, same context (keys in another order): 304 without a body.
    let reordered = json!({"country": "de", "targetingKey": "u1"});
    let r = bulk(&h, reordered, Some(&tag)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], tag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    // A list and a weak form match too.
    let r = bulk(&h, context.clone(), Some(&format!("\"other\", W/{tag}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Another context: another tag.
    let r = bulk(&h, json!({"targetingKey": "u2"}), Some(&tag)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_ne!(r.headers()["etag"], tag.as_str());

    // A new revision: the old tag no longer matches.
    let mut doc = fixture();
    doc["flags"]["bool-static"]["defaultVariant"] = json!("off");
    publish(&h.cell, 2, &doc);
    let r = bulk(&h, context.clone(), Some(&tag)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let new_tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(new_tag.starts_with("\"2-"), "{new_tag}");
    let body: Value = r.json().await.unwrap();
    let flag = body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "bool-static")
        .unwrap()
        .clone();
    assert_eq!(flag["value"], false);

    // The same revision republished (e.g. after a restart) gets a new tag as well.
    publish(&h.cell, 2, &doc);
    let r = bulk(&h, context, Some(&new_tag)).await;
    assert_eq!(r.status(), StatusCode::OK);

    let text = h.metrics.render();
    assert!(
        text.contains(r#"vexil_proxy_evaluations_total{api="ofrep",flag="string-targeted",variant="blue",reason="TARGETING_MATCH"}"#),
        "{text}"
    );
    h.shutdown().await;
}

/// Reads until the server closes the connection (bounded); what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the server closes a stalled connection")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    let limits = vexil_proxy::lookup::Limits {
        read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let h = Harness::start_with(Options {
        limits,
        ..Options::default()
    })
    .await;
    publish(&h.cell, 1, &fixture());

    // OFREP and admin: connected, silent; half a request head.
    for addr in [h.ofrep, h.admin] {
        let mut silent = TcpStream::connect(addr).await.unwrap();
        read_to_close(&mut silent).await;
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let out = read_to_close(&mut half).await;
        assert!(!out.contains(" 200 "), "{out}");
    }

    // gRPC: connected and silent (no HTTP/2 preface).
    let mut silent = TcpStream::connect(h.grpc).await.unwrap();
    read_to_close(&mut silent).await;

    // OFREP: a whole head, then a body that never comes: 408 and the connection ends.
    let mut stalled = TcpStream::connect(h.ofrep).await.unwrap();
    stalled
        .write_all(
            b"POST /ofrep/v1/evaluate/flags/bool-static HTTP/1.1\r\nhost: x\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"context\":",
        )
        .await
        .unwrap();
    let out = read_to_close(&mut stalled).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("did not arrive within"), "{out}");

    // Prompt clients are still served.
    let (status, _) = post(&h, "/ofrep/v1/evaluate/flags/bool-static", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let mut v2 = h.v2().await;
    let answer = v2
        .resolve_boolean(vexil_proto::flagd::evaluation::v2::ResolveBooleanRequest {
            flag_key: "bool-static".into(),
            context: None,
        })
        .await;
    assert!(answer.is_ok(), "{answer:?}");
    h.shutdown().await;
}
