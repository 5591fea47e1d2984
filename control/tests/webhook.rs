//! The sidecar-injection webhook: `AdmissionReview` fixtures (`tests/fixtures/admission/`) answered,
//! their JSON Patch applied with a JSON-Patch library, the resulting pod checked field by field; and
//! one review over real HTTPS with the development CA.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vexil_control::webhook::{self, InjectConfig, Outcome};

use common::{App, Backend};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> InjectConfig {
    InjectConfig {
        sidecar_image: "registry.example/vexil-proxy:1.2.3".into(),
        control_url: "quic://vexil-control.vexil.svc:7443".into(),
        token_secret: "vexil-token".into(),
        ca_secret: "vexil-ca".into(),
        no_proxy: vec![".svc.cluster.local".into()],
        default_environment: None,
        namespace_config: "vexil-sidecar".into(),
    }
}

/// A fixture's review answered: the response as JSON, the outcome, and the pod with the patch
/// applied (`None` when there is no patch).
struct Answered {
    response: Value,
    outcome: Outcome,
    original: Value,
    pod: Option<Value>,
}

fn answer(name: &str, config: &InjectConfig) -> Answered {
    let body = fixture(name);
    let reviewed = webhook::review(&body, config);
    let response = serde_json::to_value(&reviewed.review).unwrap();
    let original = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|r| r.pointer("/request/object").cloned())
        .unwrap_or(Value::Null);
    let pod = response["response"]["patch"].as_str().map(|patch| {
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        apply(&original, patch)
    });
    Answered {
        response,
        outcome: reviewed.outcome,
        original,
        pod,
    }
}

/// Decodes a base64 JSON Patch and applies it with the `json-patch` crate.
fn apply(pod: &Value, patch_b64: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch_b64)
        .expect("the patch is standard base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| {
        panic!(
            "the patch does not apply: {e}\npatch: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    patched
}

/// The container named `name` in `list` (`/spec/containers` or `/spec/initContainers`).
fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod.pointer(list)
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {list}: {pod:#}"))
}

/// The value of the variable `name` of a container (`None` when unset; panics on a duplicate).
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let matches: Vec<&Value> = container["env"]
        .as_array()
        .map(|e| e.iter().filter(|v| v["name"] == name).collect())
        .unwrap_or_default();
    assert!(matches.len() <= 1, "{name} is set twice: {container:#}");
    matches
        .first()
        .map(|v| v["value"].as_str().expect("a literal value"))
}

fn record(pod: &Value) -> Value {
    let text = pod["metadata"]["annotations"]["vexil.io/injected"]
        .as_str()
        .unwrap_or_else(|| panic!("no vexil.io/injected annotation: {pod:#}"));
    serde_json::from_str(text).expect("the record is JSON")
}

const NO_PROXY: &str = "localhost,127.0.0.1,::1,.svc.cluster.local";

/// What every injected sidecar looks like, whatever the pod.
fn assert_sidecar(sidecar: &Value, environment: &str) {
    assert_eq!(sidecar["image"], "registry.example/vexil-proxy:1.2.3");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(sidecar["command"], json!(["vexil-proxy"]));
    assert_eq!(
        sidecar["args"],
        json!([
            "--control",
            "quic://vexil-control.vexil.svc:7443",
            "--environment",
            environment,
            "--token-file",
            "/var/run/vexil/token",
            "--ca-file",
            "/var/run/vexil/ca.pem",
            "--state-dir",
            "/var/lib/vexil",
            "--config",
            "/etc/vexil/proxy.toml",
            "--admin-addr",
            "0.0.0.0:8014",
            "--config-optional"
        ])
    );
    let probe = &sidecar["startupProbe"]["httpGet"];
    assert_eq!(probe["path"], "/readyz");
    assert_eq!(probe["port"], 8014);
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts = &sidecar["volumeMounts"];
    assert_eq!(
        mounts,
        &json!([
            {"name": "vexil-credentials", "mountPath": "/var/run/vexil", "readOnly": true},
            {"name": "vexil-state", "mountPath": "/var/lib/vexil"},
            {"name": "vexil-config", "mountPath": "/etc/vexil", "readOnly": true}
        ])
    );
}

/// What stock flagd and OFREP providers read to find the sidecar.
fn assert_providers(container: &Value) {
    assert_eq!(env(container, "FLAGD_HOST"), Some("127.0.0.1"));
    assert_eq!(env(container, "FLAGD_PORT"), Some("8013"));
    assert_eq!(env(container, "FLAGD_SYNC_PORT"), Some("8015"));
    assert_eq!(env(container, "FLAGD_RESOLVER"), Some("rpc"));
    assert_eq!(
        env(container, "OFREP_ENDPOINT"),
        Some("http://127.0.0.1:8016")
    );
}

/// The volumes the sidecar mounts, from the configured Secrets and ConfigMap.
fn assert_volumes(volumes: &[Value]) {
    let credentials = volumes
        .iter()
        .find(|v| v["name"] == "vexil-credentials")
        .expect("credentials volume");
    assert_eq!(
        credentials["projected"]["sources"],
        json!([
            {"secret": {"name": "vexil-token", "items": [{"key": "token", "path": "token"}]}},
            {"secret": {"name": "vexil-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}}
        ])
    );
    let state = volumes
        .iter()
        .find(|v| v["name"] == "vexil-state")
        .expect("state volume");
    assert_eq!(state["emptyDir"], json!({}));
    let config = volumes
        .iter()
        .find(|v| v["name"] == "vexil-config")
        .expect("config volume");
    assert_eq!(
        config["configMap"],
        json!({"name": "vexil-sidecar", "optional": true}),
        "the namespace's default ConfigMap, when it exists"
    );
}

#[test]
fn a_minimal_pod_gets_every_array_and_map_it_lacks() {
    let a = answer("minimal.json", &config());
    assert_eq!(a.outcome, Outcome::Injected);
    let r = &a.response;
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["kind"], "AdmissionReview");
    assert_eq!(r["response"]["uid"], "0b1e2a4c-0001-4c1e-9a55-000000000001");
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("warnings").is_none());
    let pod = a.pod.expect("a patch");

    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    assert_sidecar(&init[0], "shop"); // no annotation, no default: the namespace
    assert!(init[0].get("env").is_none(), "no routes, no VEXIL_ROUTES");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3);
    assert_volumes(volumes);

    let web = container(&pod, "/spec/containers", "web");
    assert_providers(web);
    assert_eq!(env(web, "HTTP_PROXY"), Some("http://127.0.0.1:15101"));
    assert_eq!(env(web, "http_proxy"), Some("http://127.0.0.1:15101"));
    assert_eq!(env(web, "NO_PROXY"), Some(NO_PROXY));
    assert_eq!(env(web, "no_proxy"), Some(NO_PROXY));
    assert_eq!(web["env"].as_array().unwrap().len(), 9);
    // Nothing else of the container changed.
    let mut without_env = web.clone();
    without_env.as_object_mut().unwrap().remove("env");
    assert_eq!(without_env, a.original["spec"]["containers"][0]);

    assert_eq!(pod["metadata"]["generateName"], "web-7d4b9c-");
    let record = record(&pod);
    assert_eq!(record["environment"], "shop");
    assert_eq!(record["image"], "registry.example/vexil-proxy:1.2.3");
    assert_eq!(record["proxied"], json!(["web"]));
    assert!(record.get("keptOwnProxy").is_none());
    assert_eq!(pod["metadata"]["annotations"].as_object().unwrap().len(), 1);
}

#[test]
fn a_full_pod_keeps_what_it_has_and_gets_the_sidecar_first() {
    let a = answer("full.json", &config());
    assert_eq!(a.outcome, Outcome::Injected);
    let pod = a.pod.expect("a patch");

    // The sidecar comes first, so the app's own init containers already have it.
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(init[0]["name"], "vexil-proxy");
    assert_eq!(init[1], a.original["spec"]["initContainers"][0]);
    assert_sidecar(&init[0], "checkout-prod");
    assert_eq!(
        env(&init[0], "VEXIL_ROUTES"),
        Some(r#"[{"host":"payments.shop.svc","flags":["new-checkout"]}]"#)
    );

    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 4);
    assert_eq!(volumes[0], a.original["spec"]["volumes"][0]);
    assert_volumes(volumes);

    let app = container(&pod, "/spec/containers", "app");
    assert_eq!(env(app, "LOG_LEVEL"), Some("info"));
    assert_eq!(
        app["env"][0]["name"], "LOG_LEVEL",
        "existing variables stay first"
    );
    assert_eq!(env(app, "HTTP_PROXY"), Some("http://127.0.0.1:15101"));
    assert_eq!(env(app, "NO_PROXY"), Some(NO_PROXY));
    assert_providers(app);
    assert_eq!(app["env"].as_array().unwrap().len(), 10);
    assert_eq!(
        app["volumeMounts"],
        a.original["spec"]["containers"][0]["volumeMounts"]
    );
    for name in ["worker", "metrics"] {
        let c = container(&pod, "/spec/containers", name);
        assert_eq!(
            env(c, "http_proxy"),
            Some("http://127.0.0.1:15101"),
            "{name}"
        );
        assert_eq!(env(c, "no_proxy"), Some(NO_PROXY), "{name}");
        assert_eq!(c["env"].as_array().unwrap().len(), 9, "{name}");
    }

    let annotations = pod["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations["example.com/owner"], "team~payments");
    assert_eq!(annotations["vexil.io/environment"], "checkout-prod");
    assert_eq!(annotations.len(), 4);
    assert_eq!(pod["metadata"]["labels"], a.original["metadata"]["labels"]);
    let record = record(&pod);
    assert_eq!(record["environment"], "checkout-prod");
    assert_eq!(record["proxied"], json!(["app", "worker", "metrics"]));
}

#[test]
fn a_container_with_its_own_proxy_keeps_it() {
    let a = answer("own-proxy.json", &config());
    assert_eq!(a.outcome, Outcome::Injected);
    let pod = a.pod.expect("a patch");
    // An app that chose a proxy keeps its whole proxy setup, untouched, and gets only what its
    // OpenFeature providers read.
    let legacy = container(&pod, "/spec/containers", "legacy");
    let original = &a.original["spec"]["containers"][0];
    let original_env = original["env"].as_array().unwrap();
    assert_eq!(
        &legacy["env"].as_array().unwrap()[..original_env.len()],
        &original_env[..]
    );
    assert_eq!(
        legacy["env"].as_array().unwrap().len(),
        original_env.len() + 5
    );
    assert_providers(legacy);
    assert_eq!(env(legacy, "HTTP_PROXY"), Some("http://squid.infra:3128"));
    assert_eq!(env(legacy, "http_proxy"), None);
    // An app with only its own NO_PROXY gets the proxy and keeps its NO_PROXY.
    let app = container(&pod, "/spec/containers", "app");
    assert_eq!(env(app, "HTTP_PROXY"), Some("http://127.0.0.1:15101"));
    assert_eq!(env(app, "no_proxy"), Some("localhost,.internal"));
    assert_eq!(env(app, "NO_PROXY"), None);
    assert_eq!(app["env"].as_array().unwrap().len(), 8);
    // The empty annotation map is added to, not replaced.
    let record = record(&pod);
    assert_eq!(record["proxied"], json!(["app"]));
    assert_eq!(record["keptOwnProxy"], json!(["legacy"]));
    assert_sidecar(&pod["spec"]["initContainers"][0], "shop");
}

#[test]
fn an_opted_out_pod_is_allowed_unchanged() {
    let a = answer("opt-out.json", &config());
    assert_eq!(a.outcome, Outcome::OptedOut);
    assert_no_patch(&a, "0b1e2a4c-0004-4c1e-9a55-000000000004");
}

#[test]
fn an_injected_pod_is_left_alone() {
    let a = answer("already-injected.json", &config());
    assert_eq!(a.outcome, Outcome::AlreadyInjected);
    assert_no_patch(&a, "0b1e2a4c-0005-4c1e-9a55-000000000005");
    // The webhook's own output, reviewed again (reinvocation), is left alone too.
    let injected = answer("minimal.json", &config()).pod.unwrap();
    let mut review: Value = serde_json::from_slice(&fixture("minimal.json")).unwrap();
    review["request"]["object"] = injected;
    let again = webhook::review(review.to_string().as_bytes(), &config());
    assert_eq!(again.outcome, Outcome::AlreadyInjected);
    assert!(again.review.response.patch.is_none());
}

#[test]
fn an_invalid_environment_is_a_warning_not_a_rejection() {
    let a = answer("bad-environment.json", &config());
    assert!(matches!(a.outcome, Outcome::Invalid(_)), "{:?}", a.outcome);
    assert_no_patch(&a, "0b1e2a4c-0006-4c1e-9a55-000000000006");
    let warning = a.response["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("\"Production!\""), "{warning}");
}

#[test]
fn the_default_environment_applies_to_pods_without_the_annotation() {
    let config = InjectConfig {
        default_environment: Some("staging".into()),
        ..config()
    };
    let pod = answer("minimal.json", &config).pod.unwrap();
    assert_sidecar(&pod["spec"]["initContainers"][0], "staging");
    let pod = answer("full.json", &config).pod.unwrap();
    assert_sidecar(&pod["spec"]["initContainers"][0], "checkout-prod");
}

#[test]
fn whatever_is_not_a_pod_creation_is_allowed_without_a_patch() {
    let cases = [
        (
            "pod-update.json",
            "0b1e2a4c-0007-4c1e-9a55-000000000007",
            "ignored",
        ),
        (
            "no-object.json",
            "0b1e2a4c-0008-4c1e-9a55-000000000008",
            "unparseable",
        ),
        (
            "v1beta1.json",
            "0b1e2a4c-0009-4c1e-9a55-000000000009",
            "unparseable",
        ),
        ("not-json.txt", "", "unparseable"),
    ];
    for (name, uid, outcome) in cases {
        let a = answer(name, &config());
        assert_eq!(a.outcome.label(), outcome, "{name}");
        assert_no_patch(&a, uid);
    }
}

fn assert_no_patch(a: &Answered, uid: &str) {
    let r = &a.response["response"];
    assert_eq!(r["uid"], uid);
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none(), "{r}");
    assert!(r.get("patchType").is_none(), "{r}");
    assert!(a.pod.is_none());
}

// ---------------------------------------------------------------- HTTPS ----

async fn serves_reviews_over_https(app: App) {
    let dir = common::TempDir::new("vexil-webhook");
    let files = vexil_control::tls::ensure_dev_tls(&dir, &[]).unwrap();
    let listener = webhook::bind("127.0.0.1:0".parse().unwrap(), &files.cert, &files.key)
        .await
        .unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let control = app.control.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        control
            .serve_webhook(listener, config(), async move {
                let _ = stopped.await;
            })
            .await
    });

    let (status, review) = common::post_inject(addr, &files.ca_cert, &fixture("full.json")).await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(
        review["response"]["uid"],
        "0b1e2a4c-0002-4c1e-9a55-000000000002"
    );
    let original: Value = serde_json::from_slice(&fixture("full.json")).unwrap();
    let pod = apply(
        &original["request"]["object"],
        review["response"]["patch"].as_str().expect("a patch"),
    );
    assert_sidecar(&pod["spec"]["initContainers"][0], "checkout-prod");
    // Garbage is allowed, not refused.
    let (status, review) = common::post_inject(addr, &files.ca_cert, b"{\"nonsense\": true").await;
    assert_eq!(status, 200);
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());
    // Both are counted.
    let metrics = app.get("/metrics", &app.admin).await;
    for outcome in ["injected", "unparseable"] {
        let line = format!("vexil_control_webhook_reviews_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.text.contains(&line), "{line} in:\n{}", metrics.text);
    }

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the webhook stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_over_https_with_the_dev_ca() {
    common::run(
        Backend::Sqlite,
        Default::default(),
        serves_reviews_over_https,
    )
    .await;
}

// A review whose body trickles in a byte every 100 ms is answered `408` at the read timeout (1 s),
// not held for the 20 s it would take; a normal review is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trickled_review_gets_408_at_the_read_timeout() {
    let options = common::Options {
        read_timeout_ms: Some(1000),
        ..Default::default()
    };
    common::run(Backend::Sqlite, options, |app: App| async move {
        let dir = common::TempDir::new("vexil-webhook");
        let files = vexil_control::tls::ensure_dev_tls(&dir, &[]).unwrap();
        let listener = webhook::bind("127.0.0.1:0".parse().unwrap(), &files.cert, &files.key)
            .await
            .unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let control = app.control.clone();
        tokio::spawn(async move {
            control
                .serve_webhook(listener, config(), std::future::pending())
                .await
        });
        let stream = common::connect_tls(addr, &files.ca_cert).await;
        let (mut read, mut write) = tokio::io::split(stream);
        write
            .write_all(
                b"POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                  Content-Length: 200\r\n\r\n",
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let trickle = tokio::spawn(async move {
            for _ in 0..200 {
                if write.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let (status, review) =
            common::post_inject(addr, &files.ca_cert, &fixture("full.json")).await;
        assert_eq!(status, 200, "{review}");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        let took = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "answered after {took:?}"
        );
        trickle.abort();
    })
    .await;
}

/// The pods the webhook makes from `minimal.json` and `full.json` are kept as golden files,
/// `<fixture>.injected.json`, which `scripts/validate-k8s.sh` validates against the Kubernetes
/// schemas; this test keeps them in step with the code (`VEXIL_BLESS=1` rewrites them).
#[test]
fn the_injected_pods_match_their_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    for name in ["minimal", "full"] {
        let mut pod = answer(&format!("{name}.json"), &config()).pod.unwrap();
        // The record carries the crate version; the golden file should not change with it.
        let record = record(&pod);
        assert_eq!(record["version"], env!("CARGO_PKG_VERSION"));
        let mut stable = record.clone();
        stable["version"] = json!("VERSION");
        pod["metadata"]["annotations"]["vexil.io/injected"] = json!(stable.to_string());
        let text = serde_json::to_string_pretty(&pod).unwrap() + "\n";
        let golden = dir.join(format!("{name}.injected.json"));
        if std::env::var_os("VEXIL_BLESS").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (VEXIL_BLESS=1 writes it)", golden.display()));
        assert_eq!(
            text,
            expected,
            "{} is stale (VEXIL_BLESS=1 rewrites it)",
            golden.display()
        );
    }
}
