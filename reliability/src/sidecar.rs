//! A sidecar: `vexil-proxy` following control, started through the test kit, and what the fault
//! tests read from it (readiness, snapshot, metrics, OFREP values).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use vexil_testkit::proxy::ProxyCmd;
use vexil_testkit::{Process, wait_for};

use crate::http::{Resp, http_client, metric_value, send};

/// How to start a sidecar.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// Control sync URLs (`quic://...`), tried in turn.
    pub controls: Vec<String>,
    /// Environment.
    pub environment: String,
    /// Sidecar token.
    pub token: String,
    /// CA file.
    pub ca_file: PathBuf,
    /// State directory (the persisted snapshot).
    pub state_dir: PathBuf,
    /// `--client-id`.
    pub client_id: String,
    /// `--control-keepalive-ms` and `--control-idle-timeout-ms`.
    pub keepalive: Option<(u64, u64)>,
}

/// A running `vexil-proxy` following control.
pub struct Sidecar {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of its admin listener.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of OFREP.
    pub ofrep: String,
    client: reqwest::Client,
}

impl Sidecar {
    /// Starts one on free ports and waits until `/healthz` answers (not until it is ready).
    pub async fn start(options: &SidecarOptions) -> Sidecar {
        let mut cmd = ProxyCmd::new()
            .name(format!("vexil-proxy {}", options.client_id))
            .args(["--control", &options.controls.join(",")])
            .args(["--environment", &options.environment])
            .arg("--ca-file")
            .arg(&options.ca_file)
            .arg("--state-dir")
            .arg(&options.state_dir)
            .args(["--client-id", &options.client_id])
            .args(["--threads", "1"])
            .env("VEXIL_TOKEN", &options.token);
        if let Some((keepalive, idle)) = options.keepalive {
            cmd = cmd
                .args(["--control-keepalive-ms".to_string(), keepalive.to_string()])
                .args(["--control-idle-timeout-ms".to_string(), idle.to_string()]);
        }
        let mut sidecar = cmd.start();
        sidecar.wait_healthy().await;
        Sidecar {
            process: sidecar.process,
            admin: sidecar.admin,
            ofrep: sidecar.ofrep,
            client: http_client(Duration::from_secs(10)),
        }
    }

    /// `/readyz` status.
    pub async fn ready(&self) -> Result<u16, String> {
        send(self.client.get(format!("{}/readyz", self.admin)))
            .await
            .map(|r| r.status)
    }

    /// `/debug/snapshot`: `revision`, `sync_state`, `source`, `flags`, ... (503 before a flag set
    /// is loaded).
    pub async fn snapshot(&self) -> Result<Resp, String> {
        send(self.client.get(format!("{}/debug/snapshot", self.admin))).await
    }

    /// The revision served and the sync state (`synced`, `stale`, `starting`); revision 0 when
    /// nothing is loaded.
    pub async fn state(&self) -> Result<(i64, String), String> {
        let r = self.snapshot().await?;
        Ok((
            r.json["revision"].as_i64().unwrap_or(0),
            r.json["sync_state"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        send(self.client.get(format!("{}/metrics", self.admin)))
            .await
            .map(|r| r.text)
    }

    /// Frames applied from control so far: `(full, delta)`.
    pub async fn frames_applied(&self) -> Result<(u64, u64), String> {
        let text = self.metrics().await?;
        let n = |kind: &str| {
            metric_value(
                &text,
                &format!("vexil_proxy_sync_frames_applied_total{{kind=\"{kind}\"}}"),
            )
            .unwrap_or(0.0) as u64
        };
        Ok((n("full"), n("delta")))
    }

    /// OFREP bulk evaluation with an empty context: `flag key -> value` (`Err` with the status
    /// and body when it does not answer 200).
    pub async fn values(&self) -> Result<std::collections::BTreeMap<String, Value>, String> {
        let r = send(
            self.client
                .post(format!("{}/ofrep/v1/evaluate/flags", self.ofrep))
                .json(&json!({"context": {}})),
        )
        .await?;
        if r.status != 200 {
            return Err(format!("{}: {}", r.status, r.text));
        }
        Ok(r.json["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["key"].as_str()?.to_string(), f["value"].clone())))
            .collect())
    }

    /// OFREP evaluation of one flag: status and body.
    pub async fn evaluate(&self, key: &str) -> Result<Resp, String> {
        send(
            self.client
                .post(format!("{}/ofrep/v1/evaluate/flags/{key}", self.ofrep))
                .json(&json!({"context": {}})),
        )
        .await
    }

    /// Waits until it serves `revision` (at least) in state `synced`.
    pub async fn wait_synced_at(&self, revision: i64, secs: u64) {
        wait_for(
            secs,
            &format!("sidecar synced at revision {revision}"),
            async || match self.state().await {
                Ok((r, s)) if r >= revision && s == "synced" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
}

/// `flag key -> value of its default variant` of an exported flagd document (what an OFREP
/// evaluation with an empty context answers for the string flags used here).
pub fn default_values(flagset: &Value) -> std::collections::BTreeMap<String, Value> {
    flagset["flags"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, f)| {
            let variant = f["defaultVariant"].as_str()?;
            Some((k.clone(), f["variants"][variant].clone()))
        })
        .collect()
}
