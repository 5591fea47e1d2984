//! A control replica: `vexil-control serve` started through the test kit, and the admin API calls
//! the fault tests make.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::Process;
use vexil_testkit::control::ControlCmd;

use crate::ADMIN;
use crate::http::{Resp, http_client, send};

/// How to start a control replica.
#[derive(Clone, Debug)]
pub struct ControlOptions {
    /// `--database-url`.
    pub database_url: String,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--tls-dir` (with `--dev-tls`: the first replica writes the CA and certificate, the
    /// others reuse them).
    pub tls_dir: PathBuf,
    /// `--sync-poll-ms`.
    pub sync_poll_ms: Option<u64>,
    /// The QUIC sync port (default: a free one).
    pub sync_port: Option<u16>,
}

/// A running `vexil-control serve`.
pub struct Control {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub base: String,
    /// `quic://127.0.0.1:PORT` of the sync endpoint.
    pub sync_url: String,
    /// The TLS directory (`ca.pem` for sidecars).
    pub tls_dir: PathBuf,
    client: reqwest::Client,
}

impl Control {
    /// Starts a replica and waits until `/readyz` answers 200 (its store answers).
    pub async fn start(options: &ControlOptions) -> Control {
        let mut cmd = ControlCmd::new(&options.database_url)
            .dev_tls(&options.tls_dir)
            .args(["--webhook-addr", "off"])
            .env("VEXIL_ADMIN_TOKEN", ADMIN);
        if let Some(port) = options.sync_port {
            cmd = cmd.sync_port(port);
        }
        if let Some(url) = &options.redis_url {
            cmd = cmd.args(["--redis-url", url]);
        }
        if let Some(ms) = options.sync_poll_ms {
            cmd = cmd.args(["--sync-poll-ms".to_string(), ms.to_string()]);
        }
        let control = cmd.start().await;
        Control {
            process: control.process,
            base: control.base,
            sync_url: control.sync_url,
            tls_dir: options.tls_dir.clone(),
            client: http_client(Duration::from_secs(30)),
        }
    }

    /// The CA sidecars trust.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// A request to `path` with the admin token.
    pub fn req(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
    }

    /// `GET path` as admin.
    pub async fn get(&self, path: &str) -> Result<Resp, String> {
        send(self.req("GET", path)).await
    }

    /// Creates environment `key`.
    pub async fn create_env(&self, key: &str) {
        let r = send(
            self.req("POST", "/api/v1/environments")
                .json(&json!({"key": key, "name": key})),
        )
        .await
        .expect("create environment");
        assert_eq!(r.status, 201, "create environment: {}", r.text);
    }

    /// Creates or replaces flag `key` of `env` (`If-Match: *` when it exists); the status.
    pub async fn put_flag(&self, env: &str, key: &str, definition: &Value) -> Result<Resp, String> {
        let path = flag_path(env, key);
        let exists = self.get(&path).await?.status == 200;
        let mut req = self.req("PUT", &path).json(definition);
        if exists {
            req = req.header("if-match", "*");
        }
        send(req).await
    }

    /// A `sidecar` token for `env`; its secret.
    pub async fn sidecar_token(&self, env: &str) -> String {
        let body =
            json!({"name": format!("sidecar-{env}"), "role": "sidecar", "environments": [env]});
        let r = send(self.req("POST", "/api/v1/tokens").json(&body))
            .await
            .expect("create token");
        assert_eq!(r.status, 201, "create token: {}", r.text);
        r.json["token"].as_str().expect("token").to_string()
    }

    /// The revision of `env`.
    pub async fn revision(&self, env: &str) -> i64 {
        let r = self
            .get(&format!("/api/v1/environments/{env}"))
            .await
            .expect("get environment");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["revision"].as_i64().expect("revision")
    }

    /// The exported flag set of `env` (`GET .../flagset`).
    pub async fn flagset(&self, env: &str) -> Value {
        let r = self
            .get(&format!("/api/v1/environments/{env}/flagset"))
            .await
            .expect("export");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    /// Client ids of the connected sidecars (of every replica: the fleet's sessions are in the
    /// store).
    pub async fn sidecar_ids(&self) -> Result<Vec<String>, String> {
        let r = self.get("/api/v1/sidecars").await?;
        if r.status != 200 {
            return Err(r.text);
        }
        Ok(r.json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["connected"] == true)
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect())
    }

    /// The connected sessions of the fleet: (client id, session id unique across replicas).
    pub async fn sidecar_sessions(&self) -> Result<Vec<(String, String)>, String> {
        let r = self.get("/api/v1/sidecars").await?;
        if r.status != 200 {
            return Err(r.text);
        }
        Ok(r.json["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["connected"] == true)
            .filter_map(|i| {
                Some((
                    i["id"].as_str()?.to_string(),
                    i["session_id"].as_str()?.to_string(),
                ))
            })
            .collect())
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|r| r.text)
            .unwrap_or_default()
    }
}

/// `/api/v1/environments/{env}/flags/{key}`.
pub fn flag_path(env: &str, key: &str) -> String {
    format!("/api/v1/environments/{env}/flags/{key}")
}

/// A string flag whose only variant (and default) is `value`.
pub fn string_flag(value: &str) -> Value {
    json!({"state": "ENABLED", "variants": {"v": value}, "defaultVariant": "v"})
}
