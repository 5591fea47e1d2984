//! Fault injection with the real binaries, one module per fault: a replica killed during writes
//! (`replica_kill`), Redis down (`redis_outage`), PostgreSQL cut off or silent (`postgres_outage`),
//! control paused (`control_pause`), a sidecar restarted with control down on damaged snapshots
//! (`snapshot_damage`). Each test starts its own processes (see the harness in `src/` and the test
//! kit) and checks what users rely on: an acknowledged write is never lost, a failed one is never
//! half done, sidecars keep serving and converge.
//!
//! Needs the binaries (built first when missing), PostgreSQL on 127.0.0.1:5432 (or
//! `VEXIL_TEST_PG_URL`) and `redis-server`; without them the tests pass with a notice, except
//! under `CI=true` where they fail.

mod control_pause;
mod postgres_outage;
mod redis_outage;
mod replica_kill;
mod snapshot_damage;

use vexil_reliability::{Control, ControlOptions, Sidecar, SidecarOptions, default_values};
use vexil_testkit::TempDir;
use vexil_testkit::pg::PgDb;
use vexil_testkit::redis::Redis;

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
