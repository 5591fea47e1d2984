//! What to do with one pod, and the JSON Patch that does it.
//!
//! The patch only ever uses `add`, and every path it adds under exists in the pod it was computed
//! from: a missing `env`, `initContainers`, `volumes` or `metadata.annotations` is added whole, an
//! existing one is appended to (`/-`) or prepended to (`/0`).

use serde_json::{Map, Value, json};

use super::{
    ADMIN_PORT, ANNOTATION_CONFIG, ANNOTATION_ENVIRONMENT, ANNOTATION_INBOUND, ANNOTATION_INJECT,
    ANNOTATION_INJECTED, ANNOTATION_ROUTES, InjectConfig, PROXY_PORT, SIDECAR_NAME,
};
use crate::model::is_valid_environment_key;

/// Where the sidecar finds its token (the `token` key of the token Secret).
pub const TOKEN_FILE: &str = "/var/run/vexil/token";
/// Where the sidecar finds the control plane's CA (the `ca.pem` key of the CA Secret).
pub const CA_FILE: &str = "/var/run/vexil/ca.pem";
/// The sidecar's state directory (an `emptyDir`: persisted snapshots survive container restarts).
pub const STATE_DIR: &str = "/var/lib/vexil";
/// Where the sidecar's configuration ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/vexil";
/// The sidecar's configuration file (the `proxy.toml` key of the ConfigMap).
pub const CONFIG_FILE: &str = "/etc/vexil/proxy.toml";

const CREDENTIALS_VOLUME: &str = "vexil-credentials";
const STATE_VOLUME: &str = "vexil-state";
const CONFIG_VOLUME: &str = "vexil-config";
/// The proxy variables an app container gets; one already set means the app chose its own proxy.
const PROXY_VARS: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// Always in `NO_PROXY`: the pod's own loopback.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Per-pod overrides of the sidecar's container: `vexil.io/<name>` annotations.
pub mod annotations {
    /// The sidecar's image.
    pub const IMAGE: &str = "vexil.io/proxy-image";
    /// The sidecar's log filter (`VEXIL_LOG`: `info`, `debug`, `vexil_proxy=debug,info`).
    pub const LOG_LEVEL: &str = "vexil.io/log-level";
    /// CPU request, CPU limit, memory request, memory limit of the sidecar (quantities).
    pub const CPU_REQUEST: &str = "vexil.io/proxy-cpu-request";
    /// See [`CPU_REQUEST`].
    pub const CPU_LIMIT: &str = "vexil.io/proxy-cpu-limit";
    /// See [`CPU_REQUEST`].
    pub const MEMORY_REQUEST: &str = "vexil.io/proxy-memory-request";
    /// See [`CPU_REQUEST`].
    pub const MEMORY_LIMIT: &str = "vexil.io/proxy-memory-limit";
    /// The outbound HTTP proxy port (`HTTP_PROXY`).
    pub const OUTBOUND_PORT: &str = "vexil.io/outbound-port";
    /// The admin port (probes, `/metrics`).
    pub const ADMIN_PORT: &str = "vexil.io/admin-port";
    /// flagd gRPC evaluation (`FLAGD_PORT`).
    pub const GRPC_PORT: &str = "vexil.io/grpc-port";
    /// flagd.sync for in-process providers (`FLAGD_SYNC_PORT`).
    pub const SYNC_PORT: &str = "vexil.io/sync-port";
    /// OFREP (`OFREP_ENDPOINT`).
    pub const OFREP_PORT: &str = "vexil.io/ofrep-port";
}

/// Why a pod is left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `vexil.io/inject: disabled` (annotation or label).
    OptedOut,
    /// The pod already has the sidecar (or the annotation that records it).
    AlreadyInjected,
    /// The pod cannot get a sidecar as asked; the text says why (returned as an admission warning).
    Invalid(String),
}

/// The sidecar's ports in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Outbound HTTP proxy (loopback).
    pub outbound: u16,
    /// Admin (all interfaces: the kubelet probes the pod's IP).
    pub admin: u16,
    /// flagd gRPC evaluation (loopback).
    pub grpc: u16,
    /// flagd.sync (loopback).
    pub sync: u16,
    /// OFREP (loopback).
    pub ofrep: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            outbound: PROXY_PORT,
            admin: ADMIN_PORT,
            grpc: 8013,
            sync: 8015,
            ofrep: 8016,
        }
    }
}

/// Inbound mode: the sidecar listens on `listen` (all interfaces) and forwards to the app on
/// `127.0.0.1:app`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The port the Service targets.
    pub listen: u16,
    /// The app's own port.
    pub app: u16,
}

/// Where the sidecar's configuration file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// `vexil.io/config`: this ConfigMap, which must exist (the pod does not start without it).
    Named(String),
    /// The namespace's default ConfigMap, mounted when it exists.
    NamespaceDefault(String),
}

/// The sidecar container's resources: Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `limits.cpu`.
    pub cpu_limit: Option<String>,
    /// `requests.memory`.
    pub memory_request: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_request: Some("50m".into()),
            cpu_limit: None,
            memory_request: Some("32Mi".into()),
            memory_limit: Some("128Mi".into()),
        }
    }
}

/// What the webhook adds to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The environment the sidecar subscribes to.
    pub environment: String,
    /// The `vexil.io/routes` annotation, passed to the sidecar as `VEXIL_ROUTES`.
    pub routes: Option<String>,
    /// The sidecar's configuration file.
    pub config: ConfigSource,
    /// The sidecar's image.
    pub image: String,
    /// `VEXIL_LOG` for the sidecar, when the pod sets one.
    pub log_level: Option<String>,
    /// The sidecar's resources.
    pub resources: Resources,
    /// The sidecar's ports.
    pub ports: Ports,
    /// Inbound mode, when asked for.
    pub inbound: Option<Inbound>,
    /// App containers (index, name) that get the proxy variables.
    pub proxied: Vec<(usize, String)>,
    /// App containers that set `HTTP_PROXY`/`http_proxy` themselves and are left alone.
    pub kept_own_proxy: Vec<String>,
}

/// Decides what to do with `pod` (created in `namespace`).
pub fn plan(pod: &Value, namespace: Option<&str>, config: &InjectConfig) -> Result<Plan, Skip> {
    if opt_in(pod)? == Some(false) {
        return Err(Skip::OptedOut);
    }
    if already_injected(pod) {
        return Err(Skip::AlreadyInjected);
    }
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return Err(Skip::Invalid(
            "pods with hostNetwork get no sidecar (its ports would be the node's)".into(),
        ));
    }
    let environment = environment(pod, namespace, config)?;
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Skip::Invalid("the pod has no containers".into()))?;
    let config_source = match annotation(pod, ANNOTATION_CONFIG) {
        Some(name) => {
            check_dns_subdomain(name)
                .map_err(|e| Skip::Invalid(format!("{ANNOTATION_CONFIG}: {e}")))?;
            ConfigSource::Named(name.to_string())
        }
        None => ConfigSource::NamespaceDefault(config.namespace_config.clone()),
    };
    let image = match annotation(pod, annotations::IMAGE) {
        Some(image) if image.trim().is_empty() || image.chars().any(char::is_whitespace) => {
            return Err(Skip::Invalid(format!(
                "{}: {image:?} is not an image reference",
                annotations::IMAGE
            )));
        }
        Some(image) => image.to_string(),
        None => config.sidecar_image.clone(),
    };
    let log_level = annotation(pod, annotations::LOG_LEVEL)
        .map(|level| check_log_filter(level).map(|()| level.to_string()))
        .transpose()
        .map_err(|e| Skip::Invalid(format!("{}: {e}", annotations::LOG_LEVEL)))?;
    let resources = resources(pod)?;
    let ports = ports(pod)?;
    let inbound = annotation(pod, ANNOTATION_INBOUND)
        .map(inbound)
        .transpose()
        .map_err(|e| Skip::Invalid(format!("{ANNOTATION_INBOUND}: {e}")))?;
    check_port_clashes(containers, &ports, inbound)?;
    let mut plan = Plan {
        environment,
        routes: annotation(pod, ANNOTATION_ROUTES).map(str::to_string),
        config: config_source,
        image,
        log_level,
        resources,
        ports,
        inbound,
        proxied: Vec::new(),
        kept_own_proxy: Vec::new(),
    };
    for (index, container) in containers.iter().enumerate() {
        let name = container["name"].as_str().unwrap_or_default().to_string();
        if PROXY_VARS.iter().any(|v| has_env(container, v)) {
            plan.kept_own_proxy.push(name);
        } else {
            plan.proxied.push((index, name));
        }
    }
    Ok(plan)
}

/// The JSON Patch (RFC 6902) that carries out `plan` on `pod`.
pub fn patch(pod: &Value, plan: &Plan, config: &InjectConfig) -> Vec<Value> {
    let mut ops = Vec::new();
    prepend(&mut ops, pod, "/spec/initContainers", sidecar(plan, config));
    append(
        &mut ops,
        pod.pointer("/spec/volumes"),
        "/spec/volumes",
        volumes(plan, config).into(),
    );
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    for (index, container) in containers.into_iter().flatten().enumerate() {
        let proxied = plan.proxied.iter().any(|(i, _)| *i == index);
        let path = format!("/spec/containers/{index}/env");
        append(
            &mut ops,
            container.get("env"),
            &path,
            app_env(container, plan, proxied, config),
        );
    }
    let record = record(plan);
    add_annotation(&mut ops, pod, ANNOTATION_INJECTED, record);
    ops
}

/// The pod's own choice: `Some(true)` for `enabled`, `Some(false)` for `disabled`, `None` when it
/// says nothing. The annotation wins over the label.
fn opt_in(pod: &Value) -> Result<Option<bool>, Skip> {
    let value = annotation(pod, ANNOTATION_INJECT).or_else(|| label(pod, ANNOTATION_INJECT));
    match value {
        None => Ok(None),
        Some("enabled") => Ok(Some(true)),
        Some("disabled") => Ok(Some(false)),
        Some(other) => Err(Skip::Invalid(format!(
            "{ANNOTATION_INJECT}: {other:?} is neither \"enabled\" nor \"disabled\""
        ))),
    }
}

/// A sidecar container, or the record of one, is already there.
fn already_injected(pod: &Value) -> bool {
    if annotation(pod, ANNOTATION_INJECTED).is_some() {
        return true;
    }
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .any(|c| c["name"] == SIDECAR_NAME)
}

/// The annotation, else the configured default, else the namespace.
fn environment(
    pod: &Value,
    namespace: Option<&str>,
    config: &InjectConfig,
) -> Result<String, Skip> {
    let namespace = namespace.or_else(|| pod.pointer("/metadata/namespace")?.as_str());
    let (environment, source) = match annotation(pod, ANNOTATION_ENVIRONMENT) {
        Some(env) => (env, ANNOTATION_ENVIRONMENT),
        None => match (&config.default_environment, namespace) {
            (Some(env), _) => (env.as_str(), "the default environment"),
            (None, Some(ns)) => (ns, "the namespace"),
            (None, None) => {
                return Err(Skip::Invalid(format!(
                    "no {ANNOTATION_ENVIRONMENT} annotation, no default environment, no namespace"
                )));
            }
        },
    };
    if is_valid_environment_key(environment) {
        Ok(environment.to_string())
    } else {
        Err(Skip::Invalid(format!(
            "{source}: {environment:?} is not a valid environment key"
        )))
    }
}

/// The resource annotations over the defaults; `"none"` removes a default.
fn resources(pod: &Value) -> Result<Resources, Skip> {
    let mut r = Resources::default();
    let fields = [
        (annotations::CPU_REQUEST, &mut r.cpu_request),
        (annotations::CPU_LIMIT, &mut r.cpu_limit),
        (annotations::MEMORY_REQUEST, &mut r.memory_request),
        (annotations::MEMORY_LIMIT, &mut r.memory_limit),
    ];
    for (key, field) in fields {
        match annotation(pod, key) {
            None => {}
            Some("none") => *field = None,
            Some(q) if is_quantity(q) => *field = Some(q.to_string()),
            Some(q) => {
                return Err(Skip::Invalid(format!(
                    "{key}: {q:?} is not a Kubernetes quantity (e.g. 100m, 64Mi) or \"none\""
                )));
            }
        }
    }
    Ok(r)
}

/// The port annotations over the defaults, all different.
fn ports(pod: &Value) -> Result<Ports, Skip> {
    let mut p = Ports::default();
    let fields = [
        (annotations::OUTBOUND_PORT, &mut p.outbound),
        (annotations::ADMIN_PORT, &mut p.admin),
        (annotations::GRPC_PORT, &mut p.grpc),
        (annotations::SYNC_PORT, &mut p.sync),
        (annotations::OFREP_PORT, &mut p.ofrep),
    ];
    for (key, field) in fields {
        if let Some(text) = annotation(pod, key) {
            *field = port(text).map_err(|e| Skip::Invalid(format!("{key}: {e}")))?;
        }
    }
    let all = [p.outbound, p.admin, p.grpc, p.sync, p.ofrep];
    if (1..all.len()).any(|i| all[..i].contains(&all[i])) {
        return Err(Skip::Invalid(format!(
            "the sidecar's ports must differ (outbound {}, admin {}, grpc {}, sync {}, ofrep {})",
            p.outbound, p.admin, p.grpc, p.sync, p.ofrep
        )));
    }
    Ok(p)
}

/// `"LISTEN_PORT:APP_PORT"`.
fn inbound(text: &str) -> Result<Inbound, String> {
    let (listen, app) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not LISTEN_PORT:APP_PORT"))?;
    let inbound = Inbound {
        listen: port(listen)?,
        app: port(app)?,
    };
    if inbound.listen == inbound.app {
        return Err(format!(
            "{text:?}: the sidecar cannot listen on the app's own port"
        ));
    }
    Ok(inbound)
}

/// A TCP port, 1–65535.
fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// The sidecar's ports must not be ports an app container declares (both share the pod's
/// network), nor the inbound port one of its own.
fn check_port_clashes(
    containers: &[Value],
    ports: &Ports,
    inbound: Option<Inbound>,
) -> Result<(), Skip> {
    let mut ours = vec![
        ("outbound", ports.outbound),
        ("admin", ports.admin),
        ("grpc", ports.grpc),
        ("sync", ports.sync),
        ("ofrep", ports.ofrep),
    ];
    if let Some(inbound) = inbound {
        if let Some((name, _)) = ours.iter().find(|(_, p)| *p == inbound.listen) {
            return Err(Skip::Invalid(format!(
                "{ANNOTATION_INBOUND}: port {} is also the sidecar's {name} port",
                inbound.listen
            )));
        }
        ours.push(("inbound", inbound.listen));
    }
    for container in containers {
        let declared = container["ports"].as_array().into_iter().flatten();
        for p in declared.filter_map(|p| p["containerPort"].as_u64()) {
            if let Some((name, _)) = ours.iter().find(|(_, ours)| u64::from(*ours) == p) {
                return Err(Skip::Invalid(format!(
                    "container {:?} uses port {p}, the sidecar's {name} port \
                     (choose another with the vexil.io/*-port annotations)",
                    container["name"].as_str().unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// A Kubernetes quantity as the API server accepts it for CPU and memory (a decimal number and
/// an optional suffix).
fn is_quantity(q: &str) -> bool {
    let digits_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffixes = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    number_ok && suffixes.contains(&suffix)
}

/// A log filter the sidecar accepts (`tracing`'s directive syntax, restricted to what a level
/// or a `target=level` list needs).
fn check_log_filter(filter: &str) -> Result<(), String> {
    let ok = !filter.is_empty()
        && filter.len() <= 256
        && filter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:=,.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{filter:?} is not a log filter (e.g. info, debug, vexil_proxy=debug,info)"
        ))
    }
}

/// A Kubernetes object name (RFC 1123 subdomain: at most 253 characters of `a-z`, `0-9`, `-`,
/// `.`, starting and ending with a letter or digit).
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a Kubernetes object name"))
    }
}

/// `metadata.annotations[key]`.
fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// `metadata.labels[key]`.
fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// The value of the variable `name` the container sets itself (`Some("")` for one set from a
/// `valueFrom`).
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap_or_default())
}

/// Whether the container sets the variable `name` itself.
fn has_env(container: &Value, name: &str) -> bool {
    env_value(container, name).is_some()
}

/// The variables an app container gets, each only when it does not set it itself: for proxied
/// containers the proxy and `NO_PROXY`; for all, what stock OpenFeature providers read to find
/// the sidecar (`FLAGD_*`, `OFREP_ENDPOINT`).
fn app_env(container: &Value, plan: &Plan, proxied: bool, config: &InjectConfig) -> Vec<Value> {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if proxied {
        let proxy = format!("http://127.0.0.1:{}", plan.ports.outbound);
        vars.extend(PROXY_VARS.iter().map(|name| (*name, proxy.clone())));
        if !NO_PROXY_VARS.iter().any(|v| has_env(container, v)) {
            let no_proxy = no_proxy(config);
            vars.extend(NO_PROXY_VARS.iter().map(|name| (*name, no_proxy.clone())));
        }
    }
    // An app that picks the in-process resolver by variable but names no port reads FLAGD_PORT
    // for its sync stream: give it the sync port there.
    let in_process = env_value(container, "FLAGD_RESOLVER")
        .is_some_and(|r| r.eq_ignore_ascii_case("in-process"));
    let flagd_port = if in_process {
        plan.ports.sync
    } else {
        plan.ports.grpc
    };
    let providers = [
        ("FLAGD_HOST", "127.0.0.1".to_string()),
        ("FLAGD_PORT", flagd_port.to_string()),
        ("FLAGD_SYNC_PORT", plan.ports.sync.to_string()),
        ("FLAGD_RESOLVER", "rpc".to_string()),
        (
            "OFREP_ENDPOINT",
            format!("http://127.0.0.1:{}", plan.ports.ofrep),
        ),
    ];
    vars.extend(
        providers
            .into_iter()
            .filter(|(name, _)| !has_env(container, name)),
    );
    vars.into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// Loopback, then the configured entries.
pub fn no_proxy(config: &InjectConfig) -> String {
    LOOPBACK
        .iter()
        .map(|s| s.to_string())
        .chain(config.no_proxy.iter().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// The sidecar's command-line arguments.
pub fn sidecar_args(plan: &Plan, config: &InjectConfig) -> Vec<String> {
    let p = plan.ports;
    let mut args: Vec<(&str, String)> = vec![
        ("--control", config.control_url.clone()),
        ("--environment", plan.environment.clone()),
        ("--token-file", TOKEN_FILE.into()),
        ("--ca-file", CA_FILE.into()),
        ("--state-dir", STATE_DIR.into()),
        ("--config", CONFIG_FILE.into()),
        // The kubelet probes the pod's IP, not its loopback.
        ("--admin-addr", format!("0.0.0.0:{}", p.admin)),
    ];
    let defaults = Ports::default();
    let loopback = [
        ("--outbound-addr", p.outbound, defaults.outbound),
        ("--grpc-addr", p.grpc, defaults.grpc),
        ("--sync-addr", p.sync, defaults.sync),
        ("--ofrep-addr", p.ofrep, defaults.ofrep),
    ];
    for (flag, port, default) in loopback {
        if port != default {
            args.push((flag, format!("127.0.0.1:{port}")));
        }
    }
    if let Some(inbound) = plan.inbound {
        // Traffic for the app arrives on the pod's IP; the app is reached on its loopback.
        args.push(("--inbound-addr", format!("0.0.0.0:{}", inbound.listen)));
        args.push(("--inbound-upstream", format!("127.0.0.1:{}", inbound.app)));
    }
    let mut args: Vec<String> = args
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
    if matches!(plan.config, ConfigSource::NamespaceDefault(_)) {
        args.push("--config-optional".into());
    }
    args
}

/// The native sidecar: an init container that keeps running (`restartPolicy: Always`), started
/// before the app containers and considered started once `/readyz` answers (flags loaded, or the
/// sidecar's init timeout over).
fn sidecar(plan: &Plan, config: &InjectConfig) -> Value {
    let admin = plan.ports.admin;
    let mut ports = vec![json!({"name": "vexil-admin", "containerPort": admin, "protocol": "TCP"})];
    if let Some(inbound) = plan.inbound {
        ports.push(
            json!({"name": "vexil-inbound", "containerPort": inbound.listen, "protocol": "TCP"}),
        );
    }
    let mut container = json!({
        "name": SIDECAR_NAME,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["vexil-proxy"],
        "args": sidecar_args(plan, config),
        "ports": ports,
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": admin},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 120
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": admin},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3
        },
        "resources": resources_json(&plan.resources),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "volumeMounts": [
            {"name": CREDENTIALS_VOLUME, "mountPath": "/var/run/vexil", "readOnly": true},
            {"name": STATE_VOLUME, "mountPath": STATE_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true}
        ]
    });
    let mut env = Vec::new();
    if let Some(routes) = &plan.routes {
        env.push(json!({"name": "VEXIL_ROUTES", "value": routes}));
    }
    if let Some(level) = &plan.log_level {
        env.push(json!({"name": "VEXIL_LOG", "value": level}));
    }
    if !env.is_empty() {
        container["env"] = Value::Array(env);
    }
    container
}

/// `requests` and `limits`, leaving out what is unset.
fn resources_json(r: &Resources) -> Value {
    let pick = |cpu: &Option<String>, memory: &Option<String>| -> Map<String, Value> {
        [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_string(), value.clone()?.into())))
            .collect()
    };
    let requests = pick(&r.cpu_request, &r.memory_request);
    let limits = pick(&r.cpu_limit, &r.memory_limit);
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), requests.into());
    }
    if !limits.is_empty() {
        out.insert("limits".into(), limits.into());
    }
    Value::Object(out)
}

/// The token and CA (one projected volume from the two Secrets), the state directory, and the
/// configuration ConfigMap (optional when it is the namespace's default).
/// The sidecar's volumes. The configuration ConfigMap is mounted whole: besides `proxy.toml` it may
/// hold what the file names, e.g. a bootstrap flag set (`bootstrap_file = "/etc/vexil/bootstrap.json"`).
fn volumes(plan: &Plan, config: &InjectConfig) -> [Value; 3] {
    let (config_map, optional) = match &plan.config {
        ConfigSource::Named(name) => (name, false),
        ConfigSource::NamespaceDefault(name) => (name, true),
    };
    [
        json!({
            "name": CREDENTIALS_VOLUME,
            "projected": {"sources": [
                {"secret": {"name": config.token_secret, "items": [{"key": "token", "path": "token"}]}},
                {"secret": {"name": config.ca_secret, "items": [{"key": "ca.pem", "path": "ca.pem"}]}}
            ]}
        }),
        json!({"name": STATE_VOLUME, "emptyDir": {}}),
        json!({
            "name": CONFIG_VOLUME,
            "configMap": {
                "name": config_map,
                "optional": optional
            }
        }),
    ]
}

/// The `vexil.io/injected` annotation's value: what was done, as JSON text.
fn record(plan: &Plan) -> String {
    let mut record = Map::new();
    record.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    record.insert("image".into(), plan.image.clone().into());
    record.insert("environment".into(), plan.environment.clone().into());
    let config = match &plan.config {
        ConfigSource::Named(name) => json!({"configMap": name}),
        ConfigSource::NamespaceDefault(name) => json!({"configMap": name, "optional": true}),
    };
    record.insert("config".into(), config);
    let proxied: Vec<&str> = plan.proxied.iter().map(|(_, n)| n.as_str()).collect();
    record.insert("proxied".into(), json!(proxied));
    if !plan.kept_own_proxy.is_empty() {
        record.insert("keptOwnProxy".into(), json!(plan.kept_own_proxy));
    }
    if let Some(inbound) = plan.inbound {
        record.insert(
            "inbound".into(),
            json!({"listen": inbound.listen, "app": inbound.app}),
        );
    }
    Value::Object(record).to_string()
}

/// Adds `value` as the first element of the array at `path`, creating the array when absent.
fn prepend(ops: &mut Vec<Value>, pod: &Value, path: &str, value: Value) {
    if pod.pointer(path).is_some_and(Value::is_array) {
        ops.push(add(&format!("{path}/0"), value));
    } else {
        ops.push(add(path, json!([value])));
    }
}

/// Adds `values` at the end of the array at `path` (whose current value is `current`), or as the
/// whole array when there is none yet.
fn append(ops: &mut Vec<Value>, current: Option<&Value>, path: &str, values: Vec<Value>) {
    if current.is_some_and(Value::is_array) {
        let end = format!("{path}/-");
        ops.extend(values.into_iter().map(|v| add(&end, v)));
    } else if !values.is_empty() {
        ops.push(add(path, Value::Array(values)));
    }
}

/// Sets `metadata.annotations[key]`, creating `metadata` and `annotations` when absent.
fn add_annotation(ops: &mut Vec<Value>, pod: &Value, key: &str, value: String) {
    if pod
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object)
    {
        let path = format!("/metadata/annotations/{}", escape_pointer(key));
        ops.push(add(&path, value.into()));
    } else if pod.get("metadata").is_some_and(Value::is_object) {
        ops.push(add("/metadata/annotations", json!({ key: value })));
    } else {
        ops.push(add("/metadata", json!({"annotations": { key: value }})));
    }
}

/// One `add` operation.
fn add(path: &str, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// A key as a JSON Pointer reference token (RFC 6901): `~` is `~0`, `/` is `~1`.
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(escape_pointer("vexil.io/injected"), "vexil.io~1injected");
        assert_eq!(escape_pointer("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn no_proxy_is_loopback_then_the_configured_entries() {
        let config = InjectConfig {
            no_proxy: vec![".svc".into(), " ".into(), ".cluster.local".into()],
            ..InjectConfig::default()
        };
        assert_eq!(
            no_proxy(&config),
            "localhost,127.0.0.1,::1,.svc,.cluster.local"
        );
    }

    #[test]
    fn an_unknown_inject_value_is_reported() {
        let pod = json!({"metadata": {"annotations": {ANNOTATION_INJECT: "yes"}},
            "spec": {"containers": [{"name": "app"}]}});
        let err = plan(&pod, Some("prod"), &InjectConfig::default()).unwrap_err();
        assert!(
            matches!(err, Skip::Invalid(ref m) if m.contains("\"yes\"")),
            "{err:?}"
        );
    }

    #[test]
    fn a_label_opts_out_and_the_annotation_wins_over_it() {
        let mut pod = json!({"metadata": {"labels": {ANNOTATION_INJECT: "disabled"}},
            "spec": {"containers": [{"name": "app"}]}});
        let config = InjectConfig::default();
        assert_eq!(plan(&pod, Some("prod"), &config), Err(Skip::OptedOut));
        pod["metadata"]["annotations"] = json!({ANNOTATION_INJECT: "enabled"});
        assert!(plan(&pod, Some("prod"), &config).is_ok());
    }

    #[test]
    fn the_environment_falls_back_to_the_default_then_the_namespace() {
        let pod = json!({"spec": {"containers": [{"name": "app"}]}});
        let mut config = InjectConfig::default();
        assert_eq!(
            plan(&pod, Some("shop"), &config).unwrap().environment,
            "shop"
        );
        config.default_environment = Some("production".into());
        assert_eq!(
            plan(&pod, Some("shop"), &config).unwrap().environment,
            "production"
        );
        let bad = json!({"metadata": {"annotations": {ANNOTATION_ENVIRONMENT: "Prod!"}},
            "spec": {"containers": [{"name": "app"}]}});
        assert!(matches!(
            plan(&bad, Some("shop"), &config),
            Err(Skip::Invalid(_))
        ));
    }

    fn pod_with(annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]}})
    }

    fn invalid(annotations: Value) -> String {
        match plan(
            &pod_with(annotations),
            Some("shop"),
            &InjectConfig::default(),
        ) {
            Err(Skip::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn overrides_by_annotation() {
        let pod = pod_with(json!({
            ANNOTATION_CONFIG: "checkout-sidecar",
            ANNOTATION_INBOUND: "15106:8080",
            annotations::IMAGE: "registry.example/vexil-proxy:2",
            annotations::LOG_LEVEL: "vexil_proxy=debug,info",
            annotations::CPU_LIMIT: "500m",
            annotations::MEMORY_LIMIT: "none",
            annotations::OUTBOUND_PORT: "16001",
            annotations::ADMIN_PORT: "9014",
        }));
        let config = InjectConfig::default();
        let plan = plan(&pod, Some("shop"), &config).unwrap();
        assert_eq!(plan.config, ConfigSource::Named("checkout-sidecar".into()));
        assert_eq!(plan.image, "registry.example/vexil-proxy:2");
        assert_eq!(
            plan.inbound,
            Some(Inbound {
                listen: 15106,
                app: 8080
            })
        );
        assert_eq!(plan.resources.cpu_limit.as_deref(), Some("500m"));
        assert_eq!(plan.resources.memory_limit, None);
        assert_eq!(plan.resources.memory_request.as_deref(), Some("32Mi"));
        let args = sidecar_args(&plan, &config).join(" ");
        assert!(args.contains("--admin-addr 0.0.0.0:9014"), "{args}");
        assert!(args.contains("--outbound-addr 127.0.0.1:16001"), "{args}");
        assert!(args.contains("--inbound-addr 0.0.0.0:15106 --inbound-upstream 127.0.0.1:8080"));
        assert!(args.contains("--config /etc/vexil/proxy.toml"), "{args}");
        assert!(
            !args.contains("--config-optional"),
            "a named ConfigMap must exist"
        );
        assert!(
            !args.contains("--grpc-addr"),
            "defaults are not repeated: {args}"
        );
    }

    #[test]
    fn without_an_annotation_the_namespace_default_is_optional() {
        let config = InjectConfig::default();
        let plan = plan(&pod_with(json!({})), Some("shop"), &config).unwrap();
        assert_eq!(
            plan.config,
            ConfigSource::NamespaceDefault("vexil-sidecar".into())
        );
        assert!(sidecar_args(&plan, &config).contains(&"--config-optional".to_string()));
        let [_, _, volume] = volumes(&plan, &config);
        assert_eq!(volume["configMap"]["optional"], true);
    }

    #[test]
    fn bad_overrides_are_refused_with_the_annotation_named() {
        assert!(invalid(json!({ANNOTATION_CONFIG: "Bad_Name"})).contains(ANNOTATION_CONFIG));
        assert!(invalid(json!({ANNOTATION_INBOUND: "8080"})).contains("LISTEN_PORT:APP_PORT"));
        assert!(invalid(json!({ANNOTATION_INBOUND: "9000:9000"})).contains("own port"));
        assert!(invalid(json!({ANNOTATION_INBOUND: "8014:8080"})).contains("admin port"));
        assert!(invalid(json!({annotations::GRPC_PORT: "0"})).contains(annotations::GRPC_PORT));
        assert!(invalid(json!({annotations::GRPC_PORT: "8015"})).contains("must differ"));
        assert!(invalid(json!({annotations::OUTBOUND_PORT: "8080"})).contains("container \"app\""));
        assert!(invalid(json!({annotations::CPU_LIMIT: "lots"})).contains("quantity"));
        assert!(invalid(json!({annotations::LOG_LEVEL: "debug; rm -rf"})).contains("log filter"));
        assert!(invalid(json!({annotations::IMAGE: "a b"})).contains("image"));
    }

    #[test]
    fn quantities() {
        for q in ["1", "0.5", "100m", "64Mi", "1Gi", "2G", "1.5"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "m", "1..2", "1mi", "-1", "1 Gi", "lots"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn providers_find_the_sidecar_unless_the_app_says_otherwise() {
        let config = InjectConfig::default();
        let pod = json!({"spec": {"containers": [
            {"name": "app"},
            {"name": "worker", "env": [
                {"name": "HTTP_PROXY", "value": "http://corp:3128"},
                {"name": "FLAGD_RESOLVER", "value": "in-process"},
                {"name": "OFREP_ENDPOINT", "value": "http://elsewhere:8016"}
            ]}
        ]}});
        let plan = plan(&pod, Some("shop"), &config).unwrap();
        let containers = pod["spec"]["containers"].as_array().unwrap();
        let names = |vars: Vec<Value>| -> Vec<String> {
            vars.iter()
                .map(|v| {
                    format!(
                        "{}={}",
                        v["name"].as_str().unwrap(),
                        v["value"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let app = names(app_env(&containers[0], &plan, true, &config));
        assert!(
            app.contains(&"HTTP_PROXY=http://127.0.0.1:15101".to_string()),
            "{app:?}"
        );
        assert!(app.contains(&"FLAGD_HOST=127.0.0.1".to_string()));
        assert!(app.contains(&"FLAGD_PORT=8013".to_string()));
        assert!(app.contains(&"FLAGD_RESOLVER=rpc".to_string()));
        assert!(app.contains(&"OFREP_ENDPOINT=http://127.0.0.1:8016".to_string()));
        let worker = names(app_env(&containers[1], &plan, false, &config));
        assert!(
            !worker
                .iter()
                .any(|v| v.starts_with("HTTP_PROXY") || v.starts_with("OFREP"))
        );
        assert!(!worker.iter().any(|v| v.starts_with("FLAGD_RESOLVER")));
        assert!(
            worker.contains(&"FLAGD_PORT=8015".to_string()),
            "in-process reads its sync stream from FLAGD_PORT: {worker:?}"
        );
    }

    #[test]
    fn host_network_pods_are_skipped() {
        let pod = json!({"spec": {"hostNetwork": true, "containers": [{"name": "app"}]}});
        assert!(matches!(
            plan(&pod, Some("prod"), &InjectConfig::default()),
            Err(Skip::Invalid(_))
        ));
    }
}
