//! The peer baseline of `lookup`: Unleash Edge in offline mode, serving toggles equivalent to a
//! generated Vexil flag set through its frontend API.
//!
//! The binary is never downloaded at run time: its path comes from `VEXIL_UNLEASH_EDGE`
//! (`bench/scripts/build-unleash-edge.sh` builds Edge 20.1 once, from crates.io, into a cache
//! directory and prints the path). Edge 20 takes `offline --bootstrap-file F --client-tokens T --frontend-tokens T`. Equivalence is by kind and cost: a static flag is a
//! toggle with the `default` strategy; a targeted flag carries three constraints (`IN`, `IN`,
//! `NUM_GTE`); `fractional` is a `flexibleRollout` at 100 % with weighted variants; `sem_ver` one
//! `SEMVER_GT` constraint; starts_with/ends_with one `STR_STARTS_WITH`/`STR_ENDS_WITH`; a `$ref`
//! flag two constraints. The single-flag request asks for the toggle standing for Vexil's
//! single-flag workload, whose constraints the context meets.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Ctx, status, write_json};
use crate::http1::{HttpCall, Pool, get};
use vexil_testkit::{free_tcp_port, loopback};

use crate::sys::Spawned;
use crate::{RuleKind, generate_flag_set};

/// The frontend token Edge is started with.
const TOKEN: &str = "*:development.vexilbenchsecret";

/// The query string of the benchmark context, as Edge's frontend API takes it.
const CONTEXT_QUERY: &str = "userId=user-7f3a9c21&properties%5Bcountry%5D=NL&properties%5Bplan%5D=pro\
&properties%5Bage%5D=34&properties%5Bversion%5D=2.3.1&properties%5Bemail%5D=ada%40example.com";

/// A running Unleash Edge.
pub struct Edge {
    process: Spawned,
    addr: std::net::SocketAddr,
    single: String,
}

impl Edge {
    /// Starts `bin` offline with toggles equivalent to the generated set of `n` flags, pinned to
    /// the server core, one worker.
    pub async fn start(ctx: &Ctx, bin: &Path, n: usize) -> anyhow::Result<Edge> {
        let set = generate_flag_set(n, crate::SEED);
        let single = crate::scenarios::lookup::single_flag(&set);
        let features = toggles(&set);
        let file = write_json(&ctx.work, &format!("unleash-{n}.json"), &features)?;
        let addr = loopback(free_tcp_port());
        let mut cmd = ctx.pinning.server_command(bin);
        cmd.args(["--interface", "127.0.0.1", "--port"])
            .arg(addr.port().to_string())
            .args(["offline", "--bootstrap-file"])
            .arg(&file)
            // Edge 20 refuses to start offline without client tokens, though only the frontend
            // API is measured.
            .args(["--client-tokens", TOKEN, "--frontend-tokens", TOKEN])
            // Edge 20 runs one tokio runtime (`--workers` has no effect since 20.0): one worker
            // thread, as the sidecar's `--threads 1`, on the core it is pinned to.
            .env("TOKIO_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn");
        let mut process = Spawned::start(cmd, &format!("unleash-edge-{n}"), &ctx.work)?;
        let started = Instant::now();
        while status(addr, "/internal-backstage/health").await != Some(200) {
            if let Some(exit) = process.exited() {
                anyhow::bail!("{exit}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "Edge never healthy"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Edge {
            process,
            addr,
            single,
        })
    }

    /// `GET /api/frontend/features/{single}` with the context.
    pub fn single_call(&self) -> HttpCall {
        self.call(&format!(
            "/api/frontend/features/{}?{CONTEXT_QUERY}",
            self.single
        ))
    }

    /// `GET /api/frontend` (every enabled toggle) with the context.
    pub fn all_call(&self) -> HttpCall {
        self.call(&format!("/api/frontend?{CONTEXT_QUERY}"))
    }

    fn call(&self, target: &str) -> HttpCall {
        let request = get(&self.addr.to_string(), target, &[("authorization", TOKEN)]);
        HttpCall::new(Pool::new(self.addr), request, 200)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it.
    pub fn stop(self) {
        drop(self.process);
    }
}

/// Unleash client features (`version: 2`) equivalent to `set`.
pub fn toggles(set: &crate::GeneratedSet) -> Value {
    let features: Vec<Value> = set
        .kinds
        .iter()
        .map(|(key, kind)| toggle(key, *kind))
        .collect();
    json!({ "version": 2, "features": features })
}

fn constraint(context: &str, operator: &str, values: &[&str]) -> Value {
    match values {
        [one] if operator != "IN" => {
            json!({"contextName": context, "operator": operator, "value": one})
        }
        _ => json!({"contextName": context, "operator": operator, "values": values}),
    }
}

fn toggle(name: &str, kind: RuleKind) -> Value {
    let default = |constraints: Vec<Value>| json!([{"name": "default", "parameters": {}, "constraints": constraints}]);
    let (strategies, variants) = match kind {
        RuleKind::Static => (default(vec![]), json!([])),
        RuleKind::Targeted => (
            default(vec![
                constraint("country", "IN", &["NL"]),
                constraint("plan", "IN", &["pro", "enterprise"]),
                constraint("age", "NUM_GTE", &["18"]),
            ]),
            json!([]),
        ),
        RuleKind::Fractional => (
            json!([{"name": "flexibleRollout", "constraints": [],
                    "parameters": {"rollout": "100", "stickiness": "default", "groupId": name}}]),
            json!(["red", "blue", "green", "yellow"].map(|c| json!({
                "name": c, "weight": 250, "weightType": "variable", "stickiness": "default",
                "payload": {"type": "string", "value": c}}))),
        ),
        RuleKind::SemVer => (
            default(vec![constraint("version", "SEMVER_GT", &["2.1.0"])]),
            json!([]),
        ),
        RuleKind::StringMatch => (
            default(vec![constraint(
                "email",
                "STR_ENDS_WITH",
                &["@example.com"],
            )]),
            json!([]),
        ),
        RuleKind::Ref => (
            default(vec![
                constraint(
                    "country",
                    "IN",
                    &["NL", "DE", "FR", "BE", "ES", "IT", "PL", "SE"],
                ),
                constraint("plan", "IN", &["pro", "enterprise"]),
            ]),
            json!([]),
        ),
    };
    json!({"name": name, "type": "release", "enabled": true, "project": "default",
           "stale": false, "impressionData": false, "strategies": strategies, "variants": variants})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_becomes_an_enabled_toggle() {
        let set = generate_flag_set(50, crate::SEED);
        let t = toggles(&set);
        let features = t["features"].as_array().unwrap();
        assert_eq!(features.len(), 50);
        assert!(features.iter().all(|f| f["enabled"] == true));
        let targeted = features
            .iter()
            .find(|f| f["name"].as_str().unwrap().contains("targeted"))
            .unwrap();
        assert_eq!(
            targeted["strategies"][0]["constraints"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
}
