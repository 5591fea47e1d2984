//! Real OpenFeature clients against the real sidecar: the Python `openfeature-provider-flagd` in RPC
//! mode (flagd.evaluation v2) and in in-process mode (flagd.sync v1), and the Python
//! `openfeature-provider-ofrep`, each resolving every type, a disabled flag, a missing flag and a
//! type mismatch, and (flagd modes) seeing a configuration change after the flags file changes.
//! The Rust `open-feature-flagd` provider runs the same checks in its RPC (v1), in-process and REST
//! modes (`tests/clients/rust`, built by the test). The Python script is
//! `tests/clients/openfeature_clients.py`; the clients are installed, pinned, by
//! `scripts/ensure-deps.sh` (run by the test command).

use std::path::PathBuf;
use std::process::Command;

use vexil_testkit::TempDir;
use vexil_testkit::proxy::ProxyProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_openfeature_clients_work_unchanged() {
    let Some(python) = vexil_testkit::tools::python() else {
        return;
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("vexil-openfeature");
    let flags = dir.join("flags.json");
    std::fs::copy(manifest.join("tests/clients/flags.json"), &flags).unwrap();
    let mut proxy = ProxyProcess::start(&["--flags-file", flags.to_str().unwrap()]);
    proxy.wait_healthy().await;
    let script = manifest.join("tests/clients/openfeature_clients.py");
    let (grpc, sync, ofrep) = (proxy.ports.grpc, proxy.ports.sync, proxy.ports.ofrep);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&flags)
            .env("VEXIL_GRPC_PORT", grpc.to_string())
            .env("VEXIL_FLAGD_SYNC_PORT", sync.to_string())
            .env("VEXIL_OFREP_PORT", ofrep.to_string())
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "OpenFeature clients failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
    assert_eq!(proxy.process.terminate(15), Some(0));
}

/// The repository root.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds `tests/clients/rust` (a project of its own, outside the workspace) with protox as its
/// `protoc`; `None` (with a notice) outside CI when protox is missing.
fn build_rust_client() -> Option<PathBuf> {
    let root = repo_root();
    let protoc = root.join(".tools/bin/protox");
    if !protoc.exists() {
        vexil_testkit::skip(format!(
            "{} is missing (run scripts/ensure-deps.sh)",
            protoc.display()
        ));
        return None;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("rust-clients");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = root.join("proxy/tests/clients/rust/Cargo.toml");
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env("PROTOC", &protoc)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {} failed", manifest.display());
    Some(target.join("debug/vexil-rust-client-check"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_openfeature_flagd_provider_works_unchanged() {
    let Some(binary) = tokio::task::spawn_blocking(build_rust_client)
        .await
        .unwrap()
    else {
        return;
    };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("vexil-openfeature-rust");
    let flags = dir.join("flags.json");
    std::fs::copy(manifest.join("tests/clients/flags.json"), &flags).unwrap();
    let mut proxy = ProxyProcess::start(&["--flags-file", flags.to_str().unwrap()]);
    proxy.wait_healthy().await;
    let (grpc, sync, ofrep) = (proxy.ports.grpc, proxy.ports.sync, proxy.ports.ofrep);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .arg(&flags)
            .env("VEXIL_GRPC_PORT", grpc.to_string())
            .env("VEXIL_FLAGD_SYNC_PORT", sync.to_string())
            .env("VEXIL_OFREP_PORT", ofrep.to_string())
            .output()
            .expect("the Rust client runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the Rust OpenFeature client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
    assert_eq!(proxy.process.terminate(15), Some(0));
}
