//! What to do with one pod, and the JSON Patch that does it.
//!
//! The patch only ever uses `add`, and every path it adds under exists in the pod it was computed
//! from: a missing `env`, `initContainers`, `volumes` or `metadata.annotations` is added whole, an
//! existing one is appended to (`/-`) or prepended to (`/0`).

use serde_json::{Map, Value, json};

use super::{
    ADMIN_PORT, ANNOTATION_ENVIRONMENT, ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_ROUTES,
    InjectConfig, PROXY_PORT, SIDECAR_NAME,
};
use crate::model::is_valid_environment_key;

/// Where the sidecar finds its token (the `token` key of the token Secret).
pub const TOKEN_FILE: &str = "/var/run/vexil/token";
/// Where the sidecar finds the control plane's CA (the `ca.pem` key of the CA Secret).
pub const CA_FILE: &str = "/var/run/vexil/ca.pem";
/// The sidecar's state directory (an `emptyDir`: persisted snapshots survive container restarts).
pub const STATE_DIR: &str = "/var/lib/vexil";

const CREDENTIALS_VOLUME: &str = "vexil-credentials";
const STATE_VOLUME: &str = "vexil-state";
/// The proxy variables an app container gets; one already set means the app chose its own proxy.
const PROXY_VARS: [&str; 2] = ["HTTP_PROXY", "http_proxy"];
const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];
/// Always in `NO_PROXY`: the pod's own loopback.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

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

/// What the webhook adds to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The environment the sidecar subscribes to.
    pub environment: String,
    /// The `vexil.io/routes` annotation, passed to the sidecar as `VEXIL_ROUTES`.
    pub routes: Option<String>,
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
    let mut plan = Plan {
        environment,
        routes: annotation(pod, ANNOTATION_ROUTES).map(str::to_string),
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
        volumes(config).into(),
    );
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    for (index, _) in &plan.proxied {
        let Some(container) = containers.and_then(|c| c.get(*index)) else {
            continue;
        };
        let path = format!("/spec/containers/{index}/env");
        append(
            &mut ops,
            container.get("env"),
            &path,
            proxy_env(container, config),
        );
    }
    let record = record(plan, config);
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

/// `metadata.annotations[key]`.
fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// `metadata.labels[key]`.
fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")?.get(key)?.as_str()
}

/// Whether the container sets the variable `name` itself.
fn has_env(container: &Value, name: &str) -> bool {
    container["env"]
        .as_array()
        .is_some_and(|env| env.iter().any(|e| e["name"] == name))
}

/// The variables an app container gets: the proxy, and `NO_PROXY` unless it sets its own.
fn proxy_env(container: &Value, config: &InjectConfig) -> Vec<Value> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let mut vars: Vec<Value> = PROXY_VARS
        .iter()
        .map(|name| json!({"name": name, "value": proxy}))
        .collect();
    if !NO_PROXY_VARS.iter().any(|v| has_env(container, v)) {
        let no_proxy = no_proxy(config);
        vars.extend(
            NO_PROXY_VARS
                .iter()
                .map(|name| json!({"name": name, "value": no_proxy})),
        );
    }
    vars
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
    [
        ("--control", config.control_url.clone()),
        ("--environment", plan.environment.clone()),
        ("--token-file", TOKEN_FILE.into()),
        ("--ca-file", CA_FILE.into()),
        ("--state-dir", STATE_DIR.into()),
        // The kubelet probes the pod's IP, not its loopback.
        ("--admin-addr", format!("0.0.0.0:{ADMIN_PORT}")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// The native sidecar: an init container that keeps running (`restartPolicy: Always`), started
/// before the app containers and considered started once `/readyz` answers (flags loaded).
fn sidecar(plan: &Plan, config: &InjectConfig) -> Value {
    let mut container = json!({
        "name": SIDECAR_NAME,
        "image": config.sidecar_image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["vexil-proxy"],
        "args": sidecar_args(plan, config),
        "ports": [{"name": "vexil-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 120
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"}
        },
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
            {"name": STATE_VOLUME, "mountPath": STATE_DIR}
        ]
    });
    if let Some(routes) = &plan.routes {
        container["env"] = json!([{"name": "VEXIL_ROUTES", "value": routes}]);
    }
    container
}

/// The token and CA (one projected volume from the two Secrets) and the state directory.
fn volumes(config: &InjectConfig) -> [Value; 2] {
    [
        json!({
            "name": CREDENTIALS_VOLUME,
            "projected": {"sources": [
                {"secret": {"name": config.token_secret, "items": [{"key": "token", "path": "token"}]}},
                {"secret": {"name": config.ca_secret, "items": [{"key": "ca.pem", "path": "ca.pem"}]}}
            ]}
        }),
        json!({"name": STATE_VOLUME, "emptyDir": {}}),
    ]
}

/// The `vexil.io/injected` annotation's value: what was done, as JSON text.
fn record(plan: &Plan, config: &InjectConfig) -> String {
    let mut record = Map::new();
    record.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    record.insert("image".into(), config.sidecar_image.clone().into());
    record.insert("environment".into(), plan.environment.clone().into());
    let proxied: Vec<&str> = plan.proxied.iter().map(|(_, n)| n.as_str()).collect();
    record.insert("proxied".into(), json!(proxied));
    if !plan.kept_own_proxy.is_empty() {
        record.insert("keptOwnProxy".into(), json!(plan.kept_own_proxy));
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

    #[test]
    fn host_network_pods_are_skipped() {
        let pod = json!({"spec": {"hostNetwork": true, "containers": [{"name": "app"}]}});
        assert!(matches!(
            plan(&pod, Some("prod"), &InjectConfig::default()),
            Err(Skip::Invalid(_))
        ));
    }
}
