//! A pod in a box: what the kubelet would do with the pod the injection webhook patched, on this
//! machine, with no cluster.
//!
//! - [`Netns`]: the pod's network namespace (its own 127.0.0.1) and a veth pair to the host: the
//!   host is `host_ip`, the pod `pod_ip`, so the host reaches the pod's probes and the pod reaches
//!   control and upstreams bound on `host_ip`.
//! - [`Webhook`]: the real `vexil-control webhook` (standalone: no store, no QUIC) over HTTPS;
//!   [`Webhook::inject`] posts an `AdmissionReview` and applies the JSON Patch it answers.
//! - [`Pod::start`]: materialises the patched pod's volumes (`emptyDir`, `configMap`, `secret`,
//!   `projected`, `hostPath`, honouring `items` and `optional`) from [`Objects`] into directories,
//!   then runs each container's `command` and `args` with its `env` as a process inside the
//!   namespace, its volumes bind-mounted at their `mountPath`s in a mount namespace of its own
//!   (`ip netns exec` gives one) and its `securityContext` user taken. Init containers run in order:
//!   a native sidecar (`restartPolicy: Always`) is started and its startup probe polled at the pod's
//!   address before the next one starts; the app containers start once all of them did.
//!
//! The images are not pulled: a container's program (`command[0]`) is looked up in the programs
//! the test gives (`vexil-proxy` → the built binary, `python` → the test virtualenv's, ...).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use vexil_testkit::{Process, TempDir, binary, free_addr, http_status};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `ip ARGS`; its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the host by a veth pair on a /30 of 10.231.0.0/16.
pub struct Netns {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
}

impl Netns {
    /// A fresh namespace, or why there cannot be one here (not root, no `ip`).
    pub fn create() -> Result<Netns, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Test processes run in parallel: a number from the pid, bumped past ones taken.
        let base = std::process::id().wrapping_mul(7919);
        for _ in 0..64 {
            let n = (base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) % 16_384;
            let name = format!("vxpod{n}");
            match ip(&["netns", "add", &name]) {
                Ok(()) => {}
                Err(e) if e.contains("exists") => continue,
                Err(e) => return Err(e),
            }
            let net = u32::from(Ipv4Addr::new(10, 231, 0, 0)) + n * 4;
            let ns = Netns {
                host_ip: Ipv4Addr::from(net + 1),
                pod_ip: Ipv4Addr::from(net + 2),
                name,
            };
            ns.wire(n)?;
            return Ok(ns);
        }
        Err("no free network namespace name".into())
    }

    fn wire(&self, n: u32) -> Result<(), String> {
        let (host, pod) = (format!("vxh{n}"), format!("vxc{n}"));
        let _ = ip(&["link", "del", &host]); // a leftover of a killed run
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &pod])?;
        ip(&["link", "set", &pod, "netns", &self.name])?;
        ip(&["addr", "add", &format!("{}/30", self.host_ip), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", self.pod_ip), "dev", &pod])?;
        inside(&["link", "set", &pod, "up"])?;
        inside(&["link", "set", "lo", "up"])
    }

    pub fn host(&self) -> IpAddr {
        IpAddr::V4(self.host_ip)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pod's end of the pair, and with it the host's.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The ConfigMaps and Secrets of the pod's namespace: name → key → content.
#[derive(Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Objects {
    pub fn config_map(mut self, name: &str, entries: &[(&str, &str)]) -> Objects {
        self.config_maps.insert(name.into(), to_map(entries));
        self
    }

    pub fn secret(mut self, name: &str, entries: &[(&str, &str)]) -> Objects {
        self.secrets.insert(name.into(), to_map(entries));
        self
    }
}

fn to_map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The standalone injection webhook.
pub struct Webhook {
    _process: Process,
    addr: SocketAddr,
    ca: PathBuf,
    _dir: TempDir,
}

impl Webhook {
    /// `vexil-control webhook` injecting sidecars of image `image` that follow `control_url`.
    pub async fn start(image: &str, control_url: &str) -> Webhook {
        let dir = TempDir::new("vexil-pod-webhook");
        let (addr, admin) = (free_addr(), free_addr());
        let mut cmd = Command::new(binary("vexil-control"));
        cmd.args(["webhook", "--webhook-addr", &addr.to_string()])
            .args(["--admin-addr", &admin.to_string(), "--dev-tls"])
            .arg("--tls-dir")
            .arg(dir.path())
            .args([
                "--sidecar-image",
                image,
                "--sidecar-control-url",
                control_url,
            ])
            .env_clear()
            .env("VEXIL_LOG", "info")
            .env("NO_COLOR", "1");
        let mut process = Process::spawn("vexil-control webhook", cmd);
        process
            .wait_until(Duration::from_secs(30), "serving", async |_| {
                (http_status(admin, "/readyz").await == Some(200)).then_some(())
            })
            .await;
        Webhook {
            _process: process,
            addr,
            ca: dir.path().join("ca.pem"),
            _dir: dir,
        }
    }

    /// The pod as the API server would store it: `pod` reviewed by the webhook (in namespace
    /// `namespace`), its JSON Patch applied. Panics when the webhook answers no patch.
    pub async fn inject(&self, namespace: &str, pod: &Value) -> Value {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-4000-8000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "pod-in-a-box"},
                "object": pod,
                "dryRun": false,
            }
        });
        let body = serde_json::to_vec(&review).unwrap();
        let (status, answer) = super::common::post_inject(self.addr, &self.ca, &body).await;
        assert_eq!(status, 200, "{answer}");
        let response = &answer["response"];
        assert_eq!(response["allowed"], true, "{answer}");
        let patch = response["patch"]
            .as_str()
            .unwrap_or_else(|| panic!("the webhook injected nothing: {answer}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).expect("the patch applies");
        patched
    }
}

/// One container's process.
pub struct Container {
    pub name: String,
    pub process: Process,
}

/// A running pod.
pub struct Pod {
    /// The containers started so far, sidecars first.
    pub containers: Vec<Container>,
    /// Why the start stopped before the app containers ran (a container that exited, a probe
    /// that never passed, a volume that cannot be made), as the kubelet would report it.
    pub failed: Option<String>,
    dirs: BTreeMap<String, PathBuf>,
    _volumes: TempDir,
}

/// What a pod start needs besides the pod.
pub struct Kubelet<'a> {
    pub netns: &'a Netns,
    pub objects: &'a Objects,
    /// `command[0]` → the program that runs it here.
    pub programs: BTreeMap<String, PathBuf>,
    /// How long a startup probe may take at most, whatever the pod says.
    pub probe_limit: Duration,
}

impl Kubelet<'_> {
    /// Starts `pod` (a Pod object, as the API server stores it).
    pub async fn start(&self, pod: &Value) -> Pod {
        let volumes = TempDir::new("vexil-pod-volumes");
        let mut running = Pod {
            containers: Vec::new(),
            failed: None,
            dirs: BTreeMap::new(),
            _volumes: volumes,
        };
        match self.volumes(pod, running._volumes.path()) {
            Ok(dirs) => running.dirs = dirs,
            Err(e) => {
                running.failed = Some(e);
                return running;
            }
        }
        let dirs = running.dirs.clone();
        let list = |name: &str| pod["spec"][name].as_array().cloned().unwrap_or_default();
        for init in list("initContainers") {
            let name = init["name"].as_str().unwrap().to_string();
            let mut process = self.run(pod, &init, &dirs);
            let sidecar = init["restartPolicy"] == "Always";
            let outcome = if sidecar {
                self.startup_probe(pod, &init, &mut process).await
            } else {
                match wait_exit(&mut process, self.probe_limit).await {
                    Some(s) if s.success() => Ok(()),
                    Some(s) => Err(format!("init container {name} failed ({s})")),
                    None => Err(format!("init container {name} did not finish")),
                }
            };
            running.containers.push(Container { name, process });
            if let Err(e) = outcome {
                running.failed = Some(e);
                return running;
            }
        }
        for app in list("containers") {
            let process = self.run(pod, &app, &dirs);
            running.containers.push(Container {
                name: app["name"].as_str().unwrap().to_string(),
                process,
            });
        }
        running
    }

    /// `kubectl exec`: runs `container` (a container of `pod`, its command changed as needed)
    /// in the running pod, with its environment and volumes.
    pub fn exec(&self, running: &Pod, pod: &Value, container: &Value) -> Process {
        self.run(pod, container, &running.dirs)
    }

    /// Each volume's directory, by volume name.
    fn volumes(&self, pod: &Value, root: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
        let mut dirs = BTreeMap::new();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap().to_string();
            if let Some(path) = v["hostPath"]["path"].as_str() {
                dirs.insert(name, PathBuf::from(path));
                continue;
            }
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            if v.get("emptyDir").is_some() {
                // Writable by whichever user the containers run as, as the kubelet makes it.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            } else if let Some(cm) = v.get("configMap") {
                self.source(&dir, "ConfigMap", &self.objects.config_maps, cm, "name")?;
            } else if let Some(secret) = v.get("secret") {
                self.source(&dir, "Secret", &self.objects.secrets, secret, "secretName")?;
            } else if let Some(sources) = v["projected"]["sources"].as_array() {
                for s in sources {
                    if let Some(cm) = s.get("configMap") {
                        self.source(&dir, "ConfigMap", &self.objects.config_maps, cm, "name")?;
                    } else if let Some(secret) = s.get("secret") {
                        self.source(&dir, "Secret", &self.objects.secrets, secret, "name")?;
                    } else {
                        panic!("pod in a box: projected source not supported: {s}");
                    }
                }
            } else {
                panic!("pod in a box: volume not supported: {v}");
            }
            dirs.insert(name, dir);
        }
        Ok(dirs)
    }

    /// Writes a ConfigMap's or Secret's keys (or its `items`) as files into `dir`.
    fn source(
        &self,
        dir: &Path,
        kind: &str,
        objects: &BTreeMap<String, BTreeMap<String, String>>,
        spec: &Value,
        name_field: &str,
    ) -> Result<(), String> {
        let name = spec[name_field].as_str().unwrap();
        let optional = spec["optional"] == true;
        let Some(object) = objects.get(name) else {
            return if optional {
                Ok(())
            } else {
                Err(format!(
                    "{kind} {name:?} not found: the pod stays in ContainerCreating"
                ))
            };
        };
        let files: Vec<(String, String)> = match spec["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap().to_string(),
                        i["path"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            None => object.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in files {
            match object.get(&key) {
                Some(content) => {
                    let file = dir.join(&path);
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(&file, content).unwrap();
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                None if optional => {}
                None => {
                    return Err(format!(
                        "{kind} {name:?} has no key {key:?}: the pod stays in ContainerCreating"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts `container` inside the pod's namespaces.
    fn run(&self, pod: &Value, container: &Value, dirs: &BTreeMap<String, PathBuf>) -> Process {
        let name = container["name"].as_str().unwrap();
        let mut argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert!(!argv.is_empty(), "container {name} has no command");
        let program = self
            .programs
            .get(&argv[0])
            .unwrap_or_else(|| panic!("container {name}: no program for {:?}", argv[0]));
        argv[0] = program.display().to_string();

        let mut mounts: Vec<(String, PathBuf, bool)> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let volume = m["name"].as_str().unwrap();
                let dir = dirs
                    .get(volume)
                    .unwrap_or_else(|| panic!("container {name} mounts no volume {volume}"));
                (
                    m["mountPath"].as_str().unwrap().to_string(),
                    dir.clone(),
                    m["readOnly"] == true,
                )
            })
            .collect();
        mounts.sort(); // a parent before what is mounted inside it
        let mut script = String::from("set -e\n");
        // All mounts first, then the read-only ones made so: a mount point inside a read-only
        // volume (a ConfigMap at /app, modules at /app/node_modules) is made while it is writable.
        for (path, dir, _) in &mounts {
            let (path, dir) = (quote(path), quote(&dir.display().to_string()));
            script.push_str(&format!("mkdir -p {path}\nmount --bind {dir} {path}\n"));
        }
        for (path, _, read_only) in &mounts {
            if *read_only {
                script.push_str(&format!("mount -o remount,bind,ro {}\n", quote(path)));
            }
        }
        let security = &container["securityContext"];
        match security["runAsUser"].as_u64() {
            Some(uid) => {
                let gid = security["runAsGroup"].as_u64().unwrap_or(uid);
                script.push_str(&format!(
                    "exec setpriv --reuid {uid} --regid {gid} --clear-groups \"$@\"\n"
                ));
            }
            None => script.push_str("exec \"$@\"\n"),
        }

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns.name, "sh", "-c", &script, "sh"])
            .args(&argv)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/tmp");
        for var in container["env"].as_array().into_iter().flatten() {
            let key = var["name"].as_str().unwrap();
            let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(field)) => match field.as_str() {
                    "status.podIP" => self.netns.pod_ip.to_string(),
                    "metadata.name" => pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or("pod-in-a-box")
                        .to_string(),
                    "metadata.namespace" => pod["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    other => panic!("container {name}: fieldRef {other} not supported"),
                },
                _ => panic!("container {name}: variable not supported: {var}"),
            };
            cmd.env(key, value);
        }
        Process::spawn(name, cmd)
    }

    /// Polls a native sidecar's startup probe (an `httpGet` at the pod's address) until it
    /// passes; fails when the container exits first, or the probe's failure threshold (at most
    /// [`Kubelet::probe_limit`]) is reached.
    async fn startup_probe(
        &self,
        pod: &Value,
        container: &Value,
        process: &mut Process,
    ) -> Result<(), String> {
        let name = container["name"].as_str().unwrap();
        let probe = &container["startupProbe"];
        let Some(path) = probe["httpGet"]["path"].as_str() else {
            return Ok(()); // no probe: started means ready
        };
        let port = match &probe["httpGet"]["port"] {
            Value::Number(n) => n.as_u64().unwrap() as u16,
            Value::String(named) => container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == named.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{name}: no port named {named}"))
                as u16,
            other => panic!("{name}: probe port {other}"),
        };
        let period = Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10));
        let threshold = probe["failureThreshold"].as_u64().unwrap_or(3) as u32;
        let limit = (period * threshold).min(self.probe_limit);
        let addr = SocketAddr::new(IpAddr::V4(self.netns.pod_ip), port);
        let started = Instant::now();
        let _ = pod;
        loop {
            if let Some(status) = process.try_wait() {
                return Err(format!(
                    "container {name} exited ({status}) before its startup probe passed"
                ));
            }
            if http_status(addr, path).await == Some(200) {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "container {name}: startup probe GET {path} on port {port} not passed \
                     within {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100).min(period)).await;
        }
    }
}

impl Pod {
    pub fn container(&mut self, name: &str) -> &mut Process {
        &mut self
            .containers
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name} started"))
            .process
    }

    /// Waits until container `name` exits (at most `limit`); its exit status and output.
    pub async fn wait(&mut self, name: &str, limit: Duration) -> (ExitStatus, String) {
        let process = self.container(name);
        let status = wait_exit(process, limit).await.unwrap_or_else(|| {
            panic!(
                "container {name} still runs after {limit:?}:\n{}",
                process.tail(60)
            )
        });
        (status, process.output())
    }
}

async fn wait_exit(process: &mut Process, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = process.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
