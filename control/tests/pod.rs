//! Pods in a box: a pod reviewed by the real standalone webhook, its patch applied, and the patched
//! pod run on this machine in a network namespace of its own (`pod/harness.rs`), with the built
//! sidecar and stock OpenFeature clients as its containers (`pod/app.py`, `pod/app.mjs`).
//!
//! Needs root (network namespaces, bind mounts): without it the tests print a notice and pass,
//! except under `CI=true` where they fail.

mod common;
#[path = "pod/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vexil_testkit::control::{ControlCmd, ControlProcess};
use vexil_testkit::{TempDir, binary, free_udp_port};

use harness::{Kubelet, Netns, Objects, Pod, Webhook};

const ADMIN: &str = "vxl_pod_in_a_box_admin_token_0123456789";
const IMAGE: &str = "registry.example/vexil-proxy:pod-test";
const NAMESPACE: &str = "shop";
const ENV: &str = "shop-prod";

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An admin API call; the JSON answer.
async fn api(control: &ControlProcess, method: &str, path: &str, body: Value) -> Value {
    let r = http()
        .request(
            method.parse().unwrap(),
            format!("{}/api/v1{path}", control.base),
        )
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The test's own files, next to this one.
fn app_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pod")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the containers' programs are here.
fn programs() -> BTreeMap<String, PathBuf> {
    let python = vexil_testkit::tools::cache_dir("VEXIL_PYTOOLS", "pytools").join("bin/python");
    let node = which("node");
    BTreeMap::from([
        ("vexil-proxy".to_string(), binary("vexil-proxy")),
        ("python".to_string(), python),
        ("node".to_string(), node),
    ])
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// A pod with `annotations`, `containers` and the `app` volume (this directory's programs, from a
/// ConfigMap) beside the stock JavaScript modules.
fn pod(annotations: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "checkout-7d9f-abcde",
            "namespace": NAMESPACE,
            "labels": {"app": "checkout", "vexil.io/inject": "enabled"},
            "annotations": annotations,
        },
        "spec": {
            "volumes": [
                {"name": "app", "configMap": {"name": "checkout-app"}},
                {"name": "js", "hostPath": {"path": vexil_testkit::tools::js_modules().display().to_string()}},
            ],
            "containers": containers,
        }
    })
}

/// A container of the app image running `args` with `program`.
fn app(name: &str, program: &str, args: &[&str]) -> Value {
    json!({
        "name": name,
        "image": "registry.example/checkout:2.3",
        "command": [program],
        "args": args,
        "volumeMounts": [
            {"name": "app", "mountPath": "/app", "readOnly": true},
            {"name": "js", "mountPath": "/app/node_modules", "readOnly": true},
        ],
    })
}

/// One test's world: the pod's network namespace, control on the host's end of it (its QUIC
/// endpoint on the host address, its certificate naming it), an environment with a sidecar token,
/// the webhook, and the namespace's objects.
struct World {
    dir: TempDir,
    netns: Netns,
    control: Option<ControlProcess>,
    sync_port: u16,
    webhook: Webhook,
    objects: Objects,
}

impl World {
    async fn new(flagset: Value) -> Option<World> {
        let netns = match Netns::create() {
            Ok(n) => n,
            Err(e) => {
                vexil_testkit::skip(format!(
                    "pod in a box needs network namespaces (root and iproute2): {e}"
                ));
                return None;
            }
        };
        let dir = TempDir::new("vexil-pod");
        let sync_port = free_udp_port();
        let control = control_cmd(dir.path(), &netns, sync_port).start().await;
        api(
            &control,
            "POST",
            "/environments",
            json!({"key": ENV, "name": ENV}),
        )
        .await;
        api(
            &control,
            "PUT",
            &format!("/environments/{ENV}/flagset"),
            flagset,
        )
        .await;
        let token = api(
            &control,
            "POST",
            "/tokens",
            json!({"name": "shop-sidecars", "role": "sidecar", "environments": [ENV]}),
        )
        .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let ca = std::fs::read_to_string(dir.path().join("tls/ca.pem")).unwrap();
        let webhook = Webhook::start(IMAGE, &control.sync_url).await;
        let objects = Objects::default()
            // The webhook's default: one Secret `vexil-sidecar` with the token and control's CA.
            .secret("vexil-sidecar", &[("token", &token), ("ca.pem", &ca)])
            .config_map(
                "checkout-app",
                &[
                    ("app.py", &app_file("app.py")),
                    ("app.mjs", &app_file("app.mjs")),
                ],
            );
        Some(World {
            dir,
            netns,
            control: Some(control),
            sync_port,
            webhook,
            objects,
        })
    }

    fn kubelet(&self) -> Kubelet<'_> {
        Kubelet {
            netns: &self.netns,
            objects: &self.objects,
            programs: programs(),
            probe_limit: Duration::from_secs(60),
        }
    }

    /// The pod injected and started.
    async fn run(&self, pod: &Value) -> (Value, Pod) {
        let injected = self.webhook.inject(NAMESPACE, pod).await;
        let running = self.kubelet().start(&injected).await;
        (injected, running)
    }

    fn upstream_url(&self, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.netns.host_ip)
    }

    async fn start_control(&mut self) {
        let control = control_cmd(self.dir.path(), &self.netns, self.sync_port)
            .start()
            .await;
        self.control = Some(control);
    }
}

fn control_cmd(dir: &Path, netns: &Netns, sync_port: u16) -> ControlCmd {
    ControlCmd::new(&format!("sqlite://{}", dir.join("vexil.db").display()))
        .dev_tls(&dir.join("tls"))
        .sync_ip(netns.host())
        .sync_port(sync_port)
        .args(["--webhook-addr", "off"])
        .args(["--dev-tls-names", &netns.host_ip.to_string()])
        .env("VEXIL_ADMIN_TOKEN", ADMIN)
}

fn checkout_flags() -> Value {
    json!({"flags": {
        "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                     "defaultVariant": "on"},
        "new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
                         "defaultVariant": "off",
                         "targeting": {"if": [{"==": [{"var": "targetingKey"}, "alice"]}, "on", "off"]}},
    }})
}

fn assert_started(pod: &mut Pod) {
    if let Some(why) = &pod.failed {
        let logs: Vec<String> = pod
            .containers
            .iter()
            .map(|c| format!("---- {}:\n{}", c.name, c.process.tail(40)))
            .collect();
        panic!("the pod did not start: {why}\n{}", logs.join("\n"));
    }
}

/// Runs the app container `name` to completion; its output (panics unless it exits 0).
async fn finished(pod: &mut Pod, name: &str, limit: Duration) -> String {
    let (status, output) = pod.wait(name, limit).await;
    if !status.success() {
        let sidecar = pod.container("vexil-proxy").tail(40);
        panic!("{name} failed ({status}):\n{output}\n---- vexil-proxy:\n{sidecar}");
    }
    output
}

/// The JSON the echo upstream answered, from the output of `app.py http`.
fn echoed(output: &str) -> Value {
    let line = output
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON answer in: {output}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_requests_carry_decisions_targeted_with_the_pods_configmap() {
    let Some(mut world) = World::new(checkout_flags()).await else {
        return;
    };
    let upstream = vexil_testkit::echo::Echo::new()
        .bind(world.netns.host())
        .start()
        .await;
    world.objects.config_maps.insert(
        "checkout-vexil".into(),
        BTreeMap::from([(
            "proxy.toml".to_string(),
            "[context]\ntargetingKey = [\"header:x-user-id\"]\n".to_string(),
        )]),
    );
    let url = world.upstream_url(upstream.addr().port(), "/orders");
    let (injected, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV, "vexil.io/config": "checkout-vexil"}),
            json!([app("app", "python", &["/app/app.py", "http", &url])]),
        ))
        .await;
    assert_started(&mut pod);
    let sidecar = &injected["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"], IMAGE);
    let output = finished(&mut pod, "app", Duration::from_secs(30)).await;
    let echo = echoed(&output);
    let flags = echo["headers"]["vexil-flags"].as_str().unwrap_or_default();
    // alice (the app's x-user-id) is targeted: the context came from the ConfigMap's mapping.
    assert!(
        flags.contains("new-checkout=?1") && flags.contains("checkout=?1"),
        "{echo:#}"
    );
    assert_eq!(echo["uri"], "/orders", "{echo:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_python_and_javascript_providers_find_the_sidecar_by_its_environment_alone() {
    let flags = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy/tests/clients/flags.json"),
    )
    .unwrap();
    let Some(world) = World::new(serde_json::from_str(&flags).unwrap()).await else {
        return;
    };
    if !vexil_testkit::tools::js_modules()
        .join("@openfeature/flagd-provider")
        .is_dir()
    {
        vexil_testkit::skip(format!(
            "the JavaScript OpenFeature clients in {} (scripts/ensure-deps.sh installs them)",
            vexil_testkit::tools::js_modules().display()
        ));
        return;
    }
    let (_, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV}),
            json!([
                app("python", "python", &["/app/app.py", "providers"]),
                app("javascript", "node", &["/app/app.mjs"]),
            ]),
        ))
        .await;
    assert_started(&mut pod);
    let python = finished(&mut pod, "python", Duration::from_secs(60)).await;
    assert!(python.contains("python providers: all passed"), "{python}");
    let js = finished(&mut pod, "javascript", Duration::from_secs(60)).await;
    assert!(js.contains("js providers: all passed"), "{js}");
    for mode in ["rpc", "in-process"] {
        assert!(
            js.contains(&format!(
                "ok   js {mode:10} disabled  value=false reason=DISABLED"
            )),
            "{js}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_control_down_and_no_state_the_pod_starts_in_the_init_timeout_then_follows_control() {
    let Some(mut world) = World::new(json!({"flags": {}})).await else {
        return;
    };
    let upstream = vexil_testkit::echo::Echo::new()
        .bind(world.netns.host())
        .start()
        .await;
    world.control.take().unwrap().process.terminate(10);
    let url = world.upstream_url(upstream.addr().port(), "/cart");
    let started = Instant::now();
    let (injected, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV}),
            json!([app("app", "python", &["/app/app.py", "defaults"])]),
        ))
        .await;
    assert_started(&mut pod);
    let took = started.elapsed();
    // The sidecar's default init timeout is 10 s: ready without flags by then, not blocked.
    assert!(took < Duration::from_secs(20), "started after {took:?}");
    let output = finished(&mut pod, "app", Duration::from_secs(30)).await;
    assert!(output.contains("python defaults: all passed"), "{output}");

    // Control comes back with a flag: the same sidecar, not restarted, serves it.
    world.start_control().await;
    let control = world.control.as_ref().unwrap();
    api(
        control,
        "PUT",
        &format!("/environments/{ENV}/flagset"),
        checkout_flags(),
    )
    .await;
    let kubelet = world.kubelet();
    let app_spec = injected["spec"]["containers"][0].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut probe = app_spec.clone();
        probe["args"] = json!(["/app/app.py", "http", url]);
        let mut process = kubelet.exec(&pod, &injected, &probe);
        let status = process.wait(30);
        let output = process.output();
        if status.success()
            && echoed(&output)["headers"]["vexil-flags"]
                .as_str()
                .is_some_and(|f| f.contains("checkout=?1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no decisions 60 s after control came back: {output}\n---- vexil-proxy:\n{}",
            pod.container("vexil-proxy").tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pod.container("vexil-proxy").assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_reach_the_app_with_spoofed_vexil_headers_stripped() {
    let Some(world) = World::new(checkout_flags()).await else {
        return;
    };
    let (injected, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV, "vexil.io/inbound": "8080:8081"}),
            json!([app("app", "python", &["/app/app.py", "serve", "8081"])]),
        ))
        .await;
    assert_started(&mut pod);
    let ports = &injected["spec"]["initContainers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["containerPort"] == 8080),
        "{ports}"
    );
    let url = format!("http://{}:8080/orders", world.netns.pod_ip);
    let deadline = Instant::now() + Duration::from_secs(30);
    let echo: Value = loop {
        let sent = http()
            .get(&url)
            .header("vexil-flags", "checkout=?0, forged=?1")
            .header("Vexil-Checkout", "forged")
            .header("x-user-id", "alice")
            .send()
            .await;
        if let Ok(r) = sent
            && r.status() == 200
        {
            break r.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the app did not answer through the sidecar: {:?}\n---- app:\n{}",
            sent_error(&url).await,
            pod.container("app").tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let headers = &echo["headers"];
    assert_eq!(headers["x-user-id"], "alice", "{echo:#}");
    assert!(headers.get("vexil-checkout").is_none(), "{echo:#}");
    // The sidecar's own decisions (no context mapping here: alice is not targeted), none of the
    // caller's.
    assert_eq!(
        headers["vexil-flags"], "checkout=?1, new-checkout=?0",
        "{echo:#}"
    );
}

async fn sent_error(url: &str) -> String {
    match http().get(url).send().await {
        Ok(r) => format!("status {}", r.status()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_proxy_toml_keeps_the_sidecar_from_turning_ready_and_its_log_says_why() {
    let Some(mut world) = World::new(checkout_flags()).await else {
        return;
    };
    world.objects.config_maps.insert(
        "vexil-sidecar".into(), // the namespace's default
        BTreeMap::from([(
            "proxy.toml".to_string(),
            "[context]\ntargetingKey = [\"hedaer:x-user-id\"]\n".to_string(),
        )]),
    );
    let (_, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV}),
            json!([app("app", "python", &["/app/app.py", "defaults"])]),
        ))
        .await;
    let why = pod.failed.clone().expect("the pod must not start");
    assert!(why.contains("vexil-proxy"), "{why}");
    assert!(
        pod.containers.iter().all(|c| c.name == "vexil-proxy"),
        "no app container may start"
    );
    let log = pod.container("vexil-proxy").output();
    assert!(
        log.contains("proxy.toml:2") && log.contains("targetingKey") && log.contains("hedaer"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_control_down_a_bootstrap_flag_set_from_the_pods_configmap_is_served_at_once() {
    let Some(mut world) = World::new(checkout_flags()).await else {
        return;
    };
    let upstream = vexil_testkit::echo::Echo::new()
        .bind(world.netns.host())
        .start()
        .await;
    world.control.take().unwrap().process.terminate(10);
    // The workload's ConfigMap: its proxy.toml and, beside it, the flag set to start on.
    let bootstrap = checkout_flags().to_string();
    world.objects.config_maps.insert(
        "checkout-vexil".into(),
        BTreeMap::from([
            (
                "proxy.toml".to_string(),
                "bootstrap_file = \"/etc/vexil/bootstrap.json\"\n\
                 [context]\ntargetingKey = [\"header:x-user-id\"]\n"
                    .to_string(),
            ),
            ("bootstrap.json".to_string(), bootstrap),
        ]),
    );
    let url = world.upstream_url(upstream.addr().port(), "/orders");
    let started = Instant::now();
    let (_, mut pod) = world
        .run(&pod(
            json!({"vexil.io/environment": ENV, "vexil.io/config": "checkout-vexil"}),
            json!([app("app", "python", &["/app/app.py", "http", &url])]),
        ))
        .await;
    assert_started(&mut pod);
    let took = started.elapsed();
    // Ready on the bootstrap set, well before the 10 s init timeout.
    assert!(took < Duration::from_secs(5), "started after {took:?}");
    let output = finished(&mut pod, "app", Duration::from_secs(30)).await;
    let echo = echoed(&output);
    assert_eq!(
        echo["headers"]["vexil-flags"], "checkout=?1, new-checkout=?1",
        "{echo:#}"
    );
}
