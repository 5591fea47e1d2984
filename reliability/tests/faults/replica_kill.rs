//! A replica killed (`kill -9`) during a burst of writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vexil_control::store::{AuditQuery, Store};
use vexil_reliability::{ADMIN, Sidecar, flag_path, http_client, send, string_flag};
use vexil_testkit::pg::PgDb;
use vexil_testkit::redis::Redis;
use vexil_testkit::{TempDir, wait_for};

use crate::{assert_converged, sidecar_options, two_replicas};

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
    let Some(db) = PgDb::create("vexil_faults").await else {
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
    // The fleet (listed by any replica from the store) has s1's session, served by A.
    let s1_on_a = wait_for(20, "s1 listed", async || {
        let sessions = a.sidecar_sessions().await?;
        sessions
            .iter()
            .find(|(id, _)| id == "s1")
            .map(|(_, session)| session.clone())
            .ok_or(format!("{sessions:?}"))
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
    // s1 has a new session (on B): listed by B, beside A's, which ends or turns stale.
    wait_for(20, "s1's new session listed by B", async || {
        let sessions = b.sidecar_sessions().await?;
        sessions
            .iter()
            .any(|(id, session)| id == "s1" && *session != s1_on_a)
            .then_some(())
            .ok_or(format!("{sessions:?}"))
    })
    .await;
    eprintln!("kill -9 test took {:?}", started.elapsed());
}
