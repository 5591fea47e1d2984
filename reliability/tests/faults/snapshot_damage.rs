//! A sidecar restarted while control is down, on a sound, a corrupt and a truncated snapshot.

use std::time::{Duration, Instant};

use vexil_reliability::{Control, ControlOptions, Sidecar, string_flag};
use vexil_testkit::{TempDir, free_udp_port, wait_for};

use crate::sidecar_options;

/// The snapshot files of `dir`: `(current, set aside)`.
fn snapshot_files(dir: &std::path::Path) -> (bool, Vec<String>) {
    let mut current = false;
    let mut aside = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name == "snapshot-prod.json" {
            current = true;
        } else if name.starts_with("snapshot-prod.json.corrupt-") {
            aside.push(name);
        }
    }
    (current, aside)
}

/// Asserts the sidecar is alive but not ready and serves no flags (lookups answer 503), for a
/// while.
async fn assert_not_serving(s: &Sidecar, what: &str) {
    for _ in 0..5 {
        assert_eq!(s.ready().await.unwrap(), 503, "{what}: not ready");
        let r = s.evaluate("a").await.unwrap();
        assert_eq!(r.status, 503, "{what}: no flags served: {}", r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sidecar restarted while control is down is ready from its persisted snapshot; a corrupt and
/// a truncated snapshot are detected (checksum), set aside (renamed, kept) and not served: the
/// sidecar is not ready and answers no flag until control is back, then it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_restarted_with_control_down_serves_only_a_sound_snapshot() {
    let started = Instant::now();
    let dir = TempDir::new("vexil-faults-snapshot");
    let options = ControlOptions {
        database_url: format!("sqlite://{}", dir.path().join("vexil.db").display()),
        redis_url: None,
        tls_dir: dir.sub("tls"),
        sync_poll_ms: None,
        // The same QUIC port after the restart: the sidecar knows only this address.
        sync_port: Some(free_udp_port()),
    };
    let mut control = Control::start(&options).await;
    control.create_env("prod").await;
    for (k, v) in [("a", "alpha"), ("b", "beta")] {
        control.put_flag("prod", k, &string_flag(v)).await.unwrap();
    }
    let token = control.sidecar_token("prod").await;
    let sidecar = sidecar_options(&dir, &[&control], &token, "s", None);
    let state_dir = sidecar.state_dir.clone();
    let mut s = Sidecar::start(&sidecar).await;
    s.wait_synced_at(2, 30).await;
    let expected = s.values().await.unwrap();
    assert_eq!(s.process.terminate(20), Some(0));
    assert_eq!(control.process.terminate(20), Some(0));

    // Control down, a sound snapshot: ready from it.
    let mut s = Sidecar::start(&sidecar).await;
    wait_for(20, "ready from the persisted snapshot", async || {
        match s.ready().await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let snapshot = s.snapshot().await.unwrap().json;
    assert_eq!(snapshot["source"]["kind"], "persisted", "{snapshot}");
    assert_eq!(snapshot["revision"], 2);
    assert_eq!(s.values().await.unwrap(), expected);
    assert_eq!(s.process.terminate(20), Some(0));
    let file = state_dir.join("snapshot-prod.json");
    let sound = std::fs::read(&file).unwrap();

    // A corrupted body (one byte changed), then a truncated file.
    let mut corrupt = sound.clone();
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0x20;
    let truncated = sound[..sound.len() - 7].to_vec();
    for (i, (what, bytes)) in [("corrupt", corrupt), ("truncated", truncated)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&file, bytes).unwrap();
        let mut s = Sidecar::start(&sidecar).await;
        assert_not_serving(&s, what).await;
        let (current, aside) = snapshot_files(&state_dir);
        assert!(!current, "{what}: the damaged file is moved away");
        assert_eq!(aside.len(), i + 1, "{what}: set aside and kept: {aside:?}");
        let out = s.process.output();
        assert!(out.contains("checksum mismatch"), "{what}: {out}");
        assert!(out.contains("damaged snapshot set aside"), "{what}: {out}");
        if what == "truncated" {
            // Control comes back: the waiting sidecar syncs and becomes ready.
            control = Control::start(&options).await;
            s.wait_synced_at(2, 45).await;
            assert_eq!(s.ready().await.unwrap(), 200);
            assert_eq!(s.values().await.unwrap(), expected);
            let (current, _) = snapshot_files(&state_dir);
            assert!(current, "a sound snapshot is persisted again");
        }
        assert_eq!(s.process.terminate(20), Some(0));
    }
    assert_eq!(control.process.terminate(20), Some(0));
    eprintln!("snapshot test took {:?}", started.elapsed());
}
