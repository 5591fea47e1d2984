//! Redis killed and started again while commits go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vexil_reliability::{Sidecar, string_flag};
use vexil_testkit::pg::PgDb;
use vexil_testkit::redis::Redis;
use vexil_testkit::{TempDir, wait_for};

use crate::{assert_converged, sidecar_options, two_replicas};

/// Redis killed and started again while commits go on: they reach the sidecar of the other
/// replica through the change-log poll meanwhile, both replicas subscribe again when Redis is
/// back, nothing is lost or reordered (no full resync, revisions only increase, the final state
/// equals the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_the_poll_and_the_fast_path_resumes() {
    let started = Instant::now();
    let Some(db) = PgDb::create("vexil_faults").await else {
        return;
    };
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // B polls every 1.5 s: while Redis is down, that is how B learns of A's commits.
    let dir = TempDir::new("vexil-faults-redis");
    let (a, b) = two_replicas(&dir, &db, Some(&redis), (500, 1500)).await;
    a.create_env("prod").await;
    a.put_flag("prod", "seed", &string_flag("seed"))
        .await
        .unwrap();
    let token = a.sidecar_token("prod").await;
    let seeded = a.revision("prod").await;
    let s = Arc::new(Sidecar::start(&sidecar_options(&dir, &[&b], &token, "s", None)).await);
    s.wait_synced_at(seeded, 30).await;

    // Every revision the sidecar serves, sampled every 20 ms.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (s, sampling) = (s.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                if let Ok((revision, _)) = s.state().await {
                    seen.push(revision);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };
    let mut n = 0;
    let mut write = async || {
        n += 1;
        let r = a
            .put_flag("prod", &format!("k{n:02}"), &string_flag(&format!("v{n}")))
            .await
            .expect("write");
        assert_eq!(r.status, 201, "{}", r.text);
        a.revision("prod").await
    };

    // Redis up.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let at = Instant::now();
        let revision = write().await;
        s.wait_synced_at(revision, 30).await;
        latencies.push(at.elapsed());
    }
    eprintln!("with redis: {latencies:?}");

    // Redis down: commits still succeed and reach the sidecar through B's poll.
    redis.kill();
    let at = Instant::now();
    let mut revision = 0;
    for _ in 0..5 {
        revision = write().await;
    }
    s.wait_synced_at(revision, 30).await;
    eprintln!(
        "without redis: 5 commits reached the sidecar of B in {:?}",
        at.elapsed()
    );

    // Redis back: both replicas subscribe again, the fast path resumes.
    assert!(redis.restart());
    wait_for(30, "both replicas subscribed again", async || {
        match redis.subscribers("vexil:commits").await {
            Ok(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let at = Instant::now();
        let revision = write().await;
        s.wait_synced_at(revision, 30).await;
        latencies.push(at.elapsed());
    }
    eprintln!("redis back: {latencies:?}");
    assert!(
        b.process
            .output()
            .matches("following commits of other replicas through redis")
            .count()
            >= 2,
        "B subscribed again: {}",
        b.process.output()
    );

    sampling.store(false, Ordering::SeqCst);
    let seen = sampler.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "the served revision went back: {seen:?}"
    );
    assert_converged(&s, &b, "after the redis outage").await;
    let (full, delta) = s.frames_applied().await.unwrap();
    let revision = b.revision("prod").await;
    assert_eq!(
        (full, delta),
        (1, (revision - seeded) as u64),
        "one full snapshot at the start, then every commit as one delta in order"
    );
    eprintln!("redis test took {:?}", started.elapsed());
}
