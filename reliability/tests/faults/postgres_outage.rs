//! PostgreSQL cut off from control, then silent (a partition that closes nothing).

use std::time::Instant;

use vexil_reliability::{
    Control, ControlOptions, FaultProxy, Sidecar, flag_path, send, string_flag,
};
use vexil_testkit::pg::PgDb;
use vexil_testkit::{TempDir, wait_for};

use crate::{assert_converged, sidecar_options};

/// PostgreSQL unreachable (the TCP proxy between control and PostgreSQL cut): writes answer 503
/// problem+json and change nothing, reads answer 503 with a detail, `/readyz` is not ready, the
/// sidecar keeps serving its snapshot; all recovers by itself when the proxy is restored. The
/// same through a silent partition (the proxy frozen: connections open, nothing answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_answers_503_and_recovers_by_itself() {
    let started = Instant::now();
    let Some(db) = PgDb::create("vexil_faults").await else {
        return;
    };
    let dir = TempDir::new("vexil-faults-pg");
    let proxy = FaultProxy::start(&db.server_addr());
    let control = Control::start(&ControlOptions {
        database_url: db.url_via(proxy.addr()),
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
