//! OpenTelemetry traces from both real binaries to a real OTLP/gRPC receiver: control's API
//! requests with their write transaction as a child span, its sync sends; the sidecar's sync
//! applies and, for a proxied request and a lookup, the `feature_flag.evaluation` events of its
//! decisions.

mod common;

use std::time::Duration;

use common::{control, shop, sidecar};
use vexil_testkit::TempDir;
use vexil_testkit::echo::Echo;
use vexil_testkit::otlp::Receiver;
use vexil_testkit::proxy::ProxyCmd;

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_send_traces_over_otlp() {
    let collector = Receiver::start().await;
    let dir = TempDir::new("vexil-telemetry-traces");
    let mut control = control(dir.path(), &["--otlp-endpoint", &collector.endpoint()]).await;
    let token = shop(&control).await;

    // An API request is the root of its trace; the write transaction is its child.
    let put = collector
        .wait_for("PUT of a flag", WITHIN, |s| {
            s.name == "PUT /api/v1/environments/{env}/flags/{key}"
        })
        .await;
    assert_eq!(put.service, "vexil-control");
    assert!(put.parent_span_id.is_empty(), "{put:?}");
    assert_eq!(put.attributes["http.request.method"], "PUT");
    assert_eq!(put.attributes["http.response.status_code"], "201");
    let write = collector
        .wait_for("store.write of that PUT", WITHIN, |s| {
            s.name == "store.write" && s.trace_id == put.trace_id
        })
        .await;
    assert_eq!(write.parent_span_id, put.span_id, "{write:?}");
    assert_eq!(write.attributes["environment"], "shop");
    assert_eq!(write.attributes["revision"], "1");

    // The sidecar, with traces too: control sends it the Full, it applies it.
    let upstream = Echo::new().start().await;
    let mut proxy = sidecar(
        ProxyCmd::new().env("VEXIL_OTLP_ENDPOINT", collector.endpoint()),
        &control,
        &token,
        dir.path(),
    );
    proxy.wait_ready().await;
    let send = collector
        .wait_for("sync.send of a Full", WITHIN, |s| {
            s.name == "sync.send" && s.attributes.get("frame").is_some_and(|f| f == "full")
        })
        .await;
    assert_eq!(send.service, "vexil-control");
    let apply = collector
        .wait_for("sync.apply", WITHIN, |s| s.name == "sync.apply")
        .await;
    assert_eq!(apply.service, "vexil-proxy");
    assert_eq!(apply.attributes["environment"], "shop");

    // A proxied request: its decisions as feature_flag events (OpenTelemetry's conventions).
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{}", proxy.ports.outbound)).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("http://{}/orders", upstream.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let decide = collector
        .wait_for("proxy.decide", WITHIN, |s| s.name == "proxy.decide")
        .await;
    assert_eq!(decide.service, "vexil-proxy");
    assert_eq!(decide.attributes["url.path"], "/orders");
    let (name, event) = decide
        .events
        .iter()
        .find(|(_, a)| a.get("feature_flag.key").is_some_and(|k| k == "checkout"))
        .unwrap_or_else(|| panic!("no evaluation of checkout: {decide:?}"));
    assert_eq!(name, "feature_flag.evaluation");
    assert_eq!(event["feature_flag.result.variant"], "on");
    assert_eq!(event["feature_flag.provider.name"], "vexil");
    assert_eq!(event["feature_flag.set.id"], "shop");

    // A lookup (OFREP here; the flagd gRPC calls share the code): its span and its event, with the
    // reason in the convention's lower case.
    let r = common::http()
        .post(format!("{}/ofrep/v1/evaluate/flags/checkout", proxy.ofrep))
        .json(&serde_json::json!({"context": {"targetingKey": "ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lookup = collector
        .wait_for("lookup.evaluate", WITHIN, |s| s.name == "lookup.evaluate")
        .await;
    assert_eq!(lookup.service, "vexil-proxy");
    assert_eq!(lookup.attributes["vexil.api"], "ofrep");
    assert_eq!(lookup.attributes["feature_flag.set.id"], "shop");
    assert_eq!(lookup.attributes["feature_flag.version"], "1");
    let (name, event) = lookup
        .events
        .first()
        .unwrap_or_else(|| panic!("no evaluation event: {lookup:?}"));
    assert_eq!(name, "feature_flag.evaluation");
    assert_eq!(event["feature_flag.key"], "checkout");
    assert_eq!(event["feature_flag.result.variant"], "on");
    assert_eq!(event["feature_flag.result.reason"], "static");
    assert_eq!(event["feature_flag.provider.name"], "vexil");

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
}

/// A bad endpoint is refused at start with its name, like every setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_not_http_is_refused_at_start() {
    let dir = TempDir::new("vexil-telemetry-bad-endpoint");
    let mut cmd =
        common::control_cmd(dir.path(), &["--otlp-endpoint", "grpc://collector:4317"]).spawn();
    let status = cmd.process.wait(30);
    assert!(!status.success());
    let out = cmd.process.tail(40);
    assert!(
        out.contains("otlp-endpoint") || out.contains("otlp_endpoint"),
        "{out}"
    );
    assert!(out.contains("http://HOST:PORT"), "{out}");
}
