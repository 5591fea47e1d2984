//! Fault injection with the real binaries: control replicas killed, paused and cut off from
//! PostgreSQL, Redis killed, sidecars restarted on damaged snapshots. Each test starts its own
//! processes (see the harness in `src/lib.rs`) and checks what users rely on: an acknowledged
//! write is never lost, a failed one is never half done, sidecars keep serving and converge.
//!
//! Needs the binaries (`cargo build -p vexil-control -p vexil-proxy`), PostgreSQL on
//! 127.0.0.1:5432 (or `VEXIL_TEST_PG_URL`) and `redis-server`; without them the tests pass with a
//! notice, except under `CI=true` where they fail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vexil_control::store::{AuditQuery, Store};
use vexil_reliability::*;

/// Two replicas on one fresh database (A first, so it bootstraps the admin token and the
/// development CA), each with the given poll interval.
async fn two_replicas(
    dir: &TempDir,
    db: &PgDb,
    redis: Option<&Redis>,
    poll_ms: (u64, u64),
) -> (Control, Control) {
    let tls_dir = dir.sub("tls");
    let options = |poll| ControlOptions {
        database_url: db.url(),
        redis_url: redis.map(Redis::url),
        tls_dir: tls_dir.clone(),
        sync_poll_ms: Some(poll),
        sync_port: None,
    };
    let a = Control::start(&options(poll_ms.0)).await;
    let b = Control::start(&options(poll_ms.1)).await;
    (a, b)
}

fn sidecar_options(
    dir: &TempDir,
    controls: &[&Control],
    token: &str,
    client_id: &str,
    keepalive: Option<(u64, u64)>,
) -> SidecarOptions {
    SidecarOptions {
        controls: controls.iter().map(|c| c.sync_url.clone()).collect(),
        environment: "prod".into(),
        token: token.to_string(),
        ca_file: controls[0].ca_file(),
        state_dir: dir.sub(&format!("state-{client_id}")),
        client_id: client_id.to_string(),
        keepalive,
    }
}

/// Asserts that the sidecar serves exactly the store's flags and values at the store's revision.
async fn assert_converged(sidecar: &Sidecar, control: &Control, what: &str) {
    let revision = control.revision("prod").await;
    sidecar.wait_synced_at(revision, 45).await;
    let expected = default_values(&control.flagset("prod").await);
    let served = sidecar.values().await.expect("OFREP answers");
    assert_eq!(
        served, expected,
        "{what}: the sidecar's values differ from the store's"
    );
    let (held, _) = sidecar.state().await.unwrap();
    assert_eq!(held, revision, "{what}: revision");
}

/// What one write attempt got.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    value: String,
    /// The status, or the transport error (connection refused or reset, timeout).
    outcome: Result<u16, String>,
}

impl Attempt {
    fn acknowledged(&self) -> bool {
        matches!(self.outcome, Ok(200 | 201))
    }
}

/// `kill -9` of a replica in the middle of a burst of concurrent writes: every acknowledged write
/// is in the store (read through the surviving replica) and on every sidecar; every failed one is
/// either absent or whole; the change log and the audit log agree with the store; the sidecar of
/// the dead replica moves to the other one (it is given both addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_during_a_write_burst_loses_no_acknowledged_write() {
    let started = Instant::now();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let Some(redis) = Redis::start() else { return };
    let dir = TempDir::new("vexil-faults-kill");
    let (mut a, b) = two_replicas(&dir, &db, Some(&redis), (500, 500)).await;
    a.create_env("prod").await;
    let seed = a.put_flag("prod", "seed", &string_flag("seed")).await;
    assert_eq!(seed.unwrap().status, 201);
    let token = a.sidecar_token("prod").await;
    let window = Some((300, 2000));
    let s1 = Sidecar::start(&sidecar_options(&dir, &[&a, &b], &token, "s1", window)).await;
    let s2 = Sidecar::start(&sidecar_options(&dir, &[&b, &a], &token, "s2", window)).await;
    let seeded = a.revision("prod").await;
    s1.wait_synced_at(seeded, 30).await;
    s2.wait_synced_at(seeded, 30).await;
    wait_for(20, "s1 listed on A", async || {
        let ids = a.sidecar_ids().await?;
        ids.contains(&"s1".to_string())
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;

    // Four writers create flags on A; A is killed once 40 writes were acknowledged.
    let base = a.base.clone();
    let acked = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (base, acked, killed) = (base.clone(), acked.clone(), killed.clone());
        writers.push(tokio::spawn(async move {
            let client = http_client(Duration::from_secs(10));
            let mut attempts = Vec::new();
            for i in 0..500 {
                let key = format!("w{w}-{i:03}");
                let value = format!("value-{w}-{i}-{:08x}", rand::random::<u32>());
                let req = client
                    .put(format!("{base}{}", flag_path("prod", &key)))
                    .bearer_auth(ADMIN)
                    .json(&string_flag(&value));
                let outcome = send(req).await.map(|r| r.status);
                let failed = outcome.is_err();
                let attempt = Attempt {
                    key,
                    value,
                    outcome,
                };
                if attempt.acknowledged() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                attempts.push(attempt);
                if failed && killed.load(Ordering::SeqCst) {
                    break;
                }
            }
            attempts
        }));
    }
    wait_for(60, "40 acknowledged writes", async || {
        let n = acked.load(Ordering::SeqCst);
        (n >= 40).then_some(()).ok_or(format!("{n}"))
    })
    .await;
    killed.store(true, Ordering::SeqCst);
    a.process.kill9();
    let mut attempts = Vec::new();
    for w in writers {
        attempts.extend(w.await.expect("writer"));
    }
    let acknowledged: Vec<&Attempt> = attempts.iter().filter(|a| a.acknowledged()).collect();
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| !a.acknowledged()).collect();
    eprintln!(
        "{} attempts: {} acknowledged, {} failed ({:?})",
        attempts.len(),
        acknowledged.len(),
        failed.len(),
        failed.iter().map(|f| &f.outcome).collect::<Vec<_>>()
    );
    assert!(acknowledged.len() >= 40);
    assert!(
        failed.iter().all(|f| f.outcome.is_err()),
        "before the kill every write succeeds; after it, transport errors only: {failed:?}"
    );

    // The store, read through B.
    let flagset = b.flagset("prod").await;
    let flags = flagset["flags"].as_object().expect("flags").clone();
    let stored_value = |key: &str| -> Option<Value> {
        flags.get(key).map(|f| {
            let variant = f["defaultVariant"].as_str().expect("default variant");
            f["variants"][variant].clone()
        })
    };
    for w in &acknowledged {
        assert_eq!(
            stored_value(&w.key),
            Some(Value::from(w.value.as_str())),
            "acknowledged write {} lost or altered",
            w.key
        );
        assert_eq!(flags[&w.key], string_flag(&w.value), "{} is whole", w.key);
    }
    for f in &failed {
        if let Some(stored) = flags.get(&f.key) {
            assert_eq!(
                stored,
                &string_flag(&f.value),
                "a failed write of {} is whole if present",
                f.key
            );
        }
    }
    let attempted: BTreeSet<&str> = attempts.iter().map(|a| a.key.as_str()).collect();
    for key in flags.keys() {
        assert!(
            key == "seed" || attempted.contains(key.as_str()),
            "{key} appeared from nowhere"
        );
    }

    // Behind the API: one change-log entry and one audit entry per flag in the store, and none
    // for a flag that is not there.
    let store = Store::connect(&db.url()).await.expect("store");
    let revision = store.get_environment("prod").await.unwrap().revision;
    let changes = store.changes_since("prod", 0, 1_000_000).await.unwrap();
    let revisions: Vec<i64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(
        revisions,
        (1..=revision).collect::<Vec<_>>(),
        "the change log is complete"
    );
    let changed: BTreeSet<String> = changes.iter().filter_map(|c| c.key.clone()).collect();
    let stored: BTreeSet<String> = flags.keys().cloned().collect();
    assert_eq!(changed, stored, "change log vs store");
    assert_eq!(
        changes.len(),
        flags.len(),
        "one change per flag written once"
    );
    for c in &changes {
        let key = c.key.as_deref().unwrap();
        assert_eq!(c.definition.as_ref(), flags.get(key), "change of {key}");
    }
    let audit = store
        .audit(&AuditQuery {
            environment: Some("prod".into()),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    let audited: Vec<String> = audit
        .iter()
        .filter(|e| e.action.starts_with("flag."))
        .filter_map(|e| e.target.clone())
        .collect();
    assert_eq!(audited.len(), flags.len(), "one audit entry per flag write");
    assert_eq!(
        audited.into_iter().collect::<BTreeSet<_>>(),
        stored,
        "audit log vs store"
    );
    store.close().await;

    // Both sidecars converge on the store, s1 through B now.
    assert_converged(&s2, &b, "s2 (on B)").await;
    assert_converged(&s1, &b, "s1 (was on A)").await;
    wait_for(20, "s1 listed on B", async || {
        let ids = b.sidecar_ids().await?;
        ids.contains(&"s1".to_string())
            .then_some(())
            .ok_or(format!("{ids:?}"))
    })
    .await;
    eprintln!("kill -9 test took {:?}", started.elapsed());
}

/// Redis killed and started again while commits go on: they reach the sidecar of the other
/// replica through the change-log poll meanwhile, both replicas subscribe again when Redis is
/// back, nothing is lost or reordered (no full resync, revisions only increase, the final state
/// equals the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_the_poll_and_the_fast_path_resumes() {
    let started = Instant::now();
    let Some(db) = PgDb::create().await else {
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

/// PostgreSQL unreachable (the TCP proxy between control and PostgreSQL cut): writes answer 503
/// problem+json and change nothing, reads answer 503 with a detail, `/readyz` is not ready, the
/// sidecar keeps serving its snapshot; all recovers by itself when the proxy is restored. The
/// same through a silent partition (the proxy frozen: connections open, nothing answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_answers_503_and_recovers_by_itself() {
    let started = Instant::now();
    let Some(db) = PgDb::create().await else {
        return;
    };
    let dir = TempDir::new("vexil-faults-pg");
    let proxy = FaultProxy::start(&db.server_addr());
    let control = Control::start(&ControlOptions {
        database_url: db.url_via(&proxy),
        redis_url: None,
        tls_dir: dir.sub("tls"),
        sync_poll_ms: Some(300),
        sync_port: None,
    })
    .await;
    control.create_env("prod").await;
    control
        .put_flag("prod", "a", &string_flag("one"))
        .await
        .unwrap();
    let token = control.sidecar_token("prod").await;
    let s = Sidecar::start(&sidecar_options(&dir, &[&control], &token, "s", None)).await;
    let revision = control.revision("prod").await;
    s.wait_synced_at(revision, 30).await;

    proxy.cut();
    let path = flag_path("prod", "a");
    let write = send(
        control
            .req("PUT", &path)
            .header("if-match", "*")
            .json(&string_flag("two")),
    );
    let read = control.get(&path);
    let ready = control.get("/readyz");
    let (write, read, ready) = tokio::join!(write, read, ready);
    for (what, r) in [("write", write), ("read", read), ("readyz", ready)] {
        let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.status,
            503,
            "{what}: {}; control:\n{}",
            r.text,
            control.process.output()
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{what}"
        );
        let detail = r.json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("store"), "{what} says why: {}", r.text);
        eprintln!("{what} with PostgreSQL cut: 503 {detail:?}");
    }
    // The sidecar keeps serving what it has.
    assert_eq!(s.ready().await.unwrap(), 200);
    let values = s.values().await.unwrap();
    assert_eq!(values["a"], "one");

    proxy.restore();
    let at = Instant::now();
    wait_for(30, "control ready again", async || {
        match control.get("/readyz").await {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("ready again {:?} after the restore", at.elapsed());
    let written = wait_for(30, "a write succeeds again", async || {
        let r = control.put_flag("prod", "a", &string_flag("three")).await?;
        if r.status == 200 { Ok(r) } else { Err(r.text) }
    })
    .await;
    assert_eq!(written.status, 200);
    assert_eq!(
        control.revision("prod").await,
        revision + 1,
        "the failed write left nothing"
    );
    wait_for(30, "the sidecar gets the write", async || {
        let values = s.values().await?;
        (values["a"] == "three")
            .then_some(())
            .ok_or(format!("{values:?}"))
    })
    .await;
    assert_converged(&s, &control, "after the outage").await;

    // A silent partition: PostgreSQL stops answering and nothing is closed. Requests still end,
    // with 503 (the pool's 5 s acquire timeout), not hang.
    let revision = control.revision("prod").await;
    proxy.freeze();
    let frozen = Instant::now();
    let write = send(
        control
            .req("PUT", &path)
            .header("if-match", "*")
            .json(&string_flag("four")),
    );
    let ready = control.get("/readyz");
    let (write, ready) = tokio::join!(write, ready);
    for (what, r) in [("write", write), ("readyz", ready)] {
        let r = r.unwrap_or_else(|e| panic!("{what} with PostgreSQL frozen: {e}"));
        assert_eq!(r.status, 503, "{what} with PostgreSQL frozen: {}", r.text);
        assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    }
    eprintln!("503 {:?} into a silent partition", frozen.elapsed());
    assert_eq!(s.values().await.unwrap()["a"], "three", "still serving");
    proxy.restore();
    wait_for(30, "a write succeeds after the partition", async || {
        let r = control.put_flag("prod", "a", &string_flag("five")).await?;
        if r.status == 200 { Ok(r) } else { Err(r.text) }
    })
    .await;
    assert_eq!(
        control.revision("prod").await,
        revision + 1,
        "the write answered 503 left nothing"
    );
    assert_converged(&s, &control, "after the partition").await;
    eprintln!("postgres test took {:?}", started.elapsed());
}

/// Control paused (SIGSTOP): its sidecar turns STALE within the keep-alive window configured
/// (`--control-idle-timeout-ms`), keeps serving, and after SIGCONT is SYNCED again having received
/// only the missing deltas (its applied-frames counters) of the commits made meanwhile on the
/// other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_control_makes_sidecars_stale_then_sends_only_the_missing_deltas() {
    let started = Instant::now();
    let Some(db) = PgDb::create().await else {
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
