//! The harness in smoke mode (tiny loads, seconds) against the debug binaries, so it never rots:
//! every scenario runs end to end and writes its JSON and Markdown (the soak for about 3 s).

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vexil_testkit::TempDir;

fn read(out: &Path, scenario: &str) -> Value {
    let json = std::fs::read_to_string(out.join(format!("{scenario}.json")))
        .unwrap_or_else(|e| panic!("{scenario}.json: {e}"));
    let md = std::fs::read_to_string(out.join(format!("{scenario}.md"))).unwrap();
    assert!(md.contains("## Setup") && md.contains("Smoke run"), "{md}");
    serde_json::from_str(&json).unwrap()
}

#[test]
fn every_scenario_runs_in_smoke_mode() {
    // The binaries under test, built first when the test runner has not (e.g. `-p vexil-bench`).
    vexil_testkit::binary("vexil-proxy");
    vexil_testkit::binary("vexil-control");
    let out = TempDir::new("vexil-bench-smoke");
    let started = std::time::Instant::now();
    let result = Command::new(env!("CARGO_BIN_EXE_vexil-bench"))
        .args(["--smoke", "--no-build", "--out"])
        .arg(out.path())
        .arg("all")
        .env_remove("VEXIL_UNLEASH_EDGE")
        .output()
        .expect("vexil-bench runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "vexil-bench failed:\n{stdout}\n{stderr}"
    );
    eprintln!("smoke run: {:.1} s", started.elapsed().as_secs_f64());

    let lookup = read(&out, "lookup");
    let points = lookup["data"]["points"].as_array().unwrap();
    // five APIs: one rate and the peak each
    assert_eq!(points.len(), 10, "{lookup}");
    assert!(
        points.iter().all(|p| p["load"]["ok"].as_u64().unwrap() > 0),
        "{lookup}"
    );
    assert!(
        lookup["notes"]
            .to_string()
            .contains("Unleash Edge: not available")
    );

    let propagate = read(&out, "propagate");
    let runs = propagate["data"]["runs"].as_array().unwrap();
    assert!(
        runs.iter().filter(|r| r["backend"] == "sqlite").count() == 2,
        "{propagate}"
    );
    assert!(
        runs.iter()
            .all(|r| r["latency"]["count"].as_u64().unwrap() > 0)
    );

    let footprint = read(&out, "footprint");
    assert!(footprint["data"]["memory"][0]["idle_kib"].as_u64().unwrap() > 0);
    assert!(
        footprint["data"]["cold_start"][0]["ready"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );

    let engine = read(&out, "engine");
    assert!(!engine["budgets"].as_array().unwrap().is_empty());

    let hop = read(&out, "hop");
    let hop_points = hop["data"]["points"].as_array().unwrap();
    assert!(hop_points.iter().any(|p| p["target"] == "direct"), "{hop}");
    // The data plane is either measured or reported missing, never silently absent.
    let vexil_measured = hop_points.iter().any(|p| p["target"] == "vexil");
    assert!(
        vexil_measured
            || hop["notes"]
                .to_string()
                .contains("data plane not available"),
        "{hop}"
    );

    // The soak ran its few seconds through the real sidecar: every request answered, every
    // decision consistent with the revision it named, and the flag changed under the traffic.
    let soak = read(&out, "soak");
    let data = &soak["data"];
    assert!(data["load"]["ok"].as_u64().unwrap() > 0, "{soak}");
    assert_eq!(data["load"]["errors"], 0, "{soak}");
    assert_eq!(data["decisions"]["missing"], 0, "{soak}");
    assert_eq!(data["decisions"]["inconsistent"], 0, "{soak}");
    assert!(data["commits"]["ok"].as_u64().unwrap() > 0, "{soak}");
    assert_eq!(data["commits"]["failed"], 0, "{soak}");
    assert!(
        data["rss"]["samples"].as_array().unwrap().len() >= 2,
        "{soak}"
    );
    assert_eq!(data["final_revision_reached"], true, "{soak}");
}
