//! Control paused (SIGSTOP) and resumed (SIGCONT).

use std::time::{Duration, Instant};

use vexil_reliability::{Sidecar, metric_value, string_flag};
use vexil_testkit::pg::PgDb;
use vexil_testkit::{TempDir, wait_for};

use crate::{assert_converged, sidecar_options, two_replicas};

/// Control paused (SIGSTOP): its sidecar turns STALE within the keep-alive window configured
/// (`--control-idle-timeout-ms`), keeps serving, and after SIGCONT is SYNCED again having received
/// only the missing deltas (its applied-frames counters) of the commits made meanwhile on the
/// other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_control_makes_sidecars_stale_then_sends_only_the_missing_deltas() {
    let started = Instant::now();
    let Some(db) = PgDb::create("vexil_faults").await else {
        return;
    };
    let dir = TempDir::new("vexil-faults-pause");
    let (a, b) = two_replicas(&dir, &db, None, (300, 300)).await;
    a.create_env("prod").await;
    a.put_flag("prod", "seed", &string_flag("seed"))
        .await
        .unwrap();
    let token = a.sidecar_token("prod").await;
    let idle_ms = 2000;
    let s = Sidecar::start(&sidecar_options(
        &dir,
        &[&a],
        &token,
        "s",
        Some((300, idle_ms)),
    ))
    .await;
    let revision = a.revision("prod").await;
    s.wait_synced_at(revision, 30).await;
    let before = s.values().await.unwrap();
    let (full0, delta0) = s.frames_applied().await.unwrap();
    let sent = |text: &str, kind: &str| {
        metric_value(
            text,
            &format!("vexil_control_sync_frames_sent_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let metrics = a.metrics().await;
    let (a_full0, a_delta0) = (sent(&metrics, "full"), sent(&metrics, "delta"));

    a.process.signal("STOP");
    let paused = Instant::now();
    wait_for(30, "the sidecar turns stale", async || {
        match s.state().await {
            Ok((_, state)) if state == "stale" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let noticed = paused.elapsed();
    eprintln!("stale {noticed:?} after SIGSTOP (idle timeout {idle_ms} ms)");
    assert!(
        noticed < Duration::from_millis(idle_ms) + Duration::from_secs(8),
        "stale only after {noticed:?}"
    );
    assert_eq!(s.ready().await.unwrap(), 200, "still ready");
    assert_eq!(s.values().await.unwrap(), before, "still serving");

    // Three commits on B while A sleeps.
    for i in 1..=3 {
        let r = b
            .put_flag("prod", &format!("p{i}"), &string_flag(&format!("p{i}")))
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(b.revision("prod").await, revision + 3);
    assert_eq!(s.state().await.unwrap().0, revision, "A is paused");

    a.process.signal("CONT");
    let resumed = Instant::now();
    s.wait_synced_at(revision + 3, 45).await;
    eprintln!("synced {:?} after SIGCONT", resumed.elapsed());
    let (full, delta) = s.frames_applied().await.unwrap();
    assert_eq!(
        (full, delta),
        (full0, delta0 + 3),
        "only the three missing deltas, no full snapshot"
    );
    // Control's side: no full snapshot either. (Its delta count may also include deltas queued
    // on the dead connection before it noticed the sidecar was gone.)
    let metrics = a.metrics().await;
    assert_eq!(sent(&metrics, "full"), a_full0, "A sent no full snapshot");
    assert!(sent(&metrics, "delta") >= a_delta0 + 3.0, "{metrics}");
    assert_converged(&s, &b, "after the pause").await;
    eprintln!("pause test took {:?}", started.elapsed());
}
