//! Closed-loop load on one OFREP endpoint of a running sidecar, printing the rate, the latency and
//! the sidecar's CPU per request: a quick probe while profiling by hand.
//!
//! `cargo run --release -p vexil-bench --example probe -- ADDR PATH CONCURRENCY SECONDS PID`
//! (e.g. `127.0.0.1:8016 /ofrep/v1/evaluate/flags 32 5 $(pgrep vexil-proxy)`).

use std::time::Duration;

use vexil_bench::http1::{HttpCall, Pool, post_json};
use vexil_bench::load::closed_loop;
use vexil_bench::sys::CpuMeter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: probe ADDR PATH CONCURRENCY SECONDS PID"
    );
    let addr: std::net::SocketAddr = args[1].parse()?;
    let body = serde_json::json!({ "context": vexil_bench::context() }).to_string();
    let call = HttpCall::new(Pool::new(addr), post_json(&args[1], &args[2], &body), 200);
    let meter = CpuMeter::start(args[5].parse()?);
    let r = closed_loop(
        &call,
        args[3].parse()?,
        Duration::from_secs(args[4].parse()?),
    )
    .await;
    let cores = meter.cores_used();
    println!(
        "{:.0}/s, p50 {:.1} µs, p99 {:.1} µs, errors {}, sidecar {:.0} % of a core, {:.1} µs CPU per request",
        r.achieved_rps,
        r.latency.p50_us,
        r.latency.p99_us,
        r.errors,
        cores * 100.0,
        cores * 1e6 / r.achieved_rps
    );
    Ok(())
}
